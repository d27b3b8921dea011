"""Process utilities shared by the emperor, the master and the worker.

The kernel's per-process settings (prctl), what `ps` shows, identity changes,
exit statuses as words, and the few /proc files we read. One place each, so
every process does them the same way.
"""
from __future__ import annotations

import errno
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE")


def prctl(option: int, arg: int) -> bool:
    """prctl(2) through libc; False where it is refused or unavailable."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to signal us when our parent dies: no orphan keeps a port."""
    prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Orphans of our descendants become our children (and so ours to reap)."""
    return prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_process_name(name: str) -> None:
    """The kernel's name for this process (15 bytes, /proc/PID/comm)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


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


def fork_with_signals_blocked() -> int:
    """os.fork() with every signal blocked across it; OSError as os.fork.

    In the child (0 returned) they stay blocked until it has installed its own handlers, so
    none of the parent's handlers ever runs there; the parent's mask is restored at once.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pid


def identity(uid: str | None, gid: str | None) -> tuple[int, int, str | None]:
    """(uid, gid, user name or None) that the `uid`/`gid` options name (-1: unchanged).

    `uid` alone takes the user's primary group; a uid with no account gets the group of
    the same number. OSError (EINVAL) for a name with no account."""
    import grp
    import pwd

    user = None
    if uid:
        try:
            user = pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
        except KeyError:
            if not uid.isdigit():
                raise OSError(errno.EINVAL, f"uid {uid}: no such user") from None
    try:
        group = (int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid) if gid else \
            (user.pw_gid if user is not None else int(uid or -1))
    except KeyError:
        raise OSError(errno.EINVAL, f"gid {gid}: no such group") from None
    number = (user.pw_uid if user is not None else int(uid)) if uid else -1
    return number, group, (user.pw_name if user is not None else None)


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """The `uid`/`gid` options: names or numbers; only root changes identity.

    `uid` alone takes the user's groups too (its primary group and the ones it belongs
    to, as uWSGI's initgroups does), never keeping root's group; a uid with no account
    gets the group of the same number.
    """
    if os.getuid() != 0 or not (uid or gid):
        return
    number, group, name = identity(uid, gid)
    if name is not None:
        os.initgroups(name, group)
    else:
        os.setgroups([])
    os.setgid(group)
    if uid:
        os.setuid(number)


def describe_exit(code: int) -> str:
    """An exit code as os.waitstatus_to_exitcode gives it (negative: a signal), in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code}"


def signal_quietly(pid: int, sig: int) -> bool:
    """Send `sig`; False when the process is gone (or not ours to signal)."""
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def killpg_quietly(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def memory(pid: int | None) -> tuple[int, int]:
    """(rss, vsz) in bytes from /proc/PID/statm; (0, 0) when the process is gone."""
    if not pid:
        return 0, 0
    try:
        with open(f"/proc/{pid}/statm") as f:
            vsz, rss = f.read().split()[:2]
        return int(rss) * _PAGE, int(vsz) * _PAGE
    except (OSError, ValueError):
        return 0, 0


def run_state(pid: int) -> str:
    """The kernel's one-letter state of a process (R, S, T stopped, Z...); '' if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """The live children of `pid` (every thread's), from /proc; [] when it is gone."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
