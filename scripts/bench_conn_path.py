#!/usr/bin/env python3
"""Server-side CPU of one nginx-style uwsgi connection in an emperor worker, in-process.

Behind nginx every request is a new upstream connection, so this is the cost
that decides emperor's throughput there. Three figures, CPU µs per connection
(process_time around the server side only; the clients connect and send
before the clock starts, and read after it stops):

- emperor: a real worker `Core` (epoll loop object, scoreboard, WSGI driver,
  hello app) drains a backlog of N connections that each hold one uwsgi
  request shaped like nginx's `uwsgi_params`: accept .. parse .. app .. send .. close.
- syscalls only: the same accept/recv/send/close from Python with nothing in
  between: the floor any Python server pays, mostly kernel time (on loopback the
  sender's `send` and `close` also run the receiving side's TCP work).
- parse_vars alone: the uwsgi packet -> environ step, the largest Python piece.

    python scripts/bench_conn_path.py            # ~20 s
"""
from __future__ import annotations

import _socket
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emperor import sockets  # noqa: E402
from emperor.config import load_config  # noqa: E402
from emperor.worker.protocols.uwsgi import encode_vars, parse_vars  # noqa: E402
from emperor.wire.scoreboard import Scoreboard  # noqa: E402
from emperor.worker.core import Core  # noqa: E402
from emperor.worker.process import Worker  # noqa: E402
from emperor.worker.wsgi import base_environ  # noqa: E402

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
'''
# what nginx sends with Debian's uwsgi_params for `GET /` from wrk
PARAMS = {"QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
          "REQUEST_URI": "/", "PATH_INFO": "/", "DOCUMENT_ROOT": "/usr/share/nginx/html",
          "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1",
          "REMOTE_PORT": "51234", "SERVER_PORT": "8080", "SERVER_NAME": "localhost",
          "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "wrk", "HTTP_ACCEPT": "*/*"}
PACKET = encode_vars(PARAMS)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
N = 200          # connections per batch (the listen backlog holds them all)
BATCHES = 25


def clients(port: int) -> list[socket.socket]:
    out = []
    for _ in range(N):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(PACKET)
        out.append(c)
    return out


def finish(cs: list[socket.socket]) -> None:
    for c in cs:
        if not c.recv(4096).startswith(b"HTTP/1.1 200"):
            raise SystemExit("bad response")
        c.close()


def emperor_batch(core: Core, listener) -> float:
    cs = clients(listener.sock.getsockname()[1])
    t = time.process_time()
    core.on_accept(listener, 4, limit=N + 1)
    dt = time.process_time() - t
    finish(cs)
    return dt / N * 1e6


def floor_batch(lis: socket.socket) -> float:
    cs = clients(lis.getsockname()[1])
    accept = lis._accept
    t = time.process_time()
    while True:
        try:
            fd, _ = accept()
        except BlockingIOError:
            break
        s = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
        s.recv(65536, socket.MSG_DONTWAIT)
        s.send(RESPONSE, socket.MSG_DONTWAIT)
        s.close()
    dt = time.process_time() - t
    finish(cs)
    return dt / N * 1e6


def parse_batch(base: dict) -> float:
    t = time.process_time()
    for _ in range(20000):
        parse_vars(PACKET, base)
    return (time.process_time() - t) / 20000 * 1e6


def main() -> None:
    d = Path(tempfile.mkdtemp(prefix="emperor-connpath-"))
    (d / "app.py").write_text(APP)
    (d / "a.ini").write_text(f"[uwsgi]\nsocket = 127.0.0.1:0\nchdir = {d}\nmodule = app:application\n"
                             "disable-logging = true\nlisten = 1024\n")
    config = load_config(str(d / "a.ini"))
    sys.path.insert(0, str(d))
    import app  # noqa: E402

    listener = sockets.bind(sockets.UWSGI, "127.0.0.1:0", 1024)
    listener.sock.setblocking(False)
    worker = Worker(config=config, slot=0, listeners=[listener], app=app.application,
                    board=Scoreboard(1, 1), notify_fd=-1, load_app=lambda: app.application)
    wake_r, _ = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    core = Core(worker, 0, wake_r)
    bare = socket.socket()
    bare.bind(("127.0.0.1", 0))
    bare.listen(1024)
    bare.setblocking(False)
    base = base_environ("127.0.0.1", "8080", False)
    emperor_batch(core, listener), floor_batch(bare)  # warm-up
    ours, floor, parse = [], [], []
    for _ in range(BATCHES):  # interleaved, so that machine noise hits all three alike
        ours.append(emperor_batch(core, listener))
        floor.append(floor_batch(bare))
        parse.append(parse_batch(base))
    med = statistics.median
    print(f"Python {sys.version.split()[0]}, {BATCHES} interleaved batches of {N} connections; "
          f"CPU µs per connection, median (min-max)")
    for name, xs in [("emperor worker: accept .. close", ours), ("syscalls only (the floor)", floor),
                     ("parse_vars alone", parse)]:
        print(f"  {name:34} {med(xs):6.1f}  ({min(xs):.1f}-{max(xs):.1f})")
    print(f"  {'emperor minus floor (its Python)':34} {med(ours) - med(floor):6.1f}")


if __name__ == "__main__":
    main()
