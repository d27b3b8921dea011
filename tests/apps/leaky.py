"""A WSGI app for recycling tests: it leaks memory on purpose, raises, holds requests.

`/leak?mb=N` keeps N more MiB for the life of the worker; `/reserve?mb=N` only maps N
more MiB (address space, not resident: reload-on-as), and with `id=X` then holds as /hold;
`/boom` raises; `/limits` answers the worker's RLIMIT_AS; `/hold?id=X` waits for
GATE_DIR/X.release (GATE_DIR from the environment) after writing GATE_DIR/X.started;
every answer names its pid.
"""
import mmap
import os
import resource
import time

KEPT = []
GATE_DIR = os.environ.get("GATE_DIR", "/tmp")


def _param(environ, name, default=""):
    for part in environ.get("QUERY_STRING", "").split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return default


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/leak":
        KEPT.append(bytearray(int(_param(environ, "mb", "10")) << 20))   # touched: really resident
    elif path == "/reserve":   # read-only, never touched: counted in VSZ, neither resident nor committed
        KEPT.append(mmap.mmap(-1, int(_param(environ, "mb", "10")) << 20, prot=mmap.PROT_READ))
    elif path == "/sleep":
        time.sleep(int(_param(environ, "ms", "100")) / 1000)
    elif path == "/boom":
        raise RuntimeError("boom, on purpose")
    if path == "/hold" or (path == "/reserve" and _param(environ, "id")):
        rid = _param(environ, "id")
        open(os.path.join(GATE_DIR, rid + ".started"), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(GATE_DIR, rid + ".release")) and time.monotonic() < deadline:
            time.sleep(0.005)
    if path == "/limits":
        body = str(resource.getrlimit(resource.RLIMIT_AS)[0]).encode()
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
