"""A vassal as the emperor sees it: one record per file, its state, and its end of the channel.

The record is plain data (exported by `snapshot()` for the control socket);
its state changes only through `Vassal.to`, which logs one line
(`[emperor] app.ini: running -> reloading (file changed)`).
"""
from __future__ import annotations

import collections
import os
import socket
import time
from dataclasses import dataclass, field

from emperor import log as logmod
from emperor.files import TrustRule
from emperor.sockets import Listener
from emperor.states import VASSAL_EDGES, Machine, VassalState
from emperor.wire import channel as wire


READ_MAX = 256 << 10   # bytes read from one master's channel per turn of the loop
FDS_MAX = 2            # descriptors a master may have sent us that are not used yet


@dataclass
class Vassal:
    name: str
    path: str
    pid: int | None = None
    generation: int = 0          # the master's UWSGI_RELOADS
    starts: int = 0              # masters started for this file
    backoff: float = 0.0         # the last backoff delay; 0 once it served a request (`loyal`)
    started_at: float = 0.0      # the emperor's clock when its current master was started
    retry_at: float | None = None
    kill_at: float | None = None
    last_event: str = ""
    last_error: str = ""
    errors: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=5))
    since: float = field(default_factory=time.time)
    uid: int | None = None       # what the master runs as (tyrant mode)
    gid: int | None = None
    addresses: set[str] = field(default_factory=set)
    waiting_for: set[str] = field(default_factory=set)  # they hold our ports: start after they left
    stats_address: str = ""      # where its master answers its stats (its `stats`, or our private socket)
    removed: bool = False        # the file is gone: when the master exits, the vassal goes
    restart: bool = False        # start a new master when this one has exited
    spawned: bool = False        # the master has said `spawned`: its signal handlers are in place
    images: int = 0
    warnings: list[str] = field(default_factory=list)   # its file's ("not supported" options...)
    graceful_removal: bool | None = None   # its file's `graceful-removal`, kept for when the file is gone
    vacuum: list[str] = field(default_factory=list)   # socket files to remove for its master
    restored: bool = False       # SIGURG brought back an older generation: the file is newer than what serves
    rollbacks: int = 0
    channel: socket.socket | None = None
    buf: wire.LineBuffer = field(default_factory=wire.LineBuffer)
    fds: collections.deque[int] = field(default_factory=collections.deque)  # came with its messages
    env: dict[str, str] = field(default_factory=dict)  # what its master was started with
    trust: TrustRule = field(default_factory=lambda: TrustRule(None))  # who may write what it reads
    # on demand (emperor/emperor/ondemand.py): the sockets we hold for it, and its cold starts
    held: list[Listener] = field(default_factory=list)
    cold_starts: int = 0
    last_start: float = 0.0      # time.time() of the last cold start
    wanted_now: bool = False     # a connection waits: the next start launches the master
    machine: Machine = field(init=False)

    def __post_init__(self) -> None:
        self.machine = Machine(None, VASSAL_EDGES, logmod.log, label=f"{logmod.printable(self.name)}: ",
                               again=frozenset({VassalState.CONFIG_ERROR, VassalState.FAILING, VassalState.BACKOFF}))

    @property
    def state(self) -> VassalState | None:
        s = self.machine.state
        return s if isinstance(s, VassalState) else None

    def to(self, new: VassalState | None, why: str) -> None:
        old = self.machine.state
        if self.machine.to(new, why):
            if new is not old:
                self.since = time.time()   # in this state since: a repeated failure is not news of a new state
            self.last_event = why

    def fail(self, error: str) -> None:
        """Remember an error: the last one, and the last few for `status NAME`."""
        self.last_error = error
        self.errors.append(error)

    def snapshot(self, now: float) -> dict:
        return {
            "name": self.name, "path": self.path,
            "state": self.state.value if self.state else "gone",
            "pid": self.pid, "generation": self.generation, "starts": self.starts,
            "backoff": self.backoff,
            "retry_in": round(max(self.retry_at - now, 0.0), 3) if self.retry_at is not None else None,
            "last_event": self.last_event, "last_error": self.last_error,
            "errors": list(self.errors), "since": self.since,
            "uid": self.uid, "gid": self.gid,
            "waiting_for": sorted(self.waiting_for),
            "stats_address": self.stats_address,
            "restored": self.restored, "rollbacks": self.rollbacks, "warnings": list(self.warnings),
            "on_demand": bool(self.held), "cold_starts": self.cold_starts,
            "last_start": self.last_start or None,
            "sockets": [f"{l.kind}://{l.address}" for l in self.held],
        }

    # ---------- its end of the channel (emperor/wire/channel.py) ----------
    def send(self, word: str, text: str = "") -> bool:
        return self.channel is not None and wire.send(self.channel, word, text)

    def receive(self) -> tuple[list[tuple[str, str]], bool]:
        """(messages, eof): what the master sent (at most READ_MAX per call: one master cannot
        hold the emperor's loop; the rest waits for the next turn). Descriptors go to `fds`.

        Raises ProtocolError when the master breaks the protocol (a line too long, more
        descriptors than a preflight request carries): in tyrant mode it is tenant code.
        """
        data_in = b""
        eof = False
        while self.channel is not None and len(data_in) < READ_MAX:
            try:
                data, fds, _, _ = socket.recv_fds(self.channel, 65536, wire.MAX_FDS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data, fds = b"", []
            self.fds.extend(fds)
            if len(self.fds) > FDS_MAX:
                raise wire.ProtocolError(f"{len(self.fds)} descriptors sent, at most {FDS_MAX} expected")
            if not data:
                eof = True
                break
            data_in += data
        return [wire.parse(line) for line in self.buf.feed(data_in)], eof

    def close_channel(self) -> int | None:
        """Close our end; returns its descriptor number (for the caller's epoll), None if none."""
        if self.channel is None:
            return None
        fd = self.channel.fileno()
        self.channel.close()
        self.channel = None
        while self.fds:
            os.close(self.fds.popleft())
        return fd
