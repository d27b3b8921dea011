"""The emperor: keeps one master per vassal file, reloads it, stops it, restarts it.

One event loop (`Emperor.loop`, epoll) waits on the signal wakeup fd, the
directory watcher, the control socket and one channel per vassal
(emperor/wire/channel.py). Signal handlers only record the signal. Timers
(backoff, stop deadlines, the watcher's debounce, systemd's readiness) are the
poll timeout; the loop never sleeps, so one vassal's trouble never delays
another. What is done to each vassal is emperor/emperor/masters.py; this
module is the loop, the signal table and the emperor's own state.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from emperor import log as logmod
from emperor import paths
from emperor.emperor.control import ControlError, ControlServer
from emperor.emperor.launch import fork_master, preload
from emperor.emperor.masters import Launch, Masters
from emperor.emperor.ondemand import EXEC_REFUSED, OnDemand
from emperor.emperor.systemd import Notifier
from emperor.emperor.vassals import Vassal
from emperor.emperor.watch import Changes, DirectoryWatcher
from emperor.master import pidfile
from emperor.proc import become_subreaper, set_command_line, set_process_name
from emperor.signals import SignalQueue, reaped
from emperor.states import VassalState as S
from emperor.wire import control

if TYPE_CHECKING:
    import argparse

log = logmod.log

# The emperor's signal table: signal -> handler method (on_<action>). SPEC 6.3.
SIGNALS: dict[int, str] = {
    signal.SIGTERM: "graceful_shutdown",  # every vassal stops gracefully within --grace, then exit 0
    signal.SIGINT: "stop",                # SIGINT to every master (immediate stop), then exit 0
    signal.SIGQUIT: "stop",
    signal.SIGHUP: "reload_all",          # SIGHUP to every master (graceful reload)
    signal.SIGUSR1: "log_table",
    signal.SIGURG: "clear_backoff",
    signal.SIGWINCH: "rescan",
    signal.SIGCHLD: "reap",               # every child, orphans included (PID 1 / subreaper duty)
}


class Emperor:
    def __init__(self, directory: str, *, grace: float = 30.0, tyrant: bool = False,
                 shutdown_delay: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 launch: Launch | None = None,
                 watcher: DirectoryWatcher | None = None, control_path: str | None = None,
                 metrics_address: str | None = None, graceful_removal: bool = False,
                 strict_compat: bool = False, on_demand_directory: str | None = None,
                 on_demand_extension: str | None = None, preimport: tuple[str, ...] = ()) -> None:
        self.directory = os.path.abspath(directory)
        self.tyrant = tyrant
        self.shutdown_delay = shutdown_delay
        self.clock = clock
        self.preload = launch is None   # masters are forks of this process: import their code once
        self.preloaded = False
        self.preimport = preimport   # --preimport: modules of the applications, imported before forking
        self.watcher = watcher
        self.signals = SignalQueue(SIGNALS)
        self.pending = self.signals.pending  # the test seam: push a signal, call dispatch_signals()
        self.stopping = ""                 # "", "graceful" or "now"
        self.shutdown_at: float | None = None
        self.started_at = time.time()
        self.ep: select.epoll | None = None
        self.by_fd: dict[int, Vassal] = {}
        self.control_path = control_path
        self.control: ControlServer | None = None
        self.metrics_address = metrics_address
        self.ondemand = OnDemand(directory=on_demand_directory, extension=on_demand_extension, tyrant=tyrant,
                                 watch=self._watch_listener, unwatch=self._unwatch_listener)
        self.sd = Notifier.from_environ(clock=clock, log=log)  # systemd's READY=1 etc.; also `ready` below
        self.masters = Masters(self.directory, launch=launch or self._fork_master, clock=clock, tyrant=tyrant,
                               grace=grace, preflights_here=self.preload, watch=self._watch,
                               unwatch=self._unwatch, stopping=lambda: bool(self.stopping),
                               graceful_removal=graceful_removal, strict_compat=strict_compat,
                               on_demand=self.ondemand)
        self.vassals = self.masters.vassals

    def _watch(self, fd: int, v: Vassal) -> None:
        self.by_fd[fd] = v
        if self.ep is not None:
            self.ep.register(fd, select.EPOLLIN)

    def _unwatch(self, fd: int) -> None:
        self.by_fd.pop(fd, None)
        if self.ep is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def _preload(self) -> None:
        """Import what masters run, once: before the first fork, or once the files present at
        start are in the table (so a thousand on-demand vassals are bound before we pay for it)."""
        if self.preload and not self.preloaded:
            self.preloaded = True
            preload(self.preimport)

    def _fork_master(self, path: str, env: dict[str, str], channel_fd: int, uid: int | None, gid: int | None) -> int:
        self._preload()
        return fork_master(path, env, channel_fd, uid, gid)

    def _watch_listener(self, fd: int) -> None:
        """An on-demand vassal's socket: readable means a connection waits (never accepted here)."""
        if self.ep is not None:
            self.ep.register(fd, select.EPOLLIN)

    def _unwatch_listener(self, fd: int) -> None:
        if self.ep is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass

    def snapshot(self) -> dict:
        """The emperor's table as plain data: what the control socket answers."""
        now = self.clock()
        return {
            "pid": os.getpid(), "directory": self.directory,
            # "draining": SIGTERM came, --shutdown-delay still runs: serving, but not ready
            "state": ("draining" if self.shutdown_at is not None else "stopping") if self.stopping else "running",
            "ready": self.sd.started and not self.stopping,   # emperor/emperor/systemd.py: the vassals present at start settled
            "tyrant": self.tyrant, "started": self.started_at, "uptime": round(time.time() - self.started_at, 1),
            "vassals": {name: v.snapshot(now) for name, v in sorted(self.vassals.items())},
        }

    def apply(self, changes: Changes) -> None:
        self.masters.apply(changes)

    # ---------- the signal table's actions ----------
    def on_graceful_shutdown(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = "graceful"
        self.sd.stopping(why)
        if self.shutdown_delay > 0:
            log(f"{why}: vassals keep serving {self.shutdown_delay:g}s more (--shutdown-delay), then stop")
            self.shutdown_at = self.clock() + self.shutdown_delay
        else:
            self._stop_all(why, graceful=True)

    def on_stop(self, why: str) -> None:
        if self.stopping == "now":
            return
        self.stopping, self.shutdown_at = "now", None
        self.sd.stopping(why)
        self._stop_all(why, graceful=False)

    def _stop_all(self, why: str, graceful: bool) -> None:
        log(f"{why}: stopping every vassal{' gracefully' if graceful else ''}")
        self.masters.stop_all(why, graceful)

    def on_reload_all(self, why: str) -> None:
        targets = [v for v in self.vassals.values() if v.pid is not None and v.state is not S.CONFIG_ERROR]
        if not self.stopping:
            self.sd.reloading(v.name for v in targets)
        for v in targets:
            self.masters.reload(v, why)

    def on_log_table(self, why: str) -> None:
        now = self.clock()
        lines = [f"vassal table ({why}), {len(self.vassals)} vassal(s):"]
        for v in sorted(self.vassals.values(), key=lambda x: x.name):
            line = f"  {v.name}: {v.state.value if v.state else 'gone'}, pid {v.pid or '-'}, " \
                   f"generation {v.generation}, starts {v.starts}"
            if v.retry_at is not None:
                line += f", retry in {max(v.retry_at - now, 0):.1f}s (backoff {v.backoff:g}s)"
            if v.last_error:
                line += f", last error: {v.last_error}"
            lines.append(line)
        log("\n".join(lines))

    def on_clear_backoff(self, why: str) -> None:
        log(f"{why}: clearing every backoff")
        self.masters.clear_backoff(why)

    def on_rescan(self, why: str) -> None:
        log(f"{why}: rescanning {self.directory}")
        if self.watcher is not None:
            self.watcher.rescan_now()

    def on_reap(self, why: str) -> None:
        for pid, code in reaped():
            self.masters.on_exit(pid, code)

    # ---------- the loop ----------
    def dispatch_signals(self) -> None:
        self.signals.dispatch(self)

    def next_timeout(self) -> float:
        deadlines = self.masters.deadlines()
        for t in (self.shutdown_at, self.sd.deadline(),
                  self.control.next_deadline() if self.control is not None else None):  # a status request
            if t is not None:                                                        # waiting for stats
                deadlines.append(t)
        now = self.clock()
        if self.watcher is not None and not self.stopping:
            deadlines.append(now + self.watcher.timeout())
        if not deadlines:
            return -1
        return max(min(deadlines) - now, 0.0)

    def run_timers(self) -> None:
        now = self.clock()
        if self.shutdown_at is not None and now >= self.shutdown_at:
            self.shutdown_at = None
            self._stop_all("SIGTERM", graceful=True)
        self.masters.run_timers(now)
        if self.watcher is not None and not self.stopping:
            changes = self.watcher.changes()
            if changes:
                self.apply(changes)
        if self.control is not None:
            self.control.run_timers()

    def setup(self) -> None:
        logmod.set_prefix("[emperor]")
        if os.getpid() == 1:
            # PID 1 gets no default signal actions: every handler is installed below.
            log("running as PID 1: reaping every orphan")
        elif not become_subreaper():
            log("cannot become a child subreaper: orphaned workers will go to init")
        wake_r = self.signals.install()
        self.ep = select.epoll()
        self.ep.register(wake_r, select.EPOLLIN)
        if self.watcher is None:
            self.watcher = DirectoryWatcher(self.directory, log=log)
        fd = self.watcher.fileno()
        if fd is not None:
            self.ep.register(fd, select.EPOLLIN)
        for fd in list(self.by_fd) + list(self.ondemand.fds):
            self.ep.register(fd, select.EPOLLIN)
        if self.control_path or self.metrics_address:
            # the control socket and --metrics: one inner epoll, answered from this loop
            self.control = ControlServer(self.control_path, self.on_control,
                                         metrics_address=self.metrics_address, clock=self.clock)
            self.ep.register(self.control.fileno(), select.EPOLLIN)
        log(f"watching {self.directory} (pid {os.getpid()}{', tyrant mode' if self.tyrant else ''})")

    def loop(self) -> int:
        assert self.ep is not None
        while True:
            self.dispatch_signals()
            self.sd.update(self.vassals, scanned=False)   # an exit seen here may restart before the next look
            if self.stopping and self.shutdown_at is None and not any(v.pid for v in self.vassals.values()):
                self.masters.kill_preflights()
                log("every vassal has stopped: bye")
                return 0
            try:
                events = self.ep.poll(self.next_timeout())
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd in self.by_fd:
                    self.masters.read(self.by_fd[fd])
                elif fd in self.ondemand.fds:
                    v = self.ondemand.on_readable(fd)
                    if v is not None:
                        self.masters.start(v, "a connection")
                elif self.control is not None and fd == self.control.fileno():
                    self.control.on_readable()
                # the wakeup fd: dispatch_signals() drains it at the top of the loop
            self.run_timers()
            if not self.preloaded:
                self._preload()   # the files present at start are in the table (see _preload)
            self.sd.update(self.vassals)   # systemd's READY=1/STATUS=, and `ready` in the status

    def on_control(self, request: str) -> dict:
        """A control-socket request: `status` (default) or `restart NAME`."""
        verb, _, arg = request.partition(" ")
        if verb == control.RESTART:
            return self.on_restart_request(arg.strip())
        return self.snapshot()

    def on_restart_request(self, name: str) -> dict:
        v = self.vassals.get(name)
        if v is None:
            return {"ok": False, "error": f"no vassal named {name!r}"}
        log(f"{name}: restart requested over the control socket")
        v.backoff = 0.0
        v.retry_at = None
        self.masters.on_file(name, "emperor restart")
        return {"ok": True, "state": v.state.value if v.state else "gone"}

    def run(self) -> int:
        self.setup()
        try:
            return self.loop()
        finally:
            if self.control is not None:
                self.control.close()


def run_emperor(args: argparse.Namespace) -> int:
    directory = os.path.abspath(args.directory)
    try:
        os.listdir(directory)
    except OSError as e:
        print(f"emperor: vassals directory {directory}: {e.strerror}", file=sys.stderr)
        return 1
    if args.tyrant and os.geteuid() != 0:
        print("emperor: --tyrant runs each vassal as its file's owner and needs root", file=sys.stderr)
        return 1
    if args.grace < 0:
        print("emperor: --grace must not be negative", file=sys.stderr)
        return 2
    if getattr(args, "emperor_on_demand_exec", None):
        print(f"emperor: {EXEC_REFUSED}", file=sys.stderr)
        return 2
    od_dir = getattr(args, "emperor_on_demand_directory", None)
    od_ext = getattr(args, "emperor_on_demand_extension", None)
    if od_dir and od_ext:
        print("emperor: --emperor-on-demand-directory and --emperor-on-demand-extension: one or the other",
              file=sys.stderr)
        return 2
    if od_dir and not os.path.isdir(od_dir):
        print(f"emperor: --emperor-on-demand-directory {od_dir}: not a directory", file=sys.stderr)
        return 1
    show_title(directory, args.directory)
    emperor = Emperor(directory, grace=args.grace, tyrant=args.tyrant,
                      shutdown_delay=getattr(args, "shutdown_delay", 0.0) or 0.0,
                      control_path=getattr(args, "control", None) or paths.control_socket(directory),
                      metrics_address=getattr(args, "metrics", None),
                      graceful_removal=getattr(args, "graceful_removal", False),
                      strict_compat=getattr(args, "strict_compat", False),
                      on_demand_directory=od_dir, on_demand_extension=od_ext,
                      preimport=tuple(m.strip() for m in (getattr(args, "preimport", None) or "").split(",") if m.strip()))
    pid_path = os.path.abspath(args.pidfile) if getattr(args, "pidfile", None) else None
    try:
        emperor.setup()
    except ControlError as e:  # before any vassal starts
        print(f"emperor: {e}", file=sys.stderr)
        return 1
    try:
        if pid_path:
            # once it runs (control socket bound, signals handled): `emperor --reload/--stop FILE`
            try:
                pidfile.write(pid_path, os.getpid())
            except OSError as e:
                print(f"emperor: --pidfile {pid_path}: {e.strerror or e}", file=sys.stderr)
                return 1
        return emperor.loop()
    finally:
        if emperor.control is not None:
            emperor.control.close()
        if pid_path:
            pidfile.remove(pid_path, os.getpid())


def show_title(directory: str, given: str) -> None:
    """What ps shows: `emperor run DIR` (the absolute path if the original command line has room),
    and `emperor` as the process name (pidfile.kind tells the emperor from its masters by both)."""
    set_process_name("emperor")
    try:
        with open("/proc/self/cmdline", "rb") as f:
            room = len(f.read()) - 1
    except OSError:
        return
    title = f"emperor run {directory}"
    set_command_line(title if len(title.encode()) <= room else f"emperor run {given}")
