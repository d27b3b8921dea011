"""The master FIFO (`master-fifo`), and `print` / `log-master` / `master-log`.

Reference: uWSGI's core/fifo.c and MasterFIFO.rst ("Available commands", "FIFO slots");
each test names the function or section it reproduces. Real masters; the tests wait
for log lines, not for time to pass.
"""
from __future__ import annotations

import errno
import http.client
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from support import HELLO_APP, SYSTEM_PYTHON, free_port, text_now, wait_for

SLOW_APP = """
import os, time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        open("slow.started", "w").close()
        time.sleep(1.5)
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Gen", os.environ.get("UWSGI_RELOADS", "0")),
                              ("X-Pid", str(os.getpid()))])
    return [b"ok"]
"""


def get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


def send(fifo: Path, text: str) -> None:
    """What `echo TEXT > FIFO` does, without ever blocking: ENXIO when nobody reads it."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def fifo_master(master, tmp_path: Path, body: str = "", app: str = HELLO_APP, n: int = 1):
    paths = [tmp_path / f"fifo{i}" for i in range(n)]
    m = master("".join(f"master-fifo = {p}\n" for p in paths) + body, app)
    m.fifos = paths
    return m


def test_the_fifo_is_the_masters_users_alone_and_r_reloads_gracefully(master, tmp_path):
    """core/fifo.c uwsgi_master_fifo: mkfifo(path, S_IRUSR|S_IWUSR); MasterFIFO.rst 'r' - graceful
    reload. The FIFO crosses the re-exec: the same one, still read by the new image."""
    m = fifo_master(master, tmp_path, "processes = 2\n", SLOW_APP)
    st = os.lstat(m.fifos[0])
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    send(m.fifos[0], "r\n")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert "master FIFO r: graceful reload" in m.log
    assert get(m.port)[1]["X-Gen"] == "1"
    assert os.lstat(m.fifos[0]).st_ino == st.st_ino
    send(m.fifos[0], "s")
    m.wait_log("statistics (SIGUSR1)")


def test_R_reloads_brutally_even_with_die_on_term(master, tmp_path):
    """MasterFIFO.rst: 'R' - send brutal reload (uWSGI's reap_them_all), whatever die-on-term
    makes of SIGTERM."""
    m = fifo_master(master, tmp_path, "die-on-term = true\n")
    pid = m.pid
    send(m.fifos[0], "R")
    m.wait_log("generation 1 loaded", timeout=20)
    assert "reloading (master FIFO R: brutal)" in m.log and m.popen.poll() is None
    m.wait_log("-> running (generation 1 ready)", timeout=20)
    assert m.pid == pid and get(m.port)[0] == 200


def test_q_stops_gracefully_and_removes_the_fifo(master, tmp_path):
    """MasterFIFO.rst: 'q' - gracefully shutdown the instance (a request in flight finishes);
    core/master_utils.c vacuum: the master FIFOs are removed at exit."""
    m = fifo_master(master, tmp_path, "", SLOW_APP)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(get(m.port, "/slow")[0]))
    t.start()
    wait_for((tmp_path / "slow.started").exists)
    send(m.fifos[0], "q")
    assert m.wait(20) == 0
    t.join(10)
    assert result == [200]
    assert "running -> stopping (master FIFO q" in m.log
    assert not os.path.lexists(m.fifos[0])


def test_Q_stops_at_once(master, tmp_path):
    """MasterFIFO.rst: 'Q' - brutally shutdown the instance (uWSGI's kill_them_all, our SIGINT)."""
    m = fifo_master(master, tmp_path)
    send(m.fifos[0], "Q")
    assert m.wait(10) == 0
    assert "running -> stopping (master FIFO Q)" in m.log and not os.path.lexists(m.fifos[0])


def test_p_pauses_and_resumes(master, tmp_path):
    """MasterFIFO.rst: 'p' - pause/resume the instance (uWSGI's suspend_resume_them_all, our SIGTSTP)."""
    m = fifo_master(master, tmp_path)
    send(m.fifos[0], "p")
    m.wait_log("running -> paused (master FIFO p)")
    send(m.fifos[0], "p")
    m.wait_log("paused -> running (master FIFO p)")
    assert get(m.port)[0] == 200


def test_w_replaces_every_worker_without_failing_a_request(master, tmp_path):
    """MasterFIFO.rst: 'w' - gracefully reload workers (core/master.c uwsgi_reload_workers): here
    a new generation of workers from the loaded code; the old ones leave once it accepts."""
    m = fifo_master(master, tmp_path, "processes = 2\n", SLOW_APP)
    before = set(children(m.pid))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(get(m.port)[0])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(statuses) > 20, timeout=10)
    send(m.fifos[0], "w")
    m.wait_log("workers reloaded", timeout=20)
    m.wait_log("generation 0 has left", timeout=20)
    n = len(statuses)
    wait_for(lambda: len(statuses) > n + 20, timeout=10)
    stop.set()
    for t in threads:
        t.join(10)
    assert set(statuses) == {200}
    after = set(children(m.pid))
    assert len(after) == 2 and not after & before
    assert "reloading" not in m.log   # the master itself was not reloaded


def test_w_with_lazy_apps_takes_new_code_and_keeps_the_old_workers_if_it_breaks(master, tmp_path):
    """'w' with lazy-apps: each new worker imports the app again (uWSGI's documented way to load
    new code without a full reload); new code that fails to import leaves the serving workers."""
    m = fifo_master(master, tmp_path, "processes = 2\nlazy-apps = true\n")
    app = tmp_path / "wsgiapp.py"
    app.write_text(HELLO_APP.replace("Hello, World!", "new code"))
    send(m.fifos[0], "w")
    m.wait_log("workers reloaded", timeout=20)
    assert get(m.port)[2] == b"new code"
    app.write_text("raise RuntimeError('broken at import')\n")
    send(m.fifos[0], "w")
    m.wait_log("workers reload failed", timeout=20)
    assert "broken at import" in m.log.split("workers reload failed")[1].splitlines()[0]
    for _ in range(5):
        assert get(m.port)[2] == b"new code"


def test_W_stops_every_worker_at_once_and_respawns_them(master, tmp_path):
    """MasterFIFO.rst: 'W' - brutally reload workers (core/master.c uwsgi_brutally_reload_workers)."""
    m = fifo_master(master, tmp_path, "processes = 2\n")
    before = set(children(m.pid))
    send(m.fifos[0], "W")
    m.wait_log("respawning", count=2)
    wait_for(lambda: len(children(m.pid)) == 2 and not set(children(m.pid)) & before)
    assert get(m.port)[0] == 200


def test_c_reloads_the_workers_one_at_a_time(master, tmp_path):
    """MasterFIFO.rst: 'c' - trigger chain reload (core/master_checks.c uwsgi_master_check_chain:
    the next worker goes once the previous one's replacement accepts)."""
    m = fifo_master(master, tmp_path, "processes = 3\n")
    before = set(children(m.pid))
    send(m.fifos[0], "c")
    log = m.wait_log("chain reload complete", timeout=20)
    chain = log[log.index("chain reload starting"):]
    assert [chain.index(f"worker {i} (pid") for i in (1, 2, 3)] == sorted(chain.index(f"worker {i} (pid")
                                                                          for i in (1, 2, 3))
    wait_for(lambda: len(children(m.pid)) == 3)
    assert not set(children(m.pid)) & before and get(m.port)[0] == 200


def test_plus_and_minus_drive_the_manual_cheaper_algorithm(master, tmp_path):
    """MasterFIFO.rst: '+' / '-' - increase / decrease the number of workers in cheaper mode
    (core/master_utils.c uwsgi_cheaper_increase/decrease; cheaper-algo manual)."""
    m = fifo_master(master, tmp_path, "processes = 3\ncheaper = 1\ncheaper-algo = manual\n")
    assert len(children(m.pid)) == 1
    send(m.fifos[0], "++")
    m.wait_log("master FIFO +: 2 -> 3 workers")
    wait_for(lambda: len(children(m.pid)) == 3)
    send(m.fifos[0], "+")
    m.wait_log("master FIFO +: already 3 workers")
    send(m.fifos[0], "---")
    m.wait_log("master FIFO -: 2 -> 1 workers")
    m.wait_log("master FIFO -: already at the minimum (1 workers: cheaper)")
    wait_for(lambda: len(children(m.pid)) == 1)
    assert get(m.port)[0] == 200


def test_plus_outside_cheaper_mode_says_so(master, tmp_path):
    """uWSGI applies the FIFO's delta only in its cheaper loop (core/master_utils.c)."""
    m = fifo_master(master, tmp_path)
    send(m.fifos[0], "+")
    m.wait_log("master FIFO +: not in cheaper mode")


def test_C_retires_every_worker_until_a_connection_comes(master, tmp_path):
    """MasterFIFO.rst: 'C' - set cheap mode (core/master_utils.c uwsgi_go_cheap)."""
    m = fifo_master(master, tmp_path, "processes = 2\n")
    send(m.fifos[0], "C")
    m.wait_log("cheap mode: the first connection starts the workers")
    wait_for(lambda: children(m.pid) == [])
    assert get(m.port)[0] == 200
    assert len(children(m.pid)) == 2


def test_a_digit_selects_another_fifo_once_the_current_one_is_read(master, tmp_path):
    """MasterFIFO.rst 'FIFO slots': '1' binds the second master-fifo; commands written with the
    digit are still read from the first (core/fifo.c switches when the writer is done); a reload
    keeps the choice while the file names that FIFO."""
    m = fifo_master(master, tmp_path, n=2)
    assert not os.path.lexists(m.fifos[1])
    send(m.fifos[0], "1s")
    m.wait_log(f"active master fifo is now {m.fifos[1]}")
    assert "statistics (SIGUSR1)" in m.log
    with pytest.raises(OSError) as e:
        send(m.fifos[0], "r")   # nobody reads the first one now
    assert e.value.errno == errno.ENXIO
    send(m.fifos[1], "7")
    m.wait_log("master FIFO 7: there is no master-fifo 7")
    send(m.fifos[1], "r")   # the choice outlives a reload
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    send(m.fifos[1], "Q")
    assert m.wait(10) == 0
    assert not os.path.lexists(m.fifos[0]) and not os.path.lexists(m.fifos[1])


def test_P_writes_the_pidfile_again(master, tmp_path):
    """MasterFIFO.rst: 'P' - update pidfiles (core/uwsgi.c uwsgi_update_pidfiles)."""
    pidfile = tmp_path / "app.pid"
    m = fifo_master(master, tmp_path, f"pidfile = {pidfile}\n")
    wait_for(pidfile.exists)
    pidfile.unlink()
    send(m.fifos[0], "P")
    m.wait_log("pidfiles written")
    assert pidfile.read_text().strip() == str(m.pid)


def test_l_reopens_and_L_rotates_the_log_file(master, tmp_path):
    """MasterFIFO.rst: 'l' reopens the log file (needs log-master in uWSGI), 'L' triggers its
    rotation; here as touch-logreopen and touch-logrotate do (emperor/master/logfiles.py)."""
    logfile = tmp_path / "app.log"
    fifo = tmp_path / "fifo0"
    master(f"master-fifo = {fifo}\nlogto = {logfile}\nlog-backupname = {tmp_path}/app.log.old\n", HELLO_APP,
           wait=False)
    wait_for(lambda: "running (workers ready)" in text_now(logfile), 20)
    logfile.rename(tmp_path / "moved.log")
    send(fifo, "l")
    wait_for(lambda: "log file reopened (master FIFO l)" in text_now(logfile))
    send(fifo, "L")
    wait_for(lambda: (tmp_path / "app.log.old").exists() and "rotated to" in text_now(logfile))
    assert "master FIFO l" in (tmp_path / "app.log.old").read_text()


def test_commands_emperor_does_not_have_are_named_in_the_log(master, tmp_path):
    """MasterFIFO.rst lists B, f, S; core/fifo.c ignores a byte it has no command for."""
    m = fifo_master(master, tmp_path)
    send(m.fifos[0], "BfS\nx")
    m.wait_log("master FIFO 'x': unknown command; ignored")
    for cmd in "BfS":
        assert f"master FIFO {cmd}: not supported:" in m.log
    send(m.fifos[0], "l")
    m.wait_log("master FIFO l: this master has no log file")
    send(m.fifos[0], "E")
    m.wait_log("master FIFO E: this master has no emperor to rescan")
    assert get(m.port)[0] == 200


def test_a_planted_symlink_is_refused_and_its_target_left_untouched(master, tmp_path):
    """core/fifo.c unlinks whatever is at the path and makes the FIFO; here a symlink there (to a
    file the master's user could write) is refused with one line, never followed."""
    target = tmp_path / "precious.txt"
    target.write_text("do not touch\n")
    target.chmod(0o644)
    before = os.stat(target)
    link = tmp_path / "fifo0"
    link.symlink_to(target)
    m = master(f"master-fifo = {link}\n", HELLO_APP)
    assert f"master-fifo {link}: refused: it is a symlink (never followed)" in m.log
    assert get(m.port)[0] == 200
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    after = os.stat(target)
    assert target.read_text() == "do not touch\n" and os.readlink(link) == str(target)
    assert (after.st_mode, after.st_mtime_ns, after.st_ino) == (before.st_mode, before.st_mtime_ns, before.st_ino)


def test_a_regular_file_at_the_path_is_refused_and_kept(master, tmp_path):
    """Only a FIFO of the master's user is taken over; anything else stays as it is."""
    path = tmp_path / "fifo0"
    path.write_text("a file\n")
    m = master(f"master-fifo = {path}\n", HELLO_APP)
    assert f"master-fifo {path}: refused: something else than a FIFO is there" in m.log
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert path.read_text() == "a file\n"


def test_an_edit_that_renames_the_fifo_moves_it_on_reload(master, tmp_path):
    """The next image learns the paths the previous one made: one the file no longer names goes."""
    m = fifo_master(master, tmp_path)
    new = tmp_path / "renamed.fifo"
    m.ini.write_text(m.ini.read_text().replace(str(m.fifos[0]), str(new)))
    send(m.fifos[0], "r")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert not os.path.lexists(m.fifos[0]) and stat.S_ISFIFO(os.lstat(new).st_mode)
    send(new, "s")
    m.wait_log("statistics (SIGUSR1)")


# ---------- print, log-master, master-log ----------

def test_print_logs_its_text_at_start_up_and_on_each_reload(master, tmp_path):
    """core/uwsgi.c uwsgi_opt_print: `print` writes its value while the options are read, which
    uWSGI does again in every re-executed image."""
    m = master("print = hello from the file\nprint = second line\n", HELLO_APP)
    assert m.log.count("hello from the file") == 1 and "second line" in m.log
    m.signal(signal.SIGHUP)
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert m.log.count("hello from the file") == 2


def test_log_master_is_accepted_and_master_log_is_not_a_uwsgi_option(master):
    """core/uwsgi.c: "log-master" (delegate logging to the master) exists; "master-log" does not
    (only uwsgi_master_log(), the function reading the log pipe, has that name)."""
    m = master("log-master = true\nmaster-log = true\n", HELLO_APP)
    assert '"log-master"' not in m.log
    assert 'unknown option "master-log"' in m.log


def test_under_an_emperor_E_asks_for_a_rescan_and_the_fifo_goes_with_the_vassal(procs, tmp_path):
    """core/fifo.c emperor_rescan: 'E' sends SIGWINCH to the emperor (ours rescans on it); the
    master, forked by the emperor and ended by it, removes its FIFO as it stops."""
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    (tmp_path / "wsgiapp.py").write_text(HELLO_APP)
    port = free_port()
    fifo = tmp_path / "app.fifo"
    (vassals / "app.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\n"
                                     f"module = wsgiapp\nmaster-fifo = {fifo}\n")
    e = procs([sys.executable, "-m", "emperor", "run", str(vassals)], tmp_path)
    e.wait_log("running (workers ready)", timeout=20)
    send(fifo, "E")
    e.wait_log("SIGWINCH: rescanning")
    (vassals / "app.ini").unlink()
    wait_for(lambda: not os.path.lexists(fifo))


def test_the_fifo_is_made_after_the_privilege_drop(procs):
    """core/master.c creates the FIFO in master_loop, after core/uwsgi.c's uwsgi_as_root: it is
    the user's the master runs as (`uid`/`gid`), not root's."""
    if os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root and a Python that nobody can run")
    d = Path(tempfile.mkdtemp(prefix="emperor-fifo-"))
    try:
        d.chmod(0o755)
        run = d / "run"
        run.mkdir()
        os.chown(run, 65534, 65534)
        (d / "wsgiapp.py").write_text(HELLO_APP)
        port = free_port()
        ini = d / "app.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {d}\nmodule = wsgiapp\n"
                       f"uid = 65534\ngid = 65534\nmaster-fifo = {run / 'app.fifo'}\n")
        m = procs([SYSTEM_PYTHON, "-m", "emperor", "master", str(ini)], d)
        m.wait_log("running (workers ready)", timeout=20)
        st = os.lstat(run / "app.fifo")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
        send(run / "app.fifo", "Q")
        assert m.wait(10) == 0 and not os.path.lexists(run / "app.fifo")
    finally:
        shutil.rmtree(d, ignore_errors=True)
