"""Worker -> master messages over one pipe: fixed 8-byte records, atomic below PIPE_BUF.

A pipe rather than signals because a message carries who sent it and cannot
be merged with another, and because the master already waits on descriptors.
"""
from __future__ import annotations

import os
import struct

RECORD = struct.Struct("<cxHI")
READY = b"R"      # a worker is accepting
RELOAD = b"H"     # the application called emperor.reload()
RETIRING = b"M"   # max-requests reached: the worker leaves on purpose
LOYAL = b"L"      # a worker served its first request
ENV = "EMPEROR_NOTIFY_FD"


def send(fd: int, kind: bytes, slot: int = 0) -> None:
    try:
        os.write(fd, RECORD.pack(kind, slot, os.getpid()))
    except OSError:
        pass


def parse(data: bytes) -> list[tuple[bytes, int, int]]:
    n = len(data) - len(data) % RECORD.size
    return [RECORD.unpack_from(data, i) for i in range(0, n, RECORD.size)]


def send_reload_request() -> bool:
    fd = os.environ.get(ENV)
    if not fd:
        return False
    try:
        os.write(int(fd), RECORD.pack(RELOAD, 0, os.getpid()))
    except (OSError, ValueError):
        return False
    return True
