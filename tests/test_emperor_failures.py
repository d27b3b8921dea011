"""A failure must look like one: workers that cannot start, warnings, fixed files, removals.

Real emperors, masters and clients; every process is started through `procs`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emperor.emperor import prometheus
from support import Client
from support import APPS, ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(90)

GOOD = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"good"]
"""
BROKEN = "raise RuntimeError('the database is not there')\n"


def cli(vdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emperor", *args, "--directory", str(vdir)]
                          if args[0] in ("status", "restart") else
                          [sys.executable, "-m", "emperor", *args, str(vdir)],
                          capture_output=True, text=True, timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def status(vdir: Path) -> dict:
    r = cli(vdir, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def emperor(tmp_path, procs):
    def start(*args: str):
        d = tmp_path / "vassals"
        d.mkdir(exist_ok=True)
        p = procs([sys.executable, "-m", "emperor", "run", str(d), "--grace", "10", *args], tmp_path,
                  log=tmp_path / "emperor.log")
        p.wait_log("[emperor] watching", timeout=15)
        p.dir = d
        return p
    return start


def raw_get(port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def answers_503_and_backs_off(e, port: int) -> None:
    """While no worker of the vassal can start: the master answers 503 with Retry-After, and the
    workers are retried after growing delays, not every second."""
    head = raw_get(port).split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 503") and re.search(rb"\r\nRetry-After: [0-9]+", head)
    e.wait_log("respawning in 4s", timeout=30)
    delays = [float(d) for d in re.findall(r"before serving: .*; respawning in ([0-9.]+)s", e.log)]
    assert sorted(set(delays))[-1] >= 4 and delays.count(1.0) <= 2, delays


def test_workers_that_cannot_start_back_off_answer_503_and_show_why(emperor, tmp_path):
    """lazy-apps with an app that fails to import in the workers: the vassal showed `starting`,
    `0/0` workers, `health` said ok, requests hung and workers were respawned every second
    for ever. Now: capped backoff, `failing` with the error in status, 503 + Retry-After,
    health fails after its grace, and the fix is picked up by the next retry."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgiapp.py").write_text(BROKEN)
    e = emperor()
    port = free_port()
    (e.dir / "lazy.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\n"
                                    "module = wsgiapp\nlazy-apps = true\nprocesses = 2\n")
    e.wait_log("lazy.ini: starting -> failing", timeout=20)
    v = status(e.dir)["vassals"]["lazy.ini"]
    assert v["state"] == "failing" and "RuntimeError: the database is not there" in v["last_error"]
    once = cli(e.dir, "status", "--once").stdout
    assert "failing" in once and "the database is not there" in once
    text = prometheus.render(status(e.dir))
    assert re.search(r'emperor_vassal_error_info\{vassal="lazy.ini",error="[^\n]*RuntimeError: the database is not there[^\n]*"\} 1\n', text)
    answers_503_and_backs_off(e, port)
    r = cli(e.dir, "health", "--grace", "1")
    assert r.returncode == 1 and "lazy.ini has not served" in r.stderr and "the database is not there" in r.stderr
    (app / "wsgiapp.py").write_text(GOOD)
    e.wait_log("lazy.ini: failing -> running", timeout=70)
    assert raw_get(port).endswith(b"good")
    assert status(e.dir)["vassals"]["lazy.ini"]["state"] == "running"


def test_warnings_of_a_file_show_in_status(emperor, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgiapp.py").write_text(GOOD)
    e = emperor()
    port = free_port()
    (e.dir / "warn.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\n"
                                    "module = wsgiapp\nno-such-option-at-all = 1\n")
    e.wait_log("warn.ini: starting -> running", timeout=20)
    v = status(e.dir)["vassals"]["warn.ini"]
    assert v["warnings"] == ['warn.ini:5: unknown option "no-such-option-at-all"']
    assert "1 warning in its file" in cli(e.dir, "status", "--once").stdout
    text = prometheus.render(status(e.dir))
    assert 'emperor_vassal_warnings{vassal="warn.ini"} 1' in text and "emperor_vassal_error_info" not in text
    detail = cli(e.dir, "status", "warn.ini", "--once").stdout
    assert "warning: warn.ini:5:" in detail


def test_a_fixed_file_leaves_no_old_error_in_status(emperor, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgiapp.py").write_text(GOOD)
    e = emperor()
    path = e.dir / "fix.ini"
    body = f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nchdir = {app}\nmodule = wsgiapp\n"
    path.write_text(body + "processes = four\n")
    e.wait_log("fix.ini: new -> config error")
    assert "processes" in status(e.dir)["vassals"]["fix.ini"]["last_error"]
    path.write_text(body)
    e.wait_log("fix.ini: starting -> running", timeout=20)
    v = status(e.dir)["vassals"]["fix.ini"]
    assert v["last_error"] == "" and v["errors"] == []


@pytest.mark.parametrize("how", ["flag", "option"])
def test_graceful_removal_lets_a_request_in_flight_finish(emperor, tmp_path, how):
    """Deleting a vassal file sends SIGINT (uWSGI's way): a request in flight gets an empty
    reply. With `--graceful-removal` (or `graceful-removal = true` in the file) it finishes."""
    gate = tmp_path / "gate"
    gate.mkdir()
    e = emperor(*(["--graceful-removal"] if how == "flag" else []))
    port = free_port()
    path = e.dir / "slow.ini"
    path.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = gate\n"
                    f"env = GATE_DIR={gate}\n" + ("graceful-removal = true\n" if how == "option" else ""))
    e.wait_log("slow.ini: starting -> running", timeout=20)
    got: list = []
    c = Client(port, timeout=20)

    def call() -> None:
        try:
            got.append(c.response())
        except Exception as err:  # noqa: BLE001 - what the client saw is the result
            got.append(err)

    c.send(b"GET /hold?id=r HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: (gate / "r.started").exists(), timeout=10)
    reader = threading.Thread(target=call)
    reader.start()
    path.unlink()
    e.wait_log("slow.ini: running -> stopping (file deleted, gracefully)", timeout=10)
    (gate / "r.release").touch()
    reader.join(15)
    c.close()
    assert got and not isinstance(got[0], Exception) and got[0].status == 200, got
    e.wait_log("slow.ini: stopping -> gone", timeout=20)


UWSGI = Path(sys.executable).parent / "uwsgi"


@pytest.mark.parametrize("server", ["emperor", pytest.param("uwsgi", marks=pytest.mark.skipif(
    not UWSGI.exists(), reason="no uWSGI in the venv"))])
def test_deleting_a_vassal_file_cuts_a_request_in_flight_by_default(emperor, procs, tmp_path, server):
    """uWSGI's default removal: core/emperor.c emperor_stop writes 0 to the vassal's pipe (2 only
    with emperor-graceful-shutdown) and uwsgi_master_manage_emperor answers 0 with kill_them_all,
    SIGINT's brutal stop: a request in flight gets no response, while the application would
    still be holding it (it is never released), and the vassal is gone soon after."""
    gate = tmp_path / "gate"
    gate.mkdir()
    if server == "emperor":
        e = emperor()
    else:
        e = procs([str(UWSGI), "--emperor", str(tmp_path / "vassals")], tmp_path, log=tmp_path / "emperor.log")
        (tmp_path / "vassals").mkdir()
        e.wait_log("*** starting uWSGI Emperor ***", timeout=15)
        e.dir = tmp_path / "vassals"
    port = free_port()
    path = e.dir / "slow.ini"
    path.write_text(f"[uwsgi]\nmaster = true\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = gate\n"
                    f"env = GATE_DIR={gate}\n")
    e.wait_log("slow.ini: starting -> running" if server == "emperor" else "vassal slow.ini is ready", timeout=30)
    c = Client(port, timeout=20)
    c.send(b"GET /hold?id=r HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_for(lambda: (gate / "r.started").exists(), timeout=10)
    path.unlink()
    with pytest.raises(ConnectionError):   # support.Closed, or a reset
        c.response()
    c.close()
    assert not (gate / "r.release").exists()
    e.wait_log("slow.ini: stopping -> gone" if server == "emperor" else "removed uwsgi instance slow.ini", timeout=20)
    if server == "emperor":
        assert "slow.ini: running -> stopping (file deleted)" in e.log


POSTFORK_APP = """
import os, sys
from uwsgidecorators import postfork

READY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "database")


@postfork
def connect():
    if not os.path.exists(READY):
        print("cannot reach the database", file=sys.stderr, flush=True)
        {exit}(3)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"good"]
"""


@pytest.mark.parametrize("exit", ["sys.exit", "os._exit"])
def test_workers_that_die_in_postfork_back_off_without_lazy_apps(emperor, tmp_path, exit):
    """The app loads in the master; each worker then runs the @postfork hook (uwsgidecorators.py
    postfork -> uwsgi.post_fork_hook, run by plugins/python/python_plugin.c uwsgi_python_post_fork
    in every new worker), which exits when a resource is missing: every worker dies before its
    first request. As with lazy-apps: capped backoff rather than a respawn every second,
    `failing` with the exit in status, 503 + Retry-After, and the next retry picks up the fix."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "wsgiapp.py").write_text(POSTFORK_APP.replace("{exit}", exit))
    e = emperor()
    port = free_port()
    (e.dir / "pf.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\n"
                                  "module = wsgiapp\nprocesses = 2\n")
    e.wait_log("pf.ini: starting -> failing", timeout=20)
    v = status(e.dir)["vassals"]["pf.ini"]
    assert v["state"] == "failing" and "worker exited 3 before its first request" in v["last_error"], v
    answers_503_and_backs_off(e, port)
    (app / "database").touch()
    e.wait_log("pf.ini: failing -> running", timeout=70)
    assert raw_get(port).endswith(b"good")
