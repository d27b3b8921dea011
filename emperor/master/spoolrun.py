"""One spooler process: runs the tasks of its directory with the application's spooler function.

Forked by the master once the application is loaded (core/spooler.c `spooler_start`), so
`uwsgi.spooler` (set by the application, or by uwsgidecorators) is the function it calls;
it runs the application's post-fork hook (@postfork), then imports the `spooler-import`
modules, as uWSGI's spooler_start and spooler_init do. It scans its directory (core/spooler.c
`spooler_readdir`, or `spooler_scandir` in version order with `spooler-ordered`, which also
enters the numeric PRIORITY/ subdirectories), then waits on its directory's wake pipe (a
byte from every spool(), SIGUSR2 to the master, or SIGUSR1 to itself) with
`spooler-frequency` as the longest wait, shortened to the next `at` task's time. Nothing
polls faster than that.

A task is run at most once at a time: the file is locked (POSIX, F_SETLK as uWSGI's
uwsgi_fcntl_is_locked) while it runs, by whichever spooler process (or uWSGI) took it.
SPOOL_OK (-2) removes it; SPOOL_RETRY (-1), an exception or a result that is not an int
leaves it for the next scan; SPOOL_IGNORE (0) leaves it too, with uWSGI's "unable to find
the spooler function" line (core/spooler.c removes a task only on -2).
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import sys
import time

from emperor import log as logmod
from emperor.api import spool as api
from emperor.config import Config


def _version_key(name: str) -> list:
    """strverscmp order (uwsgi_versionsort): runs of digits compare as numbers."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


class SpoolerProcess:
    """The loop of one spooler process (entered after fork, never returns)."""

    def __init__(self, config: Config, directory: str, wake_r: int) -> None:
        self.config = config
        self.dir = directory
        self.wake_r = wake_r
        self.tasks = 0
        self.stopping = False
        self.next_at: float | None = None
        self.sig_r = -1

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGUSR1:      # SIGUSR1 only wakes the loop (the wakeup fd)
            self.stopping = True

    def run(self) -> None:
        self.sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTSTP, signal.SIGWINCH, signal.SIGURG, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)   # spooler-harakiri: the alarm kills us
        signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        logmod.set_prefix(f"[{self.config.name} spooler]")
        api.in_spooler = True
        self._post_fork()
        for name in self.config.spooler_import:
            self._import(name)
        while not self.stopping:
            self.next_at = None
            self.scan(self.dir, top=True)
            if self.stopping:
                break
            wait = float(self.config.spooler_frequency)
            if self.next_at is not None:
                wait = min(wait, max(self.next_at - time.time(), 0.0) + 0.01)
            try:
                ready, _, _ = select.select([self.wake_r, self.sig_r], [], [], wait)
            except InterruptedError:
                continue
            for fd in ready:
                try:
                    os.read(fd, 4096)
                except OSError:
                    pass
        sys.exit(0)

    def _post_fork(self) -> None:
        """uwsgi.post_fork_hook (@postfork), as uWSGI's spooler_start runs the plugins' post_fork
        in a new spooler (worker_id() is 0 there, as in the master)."""
        module = sys.modules.get("emperor.api.uwsgi")
        if module is None:
            return
        from emperor.api import state

        state.master_pid = os.getppid()
        hook = getattr(module, "post_fork_hook", None)
        if callable(hook):
            try:
                hook()
            except Exception:
                import traceback

                logmod.write_raw(logmod.line("uwsgi.post_fork_hook raised in the spooler") + traceback.format_exc())

    def _import(self, name: str) -> None:
        """spooler-import: a module name, or a file (as uWSGI's python plugin takes both)."""
        import importlib
        import runpy

        try:
            if name.endswith(".py") or "/" in name:
                runpy.run_path(name, run_name="uwsgi_spooler_import")
            else:
                importlib.import_module(name)
        except Exception:
            import traceback

            logmod.write_raw(traceback.format_exc())
            logmod.log(f"spooler-import {name}: failed")

    # ---------- the directory ----------
    def scan(self, directory: str, top: bool = False) -> None:
        try:
            names = os.listdir(directory)
        except OSError as e:
            logmod.log(f"[spooler {self.dir}] cannot read {directory}: {e.strerror}")
            return
        ordered = self.config.spooler_ordered
        if ordered:
            names.sort(key=_version_key)
        for name in names:
            if self.stopping:
                return
            if name.startswith(api.PREFIX) or (ordered and top and name.isdigit()):
                self.manage(directory, name)

    def manage(self, directory: str, name: str) -> None:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            return
        now = time.time()
        if st.st_mtime > now:      # an `at` task, for later
            self.next_at = st.st_mtime if self.next_at is None else min(self.next_at, st.st_mtime)
            return
        if os.path.isdir(path) and not os.path.islink(path):
            if self.config.spooler_ordered:
                self.scan(path)
            return
        if not os.path.isfile(path) or os.path.islink(path):
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return       # running in another spooler (or being written by uWSGI)
            if not os.path.exists(path):
                return       # done and removed by another spooler since we opened it
            self.run_task(fd, path)
        finally:
            os.close(fd)     # the lock goes with it
        if self.config.spooler_max_tasks and self.tasks >= self.config.spooler_max_tasks:
            logmod.log(f"[spooler {self.dir} pid: {os.getpid()}] maximum number of tasks reached "
                       f"({self.config.spooler_max_tasks}) recycling ...")
            sys.exit(0)

    def run_task(self, fd: int, path: str) -> None:
        size = os.fstat(fd).st_size
        got = api.read_task(fd, size)
        if got is None:
            if size >= 4:
                self._remove(path, "truncated task")
            return
        task = api.task_dict(os.path.basename(path), *got)   # uWSGI's: the name, from the cwd below
        if task is None:
            self._remove(path, "malformed task")
            return
        quiet = self.config.spooler_quiet
        if not quiet:
            logmod.log(f"[spooler {self.dir} pid: {os.getpid()}] managing request {path} ...")
        # core/spooler.c: the task runs in its directory (the spooler chdir()s there to scan), or
        # in spooler-chdir; the function gets the bare file name as spooler_task_name
        where = self.config.spooler_chdir or os.path.dirname(path)
        try:
            os.chdir(where)
        except OSError as e:
            what = "spooler-chdir" if self.config.spooler_chdir else "chdir"
            logmod.log(f"[spooler {self.dir}] {what} {where}: {e.strerror}")
        started = time.monotonic()
        ret = self.call(task)
        if ret == 0:
            logmod.log("unable to find the spooler function, have you loaded it into the spooler process ?")
            return
        self.tasks += 1
        if ret == api.SPOOL_OK:
            if not quiet:
                logmod.log(f"[spooler {self.dir} pid: {os.getpid()}] done with task {path} after "
                           f"{int(time.monotonic() - started)} seconds")
            self._remove(path, "")

    def call(self, task: dict) -> int:
        """The application's spooler function on `task`: its int result, else SPOOL_RETRY."""
        module = sys.modules.get("emperor.api.uwsgi")
        func = getattr(module, "spooler", None) if module is not None else None
        if func is None:
            return 0
        if self.config.spooler_harakiri:
            signal.alarm(self.config.spooler_harakiri)
        try:
            ret = func(task)
        except Exception:
            import traceback

            logmod.write_raw(traceback.format_exc())
            return api.SPOOL_RETRY
        finally:
            if self.config.spooler_harakiri:
                signal.alarm(0)
        return ret if isinstance(ret, int) and not isinstance(ret, bool) else api.SPOOL_RETRY

    def _remove(self, path: str, why: str) -> None:
        if why:
            logmod.log(f"[spooler {self.dir}] {why} {path}: removed")
        try:
            os.unlink(path)
        except OSError as e:
            logmod.log(f"[spooler {self.dir}] cannot remove {path}: {e.strerror}")
