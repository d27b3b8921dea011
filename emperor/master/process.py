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
import select
import signal
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor import sockets
from emperor.config import Config, ConfigError, load_config
from emperor.files import TrustRule
from emperor.master import pidfile
from emperor.master.generations import Generation, Workers
from emperor.master.link import EmperorLink
from emperor.master.reload import Reloader, reexec
from emperor.master.stats import StatsServer, document, statistics_text, workers_text
from emperor.proc import drop_privileges, set_command_line, set_process_name, signal_quietly
from emperor.signals import SignalQueue, drain, reaped
from emperor.states import MASTER_EDGES, Machine, MasterState
from emperor.wire import channel, handoff, notify
from emperor.worker.app import AppError
from emperor.worker.app import load as load_app
from emperor.worker.process import Worker

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.master.touch import TouchWatcher

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
        self.pending = signals.pending       # the test seam: push a signal, call dispatch_signals()
        self.pid = os.getpid()
        self.reloads = inherited.reloads
        self.started_at = inherited.started_at or time.time()
        self.paused = inherited.paused
        self.cwd = inherited.cwd or os.getcwd()
        self.inherited = inherited
        self.state = Machine(MasterState.RELOADING if inherited.generations else MasterState.STARTING,
                             MASTER_EDGES, log, on_change=self._show_state)
        self.ep = select.epoll()
        self.listeners: list[sockets.Listener] = []
        self.app: Callable | None = None
        draining = [Generation.adopt(s) for s in inherited.generations]
        self.workers = Workers(config, self.reloads, log=log, become_worker=self._become_worker,
                               draining=draining,
                               snapshot=Generation.adopt(inherited.snapshot) if inherited.snapshot else None,
                               previous=next((g for g in draining if g.number == inherited.retired), None))
        self.rollbacks = 0
        self.stats = StatsServer(None, config, self._stats_document)
        self.reloader = Reloader(config_path, self.cwd, env=self.env, poll=self.ep,
                                 limit=config.reload_mercy or DEFAULT_RELOAD_MERCY,
                                 emperor=link if env.get(handoff.PREFLIGHTS) == "emperor" else None,
                                 on_failed=self._reload_failed, on_passed=self._reexec)
        self.touch: TouchWatcher | None = None
        self.notify_r, self.notify_w = inherited.notify or os.pipe2(os.O_NONBLOCK)
        os.set_blocking(self.notify_r, False)
        self.last_reload_error = ""
        self.pidfile_written = False
        self.stop_now = False                # stopping by SIGINT (not gracefully): nothing waits
        self.stop_deadline = 0.0

    def _show_state(self) -> None:
        """Put the state in the process name (ps, top): `emperor running`, `emperor paused`.

        `emperor --pause/--resume PIDFILE` read it there, so that a toggle signal
        (SIGTSTP) is sent only when it moves the master the way that was asked.
        """
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
        for w in config.warnings:
            log(w)
        if config.logto:
            logmod.redirect(config.logto)
        want = sockets.wanted(config, self.env.get(handoff.STATS_SOCKET))
        listeners = sockets.open_listeners(want, config.listen, config.chmod_socket, self.inherited.sockets, self.env)
        self.listeners = [l for l in listeners if l.kind != sockets.STATS]
        sockets.defer_accept(self.listeners, config.socket_timeout)
        for l in listeners:
            if l.kind == sockets.STATS:
                self.stats.listener = l
        drop_privileges(config.uid, config.gid)
        if config.touch_reload:
            from emperor.master.touch import TouchWatcher

            self.touch = TouchWatcher(config.touch_reload)
        os.environ[handoff.RELOADS] = str(self.reloads)  # the app reads it, as under uWSGI
        if not config.lazy_apps:
            self.app = load_app(config)
        # Workers are forks: keep their collectors off the pages they share with us.
        gc.collect()
        gc.freeze()
        self.workers.start()
        if self.reloads == 0:
            log(f"serving {', '.join(f'{l.kind}://{l.address}' for l in self.listeners)} "
                f"with {config.processes} worker(s) x {config.threads} thread(s), pid {os.getpid()}")
        else:
            log(f"generation {self.reloads} loaded, pid {os.getpid()}")
        self.link.tell(channel.SPAWNED, str(self.reloads))
        self._show_state()
        self.workers.spawn_all()

    def _become_worker(self, gen: Generation, slot: int) -> None:
        """In the forked child, signals blocked: drop what only the master uses, then serve."""
        signal.set_wakeup_fd(-1)
        os.close(self.signals.wake_r)
        os.close(self.notify_r)
        self.ep.close()
        if self.stats.listener is not None:
            self.stats.listener.sock.close()
        self.link.close()
        if self.touch is not None:
            self.touch.close()
        for g in self.workers.generations():
            if g is not gen:
                g.board.close()
        set_process_name("emperor worker")  # not a master's name: see pidfile.is_master
        set_command_line(f"emperor worker {slot + 1} {self.config_path}")
        config = self.config
        worker = Worker(config=config, slot=slot, listeners=self.listeners, app=self.app,
                        board=gen.board, notify_fd=self.notify_w, load_app=lambda: load_app(config))
        worker.paused = self.paused
        worker.master_pid = self.pid
        worker.run()

    # ---------- the loop ----------
    def loop(self) -> int:
        ep = self.ep
        watched: dict[int, Callable[[], None]] = {self.signals.wake_r: lambda: None,  # drained by dispatch
                                                  self.notify_r: self._read_notify}
        for fd, handler in ((self.stats.fileno(), self.stats.serve), (self.link.fileno(), self._read_channel),
                            (self.touch.fileno() if self.touch else None, self._touched)):
            if fd is not None:
                watched[fd] = handler
        for fd in watched:
            ep.register(fd, select.EPOLLIN)
        while True:
            self.dispatch_signals()
            if self.stopping and not self._children_left():
                return self._exit()
            try:
                events = ep.poll(self._next_timeout())
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd in watched:
                    watched[fd]()
                elif fd == self.reloader.fd:
                    self.reloader.read()
            self._run_timers()

    def dispatch_signals(self) -> None:
        self.signals.dispatch(self)

    def _children_left(self) -> bool:
        return self.workers.children_left() or self.reloader.pid is not None

    def _next_timeout(self) -> float:
        deadlines = [t for t in (self.workers.next_deadline(), self.reloader.deadline) if t is not None]
        if self.stopping:
            deadlines.append(self.stop_deadline)
        if not deadlines:
            return -1
        return max(min(deadlines) - time.monotonic(), 0.0)

    def _run_timers(self) -> None:
        now = time.monotonic()
        self.workers.run_timers(now)
        self.reloader.check_time(now)
        if self.stopping and now >= self.stop_deadline and self._children_left():
            log("workers still busy after the mercy period: killing")
            self._kill_all()
            self.stop_deadline = now + STOP_MERCY

    def _kill_all(self) -> None:
        self.workers.signal_all(signal.SIGKILL)
        self.reloader.cancel()

    # ---------- what workers, the emperor and touch-reload tell us ----------
    def _read_notify(self) -> None:
        for kind, slot, pid in notify.parse(drain(self.notify_r)):
            if kind == notify.READY:
                self._worker_ready(pid)
            elif kind == notify.RELOAD:
                log(f"reload requested by the application (pid {pid})")
                self.on_graceful_reload("emperor.reload()")
            elif kind == notify.LOYAL:
                self.link.tell_loyal()
            elif kind == notify.RETIRING:
                log(f"worker {slot + 1} (pid {pid}) retiring after max-requests")

    def _worker_ready(self, pid: int) -> None:
        if not self.workers.worker_ready(pid):
            return
        if not self.pidfile_written:
            for path in (self.config.pidfile, self.config.safe_pidfile):
                if path:
                    pidfile.write(path, os.getpid())
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
            fd = self.link.fileno()
            if fd is not None:
                self.ep.unregister(fd)
            self.link.close()
            self.on_stop("emperor gone")
            return
        for word, text in messages:
            if word == channel.GRACEFUL_STOP:
                self.graceful_stop("emperor asked")
            elif word == channel.RELOAD:
                self.on_graceful_reload("emperor asked")
            elif word == channel.PREFLIGHT:
                self.reloader.reported(text, self.stopping)

    def _touched(self) -> None:
        if self.touch is not None and self.touch.changed():
            log("touch-reload file changed")
            self.on_graceful_reload("touch-reload")

    def _stats_document(self, last_requests: dict[int, int]) -> dict:
        w = self.workers
        serving = w.current.number if w.current else self.reloads
        return document(self.config, self.listeners, w.current, last_requests, {
            "name": self.name, "state": self.state_name, "generation": serving,
            "image": self.reloads,              # the generation this master image loaded (the file's)
            "restored": int(serving != self.reloads), "rollbacks": self.rollbacks,
            "snapshot": w.snapshot.number if w.snapshot else -1,
            "paused": int(self.paused), "started_at": int(self.started_at),
            "last_reload_error": self.last_reload_error,
        })

    # ---------- the signal table's actions ----------
    def on_graceful_reload(self, why: str) -> None:
        if self.stopping:
            return
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
        if self.config.die_on_term:
            self.graceful_stop(why + ", die-on-term")
            return
        if self.stopping:
            return
        self.state.to(MasterState.RELOADING, why + ": brutal")
        self.link.tell(channel.RELOADING)
        self._kill_all()
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

    def graceful_stop(self, why: str) -> None:
        if self.stopping:
            return
        self._enter_stopping(why)
        for gen in self.workers.generations():
            self.workers.signal(gen, signal.SIGCONT)
            self.workers.signal(gen, signal.SIGHUP)  # the last out: answer what is queued
        self.reloader.cancel()
        self.stop_deadline = time.monotonic() + self.config.worker_reload_mercy

    def _enter_stopping(self, why: str) -> None:
        self.state.to(MasterState.STOPPING, why)
        self.workers.stopping = True
        self.link.tell(channel.STOPPING)

    def on_log_stats(self, why: str) -> None:
        log(statistics_text(self.config, self.stats.document()))

    def on_log_workers(self, why: str) -> None:
        log(workers_text(self.state_name, self.stats.document()))

    def on_restore_snapshot(self, why: str) -> None:
        if self.workers.snapshot is None:
            log(f"{why}: no snapshot to restore (set snapshot = true to keep one)")
            return
        if self.stopping:
            return
        restored, displaced = self.workers.restore_snapshot()
        if self.paused:
            self.workers.signal(restored, signal.SIGTSTP)
        self.rollbacks += 1
        log(f"{why}: restored generation {restored.number}"
            + (f"; generation {displaced.number} is the snapshot now" if displaced else ""))
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
        for pid, code in reaped():
            if pid == self.reloader.pid:
                self.reloader.done(code, self.stopping)
            else:
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
        w = self.workers
        h = handoff.HandOff()
        h.reloads = self.reloads + 1
        h.notify = (self.notify_r, self.notify_w)
        gens = ([w.current] if w.current else []) + w.draining
        h.generations = [g.export() for g in gens]
        h.retired = w.current.number if w.current else -1
        h.snapshot = w.snapshot.export() if w.snapshot else ""
        h.started_at, h.paused, h.cwd = self.started_at, self.paused, self.cwd
        h.channel = self.link.fileno()
        keep = self.listeners + ([self.stats.listener] if self.stats.listener else [])
        env = dict(self.env)
        fds = handoff.export(h, env, [(l.kind, l.address, l.fd) for l in keep])
        fds += [g.board.fd for g in gens + ([w.snapshot] if w.snapshot else [])]
        error = reexec(self.config_path, self.cwd, env, fds)
        self._reload_failed(error)

    def _exit(self) -> int:
        for path in (self.config.pidfile, self.config.safe_pidfile):
            if path:
                pidfile.remove(path, os.getpid())
        if self.config.vacuum:
            sockets.vacuum(self.listeners + ([self.stats.listener] if self.stats.listener else []))
        log("stopped")
        return 0


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
                             trust=TrustRule.adopt(env.get(handoff.TRUST, "")))
        master = Master(config, config_path, env=env, inherited=inherited, link=link, signals=signals)
        master.start()
    except (ConfigError, sockets.SocketError, AppError, OSError) as e:
        if isinstance(e, AppError) and e.detail:
            logmod.write_raw(e.detail + "\n")
        if isinstance(e, OSError) and not isinstance(e, sockets.SocketError):
            text = f"cannot start: {e.strerror or e}"
            log(f"{name}: {text}")
        else:
            text = str(e)
            log(text if text.startswith(name) else f"{name}: {text}")
        link.tell(channel.ERROR, text)
        if master is not None:
            master._kill_all()
        _abandon(inherited)
        return 1
    if master.reloads == 0 and not config.die_on_term and link.fileno() is None:  # by hand: `timeout`,
        log("SIGTERM reloads this master (uWSGI 2.0); SIGINT or Ctrl-C stops it; "    # `docker stop` send SIGTERM
            "set die-on-term = true to stop on SIGTERM")
    return master.loop()
