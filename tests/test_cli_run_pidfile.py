"""`emperor run --pidfile`, `--reload/--stop` through it, what ps shows, and what a refused pidfile says.

Real emperors and masters, killed by PID at teardown (`procs`); the emperors use a
private runtime dir (the `runtime` fixture of test_cli_find).
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from support import HELLO_APP, wait_for
from support import cli, start_emperor, vassals
from support import http_get

pytestmark = pytest.mark.timeout(60)


def ps(pid: int, field: str) -> str:
    return subprocess.run(["ps", "-ww", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True,
                          timeout=5).stdout.strip()


def test_run_pidfile_reloads_and_stops_the_whole_emperor(tmp_path, procs, runtime):
    ports = vassals(tmp_path / "vassals", "a.ini", "b.ini")
    pidfile = tmp_path / "emperor.pid"
    e = start_emperor(procs, tmp_path, str(tmp_path / "vassals"), "--pidfile", "emperor.pid",
                      running=("a.ini", "b.ini"))
    wait_for(pidfile.exists, 5)
    assert pidfile.read_text() == f"{e.pid}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pid-")] == []   # written atomically
    # what ps shows: the emperor and its directory (not python -m ... --pidfile ...)
    assert ps(e.pid, "args") == f"emperor run {tmp_path / 'vassals'}"
    assert ps(e.pid, "comm") == "emperor"

    r = cli("--reload", str(pidfile), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"emperor: sent SIGHUP to emperor {e.pid} (reload every vassal)\n"
    for name in ("a.ini", "b.ini"):
        e.wait_log(f"{name}: running -> reloading (SIGHUP)")
        e.wait_log(f"{name}: reloading -> running")
    assert all(http_get(port).status == 200 for port in ports.values())

    # pausing is a master's: said so, and nothing is sent
    r = cli("--pause", str(pidfile), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"emperor: {pidfile}: PID {e.pid} is not an emperor master: it is an emperor "
        f"(emperor run {tmp_path / 'vassals'})"]
    assert "SIGTSTP" not in e.log

    r = cli("--stop", str(pidfile), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"emperor: sent SIGINT to emperor {e.pid} (stop every vassal)\n"
    assert e.wait(10) == 0
    assert "every vassal has stopped: bye" in e.log
    assert not pidfile.exists()


def test_a_pidfile_that_cannot_be_written_is_one_line_and_no_vassal_starts(tmp_path, procs, runtime):
    vassals(tmp_path / "vassals", "a.ini")
    e = start_emperor(procs, tmp_path, "vassals", "--pidfile", str(tmp_path / "no" / "such" / "emperor.pid"))
    assert e.wait(10) == 1
    assert e.log.splitlines()[-1] == f"emperor: --pidfile {tmp_path / 'no/such/emperor.pid'}: No such file or directory"
    assert "a.ini" not in e.log


def test_refusals_say_what_the_process_is(tmp_path, master):
    one = tmp_path / "one.pid"
    one.write_text("1\n")
    r = cli("--reload", str(one), cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"emperor: {one}: PID 1 is not an emperor master or an emperor: it is ")
    assert "does not hold a PID" not in r.stderr

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other = tmp_path / "other.pid"
        other.write_text(f"{sleeper.pid}\n")
        r = cli("--stop", str(other), cwd=tmp_path)
        assert r.returncode == 1 and r.stderr == (
            f"emperor: {other}: PID {sleeper.pid} is not an emperor master or an emperor: "
            f"it is {sys.executable} -c import time; time.sleep(30)\n")
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()

    m = master("processes = 1\n", HELLO_APP)
    worker = int(open(f"/proc/{m.pid}/task/{m.pid}/children").read().split()[0])
    wpid = tmp_path / "worker.pid"
    wpid.write_text(f"{worker}\n")
    r = cli("--pause", str(wpid), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr == (
        f"emperor: {wpid}: PID {worker} is not an emperor master: it is an emperor worker "
        f"(emperor worker 1 {m.ini})\n")
    assert "stale" not in r.stderr
    # a master is still a master
    mpid = tmp_path / "master.pid"
    mpid.write_text(f"{m.pid}\n")
    r = cli("--reload", str(mpid), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == f"emperor: sent SIGHUP to master {m.pid} (reload)\n"
    m.wait_log("generation 1 ready")
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
