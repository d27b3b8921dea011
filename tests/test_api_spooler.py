"""The spooler (uWSGI's core/spooler.c, Spooler.rst): real masters, real spooler processes, the
same application (tests/apps/spoolcache.py) and vassal file under emperor and under real uWSGI
where the observable result must be the same."""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

import pytest

from spoolsupport import SERVERS, UWSGI, get, result, runs, start, tasks_in, wait_runs
from support import alive, descendants, free_port, wait_for

from emperor.api import spool as api_spool


def spooler_ini(d, extra: str = "") -> str:
    return f"processes = 2\nspooler = {d / 'spool'}\nspooler-processes = 2\nspooler-frequency = 1\n" + extra


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_each_spooled_task_runs_exactly_once(tmp_path, procs, server):
    """20 tasks from 2 workers, 2 spooler processes on the directory: each runs once (the file
    lock while it runs, the file removed before it is unlocked), and spool() returns the file
    name uWSGI gives, under the spooler directory."""
    p = start(procs, server, tmp_path, spooler_ini(tmp_path))
    names = [result(p.port, f"/spool?kind=once&id=t{i}") for i in range(20)]
    assert all(n.startswith(f"b'{tmp_path / 'spool'}/uwsgi_spoolfile_on_") for n in names), names[:2]
    done = wait_runs(tmp_path, "once", 20, tmp_path / "spool")
    assert Counter(r[1] for r in done) == {f"t{i}": 1 for i in range(20)}
    assert {r[4] for r in done} == {"True"} and result(p.port, "/iamspooler") == "None"   # i_am_the_spooler()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_spool_retry_runs_the_task_again(tmp_path, procs, server):
    """SPOOL_RETRY leaves the file: the next scan (spooler-frequency = 1) runs it again; the
    third run returns SPOOL_OK and the file goes."""
    p = start(procs, server, tmp_path, spooler_ini(tmp_path))
    result(p.port, "/spool?kind=retry&id=r1")
    done = wait_runs(tmp_path, "retry", 3, tmp_path / "spool")
    assert len(done) == 3


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_at_defers_the_task(tmp_path, procs, server):
    """`at` (a UNIX time) is the file's mtime; the spooler leaves a file from the future alone,
    and uwsgi.spooler_jobs() lists it meanwhile."""
    p = start(procs, server, tmp_path, spooler_ini(tmp_path))
    at = int(time.time()) + 4
    result(p.port, f"/spool?kind=once&id=later&at={at}")
    jobs = result(p.port, "/jobs")
    assert "uwsgi_spoolfile_on_" in jobs
    done = wait_runs(tmp_path, "once", 1, tmp_path / "spool", timeout=40)
    assert float(done[0][3]) >= at


@pytest.mark.timeout(90)
def test_a_task_survives_a_graceful_reload(tmp_path, procs):
    """A task queued behind a running one when the master reloads: the old spooler finishes its
    task (under its lock) while the new image's spoolers take the queued one; each runs once."""
    p = start(procs, "emperor", tmp_path, f"processes = 2\nspooler = {tmp_path / 'spool'}\n")
    result(p.port, "/spool?kind=hold&id=h1")
    wait_for(lambda: (tmp_path / "holding").exists(), 20)
    result(p.port, "/spool?kind=once&id=queued")
    p.signal(signal.SIGHUP)
    p.wait_log("(generation 1 ready)", timeout=30)
    wait_runs(tmp_path, "once", 1, tmp_path / "spool" / "none")
    (tmp_path / "go").touch()
    wait_runs(tmp_path, "hold", 1, tmp_path / "spool")
    assert Counter((r[0], r[1]) for r in runs(tmp_path)) == {("hold", "h1"): 1, ("once", "queued"): 1}


@pytest.mark.timeout(120)
def test_a_task_survives_a_master_sigkill(tmp_path, procs):
    """spool() returned: the task is on disk (fsync, rename, directory fsync). The master is
    SIGKILLed before the spooler (busy with another task) took it; its spooler and workers die
    with it. A new master on the same directory runs the task, once."""
    ini_body = f"processes = 2\nspooler = {tmp_path / 'spool'}\n"
    p = start(procs, "emperor", tmp_path, ini_body)
    result(p.port, "/spool?kind=hold&id=h1")
    wait_for(lambda: (tmp_path / "holding").exists(), 20)
    name = result(p.port, "/spool?kind=once&id=precious")
    assert os.path.exists(eval(name))
    family = descendants(p.pid)
    assert len(family) >= 3      # 2 workers and the spooler
    p.signal(signal.SIGKILL)
    p.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in family), 20)
    assert [r for r in runs(tmp_path) if r[0] == "once"] == []
    (tmp_path / "go").touch()
    start(procs, "emperor", tmp_path, ini_body, port=p.port, log="second.log")
    wait_runs(tmp_path, "once", 1, tmp_path / "spool")
    assert [r[1] for r in runs(tmp_path) if r[0] == "once"] == ["precious"]


@pytest.mark.timeout(90)
@pytest.mark.skipif(not UWSGI.exists(), reason="no uWSGI in the venv")
def test_a_task_uwsgi_wrote_runs_under_emperor(tmp_path, procs):
    """Real uWSGI with `spooler-external` writes the task (it runs no spooler of its own); an
    emperor master on the directory reads uWSGI's file format and runs it."""
    (tmp_path / "spool").mkdir()
    u = start(procs, "uwsgi", tmp_path, f"spooler-external = {tmp_path / 'spool'}\n", log="uwsgi.log")
    name = result(u.port, "/spool?kind=body&id=fromuwsgi&body=payload-bytes")
    assert "uwsgi_spoolfile_on_" in name
    u.kill()
    assert len(tasks_in(tmp_path / "spool")) == 1
    start(procs, "emperor", tmp_path, f"spooler = {tmp_path / 'spool'}\n", log="emperor.log")
    wait_runs(tmp_path, "body", 1, tmp_path / "spool")
    assert (tmp_path / "body-fromuwsgi").read_bytes() == b"payload-bytes"


@pytest.mark.timeout(90)
@pytest.mark.skipif(not UWSGI.exists(), reason="no uWSGI in the venv")
def test_a_task_emperor_wrote_runs_under_uwsgi(tmp_path, procs):
    """The other way round: emperor's spool() (here in the test process) writes, real uWSGI runs."""
    spool = tmp_path / "spool"
    spool.mkdir()
    api_spool.dirs[:] = [str(spool)]
    try:
        name = api_spool.spool({b"kind": b"body", b"id": b"fromemperor", b"body": b"\x00binary\xff"})
    finally:
        api_spool.dirs[:] = []
    assert os.path.basename(name).startswith(b"uwsgi_spoolfile_on_")
    start(procs, "uwsgi", tmp_path, f"spooler = {spool}\n", log="uwsgi.log")
    wait_runs(tmp_path, "body", 1, spool)
    assert (tmp_path / "body-fromemperor").read_bytes() == b"\x00binary\xff"


@pytest.mark.timeout(60)
def test_sigusr2_wakes_the_spooler(tmp_path, procs):
    """A task file dropped into the directory by another program is found at once on SIGUSR2
    to the master (uWSGI's "print worker status or wakeup the spooler"), not at the next
    spooler-frequency scan (an hour here)."""
    p = start(procs, "emperor", tmp_path, f"spooler = {tmp_path / 'spool'}\nspooler-frequency = 3600\n")
    p.wait_log("spawned the spooler", timeout=20)
    api_spool.dirs[:] = [str(tmp_path / "spool")]
    try:
        api_spool.spool({b"kind": b"once", b"id": b"dropped"})
    finally:
        api_spool.dirs[:] = []
    p.signal(signal.SIGUSR2)
    wait_runs(tmp_path, "once", 1, tmp_path / "spool", timeout=20)


@pytest.mark.timeout(60)
def test_uwsgidecorators_spool_with_arguments(tmp_path, procs):
    """@spool(pass_arguments=True): the arguments pickled under `args`/`kwargs` as upstream."""
    (tmp_path / "decoapp.py").write_text(DECO_APP)
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = decoapp\n"
                   f"spooler = {tmp_path / 'spool'}\nenv = MARK_DIR={tmp_path}\n")
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("(workers ready)", timeout=30)
    assert get(port, "/").startswith("b'")
    wait_for(lambda: (tmp_path / "deco.txt").exists(), 20)
    assert (tmp_path / "deco.txt").read_text() == "(1, 'two') {'three': [3]}"


DECO_APP = '''
import os
from uwsgidecorators import spool

@spool(pass_arguments=True)
def job(*args, **kwargs):
    with open(os.path.join(os.environ["MARK_DIR"], "deco.txt"), "w") as f:
        f.write(f"{args} {kwargs}")

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [repr(job.spool(1, "two", three=[3])).encode()]
'''


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_max_tasks_recycles_the_spooler(tmp_path, procs, server):
    """spooler-max-tasks = 1: each task is run by a new spooler process; uwsgi.spooler_pids()
    in a worker names the running spooler."""
    p = start(procs, server, tmp_path, f"spooler = {tmp_path / 'spool'}\nspooler-max-tasks = 1\n"
                                       "spooler-frequency = 1\n")
    wait_for(lambda: result(p.port, "/spoolerpids") == "1", 20, 0.1)
    for i in range(3):
        result(p.port, f"/spool?kind=once&id=m{i}")
        wait_runs(tmp_path, "once", i + 1, tmp_path / "spool")
    assert len({r[2] for r in runs(tmp_path)}) == 3


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_priority_subdirectories_with_spooler_ordered(tmp_path, procs, server):
    """`priority` puts the task in PRIORITY/ (made on demand); spooler-ordered scans the numeric
    subdirectories too, in version order."""
    p = start(procs, server, tmp_path, f"spooler = {tmp_path / 'spool'}\nspooler-ordered = true\n"
                                       "spooler-frequency = 1\n")
    name = result(p.port, "/spool?kind=once&id=prio&priority=7")
    assert f"{tmp_path / 'spool'}/7/uwsgi_spoolfile_on_" in name
    wait_runs(tmp_path, "once", 1, tmp_path / "spool")


@pytest.mark.timeout(90)
def test_spooler_harakiri_kills_a_stuck_task_and_keeps_it(tmp_path, procs):
    """spooler-harakiri = 2: the spooler process running a task for longer is killed (SIGALRM)
    and forked again; the task file stays and runs again."""
    p = start(procs, "emperor", tmp_path, f"spooler = {tmp_path / 'spool'}\nspooler-harakiri = 2\n"
                                          "spooler-frequency = 1\n")
    result(p.port, "/spool?kind=hold&id=stuck")
    p.wait_log("killed by SIGALRM; respawning", timeout=30)
    (tmp_path / "go").touch()
    done = wait_runs(tmp_path, "hold", 2, tmp_path / "spool")
    assert len(done) >= 2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_a_relative_spooler_directory_is_from_the_start_directory(tmp_path, procs, server):
    """`spooler = rel` with `chdir = sub`: uWSGI resolves it from the directory it started in
    (while reading its options), not from chdir; so does emperor."""
    (tmp_path / "sub").mkdir()
    p = start(procs, server, tmp_path, f"chdir = {tmp_path / 'sub'}\nspooler = rel\n")
    assert f"b'{tmp_path / 'rel'}/uwsgi_spoolfile_on_" in result(p.port, "/spool?kind=once&id=r")
    wait_runs(tmp_path, "once", 1, tmp_path / "rel")
    assert not (tmp_path / "sub" / "rel").exists()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_spooler_get_task_reads_a_task_as_the_spooler_would(tmp_path, procs, server):
    """A task for later (`at`), read back with uwsgi.spooler_get_task(): the same dict under
    both servers (bytes keys and values, spooler_task_name, body)."""
    p = start(procs, server, tmp_path, spooler_ini(tmp_path))
    at = int(time.time()) + 3600
    name = eval(result(p.port, f"/spool?kind=once&id=peek&at={at}&body=the-body")).decode()
    task = eval(result(p.port, f"/task?path={name}"))
    assert task == sorted([(b"at", str(at).encode()), (b"body", b"the-body"), (b"id", b"peek"),
                           (b"kind", b"once"), (b"spooler_task_name", name.encode())])


def test_the_spool_file_is_uwsgis_format(tmp_path):
    """core/spooler.c uwsgi_spool_request: header (modifier1 17, LE16 size, modifier2 0), the
    vars as a uwsgi packet (LE16 key size, key, LE16 value size, value), then the body; mtime
    = at; the file name uwsgi_spoolfile_on_HOST_PID_COUNTER_RANDOM_SEC_USEC."""
    api_spool.dirs[:] = [str(tmp_path)]
    try:
        name = api_spool.spool({b"a": b"xy", "at": "2000000000", "body": b"BODY"})
    finally:
        api_spool.dirs[:] = []
    data = open(name, "rb").read()
    vars_ = b"\x01\x00a\x02\x00xy" + b"\x02\x00at\x0a\x002000000000"
    assert data == bytes([17]) + len(vars_).to_bytes(2, "little") + b"\x00" + vars_ + b"BODY"
    assert os.stat(name).st_mtime == 2000000000
    parts = os.path.basename(name).decode().split("_")
    assert parts[:3] == ["uwsgi", "spoolfile", "on"] and parts[-5] == str(os.getpid())
    assert [p for p in os.listdir(tmp_path) if not p.startswith("uwsgi_spoolfile_on_")] == []


@pytest.mark.timeout(200)
@pytest.mark.parametrize("server", SERVERS)
def test_a_flask_app_spools_and_reloads_itself(tmp_path, procs, server):
    """Flask, @spool(pass_arguments=True) and uwsgi.reload(): a task queued before the app's own
    reload and one after both run once, with their arguments."""
    p = start(procs, server, tmp_path, f"processes = 2\nspooler = {tmp_path / 'spool'}\n", app="flaskspool:app")
    assert "uwsgi_spoolfile_on_" in result(p.port, "/queue?to=alice&subject=before")
    assert result(p.port, "/reload") == "True"
    if server == "emperor":
        p.wait_log("(generation 1 ready)", timeout=60)
    else:
        p.wait_log("spawned uWSGI worker 2", timeout=90, count=2)   # uWSGI 2.0 may stall ~30 s here
    name = wait_for(lambda: _try(p.port, "/queue?to=bob&subject=after"), 90, 0.2)
    assert "uwsgi_spoolfile_on_" in name

    def lines():
        try:
            return sorted(line.split()[0] for line in (tmp_path / "flask.log").read_text().splitlines())
        except FileNotFoundError:
            return []
    wait_for(lambda: len(lines()) >= 2 and not tasks_in(tmp_path / "spool"), 60)
    assert lines() == ["alice:before", "bob:after"]


def _try(port: int, path: str) -> str | None:
    try:
        return result(port, path)
    except OSError:
        return None
