"""`emperor health`: what it calls healthy (its rules, and its exit codes against a real emperor),
for container and Kubernetes probes."""
from __future__ import annotations

import signal

import pytest

from support import answers, ask_cli, free_port, run_cli, vassal_ini, wait_for


from emperor.cli import health

pytestmark = pytest.mark.timeout(60)


def test_health_fails_only_without_an_emperor_or_on_a_crash_loop(emperor, appdir, tmp_path):
    assert run_cli("health", str(tmp_path / "vassals")).returncode == 1  # nobody there: one line
    (appdir / "crashapp.py").write_text("raise RuntimeError('broken at import')\n")
    port, bad = free_port(), free_port()
    e = emperor(vassals={"app.ini": vassal_ini(port, appdir), "typo.ini": vassal_ini(bad, appdir, "threads = x\n")})
    wait_for(lambda: answers(port))
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(ask_cli("health", str(e.dir))), timeout=30)
    assert r.stdout == "ok: 2 vassals: 1 running, 1 config error\n"   # a config error is not a failure
    (e.dir / "crash.ini").write_text(vassal_ini(bad, appdir).replace("wsgiapp:", "crashapp:"))
    e.wait_log("crash.ini: starting -> backoff")
    assert ask_cli("health", str(e.dir)).returncode == 0                       # first backoffs: may recover
    r = ask_cli("health", str(e.dir), "--max-backoff", "1")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("emperor health: crash.ini keeps failing (backoff ")
    assert "RuntimeError: broken at import" in r.stderr and r.stderr.count("\n") == 1
    assert ask_cli("health", str(e.dir), "--live", "--max-backoff", "1").returncode == 0
    e.signal(signal.SIGTERM)
    assert e.wait(10) == 0
    r = ask_cli("health", str(e.dir))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no emperor for" in r.stderr


def test_health_rules_draining_stopping_unready_and_crash_loops_fail():
    def doc(state="running", ready=True, **vassals):
        return {"pid": 7, "state": state, "ready": ready, "vassals": vassals}
    ok = {"state": "running", "backoff": 0}
    assert health.check(doc(a=ok)) == (True, "ok: 1 vassal: 1 running")
    assert health.check(doc(state="draining", a=ok))[0] is False
    assert health.check(doc(state="stopping", a=ok))[0] is False
    assert health.check(doc(state="draining"), live=True)[0] is True
    assert health.check(doc(ready=False, a={"state": "starting"}))[1] == "emperor is not ready yet: waiting for a"
    looping = {"state": "backoff", "backoff": 60.0, "last_error": "exited 1: ImportError: x\nmore"}
    assert health.check(doc(a=ok, b=looping)) == (False, "b keeps failing (backoff 60s: exited 1: ImportError: x)")
    assert health.check(doc(b={**looping, "backoff": 8.0}))[0] is True
    assert health.check(doc(b={"state": "reload failed"}, c={"state": "config error"}))[0] is True
