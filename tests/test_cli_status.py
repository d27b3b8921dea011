"""`emperor status` as a person sees it: an error wrapped where it reads well (on a tmux screen),
and requests per second in a single `--once` frame."""
from __future__ import annotations

import re
import shutil
import sys
import threading

import pytest

from conftest import wait_for
from test_cli_find import cli, runtime, start_emperor, vassals  # noqa: F401 (runtime is a fixture)
from test_master import get
from test_status import Tmux

pytestmark = pytest.mark.timeout(60)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_live_view_wraps_an_error_after_its_address_not_after_backoff(tmp_path, procs, runtime):
    port = vassals(tmp_path / "vassals.d", "a.ini")["a.ini"]
    e = start_emperor(procs, tmp_path, running=("a.ini",))
    vassals(tmp_path / "vassals.d", "b.ini", port=port)           # the same port: b backs off
    e.wait_log("b.ini: starting -> backoff")
    tmux = Tmux(tmp_path)
    try:
        tmux.keys(f"{sys.executable} -m emperor status", "Enter")
        bind = f"cannot bind http socket 127.0.0.1:{port}:"

        def wrapped() -> list[str] | None:
            lines = [l.rstrip() for l in tmux.screen().splitlines()]
            at = [i for i, l in enumerate(lines) if l.startswith("b.ini ")]
            if at and at[0] + 2 < len(lines) and bind in lines[at[0] + 1]:
                return lines[at[0] + 1:at[0] + 3]
            return None

        first, second = wait_for(wrapped, timeout=15)
        assert re.fullmatch(rf"  backoff \d+s: exited 1: {re.escape(bind)}", first), first
        assert re.fullmatch(r"  address already in use \(retry in [1-9]\d*s\)", second), second
        tmux.keys("C-c")
        wait_for(lambda: "VASSAL" not in tmux.screen(), timeout=5)
    finally:
        tmux.kill()


def test_once_shows_requests_per_second(tmp_path, procs, runtime):
    port = vassals(tmp_path / "vassals.d", "app.ini")["app.ini"]
    start_emperor(procs, tmp_path, running=("app.ini",))
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            get(port)
            stop.wait(0.01)

    t = threading.Thread(target=load)
    t.start()
    try:
        r = cli("status", "--once", cwd=tmp_path)   # the first status request this emperor gets
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        header = next(l.split() for l in lines if l.startswith("VASSAL"))
        row = next(l.split() for l in lines if l.startswith("app.ini"))
        rps = row[header.index("REQ/S")]
        assert rps != "-" and float(rps) > 5, r.stdout
        r = cli("status", "app", "--once", cwd=tmp_path)
        m = re.search(r" · ([\d.]+) req/s · ", r.stdout)
        assert m and float(m.group(1)) > 5, r.stdout
    finally:
        stop.set()
        t.join()
