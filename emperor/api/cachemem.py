"""One cache in shared memory: the table every worker of a vassal reads and writes.

The master creates it before the workers fork (a memfd, or the `store=` file), so all of
them map the same pages. A graceful reload re-executes the master with the memfd inherited
(emperor/master/spooler.py hands it over), and the new image maps it again: the cache is
kept, where uWSGI starts every deploy cold unless `store=` is set.

Layout, after uWSGI's core/cache.c (same bounds, not the same bytes): a header; a hash
table of `hashsize` item numbers (chains through the items); a stack of free item numbers;
`items` records (hash, next, prev, key size, flags, value size, expiry, key); then one
block of `blocksize` bytes per item for its value. Item 0 is never used, as in uWSGI, so a
cache of N items holds N - 1 keys.

Writers take a robust process-shared mutex in the header (emperor/api/shmlock.py) and bump
a sequence number before and after their change (odd while writing). Readers take no lock
on x86 (a seqlock): they read the number, look up, read it again, and retry when it moved
or was odd (x86 keeps stores and loads in order, which that relies on; elsewhere readers
take the mutex). A torn read is retried, never returned; a chain walk is bounded, so a
reader racing a writer cannot loop. Measured in docs/benchmarks.md ("The cache").
"""
from __future__ import annotations

import mmap
import os
import platform
import struct
import time
import zlib

from emperor.api.cachespec import CacheSpec
from emperor.api.shmlock import ShmMutex

SEQLOCK = platform.machine() in ("x86_64", "AMD64", "i386", "i686")

MAGIC = b"EMPCACH2"
_HEAD = struct.Struct("<8sQQIIQQ")        # magic, items, blocksize, keysize, hashsize, free_top, n_items
HEAD_SIZE = 128                           # the fields, the sequence number (48), the mutex (64)
_SEQ = 48
_MUTEX = 64
_TORN = object()
_ITEM = struct.Struct("<IIIHHQQ")         # hash, next, prev, keysize, flags, valsize, expires
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_FREE_TOP = 32                            # offset of free_top in the header
_N_ITEMS = 40


def _layout(items: int, blocksize: int, keysize: int, hashsize: int) -> tuple[int, int, int, int]:
    """(hash table, free stack, records, data) offsets and the total size."""
    table = HEAD_SIZE
    free = table + 4 * hashsize
    records = free + 4 * items
    data = -(-(records + items * (_ITEM.size + keysize)) // mmap.PAGESIZE) * mmap.PAGESIZE
    return free, records, data, data + items * blocksize


class Cache:
    """A cache mapped in this process; the methods return what uWSGI's C functions return."""

    def __init__(self, spec: CacheSpec, fd: int, fresh: bool, new_lock: bool = False) -> None:
        self.spec = spec
        self.name = spec.name
        self.fd = fd
        self.items, self.blocksize, self.keysize, self.hashsize = spec.geometry()
        self.free, self.records, self.data, size = _layout(*spec.geometry())
        self.isize = _ITEM.size + self.keysize
        self.math_initial = spec.math_initial
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.mutex = ShmMutex(self.mm, _MUTEX)
        self.seq = 0                 # the odd number this process's writer set (under the mutex)
        self.full_said = -1.0
        if fresh or new_lock:
            self.mutex.init()
            _U64.pack_into(self.mm, _SEQ, 0)
        if fresh:
            self.clear()

    # ---------- creation ----------
    @classmethod
    def create(cls, spec: CacheSpec, fd: int | None = None, first: bool = True) -> tuple[Cache, str]:
        """A cache for `spec`: the inherited memfd `fd`, the store file, or a new memfd.
        `first`: no other process of the vassal runs (not a reload), so a store file's mutex
        is made new (a crash may have left it held by a process that no longer exists).

        Returns it with what happened ("kept N items", "new"), for the master's log line."""
        size = _layout(*spec.geometry())[3]
        same = False
        if spec.store:
            if fd is not None:
                os.close(fd)        # it was a memfd cache before this reload
            fd = os.open(spec.store, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            same = _matches(fd, spec, size)
            if not same:
                # another geometry, or not ours: a new file in its place (never truncated: the
                # previous generation may still map the old one, and would die of SIGBUS)
                os.close(fd)
                temp = f"{spec.store}.new"
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.ftruncate(fd, size)
                os.rename(temp, spec.store)
        elif fd is not None:
            same = _matches(fd, spec, size)
            if not same:            # its line changed: a new one (the old generation keeps its own)
                os.close(fd)
                fd = None
        if fd is None:
            fd = os.memfd_create(f"emperor-cache-{spec.name}", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        cache = cls(spec, fd, fresh=not same, new_lock=bool(spec.store) and first)
        return cache, (f"kept {cache.count()} item(s)" if same else "new")

    def count(self) -> int:
        return int(_HEAD.unpack_from(self.mm, 0)[6])

    # ---------- locking ----------
    def _wlock(self) -> None:
        """The mutex, and the sequence number made odd: readers retry until it is even again."""
        if self.mutex.acquire():
            from emperor import log as logmod

            logmod.log(f'cache "{self.name}": a process died while writing it; going on')
        seq = _U64.unpack_from(self.mm, _SEQ)[0]
        self.seq = seq + 2 if seq & 1 else seq + 1     # odd: its writer died mid-change
        _U64.pack_into(self.mm, _SEQ, self.seq)

    def _wunlock(self) -> None:
        _U64.pack_into(self.mm, _SEQ, self.seq + 1)
        self.mutex.release()

    def _read(self, key: bytes, value: bool) -> bytes | bool | None:
        """get / exists: lock-free (seqlock) on x86, else under the mutex."""
        h = zlib.crc32(key)
        if SEQLOCK:
            mm = self.mm
            for _ in range(100):
                s1 = _U64.unpack_from(mm, _SEQ)[0]
                if s1 & 1:
                    os.sched_yield()
                    continue
                got: object
                try:
                    got = self._lookup(key, h, value)
                except (struct.error, ValueError):
                    got = _TORN
                if got is not _TORN and _U64.unpack_from(mm, _SEQ)[0] == s1:
                    return got          # type: ignore[return-value]
        self._wlock()      # a writer keeps it odd (or died): wait for it, as a writer would
        try:
            return self._lookup(key, h, value)
        finally:
            self._wunlock()

    def _lookup(self, key: bytes, h: int, value: bool) -> bytes | bool | None:
        idx = self._find(key, h)
        if not value:
            return bool(idx)
        if not idx:
            return None
        valsize = _ITEM.unpack_from(self.mm, self.records + idx * self.isize)[5]
        if valsize > self.blocksize:
            raise ValueError("torn")
        start = self.data + idx * self.blocksize
        return self.mm[start:start + valsize]

    # ---------- lookups (callers hold the mutex, or check the sequence number) ----------
    def _find(self, key: bytes, h: int) -> int:
        mm, records, isize, ks = self.mm, self.records, self.isize, len(key)
        idx = _U32.unpack_from(mm, HEAD_SIZE + 4 * (h % self.hashsize))[0]
        rounds = 0
        while idx:
            rounds += 1
            if idx >= self.items or rounds > self.items:
                raise ValueError("torn")    # only a reader racing a writer sees this
            off = records + idx * isize
            ih, nxt, _, iks, _, _, exp = _ITEM.unpack_from(mm, off)
            if ih == h and iks == ks and mm[off + 32:off + 32 + ks] == key:
                return 0 if exp and exp <= time.time() else idx
            idx = nxt
        return 0

    # ---------- what the uwsgi module calls ----------
    def get(self, key: bytes) -> bytes | None:
        return self._read(key, True)      # type: ignore[return-value]

    def exists(self, key: bytes) -> bool:
        return bool(self._read(key, False))

    def set(self, key: bytes, value: bytes, expires: int = 0, update: bool = False) -> bool:
        """uwsgi_cache_set2 without math: False when set finds the key, or nothing fits."""
        if not key or not value or len(key) > self.keysize or len(value) > self.blocksize:
            return False
        h = zlib.crc32(key)
        expires = int(time.time()) + expires if expires else 0
        self._wlock()
        try:
            idx = self._find(key, h)
            if idx and not update:
                return False
            if not idx:
                idx = self._new(key, h)
                if not idx:
                    return False
            self._write(idx, value, expires)
            return True
        finally:
            self._wunlock()

    def math(self, key: bytes, delta: int, op: str, expires: int = 0) -> bool:
        """cache_inc/dec/mul/div: on the 8-byte number stored at the key (created from
        math_initial if absent); the expiry of an existing key is kept (FIXEXPIRE)."""
        if not key or len(key) > self.keysize or self.blocksize < 8:
            return False
        h = zlib.crc32(key)
        self._wlock()
        try:
            idx = self._find(key, h)
            start = self.data + idx * self.blocksize
            if idx:
                num = _I64.unpack_from(self.mm, start)[0]
                exp = _ITEM.unpack_from(self.mm, self.records + idx * self.isize)[6]
            else:
                idx = self._new(key, h)
                if not idx:
                    return False
                num, exp = self.math_initial, int(time.time()) + expires if expires else 0
            self._write(idx, _I64.pack(_apply(num, delta, op)), exp)
            return True
        finally:
            self._wunlock()

    def delete(self, key: bytes) -> bool:
        h = zlib.crc32(key)
        self._wlock()
        try:
            idx = self._find(key, h)
            if idx:
                self._remove(idx)
            return bool(idx)
        finally:
            self._wunlock()

    def keys(self) -> list[bytes]:
        out = []
        now = time.time()
        self._wlock()
        try:
            for idx in range(1, self.items):
                off = self.records + idx * self.isize
                ks, exp = _ITEM.unpack_from(self.mm, off)[3], _ITEM.unpack_from(self.mm, off)[6]
                if ks and not (exp and exp <= now):
                    out.append(self.mm[off + 32:off + 32 + ks])
        finally:
            self._wunlock()
        return out

    def clear(self) -> bool:
        self._wlock()
        try:
            mm = self.mm
            mm[HEAD_SIZE:self.data] = bytes(self.data - HEAD_SIZE)
            for n, idx in enumerate(range(self.items - 1, 0, -1)):
                _U32.pack_into(mm, self.free + 4 * n, idx)
            _HEAD.pack_into(mm, 0, MAGIC, self.items, self.blocksize, self.keysize, self.hashsize,
                            self.items - 1, 0)
            return True
        finally:
            self._wunlock()

    # ---------- the table (callers hold the exclusive lock) ----------
    def _new(self, key: bytes, h: int) -> int:
        """A free item for `key`, linked at the head of its chain; 0 when full (after a sweep
        of the expired ones, what uWSGI's sweeper would have freed by then)."""
        mm = self.mm
        top = _U64.unpack_from(mm, _FREE_TOP)[0]
        if not top:
            self._sweep()
            top = _U64.unpack_from(mm, _FREE_TOP)[0]
            if not top:
                self._full()
                return 0
        idx = _U32.unpack_from(mm, self.free + 4 * (top - 1))[0]
        _U64.pack_into(mm, _FREE_TOP, top - 1)
        slot = HEAD_SIZE + 4 * (h % self.hashsize)
        head = _U32.unpack_from(mm, slot)[0]
        off = self.records + idx * self.isize
        _ITEM.pack_into(mm, off, h, head, 0, len(key), 0, 0, 0)
        mm[off + 32:off + 32 + len(key)] = key
        if head:
            _U32.pack_into(mm, self.records + head * self.isize + 8, idx)   # head.prev = idx
        _U32.pack_into(mm, slot, idx)
        _U64.pack_into(mm, _N_ITEMS, _U64.unpack_from(mm, _N_ITEMS)[0] + 1)
        return idx

    def _full(self) -> None:
        """uWSGI's cache_full line, at most once a second per process (ignore_full: never)."""
        now = time.monotonic()
        if not self.spec.ignore_full and now - self.full_said >= 1.0:
            self.full_said = now
            from emperor import log as logmod

            logmod.log(f'*** DANGER cache "{self.name}" is FULL !!! ***')

    def _write(self, idx: int, value: bytes, expires: int) -> None:
        start = self.data + idx * self.blocksize
        self.mm[start:start + len(value)] = value
        off = self.records + idx * self.isize
        h, nxt, prv, ks, fl, _, _ = _ITEM.unpack_from(self.mm, off)
        _ITEM.pack_into(self.mm, off, h, nxt, prv, ks, fl, len(value), expires)

    def _remove(self, idx: int) -> None:
        mm = self.mm
        off = self.records + idx * self.isize
        h, nxt, prv = _ITEM.unpack_from(mm, off)[:3]
        if prv:
            _U32.pack_into(mm, self.records + prv * self.isize + 4, nxt)
        else:
            _U32.pack_into(mm, HEAD_SIZE + 4 * (h % self.hashsize), nxt)
        if nxt:
            _U32.pack_into(mm, self.records + nxt * self.isize + 8, prv)
        _ITEM.pack_into(mm, off, 0, 0, 0, 0, 0, 0, 0)
        top = _U64.unpack_from(mm, _FREE_TOP)[0]
        _U32.pack_into(mm, self.free + 4 * top, idx)
        _U64.pack_into(mm, _FREE_TOP, top + 1)
        _U64.pack_into(mm, _N_ITEMS, _U64.unpack_from(mm, _N_ITEMS)[0] - 1)

    def _sweep(self) -> None:
        now = time.time()
        for idx in range(1, self.items):
            off = self.records + idx * self.isize
            item = _ITEM.unpack_from(self.mm, off)
            if item[3] and item[6] and item[6] <= now:
                self._remove(idx)

    def sync(self) -> None:
        """A store= cache to its file now (the kernel would write it back anyway)."""
        try:
            self.mm.flush()
        except (OSError, ValueError):
            pass


def _matches(fd: int, spec: CacheSpec, size: int) -> bool:
    if os.fstat(fd).st_size != size:
        return False
    head = os.pread(fd, _HEAD.size, 0)
    if len(head) < _HEAD.size:
        return False
    magic, items, blocksize, keysize, hashsize, _, _ = _HEAD.unpack(head)
    return magic == MAGIC and (items, blocksize, keysize, hashsize) == spec.geometry()


def _apply(num: int, delta: int, op: str) -> int:
    """int64 arithmetic as C does it: wraps around, division truncates, / 0 gives 0 (cache.c)."""
    if op == "inc":
        num += delta
    elif op == "dec":
        num -= delta
    elif op == "mul":
        num *= delta
    else:
        num = 0 if delta == 0 else abs(num) // abs(delta) * (1 if (num < 0) == (delta < 0) else -1)
    return (num + (1 << 63)) % (1 << 64) - (1 << 63)
