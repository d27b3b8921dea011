"""Whose vassal files the emperor runs, and as whom: tyrant mode, uid/gid, files others could
write (emperor/emperor/trust.py), with a real root emperor where the machine allows."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support import VASSAL_APP, body_when, free_port, http_get, refuses, vassal_ini, wait_for

pytestmark = pytest.mark.timeout(60)

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
