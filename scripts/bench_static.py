#!/usr/bin/env python3
"""Static files: emperor's static-map against uWSGI's, on the same file set, over keep-alive.

The file set (made in a temp dir): 20 small files of 1-10 KiB and one of 1 MiB. Two loads,
`wrk -t1 -c32 --latency` over keep-alive: "small" cycles through the 20 small files (a wrk Lua
script), "1 MiB" asks for the large one. Contenders, 2 workers each, request logging off:

  emperor        http-socket, static-map (the application behind is never called)
  uwsgi          --http-socket --static-map: the setup scripts/bench_serve.py compares with;
                 uWSGI's http-socket answers HTTP/1.0-style, closing after each response, so
                 wrk reconnects for every request (counted as read errors by wrk)
  uwsgi-http11   --http11-socket --tcp-nodelay --static-map: uWSGI's keep-alive HTTP/1.1
                 socket. Without --tcp-nodelay it sends the head and the file in two writes
                 and Nagle holds the second behind the client's delayed ACK: ~40 ms per
                 response (45 req/s measured), so that variant is left out.

Runs are interleaved as in scripts/bench_serve.py (whose helpers this imports): each round
starts every contender once, in an order rotating from round to round; figures are medians
over rounds, ratios are emperor ÷ this, and the server CPU per request (utime + stime of the
whole process tree) is the figure least moved by other work on a shared machine. uWSGI comes
from the benchmark venv that bench_serve.py makes (/tmp/emperor-bench-venv).

    python scripts/bench_static.py --quick        # 1 round of 2 s runs
    python scripts/bench_static.py --rounds 5     # the figures in docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bs  # noqa: E402  (the helpers: processes, wrk parsing, venv)

SMALL = [1024 + i * 480 for i in range(20)]   # 1 KiB .. ~10 KiB
LARGE = 1 << 20
APP = "def application(environ, start_response):\n" \
      "    start_response('404 Not Found', [('Content-Length', '0')])\n    return [b'']\n"


def make_files(workdir: Path) -> Path:
    root = workdir / "files"
    (root / "css").mkdir(parents=True)
    for i, size in enumerate(SMALL):
        ext = ("css", "js", "html", "svg", "txt")[i % 5]
        (root / "css" / f"f{i}.{ext}").write_bytes(os.urandom(size // 2).hex().encode()[:size])
    (root / "large.bin").write_bytes(os.urandom(LARGE))
    (workdir / "app.py").write_text(APP)
    lua = "paths = {" + ", ".join(f'"/static/css/{p.name}"' for p in sorted((root / "css").iterdir())) + "}\n" \
          "i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n"
    (workdir / "small.lua").write_text(lua)
    return root


def emperor(port: int, workdir: Path, bindir: Path) -> bs.Server:
    ini = workdir / f"emperor-{port}.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {workdir}\nmodule = app:application\n"
                   f"processes = {bs.WORKERS}\ndisable-logging = true\nstatic-map = /static={workdir / 'files'}\n")
    env = {"PYTHONPATH": str(bs.EMPEROR_SRC)}
    return bs.Server("emperor", [sys.executable, "-m", "emperor", "master", str(ini)], port, workdir,
                     signal.SIGINT, env=env)


def uwsgi(port: int, workdir: Path, bindir: Path, http11: bool = False) -> bs.Server:
    sock = ["--http11-socket", f"127.0.0.1:{port}", "--tcp-nodelay"] if http11 else ["--http-socket", f"127.0.0.1:{port}"]
    argv = [str(bindir / "uwsgi"), *sock, "--master", "--processes", str(bs.WORKERS), "--disable-logging",
            "--chdir", str(workdir), "--module", "app:application", "--static-map", f"/static={workdir / 'files'}"]
    return bs.Server("uwsgi-http11" if http11 else "uwsgi", argv, port, workdir, signal.SIGINT)


SETUPS = {"emperor": emperor, "uwsgi": uwsgi, "uwsgi-http11": lambda p, w, b: uwsgi(p, w, b, True)}
LOADS = {"small": ["-s", "small.lua"], "1 MiB": []}
TARGET = {"small": "/static/css/f0.css", "1 MiB": "/static/large.bin"}


def ready(port: int, server: bs.Server, files: Path) -> None:
    deadline = time.monotonic() + 20
    want = (files / "large.bin").read_bytes()
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/large.bin", timeout=2) as r:
                if r.read() == want:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} does not serve the files:\n{server.log()}")


def wrk(port: int, duration: int, load: str, workdir: Path) -> dict:
    argv = [bs.WRK, "-t1", "-c32", f"-d{duration}s", "--latency", *LOADS[load], f"http://127.0.0.1:{port}{TARGET[load]}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, cwd=workdir)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr}{r.stdout}")
    return bs.parse_wrk(r.stdout)


def run_setup(name: str, workdir: Path, files: Path, bindir: Path, args, results) -> None:
    port = bs.free_port()
    srv = SETUPS[name](port, workdir, bindir)
    try:
        ready(port, srv, files)
        wrk(port, args.warmup, "small", workdir)
        for load in LOADS:
            pids = srv.tree()
            c0 = bs.cpu_seconds(pids)
            r = wrk(port, args.duration, load, workdir)
            r["cpu_us_per_req"] = (bs.cpu_seconds(pids) - c0) * 1e6 / max(r["requests"], 1)
            results[load][name].append(r)
            bs.say(f"    {load:6} {name:13} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:7.2f} ms  "
                   f"cpu {r['cpu_us_per_req']:6.1f} us/req  non2xx {r['non2xx']}  errors {r['errors']}")
    finally:
        srv.stop()


def report(results, args) -> str:
    med = bs.med
    out = [f"rounds: {args.rounds}, wrk -t1 -c32 -d{args.duration}s --latency, keep-alive, "
           f"{bs.WORKERS} workers each; medians over rounds", ""]
    for load in LOADS:
        base = results[load].get("emperor")
        if not base:
            continue
        out += [f"### {load}", "",
                "| server | req/s (median) | min–max | p99 ms | MB/s | emperor ÷ this (req/s) | "
                "same, median of per-round ratios | server CPU µs/req | CPU: this ÷ emperor |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        b = med([r["rps"] for r in base])
        bcpu = med([r["cpu_us_per_req"] for r in base])
        size = LARGE if load == "1 MiB" else sum(SMALL) / len(SMALL)
        for name in SETUPS:
            rs = results[load].get(name)
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            per_round = [a["rps"] / x["rps"] for a, x in zip(base, rs)]
            cpu = med([r["cpu_us_per_req"] for r in rs])
            dash = name == "emperor"
            out.append(f"| {name} | {med(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {med([r['p99_ms'] for r in rs]):.2f} "
                       f"| {med(rps) * size / 1e6:,.0f} | {'—' if dash else f'{b / med(rps):.2f}×'} "
                       f"| {'—' if dash else f'{med(per_round):.2f}×'} | {cpu:.0f} "
                       f"| {'—' if dash else f'{cpu / bcpu:.2f}×'} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of discarded wrk first")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    ap.add_argument("--only", nargs="*", choices=list(SETUPS))
    ap.add_argument("--venv", type=Path, default=bs.DEFAULT_VENV)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
    if bs.WRK is None:
        bs.say("wrk is needed: run scripts/install-test-deps.sh")
        return 2
    atexit.register(bs.stop_all)
    signal.signal(signal.SIGTERM, bs._on_signal)
    signal.signal(signal.SIGINT, bs._on_signal)
    bindir = bs.ensure_venv(args.venv, ["uwsgi"])
    workdir = Path(tempfile.mkdtemp(prefix="emperor-bench-static-"))
    bs.EMPEROR_SRC = bs.snapshot_emperor(workdir)
    files = make_files(workdir)
    order = [n for n in SETUPS if not args.only or n in args.only]
    results: dict = defaultdict(lambda: defaultdict(list))
    try:
        for rnd in range(args.rounds):
            k = rnd % len(order)
            this = order[k:] + order[:k]
            bs.say(f"round {rnd + 1}/{args.rounds}: {', '.join(this)}")
            for name in this:
                run_setup(name, workdir, files, bindir, args, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"emperor {bs.git_rev()}, uWSGI {bs.sh([str(bindir / 'uwsgi'), '--version'])}, {os.cpu_count()} CPUs\n")
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
