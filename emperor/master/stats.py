"""The stats document, in uWSGI's JSON shape so that `uwsgitop` reads it unchanged.

Every key uwsgitop may touch is present and every number is an integer;
our own extras (state, generation, snapshot, busy_for) ride alongside.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emperor.master.process import Master

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _mem(pid: int) -> tuple[int, int]:
    """(rss, vsz) in bytes from /proc, (0, 0) if the process is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            vsz, rss = f.read().split()[:2]
        return int(rss) * _PAGE, int(vsz) * _PAGE
    except (OSError, ValueError):
        return 0, 0


def listen_queue(sock: socket.socket) -> tuple[int, int]:
    """(connections waiting, backlog size) of a TCP listening socket, via TCP_INFO."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0, 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        unacked, sacked = struct.unpack_from("<II", info, 24)
        return unacked, sacked
    except OSError:
        return 0, 0


def document(master: "Master") -> dict:
    now_mono = time.monotonic()
    now = time.time()
    gen = master.current
    workers = []
    total_queue = 0
    sockets_doc = []
    for l in master.listeners:
        queue, maxq = listen_queue(l.sock)
        total_queue += queue
        sockets_doc.append({"name": l.address, "proto": l.kind, "queue": queue, "max_queue": maxq or master.config.listen,
                            "shared": 0, "can_offload": 0})
    if gen is not None:
        for slot, pid in enumerate(gen.slots):
            w = gen.board.worker(slot)
            pid = pid or 0
            rss, vsz = _mem(pid) if pid else (0, 0)
            requests = sum(c["requests"] for c in w["cores"])
            rt_sum = sum(c["rt_sum"] for c in w["cores"])
            busy = [c for c in w["cores"] if c["busy_since"]]
            status = "pause" if w["paused"] or gen.paused else ("busy" if busy else "idle")
            if not pid:
                status = "cheap"
            cores = []
            for i, c in enumerate(w["cores"]):
                cores.append({
                    "id": i, "requests": c["requests"], "static_requests": 0, "routed_requests": 0,
                    "offloaded_requests": 0, "write_errors": 0, "read_errors": 0, "in_request": int(bool(c["busy_since"])),
                    "vars": [], "req_info": {}, "method": c["method"] if c["busy_since"] else "",
                    "path": c["path"] if c["busy_since"] else "",
                    "busy_for": round(now_mono - c["busy_since"], 3) if c["busy_since"] else 0,
                })
            workers.append({
                "id": slot + 1, "pid": pid, "accepting": int(bool(pid) and not w["paused"] and not gen.paused),
                "requests": requests, "delta_requests": requests - master.last_requests.get(pid, requests), "exceptions": sum(c["exceptions"] for c in w["cores"]),
                "harakiri_count": gen.harakiri[slot], "signals": 0, "signal_queue": 0, "status": status,
                "rss": rss, "vsz": vsz, "running_time": rt_sum,
                "last_spawn": int(w["last_spawn"]), "respawn_count": w["respawn_count"],
                "tx": sum(c["tx"] for c in w["cores"]), "avg_rt": rt_sum // requests if requests else 0,
                "apps": [{"id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0, "requests": requests,
                          "exceptions": 0, "chdir": master.config.chdir or ""}],
                "cores": cores, "generation": gen.number,
            })
    master.last_requests = {w["pid"]: w["requests"] for w in workers}
    load = sum(1 for w in workers for c in w["cores"] if c["in_request"])
    return {
        "version": "2.0.31-emperor", "listen_queue": total_queue, "listen_queue_errors": 0,
        "signal_queue": 0, "load": load, "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
        "cwd": os.getcwd(), "locks": [], "sockets": sockets_doc, "workers": workers,
        # ours
        "name": master.name, "state": master.state.state.value, "generation": master.reloads,
        "snapshot": master.snapshot.number if master.snapshot else -1,
        "paused": int(master.paused), "started_at": int(master.started_at), "now": int(now),
        "last_reload_error": master.last_reload_error,
    }
