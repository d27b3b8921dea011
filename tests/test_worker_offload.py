"""A file response goes out from the worker's loop (emperor/worker/offload.py), not from the app call.

uWSGI's OffloadSubsystem doc ("Offloading static files": the transfer is delegated, "freeing
your worker") and StaticFiles doc ("Transfer modes": without offloading, "your processes (or
threads) will be blocked during the whole transfer"). Here the core's own epoll loop does it:
one worker with one thread still answers others while a large file streams to a slow client.
Real masters on 127.0.0.1, raw sockets as clients, everything killed by PID (conftest).
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from conftest import descendants, wait_for

pytestmark = pytest.mark.timeout(90)

BIG = 24 << 20  # larger than any socket buffer pair on loopback: the transfer cannot finish at once

FILE_APP = r'''
import os

BIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "big.bin")


class Tracked:
    """A file object whose close() leaves a trace: PEP 3333 wants it after the body."""

    def __init__(self, path):
        self.f = open(path, "rb")

    def fileno(self):
        return self.f.fileno()

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        return self.f.read(n)

    def close(self):
        self.f.close()
        open(BIG + ".closed", "a").close()


def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](Tracked(BIG))
    body = b"dynamic"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def make_big(tmp_path) -> bytes:
    data = bytes(range(256)) * (BIG // 256)
    (tmp_path / "big.bin").write_bytes(data)
    return data


def slow_client(port: int, target: str = "/big", rcvbuf: int = 0) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # a small window: the server's queue fills
    s.connect(("127.0.0.1", port))
    s.settimeout(30)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return s


def read_response(s: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, what follows) of one response with a Content-Length."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = s.recv(1 << 20)
        assert chunk, (head, len(rest))
        rest += chunk
    return head, rest[:length], rest[length:]


def get(port: int, path: str = "/") -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        head, body, _ = read_response(s)
    return head, body


def test_a_dynamic_request_is_answered_while_a_large_file_streams_to_a_slow_client(master, tmp_path):
    """OffloadSubsystem doc, "Offloading static files": with one worker and one thread, a request
    for the application is answered at once while a slow reader takes a large file; the reader
    gets every byte. (Before offload.py, the core sent the file from inside the app call, so the
    second request waited for the whole transfer: minutes at this reading pace.)"""
    data = make_big(tmp_path)
    m = master("processes = 1\nthreads = 1\nsocket-timeout = 30\n", app=FILE_APP)
    slow = slow_client(m.port)
    got = bytearray()
    stop = threading.Event()

    def trickle() -> None:  # reads, but slowly: 16 KiB every 10 ms, ~1.6 MB/s
        while not stop.is_set() and len(got) < 1 << 20:
            got.extend(slow.recv(16384))
            time.sleep(0.01)

    reader = threading.Thread(target=trickle)
    reader.start()
    try:
        wait_for(lambda: len(got) > 0, timeout=10)
        t0 = time.monotonic()
        head, body = get(m.port, "/")
        took = time.monotonic() - t0
    finally:
        stop.set()
        reader.join()
    assert head.startswith(b"HTTP/1.1 200") and body == b"dynamic"
    assert took < 3.0, f"the dynamic request waited {took:.2f}s behind the file"  # unloaded: ~1 ms
    assert not (tmp_path / "big.bin.closed").exists(), "close() came before the body was sent"
    head, body, _ = read_response(slow, bytes(got))
    slow.close()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    # PEP 3333: the result's close() once the body is out; the log line when the transfer ends
    wait_for(lambda: (tmp_path / "big.bin.closed").exists(), timeout=10)
    m.wait_log(f"GET /big => 200 {BIG + len(head) + 4} bytes", timeout=10)


def test_a_transfer_without_progress_for_socket_timeout_is_cut_and_logged(master, tmp_path):
    """socket-timeout keeps its meaning for a file sent from the loop: no progress for that long
    (a client that stopped reading) cuts the transfer; the log line says so with the bytes that
    went out, close() is called, and the core served others meanwhile."""
    make_big(tmp_path)
    m = master("processes = 1\nthreads = 1\nsocket-timeout = 1\n", app=FILE_APP)
    stuck = slow_client(m.port, rcvbuf=4096)
    try:
        for _ in range(3):
            assert get(m.port, "/")[1] == b"dynamic"
        log = m.wait_log("GET /big => 200", timeout=15)
        line = next(l for l in log.splitlines() if "GET /big => 200" in l)
        assert "(cut: no progress for 1s)" in line, line
        sent = int(line.split("=> 200 ")[1].split(" bytes")[0])
        assert 0 < sent < BIG
        wait_for(lambda: (tmp_path / "big.bin.closed").exists(), timeout=5)
    finally:
        stuck.close()
    assert get(m.port, "/")[1] == b"dynamic"


def test_a_request_pipelined_behind_a_file_is_answered_after_it(master, tmp_path):
    """Keep-alive goes on after the transfer: a request the client sent right behind the file
    request, in the same packet, is answered after the file's last byte, on the same connection."""
    data = make_big(tmp_path)
    m = master("processes = 1\nthreads = 1\n", app=FILE_APP)
    with socket.create_connection(("127.0.0.1", m.port), timeout=30) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body, rest = read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and body == data
        head2, body2, _ = read_response(s, rest)
        assert head2.startswith(b"HTTP/1.1 200") and body2 == b"dynamic"
        s.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_response(s)[1] == b"dynamic"


def test_offload_threads_is_accepted_and_the_loop_does_the_work(master, tmp_path):
    """`offload-threads = N` (OffloadSubsystem doc) is accepted without a warning; no thread is
    started for it (the worker's loop sends files), so the worker has exactly `threads` threads."""
    data = make_big(tmp_path)
    m = master("processes = 1\nthreads = 2\noffload-threads = 4\n", app=FILE_APP)
    assert "offload-threads" not in m.log
    assert get(m.port, "/big")[1] == data
    worker = descendants(m.pid)[0]
    assert len(os.listdir(f"/proc/{worker}/task")) == 2
