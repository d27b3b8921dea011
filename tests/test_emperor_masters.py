"""The emperor's masters and their preflights: forks of the emperor, and how a master that
keeps failing is backed off (emperor/emperor/masters.py, launch.py), with real processes."""
from __future__ import annotations

import os
import signal

import pytest

from support import (alive, body_when, children, fd_targets, free_port, held_import, http_get, log_lines, run_cli,
                     serving, vassal_ini, wait_for)



pytestmark = pytest.mark.timeout(60)


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def test_forked_master_is_found_through_its_pidfile(emperor, appdir, tmp_path):
    # Masters are forks of the emperor: until their first reload they keep its command
    # line, and `--reload PIDFILE` must still know one (and refuse a worker's PID).
    from emperor.master.pidfile import PidfileError, read_master_pid

    e = emperor()
    port = free_port()
    pidfile = tmp_path / "app.pid"
    serving(e, "app.ini", port, appdir, extra=f"pidfile = {pidfile}\n")
    wait_for(pidfile.exists)  # written once the master has every worker's READY, after a first answer
    master = int(pidfile.read_text())
    assert master != e.pid
    wait_for(lambda: open(f"/proc/{master}/comm").read().strip() == "emperor running")
    worker = int(http_get(port, expect=200).text.split("pid=")[1])
    assert open(f"/proc/{worker}/comm").read().strip() == "emperor worker"
    # what ps shows: not the emperor's command line, which both would otherwise inherit
    path = str(e.dir / "app.ini")
    assert cmdline(master)[:3] == ["emperor", "master", path[:len(cmdline(master)[2])]]
    assert cmdline(worker)[:3] == ["emperor", "worker", "1"]
    (tmp_path / "worker.pid").write_text(f"{worker}\n")
    with pytest.raises(PidfileError, match="is not an emperor master"):
        read_master_pid(str(tmp_path / "worker.pid"))
    (tmp_path / "emperor.pid").write_text(f"{e.pid}\n")
    with pytest.raises(PidfileError, match="is not an emperor master"):
        read_master_pid(str(tmp_path / "emperor.pid"))
    r = run_cli("--reload", str(pidfile))
    assert r.returncode == 0, r.stderr
    assert "gen=1" in body_when(port, lambda b: "gen=1" in b)
    assert int(pidfile.read_text()) == master


def test_forked_masters_keep_nothing_of_the_emperor(emperor, appdir):
    # A master is a fork of the emperor: none of the emperor's descriptors (watcher,
    # control socket, other vassals' channels, signal pipe) may survive in it.
    e = emperor()
    serving(e, "a.ini", free_port(), appdir)
    serving(e, "b.ini", free_port(), appdir)
    ours = set(fd_targets(e.pid))
    assert "anon_inode:inotify" in ours
    for master in children(e.pid):
        theirs = set(fd_targets(master))
        assert "anon_inode:inotify" not in theirs
        assert not {t for t in ours & theirs if t.startswith(("socket:", "pipe:"))}  # each has its own inode
        assert os.readlink(f"/proc/{master}/fd/0") == "/dev/null"


def test_reload_preflight_is_a_fork_of_the_emperor_and_names_the_app_error(emperor, appdir, tmp_path):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    [master] = children(e.pid)
    app = appdir / "wsgiapp.py"
    good = app.read_text()
    importing, go = tmp_path / "importing", tmp_path / "go"
    app.write_text(held_import(importing, go) + "raise RuntimeError('broken deploy')\n")
    os.utime(path)
    # while the new code imports, the emperor has two children: the master and its preflight
    wait_for(importing.exists)
    preflight = [p for p in children(e.pid) if p != master]
    assert preflight == [int(importing.read_text())]
    assert open(f"/proc/{preflight[0]}/comm").read().strip() != "emperor running"
    go.touch()
    log = e.wait_log("reload failed, generation 0 keeps serving: app.ini: module 'wsgiapp' failed to import: "
                     "RuntimeError: broken deploy")
    assert "raise RuntimeError('broken deploy')" in log   # the app's own traceback, nothing of ours
    e.wait_log("app.ini: reloading -> reload failed")
    assert "gen=0" in http_get(port, expect=200).text
    app.write_text(good)
    os.utime(path)
    assert "gen=1" in body_when(port, lambda b: "gen=1" in b)
    assert children(e.pid) == [master]


def test_a_preflight_still_importing_dies_with_the_emperor(emperor, appdir, tmp_path):
    e = emperor()
    path = serving(e, "app.ini", free_port(), appdir)
    [master] = children(e.pid)
    importing = tmp_path / "importing"
    (appdir / "wsgiapp.py").write_text(held_import(importing, tmp_path / "never"))   # an import of 60 s
    os.utime(path)
    wait_for(importing.exists)
    [preflight] = [p for p in children(e.pid) if p != master]
    assert preflight == int(importing.read_text())
    try:
        e.signal(signal.SIGINT)
        assert e.wait(10) == 0
        wait_for(lambda: not alive(preflight))   # not the 60 s its import would take
    finally:  # once the emperor is gone it is nobody's child: the fixture would not find it
        try:
            os.kill(preflight, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_crash_looping_vassal_backs_off_while_another_serves(emperor, appdir):
    (appdir / "crashapp.py").write_text("raise RuntimeError('broken at import')\n")
    e = emperor()
    good = free_port()
    serving(e, "good.ini", good, appdir)
    bad = free_port()
    (e.dir / "bad.ini").write_text(vassal_ini(bad, appdir).replace("wsgiapp:application", "crashapp:application"))
    log = e.wait_log("bad.ini: starting -> backoff (exited 1: ")
    assert "RuntimeError: broken at import" in log.split("bad.ini: starting -> backoff")[1].splitlines()[0]
    assert "; retry in 1s)" in log
    e.wait_log("; retry in 2s)")
    assert http_get(good, expect=200).text.startswith("good gen=0")
    e.wait_log("; retry in 4s)")
    # SIGURG clears every backoff: the next attempt comes at once, not in 4 s
    starts = len(log_lines(e.log, "bad.ini: backoff -> starting"))
    e.signal(signal.SIGURG)
    log = e.wait_log("bad.ini: backoff -> starting (SIGURG: backoff cleared")
    assert "(SIGURG: backoff cleared" in log_lines(log, "bad.ini: backoff -> starting")[starts]  # not the timer
    e.wait_log("; retry in 1s)", count=2)   # cleared: back to 1 s
    assert http_get(good, expect=200).text.startswith("good gen=0")


def test_a_master_that_gets_ready_but_dies_before_serving_keeps_backing_off(emperor, appdir):
    # ready is not enough to reset the backoff: only a served request is
    (appdir / "dies.py").write_text(
        "import os, threading\n"
        "threading.Timer(0.2, os._exit, (3,)).start()   # in the master, which imports the app\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'']\n")
    e = emperor()
    (e.dir / "dies.ini").write_text(vassal_ini(free_port(), appdir).replace("wsgiapp:application", "dies:application"))
    log = e.wait_log("dies.ini: running -> backoff (exited 3; retry in 2s)", timeout=15)
    assert "dies.ini: running -> backoff (exited 3; retry in 1s)" in log
    assert "dies.ini: starting -> running (ready)" in log
