"""HTTP/1.0 and 1.1 request heads, parsed strictly into a WSGI environ.

Hand-written rather than httptools or h11 (figures in docs/benchmarks.md):
h11 is several times slower; httptools' C parser is faster on its own, but
once its callbacks have built a WSGI environ it is no faster on the heads
keep-alive clients repeat (which we memoise), and the parser is a few percent
of a worker's time either way. What decides is strictness: anything
ambiguous (both Content-Length and Transfer-Encoding, a list-form length,
bare CR or LF, obs-fold, control characters) is refused with a 4xx, because
an ambiguity is what request smuggling through a front proxy is built on.
"""
from __future__ import annotations

import re
from collections.abc import Callable

# tchar from RFC 9110 5.6.2; bytes.translate(None, TOKEN) leaves only the bad ones.
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Control characters other than HT, and DEL; CR and LF are checked by counting.
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERSIONS = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_VERSION_SHAPE = re.compile(rb"HTTP/[0-9]\.[0-9]")
# What a request-target may hold (RFC 9112 3.2 builds it from RFC 3986, whose characters
# are visible US-ASCII): no HT, no obs-text, and no "#" (a fragment is never sent).
_TARGET = bytes(range(0x21, 0x7f)).replace(b"#", b"")
# uri-host [ ":" port ] (RFC 3986 3.2.2, 3.2.3): an IP-literal, checked further in
# _authority_host, or a reg-name (which IPv4address is a subset of).
_AUTHORITY = re.compile(rb"(\[[^\]]*\]|(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?")
_IPVFUTURE = re.compile(rb"[vV][0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+")
# the Host values nearly every client sends (a name or an IPv4 address, maybe a port): one match
_PLAIN_HOST = re.compile(rb"[-A-Za-z0-9.]*(?::[0-9]*)?")
# chunk-ext (RFC 9112 7.1.1): *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ),
# a value being a token or a quoted-string (RFC 9110 5.6.4). BWS is only allowed there.
_TOKEN_RE = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED_RE = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = re.compile(rb"(?:[ \t]*;[ \t]*" + _TOKEN_RE + rb"(?:[ \t]*=[ \t]*(?:"
                        + _TOKEN_RE + rb"|" + _QUOTED_RE + rb"))?)+")
_HEX = b"0123456789abcdefABCDEF"
# Fields a trailer must not carry (RFC 9110 6.5.1): what has to be known before the
# content. Framing, connection handling, routing, authentication, the content's format.
_FORBIDDEN_TRAILERS = frozenset((
    b"content-length", b"transfer-encoding", b"trailer", b"connection", b"keep-alive", b"te",
    b"upgrade", b"expect", b"host", b"authorization", b"proxy-authorization", b"content-type",
    b"content-encoding", b"content-range"))

REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large",
    405: "Method Not Allowed", 500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class HTTPError(Exception):
    """A request we refuse: answered with `status` and the connection closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def response(status: int, body: bytes | None = None, *, version: str = "HTTP/1.1",
             content_type: str = "text/plain", headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
             head_only: bool = False) -> bytes:
    """A whole response of our own (never the application's), ending the connection.

    The default body is the status line's text: nothing from the request is echoed.
    """
    reason = REASONS.get(status, "Error")
    if body is None:
        body = f"{status} {reason}\n".encode()
    head = [f"{version} {status} {reason}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", "Connection: close"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if head_only else body)


def error_response(status: int) -> bytes:
    """The refusal of a request we cannot serve: status, reason, close."""
    return response(status)


# Environ keys for header names seen before: most requests repeat the same few.
_key_cache: dict[bytes, str] = {}


def _environ_key(name: bytes) -> str | None:
    key = _key_cache.get(name)
    if key is None:
        if b"_" in name:
            # X_Forwarded_For would collide with X-Forwarded-For in the environ;
            # dropping it (as nginx and gunicorn do) closes a spoofing hole.
            return None
        upper = name.decode("latin-1").upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
        if len(_key_cache) < 512:
            _key_cache[name] = key
    return key


class Head:
    """What the worker needs beyond the environ to frame the exchange."""

    __slots__ = ("environ", "keep_alive", "length", "chunked", "expect_continue", "version")

    def __init__(self, environ: dict, keep_alive: bool, length: int, chunked: bool,
                 expect_continue: bool, version: str) -> None:
        self.environ = environ
        self.keep_alive = keep_alive
        self.length = length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.version = version


def find_head(buf: bytes | bytearray, limit: int) -> int:
    """Index just past the blank line ending the head, -1 if incomplete.

    Raises 414/431 once `limit` bytes arrived without a complete head, so a
    client cannot make the worker buffer without bound, and 400 at once for a
    bare LF or CR in a partial head: a client that ends lines with LF alone
    never sends CRLF CRLF, and would otherwise hold the connection until the
    408 (parse_head refuses the same bytes in a complete head).
    """
    end = buf.find(b"\r\n\r\n", 0, limit + 4)
    if end >= 0:
        return end + 4
    if len(buf) > limit:
        if buf.find(b"\r\n", 0, limit) < 0:
            raise HTTPError(414, "request line longer than buffer-size")
        raise HTTPError(431, "request head larger than buffer-size")
    # Only heads still incomplete pay for this. A CR as the last byte may be
    # the first half of a CRLF cut between two reads.
    crlf = buf.count(b"\r\n")
    if buf.count(b"\n") != crlf or buf.count(b"\r") - crlf > (buf[-1:] == b"\r"):
        raise HTTPError(400, "bare CR or LF in request head")
    return -1


# Memoised results of parsing one request line or one header line. Parsing a
# line is a pure function of its bytes, and keep-alive clients repeat the same
# lines request after request, so a hit skips all the Python-level work. Only
# short lines are kept and the tables are emptied when full: bounded memory.
_MEMO_LINE = 256
_MEMO_SIZE = 2048
_request_lines: dict[bytes, tuple] = {}
_header_lines: dict[bytes, tuple] = {}

# header lines that need more than copying into the environ
_PLAIN, _LENGTH, _TE, _CONNECTION, _EXPECT, _HOST = range(6)
# Connection options (RFC 9110 7.6.1) that decide persistence, as bits
_CLOSE, _KEEP_ALIVE = 1, 2
# more header fields than this is a 431 (RFC 6585 5), as gunicorn's limit_request_fields
MAX_FIELDS = 100
_SPECIAL = {b"content-length": _LENGTH, b"transfer-encoding": _TE, b"connection": _CONNECTION,
            b"expect": _EXPECT, b"host": _HOST}


def _memo(table: dict[bytes, tuple], line: bytes, parse: Callable[[bytes], tuple]) -> tuple:
    """Parse a line missing from `table` and keep the result if the line is short."""
    result = parse(line)
    if len(line) <= _MEMO_LINE:
        if len(table) >= _MEMO_SIZE:
            table.clear()
        table[line] = result
    return result


def _request_line(line: bytes) -> tuple:
    """(method, version, REQUEST_URI, PATH_INFO, QUERY_STRING) of a request line."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    method, target, version_b = parts
    version = _VERSIONS.get(version_b)
    if version is None:
        if _VERSION_SHAPE.fullmatch(version_b):
            raise HTTPError(505, "unsupported HTTP version")
        raise HTTPError(400, "malformed HTTP version")
    if not method or method.translate(None, TOKEN):
        raise HTTPError(400, "malformed method")
    if not target or target.translate(None, _TARGET):
        raise HTTPError(400, "malformed request target")
    request_uri = uri = target.decode("latin-1")
    if target[0] != 47:  # '/'
        sep = target.find(b"://")
        if sep > 0 and target[:sep].lower() in (b"http", b"https"):
            # absolute-form (RFC 9112 3.2.2): the authority ends at the first "/" or "?"
            # (RFC 3986 3.2), and the path that follows is what the application routes on
            rest = uri[sep + 3:]
            end = len(rest)
            for c in "/?":
                i = rest.find(c, 0, end)
                if i >= 0:
                    end = i
            if not _authority_host(target[sep + 3:sep + 3 + end]):
                # RFC 9110 4.2.1: an empty host is invalid; 4.2.4: so is userinfo
                raise HTTPError(400, "malformed request target")
            uri = rest[end:]
            if uri[:1] != "/":
                uri = "/" + uri  # RFC 9112 3.3: an empty path is "/"
        elif target == b"*" and method == b"OPTIONS":
            uri = "*"
        else:
            raise HTTPError(400, "malformed request target")
    path, _, query = uri.partition("?")
    return method.decode("ascii"), version, request_uri, _unquote(path), query


def _authority_host(authority: bytes) -> bytes | None:
    """The host of `uri-host [":" port]`, None if that grammar does not match."""
    m = _AUTHORITY.fullmatch(authority)
    if m is None:
        return None
    host = m.group(1)
    if host[:1] == b"[":
        inner = host[1:-1]
        if inner[:1] in (b"v", b"V"):
            return host if _IPVFUTURE.fullmatch(inner) else None
        import ipaddress

        try:
            ipaddress.IPv6Address(inner.decode("ascii"))
        except ValueError:
            return None
        if b"%" in inner:  # a zone ID: Python accepts it, RFC 3986 does not
            return None
    return host


def _header_line(line: bytes) -> tuple:
    """(kind, environ key or None, value as str, value as lowered bytes) of a header line;
    for Connection, the last item is its _CLOSE / _KEEP_ALIVE bits instead."""
    name, sep, value = line.partition(b":")
    if not sep or not name or name.translate(None, TOKEN):
        raise HTTPError(400, "malformed header line")
    value = value.strip(b" \t")
    kind = _SPECIAL.get(name.lower(), _PLAIN)
    if kind == _HOST and not _PLAIN_HOST.fullmatch(value) and _authority_host(value) is None:
        # RFC 9112 3.2: a Host that is not uri-host [":" port] MUST get a 400; an
        # application and a cache that split it differently is a poisoned cache
        raise HTTPError(400, "malformed Host")
    if kind == _CONNECTION:
        # a list of tokens: "x-close" is not "close"; the bits of every line are OR-ed
        low = value.lower()
        if low == b"keep-alive":
            bits = _KEEP_ALIVE
        elif low == b"close":
            bits = _CLOSE
        else:
            options = {o.strip(b" \t") for o in low.split(b",")}
            bits = (_CLOSE if b"close" in options else 0) | (_KEEP_ALIVE if b"keep-alive" in options else 0)
        return kind, _environ_key(name), value.decode("latin-1"), bits
    return kind, _environ_key(name), value.decode("latin-1"), value.lower() if kind else b""


def parse_head(head: bytes, base: dict) -> Head:
    """Parse a complete head (ending in CRLF CRLF) into a Head; raises HTTPError."""
    text = head[:-4]
    lines = text.split(b"\r\n")
    if text.count(b"\r") != len(lines) - 1 or text.count(b"\n") != len(lines) - 1:
        raise HTTPError(400, "bare CR or LF in request head")
    if _CTL.search(text):
        raise HTTPError(400, "control character in request head")
    first = lines[0]
    if not first and len(lines) > 1:
        # RFC 9112 2.2: an empty line before the request line (a client's stray
        # CRLF after a body) is ignored
        del lines[0]
        first = lines[0]
    if len(lines) > MAX_FIELDS + 1:
        raise HTTPError(431, "more than %d header fields" % MAX_FIELDS)
    rl = _request_lines.get(first) or _memo(_request_lines, first, _request_line)
    method, version, request_uri, path_info, query = rl

    environ = base.copy()
    environ["REQUEST_METHOD"] = method
    environ["SERVER_PROTOCOL"] = version
    environ["REQUEST_URI"] = request_uri
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query

    length_s: bytes | None = None
    te: bytes | None = None
    connection = 0
    expect = b""
    host_seen = False
    for line in lines[1:]:
        hl = _header_lines.get(line) or _memo(_header_lines, line, _header_line)
        kind, key, v, low = hl
        if kind:
            if kind == _HOST:
                if host_seen:
                    raise HTTPError(400, "repeated Host")
                host_seen = True
            elif kind == _LENGTH:
                if length_s is not None or not low.isdigit() or len(low) > 18:
                    raise HTTPError(400, "malformed or repeated Content-Length")
                length_s = low
            elif kind == _TE:
                if te is not None:
                    raise HTTPError(400, "repeated Transfer-Encoding")
                te = low
            elif kind == _CONNECTION:
                connection |= low
            else:
                expect = low
        if key is None:
            continue
        old = environ.get(key)
        if old is not None:
            if key[0] != "H":
                # RFC 9110 5.3: Content-Type is no list, so a repeat cannot be merged; a
                # proxy reading the first and an application the last disagree on it
                raise HTTPError(400, "repeated Content-Type")
            v = old + ("; " if key == "HTTP_COOKIE" else ", ") + v  # HTTP_*: joined, as CGI does
        environ[key] = v

    if version == "HTTP/1.1" and not host_seen:
        raise HTTPError(400, "HTTP/1.1 request without Host")
    chunked = False
    length = 0
    if te is not None:
        if length_s is not None:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te != b"chunked":
            raise HTTPError(501, "unsupported Transfer-Encoding")
        chunked = True
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    elif length_s is not None:
        length = int(length_s)
    if connection & _CLOSE:
        keep_alive = False  # RFC 9112 9.3: close wins over everything
    else:
        keep_alive = version == "HTTP/1.1" or connection & _KEEP_ALIVE != 0
    return Head(environ, keep_alive, length, chunked,
                expect == b"100-continue" and version == "HTTP/1.1", version)


def _unquote(path: str) -> str:
    """Percent-decode PATH_INFO as WSGI wants it: bytes as latin-1 code points."""
    if "%" not in path:
        return path
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path).decode("latin-1")


class ChunkedDecoder:
    """Incremental decoder for a chunked request body.

    Fed raw bytes, returns decoded bytes; `done` once the last chunk and its
    trailers were read. Sizes are bounded so a hostile size line cannot make
    us allocate or loop forever.
    """

    MAX_LINE = 4096

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0       # bytes left in the current chunk
        self.state = "size"      # size | data | crlf | trailer | done
        self.done = False
        self.trailer = 0         # trailer bytes so far, bounded like one line

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while True:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > self.MAX_LINE:
                        raise HTTPError(400, "chunk size line too long")
                    break
                if i > self.MAX_LINE:
                    raise HTTPError(400, "chunk size line too long")
                line = self.buf[:i]
                self.buf = self.buf[i + 2:]
                # RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, chunk-size = 1*HEXDIG. No
                # whitespace around the size unless an extension follows (its BWS): a
                # parser that trims " 5 " and one that refuses it disagree on the framing.
                semi = line.find(b";")
                size = line if semi < 0 else line[:semi].rstrip(b" \t")
                if not size or len(size) > 15 or size.translate(None, _HEX):
                    raise HTTPError(400, "malformed chunk size")
                if semi >= 0 and not _CHUNK_EXT.fullmatch(line, semi):
                    # a bare CR or LF here is read as the line's end by some proxies: smuggling
                    raise HTTPError(400, "malformed chunk extension")
                self.remaining = int(size, 16)
                self.state = "data" if self.remaining else "trailer"
            elif self.state == "data":
                if not self.buf:
                    break
                piece = self.buf[:self.remaining]
                self.buf = self.buf[len(piece):]
                self.remaining -= len(piece)
                out.append(piece)
                if self.remaining == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                if self.buf[:2] != b"\r\n":
                    raise HTTPError(400, "missing CRLF after chunk")
                self.buf = self.buf[2:]
                self.state = "size"
            elif self.state == "trailer":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) + self.trailer > self.MAX_LINE:
                        raise HTTPError(400, "trailer too long")
                    break
                self.trailer += i + 2
                if self.trailer > self.MAX_LINE:
                    raise HTTPError(400, "trailer too long")
                line = self.buf[:i]
                self.buf = self.buf[i + 2:]
                if not line:
                    self.state = "done"
                    self.done = True
                    break
                if _CTL.search(line) or b"\r" in line or b"\n" in line:
                    raise HTTPError(400, "malformed trailer")
                # RFC 9112 7.1.2: field-line CRLF, as in the head: no obs-fold (a line
                # starting with SP or HTAB), a token name right before the colon
                name, colon, _ = line.partition(b":")
                if not colon or not name or name.translate(None, TOKEN):
                    raise HTTPError(400, "malformed trailer")
                if name.lower() in _FORBIDDEN_TRAILERS:
                    raise HTTPError(400, "forbidden trailer field")
            else:
                break
        return b"".join(out)

    def leftover(self) -> bytes:
        """Bytes after the body: the next pipelined request."""
        rest, self.buf = self.buf, b""
        return rest
