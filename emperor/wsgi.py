"""WSGI (PEP 3333): the environ's streams, start_response and response framing.

One function, `run`, drives one request through the application and writes
the response. Framing is decided once, when the head goes out: the app's own
Content-Length, else a length we can compute (a list body), else chunked
(HTTP/1.1), else close-delimited. Whatever happens, `close()` on the result is
called and the connection is only reused if the exchange was clean.
"""
from __future__ import annotations

import os
import stat
import time
import traceback
from email.utils import formatdate
from typing import Any, Callable

from emperor.log import log
from emperor.protocols.http import ChunkedDecoder, HTTPError, error_response

_NO_BODY_STATUS = (204, 304)


class ClientGone(Exception):
    """The client closed or stalled past socket-timeout mid-request."""


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
        lines, total = [], 0
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

    def drain(self, limit: int = 1 << 20) -> bool:
        """Discard what the app left unread; True if the connection can carry another request."""
        if self._eof:
            return self._ok
        if self._expect:
            return False  # the client may or may not send the body now: ambiguous
        try:
            seen = 0
            while self._fill(65536):
                seen += len(self._buf)
                self._buf = b""
                if seen > limit:
                    return False
        except (ClientGone, HTTPError, OSError):
            return False
        return True


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

    def drain(self, limit: int = 0) -> bool:
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

    def writelines(self, seq) -> None:
        for s in seq:
            self.write(s)

    def flush(self) -> None:
        if self._partial:
            log(self._partial)
            self._partial = ""


class FileWrapper:
    """`wsgi.file_wrapper`: recognised by `run`, which then uses sendfile(2)."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


_date_cache = [0, ""]


def http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


class Outcome:
    """What the worker needs to know after a request: for the log, the stats, the connection."""

    __slots__ = ("status", "sent", "keep_alive", "failed")

    def __init__(self) -> None:
        self.status = 0
        self.sent = 0
        self.keep_alive = False
        self.failed = False


def _bad_header(s: str) -> bool:
    return "\r" in s or "\n" in s or "\0" in s


def run(app: Callable, environ: dict, conn: Any, *, version: str, keep_alive: bool,
        http11: bool, allow_chunked: bool = True) -> Outcome:
    """Call the app for one request and write its response to `conn`.

    `version` is the status line's protocol; `http11` says the client speaks
    1.1 (chunked allowed); `keep_alive` is what the request asked for.
    """
    out = Outcome()
    head_only = environ["REQUEST_METHOD"] == "HEAD"
    state: list = [None, None, False]  # status, headers, head sent
    framing = {"length": None, "chunked": False, "close": not keep_alive}

    def start_response(status: str, headers: list, exc_info=None):
        if exc_info:
            try:
                if state[2]:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif state[0] is not None:
            raise AssertionError("start_response called twice without exc_info")
        if (not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit()
                or status[3] != " " or _bad_header(status)):
            raise ValueError(f"invalid WSGI status {status!r}")
        for item in headers:
            name, value = item
            if (not isinstance(name, str) or not isinstance(value, str)
                    or _bad_header(name) or _bad_header(value) or ":" in name):
                raise ValueError(f"invalid WSGI header {item!r}")
        state[0], state[1] = status, headers
        return write

    def send_head(total: int | None) -> None:
        status, headers = state[0], state[1]
        code = int(status[:3])
        out.status = code
        no_body = head_only or code in _NO_BODY_STATUS or code < 200
        lines = [f"{version} {status}\r\n"]
        has_date = False
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"invalid Content-Length {value!r} from the application")
                framing["length"] = int(value)
            elif lname == "connection":
                if "close" in value.lower():
                    framing["close"] = True
                continue
            elif lname == "transfer-encoding":
                continue  # framing is ours to decide
            elif lname == "date":
                has_date = True
            lines.append(f"{name}: {value}\r\n")
        if framing["length"] is None and not no_body:
            if total is not None:
                framing["length"] = total
                lines.append(f"Content-Length: {total}\r\n")
            elif http11 and allow_chunked:
                framing["chunked"] = True
                lines.append("Transfer-Encoding: chunked\r\n")
            else:
                framing["close"] = True
        elif framing["length"] is None and head_only and total is not None and total > 0:
            lines.append(f"Content-Length: {total}\r\n")
        if not has_date:
            lines.append(f"Date: {http_date()}\r\n")
        if "HTTP_EXPECT" in environ and getattr(environ["wsgi.input"], "_expect", False):
            # no 100 Continue went out: whether the body follows is ambiguous, so this is the last response
            framing["close"] = True
        if framing["close"]:
            lines.append("Connection: close\r\n")
        elif not http11:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        state[2] = True
        framing["no_body"] = no_body
        framing["left"] = None if no_body else framing["length"]
        return "".join(lines).encode("latin-1")

    def body_bytes(data: bytes) -> bytes:
        if framing.get("no_body") or not data:
            return b""
        left = framing["left"]
        if left is not None:
            if len(data) > left:
                data = data[:left]
                framing["close"] = True  # the app lied about its length
            framing["left"] = left - len(data)
        elif framing["chunked"]:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def write(data: bytes) -> None:
        if state[0] is None:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("WSGI write() takes bytes")
        chunk = b""
        if not state[2]:
            chunk = send_head(None)
        chunk += body_bytes(data)
        if chunk:
            out.sent += conn.sendall(chunk)

    result = None
    try:
        result = app(environ, start_response)
        real = _real_file(result.filelike) if isinstance(result, FileWrapper) else None
        if real is not None:
            if state[0] is None:
                raise AssertionError("application returned without calling start_response")
            offset, size = real
            out.sent += conn.sendall(send_head(size))
            count = size if framing["length"] is None else min(framing["length"], size)
            if not framing["no_body"] and count:
                sent = conn.sendfile(result.filelike, offset, count)
                out.sent += sent
                if sent < count:
                    framing["close"] = True  # the file shrank under us
            framing["left"] = 0
            if framing["length"] is not None and count < framing["length"] and not framing["no_body"]:
                framing["close"] = True
        elif isinstance(result, (list, tuple)):
            body = b"".join(result)
            if state[0] is None:
                raise AssertionError("application returned without calling start_response")
            chunk = send_head(len(body)) if not state[2] else b""
            chunk += body_bytes(body)
            if framing["chunked"] and state[2]:
                chunk += b"0\r\n\r\n"
                framing["chunked"] = False
            if chunk:
                out.sent += conn.sendall(chunk)
        else:
            for data in result:
                if not data:
                    continue
                if not state[2]:
                    if state[0] is None:
                        raise AssertionError("application yielded before start_response")
                    out.sent += conn.sendall(send_head(None) + body_bytes(data))
                else:
                    piece = body_bytes(data)
                    if piece:
                        out.sent += conn.sendall(piece)
            if not state[2]:
                if state[0] is None:
                    raise AssertionError("application returned without calling start_response")
                out.sent += conn.sendall(send_head(0))
        if framing["chunked"] and not framing.get("no_body"):
            out.sent += conn.sendall(b"0\r\n\r\n")
        if framing.get("left"):
            framing["close"] = True  # fewer bytes than announced: the client must see the end
    except ClientGone:
        out.failed = True
        framing["close"] = True
    except HTTPError as e:
        # a malformed request body, met while the app read wsgi.input
        out.failed = True
        framing["close"] = True
        log(f"request body refused: {e.status} {e.detail}")
        if not state[2]:
            out.status = e.status
            try:
                out.sent += conn.sendall(error_response(e.status))
            except (ClientGone, OSError):
                pass
    except Exception:
        out.failed = True
        framing["close"] = True
        log("exception in the application:\n" + traceback.format_exc().rstrip())
        if not state[2]:
            out.status = 500
            try:
                out.sent += conn.sendall(_internal_error(version))
            except (ClientGone, OSError):
                pass
    finally:
        if hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                out.failed = True
                framing["close"] = True
                log("exception in the application's close():\n" + traceback.format_exc().rstrip())
    out.keep_alive = not framing["close"]
    return out


def _internal_error(version: str) -> bytes:
    body = b"500 Internal Server Error\n"
    return (f"{version} 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _real_file(f: Any) -> tuple[int, int] | None:
    """(offset, size) of a regular file that sendfile(2) can serve, else None."""
    try:
        st = os.fstat(f.fileno())
        offset = f.tell() if hasattr(f, "tell") else 0
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return offset, max(st.st_size - offset, 0)


def base_environ(server_name: str, server_port: str, multithread: bool, scheme: str = "http") -> dict:
    """The per-listener part of every environ, built once."""
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.errors": Errors(),
        "wsgi.file_wrapper": FileWrapper,
        # wsgi.input ends at the body's end (Content-Length or chunked), so frameworks
        # may read to EOF: what Werkzeug needs for a body nginx de-chunked for us
        "wsgi.input_terminated": True,
    }
