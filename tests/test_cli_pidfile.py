"""pidfile and the uWSGI-style convenience commands --reload/--stop/--pause/--resume."""
from __future__ import annotations

import subprocess
import sys

import pytest

from support import http_get, run_cli, versioned_app, wait_for


@pytest.fixture
def served(master, tmp_path):
    pid = tmp_path / "app.pid"
    m = master(f"pidfile = {pid}\n", versioned_app("v"))
    wait_for(lambda: pid.exists())
    return m, pid


def test_pidfile_written_atomically_with_master_pid(served):
    m, pid = served
    assert pid.read_text().strip() == str(m.pid)


def test_reload_pidfile_sends_sighup(served):
    m, pid = served
    r = run_cli("--reload", str(pid))
    assert r.returncode == 0, r.stderr
    m.wait_log("generation 1 ready")


def test_pause_and_resume_pidfile(served):
    m, pid = served
    assert run_cli("--pause", str(pid)).returncode == 0
    m.wait_log("running -> paused")
    assert run_cli("--resume", str(pid)).returncode == 0
    m.wait_log("paused -> running")


def test_stop_pidfile_stops_and_removes_pidfile(served):
    m, pid = served
    assert run_cli("--stop", str(pid)).returncode == 0
    assert m.wait(10) == 0
    assert not pid.exists()


@pytest.mark.parametrize("content,message", [
    (None, "no such pidfile"),
    ("", "pidfile is empty"),
    ("garbage\n", "does not hold a PID"),
    ("999999999\n", "stale pidfile: no process"),
])
def test_bad_pidfiles_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pid"
    if content is not None:
        path.write_text(content)
    r = run_cli("--reload", str(path))
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_stale_pidfile_naming_another_process_sends_nothing(tmp_path):
    """PIDs get reused: a pidfile naming a live process that is not a master is refused."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # any live non-master
    try:
        path = tmp_path / "reused.pid"
        path.write_text(f"{victim.pid}\n")
        r = run_cli("--stop", str(path))
        assert r.returncode != 0 and "is not an emperor master" in r.stderr
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_pause_and_resume_are_idempotent(served):
    """SIGTSTP toggles; the commands read the master's state first and never undo each other."""
    m, pid = served
    assert run_cli("--pause", str(pid)).returncode == 0
    m.wait_log("running -> paused")
    wait_for(lambda: open(f"/proc/{m.pid}/comm").read().strip() == "emperor paused")
    r = run_cli("--pause", str(pid))
    assert r.returncode == 0 and "already paused" in r.stdout
    assert run_cli("--resume", str(pid)).returncode == 0
    m.wait_log("paused -> running")
    wait_for(lambda: open(f"/proc/{m.pid}/comm").read().strip() == "emperor running")
    r = run_cli("--resume", str(pid))
    assert "already running" in r.stdout
    assert http_get(m.port).status == 200


def test_a_worker_pid_is_never_taken_for_a_master(served, tmp_path):
    # A stale pidfile may hold a PID that is now one of our workers; they inherit the
    # master's command line (`... emperor master FILE`), so the command line is not enough.
    from emperor.master.pidfile import PidfileError, read_master_pid

    m, _ = served
    with open(f"/proc/{m.pid}/task/{m.pid}/children") as f:
        worker = int(f.read().split()[0])
    stale = tmp_path / "stale.pid"
    stale.write_text(f"{worker}\n")
    with pytest.raises(PidfileError, match="is not an emperor master"):
        read_master_pid(str(stale))
    r = run_cli("--reload", str(stale))
    assert r.returncode == 1 and "is not an emperor master" in r.stderr
