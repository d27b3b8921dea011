"""The stats document, in uWSGI's JSON shape so that `uwsgitop` reads it unchanged.

Every key uwsgitop may touch is present and every number is an integer; our
own extras (state, generation, snapshot, busy_for) ride alongside. A master
answers it on its `stats` socket (or the emperor's private one) from its own
loop: one document per connection, then close.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable

from emperor.config import Config
from emperor.master.generations import Generation, Workers
from emperor.master.loop import Loop, Part
from emperor.proc import memory, run_state
from emperor.sockets import Listener


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


def _workers(gen: Generation, config: Config, last_requests: dict[int, int]) -> list[dict]:
    now_mono = time.monotonic()
    workers = []
    for slot, pid in enumerate(gen.slots):
        w = gen.board.worker(slot)
        pid = pid or 0
        rss, vsz = memory(pid)
        requests = sum(c["requests"] for c in w["cores"])
        rt_sum = sum(c["rt_sum"] for c in w["cores"])
        busy = [c for c in w["cores"] if c["busy_since"]]
        status = "pause" if w["paused"] else ("busy" if busy else "idle")
        if not pid:
            status = "cheap"
        elif run_state(pid) in ("T", "t"):
            status = "stopped"  # SIGSTOP from someone: it holds no request of ours, but serves none
        cores = []
        for i, c in enumerate(w["cores"]):
            cores.append({
                "id": i, "requests": c["requests"], "static_requests": 0, "routed_requests": 0,
                "offloaded_requests": 0, "write_errors": 0, "read_errors": 0,
                "in_request": int(bool(c["busy_since"])),
                "vars": [], "req_info": {}, "method": c["method"] if c["busy_since"] else "",
                "path": c["path"] if c["busy_since"] else "",
                "busy_for": round(now_mono - c["busy_since"], 3) if c["busy_since"] else 0,
            })
        workers.append({
            "id": slot + 1, "pid": pid, "accepting": int(bool(w["accepting"]) and bool(pid)),
            "requests": requests, "delta_requests": requests - last_requests.get(pid, requests),
            "exceptions": sum(c["exceptions"] for c in w["cores"]),
            "harakiri_count": gen.harakiri[slot], "signals": 0, "signal_queue": 0, "status": status,
            "rss": rss, "vsz": vsz, "running_time": rt_sum,
            "last_spawn": int(w["last_spawn"]), "respawn_count": w["respawn_count"],
            "tx": sum(c["tx"] for c in w["cores"]), "avg_rt": rt_sum // requests if requests else 0,
            "apps": [{"id": 0, "modifier1": 0, "mountpoint": "", "startup_time": 0, "requests": requests,
                      "exceptions": 0, "chdir": config.chdir or ""}],
            "cores": cores, "generation": gen.number,
        })
    return workers


def document(config: Config, listeners: list[Listener], current: Generation | None,
             last_requests: dict[int, int], ours: dict) -> dict:
    """uWSGI's stats document; `ours`: the master's own facts (name, state, generation...)."""
    sockets_doc = []
    total_queue = 0
    for l in listeners:
        queue, maxq = listen_queue(l.sock)
        total_queue += queue
        sockets_doc.append({"name": l.address, "proto": l.kind, "queue": queue,
                            "max_queue": maxq or config.listen, "shared": 0, "can_offload": 0})
    workers = _workers(current, config, last_requests) if current is not None else []
    load = sum(1 for w in workers for c in w["cores"] if c["in_request"])
    doc = {
        "version": "2.0.31-emperor", "listen_queue": total_queue, "listen_queue_errors": 0,
        "signal_queue": 0, "load": load, "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
        "cwd": os.getcwd(), "locks": [], "sockets": sockets_doc, "workers": workers,
    }
    doc.update(ours, now=int(time.time()))
    return doc


def statistics_text(config: Config, doc: dict) -> str:
    """SIGUSR1: the effective config, then each worker's counters."""
    lines = ["statistics (SIGUSR1); effective config:"] + ["  " + l for l in config.ini_lines()]
    for w in doc["workers"]:
        lines.append(f"  worker {w['id']} pid {w['pid']}: {w['requests']} requests, "
                     f"{w['exceptions']} exceptions, status {w['status']}, "
                     f"avg {w['avg_rt'] / 1000:.2f} ms, rss {w['rss'] // 1024} KiB")
    return "\n".join(lines)


def workers_text(state: str, doc: dict) -> str:
    """SIGUSR2: each worker's status and the request it is busy with."""
    lines = [f"worker status (SIGUSR2), state {state}:"]
    for w in doc["workers"]:
        line = f"  worker {w['id']} pid {w['pid']}: {w['status']}"
        for core in w["cores"]:
            if core.get("busy_for"):
                line += f"; {core['method']} {core['path']} running {core['busy_for']:.2f}s"
        lines.append(line)
    return "\n".join(lines)


class StatsServer(Part):
    """Answers the stats socket from the master's loop; keeps what `delta_requests` counts from."""

    def __init__(self, config: Config, workers: Workers, listeners: Callable[[], list[Listener]],
                 facts: Callable[[], dict]) -> None:
        self.listener: Listener | None = None   # no stats socket: SIGUSR1 still logs the document
        self.config = config
        self.workers = workers
        self.listeners = listeners          # the serving sockets, for their queues
        self.facts = facts                  # the master's own: name, state, image, paused...
        self.last_requests: dict[int, int] = {}   # per worker pid, at the previous read
        self.reporters: list[Part] = []     # the master's parts: each adds its facts (Part.report)

    def build(self, last_requests: dict[int, int]) -> dict:
        w = self.workers
        ours = self.facts()
        serving = w.current.number if w.current else ours["image"]
        ours.update(generation=serving, restored=int(serving != ours["image"]),
                    snapshot=w.snapshot.number if w.snapshot else -1)
        doc = document(self.config, self.listeners(), w.current, last_requests, ours)
        for p in self.reporters:
            p.report(doc)
        return doc

    def listen(self, listener: Listener, loop: Loop) -> None:
        self.listener = listener
        loop.watch(listener.fd, self.serve)

    def fds(self) -> list[int]:
        return [self.listener.fd] if self.listener is not None else []

    def document(self) -> dict:
        doc = self.build(self.last_requests)
        self.last_requests = {w["pid"]: w["requests"] for w in doc["workers"]}
        return doc

    def serve(self) -> None:
        """Answer every connection waiting: one document each, then close."""
        assert self.listener is not None
        while True:
            try:
                conn, _ = self.listener.sock.accept()
            except OSError:  # BlockingIOError included: nobody left
                return
            try:
                body = json.dumps(self.document()).encode()
                if self.config.stats_http:
                    body = (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body)) + body
                conn.setblocking(True)
                conn.settimeout(2)
                conn.sendall(body)
            except OSError:
                pass
            finally:
                conn.close()
