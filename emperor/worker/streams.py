"""The request body and the error stream of the WSGI environ (`wsgi.input`, `wsgi.errors`).

`wsgi.input` reads the body lazily from the connection, so `Expect: 100-continue`
is answered only when the application really wants the body and a large upload
is never buffered whole; what the application leaves unread is drained within
bounds before the connection carries another request.
"""
from __future__ import annotations

import time

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

from emperor.log import log
from emperor.worker.protocols.http import ChunkedDecoder, HTTPError


class ClientGone(Exception):
    """The client closed or stalled past socket-timeout mid-request; `sent`: the bytes of the
    interrupted send that did go out."""

    def __init__(self, why: str, sent: int = 0) -> None:
        super().__init__(why)
        self.sent = sent


class Input:
    """`wsgi.input`: the request body, read lazily from the connection.

    Lazy so that `Expect: 100-continue` is answered only when the application
    really wants the body, and so that a large upload is never buffered whole.
    """

    _ok = True  # set False on the instance once the body turned out malformed or cut short

    def __init__(self, conn: Any, length: int, chunked: bool, expect_continue: bool) -> None:
        self._conn = conn
        self._remaining = length
        self._decoder = ChunkedDecoder() if chunked else None
        self._buf = b""
        self._eof = not chunked and length == 0
        self._expect = expect_continue

    def _fail(self, e: Exception) -> None:
        self._eof = True
        self._ok = False
        raise e

    def _fill(self, want: int) -> bool:
        if self._eof:
            return False
        conn = self._conn
        if self._expect:
            self._expect = False
            if not conn.buf:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._decoder is None:
            try:
                raw = conn.take(min(max(want, 8192), self._remaining))
            except ClientGone as e:
                self._fail(e)
            self._remaining -= len(raw)
            self._buf += raw
            self._eof = self._remaining == 0
        else:
            try:
                self._buf += self._decoder.feed(conn.take(65536))
            except (ClientGone, HTTPError) as e:
                self._fail(e)
            if self._decoder.done:
                conn.buf = self._decoder.leftover() + conn.buf
                self._eof = True
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill(65536):
                pass
            out, self._buf = self._buf, b""
            return out
        while len(self._buf) < size and self._fill(size - len(self._buf)):
            pass
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 and (limit is None or i < limit):
                end = i + 1
                break
            if limit is not None and len(self._buf) >= limit:
                end = limit
                break
            if not self._fill(8192):
                end = len(self._buf) if limit is None else min(limit, len(self._buf))
                break
        out, self._buf = self._buf[:end], self._buf[end:]
        return out

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self, limit: int, seconds: float) -> bool:
        """Discard what the app left unread; True if the connection can carry another request.

        Bounded in bytes and in time as a whole: a client that trickles a body nobody reads
        must not hold the worker (the connection is closed instead, as gunicorn and uWSGI do).
        """
        if self._eof:
            return self._ok
        if self._expect:
            return False  # the client may or may not send the body now: ambiguous
        conn = self._conn
        saved = conn.timeout
        deadline = time.monotonic() + seconds
        try:
            seen = 0
            while True:
                conn.timeout = deadline - time.monotonic()  # each wait gets what is left
                if conn.timeout <= 0 or not self._fill(65536):
                    break
                seen += len(self._buf)
                self._buf = b""
                if seen > limit:
                    return False
        except (ClientGone, HTTPError, OSError):
            return False
        finally:
            conn.timeout = saved
        return self._eof and self._ok


class EmptyInput:
    """`wsgi.input` of a request without a body: stateless, so one instance serves all."""

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self):
        return iter(())

    def drain(self, limit: int = 0, seconds: float = 0.0) -> bool:
        return True


EMPTY_INPUT = EmptyInput()


class Errors:
    """`wsgi.errors`: whole lines into the log."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, s: str) -> int:
        text = self._partial + s
        *lines, self._partial = text.split("\n")
        for line in lines:
            log(line)
        return len(s)

    def writelines(self, seq: Iterable[str]) -> None:
        for s in seq:
            self.write(s)

    def flush(self) -> None:
        if self._partial:
            log(self._partial)
            self._partial = ""
