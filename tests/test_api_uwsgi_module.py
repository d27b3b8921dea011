"""The `uwsgi` module in real workers: process facts, @postfork, locks, logvars, uwsgi.reload(),
and that an application which never imports it costs nothing (no descriptor, no part).

The application is tests/apps/uwsgi_app.py, written for uWSGI; it appends what it sees to
files in MARK_DIR. Reference: uWSGI's PythonModule.rst, plugins/python/uwsgi_pymodule.c, and
the 2.0.31 binary itself (the value shapes of `opt`, `version`, `workers()`).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from support import APPS, answers, fd_targets, free_port, http_get, mark_lines, uwsgi_master, wait_for, worker_pids


lines = mark_lines


def facts(p) -> dict:
    return json.loads(http_get(p.port, "/facts", expect=200).body)


@pytest.mark.timeout(60)
def test_facts_from_real_workers(procs, tmp_path):
    """worker_id differs per worker (read at call time, after the master loaded the app with
    worker_id 0), masterpid is the master, numproc the processes, opt as uWSGI 2.0.31 gives it:
    str keys, bytes values, the last value of a repeated option."""
    p = uwsgi_master(procs, tmp_path, body="env = EXTRA=1\nlocks = 2\n")
    assert [l[:2] for l in lines(p, "import")] == [[str(p.pid), "0"]]   # imported once, in the master
    wait_for(lambda: len(lines(p, "postfork")) == 2, 20)
    seen = {int(w): (int(pid), int(mpid), int(n)) for w, pid, mpid, n in lines(p, "postfork")}
    assert sorted(seen) == [1, 2]
    assert {v[1] for v in seen.values()} == {p.pid} and {v[2] for v in seen.values()} == {2}
    assert {v[0] for v in seen.values()} == worker_pids(p.pid)
    f = facts(p)
    assert f["worker_id"] in (1, 2) and seen[f["worker_id"]][0] == f["pid"]
    assert f["masterpid"] == p.pid and f["numproc"] == 2
    assert f["opt_types"] == ["str:bytes"]
    assert f["opt"]["ini"] == str(p.ini) and f["opt"]["processes"] == "2"
    assert f["opt"]["env"] == "EXTRA=1" and f["opt"]["locks"] == "2"
    assert f["opt"]["module"] == "uwsgi_app"
    assert f["version"].startswith("2.0.31") and f["hostname_bytes"]
    assert f["ready"] is True and f["mem"][0] > 0 and f["started_on"] > 0
    assert sorted(w["id"] for w in f["workers"]) == [1, 2]
    assert {w["pid"] for w in f["workers"]} == worker_pids(p.pid)
    assert f["registered_17"] is None and f["registered_200"] is None
    assert f["is_a_reload"] is False and f["listen_queue"] == 0 and f["websockets"] is False
    again = [facts(p) for _ in range(3)]
    same = [g for g in again if g["pid"] == again[-1]["pid"]]
    assert [g["request_id"] for g in same] == sorted(g["request_id"] for g in same)
    assert again[-1]["total_requests"] >= 3


@pytest.mark.timeout(60)
def test_postfork_runs_once_per_worker_and_again_in_a_respawned_one(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path)
    wait_for(lambda: len(lines(p, "postfork")) == 2, 20)
    victim = int(lines(p, "postfork")[0][1])
    wid = lines(p, "postfork")[0][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(lines(p, "postfork")) == 3, 20)
    assert lines(p, "postfork")[2][0] == wid and int(lines(p, "postfork")[2][1]) != victim
    assert len(lines(p, "import")) == 1   # not imported again: the respawn is a fork of the master


@pytest.mark.timeout(60)
def test_a_postfork_function_that_raises_is_logged_and_the_worker_serves(procs, tmp_path):
    """As uWSGI (the error printed, the worker goes on)."""
    p = uwsgi_master(procs, tmp_path, "postfork_raise")
    p.wait_log("uwsgi.post_fork_hook raised RuntimeError: no database", count=2)
    assert 'uwsgi_app.py", line' in p.log
    assert http_get(p.port, "/", expect=200).body == b"ok"
    assert len(lines(p, "postfork")) == 2   # the chain went on: postfork functions before it ran


@pytest.mark.timeout(60)
def test_postfork_with_lazy_apps_runs_after_the_app_loads_in_each_worker(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path, body="lazy-apps = true\n")
    wait_for(lambda: len(lines(p, "postfork")) == 2, 20)
    assert sorted(l[0] for l in lines(p, "postfork")) == ["1", "2"]
    assert sorted(l[1] for l in lines(p, "import")) == ["1", "2"]   # each worker imported it


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layout", ["processes = 2\n", "processes = 2\nthreads = 2\n"])
def test_lock_excludes_other_workers_and_threads(procs, tmp_path, layout):
    """Four requests on two workers (and their threads) take the lock in turn: each enters
    after the one before left."""
    p = uwsgi_master(procs, tmp_path, body=layout.replace("processes = 2\n", ""))
    threads = [threading.Thread(target=http_get, args=(p.port, f"/lock?{i}"), kwargs={"timeout": 20})
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = sorted((float(t), kind) for kind, _, t in lines(p, "lock"))
    assert len(events) == 8
    assert [k for _, k in events] == ["enter", "leave"] * 4   # never two inside at once


@pytest.mark.timeout(60)
def test_set_logvar_feeds_the_log_format(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path, body='log-format = %(method) %(uri) who=%(who)\n')
    assert http_get(p.port, "/logvar?7", expect=200).body == b"b'app-7'"
    p.wait_log("GET /logvar?7 who=app-7")


@pytest.mark.timeout(90)
def test_uwsgi_reload_is_a_graceful_reload(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path)
    wait_for(lambda: len(lines(p, "postfork")) == 2, 20)
    old = worker_pids(p.pid)
    assert http_get(p.port, "/reload", expect=200).body == b"True"
    p.wait_log("generation 1 ready", timeout=60)
    wait_for(lambda: len(lines(p, "postfork")) == 4, 20)
    assert http_get(p.port, "/facts", expect=200)
    wait_for(lambda: not (worker_pids(p.pid) & old), 30)
    assert {int(pid) for _, pid in lines(p, "atexit")} == old   # uwsgi.atexit, as each old worker left
    # the new image (same PID) loaded the code again; the preflight imported it in between
    assert [l[:2] for l in lines(p, "import") if l[0] == str(p.pid)] == [[str(p.pid), "0"]] * 2


@pytest.mark.timeout(60)
def test_an_app_that_does_not_import_uwsgi_gets_no_descriptor_and_no_part(procs, tmp_path):
    """The shared area (a memfd) and its pipe exist only when the app imported uwsgi."""
    port = free_port()
    ini = tmp_path / "plain.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = echo\nprocesses = 2\n")
    plain = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path, log=tmp_path / "plain.log")
    plain.wait_log("running (workers ready)", timeout=30)
    using = uwsgi_master(procs, tmp_path)

    def fds(master: int) -> list[list[str]]:
        return [fd_targets(pid) for pid in [master, *sorted(worker_pids(master))]]

    for targets in fds(plain.pid):
        assert not any("emperor-uwsgi" in t for t in targets)
    plain_worker = len(fds(plain.pid)[1])
    using_fds = fds(using.pid)
    assert all(any("emperor-uwsgi" in t for t in targets) for targets in using_fds)
    assert len(using_fds[1]) == plain_worker + 2   # the lock file and the pipe's write end
    assert "sys.modules" not in plain.log


@pytest.mark.timeout(60)
def test_uwsgi_stop_stops_the_vassal(procs, tmp_path):
    """uwsgi.stop(): SIGQUIT to the master, as uWSGI's py_uwsgi_stop: a stop now, which may cut
    the very request that asked (as in uWSGI)."""
    p = uwsgi_master(procs, tmp_path)
    try:
        assert http_get(p.port, "/stop").body == b"True"
    except OSError:
        pass
    p.wait_log("stopping (SIGQUIT)")
    assert p.wait(20) == 0
    assert [pid for _, pid in lines(p, "atexit")] == [str(p.pid)]   # the master's (workers were killed)


@pytest.mark.timeout(60)
def test_mule_targets_are_refused_with_a_sentence(procs, tmp_path):
    p = uwsgi_master(procs, tmp_path)
    assert http_get(p.port, "/mule", expect=200).body == b"ValueError: unable to register signal"
    p.wait_log("emperor has no mules")


# ---------- compatibility: one Flask app, emperor and real uWSGI, the same transcript ----------
def flask_transcript(start, tmp_path: Path) -> list:
    """Run tests/apps/uwsgi_flask_app.py under `start(ini)` and write down what a client and the
    app's markers see: responses, @postfork once per worker, @timer ticking, a task queued with
    @spool run once by the spooler, uwsgi.reload() running @postfork again in the new workers
    (and, as uWSGI's spooler_start does, in the spooler, whose worker_id() is 0)."""
    port = free_port()
    marks = tmp_path / "marks"
    marks.mkdir()
    ini = tmp_path / "flask.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nmaster = true\nprocesses = 2\n"
                   f"virtualenv = {sys.prefix}\nchdir = {APPS}\nmodule = uwsgi_flask_app:app\n"
                   f"spooler = {tmp_path / 'spool'}\nenv = FLASK_TEST=1\nenv = FLASK_SPOOL=1\nenv = MARK_DIR={marks}\n")
    start(ini)

    def marked(name: str) -> list[str]:
        path = marks / name
        return path.read_text().splitlines() if path.exists() else []

    wait_for(lambda: answers(port), 30)
    wait_for(lambda: len(marked("postfork")) == 3, 20)   # 2 workers, and the spooler (worker_id 0)
    out: list = [("postfork", sorted(marked("postfork")))]
    for path in ("/", "/info", "/missing"):
        r = http_get(port, path)
        out.append((path, r.status, json.loads(r.body) if path == "/info" else r.body.decode()[:40]))
    wait_for(lambda: len(marked("timer")) >= 3, 20)
    out.append(("timer", sorted({line.split()[1] for line in marked("timer")}), len(marked("timer")) >= 3))
    out.append(("/spool", http_get(port, "/spool").body.decode()))
    wait_for(lambda: marked("spooled") and not list((tmp_path / "spool").glob("uwsgi_spoolfile_on_*")), 20)
    out.append(("spooled", marked("spooled")))
    r = http_get(port, "/reload")
    out.append(("/reload", r.status, r.body.decode()))
    wait_for(lambda: len(marked("postfork")) == 6, 60)
    wait_for(lambda: answers(port), 30)
    out.append(("postfork after reload", sorted(marked("postfork")[3:])))
    out.append(("/", http_get(port, "/").body.decode()))
    return out


@pytest.mark.timeout(180)
def test_a_flask_app_for_uwsgi_gives_the_same_transcript_under_emperor_and_uwsgi(procs, tmp_path,
                                                                                 uwsgi_binary):
    pytest.importorskip("flask")
    (tmp_path / "emperor").mkdir()
    (tmp_path / "uwsgi").mkdir()
    ours = flask_transcript(lambda ini: procs([sys.executable, "-m", "emperor", "master", str(ini)],
                                              ini.parent), tmp_path / "emperor")
    theirs = flask_transcript(lambda ini: procs([uwsgi_binary, "--ini", str(ini)], ini.parent),
                              tmp_path / "uwsgi")
    assert ours == theirs
    info = ours[2][2]
    assert info["worker_id_ok"] and info["masterpid_is_parent"] and info["connected_here"]
    assert info["numproc"] == 2 and info["opt_types"] == ["str:bytes"] and info["env"] == "MARK_DIR"
    assert ours[0] == ("postfork", ["0", "1", "2"]) and ours[-2] == ("postfork after reload", ["0", "1", "2"])
