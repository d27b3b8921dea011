"""The Prometheus text exposition (format 0.0.4) of the emperor's table, served by `--metrics`.

METRICS is the one list of what the endpoint serves; `render` turns the control
socket's status document (each vassal with its master's summarised stats) into text.
"""
from __future__ import annotations

import math

from emperor.states import VassalState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVING = {"running", "paused", "reloading", "reload failed"}
IN_ERROR = {"failing", "config error", "backoff", "reload failed"}


# name -> (type, help): the one list of what the endpoint serves.
METRICS: dict[str, tuple[str, str]] = {
    "emperor_start_time_seconds": ("gauge", "When the emperor started, in seconds since the epoch."),
    "emperor_vassals": ("gauge", "Vassals in the emperor's table."),
    "emperor_vassal_up": ("gauge", "1 if the vassal's master is serving (running, paused, reloading, reload failed)."),
    "emperor_vassal_state": ("gauge", "1 for the vassal's current state, 0 for the others."),
    "emperor_vassal_generation": ("gauge", "The generation serving (UWSGI_RELOADS of the load it runs)."),
    "emperor_vassal_restored": ("gauge", "1 if a rollback (SIGURG) serves an older generation than the file's."),
    "emperor_vassal_rollbacks_total": ("counter", "Rollbacks to the snapshot (SIGURG) since the vassal started."),
    "emperor_vassal_restarts_total": ("counter", "Masters started for this vassal after the first one."),
    "emperor_vassal_on_demand": ("gauge", "1 if the emperor holds the vassal's sockets and starts its master on demand."),
    "emperor_vassal_cold_starts_total": ("counter", "Masters an on-demand vassal's connections started (cold starts)."),
    "emperor_vassal_error_info": ("gauge", "1 while the vassal is failing or its file is in error; the `error` "
                                  "label is the error's last line (at most 200 characters)."),
    "emperor_vassal_warnings": ("gauge", "Warnings its file gave (options not supported, unknown ones, ...)."),
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

    def add(name: str, value: float | int | None, **labels: str) -> None:
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
        add("emperor_vassal_restored", int(bool(v.get("restored"))), vassal=name)
        add("emperor_vassal_rollbacks_total", v.get("rollbacks", 0), vassal=name)
        add("emperor_vassal_restarts_total", max(v.get("starts", 0) - 1, 0), vassal=name)
        add("emperor_vassal_on_demand", int(bool(v.get("on_demand"))), vassal=name)
        add("emperor_vassal_cold_starts_total", v.get("cold_starts", 0), vassal=name)
        error = (v.get("last_error") or "").strip()
        if error and state in IN_ERROR:
            add("emperor_vassal_error_info", 1, vassal=name, error=error.splitlines()[-1][-200:])
        add("emperor_vassal_warnings", len(v.get("warnings") or ()), vassal=name)
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
