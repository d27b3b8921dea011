"""The emperor process: its signal table (SIGUSR1, SIGHUP, SIGWINCH), PID 1, a missing
directory, and idling (emperor/emperor/process.py), with real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from support import (VASSAL_APP, alive, body_when, cpu_ticks, descendants, free_port, http_get, refuses, run_cli, serving,
                     vassal_ini, wait_for)

pytestmark = pytest.mark.timeout(60)


def test_sigusr1_writes_the_vassal_table(emperor, appdir):
    e = emperor()
    port = free_port()
    serving(e, "app.ini", port, appdir)
    e.signal(signal.SIGUSR1)
    log = e.wait_log("vassal table (SIGUSR1), 1 vassal(s):")
    assert "  app.ini: running, pid " in log


def test_sighup_reloads_every_vassal(emperor, appdir):
    e = emperor()
    ports = [free_port(), free_port()]
    for name, port in zip(("a.ini", "b.ini"), ports):
        serving(e, name, port, appdir)
    e.signal(signal.SIGHUP)
    for port in ports:
        assert "gen=1" in body_when(port, lambda b: "gen=1" in b)


def test_sigwinch_rescans_now_for_what_inotify_cannot_see(emperor, appdir, tmp_path):
    # A hard link edited through its other name: the kernel reports the write to the
    # other directory's watchers only. The safety rescan (30 s) would see it; SIGWINCH now.
    e = emperor()
    port = free_port()
    outside = tmp_path / "outside.ini"
    outside.write_text(vassal_ini(port, appdir))
    os.link(outside, e.dir / "app.ini")
    body_when(port, lambda b: b.startswith("app "))
    with open(outside, "a") as f:
        f.write("env = MARK=linked\n")
    time.sleep(0.5)   # an absence is the behaviour: for this long, nothing may notice the edit
    assert "gen=0" in http_get(port, expect=200).text               # unseen so far: nothing woke the emperor
    assert "app.ini: running -> reloading" not in e.log
    e.signal(signal.SIGWINCH)
    # now, not at the safety rescan (30 s after the start)
    assert "gen=1 mark=linked" in body_when(port, lambda b: "gen=1" in b, timeout=10)
    assert f"SIGWINCH: rescanning {e.dir}" in e.log


def test_missing_directory_exits_non_zero_with_one_line(tmp_path):
    r = run_cli("run", str(tmp_path / "nope"))
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "No such file or directory" in r.stderr


def test_as_pid_1_reaps_orphans_and_exits_0_on_sigterm(emperor, appdir):
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                      capture_output=True, timeout=10).returncode != 0:
        pytest.skip("unshare --pid is not permitted here")
    # the app leaves an orphan behind at import: `sleep` outlives its shell
    (appdir / "orphaning.py").write_text("import os\nos.system('sleep 0.3 &')\n" + VASSAL_APP)
    port = free_port()
    p = emperor(argv0=["unshare", "--pid", "--fork", "--mount-proc", sys.executable], env={"EMPEROR_DEBUG": "1"},
                vassals={"app.ini": vassal_ini(port, appdir).replace("wsgiapp:", "orphaning:")})
    log = p.wait_log("reaped orphan", timeout=10)
    assert "running as PID 1" in log
    assert body_when(port).startswith("app gen=0")
    zombies = [q for q in descendants(p.pid) if not alive(q) and os.path.exists(f"/proc/{q}")]
    assert zombies == []
    emperor_pid = wait_for(lambda: descendants(p.pid)[:1])[0]
    os.kill(emperor_pid, signal.SIGTERM)
    assert p.wait(15) == 0
    assert refuses(port)


def test_idle_emperor_and_masters_use_no_cpu(emperor, appdir):
    e = emperor()
    for name in ("a.ini", "b.ini"):
        serving(e, name, free_port(), appdir)
        e.wait_log(f"{name}: starting -> running (ready)")   # start-up is over: every worker is ready
    pids = [e.pid] + [q for q in descendants(e.pid)]
    before = {q: cpu_ticks(q) for q in pids}
    time.sleep(3)                        # the behaviour: 3 s of idling, measured
    used = sum(cpu_ticks(q) - before[q] for q in pids)
    assert used <= 3, f"{used} clock ticks in 3 s"   # 1 tick = 10 ms
