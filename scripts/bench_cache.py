#!/usr/bin/env python3
"""The cache: uwsgi.cache_get / cache_update per second from 2 workers, emperor against uWSGI.

One vassal file for both (2 workers, `cache2 = name=bench,items=1000,blocksize=4096`), one
application: /fill sets 100 keys of 100 bytes; /run?op=get|set&n=N makes N calls in a loop
inside the worker (get: cache_get over the 100 keys; set: cache_update of them, since
cache_set fails on a key that exists) and answers how long the loop took. Both workers are
asked at once (two concurrent requests; a round is retried if one worker took both), so the
figure is the two workers' rates added: what the shared table and its locking allow with
two processes writing and reading it together. uWSGI is the PyPI build beside this Python
(`.venv/bin/uwsgi`), its cache the C one (rwlocks in shared memory).

Rounds are interleaved (emperor, uWSGI, then the other order...), figures are medians.

    flock /tmp/bench.lock python scripts/bench_cache.py --rounds 5
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UWSGI = Path(sys.executable).parent / "uwsgi"
APP = '''
import os, time
from urllib.parse import parse_qs
import uwsgi

KEYS = [("key%d" % i).encode() for i in range(100)]
VALUE = b"v" * 100

def application(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] == "/fill":
        for k in KEYS:
            uwsgi.cache_update(k, VALUE, 0, "bench")
        return [b"filled"]
    n = int(q["n"])
    get, update = uwsgi.cache_get, uwsgi.cache_update
    t0 = time.perf_counter()
    if q["op"] == "get":
        for i in range(n):
            get(KEYS[i % 100], "bench")
    else:
        for i in range(n):
            update(KEYS[i % 100], VALUE, 0, "bench")
    took = time.perf_counter() - t0
    return [("%d %.6f %d" % (n, took, os.getpid())).encode()]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as r:
        return r.read().decode()


def start(server: str, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    ini = work / f"{server}.ini"
    ini.write_text(f"[uwsgi]\nmaster = true\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {work / 'app.py'}\n"
                   "processes = 2\ndisable-logging = true\ncache2 = name=bench,items=1000,blocksize=4096\n")
    argv = [sys.executable, "-m", "emperor", "master", str(ini)] if server == "emperor" else [str(UWSGI), "--ini", str(ini)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(port, "/fill") == "filled":
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    time.sleep(0.5)   # both workers up (uWSGI forks them after the first answers)
    return p, port


def stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def both_workers(port: int, op: str, n: int) -> float:
    """ops/s of the two workers together (each one's own rate, added)."""
    for _ in range(20):
        answers: list[str] = []
        threads = [threading.Thread(target=lambda: answers.append(get(port, f"/run?op={op}&n={n}")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        parsed = [a.split() for a in answers]
        if len({p[2] for p in parsed}) == 2:
            return sum(int(p[0]) / float(p[1]) for p in parsed)
    raise RuntimeError("one worker took both requests every time")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=200_000, help="calls per worker per run")
    args = ap.parse_args()
    servers = ["emperor"] + (["uwsgi"] if UWSGI.exists() else [])
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "app.py").write_text(APP)
        for r in range(args.rounds):
            for server in servers if r % 2 == 0 else servers[::-1]:
                p, port = start(server, work)
                try:
                    for op in ("get", "set"):
                        rate = both_workers(port, op, args.n)
                        figures.setdefault((server, op), []).append(rate)
                        print(f"round {r + 1} {server:8} {op}: {rate:12,.0f} ops/s", flush=True)
                finally:
                    stop(p)
    print("\n| server | get ops/s (median) | set ops/s (median) |\n|---|---:|---:|")
    for server in servers:
        print(f"| {server} | {statistics.median(figures[(server, 'get')]):,.0f} | "
              f"{statistics.median(figures[(server, 'set')]):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
