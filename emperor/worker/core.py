"""One event loop ("core", as uWSGI calls it) of a worker: one per thread.

Each core waits in epoll on the listening sockets and its keep-alive
connections, so one slow or idle client never holds the worker: only the
application call itself is synchronous. Listening sockets are registered with
EPOLLEXCLUSIVE so a new connection wakes one worker, not all. The price: a
worker that was woken for a connection and stops accepting without taking it
leaves it queued with nobody told. So a worker that retires with connections
still queued asks the master to wake every worker (SIGWINCH), and a woken
worker re-adds its listeners, which makes the kernel look at the queue.
"""
from __future__ import annotations

import _socket
import errno
import os
import select
import signal
import socket
import time

from emperor import log as logmod
from emperor.api import state as api_state
from emperor.sockets import UWSGI, Listener
from emperor.wire.scoreboard import CoreCounters
from emperor.worker import offload
from emperor.worker.conn import Conn, peer_name
from emperor.worker.protocols import uwsgi as uwsgi_proto
from emperor.worker.protocols.http import HTTPError, error_response, find_head, parse_head
from emperor.worker.reqlog import Request
from emperor.worker.streams import EMPTY_INPUT, EmptyInput, Input
from emperor.worker.wsgi import Exchange, run

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.worker.process import Worker

_EPOLL_ACCEPT = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
_NOWAIT = socket.MSG_DONTWAIT
STOP_LINGER = 1.0  # seconds an idle keep-alive connection may stay open after a graceful stop
DRAIN_BYTES = 1 << 20   # of a body the app left unread, discarded to reuse the connection...
DRAIN_SECONDS = 1.0     # ...if it comes this fast; otherwise the connection is closed
ACCEPT_PAUSE = 0.1      # out of descriptors: stop accepting this long instead of spinning
LINGER_SECONDS = 1.0    # after a refusal, what the client still sends is read and dropped
LINGER_BYTES = 16 << 20  # for so long, and so much, at most (see Core.linger)
_SCARCE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _queued(fd: int) -> bool:
    """Whether a listening socket has connections waiting to be accepted."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


class Core:
    """One event loop (one thread) of a worker."""

    def __init__(self, worker: Worker, index: int, wake_fd: int) -> None:
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
        self.held = False  # a pipelined request waits in some conn.buf for the resume
        self.logbuf: list[str] = []
        self.next_sweep = 0.0
        self.wakes = 0  # the worker's WAKE count when this core last read its orders
        self.accept_again: float | None = None  # out of descriptors: listeners come back then
        self.scarce = 0                         # accepts refused for want of descriptors, unlogged
        keepalive = worker.config.http_keepalive  # > 1: how long a connection may idle between requests
        self.idle = keepalive if keepalive > 1 else 0   # 0: the connection's own timeout

    # -- orders from the worker --
    def apply_orders(self) -> None:
        w = self.worker
        rearm, self.wakes = self.wakes != w.wakes, w.wakes
        want_accept = not (w.stopping or w.paused) and self.accept_again is None
        if self.accepting and w.stopping and w.last_out and not w.paused:
            # Connections the kernel already queued were accepted as far as the
            # client knows: take them in and answer them before leaving, so a
            # stop never resets a request that was sent before it.
            for l in w.listeners:
                self.on_accept(l, l.timeout, limit=max(w.config.listen, 1))
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
            for fd, c in self.conns.items():
                if want_read:
                    self.ep.register(fd, select.EPOLLIN if c.offload is None else select.EPOLLOUT)
                else:
                    self.ep.unregister(fd)
            self.reading = want_read
            if want_read:
                now = time.monotonic()
                for conn in self.conns.values():
                    conn.deadline = now + conn.timeout
                self.held = True
        if want_read and self.held:
            # Requests pipelined behind a response that ended while paused: no read event
            # will come for them. Also when this core never saw the pause itself (it was
            # inside the app while another thread applied both the pause and the resume).
            self.held = False
            for conn in [c for c in self.conns.values() if c.buf and c.offload is None]:
                self.serve(conn)
        if w.stopping and not w.paused:
            # Closing an idle keep-alive connection races with a request the client
            # may be sending right now. Instead each connection gets its next
            # response with `Connection: close`; one that stays idle for the short
            # linger is closed (the same race as any idle timeout, no more).
            limit = time.monotonic() + min(STOP_LINGER, w.config.socket_timeout)
            for conn in self.conns.values():
                if conn.offload is None:  # a file still going out is a request in flight: it finishes
                    conn.deadline = min(conn.deadline, limit)
            self.next_sweep = min(self.next_sweep, limit)

    def loop(self) -> None:
        w = self.worker
        listeners = {l.fd: l for l in w.listeners}
        self.apply_orders()
        while True:
            now = time.monotonic()
            if self.conns and self.reading and now >= self.next_sweep:
                self.sweep(now)
                self.next_sweep = now + 1.0
                if self.logbuf:
                    self.flush_log()  # a transfer the sweep cut (offload.stalled): its line now, not at the next event
            if self.accept_again is not None and now >= self.accept_again:
                self.accept_again = None
                self.apply_orders()
            if w.leaving and not self.conns:
                break  # checked after the sweep: it may have closed the last connection
            deadlines = ([self.next_sweep] if self.conns and self.reading else []) + \
                ([self.accept_again] if self.accept_again is not None else [])
            timeout = max(min(deadlines) - now, 0.0) if deadlines else -1
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
                        if conn.offload is None:
                            self.on_readable(conn)
                        else:
                            offload.pump(self, conn)  # writable: more of a file response (offload.py)
                elif fd == self.wake_fd:
                    w.on_wake(self)
                elif fd in listeners and self.accepting and not (w.stopping or w.paused):
                    self.on_accept(listeners[fd], listeners[fd].timeout)
            if self.logbuf:
                self.flush_log()

    def flush_log(self) -> None:
        text = "".join(self.logbuf)
        if not self.worker.reqlog.write(text):
            logmod.write_raw(text)
        self.logbuf.clear()

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            if conn.offload is not None:
                offload.stalled(self, conn, now)
            elif conn.closing:
                self.close(conn)
            elif conn.unread():
                # it came in time, while this core was busy with another request: not a timeout
                self.on_readable(conn)
            elif conn.buf:
                self.refuse(conn, HTTPError(408, "request not complete within socket-timeout"), log=False)
            else:
                self.close(conn)

    def linger(self, conn: Conn) -> None:
        """Close after a refusal so that the client reads it (RFC 9112 9.6).

        Closing with request bytes unread makes the kernel send RST, which can destroy
        the refusal before the client reads it (nginx then answers 502). So: half-close,
        drop what the client still sends, close at its EOF or after LINGER_SECONDS,
        from this loop like any connection: the core does not wait for it.
        """
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(conn)
            return
        conn.closing, conn.buf = LINGER_BYTES, b""
        conn.deadline = time.monotonic() + min(LINGER_SECONDS, conn.timeout)
        self.next_sweep = min(self.next_sweep, conn.deadline)

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
                fd, peer = listener.sock._accept()  # type: ignore[attr-defined]  # the C accept: no wrapper object
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _SCARCE:
                    self.out_of_descriptors(e)
                return
            # The bare C socket: no Python wrapper, no enum conversions, and left in
            # blocking mode (no ioctl) because every call passes MSG_DONTWAIT.
            raw = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if listener.tls is None:
                conn = Conn(raw, listener, peer, base, timeout_s)
            else:   # https-socket (emperor/tls.py: ssl is imported only where it is used)
                from emperor.tls import TLSSocket

                conn = Conn(TLSSocket(listener.tls, raw, timeout_s),  # type: ignore[arg-type]  # its SSLContext
                            listener, peer, base, timeout_s)
            self.conns[conn.fd] = conn
            # The request is usually there already: serve it before involving epoll,
            # and register only a connection that stays open.
            self.on_readable(conn)
            if conn.fd in self.conns and self.reading and conn.offload is None:
                self.ep.register(conn.fd, select.EPOLLIN)
            if limit <= 4 and (w.pending or w.stopping or w.paused):
                return  # new orders (a signal's handler has run): read them before accepting more

    def out_of_descriptors(self, e: OSError) -> None:
        """accept() failed for want of descriptors (or memory): a listener that stays readable
        would spin this loop. Shed our oldest idle connection, stop accepting for a moment,
        and say so in one line per pause, not one per attempt."""
        idle = [c for c in self.conns.values() if not c.buf and c.offload is None]
        if idle:
            self.close(min(idle, key=lambda c: c.deadline))
        self.scarce += 1
        if self.accept_again is None:
            self.logbuf.append(logmod.line(f"accept: {e.strerror}; pausing accept for {ACCEPT_PAUSE:g}s"
                                           + (f" ({self.scarce} refused)" if self.scarce > 1 else "")))
            self.scarce = 0
            self.accept_again = time.monotonic() + ACCEPT_PAUSE
            self.apply_orders()

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
        if conn.closing:
            conn.closing = max(conn.closing - len(data), 0)
            if not conn.closing:
                self.close(conn)
            return
        conn.buf = conn.buf + data if conn.buf else data
        self.serve(conn)

    def serve(self, conn: Conn) -> None:
        """Answer the complete requests buffered on `conn`."""
        try:
            if conn.proxy:   # enable-proxy-protocol: its header first (emperor/worker/proxyproto.py)
                from emperor.worker.proxyproto import take_header

                if not take_header(conn, self.worker.proxy_allowed):  # type: ignore[arg-type]  # set with proxy
                    return
                conn.proxy = False
            if conn.listener.kind != UWSGI:
                self.serve_http(conn)
            else:
                self.serve_uwsgi(conn)
        except HTTPError as e:
            self.refuse(conn, e)
        except Exception as e:  # a bug of ours must cost one connection, never the worker
            self.logbuf.append(logmod.line(f"{peer_name(conn)} internal error: {type(e).__name__}: {e}"))
            self.refuse(conn, HTTPError(500, "internal error"))

    def refuse(self, conn: Conn, e: HTTPError, log: bool = True) -> None:
        if log:
            self.logbuf.append(logmod.line(f"{peer_name(conn)} refused: {e.status} {e.detail}"))
        try:
            conn.sock.send(error_response(e.status), _NOWAIT)
        except OSError:
            self.close(conn)
            return
        self.linger(conn)

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
            inp: Input | EmptyInput = Input(conn, h.length, h.chunked, h.expect_continue) \
                if h.length or h.chunked else EMPTY_INPUT
            environ["wsgi.input"] = inp
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = conn.remote
            out = self.handle(environ, conn, "HTTP/1.1",
                              h.keep_alive and not w.stopping, h.version == "HTTP/1.1")
            if out is None:
                return  # a file goes out from the loop; offload.finish goes on with what is pipelined
            if not (out and inp.drain(DRAIN_BYTES, DRAIN_SECONDS)):
                self.close(conn)
                return
            conn.deadline = time.monotonic() + (self.idle or conn.timeout)
            if not conn.nodelay and conn.tcp:
                # only a connection that carries several responses can meet Nagle's
                # delay; a one-request connection never pays for this setsockopt
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.nodelay = True
            if w.paused:
                self.held = True
                return  # what is pipelined behind waits for the resume (apply_orders)
            # a stopping worker goes on: a request the client pipelined before it could see
            # `Connection: close` is answered (with it), not dropped

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
        if self.handle(environ, conn, version, False, False) is not None:
            self.close(conn)  # else a file goes out from the loop, which closes it after

    def handle(self, environ: dict, conn: Conn, version: str, keep_alive: bool, http11: bool) -> bool | None:
        """Run one request; True if the connection may carry another; None if a file response
        goes on from the loop (offload.py: it logs the request and goes on when it is sent)."""
        w = self.worker
        started = time.monotonic()
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        self.counters.begin(started, method, path)
        if w.api:   # the app imported uwsgi: set_logvar(), request_id() need the request
            local = api_state.local
            local.environ, local.counters = environ, self.counters
        w.requests_in_flight += 1
        try:
            out = run(w.app, environ, conn, version=version, keep_alive=keep_alive, http11=http11,
                      allow_chunked=conn.listener.kind != UWSGI,
                      crowded=(lambda: crowded(self, conn)) if w.shed and keep_alive else None)
        finally:
            w.requests_in_flight -= 1
        now = time.monotonic()
        self.counters.end(now, started, out.sent, out.failed)
        if out.pending is not None:
            offload.start(self, conn, out, environ, started)
            w.count_request(out.raised)
            return None
        self.log_request(environ, conn, out, started, now)
        w.count_request(out.raised)
        return out.keep_alive

    def log_request(self, environ: dict, conn: Conn, out: Exchange, started: float, now: float) -> None:
        w = self.worker
        reqlog = w.reqlog
        if reqlog.active and reqlog.wanted(out.status, now - started, max(out.sent - out.head_size, 0), out.via_file):
            self.logbuf.append(reqlog.line(Request(environ, out.status, out.sent, out.head_size, len(out.headers),
                                                   time.time() - (now - started), now - started, w.slot + 1,
                                                   self.index, out.cut), peer_name(conn)))


def crowded(core: Core, conn: Conn) -> bool:
    """Is a request waiting on another of this core's connections (with cheaper only)?

    Keep-alive clients stay with the worker that accepted them, so under a rising load
    the workers the cheaper algorithm adds would get no connection and be cheaped again
    while the first ones queue requests. A crowded core answers with `Connection: close`:
    the client's next connection goes through the listen queue, which the algorithm
    reads and every free worker takes from. One epoll_wait(0) per request, only with cheaper.
    """
    if len(core.conns) < 2:
        return False
    if any(c.buf and c is not conn for c in core.conns.values()):
        return True
    return any(fd != conn.fd and fd in core.conns for fd, _ in core.ep.poll(0))
