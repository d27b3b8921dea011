"""One application for the spooler and cache tests, run unchanged under emperor and real uWSGI
(tests/test_api_spooler.py, tests/test_api_cache.py): what a test observes must be the same.

Spooler: `uwsgi.spooler = run` (the raw interface); GET /spool?kind=K&id=I[&at=T][&priority=P]
spools {kind, id}; the task writes one line `kind id pid time` to MARK_DIR/runs.log per run.
Kinds: once (SPOOL_OK), retry (SPOOL_RETRY until its 3rd run), hold (writes MARK_DIR/holding,
waits for MARK_DIR/go, then SPOOL_OK), ignore-free. Cache: GET /cache/OP?k=K&v=V&e=E&c=CACHE
answers `repr(result) pid`; /sleep?s=S keeps a worker busy
(MARK_DIR/busy.PID meanwhile).
"""
import os
import time
from urllib.parse import parse_qs

import uwsgi

MARK_DIR = os.environ.get("MARK_DIR", "/tmp")


def _line(text):
    fd = os.open(os.path.join(MARK_DIR, "runs.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def run(task):
    kind = task[b"kind"].decode()
    tid = task[b"id"].decode()
    _line(f"{kind} {tid} {os.getpid()} {time.time():.3f} {uwsgi.i_am_the_spooler()}")
    if kind == "retry":
        with open(os.path.join(MARK_DIR, "runs.log")) as f:
            runs = sum(1 for line in f if line.startswith(f"retry {tid} "))
        return uwsgi.SPOOL_OK if runs >= 3 else uwsgi.SPOOL_RETRY
    if kind == "hold":
        open(os.path.join(MARK_DIR, "holding"), "w").close()
        while not os.path.exists(os.path.join(MARK_DIR, "go")):
            time.sleep(0.05)
    if kind == "body":
        with open(os.path.join(MARK_DIR, f"body-{tid}"), "wb") as f:
            f.write(task["body"])
    return uwsgi.SPOOL_OK


uwsgi.spooler = run


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    if path == "/spool":
        args = {b"kind": q["kind"].encode(), b"id": q["id"].encode()}
        for key in ("at", "priority"):
            if key in q:
                args[key.encode()] = q[key].encode()
        if "body" in q:
            args[b"body"] = q["body"].encode()
        out = uwsgi.spool(args)
        result = repr(out)
    elif path == "/sleep":
        busy = os.path.join(MARK_DIR, f"busy.{os.getpid()}")
        open(busy, "w").close()
        time.sleep(float(q.get("s", "1")))
        os.unlink(busy)
        result = "slept"
    elif path == "/spoolerpids":
        result = repr(len([p for p in uwsgi.spooler_pids() if p > 0]))
    elif path == "/task":
        task = uwsgi.spooler_get_task(q["path"])
        result = repr(sorted((k if isinstance(k, bytes) else k.encode(), v) for k, v in task.items()))
    elif path == "/iamspooler":
        result = repr(uwsgi.i_am_the_spooler())
    elif path == "/jobs":
        result = repr(sorted(uwsgi.spooler_jobs()))
    elif path.startswith("/cache/"):
        op = path[7:]
        k, v, c = q.get("k"), q.get("v"), q.get("c")
        e = int(q.get("e", "0"))
        if op == "get":
            result = repr(uwsgi.cache_get(k, c) if c else uwsgi.cache_get(k))
        elif op in ("set", "update"):
            fn = getattr(uwsgi, "cache_" + op)
            result = repr(fn(k, v, e, c) if c else fn(k, v, e))
        elif op in ("inc", "dec", "mul", "div"):
            fn = getattr(uwsgi, "cache_" + op)
            result = repr(fn(k, int(v), e, c) if c else fn(k, int(v), e))
        elif op == "num":
            result = repr(uwsgi.cache_num(k, c) if c else uwsgi.cache_num(k))
        elif op in ("del", "exists"):
            fn = getattr(uwsgi, "cache_" + op)
            result = repr(fn(k, c) if c else fn(k))
        elif op == "clear":
            result = repr(uwsgi.cache_clear(c) if c else uwsgi.cache_clear())
        elif op == "keys":
            result = repr(sorted(uwsgi.cache_keys(c) if c else uwsgi.cache_keys()))
        else:
            result = "?"
    else:
        result = "ok"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{result} {os.getpid()}".encode()]
