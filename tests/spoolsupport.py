"""Helpers for tests/test_api_spooler.py and test_api_cache.py: one vassal file, run by emperor's
master or by real uWSGI (the PyPI build in the venv), and plain HTTP GETs."""
from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import ROOT, free_port, wait_for, wait_port

APPS = ROOT / "tests" / "apps"
UWSGI = Path(sys.executable).parent / "uwsgi"
SERVERS = ["emperor", pytest.param("uwsgi", marks=pytest.mark.skipif(not UWSGI.exists(), reason="no uWSGI in the venv"))]


def write_ini(d: Path, body: str, port: int, app: str = "spoolcache.py") -> Path:
    ini = d / "app.ini"
    load = f"wsgi-file = {APPS / app}" if app.endswith(".py") else f"pythonpath = {APPS}\nmodule = {app}"
    ini.write_text(f"[uwsgi]\nmaster = true\nhttp-socket = 127.0.0.1:{port}\n{load}\n"
                   f"env = MARK_DIR={d}\n" + body)
    return ini


def start(procs, server: str, d: Path, body: str, port: int | None = None, app: str = "spoolcache.py",
          log: str = "server.log"):
    """A running server for `body` (ini lines) with `app`; p.port, p.dir set."""
    port = port or free_port()
    ini = write_ini(d, body, port, app)
    if server == "emperor":
        p = procs([sys.executable, "-m", "emperor", "master", str(ini)], d, log=d / log)
        p.wait_log("(workers ready)", timeout=30)
    else:
        p = procs([str(UWSGI), "--ini", str(ini)], d, log=d / log)
        p.wait_log("spawned uWSGI worker", timeout=30)
        wait_port(port, 20)
    p.port, p.dir = port, d
    return p


def get(port: int, path: str, timeout: float = 15.0) -> str:
    """The body of GET path; the app answers `RESULT PID`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def result(port: int, path: str) -> str:
    return get(port, path).rsplit(" ", 1)[0]


def runs(d: Path) -> list[list[str]]:
    """The spooled runs the app logged: [kind, id, pid, time] each."""
    try:
        return [line.split() for line in (d / "runs.log").read_text().splitlines()]
    except FileNotFoundError:
        return []


def tasks_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("uwsgi_spoolfile_on_*") if p.is_file())


def wait_runs(d: Path, kind: str, count: int, spool: Path, timeout: float = 30.0) -> list[list[str]]:
    """Until `count` runs of `kind` are logged and no task file is left (a task file gone
    cannot run again: the spooler removes it before it unlocks it)."""
    wait_for(lambda: len([r for r in runs(d) if r[0] == kind]) >= count and not tasks_in(spool), timeout)
    return [r for r in runs(d) if r[0] == kind]


def now() -> float:
    return time.time()
