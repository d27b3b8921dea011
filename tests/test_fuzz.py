"""The request-parser fuzzer (scripts/fuzz.py) as a standing test: a bounded number of
cases per protocol against a real master, judged by the fuzzer's own RFC 9112 oracle.

The master comes from the `master` fixture (killed by PID at teardown); it serves
tests/apps/echo.py with the fuzzer's settings (2 processes x 2 threads,
socket-timeout 1). The seed is fixed, so a failure here reproduces with
`python scripts/fuzz.py --protocol P --seed 7 --cases 1500`.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from support import free_port

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz", ROOT / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["fuzz"] = fuzz  # its dataclasses look themselves up there
_spec.loader.exec_module(fuzz)

CASES = 1500
SEED = 7


@pytest.mark.timeout(180)
@pytest.mark.parametrize("protocol,buffer_size", [("http", 4096), ("uwsgi", 16384)])
def test_fuzzed_requests_are_answered_as_the_oracle_predicts(master, protocol, buffer_size):
    """Valid requests get their 2xx and the right echo, invalid ones never a 2xx; no 500,
    no worker lost, nothing left hanging (fuzz.judge)."""
    uport = free_port()
    p = master(f"socket = 127.0.0.1:{uport}\nprocesses = 2\nthreads = 2\nsocket-timeout = 1\n"
               f"buffer-size = {buffer_size}\ndisable-logging = true\n",
               app=fuzz.ECHO_APP.read_text())
    port = p.port if protocol == "http" else uport
    fz = fuzz.Fuzzer(protocol, port, p.pid, p.log_path, buffer_size=buffer_size, socket_timeout=1.0)
    assert len(fz.workers) == 2
    summary = fz.run(CASES, SEED, minimize=True)
    assert not summary.failures, summary.text()
    assert summary.cases == CASES
    assert summary.answered > CASES // 10, summary.text()   # the corpus still yields valid requests
    assert fuzz.children(p.pid) == fz.workers
