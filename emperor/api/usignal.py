"""uWSGI's signal framework for applications (uWSGI's Signals.rst, core/signal.c).

A handler is registered in the process that will run it (the master, before the workers
fork, for lazy-apps = false: every worker inherits it; each worker with lazy-apps), and
the master learns its number and target (emperor/api/state.tell). Timers, cron entries and
file monitors are the master's (emperor/master/usignals.py); a raised signal is routed by
the master to the target's workers, and each runs the handler from its own event loop,
between requests (`run_pending`), never inside a Unix signal handler.

Targets: "" and "worker" (one worker: an idle one if there is one), "workers" (all),
"workerN", "active-workers" (the accepting ones). Emperor has no mules and no spooler
processes of this kind: "mule*", "spooler*" and "farm*" are refused at registration.
"""
from __future__ import annotations

import re
import threading
import traceback

from emperor import log as logmod
from emperor.api import state

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["register_signal", "signal", "signal_registered", "signal_received", "signal_wait",
           "add_timer", "add_ms_timer", "add_rb_timer", "add_cron", "add_file_monitor"]

_TARGET = re.compile(r"(|worker|workers|active-workers|worker[1-9][0-9]{0,4})")
_NO_MULES = re.compile(r"(mule|spooler|farm).*")
MAX_RUNS = 16          # runs of one handler per delivery, however many times it was raised meanwhile
_delivering = threading.Lock()
_seen: list[int] = []
_last = [0]            # signal_received()


def _signum(num: object) -> int:
    if not isinstance(num, int) or isinstance(num, bool) or not 0 <= num <= 255:
        raise ValueError(f"signal number must be 0-255, got {num!r}")
    return num


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def register_signal(num: int, target: str | bytes, handler: Callable[[int], object]) -> None:
    """Run `handler(num)` in the target's worker(s) whenever signal `num` is raised."""
    num, who = _signum(num), _text(target)
    if _NO_MULES.fullmatch(who):
        logmod.log(f"uwsgi.register_signal({num}): target {who!r}: emperor has no mules or spooler "
                   "processes for signals")
        raise ValueError("unable to register signal")
    if not _TARGET.fullmatch(who):
        raise ValueError(f"unable to register signal: unknown target {who!r}")
    if not callable(handler):
        raise ValueError("unable to register signal: the handler is not callable")
    config = state.config
    if num in state.handlers and state.worker_id == 0 and not (config and config.lazy_apps):
        logmod.log(f"[uwsgi-signal] you cannot re-register signals ({num})")   # core/signal.c
        raise ValueError("unable to register signal")
    if not state.tell({"op": "register", "num": num, "target": who}):
        raise ValueError("unable to register signal: `import uwsgi` must happen when the application "
                         "loads, before the workers fork (docs/uwsgi-api.md)")
    state.handlers[num] = handler
    state.targets[num] = who


def signal_registered(num: int) -> bool | None:
    """True if this process has a handler for `num` (None otherwise, as uWSGI returns)."""
    return True if _signum(num) in state.handlers else None


def signal(num: int, remote: object = None) -> None:
    """Raise signal `num`: the master routes it to the target its handler was registered for."""
    if remote:
        raise ValueError("remote signals are not supported by emperor")
    if not state.tell({"op": "signal", "num": _signum(num)}):
        raise ValueError("unable to deliver signal (was uwsgi imported when the application loaded?)")


def signal_received() -> int:
    """The last signal this worker handled."""
    return _last[0]


def signal_wait(num: int | None = None) -> None:
    raise ValueError("uwsgi.signal_wait() is for mules, which emperor does not have")


def add_timer(num: int, seconds: int) -> None:
    """Raise `num` every `seconds` seconds, from the master."""
    _timer(num, seconds, 0, "timer")


def add_ms_timer(num: int, msecs: int) -> None:
    _timer(num, msecs / 1000.0, 0, "timer")


def add_rb_timer(num: int, seconds: int, iterations: int = 0) -> None:
    """As add_timer, `iterations` times (0: forever)."""
    _timer(num, seconds, iterations, "rbtimer")


def _timer(num: int, seconds: float, iterations: int, what: str) -> None:
    if not isinstance(seconds, (int, float)) or seconds <= 0 or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"unable to add {what}")
    if not state.tell({"op": "timer", "num": _signum(num), "secs": seconds, "iterations": iterations}):
        raise ValueError(f"unable to add {what}")


def add_cron(num: int, minute: int, hour: int, day: int, month: int, weekday: int) -> bool:
    """Raise `num` at the matching minutes (-1: every; -N: every N, as uWSGI's cron)."""
    from emperor.attached import parse_cron

    fields = [minute, hour, day, month, weekday]
    try:
        parse_cron("cron", " ".join(str(int(f)) for f in fields) + " signal")
    except (ValueError, TypeError) as e:
        raise ValueError(f"unable to add cron: {e}") from None
    if not state.tell({"op": "cron", "num": _signum(num), "fields": [int(f) for f in fields]}):
        raise ValueError("unable to add cron")
    return True


def add_file_monitor(num: int, path: str | bytes) -> None:
    """Raise `num` when `path` (a file or a directory) changes: inotify, in the master."""
    where = _text(path)
    if not where or len(where) > 1024 or "\0" in where:
        raise ValueError("unable to add file monitor")
    if not state.tell({"op": "filemon", "num": _signum(num), "path": where}):
        raise ValueError("unable to add file monitor")


# ---------- in a worker: the master said some counters moved (emperor/wire/uarea.py) ----------
def start_worker() -> None:
    """Right after fork: the master zeroes the slot's counters before its first signal to this
    worker (emperor/wire/uarea.py), so this worker counts from zero."""
    _seen[:] = [0] * 256


def run_pending() -> None:
    """Run the handler of every signal raised for this worker since the last look. Called
    from a core's loop; one core at a time (another waits, then finds nothing new)."""
    area = state.area
    if area is None or state.worker_id == 0:
        return
    with _delivering:
        while True:
            now = area.counters(state.worker_id - 1)
            due = [(n, (c - s) & 0xFFFFFFFF) for n, (c, s) in enumerate(zip(now, _seen)) if c != s]
            if not due:
                return
            _seen[:] = now
            for num, times in due:
                for _ in range(min(times, MAX_RUNS)):
                    _run(num)


def _run(num: int) -> None:
    handler = state.handlers.get(num)
    if handler is None:
        logmod.log(f"uwsgi signal {num}: no handler registered in this worker")
        return
    _last[0] = num
    try:
        handler(num)
    except Exception as e:
        log_app_error(f"uwsgi signal {num}: handler {getattr(handler, '__name__', handler)!r} raised", e)


def log_app_error(what: str, e: BaseException) -> None:
    """One log line and the traceback of `e` from the frame below ours down (the application's
    own frames), in one write: nothing of another worker's comes in between."""
    tb = traceback.extract_tb(e.__traceback__)[1:]
    logmod.write_raw(logmod.line(f"{what} {type(e).__name__}: {e}") + "Traceback (most recent call last):\n"
                     + "".join(traceback.format_list(tb)) + "".join(traceback.format_exception_only(type(e), e)))
