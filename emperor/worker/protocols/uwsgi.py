"""The uwsgi binary protocol, as nginx's `uwsgi_pass` speaks it.

Header: modifier1 (u8), datasize (u16 little-endian), modifier2 (u8); then
datasize bytes of `u16 len, key, u16 len, value` pairs, already CGI-shaped
(REQUEST_METHOD, PATH_INFO, HTTP_HOST...); then CONTENT_LENGTH body bytes.
The response is plain HTTP, ended by closing the connection.
"""
from __future__ import annotations

from emperor.worker.protocols.http import HTTPError


_SERVER_KEYS = ("wsgi.version", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess",
                "wsgi.run_once", "wsgi.errors", "wsgi.file_wrapper", "wsgi.input_terminated")


def find_packet(buf: bytes | bytearray, limit: int) -> int:
    """Length of the complete header + vars block, -1 if incomplete."""
    if len(buf) < 4:
        return -1
    size = buf[1] | (buf[2] << 8)
    if size > limit:
        raise HTTPError(400, "uwsgi packet larger than buffer-size")
    if buf[0] != 0:
        raise HTTPError(400, f"unsupported uwsgi modifier1 {buf[0]}")
    return 4 + size if len(buf) >= 4 + size else -1


def parse_vars(packet: bytes, base: dict) -> dict:
    environ = base.copy()
    # latin-1 maps each byte to one character: decode once, then slice strings
    text = packet.decode("latin-1")
    pos, end = 4, len(packet)
    try:
        while pos < end:
            k = pos + 2
            v = k + (packet[pos] | (packet[pos + 1] << 8))
            pos = v + 2 + (packet[v] | (packet[v + 1] << 8))
            environ[text[k:v]] = text[v + 2:pos]
    except IndexError:
        raise HTTPError(400, "truncated uwsgi packet") from None
    if pos != end:
        raise HTTPError(400, "truncated uwsgi value")
    for key in _SERVER_KEYS:
        # the server's own keys are not the front proxy's to set
        environ[key] = base[key]
    environ.setdefault("REQUEST_METHOD", "GET")
    environ.setdefault("PATH_INFO", "/")
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    length = environ.get("CONTENT_LENGTH", "")
    # "²".isdigit() is True; and past 18 digits no body is real, while past 4300 int()
    # itself raises (a 500): the same bound as HTTP's Content-Length
    if length and not (length.isascii() and length.isdigit() and len(length) <= 18):
        raise HTTPError(400, "malformed CONTENT_LENGTH")
    return environ


def encode_vars(environ: dict[str, str], modifier1: int = 0) -> bytes:
    """Build a request packet; used by tests and the benchmark, not the server."""
    body = bytearray()
    for k, v in environ.items():
        kb, vb = k.encode("latin-1"), v.encode("latin-1")
        body += len(kb).to_bytes(2, "little") + kb + len(vb).to_bytes(2, "little") + vb
    return bytes([modifier1]) + len(body).to_bytes(2, "little") + b"\x00" + bytes(body)
