"""uWSGI's signal framework under emperor: @timer, @rbtimer, @cron, @filemon, register_signal +
uwsgi.signal() to "workers", "workerN" and one worker, set_user_harakiri (@harakiri).

The master's loop runs the timers (emperor/master/usignals.py); a worker runs the handler
between requests. Reference: uWSGI's Signals.rst and uwsgidecorators.py upstream.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from support import APPS, answers, free_port, http_get, mark_lines, marker_lines, uwsgi_master, wait_for, worker_pids


lines = mark_lines


@pytest.mark.timeout(60)
def test_a_timer_fires_every_second_on_one_worker_at_a_time(procs, tmp_path):
    """@timer(1): the master raises the signal each second; target "" is one worker per tick."""
    p = uwsgi_master(procs, tmp_path, "timer")
    wait_for(lambda: len(lines(p, "timer")) >= 4, 20)
    ticks = lines(p, "timer")[:4]
    times = [float(t) for _, t, _ in ticks]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.7 < g < 1.6 for g in gaps), gaps   # on schedule, within its tick (loaded box: wide)
    assert {w for w, _, _ in ticks} <= {"1", "2"}
    assert {n for _, _, n in ticks} == {"0"}          # get_free_signal(): the first free number


@pytest.mark.timeout(60)
def test_a_timer_registered_by_every_lazy_apps_worker_fires_once_per_tick(procs, tmp_path):
    """With lazy-apps each worker runs @timer; the master keeps one timer, not one per worker."""
    p = uwsgi_master(procs, tmp_path, "timer", body="lazy-apps = true\n")
    wait_for(lambda: len(lines(p, "timer")) >= 4, 20)
    first = float(lines(p, "timer")[0][1])
    wait_for(lambda: any(float(t[1]) > first + 3.2 for t in lines(p, "timer")), 20)
    ticks = [t for t in lines(p, "timer") if first <= float(t[1]) <= first + 3.0]
    assert 3 <= len(ticks) <= 4, ticks


@pytest.mark.timeout(60)
def test_an_rb_timer_with_iterations_stops_after_them(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path, "rbtimer")
    wait_for(lambda: len(lines(p, "rbtimer")) >= 3, 20)
    assert len(lines(p, "rb2")) == 2
    assert {n for _, n in lines(p, "rb2")} == {"41"}


@pytest.mark.timeout(60)
def test_signals_reach_their_targets(procs, tmp_path):
    """register_signal + uwsgi.signal() from a request: "workers" -> both, "worker2" -> the
    second, "" -> one; a number nobody registered is one log line."""
    p = uwsgi_master(procs, tmp_path, "signals")
    http_get(p.port, "/signal?17", expect=200)
    wait_for(lambda: len(lines(p, "sig17")) == 2, 20)
    assert sorted(w for (w,) in lines(p, "sig17")) == ["1", "2"]
    http_get(p.port, "/signal?18", expect=200)
    wait_for(lambda: lines(p, "sig18"), 20)
    for _ in range(3):
        http_get(p.port, "/signal?19", expect=200)
    wait_for(lambda: len(lines(p, "sig19")) == 3, 20)
    http_get(p.port, "/signal?99", expect=200)
    p.wait_log("uwsgi signal 99 is not registered")
    assert lines(p, "sig18") == [["2"]] and len(lines(p, "sig17")) == 2


@pytest.mark.timeout(60)
def test_a_respawned_worker_runs_only_its_own_signals(procs, tmp_path):
    """The slot's counters are zeroed for the new worker: what was raised for the one it
    replaced is not run again, and the next signal runs once."""
    p = uwsgi_master(procs, tmp_path, "signals")
    for _ in range(3):
        http_get(p.port, "/signal?17", expect=200)
    wait_for(lambda: len(lines(p, "sig17")) == 6, 20)
    wait_for(lambda: len(lines(p, "postfork")) == 2, 20)
    victim = next(int(pid) for wid, pid, *_ in lines(p, "postfork") if wid == "1")
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(lines(p, "postfork")) == 3, 20)
    http_get(p.port, "/signal?17", expect=200)
    wait_for(lambda: len(lines(p, "sig17")) == 8, 20)
    http_get(p.port, "/signal?18", expect=200)   # worker2: one more line, then nothing else came
    wait_for(lambda: lines(p, "sig18"), 20)
    assert sorted(w for (w,) in lines(p, "sig17")[6:]) == ["1", "2"] and len(lines(p, "sig17")) == 8


@pytest.mark.timeout(60)
def test_what_an_app_asks_of_the_master_is_bounded_and_checked(procs, tmp_path):
    """Untrusted input: past 64 timers is refused, and malformed messages on the master's pipe
    cost a log line each; the master goes on routing signals."""
    p = uwsgi_master(procs, tmp_path, "many_timers,signals")
    p.wait_log("timer 164: at most 64 timers; ignored")
    assert p.log.count("at most 64 timers") == 6
    assert http_get(p.port, "/garbage", expect=200).body == b"[True, True, True, True, False, True]"
    p.wait_log("a worker sent an unreadable message", count=3)
    p.wait_log("bad signal number")
    p.wait_log("timer 5: bad period or iterations; ignored")
    http_get(p.port, "/signal?17", expect=200)
    wait_for(lambda: len(lines(p, "sig17")) == 2, 20)
    assert "Traceback" not in p.log


@pytest.mark.timeout(60)
def test_a_handler_that_raises_costs_a_log_line_and_its_traceback(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path, "signals")
    http_get(p.port, "/signal?20", expect=200)
    log = p.wait_log("uwsgi signal 20: handler '_boom' raised RuntimeError: boom")
    assert 'uwsgi_app.py", line' in log and "emperor/api" not in log   # the app's frames only
    http_get(p.port, "/signal?17", expect=200)
    wait_for(lambda: len(lines(p, "sig17")) == 2, 20)   # both workers still serve their signals


@pytest.mark.timeout(60)
def test_a_file_monitor_fires_on_touch(procs, tmp_path):
    watched = tmp_path / "marks" / "watched"
    watched.parent.mkdir()
    watched.write_text("x")
    p = uwsgi_master(procs, tmp_path, "filemon")
    assert lines(p, "filemon") == []
    os.utime(watched)
    wait_for(lambda: lines(p, "filemon"), 20)
    before = len(lines(p, "filemon"))
    watched.write_text("y")
    wait_for(lambda: len(lines(p, "filemon")) > before, 20)


@pytest.mark.timeout(120)
def test_a_cron_signal_fires_at_once_in_a_matching_minute_then_every_60_seconds(procs, tmp_path):
    """@cron(-1, -1, -1, -1, -1), as uWSGI's core/cron.c: raised when the minute matches and
    60 s passed since the last time, so right after the start, then a minute later."""
    p = uwsgi_master(procs, tmp_path, "cron")
    loaded = float(lines(p, "import")[0][2])
    wait_for(lambda: lines(p, "cron"), 20)
    assert float(lines(p, "cron")[0][1]) - loaded < 10
    wait_for(lambda: len(lines(p, "cron")) == 2, 90)
    first, second = (float(t) for _, t in lines(p, "cron"))
    assert 59.5 < second - first < 63


@pytest.mark.timeout(60)
def test_user_harakiri_kills_a_worker_past_its_limit(procs, tmp_path):
    """@harakiri(1) around a 5 s call: the master kills the worker after about a second."""
    p = uwsgi_master(procs, tmp_path)
    before = worker_pids(p.pid)
    started = time.monotonic()
    try:
        http_get(p.port, "/harakiri", timeout=20)
    except OSError:
        pass   # the connection is cut with the worker
    p.wait_log("passed its user harakiri", timeout=20)
    assert time.monotonic() - started < 4.5
    wait_for(lambda: len(worker_pids(p.pid)) == 2 and worker_pids(p.pid) != before, 20)


# ---------- the same application under real uWSGI: the same observations ----------
def signals_transcript(start, tmp_path: Path) -> list:
    """tests/apps/uwsgi_app.py with timers and signals under `start(ini)`: what a client and the
    app's markers see (worker ids only where the target fixes them)."""
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nmaster = true\nprocesses = 2\n"
                   f"chdir = {APPS}\nmodule = uwsgi_app\nenv = MARK_DIR={marks}\n"
                   f"env = UWSGI_TEST=timer,rbtimer,signals\n")
    start(ini)

    def marked(name: str) -> list[list[str]]:
        return marker_lines(marks, name)

    wait_for(lambda: answers(port), 30)
    wait_for(lambda: len(marked("postfork")) == 2, 20)
    out: list = [("postfork", sorted(l[0] for l in marked("postfork")))]
    http_get(port, "/signal?17", expect=200)
    wait_for(lambda: len(marked("sig17")) == 2, 20)
    out.append(("sig17 workers", sorted(l[0] for l in marked("sig17"))))
    http_get(port, "/signal?18", expect=200)
    wait_for(lambda: marked("sig18"), 20)
    out.append(("sig18 worker2", marked("sig18")))
    for _ in range(3):
        http_get(port, "/signal?19", expect=200)
    wait_for(lambda: len(marked("sig19")) >= 3, 20)
    wait_for(lambda: len(marked("timer")) >= 3 and len(marked("rbtimer")) >= 3, 20)
    wait_for(lambda: len(marked("rb2")) >= 2, 20)
    out.append(("timer", len(marked("timer")) >= 3, {l[2] for l in marked("timer")}))
    out.append(("rb2", marked("rb2")[:2] and {l[1] for l in marked("rb2")}))
    out.append(("/logvar", http_get(port, "/logvar?7").body))
    f = json.loads(http_get(port, "/facts").body)
    out.append(("facts", f["numproc"], f["opt_types"], f["version"][:6], f["registered_17"],
                f["registered_200"], f["ready"], sorted(w["id"] for w in f["workers"]),
                f["masterpid"] != f["pid"]))
    threads = [threading.Thread(target=http_get, args=(port, f"/lock?{i}"), kwargs={"timeout": 20})
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = sorted((float(t), kind) for kind, _, t in marked("lock"))
    out.append(("lock", [k for _, k in events]))
    out.append(("sig19", len(marked("sig19")), "rb2 after", len(marked("rb2"))))
    return out


@pytest.mark.timeout(180)
def test_timers_and_signals_give_the_same_transcript_under_emperor_and_uwsgi(procs, tmp_path, uwsgi_binary):
    (tmp_path / "emperor").mkdir()
    (tmp_path / "uwsgi").mkdir()
    ours = signals_transcript(lambda ini: procs([sys.executable, "-m", "emperor", "master", str(ini)],
                                                ini.parent), tmp_path / "emperor")
    theirs = signals_transcript(lambda ini: procs([uwsgi_binary, "--ini", str(ini)], ini.parent),
                                tmp_path / "uwsgi")
    assert ours == theirs
    assert ours[1] == ("sig17 workers", ["1", "2"]) and ours[2] == ("sig18 worker2", [["2"]])
