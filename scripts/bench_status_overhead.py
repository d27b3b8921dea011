#!/usr/bin/env python3
"""What watching costs the serving path: wrk against an emperor-managed vassal, watched or not.

One emperor, one vassal (a 13-byte hello world, 2 workers, `disable-logging`),
driven by `wrk -t1 -c32 -d5s --latency` in three modes:

  idle     nobody asks the emperor anything
  status   a live `emperor status` runs in a pseudo-terminal (80x24), refreshing every second
  query    a loop asks the control socket for the full status every 0.5 s

Each status request makes the emperor fetch the master's stats document, so
`query` is twice what a person watching costs. Rounds are interleaved (the mode
order rotates each round) so that noise from other work spreads over all modes;
the figures are medians over rounds. Every process is started by PID and
stopped by PID (SIGINT to the emperor, then SIGKILL to whatever of its process
group is left).

    python scripts/bench_status_overhead.py            # 3 rounds of 5 s per mode (~50 s)
    python scripts/bench_status_overhead.py --rounds 1 --duration 2
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK = shutil.which("wrk")
APP = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
'''
QUERY_LOOP = '''
import sys, time
from emperor.wire.control import query
path, n = sys.argv[1], 0
while True:
    query(path)
    n += 1
    print(n, flush=True)
    time.sleep(0.5)
'''
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wrk(port: int, duration: int) -> dict:
    argv = [WRK, "-t1", "-c32", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not p99:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return {"rps": float(rps[1]), "p99_ms": float(p99[1]) * UNIT[p99[2]],
            "errors": sum(int(x) for x in errors.groups()) if errors else 0,
            "non2xx": int(non2xx[1]) if non2xx else 0}


def stop(p: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """`sig` to the process, then SIGKILL to its process group (it leads one: start_new_session)."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
            p.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass


class Watcher:
    """`status`: a live `emperor status` in an 80x24 pty; `query`: the 0.5 s control-socket loop."""

    def __init__(self, mode: str, cwd: Path, env: dict) -> None:
        self.frames = 0
        self.mode = mode
        if mode == "status":
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            self.p = subprocess.Popen([sys.executable, "-m", "emperor", "status"], cwd=cwd,
                                      env=dict(env, TERM="xterm-256color"), stdin=slave, stdout=slave,
                                      stderr=slave, start_new_session=True)
            os.close(slave)
            self.out = master
            marker = b"VASSAL"     # one per frame
        else:
            r, w = os.pipe()
            self.p = subprocess.Popen([sys.executable, "-c", QUERY_LOOP, env["EMPEROR_CONTROL"]], cwd=cwd,
                                      env=env, stdout=w, start_new_session=True)
            os.close(w)
            self.out = r
            marker = b"\n"
        self.reader = threading.Thread(target=self._read, args=(marker,), daemon=True)
        self.reader.start()

    def _read(self, marker: bytes) -> None:
        while True:
            try:
                data = os.read(self.out, 65536)
            except OSError:
                return
            if not data:
                return
            self.frames += data.count(marker)

    def stop(self) -> int:
        stop(self.p, signal.SIGINT if self.mode == "status" else signal.SIGTERM)  # Ctrl-C, as a person would
        self.reader.join(2)
        try:
            os.close(self.out)
        except OSError:
            pass
        return self.frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    if WRK is None:
        say("wrk is not installed (scripts/install-test-deps.sh)")
        return 1
    sys.path.insert(0, str(ROOT))
    from emperor import paths

    work = Path(tempfile.mkdtemp(prefix="emperor-status-bench-"))
    vassals = work / "vassals.d"
    vassals.mkdir()
    (work / "hello.py").write_text(APP)
    port = free_port()
    (vassals / "hello.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {work}\n"
                                       f"module = hello:application\nprocesses = 2\ndisable-logging = true\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env["EMPEROR_CONTROL"] = paths.control_socket(str(vassals))
    log = open(work / "emperor.log", "wb")
    emperor = subprocess.Popen([sys.executable, "-m", "emperor", "run"], cwd=work, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    modes = ["idle", "status", "query"]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    frames: dict[str, list[int]] = {m: [] for m in modes}
    try:
        wait_port(port)
        say(f"emperor pid {emperor.pid}, vassal on 127.0.0.1:{port}; warming up")
        wrk(port, 1)
        for rnd in range(args.rounds):
            order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
            for mode in order:
                watcher = Watcher(mode, work, env) if mode != "idle" else None
                time.sleep(1.0)   # the watcher has started and asked at least once
                r = wrk(port, args.duration)
                frames[mode].append(watcher.stop() if watcher else 0)
                results[mode].append(r)
                say(f"round {rnd + 1} {mode:6s}: {r['rps']:9.0f} req/s  p99 {r['p99_ms']:6.2f} ms"
                    + (f"  ({frames[mode][-1]} answers seen)" if watcher else ""))
    finally:
        stop(emperor, signal.SIGINT)
        log.close()
    base = statistics.median(r["rps"] for r in results["idle"])
    print(f"\nwrk -t1 -c32 -d{args.duration}s, emperor-managed vassal (2 workers, disable-logging), "
          f"{args.rounds} interleaved rounds, medians; {os.cpu_count()} CPUs")
    print(f"{'mode':28s} {'req/s':>9s} {'vs idle':>8s} {'p99 ms':>7s} {'errors':>6s}")
    labels = {"idle": "nobody watching", "status": "emperor status (live, 1 s)",
              "query": "control query every 0.5 s"}
    for mode in modes:
        rps = statistics.median(r["rps"] for r in results[mode])
        p99 = statistics.median(r["p99_ms"] for r in results[mode])
        errs = sum(r["errors"] + r["non2xx"] for r in results[mode])
        print(f"{labels[mode]:28s} {rps:9.0f} {rps / base:8.3f} {p99:7.2f} {errs:6d}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
