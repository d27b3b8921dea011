"""Pidfiles, written atomically, and checked before any signal is sent through one.

PIDs get reused: a stale pidfile must never make us signal some other
process. A PID counts only if it is alive and its command line shows it is
an emperor master (`python -m emperor master ...` or the `emperor` script, or
a master forked by `emperor run`, whose process name says so) or, where the
caller allows it, an emperor (`emperor run --pidfile FILE`, whose command line
says `emperor run DIR`). A refusal says what the process is instead.
"""
from __future__ import annotations

import os

from emperor.config import Config
from emperor.files import read_head
from emperor.log import printable
from emperor.proc import cmdline, process_name
from emperor.states import MasterState

MASTER_NAMES = {f"emperor {s.value}" for s in MasterState}
MASTER, EMPEROR, WORKER = "master", "emperor", "worker"


class PidfileError(Exception):
    """One line saying what is wrong with the pidfile."""


def write(path: str, pid: int) -> None:
    # tempfile would do, but it drags shutil, random, bz2 and lzma into every master image
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".pid-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, f"{pid}\n".encode())
        os.fchmod(fd, 0o644)  # whatever the umask
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_all(config: Config, pid: int) -> None:
    """`pidfile` and `safe-pidfile`, once the master serves."""
    for path in (config.pidfile, config.safe_pidfile):
        if path:
            write(path, pid)


def remove_all(config: Config, pid: int) -> None:
    for path in (config.pidfile, config.safe_pidfile):
        if path:
            remove(path, pid)


def remove(path: str, pid: int) -> None:
    """Remove the pidfile only if it is still ours."""
    try:
        if read_head(path, 64).strip() == str(pid).encode():   # never waits on a FIFO
            os.unlink(path)
    except OSError:
        pass


def _runs_emperor(args: list[str], command: str) -> bool:
    """`... emperor COMMAND ...`: the `emperor` script or `python -m emperor`."""
    if command not in args:
        return False
    before = args[:args.index(command)]
    return any(a == "emperor" or a.endswith("/emperor") for a in before)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def is_master(pid: int) -> bool:
    return kind(pid) == MASTER


def kind(pid: int) -> str:
    """MASTER, EMPEROR, WORKER (one of ours, never signalled through a pidfile) or '' for anything else."""
    name = process_name(pid)
    if name == "emperor worker":
        return WORKER   # a worker shows its master's command line if it could not rewrite its own
    if name == "emperor keeper":
        return ""       # a keeper (emperor/master/keeper.py) may have `master` in the command it runs
    if name in MASTER_NAMES:
        return MASTER   # whatever its command line says (procname-master may have renamed it)
    args = cmdline(pid)
    if _runs_emperor(args, "master"):
        return MASTER
    if not _runs_emperor(args, "run"):
        return ""
    # A master the emperor forked keeps the emperor's command line if it could not rewrite
    # it; its process name (`emperor running`, ...) tells it from the emperor and workers.
    if name in MASTER_NAMES:
        return MASTER
    # a preflight the emperor forked shows the emperor's command line too; its parent is the emperor
    return "" if _runs_emperor(cmdline(_parent(pid)), "run") else EMPEROR


def describe(pid: int) -> str:
    """What process `pid` is, for a message: `an emperor (emperor run /srv/vassals.d)`, `sleep 30`."""
    what = {EMPEROR: "an emperor", MASTER: "an emperor master", WORKER: "an emperor worker"}.get(kind(pid))
    shown = " ".join(cmdline(pid))
    if len(shown) > 200:
        shown = shown[:199] + "…"
    shown = printable(shown) or f"[{printable(process_name(pid)) or '?'}]"  # a kernel thread has no command line
    return f"{what} ({shown})" if what else shown


def read_pid(path: str, kinds: tuple[str, ...] = (MASTER,)) -> tuple[int, str]:
    """(PID, its kind) if `path` names a live process of one of `kinds`; PidfileError otherwise."""
    try:
        with open(path) as f:
            text = f.read(64)
    except FileNotFoundError:
        raise PidfileError(f"{path}: no such pidfile") from None
    except OSError as e:
        raise PidfileError(f"{path}: {e.strerror}") from None
    text = text.strip()
    if not text:
        raise PidfileError(f"{path}: pidfile is empty")
    if not text.isdigit() or int(text) < 1:
        raise PidfileError(f"{path}: pidfile does not hold a PID: {printable(text[:20])!r}")
    pid = int(text)
    if not os.path.exists(f"/proc/{pid}"):
        raise PidfileError(f"{path}: stale pidfile: no process {pid}")
    found = kind(pid)
    if found not in kinds:
        wanted = " or ".join({MASTER: "an emperor master", EMPEROR: "an emperor"}[k] for k in kinds)
        raise PidfileError(f"{path}: PID {pid} is not {wanted}: it is {describe(pid)}")
    return pid, found


def read_master_pid(path: str) -> int:
    """The PID in `path` if it names a live emperor master; PidfileError otherwise."""
    return read_pid(path)[0]
