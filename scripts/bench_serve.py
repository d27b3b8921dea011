#!/usr/bin/env python3
"""Throughput, p99 latency and memory of emperor against gunicorn and uWSGI.

The same hello-world app (benchmarks/hello.py, a 13-byte body) with 2 workers under:

  direct, driven by `wrk -t1 -c32 --latency`, over keep-alive and with
  `Connection: close`:
      emperor (http-socket), gunicorn sync, gunicorn gthread (4 threads),
      uWSGI (--http-socket --master --processes 2)
  behind nginx (1 worker process, client keep-alive):
      nginx -> emperor (uwsgi_pass), nginx -> uWSGI (uwsgi_pass),
      nginx -> gunicorn sync (proxy_pass),
      nginx -> emperor's http-socket over pooled HTTP/1.1 upstream connections
      (proxy_pass, `keepalive 32`): not the issue's setup, but what an operator
      can choose, since nginx keeps no upstream connections for uwsgi_pass
  PSS (/proc/PID/smaps_rollup) of master + 2 workers, after warm-up traffic.

Runs are interleaved: every round starts each server once, in an order that
rotates from round to round, so that noise from other work on the machine
spreads over all contenders; figures are medians over rounds, and comparisons
are ratios. Request logging is off everywhere (emperor `disable-logging`,
uWSGI `--disable-logging`, gunicorn's access log is off unless asked for,
nginx `access_log off`).

gunicorn, uWSGI (compiled by pip: needs gcc and the Python headers) and py-spy
are installed on first use into their own venv, by default
/tmp/emperor-bench-venv (--venv or $EMPEROR_BENCH_VENV), never into the
project's environment. nginx and wrk come from Debian: scripts/install-test-deps.sh.

Every server is started by PID, stopped with its own stop signal (SIGINT for
the masters: SIGTERM is a reload for emperor and uWSGI), and whatever of its
process tree is left is SIGKILLed; the port is checked free before going on.

    python scripts/bench_serve.py --quick          # 1 round of 2 s: does it work?
    python scripts/bench_serve.py                  # 5 rounds of 5 s (~10 min)
    python scripts/bench_serve.py --profile 5      # py-spy on one emperor worker under load
    python scripts/bench_serve.py --profile 5 --profile-mode close   # ... or nginx
"""
from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
APP_MODULE = "hello:application"
BODY = b"Hello, World!"
DEFAULT_VENV = Path(os.environ.get("EMPEROR_BENCH_VENV", "/tmp/emperor-bench-venv"))
VENV_PACKAGES = ["gunicorn", "uwsgi", "py-spy", "httptools", "h11"]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
WRK = shutil.which("wrk")
WORKERS = 2
GTHREADS = 4


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment

def ensure_venv(venv: Path, packages=VENV_PACKAGES) -> Path:
    """A venv with `packages`, made on first use; returns its bin directory."""
    bindir = venv / "bin"
    want = {"gunicorn": "gunicorn", "uwsgi": "uwsgi", "py-spy": "py-spy"}
    missing = [p for p in packages if p in want and not (bindir / want[p]).exists()]
    if (bindir / "python").exists() and not missing:
        probe = subprocess.run([str(bindir / "python"), "-c", "import httptools, h11"],
                               capture_output=True)
        if probe.returncode == 0 or not {"httptools", "h11"} & set(packages):
            return bindir
    if not (bindir / "python").exists():
        say(f"creating the benchmark venv {venv} ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    say(f"installing {' '.join(packages)} into {venv} (uWSGI compiles: about a minute) ...")
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    *packages], check=True)
    return bindir


def sh(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def git_rev() -> str:
    rev = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--", "emperor"])
    return rev + (" + uncommitted changes in emperor/" if dirty else "")


def snapshot_emperor(workdir: Path, python: str | None = sys.executable) -> Path:
    """Copy emperor/ once, so every round runs the same code even if the tree changes meanwhile;
    byte-compiled for `python` (the interpreter emperor runs on; None: not compiled)."""
    src = workdir / "src"
    shutil.copytree(ROOT / "emperor", src / "emperor", ignore=shutil.ignore_patterns("__pycache__"))
    byte_compile(src, python)
    return src


def byte_compile(src: Path, python: str | None) -> None:
    """As `pip install` does. Without it, with PYTHONDONTWRITEBYTECODE=1 (set on the machines
    these figures come from), every new process image compiles emperor's sources again: a
    brutal reload's re-exec paid ~200 ms of compiling that no installed emperor pays."""
    if python:
        subprocess.run([python, "-m", "compileall", "-q", str(src / "emperor")], check=True)


EMPEROR_SRC = ROOT


def machine(bindir: Path) -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": sys.version.split()[0] + f" ({sys.executable})",
        "uwsgi": sh([str(bindir / "uwsgi"), "--version"]),
        "gunicorn": sh([str(bindir / "gunicorn"), "--version"]),
        "nginx": sh([NGINX, "-v"]) if NGINX else "missing",
        "wrk": sh([WRK, "-v"]).splitlines()[0] if WRK else "missing",
        "emperor": git_rev(),
    }


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a PID from a later process that reused it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and of their reaped children), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


LIVE: list["Server"] = []


class Server:
    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, stop_sig: int,
                 env: dict | None = None, cwd: Path | None = None) -> None:
        self.name, self.argv, self.port, self.stop_sig = name, argv, port, stop_sig
        self.log_path = workdir / f"{name.replace('>', '-')}.{port}.log"
        e = dict(os.environ)
        e.update(env or {})
        if not port_bindable(port) or listening(port):
            raise RuntimeError(f"port {port} is taken before starting {name}")
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=e,
                                      cwd=str(cwd or workdir), stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid
        LIVE.append(self)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def tree(self) -> list[int]:
        return [self.pid] + descendants(self.pid)

    def pss(self) -> tuple[int, int]:
        """(KiB, number of processes) for the server's whole process tree."""
        pids = self.tree()
        return sum(pss_kib(p) for p in pids), len(pids)

    def stop(self) -> None:
        if self not in LIVE:
            return
        LIVE.remove(self)
        known = {p: start_time(p) for p in self.tree()}
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, self.stop_sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                # freeze the root first so it cannot respawn what we kill next
                try:
                    os.kill(self.pid, signal.SIGSTOP)
                except ProcessLookupError:
                    pass
                known.update({p: start_time(p) for p in self.tree()})
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(start_time(p) == st for p, st in known.items() if st):
            time.sleep(0.05)
        for p, st in known.items():
            if st and start_time(p) == st:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
        deadline = time.monotonic() + 10
        while listening(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still listening after stopping {self.name}")
            time.sleep(0.05)


def stop_all() -> None:
    for s in list(reversed(LIVE)):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            say(f"cleanup of {s.name} (pid {s.pid}): {e}")


def _on_signal(signum, frame):
    stop_all()
    sys.exit(128 + signum)


def probe(port: int, timeout: float = 20.0, server: Server | None = None) -> None:
    """Wait until GET / answers 200 with the hello body."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server is not None and server.popen.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.popen.returncode}:\n{server.log()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200 and body == BODY:
                return
            last = f"{r.status} {body[:100]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"nothing serves on {port}: {last}\n{server.log() if server else ''}")


# ---------------------------------------------------------------- contenders

def emperor(port: int, workdir: Path, bindir: Path, proto: str = "http", src: Path | None = None) -> Server:
    key = "http-socket" if proto == "http" else "socket"
    ini = workdir / f"emperor-{proto}-{port}.ini"
    ini.write_text(f"[uwsgi]\n{key} = 127.0.0.1:{port}\nchdir = {BENCH}\nmodule = {APP_MODULE}\n"
                   f"processes = {WORKERS}\ndisable-logging = true\n")
    env = {"PYTHONPATH": str(src or EMPEROR_SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return Server("emperor", [sys.executable, "-m", "emperor", "master", str(ini)], port, workdir,
                  signal.SIGINT, env=env)


def gunicorn(port: int, workdir: Path, bindir: Path, worker_class: str = "sync") -> Server:
    argv = [str(bindir / "gunicorn"), "-w", str(WORKERS), "-k", worker_class, "-b", f"127.0.0.1:{port}",
            "--chdir", str(BENCH), "--log-level", "warning"]
    if worker_class == "gthread":
        argv += ["--threads", str(GTHREADS)]
    return Server(f"gunicorn-{worker_class}", argv + [APP_MODULE], port, workdir, signal.SIGINT)


def uwsgi(port: int, workdir: Path, bindir: Path, proto: str = "http") -> Server:
    flag = "--http-socket" if proto == "http" else "--socket"
    argv = [str(bindir / "uwsgi"), flag, f"127.0.0.1:{port}", "--master", "--processes", str(WORKERS),
            "--disable-logging", "--chdir", str(BENCH), "--module", APP_MODULE, "--need-app"]
    return Server("uwsgi", argv, port, workdir, signal.SIGINT)


def nginx(port: int, upstream: int, mode: str, workdir: Path) -> Server:
    prefix = workdir / f"nginx-{port}"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    temps = " ".join(f"{k}_temp_path {prefix}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    upstreams = ""
    if mode == "uwsgi":
        params = "/etc/nginx/uwsgi_params"
        loc = f"include {params}; uwsgi_pass 127.0.0.1:{upstream};"
    elif mode == "http-keepalive":
        # HTTP/1.1 to the backend with a pool of idle upstream connections: no connect,
        # accept and close per request (the uwsgi protocol has no such mode in nginx)
        upstreams = f"upstream backend {{ server 127.0.0.1:{upstream}; keepalive 32; keepalive_timeout 3s; }}"
        loc = 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
    else:
        loc = f"proxy_pass http://127.0.0.1:{upstream};"
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(f"""{user}
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    {temps}
    keepalive_requests 1000000;
    {upstreams}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{ {loc} }}
    }}
}}
""")
    argv = [NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
            "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr warn;"]
    return Server(f"nginx>{mode}", argv, port, workdir, signal.SIGTERM)


# name -> (server factory(port, workdir, bindir), front) ; front None = direct HTTP
SETUPS = {
    "emperor": (lambda p, w, b: emperor(p, w, b, "http"), None),
    "gunicorn-sync": (lambda p, w, b: gunicorn(p, w, b, "sync"), None),
    "gunicorn-gthread": (lambda p, w, b: gunicorn(p, w, b, "gthread"), None),
    "uwsgi": (lambda p, w, b: uwsgi(p, w, b, "http"), None),
    "nginx>emperor": (lambda p, w, b: emperor(p, w, b, "uwsgi"), "uwsgi"),
    "nginx>uwsgi": (lambda p, w, b: uwsgi(p, w, b, "uwsgi"), "uwsgi"),
    "nginx>gunicorn-sync": (lambda p, w, b: gunicorn(p, w, b, "sync"), "http"),
    "nginx-keepalive>emperor": (lambda p, w, b: emperor(p, w, b, "http"), "http-keepalive"),
}
SCENARIOS = {  # scenario -> (setups, wrk extra args)
    "keep-alive": (["emperor", "gunicorn-sync", "gunicorn-gthread", "uwsgi"], []),
    "Connection: close": (["emperor", "gunicorn-sync", "gunicorn-gthread", "uwsgi"],
                          ["-H", "Connection: close"]),
    "behind nginx": (["nginx>emperor", "nginx>uwsgi", "nginx>gunicorn-sync", "nginx-keepalive>emperor"], []),
}
PSS_OF = ["emperor", "uwsgi", "gunicorn-sync", "gunicorn-gthread"]
BASELINE = {"keep-alive": "emperor", "Connection: close": "emperor", "behind nginx": "nginx>emperor"}


# ---------------------------------------------------------------- wrk

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(out: str) -> dict:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps or not p99:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    e = [int(x) for x in errs.groups()] if errs else [0, 0, 0, 0]
    return {
        "rps": float(rps.group(1)),
        "p99_ms": float(p99.group(1)) * _UNIT[p99.group(2)],
        "requests": int(total.group(1)) if total else 0,
        "errors": dict(zip(("connect", "read", "write", "timeout"), e)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def wrk(port: int, duration: int, extra: list[str], connections: int = 32) -> dict:
    argv = [WRK, "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", *extra, f"http://127.0.0.1:{port}/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr}{r.stdout}")
    return parse_wrk(r.stdout)


# ---------------------------------------------------------------- the run

def run_setup(name: str, workdir: Path, bindir: Path, args, scen_order: list[str], results, pss) -> None:
    factory, front = SETUPS[name]
    started: list[Server] = []
    try:
        up = free_port()
        backend = factory(up, workdir, bindir)
        started.append(backend)
        port = up
        if front is not None:
            backend_ready = time.monotonic() + 20
            while not listening(up):
                if backend.popen.poll() is not None or time.monotonic() > backend_ready:
                    raise RuntimeError(f"{backend.name} did not listen:\n{backend.log()}")
                time.sleep(0.05)
            port = free_port()
            started.append(nginx(port, up, front, workdir))
        probe(port, server=started[-1])
        probe(port, server=backend)
        wrk(port, args.warmup, [])  # warm-up, discarded
        if name in PSS_OF:
            kib, nproc = backend.pss()
            pss[name].append((kib, nproc))
        for scen in scen_order:
            names, extra = SCENARIOS[scen]
            if name not in names:
                continue
            pids = backend.tree()
            fpids = started[-1].tree() if front is not None else []
            c0, f0 = cpu_seconds(pids), cpu_seconds(fpids)
            r = wrk(port, args.duration, extra)
            c1, f1 = cpu_seconds(pids), cpu_seconds(fpids)
            n = max(r["requests"], 1)
            r["cpu_us_per_req"] = (c1 - c0) * 1e6 / n
            r["front_cpu_us_per_req"] = (f1 - f0) * 1e6 / n if front is not None else None
            results[scen][name].append(r)
            errs = sum(r["errors"].values()) + r["non2xx"]
            say(f"    {scen:18} {name:20} {r['rps']:9.0f} req/s  p99 {r['p99_ms']:7.2f} ms"
                f"  cpu {r['cpu_us_per_req']:6.1f} us/req"
                + (f"  errors {r['errors']} non2xx {r['non2xx']}" if errs else ""))
            if backend.popen.poll() is not None:
                raise RuntimeError(f"{backend.name} died under load:\n{backend.log()}")
    finally:
        for s in reversed(started):
            s.stop()


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(results, pss, info, args) -> str:
    out = []
    out.append(f"rounds: {args.rounds}, wrk -t1 -c32 -d{args.duration:g}s --latency (after a "
               f"{args.warmup:g}s warm-up), {WORKERS} workers each; medians over rounds")
    out.append("")
    for scen, (names, _) in SCENARIOS.items():
        base = BASELINE[scen]
        if not results[scen].get(base):
            continue
        b_rps = med([r["rps"] for r in results[scen][base]])
        b_p99 = med([r["p99_ms"] for r in results[scen][base]])
        out.append(f"### {scen}")
        out.append("")
        out.append(f"| server | req/s (median) | min–max | p99 ms (median) | errors | req/s: {base} ÷ this "
                   f"| same, median of per-round ratios | p99: {base} ÷ this (<1: {base} lower) "
                   f"| server CPU µs/req | CPU: {base} ÷ this |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        b_cpu = med([r["cpu_us_per_req"] for r in results[scen][base] if "cpu_us_per_req" in r])
        for n in names:
            rs = results[scen].get(n)
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            p99 = med([r["p99_ms"] for r in rs])
            errs = sum(sum(r["errors"].values()) + r["non2xx"] for r in rs)
            ratio = "—" if n == base else f"{b_rps / med(rps):.2f}×"
            pratio = "—" if n == base else f"{b_p99 / p99:.2f}×"
            # rounds are aligned by index: round i of every setup ran within minutes of each other
            per_round = [a["rps"] / b["rps"] for a, b in zip(results[scen][base], rs)]
            rratio = "—" if n == base else f"{med(per_round):.2f}×"
            cpu = med([r["cpu_us_per_req"] for r in rs if "cpu_us_per_req" in r])
            fcpu = med([r["front_cpu_us_per_req"] for r in rs if r.get("front_cpu_us_per_req") is not None])
            cpu_s = f"{cpu:.0f}" + (f" (+ nginx {fcpu:.0f})" if fcpu == fcpu else "")
            cratio = "—" if n == base else f"{b_cpu / cpu:.2f}×"
            out.append(f"| {n} | {med(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {p99:.2f} | {errs} "
                       f"| {ratio} | {rratio} | {pratio} | {cpu_s} | {cratio} |")
        out.append("")
    if pss.get("emperor"):
        out.append("### PSS after warm-up (whole process tree: master + workers)")
        out.append("")
        out.append("| server | processes | PSS MiB (median) | min–max | emperor ÷ this |")
        out.append("|---|---:|---:|---:|---:|")
        b = med([k for k, _ in pss["emperor"]])
        for n in PSS_OF:
            if not pss.get(n):
                continue
            k = med([k for k, _ in pss[n]])
            procs = Counter(p for _, p in pss[n]).most_common(1)[0][0]
            ks = [x for x, _ in pss[n]]
            out.append(f"| {n} | {procs} | {k / 1024:.1f} | {min(ks) / 1024:.1f}–{max(ks) / 1024:.1f} "
                       f"| {'—' if n == 'emperor' else f'{b / k:.2f}×'} |")
        out.append("")
    return "\n".join(out)


def revision_source(spec: str, workdir: Path, python: str | None = sys.executable) -> Path:
    """emperor/ as git revision `spec` has it, extracted under workdir: a PYTHONPATH entry."""
    src = workdir / f"src-{spec}"
    src.mkdir()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", spec, "emperor"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=tar.stdout, check=True)
    byte_compile(src, python)
    return src


def add_revision(spec: str, workdir: Path) -> None:
    """--rev REV: emperor/ as git revision REV has it, as one more setup `emperor@REV` in the
    keep-alive and Connection: close scenarios, interleaved with the others round by round (a
    before/after comparison on a machine whose load drifts)."""
    src = revision_source(spec, workdir)
    name = f"emperor@{spec}"
    SETUPS[name] = (lambda p, w, b: emperor(p, w, b, "http", src), None)
    for scen in ("keep-alive", "Connection: close"):
        SCENARIOS[scen][0].append(name)


def bench(args, bindir: Path) -> None:
    global EMPEROR_SRC
    workdir = Path(tempfile.mkdtemp(prefix="emperor-bench-"))
    EMPEROR_SRC = snapshot_emperor(workdir)
    for spec in args.rev or []:
        add_revision(spec, workdir)
    info = machine(bindir)
    say("machine: " + json.dumps(info, indent=1))
    order = [n for n in SETUPS if not args.only or n in args.only or n.startswith("emperor@")]
    results: dict = defaultdict(lambda: defaultdict(list))
    pss: dict = defaultdict(list)
    t0 = time.monotonic()
    try:
        for rnd in range(args.rounds):
            k = rnd % len(order)
            this = order[k:] + order[:k]
            scen_order = list(SCENARIOS) if rnd % 2 == 0 else list(reversed(SCENARIOS))
            say(f"round {rnd + 1}/{args.rounds}: {', '.join(this)}")
            for name in this:
                run_setup(name, workdir, bindir, args, scen_order, results, pss)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    say(f"done in {time.monotonic() - t0:.0f} s")
    text = report(results, pss, info, args)
    print("## machine\n")
    for k, v in info.items():
        print(f"- {k}: {v}")
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args),
                                               "results": results, "pss_kib": pss}, indent=1, default=str))


# ---------------------------------------------------------------- profile

def profile(args, bindir: Path) -> None:
    """py-spy on one emperor worker while wrk loads the server; top functions by own time."""
    workdir = Path(tempfile.mkdtemp(prefix="emperor-prof-"))
    print(f"emperor {git_rev()}\n")
    up = free_port()
    srv = emperor(up, workdir, bindir, "uwsgi" if args.profile_mode == "nginx" else "http")
    front = None
    load = None
    extra = ["-H", "Connection: close"] if args.profile_mode == "close" else []
    try:
        port = up
        if args.profile_mode == "nginx":
            while not listening(up):
                time.sleep(0.05)
            port = free_port()
            front = nginx(port, up, "uwsgi", workdir)
        probe(port, server=srv)
        wrk(port, 1, extra)
        workers = descendants(srv.pid)
        if not workers:
            raise RuntimeError("no worker found")
        target = workers[0]
        raw = workdir / "profile.txt"
        load = subprocess.Popen([WRK, "-t1", "-c32", f"-d{args.profile + 4:g}s", "--latency", *extra,
                                 f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        spy = [str(bindir / "py-spy"), "record", "--pid", str(target), "--duration", f"{args.profile:g}",
               "--rate", "250", "--format", "raw", "--output", str(raw)]
        if args.idle:
            spy.append("--idle")
        if args.native:
            spy.append("--native")
        subprocess.run(spy, check=True, capture_output=True, timeout=args.profile + 60)
        out, _ = load.communicate(timeout=args.profile + 60)
        r = parse_wrk(out)
        own: Counter = Counter()
        total = 0
        incl: Counter = Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack:
                continue
            n = int(n)
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            total += n
            if not frames:
                continue
            own[_func(frames[-1])] += n
            for f in set(_func(x) for x in frames):
                incl[f] += n
        mode = {"keep-alive": "keep-alive", "close": "Connection: close", "nginx": "behind nginx (uwsgi_pass)"}
        print(f"## profile: py-spy on worker {target}, {args.profile:g} s at 250 Hz under wrk -t1 -c32, "
              f"{mode[args.profile_mode]} "
              f"({r['rps']:.0f} req/s for the whole server during the run){' including idle' if args.idle else ''}\n")
        print(f"{total} samples\n")
        print("| # | function (file) | own % | inclusive % |")
        print("|---:|---|---:|---:|")
        for i, (f, n) in enumerate(own.most_common(15), 1):
            print(f"| {i} | `{f}` | {100 * n / total:.1f} | {100 * incl[f] / total:.1f} |")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        if front is not None:
            front.stop()
        srv.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _func(frame: str) -> str:
    """'handle (emperor/worker.py:330)' -> 'handle (emperor/worker.py)'."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    name, path = m.groups()
    p = Path(path)
    try:
        path = str(p.relative_to(ROOT))
    except ValueError:
        path = "/".join(p.parts[-2:])
    return f"{name} ({path})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (whole seconds: wrk)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of discarded wrk before measuring")
    ap.add_argument("--quick", action="store_true", help="1 round of 2 s runs: checks the setup works")
    ap.add_argument("--only", nargs="*", help=f"run these setups only ({', '.join(SETUPS)}, emperor@REV)")
    ap.add_argument("--rev", action="append", metavar="REV",
                    help="also emperor as git revision REV has it (emperor@REV), interleaved: before/after")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--json", help="also write raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, server logs)")
    ap.add_argument("--profile", type=int, metavar="SECONDS",
                    help="instead: py-spy an emperor worker under load for SECONDS")
    ap.add_argument("--profile-mode", choices=["keep-alive", "close", "nginx"], default="keep-alive",
                    help="with --profile: the load (default keep-alive)")
    ap.add_argument("--report", metavar="JSON", help="instead: print the tables of an earlier --json run")
    ap.add_argument("--native", action="store_true", help="with --profile: include C frames (py-spy --native)")
    ap.add_argument("--idle", action="store_true", help="with --profile: count samples waiting in epoll too")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
    if args.report:
        data = json.loads(Path(args.report).read_text())
        for k in ("rounds", "duration", "warmup"):
            setattr(args, k, data["args"][k])
        results = defaultdict(lambda: defaultdict(list), {k: defaultdict(list, v) for k, v in data["results"].items()})
        pss = defaultdict(list, {k: [tuple(x) for x in v] for k, v in data["pss_kib"].items()})
        print(report(results, pss, data["machine"], args))
        return 0
    if WRK is None or NGINX is None:
        say("wrk and nginx are needed: run scripts/install-test-deps.sh")
        return 2
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    bindir = ensure_venv(args.venv)
    if args.profile:
        profile(args, bindir)
    else:
        bench(args, bindir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
