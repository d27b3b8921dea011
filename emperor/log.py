"""One-line logs, prefixed with the vassal name.

Lines are written straight to the stderr file descriptor: no buffering layer
can hold a line back when a process is killed, and containers see them at once.
"""
from __future__ import annotations

import os
import sys
import time

_prefix = "[emperor]"
_fd = 2


def set_prefix(prefix: str) -> None:
    global _prefix
    _prefix = prefix


def redirect(path: str) -> None:
    """`logto`: append stdout and stderr to a file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


_second = [0, ""]


def _stamp() -> str:
    t = time.time()
    s = int(t)
    if _second[0] != s:
        _second[0] = s
        _second[1] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s))
    return "%s.%03d" % (_second[1], int(t * 1000) % 1000)


def line(msg: str) -> str:
    """A formatted log line, for callers that batch their writes (the request log)."""
    return f"{_stamp()} {_prefix} {msg}\n"


def log(msg: str) -> None:
    write_raw(line(msg))


def write_raw(text: str) -> None:
    data = text.encode("utf-8", "replace")
    try:
        while data:
            n = os.write(_fd, data)
            data = data[n:]
    except OSError:
        pass


def flush_std() -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
