"""One client connection of a worker: the transport under the protocols and WSGI.

Client sockets stay in blocking mode and every call passes MSG_DONTWAIT (no
ioctl per connection); a wait is an explicit poll bounded by socket-timeout,
so one slow client costs its own request, never the loop.
"""
from __future__ import annotations

import _socket
import fcntl
import os
import select
import socket
import sys
import termios
import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

    from emperor.tls import TLSSocket

from emperor.sockets import Listener
from emperor.worker.streams import ClientGone

_NOWAIT = socket.MSG_DONTWAIT  # per call: client sockets stay in blocking mode, never block


class Conn:
    """One client connection; non-blocking, with explicit waits bounded by socket-timeout."""

    __slots__ = ("sock", "fd", "buf", "listener", "peer", "remote", "base", "deadline", "timeout", "_poll", "closing",
                 "tcp", "nodelay", "offload", "proxy", "tls")

    def __init__(self, sock: _socket.socket | TLSSocket, listener: Listener, peer: Any, base: dict,
                 timeout: float) -> None:
        self.sock: Any = sock    # a TLSSocket on an https-socket: the same recv/send calls
        self.tls = listener.tls is not None
        self.proxy = listener.proxy   # a PROXY header may come first (emperor/worker/proxyproto.py)
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
        self._poll: select.poll | None = None
        self.closing = 0   # > 0: refused and half-closed; this many more bytes are read and dropped
        self.offload: Any = None  # a file response the core's loop is sending (offload.Transfer)

    def _wait(self, events: int, sent: int = 0) -> None:
        """Wait for the socket, at most socket-timeout without progress.

        Sending, progress is the kernel's send queue going down: a client that reads a
        large response slowly frees too little room at a time to make the socket
        writable within the timeout, yet it is reading. `sent`: bytes of the current
        send so far, for ClientGone to tell.
        """
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN | select.POLLOUT)
        self._poll.modify(self.fd, events)
        queued = self._queued() if events & select.POLLOUT else 0
        while not self._poll.poll(self.timeout * 1000):
            if events & select.POLLOUT:
                now = self._queued()
                if 0 <= now < queued:
                    queued = now
                    continue
            raise ClientGone(f"no progress for {self.timeout:g}s", sent)

    def _queued(self) -> int:
        """Bytes in the socket's send queue not yet acknowledged (SIOCOUTQ); -1 if unknown."""
        try:
            return int.from_bytes(fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
        except OSError:
            return -1

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
                self._wait(select.POLLOUT, total - len(view))
                continue
            except OSError as e:
                raise ClientGone(str(e), total - len(view)) from None
            view = view[n:]
        return total

    def sendfile(self, fd: int, offset: int, count: int) -> tuple[int, bool]:
        """Up to `count` bytes of file `fd` from `offset`, as many as the socket takes now:
        (bytes sent, whether the file ended before `count`). Never waits."""
        if self.tls:
            return self._sendfile_tls(fd, offset, count)
        if self.sock.gettimeout() != 0.0:
            self.sock.setblocking(False)  # sendfile(2) takes no MSG_DONTWAIT
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(self.fd, fd, offset + sent, count - sent)
            except BlockingIOError:
                return sent, False
            except OSError as e:
                raise ClientGone(str(e), sent) from None
            if n == 0:
                return sent, True
            sent += n
        return sent, False

    def _sendfile_tls(self, fd: int, offset: int, count: int) -> tuple[int, bool]:
        """No sendfile(2) through TLS: the file is read and encrypted, a chunk at a time; a
        TLS send returns once its ciphertext is in the kernel (emperor/tls.py)."""
        data = os.pread(fd, min(count, 65536), offset)
        if not data:
            return 0, True
        try:
            return self.sock.send(data), False
        except OSError as e:
            raise ClientGone(str(e), 0) from None

    def unread(self) -> bool:
        """Whether the client sent bytes we have not read yet."""
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


def peer_name(conn: Conn) -> str:
    return conn.peer[0] if conn.peer and isinstance(conn.peer, tuple) else "unix"
