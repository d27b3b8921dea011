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
    _prefix = printable(prefix)  # it holds a file name: anyone who can create one chose it


def redirect(path: str) -> None:
    """`logto`: append stdout and stderr to a file.

    In a directory others can write (/tmp), a symlink planted there would make us
    append to its target (as root, any file): there the path is not followed.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        if os.stat(os.path.dirname(os.path.abspath(path))).st_mode & 0o002:
            flags |= os.O_NOFOLLOW
    except OSError:
        pass
    fd = os.open(path, flags, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


# The stdout the master started with, when `logger = file:` took stdout and stderr and
# `req-logger = stdio` wants the request lines there (emperor/master/logfiles.py); -1: none
stdio_fd = -1

_second = [0, ""]
_date_format: str | None = None


def set_date_format(fmt: str | None) -> None:
    """`log-date = FORMAT` (or log-prefix): every line starts with strftime(FORMAT) instead
    of emperor's stamp, as uWSGI's log_strftime (core/logging.c uwsgi_log)."""
    global _date_format
    _date_format = fmt or None
    _second[0] = 0


def _stamp() -> str:
    t = time.time()
    if _date_format is not None:
        return time.strftime(_date_format, time.localtime(t))
    s = int(t)
    if _second[0] != s:
        _second[0] = s
        _second[1] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s))
    return "%s.%03d" % (_second[1], int(t * 1000) % 1000)


# C0 controls (but the newline), DEL and C1: escaped, so that nothing a client or a file
# name carries can forge a log line or drive the terminal that shows the log.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7f, 0xa0)] if c != 0x0a}


def printable(text: str) -> str:
    """`text` on one line: control characters (newlines included) escaped."""
    return text if text.isprintable() else text.translate(_CONTROLS).replace("\n", "\\n")


def line(msg: str) -> str:
    """A formatted log line, for callers that batch their writes (the request log).

    Control characters are escaped; the lines of a message of several lines after
    the first are indented, so none of them can pass for a line of its own.
    """
    if not msg.isprintable():
        msg = msg.translate(_CONTROLS).replace("\n", "\n  ")
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
