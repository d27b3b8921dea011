"""The request log as uWSGI's options shape it (LogFormat and Logging docs)."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from support import APPS, free_port, wait_for

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
