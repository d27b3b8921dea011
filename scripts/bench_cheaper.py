#!/usr/bin/env python3
"""Adaptive workers under a load that steps 1 -> 32 -> 1 connections, emperor vs uWSGI.

Each contender serves benchmarks/sleepy.py (each request waits 20 ms, as on a
database) with `processes = 16`, `cheaper = 1`, `cheaper-initial = 1`, `cheaper-step = 2`,
`cheaper-overload = 1`, under the cheaper algorithm named (spare, busyness). The load:
keep-alive clients, 1 for --low seconds, 32 for --high seconds, 1 again for --low
seconds. Every 0.5 s the script counts the server's workers (its master's children)
and, at the end of each phase, the PSS of its whole tree; each request's latency is
kept by phase. Contenders run one after another, in an order that rotates from round
to round; the figures are medians over rounds.

    python scripts/bench_cheaper.py --quick          # 1 round, shorter phases
    python scripts/bench_cheaper.py                  # 3 rounds (~5 min)

uWSGI comes from the benchmark venv (scripts/bench_serve.py: --venv).
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_serve as bs  # noqa: E402

PROCESSES = 16
OPTIONS = {"cheaper": 1, "cheaper-initial": 1, "cheaper-step": 2, "cheaper-overload": 1}
CONTENDERS = [("emperor spare", "emperor", "spare"), ("emperor busyness", "emperor", "busyness"),
              ("uWSGI spare", "uwsgi", "spare"), ("uWSGI busyness", "uwsgi", "busyness")]


def start(kind: str, algo: str, port: int, workdir: Path, bindir: Path) -> "bs.Server":
    opts = dict(OPTIONS, **{"cheaper-algo": algo})
    if kind == "emperor":
        ini = workdir / f"cheaper-{algo}-{port}.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {bs.BENCH}\nmodule = sleepy:application\n"
                       f"processes = {PROCESSES}\ndisable-logging = true\n"
                       + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        env = {"PYTHONPATH": str(bs.EMPEROR_SRC)}
        return bs.Server(f"emperor-{algo}", [sys.executable, "-m", "emperor", "master", str(ini)], port, workdir,
                         signal.SIGINT, env=env)
    argv = [str(bindir / "uwsgi"), "--http-socket", f"127.0.0.1:{port}", "--master", "--processes", str(PROCESSES),
            "--disable-logging", "--chdir", str(bs.BENCH), "--module", "sleepy:application", "--need-app"]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    return bs.Server(f"uwsgi-{algo}", argv, port, workdir, signal.SIGINT)


def workers(server: "bs.Server") -> int:
    return len(bs.descendants(server.pid))


class Clients:
    """`n` clients, keep-alive or (close) one connection per request as nginx without upstream
    keep-alive sends them; latencies (s) go to `sink` while running."""

    def __init__(self, port: int, close: bool = False) -> None:
        self.port = port
        self.close = close
        self.sink: list[float] = []
        self.errors = 0
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def add(self, n: int) -> None:
        for _ in range(n):
            flag = threading.Event()
            t = threading.Thread(target=self.run, args=(flag,), daemon=True)
            t.flag = flag  # type: ignore[attr-defined]
            self.threads.append(t)
            t.start()

    def remove(self, n: int) -> None:
        for t in self.threads[-n:]:
            t.flag.set()  # type: ignore[attr-defined]
        for t in self.threads[-n:]:
            t.join(10)
        self.threads = self.threads[:-n]

    def run(self, flag: threading.Event) -> None:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not flag.is_set() and not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                c.request("GET", "/", headers={"Connection": "close"} if self.close else {})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    self.errors += 1
                self.sink.append(time.perf_counter() - t0)
                if self.close:
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.close()


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(int(len(values) * 0.99), len(values) - 1)]


def one_run(name: str, kind: str, algo: str, workdir: Path, bindir: Path, low: float, high: float,
            close: bool = False) -> dict:
    port = bs.free_port()
    server = start(kind, algo, port, workdir, bindir)
    try:
        bs.probe(port, server=server)
        clients = Clients(port, close)
        timeline: list[tuple[float, int]] = []
        phases: dict[str, dict] = {}
        t0 = time.monotonic()
        for phase, n, length in (("1 conn", 1, low), ("32 conns", 32, high), ("1 conn again", 1, low)):
            if phase == "32 conns":
                clients.add(31)
            elif phase == "1 conn again":
                clients.remove(31)
            else:
                clients.add(1)
            clients.sink = []
            end = time.monotonic() + length
            while time.monotonic() < end:
                timeline.append((round(time.monotonic() - t0, 1), workers(server)))
                time.sleep(0.5)
            pss, procs = server.pss()
            phases[phase] = {"requests": len(clients.sink), "rps": len(clients.sink) / length, "p99_ms": p99(clients.sink) * 1000,
                             "workers_end": workers(server), "pss_mib": pss / 1024}
        clients.stop.set()
        clients.remove(1)
        return {"name": name, "phases": phases, "timeline": timeline, "errors": clients.errors,
                "max_workers": max(w for _, w in timeline)}
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--low", type=float, default=15.0, help="seconds at 1 connection (before and after)")
    ap.add_argument("--high", type=float, default=20.0, help="seconds at 32 connections")
    ap.add_argument("--quick", action="store_true", help="1 round, 8 s / 10 s phases")
    ap.add_argument("--venv", type=Path, default=bs.DEFAULT_VENV)
    ap.add_argument("--close", action="store_true",
                    help="one connection per request (Connection: close), as nginx without upstream keep-alive")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.low, args.high = 1, 8.0, 10.0
    bindir = bs.ensure_venv(args.venv, ["uwsgi"])
    atexit.register(bs.stop_all)
    signal.signal(signal.SIGTERM, bs._on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="emperor-bench-cheaper-"))
    rev = bs.git_rev()   # the code the snapshot holds, not what HEAD is when the run ends
    bs.EMPEROR_SRC = bs.snapshot_emperor(workdir)
    results: dict[str, list[dict]] = {n: [] for n, _, _ in CONTENDERS}
    for r in range(args.rounds):
        order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[:r % len(CONTENDERS)]
        for name, kind, algo in order:
            bs.say(f"round {r + 1}: {name}")
            results[name].append(one_run(name, kind, algo, workdir, bindir, args.low, args.high, args.close))
    print(f"\n## cheaper, 1 -> 32 -> 1 {'clients, a connection per request' if args.close else 'keep-alive connections'}, {PROCESSES} processes max, "
          f"{'; '.join(f'{k} = {v}' for k, v in OPTIONS.items())}; emperor {rev}; "
          f"{args.rounds} round(s), medians\n")
    print("| contender | workers at 1 conn | max workers | workers after | p99 at 1 conn | p99 at 32 | "
          "p99 after | req/s at 32 | PSS at 32 (MiB) | PSS after (MiB) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        def med(phase: str, key: str) -> float:
            return statistics.median(run["phases"][phase][key] for run in runs)
        print(f"| {name} | {med('1 conn', 'workers_end'):.0f} | "
              f"{statistics.median(run['max_workers'] for run in runs):.0f} | {med('1 conn again', 'workers_end'):.0f} | "
              f"{med('1 conn', 'p99_ms'):.1f} ms | {med('32 conns', 'p99_ms'):.1f} ms | {med('1 conn again', 'p99_ms'):.1f} ms | "
              f"{med('32 conns', 'rps'):.0f} | "
              f"{med('32 conns', 'pss_mib'):.1f} | {med('1 conn again', 'pss_mib'):.1f} | "
              f"{sum(run['errors'] for run in runs)} |")
    print("\nWorkers over time (first round; seconds: workers):\n")
    for name, runs in results.items():
        tl = runs[0]["timeline"][::4]
        print(f"- {name}: " + " ".join(f"{t:g}:{w}" for t, w in tl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
