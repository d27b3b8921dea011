"""Files as the emperor and the master see them: what makes one "changed".

One fingerprint for the vassals directory and for `touch-reload`, so both
agree on what a touch, an edit or a replacement is.
"""
from __future__ import annotations

import errno
import os
import stat

# (device, inode, mtime in ns, ctime in ns, size), following symlinks
Fingerprint = tuple[int, int, int, int, int]


def fingerprint(path: str, *, regular_only: bool = True) -> Fingerprint | None:
    """None when `path` is missing (or, with `regular_only`, not a regular file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if regular_only and not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def content_mark(path: str) -> tuple[int, ...] | None:
    """The fingerprint without ctime: what changes when the content does, not a chmod or chown
    (touch-reload, py-autoreload; uWSGI compares the mtime alone). None when missing."""
    fp = fingerprint(path, regular_only=False)
    return None if fp is None else fp[:3] + fp[4:]


MAX_CONFIG_BYTES = 1 << 20   # one vassal file or include: real ones are a few KiB


# out of descriptors or memory: says nothing about a file, only about this moment
SCARCE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class Scarce(Exception):
    """A file could not be read for want of descriptors or memory: not the file's fault, and
    not a config error (it is tried again later); str() is the system's words."""


class Unreadable(Exception):
    """A file we do not read (not a regular file, too large); str() says why in a few words."""


class Untrusted(Unreadable):
    """A file whose writers we do not trust to choose the code a vassal runs."""


class TrustRule:
    """Who may write the files a vassal reads, since they choose the code it runs.

    `owners`: the uids a file and every directory on its way may belong to, neither
    writable by group nor others (sshd's StrictModes rule; a root-owned sticky directory
    such as /tmp is fine on the way). None: anyone's file, but never one anyone can
    write (a non-root emperor escalates nothing, and a container's mounted directories,
    a ConfigMap's among them, may be anyone's and any mode).
    """

    def __init__(self, owners: frozenset[int] | None) -> None:
        self.owners = owners

    def export(self) -> str:
        return "*" if self.owners is None else ",".join(str(u) for u in sorted(self.owners))

    @classmethod
    def adopt(cls, value: str) -> TrustRule | None:
        if not value:
            return None
        return cls(None if value == "*" else frozenset(int(u) for u in value.split(",") if u))

    def problem(self, path: str, st: os.stat_result) -> str:
        """Why the file `path` (with `st`) must not be trusted, or ''."""
        why = self._check(st, "file")
        if why or self.owners is None:
            return why
        d = os.path.dirname(os.path.realpath(path))
        while True:
            try:
                dst = os.stat(d)
            except OSError as e:
                return f"directory {d}: {e.strerror}"
            why = self._check(dst, f"directory {d}", directory=True)
            if why:
                return why
            if d == "/":
                return ""
            d = os.path.dirname(d)

    def _check(self, st: os.stat_result, what: str, directory: bool = False) -> str:
        mode = stat.S_IMODE(st.st_mode)
        if directory and st.st_uid == 0 and mode & stat.S_ISVTX:
            return ""  # /tmp: others may add names, not replace ours
        if self.owners is not None and st.st_uid not in self.owners:
            return f"{what} is owned by uid {st.st_uid}, who could choose the code it runs"
        writers = 0o022 if self.owners is not None else 0o002
        if mode & writers:
            return f"{what} is writable by {'group or ' if mode & 0o020 else ''}others (mode {mode:04o})"
        return ""


def open_nonblocking(path: str | bytes) -> int:
    """A descriptor to read `path` that never waits: a FIFO (or a device) where a file was
    expected opens at once instead of stopping the loop until a writer comes."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)


def read_head(path: str, size: int) -> bytes:
    """Up to `size` bytes from the start of `path` (a pidfile), opened without blocking:
    a FIFO reads as b"". OSError as os.open and os.read raise it."""
    fd = open_nonblocking(path)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def read_untrusted(path: str, rule: TrustRule | None = None, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read without ever blocking.

    A vassal file names what it includes: /dev/zero must not fill our memory, nor a FIFO
    stop our loop (O_NONBLOCK makes the open return at once; then only a regular file is read).
    Scarce (not an OSError: the callers' handlers read those as the file's problem) when the
    open fails for want of descriptors or memory.
    """
    try:
        fd = open_nonblocking(path)
    except OSError as e:
        if e.errno in SCARCE:
            raise Scarce(e.strerror) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if st.st_size > limit:
            raise Unreadable(f"larger than {limit} bytes")
        if rule is not None:
            why = rule.problem(path, st)
            if why:
                raise Untrusted(why)
        chunks = []
        size = 0
        while size <= limit:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
        if size > limit:
            raise Unreadable(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
