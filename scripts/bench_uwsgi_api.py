#!/usr/bin/env python3
"""What the `uwsgi` module costs a request: the hello-world app (benchmarks/hello.py) against
the same app importing `uwsgi` and `uwsgidecorators` with a 1 s @timer and @postfork
(the master then has the signal part, the workers the shared area, and each request
records its environ for set_logvar/request_id).

Both under one emperor master each (2 workers, logging off), driven by
`wrk -t1 -c32` over keep-alive, rounds interleaved (the order rotates) so that noise
from other work on the machine spreads over both; prints the median requests/s and
µs/request of each and their ratio.

    flock /tmp/bench.lock python scripts/bench_uwsgi_api.py --rounds 5 --duration 5
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USING = '''
import uwsgi
from uwsgidecorators import postfork, timer
from hello import application

@postfork
def connect():
    pass

@timer(1)
def tick(num):
    pass
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, name: str, module: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    ini = tmp / f"{name}.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp}\nmodule = {module}\n"
                   f"pythonpath = {ROOT / 'benchmarks'}\nprocesses = 2\ndisable-logging = true\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(tmp / f"{name}.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "emperor", "master", str(ini)], cwd=tmp, env=env,
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b"running (workers ready)" not in (tmp / f"{name}.log").read_bytes():
        if time.monotonic() > deadline or p.poll() is not None:
            raise SystemExit(f"{name} did not start: see {tmp / (name + '.log')}")
        time.sleep(0.05)
    return p, port


def wrk(port: int, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise SystemExit(out)
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "using_uwsgi.py").write_text(USING)
        servers = {"plain": start(tmp, "plain", "hello"), "uwsgi": start(tmp, "uwsgi", "using_uwsgi")}
        try:
            for _, port in servers.values():
                wrk(port, 1)   # warm-up
            rates: dict[str, list[float]] = {k: [] for k in servers}
            names = list(servers)
            for r in range(args.rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    rates[name].append(wrk(servers[name][1], args.duration))
        finally:
            for p, _ in servers.values():
                p.send_signal(signal.SIGINT)
                p.wait(10)
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:6} {v:9.0f} req/s  {1e6 / v * 2:6.1f} µs/request/worker  rounds {[round(x) for x in rates[k]]}")
    print(f"uwsgi/plain: {med['uwsgi'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
