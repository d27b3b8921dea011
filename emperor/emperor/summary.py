"""What the emperor makes of its masters' stats: a summary per vassal and requests per second.

Each master keeps uWSGI-shaped stats (emperor/master/stats.py) and answers them
on a stats socket from its own loop; the control plane (emperor/emperor/control.py)
reads them only when asked, so nobody watching costs the serving path nothing.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable

from emperor.proc import memory

RATE_SPAN = 1.0      # requests per second over at least this long, when the history has it
RATE_WINDOW = 10.0   # ... and never over samples older than this


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

    def keep(self, names: Iterable[str]) -> None:
        for name in set(self.samples) - set(names):
            del self.samples[name]


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


def _daemon(d: dict) -> dict:
    """An attached daemon as the master reports it (emperor/master/daemons.py report)."""
    def num(key: str) -> float:
        value = d.get(key, 0)
        return value if isinstance(value, (int, float)) else 0
    return {"command": str(d.get("command", ""))[:200], "pid": int(num("pid")), "state": str(d.get("state", "?"))[:20],
            "restarts": int(num("restarts")), "backoff": num("backoff")}


def summarize(raw: dict, rates: Rates, name: str, now: float) -> dict:
    """One master's uWSGI-shaped stats -> what status and metrics show (times in µs, sizes in bytes)."""
    workers = [_worker(w) for w in raw.get("workers", []) if isinstance(w, dict)]
    live = [w for w in workers if w["pid"]]
    requests = sum(w["requests"] for w in live)
    running = sum(w["running_time"] for w in live)
    master_rss = memory(raw.get("pid"))[0]
    return {
        "pid": raw.get("pid"), "state": raw.get("state"), "generation": raw.get("generation"),
        "snapshot": raw.get("snapshot", -1), "started_at": raw.get("started_at"),
        "listen_queue": raw.get("listen_queue", 0),
        "workers": workers, "total": len(live), "busy": sum(1 for w in live if w["status"] == "busy"),
        "requests": requests, "exceptions": sum(w["exceptions"] for w in live),
        "avg_rt": running // requests if requests else 0,
        "rss": master_rss + sum(w["rss"] for w in live), "master_rss": master_rss,
        "rps": rates.rate(name, {w["pid"]: w["requests"] for w in live}, now),
        "daemons": [_daemon(d) for d in raw.get("daemons") or [] if isinstance(d, dict)][:64],
    }
