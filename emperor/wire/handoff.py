"""A master -> its own next image across `execve`, and what the emperor gives every master.

A graceful reload re-executes the master (same PID, new code). What must
survive is passed as inherited descriptors named in environment variables:
the listening sockets (never closed, so the kernel keeps queueing), the
worker -> master notify pipe, the scoreboards of the generations still
running, and the channel to the emperor; the PIDs of the attached daemons and
running cron jobs (still the master's children: same PID) ride along, so that
they keep running rather than start again. `export` writes them for the next
image and `adopt` reads them back (and removes them), so each variable is
written in one place and read in one place.
"""
from __future__ import annotations

import os
import socket

# Set by the emperor when it starts a master; part of the master's own environment from then on.
CHANNEL = "EMPEROR_CHANNEL"            # the master's end of the channel (a descriptor number)
VASSALS_DIR = "EMPEROR_VASSALS_DIR"    # for the %v magic variable
STATS_SOCKET = "EMPEROR_STATS_SOCKET"  # a private stats socket, for a vassal without `stats`
PREFLIGHTS = "EMPEROR_PREFLIGHTS"      # "emperor": ask the emperor to fork our reload preflights
TRUST = "EMPEROR_TRUST"                # who may write the files a vassal reads (files.TrustRule.export)
STRICT_COMPAT = "EMPEROR_STRICT_COMPAT"  # "1": `emperor run --strict-compat` (unsupported uWSGI options refused)
# kind=address;... of the sockets the emperor holds for an on-demand vassal (emperor/emperor/ondemand.py):
# the master serves them (its file may not name them) and never removes their files (vacuum)
ON_DEMAND = "EMPEROR_ON_DEMAND"
FROM_EMPEROR = (CHANNEL, VASSALS_DIR, STATS_SOCKET, PREFLIGHTS, TRUST, STRICT_COMPAT, ON_DEMAND)

# From one master image to the next; consumed by the next one.
SOCKETS = "EMPEROR_SOCKETS"            # fd=kind=address;... of the listening sockets
NOTIFY = "EMPEROR_NOTIFY"              # "r,w" of the worker -> master pipe
GENERATIONS = "EMPEROR_OLD_GENERATIONS"  # generations still running, to drain (Generation.export)
SNAPSHOT = "EMPEROR_SNAPSHOT"          # the paused previous generation, if one is kept
STATE = "EMPEROR_MASTER_STATE"         # started-at, paused flag, the generation retired, original cwd
RELOADS = "UWSGI_RELOADS"              # as in uWSGI: applications read it
HELD = "EMPEROR_HELD_SOCKETS"          # to a preflight: the addresses we already hold (kind=address;...)
DAEMONS = "EMPEROR_DAEMONS"            # attached daemons, kept running across the reload (Daemon.export)
CRONS = "EMPEROR_CRONS"                # cron jobs still running, and each task's last minute (cron.py export)
FIFO = "EMPEROR_MASTER_FIFO"           # the master FIFO's two ends and the paths it made (fifo.py export)
CACHES = "EMPEROR_CACHES"              # name=memfd;... of the caches (master/spooler.py), kept across reloads
SPOOLERS = "EMPEROR_SPOOLERS"          # the spoolers' PIDs, then r,w,dir of each wake pipe (master/spooler.py)
STDIO = "EMPEROR_STDIO"                # the stdout the master started with, kept for req-logger = stdio (logfiles.py)
SYSTEMD = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
INTERNAL = (SOCKETS, NOTIFY, GENERATIONS, SNAPSHOT, STATE, HELD, RELOADS, DAEMONS, CRONS, FIFO, CACHES,
            SPOOLERS, STDIO)


class HandOff:
    """What one master image passes to the next (and the first image finds empty)."""

    __slots__ = ("reloads", "sockets", "notify", "generations", "snapshot", "started_at", "paused",
                 "retired", "cwd", "channel", "daemons", "crons", "fifo", "caches", "spoolers", "stdio")

    def __init__(self) -> None:
        self.reloads = 0
        self.sockets: dict[tuple[str, str], socket.socket] = {}   # (kind, address) -> socket
        self.notify: tuple[int, int] | None = None
        self.generations: list[str] = []
        self.snapshot = ""
        self.started_at: float | None = None
        self.paused = False
        self.retired = -1            # the number of the generation this reload replaces (-1: none)
        self.cwd = ""
        self.channel: int | None = None
        self.daemons: list[str] = []     # emperor/master/daemons.py: one entry per daemon
        self.crons: list[str] = []       # emperor/master/cron.py: one entry per task or running job
        self.fifo = ""                # emperor/master/fifo.py: "read,write,active path" and the paths made
        self.caches = ""              # emperor/master/spooler.py: the caches' memfds
        self.spoolers = ""            # emperor/master/spooler.py: the spoolers and their wake pipes
        self.stdio: int | None = None  # emperor/master/logfiles.py: the original stdout, for req-logger = stdio


def export(h: HandOff, env: dict[str, str], sockets: list[tuple[str, str, int]]) -> list[int]:
    """Write `h` into `env` for the next image; returns the descriptors it must inherit.

    `sockets`: (kind, address, fd) of every listening socket to keep.
    """
    env[SOCKETS] = ";".join(f"{fd}={kind}={address}" for kind, address, fd in sockets)
    env[RELOADS] = str(h.reloads)
    fds = [fd for _, _, fd in sockets]
    if h.notify is not None:
        env[NOTIFY] = f"{h.notify[0]},{h.notify[1]}"
        fds += list(h.notify)
    env[GENERATIONS] = ";".join(h.generations)
    if h.snapshot:
        env[SNAPSHOT] = h.snapshot
    env[STATE] = f"{h.started_at},{int(h.paused)},{h.retired},{h.cwd}"
    env[DAEMONS] = ";".join(h.daemons)
    env[CRONS] = ";".join(h.crons)
    if h.fifo:
        env[FIFO] = h.fifo
    env[CACHES], env[SPOOLERS] = h.caches, h.spoolers
    if h.channel is not None:
        env[CHANNEL] = str(h.channel)
        fds.append(h.channel)
    if h.stdio is not None:
        env[STDIO] = str(h.stdio)
        fds.append(h.stdio)
    return fds


def adopt(env: dict[str, str]) -> HandOff:
    """Read (and remove from `env`) what the previous image handed over; the channel stays."""
    h = HandOff()
    h.reloads = int(env.pop(RELOADS, "0") or 0)
    for item in filter(None, env.pop(SOCKETS, "").split(";")):
        fd, kind, address = item.split("=", 2)
        try:
            h.sockets[(kind, address)] = socket.socket(fileno=int(fd))
        except OSError:
            continue
    notify = env.pop(NOTIFY, "")
    if notify:
        r, w = (int(x) for x in notify.split(","))
        h.notify = (r, w)
    h.generations = [g for g in env.pop(GENERATIONS, "").split(";") if g]
    h.snapshot = env.pop(SNAPSHOT, "")
    h.daemons = [d for d in env.pop(DAEMONS, "").split(";") if d]
    h.crons = [c for c in env.pop(CRONS, "").split(";") if c]
    h.fifo = env.pop(FIFO, "")
    h.caches, h.spoolers = env.pop(CACHES, ""), env.pop(SPOOLERS, "")
    stdio = env.pop(STDIO, "")
    h.stdio = int(stdio) if stdio.isdigit() else None
    state = env.pop(STATE, "")
    if state:
        started, paused, retired, cwd = state.split(",", 3)
        h.started_at, h.paused, h.retired, h.cwd = float(started), paused == "1", int(retired), cwd
    if env.get(CHANNEL):
        h.channel = int(env[CHANNEL])
    return h


def held(items: list[tuple[str, str]]) -> str:
    """The value of HELD for a preflight: the (kind, address) pairs we already hold."""
    return ";".join(f"{kind}={address}" for kind, address in items)


def read_held(value: str) -> set[tuple[str, str]]:
    out = set()
    for item in filter(None, value.split(";")):
        kind, _, address = item.partition("=")
        out.add((kind, address))
    return out


def clean(env: dict[str, str]) -> dict[str, str]:
    """`env` without what only one image may see: the environment of a next image or a preflight."""
    return {k: v for k, v in env.items() if k not in INTERNAL}


def inheritable(fds: list[int]) -> None:
    for fd in fds:
        os.set_inheritable(fd, True)
