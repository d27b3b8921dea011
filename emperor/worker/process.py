"""A worker: accepts connections and runs the application, one event loop per thread.

Each loop ("core", as uWSGI calls it) waits in epoll on the listening sockets
and its keep-alive connections, so one slow or idle client never holds the
worker: only the application call itself is synchronous. Listening sockets are
registered with EPOLLEXCLUSIVE so a new connection wakes one worker, not all.
The price: a worker that was woken for a connection and stops accepting without
taking it leaves it queued with nobody told. So a worker that retires with
connections still queued asks the master to wake every worker (SIGWINCH), and a
woken worker re-adds its listeners, which makes the kernel look at the queue.

Worker signal table (sent by the master; see master.py for the master's own):
"""
from __future__ import annotations

import collections
import ctypes
import errno
import os
import select
import signal
import _socket
import socket
import threading
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor.wire import notify
from emperor.config import Config
from emperor.worker.protocols import uwsgi as uwsgi_proto
from emperor.worker.protocols.http import HTTPError, error_response, find_head, parse_head
from emperor.wire.scoreboard import CoreCounters, Scoreboard
from emperor.sockets import HTTP, Listener
from emperor.worker.wsgi import EMPTY_INPUT, ClientGone, Input, base_environ, run

RETIRE, LAST, NOW = "retire", "last out", "stop now"
PAUSE, RESUME, WAKE = "pause", "resume", "wake"

SIGNALS: dict[int, str] = {
    signal.SIGTERM: RETIRE,     # stop accepting (another generation takes the queue), finish the
                                # request in hand, close idle connections, exit
    signal.SIGHUP: LAST,        # the same, but first answer what the kernel already queued:
                                # the master is stopping, nobody else will
    signal.SIGINT: NOW,         # exit at once
    signal.SIGQUIT: NOW,
    signal.SIGTSTP: PAUSE,      # stop accepting; connections wait in the backlog
    signal.SIGCONT: RESUME,
    signal.SIGWINCH: WAKE,      # only wakes the loop so it re-reads its orders
}
__doc__ += "\n".join(f"    {signal.Signals(s).name:8} {a}" for s, a in SIGNALS.items())

_EPOLL_ACCEPT = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
PR_SET_PDEATHSIG = 1
_NOWAIT = socket.MSG_DONTWAIT  # per call: client sockets stay in blocking mode, never block
STOP_LINGER = 1.0  # seconds an idle keep-alive connection may stay open after a graceful stop


def _queued(fd: int) -> bool:
    """Whether a listening socket has connections waiting to be accepted."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to signal us when our parent dies: no orphan keeps a port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except OSError:
        pass


class Conn:
    """One client connection; non-blocking, with explicit waits bounded by socket-timeout."""

    __slots__ = ("sock", "fd", "buf", "listener", "peer", "remote", "base", "deadline", "timeout", "_poll",
                 "tcp", "nodelay")

    def __init__(self, sock: socket.socket, listener: Listener, peer: tuple, base: dict,
                 timeout: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""
        self.listener = listener
        self.peer = peer
        # REMOTE_ADDR/REMOTE_PORT, computed once per connection rather than per request
        self.remote = (peer[0], str(peer[1])) if isinstance(peer, tuple) else ("127.0.0.1", "0")
        self.tcp = sock.family != socket.AF_UNIX
        self.nodelay = False
        self.base = base
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._poll = None

    def _wait(self, events: int) -> None:
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN | select.POLLOUT)
        self._poll.modify(self.fd, events)
        if not self._poll.poll(self.timeout * 1000):
            raise ClientGone("timed out")

    def take(self, n: int) -> bytes:
        """Up to n body bytes: buffered first, then from the socket (waiting at most socket-timeout)."""
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        while True:
            try:
                data = self.sock.recv(min(n, 65536), _NOWAIT)
            except BlockingIOError:
                self._wait(select.POLLIN)
                continue
            except OSError as e:
                raise ClientGone(str(e)) from None
            if not data:
                raise ClientGone("client closed the connection")
            return data

    def sendall(self, data: bytes) -> int:
        view = memoryview(data)
        total = len(data)
        while view:
            try:
                n = self.sock.send(view, _NOWAIT)
            except BlockingIOError:
                self._wait(select.POLLOUT)
                continue
            except OSError as e:
                raise ClientGone(str(e)) from None
            view = view[n:]
        return total

    def sendfile(self, f, offset: int, count: int) -> int:
        self.sock.setblocking(False)  # sendfile(2) takes no MSG_DONTWAIT
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(self.fd, f.fileno(), offset + sent, count - sent)
            except BlockingIOError:
                self._wait(select.POLLOUT)
                continue
            except OSError as e:
                raise ClientGone(str(e)) from None
            if n == 0:
                break
            sent += n
        return sent

    def has_pending_data(self) -> bool:
        if self.buf:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | _NOWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Core:
    """One event loop (one thread) of a worker."""

    def __init__(self, worker: "Worker", index: int, wake_fd: int) -> None:
        self.worker = worker
        self.index = index
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.counters = CoreCounters(worker.board, worker.slot, index)
        self.wake_fd = wake_fd
        self.ep.register(wake_fd, select.EPOLLIN)
        self.wake_w = -1
        self.accepting = False
        self.reading = True
        self.logbuf: list[str] = []
        self.next_sweep = 0.0
        self.wakes = 0  # the worker's WAKE count when this core last read its orders

    # -- orders from the worker --
    def apply_orders(self) -> None:
        w = self.worker
        rearm, self.wakes = self.wakes != w.wakes, w.wakes
        want_accept = not (w.stopping or w.paused)
        if self.accepting and w.stopping and w.last_out and not w.paused:
            # Connections the kernel already queued were accepted as far as the
            # client knows: take them in and answer them before leaving, so a
            # stop never resets a request that was sent before it.
            for l in w.listeners:
                self.on_accept(l, w.config.socket_timeout, limit=w.config.listen)
        if want_accept != self.accepting:
            for l in w.listeners:
                if want_accept:
                    self.ep.register(l.fd, _EPOLL_ACCEPT)
                else:
                    self.ep.unregister(l.fd)
            self.accepting = want_accept
            if w.stopping and not w.last_out and w.master_pid and any(_queued(l.fd) for l in w.listeners):
                os.kill(w.master_pid, signal.SIGWINCH)  # a connection we may have been woken for
        elif rearm and self.accepting:
            for l in w.listeners:  # EPOLLEXCLUSIVE forbids EPOLL_CTL_MOD; a fresh add polls the queue
                self.ep.unregister(l.fd)
                self.ep.register(l.fd, _EPOLL_ACCEPT)
        want_read = not w.paused
        if want_read != self.reading:
            for fd in self.conns:
                if want_read:
                    self.ep.register(fd, select.EPOLLIN)
                else:
                    self.ep.unregister(fd)
            self.reading = want_read
            if want_read:
                now = time.monotonic()
                for conn in self.conns.values():
                    conn.deadline = now + conn.timeout
        if w.stopping and not w.paused:
            # Closing an idle keep-alive connection races with a request the client
            # may be sending right now. Instead each connection gets its next
            # response with `Connection: close`; one that stays idle for the short
            # linger is closed (the same race as any idle timeout, no more).
            limit = time.monotonic() + min(STOP_LINGER, w.config.socket_timeout)
            for conn in self.conns.values():
                conn.deadline = min(conn.deadline, limit)
            self.next_sweep = min(self.next_sweep, limit)

    def loop(self) -> None:
        w = self.worker
        listeners = {l.fd: l for l in w.listeners}
        timeout_s = w.config.socket_timeout
        self.apply_orders()
        while not w.exiting:
            if w.stopping and not self.conns:
                break
            if self.conns and self.reading:
                now = time.monotonic()
                if now >= self.next_sweep:
                    self.sweep(now)
                    self.next_sweep = now + 1.0
                timeout = max(self.next_sweep - now, 0.0) if self.conns else -1
            else:
                timeout = -1
            try:
                events = self.ep.poll(timeout)
            except InterruptedError:
                events = []
            if w.pending:
                # Orders first: a signal that came with these events (its handler has
                # run, its wake byte may not be among them) must not be preceded by
                # one more accept.
                w.on_wake(self)
            for fd, _ in events:
                conn = self.conns.get(fd)
                if conn is not None:
                    if self.reading:
                        self.on_readable(conn)
                elif fd == self.wake_fd:
                    w.on_wake(self)
                elif fd in listeners and self.accepting and not (w.stopping or w.paused):
                    self.on_accept(listeners[fd], timeout_s)
            if self.logbuf:
                logmod.write_raw("".join(self.logbuf))
                self.logbuf.clear()

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if conn.buf:
                try:
                    conn.sock.send(error_response(408), _NOWAIT)
                except OSError:
                    pass
            self.close(conn)

    def close(self, conn: Conn) -> None:
        # closing the descriptor removes it from epoll: no unregister call needed
        self.conns.pop(conn.fd, None)
        conn.close()

    def on_accept(self, listener: Listener, timeout_s: float, limit: int = 4) -> None:
        w = self.worker
        base = w.bases[listener.fd]
        family = listener.family
        for _ in range(limit):
            try:
                fd, peer = listener.sock._accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.logbuf.append(logmod.line(f"accept: {e.strerror}"))
                return
            # The bare C socket: no Python wrapper, no enum conversions, and left in
            # blocking mode (no ioctl) because every call passes MSG_DONTWAIT.
            conn = Conn(_socket.socket(family, socket.SOCK_STREAM, 0, fd), listener, peer, base, timeout_s)
            self.conns[conn.fd] = conn
            # The request is usually there already: serve it before involving epoll,
            # and register only a connection that stays open.
            self.on_readable(conn)
            if conn.fd in self.conns and self.reading:
                self.ep.register(conn.fd, select.EPOLLIN)
            if limit <= 4 and (w.pending or w.stopping or w.paused):
                return  # new orders (a signal's handler has run): read them before accepting more

    def on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536, _NOWAIT)
        except BlockingIOError:
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        conn.buf = conn.buf + data if conn.buf else data
        try:
            if conn.listener.kind == HTTP:
                self.serve_http(conn)
            else:
                self.serve_uwsgi(conn)
        except HTTPError as e:
            self.refuse(conn, e)
        except Exception as e:  # a bug of ours must cost one connection, never the worker
            self.logbuf.append(logmod.line(f"{_peer(conn)} internal error: {type(e).__name__}: {e}"))
            self.refuse(conn, HTTPError(500, "internal error"))

    def refuse(self, conn: Conn, e: HTTPError) -> None:
        self.logbuf.append(logmod.line(f"{_peer(conn)} refused: {e.status} {e.detail}"))
        try:
            conn.sock.send(error_response(e.status), _NOWAIT)
        except OSError:
            pass
        self.close(conn)

    def serve_http(self, conn: Conn) -> None:
        w = self.worker
        limit = w.config.buffer_size
        while conn.buf:
            end = find_head(conn.buf, limit)
            if end < 0:
                return
            head, conn.buf = conn.buf[:end], conn.buf[end:]
            h = parse_head(head, conn.base)
            environ = h.environ
            if h.length or h.chunked:
                inp = Input(conn, h.length, h.chunked, h.expect_continue)
            else:
                inp = EMPTY_INPUT
            environ["wsgi.input"] = inp
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = conn.remote
            out = self.handle(environ, conn, "HTTP/1.1", h.keep_alive and not w.stopping,
                              h.version == "HTTP/1.1")
            if not (out and inp.drain()) or w.exiting:
                self.close(conn)
                return
            conn.deadline = time.monotonic() + conn.timeout
            if not conn.nodelay and conn.tcp:
                # only a connection that carries several responses can meet Nagle's
                # delay; a one-request connection never pays for this setsockopt
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.nodelay = True
            if w.paused or w.stopping:
                return  # a stopping worker answers the next request with Connection: close

    def serve_uwsgi(self, conn: Conn) -> None:
        n = uwsgi_proto.find_packet(conn.buf, self.worker.config.buffer_size)
        if n < 0:
            return
        packet, conn.buf = conn.buf[:n], conn.buf[n:]
        environ = uwsgi_proto.parse_vars(packet, conn.base)
        length = environ.get("CONTENT_LENGTH")
        environ["wsgi.input"] = Input(conn, int(length), False, False) if length else EMPTY_INPUT
        if environ.get("HTTPS") in ("on", "1") or environ.get("UWSGI_SCHEME") == "https":
            environ["wsgi.url_scheme"] = "https"
        version = environ["SERVER_PROTOCOL"]
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            version = "HTTP/1.1"
        self.handle(environ, conn, version, False, False)
        self.close(conn)

    def handle(self, environ: dict, conn: Conn, version: str, keep_alive: bool, http11: bool) -> bool:
        """Run one request; True if the connection may carry another."""
        w = self.worker
        started = time.monotonic()
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        self.counters.begin(started, method, path)
        w.requests_in_flight += 1
        try:
            out = run(w.app, environ, conn, version=version, keep_alive=keep_alive, http11=http11,
                      allow_chunked=conn.listener.kind == HTTP)
        finally:
            w.requests_in_flight -= 1
        now = time.monotonic()
        self.counters.end(now, started, out.sent, out.failed)
        if not w.config.disable_logging:
            qs = environ.get("QUERY_STRING")
            self.logbuf.append(logmod.line(
                f"{_peer(conn)} {method} {environ.get('REQUEST_URI') or path + ('?' + qs if qs else '')}"
                f" => {out.status} {out.sent} bytes in {(now - started) * 1000:.2f} ms"))
        w.count_request()
        return out.keep_alive


def _peer(conn: Conn) -> str:
    return conn.peer[0] if conn.peer and isinstance(conn.peer, tuple) else "unix"


class Worker:
    """One forked worker process. `run()` never returns: it ends the process."""

    def __init__(self, *, config: Config, slot: int, listeners: list[Listener], app: Callable | None,
                 board: Scoreboard, notify_fd: int, load_app: Callable[[], Callable]) -> None:
        self.config = config
        self.slot = slot
        self.listeners = listeners
        self.app = app
        self.board = board
        self.notify_fd = notify_fd
        self.load_app = load_app
        self.master_pid = 0  # set by the master before run(): its own PID
        self.stopping = False
        self.last_out = False  # stopping with the master: answer the queued connections too
        self.paused = False
        self.exiting = False
        self.requests = 0
        self.requests_in_flight = 0
        self.pending: collections.deque[int] = collections.deque()
        self.orders_lock = threading.Lock()
        self.wakes = 0  # WAKE orders so far: each makes every core re-add its listeners (module docstring)
        self.cores: list[Core] = []
        self.bases = {l.fd: self._base(l) for l in listeners}

    def _base(self, l: Listener) -> dict:
        if l.is_unix:
            name, port = "localhost", "0"
        else:
            name, port = l.sock.getsockname()[:2]
            name, port = str(name), str(port)
        return base_environ(name, port, self.config.threads > 1)

    def _on_signal(self, signum: int, frame) -> None:
        self.pending.append(signum)
        # Every core, not only the main one (the wakeup fd's), so that an order reaches
        # idle threads while the main one is inside a long request.
        self.broadcast()

    def run(self) -> None:
        """Entered right after fork, with signals still blocked by the master."""
        code = 0
        try:
            main_r, main_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            for sig in SIGNALS:
                signal.signal(sig, self._on_signal)
            for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGURG):
                signal.signal(sig, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(main_w, warn_on_full_buffer=False)
            die_with_parent()
            if os.getppid() != self.master_pid:
                os._exit(0)  # the master died between fork and prctl: nobody to serve for
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            logmod.set_prefix(f"[{self.config.name} worker {self.slot + 1}]")
            os.environ[notify.ENV] = str(self.notify_fd)
            if self.app is None:
                self.app = self.load_app()
            main = Core(self, 0, main_r)
            main.wake_w = main_w
            self.cores.append(main)
            threads = []
            for i in range(1, self.config.threads):
                r, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                core = Core(self, i, r)
                core.wake_w = wfd
                self.cores.append(core)
                t = threading.Thread(target=core.loop, name=f"core-{i}", daemon=True)
                threads.append(t)
            self.board.set_ready(self.slot)
            notify.send(self.notify_fd, notify.READY, self.slot)
            for t in threads:
                t.start()
            self.cores[0].loop()
            for t in threads:
                t.join(timeout=self.config.worker_reload_mercy)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:
            logmod.log(f"worker failed: {type(e).__name__}: {e}")
            code = 1
        finally:
            logmod.flush_std()
            os._exit(code)

    def on_wake(self, core: Core) -> None:
        """Read the wake pipe, turn recorded signals into orders and apply them. Any core may
        do it, whichever is free first: the main thread may be inside a long request."""
        try:
            while os.read(core.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        orders = False
        with self.orders_lock:  # one core at a time, so signals apply in their order
            while self.pending:
                sig = self.pending.popleft()
                orders = True
                action = SIGNALS.get(sig)
                before = self.state
                if action in (RETIRE, LAST):
                    self.stopping = True
                    self.last_out = self.last_out or action == LAST
                elif action == WAKE:
                    self.wakes += 1
                elif action == NOW:
                    self.exiting = True
                    logmod.flush_std()
                    os._exit(0)
                elif action == PAUSE:
                    self.paused = True
                elif action == RESUME:
                    self.paused = False
                if self.state != before:
                    logmod.log(f"{before} -> {self.state} ({signal.Signals(sig).name})")
        if orders or core.index == 0:
            self.board.set_flags(self.slot, self.paused, not (self.paused or self.stopping))
        core.apply_orders()
        if orders:
            self.broadcast()

    @property
    def state(self) -> str:
        """running, paused or stopping: what the log and the scoreboard say of this worker."""
        return "stopping" if self.stopping else "paused" if self.paused else "running"

    def count_request(self) -> None:
        self.requests += 1
        if self.requests == 1:
            notify.send(self.notify_fd, notify.LOYAL, self.slot)
        mr = self.config.max_requests
        if mr and self.requests >= mr and not self.stopping:
            logmod.log(f"max-requests ({mr}) reached, retiring")
            notify.send(self.notify_fd, notify.RETIRING, self.slot)
            self.stopping = True
            self.broadcast()

    def broadcast(self) -> None:
        """Make every core re-read its orders (safe in a signal handler)."""
        for c in self.cores:
            try:
                os.write(c.wake_w, b"x")
            except OSError:
                pass  # a full pipe: that core has a wake-up pending already
