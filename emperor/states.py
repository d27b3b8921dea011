"""The explicit states of the three processes, their allowed edges, and the one machine that moves them.

Each process changes state only through `Machine.to`, which checks the edge and
logs one line (`running -> reloading (SIGHUP)`), so the log, the stats and the
status view tell the same story. A state absent from the table (None for a
vassal) is "not there": a new file or a vassal gone.

Pausing is not a state here but a toggle beside it, in the master and in the
worker alike: a paused master may also be reloading, a paused worker may also
have been told to retire, and each resumes where it was.
"""
from __future__ import annotations

import enum
from collections.abc import Callable


class MasterState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RELOADING = "reloading"
    STOPPING = "stopping"


class WorkerState(enum.Enum):
    RUNNING = "running"      # accepting (unless paused)
    RETIRING = "retiring"    # stops accepting, finishes what it holds; another generation takes the queue
    LAST_OUT = "last out"    # the same, after answering what the kernel queued: nobody else will
    PARKED = "parked"        # as retiring, but then waits, alive: the snapshot a SIGURG brings back


class VassalState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RELOADING = "reloading"
    RELOAD_FAILED = "reload failed"
    BACKOFF = "backoff"
    CONFIG_ERROR = "config error"
    FAILING = "failing"          # its master runs, but no worker can serve (they die before serving)
    STOPPING = "stopping"
    ON_DEMAND = "on-demand"      # no master: the emperor holds its sockets and starts one on a connection


M, W, V = MasterState, WorkerState, VassalState

MASTER_EDGES: dict[MasterState | None, set[MasterState | None]] = {
    M.STARTING: {M.RUNNING, M.PAUSED, M.STOPPING, M.RELOADING},
    M.RUNNING: {M.PAUSED, M.RELOADING, M.STOPPING},
    M.PAUSED: {M.RUNNING, M.RELOADING, M.STOPPING},
    M.RELOADING: {M.RUNNING, M.PAUSED, M.STOPPING},
    M.STOPPING: set(),
}

WORKER_EDGES: dict[WorkerState | None, set[WorkerState | None]] = {
    W.RUNNING: {W.RETIRING, W.LAST_OUT, W.PARKED},
    W.RETIRING: {W.LAST_OUT},
    W.LAST_OUT: set(),
    W.PARKED: {W.RUNNING, W.RETIRING, W.LAST_OUT},
}

VASSAL_EDGES: dict[VassalState | None, set[VassalState | None]] = {
    None: {V.STARTING, V.CONFIG_ERROR, V.BACKOFF, V.ON_DEMAND},
    V.STARTING: {V.RUNNING, V.RELOADING, V.RELOAD_FAILED, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, None,
                 V.ON_DEMAND},
    V.RUNNING: {V.PAUSED, V.RELOADING, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, V.ON_DEMAND},
    V.PAUSED: {V.RUNNING, V.RELOADING, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, V.ON_DEMAND},
    V.RELOADING: {V.RUNNING, V.RELOAD_FAILED, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, V.ON_DEMAND},
    V.RELOAD_FAILED: {V.RUNNING, V.RELOADING, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, V.ON_DEMAND},
    V.FAILING: {V.RUNNING, V.RELOADING, V.STOPPING, V.BACKOFF, V.CONFIG_ERROR, V.FAILING, V.ON_DEMAND},
    V.BACKOFF: {V.STARTING, V.CONFIG_ERROR, V.BACKOFF, None, V.ON_DEMAND},   # a retry that failed again
    V.CONFIG_ERROR: {V.STARTING, V.RELOADING, V.STOPPING, V.CONFIG_ERROR, V.BACKOFF, None, V.ON_DEMAND},
    V.STOPPING: {V.STARTING, V.BACKOFF, V.CONFIG_ERROR, None, V.ON_DEMAND},  # restart after an owner change
    # on-demand: the emperor holds the sockets; a connection starts the master (emperor/emperor/ondemand.py)
    V.ON_DEMAND: {V.STARTING, V.CONFIG_ERROR, V.BACKOFF, None},
}


def _name(state: enum.Enum | None, absent: str) -> str:
    return absent if state is None else str(state.value)


class Machine:
    """One state and its allowed edges; `to` logs each transition once.

    `again`: states whose re-entry is logged too (a second config error is news).
    `absent`: how a None state reads in the log (`new` when entering, `gone` when leaving).
    """

    def __init__(self, initial: enum.Enum | None, edges: dict, log: Callable[[str], None], *,
                 label: str = "", again: frozenset = frozenset(),
                 on_change: Callable[[], None] | None = None) -> None:
        self.state = initial
        self.edges = edges
        self.log = log
        self.label = label            # prefixed to each line (`app.ini: `)
        self.again = again
        self.on_change = on_change

    def to(self, new: enum.Enum | None, why: str = "") -> bool:
        """Move to `new`; False (and no line) when already there."""
        old = self.state
        if new is old and new not in self.again:
            return False
        before, after = _name(old, "new"), _name(new, "gone")
        if new not in self.edges.get(old, set()):
            self.log(f"{self.label}unexpected transition {before} -> {after} ({why})")
        self.state = new
        self.log(f"{self.label}{before} -> {after}" + (f" ({why})" if why else ""))
        if self.on_change is not None:
            self.on_change()
        return True
