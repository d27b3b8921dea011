"""Whose vassal files the emperor runs, and as whom: tyrant mode, uid/gid, files others could
write (emperor/emperor/trust.py), with a real root emperor where the machine allows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import SYSTEM_PYTHON, body_when, free_port, http_get, refuses, vassal_ini, wait_for

pytestmark = pytest.mark.timeout(60)

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


def status_json(vdir: Path) -> dict:
    r = subprocess.run([sys.executable, "-m", "emperor", "status", "--json", "--directory", str(vdir)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("lazy", [False, True])
def test_uid_that_cannot_read_the_app_shows_failing_with_the_permission_error(unprivileged, tyrant_user, lazy):
    """Issue 11: `uid = www-data` with an application file that user cannot read left the vassal
    looking healthy (the error only in the log file). uWSGI drops privileges (core/uwsgi.c
    uwsgi_as_root: setgid/setuid) before it loads the app (plugins/python/python_plugin.c
    uwsgi_python_init_apps, after uwsgi_as_root in uwsgi_start), so the import fails with
    PermissionError as the unprivileged user. That line must be in `emperor status --json`, and
    a client must not hang: loaded in the master, the master exits and the vassal backs off
    (the port refuses); with lazy-apps the workers fail, the vassal shows `failing` and a
    request is answered 503."""
    e, vdir, appdir = unprivileged()
    (appdir / "wsgiapp.py").chmod(0o600)     # root's: the uid cannot read it
    port = free_port()
    (vdir / "app.ini").write_text(vassal_ini(port, appdir, f"uid = {tyrant_user.pw_name}\ngid = {tyrant_user.pw_gid}\n"
                                                           + ("lazy-apps = true\n" if lazy else "")))
    state = "failing" if lazy else "backoff"
    e.wait_log(f"app.ini: starting -> {state}", timeout=30)
    v = status_json(vdir)["vassals"]["app.ini"]
    assert v["state"] in (state, "starting") and v["last_error"], v   # (starting: a retry)
    assert f"PermissionError: [Errno 13] Permission denied: '{appdir}/wsgiapp.py'" in v["last_error"], v
    if lazy:
        assert http_get(port, timeout=10).status == 503
    else:
        wait_for(lambda: refuses(port), timeout=10)   # (a retry binds it for a moment)


def test_a_root_emperor_refuses_an_include_in_a_directory_another_user_can_write(emperor, appdir, tyrant_user,
                                                                                tmp_path):
    """A root-owned include is only as safe as the directories on its way: whoever can write
    one can rename another file into its place and choose the code root runs (sshd's
    StrictModes rule, emperor/files.py TrustRule). uWSGI's emperor (core/emperor.c,
    emperor_add) checks no ownership at all outside tyrant mode, and its vassals read any
    include; here a root emperor refuses both, with one line each, until the directory is fixed."""
    theirs, lax = tmp_path / "theirs", tmp_path / "lax"
    for d in (theirs, lax):
        d.mkdir()
        (d / "extra.ini").write_text("[uwsgi]\nenv = EXTRA=1\n")   # root's file, mode 0644
    os.chown(theirs, tyrant_user.pw_uid, tyrant_user.pw_gid)
    lax.chmod(0o775)
    e = emperor()
    port, lax_port = free_port(), free_port()
    (e.dir / "theirs.ini").write_text(vassal_ini(port, appdir, f"include = {theirs / 'extra.ini'}\n"))
    (e.dir / "lax.ini").write_text(vassal_ini(lax_port, appdir, f"include = {lax / 'extra.ini'}\n"))
    log = e.wait_log("theirs.ini: new -> config error")
    log = e.wait_log("lax.ini: new -> config error")
    assert (f'include: refused "{theirs / "extra.ini"}": directory {theirs} is owned by uid '
            f'{tyrant_user.pw_uid}, who could choose the code it runs') in log
    assert f'include: refused "{lax / "extra.ini"}": directory {lax} is writable by group or others (mode 0775)' in log
    assert refuses(port) and refuses(lax_port)
    lax.chmod(0o755)
    os.utime(e.dir / "lax.ini")
    assert body_when(lax_port, timeout=15).startswith("lax gen=0")
    assert refuses(port)


def test_in_tyrant_mode_an_include_is_trusted_in_the_tenant_s_directory_not_in_a_third_user_s(
        unprivileged, tyrant_user, public_dir):
    """Tyrant mode (uwsgi-docs Emperor.rst, "Tyrant mode"): the vassal runs as its file's
    owner, so its own directories may hold what it includes; a directory a third user owns
    may not (that user would choose the tenant's code)."""
    from support import temp_user

    third = temp_user("empx")
    e, vdir, appdir = unprivileged("--tyrant")
    own, foreign = public_dir / "own", public_dir / "foreign"
    for d, user in ((own, tyrant_user), (foreign, third)):
        d.mkdir(mode=0o755)
        (d / "extra.ini").write_text("[uwsgi]\nenv = EXTRA=1\n")
        os.chown(d / "extra.ini", tyrant_user.pw_uid, tyrant_user.pw_gid)
        os.chown(d, user.pw_uid, user.pw_gid)
    port, foreign_port = free_port(), free_port()
    for name, p, d in (("own.ini", port, own), ("foreign.ini", foreign_port, foreign)):
        path = vdir / name
        path.write_text(vassal_ini(p, appdir, f"include = {d / 'extra.ini'}\n"))
        os.chown(path, tyrant_user.pw_uid, tyrant_user.pw_gid)
    log = e.wait_log("foreign.ini: new -> config error", timeout=15)
    assert (f'include: refused "{foreign / "extra.ini"}": directory {foreign} is owned by uid '
            f'{third.pw_uid}, who could choose the code it runs') in log
    assert body_when(port, timeout=15).endswith(f"pid={tyrant_user.pw_uid}")
    assert refuses(foreign_port)
