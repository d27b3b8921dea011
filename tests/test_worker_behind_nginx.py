"""A real nginx in front of a master, through `uwsgi_pass` (SPEC section 5, uwsgi protocol).

nginx comes from Debian's package (scripts/install-test-deps.sh installs it); the
test is skipped, saying so, when the binary is missing. nginx runs as a non-daemon
child with its own prefix, config, pid and temp paths in tmp_path, on a free
loopback port; it and the master are killed by PID at teardown (conftest.procs).
The application echoes, as JSON, what it saw in the WSGI environ.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import NGINX, Client, free_port, http_request, nginx_conf, stop_nginx, wait_port

pytestmark = pytest.mark.timeout(90)

ECHO_APP = r'''
import hashlib, json

def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        n = int(environ["QUERY_STRING"] or 0)
        body = bytes(range(256)) * (n // 256)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    data = environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        # PATH_INFO is bytes-as-latin-1 (PEP 3333): give back the real bytes, as hex
        "path_hex": environ["PATH_INFO"].encode("latin-1").hex(),
        "request_uri": environ.get("REQUEST_URI"),
        "query": environ["QUERY_STRING"],
        "content_type": environ.get("CONTENT_TYPE"),
        "content_length": environ.get("CONTENT_LENGTH"),
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
        "body_len": len(data),
        "body_sha256": hashlib.sha256(data).hexdigest(),
        "body_head": data[:64].decode("latin-1"),
        "scheme": environ["wsgi.url_scheme"],
        "protocol": environ["SERVER_PROTOCOL"],
    }
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

def start_stack(tmp_path: Path, procs, app_source: str, started: list, mode: str = "uwsgi") -> int:
    """nginx -> uwsgi_pass (or `mode`) -> an emperor master serving `app_source`; returns nginx's port."""
    if NGINX is None:
        pytest.skip("nginx binary not found: run scripts/install-test-deps.sh (Debian package nginx-light or nginx)")
    (tmp_path / "stackapp.py").write_text(app_source)
    up = free_port()
    (tmp_path / "app.ini").write_text(textwrap.dedent(f"""\
        [uwsgi]
        {"socket" if mode == "uwsgi" else "http-socket"} = 127.0.0.1:{up}
        chdir = {tmp_path}
        module = stackapp:application
        processes = 2
        disable-logging = true
        """))
    master = procs([sys.executable, "-m", "emperor", "master", str(tmp_path / "app.ini")], tmp_path,
                   log=tmp_path / "master.log")
    master.wait_log("running (workers ready)", timeout=20)

    prefix = tmp_path / "nginx"
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, up, mode))
    nginx = procs([NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                   "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"],
                  tmp_path, log=tmp_path / "nginx.log")
    started.append(nginx)
    try:
        wait_port(port, timeout=10)
    except TimeoutError:
        pytest.fail("nginx did not start:\n" + nginx.log)
    return port


@pytest.fixture
def stacks(tmp_path, procs):
    """start(app_source) -> nginx's port; nginx, then the master, are killed by PID at teardown."""
    started: list = []
    yield lambda app_source, mode="uwsgi": start_stack(tmp_path, procs, app_source, started, mode)
    for nginx in started:
        stop_nginx(nginx.pid)
        try:
            nginx.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def stack(stacks):
    """nginx's port, in front of a master serving the echo app."""
    return stacks(ECHO_APP)


def echo(port: int, method: str, target: str, **kw) -> dict:
    r = http_request(port, method, target, timeout=20, **kw)
    assert r.status == 200, r.body[:500]
    return json.loads(r.body)


def test_method_path_and_query_reach_the_environ(stack):
    seen = echo(stack, "GET", "/hello/world?a=1&b=two%20words&c=%E2%9C%93")
    assert seen["method"] == "GET"
    assert bytes.fromhex(seen["path_hex"]) == b"/hello/world"
    assert seen["query"] == "a=1&b=two%20words&c=%E2%9C%93"  # the query stays encoded
    assert seen["request_uri"] == "/hello/world?a=1&b=two%20words&c=%E2%9C%93"
    assert seen["body_len"] == 0
    assert seen["scheme"] == "http"
    assert seen["protocol"] == "HTTP/1.1"
    assert seen["headers"]["HTTP_HOST"] == "127.0.0.1"  # Debian's params: $host, no port


def test_a_percent_encoded_path_arrives_decoded(stack):
    seen = echo(stack, "GET", "/caf%C3%A9/a%20b/100%25?x=%2F")
    # nginx decodes $document_uri; WSGI carries the bytes as latin-1 code points
    assert bytes.fromhex(seen["path_hex"]) == "/café/a b/100%".encode()
    assert seen["request_uri"] == "/caf%C3%A9/a%20b/100%25?x=%2F"
    assert seen["query"] == "x=%2F"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_reach_the_application(stack, method):
    seen = echo(stack, method, "/m")
    assert seen["method"] == method


def test_custom_headers_reach_the_environ(stack):
    seen = echo(stack, "GET", "/h", headers={
        "X-Custom-Thing": "some value, with: punctuation",
        "X-Request-Id": "abc-123",
        "Accept-Language": "fr-CH, fr;q=0.9, en;q=0.8",
        "Cookie": "a=1; b=2",
        "User-Agent": "emperor-test/1.0",
    })
    h = seen["headers"]
    assert h["HTTP_X_CUSTOM_THING"] == "some value, with: punctuation"
    assert h["HTTP_X_REQUEST_ID"] == "abc-123"
    assert h["HTTP_ACCEPT_LANGUAGE"] == "fr-CH, fr;q=0.9, en;q=0.8"
    assert h["HTTP_COOKIE"] == "a=1; b=2"
    assert h["HTTP_USER_AGENT"] == "emperor-test/1.0"


def test_a_small_post_body_arrives_whole(stack):
    body = b'{"name": "emperor", "n": 42}'
    seen = echo(stack, "POST", "/submit?x=1", body=body, headers={"Content-Type": "application/json"})
    assert seen["method"] == "POST"
    assert seen["content_type"] == "application/json"
    assert seen["content_length"] == str(len(body))
    assert seen["body_len"] == len(body)
    assert seen["body_head"] == body.decode()
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_post_body_arrives_whole(stack):
    body = os.urandom(1 << 20)  # 1 MiB: nginx spools it to its client_body temp file first
    seen = echo(stack, "POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
    assert seen["content_length"] == str(len(body))
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_chunked_post_body_arrives_whole_with_its_length(stack):
    parts = [b"first chunk;", os.urandom(70000), b"", b"last"]
    whole = b"".join(parts)
    seen = echo(stack, "POST", "/chunked", body=iter([p for p in parts if p]), chunked=True,
                headers={"Content-Type": "application/octet-stream"})
    # nginx reads the chunked body whole and hands the upstream a Content-Length
    assert seen["content_length"] == str(len(whole))
    assert seen["body_len"] == len(whole)
    assert seen["body_sha256"] == hashlib.sha256(whole).hexdigest()
    # nginx 1.22 still forwards the client's header although the body is no longer chunked
    # (uWSGI's apps see the same); a raw WSGI app must trust CONTENT_LENGTH / wsgi.input.
    assert seen["headers"].get("HTTP_TRANSFER_ENCODING") in (None, "chunked")


FLASK_APP = """
import hashlib
from flask import Flask, request
application = Flask(__name__)

@application.post("/upload")
def upload():
    data = request.get_data()
    return {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
"""


def test_flask_chunked_upload_behind_nginx(stacks):
    """nginx forwards HTTP_TRANSFER_ENCODING=chunked beside the de-chunked body's CONTENT_LENGTH;
    Werkzeug then ignores CONTENT_LENGTH and reads the body only if wsgi.input_terminated is set
    (uWSGI 2.0.31 does not set it, and its Flask apps read an empty body here)."""
    pytest.importorskip("flask")
    port = stacks(FLASK_APP)
    whole = b"x" * 50000 + b"end"
    r = http_request(port, "POST", "/upload", body=[whole[:20000], whole[20000:]], chunked=True,
                     headers={"Content-Type": "application/octet-stream"}, timeout=20)
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"len": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_a_large_response_arrives_whole(stack):
    n = 2 << 20
    r = http_request(stack, "GET", f"/big?{n}", timeout=20)
    assert r.status == 200
    assert len(r.body) == n == int(r.header("Content-Length"))
    assert r.body == bytes(range(256)) * (n // 256)


def test_many_requests_on_one_client_connection_each_arrive_whole(stack):
    """One client connection to nginx, many upstream connections: every answer is whole."""
    with Client(stack, timeout=20) as c:
        for i in range(200):
            body = str(i).encode()
            c.send(f"POST /n/{i}?i={i} HTTP/1.1\r\nHost: 127.0.0.1:{stack}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            r = c.response()
            seen = json.loads(r.body)
            assert r.status == 200
            assert bytes.fromhex(seen["path_hex"]) == f"/n/{i}".encode()
            assert seen["query"] == f"i={i}"
            assert seen["body_head"] == str(i)


def test_proxy_pass_over_kept_alive_upstream_connections(stacks):
    # The README's alternative to uwsgi_pass: nginx reuses HTTP/1.1 connections to an
    # http-socket. Requests and bodies arrive intact, connections are reused, and a request
    # after an idle spell longer than emperor's socket-timeout (4 s) still succeeds: nginx's
    # keepalive_timeout (3 s) drops the idle connection first, so it never reuses one we closed.
    port = stacks(ECHO_APP.replace('"scheme":', '"remote_port": environ.get("REMOTE_PORT"), "scheme":'),
                  mode="proxy-keepalive")
    ports = set()
    for i in range(60):
        body = os.urandom(1000 * (i % 7))
        seen = echo(port, "POST" if i % 2 else "GET", f"/item/{i}?n={i}", body=body if i % 2 else None)
        assert seen["query"] == f"n={i}" and bytes.fromhex(seen["path_hex"]) == f"/item/{i}".encode()
        if i % 2:
            assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
        ports.add(seen["remote_port"])
    assert len(ports) <= 3, ports          # a few pooled connections, not one per request
    time.sleep(4.5)   # the behaviour: an idle spell longer than emperor's socket-timeout (4 s)
    seen = echo(port, "POST", "/after-idle", body=b"x" * 5000)
    assert seen["body_len"] == 5000
