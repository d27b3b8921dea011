"""`emperor run --strict-compat`: a vassal using an option uWSGI knows but emperor does not
support is refused, by the emperor, by its master (EMPEROR_STRICT_COMPAT) and by a reload's
preflight, as a file's own `strict-compat = true` asks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

import pytest

from support import ROOT, free_port, wait_for
from emperor.emperor import process as emp
from emperor.emperor.watch import Changes
from emperor.states import VassalState as S
from emperor.wire import handoff

pytestmark = pytest.mark.timeout(60)

APP = ("def application(environ, start_response):\n"
       "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
       "    return [b'ok']\n")


def vassal(directory: Path, name: str, extra: str = "") -> Path:
    (directory / "wsgiapp.py").write_text(APP)
    path = directory / name
    path.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nchdir = {directory}\n"
                    f"module = wsgiapp:application\n{extra}")
    return path


@pytest.fixture
def driven(tmp_path):
    """An Emperor with --strict-compat whose masters are fake PIDs."""
    d = tmp_path / "vassals"
    d.mkdir()
    pids = iter(range(5_200_000, 5_300_000))
    launched: list[tuple[str, dict, int]] = []

    def launch(path, env, fd, uid, gid):
        launched.append((path, env, os.dup(fd)))
        return next(pids)

    e = emp.Emperor(str(d), clock=lambda: 1000.0, launch=launch, strict_compat=True)
    e.launched, e.dir = launched, d
    yield e
    for v in list(e.vassals.values()):
        e.masters.close_channel(v)
    for *_, fd in launched:
        os.close(fd)


def test_the_emperor_refuses_and_tells_its_masters(driven):
    vassal(driven.dir, "plain.ini")
    vassal(driven.dir, "static.ini", "subscribe-to = 127.0.0.1:7000:s\n")
    driven.apply(Changes(new=["plain.ini", "static.ini"]))
    assert driven.vassals["static.ini"].state is S.CONFIG_ERROR
    assert driven.vassals["static.ini"].last_error == \
        'static.ini:5: option "subscribe-to" is not supported by emperor (strict-compat)'
    [(path, env, _)] = driven.launched
    assert path.endswith("plain.ini") and env[handoff.STRICT_COMPAT] == "1"


def test_a_master_reads_it_from_its_environment(tmp_path):
    """What the emperor passes reaches a master (and, the same way, its preflights)."""
    path = vassal(tmp_path, "app.ini", "subscribe-to = 127.0.0.1:7000:s\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{handoff.STRICT_COMPAT: "1"})
    r = subprocess.run([sys.executable, "-m", "emperor", "master", str(path)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert 'app.ini:5: option "subscribe-to" is not supported by emperor (strict-compat)' in r.stderr


def test_emperor_run_strict_compat(tmp_path, procs):
    d = tmp_path / "vassals"
    d.mkdir()
    vassal(d, "static.ini", "subscribe-to = 127.0.0.1:7000:s\n")
    plain = vassal(d, "plain.ini")
    port = int(plain.read_text().split("127.0.0.1:")[1].split()[0])
    p = procs([sys.executable, "-m", "emperor", "run", str(d), "--strict-compat"], tmp_path)
    p.wait_log('static.ini:5: option "subscribe-to" is not supported by emperor (strict-compat)', timeout=20)
    wait_for(lambda: answers(port), timeout=20)


def answers(port: int) -> bool:
    try:
        return urlopen(f"http://127.0.0.1:{port}/", timeout=2).read() == b"ok"
    except OSError:
        return False
