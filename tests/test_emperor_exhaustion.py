"""A hostile master and an emperor out of descriptors, in tyrant mode too (issue 12's standing
tests): what a tenant or a flood does costs that vassal alone, never the emperor's loop.

Real root emperors on 127.0.0.1 (tyrant mode: on the system Python, its masters running as
an unprivileged user, see conftest.py `unprivileged`); every process is started through
`procs` and killed by PID; the descriptor limit is set with prlimit(1) on the emperor's PID.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support import CHANNEL_FLOOD, NOT_AS_ROOT, VASSAL_APP, body_when, cpu_seconds, free_port, vassal_ini

pytestmark = pytest.mark.timeout(90)


def owned(path: Path, text: str, user) -> Path:
    path.write_text(text)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def set_nofile(pid: int, soft: int, hard: int = 1024) -> None:
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={soft}:{hard}"], check=True, timeout=10)


# ---------- a tenant's master floods the channel ----------


def test_in_tyrant_mode_a_tenant_s_master_that_floods_its_channel_is_killed_and_backs_off(
        unprivileged, tyrant_user, public_dir):
    """In tyrant mode the master runs the tenant's code, as the tenant: 50 MB without a newline
    or 1,600 descriptors on the emperor channel (uWSGI's is a socketpair per vassal too,
    core/emperor.c uwsgi_emperor_vassal_start, read a message at a time by emperor_loop) must
    cost that vassal alone: killed, backoff; the emperor and the tenant's other vassal serve."""
    e, vdir, appdir = unprivileged("--tyrant")
    flood = public_dir / "flood"
    flood.mkdir(mode=0o755)
    (flood / "wsgiapp.py").write_text(NOT_AS_ROOT + CHANNEL_FLOOD + VASSAL_APP)
    (flood / "wsgiapp.py").chmod(0o644)
    owned(vdir / "bytes.ini", vassal_ini(free_port(), flood, "env = FLOOD=bytes\n"), tyrant_user)
    owned(vdir / "fds.ini", vassal_ini(free_port(), flood, "env = FLOOD=fds\n"), tyrant_user)
    log = e.wait_log("bytes.ini: starting -> backoff", timeout=30)
    log = e.wait_log("fds.ini: starting -> backoff", timeout=30)
    assert "bytes.ini: its master broke the channel protocol (a message longer than 4096 bytes): killed" in log
    assert "fds.ini: its master broke the channel protocol" in log and "descriptors sent" in log
    port = free_port()
    owned(vdir / "good.ini", vassal_ini(port, appdir), tyrant_user)
    assert body_when(port, timeout=20).endswith(f"pid={tyrant_user.pw_uid}")
    assert open_fds(e.pid) < 64, f"the emperor holds {open_fds(e.pid)} descriptors"
    assert "imported as root" not in e.log


# ---------- the emperor out of descriptors ----------
def test_in_tyrant_mode_out_of_descriptors_some_vassals_wait_and_none_is_stopped(unprivileged, tyrant_user):
    """At a low descriptor limit a tenant's vassals the emperor cannot start (socketpair fails
    with EMFILE; uWSGI logs "socketpair()" and gives up that vassal, core/emperor.c
    uwsgi_emperor_vassal_start) back off, one line each; the others run; once descriptors
    are back, SIGURG clears the backoffs and every one serves, as its owner."""
    e, vdir, appdir = unprivileged("--tyrant", prefix=("prlimit", "--nofile=20:1024"))
    ports = [free_port() for _ in range(16)]
    for i, port in enumerate(ports):
        owned(vdir / f"v{i:02d}.ini", vassal_ini(port, appdir, "processes = 1\n"), tyrant_user)
    e.wait_log("cannot start its master: Too many open files", timeout=30)
    set_nofile(e.pid, 1024)
    e.signal(signal.SIGURG)   # clear every backoff
    for port in ports:
        assert body_when(port, timeout=30).endswith(f"pid={tyrant_user.pw_uid}")
    assert e.popen.poll() is None
    assert "imported as root" not in e.log and "config error" not in e.log


def test_the_control_socket_stops_accepting_for_a_moment_when_out_of_descriptors(emperor, appdir):
    """With no descriptor left and no client to shed, the control socket stays readable and
    accept() fails at once: the emperor's loop spun a whole core. It now takes the listener out
    of its epoll for ACCEPT_PAUSE (0.5 s) and tries again, so a client waiting in the backlog
    is answered once descriptors are back. (uWSGI's emperor has no control socket; its stats
    server, core/stats.c uwsgi_send_stats, logs an accept() error and returns.)"""
    from emperor.paths import control_socket

    e = emperor()
    port = free_port()
    (e.dir / "app.ini").write_text(vassal_ini(port, appdir))
    assert body_when(port, timeout=20).startswith("app gen=0")
    e.wait_log("app.ini: starting -> running")
    set_nofile(e.pid, open_fds(e.pid) - 2)   # below what it holds: every accept() is EMFILE
    waiting = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(control_socket(str(e.dir)))   # queued in the listener's backlog
            s.sendall(b"status\n")
            waiting.append(s)
        cpu, started = cpu_seconds(e.pid), time.monotonic()
        time.sleep(3)  # the behaviour under test: the emperor stays out of descriptors this long
        used, spent = cpu_seconds(e.pid) - cpu, time.monotonic() - started
        assert used < spent / 4, f"the emperor used {used:.2f}s of CPU in {spent:.1f}s"
        set_nofile(e.pid, 1024)
        for s in waiting:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert json.loads(data)["vassals"]["app.ini"]["state"] == "running"
    finally:
        for s in waiting:
            s.close()
    assert body_when(port).startswith("app gen=0")


CRASHY = "import os\nif os.path.exists(os.environ['BROKEN']):\n    raise RuntimeError('broken at import')\n"


@pytest.mark.parametrize("tyrant", [False, True], ids=["root", "tyrant"])
def test_a_start_out_of_descriptors_is_a_backoff_never_a_config_error(tyrant, request, public_dir, tmp_path):
    """A vassal in backoff is started again while the emperor has no descriptor left: reading
    its file failed with EMFILE and made it a config error, kept until the file changes. That
    says nothing about the file (uWSGI's emperor reads a vassal file in emperor_add only when
    it changed, and a failed start, core/emperor.c uwsgi_emperor_vassal_start, is tried again
    at the next respawn): it stays in backoff and starts once descriptors are back. The
    emperor polls its directory here (no inotify: the system Python has no inotify-simple, the
    root one has it hidden), and a listing that failed with EMFILE was retried at once, in a
    loop, for as long as descriptors lacked: now once a second."""
    if tyrant:
        user = request.getfixturevalue("tyrant_user")
        e, vdir, appdir = request.getfixturevalue("unprivileged")("--tyrant")
    else:
        user = None
        appdir = public_dir / "app"
        appdir.mkdir(mode=0o755)
        (appdir / "wsgiapp.py").write_text(VASSAL_APP)
        hidden = tmp_path / "no-inotify"
        hidden.mkdir()
        (hidden / "inotify_simple.py").write_text("raise ImportError('hidden by the test')\n")
        e = request.getfixturevalue("emperor")(directory=public_dir / "vassals", env={"PYTHONPATH": str(hidden)})
        vdir = e.dir
    assert "rescanning every 1s" in e.log
    broken = public_dir / "broken"
    broken.touch()
    (appdir / "crashy.py").write_text(CRASHY + (appdir / "wsgiapp.py").read_text())
    (appdir / "crashy.py").chmod(0o644)
    port = free_port()
    path = vdir / "crash.ini"
    path.write_text(vassal_ini(port, appdir, f"env = BROKEN={broken}\n").replace("module = wsgiapp", "module = crashy"))
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    e.wait_log("crash.ini: starting -> backoff", timeout=30)
    set_nofile(e.pid, open_fds(e.pid) - 2)   # nothing left: the next start cannot even read the file
    lowered = time.monotonic()
    broken.unlink()
    e.signal(signal.SIGURG)   # clear every backoff: start it now
    e.wait_log("crash.ini: backoff -> backoff (cannot read its file now: Too many open files; retry in 1s)",
               timeout=15)
    e.wait_log("cannot list", timeout=15)   # the directory's polling, out of descriptors too
    time.sleep(2)   # the behaviour under test: the emperor stays out of descriptors this long
    listings, spent = e.log.count("cannot list"), time.monotonic() - lowered
    set_nofile(e.pid, 1024)
    assert listings <= 2 + spent, f"{listings} failed listings in {spent:.1f}s: one a second at most"
    assert body_when(port, timeout=30).startswith("crash gen=0")
    assert "config error" not in e.log
