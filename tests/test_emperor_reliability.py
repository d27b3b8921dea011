"""What an adversarial probe broke in the emperor and the master, each pinned by a test that
failed before its fix: a hostile vassal file or master costs that vassal alone.

Real emperors and masters on 127.0.0.1; every process is started through `procs` and
killed by PID.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from support import CHANNEL_FLOOD, temp_user, ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(90)

APP = """
import os
def application(environ, start_response):
    body = "%s gen=%s uid=%d gid=%d" % (os.environ.get("VASSAL"), os.environ.get("UWSGI_RELOADS", "0"),
                                        os.getuid(), os.getgid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
"""


def ini(port: int, appdir: Path, extra: str = "") -> str:
    return (f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {appdir}\nmodule = wsgiapp:application\n"
            f"env = VASSAL=%n\n{extra}")


def get(port: int, timeout: float = 3.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def serves(port: int, timeout: float = 10.0, expect: str = "") -> str:
    def attempt():
        try:
            body = get(port)
        except (OSError, AssertionError):
            return None
        return body if expect in body else None
    return wait_for(attempt, timeout)


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def status(e) -> dict:
    r = subprocess.run([sys.executable, "-m", "emperor", "status", "--json", "--directory", str(e.dir)],
                       capture_output=True, text=True, timeout=15, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def no_traceback_of_ours(log: str) -> None:
    assert "Traceback" not in log or f"{os.sep}emperor{os.sep}" not in log.split("Traceback", 1)[1][:2000]


@pytest.fixture
def appdir(tmp_path):
    d = tmp_path / "app"
    d.mkdir()
    (d / "wsgiapp.py").write_text(APP)
    return d


@pytest.fixture
def emperor(tmp_path, procs):
    def start(*args: str, prefix: list[str] | None = None, directory: Path | None = None):
        d = directory or tmp_path / "vassals"
        d.mkdir(exist_ok=True)
        argv = (prefix or []) + [sys.executable, "-m", "emperor", "run", str(d), "--grace", "5", *args]
        p = procs(argv, tmp_path, log=tmp_path / "emperor.log")
        p.wait_log("[emperor] watching", timeout=15)
        p.dir = d
        return p
    return start


# ---------- 3. what a vassal file includes ----------
def test_an_include_of_dev_zero_or_a_fifo_costs_that_vassal_alone(emperor, appdir, tmp_path):
    """The emperor read /dev/zero until MemoryError (every vassal down) and blocked its loop on
    a FIFO until someone opened it. Only regular files are read, without blocking, size-capped."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    e = emperor()
    (e.dir / "zero.ini").write_text(ini(free_port(), appdir, "include = /dev/zero\n"))
    (e.dir / "fifo.ini").write_text(ini(free_port(), appdir, f"include = {fifo}\n"))
    big = tmp_path / "big.ini"
    big.write_text("[uwsgi]\n" + "; padding\n" * 200_000)
    (e.dir / "big.ini").write_text(ini(free_port(), appdir, f"include = {big}\n"))
    log = e.wait_log("zero.ini: new -> config error")
    log = e.wait_log("fifo.ini: new -> config error")
    log = e.wait_log("big.ini: new -> config error")
    assert 'zero.ini:6: include: cannot read "/dev/zero": not a regular file' in log
    assert f'fifo.ini:6: include: cannot read "{fifo}": not a regular file' in log
    assert "larger than 1048576 bytes" in log
    port = free_port()
    (e.dir / "good.ini").write_text(ini(port, appdir))
    assert serves(port).startswith("good gen=0")
    assert status(e)["vassals"]["good.ini"]["state"] == "running"
    no_traceback_of_ours(e.log)


def test_a_file_whose_loops_or_placeholders_explode_costs_that_vassal_alone(emperor, appdir):
    """uWSGI's config logic has no bound: `for-times = 10^11` or placeholders doubling 40
    times would fill the emperor's memory (tests/test_config_bounds.py has each bound)."""
    e = emperor()
    (e.dir / "loop.ini").write_text(ini(free_port(), appdir, "for-times = 100000000000\nprint = %(_)\nendfor\n"))
    doubling = "".join(f"set-placeholder = p{i}=%(p{i - 1})%(p{i - 1})\n" for i in range(1, 41))
    (e.dir / "double.ini").write_text(ini(free_port(), appdir, "set-placeholder = p0=xx\n" + doubling + "print = %(p40)\n"))
    log = e.wait_log("loop.ini: new -> config error")
    log = e.wait_log("double.ini: new -> config error")
    assert "for-times = 100000000000: more than 1000 items" in log
    assert "longer than 65536 bytes once expanded" in log
    port = free_port()
    (e.dir / "good.ini").write_text(ini(port, appdir))
    assert serves(port).startswith("good gen=0")
    no_traceback_of_ours(e.log)


def test_in_tyrant_mode_a_tenant_s_hostile_include_costs_its_vassal_alone(tmp_path, procs, other_user):
    """In tyrant mode every file is a tenant's: the same bounds hold for them."""
    public = Path(tempfile.mkdtemp(prefix="emperor-tyrant-"))
    try:
        public.chmod(0o755)
        vdir = public / "vassals"
        vdir.mkdir(mode=0o755)
        fifo = public / "fifo"
        os.mkfifo(fifo)
        for name, target in (("zero.ini", "/dev/zero"), ("fifo.ini", str(fifo))):
            path = vdir / name
            path.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nmodule = x\ninclude = {target}\n")
            os.chown(path, other_user.pw_uid, other_user.pw_gid)
        e = procs([sys.executable, "-m", "emperor", "run", str(vdir), "--tyrant"], tmp_path)
        e.dir = vdir
        log = e.wait_log("fifo.ini: new -> config error", timeout=15)
        log = e.wait_log("zero.ini: new -> config error", timeout=15)
        assert "not a regular file" in log
        assert status(e)["vassals"]["zero.ini"]["state"] == "config error"
        no_traceback_of_ours(e.log)
    finally:
        shutil.rmtree(public, ignore_errors=True)


# ---------- 4. the channel from a master ----------
FLOOD = CHANNEL_FLOOD + APP


def test_a_master_that_floods_its_channel_is_killed_and_backs_off(emperor, tmp_path, appdir):
    """A master runs its vassal's code: one that sent 400 MB without a newline or 1,600
    descriptors stopped the emperor's loop or filled its descriptor table. (Here a root
    emperor without --tyrant; test_emperor_exhaustion.py runs it in tyrant mode.)"""
    flood = tmp_path / "flood"
    flood.mkdir()
    (flood / "wsgiapp.py").write_text(FLOOD)
    e = emperor()
    (e.dir / "bytes.ini").write_text(ini(free_port(), flood, "env = FLOOD=bytes\n"))
    (e.dir / "fds.ini").write_text(ini(free_port(), flood, "env = FLOOD=fds\n"))
    log = e.wait_log("bytes.ini: starting -> backoff", timeout=30)
    log = e.wait_log("fds.ini: starting -> backoff", timeout=30)
    assert "bytes.ini: its master broke the channel protocol (a message longer than 4096 bytes): killed" in log
    assert "fds.ini: its master broke the channel protocol" in log and "descriptors sent" in log
    port = free_port()
    (e.dir / "good.ini").write_text(ini(port, appdir))
    assert serves(port).startswith("good gen=0")
    fds = len(os.listdir(f"/proc/{e.pid}/fd"))
    assert fds < 64, f"the emperor holds {fds} descriptors"
    no_traceback_of_ours(e.log)


# ---------- 2. descriptor exhaustion in the emperor ----------
def test_out_of_descriptors_some_vassals_wait_and_none_is_stopped(emperor, appdir):
    """At a low descriptor limit, starting more vassals than it allows made `socketpair` raise
    and the emperor exit, taking every vassal down. Now the ones it cannot start back off
    (one line each) and start once descriptors are there again."""
    e = emperor(prefix=["prlimit", "--nofile=24:1024"])
    ports = [free_port() for _ in range(24)]
    for i, port in enumerate(ports):
        (e.dir / f"v{i:02d}.ini").write_text(ini(port, appdir, "processes = 1\n"))
    e.wait_log("cannot start its master: Too many open files", timeout=30)
    assert any(not refuses(p) for p in ports)
    subprocess.run(["prlimit", "--pid", str(e.pid), "--nofile=1024:1024"], check=True, timeout=10)
    e.signal(signal.SIGURG)   # clear every backoff
    for port in ports:
        serves(port, timeout=30)
    assert e.popen.poll() is None
    no_traceback_of_ours(e.log)


def test_idle_connections_to_the_metrics_port_cannot_exhaust_the_emperor(emperor, appdir):
    """Idle TCP connections to --metrics up to the descriptor limit (kept there: a closed one
    is opened again) made the directory listing fail with EMFILE, read as "directory gone":
    a touch then stopped every vassal. Clients are capped (the oldest shed), so the emperor
    always has descriptors for its own work."""
    mport = free_port()
    e = emperor("--metrics", f"127.0.0.1:{mport}", prefix=["prlimit", "--nofile=128:128"])
    port = free_port()
    path = e.dir / "app.ini"
    path.write_text(ini(port, appdir))
    assert serves(port).startswith("app gen=0")
    stop = threading.Event()

    def flood() -> None:
        idle: list[socket.socket] = []
        while not stop.is_set():
            for s in [s for s in idle if _closed(s)]:
                idle.remove(s)
                s.close()
            while len(idle) < 300 and not stop.is_set():
                try:
                    idle.append(socket.create_connection(("127.0.0.1", mport), timeout=0.2))
                except OSError:
                    break
            stop.wait(0.05)
        for s in idle:
            s.close()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        stop.wait(1.5)  # the behaviour: the flood has been going on for a while
        os.utime(path)
        assert serves(port, expect="gen=1", timeout=20).startswith("app gen=1")
    finally:
        stop.set()
        flooder.join(10)
    log = e.log
    assert "app.ini: running -> stopping" not in log and "cannot list" not in log
    assert status(e)["vassals"]["app.ini"]["state"] == "running"
    no_traceback_of_ours(log)


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# ---------- 6. a root emperor runs only what root chose ----------
@pytest.fixture
def other_user():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd")
    return temp_user("empr")


def test_a_root_emperor_refuses_group_writable_files_and_includes_of_other_users(emperor, appdir,
                                                                                 other_user, tmp_path):
    e = emperor()
    lax = e.dir / "lax.ini"
    lax.write_text(ini(free_port(), appdir))
    os.chown(lax, 0, other_user.pw_gid)
    lax.chmod(0o664)
    theirs = tmp_path / "theirs.ini"
    theirs.write_text("[uwsgi]\nuid = 0\n")
    os.chown(theirs, other_user.pw_uid, other_user.pw_gid)
    (e.dir / "incl.ini").write_text(ini(free_port(), appdir, f"include = {theirs}\n"))
    log = e.wait_log("lax.ini: new -> config error")
    log = e.wait_log("incl.ini: new -> config error")
    assert "lax.ini: refused: file is writable by group or others (mode 0664)" in log
    assert f'include: refused "{theirs}": file is owned by uid {other_user.pw_uid}' in log
    lax.chmod(0o644)
    e.wait_log("lax.ini: config error -> starting")


def test_uid_without_gid_drops_root_s_group_too(tmp_path, procs, other_user):
    public = Path(tempfile.mkdtemp(prefix="emperor-uid-"))
    try:
        public.chmod(0o755)
        (public / "wsgiapp.py").write_text(APP)
        (public / "wsgiapp.py").chmod(0o644)
        port = free_port()
        path = public / "app.ini"
        path.write_text(ini(port, public, f"uid = {other_user.pw_name}\n"))
        system = "/usr/bin/python3.11"
        if not os.access(system, os.X_OK):
            pytest.skip("no system Python usable by another user")
        procs([system, "-m", "emperor", "master", str(path)], tmp_path, env={"PYTHONPATH": str(ROOT)})
        body = serves(port)
        assert body.endswith(f"uid={other_user.pw_uid} gid={other_user.pw_gid}")
    finally:
        shutil.rmtree(public, ignore_errors=True)


# ---------- 8. the runtime directory ----------
def test_a_root_emperor_starts_whatever_another_user_left_in_tmp(emperor, appdir, other_user):
    """Root's runtime directory was /tmp/emperor-0: another user who made it first kept a root
    emperor from starting. Root's is /run/emperor now."""
    squatted = Path("/tmp/emperor-0")
    aside = None
    if squatted.exists() or squatted.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix="emperor-0-aside-")) / "d"
        squatted.rename(aside)
    squatted.mkdir()
    os.chown(squatted, other_user.pw_uid, other_user.pw_gid)
    try:
        e = emperor()
        port = free_port()
        (e.dir / "app.ini").write_text(ini(port, appdir))
        assert serves(port).startswith("app gen=0")
        assert status(e)["vassals"]["app.ini"]["state"] == "running"
    finally:
        squatted.rmdir()
        if aside is not None:
            aside.rename(squatted)
            aside.parent.rmdir()


def test_a_planted_runtime_directory_symlink_is_refused_not_followed(tmp_path):
    nobody = 65534
    target = Path(tempfile.mkdtemp(prefix="emperor-target-"))
    link = Path(f"/tmp/emperor-{nobody}")
    if os.geteuid() != 0 or link.exists() or link.is_symlink():
        pytest.skip("needs root and a free /tmp/emperor-65534")
    target.chmod(0o755)
    link.symlink_to(target)
    try:
        r = subprocess.run(["/usr/bin/python3.11", "-c", "from emperor import paths; paths.ensure_runtime_dir()"],
                           user=nobody, group=nobody, extra_groups=[], capture_output=True, text=True,
                           timeout=20, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd="/")
        assert r.returncode != 0 and f"{link} is a symlink: refused" in r.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o755
    finally:
        link.unlink()
        shutil.rmtree(target, ignore_errors=True)


# ---------- 9. logs and the terminal ----------
def test_control_characters_from_clients_and_file_names_are_escaped(emperor, appdir):
    e = emperor()
    port, uport = free_port(), free_port()
    (e.dir / "app.ini").write_text(ini(port, appdir, f"socket = 127.0.0.1:{uport}\n"))
    serves(port)
    from emperor.worker.protocols.uwsgi import encode_vars
    with socket.create_connection(("127.0.0.1", uport), timeout=5) as s:
        s.sendall(encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": "/",
                               "REQUEST_URI": "/x\n2026-12-01 00:00:00.000 [emperor] forged\x1b[31m"}))
        while s.recv(65536):
            pass
    wait_for(lambda: "forged" in e.log, timeout=10)
    lines = e.log.splitlines()
    assert not any(line.startswith("2026-12-01 00:00:00.000 [emperor] forged") for line in lines)
    assert "\x1b" not in e.log
    odd = e.dir / "odd\x1b]0;owned\x07\nname.ini"
    odd.write_text(ini(free_port(), appdir))
    e.wait_log("name.ini: new -> starting")
    assert "\x1b" not in e.log and "\x07" not in e.log
    r = subprocess.run([sys.executable, "-m", "emperor", "status", "--once", "--directory", str(e.dir)],
                       capture_output=True, text=True, timeout=15, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and "odd" in r.stdout
    assert "\x1b]" not in r.stdout and "\x07" not in r.stdout


# ---------- 10. logto through a planted symlink ----------
def test_logto_in_a_world_writable_directory_does_not_follow_a_symlink(tmp_path, procs, appdir):
    if os.geteuid() != 0:
        pytest.skip("the attack is on root")
    shared = Path(tempfile.mkdtemp(prefix="emperor-logs-"))
    try:
        shared.chmod(0o1777)
        victim = tmp_path / "root-only"
        victim.write_text("precious\n")
        victim.chmod(0o600)
        (shared / "app.log").symlink_to(victim)
        path = tmp_path / "app.ini"
        path.write_text(ini(free_port(), appdir, f"logto = {shared / 'app.log'}\n"))
        m = procs([sys.executable, "-m", "emperor", "master", str(path)], tmp_path)
        assert m.wait(20) == 1
        assert "cannot start: Too many levels of symbolic links" in m.log
        assert victim.read_text() == "precious\n"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---------- 13. a stopped worker ----------
def test_a_sigstopped_worker_shows_as_stopped(tmp_path, procs, appdir):
    """Choice: a worker someone SIGSTOPs is left alone (it holds no request, and SIGCONT brings
    it back), but the stats, status and uwsgitop show it as `stopped`, not `idle`."""
    from support import worker_pids
    port, sport = free_port(), free_port()
    path = tmp_path / "app.ini"
    path.write_text(ini(port, appdir, f"processes = 2\nstats = 127.0.0.1:{sport}\n"))
    m = procs([sys.executable, "-m", "emperor", "master", str(path)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    victim = sorted(worker_pids(m.pid))[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        def statuses() -> dict:
            with socket.create_connection(("127.0.0.1", sport), timeout=5) as s:
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            return {w["pid"]: w["status"] for w in json.loads(data)["workers"]}
        wait_for(lambda: statuses().get(victim) == "stopped", timeout=10)
        assert serves(port)
    finally:
        os.kill(victim, signal.SIGCONT)


# ---------- 12. a preflight that hangs ----------
HANGS = """
import os, time
if os.path.exists(os.environ["HANG"]):
    time.sleep(3600)   # an import that never ends
""" + APP


@pytest.mark.parametrize("under", ["emperor", "master"])
def test_a_hanging_preflight_times_out_and_a_new_touch_supersedes_it(under, emperor, procs, tmp_path):
    app = tmp_path / "hangs"
    app.mkdir()
    (app / "wsgiapp.py").write_text(HANGS)
    hang = tmp_path / "hang"
    port = free_port()
    body = ini(port, app, f"env = HANG={hang}\nreload-mercy = 3\ntouch-reload = {tmp_path / 'trigger'}\n")
    if under == "emperor":
        e = emperor()
        path = e.dir / "app.ini"
        path.write_text(body)
        proc = e
    else:
        path = tmp_path / "app.ini"
        path.write_text(body)
        proc = procs([sys.executable, "-m", "emperor", "master", str(path)], tmp_path)
    assert serves(port).startswith("app gen=0")
    hang.touch()
    (tmp_path / "trigger").touch()
    proc.wait_log("the preflight did not finish within 3s (reload-mercy): stopped", timeout=30)
    assert get(port).startswith("app gen=0")
    # a touch while a preflight hangs supersedes it at once (the mercy is now 60 s)
    path.write_text(body.replace("reload-mercy = 3", "reload-mercy = 60"))
    (tmp_path / "trigger").touch()
    proc.wait_log("[app.ini] running -> reloading", count=2, timeout=20)
    hang.unlink()
    (tmp_path / "trigger").touch()
    proc.wait_log("supersedes the preflight still running", timeout=20)
    assert serves(port, expect="gen=1", timeout=20).startswith("app gen=1")
