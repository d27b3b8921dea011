"""touch-reload: inotify on the files' directories, deciding by a fingerprint.

The directory is watched, not the file, so that a file that appears, is
replaced by rename or disappears is seen too. The fingerprint (mtime in
nanoseconds, inode, existence) decides, so an event that changes nothing
causes no reload.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from inotify_simple import INotify, flags

from emperor.files import content_mark
from emperor.log import log
from emperor.master.loop import Loop, Part

MASK = (flags.ATTRIB | flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM
        | flags.CREATE | flags.DELETE | flags.MODIFY)


class TouchWatcher(Part):
    """A part of the master (emperor/master/loop.py): `touched(why)` when a file changed."""

    def __init__(self, paths: list[str], loop: Loop, touched: Callable[[str], None]) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.inotify = INotify(nonblocking=True)
        for d in {os.path.dirname(p) for p in self.paths}:
            try:
                self.inotify.add_watch(d, MASK)
            except OSError:
                pass
        self.prints = {p: content_mark(p) for p in self.paths}
        self.touched = touched
        loop.watch(self.fileno(), self._read)

    def _read(self) -> None:
        if self.changed():
            log("touch-reload file changed")
            self.touched("touch-reload")

    def fds(self) -> list[int]:
        return [self.fileno()]

    def fileno(self) -> int:
        return self.inotify.fileno()

    def changed(self) -> bool:
        try:
            self.inotify.read(timeout=0)
        except (BlockingIOError, OSError):
            pass
        now = {p: content_mark(p) for p in self.paths}
        changed = now != self.prints
        self.prints = now
        return changed

    def close(self) -> None:
        self.inotify.close()
