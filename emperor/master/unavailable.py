"""While no worker can serve, the master answers `503` with `Retry-After` itself.

When every worker of the generation dies before its first request (an app that
fails to import with `lazy-apps`, a crash at start-up), connections would
otherwise wait in the listen backlog until the client gives up: a failure that
looks like a hang. The master never runs the application; this answers one
fixed response, half-closes, and drops what the client still sends (so the
response is not destroyed by a reset), all from its own loop. Workers that
start again take the queue back as soon as they accept.
"""
from __future__ import annotations

import functools
import select
import socket
import time

from emperor.master.loop import Loop, Part
from emperor.sockets import Listener
from emperor.worker.protocols.http import response

LINGER = 1.0         # a refused client has this long to finish sending before we close
MAX_LINGERING = 64   # connections being closed at once; beyond, the oldest goes at once
_ACCEPT = select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)


class Unavailable(Part):
    def __init__(self, listeners: list[Listener], loop: Loop) -> None:
        self.listeners = {l.fd: l for l in listeners}
        self.loop = loop
        self.active = False
        self.retry_after = 1
        self.lingering: dict[int, tuple[socket.socket, float]] = {}   # fd -> (socket, close at)

    def start(self, retry_after: float) -> None:
        self.retry_after = max(int(retry_after + 0.999), 1)
        if not self.active:
            self.active = True
            for fd, listener in self.listeners.items():
                self.loop.watch(fd, functools.partial(self._refuse, listener), _ACCEPT)

    def stop(self, graceful: bool = True) -> None:
        if self.active:
            self.active = False
            for fd in self.listeners:
                self.loop.unwatch(fd)

    def _refuse(self, listener: Listener) -> None:
        body = b"503 Service Unavailable: the application cannot start; see its log\n"
        answer = response(503, body, headers=[("Retry-After", str(self.retry_after))])
        for _ in range(16):
            try:
                sock, _ = listener.sock.accept()
            except OSError:  # nobody left (or out of descriptors: the loop comes back)
                return
            sock.setblocking(False)
            try:
                sock.send(answer)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                sock.close()
                continue
            if len(self.lingering) >= MAX_LINGERING:
                self._close(next(iter(self.lingering)))
            fd = sock.fileno()
            self.lingering[fd] = (sock, time.monotonic() + LINGER)
            self.loop.watch(fd, functools.partial(self._drain, fd))

    def _drain(self, fd: int) -> None:
        sock = self.lingering[fd][0]
        try:
            if sock.recv(65536):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(fd)

    def _close(self, fd: int) -> None:
        sock, _ = self.lingering.pop(fd)
        self.loop.unwatch(fd)
        sock.close()

    def fds(self) -> list[int]:
        return list(self.lingering)

    def deadline(self) -> float | None:
        return min((t for _, t in self.lingering.values()), default=None)

    def run_timers(self, now: float) -> None:
        for fd in [fd for fd, (_, t) in self.lingering.items() if t <= now]:
            self._close(fd)
