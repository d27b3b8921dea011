"""touch-reload: inotify on the files' directories, deciding by a fingerprint.

The directory is watched, not the file, so that a file that appears, is
replaced by rename or disappears is seen too. The fingerprint (mtime in
nanoseconds, inode, existence) decides, so an event that changes nothing
causes no reload.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from emperor.files import content_mark
from emperor.log import log
from emperor.master.loop import Loop, Part


def touch_reload(paths: list[str], loop: Loop, reload: Callable[[str], None]) -> list[Part]:
    """The master's touch-reload part, when the file asks for one."""
    if not paths:
        return []
    return [TouchWatcher(paths, loop, lambda: reload("touch-reload"), say="touch-reload file changed")]


class TouchWatcher(Part):
    """A part of the master (emperor/master/loop.py): `touched()` when a file changed, after
    logging `say` if given."""

    def __init__(self, paths: list[str], loop: Loop, touched: Callable[[], None], say: str = "") -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        from inotify_simple import INotify, flags   # only in the masters that watch a file

        self.inotify = INotify(nonblocking=True)
        mask = (flags.ATTRIB | flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM
                | flags.CREATE | flags.DELETE | flags.MODIFY)
        for d in {os.path.dirname(p) for p in self.paths}:
            try:
                self.inotify.add_watch(d, mask)
            except OSError:
                pass
        self.prints = {p: content_mark(p) for p in self.paths}
        self.touched, self.say = touched, say
        loop.watch(self.fileno(), self._read)

    def _read(self) -> None:
        if self.changed():
            if self.say:
                log(self.say)
            self.touched()

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
