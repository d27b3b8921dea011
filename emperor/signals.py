"""Signal handlers that only record: the one mechanism behind every signal table here.

A handler appends the signal number to a queue; the interpreter writes the
wakeup byte (`signal.set_wakeup_fd`) to a pipe the process's event loop waits
on; the loop then dispatches each recorded signal to `on_<action>` of its
owner, where all the work happens. No handler ever races another or runs
code that could block.
"""
from __future__ import annotations

import collections
import os
import signal
from collections.abc import Iterator


class SignalQueue:
    installed: SignalQueue | None = None   # the process's queue, for remap()

    def __init__(self, table: dict[int, str]) -> None:
        self.table = table    # signal -> action; the owner has on_<action>(why)
        self.pending: collections.deque[int] = collections.deque()
        self.wake_r = -1

    def install(self) -> int:
        """Set the handlers and the wakeup pipe; returns the descriptor the loop waits on."""
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in self.table:
            signal.signal(sig, self._record)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        SignalQueue.installed = self
        return self.wake_r

    def remap(self, signum: int, action: str) -> None:
        """Point `signum` at another action of the owner (uWSGI's unix_signal hook)."""
        if signum not in self.table:
            signal.signal(signum, self._record)
        self.table[signum] = action

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def dispatch(self, owner: object) -> None:
        """Run `owner.on_<action>(SIGNAME)` for every signal recorded, in arrival order."""
        if self.wake_r >= 0:
            drain(self.wake_r)
        while self.pending:
            sig = self.pending.popleft()
            action = self.table.get(sig)
            if action:
                getattr(owner, "on_" + action)(signal.Signals(sig).name)


def drain(fd: int) -> bytes:
    """Everything a non-blocking descriptor holds now."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def reaped() -> Iterator[tuple[int, int]]:
    """(pid, exit code) of every child that has ended, without waiting: the SIGCHLD action.

    Exit codes as os.waitstatus_to_exitcode gives them: negative for a signal.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)
