"""`emperor status` and `emperor restart` against a real emperor; the live view read off a tmux screen.

One emperor per module runs three vassals: `good.ini` (healthy, 2 workers),
`bad.ini` (config error) and `crash.ini` (its application raises at import, so
it crash-loops in backoff). Every process is killed by PID at teardown; tmux
runs on a private server socket that is killed at the end of its test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time

import pytest

from emperor import paths
from emperor.cli.status import event_text, vassal_lines
from emperor.emperor import summary
from emperor.wire import control
from support import InFlight, Tmux, alive, ask_cli, children, cli, http_get, run_cli, start_emperor, vassals, wait_for

pytestmark = pytest.mark.timeout(60)

@pytest.fixture(scope="module")
def stack(three_vassal_emperor):
    return three_vassal_emperor()


def status_doc(stack) -> dict:
    return control.query(stack.control, timeout=10)


# ---------- the document ----------
def test_json_matches_the_live_processes(stack):
    for _ in range(3):
        http_get(stack.port, expect=200)
    r = ask_cli("status", "--json", cwd=stack.base)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["pid"] == stack.pid and doc["state"] == "running" and doc["directory"] == str(stack.dir)
    assert doc["uptime"] > 0
    good, bad, crash = (doc["vassals"][n] for n in ("good.ini", "bad.ini", "crash.ini"))
    assert good["state"] == "running" and alive(good["pid"]) and good["pid"] in children(stack.pid)
    st = good["stats"]
    assert st["pid"] == good["pid"] and st["total"] == 2 and len(st["workers"]) == 2  # processes = 2
    assert {w["pid"] for w in st["workers"]} == set(children(good["pid"]))
    assert all(alive(w["pid"]) and w["status"] == "idle" and w["rss"] > 0 for w in st["workers"])
    assert st["requests"] >= 3 and st["rss"] > sum(w["rss"] for w in st["workers"]) and st["avg_rt"] > 0
    assert bad["state"] == "config error" and bad["pid"] is None and bad["stats"] is None
    assert bad["last_error"] == 'bad.ini:3: processes: expected an integer, got "four"'
    assert crash["state"] in ("backoff", "starting") and crash["backoff"] >= 1
    assert "RuntimeError: broken at import" in crash["last_error"]


def test_control_socket_is_private(stack):
    st = os.stat(stack.control)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(stack.control)).st_mode) == 0o700


def test_requests_per_second_from_successive_requests(stack):
    t0 = time.monotonic()
    status_doc(stack)                     # a sample
    t1 = time.monotonic()
    for _ in range(20):
        http_get(stack.port, expect=200)
    # the rate is taken over at least RATE_SPAN (1 s) of samples: letting that much pass is the behaviour
    time.sleep(max(0.0, t1 + summary.RATE_SPAN + 0.1 - time.monotonic()))
    t2 = time.monotonic()
    rps = status_doc(stack)["vassals"]["good.ini"]["stats"]["rps"]
    t3 = time.monotonic()
    # 20 requests between the two samples, which were between t2 - t1 and t3 - t0 apart (rounded to 0.1)
    assert 20 / (t3 - t0) - 0.05 <= rps <= 20 / (t2 - t1) + 0.05, (rps, t3 - t0, t2 - t1)


def test_a_stuck_master_costs_a_status_half_a_second_and_not_the_others(stack):
    pid = status_doc(stack)["vassals"]["good.ini"]["pid"]
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(stack.control)  # a client that never says anything holds nobody up
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        doc = status_doc(stack)
        took = time.monotonic() - t0
        t0 = time.monotonic()
        assert control.query(stack.control, "restart nope.ini")["ok"] is False
        assert time.monotonic() - t0 < 0.4   # it waits for no master's stats (that would be 0.5 s)
    finally:
        os.kill(pid, signal.SIGCONT)
        idle.close()
    # the timing is the behaviour: the stuck master costs its STATS_TIMEOUT (0.5 s), not more
    assert 0.4 <= took < 1.5, took
    assert doc["vassals"]["good.ini"]["state"] == "running" and doc["vassals"]["good.ini"]["stats"] is None
    assert status_doc(stack)["vassals"]["good.ini"]["stats"]["pid"] == pid


# ---------- what a person sees ----------
def test_once_prints_one_frame(stack):
    r = ask_cli("status", "--once", cwd=stack.base)
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"emperor {stack.pid} · up ")
    assert all(len(l) <= 80 for l in lines), r.stdout
    rows = {l.split()[0]: l for l in lines if l.endswith(".ini") or ".ini " in l[:12]}
    assert "running" in rows["good.ini"] and " 0/2 " in rows["good.ini"]
    assert "config error" in rows["bad.ini"]
    assert 'bad.ini:3: processes: expected an integer, got "four"' in r.stdout
    assert "RuntimeError" in r.stdout


def test_status_name_shows_its_workers_and_the_request_in_flight(stack, tmp_path):
    slow = InFlight(stack.port, "/slow?8", tmp_path / "slow")   # long enough for status to see it, retried
    # its age must have grown to 0.4 s: letting it is the behaviour (the age shown is counted)
    time.sleep(max(0.0, slow.started_at + 0.4 - time.time()))
    r = ask_cli("status", "good.ini", "--once", cwd=stack.base)
    shown_by = time.time()
    assert slow.result().status == 200
    assert r.returncode == 0, r.stderr
    doc = status_doc(stack)["vassals"]["good.ini"]
    out = r.stdout
    assert f"good.ini  running  master {doc['pid']}  generation 0" in out
    assert "2 workers, 1 busy" in out
    busy = next(l for l in out.splitlines() if " busy " in l and "GET /slow" in l)
    age = float(busy.split("GET /slow (")[1].split("s)")[0])
    assert 0.3 <= age <= shown_by - slow.started_at + 0.1   # shown to 0.1 s
    for w in doc["stats"]["workers"]:
        assert str(w["pid"]) in out


def test_status_of_an_unknown_name_is_one_line_and_exit_1(stack):
    r = ask_cli("status", "nope.ini", "--once", cwd=stack.base)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == ["emperor: no vassal named 'nope.ini' (vassals: bad.ini, crash.ini, good.ini)"]


def test_no_emperor_is_one_line_and_exit_1(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPEROR_RUNTIME_DIR", str(tmp_path / "run"))   # not the only emperor running elsewhere
    for args in (["status"], ["status", "--once"], ["status", "--json"], ["restart", "app.ini"]):
        r = run_cli(*args, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == ""
        path = paths.control_socket(str(tmp_path / "vassals.d"))
        assert r.stderr.splitlines() == [
            f"emperor: no emperor is running for {tmp_path / 'vassals.d'} (no answer on {path})"]


def test_restart_clears_the_backoff_and_starts_now(stack):
    wait_for(lambda: status_doc(stack)["vassals"]["crash.ini"]["state"] == "backoff")
    starts = status_doc(stack)["vassals"]["crash.ini"]["starts"]
    r = run_cli("restart", "crash.ini", cwd=stack.base)
    assert r.returncode == 0 and r.stdout == "emperor: crash.ini: restart requested, now starting\n"
    assert status_doc(stack)["vassals"]["crash.ini"]["starts"] == starts + 1
    r = run_cli("restart", "nope.ini", cwd=stack.base)
    assert r.returncode == 1 and r.stderr == "emperor: no vassal named 'nope.ini' (vassals: bad.ini, crash.ini, good.ini)\n"


# ---------- the live view, in a terminal ----------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_view_at_80x24_and_ctrl_c_leaves_a_clean_terminal(stack):
    tmux = Tmux(stack.base)
    try:
        assert tmux.show("#{window_width}x#{window_height}") == "80x24"
        tmux.keys("$EMPEROR status; echo EXIT=$?", "Enter")
        wanted = ("good.ini", "running", "bad.ini", "config error", "crash.ini", "backoff",
                  'processes: expected an integer, got "four"', "RuntimeError: broken at import")
        try:
            screen = wait_for(lambda: (s := tmux.screen()) and all(w in s for w in wanted) and s, timeout=30)
        except TimeoutError:
            raise AssertionError("the live view never showed all of it:\n" + tmux.screen()) from None
        assert tmux.show("#{alternate_on}") == "1"
        lines = screen.splitlines()
        assert all(len(l) <= 80 for l in lines), screen   # -J joins wrapped lines: nothing wrapped
        assert lines[0].startswith(f"emperor {stack.pid} · up ")
        assert any(l.startswith("VASSAL ") and "STATE" in l and "REQ/S" in l for l in lines)
        good = next(l for l in lines if l.startswith("good.ini"))
        assert "running" in good and " 0/2 " in good
        # refreshed about once a second: the emperor's uptime moves
        first = lines[0]
        wait_for(lambda: tmux.screen().splitlines()[0] != first, timeout=5)   # a bound: the refresh
        tmux.keys("C-c")
        after = wait_for(lambda: (s := tmux.screen()) and "\nEXIT=" in s and s)
        assert "\nEXIT=0\n" in after
        assert tmux.show("#{alternate_on}") == "0" and tmux.show("#{cursor_flag}") == "1"
        assert "VASSAL" not in after and "config error" not in after   # the view went with its screen
    finally:
        tmux.kill()


# ---------- rendering, without processes ----------
def fake_doc(n: int = 3) -> dict:
    vassals = {}
    for i in range(n):
        vassals[f"vassal-with-a-long-name-{i}.ini"] = {
            "state": "running", "pid": 40000 + i, "generation": 12, "backoff": 0, "last_event": "ready",
            "last_error": "", "stats": {"busy": 3, "total": 16, "requests": 1234567, "rps": 1234.5,
                                        "avg_rt": 12345, "rss": 512 << 20, "started_at": time.time() - 90000},
        }
    vassals["broken.ini"] = {"state": "backoff", "pid": None, "generation": 0, "backoff": 8.0, "retry_in": 3.2,
                             "last_event": "exited 1: broken.ini: ImportError: no module named x; retry in 8s",
                             "last_error": "broken.ini: ImportError: no module named x", "stats": None}
    return {"pid": 1, "vassals": vassals}


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_table_fits_the_width_and_keeps_name_state_and_errors(width):
    lines = [l.plain for l in vassal_lines(fake_doc(), width)]
    assert all(len(l) <= width for l in lines), lines
    header = lines[0].split()
    assert header[:2] == ["VASSAL", "STATE"] and "REQ/S" in header and "BUSY" in header
    assert sum(" running " in l and "1.2M" in l for l in lines) == 3
    text = " ".join(l.strip() for l in lines)
    assert "backoff 8s: exited 1: ImportError: no module named x (retry in 3s)" in text
    if width >= 140:
        assert header[-2:] == ["LAST", "EVENT"] and len(lines) == 5   # the event is a column
    else:
        assert "EVENT" not in header and lines[-1].startswith("  ")   # the event under its row
    if width <= 60:
        assert "GEN" not in header   # the least useful column goes first


def test_backoff_event_reads_like_the_spec():
    v = fake_doc()["vassals"]["broken.ini"]
    assert event_text("broken.ini", v) == "backoff 8s: exited 1: ImportError: no module named x (retry in 3s)"


# ---------- with emperors of their own ----------
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_view_wraps_an_error_after_its_address_not_after_backoff(tmp_path, procs, runtime):
    port = vassals(tmp_path / "vassals.d", "a.ini")["a.ini"]
    e = start_emperor(procs, tmp_path, running=("a.ini",))
    vassals(tmp_path / "vassals.d", "b.ini", port=port)           # the same port: b backs off
    e.wait_log("b.ini: starting -> backoff")
    tmux = Tmux(tmp_path)
    try:
        tmux.keys("$EMPEROR status", "Enter")
        bind = f"cannot bind http socket 127.0.0.1:{port}:"

        def wrapped() -> list[str] | None:
            lines = [l.rstrip() for l in tmux.screen().splitlines()]
            at = [i for i, l in enumerate(lines) if l.startswith("b.ini ")]
            if at and at[0] + 2 < len(lines) and bind in lines[at[0] + 1]:
                return lines[at[0] + 1:at[0] + 3]
            return None

        first, second = wait_for(wrapped, timeout=15)
        assert re.fullmatch(rf"  backoff \d+s: exited 1: {re.escape(bind)}", first), first
        assert re.fullmatch(r"  address already in use \(retry in [1-9]\d*s\)", second), second
        tmux.keys("C-c")
        wait_for(lambda: "VASSAL" not in tmux.screen(), timeout=5)
    finally:
        tmux.kill()


def test_once_shows_requests_per_second(tmp_path, procs, runtime):
    port = vassals(tmp_path / "vassals.d", "app.ini")["app.ini"]
    start_emperor(procs, tmp_path, running=("app.ini",))
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            http_get(port)
            stop.wait(0.01)

    t = threading.Thread(target=load)
    t.start()
    try:
        r = cli("status", "--once", cwd=tmp_path)   # the first status request this emperor gets
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        header = next(l.split() for l in lines if l.startswith("VASSAL"))
        row = next(l.split() for l in lines if l.startswith("app.ini"))
        rps = row[header.index("REQ/S")]
        assert rps != "-" and float(rps) > 5, r.stdout
        r = cli("status", "app", "--once", cwd=tmp_path)
        m = re.search(r" · ([\d.]+) req/s · ", r.stdout)
        assert m and float(m.group(1)) > 5, r.stdout
    finally:
        stop.set()
        t.join()
