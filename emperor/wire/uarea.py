"""The master -> worker wire of the `uwsgi` module: uWSGI signals, user harakiri, locks.

Shared memory, a memfd and a pipe of a master and the workers it forks, made only when
the application uses the `uwsgi` module (emperor/master/usignals.py), so a vassal that
never imports it has no such descriptor and no such memory:

- per slot, SIGNALS counters (u32): the master adds one to slot S's counter N and sends
  the worker DELIVER; the worker runs handler N as many times as its counter moved since
  it last looked. Only the master writes a counter, only its worker reads it: no lock,
  and a signal is never lost to a race, only to the worker's death (as in uWSGI).
- per slot, the user harakiri deadline (f64, CLOCK_MONOTONIC, 0: none) that
  `uwsgi.set_user_harakiri()` writes and the master enforces.
- per slot, the PID the counters are for: the master zeroes them before its first signal
  to a new worker of the slot, so a worker starts from zero and never runs a handler for
  what was raised for the worker it replaced, nor misses one raised before it looked.
- a pipe, worker -> master: what the app asks of the master (register a signal, raise one, a
  timer...) as one line of JSON per write, at most MAX_MESSAGE bytes: below PIPE_BUF, so
  never interleaved with another worker's; a full pipe refuses (the app gets an error).
- `lock(n)`: POSIX byte-range locks on byte n of the file (fcntl.lockf). They belong to
  the process, so a worker that dies holding one releases it (a futex would stay locked),
  and the locks survive any number of workers forking from the master.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import signal
import struct

SIGNALS = 256          # uWSGI's signal numbers are a uint8_t
MAX_LOCKS = 64         # `locks = N` (uWSGI: 1 + N locks; lock 0 is the default)
DELIVER = signal.SIGRTMIN + 2   # master -> worker: look at your counters (worker/process.py)
_COUNTER = struct.Struct("<I")
_DEADLINE = struct.Struct("<d")
_PID = struct.Struct("<q")
MAX_MESSAGE = 2048
DEADLINE_AT = SIGNALS * _COUNTER.size
PID_AT = DEADLINE_AT + _DEADLINE.size
SLOT_SIZE = PID_AT + _PID.size


class Area:
    """The shared file of one master; inherited by every worker it forks."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        # the counters: anonymous shared memory, inherited by fork (an mmap of the file would
        # hold a descriptor of its own); the file is only what the locks are on
        self.mm = mmap.mmap(-1, max(slots, 1) * SLOT_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.fd = os.memfd_create("emperor-uwsgi", os.MFD_CLOEXEC)   # a new master image makes its own
        self.asks, self.ask_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.partial = b""

    def close(self) -> None:
        self.mm.close()
        for fd in (self.fd, self.asks, self.ask_w):
            os.close(fd)

    # -- what a worker asks of the master --
    def send(self, message: bytes) -> bool:
        if len(message) >= MAX_MESSAGE or b"\n" in message:
            return False
        try:
            return os.write(self.ask_w, message + b"\n") > 0
        except OSError:   # full: the master is behind by 64 KiB of asks
            return False

    def receive(self) -> list[bytes]:
        """The messages waiting (master side)."""
        chunks = [self.partial]
        while True:
            try:
                data = os.read(self.asks, 65536)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            chunks.append(data)
        *lines, self.partial = b"".join(chunks).split(b"\n")
        self.partial = self.partial[-MAX_MESSAGE:]
        return lines

    # -- signals: the master writes, the slot's worker reads --
    def bump(self, slot: int, num: int, pid: int) -> None:
        base = slot * SLOT_SIZE
        if _PID.unpack_from(self.mm, base + PID_AT)[0] != pid:   # a new worker in the slot
            self.mm[base:base + DEADLINE_AT] = bytes(DEADLINE_AT)
            _PID.pack_into(self.mm, base + PID_AT, pid)
        off = base + num * _COUNTER.size
        (n,) = _COUNTER.unpack_from(self.mm, off)
        _COUNTER.pack_into(self.mm, off, (n + 1) & 0xFFFFFFFF)

    def counters(self, slot: int) -> tuple[int, ...]:
        return struct.unpack_from(f"<{SIGNALS}I", self.mm, slot * SLOT_SIZE)

    # -- user harakiri: the slot's worker writes, the master reads --
    def set_deadline(self, slot: int, when: float) -> None:
        _DEADLINE.pack_into(self.mm, slot * SLOT_SIZE + DEADLINE_AT, when)

    def deadline(self, slot: int) -> float:
        return _DEADLINE.unpack_from(self.mm, slot * SLOT_SIZE + DEADLINE_AT)[0]

    # -- locks: byte n of the file --
    def lock(self, n: int, blocking: bool = True) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB), 1, n, os.SEEK_SET)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def unlock(self, n: int) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, n, os.SEEK_SET)

    def held_elsewhere(self, n: int) -> bool:
        """Another process holds lock n (F_GETLK: nothing is taken to find out)."""
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, n, 1, 0)
        answer = fcntl.fcntl(self.fd, fcntl.F_GETLK, query)
        return struct.unpack("hhqqi", answer)[0] != fcntl.F_UNLCK
