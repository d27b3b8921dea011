"""Request options in a real master with a real client: limit-post, post-buffering (the request
body), http-keepalive (the connection), harakiri-verbose (a stuck request). uWSGI's Options.rst
and sources are cited per test."""
from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time

import pytest

from conftest import wait_for

pytestmark = pytest.mark.timeout(60)

APP = r"""
import json, os, time
def application(environ, start_response):
    inp = environ["wsgi.input"]
    called = time.time()
    data = inp.read()
    try:
        fd = inp.fileno()
    except (AttributeError, OSError):
        fd = None
    seen = {"called": called, "len": len(data), "head": data[:16].decode("latin-1"),
            "input": type(inp).__name__, "content_length": environ.get("CONTENT_LENGTH"),
            "file": os.readlink(f"/proc/self/fd/{fd}") if fd is not None else None, "pid": os.getpid()}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send a request, read until the server closes (every request here says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def post(port: int, body: bytes, chunked: bool = False, extra: str = "") -> tuple[int, bytes]:
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                          for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
        head = f"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n{extra}Connection: close\r\n\r\n"
        reply = exchange(port, head.encode(), framed)
    else:
        head = f"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        reply = exchange(port, head.encode(), body)
    return int(reply.split(b" ", 2)[1]), reply.split(b"\r\n\r\n", 1)[1]


def test_limit_post_refuses_an_announced_body_before_reading_it(master):
    """Options.rst `limit-post` (core/protocol.c uwsgi_proto_check_14: a CONTENT_LENGTH over it is
    refused at parse time). Here: 413, and not one byte of the body is waited for, not even a
    100 Continue sent."""
    m = master("limit-post = 1000\n", app=APP)
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in reply
    assert b"Connection: close" in reply
    status, body = post(m.port, b"x" * 1000)
    assert status == 200 and json.loads(body)["len"] == 1000


def test_limit_post_cuts_a_chunked_body_at_the_limit(master):
    """A chunked body announces no size: reading past `limit-post` raises the 413 the worker answers."""
    m = master("limit-post = 5000\n", app=APP)
    assert post(m.port, b"y" * 5000, chunked=True)[0] == 200
    status, body = post(m.port, b"y" * 20000, chunked=True)
    assert status == 413
    m.wait_log("request body refused: 413 request body over limit-post")


def test_limit_post_answers_curl_sending_a_large_body(master, tmp_path):
    """What a real uploader sees: curl posting 8 MB (with its Expect: 100-continue) gets the 413."""
    m = master("limit-post = 100000\n", app=APP)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", f"@{big}",
                        f"http://127.0.0.1:{m.port}/up"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "413"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Expect:", "--data-binary",
                        f"@{big}", f"http://127.0.0.1:{m.port}/up"], capture_output=True, text=True, timeout=30)
    assert r.stdout == "413"


def test_post_buffering_reads_small_bodies_to_memory_and_large_ones_to_a_temp_file(master, tmp_path):
    """Options.rst `post-buffering` (core/utils.c uwsgi_postbuffer_do_in_mem below N bytes,
    uwsgi_postbuffer_do_in_disk from N up): the temporary file is unlinked from the start and
    closed with the response; a chunked body gets its CONTENT_LENGTH."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    m = master("post-buffering = 4096\n", app=APP, env={"TMPDIR": str(tmpdir)})
    small = json.loads(post(m.port, b"s" * 100)[1])
    assert (small["input"], small["len"], small["file"]) == ("BytesIO", 100, None)
    large = json.loads(post(m.port, b"L" * 300000)[1])
    assert large["len"] == 300000 and large["head"] == "L" * 16
    assert large["file"].startswith(str(tmpdir)) and large["file"].endswith("(deleted)")
    chunked = json.loads(post(m.port, b"c" * 10000, chunked=True)[1])
    assert chunked["len"] == 10000 and chunked["content_length"] == "10000" and chunked["file"] is not None
    # nothing left behind: no name in the directory, no descriptor open in the worker
    assert list(tmpdir.iterdir()) == []
    fds = [os.readlink(f"/proc/{large['pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{large['pid']}/fd")]
    assert not [f for f in fds if f.startswith(str(tmpdir))]


def test_post_buffering_calls_the_app_only_once_a_slow_body_is_complete(master):
    """The point of post-buffering: the application starts with the whole body in hand, so a slow
    uploader never holds it mid-request (it is called after the last byte came)."""
    m = master("post-buffering = 65536\n", app=APP)
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n" + b"a" * 1000)
        time.sleep(0.5)    # the uploader is slow: the rest comes later
        last = time.time()
        s.sendall(b"b" * 1000)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    seen = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert seen["len"] == 2000 and seen["called"] >= last


def test_http_keepalive_zero_closes_every_connection(master):
    """uWSGI's http router keeps no connection open unless `http-keepalive` (plugins/http/http.c);
    emperor's HTTP server keeps them by default, and `http-keepalive = 0` turns that off."""
    m = master("http-keepalive = 0\n", app=APP)
    with socket.create_connection(("127.0.0.1", m.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data


def _alive_after(port: int, idle: float) -> bool:
    """Whether a keep-alive connection still carries a request after `idle` seconds of silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"Connection: close" not in first
        readable, _, _ = select.select([s], [], [], idle)   # the server closing shows as readable (EOF)
        if readable and not s.recv(1, socket.MSG_PEEK):
            return False
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return s.recv(65536).startswith(b"HTTP/1.1 200")


def test_http_keepalive_seconds_is_the_idle_timeout_between_requests(master):
    """`http-keepalive = N` (N > 1): plugins/http/http.c hr_instance_read sets the connection's
    timeout to N while it waits for the next request. Otherwise socket-timeout is that timeout."""
    m = master("socket-timeout = 1\nhttp-keepalive = 4\n", app=APP)
    assert _alive_after(m.port, 2.5)


def test_without_http_keepalive_an_idle_connection_ends_after_socket_timeout(master):
    """The default: socket-timeout (here 1 s) bounds the wait for the next request."""
    m = master("socket-timeout = 1\n", app=APP)
    assert not _alive_after(m.port, 3.0)


def test_harakiri_verbose_logs_the_system_call_and_the_python_stacks(master):
    """Options.rst `harakiri-verbose`; core/master_utils.c trigger_harakiri logs /proc/PID/syscall
    and wchan; here the worker's Python stacks too (faulthandler), then the kill as before."""
    app = """
import time
def stuck_in_here():
    time.sleep(30)
def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        stuck_in_here()
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master("harakiri = 1\nharakiri-verbose = true\n", app=app)

    def stuck() -> None:
        try:
            exchange(m.port, b"GET /stuck HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        except OSError:
            pass

    t = threading.Thread(target=stuck)
    t.start()
    m.wait_log("killed by SIGKILL; respawning", timeout=15)
    t.join()
    log = m.log
    assert "HARAKIRI: -- syscall> " in log and "HARAKIRI: -- wchan> " in log
    assert 'in stuck_in_here' in log and "its stacks follow, then it is killed" in log
    assert log.index("stuck_in_here") < log.index("killing it")
    wait_for(lambda: exchange(m.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
             .startswith(b"HTTP/1.1 200"))
