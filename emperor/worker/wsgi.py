"""WSGI (PEP 3333): start_response and response framing (the environ's streams: streams.py).

One function, `run`, drives one request through the application and writes
the response. Framing is decided once, when the head goes out: the app's own
Content-Length, else a length we can compute (a list body), else chunked
(HTTP/1.1), else close-delimited. Whatever happens, `close()` on the result is
called and the connection is only reused if the exchange was clean.

A regular file (`wsgi.file_wrapper`) is not sent here to the end: after the head
and what sendfile(2) puts in the socket at once, the rest is left in
`Exchange.pending`, and the worker's loop sends it as the client takes it
(emperor/worker/offload.py), then calls the result's `close()`.
"""
from __future__ import annotations

import os
import socket
import stat
import time
import traceback
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor.log import log
from emperor.worker.protocols.http import HTTPError, error_response, response
from emperor.worker.streams import ClientGone, Errors

_NO_BODY_STATUS = (204, 304)
_NOWAIT = socket.MSG_DONTWAIT
_MORE = getattr(socket, "MSG_MORE", 0)
SMALL_FILE = 32 << 10  # a file response up to this size is read and sent with its head


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


_date_cache: list = [0, ""]
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date() -> str:
    """IMF-fixdate for the Date header, made once a second (and without importing `email`)."""
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache[0] = now
        _date_cache[1] = "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
            _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)
    return _date_cache[1]


class Exchange:
    """One request's response side: start_response, write, and the framing decided once.

    Also what the worker reads afterwards (status, sent, keep_alive, failed),
    for the request log, the scoreboard and the connection's fate.
    """

    __slots__ = ("conn", "version", "http11", "allow_chunked", "head_only", "expect_pending",
                 "status_line", "headers", "head_sent", "length", "left", "chunked", "close",
                 "no_body", "status", "sent", "failed", "keep_alive", "cut", "raised", "head_size", "crowded", "via_file",
                 "pending", "result")

    def __init__(self, conn: Any, version: str, keep_alive: bool, http11: bool, allow_chunked: bool,
                 head_only: bool, expect_pending: Any, crowded: Callable[[], bool] | None = None) -> None:
        self.conn = conn
        self.crowded = crowded           # with cheaper: should this response give the connection up?
        self.version = version
        self.http11 = http11
        self.allow_chunked = allow_chunked
        self.head_only = head_only
        self.expect_pending = expect_pending  # the wsgi.input of an Expect request, else None
        self.status_line: str | None = None
        self.headers: list = []
        self.head_sent = False
        self.length: int | None = None   # what the head announced
        self.left: int | None = None     # body bytes still owed under that length
        self.chunked = False
        self.close = not keep_alive
        self.no_body = False
        self.status = 0
        self.sent = 0
        self.failed = False
        self.keep_alive = False
        self.cut = ""                    # why the client did not get the whole response
        self.raised = False              # the application raised (a 500, or a cut response)
        self.head_size = 0
        self.pending: tuple[int, int, int] | None = None  # a file's (descriptor, offset, bytes) still to send
        self.result: Any = None          # the application's result while `pending` goes out
        self.via_file = False            # the body is a file sent with sendfile(2) (log-sendfile)

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status_line is not None:
            raise AssertionError("start_response called twice without exc_info")
        if (not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit()
                or status[3] != " "):
            raise ValueError(f"invalid WSGI status {status!r}")
        if not isinstance(headers, list):
            raise TypeError("WSGI response headers must be a list")
        self.status_line, self.headers = status, headers
        return self.write

    def head(self, total: int | None) -> bytes:
        """The response head; decides the framing. `total`: the body length, if known."""
        status = self.status_line
        if status is None:
            raise AssertionError("application returned or yielded before calling start_response")
        code = int(status[:3])
        self.status = code
        no_body = self.head_only or code in _NO_BODY_STATUS or code < 200
        parts = [self.version, " ", status, "\r\n"]
        has_date = False
        for item in self.headers:
            name, value = item
            lname = name.lower()
            if lname == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise ValueError(f"invalid Content-Length {value!r} from the application")
                self.length = int(value)
            elif lname == "connection":
                if "close" in value.lower():
                    self.close = True
                continue
            elif lname == "transfer-encoding":
                continue  # framing is ours to decide
            elif lname == "date":
                has_date = True
            elif ":" in name:
                raise ValueError(f"invalid WSGI header name {name!r}")
            parts += (name, ": ", value, "\r\n")
        if self.length is None and not no_body:
            if total is not None:
                self.length = total
                parts.append(f"Content-Length: {total}\r\n")
            elif self.http11 and self.allow_chunked:
                self.chunked = True
                parts.append("Transfer-Encoding: chunked\r\n")
            else:
                self.close = True
        elif self.length is None and self.head_only and total:
            parts.append(f"Content-Length: {total}\r\n")
        if not has_date:
            parts += ("Date: ", http_date(), "\r\n")
        if self.expect_pending is not None and getattr(self.expect_pending, "_expect", False):
            # no 100 Continue went out: whether the body follows is ambiguous, so this is the last response
            self.close = True
        if not self.close and self.crowded is not None and self.crowded():
            self.close = True   # requests wait on this worker's other connections (cheaper: core.crowded)
        if self.close:
            parts.append("Connection: close\r\n")
        elif not self.http11:
            parts.append("Connection: keep-alive\r\n")
        parts.append("\r\n")
        text = "".join(parts)
        # One check over the whole head instead of one per header: every CR and LF
        # must be a line end we wrote, so no header can smuggle in another.
        lines = text.count("\r\n")
        if text.count("\r") != lines or text.count("\n") != lines or "\0" in text:
            raise ValueError(f"invalid WSGI status or header (CR, LF or NUL inside): {self.headers!r}")
        self.head_sent = True
        self.head_size = len(text)
        self.no_body = no_body
        self.left = None if no_body else self.length
        return text.encode("latin-1")

    def frame(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire, within the announced length."""
        if self.no_body or not data:
            return b""
        left = self.left
        if left is not None:
            if len(data) > left:
                data = data[:left]
                self.close = True  # the app lied about its length
            self.left = left - len(data)
        elif self.chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def write(self, data: bytes) -> None:
        """The callable start_response returns (PEP 3333's imperative write)."""
        if self.status_line is None:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("WSGI write() takes bytes")
        chunk = b"" if self.head_sent else self.head(None)
        chunk += self.frame(data)
        if chunk:
            self.sent += self.conn.sendall(chunk)

    def send_file(self, f: Any, offset: int, size: int) -> None:
        """The head, and what of the file the socket takes now; the rest is `pending`.

        A small file goes out with its head in one send (one syscall, one TCP segment);
        a larger one after the head, sent with MSG_MORE so that sendfile(2) fills its segment."""
        conn = self.conn
        head = self.head(size)
        count = size if self.length is None else min(self.length, size)
        self.left = 0
        if self.length is not None and count < self.length and not self.no_body:
            self.close = True
        if self.no_body or not count:
            self.sent += conn.sendall(head)
            return
        fd = f.fileno()
        if count <= SMALL_FILE:
            data = os.pread(fd, count, offset)
            if len(data) < count:
                self.close = True  # the file shrank under us
                count = len(data)
            n = self.send_head(head + data, len(head), 0)
            sent, ended = n, False
        else:
            self.send_head(head, len(head), _MORE)
            sent, ended = conn.sendfile(fd, offset, count)
            self.sent += sent
        if ended:
            self.close = True  # the file shrank under us
        elif sent < count:
            self.pending = (fd, offset + sent, count - sent)

    def send_head(self, data: bytes, head_size: int, flags: int) -> int:
        """Send `data` (the head, maybe a small body after it) without waiting, save for the
        head's end; returns how many body bytes went out."""
        conn = self.conn
        try:
            n = conn.sock.send(data, _NOWAIT | flags)
        except BlockingIOError:
            n = 0
        except OSError as e:
            raise ClientGone(str(e), 0) from None
        if n < head_size:
            conn.sendall(memoryview(data)[n:head_size])
            n = head_size
        self.sent += n
        return n - head_size

    def send_iterable(self, result: Any) -> None:
        conn = self.conn
        for data in result:
            if not data:
                continue
            if not self.head_sent:
                self.sent += conn.sendall(self.head(None) + self.frame(data))
            else:
                piece = self.frame(data)
                if piece:
                    self.sent += conn.sendall(piece)
        if not self.head_sent:
            self.sent += conn.sendall(self.head(0))

    def fail(self, response: bytes, status: int) -> None:
        """The request failed: answer `response` if nothing went out yet, and close."""
        self.failed = True
        self.close = True
        if not self.head_sent and response:
            self.status = status
            try:
                self.sent += self.conn.sendall(response)
            except (ClientGone, OSError):
                pass


def run(app: Callable, environ: dict, conn: Any, *, version: str, keep_alive: bool,
        http11: bool, allow_chunked: bool = True, crowded: Callable[[], bool] | None = None) -> Exchange:
    """Call the app for one request and write its response to `conn`.

    `version` is the status line's protocol; `http11` says the client speaks
    1.1 (chunked allowed); `keep_alive` is what the request asked for.
    """
    ex = Exchange(conn, version, keep_alive, http11, allow_chunked,
                  environ["REQUEST_METHOD"] == "HEAD",
                  environ["wsgi.input"] if "HTTP_EXPECT" in environ else None, crowded)
    result = None
    try:
        result = app(environ, ex.start_response)
        if type(result) is list or isinstance(result, (list, tuple)):
            body = b"".join(result)
            chunk = b"" if ex.head_sent else ex.head(len(body))
            chunk += ex.frame(body)
            if ex.chunked:
                chunk += b"0\r\n\r\n"
                ex.chunked = False
            if chunk:
                ex.sent += conn.sendall(chunk)
        else:
            real = _real_file(result.filelike) if isinstance(result, FileWrapper) else None
            if real is not None:
                ex.via_file = True
                ex.send_file(result.filelike, *real)
                if ex.pending is not None:
                    ex.result, result = result, None  # closed once the loop has sent the rest
            else:
                ex.send_iterable(result)
            if ex.chunked and not ex.no_body:
                ex.sent += conn.sendall(b"0\r\n\r\n")
        if ex.left:
            ex.close = True  # fewer bytes than announced: the client must see the end
    except ClientGone as e:
        ex.sent += e.sent
        ex.cut = str(e)
        ex.fail(b"", 0)
    except HTTPError as e:
        # a malformed request body, met while the app read wsgi.input
        log(f"request body refused: {e.status} {e.detail}")
        ex.fail(error_response(e.status), e.status)
    except Exception:
        ex.raised = True
        log("exception in the application:\n" + traceback.format_exc().rstrip())
        ex.fail(response(500, version=version), 500)
    finally:
        if result is not None:
            close_result(ex, result)
    ex.keep_alive = not ex.close
    return ex


def close_result(ex: Exchange, result: Any) -> None:
    """PEP 3333: the result's close(), once its body is sent (or abandoned)."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            ex.failed = True
            ex.close = True
            log("exception in the application's close():\n" + traceback.format_exc().rstrip())


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
