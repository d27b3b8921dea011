"""The files of the loaded Python modules, and whether one changed: what `py-autoreload` watches.

As uWSGI (plugins/python/python_plugin.c: uwsgi_python_autoreloader_thread,
uwsgi_check_python_mtime): every module of `sys.modules` that has a `__file__`, the
standard library and site-packages included (`py-auto-reload-ignore` names modules to
skip), a `.pyc` read as its `.py`, a relative name taken from `chdir`; a file is
changed when it differs from how it was first seen, and one that cannot be stat'ed is
skipped (a module deleted is not a reason to reload; it coming back changed is).
uWSGI compares the mtime in seconds; here (device, inode, mtime in ns, size), so two
saves in one second, or a file replaced by an older one (`git checkout`, `cp -p`),
count too.

uWSGI stats every file every N seconds. Here inotify on the files' directories says
when one may have changed, and only the files whose directory cannot be watched (or
all of them, without inotify) are looked at every N seconds: nothing polls.
"""
from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable

from inotify_simple import INotify, flags

from emperor import log as logmod
from emperor.files import content_mark
from emperor.wire import notify

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

    from emperor.config import Config

# No MODIFY: a save in place (truncate, write, close) would look like two changes; its
# CLOSE_WRITE comes once, when it is whole. ATTRIB: touch(1), an mtime set back.
MASK = flags.ATTRIB | flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE


class ModuleFiles:
    """The module files followed, how each was first seen, and the watches on their directories."""

    def __init__(self, ignore: list[str], base: str, interval: int) -> None:
        self.ignore = set(ignore)
        self.base = base
        self.interval = interval
        self.marks: dict[str, tuple[int, ...] | None] = {}
        self.by_dir: dict[str, list[str]] = {}
        self.wds: dict[int, str] = {}            # inotify watch -> directory
        self.unwatched: list[str] = []           # files looked at every `interval` seconds
        self.inotify: Any = None
        try:
            self.inotify = INotify(nonblocking=True)
        except OSError:
            pass   # out of inotify instances: everything is scanned
        self.refresh()

    def fileno(self) -> int | None:
        return self.inotify.fileno() if self.inotify is not None else None

    @property
    def scanning(self) -> bool:
        """Some files are only seen by a scan every `interval` seconds."""
        return bool(self.unwatched)

    def refresh(self) -> None:
        """Follow the modules imported since the last call, as their files are now."""
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if name in self.ignore or not isinstance(path, str):
                continue
            if path.endswith((".pyc", ".pyo")):
                path = path[:-1]
            path = os.path.join(self.base, path)
            if path in self.marks:
                continue
            self.marks[path] = content_mark(path)
            directory = os.path.dirname(path)
            if directory not in self.by_dir:
                self.by_dir[directory] = []
                self._watch(directory)
            self.by_dir[directory].append(path)
            if directory not in self.wds.values():
                self.unwatched.append(path)

    def _watch(self, directory: str) -> None:
        if self.inotify is None:
            return
        try:
            wd = self.inotify.add_watch(directory, MASK)
        except OSError:
            return   # no such directory (a zip), the watch limit, a filesystem without inotify
        self.wds[wd] = directory

    def events(self) -> str | None:
        """inotify said something: the first changed file of the directories it named, if any."""
        if self.inotify is None:
            return None
        try:
            events = self.inotify.read(timeout=0)
        except OSError:
            return None
        names: dict[str, set[str]] = {}   # directory -> the names events came for ("": itself)
        for e in events:
            if e.wd in self.wds:
                names.setdefault(self.wds[e.wd], set()).add(e.name)
        return self._check([p for d, n in names.items() for p in self.by_dir.get(d, [])
                            if os.path.basename(p) in n or "" in n])

    def scan(self) -> str | None:
        """The scan every `interval` seconds: modules imported since, and the files inotify cannot see."""
        self.refresh()
        return self._check(self.unwatched)

    def _check(self, paths: list[str]) -> str | None:
        changed = None
        for path in paths:
            now = content_mark(path)
            if now is None:
                continue
            before = self.marks.get(path)
            self.marks[path] = now
            if before is not None and now != before and changed is None:
                changed = path
        return changed

    def describe(self) -> str:
        return (f"{len(self.marks)} module files, inotify on {len(self.wds)} directories"
                + (f", {len(self.unwatched)} files scanned every {self.interval}s" if self.unwatched else ""))


def watch_in_thread(ignore: list[str], base: str, interval: int, changed: Callable[[str], None]) -> None:
    """Watch the modules loaded in this process from a daemon thread: `changed(path)` on each change.

    For a worker that imported the app itself (`lazy-apps`), where the master sees none of its
    modules. The thread blocks in poll(2), woken by inotify or after `interval` seconds.
    """
    files = ModuleFiles(ignore, base, interval)

    def run() -> None:
        poller = select.poll()
        fd = files.fileno()
        if fd is not None:
            poller.register(fd, select.POLLIN)
        while True:
            ready = poller.poll(files.interval * 1000 if files.scanning else None)
            path = files.events() if ready else files.scan()
            if path is not None:
                changed(path)

    threading.Thread(target=run, name="py-autoreload", daemon=True).start()


def in_worker(config: Config, slot: int, running: Callable[[], bool]) -> None:
    """`lazy-apps`: the worker of slot 1 has imported the app, the master none of it: this
    worker watches its modules and asks the master for a graceful reload (as emperor.reload())."""
    if not config.py_autoreload or slot != 0:
        return

    def changed(path: str) -> None:
        if running():   # not while retiring or parked as the snapshot
            logmod.log(f"py-autoreload: module file {path} has been modified")
            notify.send_reload_request()

    watch_in_thread(config.py_autoreload_ignore, config.chdir or os.getcwd(), config.py_autoreload, changed)
