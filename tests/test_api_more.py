"""More of the `uwsgi` module under emperor and under real uWSGI 2.0.31, one application
(tests/apps/apiextra.py) and one vassal file for both, the same observations expected:
uwsgidecorators' @thread, the "active-workers" signal target beside "workers" and "workerN",
@spoolforever, the spooler's working directory (`spooler-chdir`), `spooler-import`, and
several `spooler` directories. References: uwsgidecorators.py upstream, core/signal.c,
core/spooler.c, plugins/python/python_plugin.c (unbit/uwsgi)."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from spoolsupport import APPS, SERVERS, get, result, start, tasks_in
from support import marker_lines as marks
from support import wait_for


def pause_logged(server: str) -> tuple[str, str]:
    """What each server logs once its workers are paused (SIGTSTP) and resumed."""
    if server == "emperor":
        return "paused (SIGTSTP)", "resumed (SIGCONT)"
    return "*** PAUSE", "resuming workers"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_thread_runs_the_function_in_a_new_thread_and_the_request_returns(tmp_path, procs, server):
    """uwsgidecorators.thread: each call starts a daemon Thread on the function and returns the
    function itself (upstream `thread.__call__`). The request answers while the thread still
    waits, the worker (the only one) serves the next request meanwhile, and the thread runs
    on in the same process. (uWSGI needs `enable-threads`; emperor accepts it.)"""
    p = start(procs, server, tmp_path, "processes = 1\nenable-threads = true\n", app="apiextra.py")
    body = get(p.port, "/thread?id=a")
    returned, request_thread, pid = body.split()
    assert returned == "True"
    started = wait_for(lambda: marks(tmp_path, "thread"), 20)
    assert started == [["started", "a", pid, started[0][3]]] and started[0][3] != request_thread
    assert result(p.port, "/") == "ok"                     # not held by the thread
    assert [m[0] for m in marks(tmp_path, "thread")] == ["started"]
    (tmp_path / "go-a").touch()
    wait_for(lambda: len(marks(tmp_path, "thread")) == 2, 20)
    assert marks(tmp_path, "thread")[1] == ["done", "a", pid, started[0][3]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", SERVERS)
def test_active_workers_reaches_every_worker_not_paused(tmp_path, procs, server):
    """core/signal.c uwsgi_route_signal: "active-workers" goes to every worker that has a PID
    and is neither cheaped nor suspended, so a busy worker runs it after its request;
    "workers" goes to all, "worker2" to the second. A @timer(1) on "active-workers" is run by
    nobody while SIGTSTP has the workers paused, and by both again once resumed."""
    p = start(procs, server, tmp_path, "processes = 2\nenv = APITEST=activetimer\n", app="apiextra.py")
    wait_for(lambda: {m[0] for m in marks(tmp_path, "sig24")} == {"1", "2"}, 20)
    for num, want in ((21, ["1", "2"]), (22, ["1", "2"]), (23, ["2"])):
        get(p.port, f"/signal?{num}")
        wait_for(lambda: len(marks(tmp_path, f"sig{num}")) == len(want), 20)
        assert sorted(m[0] for m in marks(tmp_path, f"sig{num}")) == want, num

    sleeper = threading.Thread(target=get, args=(p.port, "/sleep?s=4"), kwargs={"timeout": 30})
    sleeper.start()
    busy = wait_for(lambda: [f.name for f in tmp_path.glob("busy.*")], 20)[0].split(".")[1]
    get(p.port, "/signal?21")                            # served by the other worker
    wait_for(lambda: len(marks(tmp_path, "sig21")) == 4, 30)
    sleeper.join(30)
    late = {m[1] for m in marks(tmp_path, "sig21")[2:]}
    assert busy in late and len(late) == 2, (busy, late)

    paused, resumed = pause_logged(server)
    p.signal(signal.SIGTSTP)
    p.wait_log(paused, timeout=20, count=2 if server == "emperor" else 1)
    before = len(marks(tmp_path, "sig24"))
    with pytest.raises(TimeoutError):   # 3 ticks (6 runs if active); one raised as the pause came may run
        wait_for(lambda: len(marks(tmp_path, "sig24")) > before + 2, 3.5)
    p.signal(signal.SIGTSTP)
    p.wait_log(resumed, timeout=20)
    during = len(marks(tmp_path, "sig24"))
    wait_for(lambda: {m[0] for m in marks(tmp_path, "sig24")[during:]} == {"1", "2"}, 20)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_spoolforever_runs_its_task_at_every_scan(tmp_path, procs, server):
    """uwsgidecorators' @spoolforever writes ud_spool_ret = SPOOL_RETRY: whatever the function
    returns, the task file stays and the next scan (spooler-frequency = 1) runs it again."""
    spool = tmp_path / "spool"
    p = start(procs, server, tmp_path, f"spooler = {spool}\nspooler-frequency = 1\n", app="apiextra.py")
    name = eval(result(p.port, "/spool?f=forever&id=f1"))
    wait_for(lambda: len(marks(tmp_path, "forever")) >= 3, 40)
    runs = marks(tmp_path, "forever")
    assert {(r[0], r[3]) for r in runs} == {("f1", os.path.basename(name).decode())}
    times = [float(r[2]) for r in runs[:3]]
    assert all(b - a > 0.5 for a, b in zip(times, times[1:])), times   # separate scans
    assert tasks_in(spool) == [spool / os.path.basename(name).decode()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", SERVERS)
def test_a_task_runs_in_its_directory_or_in_spooler_chdir(tmp_path, procs, server):
    """core/spooler.c: the spooler chdir()s into its directory (a numeric PRIORITY/ one with
    spooler-ordered) and calls the function with the task's bare file name as
    `spooler_task_name` (python_plugin.c uwsgi_python_spooler), so it names the file from the
    task's cwd; `spooler-chdir = DIR` makes DIR the cwd of every task instead.

    `spooler-frequency = 1`: uWSGI's uwsgi_spool_request (core/spooler.c) wakes the spooler
    (SIGUSR1) only when it is not running a task, so a task spooled while the first one runs
    waits for the next scan, 30 s by default (CI once lost that race); the test is about the
    directory, not about that latency."""
    spool = tmp_path / "spool"
    freq = "spooler-frequency = 1\n"
    p = start(procs, server, tmp_path, f"spooler = {spool}\nspooler-ordered = true\n{freq}", app="apiextra.py")
    names = [eval(result(p.port, f"/spool?f=where&id={i}{q}")) for i, q in (("t", ""), ("p", "&priority=7"))]
    wait_for(lambda: len(marks(tmp_path, "where")) == 2 and not tasks_in(spool), 30)
    got = sorted(marks(tmp_path, "where"))
    assert [(g[0], g[2], g[3], g[4]) for g in got] == [
        ("p", str(spool / "7"), os.path.basename(names[1]).decode(), "True"),
        ("t", str(spool), os.path.basename(names[0]).decode(), "True")]
    p.kill()

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "where").unlink()
    p = start(procs, server, tmp_path, f"spooler = {spool}\nspooler-chdir = {work}\n{freq}", app="apiextra.py",
              log="second.log")
    name = eval(result(p.port, "/spool?f=where&id=c"))
    wait_for(lambda: marks(tmp_path, "where") and not tasks_in(spool), 30)
    assert [(g[0], g[2], g[3], g[4]) for g in marks(tmp_path, "where")] == [
        ("c", str(work), os.path.basename(name).decode(), "False")]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_spooler_import_is_imported_in_the_spooler_and_its_functions_run(tmp_path, procs, server):
    """python_plugin.c uwsgi_python_spooler_init: each `spooler-import` (a file here) is imported
    in every spooler process, never in a worker; a task naming a @spool function defined only
    there runs it, in the spooler process that imported it."""
    spool = tmp_path / "spool"
    p = start(procs, server, tmp_path, f"processes = 2\nspooler = {spool}\nspooler-processes = 2\n"
                                       f"spooler-import = {APPS / 'spooltasks.py'}\nspooler-frequency = 1\n",
              app="apiextra.py")   # frequency: see test_a_task_runs_in_its_directory_or_in_spooler_chdir
    pids = wait_for(lambda: [x for x in eval(result(p.port, "/spoolerpids")) if x > 0] if len(
        marks(tmp_path, "loaded")) == 2 else None, 30)
    assert sorted(m[0] for m in marks(tmp_path, "loaded")) == sorted(map(str, pids))
    assert {m[1] for m in marks(tmp_path, "loaded")} == {"True"}
    for i in range(3):
        result(p.port, f"/spool?f=imported&id=i{i}")
    wait_for(lambda: len(marks(tmp_path, "imported")) == 3 and not tasks_in(spool), 30)
    runs = marks(tmp_path, "imported")
    assert sorted(r[0] for r in runs) == ["i0", "i1", "i2"]
    assert {r[1] for r in runs} <= set(map(str, pids)) and {r[2] for r in runs} == {"True"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_several_spooler_directories_each_with_its_own_spoolers(tmp_path, procs, server):
    """`spooler` twice, spooler-processes = 2: four spooler processes, two per directory
    (uwsgi.spooler_pids() lists them); uwsgi.spool() writes to the first directory, or to the
    one its `spooler` key names, and only that directory's spoolers run the task."""
    one, two = tmp_path / "one", tmp_path / "two"
    p = start(procs, server, tmp_path, f"spooler = {one}\nspooler = {two}\nspooler-processes = 2\n"
              "spooler-frequency = 1\n", app="apiextra.py")   # see test_a_task_runs_in_its_directory_or_…
    pids = wait_for(lambda: (lambda x: x if len(x) == 4 and all(x) else None)(
        eval(result(p.port, "/spoolerpids"))), 30)
    by_dir = {str(one): set(), str(two): set()}
    for line in p.log.splitlines():
        if "spawned the" in line and "spooler on dir" in line:
            words = line.split()
            by_dir[words[words.index("dir") + 1]].add(int(words[-1]))
    assert by_dir[str(one)] | by_dir[str(two)] == set(pids) and all(len(s) == 2 for s in by_dir.values())
    names = []
    for i in range(6):
        q = f"&spooler={two}" if i % 2 else ""
        names.append(eval(result(p.port, f"/spool?f=where&id=w{i}{q}")))
    assert [os.path.dirname(n).decode() for n in names] == [str(one), str(two)] * 3
    wait_for(lambda: len(marks(tmp_path, "where")) == 6 and not tasks_in(tmp_path), 30)
    for task, pid, cwd, *_ in marks(tmp_path, "where"):
        assert int(pid) in by_dir[str(two) if int(task[1:]) % 2 else str(one)], (task, pid)
        assert cwd == str(two if int(task[1:]) % 2 else one)
