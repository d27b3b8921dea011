"""What the `uwsgi` module knows of the process it runs in, set before the application loads.

One place both the module's functions and emperor's own code (master, worker) read and
write, so that the api package depends on nothing above it: the master and the worker push
facts here, the application's calls read them. A master (lazy-apps = false) loads the app
with worker_id 0; each forked worker then sets its own facts (`enter_worker`), so a value
read at call time is right in every worker.
"""
from __future__ import annotations

import threading

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image

if TYPE_CHECKING:
    from collections.abc import Callable

    from emperor.config import Config
    from emperor.wire.scoreboard import Scoreboard
    from emperor.wire.uarea import Area

MAX_PENDING = 1024   # messages for the master's signal part queued while the app loads in the master

config: Config | None = None   # the vassal's configuration (set by install() before the app loads)
master_pid = 0                 # the master's PID, in a worker (the master: its own)
worker_id = 0                  # 1..processes in a worker, 0 in the master
board: Scoreboard | None = None   # a worker's generation's scoreboard (uwsgi.workers())
area: Area | None = None       # signal counters and locks (emperor/wire/uarea.py), if the app uses them
handlers: dict[int, Callable] = {}    # this process's signal handlers (register_signal)
targets: dict[int, str] = {}          # and their targets, as this process registered them
pending: list[dict] = []       # messages for the master's part, made before it exists (import time)
to_master: Callable[[dict], None] | None = None   # the master's part, in the master
worker: object | None = None   # the Worker object in a worker (accepting, stop...)
local = threading.local()      # per thread: `environ` and `counters` of the request it is in


def tell(msg: dict) -> bool:
    """A message for the master's signal part (emperor/master/usignals.py)."""
    if worker_id == 0:
        if to_master is not None:
            to_master(msg)
        elif len(pending) < MAX_PENDING:
            pending.append(msg)
        else:
            return False
        return True
    import json

    if area is None:
        return False   # the app imported uwsgi only after the fork: the master has no part for it
    msg["slot"] = worker_id - 1
    return area.send(json.dumps(msg).encode())


def enter_worker(slot: int, master: int, scoreboard: Scoreboard, who: object) -> None:
    """In a worker right after fork: the facts that differ from the master's."""
    global worker_id, master_pid, board, worker, to_master
    worker_id, master_pid, board, worker = slot + 1, master, scoreboard, who
    to_master = None
    pending.clear()
