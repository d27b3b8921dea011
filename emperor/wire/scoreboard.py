"""The scoreboard: per-worker counters in shared memory, written by workers, read by the master.

A memfd rather than anonymous shared memory because it has a descriptor, and
a descriptor survives the master's `execve`: a generation keeps its scoreboard
while the new master image waits for it to drain. Workers write their own slot
with two `struct.pack_into` calls per request, so collecting statistics costs
the serving path no system call and no message.
"""
from __future__ import annotations

import mmap
import os
import struct
import time

# Worker record: pid, last_spawn (epoch s), respawn_count, generation, paused, accepting, ready
WORKER = struct.Struct("<qdqqBBB5x")
# Core record: requests, exceptions, tx, rt_sum_us, busy_since (monotonic, 0 when idle),
# method, path. END covers the counters and busy_since; START overlaps it from busy_since.
CORE_END = struct.Struct("<QQQQd")
CORE_START = struct.Struct("<d8s96s")
START_AT = 32
CORE_SIZE = START_AT + CORE_START.size


class Scoreboard:
    """`workers` slots of one generation, each with `cores` (threads) records."""

    def __init__(self, workers: int, cores: int, fd: int | None = None) -> None:
        self.workers = workers
        self.cores = cores
        self.slot_size = WORKER.size + cores * CORE_SIZE
        size = max(self.slot_size * workers, 1)
        if fd is None:
            fd = os.memfd_create("emperor-scoreboard", 0)
            os.ftruncate(fd, size)
        self.fd = fd
        os.set_inheritable(fd, True)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def export(self) -> str:
        return f"{self.fd}:{self.workers}:{self.cores}"

    @classmethod
    def adopt(cls, spec: str) -> "Scoreboard":
        fd, workers, cores = (int(x) for x in spec.split(":"))
        return cls(workers, cores, fd)

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            os.close(self.fd)

    # -- written by the master around a worker's life --
    def spawned(self, slot: int, pid: int, generation: int, respawns: int) -> None:
        off = slot * self.slot_size
        WORKER.pack_into(self.mm, off, pid, time.time(), respawns, generation, 0, 1, 0)
        for c in range(self.cores):
            coff = off + WORKER.size + c * CORE_SIZE
            CORE_END.pack_into(self.mm, coff, 0, 0, 0, 0, 0.0)
            CORE_START.pack_into(self.mm, coff + START_AT, 0.0, b"", b"")

    def set_flags(self, slot: int, paused: bool, accepting: bool) -> None:
        off = slot * self.slot_size + 32
        self.mm[off:off + 2] = bytes((paused, accepting))

    def set_ready(self, slot: int) -> None:
        self.mm[slot * self.slot_size + 34] = 1

    def core_offset(self, slot: int, core: int) -> int:
        return slot * self.slot_size + WORKER.size + core * CORE_SIZE

    # -- read by the master --
    def worker(self, slot: int) -> dict:
        off = slot * self.slot_size
        pid, last_spawn, respawns, generation, paused, accepting, ready = WORKER.unpack_from(self.mm, off)
        cores = []
        for c in range(self.cores):
            coff = off + WORKER.size + c * CORE_SIZE
            requests, exceptions, tx, rt_sum, _ = CORE_END.unpack_from(self.mm, coff)
            busy_since, method, path = CORE_START.unpack_from(self.mm, coff + START_AT)
            cores.append({
                "requests": requests, "exceptions": exceptions, "tx": tx, "rt_sum": rt_sum,
                "busy_since": busy_since,
                "method": method.rstrip(b"\0").decode("latin-1"),
                "path": path.rstrip(b"\0").decode("latin-1"),
            })
        return {"pid": pid, "last_spawn": last_spawn, "respawn_count": respawns,
                "generation": generation, "paused": bool(paused), "accepting": bool(accepting),
                "ready": bool(ready), "cores": cores}


class CoreCounters:
    """A worker thread's own view of its core record; the only writer of it."""

    __slots__ = ("mm", "off", "start_off", "requests", "exceptions", "tx", "rt_sum")

    def __init__(self, board: Scoreboard, slot: int, core: int) -> None:
        self.mm = board.mm
        self.off = board.core_offset(slot, core)
        self.start_off = self.off + START_AT
        self.requests = self.exceptions = self.tx = self.rt_sum = 0

    def begin(self, now: float, method: str, path: str) -> None:
        CORE_START.pack_into(self.mm, self.start_off, now, method.encode("latin-1", "replace")[:8],
                             path.encode("latin-1", "replace")[:96])

    def end(self, now: float, started: float, sent: int, failed: bool) -> None:
        self.requests += 1
        self.tx += sent
        self.rt_sum += int((now - started) * 1_000_000)
        if failed:
            self.exceptions += 1
        CORE_END.pack_into(self.mm, self.off, self.requests, self.exceptions, self.tx,
                           self.rt_sum, 0.0)
