"""Starting a master: a fork of the emperor, which has the master's code imported.

A fresh `python -m emperor master` costs ~130 ms of CPU and ~6 MiB of private
memory before it serves (interpreter, `site`, imports). A fork of a process
that has already imported all of it costs a few milliseconds and shares those
pages copy-on-write (`gc.freeze` keeps the children's collector from writing
to them). That is what lets a hundred vassals start as fast as uWSGI's C
masters. A master still re-executes itself (`python -m emperor master FILE`)
on a graceful reload, so emperor code upgraded on disk is picked up then.

The child never returns into the emperor's code: it becomes the master and
ends with `os._exit`, so none of the emperor's objects it inherited is ever
finalised there (their descriptors are closed by number first).
"""
from __future__ import annotations

import gc
import importlib
import os
import pwd
import resource
import signal
import sys
import traceback
from collections.abc import Callable

from emperor import log as logmod
from emperor.proc import fork_with_signals_blocked
from emperor.wire import handoff


# What a master and its workers import; `touch` only when a vassal asks for touch-reload.
PRELOAD = ("emperor.master.process", "emperor.master.preflight", "emperor.master.touch")


def preload(preimport: tuple[str, ...] = ()) -> None:
    """Import what masters run, then freeze the heap so that children share it.

    `preimport` (`emperor run --preimport`): the applications' own heavy modules (django...),
    so that an on-demand vassal's cold start does not import them again (a Django app's
    import drops from ~340 ms to ~45 ms measured, docs/on-demand.md). Every vassal then sees
    the emperor's copy of those modules, whatever its own virtualenv holds.
    """
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # the master imports it itself, or says what is missing
    for name in preimport:
        try:
            importlib.import_module(name)
        except BaseException as e:  # an application's module: anything may come out of it
            if isinstance(e, KeyboardInterrupt):
                raise
            logmod.log(f"--preimport {name}: {type(e).__name__}: {str(e)[:200]}; not preimported")
    gc.collect()
    gc.freeze()


def fork_master(path: str, env: dict[str, str], channel_fd: int,
                uid: int | None, gid: int | None) -> int:
    """Fork a master for vassal file `path`, keeping `channel_fd`; returns its PID."""
    def run() -> int:
        from emperor.master.process import run_master
        from emperor.proc import set_command_line

        # ps shows what a reload's `python -m emperor master FILE` would, not the emperor's command
        set_command_line(f"emperor master {path}")
        sys.argv = [sys.argv[0], "master", path]
        # as for the `python -m emperor master FILE` of every reload: the working directory first
        sys.path[0] = os.getcwd()
        return run_master(path, environ=env)
    # an on-demand vassal's sockets, held by the emperor, go to the master as a reload's do
    held = {int(item.split("=", 1)[0]) for item in filter(None, env.get(handoff.SOCKETS, "").split(";"))}
    return _fork(run, env, {channel_fd} | held, uid, gid)


def fork_preflight(path: str, env: dict[str, str], out_fd: int,
                   uid: int | None, gid: int | None) -> int:
    """Fork a reload preflight for `path`, its output to `out_fd`; returns its PID.

    A master asks its emperor for one (over its channel) because a fork of this
    clean, pre-imported process costs a few ms where a fresh interpreter costs ~100.
    """
    def run() -> int:
        from emperor.master.preflight import preflight

        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(out_fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        return preflight(path)
    return _fork(run, env, {out_fd}, uid, gid)


def _fork(run: Callable[[], int], env: dict[str, str], keep: set[int],
          uid: int | None, gid: int | None) -> int:
    """Fork; the child becomes a session leader as `uid`, runs `run()` and exits with it.

    Signals are blocked across the fork so that none of the emperor's handlers
    runs in the child before the code it runs has installed its own.
    """
    groups = None
    if uid is not None:
        try:
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid if gid is not None else uid)
        except KeyError:
            groups = []
    logmod.flush_std()
    pid = fork_with_signals_blocked()
    if pid == 0:
        code = 1
        try:
            _leave_the_emperor(keep, env, uid, gid, groups)
            code = run()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            logmod.flush_std()
            os._exit(code)
    return pid


def _leave_the_emperor(keep: set[int], env: dict[str, str], uid: int | None, gid: int | None,
                       groups: list[int] | None) -> None:
    # Its own session: a terminal's ^C reaches the emperor only, and the group can be killed whole.
    os.setsid()
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    # Every other descriptor goes, by ranges (close_range(2): no listing that could itself
    # fail when the emperor is out of descriptors, and fast whatever the limit).
    low = 0
    for fd in sorted(keep | {0, 1, 2}):
        if fd > low:   # never an empty range: closerange(0, 0) would close everything
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    if uid is not None:
        os.setgroups(groups or [])
        os.setgid(gid if gid is not None else uid)
        os.setuid(uid)
    os.environ.clear()
    os.environ.update(env)
