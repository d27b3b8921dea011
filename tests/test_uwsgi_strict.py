"""uwsgi protocol refusals found by scripts/fuzz.py, on a real master over real sockets.

The master's buffer-size is 16384 here, so that a packet can carry a CONTENT_LENGTH
longer than Python's int() accepts (4300 digits): nginx never sends one, but a worker
must refuse it with a 400, not fail with a 500.
"""
from __future__ import annotations

import pytest

from support import Client, get_request as get, one, running_master, worker_pids
from support import free_port
from emperor.worker.protocols.uwsgi import encode_vars

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = tmp_path_factory.mktemp("uwsgi_strict")
    uport = free_port()
    body = f"socket = 127.0.0.1:{uport}\nprocesses = 2\nsocket-timeout = 4\nbuffer-size = 16384\n"
    with running_master(d, body, free_port(), app="echo.py") as p:
        p.uport = uport
        p.workers = worker_pids(p.pid)
        yield p


def assert_workers_intact(srv) -> None:
    assert worker_pids(srv.pid) == srv.workers, "a worker died or was replaced"
    r, _ = one(srv.port, get("/pid", extra="Connection: close\r\n"))
    assert r.status == 200 and int(r.header("X-Pid")) in srv.workers


def exchange(srv, data: bytes) -> bytes:
    with Client(srv.uport) as c:
        c.send(data)
        return c.rest()


@pytest.mark.parametrize("length", ["9" * 5000, "9" * 19, "0" * 18 + "5"],
                         ids=["beyond-int-limit", "19-digits", "19-with-leading-zeros"])
def test_content_length_longer_than_18_digits_is_400(srv, length):
    """No body has 10^18 bytes; 5000 digits made int() raise inside the worker (a 500 and an
    "internal error"), 19 made it wait for a body that never comes. The same bound as the
    HTTP parser's Content-Length."""
    raw = exchange(srv, encode_vars({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": length}))
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert_workers_intact(srv)


def test_content_length_of_18_digits_is_read_as_a_length(srv):
    """The bound itself is a valid length: the worker waits for that body (cut short by EOF here)."""
    with Client(srv.uport) as c:
        c.send(encode_vars({"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": "0" * 17 + "3"}) + b"abc")
        r = c.response()
        assert r.status == 200 and int(r.header("X-Pid")) in srv.workers


def test_workers_survived_the_whole_module(srv):
    assert_workers_intact(srv)
    assert "internal error" not in srv.log and "worker failed" not in srv.log
