"""HTTP/1.0 and 1.1 on a real master over real sockets (SPEC section 5).

One master (two workers, socket-timeout 1 s) serves the whole module; every
hostile request is followed by a check that the same workers are still alive.
"""
from __future__ import annotations

import json
import select
import time
from pathlib import Path

import pytest

from support import children, Client, free_port, get_request, one, running_master


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    body = "processes = 2\nsocket-timeout = 1\nbuffer-size = 4096\n"
    with running_master(d, body, free_port()) as p:
        p.workers = children(p.pid)
        assert len(p.workers) == 2
        yield p


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_workers_intact(srv) -> None:
    """The workers that were there at the start still run and still serve."""
    assert all(_alive(p) for p in srv.workers), "a worker died"
    assert children(srv.pid) == srv.workers, "a worker was replaced"
    r, _ = one(srv.port, get_request("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and int(r.body) in srv.workers


def refused(srv, data: bytes, status: int) -> bytes:
    """Send a request that must be refused with `status` and a close; return the raw response."""
    with Client(srv.port) as c:
        c.send(data)
        r = c.response()
        assert r.status == status, r
        assert r.header("Connection") == "close"
        assert c.closed(), "connection left open after a refused request"
        raw = r.raw_head + r.body
    assert_workers_intact(srv)
    return raw


def environ_of(srv, data: bytes) -> dict:
    with Client(srv.port) as c:
        c.send(data)
        r = c.response()
    assert r.status == 200, r
    return json.loads(r.body)


# -- keep-alive and framing --

def test_http11_connection_is_kept_alive_by_default(srv):
    with Client(srv.port) as c:
        for _ in range(3):
            c.send(get_request("/pid"))
            r = c.response()
            assert r.status == 200 and r.header("Connection") is None
        assert not c.closed(0.2)


def test_http10_connection_closes_by_default(srv):
    r, closed = one(srv.port, b"GET /pid HTTP/1.0\r\n\r\n")
    assert r.status == 200 and r.header("Connection") == "close"
    assert closed


def test_http10_keep_alive_when_the_client_asks(srv):
    with Client(srv.port) as c:
        for _ in range(2):
            c.send(b"GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.response()
            assert r.status == 200 and r.header("Connection") == "keep-alive"
        assert not c.closed(0.2)


def test_http11_connection_close_is_honoured(srv):
    r, closed = one(srv.port, get_request("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and r.header("Connection") == "close" and closed


def test_pipelined_requests_are_answered_in_order(srv):
    reqs = (get_request("/gen?n=2") + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
            + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecond"
            + get_request("/status/204") + get_request("/pid"))
    with Client(srv.port) as c:
        c.send(reqs)
        assert c.response().body == b"part0;part1;"
        assert c.response().body == b"first"
        assert c.response().body == b"second"
        assert c.response().status == 204
        r = c.response()
        assert int(r.body) in srv.workers
        assert not c.closed(0.2)


def test_leading_empty_line_before_a_request_is_ignored(srv):
    # RFC 9112 2.2: some clients send a stray CRLF after a POST body
    with Client(srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok\r\n" + get_request("/noread"))
        assert c.response().body == b"ok"
        assert c.response().body == b"did not read"


def test_chunked_request_body_is_decoded_for_the_app(srv):
    body = (b"5;ext=1\r\nhello\r\n" b"1\r\n \r\n" b"A\r\n0123456789\r\n"
            b"0\r\nX-Trailer: yes\r\n\r\n")
    with Client(srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
               + get_request("/pid"))
        r = c.response()
        assert r.status == 200 and r.body == b"hello 0123456789"
        assert int(c.response().body) in srv.workers  # the pipelined request after the body


def test_chunked_request_body_arriving_in_pieces(srv):
    with Client(srv.port) as c:
        # the pauses are the behaviour: each piece arrives on its own
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
        time.sleep(0.1)
        c.send(b"c\r\n")
        time.sleep(0.1)
        c.send(b"2\r\nde\r\n0\r\n\r\n")
        assert c.response().body == b"abcde"


def test_unread_request_body_is_skipped_before_the_next_request(srv):
    with Client(srv.port) as c:
        c.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" + get_request("/pid"))
        assert c.response().body == b"did not read"
        assert int(c.response().body) in srv.workers


def test_expect_100_continue_is_sent_when_the_app_reads_the_body(srv):
    with Client(srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = c.response()
        assert interim.status == 100
        c.send(b"howdy")
        r = c.response()
        assert r.status == 200 and r.body == b"howdy"
        c.send(get_request("/pid"))
        assert c.response().status == 200


def test_expect_100_continue_with_a_chunked_body(srv):
    with Client(srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n")
        assert c.response().status == 100
        c.send(b"3\r\nabc\r\n0\r\n\r\n")
        assert c.response().body == b"abc"


def test_expect_100_continue_is_not_sent_when_the_body_came_with_the_head(srv):
    with Client(srv.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhowdy"
               + get_request("/pid"))
        r = c.response()
        assert r.status == 200 and r.body == b"howdy"
        assert int(c.response().body) in srv.workers


def test_expect_100_continue_unread_body_gets_no_100_and_the_connection_closes(srv):
    with Client(srv.port) as c:
        c.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.body == b"did not read"
        assert r.header("Connection") == "close"
        assert c.closed()


def test_head_has_no_body_and_the_get_content_length(srv):
    get_r, _ = one(srv.port, get_request("/environ", extra="Connection: close\r\n"))
    with Client(srv.port) as c:
        c.send(b"HEAD /environ HTTP/1.1\r\nHost: t\r\n\r\n" + get_request("/pid"))
        r = c.response(head=True)
        assert r.status == 200
        # the app reports the method and the Connection header in its body
        assert int(r.header("Content-Length")) == len(get_r.body) + 1 - len('"HTTP_CONNECTION": "close", ')
        # the next response starts right after the head: no body bytes were sent
        assert int(c.response().body) in srv.workers


def test_head_of_a_generator_response_sends_no_body(srv):
    with Client(srv.port) as c:
        c.send(b"HEAD /gen HTTP/1.1\r\nHost: t\r\n\r\n" + get_request("/pid"))
        r = c.response(head=True)
        assert r.status == 200 and r.header("Transfer-Encoding") is None
        assert int(c.response().body) in srv.workers


def test_generator_response_is_chunked_on_http11(srv):
    with Client(srv.port) as c:
        c.send(get_request("/gen?n=3") + get_request("/pid"))
        r = c.response()
        assert r.header("Transfer-Encoding") == "chunked" and r.header("Content-Length") is None
        assert r.body == b"part0;part1;part2;"
        assert int(c.response().body) in srv.workers


def test_generator_response_is_close_delimited_on_http10(srv):
    with Client(srv.port) as c:
        c.send(b"GET /gen?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.response()
        assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None
        assert r.header("Connection") == "close"
        assert r.body == b"part0;part1;part2;"  # read until the server closed


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_carry_no_body(srv, code):
    with Client(srv.port) as c:
        c.send(get_request(f"/status/{code}") + get_request("/pid"))
        r = c.response()
        assert r.status == code
        assert r.header("Transfer-Encoding") is None
        assert int(c.response().body) in srv.workers


def test_304_with_the_apps_content_length_keeps_the_connection(srv):
    with Client(srv.port) as c:
        c.send(get_request("/status-with-length/304") + get_request("/pid"))
        r = c.response()
        assert r.status == 304 and r.header("Connection") is None
        assert int(c.response().body) in srv.workers
        assert not c.closed(0.2)


def test_head_with_the_apps_content_length_keeps_the_connection(srv):
    with Client(srv.port) as c:
        c.send(b"HEAD /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.response(head=True)
        assert r.header("Content-Length") and r.header("Connection") is None
        c.send(get_request("/pid"))
        assert int(c.response().body) in srv.workers


# -- limits and timeouts --

def test_head_larger_than_buffer_size_is_431(srv):
    refused(srv, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431)


def test_head_larger_than_buffer_size_in_many_headers_is_431(srv):
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(120))
    refused(srv, b"GET / HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n", 431)


def test_request_line_larger_than_buffer_size_is_414(srv):
    refused(srv, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414)


# The timing is the behaviour in the next tests: socket-timeout is 1 s here (the default is 4 s),
# so a connection must be given up between 0.5 s and 3.5 s (the worker sweeps once a second).
def test_slow_client_with_a_partial_head_is_timed_out(srv):
    with Client(srv.port, timeout=10) as c:
        c.send(b"GET /pid HTTP/1.1\r\nHo")
        start = time.monotonic()
        data = c.rest()
        elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 3.5
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
    assert_workers_intact(srv)


def test_slow_client_trickling_a_head_is_timed_out_from_the_first_byte(srv):
    # A byte every 0.1 s is never idle for 1 s, and the whole head takes 4.9 s: timed out from
    # its first byte, the connection ends after about ten of them (a slower pace sends fewer).
    head = b"GET /pid HTTP/1.1\r\nHost: t\r\nX-Slow: 1234567890\r\n"
    sent, closed = 0, False
    with Client(srv.port, timeout=10) as c:
        for ch in head:
            try:
                c.send(bytes([ch]))
            except OSError:
                closed = True
                break
            sent += 1
            if select.select([c.sock], [], [], 0.1)[0]:   # the trickle's pace; an answer or a close ends it
                break
        data = c.rest() if not closed else b""
    assert b"200 OK" not in data
    assert sent < 30, f"{sent} bytes sent before the server gave up"


def test_idle_keep_alive_connection_is_closed_after_socket_timeout(srv):
    with Client(srv.port, timeout=10) as c:
        c.send(get_request("/pid"))
        assert c.response().status == 200
        start = time.monotonic()
        assert c.closed(timeout=10)
        assert 0.5 < time.monotonic() - start < 3.5


def test_body_shorter_than_content_length_times_out_without_a_200(srv):
    with Client(srv.port, timeout=10) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        start = time.monotonic()
        data = c.rest()
    assert b" 200 " not in data
    assert time.monotonic() - start < 3.5
    assert_workers_intact(srv)


# -- hostile requests: refused, never a 200, never a dead worker --

AMBIGUOUS_LENGTH = {
    "content-length-and-transfer-encoding":
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    "transfer-encoding-and-content-length":
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
    "duplicate-content-length-same": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                     b"Content-Length: 5\r\n\r\nhello",
    "duplicate-content-length-different": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                          b"Content-Length: 6\r\n\r\nhello!",
    "list-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
    "negative-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello",
    "plus-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
    "non-digit-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5a\r\n\r\nhello",
    "hex-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello",
    "empty-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n",
    "huge-content-length": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "duplicate-transfer-encoding": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "transfer-encoding-on-http10": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", AMBIGUOUS_LENGTH.values(), ids=AMBIGUOUS_LENGTH.keys())
def test_ambiguous_or_malformed_body_length_is_400_and_close(srv, request_bytes):
    refused(srv, request_bytes, 400)


@pytest.mark.parametrize("te", [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity"])
def test_transfer_encoding_other_than_chunked_is_501(srv, te):
    refused(srv, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te + b"\r\n\r\n", 501)


BAD_VERSIONS = {
    "HTTP/2.0": (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    "HTTP/0.9-shaped": (b"GET / HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    "HTTP/1.1x": (b"GET / HTTP/1.1x\r\nHost: t\r\n\r\n", 400),
    "FOO/1.1": (b"GET / FOO/1.1\r\nHost: t\r\n\r\n", 400),
    "lowercase": (b"GET / http/1.1\r\nHost: t\r\n\r\n", 400),
    "no-version": (b"GET /\r\nHost: t\r\n\r\n", 400),
    "extra-token": (b"GET / HTTP/1.1 x\r\nHost: t\r\n\r\n", 400),
    "double-space": (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
}


@pytest.mark.parametrize("request_bytes,status", BAD_VERSIONS.values(), ids=BAD_VERSIONS.keys())
def test_bad_request_line_or_version_is_refused(srv, request_bytes, status):
    refused(srv, request_bytes, status)


def test_refusal_never_echoes_a_bogus_protocol_token(srv):
    raw = refused(srv, b"GET / XYZZY/7.7\r\nHost: t\r\n\r\n", 400)
    assert raw.startswith(b"HTTP/1.1 400 ") and b"XYZZY" not in raw
    raw = refused(srv, b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 505)
    assert raw.startswith(b"HTTP/1.1 505 ") and b"9.9" not in raw


BAD_HEADERS = {
    "control-char-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "del-in-value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",
    "control-char-in-target": b"GET /a\x02b HTTP/1.1\r\nHost: t\r\n\r\n",
    "bare-lf-in-head": b"GET / HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n",
    "bare-lf-after-request-line": b"GET / HTTP/1.1\nHost: t\r\n\r\n",
    "bare-cr-in-head": b"GET / HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello",
    "no-colon": b"GET / HTTP/1.1\r\nHost: t\r\nJustAName\r\n\r\n",
    "empty-header-name": b"GET / HTTP/1.1\r\nHost: t\r\n: value\r\n\r\n",
    "missing-host-on-http11": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad-method-char": b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "relative-target": b"GET pid HTTP/1.1\r\nHost: t\r\n\r\n",
    "fragment-in-target": b"GET /pid#x HTTP/1.1\r\nHost: t\r\n\r\n",
    "empty-request-line": b"\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_malformed_head_is_400_and_close(srv, request_bytes):
    refused(srv, request_bytes, 400)


BAD_CHUNKS = {
    "non-hex-size": b"zz\r\nhello\r\n0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "0x-prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "empty-size": b"\r\nhello\r\n0\r\n\r\n",
    "huge-size": b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "missing-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
    "bare-lf-size-line": b"5\nhello\r\n0\r\n\r\n",
    "size-line-too-long": b"5;" + b"x" * 5000 + b"\r\nhello\r\n0\r\n\r\n",
    "bare-lf-in-extension": b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    "control-char-in-extension": b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    "endless-trailer": b"5\r\nhello\r\n0\r\n" + b"X-T: 1234567890\r\n" * 400 + b"\r\n",
    "bare-cr-in-trailer": b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
}


@pytest.mark.parametrize("chunks", BAD_CHUNKS.values(), ids=BAD_CHUNKS.keys())
def test_malformed_chunked_body_is_400_and_close(srv, chunks):
    refused(srv, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, 400)


def test_absolute_form_target_gives_the_path(srv):
    env = environ_of(srv, b"GET http://example.com/environ?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert env["PATH_INFO"] == "/environ" and env["QUERY_STRING"] == "x=1"


# -- headers into the environ --

def test_header_with_underscore_is_dropped_from_the_environ(srv):
    env = environ_of(srv, get_request("/environ", extra="X_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.2.3.4\r\n"))
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    env = environ_of(srv, get_request("/environ", extra="X_Forwarded_For: 6.6.6.6\r\n"))
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_duplicate_headers_are_joined_with_comma(srv):
    env = environ_of(srv, get_request("/environ", extra="Accept: a/b\r\nX-Multi: 1\r\nAccept: c/d\r\nx-multi: 2\r\n"))
    assert env["HTTP_ACCEPT"] == "a/b, c/d"
    assert env["HTTP_X_MULTI"] == "1, 2"


def test_duplicate_cookie_headers_are_joined_with_semicolon(srv):
    env = environ_of(srv, get_request("/environ", extra="Cookie: a=1\r\nCookie: b=2; c=3\r\n"))
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3"


def test_header_values_keep_inner_spaces_and_lose_outer_whitespace(srv):
    env = environ_of(srv, get_request("/environ", extra="X-Spaces: \t a  b \t\r\nX-Empty:\r\n"))
    assert env["HTTP_X_SPACES"] == "a  b"
    assert env["HTTP_X_EMPTY"] == ""


def test_workers_survived_the_whole_module(srv):
    assert_workers_intact(srv)
    assert "worker failed" not in srv.log
