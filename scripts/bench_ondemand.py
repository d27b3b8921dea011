#!/usr/bin/env python3
"""On-demand vassals (issue 17), side by side with uWSGI's on-demand emperor.

Both emperors run with `--emperor-on-demand-extension .socket`: vassal NAME.ini,
its TCP address in NAME.ini.socket (uWSGI's protocol, core/emperor.c), the same
vassal file for both (`protocol = http`: the socket the emperor hands over speaks
HTTP; `idle` + `die-on-idle`: back to no master). Sections:

1. cold: N vassals of a hello app (and of a Django app), each first request on
   a fresh connection is a cold start; the time from connect() to the first byte
   of the response, p50/p99, requests interleaved between the contenders. Then
   the vassals go idle (their masters exit) and a second round measures again.
2. thousand: 1,000 on-demand vassals; time from the emperor's start until all
   1,000 ports listen (/proc/net/tcp), the emperor's RSS, the CPU of the whole
   tree over 20 idle seconds; then 50 of them under a trickle (each hit every
   ~0.5 s), the PSS of the tree and of one active vassal (its master + worker).
3. soak: 200 vassals with idle = 1, a client hits a random one every 10 ms for
   S seconds (each request on its own thread); failed requests counted.

    flock /tmp/bench.lock python scripts/bench_ondemand.py --quick      # a few minutes
    flock /tmp/bench.lock python scripts/bench_ondemand.py --json /tmp/od.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
UWSGI = str(ROOT / ".venv" / "bin" / "uwsgi")
HELLO = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]
'''
LIVE: list[subprocess.Popen] = []
# what `emperor run --preimport` would import for a Django vassal: safe before django.setup()
DJANGO_PREIMPORT = ["django.core.wsgi", "django.core.handlers.wsgi", "django.urls", "django.db.models",
                    "django.forms", "django.template.defaulttags", "django.contrib.admin.sites",
                    "django.contrib.auth.base_user", "django.contrib.sessions.backends.db",
                    "django.contrib.staticfiles.handlers", "django.middleware.common",
                    "django.middleware.csrf", "django.contrib.messages.storage.fallback"]


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def vassal(appdir: Path, module: str, idle: int, extra: str = "") -> str:
    return (f"[uwsgi]\nchdir = {appdir}\nmodule = {module}\nprotocol = http\nmaster = true\n"
            f"processes = 1\nneed-app = true\ndisable-logging = true\nidle = {idle}\ndie-on-idle = true\n"
            + extra)


def ports(n: int, start: int) -> list[int]:
    out, p = [], start
    while len(out) < n:
        if bs.port_bindable(p):
            out.append(p)
        p += 1
    return out


def write_vassals(d: Path, names_ports: list[tuple[str, int]], body: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, port in names_ports:
        (d / f"{name}.ini.socket").write_text(f"127.0.0.1:{port}\n")
        (d / f"{name}.ini").write_text(body)


def start(kind: str, d: Path, log: Path) -> subprocess.Popen:
    if kind.startswith("emperor"):
        argv = [PY, "-m", "emperor", "run", str(d), "--emperor-on-demand-extension", ".socket",
                "--control", str(d.parent / f"{d.name}.ctl")]
        if kind == "emperor-preimport":
            argv += ["--preimport", ",".join(DJANGO_PREIMPORT)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
    else:
        argv = [UWSGI, "--emperor", str(d), "--emperor-on-demand-extension", ".socket"]
        env = dict(os.environ)
    p = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env,
                         stdin=subprocess.DEVNULL, cwd=str(d.parent), start_new_session=True)
    LIVE.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    tree = [p.pid] + bs.descendants(p.pid)
    try:
        os.kill(p.pid, signal.SIGINT)
        p.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if p in LIVE:
        LIVE.remove(p)


def listening(port_set: set[int]) -> int:
    """How many of these TCP ports are in LISTEN (state 0A) on 127.0.0.1, from /proc/net/tcp."""
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A":
                port = int(parts[1].split(":")[1], 16)
                if port in port_set:
                    found.add(port)
    return len(found)


def first_byte(port: int, timeout: float = 30.0) -> tuple[float | None, bytes]:
    """connect + GET -> (seconds to the first byte of the response, the whole response)."""
    t0 = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(b"GET / HTTP/1.0\r\nHost: b\r\n\r\n")
        data = s.recv(65536)
        t1 = time.perf_counter()
        while True:
            more = s.recv(65536)
            if not more:
                break
            data += more
        s.close()
    except OSError as e:
        return None, repr(e).encode()
    return (t1 - t0 if data else None), data


def masters_gone(p: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not bs.descendants(p.pid):
            return True
        time.sleep(0.2)
    return False


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def cold(work: Path, app: str, module: str, n: int, rounds: int, kinds: list[str]) -> dict:
    """n vassals per contender, each cold-started once per round, the requests interleaved."""
    res: dict = {}
    procs, vports = {}, {}
    for i, kind in enumerate(kinds):
        d = work / f"cold-{app}-{kind}"
        pl = ports(n, 21000 + 2000 * i + (500 if app == "django" else 0))
        write_vassals(d, [(f"v{j}", pl[j]) for j in range(n)], vassal(work / app, module, idle=2))
        procs[kind] = start(kind, d, work / f"cold-{app}-{kind}.log")
        vports[kind] = pl
    for kind in kinds:   # every port bound by its emperor
        deadline = time.monotonic() + 60
        while listening(set(vports[kind])) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    for r in range(rounds):
        for kind in kinds:
            if not masters_gone(procs[kind], 60):
                say(f"  {kind}: masters still there before round {r}")
        for j in range(n):
            for kind in (kinds if j % 2 == 0 else kinds[::-1]):
                t, data = first_byte(vports[kind][j])
                ok = t is not None and b" 200 " in data.split(b"\r\n", 1)[0]
                res.setdefault(kind, {"t": [], "fail": 0})
                if ok:
                    res[kind]["t"].append(t)
                else:
                    res[kind]["fail"] += 1
                    say(f"  {kind} v{j}: {data[:120]!r}")
    for kind in kinds:
        stop(procs[kind])
        ts = res[kind]["t"]
        res[kind].update(n=len(ts), p50_ms=pct(ts, 0.5) * 1e3 if ts else None, p99_ms=pct(ts, 0.99) * 1e3 if ts else None,
                         max_ms=max(ts) * 1e3 if ts else None)
        say(f"  cold {app:7} {kind:8} n={len(ts)} p50 {res[kind]['p50_ms']:.1f} ms  p99 {res[kind]['p99_ms']:.1f} ms"
            f"  max {res[kind]['max_ms']:.1f} ms  failed {res[kind]['fail']}")
        del res[kind]["t"]
    return res


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def thousand(work: Path, kinds: list[str], n: int, idle_s: float, active: int) -> dict:
    res: dict = {}
    for i, kind in enumerate(kinds):
        d = work / f"k-{kind}"
        pl = ports(n, 30000 + 3000 * i)
        write_vassals(d, [(f"v{j}", pl[j]) for j in range(n)], vassal(work / "hello", "hello:application", idle=30))
        t0 = time.monotonic()
        p = start(kind, d, work / f"k-{kind}.log")
        want = set(pl)
        while listening(want) < n and time.monotonic() - t0 < 120:
            time.sleep(0.02)
        r: dict = {"bound": listening(want), "bound_s": time.monotonic() - t0}
        time.sleep(3.0)   # settle (uWSGI's emperor scans every 3 s)
        r["emperor_rss_mib"] = rss_kib(p.pid) / 1024
        tree = [p.pid] + bs.descendants(p.pid)
        c0 = bs.cpu_seconds(tree)
        time.sleep(idle_s)
        r["idle_cpu_ms_per_10s"] = (bs.cpu_seconds([p.pid] + bs.descendants(p.pid)) - c0) * 1e3 * 10 / idle_s
        r["idle_procs"] = 1 + len(bs.descendants(p.pid))
        # a trickle over `active` of them: each hit about every 0.5 s for 20 s
        stop_at = time.monotonic() + 20
        fails = 0
        while time.monotonic() < stop_at:
            for port in pl[:active]:
                t, data = first_byte(port)
                fails += t is None
                time.sleep(0.5 / active)
        tree = [p.pid] + bs.descendants(p.pid)
        pss = {q: bs.pss_kib(q) for q in tree}
        r["active_pss_mib"] = sum(pss.values()) / 1024
        r["emperor_pss_mib"] = pss[p.pid] / 1024
        masters = [q for q in tree if q != p.pid and bs_parent(q) == p.pid]
        per = [pss.get(m, 0) + sum(pss.get(w, 0) for w in bs.descendants(m)) for m in masters]
        r["active_masters"] = len(masters)
        r["one_vassal_pss_mib"] = statistics.median(per) / 1024 if per else None
        r["trickle_failed"] = fails
        stop(p)
        res[kind] = r
        say(f"  {n} {kind:8} all bound in {r['bound_s']:.2f}s ({r['bound']}), emperor RSS {r['emperor_rss_mib']:.1f} MiB, "
            f"idle CPU {r['idle_cpu_ms_per_10s']:.1f} ms/10s ({r['idle_procs']} procs); {active} active: "
            f"PSS {r['active_pss_mib']:.0f} MiB, one vassal {r['one_vassal_pss_mib'] or 0:.1f} MiB, "
            f"emperor {r['emperor_pss_mib']:.1f} MiB, failed {fails}")
    return res


def bs_parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def soak(work: Path, kinds: list[str], n: int, seconds: float, every: float) -> dict:
    res: dict = {}
    for i, kind in enumerate(kinds):
        d = work / f"soak-{kind}"
        pl = ports(n, 40000 + 2000 * i)
        write_vassals(d, [(f"v{j}", pl[j]) for j in range(n)], vassal(work / "hello", "hello:application", idle=1))
        p = start(kind, d, work / f"soak-{kind}.log")
        deadline = time.monotonic() + 60
        while listening(set(pl)) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)
        rng = random.Random(17)
        out = {"ok": 0, "failed": 0, "errors": [], "lat": []}
        lock = threading.Lock()

        def hit(port: int) -> None:
            t, data = first_byte(port, timeout=30)
            ok = t is not None and b" 200 " in data.split(b"\r\n", 1)[0]
            with lock:
                if ok:
                    out["ok"] += 1
                    out["lat"].append(t)
                else:
                    out["failed"] += 1
                    if len(out["errors"]) < 5:
                        out["errors"].append(data[:120].decode("latin-1"))
        threads = []
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            th = threading.Thread(target=hit, args=(rng.choice(pl),), daemon=True)
            th.start()
            threads.append(th)
            k += 1
            time.sleep(max(t0 + k * every - time.monotonic(), 0))
        for th in threads:
            th.join(60)
        log = (work / f"soak-{kind}.log").read_text(errors="replace")
        cycles = log.count("back to on-demand") if kind.startswith("emperor") else log.count('back to "on demand" mode')
        lat = out.pop("lat")
        out.update(requests=k, cycles=cycles, p50_ms=pct(lat, 0.5) * 1e3 if lat else None,
                   p99_ms=pct(lat, 0.99) * 1e3 if lat else None)
        stop(p)
        res[kind] = out
        say(f"  soak {kind:8} {k} requests over {seconds:g}s: ok {out['ok']}, failed {out['failed']}, "
            f"idle->on-demand cycles {cycles}, p50 {out['p50_ms'] or 0:.1f} ms p99 {out['p99_ms'] or 0:.1f} ms "
            f"{out['errors'][:2]}")
    return res


def django_import_cost(work: Path) -> dict:
    """What a Django vassal's own import costs in a fork of a warm interpreter, and with django's
    modules imported before the fork (what a --preimport in the emperor would take out)."""
    code = f'''
import os, sys, time
PREIMPORT = {DJANGO_PREIMPORT!r}
sys.path.insert(0, {str(work / "django")!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
def child():
    t = time.perf_counter()
    import mysite.wsgi
    return time.perf_counter() - t
def fork_time(pre):
    r, w = os.pipe()
    if os.fork() == 0:
        os.write(w, repr(child()).encode()); os._exit(0)
    os.close(w); v = float(os.read(r, 64)); os.wait(); return v
cold = sorted(fork_time(False) for _ in range(7))[3]
import importlib
done = []
for name in PREIMPORT:
    try:
        importlib.import_module(name)
        done.append(name)
    except Exception:
        pass
print(",".join(done), file=sys.stderr)
warm = sorted(fork_time(True) for _ in range(7))[3]
print(cold, warm)
'''
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    try:
        cold, warm = (float(x) for x in out.stdout.split())
    except ValueError:
        say("django import cost:", out.stderr[-500:])
        return {}
    say(f"  preimported: {out.stderr.strip()}")
    say(f"  django app import in a fork: {cold * 1e3:.0f} ms; with django preimported: {warm * 1e3:.0f} ms")
    return {"import_ms": cold * 1e3, "import_preimported_ms": warm * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller: 20 cold starts, 200 vassals, 15 s soak")
    ap.add_argument("--only", default="cold,django,thousand,soak")
    ap.add_argument("--kinds", default="emperor,uwsgi")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    only = args.only.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench-od-"))
    (work / "hello").mkdir()
    (work / "hello" / "hello.py").write_text(HELLO)
    shutil.copytree(ROOT / "tests" / "apps" / "djangosite", work / "django")
    data: dict = {"machine": {"cpus": os.cpu_count(), "rev": bs.git_rev()}}
    q = args.quick
    try:
        if "cold" in only:
            data["cold_hello"] = cold(work, "hello", "hello:application", 20 if q else 60, 1 if q else 2, kinds)
        if "django" in only:
            data["cold_django"] = cold(work, "django", "mysite.wsgi:application", 10 if q else 30, 1 if q else 2,
                                       kinds + (["emperor-preimport"] if "emperor" in kinds else []))
            data["django_import"] = django_import_cost(work)
        if "thousand" in only:
            data["thousand"] = thousand(work, kinds, 200 if q else 1000, 10 if q else 20, 50)
        if "soak" in only:
            data["soak"] = soak(work, kinds, 200, 15 if q else 60, 0.010)
    finally:
        for p in list(LIVE):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
