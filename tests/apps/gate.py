"""A WSGI app that tells the test when a request is in flight and holds it until released.

`/hold?id=X` writes GATE_DIR/X.started when it begins, then waits until the test
creates GATE_DIR/X.release. `/ignore-body` answers without reading the body.
Every response says which worker answered (X-Pid).
"""
import os
import time

GATE_DIR = os.environ.get("GATE_DIR", "/tmp")


def _param(environ, name):
    for part in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return ""


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        rid = _param(environ, "id")
        with open(os.path.join(GATE_DIR, rid + ".started.tmp"), "w"):
            pass
        os.replace(os.path.join(GATE_DIR, rid + ".started.tmp"), os.path.join(GATE_DIR, rid + ".started"))
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(GATE_DIR, rid + ".release")) and time.monotonic() < deadline:
            time.sleep(0.005)  # the app's own wait: the test decides when it ends
    body = path.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Pid", str(os.getpid()))])
    return [body]
