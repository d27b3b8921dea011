"""`emperor status [DIR] [NAME] [--once|--json]`: the control socket, for people.

The live view asks the emperor about once a second and redraws one `rich` screen:
one row per vassal (name, state in colour, PID, generation, workers busy/total,
requests, requests per second, average response time, memory, uptime, and the
last event or error); with NAME, that vassal's workers. Columns that do not fit
the terminal are dropped, least useful first; at 80 columns the last event or
error goes on a line of its own under its vassal. Ctrl-C leaves the terminal as
it was and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from emperor import log as logmod
from emperor import paths
from emperor.cli.locate import NoEmperor, Target, ask, locate, no_such_vassal, split_vassal_path, vassal_name
from emperor.cli.units import _age, _count, _ms, _rate, _size
from emperor.wire.control import HEALTH

REFRESH = 1.0
RATE_SAMPLE = 1.0   # --once: the second status request this long after the first, for REQ/S
STATE_STYLE = {
    "running": "green", "starting": "yellow", "reloading": "yellow", "paused": "yellow",
    "stopping": "yellow", "backoff": "red", "config error": "red", "reload failed": "red",
    "failing": "red", "on-demand": "cyan",
}
PROBLEM = {"backoff", "config error", "reload failed", "failing"}
MIN_EVENT = 30    # narrower than this, the last event goes under its row


def event_text(name: str, v: dict) -> str:
    """The last event, or for a vassal in trouble what went wrong (SPEC 6.2: `backoff 8s: exited 1: …`)."""
    state = v.get("state", "")
    error = (v.get("last_error") or "").replace(f"{name}: ", "", 1)  # the row already names it
    event = (v.get("last_event") or "").replace(f"{name}: ", "", 1)
    if state == "backoff":
        detail = event.rsplit("; retry in ", 1)[0] or error
        retry = v.get("retry_in")
        # never `retry in 0s`: under half a second left still reads as a second
        return f"backoff {v.get('backoff', 0):g}s: {detail}" + (f" (retry in {max(retry, 1):.0f}s)" if retry else "")
    if state in PROBLEM:
        return error or event
    if state == "on-demand":   # no master: the emperor holds its sockets (emperor/emperor/ondemand.py)
        n, last = v.get("cold_starts", 0), v.get("last_start")
        return (f"{n} cold start{'' if n == 1 else 's'}"
                + (f", last start {_age(time.time() - last)} ago" if last else ", never started"))
    warnings = v.get("warnings") or []
    if warnings:
        return f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''} in its file (status {name}) · {event}"
    return event


# ---------- the vassal table ----------
@dataclass
class Column:
    key: str
    header: str
    right: bool
    drop: int       # dropped for width in decreasing order; 0 never


COLUMNS = [
    Column("name", "VASSAL", False, 0),
    Column("state", "STATE", False, 0),
    Column("pid", "PID", True, 7),
    Column("gen", "GEN", True, 9),
    Column("workers", "BUSY", True, 4),
    Column("requests", "REQS", True, 5),
    Column("rps", "REQ/S", True, 2),
    Column("avg", "AVG", True, 6),
    Column("mem", "MEM", True, 3),
    Column("up", "UP", True, 8),
]


def vassal_cells(name: str, v: dict, now: float) -> dict[str, str]:
    st = v.get("stats") or {}
    started = st.get("started_at")
    return {
        "name": name, "state": "on-demand (idle)" if v.get("state") == "on-demand" else v.get("state", "?"),
        "pid": str(v["pid"]) if v.get("pid") else "-",
        # a `*`: a rollback (SIGURG) serves an older generation than the file's
        "gen": f"{v.get('generation', 0)}{'*' if v.get('restored') else ''}" if v.get("pid") else "-",
        "workers": f"{st['busy']}/{st['total']}" if st else "-",
        "requests": _count(st.get("requests")) if st else "-",
        "rps": _rate(st.get("rps")) if st else "-",
        "avg": _ms(st.get("avg_rt")) if st else "-",
        "mem": _size(st.get("rss")) if st else "-",
        "up": _age(now - started) if started else "-",
    }


def _fit(columns: list[Column], rows: list[dict[str, str]], width: int) -> tuple[list[Column], dict[str, int]]:
    widths = {c.key: max([len(c.header)] + [len(r[c.key]) for r in rows]) for c in columns}
    if "name" in widths:
        widths["name"] = min(widths["name"], max(12, width // 4))
    shown = list(columns)

    def used() -> int:
        return sum(widths[c.key] for c in shown) + len(shown) - 1

    for c in sorted((c for c in columns if c.drop), key=lambda c: -c.drop):
        if used() <= width:
            break
        shown.remove(c)
    return shown, widths


def _cell(text: str, width: int, right: bool, style: str = "") -> Text:
    if len(text) > width:
        text = text[:max(width - 1, 0)] + "…"
    return Text(text.rjust(width) if right else text.ljust(width), style=style)


def vassal_lines(doc: dict, width: int, now: float | None = None) -> list[Text]:
    """The vassal table as lines no wider than `width`: a header, then one or two lines per vassal."""
    now = time.time() if now is None else now
    vassals = doc.get("vassals", {})
    rows = [vassal_cells(name, v, now) for name, v in vassals.items()]
    shown, widths = _fit(COLUMNS, rows, width)
    used = sum(widths[c.key] for c in shown) + len(shown) - 1
    inline = width - used - 1 >= MIN_EVENT
    head = Text(style="bold")
    for c in shown:
        head.append_text(_cell(c.header, widths[c.key], c.right))
        head.append(" ")
    if inline:
        head.append("LAST EVENT")
    lines = [head]
    if not vassals:
        lines.append(Text("no vassals: drop a .ini file into the directory", style="dim"))
    for (name, v), row in zip(vassals.items(), rows):
        state = v.get("state", "?")
        line = Text()
        for c in shown:
            style = STATE_STYLE.get(state, "") if c.key == "state" else ("bold" if c.key == "name" else "")
            if row[c.key] == "-":
                style = "dim"
            line.append_text(_cell(row[c.key], widths[c.key], c.right, style))
            line.append(" ")
        event = event_text(name, v)
        style = "red" if state in PROBLEM else "dim"
        if inline:
            line.append_text(_cell(event, width - used - 1, False, style))
            lines.append(line)
        else:
            lines.append(line)
            if (state in PROBLEM or state == "on-demand" or v.get("warnings")) and event:
                lines += [Text(part, style=style) for part in _wrap(event, width, indent=2, most=2)]
    return [_trim(l, width) for l in lines]


def _wrap(text: str, width: int, indent: int, most: int) -> list[str]:
    """`text` indented, in at most `most` lines of `width` (the last one cut with an ellipsis)."""
    room = max(width - indent, 10)
    if len(text) > room:
        # two lines cut after a `: `, as late as the first line allows (not `backoff 4s:` alone),
        # and never between an exception's name and its message: the most specific part stays whole
        for cut in reversed([i + 2 for i in range(len(text)) if text.startswith(": ", i)]):
            head = text[:cut - 1]
            if len(head) <= room and len(text) - cut <= room and not _exception_name(head.rsplit(" ", 1)[-1]):
                return [" " * indent + head, " " * indent + text[cut:]]
    parts: list[str] = []
    while text and len(parts) < most:
        if len(text) <= room or len(parts) == most - 1:
            parts.append(text if len(text) <= room else text[:room - 1] + "…")
            break
        cut = text.rfind(" ", room // 2, room + 1)
        cut = cut if cut > 0 else room
        parts.append(text[:cut])
        text = text[cut:].lstrip()
    return [" " * indent + p for p in parts]


def _exception_name(word: str) -> bool:
    """`RuntimeError:`, `django.core.exceptions.ImproperlyConfigured:`: a dotted name with a capital."""
    word = word.rstrip(":")
    return (word.replace(".", "").replace("_", "").isalnum() and not word[:1].isdigit()
            and word.rsplit(".", 1)[-1][:1].isupper())


def _trim(line: Text, width: int) -> Text:
    line.rstrip()
    line.truncate(width, overflow="ellipsis")
    line.no_wrap = True
    return line


def header_line(doc: dict, width: int) -> Text:
    vassals = doc.get("vassals", {})
    counts: dict[str, int] = {}
    for v in vassals.values():
        counts[v.get("state", "?")] = counts.get(v.get("state", "?"), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    line = Text()
    line.append(f"emperor {doc.get('pid')}", style="bold")
    state = doc.get("state", "running")
    if state != "running":
        line.append(f" ({state})", style="yellow")
    line.append(f" · up {_age(doc.get('uptime'))} · {len(vassals)} vassal{'s' if len(vassals) != 1 else ''}")
    if summary:
        line.append(f": {summary}")
    directory = doc.get("directory", "")
    room = width - len(line) - 3
    if room >= 8:
        line.append(" · " + (directory if len(directory) <= room else "…" + directory[-(room - 1):]), style="dim")
    return _trim(line, width)


# ---------- one vassal's workers ----------
WORKER_COLUMNS = [
    Column("id", "WORKER", True, 0),
    Column("pid", "PID", True, 0),
    Column("status", "STATUS", False, 0),
    Column("requests", "REQS", True, 3),
    Column("exceptions", "EXC", True, 5),
    Column("avg", "AVG", True, 4),
    Column("rss", "RSS", True, 2),
    Column("respawns", "RESPAWNS", True, 6),
]
WORKER_STYLE = {"idle": "green", "busy": "yellow", "pause": "yellow", "cheap": "dim"}


def worker_lines(name: str, v: dict, width: int, now: float | None = None) -> list[Text]:
    now = time.time() if now is None else now
    state = v.get("state", "?")
    st = v.get("stats")
    title = Text()
    title.append(name, style="bold")
    title.append("  ")
    title.append(state, style=STATE_STYLE.get(state, ""))
    if v.get("pid"):
        title.append(f"  master {v['pid']}  generation {v.get('generation', 0)}")
        if v.get("restored"):
            title.append(" (restored by SIGURG: the file on disk is newer)", style="yellow")
    if st and st.get("started_at"):
        title.append(f"  up {_age(now - st['started_at'])}")
    lines = [_trim(title, width)]
    if st:
        totals = (f"{st['total']} workers, {st['busy']} busy · {_count(st['requests'])} requests · "
                  f"{_rate(st.get('rps'))} req/s · avg {_ms(st['avg_rt'])} · {_size(st['rss'])} RSS")
        if st.get("snapshot", -1) >= 0:
            totals += f" · snapshot: generation {st['snapshot']}"
        lines.append(_trim(Text(totals), width))
    event = event_text(name, v)
    if event:
        text = ("error: " if state in PROBLEM else "last event: ") + event
        lines += [Text(part, style="red" if state in PROBLEM else "dim") for part in _wrap(text, width, 0, 3)]
    for warning in (v.get("warnings") or [])[:10]:
        lines.append(_trim(Text("warning: " + warning, style="yellow"), width))
    if len(v.get("warnings") or []) > 10:
        lines.append(Text(f"… {len(v['warnings']) - 10} more warnings (--json)", style="dim"))
    if not st:
        why = "its master did not answer" if v.get("pid") else "no master running"
        lines.append(Text(f"no worker stats: {why}", style="dim"))
        for err in (v.get("errors") or [])[-5:]:
            if err != v.get("last_error"):
                lines.append(_trim(Text("  " + err, style="red"), width))
        return lines
    rows = []
    for w in st["workers"]:
        rows.append({
            "id": str(w["id"]), "pid": str(w["pid"] or "-"), "status": w["status"],
            "requests": _count(w["requests"]), "exceptions": str(w["exceptions"]),
            "avg": _ms(w["avg_rt"]), "rss": _size(w["rss"]), "respawns": str(w["respawn_count"]),
            "request": f"{w['request']} ({w['busy_for']:.1f}s)" if w.get("request") else "",
        })
    shown, widths = _fit(WORKER_COLUMNS, rows, width - 12)
    head = Text(style="bold")
    for c in shown:
        head.append_text(_cell(c.header, widths[c.key], c.right))
        head.append(" ")
    head.append("REQUEST")
    lines += [Text(""), _trim(head, width)]
    for row, w in zip(rows, st["workers"]):
        line = Text()
        for c in shown:
            style = WORKER_STYLE.get(row[c.key], "") if c.key == "status" else ""
            line.append_text(_cell(row[c.key], widths[c.key], c.right, style))
            line.append(" ")
        line.append(row["request"], style="yellow")
        lines.append(_trim(line, width))
    for d in st.get("daemons") or []:   # attached daemons (emperor/master/daemons.py)
        text = f"daemon {d['pid'] or '-':>7} {d['state']:<10} restarts {d['restarts']}"
        text += f" (backoff {d['backoff']:g}s)" if d["backoff"] else ""
        lines.append(_trim(Text(f"{text}  {d['command']}", style="red" if d["backoff"] else ""), width))
    return lines


# ---------- frames ----------
def printable(value: Any) -> Any:
    """The document with every string on one line and its control characters escaped:
    vassal file names, errors and request paths come from others and must not drive
    the terminal (colours, titles, cursor moves)."""
    if isinstance(value, str):
        return logmod.printable(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def frame(doc: dict, name: str | None, width: int, height: int | None = None,
          footer: str = "") -> Group:
    doc = printable(doc)
    name = None if name is None else logmod.printable(name)
    lines = [header_line(doc, width)]
    if name is None:
        body = vassal_lines(doc, width)
    else:
        body = worker_lines(name, doc["vassals"][name], width)
    room = None if height is None else height - 2 - bool(footer)
    if room is not None and len(body) > room:
        hidden = len(body) - room + 1
        body = body[:room - 1] + [Text(f"… {hidden} more lines (a taller terminal, or --json)", style="dim")]
    lines += [Text("")] + body
    if footer:
        lines.append(_trim(Text(footer, style="dim"), width))
    return Group(*lines)


def status_target(args: argparse.Namespace) -> tuple[Target, str | None]:
    """The emperor and the vassal name (or None) that `status [DIR] [NAME]` means.

    One positional is the vassals directory when it is one, a vassal name otherwise;
    a directory no emperor runs for that also names a vassal (`app` for `app.ini`)
    of the emperor found without it is that vassal.
    """
    first = args.first
    if args.name is not None:                         # DIR NAME (DIR is args.directory now)
        return locate(args.directory, args.control), args.name
    if first is None or args.directory or args.control:
        return locate(args.directory, args.control), first
    if split := split_vassal_path(first):            # vassals.d/app.ini
        return locate(split[0]), split[1]
    if not os.path.isdir(first):
        return locate(), first
    if paths.answers(paths.control_socket(first)):
        return locate(first), None
    try:
        target = locate()
        if vassal_name(first, ask(target, HEALTH).get("vassals") or {}):
            return target, first
    except NoEmperor:
        pass
    return locate(first), None


def run_status(args: argparse.Namespace) -> int:
    try:
        target, name = status_target(args)
        doc = ask(target)
        if name is not None:
            found = vassal_name(name, doc.get("vassals", {}))
            if found is None:
                print(no_such_vassal(name, doc.get("vassals", {})), file=sys.stderr)
                return 1
            name = found
        console = Console(highlight=False)
        once = not args.json and (args.once or not console.is_terminal)  # piped: one frame, no screen tricks
        if once and _needs_rate(doc, name):
            time.sleep(RATE_SAMPLE)   # a second sample: the emperor's REQ/S is over the time between them
            doc = ask(target)
    except NoEmperor as e:
        print(e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc["vassals"][name] if name else doc, indent=2))
        return 0
    if once:
        if name is not None and name not in doc.get("vassals", {}):
            print(f"emperor: {name} has just left the emperor's table", file=sys.stderr)
            return 1
        console.print(frame(doc, name, console.width))
        return 0
    return _live(doc, target, name)


def _needs_rate(doc: dict, name: str | None) -> bool:
    """A vassal shown has stats but no rate yet (nobody asked in the last seconds)."""
    vassals = doc.get("vassals", {})
    shown = [vassals[name]] if name is not None else list(vassals.values())
    return any((v.get("stats") or {}) and v["stats"].get("rps") is None for v in shown)


def _live(doc: dict, target: Target, name: str | None) -> int:
    """Redraw about once a second until Ctrl-C (or SIGTERM/SIGHUP); the terminal is left as it was."""
    stop: list[int] = []
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(signum: int, _frame: object) -> None:
        if signum != signal.SIGWINCH:
            stop.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH)
    old = {s: signal.signal(s, on_signal) for s in handled}
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    console = Console(highlight=False)
    lost_since: float | None = None
    try:
        with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            while not stop:
                width, height = console.size
                footer = f"every {REFRESH:g}s · Ctrl-C quits"
                if lost_since is not None:
                    footer = (f"no answer on {target.control} for {time.monotonic() - lost_since:.0f}s; "
                              "retrying · Ctrl-C quits")
                if name is not None and name not in doc.get("vassals", {}):
                    footer = f"{name} is no longer in the emperor's table · Ctrl-C quits"
                    view = frame({**doc, "vassals": {}}, None, width, height, footer)
                else:
                    view = frame(doc, name, width, height, footer)
                live.update(view, refresh=True)
                try:
                    select.select([wake_r], [], [], REFRESH)
                except InterruptedError:
                    pass
                _drain(wake_r)
                if stop:
                    break
                try:
                    doc = ask(target)
                    lost_since = None
                except NoEmperor:
                    lost_since = lost_since or time.monotonic()
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
    return 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass
