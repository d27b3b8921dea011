"""A raw-socket HTTP client for tests: exact bytes out, strict parsing of what comes back."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"


class Response:
    def __init__(self, status: int, reason: str, version: str, headers: list[tuple[str, str]],
                 body: bytes, raw_head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


class Client:
    """One connection; `send` raw bytes, `response()` parses the next response."""

    def __init__(self, port: int, timeout: float = 3.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self._more():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError("connection closed mid-line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def response(self, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            if not self._more():
                raise EOFError(f"connection closed before a response head: {self.buf!r}")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.split(b"\r\n")
        version, status, reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = Response(int(status), reason, version, headers, b"", raw + b"\r\n\r\n")
        if head or resp.status in (204, 304) or resp.status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te is not None:
            assert te == "chunked", te
            parts = []
            while True:
                size = int(self._line(), 16)
                if size == 0:
                    assert self._line() == b""
                    break
                self._need(size + 2)
                parts.append(self.buf[:size])
                assert self.buf[size:size + 2] == b"\r\n"
                self.buf = self.buf[size + 2:]
            resp.body = b"".join(parts)
        elif cl is not None:
            n = int(cl)
            self._need(n)
            resp.body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._more():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection (EOF or reset) within `timeout` with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        if data:
            self.buf += data
            return False
        return True

    def rest(self) -> bytes:
        """Everything until the server closes."""
        try:
            while self._more():
                pass
        except ConnectionResetError:
            pass
        out, self.buf = self.buf, b""
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get(path: str, host: str = "t", version: str = "HTTP/1.1", extra: str = "") -> bytes:
    return f"GET {path} {version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def one(port: int, data: bytes, head: bool = False, timeout: float = 3.0) -> tuple[Response, bool]:
    """Send `data` on a fresh connection: (first response, whether the server then closed)."""
    with Client(port, timeout) as c:
        c.send(data)
        r = c.response(head=head)
        return r, c.closed(timeout)


def worker_pids(master_pid: int) -> set[int]:
    """The master's direct children (its workers), from /proc."""
    kids: set[int] = set()
    try:
        tasks = Path(f"/proc/{master_pid}/task").iterdir()
        for t in tasks:
            kids |= {int(x) for x in (t / "children").read_text().split()}
    except OSError:
        pass
    return kids


@contextmanager
def running_master(directory: Path, body: str, http_port: int, name: str = "app.ini",
                   app: str = "probe.py"):
    """A master serving tests/apps/<app> with `body` extra ini lines; killed by PID afterwards."""
    sys.path.insert(0, str(TESTS))
    from conftest import Proc, descendants  # noqa: E402

    ini = directory / name
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{http_port}\nwsgi-file = {APPS / app}\n"
                   f"env = MARK_DIR={directory}\n" + body)
    p = Proc([sys.executable, "-m", "emperor", "master", str(ini)], directory,
             log=directory / "master.log")
    try:
        p.wait_log("running (workers ready)", timeout=15)
        p.port = http_port
        p.dir = directory
        yield p
    finally:
        # Freeze the master first: killed workers would otherwise be respawned between
        # listing and killing, and a fresh worker that has not yet asked for
        # PR_SET_PDEATHSIG outlives its master.
        try:
            os.kill(p.pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        for pid in descendants(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.kill()


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
