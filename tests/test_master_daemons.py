"""Attached daemons (uWSGI's attach-daemon family) with real masters, emperors and processes.

The daemons are small Python scripts that note what happens to them in a file (started,
which signal came), so each test waits for those notes or the master's log lines, never for
a fixed time. Every process is started through the `procs` fixture and killed by PID at
teardown; processes a test made (a daemon's tree) are killed by PID in `finally` too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import HELLO_APP, ROOT, descendants, free_port, read_stats, wait_for
from emperor.config import ConfigError, load_config
from emperor.master.daemons import MAX_DAEMONS, Daemons
from emperor.master.loop import Loop
from emperor.wire.handoff import HandOff

pytestmark = pytest.mark.timeout(40)
PY = sys.executable

# A daemon: notes its start and the signals it gets in NOTES; exits on SIGTERM/SIGINT, not on
# SIGUSR1. With --tree it forks a child (in its group) and a daemon of its own (double fork,
# new session), as real services do.
DAEMON = r"""
import os, signal, sys
notes = sys.argv[1]
def note(text):
    with open(notes, "a") as f:
        f.write(text + "\n")
def on(sig, frame):
    note(f"{signal.Signals(sig).name} {os.getpid()}")
    if sig != signal.SIGUSR1:
        sys.exit(0)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
    signal.signal(s, on)
if "--tree" in sys.argv:
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "1000"])
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "1001"])
        os._exit(0)
note(f"start {os.getpid()}")
while True:
    signal.pause()
"""

# A daemon that daemonizes itself and writes its pidfile (memcached -d -P FILE, celery --pidfile).
SMART = r"""
import os, signal, sys, time
pidfile, notes = sys.argv[1], sys.argv[2]
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
def on(sig, frame):
    with open(notes, "a") as f:
        f.write(f"{signal.Signals(sig).name} {os.getpid()}\n")
    if sig == signal.SIGTERM:
        os.unlink(pidfile)
        os._exit(0)
signal.signal(signal.SIGTERM, on)
signal.signal(signal.SIGHUP, on)
with open(notes, "a") as f:
    f.write(f"start {os.getpid()}\n")
with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(pidfile + ".tmp", pidfile)
while True:
    signal.pause()
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def notes(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def started(path: Path, count: int = 1, timeout: float = 10.0) -> list[int]:
    """The PIDs of the first `count` starts noted in `path`, once there are that many."""
    wait_for(lambda: len([n for n in notes(path) if n.startswith("start ")]) >= count, timeout)
    return [int(n.split()[1]) for n in notes(path) if n.startswith("start ")]


@pytest.fixture
def scripts(tmp_path):
    (tmp_path / "daemon.py").write_text(DAEMON)
    (tmp_path / "smart.py").write_text(SMART)
    return tmp_path


@pytest.fixture
def reaper():
    """kill(pid) for every PID a test noted, at teardown: a failing test leaves nothing behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def daemon(tmp: Path, name: str, *flags: str) -> str:
    """The command line of a DAEMON noting in tmp/NAME (`exec`: the shell becomes it, one PID)."""
    return f"exec {PY} {tmp / 'daemon.py'} {tmp / name} {' '.join(flags)}".rstrip()


# ---------- start, stop, restart ----------
def test_a_daemon_starts_with_the_master_and_gets_its_stop_signal_when_the_vassal_stops(master, scripts, reaper):
    """AttachingDaemons.rst: attach-daemon's processes are "directly attached ... When the master
    dies or is reloaded these processes are destroyed"; core/daemons.c uwsgi_detach_daemons:
    kill(-pid, stop_signal) to the daemon's group (SIGTERM unless stopsignal= says), SIGKILL
    after the mercy. Here: its whole tree goes, the child that made its own session included."""
    m = master(f"attach-daemon = {daemon(scripts, 'a', '--tree')}\n", app=HELLO_APP)
    pid = started(scripts / "a")[0]
    m.wait_log(f"started (pid {pid})")
    tree = wait_for(lambda: (d := descendants(m.pid)) and len(d) >= 5 and d)   # keeper, daemon, 2 sleeps, worker
    reaper.extend(tree)
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert f"SIGTERM {pid}" in notes(scripts / "a")
    assert f"(pid {pid}) stopping with the vassal: SIGTERM" in m.log and f"(pid {pid}) exited 0: stopped" in m.log
    wait_for(lambda: not any(alive(p) for p in tree), 5)


def test_a_daemon_that_dies_is_restarted_after_1_2_4_seconds_and_status_shows_it(master, tmp_path):
    """core/daemons.c uwsgi_daemon_check_pid_reload respawns a dead daemon, throttled
    (`max_throttle` caps it); here the backoff is the emperor's, 1, 2, 4 ... 60 s, a deadline of
    the master's loop, and the stats document's `daemons` shows state, restarts and backoff."""
    port = free_port()
    m = master(f"stats = 127.0.0.1:{port}\nattach-daemon = exit 3\nattach-daemon2 = cmd=exit 4,max_throttle=2\n",
               app=HELLO_APP)
    m.wait_log("exited 3 after", count=3, timeout=15)
    m.wait_log("exited 4 after", count=3, timeout=5)
    log = m.log
    for wait in (1, 2, 4):
        assert 'daemon "exit 3" (pid ' in log and "exited 3 after" in log and f"restarting in {wait}s" in log
    assert [line.rsplit("restarting in ", 1)[1] for line in log.splitlines() if "exited 4 after" in line][:3] \
        == ["1s", "2s", "2s"]
    assert 'daemon "exit 3" restarted (restart 2)' in log
    by_command = {d["command"]: d for d in read_stats(port)["daemons"]}
    assert by_command["exit 3"]["state"] == "backoff" and by_command["exit 3"]["backoff"] == 4
    assert by_command["exit 3"]["restarts"] == 2 and by_command["exit 3"]["pid"] == 0


def test_a_touched_file_restarts_the_daemon_with_its_stop_signal(master, scripts):
    """attach-daemon2's touch= (AttachingDaemons.rst; core/master.c: "has been touched...
    reloading daemon", kill(-pid, stop_signal)); stopsignal= by number or name."""
    trigger = scripts / "trigger"
    m = master(f"attach-daemon2 = cmd={daemon(scripts, 'a')},stopsignal=2,touch={trigger}\n", app=HELLO_APP)
    first = started(scripts / "a")[0]
    m.wait_log(f"started (pid {first})")
    trigger.touch()
    second = started(scripts / "a", 2)[1]
    assert f"SIGINT {first}" in notes(scripts / "a") and not alive(first)
    assert "touched: restarting it: SIGINT" in m.log and f"restarted (restart 1) (pid {second})" in m.log
    assert "restarting in" not in m.log   # asked for: no backoff


def test_a_control_daemon_that_dies_stops_the_vassal(master):
    """attach-control-daemon (core/uwsgi.c: "when the daemon dies, the master dies too";
    core/daemons.c: gracefully_kill_them_all)."""
    m = master("attach-control-daemon = sleep 0.3\n", app=HELLO_APP)
    assert m.wait(10) == 0
    assert 'daemon "sleep 0.3"' in m.log and "it is a control daemon, the vassal stops" in m.log
    assert "running -> stopping (control daemon" in m.log


def test_a_daemon_runs_with_the_vassal_env_in_its_chdir_as_its_uid(master):
    """attach-daemon2's chdir= and uid=/gid= (daemons.c daemon_spawn: chdir, setgid, setuid
    before the exec; uid needs a root master); the vassal's env lines reach the command as
    they reach uWSGI's (it putenv()s them in the master); stdin is /dev/null unless stdin=1;
    the output goes to the vassal's log. (`$(...)` is the file's environment syntax:
    backticks substitute a command.)"""
    root = os.getuid() == 0
    who = ",uid=nobody,gid=nogroup" if root else ""
    m = master("env = GREETING=hello\nattach-daemon2 = cmd=echo said $GREETING `pwd` `id -u` "
               f"`readlink /proc/self/fd/0`; exec sleep 1000,chdir=/tmp{who}\n", app=HELLO_APP)
    m.wait_log("\nsaid hello")
    line = next(l for l in m.log.splitlines() if l.startswith("said "))
    assert line.split() == ["said", "hello", "/tmp", str(65534 if root else os.getuid()), "/dev/null"]


# ---------- reloads ----------
def test_a_reload_keeps_an_unchanged_daemon_and_replaces_a_changed_one(master, scripts):
    """uWSGI stops dumb daemons on every reload and starts them again (core/master_utils.c
    uwsgi_destroy_processes -> uwsgi_detach_daemons, with reloadsignal= instead of the stop
    signal). Here a graceful reload (SIGHUP) or a brutal one (SIGTERM) keeps a daemon whose
    line is unchanged running, same PID (it crosses the re-exec: emperor/wire/handoff.py
    DAEMONS), and sends it its reloadsignal; a changed line's daemon is stopped first, and
    the new one starts once it has left."""
    keep = daemon(scripts, "kept")
    m = master(f"attach-daemon2 = cmd={keep},reloadsignal=USR1\nattach-daemon = {daemon(scripts, 'old')}\n",
               app=HELLO_APP)
    kept, old = started(scripts / "kept")[0], started(scripts / "old")[0]
    m.signal(signal.SIGHUP)
    m.wait_log("generation 1 ready", timeout=15)
    assert f"kept across the reload (pid {kept}); SIGUSR1 sent (reloadsignal)" in m.log
    wait_for(lambda: f"SIGUSR1 {kept}" in notes(scripts / "kept"))
    assert started(scripts / "old") == [old] and alive(old)

    m.ini.write_text(m.ini.read_text().replace("/old", "/new"))
    m.signal(signal.SIGHUP)
    new = started(scripts / "new", timeout=15)[0]
    assert f"SIGTERM {old}" in notes(scripts / "old") and not alive(old)
    log = m.log
    assert log.index(f"(pid {old}) exited 0: it is not in the new config") < log.index(f"started (pid {new})")
    assert started(scripts / "kept") == [kept]

    m.signal(signal.SIGTERM)                   # brutal reload: workers killed, daemons kept
    m.wait_log("generation 3 ready", timeout=15)
    assert started(scripts / "kept") == [kept] and started(scripts / "new") == [new]
    assert alive(kept) and alive(new)
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert not alive(kept) and not alive(new)


# ---------- nothing outlives its vassal ----------
def test_sigkill_of_the_master_leaves_nothing_of_its_daemons(master, scripts, reaper):
    """A master killed by SIGKILL runs no code: each daemon's keeper gets its parent-death
    signal (PR_SET_PDEATHSIG) and SIGKILLs all it holds, the child that double-forked into a
    session of its own included (it was reparented to the keeper, a child subreaper)."""
    m = master(f"attach-daemon = {daemon(scripts, 'a', '--tree')}\n"
               f"smart-attach-daemon = {scripts / 's.pid'} {PY} {scripts / 'smart.py'} {scripts / 's.pid'} "
               f"{scripts / 's'}\n", app=HELLO_APP)
    started(scripts / "a")
    smart = started(scripts / "s")[0]
    tree = wait_for(lambda: (d := descendants(m.pid)) and len(d) >= 7 and d)
    reaper.extend(tree)
    assert smart in tree
    m.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in tree), 5)


@pytest.fixture
def emperor(tmp_path, procs):
    def start():
        d = tmp_path / "vassals"
        d.mkdir(exist_ok=True)
        p = procs([PY, "-m", "emperor", "run", str(d), "--grace", "5"], tmp_path, log=tmp_path / "emperor.log")
        p.wait_log("[emperor] watching")
        p.dir = d
        return p
    return start


def test_under_the_emperor_sigkill_of_the_master_or_the_emperor_leaves_nothing(emperor, scripts, reaper):
    """The emperor kills a dead master's process group and starts the vassal again; the
    keepers are in sessions of their own, so they act on their own parent-death signal. A
    SIGKILLed emperor takes its masters along (theirs), and so their daemons. `emperor status
    NAME` shows the daemon."""
    e = emperor()
    (scripts / "wsgiapp.py").write_text(HELLO_APP)
    port = free_port()
    (e.dir / "app.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {scripts}\n"
                                   f"module = wsgiapp:application\nattach-daemon = {daemon(scripts, 'a', '--tree')}\n")
    first = started(scripts / "a", timeout=15)[0]
    out = wait_for(lambda: (r := subprocess.run(
        [PY, "-m", "emperor", "status", "app.ini", "--once", "--directory", str(e.dir)], cwd=scripts,
        capture_output=True, text=True, timeout=10, env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"))
        ).returncode == 0 and f"{first}" in r.stdout and r.stdout, 10)
    line = next(l for l in out.splitlines() if l.startswith("daemon"))
    assert f"{first}" in line and "running" in line and "restarts 0" in line and line.endswith("/a --tree")

    master_pid = next(p for p in descendants(e.pid) if first in descendants(p))
    tree = [p for p in descendants(master_pid)]
    reaper.extend(tree)
    os.kill(master_pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in tree), 5)
    second = started(scripts / "a", 2, timeout=15)[1]           # the emperor started the vassal again
    tree = wait_for(lambda: (d := descendants(e.pid)) and len(d) >= 6 and second in d and d)
    reaper.extend(tree)
    e.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in tree), 5)


# ---------- pidfile daemons ----------
def test_a_smart_daemon_is_watched_through_its_pidfile_kept_across_reloads_stopped_with_the_vassal(
        master, scripts, reaper):
    """smart-attach-daemon = PIDFILE COMMAND (AttachingDaemons.rst: "pidfile governed", the
    command daemonizes). Its PID is the pidfile's; a reload does not start it again (uWSGI: it
    "survives ... reload"); unlike uWSGI, where it also survives the stop, the vassal's stop
    gives it its stop signal: no daemon outlives its vassal."""
    port = free_port()
    pidfile = scripts / "s.pid"
    m = master(f"stats = 127.0.0.1:{port}\n"
               f"smart-attach-daemon = {pidfile} {PY} {scripts / 'smart.py'} {pidfile} {scripts / 's'}\n",
               app=HELLO_APP)
    pid = started(scripts / "s")[0]
    reaper.append(pid)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(pid))
    wait_for(lambda: read_stats(port)["daemons"][0]["pid"] == pid)
    assert "restarting in" not in m.log   # its first process forked away and exited: not a death
    m.signal(signal.SIGHUP)
    m.wait_log("generation 1 ready", timeout=15)
    assert f"kept across the reload (pid {pid})" in m.log and started(scripts / "s") == [pid]
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert f"SIGTERM {pid}" in notes(scripts / "s") and not alive(pid) and not pidfile.exists()


def test_a_smart_daemon_found_running_from_its_pidfile_is_adopted_not_started_twice(master, scripts, procs):
    """core/daemons.c uwsgi_daemons_spawn_all: "found valid/active pidfile" -> not spawned;
    watched (here through a pidfd, no polling) and started once it is gone."""
    pidfile = scripts / "s.pid"
    other = subprocess.Popen(["sleep", "1000"])
    try:
        pidfile.write_text(f"{other.pid}\n")
        marker = scripts / "spawned"
        m = master(f"smart-attach-daemon = {pidfile} touch {marker}; exec sleep 1001\n", app=HELLO_APP)
        m.wait_log(f"found running from its pidfile {pidfile} (pid {other.pid}): adopted")
        assert not marker.exists()
        other.kill()
        other.wait()
        m.wait_log(f"(pid {other.pid}) ended after")
        wait_for(marker.exists, 5)
        assert "restarting in 1s" in m.log
    finally:
        other.kill()
        other.wait()


def test_smart_attach_daemon2_writes_the_pidfile_for_a_foreground_command_and_removes_it(master, scripts, reaper):
    """smart-attach-daemon2 (daemons.c: daemonize=1, uwsgi_write_pidfile in the daemon): the
    command stays in the foreground and the pidfile names it; here it stays in the vassal's
    tree rather than being reforked away, and the pidfile goes with it."""
    pidfile = scripts / "f.pid"
    m = master(f"smart-attach-daemon2 = {pidfile} exec sleep 1002\n", app=HELLO_APP)
    pid = wait_for(lambda: pidfile.exists() and int(pidfile.read_text()))
    reaper.append(pid)
    wait_for(lambda: "1002" in Path(f"/proc/{pid}/cmdline").read_text())   # written just before its execve
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert not alive(pid) and not pidfile.exists()


# ---------- the options ----------
@pytest.mark.parametrize("line,message", [
    ("attach-daemon2 = pidfile=/tmp/x", 'a "cmd" key is required'),
    ("attach-daemon2 = cmd=x,stopsignal=64", "reserved by emperor"),
    ("attach-daemon2 = cmd=x,stop-signal=2", 'unknown key "stop-signal"'),
    ("attach-daemon2 = cmd=x,ns_pid=1", '"ns_pid" is not supported'),
    ("attach-daemon2 = cmd=x,max_throttle=99999", "max_throttle: must be between 1 and 3600"),
    ("smart-attach-daemon = /tmp/only-a-pidfile", "expected PIDFILE[,FREQ] COMMAND"),
    ("attach-daemon = ", "expected a command"),
])
def test_a_bad_daemon_line_is_a_config_error_with_its_line(tmp_path, line, message):
    """uWSGI exits on "invalid --attach-daemon2 keyval syntax" (core/daemons.c); here the vassal
    says where: file, line, option."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = :8000\nmodule = x\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(ini))
    assert str(e.value).startswith(f"app.ini:4: {line.split(' =')[0]}: ") and message in str(e.value)


def test_attach_daemon2_keys_and_escapes_read_as_uwsgi_reads_them(tmp_path):
    """core/utils.c uwsgi_kvlist_parse: items split on unescaped `,`, a backslash escapes; the
    key aliases of uwsgi_opt_add_daemon2 (command/cmd/exec, stop_signal, daemon...)."""
    from emperor.attached import parse_daemon

    d = parse_daemon("attach-daemon2", r"exec=echo a\,b,stop_signal=QUIT,daemon=1,pidfile=/tmp/p,touch=/a;/b,uid=33")
    assert (d.command, d.stop_signal, d.daemonize, d.pidfile, d.touch, d.uid) == \
        ("echo a,b", signal.SIGQUIT, True, "/tmp/p", ("/a", "/b"), "33")
    d = parse_daemon("smart-attach-daemon", "/tmp/mongo1.pid,5 mongod --pidfilepath /tmp/mongo1.pid")
    assert (d.pidfile, d.freq, d.command, d.daemonize) == ("/tmp/mongo1.pid", 5, "mongod --pidfilepath /tmp/mongo1.pid",
                                                           False)


def test_the_number_of_daemons_is_bounded(tmp_path):
    """Everything a config can ask is bounded: at most MAX_DAEMONS per vassal (checked before
    anything is started, and by a reload's preflight)."""
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :8000\nmodule = x\n" + "attach-daemon = true\n" * (MAX_DAEMONS + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_DAEMONS}"):
        Daemons(load_config(str(ini)), HandOff(), Loop(), on_control=lambda why: None)


@pytest.mark.timeout(10)
def test_a_fifo_where_a_pidfile_should_be_never_stops_the_master(tmp_path):
    """attach-daemon2's pidfile= is read by the master's loop (uWSGI's uwsgi_check_pidfile),
    and its own pidfile is read before removal: both open without blocking, so a FIFO put
    in their place reads as no PID instead of waiting for a writer."""
    from emperor.master import pidfile
    from emperor.master.daemons import read_pidfile

    fifo = tmp_path / "daemon.pid"
    os.mkfifo(fifo)
    assert read_pidfile(str(fifo)) == 0
    pidfile.remove(str(fifo), os.getpid())
    assert fifo.exists()                 # not ours: left alone
    (tmp_path / "mine.pid").write_text(f"{os.getpid()}\n")
    pidfile.remove(str(tmp_path / "mine.pid"), os.getpid())
    assert not (tmp_path / "mine.pid").exists()
