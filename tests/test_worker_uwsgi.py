"""The uwsgi binary protocol (nginx `uwsgi_pass`) on a real master: hand-built packets
over real sockets (SPEC section 5)."""
from __future__ import annotations

import json
import socket
import time

import pytest

from support import children, Client, free_port, get_request, one, running_master
from emperor.worker.protocols.uwsgi import encode_vars

VARS = {
    "REQUEST_METHOD": "GET", "REQUEST_URI": "/environ?x=1", "PATH_INFO": "/environ",
    "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.org",
    "SERVER_PORT": "443", "REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "5555",
    "HTTP_HOST": "example.org", "HTTP_X_FORWARDED_FOR": "1.2.3.4", "UWSGI_CUSTOM": "é-latin1",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("uwsgi")
    uport = free_port()
    body = f"socket = 127.0.0.1:{uport}\nprocesses = 2\nsocket-timeout = 1\nbuffer-size = 4096\n"
    with running_master(d, body, free_port()) as p:
        p.uport = uport
        p.workers = children(p.pid)
        yield p


def assert_workers_intact(srv) -> None:
    assert children(srv.pid) == srv.workers, "a worker died or was replaced"
    r, _ = one(srv.port, get_request("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and int(r.body) in srv.workers


def exchange(srv, data: bytes, pause_after: int | None = None) -> bytes:
    """Send raw bytes to the uwsgi socket, return everything until the server closes."""
    with Client(srv.uport) as c:
        if pause_after is None:
            c.send(data)
        else:
            c.send(data[:pause_after])
            time.sleep(0.1)   # the behaviour: the rest arrives on its own, later
            c.send(data[pause_after:])
        return c.rest()


def parse(raw: bytes) -> tuple[str, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(l.split(": ", 1) for l in lines[1:])
    return lines[0], headers, body


def packet(path: str, body: bytes = b"", method: str = "POST", **extra: str) -> bytes:
    v = dict(VARS, REQUEST_METHOD=method, PATH_INFO=path, REQUEST_URI=path, QUERY_STRING="")
    if body:
        v["CONTENT_LENGTH"] = str(len(body))
    v.update(extra)
    return encode_vars(v) + body


def test_uwsgi_vars_reach_the_environ_intact(srv):
    line, headers, body = parse(exchange(srv, encode_vars(VARS)))
    assert line == "HTTP/1.1 200 OK"
    env = json.loads(body)
    for k, v in VARS.items():
        assert env[k] == v, k
    assert env["wsgi.url_scheme"] == "http"
    assert env["has"] == ["wsgi.errors", "wsgi.file_wrapper", "wsgi.input"]


def test_uwsgi_response_is_plain_http_then_close(srv):
    with Client(srv.uport) as c:
        c.send(packet("/pid", method="GET"))
        r = c.response()
        assert r.raw_head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert int(r.body) in srv.workers
        assert c.closed()


def test_uwsgi_body_of_content_length_reaches_the_app(srv):
    line, _, body = parse(exchange(srv, packet("/echo", b"hello uwsgi body")))
    assert line == "HTTP/1.1 200 OK" and body == b"hello uwsgi body"


def test_uwsgi_packet_and_body_arriving_in_pieces(srv):
    data = packet("/echo", b"0123456789" * 5000)
    for cut in (2, 10, len(data) - 50_000, len(data) - 1):
        _, _, body = parse(exchange(srv, data, pause_after=cut))
        assert body == b"0123456789" * 5000, cut


def test_uwsgi_generator_response_is_close_delimited_not_chunked(srv):
    line, headers, body = parse(exchange(srv, packet("/gen", method="GET")))
    assert "Transfer-Encoding" not in headers and "Content-Length" not in headers
    assert body == b"part0;part1;part2;"


def test_uwsgi_default_protocol_is_http10(srv):
    v = {"REQUEST_METHOD": "GET", "PATH_INFO": "/pid"}
    line, _, body = parse(exchange(srv, encode_vars(v)))
    assert line == "HTTP/1.0 200 OK" and int(body) in srv.workers


def test_uwsgi_https_var_sets_the_url_scheme(srv):
    _, _, body = parse(exchange(srv, packet("/environ", method="GET", HTTPS="on")))
    assert json.loads(body)["wsgi.url_scheme"] == "https"


def test_uwsgi_datasize_above_buffer_size_is_refused(srv):
    big = {"REQUEST_METHOD": "GET", "PATH_INFO": "/pid", "HTTP_X_BIG": "a" * 5000}
    raw = exchange(srv, encode_vars(big))
    assert raw == b"" or raw.startswith(b"HTTP/1.1 400 ")
    assert b" 200 " not in raw
    assert_workers_intact(srv)


def test_uwsgi_datasize_above_buffer_size_is_refused_from_the_header_alone(srv):
    raw = exchange(srv, b"\x00\xff\xff\x00")
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert_workers_intact(srv)


def test_uwsgi_truncated_packet_then_eof_gets_no_response(srv):
    data = encode_vars(VARS)
    with Client(srv.uport) as c:
        c.send(data[:len(data) // 2])
        c.sock.shutdown(socket.SHUT_WR)
        assert c.rest() == b""
    assert_workers_intact(srv)


def test_uwsgi_truncated_packet_times_out(srv):
    data = encode_vars(VARS)
    with Client(srv.uport, timeout=10) as c:
        c.send(data[:len(data) // 2])
        start = time.monotonic()
        raw = c.rest()
    assert time.monotonic() - start < 3.5   # socket-timeout is 1 s here (the default is 4 s)
    assert b" 200 " not in raw
    assert_workers_intact(srv)


BAD_PACKETS = {
    # a key length that runs past the datasize
    "key-past-the-end": b"\x00\x06\x00\x00" + b"\x10\x00abcd",
    # a value length that runs past the datasize
    "value-past-the-end": b"\x00\x09\x00\x00" + b"\x01\x00k\x20\x00abcd",
    # a key without its value length
    "missing-value-length": b"\x00\x03\x00\x00" + b"\x01\x00k",
    "modifier1-not-zero": encode_vars({"PATH_INFO": "/pid"}, modifier1=5),
    "http-on-the-uwsgi-socket": b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n",
    "non-digit-content-length": packet("/echo", CONTENT_LENGTH="12a"),
    "negative-content-length": packet("/echo", CONTENT_LENGTH="-1"),
    "unicode-digit-content-length": packet("/echo", CONTENT_LENGTH="\xb2"),
}


@pytest.mark.parametrize("data", BAD_PACKETS.values(), ids=BAD_PACKETS.keys())
def test_malformed_uwsgi_packet_is_refused_and_the_worker_survives(srv, data):
    raw = exchange(srv, data)
    assert raw.startswith(b"HTTP/1.1 400 "), raw
    assert_workers_intact(srv)


def test_uwsgi_body_shorter_than_content_length_times_out_without_a_200(srv):
    data = packet("/echo", b"x" * 10)[:-4]
    with Client(srv.uport, timeout=10) as c:
        c.send(data)
        start = time.monotonic()
        raw = c.rest()
    assert b" 200 " not in raw and time.monotonic() - start < 3.5   # socket-timeout 1 s, not the default 4 s
    assert_workers_intact(srv)


def test_workers_survived_the_whole_module(srv):
    assert_workers_intact(srv)
    assert "worker failed" not in srv.log
