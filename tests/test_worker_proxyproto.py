"""The PROXY protocol on an http-socket: `enable-proxy-protocol` (uWSGI core/uwsgi.c; the HTTP
router's `http-enable-proxy-protocol`; core/protocol.c uwsgi_proxy_protocol reads version 1),
version 2 as HAProxy's spec defines it (haproxy.org proxy-protocol.txt, section 2.2), and
emperor's `proxy-protocol-allow`: who may send the header at all."""
from __future__ import annotations

import json
import socket
import struct
import sys
from pathlib import Path

import pytest

from support import free_port

pytestmark = pytest.mark.timeout(60)

APP = r'''
import json
def application(environ, start_response):
    body = json.dumps([environ["REMOTE_ADDR"], environ["REMOTE_PORT"]]).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''
V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def start(procs, tmp_path: Path, extra: str = ""):
    (tmp_path / "ppapp.py").write_text(APP)
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = ppapp\n"
                   f"enable-proxy-protocol = true\n{extra}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    m.port = port
    return m


def exchange(port: int, prefix: bytes, requests: int = 1) -> list[tuple[int, bytes]]:
    """Send `prefix` then `requests` keep-alive GETs on one connection; each (status, body)."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(requests):
            last = i == requests - 1
            s.sendall((prefix if i == 0 else b"")   # with the first request: a refusal answers it whole
                      + b"GET / HTTP/1.1\r\nHost: t\r\n" + (b"Connection: close\r\n" if last else b"") + b"\r\n")
            status = int(f.readline().split()[1])
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out.append((status, f.read(length)))
    return out


def v2(family: int, addresses: bytes, command: int = 1) -> bytes:
    return V2 + bytes([0x20 | command, family]) + struct.pack("!H", len(addresses)) + addresses


def test_version_1_gives_remote_addr_for_every_request_of_the_connection(procs, tmp_path):
    m = start(procs, tmp_path)
    got = exchange(m.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n", requests=2)
    assert [(s, json.loads(b)) for s, b in got] == [(200, ["203.0.113.7", "51000"])] * 2
    got = exchange(m.port, b"PROXY TCP6 2001:db8::7 2001:db8::1 51001 443\r\n")
    assert json.loads(got[0][1]) == ["2001:db8::7", "51001"]
    got = exchange(m.port, b"PROXY UNKNOWN\r\n")                      # the proxy's own address
    assert json.loads(got[0][1])[0] == "127.0.0.1"
    got = exchange(m.port, b"")                                       # no header: as in uWSGI
    assert json.loads(got[0][1])[0] == "127.0.0.1"


def test_version_2_ipv4_ipv6_and_local(procs, tmp_path):
    m = start(procs, tmp_path)
    four = socket.inet_pton(socket.AF_INET, "198.51.100.9") + socket.inet_pton(socket.AF_INET, "192.0.2.1") \
        + struct.pack("!HH", 40000, 80)
    assert json.loads(exchange(m.port, v2(0x11, four))[0][1]) == ["198.51.100.9", "40000"]
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::9") + socket.inet_pton(socket.AF_INET6, "2001:db8::1") \
        + struct.pack("!HH", 40001, 80)
    assert json.loads(exchange(m.port, v2(0x21, six + b"\x03\x00\x04abcd"))[0][1]) == ["2001:db8::9", "40001"]  # a TLV
    assert json.loads(exchange(m.port, v2(0x00, b"", command=0))[0][1])[0] == "127.0.0.1"     # LOCAL


@pytest.mark.parametrize("prefix", [b"PROXY TCP4 999.0.0.1 192.0.2.1 1 2\r\n", b"PROXY TCP4 a b\r\n",
                                    b"PROXY " + b"x" * 120, v2(0x11, b"\x01\x02")])
def test_a_malformed_header_is_a_400_and_costs_one_connection(procs, tmp_path, prefix):
    m = start(procs, tmp_path)
    assert exchange(m.port, prefix)[0][0] == 400
    assert exchange(m.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")[0][0] == 200
    m.wait_log("PROXY header")
    assert "Traceback" not in m.log


def test_a_peer_outside_proxy_protocol_allow_cannot_choose_its_address(procs, tmp_path):
    """Anyone who can send the header chooses REMOTE_ADDR: only the networks in
    proxy-protocol-allow may (here not loopback), the others are refused; without a header a
    connection is served with its own address."""
    m = start(procs, tmp_path, "proxy-protocol-allow = 10.0.0.0/8, 192.168.0.0/16\n")
    assert exchange(m.port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")[0][0] == 400
    m.wait_log("not in proxy-protocol-allow")
    got = exchange(m.port, b"")
    assert got[0][0] == 200 and json.loads(got[0][1])[0] == "127.0.0.1"


def test_without_the_option_a_header_is_not_read(procs, tmp_path):
    (tmp_path / "ppapp.py").write_text(APP)
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = ppapp\n")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    assert exchange(port, b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")[0][0] == 400


def test_http_timeout_is_the_http_sockets_own_socket_timeout(procs, tmp_path):
    """http-timeout (uWSGI's HTTP router: its client connections' timeout) bounds an idle
    client on the workers' HTTP sockets; socket-timeout stays the default for the others."""
    m = start(procs, tmp_path, "http-timeout = 1\nsocket-timeout = 30\n")
    with socket.create_connection(("127.0.0.1", m.port), timeout=20) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        s.recv(65536)
        assert s.recv(100) == b""   # closed after ~1 s idle, long before socket-timeout's 30 s
