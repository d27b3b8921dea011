"""Where the emperor's runtime files live: its control socket and its masters' private stats sockets.

Derived from the vassals directory (and the vassal file) alone, so `emperor
status`, run from the directory where `emperor run` was started, finds that
emperor with no option: both compute the same path. From anywhere else, the
command line looks for the emperors of this user: the control sockets in the
runtime dir that someone listens on (`listening_control_sockets`).
"""
from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import time


RUNTIME_DIR_ENV = "EMPEROR_RUNTIME_DIR"


def runtime_dir() -> str:
    """Under $EMPEROR_RUNTIME_DIR if set, for root too (an emperor, and the commands that
    look for it, kept apart from the others of the same user); else root's is /run/emperor
    (nobody else can create it first); a user's is under $XDG_RUNTIME_DIR, else
    /tmp/emperor-UID. Under: an `emperor` directory of its own is made there, as
    ensure_runtime_dir would make private (0700) a directory it is given itself."""
    if os.environ.get(RUNTIME_DIR_ENV):
        return os.path.join(os.environ[RUNTIME_DIR_ENV], "emperor")
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/emperor"
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "emperor")
    return f"/tmp/emperor-{os.geteuid()}"


CONTROL_DIGEST = 12    # hex digits of a control socket's name; a stats socket's have 16


def control_socket(directory: str) -> str:
    real = os.path.realpath(directory)
    digest = hashlib.sha1(real.encode()).hexdigest()[:CONTROL_DIGEST]
    return os.path.join(runtime_dir(), f"{os.path.basename(real) or 'root'}-{digest}.sock")


def _is_control_name(name: str) -> bool:
    stem, _, digest = name.removesuffix(".sock").rpartition("-")
    return (name.endswith(".sock") and bool(stem) and len(digest) == CONTROL_DIGEST
            and all(c in "0123456789abcdef" for c in digest))


def answers(path: str, timeout: float = 0.5) -> bool:
    """Someone listens on the UNIX socket `path` (a connection is accepted, nothing is said)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def listening_control_sockets() -> list[str]:
    """The control sockets in this user's runtime dir that accept a connection: one per
    emperor of this user running with its default control socket (a socket left by an
    emperor killed with SIGKILL refuses, and is not one)."""
    d = runtime_dir()
    try:
        names = sorted(n for n in os.listdir(d) if _is_control_name(n))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(d, name)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        if answers(path):
            found.append(path)
    return found


def ensure_runtime_dir() -> str:
    """Create the directory private to this user (0700), refusing one owned by someone
    else or a symlink: in /tmp, another user may have made either first."""
    d = runtime_dir()
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    if os.path.islink(d):
        raise PermissionError(errno.EPERM, f"{d} is a symlink: refused (someone else may have planted it)")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)  # ELOOP for a symlink
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(errno.EPERM, f"{d} belongs to uid {st.st_uid}, not to us: refused")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return d


def stats_socket(vassal_path: str) -> str | None:
    """The private stats socket of a vassal's master, in our runtime dir; None if unusable."""
    try:
        d = ensure_runtime_dir()
    except OSError:
        return None
    digest = hashlib.sha1(os.path.abspath(vassal_path).encode()).hexdigest()[:16]
    return os.path.join(d, f"stats-{digest}.sock")


def sweep_stale_stats_sockets(min_age: float = 60.0) -> int:
    """Remove private stats sockets nobody listens on, left by masters killed with SIGKILL.

    Only files bound more than `min_age` ago: a master binds and listens at
    once, so a young socket that refuses may be one that is just starting.
    """
    d = runtime_dir()
    removed = 0
    try:
        names = [n for n in os.listdir(d) if n.startswith("stats-") and n.endswith(".sock")]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(d, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode) or time.time() - st.st_mtime < min_age:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
        except ConnectionRefusedError:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        except OSError:
            pass
    return removed
