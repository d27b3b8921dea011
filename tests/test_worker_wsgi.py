"""WSGI (PEP 3333) as a real master serves it: environ, wsgi.input, write(), close(),
exc_info, errors, wsgi.file_wrapper (SPEC section 5). One master for the module."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from support import children, Client, free_port, get_request, one, running_master, wait_for


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsgi")
    with running_master(d, "processes = 2\nsocket-timeout = 2\n", free_port()) as p:
        p.workers = children(p.pid)
        yield p


def assert_workers_intact(srv) -> None:
    assert children(srv.pid) == srv.workers, "a worker died or was replaced"
    r, _ = one(srv.port, get_request("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and int(r.body) in srv.workers


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def chunked(path: str, pieces: list[bytes]) -> bytes:
    out = f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    for p in pieces:
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n\r\n"


def ask(srv, data: bytes):
    with Client(srv.port) as c:
        c.send(data)
        return c.response()


def marker(srv, rid: str, timeout: float = 10.0) -> str:
    path = Path(srv.dir) / rid
    wait_for(path.exists, timeout)
    return path.read_text()


# -- environ --

def test_environ_has_the_cgi_and_wsgi_keys(srv):
    with Client(srv.port) as c:
        c.send(post("/environ?a=1&b=%20c", b"xyz", "Content-Type: text/x-test\r\nX-Custom: v\r\n"))
        env = json.loads(c.response().body)
        local_port = c.sock.getsockname()[1]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20c"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["HTTP_HOST"] == "t"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["has"] == ["wsgi.errors", "wsgi.file_wrapper", "wsgi.input"]
    assert all(isinstance(k, str) for k in env)


def test_environ_of_a_get_has_no_body_length_and_an_empty_query(srv):
    env = json.loads(ask(srv, get_request("/environ")).body)
    assert env["REQUEST_METHOD"] == "GET" and env["QUERY_STRING"] == ""
    assert env.get("CONTENT_LENGTH", "") in ("", "0")


def test_path_info_is_percent_decoded_as_latin1(srv):
    env = json.loads(ask(srv, get_request("/environ/a%20b%2Fc/%C3%A9%ff?q=%C3%A9")).body)
    assert env["PATH_INFO"] == "/environ/a b/c/\xc3\xa9\xff"
    assert env["QUERY_STRING"] == "q=%C3%A9"  # the query string stays raw
    assert env["REQUEST_URI"] == "/environ/a%20b%2Fc/%C3%A9%ff?q=%C3%A9"


def test_percent_encoded_non_ascii_path_bytes_arrive_as_latin1(srv):
    """PEP 3333: PATH_INFO carries the bytes as latin-1 code points. (Raw bytes 0x80-0xFF in
    the target are refused: tests/test_http_strict.py.)"""
    env = json.loads(ask(srv, b"GET /environ/%C3%A9 HTTP/1.1\r\nHost: t\r\n\r\n").body)
    assert env["PATH_INFO"] == "/environ/\xc3\xa9"


def test_http10_request_has_http10_server_protocol(srv):
    r, _ = one(srv.port, b"GET /environ HTTP/1.0\r\n\r\n")
    assert json.loads(r.body)["SERVER_PROTOCOL"] == "HTTP/1.0"


# -- wsgi.input --

@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_input_read_with_sizes(srv, framing):
    body = b"abcdefghij"
    data = post("/read-sizes?sizes=3,0,4", body) if framing == "length" else \
        chunked("/read-sizes?sizes=3,0,4", [b"ab", b"cdefg", b"hij"])
    assert json.loads(ask(srv, data).body) == ["abc", "", "defg", "hij"]


def test_input_read_past_the_end_returns_what_there_is_then_empty(srv):
    assert json.loads(ask(srv, post("/read-sizes?sizes=20,5", b"abc")).body) == ["abc", "", ""]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_input_readline(srv, framing):
    body = b"l1\nline2\n\nlast"
    data = post("/readline", body) if framing == "length" else \
        chunked("/readline", [b"l1\nli", b"ne2\n", b"\nla", b"st"])
    assert json.loads(ask(srv, data).body) == ["l1\n", "line2\n", "\n", "last"]


def test_input_readline_with_a_size_limit(srv):
    lines = json.loads(ask(srv, post("/readline?size=3", b"l1\nline2\n\nlast")).body)
    assert lines == ["l1\n", "lin", "e2\n", "\n", "las", "t"]


def test_input_readlines_with_a_hint_stops_early(srv):
    assert json.loads(ask(srv, post("/readlines?hint=3", b"a\nb\nc\n")).body) == [["a\n", "b\n"], "c\n"]
    assert json.loads(ask(srv, post("/readlines", b"a\nb\nc")).body) == [["a\n", "b\n", "c"], ""]


def test_input_iteration_yields_lines(srv):
    assert json.loads(ask(srv, chunked("/iterate", [b"a\nb", b"\nc"])).body) == ["a\n", "b\n", "c"]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_large_request_body_arrives_byte_exact(srv, framing):
    body = os.urandom(1 << 20)
    data = post("/echo", body) if framing == "length" else \
        chunked("/echo", [body[i:i + 100_000] for i in range(0, len(body), 100_000)])
    r = ask(srv, data)
    assert r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(body).digest()


# -- the response --

def test_write_callable_output_comes_before_the_returned_body(srv):
    with Client(srv.port) as c:
        c.send(get_request("/write") + get_request("/pid"))
        r = c.response()
        assert r.body == b"written-then-returned"
        assert r.header("Transfer-Encoding") == "chunked"
        assert int(c.response().body) in srv.workers


def test_app_content_length_larger_than_the_body_closes_the_connection(srv):
    with Client(srv.port) as c:
        c.send(get_request("/short"))
        with pytest.raises(EOFError):
            c.response()  # 5 of the announced 10 bytes, then the close
        assert c.buf == b"12345"


def test_app_content_length_smaller_than_the_body_truncates_and_closes(srv):
    with Client(srv.port) as c:
        c.send(get_request("/long") + get_request("/pid"))
        r = c.response()
        assert r.body == b"123"
        assert c.rest() == b""  # the second request is not served on this connection


def test_invalid_content_length_from_the_app_is_a_500(srv):
    r, closed = one(srv.port, get_request("/bad-length"))
    assert r.status == 500 and closed


# -- close(), errors, exc_info --

def test_close_is_called_after_a_normal_response(srv):
    r = ask(srv, get_request("/close-normal?id=close-normal"))
    assert r.body == b"ab"
    assert marker(srv, "close-normal") == "closed\n"


def test_close_is_called_when_the_iterable_raises_and_the_connection_closes(srv):
    with Client(srv.port) as c:
        c.send(get_request("/close-error?id=close-error") + get_request("/pid"))
        raw = c.rest()
    # the chunked body never gets its last chunk, the pipelined request is not served
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n1\r\na\r\n")
    assert marker(srv, "close-error") == "closed\n"
    assert "failing mid-body" in srv.log
    assert_workers_intact(srv)


def test_close_is_called_when_the_client_disconnects_mid_response(srv):
    with Client(srv.port) as c:
        c.send(get_request("/close-slow?id=close-gone"))
        c.sock.recv(1000)
    start = time.monotonic()
    assert marker(srv, "close-gone", timeout=15) == "closed\n"
    assert time.monotonic() - start < 5  # the timing is the behaviour: the 10 s response was cut short
    assert_workers_intact(srv)


def test_app_exception_before_headers_is_500_and_the_worker_survives(srv):
    for path in ("/error-before", "/error-after-start"):
        r, closed = one(srv.port, get_request(path))
        assert r.status == 500 and closed
    assert "boom before headers" in srv.wait_log("boom after start_response")
    assert_workers_intact(srv)


def test_start_response_again_with_exc_info_before_headers_replaces_the_status(srv):
    with Client(srv.port) as c:
        c.send(get_request("/excinfo-before"))
        r = c.response()
        assert r.status == 503 and r.reason == "Replaced" and r.body == b"replaced"


def test_start_response_with_exc_info_after_headers_reraises_and_closes(srv):
    with Client(srv.port) as c:
        c.send(get_request("/excinfo-after"))
        raw = c.rest()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n6\r\nfirst;\r\n")
    assert "KeyError: 'after headers'" in srv.wait_log("KeyError")
    assert_workers_intact(srv)


def test_start_response_twice_without_exc_info_is_an_error(srv):
    r, closed = one(srv.port, get_request("/start-twice"))
    assert r.status == 500 and closed


def test_wsgi_errors_lines_reach_the_master_log(srv):
    assert ask(srv, get_request("/errors?tag=t1")).body == b"logged"
    log = srv.wait_log("second-line-t1")
    assert "wsgi-errors-line-t1" in log


# -- wsgi.file_wrapper --

@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "big.bin"
    data = os.urandom(5 * 1024 * 1024 + 123)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), len(data)


@pytest.mark.parametrize("route", ["/file?path=", "/file?length=no&path=", "/file-sendfile-only?path="])
def test_file_wrapper_serves_a_large_file_byte_exact(srv, big_file, route):
    path, digest, size = big_file
    with Client(srv.port, timeout=5) as c:
        c.send(get_request(route + str(path)) + get_request("/pid"))
        r = c.response()
        assert r.status == 200 and int(r.header("Content-Length")) == size
        assert hashlib.sha256(r.body).hexdigest() == digest
        assert int(c.response().body) in srv.workers  # the connection stays usable


def test_file_wrapper_head_sends_only_the_head(srv, big_file):
    path, _, size = big_file
    with Client(srv.port) as c:
        c.send(f"HEAD /file?path={path} HTTP/1.1\r\nHost: t\r\n\r\n".encode() + get_request("/pid"))
        r = c.response(head=True)
        assert int(r.header("Content-Length")) == size
        assert int(c.response().body) in srv.workers


def test_workers_survived_the_whole_module(srv):
    assert_workers_intact(srv)
    assert "worker failed" not in srv.log
