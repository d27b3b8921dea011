"""The master's one event loop, and what it asks of each part of the master.

A part (the reload's preflight, touch-reload, the stats socket, the 503 answerer,
attached daemons, cron...) watches its descriptors through the `Loop`, and may have
a deadline, children of its own, something to do when the master stops, and
descriptors a forked worker must not keep. The master drives every part the same
way, so a new feature is one more part, not more code in the master's loop.
"""
from __future__ import annotations

import select
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.wire.handoff import HandOff


class Loop:
    """One epoll: each descriptor with the handler to call when it is readable."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[], None]] = {}

    def fileno(self) -> int:
        return self.ep.fileno()

    def watch(self, fd: int, handler: Callable[[], None], events: int = select.EPOLLIN) -> None:
        self.ep.register(fd, events)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass  # closed already: the kernel dropped it

    def poll(self, timeout: float) -> None:
        """Wait until something is readable or `timeout` (-1: no timeout) passed; handle it."""
        try:
            events = self.ep.poll(timeout)
        except InterruptedError:
            return
        for fd, _ in events:
            handler = self.handlers.get(fd)
            if handler is not None:   # a handler may have unwatched another's descriptor
                handler()


class Part:
    """What the master asks of each of its parts; every method may be left as it is here."""

    def deadline(self) -> float | None:
        """When `run_timers` has something to do (monotonic), if anything."""
        return None

    def run_timers(self, now: float) -> None:
        pass

    def reaped(self, pid: int, code: int) -> bool:
        """A child of the master ended: True if it was this part's."""
        return False

    def alive(self) -> bool:
        """This part has children the master must wait for before it exits."""
        return False

    def stop(self, graceful: bool) -> None:
        """The master stops (gracefully: what runs may finish; else: at once)."""

    def fds(self) -> list[int]:
        """Descriptors of this part that a forked worker closes."""
        return []

    def hand_over(self, h: HandOff) -> list[int]:
        """A reload re-executes the master now: put in `h` what the next image takes over (its
        children are still the master's across execve); the descriptors it must inherit."""
        return []


def earliest(deadlines: list[float | None]) -> float | None:
    return min((t for t in deadlines if t is not None), default=None)
