"""Cron: commands a vassal's master runs at given minutes (uWSGI's cron, unique-cron, cron2).

A part of the master (emperor/master/loop.py); the syntax and the matching are in
emperor/attached.py (uWSGI's `-N` wildcards: -1 is every, -N every N; day and weekday ORed
when both are set). No polling: the part's deadline is the start of the next matching
minute, computed from the wall clock (`clock`, `localtime`) and waited for on the monotonic
one; the wait is re-armed from the wall clock at least hourly, so a clock step or drift
costs at most the minutes it jumps over, as in uWSGI (which looks once a second).

- A task runs at most once per matching minute (uWSGI: `now - last_job >= 60`), and at
  start-up too if the current minute matches (as uWSGI's first check does). Each run is a
  command under a keeper (emperor/master/keeper.py): `/bin/sh -c COMMAND`, its output in the
  vassal's log (the master's stdout and stderr), and nothing it starts outlives the vassal.
- unique-cron / `unique=1`: a task still running is not started again; if it ends within a
  minute that wanted it, it starts again right away (Cron.rst: "started right after the
  previous one finishes"). Other tasks may overlap, at most MAX_RUNNING at once each.
- cron-harakiri (or cron2's `harakiri=N`, 0: none): a run older than that is killed with
  everything it started (core/master_checks.c `uwsgi_master_check_crons_deadline`).
- Reloads: each task's last minute and its running jobs (still the master's children) go to
  the next image (emperor/wire/handoff.py CRONS), so a reload neither runs a task twice in a
  minute nor forgets a unique task's running job. A job whose line went away runs to its end.
- The vassal stops: running jobs get SIGTERM, then the kill order after reload-mercy (3 s).
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor.attached import CRON_OPTIONS, CronSpec, matches, next_match, parse_cron
from emperor.config import Config, ConfigError
from emperor.master.keeper import LABEL, Keepers, environment, keys, label
from emperor.master.loop import Loop, Part
from emperor.proc import describe_exit

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.wire.handoff import HandOff

MAX_CRONS = 64          # tasks per vassal
MAX_RUNNING = 16        # runs of one task at once (a task that runs longer than its period)
MAX_WAIT = 3600.0       # the longest wait before the wall clock is read again
DEFAULT_MERCY = 3.0     # SIGTERM -> kill order when the vassal stops, if reload-mercy is not set


def specs(config: Config) -> list[CronSpec]:
    """Every cron task of a vassal file; ConfigError past MAX_CRONS."""
    out = [parse_cron(option, text) for option in CRON_OPTIONS for text in getattr(config, option.replace("-", "_"))]
    if len(out) > MAX_CRONS:
        file, line = config.origins.get(out[-1].option, (config.name, None))
        raise ConfigError(f"{len(out)} cron tasks; at most {MAX_CRONS}", file, line)
    return out


class Run:
    """One running job of a task: its keeper is the key it is filed under."""

    __slots__ = ("command", "started", "harakiri_at", "kill_at", "kill_stage")

    def __init__(self, started: float, harakiri_at: float | None, command: int | None = None) -> None:
        self.command = command           # the command's PID (the keeper says)
        self.started = started           # monotonic
        self.harakiri_at = harakiri_at
        self.kill_at: float | None = None
        self.kill_stage = 0


class Task:
    __slots__ = ("spec", "key", "label", "running", "last_minute", "skipped")

    def __init__(self, spec: CronSpec | None, key: str, name: str) -> None:
        self.spec = spec                 # None: a line of the previous config whose job still runs
        self.key = key
        self.label = name
        self.running: dict[int, Run] = {}
        self.last_minute = -1            # the minute (epoch seconds) it last ran, or was due in
        self.skipped: int | None = None  # a unique task's minute it was skipped in (still running)


class Cron(Part):
    """A part of the master: the vassal's cron tasks (see the module's docstring)."""

    def __init__(self, config: Config, inherited: HandOff, loop: Loop, *,
                 log: Callable[[str], None] = logmod.log, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 localtime: Callable[[float], time.struct_time] = time.localtime,
                 keepers: Keepers | None = None) -> None:
        self.loop = loop
        self.log = log
        self.clock = clock               # the wall clock, which the minutes are of
        self.monotonic = monotonic       # the loop's clock, which deadlines are on
        self.localtime = localtime
        self.harakiri = config.cron_harakiri
        self.mercy = float(config.reload_mercy or DEFAULT_MERCY)
        self.env = environment(config)
        self.cwd = config.chdir or os.getcwd()
        found = specs(config)
        self.tasks = [Task(s, k, label(s.command))
                      for s, k in zip(found, keys([(s.option, s.text) for s in found], config))]
        self.orphans: list[Task] = []    # jobs still running for lines the config no longer has
        self.keepers = keepers
        self.next_at: float | None = None
        self.stopped = False
        self._adopt(inherited.crons)
        if self.tasks:
            self.run_timers(self.monotonic())

    def _keepers(self) -> Keepers:
        if self.keepers is None:
            self.keepers = Keepers(self.loop, self._born)
        return self.keepers

    def all(self) -> list[Task]:
        return self.tasks + self.orphans

    # ---------- running ----------
    def _fire(self, t: Task, minute: int) -> None:
        assert t.spec is not None
        t.last_minute = minute
        if t.running and t.spec.unique:
            t.skipped = minute
            pids = ", ".join(str(r.command or k) for k, r in t.running.items())
            self.log(f'cron "{t.label}" still running (pid {pids}): not started again (unique)')
            return
        if len(t.running) >= MAX_RUNNING:
            self.log(f'cron "{t.label}": {len(t.running)} runs still going: not started again')
            return
        try:
            keeper = self._keepers().spawn(t.spec.command, f'cron "{t.label}"', job=True,
                                           env=self.env, cwd=self.cwd)
        except OSError as e:
            self.log(f'cron "{t.label}": cannot fork: {e.strerror}')
            return
        now = self.monotonic()
        limit = self.harakiri if t.spec.harakiri is None else t.spec.harakiri
        t.running[keeper] = Run(now, now + limit if limit else None)

    def _born(self, keeper: int, command: int) -> None:
        for t in self.all():
            if keeper in t.running:
                t.running[keeper].command = command
                self.log(f'cron "{t.label}" running (pid {command})')

    def reaped(self, pid: int, code: int) -> bool:
        if self.keepers is not None:
            self.keepers.read()
        for t in self.all():
            run = t.running.pop(pid, None)
            if run is None:
                continue
            if code == -signal.SIGKILL:
                self._keepers().kill(pid, 1)   # a keeper SIGKILLed: what is left of its group goes too
            self.log(f'cron "{t.label}" (pid {run.command or pid}) {describe_exit(code)} '
                     f"after {self.monotonic() - run.started:.1f}s")
            if t in self.orphans and not t.running:
                self.orphans.remove(t)
            if t.skipped is not None and not t.running and not self.stopped:
                minute = int(self.clock() // 60) * 60
                if t.skipped == minute:      # it was due in this very minute: now it can start
                    t.skipped = None
                    self._fire(t, minute)
            return True
        return False

    # ---------- timers ----------
    def deadline(self) -> float | None:
        times = [self.next_at] + [t for task in self.all() for r in task.running.values()
                                  for t in (r.harakiri_at, r.kill_at)]
        return min((t for t in times if t is not None), default=None)

    def run_timers(self, now: float) -> None:
        if not self.stopped and self.tasks and (self.next_at is None or now >= self.next_at):
            wall = self.clock()
            minute = int(wall // 60) * 60
            tm = self.localtime(minute)
            for t in self.tasks:
                if t.spec is not None and minute > t.last_minute and matches(t.spec, tm):
                    self._fire(t, minute)
            upcoming = [n for t in self.tasks if t.spec is not None
                        for n in [next_match(t.spec, wall, self.localtime)] if n is not None]
            self.next_at = now + min(max(min(upcoming) - wall, 0.0), MAX_WAIT) if upcoming else None
        for task in self.all():
            for keeper, r in task.running.items():
                if r.harakiri_at is not None and now >= r.harakiri_at:
                    self.log(f'*** HARAKIRI ON CRON "{task.label}" (pid {r.command or keeper}) '
                             f"after {now - r.started:.1f}s ***")
                    r.harakiri_at = None
                    self._kill(keeper, r, now)
                elif r.kill_at is not None and now >= r.kill_at:
                    self._kill(keeper, r, now)

    def _kill(self, keeper: int, r: Run, now: float) -> None:
        self._keepers().kill(keeper, r.kill_stage)
        r.kill_stage += 1
        r.kill_at = now + DEFAULT_MERCY if r.kill_stage < 2 else None

    # ---------- a part of the master (emperor/master/loop.py) ----------
    def stop(self, graceful: bool) -> None:
        now = self.monotonic()
        if self.stopped:
            if not graceful:
                for task in self.all():
                    for keeper, r in task.running.items():
                        if r.kill_stage == 0:
                            self._kill(keeper, r, now)
            return
        self.stopped, self.next_at = True, None
        for task in self.all():
            for keeper, r in task.running.items():
                self._keepers().send(keeper, signal.SIGTERM)
                r.kill_at, r.harakiri_at = now + self.mercy, None
                self.log(f'cron "{task.label}" (pid {r.command or keeper}) stopping with the vassal: SIGTERM')

    def alive(self) -> bool:
        return any(t.running for t in self.all())

    def fds(self) -> list[int]:
        return self.keepers.fds() if self.keepers is not None else []

    def hand_over(self, h: HandOff) -> list[int]:
        """One entry per task (its last minute) and per running job:
        KEY,LAST_MINUTE,KEEPER,COMMAND,STARTED,HARAKIRI_AT,LABEL (hex)."""
        h.crons = []
        for t in self.all():
            name = t.label.encode()[:3 * LABEL].hex()
            h.crons.append(f"{t.key},{t.last_minute},0,0,0,0,{name}")
            for keeper, r in t.running.items():
                h.crons.append(f"{t.key},{t.last_minute},{keeper},{r.command or 0},{r.started:.3f},"
                               f"{r.harakiri_at or 0:.3f},{name}")
        return []

    def report(self, doc: dict) -> None:
        doc["cron"] = [{"command": t.label, "running": [r.command or k for k, r in t.running.items()],
                        "last_minute": t.last_minute} for t in self.all()]

    def _adopt(self, entries: list[str]) -> None:
        mine = {t.key: t for t in self.tasks}
        for entry in entries:
            try:
                key, last, keeper_s, command, started, harakiri_at, name = entry.split(",")
                keeper, last_minute, since, until = int(keeper_s), int(last), float(started), float(harakiri_at)
                name = bytes.fromhex(name).decode(errors="replace")
            except ValueError:
                self.log(f"a cron job handed over by the previous image is unreadable: {entry[:100]!r}")
                continue
            t = mine.get(key)
            if t is not None:
                t.last_minute = max(t.last_minute, last_minute)
            if not keeper:
                continue
            try:
                got, status = os.waitpid(keeper, os.WNOHANG)
            except ChildProcessError:
                continue     # reaped before the re-exec, or never ours
            if got:
                self.log(f'cron "{name}" ({describe_exit(os.waitstatus_to_exitcode(status))} during the reload)')
                continue
            if t is None:
                t = next((o for o in self.orphans if o.key == key), None)
                if t is None:
                    t = Task(None, key, name)
                    self.orphans.append(t)
                self.log(f'cron "{name}" (keeper {keeper}) is not in the new config: it runs to its end')
            t.running[keeper] = Run(since, until or None, int(command) or None)
