"""What the emperor makes of its masters' stats: a summary per vassal, requests per
second, and the Prometheus text exposition of the whole table.

Each master already keeps uWSGI-shaped stats (emperor/stats.py) and answers them
on a stats socket from its own loop. Under an emperor, a vassal with no `stats`
option gets a private UNIX one (`stats_socket`, passed as EMPEROR_STATS_SOCKET);
the control plane (emperor/control.py) reads them only when asked, so nobody
watching costs the serving path nothing at all.
"""
from __future__ import annotations

import collections
import hashlib
import math
import os
import socket
import stat
import time

from emperor import paths
from emperor.states import VassalState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RATE_SPAN = 1.0      # requests per second over at least this long, when the history has it
RATE_WINDOW = 10.0   # ... and never over samples older than this
SERVING = {"running", "paused", "reloading", "reload failed"}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def stats_socket(vassal_path: str) -> str | None:
    """The private stats socket of a vassal's master, in our runtime dir; None if unusable."""
    try:
        d = paths.ensure_runtime_dir()
    except OSError:
        return None
    digest = hashlib.sha1(os.path.abspath(vassal_path).encode()).hexdigest()[:16]
    return os.path.join(d, f"stats-{digest}.sock")


def sweep_stale_stats_sockets(min_age: float = 60.0) -> int:
    """Remove private stats sockets nobody listens on, left by masters killed with SIGKILL.

    Only files bound more than `min_age` ago: a master binds and listens at
    once, so a young socket that refuses may be one that is just starting.
    """
    d = paths.runtime_dir()
    removed = 0
    try:
        names = [n for n in os.listdir(d) if n.startswith("stats-") and n.endswith(".sock")]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(d, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode) or time.time() - st.st_mtime < min_age:
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
        except ConnectionRefusedError:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        except OSError:
            pass
    return removed


class Rates:
    """Requests per second per vassal, from the per-worker totals of successive status requests.

    Counted per worker PID, so a respawned worker (its counters start again at
    0) or a reload (a whole new generation) does not make the rate negative.
    """

    def __init__(self) -> None:
        self.samples: dict[str, collections.deque[tuple[float, dict[int, int]]]] = {}

    def rate(self, name: str, counts: dict[int, int], now: float) -> float | None:
        history = self.samples.setdefault(name, collections.deque(maxlen=64))
        while history and now - history[0][0] > RATE_WINDOW:
            history.popleft()
        base = next((s for s in reversed(history) if now - s[0] >= RATE_SPAN), None)
        if base is None and history and now - history[0][0] >= 0.2:
            base = history[0]
        history.append((now, counts))
        if base is None:
            return None
        then, before = base
        done = sum(n - before.get(pid, 0) if n >= before.get(pid, 0) else n for pid, n in counts.items())
        return round(done / (now - then), 1)

    def keep(self, names) -> None:
        for name in set(self.samples) - set(names):
            del self.samples[name]


def _rss(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _worker(w: dict) -> dict:
    busy = [c for c in w.get("cores", []) if c.get("in_request")]
    oldest = max(busy, key=lambda c: c.get("busy_for", 0), default=None)
    return {
        "id": w.get("id", 0), "pid": w.get("pid", 0), "status": w.get("status", "?"),
        "requests": w.get("requests", 0), "exceptions": w.get("exceptions", 0),
        "harakiri_count": w.get("harakiri_count", 0), "respawn_count": w.get("respawn_count", 0),
        "rss": w.get("rss", 0), "vsz": w.get("vsz", 0), "tx": w.get("tx", 0),
        "avg_rt": w.get("avg_rt", 0), "running_time": w.get("running_time", 0),
        "last_spawn": w.get("last_spawn", 0),
        "request": f"{oldest.get('method', '')} {oldest.get('path', '')}".strip() if oldest else "",
        "busy_for": max(oldest.get("busy_for", 0), 0) if oldest else 0,  # a request begun mid-snapshot
    }


def summarize(raw: dict, rates: Rates, name: str, now: float) -> dict:
    """One master's uWSGI-shaped stats -> what status and metrics show (times in µs, sizes in bytes)."""
    workers = [_worker(w) for w in raw.get("workers", []) if isinstance(w, dict)]
    live = [w for w in workers if w["pid"]]
    requests = sum(w["requests"] for w in live)
    running = sum(w["running_time"] for w in live)
    master_rss = _rss(raw.get("pid"))
    return {
        "pid": raw.get("pid"), "state": raw.get("state"), "generation": raw.get("generation"),
        "snapshot": raw.get("snapshot", -1), "started_at": raw.get("started_at"),
        "listen_queue": raw.get("listen_queue", 0),
        "workers": workers, "total": len(live), "busy": sum(1 for w in live if w["status"] == "busy"),
        "requests": requests, "exceptions": sum(w["exceptions"] for w in live),
        "avg_rt": running // requests if requests else 0,
        "rss": master_rss + sum(w["rss"] for w in live), "master_rss": master_rss,
        "rps": rates.rate(name, {w["pid"]: w["requests"] for w in live}, now),
    }


# ---------- Prometheus text exposition (format 0.0.4) ----------
# name -> (type, help): the one list of what the endpoint serves.
METRICS: dict[str, tuple[str, str]] = {
    "emperor_start_time_seconds": ("gauge", "When the emperor started, in seconds since the epoch."),
    "emperor_vassals": ("gauge", "Vassals in the emperor's table."),
    "emperor_vassal_up": ("gauge", "1 if the vassal's master is serving (running, paused, reloading, reload failed)."),
    "emperor_vassal_state": ("gauge", "1 for the vassal's current state, 0 for the others."),
    "emperor_vassal_generation": ("gauge", "The master's generation (UWSGI_RELOADS)."),
    "emperor_vassal_restarts_total": ("counter", "Masters started for this vassal after the first one."),
    "emperor_vassal_backoff_seconds": ("gauge", "The vassal's current restart backoff delay; 0 once it is ready."),
    "emperor_vassal_stats_ok": ("gauge", "1 if the vassal's master answered the emperor's stats request."),
    "emperor_vassal_start_time_seconds": ("gauge", "When the vassal's master started, in seconds since the epoch."),
    "emperor_vassal_workers": ("gauge", "Workers of the current generation."),
    "emperor_vassal_busy_workers": ("gauge", "Workers serving a request right now."),
    "emperor_vassal_listen_queue": ("gauge", "Connections waiting in the listen backlogs."),
    "emperor_vassal_requests_total": ("counter", "Requests served by the current generation's workers."),
    "emperor_vassal_exceptions_total": ("counter", "Requests of the current generation that raised."),
    "emperor_vassal_avg_response_seconds": ("gauge", "Average response time of the current generation."),
    "emperor_vassal_rss_bytes": ("gauge", "Resident memory of the master and its workers (sum)."),
    "emperor_worker_requests_total": ("counter", "Requests served by this worker process."),
    "emperor_worker_exceptions_total": ("counter", "Requests of this worker process that raised."),
    "emperor_worker_busy": ("gauge", "1 if the worker is serving a request."),
    "emperor_worker_rss_bytes": ("gauge", "Resident memory of the worker."),
    "emperor_worker_avg_response_seconds": ("gauge", "Average response time of this worker process."),
    "emperor_worker_respawns_total": ("counter", "Times this worker slot was respawned."),
    "emperor_worker_harakiri_total": ("counter", "Workers of this slot killed by harakiri."),
}


def _escape_label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int | None) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(doc: dict) -> str:
    """The control document (with stats) as Prometheus text: HELP and TYPE once per family."""
    samples: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(name: str, value, **labels: object) -> None:
        text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
        samples[name].append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")

    vassals = doc.get("vassals", {})
    add("emperor_start_time_seconds", float(doc.get("started", 0)))
    add("emperor_vassals", len(vassals))
    for name, v in sorted(vassals.items()):
        state = v.get("state", "gone")
        add("emperor_vassal_up", int(state in SERVING and bool(v.get("pid"))), vassal=name)
        for s in VassalState:
            add("emperor_vassal_state", int(s.value == state), vassal=name, state=s.value)
        add("emperor_vassal_generation", v.get("generation", 0), vassal=name)
        add("emperor_vassal_restarts_total", max(v.get("starts", 0) - 1, 0), vassal=name)
        add("emperor_vassal_backoff_seconds", float(v.get("backoff") or 0), vassal=name)
        st = v.get("stats")
        add("emperor_vassal_stats_ok", int(st is not None), vassal=name)
        if st is None:
            continue
        add("emperor_vassal_start_time_seconds", float(st.get("started_at") or 0), vassal=name)
        add("emperor_vassal_workers", st["total"], vassal=name)
        add("emperor_vassal_busy_workers", st["busy"], vassal=name)
        add("emperor_vassal_listen_queue", st["listen_queue"], vassal=name)
        add("emperor_vassal_requests_total", st["requests"], vassal=name)
        add("emperor_vassal_exceptions_total", st["exceptions"], vassal=name)
        add("emperor_vassal_avg_response_seconds", st["avg_rt"] / 1e6, vassal=name)
        add("emperor_vassal_rss_bytes", st["rss"], vassal=name)
        for w in st["workers"]:
            if not w["pid"]:
                continue
            labels = {"vassal": name, "worker": str(w["id"])}
            add("emperor_worker_requests_total", w["requests"], **labels)
            add("emperor_worker_exceptions_total", w["exceptions"], **labels)
            add("emperor_worker_busy", int(w["status"] == "busy"), **labels)
            add("emperor_worker_rss_bytes", w["rss"], **labels)
            add("emperor_worker_avg_response_seconds", w["avg_rt"] / 1e6, **labels)
            add("emperor_worker_respawns_total", w["respawn_count"], **labels)
            add("emperor_worker_harakiri_total", w["harakiri_count"], **labels)
    lines: list[str] = []
    for name, (kind, text) in METRICS.items():
        if samples[name]:
            lines += [f"# HELP {name} {_escape_help(text)}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"
