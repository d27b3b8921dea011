"""Log files, process names and hooks as uWSGI defines them (Logging, Hooks docs; core/hooks.c)."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import worker_pids
from support import APPS, ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(60)


def start(procs, tmp_path: Path, body: str, wait: bool = True):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n{body}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path, log=tmp_path / "console.log")
    m.port, m.ini = port, ini
    if wait:
        wait_for(lambda: "running (workers ready)" in _all_logs(tmp_path), timeout=20)
    return m


def _all_logs(d: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in d.glob("*.log*") if p.is_file())


def get(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split()[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


# ---------- hooks ----------
def test_hooks_run_in_their_phases_in_order(procs, tmp_path):
    trace = tmp_path / "trace"
    made = tmp_path / "made"
    start(procs, tmp_path, f"""hook-as-root = exec:echo as-root >> {trace}
hook-as-user = exec:echo as-user >> {trace}
exec-pre-app = echo pre-app >> {trace}
hook-pre-app = mkdir:{made}
hook-post-app = write:{made}/post-app written
hook-master-start = exec:echo master-start >> {trace}
hook-as-user-atexit = exec:echo atexit >> {trace}
hook-as-root = mount:proc none /proc
""")
    lines = trace.read_text().split()
    assert lines == ["as-root", "as-user", "pre-app", "master-start"]
    assert (made / "post-app").read_text() == "written"
    log = (tmp_path / "console.log").read_text()
    assert 'hook-as-root: action "mount" is not supported by emperor' in log


def test_a_failing_hook_stops_the_start_with_one_line(procs, tmp_path):
    m = start(procs, tmp_path, "hook-pre-app = exec:exit 3\n", wait=False)
    assert m.wait(20) == 1
    log = (tmp_path / "console.log").read_text()
    assert "hook-pre-app exec:exit 3: exited 3" in log and "Traceback" not in log


# ---------- log files ----------
def test_log_maxsize_rotates_for_the_master_and_its_workers(procs, tmp_path):
    logfile = tmp_path / "app.log"
    m = start(procs, tmp_path, f"logto = {logfile}\nlog-maxsize = 3000\nlog-backupname = {tmp_path}/app.log.old\n"
                               "logfile-chmod = 600\nprocesses = 2\n")
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    for _ in range(60):
        assert get(m.port) == 200
    wait_for(lambda: (tmp_path / "app.log.old").exists(), timeout=10)
    wait_for(lambda: "log file reopened (rotated to" in logfile.read_text(), timeout=10)
    before = logfile.read_text().count(" GET / => 200")
    for _ in range(4):
        assert get(m.port) == 200
    wait_for(lambda: logfile.read_text().count(" GET / => 200") >= before + 4, timeout=10)  # workers write here too


def test_a_log_file_without_log_maxsize_is_never_rotated(procs, tmp_path):
    """Regression: the size check ran whenever any part's timer came (here idle's), and with
    no log-maxsize (0) every file was 'over' it: a rotation a second."""
    logfile = tmp_path / "app.log"
    start(procs, tmp_path, f"logto = {logfile}\nidle = 1\n")
    wait_for(lambda: "(idle)" in logfile.read_text(), timeout=20)
    assert sorted(p.name for p in tmp_path.glob("app.log*")) == ["app.log"]
    assert "rotated" not in logfile.read_text()


def test_touch_logreopen_opens_the_path_again(procs, tmp_path):
    logfile = tmp_path / "app.log"
    trigger = tmp_path / "reopen"
    m = start(procs, tmp_path, f"logto = {logfile}\ntouch-logreopen = {trigger}\n")
    logfile.rename(tmp_path / "moved.log")        # what logrotate does
    trigger.touch()
    wait_for(lambda: logfile.exists() and "log file reopened (touch-logreopen)" in logfile.read_text(), timeout=10)
    assert get(m.port) == 200
    wait_for(lambda: " GET / => 200" in logfile.read_text(), timeout=10)


def test_daemonize_is_the_log_target_and_the_master_stays(procs, tmp_path):
    logfile = tmp_path / "daemon.log"
    m = start(procs, tmp_path, f"daemonize = {logfile}\n")
    assert m.popen.poll() is None and "serving http://" in logfile.read_text()
    assert get(m.port) == 200


# ---------- process names ----------
def test_procname_options_show_in_ps_and_pidfile_commands_still_work(procs, tmp_path):
    pid = tmp_path / "app.pid"
    m = start(procs, tmp_path, f"procname-prefix-spaced = shop\nprocname-master = master of shop\n"
                               f"procname = shop worker\nprocname-append = !\npidfile = {pid}\n")
    assert cmdline(m.pid) == "shop master of shop!"
    assert {cmdline(w) for w in worker_pids(m.pid)} == {"shop shop worker!"}
    wait_for(pid.exists, timeout=10)
    r = subprocess.run([sys.executable, "-m", "emperor", "--reload", str(pid)], capture_output=True, text=True,
                       timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "generation 1 ready" in (tmp_path / "console.log").read_text(), timeout=20)
    m.signal(signal.SIGINT)
