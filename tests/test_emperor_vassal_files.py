"""The emperor with real masters, signals and files; plus its state logic driven directly.

Every process is started through the `procs` fixture and killed by PID at teardown.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support import (VASSAL_APP, InFlight, alive, body_when, children, descendants, free_port, held_import, http_get,
                     log_lines, refuses, run_cli, stamp, vassal_ini, wait_for)
from emperor.emperor import process as emp
from emperor.states import VassalState as S
from emperor.wire import channel
from emperor.emperor.watch import Changes

pytestmark = pytest.mark.timeout(60)

def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def serving(emperor_proc, name: str, port: int, appdir: Path, extra: str = "", timeout: float = 5.0):
    path = emperor_proc.dir / name
    path.write_text(vassal_ini(port, appdir, extra))
    body_when(port, lambda b: b.startswith(name[:-4] + " "), timeout)
    return path


# ---------- watching and acting ----------
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


def fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def test_forked_masters_keep_nothing_of_the_emperor(emperor, appdir):
    # A master is a fork of the emperor: none of the emperor's descriptors (watcher,
    # control socket, other vassals' channels, signal pipe) may survive in it.
    e = emperor()
    serving(e, "a.ini", free_port(), appdir)
    serving(e, "b.ini", free_port(), appdir)
    ours = fd_targets(e.pid)
    assert "anon_inode:inotify" in ours
    for master in children(e.pid):
        theirs = fd_targets(master)
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
    # backing off: 1 s, then 2 s
    log = e.wait_log("second.ini: starting -> backoff", count=2)
    backoffs = log_lines(log, "second.ini: starting -> backoff")
    assert "; retry in 1s)" in backoffs[0] and "; retry in 2s)" in backoffs[1]
    [retry] = log_lines(log, "second.ini: backoff -> starting")
    assert "(backoff over" in retry and stamp(retry) - stamp(backoffs[0]) >= 0.99
    first.unlink()
    assert body_when(port, lambda b: b.startswith("second ")).startswith("second gen=0")
    # not after its backoff (2 s by now): when the master holding the port has left
    start = log_lines(e.log, "second.ini: backoff -> starting")[1]
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
    # SIGURG clears every backoff: the next attempt comes at once, not in 2 s
    e.signal(signal.SIGURG)
    log = e.wait_log("bad.ini: backoff -> starting (SIGURG: backoff cleared")
    [timer, urged] = log_lines(log, "bad.ini: backoff -> starting")   # not the 2 s timer first
    assert "(backoff over" in timer and "(SIGURG: backoff cleared" in urged
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


# ---------- stopping ----------
def test_sigterm_stops_every_vassal_gracefully_and_exits_0(emperor, appdir, tmp_path):
    e = emperor()
    ports = [free_port(), free_port()]
    for name, port in zip(("a.ini", "b.ini"), ports):
        serving(e, name, port, appdir)
    slow = InFlight(ports[0], "/slow", tmp_path / "slow")
    e.signal(signal.SIGTERM)
    assert e.wait(15) == 0
    r = slow.result()
    assert r.status == 200 and r.text.startswith("a gen=0")  # finished, not cut
    assert all(refuses(p) for p in ports)
    assert "every vassal has stopped: bye" in e.log
    assert "SIGKILL" not in e.log


def test_sigterm_kills_stragglers_after_the_grace(emperor, appdir, tmp_path):
    e = emperor("--grace", "0.5")
    port = free_port()
    serving(e, "app.ini", port, appdir)
    slow = InFlight(port, "/slow?20", tmp_path / "slow", timeout=30)
    t0 = time.monotonic()
    e.signal(signal.SIGTERM)
    assert e.wait(15) == 0
    # the timing is the behaviour: killed once the grace (0.5 s) is over, not when the request ends (20 s)
    assert 0.5 <= time.monotonic() - t0 < 10
    assert "app.ini: master" in e.log and "SIGKILL to its process group" in e.log
    assert "app.ini: stopping -> gone (killed by SIGKILL)" in e.log
    assert refuses(port)
    assert slow.done(10)
    assert slow.error is not None or slow.response.status != 200   # killed with its worker: no answer


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_sigint_stops_every_vassal_and_exits_0(emperor, appdir, sig):
    e = emperor()
    port = free_port()
    serving(e, "app.ini", port, appdir)
    e.signal(sig)
    assert e.wait(15) == 0
    assert refuses(port)


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


def test_sigkill_of_the_emperor_takes_masters_and_workers_down(emperor, appdir):
    e = emperor()
    port = free_port()
    serving(e, "app.ini", port, appdir, extra="processes = 2\n")
    stack = wait_for(lambda: (d := descendants(e.pid)) and len(d) >= 3 and d)  # the master and its two workers
    e.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in stack))
    assert refuses(port)


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


# ---------- tyrant mode ----------
SYSTEM_PYTHON = "/usr/bin/python3.11"
# an app that refuses to be imported as root: proves who imports it (master, preflight, worker)
NOT_AS_ROOT = "import os\nif os.getuid() == 0:\n    raise RuntimeError('imported as root')\n"


@pytest.fixture
def tyrant_user():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("tyrant mode needs root and useradd")
    name = f"empt{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=10)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=10)


@pytest.fixture
def public_dir():
    """Under /tmp, traversable by everyone (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="emperor-tyrant-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def unprivileged(emperor, public_dir):
    """start(*emperor args) -> (emperor, vassals dir, app dir): a root emperor on the system
    Python (the masters must run it as another user: /root is private), an app that prints
    its uid and refuses to be imported as root, all in a directory everyone can traverse."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} usable by an unprivileged user")
    appdir = public_dir / "app"
    appdir.mkdir(mode=0o755)
    (appdir / "wsgiapp.py").write_text(NOT_AS_ROOT + VASSAL_APP.replace('os.getpid())', 'os.getuid())'))
    (appdir / "wsgiapp.py").chmod(0o644)
    vdir = public_dir / "vassals"
    vdir.mkdir(mode=0o755)

    def start(*args: str):
        e = emperor(*args, directory=vdir, argv0=[SYSTEM_PYTHON],
                    env={"PYTHONPATH": str(Path(__file__).parent.parent)})
        return e, vdir, appdir
    return start


def test_tyrant_runs_each_vassal_as_its_file_owner(unprivileged, tyrant_user):
    e, vdir, appdir = unprivileged("--tyrant")
    port, refused_port = free_port(), free_port()
    good = vdir / "user.ini"
    good.write_text(vassal_ini(port, appdir))
    os.chown(good, tyrant_user.pw_uid, tyrant_user.pw_gid)
    assert body_when(port, timeout=15).endswith(f"pid={tyrant_user.pw_uid}")
    # a reload: the preflight (forked by the root emperor) imports the app as the owner too
    os.utime(good)
    assert body_when(port, lambda b: "gen=1" in b, timeout=15).endswith(f"pid={tyrant_user.pw_uid}")
    # root-owned and group-writable files are refused with a clear line
    (vdir / "rooty.ini").write_text(vassal_ini(refused_port, appdir))
    lax = vdir / "lax.ini"
    lax.write_text(vassal_ini(refused_port, appdir))
    os.chown(lax, tyrant_user.pw_uid, tyrant_user.pw_gid)
    lax.chmod(0o664)
    log = e.wait_log("lax.ini: new -> config error")
    log = e.wait_log("rooty.ini: new -> config error")
    assert "rooty.ini: owned by root; tyrant mode runs a vassal as its file's owner and never as root" in log
    assert "lax.ini: writable by group or others (mode 0664); tyrant mode refuses it" in log
    assert refuses(refused_port)
    # a new owner stops the vassal; root as the new owner keeps it stopped
    os.chown(good, 0, 0)
    e.wait_log("user.ini: running -> stopping (file owner changed)")
    e.wait_log("user.ini: stopping -> config error")
    wait_for(lambda: refuses(port))


def test_a_file_anyone_can_write_is_refused_until_it_is_fixed(emperor, appdir):
    e = emperor()
    port = free_port()
    path = e.dir / "open.ini"
    path.write_text(vassal_ini(port, appdir))
    path.chmod(0o666)
    log = e.wait_log("open.ini: new -> config error (invalid file; not started)")
    assert ("open.ini: writable by anyone (mode 0666); refused: whoever writes it would choose the code "
            "this emperor runs") in log
    assert refuses(port)
    path.chmod(0o644)
    assert body_when(port).startswith("open gen=0")
    # a running vassal whose file becomes writable by anyone keeps its generation, not the file's word
    path.chmod(0o646)
    e.wait_log("open.ini: running -> config error (invalid file; the running generation keeps serving)")
    assert http_get(port, expect=200).text.startswith("open gen=0")


def test_a_root_emperor_refuses_a_file_another_user_owns(emperor, appdir, tyrant_user):
    e = emperor()
    port = free_port()
    path = e.dir / "theirs.ini"
    path.write_text(vassal_ini(port, appdir))
    os.chown(path, tyrant_user.pw_uid, tyrant_user.pw_gid)
    log = e.wait_log("theirs.ini: new -> config error")
    assert (f"theirs.ini: owned by uid {tyrant_user.pw_uid} ({tyrant_user.pw_name}) while the emperor runs as "
            "root; refused: its owner would run code as root (chown it to root, or use --tyrant") in log
    assert refuses(port)
    os.chown(path, 0, 0)
    assert body_when(port).startswith("theirs gen=0")


def test_uid_and_gid_options_drop_privileges_for_master_preflight_and_workers(unprivileged, tyrant_user):
    # A root emperor without --tyrant: the file's own `uid`/`gid` decide, uWSGI's way.
    e, vdir, appdir = unprivileged()
    port = free_port()
    path = vdir / "app.ini"
    path.write_text(vassal_ini(port, appdir, f"uid = {tyrant_user.pw_name}\ngid = {tyrant_user.pw_gid}\n"))
    assert body_when(port, timeout=15).endswith(f"pid={tyrant_user.pw_uid}")
    os.utime(path)
    assert body_when(port, lambda b: "gen=1" in b, timeout=15).endswith(f"pid={tyrant_user.pw_uid}")
    assert "imported as root" not in e.log


def as_nobody(*args: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root and a Python that nobody can run")
    return subprocess.run([SYSTEM_PYTHON, "-m", "emperor", "run", *args], capture_output=True, text=True,
                          timeout=10, user=65534, group=65534, extra_groups=[], cwd="/",
                          env={"PYTHONPATH": str(Path(__file__).parent.parent), "PATH": "/usr/bin:/bin"})


def test_tyrant_needs_root(public_dir):
    r = as_nobody(str(public_dir), "--tyrant")
    assert r.returncode == 1 and r.stderr.strip() == \
        "emperor: --tyrant runs each vassal as its file's owner and needs root"


def test_unreadable_directory_exits_non_zero_with_one_line(public_dir):
    (public_dir / "private").mkdir(mode=0o700)
    r = as_nobody(str(public_dir / "private"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"emperor: vassals directory {public_dir / 'private'}: Permission denied"


# ---------- the state logic, driven without processes ----------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def driven(tmp_path, capfd):
    """An Emperor whose masters are fake PIDs and whose clock the test moves."""
    d = tmp_path / "vassals"
    d.mkdir()
    clock = Clock()
    pids = iter(range(5_000_000, 5_100_000))  # above any pid_max: signals to them do nothing
    launched: list[tuple[int, str, dict, int]] = []

    def launch(path, env, fd, uid, gid):
        pid = next(pids)
        launched.append((pid, path, env, os.dup(fd)))  # the master's end of the channel
        return pid

    e = emp.Emperor(str(d), clock=clock, launch=launch)
    e.clock_, e.launched, e.dir = clock, launched, d
    yield e
    for v in list(e.vassals.values()):
        e.masters.close_channel(v)
    for *_, fd in launched:
        os.close(fd)


def say(e, v, line: str) -> None:
    """What the vassal's master would say on its channel."""
    e.masters.on_message(v, *channel.parse(line))


def test_backoff_doubles_up_to_60s_and_resets_once_a_request_was_served(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    delays = []
    for _ in range(8):
        say(driven, v, "error app.ini: boom")
        driven.masters.on_exit(v.pid, 1)
        assert v.state is S.BACKOFF and v.last_error == "app.ini: boom"
        delays.append(v.retry_at - driven.clock_.now)
        assert driven.next_timeout() <= delays[-1]
        driven.clock_.now = v.retry_at
        driven.run_timers()
        assert v.state is S.STARTING
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]

    def retry_then(*messages: str) -> None:
        driven.clock_.now = v.retry_at
        driven.run_timers()
        for m in messages:
            say(driven, v, m)

    def crash(code: int = 1) -> float:
        driven.masters.on_exit(v.pid, code)
        return v.retry_at - driven.clock_.now

    # ready, then dead before serving anything: still a loop
    say(driven, v, "spawned")
    say(driven, v, "ready")
    assert v.state is S.RUNNING and v.backoff == 60
    assert crash() == 60
    # it served a request: the next crash is retried after 1 s
    retry_then("spawned", "ready", "loyal")
    assert v.backoff == 0
    assert crash(-9) == 1 and v.last_event == "killed by SIGKILL; retry in 1s"
    # a crash after a long calm (no request needed) is not a loop either
    for expected in (2, 4, 8):
        retry_then()
        assert crash() == expected
    retry_then("spawned", "ready")
    driven.clock_.now += 3600
    assert crash() == 1


def test_master_gets_its_channel_and_the_vassals_dir(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    pid, path, env, _ = driven.launched[0]
    assert path == str(driven.dir / "app.ini")
    assert env["EMPEROR_VASSALS_DIR"] == str(driven.dir) and env["EMPEROR_CHANNEL"].isdigit()
    assert "UWSGI_RELOADS" not in env


def test_rename_starts_the_new_name_after_the_old_master_left(driven, appdir):
    port = free_port()
    (driven.dir / "old.ini").write_text(vassal_ini(port, appdir))
    driven.apply(Changes(new=["old.ini"]))
    old = driven.vassals["old.ini"]
    os.rename(driven.dir / "old.ini", driven.dir / "new.ini")
    driven.apply(Changes(new=["new.ini"], deleted=["old.ini"]))
    new = driven.vassals["new.ini"]
    assert old.state is S.STOPPING and new.state is S.STARTING
    assert new.pid is None and new.waiting_for == {"old.ini"}
    driven.masters.on_exit(old.pid, 0)
    assert "old.ini" not in driven.vassals and new.pid is not None


def test_a_master_that_held_ports_wakes_the_vassals_backing_off_on_them(driven, appdir):
    port = free_port()
    for name in ("a.ini", "b.ini", "c.ini"):
        (driven.dir / name).write_text(vassal_ini(port, appdir))
    driven.apply(Changes(new=["a.ini"]))
    a = driven.vassals["a.ini"]
    say(driven, a, "spawned")                  # a bound the port
    driven.apply(Changes(new=["b.ini", "c.ini"]))
    b, c = driven.vassals["b.ini"], driven.vassals["c.ini"]
    driven.masters.on_exit(b.pid, 1)                         # could not bind
    driven.masters.on_exit(c.pid, 1)
    assert b.state is S.BACKOFF and c.state is S.BACKOFF  # a failure never restarts its peers: no ping-pong
    driven.masters.on_exit(a.pid, 1)                         # the holder left
    assert a.state is S.BACKOFF                      # itself: its own backoff
    assert b.state is S.STARTING and c.state is S.STARTING and b.pid and c.pid


def test_signals_are_dispatched_through_the_table(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    driven.masters.on_exit(v.pid, 1)
    assert v.state is S.BACKOFF
    driven.pending.append(signal.SIGURG)
    driven.dispatch_signals()
    assert v.state is S.STARTING and v.backoff == 0
    driven.pending.append(signal.SIGTERM)
    driven.dispatch_signals()
    assert v.state is S.STOPPING and driven.stopping == "graceful"
    assert v.kill_at == driven.clock_.now + 30
    driven.masters.on_exit(v.pid, 0)
    assert driven.vassals == {}


def test_shutdown_delay_keeps_serving_then_stops_gracefully(driven, appdir):
    driven.shutdown_delay = 2.0
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    say(driven, v, "spawned")
    say(driven, v, "ready")
    driven.on_graceful_shutdown("SIGTERM")
    assert v.state is S.RUNNING and driven.next_timeout() == 2.0
    driven.clock_.now += 2.0
    driven.run_timers()
    assert v.state is S.STOPPING and v.kill_at == driven.clock_.now + 30
    master_end = driven.launched[0][3]
    assert os.read(master_end, 100) == b"graceful stop\n"


def test_snapshot_is_plain_json(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    (driven.dir / "bad.ini").write_text("[uwsgi]\nprocesses = x\n")
    driven.apply(Changes(new=["app.ini", "bad.ini"]))
    snap = json.loads(json.dumps(driven.snapshot()))
    assert snap["vassals"]["app.ini"]["state"] == "starting"
    assert snap["vassals"]["bad.ini"]["state"] == "config error"
    assert snap["vassals"]["bad.ini"]["last_error"].startswith("bad.ini:2: processes:")
    assert set(snap["vassals"]["app.ini"]) >= {"name", "path", "state", "pid", "generation", "backoff",
                                               "last_event", "last_error", "errors"}
