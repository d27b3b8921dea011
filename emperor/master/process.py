"""The master: owns the sockets, keeps the workers alive, obeys the signal table.

It never serves a request. Signal handlers only append to a queue (and the
interpreter writes the wakeup byte); the one event loop in `Master.loop` does
all the work, so no handler ever races another.

Reload design: the master first runs a *preflight* (a throwaway process that
parses the new config and imports the app); only if that passes does it
`execve` itself, with its listening sockets, its notify pipe and the running
generation's scoreboard inherited. The new image loads the app, forks the new
generation, and only once every new worker is accepting does it tell the
previous generation to finish its requests and leave. The old workers are
still its children across `execve`, and both generations accept on the same
kernel sockets, so there is no moment with nobody accepting.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

from emperor import log as logmod
from emperor import sockets
from emperor.master import pidfile
from emperor.wire import notify
from emperor.worker.app import AppError, load as load_app
from emperor.config import Config, ConfigError, load_config
from emperor.emperor.launch import drop_privileges
from emperor.wire.scoreboard import Scoreboard
from emperor.signals import SignalQueue, drain, reaped
from emperor.states import MasterState, StateMachine
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

# What a master hands to its next image, besides UWSGI_RELOADS and EMPEROR_SOCKETS.
ENV_NOTIFY = "EMPEROR_NOTIFY"          # "r,w" of the worker -> master pipe
ENV_OLD = "EMPEROR_OLD_GENERATIONS"    # generations still running, to drain
ENV_SNAPSHOT = "EMPEROR_SNAPSHOT"      # the paused previous generation
ENV_STATE = "EMPEROR_MASTER_STATE"     # started-at, paused flag, original cwd
ENV_CHANNEL = "EMPEROR_CHANNEL"        # socket to the emperor, when run by one
ENV_HELD = "EMPEROR_HELD_SOCKETS"      # for the preflight: addresses we already hold
ENV_STATS = "EMPEROR_STATS_SOCKET"     # the emperor's private stats socket, for a vassal without `stats`
ENV_PREFLIGHTS = "EMPEROR_PREFLIGHTS"  # "emperor": the emperor forks our preflights (ask over the channel)
INTERNAL_ENV = (ENV_NOTIFY, ENV_OLD, ENV_SNAPSHOT, ENV_STATE, ENV_HELD, sockets.ENV, "UWSGI_RELOADS")

RESPAWN_MIN_INTERVAL = 1.0


class Generation:
    """The workers of one load of the code and config, and their scoreboard."""

    def __init__(self, number: int, board: Scoreboard, slots: list[int | None]) -> None:
        n = len(slots)
        self.number = number
        self.board = board
        self.slots = slots                        # pid per slot
        self.ready: set[int] = set()              # slots that reported READY
        self.respawns = [0] * n
        self.last_spawn = [0.0] * n
        self.harakiri = [0] * n
        self.draining_since: float | None = None
        self.paused = False

    def pids(self) -> list[int]:
        return [p for p in self.slots if p]

    def export(self) -> str:
        pids = ",".join(str(p or 0) for p in self.slots)
        return f"{self.number}/{self.board.export()}/{pids}/{int(self.paused)}"

    @classmethod
    def adopt(cls, spec: str) -> "Generation":
        number, board, pids, paused = spec.split("/")
        slots = [int(p) or None for p in pids.split(",")] if pids else []
        gen = cls(int(number), Scoreboard.adopt(board), slots)
        gen.ready = {i for i, p in enumerate(slots) if p}
        gen.paused = paused == "1"
        return gen


@contextlib.contextmanager
def _cwd(path: str) -> Iterator[None]:
    """Run a block in `path`, then return to the directory we were in, even one deleted since
    (a deploy that removed the old release the app was chdir'ed into). Best effort both ways."""
    try:
        back = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        try:
            os.chdir(path)
        except OSError:
            pass
        yield
    finally:
        try:
            os.fchdir(back)
        finally:
            os.close(back)


class Master:
    def __init__(self, config_path: str, environ: dict[str, str] | None = None) -> None:
        self.config_path = os.path.abspath(config_path)
        self.environ = dict(os.environ if environ is None else environ)
        self.config: Config | None = None
        self.name = os.path.basename(config_path.split(":")[0])
        self.state = StateMachine(MasterState.STARTING, log, on_change=self._show_state)
        self.signals = SignalQueue(SIGNALS)
        self.pending = self.signals.pending  # the test seam: push a signal, call dispatch_signals()
        self.listeners: list[sockets.Listener] = []
        self.app: Callable | None = None
        self.current: Generation | None = None
        self.draining: list[Generation] = []
        self.snapshot: Generation | None = None
        self.reloads = int(self.environ.get("UWSGI_RELOADS", "0") or 0)
        self.started_at = time.time()
        self.cwd = os.getcwd()
        self.paused = False
        self.preflight_pid: int | None = None
        self.preflight_remote = False      # the emperor runs our preflight; it says `preflight CODE`
        self.preflight_out = b""
        self.preflight_fd: int | None = None
        self.preflight_again = False
        self.reload_kind = ""
        self.respawn_at: dict[tuple[int, int], float] = {}
        self.stats_sock: socket.socket | None = None
        self.channel: socket.socket | None = None
        self.touch: object | None = None
        self.loyal = False
        self.last_reload_error = ""
        self.pidfile_written = False
        self.stop_kind = ""
        self.last_requests: dict[int, int] = {}  # per worker pid, for the stats' delta_requests
        self.awaiting_generation = True   # until this image's first generation is all ready
        self.stop_deadline = 0.0
        self._orig_env = dict(self.environ)

    def _show_state(self) -> None:
        """Put the state in the process name (ps, top): `emperor running`, `emperor paused`.

        `emperor --pause/--resume PIDFILE` read it there, so that a toggle signal
        (SIGTSTP) is sent only when it moves the master the way that was asked.
        """
        state = "paused" if self.paused and self.state.state != MasterState.STOPPING else self.state.state.value
        set_process_name(f"emperor {state}")

    # ---------- start-up ----------
    def main(self) -> int:
        logmod.set_prefix(f"[{self.name}]")
        self.pid = os.getpid()
        self.wake_r = self.signals.install()
        # a re-executed image starts with every signal blocked (see _execve)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        try:
            self.start()
        except (ConfigError, sockets.SocketError) as e:
            log(str(e) if str(e).startswith(self.name) else f"{self.name}: {e}")
            self._tell_emperor(f"error {e}")
            self.kill_all(signal.SIGKILL)
            return 1
        except AppError as e:
            if e.detail:
                logmod.write_raw(e.detail + "\n")
            log(str(e))
            self._tell_emperor(f"error {e}")
            self.kill_all(signal.SIGKILL)
            return 1
        except OSError as e:
            log(f"{self.name}: cannot start: {e.strerror or e}")
            self._tell_emperor(f"error cannot start: {e.strerror or e}")
            self.kill_all(signal.SIGKILL)
            return 1
        return self.loop()

    def start(self) -> None:
        env = self.environ
        state = env.pop(ENV_STATE, "")
        if state:
            started, paused, cwd = state.split(",", 2)
            self.started_at, self.paused, self.cwd = float(started), paused == "1", cwd
        self._adopt_channel(env)
        self.config = config = load_config(self.config_path, vassals_dir=env.get("EMPEROR_VASSALS_DIR"))
        for w in config.warnings:
            log(w)
        if config.logto:
            logmod.redirect(config.logto)
        notify_fds = env.pop(ENV_NOTIFY, "")
        if notify_fds:
            self.notify_r, self.notify_w = (int(x) for x in notify_fds.split(","))
        else:
            self.notify_r, self.notify_w = os.pipe2(os.O_NONBLOCK)
        os.set_blocking(self.notify_r, False)
        self.draining = [Generation.adopt(s) for s in filter(None, env.pop(ENV_OLD, "").split(";"))]
        snap = env.pop(ENV_SNAPSHOT, "")
        self.snapshot = Generation.adopt(snap) if snap else None
        if self.draining:
            self.state.state = MasterState.RELOADING  # the previous image logged the edge
        wanted = [(sockets.HTTP, a) for a in config.http_sockets] + \
                 [(sockets.UWSGI, a) for a in config.uwsgi_sockets]
        if config.stats:
            wanted.append(("stats", config.stats))
        elif env.get(ENV_STATS):  # what `emperor status` reads; kept across reloads like any socket
            wanted.append(("stats", env[ENV_STATS]))
        inherited_env = dict(env)
        all_listeners = sockets.open_listeners(wanted, config.listen, config.chmod_socket, inherited_env)
        for k in (sockets.ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(k, None)
        self.listeners = [l for l in all_listeners if l.kind != "stats"]
        sockets.defer_accept(self.listeners, config.socket_timeout)
        for l in all_listeners:
            if l.kind == "stats":
                self.stats_sock = l.sock
                self.stats_listener = l
        self._drop_privileges()
        self._setup_touch_reload()
        os.environ["UWSGI_RELOADS"] = str(self.reloads)  # the app reads it, as under uWSGI
        if not config.lazy_apps:
            self.app = load_app(config)
        # Workers are forks: keep their collectors off the pages they share with us.
        gc.collect()
        gc.freeze()
        self.current = self._new_generation()
        if self.reloads == 0:
            log(f"serving {', '.join(f'{l.kind}://{l.address}' for l in self.listeners)} "
                f"with {config.processes} worker(s) x {config.threads} thread(s), pid {os.getpid()}")
        else:
            log(f"generation {self.reloads} loaded, pid {os.getpid()}")
        self._tell_emperor("spawned")
        self._show_state()
        for slot in range(config.processes):
            self.spawn(self.current, slot)

    def _adopt_channel(self, env: dict[str, str]) -> None:
        fd = env.get(ENV_CHANNEL)
        if fd:
            try:
                self.channel = socket.socket(fileno=int(fd))
                self.channel.setblocking(False)
                # not for the preflight; _execve makes it inheritable again
                os.set_inheritable(self.channel.fileno(), False)
            except OSError:
                self.channel = None
                return
            # Backstop for a lost EOF: the kernel kills us when the emperor dies.
            # It survives execve; a lost race (emperor already gone) still ends in EOF.
            from emperor.worker.process import die_with_parent

            die_with_parent(signal.SIGKILL)

    def _drop_privileges(self) -> None:
        drop_privileges(self.config.uid, self.config.gid)

    def _setup_touch_reload(self) -> None:
        if self.config.touch_reload:
            from emperor.master.touch import TouchWatcher

            self.touch = TouchWatcher(self.config.touch_reload)

    def _new_generation(self) -> Generation:
        c = self.config
        return Generation(self.reloads, Scoreboard(c.processes, c.threads), [None] * c.processes)

    # ---------- workers ----------
    def spawn(self, gen: Generation, slot: int) -> None:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            log(f"fork failed: {e.strerror}; retrying in 1s")
            self.respawn_at[(gen.number, slot)] = time.monotonic() + 1
            return
        if pid == 0:
            self._become_worker(gen, slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        gen.slots[slot] = pid
        gen.ready.discard(slot)
        gen.last_spawn[slot] = time.monotonic()
        gen.board.spawned(slot, pid, gen.number, gen.respawns[slot])

    def _become_worker(self, gen: Generation, slot: int) -> None:
        # Runs in the child, signals blocked. Drop what only the master uses.
        try:
            signal.set_wakeup_fd(-1)
            for fd in (self.wake_r, self.notify_r):
                os.close(fd)
            for sock in (self.stats_sock, self.channel):
                if sock is not None:
                    sock.close()
            if self.touch is not None:
                self.touch.close()
            for g in self.draining + ([self.snapshot] if self.snapshot else []):
                g.board.close()
            set_process_name("emperor worker")  # not a master's name: see pidfile.is_master
            set_command_line(f"emperor worker {slot + 1} {self.config_path}")
            config = self.config
            worker = Worker(config=config, slot=slot, listeners=self.listeners, app=self.app,
                            board=gen.board, notify_fd=self.notify_w,
                            load_app=lambda: load_app(config))
            worker.paused = self.paused
            worker.master_pid = self.pid
            worker.run()
        finally:
            os._exit(1)

    def signal_generation(self, gen: Generation, sig: int) -> None:
        for pid in gen.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def generations(self) -> list[Generation]:
        gens = [g for g in [self.current, self.snapshot] if g] + self.draining
        return gens

    def kill_all(self, sig: int) -> None:
        for gen in self.generations():
            self.signal_generation(gen, sig)
        if self.preflight_pid:
            try:
                os.kill(self.preflight_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def on_reap(self, why: str = "SIGCHLD") -> None:
        for pid, code in reaped():
            if pid == self.preflight_pid:
                self._preflight_done(code)
                continue
            self._worker_exited(pid, code)

    def _worker_exited(self, pid: int, code: int) -> None:
        for gen in self.generations():
            if pid not in gen.slots:
                continue
            slot = gen.slots.index(pid)
            gen.slots[slot] = None
            gen.ready.discard(slot)
            if gen is not self.current or self.state.state == MasterState.STOPPING:
                if gen in self.draining and not gen.pids():
                    self.draining.remove(gen)
                    gen.board.close()
                    log(f"generation {gen.number} has left")
                return
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
            log(f"worker {slot + 1} (pid {pid}) {how}; respawning")
            gen.respawns[slot] += 1
            wait = gen.last_spawn[slot] + RESPAWN_MIN_INTERVAL - time.monotonic()
            if wait > 0 and code != 0:
                self.respawn_at[(gen.number, slot)] = time.monotonic() + wait
            else:
                self.spawn(gen, slot)
            return

    # ---------- the loop ----------
    def loop(self) -> int:
        ep = select.epoll()
        ep.register(self.wake_r, select.EPOLLIN)
        ep.register(self.notify_r, select.EPOLLIN)
        if self.stats_sock is not None:
            ep.register(self.stats_sock.fileno(), select.EPOLLIN)
        if self.channel is not None:
            ep.register(self.channel.fileno(), select.EPOLLIN)
        if self.touch is not None:
            ep.register(self.touch.fileno(), select.EPOLLIN)
        self.ep = ep
        while True:
            self.dispatch_signals()
            if self.state.state == MasterState.STOPPING and not self._children_left():
                return self._exit()
            timeout = self._next_timeout()
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd == self.wake_r:
                    pass  # dispatch_signals() drains it at the top of the loop
                elif fd == self.notify_r:
                    self._read_notify()
                elif self.stats_sock is not None and fd == self.stats_sock.fileno():
                    self._serve_stats()
                elif self.channel is not None and fd == self.channel.fileno():
                    self._read_channel()
                elif self.touch is not None and fd == self.touch.fileno():
                    if self.touch.changed():
                        log("touch-reload file changed")
                        self.on_graceful_reload("touch-reload")
                elif fd == self.preflight_fd:
                    self._read_preflight()
            self._run_timers()

    def dispatch_signals(self) -> None:
        self.signals.dispatch(self)

    def _children_left(self) -> bool:
        return any(g.pids() for g in self.generations()) or bool(self.preflight_pid)

    def _next_timeout(self) -> float:
        deadlines = list(self.respawn_at.values())
        if self.config.harakiri and self.state.state != MasterState.STOPPING:
            deadlines.append(time.monotonic() + 1.0)
        mercy = self.config.worker_reload_mercy
        for gen in self.draining:
            if gen.draining_since is not None:
                deadlines.append(gen.draining_since + mercy)
        if self.state.state == MasterState.STOPPING:
            deadlines.append(self.stop_deadline)
        if not deadlines:
            return -1
        return max(min(deadlines) - time.monotonic(), 0.0)

    def _run_timers(self) -> None:
        now = time.monotonic()
        for key, when in list(self.respawn_at.items()):
            if when <= now:
                del self.respawn_at[key]
                number, slot = key
                if self.current and self.current.number == number and self.state.state != MasterState.STOPPING \
                        and self.current.slots[slot] is None:
                    self.spawn(self.current, slot)
        mercy = self.config.worker_reload_mercy
        for gen in self.draining:
            if gen.draining_since is not None and now >= gen.draining_since + mercy and gen.pids():
                log(f"generation {gen.number} still busy after worker-reload-mercy ({mercy}s): killing")
                self.signal_generation(gen, signal.SIGKILL)
                gen.draining_since = None
        if self.state.state == MasterState.STOPPING and now >= self.stop_deadline and self._children_left():
            log("workers still busy after the mercy period: killing")
            self.kill_all(signal.SIGKILL)
            self.stop_deadline = now + 5
        if self.config.harakiri:
            self._check_harakiri(now)

    def _check_harakiri(self, now: float) -> None:
        limit = self.config.harakiri
        for gen in [self.current] + self.draining:
            if gen is None:
                continue
            for slot, pid in enumerate(gen.slots):
                if not pid:
                    continue
                for core in gen.board.worker(slot)["cores"]:
                    since = core["busy_since"]
                    if since and now - since > limit:
                        log(f"HARAKIRI: worker {slot + 1} (pid {pid}) ran {core['method']} {core['path']} "
                            f"for {now - since:.1f}s (limit {limit}s): killing it")
                        gen.harakiri[slot] += 1
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        break

    # ---------- messages ----------
    def _read_notify(self) -> None:
        data = drain(self.notify_r)
        for kind, slot, pid in notify.parse(data):
            if kind == notify.READY:
                self._worker_ready(pid)
            elif kind == notify.RELOAD:
                log(f"reload requested by the application (pid {pid})")
                self.on_graceful_reload("emperor.reload()")
            elif kind == notify.LOYAL:
                if not self.loyal:
                    self.loyal = True
                    self._tell_emperor("loyal")
            elif kind == notify.RETIRING:
                log(f"worker {slot + 1} (pid {pid}) retiring after max-requests")

    def _worker_ready(self, pid: int) -> None:
        gen = self.current
        if gen is None or pid not in gen.slots or self.state.state == MasterState.STOPPING:
            return  # a READY read after a stop began (the worker wrote it before being told) changes nothing
        gen.ready.add(gen.slots.index(pid))
        if len(gen.ready) < len(gen.slots) or not self.awaiting_generation:
            return
        self.awaiting_generation = False
        # the whole new generation accepts: now the previous ones may leave
        for old in self.draining:
            if old.draining_since is None:
                self._retire(old)
        if not self.pidfile_written:
            self._write_pidfiles()
        self._tell_emperor("ready")
        if self.preflight_pid:
            return  # another reload is already under way
        why = "workers ready" if self.reloads == 0 else f"generation {self.reloads} ready"
        self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, why)

    def _retire(self, gen: Generation) -> None:
        if self.config.snapshot and self.snapshot is None and not gen.paused and gen.number == self.reloads - 1:
            self.snapshot = gen
            self.draining.remove(gen)
            gen.paused = True
            self.signal_generation(gen, signal.SIGTSTP)
            log(f"generation {gen.number} kept as snapshot (SIGURG restores it)")
            return
        gen.draining_since = time.monotonic()
        self.signal_generation(gen, signal.SIGCONT)  # a paused generation must wake to leave
        self.signal_generation(gen, signal.SIGTERM)

    def _write_pidfiles(self) -> None:
        for path in (self.config.pidfile, self.config.safe_pidfile):
            if path:
                pidfile.write(path, os.getpid())
        self.pidfile_written = True

    def _tell_emperor(self, message: str) -> None:
        if self.channel is None:
            return
        try:
            self.channel.send(message.replace("\n", " ").encode()[:4000] + b"\n")
        except OSError:
            pass

    def _read_channel(self) -> None:
        try:
            data = self.channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log("the emperor is gone: stopping")
            self.ep.unregister(self.channel.fileno())
            self.channel.close()
            self.channel = None
            self.on_stop("emperor gone")
            return
        for line in data.decode(errors="replace").splitlines():
            if line.strip() == "graceful stop":
                self.graceful_stop("emperor asked")
            elif line.strip() == "reload":
                self.on_graceful_reload("emperor asked")
            elif line.startswith("preflight ") and self.preflight_remote:
                self._preflight_done(int(line.split()[1]))

    def _serve_stats(self) -> None:
        from emperor.master.stats import document

        while True:
            try:
                conn, _ = self.stats_sock.accept()
            except (BlockingIOError, OSError):
                return
            try:
                body = json.dumps(document(self)).encode()
                if self.config.stats_http:
                    body = (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body)) + body
                conn.setblocking(True)
                conn.settimeout(2)
                conn.sendall(body)
            except OSError:
                pass
            finally:
                conn.close()

    # ---------- the signal table's actions ----------
    def on_graceful_reload(self, why: str) -> None:
        if self.state.state == MasterState.STOPPING:
            return
        if self.preflight_pid or self.preflight_remote:
            self.preflight_again = True  # the file may have changed again: check the newest
            return
        self.state.to(MasterState.RELOADING, why)
        self._tell_emperor("reloading")
        self._start_preflight()

    def on_brutal_reload(self, why: str) -> None:
        if self.config.die_on_term:
            self.graceful_stop(why + ", die-on-term")
            return
        if self.state.state == MasterState.STOPPING:
            return
        self.state.to(MasterState.RELOADING, why + ": brutal")
        self._tell_emperor("reloading")
        self.kill_all(signal.SIGKILL)
        self._wait_children(2.0)
        self.current = None
        self.draining = []
        self.snapshot = None
        self._execve()

    def on_stop(self, why: str) -> None:
        if self.state.state == MasterState.STOPPING and self.stop_kind == "now":
            return
        self.state.to(MasterState.STOPPING, why)
        self.stop_kind = "now"
        self._tell_emperor("stopping")
        self.kill_all(signal.SIGKILL)
        self.stop_deadline = time.monotonic() + 5

    def graceful_stop(self, why: str) -> None:
        if self.state.state == MasterState.STOPPING:
            return
        self.state.to(MasterState.STOPPING, why)
        self.stop_kind = "graceful"
        self._tell_emperor("stopping")
        for gen in self.generations():
            self.signal_generation(gen, signal.SIGCONT)
            self.signal_generation(gen, signal.SIGHUP)  # the last out: answer what is queued
        if self.preflight_pid:
            os.kill(self.preflight_pid, signal.SIGKILL)
        self.stop_deadline = time.monotonic() + self.config.worker_reload_mercy

    def on_log_stats(self, why: str) -> None:
        from emperor.master.stats import document

        lines = ["statistics (SIGUSR1); effective config:"] + ["  " + l for l in self.config.ini_lines()]
        doc = document(self)
        for w in doc["workers"]:
            lines.append(f"  worker {w['id']} pid {w['pid']}: {w['requests']} requests, "
                         f"{w['exceptions']} exceptions, status {w['status']}, "
                         f"avg {w['avg_rt'] / 1000:.2f} ms, rss {w['rss'] // 1024} KiB")
        log("\n".join(lines))

    def on_log_workers(self, why: str) -> None:
        from emperor.master.stats import document

        doc = document(self)
        lines = [f"worker status (SIGUSR2), state {self.state.state.value}:"]
        for w in doc["workers"]:
            line = f"  worker {w['id']} pid {w['pid']}: {w['status']}"
            for core in w["cores"]:
                if core.get("busy_for"):
                    line += f"; {core['method']} {core['path']} running {core['busy_for']:.2f}s"
            lines.append(line)
        log("\n".join(lines))

    def on_restore_snapshot(self, why: str) -> None:
        snap = self.snapshot
        if snap is None:
            log(f"{why}: no snapshot to restore (set snapshot = true to keep one)")
            return
        if self.state.state == MasterState.STOPPING:
            return
        self.snapshot = None
        cur = self.current
        snap.paused = False
        self.signal_generation(snap, signal.SIGCONT)
        self.current = snap
        if cur is not None:
            self.draining.append(cur)
            cur.draining_since = time.monotonic()
            self.signal_generation(cur, signal.SIGTERM)
        log(f"{why}: restored generation {snap.number}; generation {cur.number if cur else '?'} leaves")

    def on_toggle_pause(self, why: str) -> None:
        if self.state.state == MasterState.STOPPING:
            return
        self.paused = not self.paused
        sig = signal.SIGTSTP if self.paused else signal.SIGCONT
        if self.current:
            self.signal_generation(self.current, sig)
        if self.state.state in (MasterState.RUNNING, MasterState.PAUSED):
            self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, why)
        else:
            log(f"{why}: {'paused' if self.paused else 'resumed'} while {self.state.state.value}")
            self._show_state()

    def on_wake_workers(self, why: str) -> None:
        for gen in self.generations():
            self.signal_generation(gen, signal.SIGWINCH)

    # ---------- reload machinery ----------
    def _start_preflight(self) -> None:
        self.preflight_again = False
        held = ";".join(f"{l.kind}={l.address}" for l in self.listeners)
        if self.config.stats:
            held += f";stats={self.config.stats}"
        r, w = os.pipe2(os.O_CLOEXEC)
        if self._ask_emperor_for_preflight(held, w):
            self.preflight_remote = True   # its environment: the one the emperor gave us, + HELD
        else:
            env = self._clean_env()
            env[ENV_HELD] = held
            argv = [sys.executable, "-m", "emperor", "master", "--preflight", self.config_path]
            actions = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
            try:
                with _cwd(self.cwd):  # `-m emperor` resolves from where we started, as our re-exec does
                    self.preflight_pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions)
            except OSError as e:
                os.close(r)
                os.close(w)
                self._reload_failed(f"cannot run the preflight: {e}")
                return
        os.close(w)
        os.set_blocking(r, False)
        self.preflight_fd = r
        self.preflight_out = b""
        self.ep.register(r, select.EPOLLIN)

    def _ask_emperor_for_preflight(self, held: str, out_fd: int) -> bool:
        """A fork of the emperor: ~100 ms sooner than a fresh interpreter. The output pipe goes along."""
        if self.channel is None or self._orig_env.get(ENV_PREFLIGHTS) != "emperor":
            return False
        try:
            self.channel.setblocking(True)
            socket.send_fds(self.channel, [f"preflight {held}\n".encode()], [out_fd])
            return True
        except OSError:
            return False
        finally:
            if self.channel is not None:
                self.channel.setblocking(False)

    def _read_preflight(self) -> None:
        try:
            data = os.read(self.preflight_fd, 65536)
        except BlockingIOError:
            return
        if data:
            self.preflight_out += data[:65536 - len(self.preflight_out)]
        else:
            self.ep.unregister(self.preflight_fd)
            os.close(self.preflight_fd)
            self.preflight_fd = None

    def _preflight_done(self, code: int) -> None:
        self.preflight_pid, self.preflight_remote = None, False
        if self.preflight_fd is not None:
            while True:
                try:
                    data = os.read(self.preflight_fd, 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.preflight_out += data
            self.ep.unregister(self.preflight_fd)
            os.close(self.preflight_fd)
            self.preflight_fd = None
        if self.state.state == MasterState.STOPPING:
            return
        if code != 0:
            out = self.preflight_out.decode(errors="replace").rstrip()
            self._reload_failed(out or f"preflight exited {code}")
            return
        if self.preflight_again:
            self._start_preflight()
            return
        self._execve()

    def _reload_failed(self, output: str) -> None:
        if output:
            logmod.write_raw(output + "\n")
        last = output.splitlines()[-1] if output else "unknown error"
        self.last_reload_error = last
        log(f"reload failed, generation {self.reloads} keeps serving: {last}")
        self._tell_emperor(f"reload failed {last}")
        self.state.to(MasterState.PAUSED if self.paused else MasterState.RUNNING, "reload failed")

    def _clean_env(self) -> dict[str, str]:
        env = {k: v for k, v in self._orig_env.items() if k not in INTERNAL_ENV}
        return env

    def _execve(self) -> None:
        """Become the next generation's master: same PID, same sockets, new code."""
        env = self._clean_env()
        keep = [l.sock for l in self.listeners]
        if self.stats_sock is not None:
            keep.append(self.stats_sock)
        listeners = list(self.listeners)
        if self.stats_sock is not None:
            listeners.append(self.stats_listener)
        env[sockets.ENV] = sockets.export(listeners)
        env["UWSGI_RELOADS"] = str(self.reloads + 1)
        env[ENV_NOTIFY] = f"{self.notify_r},{self.notify_w}"
        gens = ([self.current] if self.current else []) + self.draining
        env[ENV_OLD] = ";".join(g.export() for g in gens)
        if self.snapshot:
            env[ENV_SNAPSHOT] = self.snapshot.export()
        env[ENV_STATE] = f"{self.started_at},{int(self.paused)},{self.cwd}"
        fds = [s.fileno() for s in keep] + [self.notify_r, self.notify_w]
        fds += [g.board.fd for g in gens + ([self.snapshot] if self.snapshot else [])]
        if self.channel is not None:
            fds.append(self.channel.fileno())
            env[ENV_CHANNEL] = str(self.channel.fileno())
        for fd in fds:
            os.set_inheritable(fd, True)
        argv = [sys.executable, "-m", "emperor", "master", self.config_path]
        logmod.flush_std()
        # Signals stay blocked across execve until the new image has its handlers:
        # a SIGHUP in that window would otherwise kill the master (default action).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            os.chdir(self.cwd)
        except OSError:
            pass
        try:
            os.execve(sys.executable, argv, env)
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            self._reload_failed(f"execve {sys.executable}: {e.strerror}")

    def _wait_children(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self._children_left() and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.preflight_pid:
                self.preflight_pid = None
            for gen in self.generations():
                if pid in gen.slots:
                    gen.slots[gen.slots.index(pid)] = None

    def _exit(self) -> int:
        for path in (self.config.pidfile, self.config.safe_pidfile):
            if path:
                pidfile.remove(path, os.getpid())
        if self.config.vacuum:
            for l in self.listeners + ([self.stats_listener] if self.stats_sock else []):
                if l.is_unix:
                    try:
                        os.unlink(l.address)
                    except OSError:
                        pass
        log("stopped")
        return 0


def set_command_line(title: str) -> None:
    """What `ps` shows as the command: rewritten in place, within the original argv area.

    A master forked by the emperor, and every worker, would otherwise show the
    command line of the process it was forked from. The kernel gives the area's
    bounds in /proc/self/stat (arg_start, arg_end); writing inside it is what
    setproctitle does, without its search for argv. The last byte stays NUL, so
    the kernel reads no further. Too long a title is cut.
    """
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return
    size = end - start
    if size <= 1 or start <= 0:
        return
    data = title.replace("\0", " ").encode("utf-8", "replace").replace(b" ", b"\0")[:size - 1]
    ctypes.memmove(start, data + b"\0" * (size - len(data)), size)


def set_process_name(name: str) -> None:
    """The kernel's name for this process (15 bytes, /proc/PID/comm)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


def run_master(path: str) -> int:
    return Master(path).main()
