#!/usr/bin/env python3
"""Failed requests and reload stall under continuous load, emperor vs uWSGI vs gunicorn.

For each contender, a load of keep-alive and new-connection clients (the
generator of tests/loadgen.py) runs for --duration seconds while the server
gets its reload signal every --interval seconds:

    emperor graceful (SIGHUP), emperor brutal (SIGTERM),
    uWSGI (SIGHUP), uWSGI (SIGTERM), gunicorn sync (SIGHUP)

For each reload, the *stall* is the longest time with no response completed
between that reload's signal and the next one; a run reports the median and the
worst stall, the requests served and the failed requests. Contenders are
interleaved over --rounds rounds (the order rotates), figures are medians over
rounds. Servers, venv and clean-up come from scripts/bench_serve.py.

    python scripts/bench_reload.py --quick       # 1 round, 5 s each
    python scripts/bench_reload.py               # 3 rounds, 20 s each (~6 min)
"""
from __future__ import annotations

import argparse
import atexit
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_serve as bs  # noqa: E402
from loadgen import Load  # noqa: E402

CONTENDERS = [
    ("emperor HUP", "emperor", signal.SIGHUP),
    ("emperor TERM", "emperor", signal.SIGTERM),
    ("uWSGI HUP", "uwsgi", signal.SIGHUP),
    ("uWSGI TERM", "uwsgi", signal.SIGTERM),
    ("gunicorn HUP", "gunicorn", signal.SIGHUP),
]


REVISIONS: dict[str, Path] = {}   # --rev: contender kind "emperor@REV" -> its emperor/ source


def start(kind: str, port: int, workdir: Path, bindir: Path) -> "bs.Server":
    if kind == "emperor":
        return bs.emperor(port, workdir, bindir)
    if kind in REVISIONS:
        return bs.emperor(port, workdir, bindir, "http", REVISIONS[kind])
    if kind == "uwsgi":
        return bs.uwsgi(port, workdir, bindir)
    return bs.gunicorn(port, workdir, bindir, "sync")


def one_run(name: str, kind: str, sig: int, workdir: Path, bindir: Path, duration: float,
            interval: float) -> dict:
    port = bs.free_port()
    server = start(kind, port, workdir, bindir)
    try:
        bs.probe(port, server=server)
        time.sleep(0.5)
        marks = []
        with Load(port, keepalive=2, fresh=2) as load:
            time.sleep(1.0)
            t_end = time.monotonic() + duration
            while time.monotonic() + interval <= t_end:
                marks.append(time.monotonic())
                server.popen.send_signal(sig)
                time.sleep(interval)
            marks.append(time.monotonic())
        r = load.result
        stalls = [r.stall(a, b) * 1000 for a, b in zip(marks, marks[1:])]
        return {"name": name, "ok": r.ok, "failed": r.failed, "retried": r.retried,
                "reloads": len(marks) - 1, "stall_med": statistics.median(stalls),
                "stall_max": max(stalls), "errors": r.errors[:3]}
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--venv", type=Path, default=bs.DEFAULT_VENV)
    ap.add_argument("--rev", action="append", metavar="REV",
                    help="also emperor/ as git revision REV has it (HUP and TERM), interleaved: before/after figures")
    ap.add_argument("--only", nargs="*", help="run these contenders only (names as in the table)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 5.0
    bindir = bs.ensure_venv(args.venv, ["gunicorn", "uwsgi"])
    atexit.register(bs.stop_all)
    signal.signal(signal.SIGINT, bs._on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="emperor-reload-bench-"))
    bs.EMPEROR_SRC = bs.snapshot_emperor(workdir)   # the same code every round, whatever the tree does meanwhile
    for spec in args.rev or []:
        REVISIONS[f"emperor@{spec}"] = bs.revision_source(spec, workdir)
        CONTENDERS.extend([(f"emperor@{spec} HUP", f"emperor@{spec}", signal.SIGHUP),
                           (f"emperor@{spec} TERM", f"emperor@{spec}", signal.SIGTERM)])
    if args.only:
        CONTENDERS[:] = [c for c in CONTENDERS if c[0] in args.only]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in CONTENDERS}
    for rnd in range(args.rounds):
        order = CONTENDERS[rnd % len(CONTENDERS):] + CONTENDERS[:rnd % len(CONTENDERS)]
        for name, kind, sig in order:
            bs.say(f"round {rnd + 1}/{args.rounds}: {name} ...")
            res = one_run(name, kind, sig, workdir, bindir, args.duration, args.interval)
            bs.say(f"  {res['ok']} ok, {res['failed']} failed, {res['retried']} retried, "
                   f"stall median {res['stall_med']:.0f} ms, worst {res['stall_max']:.0f} ms {res['errors']}")
            runs[name].append(res)
    print(f"\nReload under load: {args.rounds} round(s), {args.duration:.0f} s each, "
          f"a reload every {args.interval:.1f} s; 2 keep-alive + 2 new-connection clients\n")
    print("| server, signal | reloads/run | responses/run | failed/run | keep-alive retries/run "
          "| stall per reload, median | worst stall |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in CONTENDERS:
        rs = runs[name]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"| {name} | {med('reloads'):.0f} | {med('ok'):.0f} | {med('failed'):.0f} "
              f"| {med('retried'):.0f} | {med('stall_med'):.0f} ms | {max(r['stall_max'] for r in rs):.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
