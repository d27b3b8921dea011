"""Watching the vassals directory: inotify wakes us, a fingerprint rescan decides.

inotify events are only a hint that something may have changed: editors,
`mv`, Kubernetes ConfigMaps (where only the `..data` symlink is re-pointed and
no event names the file) and symlinks to files elsewhere all produce different
event sequences, and the queue can overflow. So any interesting event arms a
short debounce timer, and when it fires the whole directory is rescanned and
each `*.ini` compared by its fingerprint (device, inode, mtime in ns, ctime,
size, following symlinks). The same rescan is the fallback for everything
inotify cannot tell us (overflow, the directory itself deleted and re-created,
no inotify at all), and it runs every `rescan_every` seconds as a safety net.

The watcher never sleeps or blocks: the emperor's loop waits on `fileno()`
with `timeout()` and calls `changes()` when it wakes.
"""
from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emperor.files import Fingerprint, fingerprint

try:
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - inotify-simple is a dependency
    INotify = None

if INotify is not None:
    DIR_MASK = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.CLOSE_WRITE
                | flags.MODIFY | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR)
    SELF_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED | flags.UNMOUNT

DEBOUNCE = 0.02        # after the first event: lets an editor finish its write-and-rename
DELETE_GRACE = 0.1     # a file must stay missing this long to count as deleted (an editor's
                       # rename-and-rewrite leaves a gap of milliseconds)
RESCAN_EVERY = 30.0    # the safety net
POLL_EVERY = 1.0       # when inotify cannot watch the directory
GONE = (errno.ENOENT, errno.ENOTDIR, errno.EACCES)  # listing errors that mean "the directory is not there"


@dataclass
class Changes:
    """What a rescan found, by file name, compared with the previous one."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.deleted)


def content_digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(1 << 20)).digest()
    except OSError:
        return None


def is_vassal_name(name: str, suffix: str = ".ini") -> bool:
    # hidden names are editors' temp files and ConfigMap internals (..data, ..2024_...)
    return name.endswith(suffix) and not name.startswith(".")


def scan(directory: str, suffix: str = ".ini") -> dict[str, Fingerprint]:
    """Fingerprints of the vassal files in `directory`; OSError if it cannot be listed."""
    names = os.listdir(directory)
    prints = {}
    for name in names:
        if is_vassal_name(name, suffix):
            fp = fingerprint(os.path.join(directory, name))
            if fp is not None:
                prints[name] = fp
    return prints


def link_dirs(path: str) -> dict[str, set[str]]:
    """Directories (and names in them) whose change can re-point the symlink `path`.

    For each hop of the chain, the directory holding the hop's target, and the
    parent of any symlinked directory on the way (`/srv/current -> releases/v2`).
    """
    out: dict[str, set[str]] = {}
    for _ in range(40):  # the kernel's own limit on symlink hops
        try:
            target = os.readlink(path)
        except OSError:
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
        parts = path.split("/")
        for i in range(2, len(parts)):
            prefix = "/".join(parts[:i])
            if os.path.islink(prefix):
                out.setdefault(os.path.dirname(prefix), set()).add(parts[i - 1])
        out.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    return out


class DirectoryWatcher:
    """Tells what changed in a vassals directory; see the module docstring."""

    def __init__(self, directory: str, *, suffix: str = ".ini", debounce: float = DEBOUNCE,
                 rescan_every: float = RESCAN_EVERY, use_inotify: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = lambda msg: None) -> None:
        self.directory = os.path.abspath(directory)
        self.suffix = suffix
        self.debounce = debounce
        self.rescan_every = rescan_every
        self.clock = clock
        self.log = log
        self.prints: dict[str, Fingerprint] = {}
        self.missing_since: dict[str, float] = {}   # known names not found by the last rescan
        self.digests: dict[str, bytes | None] = {}  # content of symlinked vassals (ConfigMaps)
        self.due: float | None = clock()            # the first changes() reports every file
        self.next_full = clock() + rescan_every
        self.inotify = None
        self.wds: dict[int, str] = {}               # watch descriptor -> directory
        self.interest: dict[int, set[str]] = {}     # names that matter in a non-top directory
        self.top_wd: int | None = None
        self.parent_wd: int | None = None
        self.dir_missing = False
        if use_inotify and INotify is None:
            log(f"inotify-simple is not installed: rescanning every {POLL_EVERY:g}s")
        elif use_inotify:
            try:
                self.inotify = INotify(nonblocking=True)
            except OSError as e:
                log(f"inotify unavailable ({e.strerror}): rescanning every {POLL_EVERY:g}s")

    # ---------- the loop's interface ----------
    def fileno(self) -> int | None:
        return self.inotify.fileno() if self.inotify is not None else None

    def timeout(self) -> float:
        """Seconds until changes() has something to do, if no event comes first."""
        deadline = self.next_full if self.due is None else min(self.due, self.next_full)
        return max(deadline - self.clock(), 0.0)

    def rescan_now(self) -> None:
        self.due = self.clock()

    def _remember_content(self, name: str) -> None:
        """Keep a digest of symlinked vassals: a ConfigMap update re-points every one."""
        path = os.path.join(self.directory, name)
        if os.path.islink(path):
            self.digests[name] = content_digest(path)

    def _same_reprojection(self, name: str, old: Fingerprint, new: Fingerprint) -> bool:
        """True when a symlinked vassal now resolves to another file with the same bytes.

        kubelet writes every key of a ConfigMap into a new directory and re-points
        `..data`, so every file gets a new inode; only those whose content differs
        changed. A touch (same inode, new mtime) still counts as a change.
        """
        path = os.path.join(self.directory, name)
        if not os.path.islink(path):
            self.digests.pop(name, None)
            return False
        before = self.digests.get(name)
        now = self.digests[name] = content_digest(path)
        return old[:2] != new[:2] and old[4] == new[4] and before is not None and before == now

    def changes(self) -> Changes | None:
        """Drain inotify; if a rescan is due, run it and return what changed."""
        self._read_events()
        now = self.clock()
        if now < self.next_full and (self.due is None or now < self.due):
            return None
        self.due = None
        return self._rescan(now)

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    # ---------- inotify ----------
    def _arm(self) -> None:
        if self.due is None:  # not pushed back by later events: latency stays bounded
            self.due = self.clock() + self.debounce

    def _read_events(self) -> None:
        if self.inotify is None:
            return
        try:
            events = self.inotify.read(timeout=0)
        except (BlockingIOError, OSError):
            return
        for ev in events:
            if ev.mask & flags.Q_OVERFLOW:
                self.log("inotify queue overflow: full rescan")
                self._arm()
            elif ev.wd == self.top_wd and ev.mask & SELF_GONE:
                self.log(f"{self.directory} went away: rescanning")
                self.wds.pop(ev.wd, None)
                self.top_wd = None
                self._arm()
            elif ev.wd in self.wds and self._interesting(ev.wd, ev.name, ev.mask):
                self._arm()

    def _interesting(self, wd: int, name: str, mask: int) -> bool:
        if not name:
            return bool(mask & SELF_GONE)  # a watched target directory vanished
        if wd == self.top_wd and (is_vassal_name(name, self.suffix) or name.startswith("..")):
            return True
        return name in self.interest.get(wd, ())

    def _watch_top(self) -> None:
        """Watch the directory; while it is gone, its parent, to see it come back."""
        wd = self._add_watch(self.directory)
        if wd is None and self.top_wd is not None:
            self.wds.pop(self.top_wd, None)
        self.top_wd = wd
        self.parent_wd = None
        if wd is None:
            self.parent_wd = self._add_watch(os.path.dirname(self.directory))

    def _sync_watches(self, wanted: dict[str, set[str]]) -> bool:
        """Watch the directories symlinked vassals point into; drop the others.

        Returns True if a watch was added, since a change made before that was missed.
        """
        added = False
        interest: dict[int, set[str]] = {}
        if self.parent_wd is not None:
            interest[self.parent_wd] = {os.path.basename(self.directory)}
        for directory, names in wanted.items():
            known = set(self.wds)
            wd = self._add_watch(directory)
            if wd is None:
                continue
            added = added or wd not in known
            interest.setdefault(wd, set()).update(names)
        for wd in list(self.wds):
            if wd not in interest and wd != self.top_wd:
                del self.wds[wd]
                try:
                    self.inotify.rm_watch(wd)  # type: ignore[union-attr]  # only called with inotify on
                except OSError:
                    pass
        self.interest = interest
        return added

    def _add_watch(self, directory: str) -> int | None:
        try:
            wd = self.inotify.add_watch(directory, DIR_MASK)  # type: ignore[union-attr]  # only called with inotify on
        except OSError:
            return None
        self.wds[wd] = directory
        return wd

    # ---------- the rescan ----------
    def _rescan(self, now: float) -> Changes:
        if self.inotify is not None:
            self._watch_top()  # before the scan: a change made after it wakes us
        try:
            found: dict[str, Fingerprint] | None = scan(self.directory, self.suffix)
        except OSError as e:
            if e.errno not in GONE:
                # Out of descriptors, of memory...: says nothing about the files. Deleting
                # every vassal on that would stop them all; keep them and look again soon.
                self.log(f"cannot list {self.directory} now ({e.strerror}): nothing changes; "
                         f"retrying in {POLL_EVERY:g}s")
                self.due = now + POLL_EVERY
                self.next_full = max(self.next_full, self.due)   # a full rescan due now would spin
                return Changes()
            found = None
        if found is None:
            if not self.dir_missing:
                self.log(f"cannot list {self.directory}: every vassal counts as deleted until it is back")
            self.dir_missing = True
            found = {}
        elif self.dir_missing:
            self.log(f"{self.directory} is back: rescanning")
            self.dir_missing = False
        out = Changes()
        for name, fp in found.items():
            old = self.prints.get(name)
            self.missing_since.pop(name, None)
            if old is None:
                out.new.append(name)
                self._remember_content(name)
            elif old != fp:
                if self._same_reprojection(name, old, fp):
                    self.log(f"{name}: re-projected with the same content: not reloaded")
                else:
                    out.changed.append(name)
            self.prints[name] = fp
        moved_to = {self.prints[n][:2] for n in out.new}  # (device, inode) under a new name
        for name in [n for n in self.prints if n not in found]:
            # An editor's rename-and-rewrite leaves a moment with no file: wait before
            # believing a deletion, unless the same inode shows up under another name.
            since = self.missing_since.setdefault(name, now)
            if now - since >= DELETE_GRACE or self.prints[name][:2] in moved_to:
                del self.prints[name]
                del self.missing_since[name]
                out.deleted.append(name)
            else:
                self.due = since + DELETE_GRACE if self.due is None else min(self.due, since + DELETE_GRACE)
        if self.inotify is not None:
            wanted: dict[str, set[str]] = {}
            for name in self.prints:
                for directory, names in link_dirs(os.path.join(self.directory, name)).items():
                    wanted.setdefault(os.path.realpath(directory), set()).update(names)
            if self._sync_watches(wanted) and self.due is None:
                self.due = now  # a target changed before its watch existed would be missed
        # without a watch on the directory, polling is all there is
        self.next_full = now + (self.rescan_every if self.top_wd is not None else POLL_EVERY)
        out.new.sort()
        out.changed.sort()
        out.deleted.sort()
        return out
