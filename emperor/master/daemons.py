"""Attached daemons: the processes a vassal keeps running beside its workers (uWSGI's attach-daemon).

A part of the master (emperor/master/loop.py). The options and their syntax are in
emperor/attached.py; each command runs under a keeper (emperor/master/keeper.py), so that
nothing it starts outlives the vassal, whoever is SIGKILLed. Every change of a daemon's
state is one log line, `daemon "COMMAND" ...`, and `emperor status NAME` shows them (the
stats document's `daemons`: command, pid, state, restarts, backoff).

- Start: with the master, once its app is loaded (uWSGI spawns them from the master's
  loop too). A pidfile daemon (smart-attach-daemon, `pidfile=`) whose pidfile names a live
  process is not started again: that process is adopted (core/daemons.c
  `uwsgi_daemons_spawn_all`) and watched through a pidfd.
- Death: restarted after 1, 2, 4 ... 60 s (`max_throttle` caps it otherwise), as the emperor
  restarts masters; a daemon that ran 60 s starts again from 1 s. The wait is a deadline of
  the master's loop. A control daemon's death stops the vassal, gracefully, instead.
- touch= files: the daemon gets its stop signal and starts again as soon as it is gone
  (uWSGI master.c "has been touched... reloading daemon").
- The vassal stops: each daemon gets its stop signal (to its whole process group), then,
  after reload-mercy (3 s if unset, as uWSGI's `uwsgi_detach_daemons`), the kill order.
  Pidfile daemons too: unlike uWSGI, where they outlive the master by design, none of a
  vassal's daemons outlives it. A pidfile daemon we started is held by its keeper even once
  it daemonized, so it also dies with a SIGKILLed master or emperor; one adopted from its
  pidfile (not started by this vassal) is not ours to reach then, and the next start adopts
  it again rather than start a second one.
- A reload (graceful or brutal) does not restart them, unlike uWSGI: each daemon whose line
  is unchanged (and the vassal's env and chdir with it) keeps running, its keeper's PID
  handed to the next image (emperor/wire/handoff.py DAEMONS), and gets its `reloadsignal`
  if it has one. A daemon whose line changed or went is stopped, and the new lines start
  once it has left, so that a changed daemon never runs twice at once.
"""
from __future__ import annotations

import functools
import os
import re
import signal
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor.attached import DAEMON_OPTIONS, DaemonSpec, parse_daemon
from emperor.config import Config, ConfigError
from emperor.files import read_head
from emperor.master.cron import Cron
from emperor.master.keeper import LABEL, Keepers, environment, keys, label
from emperor.master.loop import Loop, Part
from emperor.proc import children, describe_exit, killpg_quietly, signal_quietly

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.master.touch import TouchWatcher
    from emperor.wire.handoff import HandOff

MAX_DAEMONS = 64         # per vassal
BACKOFF_FIRST = 1.0      # then 2, 4 ... up to the daemon's max_throttle (60 s by default)
STABLE = 60.0            # a daemon that ran this long starts its backoff from BACKOFF_FIRST again
DEFAULT_MERCY = 3.0      # stop signal -> kill order, when reload-mercy is not set (uWSGI's 3 s)

RUNNING, BACKOFF, RESTARTING = "running", "backoff", "restarting"
STOPPING, STOPPED, WAITING = "stopping", "stopped", "waiting"


def specs(config: Config) -> list[DaemonSpec]:
    """Every daemon of a vassal file, in a fixed order of options; ConfigError past MAX_DAEMONS."""
    out = [parse_daemon(option, text) for option in DAEMON_OPTIONS
           for text in getattr(config, option.replace("-", "_"))]
    if len(out) > MAX_DAEMONS:
        file, line = config.origins.get(out[-1].option, (config.name, None))
        raise ConfigError(f"{len(out)} daemons attached; at most {MAX_DAEMONS}", file, line)
    return out


def read_pidfile(path: str) -> int:
    """The live PID a pidfile names (uWSGI's `uwsgi_check_pidfile`), else 0."""
    try:   # without blocking: a FIFO put where the daemon's pidfile was must not stop the master's loop
        m = re.match(rb"\s*([0-9]{1,9})", read_head(path, 64))
    except OSError:
        return 0
    pid = int(m.group(1)) if m else 0
    return pid if pid > 1 and pid != os.getpid() and signal_quietly(pid, 0) else 0


def _signal_foreign(pid: int, sig: int) -> None:
    """A process we did not start: its group if it leads one (uWSGI: `kill(-pid, sig)`), else itself."""
    try:
        group = os.getpgid(pid)
    except OSError:
        return
    if group == pid:
        killpg_quietly(pid, sig)
    else:
        signal_quietly(pid, sig)


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class Daemon:
    """One daemon: its spec (None: one of the previous config, stopping) and its processes."""

    __slots__ = ("spec", "key", "label", "stop_signal", "state", "keeper", "command", "foreign", "pidfd",
                 "starts", "backoff", "retry_at", "kill_at", "kill_stage", "since", "touch")

    def __init__(self, spec: DaemonSpec | None, key: str, name: str, stop_signal: int) -> None:
        self.spec = spec
        self.key = key
        self.label = name
        self.stop_signal = stop_signal
        self.state = ""                      # "" until started or adopted
        self.keeper: int | None = None       # its keeper, our child
        self.command: int | None = None      # the command's first process (the keeper says)
        self.foreign: int | None = None      # adopted from its pidfile: not our child
        self.pidfd: int | None = None        # watches `foreign`
        self.starts = 0
        self.backoff = 0.0                   # the current restart delay
        self.retry_at: float | None = None
        self.kill_at: float | None = None    # stop signal sent: when to escalate
        self.kill_stage = 0
        self.since = 0.0                     # started (monotonic: the same clock across execve)
        self.touch: TouchWatcher | None = None

    @property
    def alive(self) -> bool:
        return self.keeper is not None or self.foreign is not None

    @property
    def restarts(self) -> int:
        return max(self.starts - 1, 0)

    def pid(self) -> int:
        """What `status` shows: the pidfile's process, else the command's (0: none)."""
        if not self.alive:
            return 0
        if self.spec is not None and self.spec.pidfile:
            pid = read_pidfile(self.spec.pidfile)
            if pid:
                return pid
        if self.foreign:
            return self.foreign
        if self.keeper is not None:
            if self.command and self.command in children(self.keeper):
                return self.command
            return next(iter(children(self.keeper)), 0) or self.command or self.keeper
        return 0

    def export(self) -> str:
        """This daemon for the next image (emperor/wire/handoff.py DAEMONS)."""
        kind, pid = ("k", self.keeper) if self.keeper else ("p", self.foreign) if self.foreign else ("-", 0)
        return ",".join([self.key, kind, str(pid or 0), str(self.command or 0), str(self.starts),
                         f"{self.backoff:g}", f"{self.since:.3f}", f"{self.retry_at or 0:.3f}",
                         str(self.stop_signal), self.label.encode()[:3 * LABEL].hex()])


def attached_parts(config: Config, inherited: HandOff, loop: Loop, on_control: Callable[[str], None]) -> list[Part]:
    """The master's parts for what a vassal file attaches: daemons, then cron (emperor/master/cron.py)."""
    return [Daemons(config, inherited, loop, on_control=on_control), Cron(config, inherited, loop)]


class Daemons(Part):
    """A part of the master: the vassal's attached daemons (see the module's docstring)."""

    def __init__(self, config: Config, inherited: HandOff, loop: Loop, *,
                 on_control: Callable[[str], None], log: Callable[[str], None] = logmod.log,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.loop = loop
        self.on_control = on_control          # a control daemon died: stop the vassal
        self.log = log
        self.clock = clock
        self.mercy = float(config.reload_mercy or DEFAULT_MERCY)
        self.env = environment(config)
        self.cwd = config.chdir or os.getcwd()
        self.stopping = False
        found = specs(config)
        self.daemons = [Daemon(s, k, label(s.command), s.stop_signal)
                        for s, k in zip(found, keys([(s.option, s.text) for s in found], config))]
        self.retiring: list[Daemon] = []      # the previous config's, stopping
        self.keepers: Keepers | None = None   # the births pipe, from the first spawn on
        for d in self.daemons:
            if d.spec is not None and d.spec.touch:
                from emperor.master.touch import TouchWatcher

                d.touch = TouchWatcher(list(d.spec.touch), loop, functools.partial(self._touched, d))
        self._adopt(inherited.daemons)
        for d in self.daemons:
            if d.state:
                continue
            if self.retiring:
                self._to(d, WAITING, f'daemon "{d.label}" waits for the one it replaces to stop')
            else:
                self._start(d)

    def all(self) -> list[Daemon]:
        return self.daemons + self.retiring

    def _keepers(self) -> Keepers:
        """The births pipe, made at the first need (a vassal without daemons has none)."""
        if self.keepers is None:
            self.keepers = Keepers(self.loop, self._born)
        return self.keepers

    def _to(self, d: Daemon, state: str, line: str) -> None:
        d.state = state
        self.log(line)

    # ---------- starting ----------
    def _start(self, d: Daemon) -> None:
        spec = d.spec
        assert spec is not None
        d.retry_at = None
        if spec.pidfile:
            pid = read_pidfile(spec.pidfile)
            if pid and self._watch_foreign(d, pid):
                d.starts += 1
                d.since = self.clock()
                self._to(d, RUNNING, f'daemon "{d.label}" found running from its pidfile {spec.pidfile} '
                                     f"(pid {pid}): adopted")
                return
        try:
            d.keeper = self._keepers().spawn(
                spec.command, f'daemon "{d.label}"', job=not spec.pidfile, env=self.env,
                cwd=spec.chdir or self.cwd, uid=spec.uid, gid=spec.gid, stdin=spec.stdin,
                write_pidfile=spec.pidfile if spec.daemonize else None)
        except OSError as e:
            d.state, d.since = RUNNING, self.clock()   # a failed start: its backoff grows
            self.log(f'daemon "{d.label}": cannot fork: {e.strerror}')
            self._ended(d, None)
            return
        d.command = None
        d.starts += 1
        d.since = self.clock()
        d.state = RUNNING     # its line comes with the command's PID (_born)

    def _born(self, keeper: int, command: int) -> None:
        for d in self.all():
            if d.keeper == keeper:
                d.command = command
                again = f"restarted (restart {d.restarts})" if d.starts > 1 else "started"
                self.log(f'daemon "{d.label}" {again} (pid {command})')

    def _watch_foreign(self, d: Daemon, pid: int) -> bool:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False    # gone already (or no pidfd here: then we cannot watch it, so we do not adopt)
        d.foreign, d.pidfd = pid, fd
        self.loop.watch(fd, functools.partial(self._ended, d, None))
        return True

    # ---------- what ends ----------
    def reaped(self, pid: int, code: int) -> bool:
        if self.keepers is not None:
            self.keepers.read()
        for d in self.all():
            if d.keeper == pid:
                if code == -signal.SIGKILL:
                    self._keepers().kill(pid, 1)   # a keeper SIGKILLed: what is left of its group goes too
                self._ended(d, code)
                return True
        return False

    def _ended(self, d: Daemon, code: int | None) -> None:
        now = self.clock()
        pid = d.command or d.foreign or d.keeper
        d.keeper = d.command = d.foreign = None
        if d.pidfd is not None:
            self.loop.unwatch(d.pidfd)
            os.close(d.pidfd)
            d.pidfd = None
        d.kill_at, d.kill_stage = None, 0
        how = describe_exit(code) if code is not None else "ended"
        what = f'daemon "{d.label}"' + (f" (pid {pid})" if pid else "") + f" {how}"
        if d in self.retiring:
            self.retiring.remove(d)
            self._to(d, STOPPED, f"{what}: it is not in the new config")
            if not self.retiring and not self.stopping:
                for w in self.daemons:
                    if w.state == WAITING:
                        self._start(w)
        elif self.stopping or d.state == STOPPING:
            self._to(d, STOPPED, f"{what}: stopped")
        elif d.spec is not None and d.spec.control:
            self._to(d, STOPPED, f"{what}: it is a control daemon, the vassal stops")
            self.on_control(f'control daemon "{d.label}" {how}')
        elif d.state == RESTARTING:
            self.log(f"{what}; starting it again (touched)")
            self._start(d)
        else:
            cap = float(d.spec.max_throttle) if d.spec is not None else 60.0
            ran = now - d.since
            d.backoff = BACKOFF_FIRST if not d.backoff or ran >= STABLE else min(d.backoff * 2, cap)
            d.retry_at = now + d.backoff
            self._to(d, BACKOFF, f"{what} after {ran:.1f}s; restarting in {d.backoff:g}s")

    # ---------- stopping ----------
    def _signal(self, d: Daemon, sig: int) -> None:
        if d.keeper is not None:
            self._keepers().send(d.keeper, sig)   # the keeper relays it to what left its group
        if d.foreign is not None:
            _signal_foreign(d.foreign, sig)

    def _stop(self, d: Daemon, why: str, state: str = STOPPING) -> None:
        self._signal(d, d.stop_signal)
        d.kill_at, d.kill_stage = self.clock() + self.mercy, 0
        self._to(d, state, f'daemon "{d.label}" (pid {d.pid()}) {why}: {_signame(d.stop_signal)}')

    def _escalate(self, d: Daemon) -> None:
        """The stop signal was not obeyed in time: the kill order, then SIGKILL to the group."""
        if d.kill_stage == 0:
            self.log(f'daemon "{d.label}" (pid {d.pid()}) still there {self.mercy:g}s after '
                     f"{_signame(d.stop_signal)}: killing it")
        if d.keeper is not None:
            self._keepers().kill(d.keeper, d.kill_stage)
        if d.foreign is not None:
            _signal_foreign(d.foreign, signal.SIGKILL)
        d.kill_stage += 1
        d.kill_at = self.clock() + DEFAULT_MERCY if d.kill_stage < 2 and d.keeper is not None else None

    def _touched(self, d: Daemon) -> None:
        if self.stopping:
            return
        if d.alive and d.state == RUNNING:
            self._stop(d, "touched: restarting it", RESTARTING)
        elif d.state == BACKOFF:
            d.backoff = 0.0
            self.log(f'daemon "{d.label}" touched: starting it now (backoff cleared)')
            self._start(d)

    # ---------- a part of the master (emperor/master/loop.py) ----------
    def stop(self, graceful: bool) -> None:
        if self.stopping:
            if not graceful:
                for d in self.all():
                    if d.alive and d.kill_stage == 0:
                        self._escalate(d)
            return
        self.stopping = True
        for d in self.all():
            d.retry_at = None
            if d.alive:
                self._stop(d, "stopping with the vassal")
            elif d.state in (BACKOFF, WAITING):
                self._to(d, STOPPED, f'daemon "{d.label}" not started again: the vassal stops')

    def alive(self) -> bool:
        return any(d.alive for d in self.all())

    def deadline(self) -> float | None:
        return min((t for d in self.all() for t in (d.retry_at, d.kill_at) if t is not None), default=None)

    def run_timers(self, now: float) -> None:
        for d in self.all():
            if d.retry_at is not None and now >= d.retry_at and not self.stopping:
                self._start(d)
            if d.kill_at is not None and now >= d.kill_at and d.alive:
                self._escalate(d)

    def fds(self) -> list[int]:
        fds = self.keepers.fds() if self.keepers is not None else []
        fds += [d.pidfd for d in self.all() if d.pidfd is not None]
        return fds + [d.touch.fileno() for d in self.all() if d.touch is not None]

    def hand_over(self, h: HandOff) -> list[int]:
        h.daemons = [d.export() for d in self.all() if d.alive or d.state == BACKOFF]
        return []

    def report(self, doc: dict) -> None:
        doc["daemons"] = [{
            "command": d.label, "pid": d.pid(), "state": d.state, "restarts": d.restarts,
            "backoff": d.backoff if d.state == BACKOFF else 0,
            "option": d.spec.option if d.spec is not None else "(previous config)",
        } for d in self.all()]

    # ---------- across a reload ----------
    def _adopt(self, entries: list[str]) -> None:
        """Take over what the previous image handed over: same line, same daemon, still running."""
        mine = {d.key: d for d in self.daemons}
        for entry in entries:
            try:
                key, kind, pid_s, command, starts, backoff, since, retry_at, stop_sig, name = entry.split(",")
                pid, d_since, d_retry = int(pid_s), float(since), float(retry_at)
                name = bytes.fromhex(name).decode(errors="replace")
            except ValueError:
                self.log(f"a daemon handed over by the previous image is unreadable: {entry[:100]!r}")
                continue
            ended, code = kind == "-", None
            if kind == "k":
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    ended = True    # reaped before the re-exec, or never ours
                else:
                    if got:
                        ended, code = True, os.waitstatus_to_exitcode(status)
            d = mine.pop(key, None)
            if d is None:
                if not ended:
                    d = Daemon(None, key, name, int(stop_sig))
                    if kind == "k":
                        d.keeper, d.command = pid, int(command) or None
                    elif not self._watch_foreign(d, pid):
                        continue
                    self.retiring.append(d)
                    self._stop(d, "is not in the new config: stopping it")
                continue
            d.starts, d.backoff, d.since = int(starts), float(backoff), d_since
            if kind == "-":
                d.retry_at = max(d_retry, self.clock())
                self._to(d, BACKOFF, f'daemon "{d.label}" restarts in {d.retry_at - self.clock():.1f}s '
                                     f"(its backoff goes on across the reload)")
                continue
            if kind == "k":
                d.keeper, d.command = pid, int(command) or None
            elif not self._watch_foreign(d, pid):
                ended = True
            d.state = RUNNING
            if ended:
                self._ended(d, code)
                continue
            assert d.spec is not None
            told = ""
            if d.spec.reload_signal:
                self._signal(d, d.spec.reload_signal)
                told = f"; {_signame(d.spec.reload_signal)} sent (reloadsignal)"
            self.log(f'daemon "{d.label}" kept across the reload (pid {d.pid()}){told}')
