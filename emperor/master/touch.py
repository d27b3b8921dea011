"""touch-reload: inotify on the files' directories, deciding by a fingerprint.

The directory is watched, not the file, so that a file that appears, is
replaced by rename or disappears is seen too. The fingerprint (mtime in
nanoseconds, inode, existence) decides, so an event that changes nothing
causes no reload.
"""
from __future__ import annotations

import os

from inotify_simple import INotify, flags

MASK = (flags.ATTRIB | flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM
        | flags.CREATE | flags.DELETE | flags.MODIFY)


def fingerprint(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class TouchWatcher:
    def __init__(self, paths: list[str]) -> None:
        self.paths = [os.path.abspath(p) for p in paths]
        self.inotify = INotify(nonblocking=True)
        for d in {os.path.dirname(p) for p in self.paths}:
            try:
                self.inotify.add_watch(d, MASK)
            except OSError:
                pass
        self.prints = {p: fingerprint(p) for p in self.paths}

    def fileno(self) -> int:
        return self.inotify.fileno()

    def changed(self) -> bool:
        try:
            self.inotify.read(timeout=0)
        except (BlockingIOError, OSError):
            pass
        now = {p: fingerprint(p) for p in self.paths}
        changed = now != self.prints
        self.prints = now
        return changed

    def close(self) -> None:
        self.inotify.close()
