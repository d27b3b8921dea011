#!/usr/bin/env python3
"""Emperor reaction times and scale, side by side with `uwsgi --emperor` (issue 4).

One invocation, every contender in the same run, interleaved:

1. Reactions, each timed from the file operation to what a client sees:
   drop a vassal file (rename into the directory) -> first 200 on its port;
   touch it (os.utime)  -> first response of the new generation (the app
   returns $UWSGI_RELOADS, which emperor and uWSGI both set, so generations
   can be told apart); delete it -> the port refuses connections.
   Contenders: `emperor run DIR`, `uwsgi --emperor DIR` (default 3 s scan)
   and `uwsgi --emperor DIR --emperor-freq 1`; each keeps running over the
   whole section, and every repetition runs one drop/touch/delete cycle on
   each, in an order that rotates. A tight connect+GET loop (1 ms apart)
   watches the port. emperor's own log (ms timestamps) tells when it saw the
   change and when the master said `ready` / was gone.
2. Scale: 10, 50 and 100 vassals (1 worker each, each on its own port):
   from starting the emperor with all files present until every port
   answers 200; PSS of the whole process tree (emperor + masters + workers,
   /proc/PID/smaps_rollup) then; CPU seconds (utime+stime) of the emperor
   process alone and of the whole tree over 10 idle seconds; then every file
   touched at once (a deploy): time until every port serves its new
   generation, and PSS once the old generations have left (a reload
   re-executes each master, so this is what a host that deploys runs on);
   time from SIGINT until the emperor has exited.
3. One master, from exec to the first 200: `python -m emperor master f.ini`,
   `uwsgi --ini f.ini`, `gunicorn -w 1`.
4. What bounds emperor's figures: interpreter start-up, `python -m emperor
   --help` (the CLI's imports) and the reload preflight, each as a process.

The same vassal file serves both emperors:

    [uwsgi]
    http-socket = 127.0.0.1:PORT
    chdir = TMPDIR
    module = app:application
    master = true
    processes = 1
    need-app = true
    disable-logging = true

Every server is started by PID; emperors (emperor's and uWSGI's) are stopped
with SIGINT, and whatever is left of the process tree seen before the signal
is SIGKILLed. uWSGI and gunicorn come from scripts/bench_serve.py's venv, and
emperor runs on that venv's Python too (with inotify-simple installed there), as
`pip install` into a venv would have it: this machine's global site-packages
carries .pth files that cost ~45 ms at every interpreter start-up
(`--system-python` runs emperor on the interpreter running this script instead).

    python scripts/bench_emperor.py --quick        # 3 repetitions, 10 vassals, 1 round (~2 min)
    python scripts/bench_emperor.py --wait-quiet 25 --json /tmp/be.json   # the full run (~12 min)
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve as bs  # noqa: E402

say = bs.say
APP = '''import os


def application(environ, start_response):
    body = os.environ.get("UWSGI_RELOADS", "none").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
REQUEST = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
POLL_GAP = 0.001          # between two failed attempts of the tight loop
REACTIONS = ("drop", "touch", "delete")
JITTER = 3.0              # a random pause (0..JITTER s) before each file operation: uWSGI's scan
                          # timer restarts whenever the emperor wakes, so a fixed pause would
                          # always land at the same point of its 3 s cycle
REACTION_LABEL = {"drop": "drop → first 200", "touch": "touch → new generation",
                  "delete": "delete → port refuses"}


# ---------------------------------------------------------------- HTTP probing

def get(port: int, timeout: float = 3.0) -> tuple[int, bytes]:
    """One GET / over a fresh connection: (status, body). OSError if refused/reset/timed out."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(REQUEST)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise OSError(f"bad response {data[:80]!r}") from None
    return status, body


def wait_200(port: int, timeout: float, not_body: bytes | None = None) -> tuple[float, bytes]:
    """Monotonic time of the first 200 (whose body differs from `not_body`), and its body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = get(port)
            t = time.monotonic()
            if status == 200 and (not_body is None or body != not_body):
                return t, body
        except OSError:
            pass
        time.sleep(POLL_GAP)
    raise TimeoutError(f"port {port}: no 200{' of a new generation' if not_body is not None else ''} "
                       f"within {timeout:g}s")


def wait_refused(port: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return time.monotonic()
        except OSError:
            pass
        time.sleep(POLL_GAP)
    raise TimeoutError(f"port {port} still accepts connections after {timeout:g}s")


def wait_all(ports: list[int], timeout: float, srv: bs.Server,
             not_body: dict[int, bytes] | None = None) -> tuple[float, float]:
    """Monotonic times of the first and of the last port to answer 200 (with another body
    than `not_body[port]`, when given: a new generation)."""
    pending = list(ports)
    first = None
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ports)} ports still not serving after {timeout:g}s")
        if srv.popen.poll() is not None:
            raise RuntimeError(f"{srv.name} exited {srv.popen.returncode}:\n{srv.log()}")
        for p in list(pending):
            try:
                status, body = get(p, timeout=5)
            except OSError:
                continue
            if status == 200 and (not_body is None or body != not_body[p]):
                pending.remove(p)
                first = first or time.monotonic()
        if pending:
            time.sleep(0.005)
    return first, time.monotonic()


# ---------------------------------------------------------------- processes

def own_cpu(pid: int) -> float | None:
    """utime + stime of one process (not of its reaped children), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / bs.CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def stop(srv: bs.Server, sig: int = signal.SIGINT, timeout: float = 60.0) -> tuple[float | None, int]:
    """Signal the root, wait; (seconds until it exited or None, leftovers SIGKILLed)."""
    if srv not in bs.LIVE:
        return None, 0
    bs.LIVE.remove(srv)
    known = {p: bs.start_time(p) for p in srv.tree()}
    took = None
    if srv.popen.poll() is None:
        t0 = time.monotonic()
        try:
            os.kill(srv.pid, sig)
        except ProcessLookupError:
            pass
        try:
            srv.popen.wait(timeout)
            took = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            os.kill(srv.pid, signal.SIGSTOP)
            known.update({p: bs.start_time(p) for p in srv.tree()})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(bs.start_time(p) == st for p, st in known.items() if st):
        time.sleep(0.05)
    left = 0
    for p, st in known.items():
        if st and bs.start_time(p) == st:
            left += p != srv.pid
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if srv.popen.poll() is None:
        srv.popen.wait(5)
    srv._log.close()
    return took, left


def settle(srv: bs.Server, baseline: int, timeout: float = 15.0) -> None:
    """Wait until the emperor's tree is back to `baseline` descendants (the last vassal gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(bs.descendants(srv.pid)) <= baseline:
            return
        time.sleep(0.02)
    say(f"    {srv.name}: still {len(bs.descendants(srv.pid))} descendants after {timeout:g}s")


def children(pid: int) -> list[int]:
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def free_ports(n: int) -> list[int]:
    out: set[int] = set()
    while len(out) < n:
        out.add(bs.free_port())
    return sorted(out)


# ---------------------------------------------------------------- the contenders

class Run:
    def __init__(self, workdir: Path, bindir: Path, src: Path, py: str) -> None:
        self.workdir, self.bindir, self.src = workdir, bindir, src
        self.py = py   # the interpreter emperor runs on
        self.appdir = workdir / "app"
        self.appdir.mkdir()
        (self.appdir / "app.py").write_text(APP)

    def ini(self, port: int) -> str:
        return (f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {self.appdir}\nmodule = app:application\n"
                f"master = true\nprocesses = 1\nneed-app = true\ndisable-logging = true\n")

    def env(self, kind: str = "emperor") -> dict:
        src = REVISIONS.get(kind, self.src)
        return {"PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def emperor_argv(self, kind: str, directory: Path) -> tuple[list[str], dict]:
        if kind == "emperor" or kind in REVISIONS:
            return [self.py, "-m", "emperor", "run", str(directory)], self.env(kind)
        argv = [str(self.bindir / "uwsgi"), "--emperor", str(directory)]
        if kind == "uwsgi-freq1":
            argv += ["--emperor-freq", "1"]
        return argv, {}

    def start_emperor(self, kind: str, directory: Path) -> bs.Server:
        argv, env = self.emperor_argv(kind, directory)
        return bs.Server(kind, argv, bs.free_port(), self.workdir, signal.SIGINT, env=env)


EMPEROR_KINDS = {"emperor": "emperor run", "uwsgi": "uwsgi --emperor (3 s scan)",
                 "uwsgi-freq1": "uwsgi --emperor --emperor-freq 1"}
REVISIONS: dict[str, Path] = {}   # --rev: "emperor@REV" -> emperor/ as that revision has it


def label(kind: str) -> str:
    return EMPEROR_KINDS.get(kind, f"{kind} run")

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) \[emperor\] (\S+\.ini): (.*)$")


def emperor_log_events(path: Path) -> dict[str, list[tuple[float, str]]]:
    """vassal name -> [(wall time, message)] from emperor's log."""
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out[m.group(3)].append((t, m.group(4)))
    return out


def _log_time(path: Path, pattern: str) -> float | None:
    """Wall time of the first line of emperor's log matching `pattern`."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        m = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) ", line)
        if m and re.search(pattern, line):
            return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
    return None


def first_after(events: list[tuple[float, str]], t0: float, pattern: str) -> float | None:
    for t, msg in events:
        if t >= t0 - 0.002 and re.search(pattern, msg):
            return (t - t0) * 1000
    return None


# ---------------------------------------------------------------- 1. reactions

def reactions(run: Run, kinds: list[str], reps: int) -> tuple[dict, dict]:
    dirs = {k: run.workdir / f"reactions-{k}" for k in kinds}
    servers = {}
    results: dict = {k: defaultdict(list) for k in kinds}
    walls: dict = {k: [] for k in kinds}   # emperor's log is read against these
    try:
        for k in kinds:
            dirs[k].mkdir()
            servers[k] = run.start_emperor(k, dirs[k])
        time.sleep(1.5)  # both are up and have scanned the empty directory
        baseline = {k: len(bs.descendants(s.pid)) for k, s in servers.items()}
        for rep in range(reps):
            order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
            for k in order:
                r = cycle(run, servers[k], dirs[k], rep, random.Random(rep))  # same pauses for all
                for what in REACTIONS:
                    results[k][what].append(r[what])
                walls[k].append(r["walls"])
                settle(servers[k], baseline[k])
                say(f"  rep {rep + 1}/{reps} {k:12} " + "  ".join(
                    f"{w} {r[w]:7.0f} ms" if r[w] is not None else f"{w} failed" for w in REACTIONS))
                time.sleep(0.3)
    finally:
        for k, s in servers.items():
            stop(s)
    phases = {}
    if "emperor" in kinds:
        phases = emperor_phases(servers["emperor"].log_path, walls["emperor"], results["emperor"])
    return {k: dict(v) for k, v in results.items()}, phases


def cycle(run: Run, srv: bs.Server, directory: Path, rep: int, rng: random.Random) -> dict:
    port = bs.free_port()
    name = f"r{rep:02d}.ini"
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(run.ini(port))
    out: dict = {"walls": {"name": name}}
    try:
        time.sleep(rng.uniform(0, JITTER))
        w0, t0 = time.time(), time.monotonic()
        os.rename(tmp, path)
        t, body = wait_200(port, 30)
        out["drop"] = (t - t0) * 1000
        out["walls"]["drop"] = w0
        out["walls"]["drop_200"] = (t - t0) * 1000
    except TimeoutError as e:
        say(f"    {srv.name}: {e}")
        out["drop"] = out["touch"] = None
        body = None
    if body is not None:
        time.sleep(0.5 + rng.uniform(0, JITTER))
        # uWSGI compares mtimes in whole seconds: touch in a later second than the file's
        while int(time.time()) <= int(os.stat(path).st_mtime):
            time.sleep(0.005)
        try:
            w0, t0 = time.time(), time.monotonic()
            os.utime(path)
            t, _ = wait_200(port, 30, not_body=body)
            out["touch"] = (t - t0) * 1000
            out["walls"]["touch"] = w0
        except TimeoutError as e:
            say(f"    {srv.name}: {e}")
            out["touch"] = None
        time.sleep(0.5 + rng.uniform(0, JITTER))
    try:
        w0, t0 = time.time(), time.monotonic()
        os.unlink(path)
        t = wait_refused(port, 30)
        out["delete"] = (t - t0) * 1000
        out["walls"]["delete"] = w0
    except TimeoutError as e:
        say(f"    {srv.name}: {e}")
        out["delete"] = None
    return out


def emperor_phases(log_path: Path, walls: list[dict], results: dict) -> dict:
    """From emperor's log: when it acted and when the master reported, ms after the file operation."""
    ev = emperor_log_events(log_path)
    ph: dict = defaultdict(list)
    for w in walls:
        e = ev.get(w["name"], [])
        if "drop" in w:
            ph["drop: emperor starts the master"].append(first_after(e, w["drop"], r"-> starting"))
            ph["drop: master reports ready"].append(first_after(e, w["drop"], r"-> running"))
        if "touch" in w:
            ph["touch: emperor signals the master"].append(first_after(e, w["touch"], r"-> reloading"))
            ph["touch: new generation ready"].append(first_after(e, w["touch"], r"generation \d+ ready"))
        if "delete" in w:
            ph["delete: emperor stops the master"].append(first_after(e, w["delete"], r"-> stopping"))
            ph["delete: master gone (reaped)"].append(first_after(e, w["delete"], r"-> gone"))
    return {k: [x for x in v if x is not None] for k, v in ph.items()}


# ---------------------------------------------------------------- 2. scale

def scale_one(run: Run, kind: str, n: int, idle: float) -> dict:
    d = run.workdir / f"scale-{kind}-{n}"
    d.mkdir()
    ports = free_ports(n)
    for i, p in enumerate(ports):
        (d / f"v{i:03d}.ini").write_text(run.ini(p))
    argv, env = run.emperor_argv(kind, d)
    w0, t0 = time.time(), time.monotonic()
    srv = bs.Server(f"scale-{kind}-{n}", argv, bs.free_port(), run.workdir, signal.SIGINT, env=env)
    res: dict = {"n": n}
    try:
        first, last = wait_all(ports, 180, srv)
        res["first_s"], res["all_s"] = first - t0, last - t0
        pids = srv.tree()
        # CPU spent bringing everything up: every live process plus what they reaped (preflights...)
        res["startup_cpu"] = bs.cpu_seconds(pids)
        if kind == "emperor" or kind in REVISIONS:
            up = _log_time(srv.log_path, r"\[emperor\] watching")
            res["emperor_up_s"] = up - w0 if up is not None else None
        res["procs"] = len(pids)
        pss = {p: bs.pss_kib(p) for p in pids}
        res["pss_kib"] = sum(pss.values())
        # split by role: the emperor itself, its children (the masters), the rest (workers)
        masters = children(srv.pid)
        workers = [p for p in pids if p != srv.pid and p not in masters]
        res["split"] = {role: {"n": len(ps), "cpu_s": bs.cpu_seconds(ps), "pss_kib": sum(pss.get(p, 0) for p in ps)}
                        for role, ps in (("emperor", [srv.pid]), ("masters", masters), ("workers", workers))}
        e0 = own_cpu(srv.pid)
        c0 = {p: own_cpu(p) for p in pids}
        time.sleep(idle)
        e1 = own_cpu(srv.pid)
        c1 = {p: own_cpu(p) for p in pids}
        res["idle_s"] = idle
        res["emperor_cpu"] = e1 - e0
        res["tree_cpu"] = sum(c1[p] - c0[p] for p in pids if c0[p] is not None and c1[p] is not None)
        res["pss_idle_kib"] = sum(bs.pss_kib(p) for p in srv.tree())
        res["procs_idle"] = len(srv.tree())
        # A deploy: every file touched once. A reload re-executes each master into a fresh
        # interpreter, so this is the memory a host that reloads after deploys runs with.
        before = {p: get(p)[1] for p in ports}
        time.sleep(1.02 - time.time() % 1)   # uWSGI compares mtimes in whole seconds
        t1 = time.monotonic()
        for f in d.glob("*.ini"):
            os.utime(f)
        _, last = wait_all(ports, 300, srv, not_body=before)
        res["reload_all_s"] = last - t1
        deadline = time.monotonic() + 30     # until the old generations have left
        while len(srv.tree()) > res["procs"] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        res["pss_reloaded_kib"] = sum(bs.pss_kib(p) for p in srv.tree())
    finally:
        took, left = stop(srv)
        res["stop_s"], res["stop_leftovers"] = took, left
        busy = [p for p in ports if bs.listening(p)]
        deadline = time.monotonic() + 10
        while busy and time.monotonic() < deadline:
            time.sleep(0.1)
            busy = [p for p in busy if bs.listening(p)]
        res["ports_still_open"] = len(busy)
        shutil.rmtree(d, ignore_errors=True)
    return res


def scale(run: Run, kinds: list[str], sizes: list[int], rounds: int, idle: float) -> dict:
    out: dict = {k: defaultdict(list) for k in kinds}
    for rnd in range(rounds):
        for n in sizes:
            order = kinds if (rnd + sizes.index(n)) % 2 == 0 else list(reversed(kinds))
            for k in order:
                r = scale_one(run, k, n, idle)
                out[k][n].append(r)
                say(f"  round {rnd + 1}/{rounds} {n:3} vassals {k:8} all serving {r.get('all_s', float('nan')):6.2f} s"
                    f"  PSS {r.get('pss_kib', 0) / 1024:7.1f} MiB ({r.get('procs')} procs)"
                    f"  idle CPU emperor {r.get('emperor_cpu', float('nan')):.3f} s tree {r.get('tree_cpu', float('nan')):.3f} s"
                    f"  all reloaded {r.get('reload_all_s', float('nan')):.2f} s"
                    f"  PSS then {r.get('pss_reloaded_kib', 0) / 1024:.1f} MiB"
                    f"  stop {r['stop_s'] if r['stop_s'] is not None else float('nan'):.2f} s"
                    + (f"  LEFTOVERS {r['stop_leftovers']}" if r["stop_leftovers"] else "")
                    + (f"  PORTS OPEN {r['ports_still_open']}" if r["ports_still_open"] else ""))
                time.sleep(1)
    return {k: dict(v) for k, v in out.items()}


# ---------------------------------------------------------------- 3. one master

def single(run: Run, reps: int) -> dict:
    kinds = ["emperor master", "uwsgi --ini", "gunicorn -w 1"]
    out: dict = defaultdict(list)
    for rep in range(reps):
        for k in kinds[rep % 3:] + kinds[:rep % 3]:
            port = bs.free_port()
            ini = run.workdir / f"single-{port}.ini"
            ini.write_text(run.ini(port))
            env = {}
            if k == "emperor master":
                argv, env = [run.py, "-m", "emperor", "master", str(ini)], run.env()
            elif k == "uwsgi --ini":
                argv = [str(run.bindir / "uwsgi"), "--ini", str(ini)]
            else:
                argv = [str(run.bindir / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir",
                        str(run.appdir), "--log-level", "warning", "app:application"]
            t0 = time.monotonic()
            srv = bs.Server(k.split()[0], argv, port, run.workdir, signal.SIGINT, env=env)
            try:
                t, _ = wait_200(port, 30)
                out[k].append((t - t0) * 1000)
            except TimeoutError as e:
                say(f"    {k}: {e}\n{srv.log()}")
            finally:
                stop(srv)
            time.sleep(0.3)
        say(f"  rep {rep + 1}/{reps} " + "  ".join(f"{k} {v[-1]:.0f} ms" for k, v in out.items() if v))
    return dict(out)


# ---------------------------------------------------------------- 4. what bounds it

def bounds(run: Run, reps: int) -> dict:
    port = bs.free_port()
    ini = run.workdir / "bounds.ini"
    ini.write_text(run.ini(port))
    py = run.py
    probes = {
        "python -c pass": [py, "-c", "pass"],
        "python -S -c pass (no site: .pth files skipped)": [py, "-S", "-c", "pass"],
        "python -m emperor --help (CLI imports)": [py, "-m", "emperor", "--help"],
        "python -c 'import emperor.master' (the master's imports)": [py, "-c", "import emperor.master"],
        "python -m emperor master --preflight f.ini (every reload runs it)": [py, "-m", "emperor", "master",
                                                                                "--preflight", str(ini)],
    }
    env = dict(os.environ, **run.env())
    out: dict = defaultdict(list)
    for _ in range(reps):
        for name, argv in probes.items():
            t0 = time.monotonic()
            r = subprocess.run(argv, env=env, cwd=str(run.workdir), capture_output=True)
            out[name].append((time.monotonic() - t0) * 1000)
            if r.returncode != 0:
                say(f"    {name}: exit {r.returncode}: {r.stderr.decode(errors='replace')[-500:]}")
    mem_probes = {
        "python (idle interpreter)": [py, "-c", "import time; time.sleep(30)"],
        "python -S (idle, no site)": [py, "-S", "-c", "import time; time.sleep(30)"],
        "python, emperor.master imported": [py, "-c", "import emperor.master, time; time.sleep(30)"],
    }
    mem: dict = defaultdict(list)
    for _ in range(3):
        for name, argv in mem_probes.items():
            p = subprocess.Popen(argv, env=env, cwd=str(run.workdir), stdin=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                mem[name].append(rollup(p.pid))
            finally:
                p.kill()
                p.wait()
    out["memory"] = dict(mem)
    return dict(out)


def rollup(pid: int) -> dict:
    """KiB from /proc/PID/smaps_rollup: Rss, Pss, and Private (clean + dirty)."""
    got = {"rss": 0, "pss": 0, "private": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == "Rss":
                got["rss"] = int(v.split()[0])
            elif k == "Pss":
                got["pss"] = int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                got["private"] += int(v.split()[0])
    return got


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def cell(xs, fmt="{:.0f}") -> str:
    ok = [x for x in xs if x is not None]
    if not ok:
        return "failed"
    s = fmt.format(statistics.median(ok))
    if len(ok) > 1:
        s += f" ({fmt.format(min(ok))}–{fmt.format(max(ok))})"
    if len(ok) < len(xs):
        s += f", {len(xs) - len(ok)} failed"
    return s


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a == a and b == b and b else "—"


def report(data: dict) -> str:
    out = []
    rx, ph = data.get("reactions"), data.get("phases")
    if rx:
        reps = max(len(v) for r in rx.values() for v in r.values())
        out += [f"### Reactions (ms from the file operation to what a client sees; median (min–max) of {reps})", "",
                "| contender | " + " | ".join(REACTION_LABEL[w] for w in REACTIONS) + " |",
                "|---|" + "---:|" * len(REACTIONS)]
        for k, r in rx.items():
            out.append(f"| {label(k)} | " + " | ".join(cell(r[w]) for w in REACTIONS) + " |")
        if "emperor" in rx:
            for k in rx:
                if k != "emperor":
                    out.append(f"| emperor ÷ {label(k)} | " + " | ".join(
                        ratio(med(rx["emperor"][w]), med(rx[k][w])) for w in REACTIONS) + " |")
        out.append("")
    if ph:
        out += ["emperor's own log (ms timestamps), ms after the file operation, median (min–max):", "",
                "| phase | ms |", "|---|---:|"]
        for k, v in ph.items():
            out.append(f"| {k} | {cell(v)} |")
        out.append("")
    sc = data.get("scale")
    if sc:
        kinds = list(sc)
        sizes = sorted({int(n) for k in kinds for n in sc[k]})
        rounds = max(len(v) for k in kinds for v in sc[k].values())
        idle = next(r["idle_s"] for k in kinds for v in sc[k].values() for r in v if "idle_s" in r)
        out += [f"### Scale: N vassals, 1 worker each, all files present at start (median (min–max) of {rounds})", "",
                "| vassals | contender | all serving after s | first serving s | CPU s to bring all up | processes "
                f"| PSS MiB when all serve | PSS MiB after {idle:g} s idle | emperor CPU s in {idle:g} s idle "
                f"| whole tree CPU s in {idle:g} s idle | every file touched: all reloaded after s "
                "| PSS MiB after every vassal reloaded once | SIGINT → exited s |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

        def col(k, n, key, fmt="{:.2f}", scale=1.0):
            return [r[key] * scale if r.get(key) is not None else None for r in sc[k].get(n, sc[k].get(str(n), []))]

        for n in sizes:
            for k in kinds:
                procs = col(k, n, "procs", "{:.0f}")
                out.append(f"| {n} | {label(k)} | {cell(col(k, n, 'all_s'), '{:.2f}')} "
                           f"| {cell(col(k, n, 'first_s'), '{:.2f}')} | {cell(col(k, n, 'startup_cpu'), '{:.2f}')} "
                           f"| {med(procs):.0f} | {cell(col(k, n, 'pss_kib', scale=1 / 1024), '{:.0f}')} "
                           f"| {cell(col(k, n, 'pss_idle_kib', scale=1 / 1024), '{:.0f}')} "
                           f"| {cell(col(k, n, 'emperor_cpu'), '{:.3f}')} | {cell(col(k, n, 'tree_cpu'), '{:.3f}')} "
                           f"| {cell(col(k, n, 'reload_all_s'), '{:.2f}')} "
                           f"| {cell(col(k, n, 'pss_reloaded_kib', scale=1 / 1024), '{:.0f}')} "
                           f"| {cell(col(k, n, 'stop_s'), '{:.2f}')} |")
            keys = ("all_s", "first_s", "startup_cpu", "procs", "pss_kib", "pss_idle_kib", "emperor_cpu", "tree_cpu",
                    "reload_all_s", "pss_reloaded_kib", "stop_s")
            if "emperor" in kinds and "uwsgi" in kinds:
                r = [ratio(med(col("emperor", n, key)), med(col("uwsgi", n, key))) for key in keys]
                out.append(f"| {n} | **emperor ÷ uWSGI** | " + " | ".join(r) + " |")
            for k in [k for k in kinds if k.startswith("emperor@")]:
                r = [ratio(med(col("emperor", n, key)), med(col(k, n, key))) for key in keys]
                out.append(f"| {n} | **emperor ÷ {k}** | " + " | ".join(r) + " |")
        for k in [k for k in kinds if k == "emperor" or k.startswith("emperor@")]:
            ups = {n: col(k, n, "emperor_up_s", scale=1000) for n in sizes}
            out += ["", f"{k}'s own start (exec → its log says `watching`), ms: "
                    + ", ".join(f"{n} vassals {cell(v)}" for n, v in ups.items() if any(x is not None for x in v))]
        big = max(sizes)
        out += ["", f"Where it goes at {big} vassals, when all serve (median of the rounds): CPU seconds spent so far "
                "(utime+stime, with reaped children) and PSS, per role",
                "", "| contender | role | processes | CPU s, all | CPU ms each | PSS MiB, all | PSS MiB each |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for k in kinds:
            runs = [r for r in sc[k].get(big, sc[k].get(str(big), [])) if "split" in r]
            for role in ("emperor", "masters", "workers"):
                if not runs:
                    continue
                n = med([r["split"][role]["n"] for r in runs])
                cpu = med([r["split"][role]["cpu_s"] for r in runs])
                mem = med([r["split"][role]["pss_kib"] for r in runs]) / 1024
                out.append(f"| {label(k)} | {role} | {n:.0f} | {cpu:.2f} | {cpu * 1000 / max(n, 1):.0f} "
                           f"| {mem:.1f} | {mem / max(n, 1):.2f} |")
        left = [(k, n, r["stop_leftovers"], r["ports_still_open"]) for k in kinds for n, v in sc[k].items()
                for r in v if r["stop_leftovers"] or r["ports_still_open"]]
        out.append("")
        if left:
            out += ["Left behind after the emperor exited (SIGKILLed by the benchmark): "
                    + "; ".join(f"{k} {n}: {a} processes, {b} ports open" for k, n, a, b in left), ""]
    sg = data.get("single")
    if sg:
        base = med(sg.get("emperor master", []))
        reps = max(len(v) for v in sg.values())
        out += [f"### One master: exec → first 200, ms (median (min–max) of {reps})", "",
                "| server | ms | emperor ÷ this |", "|---|---:|---:|"]
        for k, v in sg.items():
            out.append(f"| {k} | {cell(v)} | {'—' if k == 'emperor master' else ratio(base, med(v))} |")
        out.append("")
    bd = data.get("bounds")
    if bd:
        reps = max(len(v) for k, v in bd.items() if k != "memory")
        out += [f"### What bounds it: one process each, exec → exit, ms (median (min–max) of {reps})", "",
                "| process | ms |", "|---|---:|"]
        for k, v in bd.items():
            if k != "memory":
                out.append(f"| `{k}` | {cell(v)} |")
        out.append("")
        if bd.get("memory"):
            out += ["One idle process alone, 1 s after exec (median of 3), MiB:", "",
                    "| process | RSS | private (clean + dirty) |", "|---|---:|---:|"]
            for k, v in bd["memory"].items():
                out.append(f"| {k} | {med([x['rss'] for x in v]) / 1024:.1f} "
                           f"| {med([x['private'] for x in v]) / 1024:.1f} |")
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def others_benchmarking() -> list[str]:
    mine = {os.getpid()}
    p = os.getppid()
    while p > 1:
        mine.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                p = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for argv in (["pgrep", "-af", "scripts/bench_"], ["pgrep", "-ax", "wrk"]):
        r = subprocess.run(argv, capture_output=True, text=True)
        for line in r.stdout.splitlines():
            pid = int(line.split()[0])
            if pid not in mine and pid not in {x for x in map(int, bs.descendants(os.getpid()))}:
                found.append(line)
    return found


def wait_quiet(minutes: float) -> str:
    deadline = time.monotonic() + minutes * 60
    t0 = time.monotonic()
    while True:
        busy = others_benchmarking()
        if not busy:
            return f"no other benchmark running at start (waited {time.monotonic() - t0:.0f} s)"
        if time.monotonic() > deadline:
            return (f"ran anyway after waiting {minutes:g} min: still running: "
                    + "; ".join(b[:100] for b in busy))
        say(f"waiting for other benchmarks: {'; '.join(b[:80] for b in busy)}")
        time.sleep(20)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions, 10 vassals only, 1 round")
    ap.add_argument("--reps", type=int, default=10, help="reaction cycles per contender")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10, 50, 100])
    ap.add_argument("--scale-rounds", type=int, default=3)
    ap.add_argument("--single-reps", type=int, default=5)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not byte-compile emperor's snapshot (every master then compiles it)")
    ap.add_argument("--no-freq1", action="store_true", help="skip uwsgi --emperor-freq 1")
    ap.add_argument("--only", nargs="*", choices=["reactions", "scale", "single", "bounds"])
    ap.add_argument("--wait-quiet", type=float, metavar="MINUTES",
                    help="first wait (up to MINUTES) until no other scripts/bench_* or wrk runs")
    ap.add_argument("--venv", type=Path, default=bs.DEFAULT_VENV)
    ap.add_argument("--system-python", action="store_true",
                    help="run emperor on this script's interpreter, not the benchmark venv's")
    ap.add_argument("--rev", action="append", metavar="REV",
                    help="also emperor/ as git revision REV has it (reactions and scale), interleaved: "
                         "before/after figures")
    ap.add_argument("--json", help="also write raw results here")
    ap.add_argument("--report", metavar="JSON", help="instead: print the tables of an earlier --json run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (files, logs)")
    args = ap.parse_args()
    if args.report:
        data = json.loads(Path(args.report).read_text())
        print(report(data))
        return 0
    if args.quick:
        args.reps, args.sizes, args.scale_rounds, args.single_reps = 3, [10], 1, 3
    atexit.register(bs.stop_all)
    signal.signal(signal.SIGTERM, bs._on_signal)
    signal.signal(signal.SIGINT, bs._on_signal)
    bindir = bs.ensure_venv(args.venv, ["gunicorn", "uwsgi"])
    py = sys.executable if args.system_python else str(bindir / "python")
    if subprocess.run([py, "-c", "import inotify_simple"], capture_output=True).returncode:
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "inotify-simple"],
                       check=True)
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet is not None else "not checked"
    say(quiet)
    workdir = Path(tempfile.mkdtemp(prefix="emperor-bench-emp-"))
    compile_for = None if args.no_compile else py   # the interpreter emperor runs on (bench_serve.byte_compile)
    src = bs.snapshot_emperor(workdir, compile_for)
    for spec in args.rev or []:
        REVISIONS[f"emperor@{spec}"] = bs.revision_source(spec, workdir, compile_for)
    run = Run(workdir, bindir, src, py)
    info = bs.machine(bindir)
    info.pop("nginx", None), info.pop("wrk", None)
    info["emperor interpreter"] = py + (" (this script's)" if args.system_python else " (the benchmark venv's)")
    info["emperor bytecode"] = ("none: every process compiles emperor's sources" if args.no_compile
                                else "snapshot byte-compiled (compileall) before the run")
    info["PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE", "unset")
    info["other benchmarks"] = quiet
    info["load average at start"] = loadavg()
    revs = list(REVISIONS)
    kinds = ["emperor", *revs, "uwsgi"] + ([] if args.no_freq1 else ["uwsgi-freq1"])
    only = set(args.only or ["reactions", "scale", "single", "bounds"])
    data: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}
    t0 = time.monotonic()
    try:
        if "reactions" in only:
            say(f"reactions: {args.reps} cycles each of {', '.join(kinds)}")
            data["reactions"], data["phases"] = reactions(run, kinds, args.reps)
        if "scale" in only:
            say(f"scale: {args.sizes} vassals, {args.scale_rounds} round(s)")
            data["scale"] = scale(run, ["emperor", *revs, "uwsgi"], args.sizes, args.scale_rounds, args.idle)
        if "single" in only:
            say(f"one master: {args.single_reps} each")
            data["single"] = single(run, args.single_reps)
        if "bounds" in only:
            say("bounds")
            data["bounds"] = bounds(run, max(args.single_reps, 5))
    finally:
        info["load average at end"] = loadavg()
        info["duration"] = f"{time.monotonic() - t0:.0f} s"
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1, default=str))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    print("## machine\n")
    for k, v in info.items():
        print(f"- {k}: {v}")
    print()
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
