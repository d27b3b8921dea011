"""uWSGI's hooks: actions a vassal file attaches to the phases of a master's start-up.

`hook-<phase> = action:argument` (and the hard-coded `exec-<phase> = command`), with
the phases `as-root` (the last moment as root), `as-user` (just after the privilege
drop), `pre-app`, `post-app` (around the application's import), `master-start`
(its workers are started) and `as-user-atexit` (the master stops), run by the master;
and `accepting` (each worker, once it accepts), `accepting1` (worker 1 only), with
their `-once` forms (a worker's first start, not its respawns), run by the worker
(core/uwsgi.c, uwsgi_worker_run: after the worker is marked accepting). As in uWSGI
(Hooks doc, core/hooks.c), every phase but the last is fatal: a failing action
stops the start-up with one line. They run at every start of a master image, so
again after each graceful reload (as-root only while the master still is root).

The actions emperor runs: exec (under /bin/sh), mkdir, chmod (`path mode`), chown
(`path user group`), unlink, write (`path text`), print/log, and unix_signal (`signum
function`: the master's signal table points that signal at what uWSGI's function of that
name does, e.g. `unix_signal:15 gracefully_kill_them_all`, the usual way to make SIGTERM
a graceful stop in a container). Any other action is named at load as not supported
(emperor/config/load.py warns for it, and for a unix_signal it cannot map).
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from emperor import proc
from emperor.config import HOOK_ACTIONS, Config
from emperor.config.options import unix_signal
from emperor.signals import SignalQueue

EXEC_TIMEOUT = 60.0   # a hook's command may not hold the master's start-up longer


class HookError(Exception):
    """A fatal hook failed; str() is one line."""


def drop_privileges(config: Config, log: Callable[[str], None]) -> None:
    """`uid`/`gid`, between the as-root and as-user phases (after a reload the master may
    no longer be root: as-root then runs nowhere). max-fd is set here too, before the drop that
    would forbid raising it (core/uwsgi.c: a refusal is logged, not fatal)."""
    if config.max_fd:
        import resource

        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (config.max_fd, config.max_fd))
        except (OSError, ValueError) as e:
            log(f"max-fd {config.max_fd}: cannot set the descriptor limit: {e}")
    if os.geteuid() == 0:
        run(config, "as-root", log)
    proc.drop_privileges(config.uid, config.gid)
    run(config, "as-user", log)


def hooks(config: Config, phase: str) -> list[tuple[str, str]]:
    """(action, argument) of a phase, in file order: `hook-PHASE = action:arg` and `exec-PHASE = cmd`."""
    items: list[str] = getattr(config, "hook_" + phase.replace("-", "_"))
    return [(a, arg) for a, _, arg in (item.partition(":") for item in items) if a in HOOK_ACTIONS]


def accepting(config: Config, worker_id: int, first: bool, log: Callable[[str], None]) -> None:
    """A worker's phases, in uWSGI's order; `first`: not a respawn. Fatal: the worker exits."""
    run(config, "accepting", log)
    if first:
        run(config, "accepting-once", log)
    if worker_id == 1:
        run(config, "accepting1", log)
        if first:
            run(config, "accepting1-once", log)


def run(config: Config, phase: str, log: Callable[[str], None]) -> None:
    for action, arg in hooks(config, phase):
        try:
            _do(action, arg, log)
        except (OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            why = f"hook-{phase} {action}:{arg}: {getattr(e, 'strerror', None) or e}"
            if phase == "as-user-atexit":
                log(why)
                continue
            raise HookError(why) from None


def _do(action: str, arg: str, log: Callable[[str], None]) -> None:
    if action == "exec":
        code = subprocess.run(["/bin/sh", "-c", arg], timeout=EXEC_TIMEOUT, stdin=subprocess.DEVNULL).returncode
        if code != 0:
            raise ValueError(f"exited {code}")
    elif action == "mkdir":
        os.mkdir(arg, 0o777)
    elif action == "chmod":
        path, mode = arg.rsplit(" ", 1)
        os.chmod(path, int(mode, 8))
    elif action == "chown":
        import grp
        import pwd

        path, user, group = arg.rsplit(" ", 2)
        os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    elif action == "unlink":
        os.unlink(arg)
    elif action == "write":
        path, _, text = arg.partition(" ")
        with open(path, "w") as f:
            f.write(text)
    elif action == "unix_signal":
        remap = unix_signal(arg)   # checked at load: an unknown function was a warning there
        if remap is not None and SignalQueue.installed is not None:
            SignalQueue.installed.remap(*remap)
            log(f"signal {remap[0]} ({arg.split()[-1]}): {remap[1].replace('_', ' ')}")
    else:   # print, log
        log(arg)
