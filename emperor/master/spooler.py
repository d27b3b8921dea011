"""The master's spoolers and caches: what `spooler =` and `cache2 =` / `cache =` ask of it.

`api_parts(master)` runs before the application loads (uWSGI creates its caches then too,
so an application may use them at import): it creates the caches (emperor/api/cachemem.py)
and the spoolers' wake pipes, and tells the `uwsgi` module where they are
(emperor/api/cache.py, spool.py), so that every worker forked later inherits them.

The spooler processes (emperor/master/spoolrun.py), `spooler-processes` per directory, are
forked from the master's loop once the application is loaded, as uWSGI forks them after
the app; one that dies is forked again (at once if it left by itself, as after
`spooler-max-tasks`; 1 s later if it failed). They stop with the vassal: SIGTERM (the task
running finishes first), the kill order after the master's mercy.

Across a graceful reload (the master re-executes itself, emperor/wire/handoff.py): the
caches' memfds and the wake pipes are inherited and mapped again, so the cache keeps its
items; the spoolers get SIGTERM (they finish their task, under its file lock, while the
new image's spoolers start and skip what is locked), and their PIDs ride along so that
the new image reaps them. Task files stay where they are: a reload loses none.
"""
from __future__ import annotations

import mmap
import os
import signal
import time

from emperor import log as logmod
from emperor.api import cache as api_cache
from emperor.api import spool as api_spool
from emperor.api.cachemem import Cache
from emperor.api.cachespec import CacheSpec, parse
from emperor.master.loop import Part
from emperor.proc import (describe_exit, die_with_parent, fork_with_signals_blocked, set_command_line,
                          set_process_name, signal_quietly)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from collections.abc import Callable

    from emperor.config import Config
    from emperor.wire.handoff import HandOff

RESPAWN_DELAY = 1.0     # a spooler that failed starts again after this long


def api_parts(master: object) -> list[Part]:
    """The caches and the spoolers of `master` (emperor/master/process.py); [] for a vassal
    that has neither (which then pays nothing)."""
    config: Config = master.config          # type: ignore[attr-defined]
    inherited: HandOff = master.inherited   # type: ignore[attr-defined]
    parts: list[Part] = []
    if config.cache or config.cache2 or inherited.caches:   # none now: Caches closes what was handed over
        parts.append(Caches(config, inherited.caches, first=inherited.reloads == 0))
    if config.spooler or inherited.spoolers:
        listeners = master.listeners            # type: ignore[attr-defined]
        parts.append(Spoolers(config, inherited.spoolers, lambda: master._master_only()   # type: ignore[attr-defined]
                              + [l.sock.fileno() for l in listeners], master.cwd))   # type: ignore[attr-defined]
    return parts


def wake_spoolers(parts: list[Part]) -> None:
    """SIGUSR2 to the master: "print worker status or wakeup the spooler" (uWSGI's table)."""
    for p in parts:
        if isinstance(p, Spoolers):
            p.wake()


def cache_specs(config: Config) -> list[CacheSpec]:
    """The old-style cache ("default", `cache = ITEMS`, `cache-blocksize`) first, then cache2."""
    specs = [CacheSpec("default", config.cache, config.cache_blocksize)] if config.cache else []
    return specs + [parse(text) for text in config.cache2]


class Caches(Part):
    """The vassal's caches: created (or taken over) here, used by every process of it."""

    def __init__(self, config: Config, handed: str, first: bool) -> None:
        fds: dict[str, int] = {}
        for item in filter(None, handed.split(";")):
            name, _, fd_text = item.partition("=")
            fds[name] = int(fd_text)
        api_cache.caches.clear()
        for spec in cache_specs(config):
            if spec.name in api_cache.caches:     # uwsgi_cache_by_name finds the first one too
                logmod.log(f'cache "{spec.name}" is defined twice: the first definition is used')
                continue
            fd = fds.pop(spec.name, None)
            if fd is not None:
                os.set_inheritable(fd, False)
            try:
                cache, how = Cache.create(spec, fd, first)
            except OSError as e:      # one line from the master: `cannot start: cache "x": ...`
                raise OSError(e.errno, f'cache "{spec.name}": {spec.store or "memfd"}: {e.strerror}') from None
            api_cache.caches[spec.name] = cache
            extra = f" (ignored: {', '.join(spec.ignored)})" if spec.ignored else ""
            logmod.log(f'cache "{spec.name}": {spec.items} items x {spec.blocksize} bytes'
                       f'{", store " + spec.store if spec.store else ""}: {how}{extra}')
        for fd in fds.values():     # a cache the new config no longer has
            os.close(fd)

    def stop(self, graceful: bool) -> None:
        for c in api_cache.caches.values():
            if c.spec.store:
                c.sync()

    def hand_over(self, h: HandOff) -> list[int]:
        kept = [c for c in api_cache.caches.values() if not c.spec.store]   # store=: the file is enough
        h.caches = ";".join(f"{c.name}={c.fd}" for c in kept)
        for c in api_cache.caches.values():
            if c.spec.store:
                c.sync()
        return [c.fd for c in kept]

    def report(self, doc: dict) -> None:
        doc["caches"] = [{"name": c.name, "items": c.items - 1, "blocksize": c.blocksize, "keys": c.count()}
                         for c in api_cache.caches.values()]


class Spoolers(Part):
    """`spooler-processes` spooler processes per `spooler` directory, kept running."""

    def __init__(self, config: Config, handed: str, master_only: Callable[[], list[int]], cwd: str) -> None:
        self.config = config
        self.master_only = master_only
        self.stopping = False
        base = cwd    # a relative directory is the master's start directory's, not chdir's (as uWSGI)
        pipes, old = _adopt(handed)
        self.retiring = set(old)                 # the previous image's spoolers, finishing a task
        self.dirs: list[str] = []
        self.pipes: dict[str, tuple[int, int]] = {}
        for d in config.spooler:
            path = os.path.join(base, d)
            try:
                if not os.path.isdir(path):
                    os.makedirs(path, 0o750, exist_ok=True)   # uWSGI: mkdir(dir, 0750) when missing
            except OSError as e:
                raise OSError(e.errno, f"spooler directory {path}: {e.strerror}") from None
            real = os.path.realpath(path)
            if real not in self.pipes:
                self.dirs.append(real)
                self.pipes[real] = pipes.pop(real) if real in pipes else os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for r, w in pipes.values():
            os.close(r)
            os.close(w)
        n = max(config.spooler_processes, 1)
        self.slots: list[tuple[str, int]] = [(d, i) for d in self.dirs for i in range(n)]
        self.pids: list[int] = [0] * len(self.slots)
        self.start_at: list[float | None] = [0.0] * len(self.slots)
        self.table = mmap.mmap(-1, 8 * max(len(self.slots), 1))   # the PIDs, for uwsgi.spooler_pids() in workers
        api_spool.dirs[:] = self.dirs
        api_spool.wake.clear()
        api_spool.wake.update({d: w for d, (_, w) in self.pipes.items()})
        api_spool.pids = self.table
        api_spool.quiet = config.spooler_quiet

    # ---------- the processes ----------
    def _spawn(self, k: int) -> None:
        directory = self.slots[k][0]
        try:
            pid = fork_with_signals_blocked()
        except OSError as e:
            logmod.log(f"spooler {directory}: cannot fork: {e.strerror}; retrying in {RESPAWN_DELAY:g}s")
            self.start_at[k] = time.monotonic() + RESPAWN_DELAY
            return
        if pid == 0:
            code = 1
            try:
                self._become_spooler(directory)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            finally:
                logmod.flush_std()
                os._exit(code)
        self.pids[k] = pid
        self.start_at[k] = None
        self.table[8 * k:8 * k + 8] = pid.to_bytes(8, "little")
        logmod.log(f"spawned the spooler on dir {directory} with pid {pid}")

    def _become_spooler(self, directory: str) -> None:
        """In the forked child: no master descriptor but our wake pipe, no listening socket
        (core/spooler.c uwsgi_close_all_sockets), then the loop."""
        from emperor.master.spoolrun import SpoolerProcess

        ppid = os.getppid()
        signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        mine = self.pipes[directory][0]
        for fd in self.master_only():
            if fd != mine:
                try:
                    os.close(fd)
                except OSError:
                    pass
        die_with_parent()
        if os.getppid() != ppid:
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        set_process_name("emperor spooler")
        set_command_line(f"emperor spooler {directory}")
        SpoolerProcess(self.config, directory, mine).run()

    def wake(self) -> None:
        for _, w in self.pipes.values():
            try:
                os.write(w, b"w")
            except OSError:
                pass

    # ---------- a part of the master (emperor/master/loop.py) ----------
    def deadline(self) -> float | None:
        return min((t for t in self.start_at if t is not None), default=None) if not self.stopping else None

    def run_timers(self, now: float) -> None:
        for k, t in enumerate(self.start_at):
            if t is not None and now >= t and not self.stopping:
                self._spawn(k)

    def reaped(self, pid: int, code: int) -> bool:
        if pid in self.retiring:
            self.retiring.discard(pid)
            return True
        if pid not in self.pids:
            return False
        k = self.pids.index(pid)
        self.pids[k] = 0
        self.table[8 * k:8 * k + 8] = bytes(8)
        if self.stopping:
            logmod.log(f"spooler {self.slots[k][0]} (pid {pid}) {describe_exit(code)}: stopped")
            return True
        delay = 0.0 if code == 0 else RESPAWN_DELAY
        logmod.log(f"spooler {self.slots[k][0]} (pid {pid}) {describe_exit(code)}; "
                   f"respawning{f' in {delay:g}s' if delay else ''}")
        self.start_at[k] = time.monotonic() + delay
        return True

    def alive(self) -> bool:
        return any(self.pids) or bool(self.retiring)

    def stop(self, graceful: bool) -> None:
        self.stopping = True
        for pid in [p for p in self.pids if p] + list(self.retiring):
            signal_quietly(pid, signal.SIGTERM if graceful else signal.SIGKILL)

    def fds(self) -> list[int]:
        return [r for r, _ in self.pipes.values()]

    def hand_over(self, h: HandOff) -> list[int]:
        running = [p for p in self.pids if p] + list(self.retiring)
        for pid in running:
            signal_quietly(pid, signal.SIGTERM)    # it finishes its task; the new image's start now
        h.spoolers = "\n".join([" ".join(map(str, running))]
                               + [f"{r},{w},{d}" for d, (r, w) in self.pipes.items()])
        return [fd for pair in self.pipes.values() for fd in pair]

    def report(self, doc: dict) -> None:
        doc["spoolers"] = [{"dir": d, "pid": pid} for (d, _), pid in zip(self.slots, self.pids)]


def _adopt(handed: str) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """What the previous image handed over: the wake pipes by directory, its spoolers' PIDs."""
    if not handed:
        return {}, []
    first, *rest = handed.split("\n")
    pipes = {}
    for line in rest:
        r, w, d = line.split(",", 2)
        pipes[d] = (int(r), int(w))
        os.set_inheritable(int(r), False)
        os.set_inheritable(int(w), False)
    return pipes, [int(p) for p in first.split()]
