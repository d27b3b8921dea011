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

# Worker record: pid, last_spawn (epoch s), respawn_count, generation, paused, accepting, ready,
# then the last line of what killed it before it could serve (written by the worker as it dies)
WORKER = struct.Struct("<qdqqBBB5x")
PID = struct.Struct("<q")   # WORKER's first field
ERROR_AT, ERROR_SIZE = WORKER.size, 240
WORKER_SIZE = WORKER.size + ERROR_SIZE
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
        self.slot_size = WORKER_SIZE + cores * CORE_SIZE
        size = max(self.slot_size * workers, 1)
        if fd is None:
            fd = os.memfd_create("emperor-scoreboard", 0)
            os.ftruncate(fd, size)
        self.fd = fd
        os.set_inheritable(fd, True)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def export(self) -> str:
        return f"{self.fd}:{self.workers}:{self.cores}:{self.slot_size}"

    @classmethod
    def adopt(cls, spec: str) -> Scoreboard:
        """A board handed over across execve. One written by another layout (an emperor
        upgraded in place between two images) is replaced by a blank one, never misread:
        its generation is only waited for, and a misread busy time could kill a worker."""
        fd, workers, cores, *size = (int(x) for x in spec.split(":"))
        board = cls(workers, cores, fd)
        if not size or size[0] != board.slot_size:
            board.close()
            board = cls(workers, cores)
        return board

    def close(self) -> None:
        try:
            self.mm.close()
        finally:
            os.close(self.fd)

    # -- written by the master around a worker's life --
    def spawning(self, slot: int, generation: int, respawns: int) -> None:
        """A fresh record, written before the fork: once the child runs it may write its error
        (or count a request) before the parent gets the CPU back, and that must not be erased."""
        off = slot * self.slot_size
        WORKER.pack_into(self.mm, off, 0, time.time(), respawns, generation, 0, 1, 0)
        self.mm[off + ERROR_AT:off + ERROR_AT + ERROR_SIZE] = bytes(ERROR_SIZE)
        for c in range(self.cores):
            coff = off + WORKER_SIZE + c * CORE_SIZE
            CORE_END.pack_into(self.mm, coff, 0, 0, 0, 0, 0.0)
            CORE_START.pack_into(self.mm, coff + START_AT, 0.0, b"", b"")

    def spawned(self, slot: int, pid: int) -> None:
        """After the fork: the PID alone (the record's first field)."""
        PID.pack_into(self.mm, slot * self.slot_size, pid)

    def set_flags(self, slot: int, paused: bool, accepting: bool) -> None:
        off = slot * self.slot_size + 32
        self.mm[off:off + 2] = bytes((paused, accepting))

    def set_ready(self, slot: int) -> None:
        self.mm[slot * self.slot_size + 34] = 1

    def set_error(self, slot: int, text: str) -> None:
        data = text.encode("utf-8", "replace")[:ERROR_SIZE]
        off = slot * self.slot_size + ERROR_AT
        self.mm[off:off + ERROR_SIZE] = data.ljust(ERROR_SIZE, b"\0")

    def error(self, slot: int) -> str:
        off = slot * self.slot_size + ERROR_AT
        return bytes(self.mm[off:off + ERROR_SIZE]).rstrip(b"\0").decode("utf-8", "replace")

    def core_offset(self, slot: int, core: int) -> int:
        return slot * self.slot_size + WORKER_SIZE + core * CORE_SIZE

    # -- read by the master --
    def worker(self, slot: int) -> dict:
        off = slot * self.slot_size
        pid, last_spawn, respawns, generation, paused, accepting, ready = WORKER.unpack_from(self.mm, off)
        cores = []
        for c in range(self.cores):
            coff = off + WORKER_SIZE + c * CORE_SIZE
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

    def add_tx(self, sent: int) -> None:
        """Bytes of a response that went out after its request ended (a file sent from the loop)."""
        self.tx += sent
        CORE_END.pack_into(self.mm, self.off, self.requests, self.exceptions, self.tx,
                           self.rt_sum, 0.0)
