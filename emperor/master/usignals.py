"""The master's side of the `uwsgi` module: signal routing, timers, cron, file monitors,
user harakiri (uWSGI's Signals.rst; core/signal.c, core/timer.c, core/cron.c, core/fsmon.c).

A part of the master's loop (emperor/master/loop.py), made only when the application
imported `uwsgi` while it loaded in the master, or with lazy-apps (the master cannot know
then), or `locks = N`: a vassal whose app never imports it has no such part, no shared
area, no inotify descriptor. No polling: timers and cron minutes are deadlines of the
loop, file monitors are inotify events, and a worker's messages come on the notify pipe.

What a worker (lazy-apps, or a call made while serving) asks arrives on the area's pipe
(emperor/wire/uarea.py): untrusted input, checked and bounded here (MAX_* below); a
refusal is one log line. Registrations made in the master while it loads the app are
handed over directly (emperor/api/state.tell). The same timer, cron or monitor asked for
by several lazy-apps workers is kept once (uWSGI would add one per worker).

Delivery: the master bumps the target slot's counter in the shared area and sends the
worker DELIVER (emperor/wire/uarea.py); the worker runs the handler between requests.
"""
from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable

from emperor.api import state
from emperor.attached import matches, next_match, parse_cron
from emperor.master.generations import Workers
from emperor.master.loop import Loop, Part
from emperor.proc import signal_quietly
from emperor.wire.uarea import DELIVER, Area

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

    from emperor.master.process import Master

MAX_TIMERS = 64         # core/timer.c: uWSGI's timer table has 64 entries
MAX_CRONS = 64
MAX_MONITORS = 64
MIN_PERIOD = 0.001      # add_ms_timer(1)
MAX_WAIT = 3600.0       # a cron wait is re-armed from the wall clock at least hourly
_TARGET = re.compile(r"(|worker|workers|active-workers|worker[1-9][0-9]{0,4})")
_MON_MASK = 0x4 | 0x8 | 0x2 | 0x100 | 0x200 | 0x400 | 0x800 | 0x40 | 0x80   # see _monitor


class Timer:
    __slots__ = ("num", "period", "left", "due")

    def __init__(self, num: int, period: float, left: int, due: float) -> None:
        self.num, self.period, self.left, self.due = num, period, left, due


class CronEntry:
    """A signal raised when the minute matches and 60 s passed since the last time, as uWSGI's
    core/cron.c uwsgi_manage_signal_cron (checked each second there): so at once when added in
    a matching minute, then every 60 s while the minutes match."""

    __slots__ = ("num", "spec", "due", "last")

    def __init__(self, num: int, spec: Any) -> None:
        self.num, self.spec, self.due, self.last = num, spec, 0.0, 0.0


class UwsgiSignals(Part):
    """See the module docstring."""

    def __init__(self, workers: Workers, area: Area, loop: Loop, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = workers
        self.area = area
        self.loop = loop
        self.log = log
        self.clock = clock
        self.targets: dict[int, str] = {}
        self.timers: list[Timer] = []
        self.crons: list[CronEntry] = []
        self.monitors: dict[int, int] = {}                    # inotify watch -> signal
        self.inotify: Any = None
        self.known: set[str] = set()           # timers, crons, monitors already added
        self.refused: set[int] = set()         # signals already said to be unregistered
        self.next_worker = 0
        self.harakiri_at: float | None = None
        self.stopped = False
        loop.watch(area.asks, self._asks)

    @classmethod
    def create(cls, master: Master) -> list[Part]:
        c = master.config
        if not (c.lazy_apps or c.locks or "emperor.api.uwsgi" in sys.modules):
            return []
        from emperor import log

        state.area = Area(c.processes)
        part = cls(master.workers, state.area, master.loop, log.log)
        for msg in state.pending:
            part.message(msg)
        state.pending.clear()
        state.to_master = part.message
        return [part]

    # ---------- what the app asks ----------
    def _asks(self) -> None:
        """What workers asked on the area's pipe (emperor/wire/uarea.py)."""
        for line in self.area.receive():
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):   # RecursionError: 2 KiB of "[" is deep enough
                msg = None
            if not isinstance(msg, dict):
                self.log("uwsgi module: a worker sent an unreadable message; ignored")
                continue
            self.message(msg)

    def message(self, msg: dict) -> None:
        op, num = msg.get("op"), msg.get("num")
        if op == "harakiri":
            self._rearm_harakiri()
            return
        if not (isinstance(num, int) and 0 <= num <= 255):
            self.log(f"uwsgi module: bad signal number in {str(msg)[:200]}; ignored")
            return
        try:
            if op == "register":
                self._register(num, msg.get("target"))
            elif op == "signal":
                self.route(num)
            elif op == "timer":
                self._timer(num, msg.get("secs"), msg.get("iterations", 0))
            elif op == "cron":
                self._cron(num, msg.get("fields"))
            elif op == "filemon":
                self._monitor(num, msg.get("path"))
            else:
                self.log(f"uwsgi module: unknown request {str(op)[:40]!r}; ignored")
        except (TypeError, ValueError, OSError) as e:   # OSError: out of inotify instances...
            self.log(f"uwsgi module: {op} {num}: {e}; ignored")

    def _register(self, num: int, target: object) -> None:
        if not isinstance(target, str) or not _TARGET.fullmatch(target):
            raise ValueError(f"unknown target {str(target)[:40]!r}")
        self.targets[num] = target
        self.refused.discard(num)

    def _once(self, key: str, count: int, limit: int, what: str) -> bool:
        if key in self.known:
            return False   # the same, from another lazy-apps worker (or a respawned one)
        if count >= limit:
            raise ValueError(f"at most {limit} {what}")
        self.known.add(key)
        return True

    def _timer(self, num: int, secs: object, iterations: object) -> None:
        if not isinstance(secs, (int, float)) or not MIN_PERIOD <= secs <= 86400 * 366 \
                or not isinstance(iterations, int) or iterations < 0:
            raise ValueError("bad period or iterations")
        if self._once(f"timer {num} {secs} {iterations}", len(self.timers), MAX_TIMERS, "timers"):
            self.timers.append(Timer(num, float(secs), iterations or -1, self.clock() + secs))

    def _cron(self, num: int, fields: object) -> None:
        if not isinstance(fields, list) or len(fields) != 5 or not all(isinstance(f, int) for f in fields):
            raise ValueError("expected minute, hour, day, month, weekday")
        spec = parse_cron("cron", " ".join(map(str, fields)) + " signal")
        if self._once(f"cron {num} {fields}", len(self.crons), MAX_CRONS, "cron entries"):
            entry = CronEntry(num, spec)
            self._arm(entry)
            self.crons.append(entry)

    def _arm(self, entry: CronEntry) -> None:
        """Its next chance: 60 s after the last run, or the first matching minute after that."""
        wall = time.time()
        at: float | None = max(wall, entry.last + 60)
        if at is not None and not matches(entry.spec, time.localtime(at)):
            at = next_match(entry.spec, at)
        wait = MAX_WAIT if at is None else min(at - wall, MAX_WAIT)
        entry.due = self.clock() + max(wait, 0.0)

    def _monitor(self, num: int, path: object) -> None:
        if not isinstance(path, str) or not path or len(path) > 1024 or "\0" in path:
            raise ValueError("bad path")
        if not self._once(f"filemon {num} {path}", len(self.monitors), MAX_MONITORS, "file monitors"):
            return
        # ATTRIB (touch), MODIFY, CLOSE_WRITE, CREATE, DELETE, DELETE_SELF, MOVE_SELF, MOVED_FROM/TO:
        # what uWSGI's fsmon watches (core/fsmon.c)
        try:
            if self.inotify is None:
                from inotify_simple import INotify

                self.inotify = INotify(nonblocking=True)
                self.loop.watch(self.inotify.fileno(), self._changed)
            wd = self.inotify.add_watch(path, _MON_MASK)
        except OSError as e:
            self.known.discard(f"filemon {num} {path}")   # asked again, it is tried again
            raise ValueError(f"cannot watch {path}: {e.strerror}") from None
        self.monitors[wd] = num

    def _changed(self) -> None:
        try:
            events = self.inotify.read(timeout=0)
        except OSError:
            return
        for num in dict.fromkeys(self.monitors[e.wd] for e in events if e.wd in self.monitors):
            self.route(num)   # a burst of events for one file raises its signal once

    # ---------- delivery ----------
    def route(self, num: int) -> None:
        target = self.targets.get(num)
        if target is None:
            if num not in self.refused:
                self.refused.add(num)
                self.log(f"uwsgi signal {num} is not registered: not delivered")
            return
        gen = self.workers.current
        if gen is None:
            return
        live = [(s, p) for s, p in enumerate(gen.slots) if p and s < self.area.slots]
        if target in ("", "worker"):
            live = self._one(gen, live)
        elif target == "active-workers":
            live = [(s, p) for s, p in live if gen.board.worker(s)["accepting"]]
        elif target != "workers":
            n = int(target[6:]) - 1
            live = [(s, p) for s, p in live if s == n]
        for slot, pid in live:
            self.area.bump(slot, num, pid)
            signal_quietly(pid, DELIVER)

    def _one(self, gen: Any, live: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The first available worker: an idle accepting one, from where the last one was taken."""
        if not live:
            return []
        n = len(live)
        order = [live[(self.next_worker + i) % n] for i in range(n)]
        pick = None
        for s, p in order:
            w = gen.board.worker(s)
            if w["accepting"] and not any(c["busy_since"] for c in w["cores"]):
                pick = (s, p)
                break
        pick = pick or order[0]
        self.next_worker = (live.index(pick) + 1) % n
        return [pick]

    # ---------- the loop's deadlines ----------
    def deadline(self) -> float | None:
        times = [t.due for t in self.timers] + [e.due for e in self.crons]
        if self.harakiri_at is not None:
            times.append(self.harakiri_at)
        return min(times, default=None)

    def run_timers(self, now: float) -> None:
        for t in [t for t in self.timers if now >= t.due]:
            self.route(t.num)
            t.due += t.period
            if t.due <= now:   # the master was held up: no burst of missed ticks
                t.due = now + t.period
            if t.left > 0:
                t.left -= 1
                if t.left == 0:
                    self.timers.remove(t)
        for entry in self.crons:
            if now >= entry.due:
                wall = time.time()
                if matches(entry.spec, time.localtime(wall)) and wall - entry.last >= 60:
                    self.route(entry.num)
                    entry.last = wall
                self._arm(entry)
        if self.harakiri_at is not None and now >= self.harakiri_at:
            self._user_harakiri(now)

    # ---------- set_user_harakiri ----------
    def _rearm_harakiri(self) -> None:
        gen = self.workers.current
        times = [self.area.deadline(s) for s, p in enumerate(gen.slots) if p and s < self.area.slots] \
            if gen is not None else []
        self.harakiri_at = min((t for t in times if t > 0), default=None)

    def _user_harakiri(self, now: float) -> None:
        gen = self.workers.current
        if gen is not None:
            for s, p in enumerate(gen.slots):
                if p and s < self.area.slots and 0 < self.area.deadline(s) <= now:
                    self.area.set_deadline(s, 0.0)
                    gen.harakiri[s] += 1
                    self.log(f"HARAKIRI: worker {s + 1} (pid {p}) passed its user harakiri "
                             "(uwsgi.set_user_harakiri): killing it")
                    signal_quietly(p, signal.SIGKILL)
        self._rearm_harakiri()

    def fds(self) -> list[int]:
        return [self.area.asks] + ([self.inotify.fileno()] if self.inotify is not None else [])

    def stop(self, graceful: bool) -> None:
        """The vassal stops: no more timers; the app's uwsgi.atexit runs in the master too, as
        uWSGI's python_plugin.c uwsgi_python_atexit does (once; not on a reload)."""
        self.timers.clear()
        self.crons.clear()
        module = sys.modules.get("emperor.api.uwsgi")
        hook = getattr(module, "atexit", None)
        if callable(hook) and not self.stopped:
            self.stopped = True
            try:
                hook()
            except Exception as e:
                self.log(f"uwsgi.atexit raised {type(e).__name__}: {e}")
