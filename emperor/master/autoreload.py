"""`py-autoreload = N` (development): a graceful reload when a loaded module's file changes.

uWSGI runs its reloader in each worker (plugins/python/python_plugin.c: a thread that
scans sys.modules every N seconds and sends SIGHUP to the master). Here it runs where
the application's modules are loaded:

- `lazy-apps = false` (the default): the master imported the app before forking, so this
  part of the master watches the files of every module it has (emperor/modwatch.py:
  inotify on their directories, a scan every N seconds only for what inotify cannot
  see) and asks for the same graceful reload SIGHUP gives (a preflight first: a save
  that breaks the import is reported, and the running workers keep serving; the next
  save is seen again). A module the app imports only later, inside a worker (at its
  first request), is not in the master and is not watched.
- `lazy-apps = true`: the master has none of the app's modules; the first worker (slot 1)
  watches its own from a thread and asks the master for the reload, as
  `emperor.reload()` does (emperor/modwatch.py: in_worker). A worker of another slot does
  not, so one change is one reload; with `cheaper`, while slot 1 has no worker, nothing
  is watched.
"""
from __future__ import annotations

from collections.abc import Callable

from emperor.config import Config
from emperor.master.loop import Loop, Part

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.master.process import Master


class AutoReloader(Part):
    """Watches the master's modules; `reload(why)` when one of their files changed."""

    def __init__(self, config: Config, base: str, loop: Loop, reload: Callable[[str], None],
                 log: Callable[[str], None]) -> None:
        import time

        from emperor.modwatch import ModuleFiles   # inotify and the rest only where it is asked for

        self.files = ModuleFiles(config.py_autoreload_ignore, base, config.py_autoreload)
        self.interval = config.py_autoreload
        self.reload = reload
        self.log = log
        self.clock = time.monotonic
        self.due = self.clock() + self.interval if self.files.scanning else None
        fd = self.files.fileno()
        if fd is not None:
            loop.watch(fd, lambda: self._changed(self.files.events()))
        log(f"py-autoreload: watching {self.files.describe()}")

    @classmethod
    def create(cls, master: Master) -> list[Part]:
        c = master.config
        if not c.py_autoreload or c.lazy_apps:   # lazy-apps: the first worker watches its modules
            return []
        from emperor import log

        return [cls(c, c.chdir or master.cwd, master.loop, master.on_graceful_reload, log.log)]

    def _changed(self, path: str | None) -> None:
        if path is not None:
            self.log(f"py-autoreload: module file {path} has been modified")
            self.reload("py-autoreload")

    def deadline(self) -> float | None:
        return self.due

    def run_timers(self, now: float) -> None:
        if self.due is not None and now >= self.due:
            self.due = now + self.interval
            self._changed(self.files.scan())

    def fds(self) -> list[int]:
        fd = self.files.fileno()
        return [] if fd is None else [fd]

