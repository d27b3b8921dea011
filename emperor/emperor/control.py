"""The emperor's control plane: the control socket, the optional metrics endpoint, and
the fetches of each master's stats that both of them answer with.

Control socket: a UNIX socket (mode 0600); one request line in, one JSON document
out, then close. `status` (the default, also an empty line) returns the emperor's
table with each master's stats (`stats`, null for a master that did not answer);
`restart NAME` clears a backoff and starts or reloads that vassal; any other
request goes to the emperor's handler as it is.

Nothing here blocks the emperor: every socket is non-blocking and sits in one
inner epoll, whose descriptor the emperor's own epoll watches, and the nearest
deadline joins the emperor's poll timeout. A status request asks every master for
its stats document at once (masters answer from their own loops) and is answered
when all have replied, or after `STATS_TIMEOUT` with what came: a stuck master
costs a status request half a second, never the emperor's loop a moment.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import time
from collections.abc import Callable

from emperor import paths, sockets
from emperor.emperor import prometheus, summary
from emperor.wire.control import MAX_REQUEST, STATUS, TIMEOUT
from emperor.worker.protocols.http import response

STATS_TIMEOUT = 0.5    # a master that has not answered by then is shown without stats
MAX_STATS = 4 << 20
MAX_CLIENTS = 64       # connected clients (control and metrics); a new one sheds the oldest
ACCEPT_PAUSE = 0.5     # out of descriptors with nobody to shed: stop accepting this long
_GONE = select.EPOLLHUP | select.EPOLLERR


class ControlError(Exception):
    """The control socket or the metrics endpoint cannot be set up; str() is one line."""


class ControlServer:
    def __init__(self, path: str | None, handle: Callable[[str], dict], *,
                 metrics_address: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.handle = handle
        self.clock = clock
        self.rates = summary.Rates()
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.clients: dict[int, _Client] = {}   # in arrival order: the first is the oldest
        self.paused: list[socket.socket] = []   # listeners out of the inner epoll for a moment
        self.resume_at: float | None = None
        self.listeners: dict[int, tuple[socket.socket, type[_Client]]] = {}
        self.sock: socket.socket | None = None
        try:
            if path:
                self.sock = _bind_unix(path)
                self._listen(self.sock, _ControlClient)
            if metrics_address:
                self._listen(_bind_tcp(metrics_address), _HttpClient)
        except ControlError:
            self.close()
            raise
        paths.sweep_stale_stats_sockets()

    def _listen(self, sock: socket.socket, kind: type[_Client]) -> None:
        sock.setblocking(False)
        self.listeners[sock.fileno()] = (sock, kind)
        self.ep.register(sock.fileno(), select.EPOLLIN)

    # ---------- what the emperor's loop calls ----------
    def fileno(self) -> int:
        """The inner epoll: readable when any control-plane socket has something."""
        return self.ep.fileno()

    def on_readable(self) -> None:
        for fd, mask in self.ep.poll(0):
            if fd in self.listeners:
                self._accept(*self.listeners[fd])
            elif fd in self.conns:
                self.conns[fd].on_event(mask)

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.conns.values()]
        if self.resume_at is not None:
            deadlines.append(self.resume_at)
        return min(deadlines, default=None)

    def run_timers(self) -> None:
        now = self.clock()
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            conn.on_timeout()
        if self.resume_at is not None and now >= self.resume_at:
            self.resume_at = None
            for sock in self.paused:
                self.ep.register(sock.fileno(), select.EPOLLIN)
            self.paused.clear()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        for sock, _ in self.listeners.values():
            sock.close()
        self.listeners.clear()
        self.ep.close()
        if self.sock is not None and self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    # ---------- answering ----------
    def _accept(self, listener: socket.socket, kind: type[_Client]) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._scarce(listener)
                return
            if len(self.clients) >= MAX_CLIENTS:
                next(iter(self.clients.values())).close()  # the oldest goes: a flood costs itself
            kind(self, sock)

    def _scarce(self, listener: socket.socket) -> None:
        """Out of descriptors: shed the oldest client, or else stop accepting for a moment,
        since a listener that stays readable would spin the emperor's loop."""
        if self.clients:
            next(iter(self.clients.values())).close()
            return
        if listener not in self.paused:
            self.ep.unregister(listener.fileno())
            self.paused.append(listener)
            self.resume_at = self.clock() + ACCEPT_PAUSE

    def answer(self, request: str, reply: Callable[[dict], None]) -> None:
        """`status` gets each master's stats merged in; anything else is the emperor's."""
        verb = request.split(" ", 1)[0]
        if verb in ("", STATUS):
            self.status(reply)
        else:
            reply(self.handle(request))

    def status(self, reply: Callable[[dict], None]) -> None:
        """The emperor's table, each vassal with its master's stats, once every master answered."""
        doc = self.handle(STATUS)
        vassals = doc.get("vassals", {})
        wanted = {name: v["stats_address"] for name, v in vassals.items() if v.get("pid") and v.get("stats_address")}
        answers: dict[str, dict | None] = {}

        def finish() -> None:
            now = self.clock()
            for name, v in vassals.items():
                raw = answers.get(name)
                v["stats"] = summary.summarize(raw, self.rates, name, now) \
                    if raw is not None and raw.get("pid") == v.get("pid") else None
            self.rates.keep(vassals)
            reply(doc)

        if not wanted:
            finish()
            return
        for name, address in wanted.items():
            def done(raw: dict | None, name: str = name) -> None:
                answers[name] = raw
                if len(answers) == len(wanted):
                    finish()
            _fetch(self, address, done)

    # ---------- the inner epoll's bookkeeping ----------
    def _add(self, conn: _Conn, events: int) -> None:
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, events)

    def _modify(self, conn: _Conn, events: int) -> None:
        self.ep.modify(conn.fd, events)

    def _remove(self, conn: _Conn) -> None:
        self.clients.pop(conn.fd, None)
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass


class _Conn:
    """One non-blocking socket of the control plane, with a deadline."""

    def __init__(self, server: ControlServer, sock: socket.socket, timeout: float, events: int) -> None:
        self.server, self.sock = server, sock
        self.fd = sock.fileno()
        self.deadline = server.clock() + timeout
        self.closed = False
        sock.setblocking(False)
        server._add(self, events)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server._remove(self)
            self.sock.close()

    def on_event(self, mask: int) -> None:
        raise NotImplementedError

    def on_timeout(self) -> None:
        self.close()


class _Client(_Conn):
    """One request in, one answer out, then close: read, wait for the answer, write."""

    def __init__(self, server: ControlServer, sock: socket.socket) -> None:
        super().__init__(server, sock, TIMEOUT, select.EPOLLIN)
        server.clients[self.fd] = self
        self.inbuf = b""
        self.outbuf = b""
        self.phase = "read"

    def on_event(self, mask: int) -> None:
        if self.phase == "write":
            self._flush()
        elif self.phase == "wait":
            if mask & _GONE:
                self.close()  # gone before its answer: the answer is dropped
        else:
            self._read()

    def _read(self) -> None:
        eof = False
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            if not data:
                eof = True
                break
            self.inbuf += data
        request = self.complete(eof)
        if request is None:
            if eof:
                self.close()
            return
        self.phase = "wait"
        self.server._modify(self, 0)
        self.on_request(request)

    def complete(self, eof: bool) -> str | None:
        raise NotImplementedError

    def on_request(self, request: str) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self.phase, self.outbuf = "write", data
        self._flush()

    def _flush(self) -> None:
        try:
            n = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return
        self.outbuf = self.outbuf[n:]
        if self.outbuf:
            self.server._modify(self, select.EPOLLOUT)
        else:
            self.close()


class _ControlClient(_Client):
    def complete(self, eof: bool) -> str | None:
        if b"\n" in self.inbuf or eof or len(self.inbuf) >= MAX_REQUEST:
            return self.inbuf.split(b"\n", 1)[0].decode(errors="replace").strip()
        return None

    def on_request(self, request: str) -> None:
        self.server.answer(request, lambda doc: self.send(json.dumps(doc).encode() + b"\n"))


class _HttpClient(_Client):
    """Just enough HTTP/1.0 for a Prometheus scraper: GET /metrics, then close."""

    def complete(self, eof: bool) -> str | None:
        if b"\r\n\r\n" in self.inbuf or b"\n\n" in self.inbuf or eof or len(self.inbuf) >= MAX_REQUEST:
            return self.inbuf.split(b"\n", 1)[0].decode("latin-1").strip()
        return None

    def on_request(self, request: str) -> None:
        parts = request.split()
        method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self.send(_http(405, "method not allowed\n", method, [("Allow", "GET, HEAD")]))
        elif path == "/metrics":
            self.server.status(lambda doc: self.send(
                _http(200, prometheus.render(doc), method, content_type=prometheus.CONTENT_TYPE)))
        elif path == "/":
            self.send(_http(200, "emperor: metrics at /metrics\n", method))
        else:
            self.send(_http(404, "not found; metrics at /metrics\n", method))


def _http(status: int, body: str, method: str, headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
          content_type: str = "text/plain; charset=utf-8") -> bytes:
    return response(status, body.encode(), version="HTTP/1.0", content_type=content_type,
                    headers=headers, head_only=method == "HEAD")


class _Fetch(_Conn):
    """Reads one master's stats document: connect, read to EOF, parse."""

    def __init__(self, server: ControlServer, sock: socket.socket, done: Callable[[dict | None], None]) -> None:
        super().__init__(server, sock, STATS_TIMEOUT, select.EPOLLIN)
        self.buf = b""
        self.done = done

    def on_event(self, mask: int) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._finish(None)
                return
            if not data:
                self._finish(_parse_stats(self.buf))
                return
            self.buf += data
            if len(self.buf) > MAX_STATS:
                self._finish(None)
                return

    def on_timeout(self) -> None:
        self._finish(None)

    def _finish(self, doc: dict | None) -> None:
        if self.closed:
            return
        self.close()
        self.done(doc)


def _fetch(server: ControlServer, address: str, done: Callable[[dict | None], None]) -> None:
    try:
        family, addr = sockets.parse_address(address)
        if isinstance(addr, tuple) and addr[0] in ("0.0.0.0", "::"):
            addr = ("127.0.0.1", addr[1]) if family == socket.AF_INET else ("::1", addr[1])
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, ValueError):
        done(None)
        return
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        done(None)
        return
    _Fetch(server, sock, done)


def _parse_stats(data: bytes) -> dict | None:
    if data.startswith(b"HTTP/"):  # a vassal with `stats-http`
        data = data.partition(b"\r\n\r\n")[2]
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _bind_unix(path: str) -> socket.socket:
    try:
        if os.path.dirname(path) == paths.runtime_dir():
            paths.ensure_runtime_dir()
        if not sockets.remove_stale_unix(path):
            raise ControlError(f"another emperor already answers on {path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        return sock
    except OSError as e:
        raise ControlError(f"control socket {path}: {e.strerror or e}") from None


def _bind_tcp(address: str) -> socket.socket:
    family, addr = sockets.parse_address(address)
    if family == socket.AF_UNIX:
        raise ControlError(f"--metrics {address}: expected HOST:PORT")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise ControlError(f"--metrics {address}: {(e.strerror or str(e)).lower()}") from None
    return sock
