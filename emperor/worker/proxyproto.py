"""The PROXY protocol on an HTTP socket: the client's address as the load balancer saw it.

`enable-proxy-protocol` (uWSGI core/uwsgi.c; `http-enable-proxy-protocol` is its HTTP router's
name) lets a connection start with a PROXY header, which then gives REMOTE_ADDR and
REMOTE_PORT (uWSGI core/protocol.c uwsgi_proxy_protocol: version 1, the text line). Emperor
reads version 2 too (the binary header HAProxy and cloud load balancers send; spec:
haproxy.org/download/2.9/doc/proxy-protocol.txt), and only from peers that may send one:
`proxy-protocol-allow` networks (default: loopback, private networks and UNIX sockets),
because anyone who can send the header chooses the address the application trusts. A
header from another peer, or a malformed one, is refused with 400; a connection without a
header keeps its own address, as in uWSGI.
"""
from __future__ import annotations

import ipaddress
import socket
import struct

from emperor.worker.protocols.http import HTTPError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.worker.conn import Conn

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107            # the longest version 1 line, CRLF included (spec section 2.1)
V2_MAX_BODY = 512       # addresses and TLVs we accept after the 16-byte version 2 head
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "unix")


class Allowed:
    """Which peers may send a PROXY header."""

    def __init__(self, items: list[str]) -> None:
        items = items or list(DEFAULT_ALLOW)
        self.unix = "unix" in items
        self.networks = [ipaddress.ip_network(i, strict=False) for i in items if i != "unix"]

    def __contains__(self, peer: object) -> bool:
        if not isinstance(peer, tuple):
            return self.unix
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in n for n in self.networks)


def take_header(conn: Conn, allowed: Allowed) -> bool:
    """Consume a PROXY header at the start of `conn.buf` if there is one. False: not enough
    bytes yet to tell (wait for more); True: done (conn.remote is the proxied client if a
    header named one). HTTPError(400) for a bad header or one from a peer not allowed."""
    buf = conn.buf
    if buf[:1] == b"P":
        if len(buf) < 6 and b"PROXY "[:len(buf)] == buf:
            return False
        if buf.startswith(b"PROXY "):
            end = buf.find(b"\r\n", 0, V1_MAX)
            if end < 0:
                if len(buf) < V1_MAX:
                    return False
                raise HTTPError(400, "PROXY header: no end within 107 bytes")
            _allowed(conn, allowed)
            remote = _v1(buf[6:end])
            conn.buf = buf[end + 2:]
            if remote is not None:
                conn.remote = remote
        return True
    if buf[:1] == b"\r":
        if len(buf) < 16:
            return False if V2_SIGNATURE.startswith(buf[:12]) else True
        if not buf.startswith(V2_SIGNATURE):
            return True
        _allowed(conn, allowed)
        length = struct.unpack("!H", buf[14:16])[0]
        if length > V2_MAX_BODY:
            raise HTTPError(400, f"PROXY header: {length} bytes of addresses")
        if len(buf) < 16 + length:
            return False
        remote = _v2(buf[12], buf[13], buf[16:16 + length])
        conn.buf = buf[16 + length:]
        if remote is not None:
            conn.remote = remote
    return True


def _allowed(conn: Conn, allowed: Allowed) -> None:
    if conn.peer not in allowed:
        raise HTTPError(400, f"PROXY header from {conn.peer[0] if isinstance(conn.peer, tuple) else 'unix'}, "
                             "not in proxy-protocol-allow")


def _v1(line: bytes) -> tuple[str, str] | None:
    """TCP4|TCP6 SRC DST SPORT DPORT, or UNKNOWN (then the connection's own address)."""
    parts = line.split(b" ")
    if parts[0] == b"UNKNOWN":
        return None
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise HTTPError(400, "PROXY header: expected TCP4|TCP6 SRC DST SPORT DPORT")
    try:
        src = ipaddress.ip_address(parts[1].decode("ascii"))
        ipaddress.ip_address(parts[2].decode("ascii"))
        sport = int(parts[3])
        dport = int(parts[4])
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, "PROXY header: bad address or port") from None
    if src.version != (4 if parts[0] == b"TCP4" else 6) or not (0 <= sport <= 65535 and 0 <= dport <= 65535) \
            or not parts[3].isdigit() or not parts[4].isdigit():
        raise HTTPError(400, "PROXY header: bad address or port")
    return str(src), str(sport)


def _v2(ver_cmd: int, family: int, body: bytes) -> tuple[str, str] | None:
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF not in (0, 1):
        raise HTTPError(400, "PROXY header: not version 2 LOCAL or PROXY")
    if ver_cmd & 0xF == 0:
        return None   # LOCAL: the proxy's own connection (a health check)
    if family >> 4 == 1 and len(body) >= 12:
        return socket.inet_ntop(socket.AF_INET, body[:4]), str(struct.unpack("!H", body[8:10])[0])
    if family >> 4 == 2 and len(body) >= 36:
        return socket.inet_ntop(socket.AF_INET6, body[:16]), str(struct.unpack("!H", body[32:34])[0])
    if family >> 4 in (0, 3):
        return None   # UNSPEC or UNIX: no address to give
    raise HTTPError(400, "PROXY header: addresses shorter than their family")
