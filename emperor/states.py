"""The explicit states of a master, a worker and a vassal (as the emperor sees it).

Every transition goes through `StateMachine.to`, which logs one line, so the
log, the stats and the status view all tell the same story.
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


class WorkerStatus(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    PAUSE = "pause"


class VassalState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    RELOADING = "reloading"
    RELOAD_FAILED = "reload failed"
    BACKOFF = "backoff"
    CONFIG_ERROR = "config error"
    STOPPING = "stopping"


# Which edges a master may take; anything else is a bug worth a loud log line.
MASTER_EDGES: dict[MasterState, set[MasterState]] = {
    MasterState.STARTING: {MasterState.RUNNING, MasterState.STOPPING, MasterState.RELOADING},
    MasterState.RUNNING: {MasterState.PAUSED, MasterState.RELOADING, MasterState.STOPPING},
    MasterState.PAUSED: {MasterState.RUNNING, MasterState.RELOADING, MasterState.STOPPING},
    MasterState.RELOADING: {MasterState.RUNNING, MasterState.PAUSED, MasterState.STOPPING},
    MasterState.STOPPING: set(),
}


class StateMachine:
    """Holds one state and logs each transition as `old -> new (why)`."""

    def __init__(self, initial: MasterState, log: Callable[[str], None],
                 edges: dict = MASTER_EDGES, on_change: Callable[[], None] | None = None) -> None:
        self.state = initial
        self._log = log
        self._edges = edges
        self._on_change = on_change

    def to(self, new: MasterState, why: str = "") -> None:
        old = self.state
        if new is old:
            return
        if new not in self._edges.get(old, set()):
            self._log(f"unexpected transition {old.value} -> {new.value} ({why})")
        self.state = new
        self._log(f"{old.value} -> {new.value}" + (f" ({why})" if why else ""))
        if self._on_change is not None:
            self._on_change()
