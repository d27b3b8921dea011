"""What the emperor does with each change to a vassal file (emperor/emperor/watch.py acting through
masters.py), with real masters: a new file starts, a changed one reloads, a deleted one stops,
an invalid one waits to be fixed. Every process is killed by PID at teardown (the `emperor` fixture)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from support import (alive, body_when, free_port, http_get, log_lines, refuses, serving, stamp, vassal_ini,
                     wait_for)


pytestmark = pytest.mark.timeout(60)


def test_a_dropped_file_serves_at_once_not_at_the_next_rescan(emperor, appdir):
    e = emperor()
    port = free_port()
    (e.dir / "app.ini").write_text(vassal_ini(port, appdir))
    t0 = time.monotonic()
    assert body_when(port, timeout=20).startswith("app gen=0")
    # the timing is the behaviour: inotify, not the safety rescan 30 s later (it takes ~40 ms)
    assert time.monotonic() - t0 < 10
    assert "app.ini: starting -> running (ready)" in e.wait_log("app.ini: starting -> running")


def test_touch_reloads_into_a_new_generation(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    pid = int(http_get(port, expect=200).text.split("pid=")[1])
    os.utime(path)
    e.wait_log("app.ini: running -> reloading (file changed)")
    assert "gen=1" in body_when(port, lambda b: "gen=1" in b)
    e.wait_log("app.ini: reloading -> running (generation 1 ready)")
    assert int(http_get(port, expect=200).text.split("pid=")[1]) != pid


def test_exit_on_reload_makes_a_touch_a_fresh_start(emperor, appdir):
    """exit-on-reload (core/master_utils.c uwsgi_reload: "GAME OVER (insert coin)", exit 0 instead
    of the re-exec): the master stops gracefully and the emperor starts the vassal afresh."""
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir, extra="exit-on-reload = true\n")
    first = body_when(port)
    os.utime(path)
    e.wait_log(", exit-on-reload", timeout=30)
    assert "gen=0" in body_when(port, lambda b: b != first and "gen=0" in b, timeout=30)
    assert "reloading -> running" not in e.log
    e.wait_log("app.ini: stopping -> starting (restart after exited 0", timeout=10)   # at once, no backoff


def test_edit_in_place_reloads(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    with open(path, "a") as f:
        f.write("env = MARK=edited\n")
    assert "gen=1 mark=edited" in body_when(port, lambda b: "gen=1" in b)


def test_editor_save_by_rename_over_reloads(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    tmp = e.dir / ".app.ini.swp"
    tmp.write_text(vassal_ini(port, appdir, "env = MARK=saved\n"))
    os.replace(tmp, path)
    assert "gen=1 mark=saved" in body_when(port, lambda b: "gen=1" in b)
    # a save is a reload, not a stop and a start (old workers do log their own graceful stop)
    assert "app.ini: running -> stopping" not in e.log
    assert "[app.ini] running -> stopping" not in e.log


def test_mv_over_with_an_older_mtime_reloads(emperor, appdir, tmp_path):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    staged = tmp_path / "staged.ini"
    staged.write_text(vassal_ini(port, appdir, "env = MARK=moved\n"))
    past = time.time() - 86400
    os.utime(staged, (past, past))   # what `cp -p` of an old file gives
    os.rename(staged, path)
    assert "gen=1 mark=moved" in body_when(port, lambda b: "gen=1" in b)


def test_rename_new_name_serves_on_the_same_port(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "old.ini", port, appdir)
    os.rename(path, e.dir / "new.ini")
    assert body_when(port, lambda b: b.startswith("new ")).startswith("new gen=0")
    log = e.wait_log("old.ini: stopping -> gone")
    assert "new.ini: starting -> running" in e.wait_log("new.ini: starting -> running")
    assert "backoff" not in log and "Address already in use" not in log


def test_two_vassals_on_one_port_the_second_backs_off_until_the_first_leaves(emperor, appdir):
    e = emperor()
    port = free_port()
    first = serving(e, "first.ini", port, appdir)
    (e.dir / "second.ini").write_text(vassal_ini(port, appdir))
    log = e.wait_log("second.ini: starting -> backoff")
    assert f"cannot bind http socket 127.0.0.1:{port}: address already in use" in log
    for _ in range(5):
        assert http_get(port, expect=200).text.startswith("first ")   # the first one never notices
    # backing off: 1 s, then 2 s, then 4 s (the log's own timestamps show the waits)
    log = e.wait_log("second.ini: starting -> backoff", count=3)
    backoffs = log_lines(log, "second.ini: starting -> backoff")
    assert "; retry in 1s)" in backoffs[0] and "; retry in 2s)" in backoffs[1] and "; retry in 4s)" in backoffs[2]
    retries = log_lines(log, "second.ini: backoff -> starting")
    assert all("(backoff over" in r for r in retries[:2])
    assert stamp(retries[0]) - stamp(backoffs[0]) >= 0.99 and stamp(retries[1]) - stamp(backoffs[1]) >= 1.99
    starts = len(log_lines(e.log, "second.ini: backoff -> starting"))
    first.unlink()
    assert body_when(port, lambda b: b.startswith("second ")).startswith("second gen=0")
    # not after its backoff (4 s by now): when the master holding the port has left
    start = log_lines(e.log, "second.ini: backoff -> starting")[starts]
    assert f"second.ini: backoff -> starting (first.ini left port {port}" in start


def test_configmap_update_reloads(emperor, appdir):
    """Kubernetes: app.ini -> ..data/app.ini, ..data -> ..<timestamp>; only ..data is re-pointed."""
    e = emperor()
    port = free_port()

    def project(stamp: str, mark: str) -> None:
        (e.dir / stamp).mkdir()
        (e.dir / stamp / "app.ini").write_text(vassal_ini(port, appdir, f"env = MARK={mark}\n"))
        os.symlink(stamp, e.dir / "..data_tmp")
        os.rename(e.dir / "..data_tmp", e.dir / "..data")

    project("..2024_01_01", "one")
    os.symlink("..data/app.ini", e.dir / "app.ini")
    assert "mark=one" in body_when(port)
    project("..2024_01_02", "two")
    shutil.rmtree(e.dir / "..2024_01_01")
    assert "gen=1 mark=two" in body_when(port, lambda b: "gen=1" in b)


def test_vassal_symlinked_to_a_file_outside_edited_there(emperor, appdir, tmp_path):
    e = emperor()
    port = free_port()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "app.ini").write_text(vassal_ini(port, appdir))
    os.symlink(outside / "app.ini", e.dir / "app.ini")
    assert body_when(port).startswith("app gen=0")
    with open(outside / "app.ini", "a") as f:
        f.write("env = MARK=outside\n")
    assert "gen=1 mark=outside" in body_when(port, lambda b: "gen=1" in b)


def test_delete_stops_the_master_and_frees_its_port(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    master = int(e.log.split("app.ini: new -> starting (new file; master pid ")[1].split(")")[0])
    os.unlink(path)
    wait_for(lambda: refuses(port))
    e.wait_log("app.ini: stopping -> gone (exited 0)")
    assert not alive(master)


def test_invalid_file_is_not_started_until_fixed(emperor, appdir):
    e = emperor()
    port = free_port()
    path = e.dir / "app.ini"
    path.write_text(vassal_ini(port, appdir, "processes = four\n"))
    log = e.wait_log("app.ini: new -> config error")
    assert 'app.ini:6: processes: expected an integer, got "four"' in log
    assert refuses(port)
    path.write_text(vassal_ini(port, appdir, "processes = 2\n"))
    assert body_when(port).startswith("app gen=0")
    e.wait_log("app.ini: config error -> starting (file changed")


def test_invalid_edit_keeps_the_running_generation(emperor, appdir):
    e = emperor()
    port = free_port()
    path = serving(e, "app.ini", port, appdir)
    with open(path, "a") as f:
        f.write("threads = many\n")
    e.wait_log("app.ini: running -> config error (invalid file; the running generation keeps serving)")
    assert http_get(port, expect=200).text.startswith("app gen=0")
    path.write_text(vassal_ini(port, appdir, "threads = 2\n"))
    assert "gen=1" in body_when(port, lambda b: "gen=1" in b)
