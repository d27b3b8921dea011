"""Log files, process names and hooks as uWSGI defines them (Logging, Hooks docs; core/hooks.c)."""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spoolsupport import SERVERS, UWSGI, get as get_body, start as start_server, write_ini
from support import worker_pids
from support import APPS, ROOT, SYSTEM_PYTHON, free_port, text_now, wait_for, wait_port

pytestmark = pytest.mark.timeout(60)


def start(procs, tmp_path: Path, body: str, wait: bool = True):
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n{body}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path, log=tmp_path / "console.log")
    m.port, m.ini = port, ini
    if wait:
        wait_for(lambda: "running (workers ready)" in _all_logs(tmp_path), timeout=20)
    return m


def _all_logs(d: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in d.glob("*.log*") if p.is_file())


def get(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split()[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


# ---------- hooks ----------
def test_hooks_run_in_their_phases_in_order(procs, tmp_path):
    trace = tmp_path / "trace"
    made = tmp_path / "made"
    start(procs, tmp_path, f"""hook-as-root = exec:echo as-root >> {trace}
hook-as-user = exec:echo as-user >> {trace}
exec-pre-app = echo pre-app >> {trace}
hook-pre-app = mkdir:{made}
hook-post-app = write:{made}/post-app written
hook-master-start = exec:echo master-start >> {trace}
hook-as-user-atexit = exec:echo atexit >> {trace}
hook-as-root = mount:proc none /proc
""")
    lines = trace.read_text().split()
    assert lines == ["as-root", "as-user", "pre-app", "master-start"]
    assert (made / "post-app").read_text() == "written"
    log = (tmp_path / "console.log").read_text()
    assert 'hook-as-root: action "mount" is not supported by emperor' in log


def test_accepting_hooks_run_in_the_workers(procs, tmp_path):
    """core/uwsgi.c uwsgi_worker_run: hook-accepting in every worker, hook-accepting1 in worker 1,
    the -once forms only at a worker's first start (respawn_count == 1 there, 0 here)."""
    trace = tmp_path / "trace"
    m = start(procs, tmp_path, f"""processes = 2
hook-accepting = exec:echo accepting >> {trace}
hook-accepting1 = exec:echo accepting1 >> {trace}
hook-accepting-once = exec:echo once >> {trace}
hook-accepting1-once = exec:echo one-once >> {trace}
""")
    wait_for(lambda: trace.exists() and len(trace.read_text().split()) == 6, timeout=20)
    assert sorted(trace.read_text().split()) == sorted(["accepting", "accepting", "once", "once", "accepting1", "one-once"])
    os.kill(min(worker_pids(m.pid)), signal.SIGKILL)   # a respawn: no -once hook again
    wait_for(lambda: len(trace.read_text().split()) >= 7, timeout=20)
    assert get(m.port) == 200
    assert trace.read_text().split()[6:] in (["accepting"], ["accepting", "accepting1"])


def test_a_failing_hook_stops_the_start_with_one_line(procs, tmp_path):
    m = start(procs, tmp_path, "hook-pre-app = exec:exit 3\n", wait=False)
    assert m.wait(20) == 1
    log = (tmp_path / "console.log").read_text()
    assert "hook-pre-app exec:exit 3: exited 3" in log and "Traceback" not in log


def test_unix_signal_hook_makes_sigterm_a_graceful_stop(procs, tmp_path):
    """`hook-master-start = unix_signal:15 gracefully_kill_them_all`, the usual container idiom
    (core/hooks.c uwsgi_hook_unix_signal points the signal at core/uwsgi.c's function of that
    name): SIGTERM stops gracefully, an in-flight request finishes, the master exits 0, where
    it would otherwise reload brutally (uWSGI 2.0's SIGTERM)."""
    import threading

    gate = tmp_path / "gate"
    gate.mkdir()
    m = start(procs, tmp_path, f"env = GATE_DIR={gate}\nhook-master-start = unix_signal:15 gracefully_kill_them_all\n"
                               "hook-master-start = unix_signal:15 no_such_function\n")
    got: list[bytes] = []

    def held() -> None:
        with socket.create_connection(("127.0.0.1", m.port), timeout=20) as s:
            s.sendall(b"GET /hold?id=t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            while chunk := s.recv(65536):
                got.append(chunk)

    t = threading.Thread(target=held)
    t.start()
    wait_for(lambda: (gate / "t.started").exists(), timeout=20)
    m.signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM" in _all_logs(tmp_path) and "stopping" in _all_logs(tmp_path), timeout=20)
    (gate / "t.release").touch()
    t.join(20)
    assert b"".join(got).startswith(b"HTTP/1.1 200")
    assert m.wait(20) == 0
    log = _all_logs(tmp_path)
    assert "signal 15 (gracefully_kill_them_all): graceful stop" in log
    assert "unix_signal:15 no_such_function: expected" in log and "brutal" not in log


@pytest.mark.skipif(os.geteuid() != 0, reason="raising the descriptor limit needs root (as in uWSGI)")
def test_max_fd_sets_the_descriptor_limit_of_the_master_and_its_workers(procs, tmp_path):
    """core/uwsgi.c: requested_max_fd -> setrlimit(RLIMIT_NOFILE) before anything else."""
    m = start(procs, tmp_path, "max-fd = 4321\nprocesses = 1\n")

    def limit(pid: int) -> str:
        line = next(l for l in Path(f"/proc/{pid}/limits").read_text().splitlines() if l.startswith("Max open files"))
        return " ".join(line.split()[3:5])

    assert limit(m.pid) == "4321 4321"
    assert [limit(p) for p in worker_pids(m.pid)] == ["4321 4321"]


# ---------- log files ----------
def test_log_maxsize_rotates_for_the_master_and_its_workers(procs, tmp_path):
    logfile = tmp_path / "app.log"
    m = start(procs, tmp_path, f"logto = {logfile}\nlog-maxsize = 3000\nlog-backupname = {tmp_path}/app.log.old\n"
                               "logfile-chmod = 600\nprocesses = 2\n")
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o600
    for _ in range(60):
        assert get(m.port) == 200
    wait_for(lambda: (tmp_path / "app.log.old").exists(), timeout=10)
    wait_for(lambda: "log file reopened (rotated to" in text_now(logfile), timeout=10)
    before = text_now(logfile).count(" GET / => 200")
    for _ in range(4):
        assert get(m.port) == 200
    wait_for(lambda: text_now(logfile).count(" GET / => 200") >= before + 4, timeout=10)  # workers write here too


def test_a_log_file_without_log_maxsize_is_never_rotated(procs, tmp_path):
    """Regression: the size check ran whenever any part's timer came (here idle's), and with
    no log-maxsize (0) every file was 'over' it: a rotation a second."""
    logfile = tmp_path / "app.log"
    start(procs, tmp_path, f"logto = {logfile}\nidle = 1\n")
    wait_for(lambda: "(idle)" in logfile.read_text(), timeout=20)
    assert sorted(p.name for p in tmp_path.glob("app.log*")) == ["app.log"]
    assert "rotated" not in logfile.read_text()


def test_touch_logreopen_opens_the_path_again(procs, tmp_path):
    logfile = tmp_path / "app.log"
    trigger = tmp_path / "reopen"
    m = start(procs, tmp_path, f"logto = {logfile}\ntouch-logreopen = {trigger}\n")
    logfile.rename(tmp_path / "moved.log")        # what logrotate does
    trigger.touch()
    wait_for(lambda: logfile.exists() and "log file reopened (touch-logreopen)" in logfile.read_text(), timeout=10)
    assert get(m.port) == 200
    wait_for(lambda: " GET / => 200" in logfile.read_text(), timeout=10)


def test_daemonize_is_the_log_target_and_the_master_stays(procs, tmp_path):
    logfile = tmp_path / "daemon.log"
    m = start(procs, tmp_path, f"daemonize = {logfile}\n")
    assert m.popen.poll() is None and "serving http://" in logfile.read_text()
    assert get(m.port) == 200


# ---------- process names ----------
def test_procname_options_show_in_ps_and_pidfile_commands_still_work(procs, tmp_path):
    pid = tmp_path / "app.pid"
    m = start(procs, tmp_path, f"procname-prefix-spaced = shop\nprocname-master = master of shop\n"
                               f"procname = shop worker\nprocname-append = !\npidfile = {pid}\n")
    assert cmdline(m.pid) == "shop master of shop!"
    assert {cmdline(w) for w in worker_pids(m.pid)} == {"shop shop worker!"}
    wait_for(pid.exists, timeout=10)
    r = subprocess.run([sys.executable, "-m", "emperor", "--reload", str(pid)], capture_output=True, text=True,
                       timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "generation 1 ready" in (tmp_path / "console.log").read_text(), timeout=20)
    m.signal(signal.SIGINT)


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="dropping privileges needs root, and a Python www-data can run")
def test_logto2_opens_after_the_privilege_drop_and_logfile_chown_gives_logto_to_uid(procs, tmp_path, public_dir):
    """core/uwsgi.c: `logto2` is opened once `uid`/`gid` have been dropped to, so the file is
    the user's; `logfile-chown` (a flag) chowns the `logto` file to that uid/gid before the
    drop (core/utils.c uwsgi_as_root), `logfile-chmod` sets the mode of both (core/logging.c)."""
    app = public_dir / "app"
    app.mkdir(mode=0o755)
    (app / "leaky.py").write_text((APPS / "leaky.py").read_text())
    (app / "leaky.py").chmod(0o644)
    logs = public_dir / "logs"
    logs.mkdir(mode=0o755)
    os.chown(logs, 33, 33)                                   # www-data may create its log here
    port = free_port()
    ini = public_dir / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\nmodule = leaky\nuid = www-data\n"
                   f"gid = www-data\nlogto = {logs}/before.log\nlogto2 = {logs}/after.log\nlogfile-chown = true\n"
                   "logfile-chmod = 640\n")
    m = procs([SYSTEM_PYTHON, "-m", "emperor", "master", str(ini)], tmp_path, env={"PYTHONPATH": str(ROOT)},
              log=tmp_path / "console.log")
    after = logs / "after.log"
    wait_for(lambda: after.exists() and "running (workers ready)" in after.read_text(), timeout=30)
    assert get(port) == 200
    wait_for(lambda: " GET / => 200" in after.read_text(), timeout=10)     # the workers log there too
    for name in ("before.log", "after.log"):
        st = (logs / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 33, 0o640), name
    assert "logfile-chmod/-chown" not in _all_logs(tmp_path) + _all_logs(logs)
    assert m.popen.poll() is None


def test_daemonize2_is_the_log_target_too(procs, tmp_path):
    """uWSGI's daemonize2 (core/uwsgi.c) daemonizes after the app is loaded; under an emperor
    (uwsgi.has_emperor) it only logs to the file, which is what emperor's master always does."""
    logfile = tmp_path / "daemon.log"
    m = start(procs, tmp_path, f"daemonize2 = {logfile}\n")
    assert m.popen.poll() is None and "serving http://" in logfile.read_text()
    assert get(m.port) == 200
    wait_for(lambda: " GET / => 200" in logfile.read_text(), timeout=10)


# ---------- log files under emperor and real uWSGI ----------
READY = {"emperor": "(workers ready)", "uwsgi": "spawned uWSGI worker"}


def start_logging(procs, server: str, d: Path, body: str, logfile: Path):
    """A server (tests/spoolsupport.py) whose log goes to `logfile`: ready when that file says so."""
    port = free_port()
    ini = write_ini(d, body, port, "leaky")
    argv = [sys.executable, "-m", "emperor", "master", str(ini)] if server == "emperor" else [str(UWSGI), "--ini", str(ini)]
    p = procs(argv, d, log=d / "console.log")
    wait_for(lambda: logfile.exists() and READY[server] in logfile.read_text(), timeout=30)
    wait_port(port, 20)
    p.port = port
    return p


def reget(port: int, path: str) -> bool:
    """GET path (the line it logs is what the test looks for); True once answered."""
    try:
        return get_body(port, path).isdigit()
    except OSError:
        return False


@pytest.mark.parametrize("server", SERVERS)
def test_log_reopen_opens_the_moved_log_file_again_on_a_graceful_reload(procs, tmp_path, server):
    """`log-reopen`: a reload opens the log file again (core/logging.c uwsgi_setup_log,
    `!uwsgi.is_a_reload || uwsgi.log_reopen`), so after logrotate moved it away the lines go
    to a new file at the path."""
    logfile = tmp_path / "app.log"
    m = start_logging(procs, server, tmp_path, f"logto = {logfile}\nlog-reopen = true\nprocesses = 1\n", logfile)
    assert reget(m.port, "/before-rotation")
    wait_for(lambda: "/before-rotation" in text_now(logfile), timeout=10)
    logfile.rename(tmp_path / "app.log.1")
    m.signal(signal.SIGHUP)
    wait_for(lambda: logfile.exists(), timeout=30)
    wait_for(lambda: reget(m.port, "/after-reload") and "/after-reload" in text_now(logfile), timeout=30)
    assert "/before-rotation" in (tmp_path / "app.log.1").read_text()


@pytest.mark.parametrize("server", SERVERS)
def test_touch_logrotate_renames_the_log_file_and_starts_a_new_one(procs, tmp_path, server):
    """`touch-logrotate`: when the file's mtime changes the master renames the log file (to
    `log-backupname`) and opens the path again (core/logging.c uwsgi_check_logrotate,
    uwsgi_log_do_rotate; the option implies log-master: every process's lines go through it)."""
    logfile = tmp_path / "app.log"
    trigger = tmp_path / "rotate"
    trigger.touch()
    m = start_logging(procs, server, tmp_path, f"logto = {logfile}\ntouch-logrotate = {trigger}\n"
                                               f"log-backupname = {tmp_path}/app.log.old\nprocesses = 1\n", logfile)
    assert reget(m.port, "/before-rotation")
    wait_for(lambda: "/before-rotation" in text_now(logfile), timeout=10)
    os.utime(trigger, (time.time() + 5, time.time() + 5))
    wait_for(lambda: (tmp_path / "app.log.old").exists(), timeout=20)
    wait_for(lambda: reget(m.port, "/after-rotation") and "/after-rotation" in text_now(logfile), timeout=30)
    assert "/before-rotation" in (tmp_path / "app.log.old").read_text()
    assert "/before-rotation" not in text_now(logfile)


@pytest.mark.parametrize("server", SERVERS)
def test_logfile_chmod_is_the_mode_of_the_log_file(procs, tmp_path, server):
    """core/logging.c logto: the file is created, then fchmod'ed to `logfile-chmod`."""
    logfile = tmp_path / "app.log"
    start_logging(procs, server, tmp_path, f"logto = {logfile}\nlogfile-chmod = 604\n", logfile)
    assert stat.S_IMODE(logfile.stat().st_mode) == 0o604


@pytest.mark.parametrize("server", SERVERS)
def test_procname_prefix_starts_every_process_name(procs, tmp_path, server):
    """core/utils.c uwsgi_set_processname: `procname-prefix` goes before the name of the master
    and of each worker, as /proc/PID/cmdline (what ps shows) says."""
    m = start_server(procs, server, tmp_path, "procname-prefix = shop-\nprocesses = 2\n", app="leaky",
                     log="console.log")
    wait_for(lambda: len(worker_pids(m.pid)) == 2, timeout=20)
    names = [cmdline(m.pid)] + [cmdline(w) for w in worker_pids(m.pid)]
    assert all(n.startswith("shop-") for n in names), names
