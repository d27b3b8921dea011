"""A worker process: its signal table (the master's orders), its state, its cores.

Signal handlers only record the signal and wake every core; whichever core is
free first turns the recorded signals into orders, one core at a time so they
apply in order, and the others re-read them (emperor/worker/core.py).

Worker signal table (sent by the master; see master/process.py for the master's own):
"""
from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

    from emperor.worker.proxyproto import Allowed

from emperor import log as logmod
from emperor.api import state as api_state
from emperor.config import Config
from emperor.proc import die_with_parent, memory
from emperor.sockets import HTTPS, UWSGI, Listener
from emperor.states import WORKER_EDGES, Machine, WorkerState
from emperor.wire import notify
from emperor.wire.scoreboard import Scoreboard
from emperor.wire.uarea import DELIVER
from emperor.worker.app import AppError
from emperor.worker import features
from emperor.worker.core import Core
from emperor.worker.reqlog import RequestLog
from emperor.worker.wsgi import base_environ

RETIRE, LAST, NOW = "retire", "last out", "stop now"
PAUSE, RESUME, WAKE = "pause", "resume", "wake"
PARK, UNPARK = "park", "unpark"
REOPEN = "reopen the log"
USIGNAL = "uwsgi signal"

SIGNALS: dict[int, str] = {
    signal.SIGTERM: RETIRE,     # stop accepting (another generation takes the queue), finish the
                                # request in hand, close idle connections, exit
    signal.SIGHUP: LAST,        # the same, but first answer what the kernel already queued:
                                # the master is stopping, nobody else will
    signal.SIGINT: NOW,         # exit at once
    signal.SIGQUIT: NOW,
    signal.SIGTSTP: PAUSE,      # stop accepting; connections wait in the backlog
    signal.SIGCONT: RESUME,
    signal.SIGWINCH: WAKE,      # only wakes the loop so it re-reads its orders
    signal.SIGUSR1: PARK,       # as RETIRE (finish, close idle connections), then wait, alive:
                                # this generation is the snapshot (master/generations.py)
    signal.SIGUSR2: UNPARK,     # the snapshot is restored: accept again
    signal.SIGRTMIN: REOPEN,    # the log file was rotated: open its path again (master/logfiles.py)
    DELIVER: USIGNAL,           # a uwsgi signal for this worker: run its handler (emperor/wire/uarea.py)
}


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:   # a real-time signal past SIGRTMIN
        return f"SIGRTMIN+{sig - signal.SIGRTMIN}"


__doc__ += "\n".join(f"    {_signame(s):10} {a}" for s, a in SIGNALS.items())
# harakiri-verbose: every thread's stack to the log, written by faulthandler in the handler itself
# (so even a thread stuck in C code is shown); the master sends it before a harakiri kill
TRACEBACK = signal.SIGRTMIN + 1


def _not_loaded(environ: dict, start_response: Callable) -> list[bytes]:
    raise RuntimeError("the application is not loaded yet")


class Worker:
    """One forked worker process. `run()` never returns: it ends the process."""

    def __init__(self, *, config: Config, slot: int, listeners: list[Listener], app: Callable | None,
                 board: Scoreboard, notify_fd: int, load_app: Callable[[], Callable]) -> None:
        self.config = config
        self.slot = slot
        self.listeners = listeners
        self.app: Callable = app or _not_loaded   # lazy-apps: loaded in run(), in the worker
        self.board = board
        self.notify_fd = notify_fd
        self.load_app = load_app
        self.master_pid = 0  # set by the master before run(): its own PID
        self.life = Machine(WorkerState.RUNNING, WORKER_EDGES, logmod.log)
        self.paused = False   # beside the state: a paused worker may also be told to retire
        self.requests = 0
        self.reqlog = RequestLog(config)
        self.started = time.monotonic()
        self.max_requests = config.max_requests + slot * config.max_requests_delta if config.max_requests else 0
        # any per-request check at all: a worker without them pays one attribute test per request
        self.shed = config.cheaper > 0   # keep-alive gives way to the listen queue when crowded (Core.crowded)
        self.recycling = bool(self.max_requests or config.reload_on_exception or config.reload_on_rss
                              or config.reload_on_as)
        self.requests_in_flight = 0
        self.api = False   # the app imported `uwsgi`: each request tells it its environ (core.py)
        self.pending: collections.deque[int] = collections.deque()
        self.orders_lock = threading.Lock()
        self.wakes = 0  # WAKE orders so far: each makes every core re-add its listeners (module docstring)
        self.cores: list[Core] = []
        self.bases = {l.fd: self._base(l) for l in listeners}
        self.proxy_allowed: Allowed | None = None
        if config.enable_proxy_protocol:   # emperor/worker/proxyproto.py
            from emperor.worker.proxyproto import Allowed

            self.proxy_allowed = Allowed([n for line in config.proxy_protocol_allow for n in line])

    def _base(self, l: Listener) -> dict:
        """The listener's own environ, and its connections' timeout and PROXY header setting."""
        http = l.kind != UWSGI
        l.timeout = float(self.config.http_timeout or self.config.socket_timeout) if http \
            else float(self.config.socket_timeout)
        l.proxy = http and l.tls is None and self.config.enable_proxy_protocol
        if l.is_unix:
            name, port = "localhost", "0"
        else:
            name, port = l.sock.getsockname()[:2]
            name, port = str(name), str(port)
        base = base_environ(name, port, self.config.threads > 1, "https" if l.kind == HTTPS else "http")
        if l.kind == HTTPS:
            base["HTTPS"] = "on"
        if self.config.wsgi_disable_file_wrapper:   # the app's own files then go out as any iterable
            del base["wsgi.file_wrapper"]
        return base

    @property
    def stopping(self) -> bool:
        """Not accepting, finishing what it holds: retiring, last out, or parked."""
        return self.life.state is not WorkerState.RUNNING

    @property
    def leaving(self) -> bool:
        """Stopping to exit (a parked worker stays)."""
        return self.life.state in (WorkerState.RETIRING, WorkerState.LAST_OUT)

    @property
    def last_out(self) -> bool:
        """Stopping with the master: answer the connections the kernel queued too."""
        return self.life.state is WorkerState.LAST_OUT

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.pending.append(signum)
        # Every core, not only the main one (the wakeup fd's), so that an order reaches
        # idle threads while the main one is inside a long request.
        self.broadcast()

    def run(self) -> None:
        """Entered right after fork, with signals still blocked by the master."""
        code = 0
        try:
            main_r, main_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            for sig in SIGNALS:
                signal.signal(sig, self._on_signal)
            signal.signal(signal.SIGURG, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if self.config.harakiri_verbose:
                import faulthandler

                faulthandler.register(TRACEBACK, all_threads=True)
            signal.set_wakeup_fd(main_w, warn_on_full_buffer=False)
            die_with_parent()  # no orphan keeps a port
            if os.getppid() != self.master_pid:
                os._exit(0)  # the master died between fork and prctl: nobody to serve for
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            logmod.set_prefix(f"[{self.config.name} worker {self.slot + 1}]")
            os.environ[notify.ENV] = str(self.notify_fd)
            api_state.enter_worker(self.slot, self.master_pid, self.board, self)
            if self.config.limit_as:   # limit-as: this worker's address space (uWSGI sets it per process)
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (self.config.limit_as, self.config.limit_as))
            if self.app is _not_loaded:
                self.app = self.load_app()
                if self.config.py_autoreload:   # lazy-apps: the master has none of the app's modules
                    from emperor.modwatch import in_worker

                    in_worker(self.config, self.slot, lambda: not self.stopping)
            self.api = "emperor.api.uwsgi" in sys.modules
            if self.api:
                self._post_fork()
            self.app = features.wrap(self.config, self.app)
            main = Core(self, 0, main_r)
            main.wake_w = main_w
            self.cores.append(main)
            threads = []
            for i in range(1, self.config.threads):
                r, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                core = Core(self, i, r)
                core.wake_w = wfd
                self.cores.append(core)
                t = threading.Thread(target=core.loop, name=f"core-{i}", daemon=True)
                threads.append(t)
            self.board.set_ready(self.slot)
            notify.send(self.notify_fd, notify.READY, self.slot)
            if self.config.hook_accepting or self.config.hook_accepting1 or self.config.hook_accepting_once \
                    or self.config.hook_accepting1_once:
                from emperor import hooks

                hooks.accepting(self.config, self.slot + 1, self.board.worker(self.slot)["respawn_count"] == 0,
                                logmod.log)
            for t in threads:
                t.start()
            self.cores[0].loop()
            for t in threads:
                t.join(timeout=self.config.worker_reload_mercy)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:
            if isinstance(e, AppError):
                if e.detail:
                    logmod.write_raw(e.detail + "\n")
                why = str(e)
            else:
                why = f"{type(e).__name__}: {e}"
            logmod.log(f"worker failed: {why}")
            self.board.set_error(self.slot, why)   # the master says why the vassal cannot serve
            code = 1
        finally:
            if self.api:
                self._at_exit()
            logmod.flush_std()
            os._exit(code)

    def _post_fork(self) -> None:
        """The app imported `uwsgi`: its signals from now on, then uwsgi.post_fork_hook (what
        @postfork hangs on), after the app loaded (with lazy-apps, it loaded here)."""
        from emperor.api import usignal

        usignal.start_worker()
        hook = getattr(sys.modules["emperor.api.uwsgi"], "post_fork_hook", None)
        if callable(hook):
            try:
                hook()
            except Exception as e:   # uWSGI prints it and the worker serves (python_plugin.c)
                usignal.log_app_error("uwsgi.post_fork_hook raised", e)

    def _at_exit(self) -> None:
        """uwsgi.atexit, if the app set one: run as the worker ends (not on a kill)."""
        hook = getattr(sys.modules["emperor.api.uwsgi"], "atexit", None)
        if callable(hook):
            try:
                hook()
            except Exception as e:
                logmod.log(f"uwsgi.atexit raised {type(e).__name__}: {e}")

    def on_wake(self, core: Core) -> None:
        """Read the wake pipe, turn recorded signals into orders and apply them. Any core may
        do it, whichever is free first: the main thread may be inside a long request."""
        try:
            while os.read(core.wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        orders = deliver = False
        with self.orders_lock:  # one core at a time, so signals apply in their order
            while self.pending:
                sig = self.pending.popleft()
                orders = True
                action = SIGNALS.get(sig)
                name = _signame(sig)
                if action == RETIRE and not self.leaving:
                    self.life.to(WorkerState.RETIRING, name)
                elif action == PARK and not self.stopping:
                    self.life.to(WorkerState.PARKED, name)
                elif action == UNPARK and self.life.state is WorkerState.PARKED:
                    self.life.to(WorkerState.RUNNING, name)
                elif action == LAST:
                    self.life.to(WorkerState.LAST_OUT, name)
                elif action == WAKE:
                    self.wakes += 1
                elif action == USIGNAL:
                    deliver = True
                elif action == REOPEN and self.config.log_path():
                    try:
                        logmod.redirect(self.config.log_path() or "")
                    except OSError as e:
                        logmod.log(f"cannot reopen the log file: {e.strerror}")
                elif action == NOW:
                    logmod.flush_std()
                    os._exit(0)
                elif action in (PAUSE, RESUME) and self.paused != (action == PAUSE):
                    self.paused = action == PAUSE
                    logmod.log(f"{'paused' if self.paused else 'resumed'} ({name})")
        if orders or core.index == 0:
            self.board.set_flags(self.slot, self.paused, not (self.paused or self.stopping))
        core.apply_orders()
        if orders:
            self.broadcast()
        if deliver and self.api:
            from emperor.api.usignal import run_pending

            run_pending()   # here, in this core's loop: between two of its requests

    def count_request(self, raised: bool = False) -> None:
        self.requests += 1
        if self.requests == 1:
            notify.send(self.notify_fd, notify.LOYAL, self.slot)
        if self.recycling and not self.stopping:
            why = self._recycle(raised)
            if why:
                if why.startswith("max-requests"):
                    notify.send(self.notify_fd, notify.RETIRING, self.slot)
                self.life.to(WorkerState.RETIRING, why)
                self.broadcast()

    def _recycle(self, raised: bool) -> str:
        """Why this worker should finish its request and be replaced, after this request, or ''.
        As uWSGI's core/utils.c uwsgi_close_request: max-requests (+ delta per worker),
        reload-on-exception, reload-on-rss/-as, none before min-worker-lifetime."""
        c = self.config
        if time.monotonic() - self.started < c.min_worker_lifetime:
            return ""
        if self.max_requests and self.requests >= self.max_requests:
            return f"max-requests ({self.max_requests}) reached"
        if raised and c.reload_on_exception:
            return "reload-on-exception: the application raised"
        if c.reload_on_rss or c.reload_on_as:
            rss, vsz = memory(os.getpid())
            if c.reload_on_rss and rss >= c.reload_on_rss:
                return f"reload-on-rss: RSS {rss >> 20} MiB >= {c.reload_on_rss >> 20} MiB"
            if c.reload_on_as and vsz >= c.reload_on_as:
                return f"reload-on-as: address space {vsz >> 20} MiB >= {c.reload_on_as >> 20} MiB"
        return ""

    def broadcast(self) -> None:
        """Make every core re-read its orders (safe in a signal handler)."""
        for c in self.cores:
            try:
                os.write(c.wake_w, b"x")
            except OSError:
                pass  # a full pipe: that core has a wake-up pending already
