"""Fixtures that run real masters on 127.0.0.1 and always kill what they started, by PID.

Plain helpers are in tests/support.py; the names tests have always imported from
here (ROOT, HELLO_APP, Proc, free_port, wait_for, wait_port, descendants,
kill_tree, write_vassal) are re-exported unchanged.
"""
from __future__ import annotations

import sys
import textwrap

import pytest

from support import (HELLO_APP, ROOT, Proc, descendants, free_port, kill_tree, wait_for, wait_port,
                     write_vassal)

__all__ = ["HELLO_APP", "ROOT", "Proc", "descendants", "free_port", "kill_tree", "wait_for", "wait_port",
           "write_vassal"]


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
