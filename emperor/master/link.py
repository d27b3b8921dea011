"""The master's end of the channel to its emperor (emperor/wire/channel.py).

A master run by hand (`emperor master FILE`) has no emperor: every call here
is then a no-op, so the rest of the master never asks whether it has one.
"""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

from emperor.proc import die_with_parent
from emperor.wire import channel


class EmperorLink:
    def __init__(self, fd: int | None) -> None:
        self.sock: socket.socket | None = None
        self.buf = channel.LineBuffer()
        self.loyal = False
        if fd is None:
            return
        try:
            self.sock = socket.socket(fileno=fd)
            self.sock.setblocking(False)
            os.set_inheritable(fd, False)  # not for the preflight; the hand-off makes it inheritable again
        except OSError:
            self.sock = None
            return
        # Backstop for a lost EOF: the kernel kills us when the emperor dies.
        # It survives execve; a lost race (emperor already gone) still ends in EOF.
        die_with_parent(signal.SIGKILL)

    def fileno(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    def tell(self, word: str, text: str = "") -> None:
        if self.sock is not None:
            channel.send(self.sock, word, text)

    def tell_loyal(self) -> None:
        """Once per image: the first request was served."""
        if not self.loyal:
            self.loyal = True
            self.tell(channel.LOYAL)

    def ask_preflight(self, held: str, out_fd: int) -> bool:
        """Ask the emperor to fork our reload preflight, its output going to `out_fd`."""
        return self.sock is not None and channel.send(self.sock, channel.PREFLIGHT, held, [out_fd])

    def read(self) -> list[tuple[str, str]] | None:
        """The messages that arrived; None once the emperor is gone (EOF)."""
        if self.sock is None:
            return []
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        try:
            return [channel.parse(line) for line in self.buf.feed(data)]
        except channel.ProtocolError:
            return None

    def close(self, unwatch: Callable[[int], None] | None = None) -> None:
        """Close our end (first taking it out of the loop with `unwatch`)."""
        if self.sock is not None:
            if unwatch is not None:
                unwatch(self.sock.fileno())
            self.sock.close()
            self.sock = None
