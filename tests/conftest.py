"""Fixtures that run real masters and emperors on 127.0.0.1 and always kill what they started, by PID.

Plain helpers are in tests/support.py; the names tests have always imported from
here (ROOT, HELLO_APP, Proc, free_port, wait_for, wait_port, descendants,
kill_tree, write_vassal) are re-exported unchanged.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from support import (HELLO_APP, ROOT, VASSAL_APP, FakeSystemd, Proc, assert_no_traceback_of_ours, descendants,
                     free_port, kill_tree, three_vassals, wait_for, wait_port, write_vassal)

__all__ = ["HELLO_APP", "ROOT", "Proc", "descendants", "free_port", "kill_tree", "wait_for", "wait_port",
           "write_vassal"]


class Started:
    """What a test started: start(argv, cwd, env=None, log=None) -> Proc; kill_all() by PID."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, argv, cwd, env=None, log=None) -> Proc:
        p = Proc(argv, cwd, env, log)
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            p.kill()


@pytest.fixture
def procs():
    """Start processes through this; every one of them (and its children) is killed at teardown."""
    started = Started()
    yield started.start
    started.kill_all()


@pytest.fixture(scope="module")
def module_procs():
    """`procs` for module-scoped fixtures: killed at the end of the module."""
    started = Started()
    yield started.start
    started.kill_all()


@pytest.fixture
def master(tmp_path, procs):
    """master(ini_body, app=None) -> (Proc, port): a running master serving on a free port."""

    def start(body: str = "", app: str | None = None, name: str = "app.ini", wait: bool = True,
              port: int | None = None, env: dict | None = None):
        port = port or free_port()
        if app is not None:
            (tmp_path / "wsgiapp.py").write_text(textwrap.dedent(app))
        text = f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\n" + textwrap.dedent(body)
        if "module" not in body and "wsgi-file" not in body:
            text += "module = wsgiapp:application\n"
        path = tmp_path / name
        path.write_text(text)
        p = procs([sys.executable, "-m", "emperor", "master", str(path)], tmp_path, env=env)
        if wait:
            p.wait_log("running (workers ready)", timeout=30)
        p.port = port
        p.ini = path
        return p

    return start


@pytest.fixture
def appdir(tmp_path):
    """tmp_path/app holding wsgiapp.py, the vassals' application (support.VASSAL_APP)."""
    d = tmp_path / "app"
    d.mkdir()
    (d / "wsgiapp.py").write_text(VASSAL_APP)
    return d


def _emperors(start_proc, base: Path):
    """start(*args, directory=None, vassals=None, argv0=None, env=None, named=True, wait=True) -> Proc:
    `emperor run DIR --grace 5 *args` over `directory` (default base/vassals, created if missing),
    after writing `vassals` ({name: body}) into it. named=False runs it from the directory's parent
    without naming it (so it must be vassals.d). wait: until it logs that it is watching. The Proc
    has .dir; its log is base/emperor.log (emperor-2.log ... for more in one test)."""
    started: list[Proc] = []

    def start(*args: str, directory: Path | None = None, vassals: dict[str, str] | None = None,
              argv0: list[str] | None = None, env: dict | None = None, named: bool = True,
              wait: bool = True) -> Proc:
        d = directory or base / "vassals"
        d.mkdir(exist_ok=True)
        for name, body in (vassals or {}).items():
            (d / name).write_text(body)
        argv = (argv0 or [sys.executable]) + ["-m", "emperor", "run", *([str(d)] if named else []),
                                              "--grace", "5", *args]
        log = base / ("emperor.log" if not started else f"emperor-{len(started) + 1}.log")
        p = start_proc(argv, base if named else d.parent, env=env, log=log)
        p.dir = d
        started.append(p)
        if wait:
            p.wait_log("[emperor] watching", timeout=30)
        return p

    return start, started


def _check_emperor_logs(started: list[Proc]) -> None:
    for p in started:
        assert "unexpected transition" not in p.log
        assert_no_traceback_of_ours(p.log)


@pytest.fixture
def emperor(tmp_path, procs):
    """emperor(*args, directory=, vassals=, argv0=, env=, named=, wait=) -> a running emperor (see
    _emperors); at teardown its log must show no unexpected transition and no traceback of ours."""
    start, started = _emperors(procs, tmp_path)
    yield start
    _check_emperor_logs(started)


@pytest.fixture(scope="module")
def module_emperor(tmp_path_factory, module_procs):
    """`emperor` for module-scoped fixtures."""
    start, started = _emperors(module_procs, tmp_path_factory.mktemp("emperor"))
    yield start
    _check_emperor_logs(started)


@pytest.fixture(scope="module")
def three_vassal_emperor(module_emperor, tmp_path_factory):
    """start(*args) -> an emperor over support.three_vassals (good, bad, crash), run from the
    directory above its vassals.d without naming it, once good.ini serves and crash.ini backs
    off. The Proc has .port (good.ini's), .base (its working directory) and .control."""
    from emperor.paths import control_socket

    def start(*args: str) -> Proc:
        base = tmp_path_factory.mktemp("stack")
        port = three_vassals(base)
        p = module_emperor(*args, directory=base / "vassals.d", named=False)
        p.port, p.base, p.control = port, base, control_socket(str(p.dir))
        p.wait_log("good.ini: starting -> running", timeout=30)
        p.wait_log("crash.ini: starting -> backoff", timeout=30)
        return p

    return start


@pytest.fixture
def shortdir():
    d = Path(tempfile.mkdtemp(prefix="emp-sd-"))   # AF_UNIX paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def systemd(shortdir):
    """A FakeSystemd on a short path; .env is what NOTIFY_SOCKET must say."""
    fake = FakeSystemd(str(shortdir / "notify"))
    fake.env = str(shortdir / "notify")
    yield fake
    fake.close()


@pytest.fixture
def runtime(monkeypatch):
    """A runtime dir of our own: the emperors started here and the commands see only each other."""
    d = tempfile.mkdtemp(prefix="emp-", dir="/tmp")
    monkeypatch.setenv("EMPEROR_RUNTIME_DIR", d)   # XDG_RUNTIME_DIR would not do for root
    monkeypatch.delenv("EMPEROR_DIRECTORY", raising=False)
    monkeypatch.delenv("EMPEROR_CONTROL", raising=False)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _temp_users():
    """Users tests made (support.temp_user) go when the session ends."""
    yield
    from support import delete_temp_users

    delete_temp_users()


@pytest.fixture(scope="session")
def uwsgi_binary() -> str:
    """Real uWSGI 2.0.31 (./scripts/test installs it into .venv), for tests that run the same
    application under both; skipped, saying why, where it could not be built."""
    from support import tool

    path = tool("uwsgi")
    if path is None:
        pytest.skip("real uWSGI is not installed (./scripts/test builds it where a C compiler and "
                    "Python's headers exist)")
    return path


# ---------- tyrant mode: a user to own a file, a directory it can traverse, a root emperor ----------
@pytest.fixture
def tyrant_user():
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("tyrant mode needs root and useradd")
    from support import temp_user

    return temp_user("empt")


@pytest.fixture
def public_dir():
    """Under /tmp, traversable by everyone (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="emperor-tyrant-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def unprivileged(emperor, public_dir):
    """start(*emperor args, prefix=()) -> (emperor, vassals dir, app dir): a root emperor on the system
    Python (the masters must run it as another user: /root is private), an app that prints
    its uid and refuses to be imported as root, all in a directory everyone can traverse.
    `prefix` comes before the interpreter (`prlimit --nofile=...`, which execs it: same PID)."""
    from support import NOT_AS_ROOT, SYSTEM_PYTHON

    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no {SYSTEM_PYTHON} usable by an unprivileged user")
    appdir = public_dir / "app"
    appdir.mkdir(mode=0o755)
    (appdir / "wsgiapp.py").write_text(NOT_AS_ROOT + VASSAL_APP.replace('os.getpid())', 'os.getuid())'))
    (appdir / "wsgiapp.py").chmod(0o644)
    vdir = public_dir / "vassals"
    vdir.mkdir(mode=0o755)

    def start(*args: str, prefix: tuple[str, ...] = ()):
        e = emperor(*args, directory=vdir, argv0=[*prefix, SYSTEM_PYTHON], env={"PYTHONPATH": str(ROOT)})
        return e, vdir, appdir
    return start
