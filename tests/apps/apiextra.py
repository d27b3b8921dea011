"""An application for tests/test_api_more.py, run unchanged under emperor and real uWSGI:
@thread, the signal targets, @spoolforever, the spooler's working directory and several
spooler directories. Every observation is one line appended to a file in MARK_DIR (one
write each), `name value...`; a response is `RESULT PID`.

GET /thread?id=I        calls a @thread function (it marks `started`, waits for MARK_DIR/go-I,
                        marks `done`); answers whether the call returned the function, and the
                        request's thread id
GET /signal?N           uwsgi.signal(N): 21 active-workers, 22 workers, 23 worker2 (with
                        env APITEST=activetimer, a @timer(1) raises 24, active-workers)
GET /sleep?s=S          keeps this worker busy S seconds (MARK_DIR/busy.PID meanwhile)
GET /spool?f=F&id=I[&spooler=DIR][&priority=P]
                        uwsgi.spool() of {ud_spool_func: F, id: I}: F is `forever`, `where`
                        (both here) or `imported` (only in the spooler-import module)
GET /spoolerpids        uwsgi.spooler_pids()
"""
import os
import threading
import time
from urllib.parse import parse_qs

import uwsgi
from uwsgidecorators import signal, thread

MARK_DIR = os.environ["MARK_DIR"]


def mark(name, *values):
    line = " ".join(str(v) for v in values) + "\n"
    fd = os.open(os.path.join(MARK_DIR, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@thread
def background(tid):
    mark("thread", "started", tid, os.getpid(), threading.get_ident())
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(MARK_DIR, "go-" + tid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    mark("thread", "done", tid, os.getpid(), threading.get_ident())


@signal(21, target="active-workers")
def _active(num):
    mark("sig21", uwsgi.worker_id(), os.getpid())


@signal(22, target="workers")
def _all(num):
    mark("sig22", uwsgi.worker_id(), os.getpid())


@signal(23, target="worker2")
def _second(num):
    mark("sig23", uwsgi.worker_id(), os.getpid())


if "activetimer" in os.environ.get("APITEST", ""):
    from uwsgidecorators import timer

    @timer(1, signum=24, target="active-workers")
    def _tick(num):
        mark("sig24", uwsgi.worker_id(), os.getpid(), "%.3f" % time.time())


if "spooler" in uwsgi.opt:     # upstream's @spool refuses to decorate without a spooler
    from uwsgidecorators import spool, spoolforever

    @spoolforever
    def forever(args):
        mark("forever", args["id"], os.getpid(), "%.3f" % time.time(),
             os.path.basename(args["spooler_task_name"]))

    @spool
    def where(args):
        task = args["spooler_task_name"]     # as given: uWSGI gives the bare file name
        mark("where", args["id"], os.getpid(), os.getcwd(), task, os.path.isfile(task))
        return uwsgi.SPOOL_OK    # a raw uwsgi.spool() task has no ud_spool_ret: the result counts


def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ["PATH_INFO"]
    result = "ok"
    if path == "/thread":
        returned = background(q["id"])
        result = f"{returned is background.f} {threading.get_ident()}"
    elif path == "/signal":
        uwsgi.signal(int(environ["QUERY_STRING"]))
    elif path == "/sleep":
        busy = os.path.join(MARK_DIR, f"busy.{os.getpid()}")
        open(busy, "w").close()
        time.sleep(float(q.get("s", "1")))
        os.unlink(busy)
    elif path == "/spool":
        task = {b"ud_spool_func": q["f"].encode(), b"id": q["id"].encode()}
        for key in ("spooler", "priority"):
            if key in q:
                task[key.encode()] = q[key].encode()
        result = repr(uwsgi.spool(task))
    elif path == "/spoolerpids":
        result = repr(uwsgi.spooler_pids())
    elif path == "/workers":
        result = repr(sorted((w["id"], w["pid"]) for w in uwsgi.workers()))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{result} {os.getpid()}".encode()]
