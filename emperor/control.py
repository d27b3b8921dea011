"""The emperor's control socket: a UNIX socket (mode 0600) that answers one JSON document.

One request line in, one JSON document out, then close: `status` (the default,
also an empty line) returns the emperor's table; `restart NAME` clears a
backoff and starts or reloads that vassal. Requests are tiny and answered from
the emperor's loop without blocking it: a client gets at most `TIMEOUT`.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Callable

from emperor import paths

TIMEOUT = 2.0


class ControlServer:
    def __init__(self, path: str, handle: Callable[[str], dict]) -> None:
        self.path = path
        self.handle = handle
        paths.ensure_runtime_dir() if os.path.dirname(path) == paths.runtime_dir() else None
        _remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                conn.settimeout(TIMEOUT)
                line = _read_line(conn)
                doc = self.handle(line.strip())
                conn.sendall(json.dumps(doc).encode() + b"\n")
            except (OSError, ValueError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _read_line(conn: socket.socket) -> str:
    data = b""
    while b"\n" not in data and len(data) < 4096:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


def _remove_stale(path: str) -> None:
    """Remove a socket file nobody answers on; refuse to start over a live emperor."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"another emperor already answers on {path}")


def query(path: str, request: str = "status", timeout: float = TIMEOUT) -> dict:
    """Ask the emperor at `path`; raises OSError (nobody there) or ValueError (bad answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)
