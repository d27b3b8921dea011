"""Real masters started from files that use what the reader now reads as uWSGI does: config
logic, %k, placeholder arithmetic, an inline comment after a port, a factory, UWSGI_*
variables, processes = 0. Each serves (or, with no worker, is ready and binds)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.request import urlopen

import pytest

from support import ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(60)

APP = """
import os
def create_app():
    def application(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [("%s %s" % (os.environ.get("FLAVOUR"), os.environ.get("EXTRA", "-"))).encode()]
    return application
"""


def start(procs, tmp_path: Path, body: str, env: dict | None = None):
    (tmp_path / "factoryapp.py").write_text(textwrap.dedent(APP))
    path = tmp_path / "app.ini"
    path.write_text(textwrap.dedent(body).lstrip())
    return procs([sys.executable, "-m", "emperor", "master", str(path)], tmp_path, env=env)


def workers(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_logic_magic_arithmetic_inline_comment_and_factory(procs, tmp_path):
    port = free_port()
    m = start(procs, tmp_path, f"""
        [uwsgi]
        http-socket = 127.0.0.1:{port}    ; plain HTTP, as the README writes it
        chdir = %d
        module = factoryapp:create_app()
        processes = %(%k * 0 + 2)         ; two workers, whatever the CPU count
        if-env = FLAVOUR_FROM_ENV
          env = FLAVOUR=%(_)
        endif =
        if-not-env = FLAVOUR_FROM_ENV
          env = FLAVOUR=default
        endif =
        for = A B
          env = EXTRA=%(_)
        endfor =
        print = started with %k cores
        """, env={"FLAVOUR_FROM_ENV": "from-env"})
    m.wait_log("running (workers ready)", timeout=20)
    assert urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"from-env B"
    assert len(workers(m.pid)) == 2
    assert "started with" in m.log and "cores" in m.log


def test_uwsgi_variables_set_options_of_a_real_master(procs, tmp_path):
    port = free_port()
    m = start(procs, tmp_path, """
        [uwsgi]
        chdir = %d
        module = factoryapp:create_app()
        if-not-env = UWSGI_PROCESSES
          processes = 4
        endif =
        """, env={"UWSGI_HTTP_SOCKET": f"127.0.0.1:{port}", "UWSGI_PROCESSES": "3", "FLAVOUR": "env"})
    m.wait_log("running (workers ready)", timeout=20)
    assert urlopen(f"http://127.0.0.1:{port}/", timeout=5).read() == b"env -"
    assert len(workers(m.pid)) == 3


def test_processes_zero_binds_and_is_ready_with_no_worker(procs, tmp_path):
    """uWSGI's no-workers mode: the socket is bound, nobody accepts."""
    port = free_port()
    m = start(procs, tmp_path, f"""
        [uwsgi]
        http-socket = 127.0.0.1:{port}
        chdir = %d
        module = factoryapp:create_app()
        processes = 0
        """)
    m.wait_log("running (workers ready)", timeout=20)
    assert "0 is uWSGI's no-workers mode" in m.log
    assert workers(m.pid) == []
    wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, timeout=5)


def test_a_reload_preflight_reads_the_file_as_the_next_image_will(tmp_path):
    """`if-reload` (uWSGI: UWSGI_RELOADS was set at start) is true in a preflight, which is
    always for a reload: it checks the module the reloaded master will import."""
    (tmp_path / "factoryapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app.ini").write_text(
        f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nchdir = %d\nif-reload\nmodule = factoryapp:create_app()\n"
        "endif\nif-not-reload\nmodule = no_such_module_at_first_start\nendif\n")
    env = {k: v for k, v in os.environ.items() if k != "UWSGI_RELOADS"}
    r = subprocess.run([sys.executable, "-m", "emperor", "master", "--preflight", str(tmp_path / "app.ini")],
                       cwd=tmp_path, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
