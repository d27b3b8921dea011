"""systemd's notify protocol (`Type=notify`), stdlib only, and the emperor's notion of "ready".

`$NOTIFY_SOCKET` names an AF_UNIX datagram socket (a leading `@` means the
abstract namespace); each message is newline-separated `KEY=value` fields.
The emperor sends:

- `READY=1` once every vassal present at start has *settled*: it is serving
  (running, paused), or it has failed in a way that waiting will not fix soon
  (config error, backoff, reload failed), or it is gone. A vassal that neither
  serves nor fails (a master stuck importing its application) does not hold
  start-up forever: after `READY_TIMEOUT` seconds READY=1 is sent anyway, with a
  STATUS line naming the vassals still starting.
- `RELOADING=1` + `MONOTONIC_USEC=` when the emperor's own SIGHUP reloads every
  vassal, and `READY=1` again once those reloads have settled (same rules).
  Reloads of single vassals (a touched file) are routine and not reported.
- `STOPPING=1` at SIGTERM/SIGINT/SIGQUIT.
- `STATUS=` a one-line summary (`3 vassals: 2 running, 1 backoff`) when it changes.

The control socket's document says `"ready": true` from the first READY=1 on until
shutdown (`Notifier.started`), so `emperor health` and systemd agree on when the
emperor has started; a reload of every vassal is graceful and does not make it
unready for probes.
NOTIFY_SOCKET is removed from the environment the vassals inherit: messages
from a master or an application would otherwise be taken for the emperor's.
"""
from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

ENV = "NOTIFY_SOCKET"
READY_TIMEOUT = 60.0   # READY=1 at the latest this long after start (or after a SIGHUP reload-all)

# Vassal states (VassalState values) that hold READY back.
UNSETTLED = {"starting", "reloading"}


def address(value: str | None) -> str | bytes | None:
    """The sendto address for a $NOTIFY_SOCKET value: a path, or an abstract name as bytes."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other families are not supported: stay silent


def notify(message: str, socket_path: str | None = None) -> bool:
    """Send one message (`READY=1`, `STATUS=…`, several lines joined by newlines).

    Returns False when there is no notify socket or the send failed; never raises.
    """
    addr = address(socket_path if socket_path is not None else os.environ.get(ENV))
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
        return True
    except OSError:
        return False


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Tracks the emperor's readiness and tells systemd (if it listens) about it.

    The emperor calls `update(vassals)` with its table (`{name: Vassal}` or
    `{name: state value}`) after each phase of its loop that can change a state:
    after its timers and the directory scan (`scanned=True`: the first such call
    fixes the vassals present at start) and after dispatching signals (a master
    that exited goes to backoff there, and may be started again by the next
    timers before any other look). `reloading(names)` when SIGHUP reloads every
    vassal, `stopping()` at shutdown; `deadline()` joins its poll timeout.
    """

    def __init__(self, socket_path: str | None = None, *, clock: Callable[[], float] = time.monotonic,
                 ready_timeout: float = READY_TIMEOUT, log: Callable[[str], None] = lambda msg: None) -> None:
        self.socket_path = socket_path
        self.clock = clock
        self.ready_timeout = ready_timeout
        self.log = log
        self.ready = False                      # what systemd was told last: READY=1 (not RELOADING/STOPPING)
        self.started = False                    # READY=1 has been sent once
        self.stopped = False
        self.waiting: set[str] | None = None    # None: the first scan has not been seen yet
        self.wait_until = clock() + ready_timeout
        self.last_status = ""
        self.sent: list[str] = []               # what was sent, for tests and the log

    @classmethod
    def from_environ(cls, environ: dict | None = None, unset: bool = True, **kw: Any) -> Notifier:
        env = os.environ if environ is None else environ
        path = env.get(ENV)
        if unset:
            env.pop(ENV, None)
        return cls(path or None, **kw)

    @property
    def active(self) -> bool:
        return address(self.socket_path) is not None

    def send(self, *fields: str) -> bool:
        message = "\n".join(fields)
        self.sent.append(message)
        if not self.active:
            return False
        return notify(message, self.socket_path)

    def deadline(self) -> float | None:
        return self.wait_until if self.waiting and not self.stopped else None

    def update(self, vassals: dict, scanned: bool = True) -> None:
        if self.stopped or (self.waiting is None and not scanned):
            return
        states = {name: _state(v) for name, v in vassals.items()}
        status = summary(states)
        if self.waiting is None:                # the first scan is applied: these are the vassals present at start
            self.waiting = set(states)
        self.waiting = {n for n in self.waiting if states.get(n) in UNSETTLED}
        if not self.ready and not self.waiting:
            self._ready(status)
        elif not self.ready and self.clock() >= self.wait_until:
            names = ", ".join(sorted(self.waiting))
            self.log(f"ready after {self.ready_timeout:g}s without waiting any longer for: {names}")
            self.waiting = set()
            self._ready(f"{status}; not settled after {self.ready_timeout:g}s: {names}")
        elif status != self.last_status:
            self.last_status = status
            self.send("STATUS=" + status)

    def _ready(self, status: str) -> None:
        self.ready = self.started = True
        self.last_status = status
        self.send("READY=1", "STATUS=" + status)

    def reloading(self, names: Iterable[str]) -> None:
        if self.stopped:
            return
        self.ready = False
        self.waiting = set(names)
        self.wait_until = self.clock() + self.ready_timeout
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading every vassal")

    def stopping(self, why: str = "") -> None:
        if self.stopped:
            return
        self.stopped = True
        self.ready = False
        self.send("STOPPING=1", "STATUS=stopping" + (f" ({why})" if why else ""))


def _state(v: Any) -> str:
    if isinstance(v, str):
        return v
    return v.state.value if v.state is not None else "gone"


def summary(states: dict[str, str]) -> str:
    """`3 vassals: 2 running, 1 backoff` (states in order of first appearance by name)."""
    if not states:
        return "no vassals"
    counts = collections.Counter(states[n] for n in sorted(states))
    noun = "vassal" if len(states) == 1 else "vassals"
    return f"{len(states)} {noun}: " + ", ".join(f"{c} {s}" for s, c in counts.items())
