"""Fixtures that run real masters on 127.0.0.1 and always kill what they started, by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port}")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def descendants(pid: int) -> list[int]:
    """All live descendants of pid, from /proc (children files)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def kill_tree(pid: int) -> None:
    """Freeze the root first so it cannot respawn what is killed next, then kill all."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    for p in [pid] + descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Proc:
    """A process under test: its output goes to a file the test can read."""

    def __init__(self, argv: list[str], cwd: Path, env: dict | None = None, log: Path | None = None):
        self.log_path = log or cwd / "proc.log"
        self._log = open(self.log_path, "ab")
        e = dict(os.environ)
        extra = (env or {}).get("PYTHONPATH")
        e.update(env or {})
        if env is not None and "PYTHONPATH" in env and extra is None:
            e.pop("PYTHONPATH")  # {"PYTHONPATH": None}: only what the interpreter itself finds
        else:
            e["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, str(ROOT), os.environ.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=e)
        self.pid = self.popen.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        wait_for(lambda: self.log.count(text) >= count, timeout)
        return self.log

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        kill_tree(self.pid)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


@pytest.fixture
def procs():
    """Start processes through this; every one of them (and its children) is killed at teardown."""
    started: list[Proc] = []

    def start(argv, cwd, env=None, log=None) -> Proc:
        p = Proc(argv, cwd, env, log)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def write_vassal(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


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
            p.wait_log("running (workers ready)", timeout=15)
        p.port = port
        p.ini = path
        return p

    return start


HELLO_APP = """
import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Gen", os.environ.get("UWSGI_RELOADS", "0")), ("X-Pid", str(os.getpid()))])
    return [b"Hello, World!"]
"""
