"""Where a master and its workers log, and the file's rotation (uWSGI's Logging doc).

Every process writes its lines straight to its stderr descriptor (emperor/log.py),
which `logto` (or `daemonize`: here the master stays under its emperor, the file is
only the log target) points at the file; `logto2` opens it after the privilege
drop. Rotating means renaming the file and making every process open the path
again: the master does so itself and orders its workers to (SIGRTMIN, a worker
order), when the file passes `log-maxsize` (looked at once a second, while that is
set) or a `touch-logrotate` file changes; `touch-logreopen` only reopens, for an
external logrotate that moved the file away. `log-reopen` is what a graceful
reload always does here: the new image opens the path again.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor.config import Config
from emperor.master.loop import Loop, Part
from emperor.proc import identity, set_command_line
from emperor.wire.handoff import HandOff

TICK = 1.0


class LogFile(Part):
    def __init__(self, config: Config, loop: Loop, tell_workers: Callable[[int], None],
                 log: Callable[[str], None], stdio: int | None = None) -> None:
        self.config = config
        self.stdio = stdio   # the original stdout, handed over by the previous image (see open)
        self.loop = loop
        self.tell_workers = tell_workers   # sends a signal to every worker
        self.log = log
        self.path = config.log_path()
        self.parts: list[Part] = []
        self.due = time.monotonic() + TICK

    def open(self, dropped: bool) -> None:
        """Open the log file: `logto`/`daemonize` before the privilege drop, `logto2` after."""
        c = self.config
        logger = c.logger[5:] if c.logger and c.logger.startswith("file:") else None
        path = c.logto2 if dropped else (c.logto or c.daemonize or logger)
        if not dropped:
            self._keep_stdio(bool(logger) and c.req_logger == "stdio" and not (c.logto or c.daemonize))
        if path:
            logmod.redirect(path)
            self._own(path)

    def _keep_stdio(self, wanted: bool) -> None:
        """uWSGI's stdio logger writes to the descriptor the process started with (logfile.c
        uwsgi_stdio_logger: original_log_fd, dup(1) before a `logger` takes over): with
        `logger = file:` and `req-logger = stdio`, the request lines stay on the original
        stdout. Kept across a graceful reload (hand_over); workers inherit it on fork."""
        if not wanted:
            if self.stdio is not None:
                os.close(self.stdio)
                self.stdio = None
            return
        if self.stdio is None:
            self.stdio = os.dup(1)
        os.set_inheritable(self.stdio, False)   # execve needed it; a daemon or hook must not have it
        logmod.stdio_fd = self.stdio

    def hand_over(self, h: HandOff) -> list[int]:
        h.stdio = self.stdio
        return [] if self.stdio is None else [self.stdio]

    def watch(self) -> None:
        """touch-logrotate and touch-logreopen, once the master runs (inotify only if asked for)."""
        if not (self.path and (self.config.touch_logrotate or self.config.touch_logreopen)):
            return
        from emperor.master.touch import TouchWatcher

        if self.config.touch_logrotate:
            self.parts.append(TouchWatcher(self.config.touch_logrotate, self.loop, self.rotate))
        if self.config.touch_logreopen:
            self.parts.append(TouchWatcher(self.config.touch_logreopen, self.loop, self.reopen))

    def _own(self, path: str) -> None:
        c = self.config
        try:
            if c.logfile_chmod:
                os.chmod(path, int(c.logfile_chmod, 8))
            if c.logfile_chown and (c.uid or c.gid) and os.geteuid() == 0:
                # uWSGI's flag (core/utils.c uwsgi_as_root): to the `uid`/`gid` the master drops to
                os.chown(path, *identity(c.uid, c.gid)[:2])
        except (OSError, KeyError) as e:
            self.log(f"logfile-chmod/-chown {path}: {getattr(e, 'strerror', None) or e}")

    def rotate(self) -> None:
        """Rename the file (to log-backupname, else PATH.TIMESTAMP) and reopen the path everywhere."""
        if not self.path:
            return
        backup = self.config.log_backupname or f"{self.path}.{int(time.time())}"
        try:
            os.replace(self.path, backup)
        except OSError as e:
            self.log(f"cannot rotate {self.path}: {e.strerror}")
            return
        self.reopen(f"rotated to {backup}")

    def reopen(self, why: str = "touch-logreopen") -> None:
        if not self.path:
            return
        try:
            logmod.redirect(self.path)
        except OSError as e:
            self.log(f"cannot reopen {self.path}: {e.strerror}")
            return
        self._own(self.path)
        self.tell_workers(signal.SIGRTMIN)
        self.log(f"log file reopened ({why})")

    # ---------- a part of the master ----------
    def deadline(self) -> float | None:
        return self.due if self.config.log_maxsize and self.path else None

    def run_timers(self, now: float) -> None:
        if not (self.config.log_maxsize and self.path) or now < self.due:
            return   # the master runs every part's timers when any part's deadline comes
        self.due = now + TICK
        try:
            size = os.fstat(2).st_size
        except OSError:
            return
        if size >= self.config.log_maxsize:
            self.rotate()

    def fds(self) -> list[int]:
        return [fd for p in self.parts for fd in p.fds()]


def titles(config: Config, config_path: str) -> tuple[str | None, str]:
    """What ps shows: (the master's title, None to leave it; the workers' with `{slot}`).

    uWSGI's procname-prefix(-spaced), procname-append, procname-master, procname; without
    them the master keeps its command line and workers say `emperor worker N FILE`.
    """
    c = config
    custom = c.procname_prefix or c.procname_append or c.procname_master or c.procname
    master = f"{c.procname_prefix}{c.procname_master or 'emperor master ' + config_path}{c.procname_append}"
    worker = f"{c.procname_prefix}{c.procname or 'emperor worker {slot} ' + config_path}{c.procname_append}"
    return (master if custom else None), worker


def set_master_title(config: Config, config_path: str) -> None:
    title = titles(config, config_path)[0]
    if title:
        set_command_line(title)
