"""A file response sent from the worker's loop, as the client takes it.

What uWSGI's offload threads do (OffloadSubsystem doc: "the whole transfer of
the file is delegated ... freeing your worker"), done here by the core's own
epoll loop, with no thread: `offload-threads` is accepted and changes nothing.

When the application answers with a regular file (`wsgi.file_wrapper`, which
static files use too), wsgi.run sends the head and what sendfile(2) puts in the
socket at once. If bytes remain, the core registers the connection for EPOLLOUT
with the file, offset and byte count (a `Transfer`), and goes on serving other
connections; each time the socket is writable, sendfile sends more. At the end
the result's close() is called (PEP 3333: after the body), the request log line
is written (with the bytes sent, or why the transfer was cut), and the
connection serves its next request, one the client pipelined behind included.

socket-timeout keeps its meaning: a transfer is cut after that long without
progress, progress being a sendfile that sent bytes or the socket's send queue
going down (a client that reads slowly frees too little room at a time to make
the socket writable, yet it is reading; conn.Conn._wait does the same).
"""
from __future__ import annotations

import select
import socket
import time

from emperor.worker.streams import ClientGone
from emperor.worker.wsgi import close_result

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every worker image
if TYPE_CHECKING:
    from emperor.worker.conn import Conn
    from emperor.worker.core import Core
    from emperor.worker.wsgi import Exchange

DRAIN_BYTES = 1 << 20   # as core.py: a body the app left unread is drained to reuse the connection
DRAIN_SECONDS = 1.0
STOP_LINGER = 1.0       # as core.py: how long an idle connection stays after a graceful stop


class Transfer:
    """The rest of one file response: which file, from where, how much, and the request's record."""

    __slots__ = ("ex", "environ", "started", "fd", "offset", "left", "queued", "sent_early")

    def __init__(self, ex: Exchange, environ: dict, started: float) -> None:
        self.ex, self.environ, self.started = ex, environ, started
        assert ex.pending is not None
        self.fd, self.offset, self.left = ex.pending
        self.queued = -1          # the socket's send queue when it was last full (SIOCOUTQ)
        self.sent_early = ex.sent  # counted on the scoreboard when the application returned


def start(core: Core, conn: Conn, ex: Exchange, environ: dict, started: float) -> None:
    """The application returned a file not all sent: the loop sends the rest."""
    t = conn.offload = Transfer(ex, environ, started)
    t.queued = conn._queued()
    conn.deadline = time.monotonic() + conn.timeout
    if core.reading:  # else apply_orders registers it, for EPOLLOUT, on resume
        try:
            core.ep.modify(conn.fd, select.EPOLLOUT)
        except FileNotFoundError:
            core.ep.register(conn.fd, select.EPOLLOUT)  # a new connection, not registered yet


def pump(core: Core, conn: Conn) -> None:
    """The socket is writable (or failed): send what it takes."""
    t = conn.offload
    ex = t.ex
    try:
        sent, ended = conn.sendfile(t.fd, t.offset, t.left)
    except ClientGone as e:
        ex.sent += e.sent
        finish(core, conn, str(e))
        return
    ex.sent += sent
    t.offset += sent
    t.left -= sent
    if ended:
        ex.close = True  # the file shrank under us: the client must see the end
        finish(core, conn, "")
    elif not t.left:
        finish(core, conn, "")
    elif sent:
        conn.deadline = time.monotonic() + conn.timeout
        t.queued = conn._queued()


def stalled(core: Core, conn: Conn, now: float) -> None:
    """socket-timeout passed without a writable socket: cut, unless the client is reading."""
    t = conn.offload
    queued = conn._queued()
    if 0 <= queued < t.queued:
        t.queued = queued
        conn.deadline = now + conn.timeout
        return
    finish(core, conn, f"no progress for {conn.timeout:g}s")


def finish(core: Core, conn: Conn, cut: str) -> None:
    """The transfer is over: close the result, log the request, and serve the next one."""
    t, conn.offload = conn.offload, None
    ex = t.ex
    if cut:
        ex.cut, ex.failed, ex.close = cut, True, True
    result, ex.result, ex.pending = ex.result, None, None
    close_result(ex, result)
    ex.keep_alive = not ex.close
    core.counters.add_tx(ex.sent - t.sent_early)
    core.log_request(t.environ, conn, ex, t.started, time.monotonic())
    inp = t.environ["wsgi.input"]
    if not ex.keep_alive or not inp.drain(DRAIN_BYTES, DRAIN_SECONDS):
        core.close(conn)
        return
    conn.deadline = time.monotonic() + (min(STOP_LINGER, conn.timeout) if core.worker.stopping else conn.timeout)
    if not conn.nodelay and conn.tcp:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.nodelay = True
    if core.reading:
        core.ep.modify(conn.fd, select.EPOLLIN)
        if conn.buf:
            core.serve(conn)  # a request pipelined behind the file
