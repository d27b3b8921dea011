"""HTTP/1.1 strictness beyond tests/test_http.py: what gunicorn refuses, we refuse too.

Each refusal closes a leniency that a front proxy could read differently from us
(request smuggling, cache poisoning) or that lets a client hold a worker. One
real master (two workers) serves the module over real sockets; after every
refusal the same workers must still serve. socket-timeout is 4 s here so that
an answer "at once" cannot be mistaken for the timeout's 408.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from support import Client, get_request as get, one, running_master, worker_pids
from support import free_port
from emperor.worker.protocols.http import HTTPError, find_head

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("http_strict")
    body = "processes = 2\nsocket-timeout = 4\nbuffer-size = 4096\n"
    with running_master(d, body, free_port(), app="echo.py") as p:
        p.workers = worker_pids(p.pid)
        assert len(p.workers) == 2
        yield p


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_workers_intact(srv) -> None:
    assert all(_alive(p) for p in srv.workers), "a worker died"
    assert worker_pids(srv.pid) == srv.workers, "a worker was replaced"
    r, _ = one(srv.port, get("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and int(r.header("X-Pid")) in srv.workers


def refused(srv, data: bytes, status: int = 400) -> None:
    """`data` must get `status` with Connection: close, then the close, well before socket-timeout."""
    start = time.monotonic()
    with Client(srv.port, timeout=3.5) as c:
        c.send(data)
        r = c.response()
        assert r.status == status, r
        assert r.header("Connection") == "close"
        assert c.closed(), "connection left open after a refused request"
    assert time.monotonic() - start < 2.0, "refused only after a timeout"
    assert_workers_intact(srv)


def answered(srv, data: bytes) -> dict:
    """`data` must get a 200; what the application saw (tests/apps/echo.py)."""
    with Client(srv.port) as c:
        c.send(data)
        r = c.response()
    assert r.status == 200, r
    return json.loads(r.body)


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def chunked_post(chunks: bytes, path: str = "/echo") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunks


# -- 1. the request target: RFC 9112 3.2 / RFC 3986 allow only visible US-ASCII --

BAD_TARGETS = {
    "tab-in-path": b"/a\tb",
    "tab-in-query": b"/environ?x=\t",
    "utf8-in-path": b"/caf\xc3\xa9",
    "obs-text-in-query": b"/environ?q=\xff",
    "0x80-in-path": b"/\x80",
    "obs-text-in-absolute-form": b"http://t/\xe9",
}


@pytest.mark.parametrize("target", BAD_TARGETS.values(), ids=BAD_TARGETS.keys())
def test_tab_or_obs_text_in_the_request_target_is_400(srv, target):
    """RFC 9112 3.2: request-target is built from RFC 3986 URI characters, which are
    visible US-ASCII only; a TAB or a raw byte >= 0x80 is a malformed request-line
    (RFC 9112 3: respond 400), not something to pass through to PATH_INFO."""
    refused(srv, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")


def test_percent_encoded_bytes_in_the_target_still_reach_path_info(srv):
    """What a client must send instead of raw bytes (RFC 3986 2.1) still works."""
    env = answered(srv, b"GET /environ/caf%C3%A9%09 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert env["path"] == "/environ/caf\xc3\xa9\t"


# -- absolute-form (RFC 9112 3.2.2): the authority ends at the first "/" or "?" --

def test_absolute_form_with_a_query_and_no_path(srv):
    """RFC 3986 3: in http://host?q the query starts at "?": PATH_INFO is "/" (RFC 9112 3.3)
    and the query must not be dropped."""
    env = answered(srv, b"GET http://t?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert env["path"] == "/" and env["query"] == "x=1"


def test_absolute_form_slash_inside_the_query_is_not_the_path(srv):
    """http://t?a=/environ has the path "" (so "/") and the query "a=/environ": routing on
    "/environ" would let a query steer the application."""
    env = answered(srv, b"GET http://t?a=/environ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert env["path"] == "/" and env["query"] == "a=/environ"


def test_absolute_form_scheme_is_case_insensitive(srv):
    """RFC 3986 3.1: schemes are case-insensitive; HTTP://t/ is the same target as http://t/."""
    env = answered(srv, b"GET HTTP://t/environ?y=2 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert env["path"] == "/environ" and env["query"] == "y=2"


@pytest.mark.parametrize("target", [b"http:///environ", b"http://u@t/environ", b"http://u:p@t/environ",
                                    b"http://t:80x/environ", b"http://[zz]/environ"],
                         ids=["empty-host", "userinfo", "userinfo-password", "bad-port", "bad-ip-literal"])
def test_absolute_form_with_a_bad_authority_is_400(srv, target):
    """RFC 9110 4.2.1: an http URI with an empty host MUST be rejected; 4.2.4: userinfo is
    an error (it hides the real host from a reader of logs); RFC 3986 3.2.2/3.2.3: the
    host and port grammar."""
    refused(srv, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")


# -- Host (RFC 9112 3.2): an invalid field value MUST get a 400 --

@pytest.mark.parametrize("host", [b"a b", b"t/x", b"t@x", b"t:8x", b"t:80:80", b"[::1", b"t#", b"t?",
                                  b'"t"', b"t\\x"],
                         ids=["space", "slash", "at", "bad-port", "two-ports", "open-bracket", "hash",
                              "question", "quotes", "backslash"])
def test_host_with_an_invalid_value_is_400(srv, host):
    """RFC 9112 3.2: "A server MUST respond with a 400 ... to any request message that
    contains ... a Host header field with an invalid field value"; Host = uri-host [":" port]
    (RFC 9110 7.2). A Host that the application and a cache split differently poisons caches."""
    refused(srv, b"GET /pid HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")


@pytest.mark.parametrize("host", [b"example.org", b"example.org:8080", b"127.0.0.1:80", b"[::1]:8000",
                                  b"", b"xn--bcher-kva.example", b"a_b.example", b"t:"],
                         ids=["name", "name-port", "ipv4", "ipv6", "empty", "idn", "underscore",
                              "empty-port"])
def test_host_with_a_valid_value_is_served(srv, host):
    """The same grammar's valid forms, the empty value included (RFC 9112 3.2)."""
    env = answered(srv, b"GET /environ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert env["fields"]["HTTP_HOST"] == host.decode()


# -- 2. chunk sizes (RFC 9112 7.1): chunk-size is 1*HEXDIG, with no whitespace around it --

BAD_CHUNK_LINES = {
    "space-before-size": b" 5",
    "tab-before-size": b"\t5",
    "space-after-size": b"5 ",
    "tab-after-size": b"5\t",
    "space-after-last-chunk": b"0 ",
    "empty-extension-name": b"5;",
    "space-only-extension": b"5; ",
    "extension-trailing-space": b"5;a ",
    "extension-empty-value": b"5;a=",
    "extension-space-in-name": b"5;a b",
    "extension-bad-name-char": b"5;a@b",
    "extension-unterminated-quote": b'5;a="x',
    "extension-bare-cr": b"5;a\rb",
    "extension-bad-value-char": b"5;a=b@c",
}


@pytest.mark.parametrize("line", BAD_CHUNK_LINES.values(), ids=BAD_CHUNK_LINES.keys())
def test_chunk_size_line_outside_the_grammar_is_400(srv, line):
    """RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF; chunk-size = 1*HEXDIG; 7.1.1:
    chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ). Whitespace is
    allowed only on either side of ";" and "=": a parser that trims " 5 " agrees with one
    that reads it as an error only by luck, and that disagreement is how a chunked body
    gets smuggled past a front proxy."""
    if line.startswith(b"0"):
        chunks = line + b"\r\n\r\n"
    else:
        chunks = line + b"\r\nhello\r\n0\r\n\r\n"
    refused(srv, chunked_post(chunks))


GOOD_CHUNK_LINES = {
    "plain": b"5",
    "upper-hex-leading-zeros": b"0005",
    "extension": b"5;a",
    "extension-value": b"5;a=1",
    "bws-before-semicolon": b"5 \t;a=1",
    "bws-everywhere": b"5 ; a = 1",
    "two-extensions": b"5;a=1;b",
    "quoted-value": b'5;a="x y;\\"z"',
}


@pytest.mark.parametrize("line", GOOD_CHUNK_LINES.values(), ids=GOOD_CHUNK_LINES.keys())
def test_chunk_size_line_inside_the_grammar_is_decoded(srv, line):
    """The BWS the grammar does allow (around ";" and "=") and quoted-string values."""
    env = answered(srv, chunked_post(line + b"\r\nhello\r\n0;last=1\r\n\r\n"))
    assert env["body"] == sha(b"hello") and env["length"] == 5


# -- 3. trailers (RFC 9112 7.1.2, RFC 9110 6.5) --

BAD_TRAILERS = {
    "no-colon": b"JustAName\r\n",
    "obs-fold": b"X-A: 1\r\n folded\r\n",
    "obs-fold-tab": b"X-A: 1\r\n\tfolded\r\n",
    "leading-space": b" X-A: 1\r\n",
    "space-before-colon": b"X-A : 1\r\n",
    "empty-name": b": 1\r\n",
    "bad-name-char": b"X(A): 1\r\n",
}


@pytest.mark.parametrize("trailer", BAD_TRAILERS.values(), ids=BAD_TRAILERS.keys())
def test_malformed_trailer_line_is_400(srv, trailer):
    """RFC 9112 7.1.2: trailer-section = *( field-line CRLF ), field-line = field-name ":"
    OWS field-value OWS (RFC 9112 5), and obs-fold is not allowed there at all (RFC 9112 5.2
    allows it only in message/http). A line that is not a field is an error, not noise."""
    refused(srv, chunked_post(b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n"))


FORBIDDEN_TRAILERS = ["Content-Length", "Transfer-Encoding", "Host", "Trailer", "TE", "Connection",
                      "Keep-Alive", "Upgrade", "Expect", "Authorization", "Proxy-Authorization",
                      "Content-Type", "Content-Encoding", "Content-Range", "cOnTeNt-LeNgTh"]


@pytest.mark.parametrize("name", FORBIDDEN_TRAILERS)
def test_trailer_field_that_frames_routes_or_authenticates_is_400(srv, name):
    """RFC 9110 6.5.1: a trailer cannot carry what must be known before the content:
    framing (Content-Length, Transfer-Encoding, Trailer), connection handling (Connection,
    Keep-Alive, TE, Upgrade, Expect), routing (Host), authentication (Authorization,
    Proxy-Authorization) or the content's format (Content-*). A proxy that merges trailers
    into the header section would act on them; we refuse the message instead."""
    refused(srv, chunked_post(b"5\r\nhello\r\n0\r\n" + name.encode() + b": 5\r\n\r\n"))


def test_ordinary_trailer_fields_are_accepted(srv):
    env = answered(srv, chunked_post(b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: x;dur=1\r\n\r\n"))
    assert env["body"] == sha(b"hello") and env["length"] == 5


# -- 4. header count (RFC 9110 5.4 / RFC 6585 5): more than 100 fields is 431 --

def _many(n: int) -> bytes:
    return b"GET /pid HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(n - 1)) + b"\r\n"


def test_more_than_100_header_fields_is_431(srv):
    """RFC 9110 5.4: a server that receives more header fields than it wishes to process
    responds with a 4xx; RFC 6585 5 names it 431. 101 tiny fields fit in buffer-size, so
    only the count can refuse them: a parse cost bounded per request, as gunicorn's
    limit_request_fields (100)."""
    assert len(_many(101)) < 4096
    refused(srv, _many(101), 431)


def test_exactly_100_header_fields_are_served(srv):
    with Client(srv.port) as c:
        c.send(_many(100))
        assert c.response().status == 200


# -- 5. a repeated singleton field --

@pytest.mark.parametrize("second", [b"Content-Type: text/html", b"content-type: text/plain"])
def test_repeated_content_type_is_400(srv, second):
    """RFC 9110 5.3: a field that is not a list (Content-Type = media-type, 8.3) must not be
    repeated; keeping the last one, as we did, lets an application and a proxy in front of
    it see different content types (a WAF checks the first, the app parses the second)."""
    refused(srv, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n" + second
            + b"\r\nContent-Length: 2\r\n\r\nok")


# -- Connection (RFC 9110 7.6.1) is a list of tokens, over all its field lines --

def test_connection_close_in_a_second_field_line_closes(srv):
    """RFC 9110 5.3: two Connection lines are one list, "keep-alive, close": the close
    must win, whichever line carries it."""
    with Client(srv.port) as c:
        c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\nConnection: x-custom\r\n\r\n")
        r = c.response()
        assert r.status == 200 and r.header("Connection") == "close"
        assert c.closed()


def test_connection_option_containing_close_is_not_close(srv):
    """"closed" or "x-close" are other options than "close" (connection-option = token):
    reading them as close would drop the pipelined request that follows."""
    with Client(srv.port) as c:
        c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: x-close, closed\r\n\r\n" + get("/pid"))
        assert c.response().status == 200
        r = c.response()
        assert r.status == 200 and int(r.header("X-Pid")) in srv.workers


def test_http10_keep_alive_is_a_token_too(srv):
    with Client(srv.port) as c:
        c.send(b"GET /pid HTTP/1.0\r\nConnection: x-keep-alive-x\r\n\r\n")
        r = c.response()
        assert r.header("Connection") == "close" and c.closed()


# -- 6. bare LF or CR line ends: 400 at once, not a 408 after socket-timeout --

BARE = {
    "lf-only-head": b"GET /pid HTTP/1.1\nHost: t\n\n",
    "lf-after-request-line-partial": b"GET /pid HTTP/1.1\n",
    "lf-in-headers-partial": b"GET /pid HTTP/1.1\r\nHost: t\nX-A: 1\r\n",
    "lf-lf-end": b"GET /pid HTTP/1.1\r\nHost: t\r\n\n",
    "leading-lf": b"\nGET /pid HTTP/1.1\r\n",
    "cr-in-headers-partial": b"GET /pid HTTP/1.1\r\nHost: t\rX-A: 1\r\n",
    "cr-cr-lf": b"GET /pid HTTP/1.1\r\r\n",
}


@pytest.mark.parametrize("data", BARE.values(), ids=BARE.keys())
def test_bare_lf_or_cr_in_an_incomplete_head_is_400_at_once(srv, data):
    """RFC 9112 2.2: a recipient MAY accept a bare LF as a line end, but then it reads
    the message differently from one that does not, which is the smuggling ingredient; we
    refuse. The blank line CRLF CRLF never comes in such a head, so waiting for it only
    ties the connection up until socket-timeout (4 s here) and answers 408."""
    refused(srv, data, 400)


def test_cr_at_the_end_of_a_partial_head_is_the_first_half_of_a_crlf():
    """A head may arrive cut between CR and LF: that is not a bare CR."""
    assert find_head(b"GET / HTTP/1.1\r", 4096) == -1
    assert find_head(b"GET / HTTP/1.1\r\nHost: t\r\n\r", 4096) == -1
    head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    assert find_head(head + b"GET", 4096) == len(head)
    with pytest.raises(HTTPError):
        find_head(b"GET / HTTP/1.1\r\rHost", 4096)


# -- 7. an oversize refusal reaches a client that is still sending --

@pytest.mark.parametrize("status,data", [(414, b"GET /" + b"a" * (12 << 20)),
                                         (431, b"GET / HTTP/1.1\r\nX: " + b"a" * (12 << 20))],
                         ids=["414", "431"])
def test_oversize_refusal_is_read_by_a_client_still_sending(srv, status, data):
    """RFC 9112 9.6: closing with request bytes unread resets the connection, so a client
    (or nginx, which then answers 502) sending a large request gets ECONNRESET instead of
    our 414/431. With a lingering close the send completes and the refusal is read."""
    with Client(srv.port, timeout=10) as c:
        c.send(data)
        r = c.response()
        assert r.status == status and c.closed()
    assert_workers_intact(srv)

def test_workers_survived_the_whole_module(srv):
    assert_workers_intact(srv)
    assert "worker failed" not in srv.log and "internal error" not in srv.log
