"""`emperor status` as a person sees it: an error wrapped where it reads well (on a tmux screen)."""
from __future__ import annotations

import re
import shutil
import sys

import pytest

from conftest import wait_for
from test_cli_find import runtime, start_emperor, vassals  # noqa: F401 (runtime is a fixture)
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

