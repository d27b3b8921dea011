"""The master: owns the sockets, keeps the workers alive, obeys the signal table.

It never serves a request. Signal handlers only append to a queue (and the
interpreter writes the wakeup byte); the one event loop in `Master.loop` does
all the work, so no handler ever races another.

Reload design (emperor/master/reload.py): a preflight first; only if it passes
does the master `execve` itself, with its listening sockets, its notify pipe
and the running generation's scoreboard inherited (emperor/wire/handoff.py).
The new image loads the app, forks the new generation, and only once every
new worker is accepting does it tell the previous generation to finish its
requests and leave (emperor/master/generations.py). The old workers are still
its children across `execve`, and both generations accept on the same kernel
sockets, so there is no moment with nobody accepting.
"""
from __future__ import annotations

import gc
import os
import signal
import time
from collections.abc import Callable

from emperor import hooks, sockets
from emperor import log as logmod
from emperor.config import Config, ConfigError, load_config
from emperor.files import Scarce, TrustRule
from emperor.master import pidfile
from emperor.master.autoreload import AutoReloader
from emperor.master.cheaper import adaptive_parts
from emperor.master.daemons import attached_parts
from emperor.master.fifo import MasterFifo
from emperor.master.generations import Generation, Workers
from emperor.master.link import EmperorLink
from emperor.master.logfiles import LogFile, set_master_title, titles
from emperor.master.loop import Loop, Part, earliest
from emperor.master.reload import Reloader, reexec
from emperor.master.spooler import api_parts, wake_spoolers
from emperor.master.stats import StatsServer, statistics_text, workers_text
from emperor.master.touch import touch_reload
from emperor.master.unavailable import Unavailable
from emperor.master.usignals import UwsgiSignals
from emperor.proc import set_process_name, signal_quietly
from emperor.signals import SignalQueue, drain, reaped
from emperor.states import MASTER_EDGES, Machine, MasterState
from emperor.wire import channel, handoff, notify
from emperor.worker.app import AppError
from emperor.worker.app import load as load_app
from emperor.worker.process import Worker

log = logmod.log

# The master's signal table: signal -> handler method (on_<action>). SPEC 4.2.
SIGNALS: dict[int, str] = {
    signal.SIGHUP: "graceful_reload",
    signal.SIGTERM: "brutal_reload",      # graceful stop with die-on-term
    signal.SIGINT: "stop",
    signal.SIGQUIT: "stop",
    signal.SIGUSR1: "log_stats",
    signal.SIGUSR2: "log_workers",
    signal.SIGURG: "restore_snapshot",
    signal.SIGTSTP: "toggle_pause",
    signal.SIGWINCH: "wake_workers",
    signal.SIGCHLD: "reap",
}

STOP_MERCY = 5.0   # after SIGKILL to every worker, how long before trying again
DEFAULT_RELOAD_MERCY = 60.0   # uWSGI's reload-mercy default: how long a reload's preflight may take


class Master:
    """One vassal's master; `run_master` builds it from a file and runs it."""

    def __init__(self, config: Config, config_path: str, *, env: dict[str, str],
                 inherited: handoff.HandOff, link: EmperorLink, signals: SignalQueue) -> None:
        self.config = config
        self.config_path = config_path
        self.name = os.path.basename(config_path.split(":")[0])
        self.env = handoff.clean(env)        # what the next image and a local preflight start from
        self.link = link
        self.signals = signals
        self.pending = signals.pending       # the test seam: push a signal, call signals.dispatch()
        self.pid = os.getpid()
        self.reloads = inherited.reloads
        self.started_at = inherited.started_at or time.time()
        self.paused = inherited.paused
        self.cwd = inherited.cwd or os.getcwd()
        self.inherited = inherited
        self.state = Machine(MasterState.RELOADING if inherited.generations else MasterState.STARTING,
                             MASTER_EDGES, log, on_change=self._show_state)
        self.loop = Loop()
        self.listeners: list[sockets.Listener] = []
        self.app: Callable | None = None
        self.workers = Workers.adopt(inherited, config, log=log, become_worker=self._become_worker,
                                     master_only=self._master_only, on_failure=self._worker_failed,
                                     title=titles(config, config_path)[1])
        self.rollbacks = 0
        self.stats = StatsServer(config, self.workers, lambda: self.listeners, lambda: {
            "name": self.name, "state": self.state_name, "paused": int(self.paused),
            "image": self.reloads,              # the generation this master image loaded (the file's)
            "rollbacks": self.rollbacks, "started_at": int(self.started_at),
            "last_reload_error": self.last_reload_error})
        self.logfile = LogFile(config, self.loop, self.workers.signal_all, log, inherited.stdio)
        self.reloader = Reloader(config_path, self.cwd, env=self.env, loop=self.loop,
                                 limit=config.reload_mercy or DEFAULT_RELOAD_MERCY,
                                 emperor=link if env.get(handoff.PREFLIGHTS) == "emperor" else None,
                                 on_failed=self._reload_failed, on_passed=self._reexec)
        self.notify_r, self.notify_w = inherited.notify or os.pipe2(os.O_NONBLOCK)
        os.set_blocking(self.notify_r, False)
        self.last_reload_error = ""
        self.unavailable = Unavailable([], self.loop)   # the real one once the sockets are open
        self.parts: list[Part] = [self.reloader, self.stats]   # emperor/master/loop.py
        self.stats.reporters = self.parts   # each part adds its facts to the stats document
        self.pidfile_written = False
        self.stop_now = False                # stopping by SIGINT (not gracefully): nothing waits
        self.stop_deadline = 0.0

    def _show_state(self) -> None:
        """The state in the process name (`emperor paused`): `emperor --pause/--resume PIDFILE`
        read it there, so that a toggle (SIGTSTP) is sent only when it moves the master as asked."""
        set_process_name(f"emperor {'paused' if self.paused and not self.stopping else self.state_name}")

    @property
    def stopping(self) -> bool:
        return self.state.state == MasterState.STOPPING

    @property
    def state_name(self) -> str:
        return _name(self.state.state)

    # ---------- start-up ----------
    def start(self) -> None:
        """Bind (or adopt) the sockets, load the app, fork the generation. Raises on failure."""
        config = self.config
        for w in config.warnings + config.print:   # and the file's `print` lines, as uWSGI prints them
            log(w)
        self.logfile.open(dropped=False)
        want = sockets.wanted(config, self.env.get(handoff.STATS_SOCKET), _on_demand(self.env))
        if config.umask:
            os.umask(int(config.umask, 8))
        listeners = sockets.open_listeners(want, config.listen, self.inherited.sockets, self.env,
                                           config.chmod_socket, config.chown_socket)
        self.listeners = [l for l in listeners if l.kind != sockets.STATS]
        self.unavailable = Unavailable(self.listeners, self.loop)
        self.parts.append(self.unavailable)
        sockets.prepare(self.listeners, config)   # TCP_DEFER_ACCEPT, TLS certificates
        for l in listeners:
            if l.kind == sockets.STATS:
                self.stats.listen(l, self.loop)
        hooks.drop_privileges(config, log)
        self.logfile.open(dropped=True)
        self.parts += touch_reload(config.touch_reload, self.loop, self.on_graceful_reload)
        self.parts += MasterFifo.create(self)
        os.environ[handoff.RELOADS] = str(self.reloads)  # the app reads it, as under uWSGI
        self.parts += api_parts(self)   # caches and spoolers, before the app (emperor/master/spooler.py)
        hooks.run(config, "pre-app", log)
        if not config.lazy_apps:
            self.app = load_app(config)
        hooks.run(config, "post-app", log)
        self.parts += AutoReloader.create(self) + UwsgiSignals.create(self)   # the latter: if the app uses uwsgi
        # Workers are forks: keep their collectors off the pages they share with us.
        gc.collect()
        gc.freeze()
        self.parts += attached_parts(config, self.inherited, self.loop, on_control=self.graceful_stop)
        self.workers.start()
        if self.reloads == 0:
            log(f"serving {', '.join(f'{l.kind}://{l.address}' for l in self.listeners)} "
                f"with {config.processes} worker(s) x {config.threads} thread(s), pid {os.getpid()}")
        else:
            log(f"generation {self.reloads} loaded, pid {os.getpid()}")
        self.link.tell(channel.SPAWNED, str(self.reloads))
        self._show_state()
        # die-on-idle: `idle` tells the emperor, which starts it again on the next connection (on-demand)
        self.parts += adaptive_parts(config, self.workers, self.loop, self.listeners, log,
                                     lambda: self.graceful_stop("idle", say=channel.IDLE))
        self.logfile.watch()
        self.parts.append(self.logfile)
        set_master_title(config, self.config_path)
        self.workers.spawn_all()
        hooks.run(config, "master-start", log)
        gen = self.workers.current
        if gen is not None and self.workers.all_ready(gen):   # cheap: no worker to wait for
            self.workers.generation_ready()
            self._serving()

    def _master_only(self) -> list[int]:
        """What a forked worker closes: the descriptors only the master uses."""
        fds = [self.signals.wake_r, self.notify_r, self.loop.fileno(), self.link.fileno()]
        return [fd for fd in fds if fd is not None] + [fd for p in self.parts for fd in p.fds()]

    def _become_worker(self, gen: Generation, slot: int) -> None:
        """In the forked child, signals blocked, the master's descriptors closed: serve."""
        config = self.config
        worker = Worker(config=config, slot=slot, listeners=self.listeners, app=self.app,
                        board=gen.board, notify_fd=self.notify_w, load_app=lambda: load_app(config))
        worker.paused = self.paused
        worker.master_pid = self.pid
        worker.run()

    # ---------- the loop ----------
    def run(self) -> int:
        self.loop.watch(self.signals.wake_r, lambda: None)   # drained by signals.dispatch()
        self.loop.watch(self.notify_r, self._read_notify)
        link = self.link.fileno()
        if link is not None:
            self.loop.watch(link, self._read_channel)
        while True:
            self.signals.dispatch(self)
            if self.stopping and not self._children_left():
                return self._exit()
            self.loop.poll(self._next_timeout())
            self._run_timers()

    def _children_left(self) -> bool:
        return self.workers.children_left() or any(p.alive() for p in self.parts)

    def _next_timeout(self) -> float:
        t = earliest([self.workers.next_deadline(), self.stop_deadline if self.stopping else None]
                     + [p.deadline() for p in self.parts])
        return -1 if t is None else max(t - time.monotonic(), 0.0)

    def _run_timers(self) -> None:
        now = time.monotonic()
        self.workers.run_timers(now)
        for p in self.parts:
            p.run_timers(now)
        if self.stopping and now >= self.stop_deadline and self._children_left():
            log("workers still busy after the mercy period: killing")
            self._kill_all()
            self.stop_deadline = now + STOP_MERCY

    def _kill_all(self) -> None:
        self.workers.signal_all(signal.SIGKILL)
        for p in self.parts:
            p.stop(graceful=False)

    # ---------- what workers, the emperor and touch-reload tell us ----------
    def _read_notify(self) -> None:
        for kind, slot, pid in notify.parse(drain(self.notify_r)):
            if kind == notify.READY:
                self._worker_ready(pid)
            elif kind == notify.RELOAD:
                log(f"reload requested by the application (pid {pid})")
                self.on_graceful_reload("emperor.reload()")
            elif kind == notify.LOYAL:
                self.workers.worker_served(pid)
                self.link.tell_loyal()
            elif kind == notify.RETIRING:
                log(f"worker {slot + 1} (pid {pid}) retiring after max-requests")

    def _worker_failed(self, gen: Generation, wait: float) -> None:
        """A worker of `gen` died before its first request. With none of the current
        generation accepting, nobody would answer: the master says 503 meanwhile."""
        if gen is not self.workers.current or gen.ready or self.stopping:
            return
        self.unavailable.start(wait)
        self.link.tell(channel.FAILING, f"{gen.last_failure} (worker retried in {wait:g}s)")

    def _worker_ready(self, pid: int) -> None:
        cur = self.workers.current
        all_ready = self.workers.worker_ready(pid)
        if self.unavailable.active and cur is not None and cur.ready:
            self.unavailable.stop()
            log(f"a worker of generation {cur.number} accepts again")
            if not all_ready:
                self.link.tell(channel.READY, str(self.reloads))
        if all_ready:
            self._serving()

    def _serving(self) -> None:
        """This image's generation accepts: the pidfile, the emperor, the state say so."""
        if not self.pidfile_written:
            pidfile.write_all(self.config, os.getpid())
            self.pidfile_written = True
        self.link.tell(channel.READY, str(self.reloads))
        if self.reloader.busy:
            return  # another reload is already under way
        why = "workers ready" if self.reloads == 0 else f"generation {self.reloads} ready"
        self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, why)

    def _read_channel(self) -> None:
        messages = self.link.read()
        if messages is None:
            log("the emperor is gone: stopping")
            self.link.close(self.loop.unwatch)
            self.on_stop("emperor gone")
            return
        for word, text in messages:
            if word == channel.GRACEFUL_STOP:
                self.graceful_stop("emperor asked")
            elif word == channel.RELOAD:
                self.on_graceful_reload("emperor asked")
            elif word == channel.PREFLIGHT:
                self.reloader.reported(text)

    # ---------- the signal table's actions ----------
    def on_graceful_reload(self, why: str) -> None:
        if self.stopping or self.config.exit_on_reload:   # exit-on-reload: stop instead (core/master_utils.c)
            return None if self.stopping else self.graceful_stop(why + ", exit-on-reload")
        if self.reloader.busy:
            log(f"{why}: a newer reload supersedes the preflight still running")
        else:
            self.state.to(MasterState.RELOADING, why)
            self.link.tell(channel.RELOADING)
        held = [(l.kind, l.address) for l in self.listeners]
        if self.config.stats:
            held.append((sockets.STATS, self.config.stats))
        self.reloader.start(handoff.held(held))

    def on_brutal_reload(self, why: str) -> None:
        if self.config.exit_on_reload or (self.config.die_on_term and why == "SIGTERM"):   # not the FIFO's R
            self.graceful_stop(why + (", exit-on-reload" if self.config.exit_on_reload else ", die-on-term"))
            return
        if self.stopping:
            return
        self.state.to(MasterState.RELOADING, why + ": brutal")
        self.link.tell(channel.RELOADING)
        self.workers.signal_all(signal.SIGKILL)   # the parts' children (daemons, cron) carry on
        self.reloader.cancel()
        self.workers.wait_all(2.0)
        self.workers.current, self.workers.draining, self.workers.snapshot = None, [], None
        self._reexec()

    def on_stop(self, why: str) -> None:
        if self.stopping and self.stop_now:
            return
        self._enter_stopping(why)
        self.stop_now = True
        self._kill_all()
        self.stop_deadline = time.monotonic() + STOP_MERCY

    def graceful_stop(self, why: str, say: str = "") -> None:
        if self.stopping:
            return
        if say:
            self.link.tell(say)
        self._enter_stopping(why)
        for gen in self.workers.generations():
            self.workers.signal(gen, signal.SIGCONT)
            self.workers.signal(gen, signal.SIGHUP)  # the last out: answer what is queued
        for p in self.parts:
            p.stop(graceful=True)
        self.stop_deadline = time.monotonic() + self.config.worker_reload_mercy

    def _enter_stopping(self, why: str) -> None:
        self.unavailable.stop()   # nobody is respawned now: nobody will take its clients back
        self.state.to(MasterState.STOPPING, why)
        self.workers.stopping = True
        self.link.tell(channel.STOPPING)

    on_graceful_stop = graceful_stop   # a unix_signal hook's gracefully_kill_them_all

    def on_log_stats(self, why: str) -> None:
        log(statistics_text(self.config, self.stats.document()))

    def on_log_workers(self, why: str) -> None:
        log(workers_text(self.state_name, self.stats.document()))
        wake_spoolers(self.parts)

    def on_restore_snapshot(self, why: str) -> None:
        if self.workers.snapshot is None:
            log(f"{why}: no snapshot to restore (set snapshot = true to keep one)")
            return
        if self.stopping:
            return
        restored = self.workers.restore_snapshot(why, paused=self.paused)
        self.rollbacks += 1
        self.link.tell(channel.RESTORED, str(restored.number))

    def on_toggle_pause(self, why: str) -> None:
        if self.stopping:
            return
        self.paused = not self.paused
        if self.workers.current:
            self.workers.signal(self.workers.current, signal.SIGTSTP if self.paused else signal.SIGCONT)
        if self.state.state in (MasterState.RUNNING, MasterState.PAUSED):
            self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, why)
        else:
            log(f"{why}: {'paused' if self.paused else 'resumed'} while {self.state_name}")
            self._show_state()

    def on_wake_workers(self, why: str) -> None:
        self.workers.signal_all(signal.SIGWINCH)

    def on_reap(self, why: str = "SIGCHLD") -> None:
        ended = list(reaped())   # first: the pipe then has what they wrote before exiting (READY,
        self._read_notify()      # served); else a worker at max-requests = 1 was a start failure
        for pid, code in ended:
            if not any(p.reaped(pid, code) for p in self.parts):
                self.workers.exited(pid, code)

    # ---------- reload outcomes ----------
    def _reload_failed(self, output: str) -> None:
        if output:
            logmod.write_raw(output + "\n")
        last = output.splitlines()[-1] if output else "unknown error"
        self.last_reload_error = last
        log(f"reload failed, generation {self.reloads} keeps serving: {last}")
        self.link.tell(channel.RELOAD_FAILED, last)
        self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, "reload failed")

    def _reexec(self) -> None:
        """Become the next generation's master: same PID, same sockets, new code."""
        h = handoff.HandOff()
        h.reloads, h.notify, h.channel = self.reloads + 1, (self.notify_r, self.notify_w), self.link.fileno()
        h.started_at, h.paused, h.cwd = self.started_at, self.paused, self.cwd
        keep = self.listeners + ([self.stats.listener] if self.stats.listener else [])
        env = dict(self.env)
        fds = self.workers.hand_over(h) + [fd for p in self.parts for fd in p.hand_over(h)]
        fds += handoff.export(h, env, [(l.kind, l.address, l.fd) for l in keep])
        error = reexec(self.config_path, self.cwd, env, fds)
        self._reload_failed(error)

    def _exit(self) -> int:
        pidfile.remove_all(self.config, os.getpid())
        hooks.run(self.config, "as-user-atexit", log)
        if self.config.vacuum:
            sockets.vacuum(self.listeners + ([self.stats.listener] if self.stats.listener else []), _on_demand(self.env))
        log("stopped")
        return 0


def _on_demand(env: dict[str, str]) -> set[tuple[str, str]]:
    """The sockets the emperor holds for this on-demand vassal (emperor/emperor/ondemand.py): served
    whether or not the file names them, and never vacuumed (the next master serves them)."""
    return handoff.read_held(env.get(handoff.ON_DEMAND, ""))


def _name(state: object) -> str:
    return state.value if isinstance(state, MasterState) else "?"


def _abandon(inherited: handoff.HandOff) -> None:
    """A new image that cannot start: the generations it was handed must not outlive it."""
    for spec in inherited.generations + ([inherited.snapshot] if inherited.snapshot else []):
        for pid in Generation.adopt(spec).pids():
            signal_quietly(pid, signal.SIGKILL)


def run_master(path: str, environ: dict[str, str] | None = None) -> int:
    """Run the master of vassal file `path` (FILE.ini or FILE.ini:section) until it stops."""
    name = os.path.basename(path.split(":")[0])
    logmod.set_prefix(f"[{name}]")
    signals = SignalQueue(SIGNALS)
    signals.install()
    # a re-executed image starts with every signal blocked (see reload.reexec)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    env = dict(os.environ if environ is None else environ)
    inherited = handoff.adopt(env)
    link = EmperorLink(inherited.channel)
    config_path = os.path.abspath(path)
    master: Master | None = None
    try:
        config = load_config(config_path, vassals_dir=env.get(handoff.VASSALS_DIR),
                             trust=TrustRule.adopt(env.get(handoff.TRUST, "")),
                             strict_compat=env.get(handoff.STRICT_COMPAT) == "1", given_socket=bool(_on_demand(env)))
        logmod.set_date_format(config.log_date)   # the workers inherit it
        master = Master(config, config_path, env=env, inherited=inherited, link=link, signals=signals)
        master.start()
    except (ConfigError, sockets.SocketError, AppError, hooks.HookError, OSError, Scarce) as e:
        if isinstance(e, AppError) and e.detail:
            logmod.write_raw(e.detail + "\n")
        if isinstance(e, Scarce) or (isinstance(e, OSError) and not isinstance(e, sockets.SocketError)):
            text = f"cannot start: {getattr(e, 'strerror', None) or e}"
            log(f"{name}: {text}")
        else:
            text = str(e)
            for line in e.problems if isinstance(e, ConfigError) else (text,):
                log(line if line.startswith(name) else f"{name}: {line}")
        link.tell(channel.ERROR, text)
        if master is not None:
            master._kill_all()
        _abandon(inherited)
        return 1
    if master.reloads == 0 and not config.die_on_term and link.fileno() is None:  # by hand: `timeout`,
        log("SIGTERM reloads this master (uWSGI 2.0); SIGINT or Ctrl-C stops it; "    # `docker stop` send SIGTERM
            "set die-on-term = true to stop on SIGTERM")
    return master.run()
