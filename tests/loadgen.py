"""A small HTTP load generator for reload tests and the reload benchmark.

Two kinds of client threads: keep-alive (one connection, many requests) and
new-connection (Connection: close each time). A keep-alive request that finds
its reused connection closed before any response byte is retried once on a
new connection, as every HTTP client does (RFC 9112 9.3.1); it is counted as
`retried`, and as `failed` only if the retry fails too.
"""
from __future__ import annotations

import socket
import threading
import time


class Result:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.retried = 0
        self.errors: list[str] = []
        self.completions: list[float] = []
        self.bodies: set[bytes] = set()
        self.lock = threading.Lock()

    def stall(self, start: float, end: float) -> float:
        """Longest time with no response completed, between start and end."""
        times = sorted(t for t in self.completions if start <= t <= end)
        times = [start] + times + [end]
        return max(b - a for a, b in zip(times, times[1:]))


def _read_response(sock: socket.socket) -> tuple[int, bytes, bool, int]:
    """(status, body, server_closes, bytes_seen); raises on a broken response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} bytes" if buf else "closed before response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"connection" and b"close" in value.lower():
            close = True
    if length is None:
        raise ConnectionError("response without Content-Length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, rest[:length], close, len(buf)


class Load:
    def __init__(self, port: int, keepalive: int = 2, fresh: int = 2, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.result = Result()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._keepalive, daemon=True) for _ in range(keepalive)]
        self.threads += [threading.Thread(target=self._fresh, daemon=True) for _ in range(fresh)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _record(self, status: int, body: bytes, err: str | None = None) -> None:
        r = self.result
        with r.lock:
            if err is None and status == 200:
                r.ok += 1
                r.completions.append(time.monotonic())
                r.bodies.add(body)
            else:
                r.failed += 1
                if len(r.errors) < 20:
                    r.errors.append(err or f"status {status}")

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _keepalive(self) -> None:
        req = f"GET {self.path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        sock = None
        used = False
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock, used = self._connect(), False
                try:
                    sock.sendall(req)
                    status, body, close, _ = _read_response(sock)
                except (ConnectionError, OSError) as e:
                    if not used or "closed before response" not in str(e) and not isinstance(
                            e, (ConnectionResetError, BrokenPipeError)):
                        raise
                    with self.result.lock:
                        self.result.retried += 1
                    sock.close()
                    sock = self._connect()
                    sock.sendall(req)
                    status, body, close, _ = _read_response(sock)
                used = True
                self._record(status, body)
                if close:
                    sock.close()
                    sock = None
            except (OSError, ValueError) as e:
                self._record(0, b"", f"keep-alive: {type(e).__name__}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def _fresh(self) -> None:
        req = f"GET {self.path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        while not self.stop.is_set():
            try:
                with self._connect() as sock:
                    sock.sendall(req)
                    status, body, _, _ = _read_response(sock)
                self._record(status, body)
            except (OSError, ValueError) as e:
                self._record(0, b"", f"new connection: {type(e).__name__}: {e}")
