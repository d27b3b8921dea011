#!/usr/bin/env python3
"""A mutation fuzzer for the request parsers, run against a real master over real sockets.

Cases are made from a corpus of valid requests (HTTP/1.x: GET, POST, HEAD, keep-alive,
pipelined, chunked with extensions and trailers, Expect: 100-continue, absolute-form,
OPTIONS *; uwsgi: packets as nginx's uwsgi_pass builds them from Debian's
uwsgi_params, with and without bodies), mutated (structure-aware games with headers,
line ends, lengths and chunk sizes, then byte flips, inserts and deletes; sends split
at random points; two requests pipelined), and sent to a master serving
tests/apps/echo.py, which answers what it received.

The oracle is our own, written from RFC 9112 / RFC 9110 (and, for uwsgi, the packet
layout), narrowed by emperor's documented policy (buffer-size, at most 100 header
fields, Transfer-Encoding only "chunked", ...); see `http_oracle`. It predicts, for
the bytes a client sends, which requests a server must answer and with what: a
request the oracle finds invalid must not get a 2xx, a valid one must get a 2xx whose
echo (method, path, query, protocol, header fields, SHA-256 of the body) is the
predicted one. Also: no 500, no worker dies or is replaced (their PIDs, from /proc),
nothing in the log says "internal error", and every connection is answered or closed
within socket-timeout + 2 s.

    python scripts/fuzz.py --protocol http --cases 50000 --seed 1
    python scripts/fuzz.py --protocol uwsgi --cases 50000 --seed 1

Deterministic by seed (case i of a seed is always the same bytes). Prints cases/s and a
summary; on a failure, a minimal reproducer (repr of the bytes) and exit status 1.
tests/test_fuzz.py runs the same fuzzer for a bounded number of cases.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import ipaddress
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ECHO_APP = ROOT / "tests" / "apps" / "echo.py"


def _load_echo():
    spec = importlib.util.spec_from_file_location("_fuzz_echo_app", ECHO_APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_echo = _load_echo()

CRLF = b"\r\n"
MAX_FIELDS = 100          # emperor: more header fields is a 431
MAX_LENGTH_DIGITS = 18    # emperor: a longer Content-Length / CONTENT_LENGTH is refused
CHUNK_LINE_MAX = 4096     # emperor: a chunk-size line, or the trailer section, longer is refused
CHUNK_SIZE_DIGITS = 15


# ------------------------------------------------------------------ the oracle

@dataclass
class Expected:
    """A request the server must answer with a 2xx carrying this echo."""

    method: str
    doc: bytes            # the echo document tests/apps/echo.py must answer
    close: bool           # the response must say Connection: close, and nothing follows it

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.doc).hexdigest()


@dataclass
class Verdict:
    requests: list[Expected]
    end: str   # "clean" (nothing after the last request), "closed" (the last asked for a close),
               # "incomplete: ..." or "invalid: ..." (the next message)


class _Stop(Exception):
    """The message at hand ends the stream: invalid, or cut short."""

    def __init__(self, end: str) -> None:
        super().__init__(end)
        self.end = end


def _invalid(why: str) -> _Stop:
    return _Stop("invalid: " + why)


def _incomplete(why: str) -> _Stop:
    return _Stop("incomplete: " + why)


TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
HEXDIG = frozenset(b"0123456789abcdefABCDEF")
DIGIT = frozenset(b"0123456789")
FIELD_CHARS = frozenset([0x09] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100)))  # RFC 9110 5.5
QDTEXT = frozenset([0x09, 0x20, 0x21] + list(range(0x23, 0x5C)) + list(range(0x5D, 0x7F))
                   + list(range(0x80, 0x100)))                                        # RFC 9110 5.6.4
QPAIR = frozenset([0x09, 0x20] + list(range(0x21, 0x7F)) + list(range(0x80, 0x100)))
UNRESERVED_SUBDELIMS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
                                 b"!$&'()*+,;=")                                     # RFC 3986 2.2, 2.3
# Request-target bytes emperor accepts: RFC 3986's visible US-ASCII, less "#". (RFC 3986
# also excludes " < > \ ^ ` { | }, which real clients send raw and emperor passes on.)
TARGET_CHARS = frozenset(range(0x21, 0x7F)) - {0x23}
FORBIDDEN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"trailer", b"connection",
                                b"keep-alive", b"te", b"upgrade", b"expect", b"host", b"authorization",
                                b"proxy-authorization", b"content-type", b"content-encoding",
                                b"content-range"))


def is_token(b: bytes) -> bool:
    return bool(b) and all(c in TCHAR for c in b)


def pct_decode(s: bytes) -> bytes:
    """%XX with two hex digits is a byte; any other "%" stays as it is."""
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == 0x25 and i + 2 < n and s[i + 1] in HEXDIG and s[i + 2] in HEXDIG:
            out.append(int(s[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def valid_authority(v: bytes, need_host: bool) -> bool:
    """uri-host [ ":" port ] (RFC 3986 3.2.2, 3.2.3); Host (RFC 9110 7.2) may have an empty host."""
    if v[:1] == b"[":
        close = v.find(b"]")
        if close < 0:
            return False
        lit, rest = v[1:close], v[close + 1:]
        if lit[:1] in (b"v", b"V"):      # IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
            dot = lit.find(b".")
            if dot < 2 or not all(c in HEXDIG for c in lit[1:dot]) or dot == len(lit) - 1:
                return False
            if not all(c in UNRESERVED_SUBDELIMS or c == 0x3A for c in lit[dot + 1:]):
                return False
        else:
            try:
                ipaddress.IPv6Address(lit.decode("ascii"))
            except ValueError:
                return False
            if b"%" in lit:
                return False
    else:
        i, n = 0, len(v)
        while i < n and v[i] != 0x3A:
            c = v[i]
            if c == 0x25:
                if not (i + 2 < n and v[i + 1] in HEXDIG and v[i + 2] in HEXDIG):
                    return False
                i += 3
            elif c in UNRESERVED_SUBDELIMS:
                i += 1
            else:
                return False
        if need_host and i == 0:
            return False
        rest = v[i:]
    return rest == b"" or (rest[:1] == b":" and all(c in DIGIT for c in rest[1:]))


def valid_chunk_ext(ext: bytes) -> bool:
    """chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ) (RFC 9112 7.1.1)."""
    i, n = 0, len(ext)

    def bws(i: int) -> int:
        while i < n and ext[i] in (0x20, 0x09):
            i += 1
        return i

    def token(i: int) -> int:
        j = i
        while j < n and ext[j] in TCHAR:
            j += 1
        return j

    while i < n:
        i = bws(i)
        if i >= n or ext[i] != 0x3B:
            return False
        i = bws(i + 1)
        j = token(i)
        if j == i:
            return False
        i = j
        k = bws(i)
        if k < n and ext[k] == 0x3D:
            i = bws(k + 1)
            if i < n and ext[i] == 0x22:       # quoted-string
                i += 1
                while True:
                    if i >= n:
                        return False
                    c = ext[i]
                    if c == 0x22:
                        i += 1
                        break
                    if c == 0x5C:
                        if i + 1 >= n or ext[i + 1] not in QPAIR:
                            return False
                        i += 2
                    elif c in QDTEXT:
                        i += 1
                    else:
                        return False
            else:
                j = token(i)
                if j == i:
                    return False
                i = j
    return True


def _field_line(line: bytes) -> tuple[bytes, bytes]:
    """name, value of `field-name ":" OWS field-value OWS` (RFC 9112 5), or _Stop."""
    colon = line.find(b":")
    if colon <= 0:
        raise _invalid(f"field line without a name and a colon: {line[:40]!r}")
    name, value = line[:colon], line[colon + 1:]
    if not is_token(name):
        raise _invalid(f"field name not a token: {name[:40]!r}")
    if not all(c in FIELD_CHARS for c in value):
        raise _invalid(f"field value with a control character: {name[:40]!r}")
    return name, value.strip(b" \t")


def _chunked_body(data: bytes, p: int) -> tuple[bytes, int]:
    """Decode chunked content starting at p (RFC 9112 7.1): (content, index after the trailers)."""
    out = []
    while True:
        j = data.find(CRLF, p)
        if j < 0:
            if len(data) - p > CHUNK_LINE_MAX:
                raise _invalid("chunk-size line too long")
            raise _incomplete("chunk-size line")
        line = data[p:j]
        p = j + 2
        if len(line) > CHUNK_LINE_MAX:
            raise _invalid("chunk-size line too long")
        k = 0
        while k < len(line) and line[k] in HEXDIG:
            k += 1
        if k == 0 or k > CHUNK_SIZE_DIGITS:
            raise _invalid(f"chunk-size {line[:20]!r}")
        if k < len(line) and not valid_chunk_ext(line[k:]):
            raise _invalid(f"chunk-ext {line[k:k + 40]!r}")
        size = int(line[:k], 16)
        if size == 0:
            break
        if len(data) < p + size:
            raise _incomplete("chunk-data")
        out.append(data[p:p + size])
        p += size
        if data[p:p + 2] != CRLF:
            if len(data) < p + 2 and CRLF.startswith(data[p:]):
                raise _incomplete("CRLF after chunk-data")
            raise _invalid("chunk-data not followed by CRLF")
        p += 2
    total = 0
    while True:                                   # trailer-section (RFC 9112 7.1.2)
        j = data.find(CRLF, p)
        if j < 0:
            if len(data) - p + total > CHUNK_LINE_MAX:
                raise _invalid("trailer section too long")
            raise _incomplete("trailer section")
        line = data[p:j]
        p = j + 2
        total += len(line) + 2
        if total > CHUNK_LINE_MAX:
            raise _invalid("trailer section too long")
        if not line:
            return b"".join(out), p
        name, _ = _field_line(line)
        if name.lower() in FORBIDDEN_TRAILERS:
            raise _invalid(f"{name!r} in a trailer (RFC 9110 6.5.1)")


def _http_message(data: bytes, p: int, limit: int) -> tuple[Expected, int]:
    """One request starting at p: what it must get, and where the next one starts."""
    start = p
    if data.startswith(CRLF, p):
        p += 2  # RFC 9112 2.2: an empty line before the request-line is ignored (emperor: one)
    lines: list[bytes] = []
    while True:
        j = data.find(CRLF, p)
        if j < 0:
            rest = data[p:]
            if b"\n" in rest or b"\r" in rest[:-1]:
                raise _invalid("bare CR or LF in the head")
            if len(data) - start > limit:
                raise _invalid("head larger than buffer-size")
            raise _incomplete("head")
        line = data[p:j]
        if b"\r" in line or b"\n" in line:
            raise _invalid("bare CR or LF in the head")
        p = j + 2
        if not line:
            break
        lines.append(line)
    if p - start > limit + 4:
        raise _invalid("head larger than buffer-size")
    if not lines:
        raise _invalid("empty request-line")

    parts = lines[0].split(b" ")          # RFC 9112 3: method SP request-target SP HTTP-version
    if len(parts) != 3:
        raise _invalid("request-line is not three words")
    method, target, version = parts
    if not is_token(method):
        raise _invalid("method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _invalid("HTTP version (emperor: 1.0 and 1.1)")
    if not target or not all(c in TARGET_CHARS for c in target):
        raise _invalid("request-target characters")
    if target[:1] == b"/":                                     # origin-form
        path_query = target
    elif target == b"*":                                       # asterisk-form
        if method != b"OPTIONS":
            raise _invalid("* with a method other than OPTIONS")
        path_query = b"*"
    else:                                                      # absolute-form
        m = re.match(rb"([A-Za-z][A-Za-z0-9+.\-]*)://", target)
        if m is None or m.group(1).lower() not in (b"http", b"https"):
            raise _invalid("request-target form (emperor: origin, absolute http(s), OPTIONS *)")
        rest = target[m.end():]
        end = len(rest)
        for c in (b"/", b"?"):
            i = rest.find(c)
            if 0 <= i < end:
                end = i
        if not valid_authority(rest[:end], need_host=True):
            raise _invalid("absolute-form authority")
        path_query = rest[end:]
        if path_query[:1] != b"/":
            path_query = b"/" + path_query
    path, _, query = path_query.partition(b"?")

    fields = lines[1:]
    if len(fields) > MAX_FIELDS:
        raise _invalid("more than 100 header fields")
    env: dict[str, str] = {
        "REQUEST_METHOD": method.decode("ascii"), "PATH_INFO": pct_decode(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"), "SERVER_PROTOCOL": version.decode("ascii"),
    }
    hosts = lengths = tes = 0
    length = 0
    te = b""
    close = keep_alive = False
    for line in fields:
        name, value = _field_line(line)
        low = name.lower()
        if low == b"host":
            hosts += 1
            if hosts > 1:
                raise _invalid("repeated Host")
            if not valid_authority(value, need_host=False):
                raise _invalid("Host value")
        elif low == b"content-length":
            lengths += 1
            if lengths > 1:
                raise _invalid("repeated Content-Length (emperor refuses even equal values)")
            if not value or not all(c in DIGIT for c in value) or len(value) > MAX_LENGTH_DIGITS:
                raise _invalid("Content-Length value")
            length = int(value)
        elif low == b"transfer-encoding":
            tes += 1
            if tes > 1:
                raise _invalid("repeated Transfer-Encoding (emperor)")
            te = value.lower()
        elif low == b"connection":
            options = {o.strip(b" \t") for o in value.lower().split(b",")}
            close = close or b"close" in options
            keep_alive = keep_alive or b"keep-alive" in options
        if b"_" in name:
            continue                      # emperor drops these names (they would alias a dash)
        key = name.decode("ascii").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        v = value.decode("latin-1")
        if key in env:
            if key == "CONTENT_TYPE":
                raise _invalid("repeated Content-Type")
            v = env[key] + ("; " if key == "HTTP_COOKIE" else ", ") + v
        env[key] = v
    if version == b"HTTP/1.1" and not hosts:
        raise _invalid("HTTP/1.1 without Host")
    chunked = False
    if tes:
        if lengths:
            raise _invalid("both Content-Length and Transfer-Encoding")
        if version == b"HTTP/1.0":
            raise _invalid("Transfer-Encoding in HTTP/1.0")
        if te != b"chunked":
            raise _invalid("Transfer-Encoding other than chunked (emperor: 501)")
        chunked = True
        env.pop("HTTP_TRANSFER_ENCODING", None)
    if chunked:
        body, p = _chunked_body(data, p)
    else:
        if len(data) < p + length:
            raise _incomplete("content")
        body, p = data[p:p + length], p + length
    persist = not close and (version == b"HTTP/1.1" or keep_alive)
    doc = _echo.encode(_echo.echo(env, body))
    return Expected(env["REQUEST_METHOD"], doc, not persist), p


def http_oracle(data: bytes, limit: int = 4096) -> Verdict:
    """What a strict HTTP/1.1 server must do with `data`, sent on one connection.

    RFC 9112 message syntax (request-line, field lines, CRLF only, Content-Length or
    chunked content, trailers) with RFC 9110 field rules (Host as uri-host[:port], no
    repeated singletons, trailer fields of 6.5.1 refused); where the RFCs leave a choice,
    emperor's documented one: one empty line ignored before a request, versions 1.0 and
    1.1 only, only "chunked" as Transfer-Encoding, one Content-Length, at most 100 fields,
    a head of at most buffer-size + 4 bytes, names with "_" not in the environ.
    """
    out: list[Expected] = []
    p = 0
    while p < len(data):
        try:
            exp, p = _http_message(data, p, limit)
        except _Stop as s:
            return Verdict(out, s.end)
        out.append(exp)
        if exp.close:
            return Verdict(out, "closed")
    return Verdict(out, "clean")


def uwsgi_oracle(data: bytes, limit: int = 4096) -> Verdict:
    """The uwsgi packet (modifier1 0, datasize u16 LE, modifier2, then u16-LE-length-prefixed
    key and value pairs filling exactly datasize bytes), then CONTENT_LENGTH bytes of body.
    One request per connection: the server answers it and closes."""
    if not data:
        return Verdict([], "clean")
    if len(data) < 4:
        return Verdict([], "incomplete: packet header")
    size = data[1] | data[2] << 8
    if size > limit:
        return Verdict([], "invalid: datasize above buffer-size")
    if data[0] != 0:
        return Verdict([], "invalid: modifier1")
    end = 4 + size
    if len(data) < end:
        return Verdict([], "incomplete: vars")
    env: dict[str, str] = {}
    p = 4
    while p < end:
        if p + 2 > end:
            return Verdict([], "invalid: key length past datasize")
        k = p + 2 + (data[p] | data[p + 1] << 8)
        if k + 2 > end:
            return Verdict([], "invalid: key past datasize")
        v = k + 2 + (data[k] | data[k + 1] << 8)
        if v > end:
            return Verdict([], "invalid: value past datasize")
        env[data[p + 2:k].decode("latin-1")] = data[k + 2:v].decode("latin-1")
        p = v
    cl = env.get("CONTENT_LENGTH", "")
    if cl and not (cl.isascii() and cl.isdigit() and len(cl) <= MAX_LENGTH_DIGITS):
        return Verdict([], "invalid: CONTENT_LENGTH")
    n = int(cl) if cl else 0
    if len(data) < end + n:
        return Verdict([], "incomplete: body")
    for key, default in (("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("QUERY_STRING", ""),
                         ("SERVER_PROTOCOL", "HTTP/1.0")):
        env.setdefault(key, default)
    doc = _echo.encode(_echo.echo(env, data[end:end + n]))
    return Verdict([Expected(env["REQUEST_METHOD"], doc, True)], "closed")


# ------------------------------------------------------------------ responses

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers.get('x-echo', '')[:12]} {self.body[:60]!r}>"


def parse_responses(raw: bytes, heads: list[bool]) -> tuple[list[Response], str | None]:
    """Split what the server sent into responses; heads[i]: the i-th final one answers a HEAD."""
    out: list[Response] = []
    p, k = 0, 0
    while p < len(raw):
        end = raw.find(b"\r\n\r\n", p)
        if end < 0:
            return out, f"truncated response head {raw[p:p + 80]!r}"
        lines = raw[p:end].split(CRLF)
        m = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*", lines[0])
        if m is None:
            return out, f"bad status line {lines[0][:80]!r}"
        status = int(m.group(1))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return out, f"bad response header {line[:80]!r}"
            headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        p = end + 4
        if 100 <= status < 200:
            out.append(Response(status, headers, b""))
            continue
        head = k < len(heads) and heads[k]
        k += 1
        if head or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if p + n > len(raw):
                out.append(Response(status, headers, raw[p:]))
                return out, f"truncated body ({len(raw) - p} of {n} bytes)"
            body, p = raw[p:p + n], p + n
        else:
            body, p = raw[p:], len(raw)
        out.append(Response(status, headers, body))
    return out, None


def judge(verdict: Verdict, raw: bytes, closed: bool) -> tuple[str, str] | None:
    """None if the server did what the oracle predicts, else (kind, detail)."""
    if not closed:
        return "hang", "neither answered nor closed within socket-timeout + 2 s"
    resps, err = parse_responses(raw, [e.head for e in verdict.requests])
    for r in resps:
        if r.status == 500:
            return "500", repr(r)
        if 100 <= r.status < 200 and r.status != 100:
            return "unexpected-1xx", repr(r)
    finals = [r for r in resps if r.status >= 200]
    for i, e in enumerate(verdict.requests):
        if i >= len(finals):
            return "no-response", f"valid request #{i + 1} got no response ({len(finals)} responses)"
        r = finals[i]
        if not 200 <= r.status < 300:
            return f"valid-refused-{r.status}", f"valid request #{i + 1} got {r!r}"
        if r.headers.get("x-echo") != e.digest or (not e.head and r.body != e.doc):
            return "wrong-echo", f"request #{i + 1}: expected {e.doc[:300]!r}, got {r.body[:300]!r}"
        if e.close and "close" not in r.headers.get("connection", "").lower():
            return "no-close", f"request #{i + 1} asked for a close: {r.headers}"
    extra = finals[len(verdict.requests):]
    if extra and verdict.end in ("clean", "closed"):
        return "extra-response", f"{verdict.end}, but got {extra!r}"
    for r in extra:
        if 200 <= r.status < 300:
            return "2xx-for-invalid", f"{verdict.end}: {r!r}"
    if err:
        return "unparseable", err
    if len(extra) > 1:
        return "extra-response", f"{verdict.end}: {extra!r}"
    return None


# ------------------------------------------------------------------ cases

@dataclass
class Case:
    segments: list[bytes]
    delays: list[float]        # seconds before each segment after the first
    half_close: bool           # shutdown(SHUT_WR) after the last segment; else the server's timeout ends it
    note: str

    @property
    def data(self) -> bytes:
        return b"".join(self.segments)

    def whole(self, data: bytes | None = None) -> "Case":
        return Case([self.data if data is None else data], [], self.half_close, self.note)


@dataclass
class Msg:
    """An HTTP request as sent, line by line, so that mutations can work on its structure."""

    start: bytes
    fields: list[bytes]
    body: bytes = b""
    chunks: list[list[bytes]] | None = None      # [size line, data, what ends the data]
    last: bytes = b"0"
    trailers: list[bytes] = field(default_factory=list)
    eols: dict[int, bytes] = field(default_factory=dict)   # line index -> its line end
    prefix: bytes = b""
    after: bytes = b""

    def encode(self) -> bytes:
        lines = [self.start, *self.fields]
        out = [self.prefix]
        for i, line in enumerate(lines):
            out += (line, self.eols.get(i, CRLF))
        out.append(self.eols.get(len(lines), CRLF))
        if self.chunks is not None:
            for size, data, end in self.chunks:
                out += (size, CRLF, data, end)
            out += (self.last, CRLF)
            for t in self.trailers:
                out += (t, CRLF)
            out.append(CRLF)
        else:
            out.append(self.body)
        out.append(self.after)
        return b"".join(out)

    def find(self, name: bytes) -> int:
        for i, f in enumerate(self.fields):
            if f.split(b":", 1)[0].strip().lower() == name:
                return i
        return -1

    def set(self, name: bytes, value: bytes) -> None:
        i = self.find(name.lower())
        line = name + b": " + value
        if i < 0:
            self.fields.append(line)
        else:
            self.fields[i] = line


def _msg(method: bytes, target: bytes, fields: list[bytes], body: bytes = b"", version: bytes = b"HTTP/1.1",
         chunks: list[bytes] | None = None, exts: list[bytes] | None = None, trailers: list[bytes] | None = None,
         last: bytes = b"0") -> Msg:
    fields = list(fields)
    m = Msg(b" ".join((method, target, version)), fields)
    if chunks is not None:
        fields.append(b"Transfer-Encoding: chunked")
        exts = exts or [b""] * len(chunks)
        m.chunks = [[b"%x" % len(c) + e, c, CRLF] for c, e in zip(chunks, exts)]
        m.trailers = list(trailers or [])
        m.last = last
    elif body or method in (b"POST", b"PUT"):
        fields.append(b"Content-Length: %d" % len(body))
        m.body = body
    return m


CURL = [b"Host: localhost:8000", b"User-Agent: curl/8.5.0", b"Accept: */*"]
BROWSER = [b"Host: www.example.org", b"Connection: keep-alive",
           b'sec-ch-ua: "Chromium";v="124", "Not-A.Brand";v="99"',
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
           b"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", b"Accept-Encoding: gzip, deflate, br",
           b"Accept-Language: en-GB,en;q=0.9", b"Referer: https://www.example.org/a/b",
           b"Cookie: sessionid=8f2b1c0e; csrftoken=Zq1xW2", b"Cookie: theme=dark", b"Upgrade-Insecure-Requests: 1"]
JSON = b'{"title": "A new item", "tags": ["red", "green"], "price": 12.5, "text": "caf\xc3\xa9\\n"}'


def _body(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.4:
        return JSON
    if r < 0.7:
        return b"a=1&b=%20two&c=" + bytes(rng.choice(b"xyz0123") for _ in range(rng.randrange(64)))
    if r < 0.95:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600)))  # CR, LF, NUL included
    return rng.randbytes(rng.randrange(20_000, 80_000))


def _chunks(body: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(body):
        n = rng.randrange(1, max(2, min(len(body) - i, 4000)) + 1)
        out.append(body[i:i + n])
        i += n
    return out


def http_seed(rng: random.Random) -> Msg:
    """One valid request of the corpus."""
    k = rng.randrange(15)
    if k == 0:
        return _msg(b"GET", b"/api/items?id=42&sort=name", CURL)
    if k == 1:
        return _msg(b"GET", b"/static/css/site.css?v=3", BROWSER)
    if k == 2:
        return _msg(b"POST", b"/api/v1/items", [b"Host: api.example.org", b"Content-Type: application/json",
                                                 b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
                                                 b"Connection: keep-alive"], _body(rng))
    if k == 3:
        return _msg(b"POST", b"/form", [b"Host: t", b"Content-Type: application/x-www-form-urlencoded"],
                    b"name=J%C3%B6rg&x=1")
    if k == 4:
        return _msg(b"HEAD", b"/static/app.js", [b"Host: cdn.example.org", b"Accept: */*"])
    if k == 5:
        body = _body(rng)
        chunks = _chunks(body, rng)
        exts = [rng.choice([b"", b"", b";name=value", b' ; q="x y"', b";a;b=1"]) for _ in chunks]
        return _msg(b"POST", b"/upload", [b"Host: t", b"Content-Type: application/octet-stream",
                                           b"Trailer: X-Checksum"], chunks=chunks, exts=exts,
                    trailers=[b"X-Checksum: " + hashlib.md5(body).hexdigest().encode(),
                              b"Server-Timing: total;dur=12"], last=rng.choice([b"0", b"000", b"0;final=1"]))
    if k == 6:
        return _msg(b"POST", b"/expect", [b"Host: t", b"Expect: 100-continue", b"Content-Type: text/plain"],
                    _body(rng))
    if k == 7:
        body = _body(rng)
        return _msg(b"PUT", b"/objects/7", [b"Host: t", b"Expect: 100-continue"], chunks=_chunks(body, rng))
    if k == 8:
        return _msg(b"GET", b"http://example.org:8080/path/x?y=1", [b"Host: example.org:8080"])
    if k == 9:
        return _msg(b"OPTIONS", b"*", [b"Host: example.org", b"Access-Control-Request-Method: POST"])
    if k == 10:
        return _msg(b"GET", b"/legacy", [b"Connection: keep-alive", b"User-Agent: ab/2.3"], version=b"HTTP/1.0")
    if k == 11:
        return _msg(b"POST", b"/legacy/post", [b"Content-Type: text/plain"], b"one shot", version=b"HTTP/1.0")
    if k == 12:
        return _msg(b"GET", b"/bye", [b"Host: t", b"Connection: close"])
    if k == 13:
        return _msg(b"GET", b"/caf%C3%A9/a%2Fb/%zz?q=%20&r=/x", [b"Host: [::1]:8000",
                    b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-For: 10.0.0.2", b"X-Empty:"])
    return _msg(b"DELETE", b"/items/7", [b"Host: t", b"Content-Length: 0"])


INTERESTING = [b"\x00", b"\r", b"\n", b" ", b"\t", b":", b";", b"=", b"\x80", b"\xff", b"\x7f", b"0", b"a",
               b"#", b"?", b"/", b"%", b'"', b"\\", b"\r\n", b"\r\n\r\n", b"\n\n", b"_", b",", b"@", b"["]


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def _mutate_field_value(rng: random.Random, m: Msg) -> str:
    if not m.fields:
        return "no-field"
    i = rng.randrange(len(m.fields))
    name, _, value = m.fields[i].partition(b":")
    new = _pick(rng, [b"", b" ", b"\t", b" \t v \t", b"v\x80\xff", b"a\x01b", b"a\x7fb", b"x" * 5000,
                      b"a, b", b"close", b"keep-alive", b"chunked", b"5", b"\xe9t\xe9"])
    m.fields[i] = name + b":" + (b" " if rng.random() < 0.5 else b"") + new
    return "field-value"


def _dup_field(rng: random.Random, m: Msg) -> str:
    if not m.fields:
        return "no-field"
    f = _pick(rng, m.fields)
    if rng.random() < 0.5:
        f = f.split(b":", 1)[0] + b": other"
    m.fields.insert(rng.randrange(len(m.fields) + 1), f)
    return "dup-field"


def _drop_field(rng: random.Random, m: Msg) -> str:
    if m.fields:
        del m.fields[rng.randrange(len(m.fields))]
    return "drop-field"


EXTRA_FIELDS = [b"Content-Type: text/plain", b"content-type: text/html", b"Cookie: a=1", b"X-Forwarded-For: 1.2.3.4",
                b"X_Forwarded_For: 6.6.6.6", b"Host: other", b"Host: t", b"Content-Length: 0", b"Content-Length: 5",
                b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Expect: nothing", b"Connection: close",
                b"Connection: keep-alive", b"Connection: x-close, closed", b"Connection: Keep-Alive, Upgrade",
                b"TE: trailers", b"X-Tab:\tv\t", b"X-Obs: \xe9\xff", b"X-Big: " + b"b" * 3000, b": no-name",
                b"No-Colon", b"Sp ace: 1", b"X-A : 1", b" X-Lead: 1", b"\tX-Lead: 1", b"X-Ctl: a\x0bb"]


def _add_field(rng: random.Random, m: Msg) -> str:
    m.fields.insert(rng.randrange(len(m.fields) + 1), _pick(rng, EXTRA_FIELDS))
    return "add-field"


def _many_fields(rng: random.Random, m: Msg) -> str:
    n = rng.randrange(MAX_FIELDS - 2 - len(m.fields), MAX_FIELDS + 3 - len(m.fields))
    m.fields += [b"X-%d: v" % i for i in range(max(n, 0))]
    return "many-fields"


def _eol(rng: random.Random, m: Msg) -> str:
    i = rng.randrange(len(m.fields) + 2)
    m.eols[i] = _pick(rng, [b"\n", b"\r", b"\n\r", b"\r\r\n", b"\r\n ", b"\r\n\t", b"\r\n\r\n", b" \r\n"])
    return "eol"


def _fold(rng: random.Random, m: Msg) -> str:
    m.fields.insert(rng.randrange(len(m.fields) + 1), _pick(rng, [b" folded", b"\tfolded", b" "]))
    return "obs-fold"


def _whitespace(rng: random.Random, m: Msg) -> str:
    lines = [m.start] + m.fields
    i = rng.randrange(len(lines))
    line = lines[i]
    j = rng.randrange(len(line) + 1)
    line = line[:j] + _pick(rng, [b" ", b"\t", b"  "]) + line[j:]
    if i == 0:
        m.start = line
    else:
        m.fields[i - 1] = line
    return "whitespace"


def _length(rng: random.Random, m: Msg) -> str:
    i = m.find(b"content-length")
    n = len(m.body)
    value = _pick(rng, [b"%d" % (n + 1), b"%d" % max(n - 1, 0), b"%d" % (n + rng.randrange(2, 50)), b"0",
                        b"99999999999999999999", b"999999999999999999", b"00%d" % n, b"+%d" % n,
                        b"%d, %d" % (n, n), b" %d " % n, b"0x%x" % n, b"", b"-1", b"\xb2", b"%d" % n])
    line = b"Content-Length: " + value
    if i < 0:
        m.fields.append(line)
    elif rng.random() < 0.2:
        m.fields.insert(i, line)
    else:
        m.fields[i] = line
    if rng.random() < 0.3:
        m.body = m.body[:rng.randrange(len(m.body) + 1)] if rng.random() < 0.5 else m.body + b"EXTRA"
    return "length"


def _transfer_encoding(rng: random.Random, m: Msg) -> str:
    value = _pick(rng, [b"chunked", b"Chunked", b"CHUNKED", b" chunked\t", b"chunked, chunked", b"gzip, chunked",
                        b"chunked;q=1", b"identity", b"chunked,", b"xchunked", b"chunk"])
    i = m.find(b"transfer-encoding")
    line = _pick(rng, [b"Transfer-Encoding: ", b"transfer-encoding:", b"Transfer-Encoding :"]) + value
    if i < 0 or rng.random() < 0.2:
        m.fields.append(line)
    else:
        m.fields[i] = line
    if m.chunks is None and rng.random() < 0.7:
        m.chunks = [[b"%x" % len(c), c, CRLF] for c in _chunks(m.body, rng)]
        m.body = b""
    return "transfer-encoding"


def _chunk(rng: random.Random, m: Msg) -> str:
    if m.chunks is None:
        return _transfer_encoding(rng, m)
    what = rng.randrange(8)
    if what == 0 and m.chunks:
        c = _pick(rng, m.chunks)
        n = int(re.match(rb"[0-9a-fA-F]*", c[0]).group() or b"0", 16)
        c[0] = _pick(rng, [b" %x" % n, b"%x " % n, b"\t%x" % n, b"%x\t" % n, b"0%x" % n, b"%X" % n,
                           b"%x" % (n + 1), b"%x" % max(n - 1, 0), b"0x%x" % n, b"-%x" % n, b"+%x" % n,
                           b"%016x" % n, b"%x" % n + b"\n"])
        return "chunk-size"
    if what == 1 and m.chunks:
        c = _pick(rng, m.chunks)
        c[0] += _pick(rng, [b";", b"; ", b";a ", b";a=", b";a b", b";a@b", b';a="x', b';a="x\\"', b";a\rb",
                            b" ; a = b", b';a="\\"q\\""', b";a=b;c", b";a\nb", b";\x80", b";a=\x80"])
        return "chunk-ext"
    if what == 2 and m.chunks:
        c = _pick(rng, m.chunks)
        c[2] = _pick(rng, [b"\n", b"", b"\r", b"\r\n\r\n", b"XX", b" \r\n"])
        return "chunk-end"
    if what == 3:
        m.last = _pick(rng, [b"0 ", b" 0", b"00", b"0;e=1", b"0;", b"0\t", b"", b"0\n"])
        return "last-chunk"
    if what == 4:
        m.trailers.append(_pick(rng, [b"X-T: 1", b"Content-Length: 0", b"transfer-encoding: chunked",
                                      b"Host: evil", b"Authorization: x", b"NoColon", b" folded", b"\tX: 1",
                                      b"X-A : 1", b": v", b"X-T: a\x01b", b"X-T: \xe9", b"Trailer: x",
                                      b"X-Long: " + b"l" * 4100, b"Server-Timing: a;dur=1"]))
        return "trailer"
    if what == 5:
        m.chunks.insert(rng.randrange(len(m.chunks) + 1), [b"0", b"", CRLF])   # an early last-chunk
        return "early-last-chunk"
    if what == 6 and m.chunks:
        del m.chunks[rng.randrange(len(m.chunks))]
        return "drop-chunk"
    m.chunks.append([b"%x" % 3, b"abc", CRLF])
    return "add-chunk"


TARGETS = [b"/a\tb", b"/\x80", b"/caf\xc3\xa9", b"/x#frag", b"/a b", b"/%zz", b"/%41%2f", b"//double",
           b"http://t/x?y", b"HTTP://T/x", b"hTtPs://t:443/", b"http://u@t/", b"http://?x", b"http:///x",
           b"http://t?q=/x", b"http://t", b"http://[::1]:80/x", b"http://[::1/x", b"http://t:8x/", b"ftp://t/",
           b"*", b"t:80", b"x", b"/?", b"/a?b?c", b"/\x01", b"/\x7f", b"/a;b=c", b"/{x}|^`"]


def _target(rng: random.Random, m: Msg) -> str:
    parts = m.start.split(b" ")
    if len(parts) != 3:
        return "target-skip"
    if rng.random() < 0.6:
        parts[1] = _pick(rng, TARGETS)
    else:
        t = parts[1]
        j = rng.randrange(len(t) + 1)
        parts[1] = t[:j] + _pick(rng, INTERESTING) + t[j:]
    m.start = b" ".join(parts)
    return "target"


def _method_version(rng: random.Random, m: Msg) -> str:
    parts = m.start.split(b" ")
    if len(parts) != 3:
        return "mv-skip"
    if rng.random() < 0.5:
        parts[0] = _pick(rng, [b"get", b"G(T", b"", b"HEAD", b"OPTIONS", b"PATCH", b"M" * 40, b"GET\x00",
                               b"CONNECT", b"G\xe9T"])
    else:
        parts[2] = _pick(rng, [b"HTTP/1.0", b"HTTP/1.1", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ",
                               b"HTTP/1.10", b"HTTP/1", b"HTTP/0.9", b"HTTP/1.1\x00"])
    m.start = b" ".join(parts)
    return "method-version"


def _host(rng: random.Random, m: Msg) -> str:
    value = _pick(rng, [b"a b", b"t/x", b"t@x", b"t:8x", b"t:80:80", b"[::1", b"[::1]", b"[::1]:8", b"t#", b"",
                        b"127.0.0.1:80", b"xn--d.example", b"a_b", b"t:", b"[v1.x]", b"[fe80::1%25eth0]",
                        b"%41.example", b"%4", b"\xe9", b"t\\x"])
    i = m.find(b"host")
    if i < 0 or rng.random() < 0.2:
        m.fields.append(b"Host: " + value)
    else:
        m.fields[i] = b"Host: " + value
    return "host"


def _prefix(rng: random.Random, m: Msg) -> str:
    if rng.random() < 0.5:
        m.prefix = _pick(rng, [b"\r\n", b"\n", b"\r\n\r\n", b" ", b"\r"])
    else:
        m.after = _pick(rng, [b"\r\n", b"\n", b"\r\n\r\n", b"x"])
    return "prefix-after"


def _connection(rng: random.Random, m: Msg) -> str:
    m.fields.append(b"Connection: " + _pick(rng, [b"close", b"keep-alive", b"x-close", b"Close", b"close, x",
                                                  b"closed", b"keep-alive, close", b" close ", b"upgrade"]))
    return "connection"


HTTP_MUTATIONS = [_mutate_field_value, _dup_field, _drop_field, _add_field, _many_fields, _eol, _fold,
                  _whitespace, _length, _transfer_encoding, _chunk, _chunk, _target, _method_version, _host,
                  _prefix, _connection]


def _bytes_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data, "empty"
    b = bytearray(data)
    what = rng.randrange(6)
    i = rng.randrange(len(b))
    if what == 0:
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b), "flip"
    if what == 1:
        b[i:i + 1] = _pick(rng, INTERESTING)
        return bytes(b), "replace"
    if what == 2:
        b[i:i] = _pick(rng, INTERESTING) if rng.random() < 0.8 else bytes([rng.randrange(256)])
        return bytes(b), "insert"
    if what == 3:
        del b[i:i + rng.randrange(1, 5)]
        return bytes(b), "delete"
    if what == 4:
        j = min(len(b), i + rng.randrange(1, 40))
        b[j:j] = b[i:j]
        return bytes(b), "duplicate"
    return bytes(b[:i]), "truncate"


def _split(rng: random.Random, data: bytes, note: str) -> Case:
    """Most cases end with a half-close, so that the server sees EOF at once; 1 % leave the
    server's socket-timeout to end them (408s, idle closes, bodies cut short). Only the
    former are split into several sends (see Fuzzer.run)."""
    half_close = rng.random() > 0.01
    if half_close and len(data) > 1 and rng.random() < 0.3:
        cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randrange(1, 4))))
        segs = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        delays = [rng.choice([0.0, 0.001, 0.003, 0.01]) for _ in segs[1:]]
        return Case(segs, delays, half_close, note + " split")
    return Case([data], [], half_close, note)


def http_case(rng: random.Random) -> Case:
    msgs = [http_seed(rng)]
    if rng.random() < 0.25:
        msgs.append(http_seed(rng))                       # pipelined
        if rng.random() < 0.2:
            msgs.append(http_seed(rng))
    notes = []
    for m in msgs:
        if rng.random() < 0.2:
            continue
        for _ in range(rng.randrange(1, 4)):
            notes.append(_pick(rng, HTTP_MUTATIONS)(rng, m))
    data = b"".join(m.encode() for m in msgs)
    if rng.random() < 0.3:
        for _ in range(rng.randrange(1, 4)):
            data, what = _bytes_mutation(rng, data)
            notes.append(what)
    return _split(rng, data, f"{len(msgs)} msg: " + ",".join(notes))


# -- uwsgi --

@dataclass
class Packet:
    vars: list[tuple[bytes, bytes]]
    body: bytes = b""
    modifier1: int = 0
    modifier2: int = 0
    size_delta: int = 0
    len_deltas: dict[int, tuple[int, int]] = field(default_factory=dict)
    after: bytes = b""

    def encode(self) -> bytes:
        block = bytearray()
        for i, (k, v) in enumerate(self.vars):
            dk, dv = self.len_deltas.get(i, (0, 0))
            block += ((len(k) + dk) & 0xFFFF).to_bytes(2, "little") + k
            block += ((len(v) + dv) & 0xFFFF).to_bytes(2, "little") + v
        size = (len(block) + self.size_delta) & 0xFFFF
        return (bytes([self.modifier1 & 0xFF]) + size.to_bytes(2, "little") + bytes([self.modifier2 & 0xFF])
                + bytes(block) + self.body + self.after)

    def set(self, key: bytes, value: bytes) -> None:
        for i, (k, _) in enumerate(self.vars):
            if k == key:
                self.vars[i] = (key, value)
                return
        self.vars.append((key, value))


def uwsgi_seed(rng: random.Random) -> Packet:
    """What nginx sends with Debian's uwsgi_params (and uwsgi_pass_request_headers on)."""
    method = _pick(rng, [b"GET", b"GET", b"POST", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"])
    path = _pick(rng, [b"/", b"/api/items", b"/caf\xc3\xa9", b"/static/app.js", b"/a b"])
    query = _pick(rng, [b"", b"id=42&sort=name", b"q=%20x"])
    body = _body(rng) if method in (b"POST", b"PUT") else b""
    https = rng.random() < 0.3
    v = [(b"QUERY_STRING", query), (b"REQUEST_METHOD", method),
         (b"CONTENT_TYPE", b"application/json" if body else b""),
         (b"CONTENT_LENGTH", b"%d" % len(body) if body else b""),
         (b"REQUEST_URI", path + (b"?" + query if query else b"")), (b"PATH_INFO", path),
         (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
         (b"SERVER_PROTOCOL", _pick(rng, [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"])),
         (b"REQUEST_SCHEME", b"https" if https else b"http")]
    if https:
        v.append((b"HTTPS", b"on"))
    v += [(b"REMOTE_ADDR", b"203.0.113.7"), (b"REMOTE_PORT", b"51234"), (b"SERVER_PORT", b"443" if https else b"80"),
          (b"SERVER_NAME", b"example.org"), (b"HTTP_HOST", b"example.org"),
          (b"HTTP_USER_AGENT", b"Mozilla/5.0 (X11; Linux x86_64)"), (b"HTTP_ACCEPT", b"*/*"),
          (b"HTTP_ACCEPT_ENCODING", b"gzip, br"), (b"HTTP_COOKIE", b"sessionid=8f2b; theme=dark")]
    if body:
        v.append((b"HTTP_CONTENT_LENGTH", b"%d" % len(body)))
    return Packet(v, body)


def _u_content_length(rng: random.Random, p: Packet) -> str:
    n = len(p.body)
    p.set(b"CONTENT_LENGTH", _pick(rng, [b"%d" % (n + 1), b"%d" % max(n - 1, 0), b"", b"0", b"abc", b"-1",
                                         b"+5", b" 5", b"\xb2", b"9" * 19, b"9" * 5000, b"0" * 30 + b"5",
                                         b"%d" % n, b"1e3", b"\xd9\xa5"]))
    return "cl"


def _u_body(rng: random.Random, p: Packet) -> str:
    if rng.random() < 0.5:
        p.body = p.body[:rng.randrange(len(p.body) + 1)]
    else:
        p.after = _pick(rng, [b"EXTRA", b"\x00\x00\x00\x00", b"GET / HTTP/1.1\r\n\r\n"])
    return "body"


def _u_vars(rng: random.Random, p: Packet) -> str:
    what = rng.randrange(5)
    if what == 0 and p.vars:
        p.vars.insert(rng.randrange(len(p.vars) + 1), _pick(rng, p.vars))
        return "dup-var"
    if what == 1 and p.vars:
        del p.vars[rng.randrange(len(p.vars))]
        return "drop-var"
    if what == 2:
        p.vars.insert(rng.randrange(len(p.vars) + 1),
                      (_pick(rng, [b"", b"HTTP_X\x00", b"\xff\xfe", b"wsgi.input", b"HTTP_X_A", b"CONTENT_TYPE",
                                   b"REQUEST_METHOD", b"PATH_INFO", b"SERVER_PROTOCOL"]),
                       _pick(rng, [b"", b"\r\n", b"\x00", b"x" * 3000, b"HEAD", b"\xe9", b"HTTP/9.9"])))
        return "add-var"
    if what == 3:
        p.vars.append((b"HTTP_X_BIG", b"b" * rng.randrange(1000, 20000)))
        return "big-var"
    p.set(b"REQUEST_METHOD", _pick(rng, [b"HEAD", b"", b"get", b"G T", b"\x00"]))
    return "method"


def _u_lengths(rng: random.Random, p: Packet) -> str:
    what = rng.randrange(4)
    if what == 0:
        p.size_delta = _pick(rng, [1, -1, 2, -2, 7, -7, 1000, -1000, 0x10000 - 1])
        return "datasize"
    if what == 1 and p.vars:
        i = rng.randrange(len(p.vars))
        p.len_deltas[i] = (_pick(rng, [0, 1, -1, 3, 300]), _pick(rng, [0, 1, -1, -3, 300]))
        return "var-length"
    if what == 2:
        p.modifier1 = _pick(rng, [1, 5, 30, 255])
        return "modifier1"
    p.modifier2 = rng.randrange(256)
    return "modifier2"


UWSGI_MUTATIONS = [_u_content_length, _u_body, _u_vars, _u_lengths]


def uwsgi_case(rng: random.Random) -> Case:
    p = uwsgi_seed(rng)
    notes = []
    if rng.random() > 0.2:
        for _ in range(rng.randrange(1, 3)):
            notes.append(_pick(rng, UWSGI_MUTATIONS)(rng, p))
    data = p.encode()
    if rng.random() < 0.15:
        data += uwsgi_seed(rng).encode()                 # a second packet: never answered
        notes.append("pipelined")
    if rng.random() < 0.3:
        for _ in range(rng.randrange(1, 3)):
            data, what = _bytes_mutation(rng, data)
            notes.append(what)
    return _split(rng, data, ",".join(notes))


# ------------------------------------------------------------------ running

def children(pid: int) -> set[int]:
    """Direct children of pid (a master's workers), from /proc."""
    out: set[int] = set()
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out |= {int(x) for x in f.read().split()}
    except OSError:
        pass
    return out


BAD_LOG = ("internal error", "worker failed", "Traceback", "exception in the application", "respawning")


@dataclass
class Failure:
    index: int
    kind: str
    detail: str
    case: Case
    verdict: str = ""
    minimal: bytes | None = None
    minimal_case: Case | None = None

    def report(self) -> str:
        lines = [f"FAILURE case {self.index} [{self.kind}] ({self.case.note})", f"  {self.detail}",
                 f"  oracle: {self.verdict}",
                 f"  sent ({len(self.case.segments)} segment(s), half-close={self.case.half_close}): "
                 f"{self.case.data[:2000]!r}"]
        if self.minimal_case is not None:
            mc = self.minimal_case
            lines.append(f"  minimal reproducer ({len(mc.segments)} segment(s), half-close={mc.half_close}):")
            lines.append(f"    {mc.segments!r}" if len(mc.segments) > 1 else f"    {mc.data!r}")
        return "\n".join(lines)


@dataclass
class Summary:
    protocol: str
    cases: int = 0
    elapsed: float = 0.0
    answered: int = 0          # valid requests answered as predicted
    refused: dict[int, int] = field(default_factory=dict)   # status of refusals -> count
    ends: dict[str, int] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def text(self) -> str:
        rate = self.cases / self.elapsed if self.elapsed else 0.0
        ends = ", ".join(f"{k} {v}" for k, v in sorted(self.ends.items(), key=lambda kv: -kv[1]))
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(self.refused.items()))
        out = [f"{self.protocol}: {self.cases} cases in {self.elapsed:.1f} s ({rate:.0f} cases/s); "
               f"{self.answered} valid requests answered as predicted; refusals by status: {refused or 'none'}",
               f"  streams ended: {ends}", f"  failures: {len(self.failures)}"]
        out += [f.report() for f in self.failures]
        return "\n".join(out)


class Fuzzer:
    """Sends cases to a running master and judges its answers; see the module docstring."""

    def __init__(self, protocol: str, port: int, master_pid: int, log_path: Path, *, buffer_size: int = 4096,
                 socket_timeout: float = 1.0, concurrency: int = 16, host: str = "127.0.0.1",
                 progress: bool = False) -> None:
        self.protocol = protocol
        self.port = port
        self.host = host
        self.master_pid = master_pid
        self.log_path = Path(log_path)
        self.buffer_size = buffer_size
        self.bound = socket_timeout + 2.0
        self.concurrency = concurrency
        self.progress = progress
        self.make = http_case if protocol == "http" else uwsgi_case
        self.oracle = http_oracle if protocol == "http" else uwsgi_oracle
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.workers = self.wait_workers()

    def case(self, seed: int, i: int) -> Case:
        return self.make(random.Random(f"{self.protocol}:{seed}:{i}"))

    def wait_workers(self, timeout: float = 10.0) -> set[int]:
        """The master's workers once it has as many as it had (respawns included)."""
        deadline = time.monotonic() + timeout
        want = len(getattr(self, "workers", ())) or 1
        while True:
            kids = children(self.master_pid)
            if len(kids) >= want or time.monotonic() > deadline:
                return kids
            time.sleep(0.05)

    def new_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                text = f.read()
        except OSError:
            return ""
        self.log_offset += len(text)
        return text.decode("utf-8", "replace")

    def exchange(self, case: Case) -> tuple[bytes, bool]:
        """Send the case; everything the server sent, and whether it closed within the bound."""
        limit = time.monotonic() + self.bound + sum(case.delays)
        s = socket.create_connection((self.host, self.port), timeout=self.bound)
        raw = bytearray()
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, seg in enumerate(case.segments):
                if i and case.delays[i - 1]:
                    time.sleep(case.delays[i - 1])
                try:
                    s.sendall(seg)
                except OSError:
                    break                      # the server refused and closed: read what it said
            if case.half_close:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            while True:
                left = limit - time.monotonic()
                if left <= 0:
                    return bytes(raw), False
                s.settimeout(left)
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    return bytes(raw), False
                except OSError:
                    return bytes(raw), True    # a reset is a close
                if not data:
                    return bytes(raw), True
                raw += data
        finally:
            s.close()

    def check(self, case: Case) -> tuple[Verdict, tuple[str, str] | None, bytes]:
        verdict = self.oracle(case.data, self.buffer_size)
        raw, closed = self.exchange(case)
        return verdict, judge(verdict, raw, closed), raw

    def _account(self, summary: Summary, verdict: Verdict, raw: bytes) -> None:
        summary.answered += len(verdict.requests)
        kind = verdict.end.split(":")[0]
        summary.ends[kind] = summary.ends.get(kind, 0) + 1
        resps, _ = parse_responses(raw, [e.head for e in verdict.requests])
        for r in [r for r in resps if r.status >= 200][len(verdict.requests):]:
            summary.refused[r.status] = summary.refused.get(r.status, 0) + 1

    def _health(self) -> str | None:
        """What went wrong with the workers since the last look, if anything."""
        log = self.new_log()
        bad = [line for line in log.splitlines() if any(b in line for b in BAD_LOG)]
        now = children(self.master_pid)
        if now != self.workers:
            self.workers = self.wait_workers()
            return f"workers changed: {sorted(now)} (log: {bad[:3]})"
        if bad:
            return "log: " + " | ".join(bad[:3])
        return None

    def run(self, cases: int, seed: int, batch: int = 1000, stop_after: int = 1,
            minimize: bool = True, mix_timeouts: bool = False) -> Summary:
        """Run cases 0..cases-1 of `seed`; stops after the batch where `stop_after` failures appeared.

        The cases that wait for the server's timeout run after the others of their batch,
        not among them: a worker core blocked for socket-timeout on one of their bodies
        cannot serve the connections it already owns, and answers a 408 to a split request
        that arrived in time (a worker-side limit, not the parser's; `mix_timeouts`
        runs them together to show it).
        """
        summary = Summary(self.protocol)
        start = last_print = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            for first in range(0, cases, batch):
                idx = list(range(first, min(first + batch, cases)))
                made = {i: self.case(seed, i) for i in idx}
                phases = [idx] if mix_timeouts else [[i for i in idx if made[i].half_close],
                                                     [i for i in idx if not made[i].half_close]]
                for phase in phases:
                    for i, (verdict, bad, raw) in zip(phase, pool.map(self.check, [made[i] for i in phase])):
                        self._account(summary, verdict, raw)
                        if bad:
                            summary.failures.append(Failure(i, bad[0], bad[1], made[i], verdict.end))
                summary.cases += len(idx)
                health = self._health()
                if health:
                    culprit = self._find_culprit(idx, [made[i] for i in idx])
                    i, case = culprit if culprit else (idx[0], made[idx[0]])
                    f = Failure(i, "worker", health + ("" if culprit else " (no single case reproduces it)"),
                                case, self.oracle(case.data, self.buffer_size).end)
                    summary.failures.append(f)
                now = time.monotonic()
                if self.progress and (now - last_print > 5 or summary.cases == cases):
                    last_print = now
                    print(f"  {summary.cases} cases, {summary.cases / (now - start):.0f}/s, "
                          f"{len(summary.failures)} failures", file=sys.stderr, flush=True)
                if len(summary.failures) >= stop_after:
                    break
        summary.elapsed = time.monotonic() - start
        if minimize:
            for f in summary.failures[:3]:
                self.minimize(f)
        return summary

    def _find_culprit(self, idx: list[int], made: list[Case]) -> tuple[int, Case] | None:
        """Re-run a batch one case at a time to find the one that hurts a worker."""
        for i, case in zip(idx, made):
            self.check(case)
            if self._health():
                return i, case
        return None

    def _fails_as(self, kind: str, case: Case) -> bool:
        if kind == "worker":
            self.check(case)
            return self._health() is not None
        _, bad, _ = self.check(case)
        return bad is not None and bad[0] == kind

    def minimize(self, f: Failure, budget: float = 90.0) -> None:
        """Shrink the failing bytes while the failure stays of the same kind (ddmin over bytes)."""
        deadline = time.monotonic() + budget
        self._health()
        if not self._fails_as(f.kind, f.case):
            f.detail += " (did not fail again when re-run alone)"
            return
        case = f.case
        if len(case.segments) > 1 and self._fails_as(f.kind, case.whole()):
            case = case.whole()
        if len(case.segments) > 1:
            f.minimal_case = case
            return
        data = case.data
        n = 2
        while len(data) >= 2 and time.monotonic() < deadline:
            step = max(len(data) // n, 1)
            for start in range(0, len(data), step):
                candidate = data[:start] + data[start + step:]
                if candidate and self._fails_as(f.kind, case.whole(candidate)):
                    data = candidate
                    n = max(n - 1, 2)
                    break
                if time.monotonic() > deadline:
                    break
            else:
                if step == 1:
                    break
                n = min(n * 2, len(data))
        f.minimal = data
        f.minimal_case = case.whole(data)


# ------------------------------------------------------------------ a master of its own

def start_master(directory: Path, protocol: str, buffer_size: int) -> tuple[subprocess.Popen, int, Path]:
    """A master serving tests/apps/echo.py (2 processes x 2 threads, socket-timeout 1)."""
    port = _free_port()
    kind = "http-socket" if protocol == "http" else "socket"
    ini = directory / "fuzz.ini"
    ini.write_text(f"[uwsgi]\n{kind} = 127.0.0.1:{port}\nwsgi-file = {ECHO_APP}\nprocesses = 2\nthreads = 2\n"
                   f"socket-timeout = 1\nbuffer-size = {buffer_size}\ndisable-logging = true\n")
    log = directory / "master.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "emperor", "master", str(ini)], cwd=directory,
                             stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while b"running (workers ready)" not in log.read_bytes():
        if p.poll() is not None or time.monotonic() > deadline:
            kill_tree(p.pid)
            raise RuntimeError("the master did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.05)
    return p, port, log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(pid: int) -> None:
    """Freeze the master (no respawn), kill its workers and it, by PID."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    for kid in children(pid):
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", choices=["http", "uwsgi"], default="http")
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--buffer-size", type=int, default=None,
                    help="the master's buffer-size (default 4096 for http, 16384 for uwsgi, so that "
                         "CONTENT_LENGTH values longer than Python's int() limit fit in a packet)")
    ap.add_argument("--keep-going", type=int, default=1, metavar="N", help="stop after N failures (default 1)")
    ap.add_argument("--case", type=int, help="only print case CASE of the seed, and the oracle's verdict")
    ap.add_argument("--mix-timeouts", action="store_true",
                    help="run the cases that wait for socket-timeout among the others (see Fuzzer.run)")
    args = ap.parse_args()
    buffer_size = args.buffer_size or (4096 if args.protocol == "http" else 16384)
    if args.case is not None:
        make = http_case if args.protocol == "http" else uwsgi_case
        oracle = http_oracle if args.protocol == "http" else uwsgi_oracle
        case = make(random.Random(f"{args.protocol}:{args.seed}:{args.case}"))
        print(case.note, case.segments, oracle(case.data, buffer_size), sep="\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="emperor-fuzz-") as tmp:
        proc, port, log = start_master(Path(tmp), args.protocol, buffer_size)
        try:
            fz = Fuzzer(args.protocol, port, proc.pid, log, buffer_size=buffer_size,
                        concurrency=args.concurrency, progress=True)
            print(f"fuzzing {args.protocol} on 127.0.0.1:{port} (master {proc.pid}, workers "
                  f"{sorted(fz.workers)}), seed {args.seed}, {args.cases} cases", file=sys.stderr)
            summary = fz.run(args.cases, args.seed, stop_after=args.keep_going, mix_timeouts=args.mix_timeouts)
        finally:
            kill_tree(proc.pid)
            proc.wait(5)
    print(summary.text())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
