"""uWSGI's spooler for applications: uwsgi.spool() and friends (core/spooler.c, uwsgi_pymodule.c).

A task is a file in a spooler directory, in uWSGI's format, so that a directory uWSGI
wrote is run here and the other way round: a 4-byte uwsgi header (modifier1 17, the size of
what follows as little-endian 16 bits, modifier2 0), then each key and value as LE16 length
+ bytes (a uwsgi packet), then the body, if any, to the end of the file. Its name is
uWSGI's, `uwsgi_spoolfile_on_HOST_PID_COUNTER_RANDOM_SEC_USEC`, under PRIORITY/ when the
task has a `priority`; an `at` task has its mtime set to that time (the spooler skips a
file from the future). Unlike uWSGI, the file is written under a temporary name, fsynced,
renamed, and its directory fsynced before spool() returns: a task spool() returned survives
a master SIGKILL or a power cut.

The master fills `dirs`, `wake` and `pids` before forking workers (emperor/master/spooler.py):
spool() writes a byte to the directory's wake pipe, which an idle spooler waits on.
"""
from __future__ import annotations

import mmap
import os
import random
import socket
import struct
import time

from emperor import log as logmod

__all__ = ["SPOOL_OK", "SPOOL_RETRY", "SPOOL_IGNORE", "spool", "send_to_spooler", "spooler_jobs",
           "spooler_pid", "spooler_pids", "spooler_get_task", "i_am_the_spooler"]

SPOOL_OK, SPOOL_RETRY, SPOOL_IGNORE = -2, -1, 0
PREFIX = "uwsgi_spoolfile_on_"
MODIFIER1 = 17
MAX_VARS = 0xffff      # uWSGI: "args buffer is limited to 64k, use the 'body' for bigger values"
_LE16 = struct.Struct("<H")

dirs: list[str] = []              # every spooler directory (real paths), in the file's order
wake: dict[str, int] = {}         # directory -> the write end of its spoolers' wake pipe
pids: mmap.mmap | None = None     # the spoolers' PIDs, 8 bytes each, written by the master
quiet = False                     # spooler-quiet
in_spooler = False                # set in a spooler process (emperor/master/spoolrun.py)
_counter = 0


def pack(items: list[tuple[bytes, bytes]]) -> bytes:
    """The uwsgi packet body: LE16 key length, key, LE16 value length, value, ..."""
    return b"".join(_LE16.pack(len(k)) + k + _LE16.pack(len(v)) + v for k, v in items)


def unpack(buf: bytes) -> list[tuple[bytes, bytes]] | None:
    """uwsgi_hooked_parse: the pairs, or None when the packet is malformed."""
    out, pos, end = [], 0, len(buf)
    while pos < end:
        if pos + 2 > end:
            return None
        kl = _LE16.unpack_from(buf, pos)[0]
        pos += 2
        if pos + kl + 2 > end:
            return None
        key = buf[pos:pos + kl]
        pos += kl
        vl = _LE16.unpack_from(buf, pos)[0]
        pos += 2
        if pos + vl > end:
            return None
        out.append((key, buf[pos:pos + vl]))
        pos += vl
    return out


def read_task(fd: int, size: int) -> tuple[bytes, bytes] | None:
    """(vars, body) of an open task file of `size` bytes; None if it is not a whole task yet."""
    head = os.pread(fd, 4, 0)
    if len(head) != 4:
        return None
    length = _LE16.unpack_from(head, 1)[0]
    data = os.pread(fd, size - 4, 4) if size > 4 else b""
    if len(data) < length:
        return None
    return data[:length], data[length:]


def task_dict(path: str, buf: bytes, body: bytes) -> dict | None:
    """What the spooler function gets (uwsgi_python_dict_from_spooler_content): bytes keys and
    values, plus `spooler_task_name` (str key, bytes path) and `body` (str key) if any."""
    pairs = unpack(buf)
    if pairs is None:
        return None
    d: dict = {"spooler_task_name": path.encode()}
    d.update(pairs)
    if body:
        d["body"] = body
    return d


def _bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (int, float)) and what == "value":
        return str(value).encode()
    raise ValueError("spooler callable dictionary must contains only bytes")


def spool(*args: dict, **kwargs: object) -> bytes:
    """uwsgi.spool(dict) or uwsgi.spool(key=value, ...): the task's file name (bytes)."""
    if args:
        if not isinstance(args[0], dict):
            raise ValueError("The argument of spooler callable must be a dictionary")
        given = args[0]
    elif kwargs:
        given = kwargs
    else:
        raise ValueError("The argument of spooler callable must be a dictionary")
    items: list[tuple[bytes, bytes]] = []
    body = b""
    for k, v in given.items():
        key = _bytes(k, "key")
        if key == b"body" and isinstance(v, (bytes, str)):
            body = _bytes(v, "value")
            continue
        items.append((key, _bytes(v, "value")))
    return write(pack(items), body, dict(items))


def write(buf: bytes, body: bytes, fields: dict[bytes, bytes]) -> bytes:
    """uwsgi_spool_request, made durable: temporary name, fsync, rename, directory fsync."""
    global _counter
    if len(buf) > MAX_VARS:
        logmod.log("[uwsgi-spooler] args buffer is limited to 64k, use the 'body' for bigger values")
        raise ValueError("unable to spool job")
    if not dirs:
        logmod.log("[uwsgi-spooler] no spooler available")
        raise ValueError("unable to spool job")
    target = dirs[0]
    if b"spooler" in fields:
        wanted = fields[b"spooler"].decode("utf-8", "replace")
        match = [d for d in dirs if d == wanted or d == os.path.realpath(wanted)]
        if not match:
            logmod.log(f'[uwsgi-spooler] unable to find spooler "{wanted}"')
            raise ValueError("unable to spool job")
        target = match[0]
    where = target
    priority = fields.get(b"priority", b"").decode("utf-8", "replace")
    if priority:
        if "/" in priority or priority in (".", "..") or "\0" in priority:
            logmod.log(f"[uwsgi-spooler] invalid priority {priority!r}")
            raise ValueError("unable to spool job")
        where = os.path.join(target, priority)
        try:
            os.mkdir(where, 0o777)
        except FileExistsError:
            pass
    _counter += 1
    now = time.time()
    name = (f"{PREFIX}{socket.gethostname()}_{os.getpid()}_{_counter}_{random.randrange(1 << 31)}_"
            f"{int(now)}_{int(now * 1e6) % 1000000}")
    path = os.path.join(where, name)
    temp = os.path.join(where, f".tmp.{name}")
    data = bytes((MODIFIER1,)) + _LE16.pack(len(buf)) + b"\0" + buf + body
    try:
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            at = fields.get(b"at", b"").split(b".")[0]
            if at.isdigit() and int(at) > 0:     # the spooler runs it from then on (mtime)
                os.utime(fd, (int(at), int(at)))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        dfd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        logmod.log(f"[spooler] unable to write {path}: {e.strerror}")
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise ValueError("unable to spool job") from None
    if not quiet:
        logmod.log(f"[spooler] written {len(data)} bytes to file {path}")
    wake_fd = wake.get(target)
    if wake_fd is not None:
        try:
            os.write(wake_fd, b"w")
        except OSError:
            pass    # full (the spoolers have wakeups waiting already) or gone
    return path.encode()


send_to_spooler = spool


def spooler_jobs() -> list[bytes]:
    """The tasks waiting in the first spooler directory (py_uwsgi_spooler_jobs)."""
    if not dirs:
        return []
    out = []
    try:
        names = os.listdir(dirs[0])
    except OSError:
        return []
    for name in names:
        path = os.path.join(dirs[0], name)
        if name.startswith(PREFIX) and os.path.isfile(path) and not os.path.islink(path) \
                and os.access(path, os.R_OK | os.W_OK):
            out.append(path.encode())
    return out


def spooler_get_task(path: str | bytes) -> dict | None:
    """A task's dict, as the spooler function would get it; None if unreadable."""
    p = os.fsdecode(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        got = read_task(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return task_dict(p, *got) if got is not None else None


def i_am_the_spooler() -> bool | None:
    """True in a spooler process, None elsewhere (uwsgi_pymodule.c)."""
    return True if in_spooler else None


def spooler_pids() -> list[int]:
    if pids is None:
        return []
    return [int.from_bytes(pids[i:i + 8], "little") for i in range(0, len(pids), 8)]


def spooler_pid() -> int:
    found = spooler_pids()
    return found[0] if found else 0
