"""Recycling workers the master watches: by age and, the "evil" way, by memory.

`max-worker-lifetime` (+ `-delta` per worker): a worker older than that finishes
its request and is replaced (uWSGI's core/master_checks.c). `evil-reload-on-rss`
/ `-as`: a worker over that much memory is killed at once (SIGKILL), for leaks
that a request never ends to let the worker check itself. The checks a worker
makes of itself after each request (`reload-on-rss`, `max-requests`...) are in
emperor/worker/process.py. Ticks once a second, and only when one of these is set.
"""
from __future__ import annotations

import signal
import time
from collections.abc import Callable

from emperor.config import Config
from emperor.master.generations import Workers
from emperor.master.loop import Part
from emperor.proc import memory, signal_quietly

TICK = 1.0


def wanted(config: Config) -> bool:
    return bool(config.max_worker_lifetime or config.evil_reload_on_rss or config.evil_reload_on_as)


class Recycler(Part):
    def __init__(self, config: Config, workers: Workers, log: Callable[[str], None]) -> None:
        self.config = config
        self.workers = workers
        self.log = log
        self.due = time.monotonic() + TICK
        self.told: set[int] = set()   # pids already told to retire for their age

    def deadline(self) -> float | None:
        return None if self.workers.stopping else self.due

    def run_timers(self, now: float) -> None:
        if now < self.due or self.workers.stopping:
            return
        self.due = now + TICK
        gen = self.workers.current
        if gen is None:
            return
        c = self.config
        for slot in self.workers.active_slots(gen):
            pid = gen.slots[slot]
            assert pid is not None
            if c.evil_reload_on_rss or c.evil_reload_on_as:
                rss, vsz = memory(pid)
                for size, limit, what in ((rss, c.evil_reload_on_rss, "RSS"), (vsz, c.evil_reload_on_as, "address space")):
                    if limit and size >= limit:
                        self.log(f"worker {slot + 1} (pid {pid}) {what} {size >> 20} MiB >= evil-reload-on-"
                                 f"{'rss' if what == 'RSS' else 'as'} ({limit >> 20} MiB): killing it")
                        signal_quietly(pid, signal.SIGKILL)
                        break
            lifetime = c.max_worker_lifetime + slot * c.max_worker_lifetime_delta
            if c.max_worker_lifetime and pid not in self.told and now - gen.last_spawn[slot] > lifetime:
                self.told.add(pid)
                self.log(f"worker {slot + 1} (pid {pid}) lifetime reached ({lifetime}s): retiring it")
                signal_quietly(pid, signal.SIGTERM)   # it finishes its request; its slot is refilled
        self.told &= {p for p in gen.pids()}
