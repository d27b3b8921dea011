"""The request log as uWSGI's options shape it (LogFormat and Logging docs)."""
from __future__ import annotations

import json
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from spoolsupport import SERVERS, UWSGI, write_ini
from spoolsupport import start as start_server
from support import APPS, free_port, wait_for, wait_port

pytestmark = pytest.mark.timeout(60)


def start(procs, tmp_path: Path, body: str):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n{body}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    m.port = port
    return m


def get(port: int, path: str = "/", headers: str = "") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: example.test\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split()[1])


def test_log_format_makes_json_lines_with_uwsgi_s_variables(procs, tmp_path):
    m = start(procs, tmp_path, 'log-format = {"addr": "%(addr)", "method": "%(method)", "uri": "%(uri)", '
                               '"status": %(status), "size": %(size), "msecs": %(msecs), "ua": "%(uagent)", '
                               '"host": "%(host)", "who": "%(var.HTTP_X_WHO)", "wid": %(wid)}\n')
    assert get(m.port, "/x?y=1", "User-Agent: probe/1\r\nX-Who: me\r\n") == 200
    line = wait_for(lambda: next((l for l in m.log.splitlines() if l.startswith("{")), None), timeout=10)
    doc = json.loads(line)
    assert doc["addr"] == "127.0.0.1" and doc["method"] == "GET" and doc["uri"] == "/x?y=1"
    assert doc["status"] == 200 and doc["size"] > 0 and doc["ua"] == "probe/1" and doc["host"] == "example.test"
    assert doc["who"] == "me" and doc["wid"] == 1


def test_disable_logging_with_log_4xx_and_5xx_logs_only_errors(procs, tmp_path):
    m = start(procs, tmp_path, "disable-logging = true\nlog-4xx = true\nlog-5xx = true\n")
    assert get(m.port, "/") == 200
    assert get(m.port, "/boom") == 500
    with socket.create_connection(("127.0.0.1", m.port), timeout=5) as s:   # a 400 from the parser
        s.sendall(b"NOT HTTP\r\n\r\n")
        s.recv(100)
    m.wait_log("GET /boom => 500", timeout=10)
    assert "GET / => 200" not in m.log


def test_log_slow_and_log_x_forwarded_for(procs, tmp_path):
    m = start(procs, tmp_path, "disable-logging = true\nlog-slow = 200\nlog-x-forwarded-for = true\n")
    assert get(m.port, "/") == 200
    assert get(m.port, "/sleep?ms=300", "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n") == 200
    m.wait_log("203.0.113.7 GET /sleep?ms=300 => 200", timeout=10)
    assert " GET / => 200" not in m.log


def test_a_client_cannot_inject_a_line_through_log_format(procs, tmp_path):
    """What nginx passes through uwsgi_pass is raw: a newline or an ESC there is escaped."""
    from emperor.worker.protocols.uwsgi import encode_vars
    uport = free_port()
    m = start(procs, tmp_path, f"socket = 127.0.0.1:{uport}\nlog-format = %(uagent)|%(uri)\n")
    with socket.create_connection(("127.0.0.1", uport), timeout=5) as s:
        s.sendall(encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": "/a", "REQUEST_URI": "/a\nforged",
                               "HTTP_USER_AGENT": "x\x1b[31m"}))
        while s.recv(65536):
            pass
    line = wait_for(lambda: next((l for l in m.log.splitlines() if "|/a" in l), None), timeout=10)
    assert "\x1b" not in m.log and line == "x\\x1b[31m|/a\\nforged"


def test_req_logger_file_takes_the_request_lines(procs, tmp_path):
    reqs = tmp_path / "requests.log"
    m = start(procs, tmp_path, f"req-logger = file:{reqs}\nlogger = syslog\n")
    assert get(m.port, "/") == 200
    wait_for(lambda: reqs.exists() and "GET / => 200" in reqs.read_text(), timeout=10)
    assert "GET / => 200" not in m.log
    assert 'logger "syslog": only file:PATH and stdio are supported by emperor; ignored' in m.log


def test_log_date_format_starts_every_line_of_the_master_and_workers(procs, tmp_path):
    """uWSGI core/logging.c uwsgi_log: with log_strftime set (`log-date = FMT`, or its alias
    log-prefix, uwsgi.c uwsgi_opt_log_date) every line starts with strftime(FMT)."""
    m = start(procs, tmp_path, "log-prefix = <%%Y>\nlog-format = %(method) %(ftime)|%(ltime)\n")
    assert get(m.port, "/") == 200
    year = wait_for(lambda: next((l for l in m.log.splitlines() if l.startswith("GET ")), None), timeout=10)
    ftime, ltime = year[4:].split("|")
    assert ftime == ltime   # %(ftime) is ltime unless logformat-strftime (logging.c uwsgi_lf_ftime)
    own = [l for l in m.log.splitlines() if "[app.ini" in l]
    assert own and all(l.startswith("<2") and l[1:5].isdigit() for l in own), own


def test_log_sendfile_logs_file_responses_with_logging_disabled(procs, tmp_path):
    """core/logging.c log_request: with log-sendfile a response sent by sendfile is logged even
    when logging is off (uwsgi.logging_options.sendfile, UWSGI_VIA_SENDFILE)."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("file body\n")
    m = start(procs, tmp_path, f"disable-logging = true\nlog-sendfile = true\nstatic-map = /s={static}\n")
    assert get(m.port, "/") == 200
    assert get(m.port, "/s/a.txt") == 200
    m.wait_log("GET /s/a.txt => 200", timeout=10)
    assert " GET / => 200" not in m.log


SIZED = """
def application(environ, start_response):
    n = int(environ.get("QUERY_STRING", "n=0").partition("=")[2] or 0)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(n))])
    return [b"x" * n]
"""


def serve_sized(procs, server: str, tmp_path: Path, body: str):
    """The same ini and app (an answer of ?n= bytes) under emperor or real uWSGI."""
    (tmp_path / "sized.py").write_text(SIZED)
    return start_server(procs, server, tmp_path, body, app=str(tmp_path / "sized.py"))


def fetch(port: int, path: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=15) as r:
        r.read()


def req_lines(p, last: str) -> list[str]:
    """The REQ lines of p's output once the one for `last` is there."""
    p.wait_log(f"REQ {last} ", timeout=15)
    return [l for l in p.log.splitlines() if l.startswith("REQ ")]


@pytest.mark.parametrize("server", SERVERS)
def test_log_big_and_log_zero_look_at_the_body_size(procs, tmp_path, server):
    """core/logging.c log_request: with logging disabled, log-big logs a request whose
    wsgi_req->response_size (the body, %(rsize), not %(size) which adds the headers) is >= N,
    and log-zero one whose body is empty. A body of 999 bytes is under log-big = 1000 even
    though its headers take the whole response past 1000."""
    p = serve_sized(procs, server, tmp_path, "disable-logging = true\nlog-big = 1000\nlog-zero = true\n"
                                             "log-format = REQ %(uri) %(rsize)\n")
    for n in (5, 0, 999, 1000, 5000):
        fetch(p.port, f"/s?n={n}")
    assert req_lines(p, "/s?n=5000") == ["REQ /s?n=0 0", "REQ /s?n=1000 1000", "REQ /s?n=5000 5000"]


@pytest.mark.parametrize("server", SERVERS)
def test_logformat_strftime_formats_ftime_with_log_date_and_nothing_else(procs, tmp_path, server):
    """core/logging.c uwsgi_lf_ftime: with logformat-strftime and log-date = FMT, %(ftime) is
    the request's start through strftime(FMT); the rest of the log-format line is written as it
    is (uWSGI 2.0's uwsgi_logit_lf_strftime is commented out in core/uwsgi.c): a literal %Y in
    the format stays, and a client's %-sequence in the URI is not expanded by strftime."""
    p = serve_sized(procs, server, tmp_path, "logformat-strftime = true\nlog-date = %%Y-%%m-%%d\n"
                                             "log-format = REQ %(uri) [%(ftime)] %%Y|%(ltime)\n")
    before = time.localtime()
    fetch(p.port, "/%25Y/%25d?n=2")
    after = time.localtime()
    [line] = req_lines(p, "/%25Y/%25d?n=2")
    head, ltime = line.split("|")
    days = {time.strftime("%Y-%m-%d", t) for t in (before, after)}
    assert head in {f"REQ /%25Y/%25d?n=2 [{d}] %Y" for d in days}, line
    assert ltime[:11] in {time.strftime("%d/%b/%Y", t) for t in (before, after)}, line


@pytest.mark.parametrize("server", SERVERS)
def test_logger_and_req_logger_stdio_write_to_the_process_output(procs, tmp_path, server):
    """plugins/logfile/logfile.c uwsgi_stdio_logger: `logger = stdio` and `req-logger = stdio`
    write to the log descriptor the process started with (uwsgi.original_log_fd): the server's
    own lines and the request lines both come out on its stdout/stderr, nothing is dropped."""
    p = serve_sized(procs, server, tmp_path, "logger = stdio\nreq-logger = stdio\nlog-format = REQ %(uri) %(status)\n")
    fetch(p.port, "/s?n=3")
    assert req_lines(p, "/s?n=3") == ["REQ /s?n=3 200"]
    assert "ignored" not in p.log and "not supported" not in p.log


@pytest.mark.parametrize("server", SERVERS)
def test_req_logger_stdio_keeps_the_request_lines_on_stdout_when_logger_takes_a_file(procs, tmp_path, server):
    """core/logging.c uwsgi_setup_log keeps original_log_fd = dup(1) before a `logger` takes the
    log, and plugins/logfile/logfile.c uwsgi_stdio_logger writes there: with `logger = file:F`
    and `req-logger = stdio` the server's lines go to F and the request lines to the stdout it
    started with. Emperor keeps that descriptor across a graceful reload (SIGHUP) too."""
    general = tmp_path / "general.log"
    (tmp_path / "sized.py").write_text(SIZED)
    port = free_port()
    ini = write_ini(tmp_path, f"logger = file:{general}\nreq-logger = stdio\nlog-format = REQ %(uri) %(status)\n",
                    port, app=str(tmp_path / "sized.py"))
    argv = [sys.executable, "-m", "emperor", "master"] if server == "emperor" else [str(UWSGI), "--ini"]
    p = procs([*argv, str(ini)], tmp_path, log=tmp_path / "stdout.log")
    ready = "(workers ready)" if server == "emperor" else "spawned uWSGI worker 1"
    wait_for(lambda: general.exists() and ready in general.read_text(), timeout=30)
    wait_port(port, 20)
    p.port = port
    fetch(p.port, "/s?n=3")
    assert req_lines(p, "/s?n=3") == ["REQ /s?n=3 200"]
    assert "REQ " not in general.read_text()
    if server == "emperor":
        p.signal(signal.SIGHUP)
        wait_for(lambda: "generation 1 ready" in general.read_text(), timeout=30)
        fetch(p.port, "/s?n=4")
        assert req_lines(p, "/s?n=4") == ["REQ /s?n=3 200", "REQ /s?n=4 200"]
        assert "REQ " not in general.read_text()
