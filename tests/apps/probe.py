"""A WSGI app whose paths each exercise one part of the server (tests/test_worker_http.py,
test_worker_wsgi.py, test_worker_uwsgi.py).

Markers written on close() go to MARK_DIR (the vassal's `env`), one file per request
id given as `?id=...`, so a test can tell that close() ran even after a disconnect.
"""
import io
import json
import os
import sys
import time
from urllib.parse import parse_qs

MARK_DIR = os.environ.get("MARK_DIR", "/tmp")


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _mark(environ, what):
    rid = _qs(environ).get("id")
    if rid:
        # written whole, then renamed: a test that sees the file sees its line
        path = os.path.join(MARK_DIR, rid)
        with open(path + ".tmp", "w") as f:
            f.write(what + "\n")
        os.replace(path + ".tmp", path)


class Closing:
    """An iterable response whose close() leaves a marker."""

    def __init__(self, environ, chunks, fail_at=None, delay=0.0):
        self.environ = environ
        self.chunks = chunks
        self.fail_at = fail_at
        self.delay = delay

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("failing mid-body")
            if self.delay:
                time.sleep(self.delay)
            yield c

    def close(self):
        _mark(self.environ, "closed")


def _text(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)
    inp = environ["wsgi.input"]

    if path == "/pid":
        return _text(start_response, str(os.getpid()).encode())
    if path.startswith("/environ"):
        env = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int))}
        env["wsgi.version"] = list(environ["wsgi.version"])
        env["has"] = sorted(k for k in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper")
                            if k in environ)
        body = json.dumps(env).encode()
        return _text(start_response, body)
    if path == "/echo":
        body = inp.read()
        return _text(start_response, body, extra=[("X-Pid", str(os.getpid()))])
    if path == "/noread":
        return _text(start_response, b"did not read")
    if path == "/read-sizes":
        sizes = [int(s) for s in q.get("sizes", "1").split(",")]
        parts = [inp.read(n) for n in sizes]
        parts.append(inp.read())
        return _text(start_response, json.dumps([p.decode("latin-1") for p in parts]).encode())
    if path == "/readline":
        size = int(q["size"]) if "size" in q else -1
        lines = []
        while True:
            line = inp.readline(size)
            if not line:
                break
            lines.append(line.decode("latin-1"))
        return _text(start_response, json.dumps(lines).encode())
    if path == "/readlines":
        hint = int(q.get("hint", "-1"))
        first = [l.decode("latin-1") for l in inp.readlines(hint)]
        rest = inp.read().decode("latin-1")
        return _text(start_response, json.dumps([first, rest]).encode())
    if path == "/iterate":
        lines = [l.decode("latin-1") for l in inp]
        return _text(start_response, json.dumps(lines).encode())
    if path == "/gen":
        n = int(q.get("n", "3"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(n))
    if path.startswith("/status/"):
        start_response(path[8:] + " Whatever", [("Content-Type", "text/plain")])
        return [b"this body must not be sent"]
    if path == "/status-with-length/304":
        start_response("304 Not Modified", [("Content-Length", "26")])
        return [b"this body must not be sent"]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written-")
        write(b"then-")
        return [b"returned"]
    if path == "/error-before":
        raise RuntimeError("boom before headers")
    if path == "/error-after-start":
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("boom after start_response, before any body")
    if path == "/excinfo-before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("503 Replaced", [("Content-Type", "text/plain"),
                                            ("Content-Length", "8")], sys.exc_info())
        return [b"replaced"]
    if path == "/excinfo-after":
        return _excinfo_after(environ, start_response)
    if path == "/start-twice":
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"never"]
    if path == "/close-normal":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing(environ, [b"a", b"b"])
    if path == "/close-error":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing(environ, [b"a", b"b"], fail_at=1)
    if path == "/close-slow":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing(environ, [b"x" * 65536] * 400, delay=0.025)   # 10 s unless cut short
    if path == "/file":
        f = open(q["path"], "rb")
        size = os.fstat(f.fileno()).st_size
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("length") != "no":
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/file-sendfile-only":
        f = NoRead(q["path"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/long":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return iter([b"12", b"345"])
    if path == "/bad-length":
        start_response("200 OK", [("Content-Length", "-1")])
        return [b"x"]
    if path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return iter([b"12345"])
    if path == "/errors":
        print("wsgi-errors-line-" + q.get("tag", ""), file=environ["wsgi.errors"])
        environ["wsgi.errors"].write("second-line-" + q.get("tag", "") + "\n")
        return _text(start_response, b"logged")
    return _text(start_response, b"not found", "404 Not Found")


class NoRead(io.FileIO):
    """A real file whose read() fails: served right only if the server used sendfile."""

    def read(self, *a):
        raise AssertionError("read() called: sendfile was not used")

    readinto = read


def _excinfo_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first;"
    try:
        raise KeyError("after headers")
    except KeyError:
        # headers are out: start_response must re-raise this very exception
        start_response("500 Too Late", [], sys.exc_info())
    yield b"never"
