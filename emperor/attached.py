"""What a vassal file attaches to its master: external daemons and cron tasks, in uWSGI's syntax.

Parsed on the shared floor, so that the config reader (emperor/config/) rejects a bad line with its file
and line (the converters below only check, the option keeps its text), and the master's
parts (emperor/master/daemons.py, emperor/master/cron.py) read the same specs from it.

Daemons (uWSGI core/daemons.c `uwsgi_opt_add_daemon`, `uwsgi_opt_add_daemon2`; docs
AttachingDaemons.rst):

    attach-daemon = COMMAND
    attach-control-daemon = COMMAND                when it dies, the vassal stops
    smart-attach-daemon = PIDFILE[,FREQ] COMMAND   the command writes PIDFILE (and may daemonize)
    smart-attach-daemon2 = PIDFILE[,FREQ] COMMAND  the command stays in the foreground; we write PIDFILE
    attach-daemon2 = cmd=COMMAND,pidfile=..,daemonize=1,control=1,touch=A;B,stopsignal=N,
                     reloadsignal=N,uid=..,gid=..,stdin=1,chdir=..,max_throttle=N,freq=N,notifypid=1

Cron (core/cron.c `uwsgi_cron_add`, `uwsgi_opt_add_cron2`; master_utils.c
`uwsgi_cron_task_needs_execution`; docs Cron.rst):

    cron = MINUTE HOUR DAY MONTH WEEKDAY COMMAND   -1 is `*`, -N is `*/N`
    unique-cron = ...                              never two at once: skipped while the last one runs
    cron2 = [minute=..,hour=..,day=..,month=..,week=..,unique=1,harakiri=N] COMMAND

Where we are stricter than uWSGI, a file that would silently misbehave there is an error here:
an unknown attach-daemon2/cron2 key, a value out of range, a cron that can never match
(`0 0 31 2 -1`), `legion`/`ns_pid` (not supported). A flag (control, daemonize, stdin,
notifypid, unique) reads like any boolean option (`control=0` is off; uWSGI counts any value).
"""
from __future__ import annotations

import re
import signal
import time
from collections import namedtuple
from collections.abc import Callable

# The keeper's kill order (emperor/master/keeper.py): no daemon may use it as its own signal.
RESERVED_SIGNAL = signal.SIGRTMAX
MAX_TOUCH = 16          # touch files per daemon
MAX_THROTTLE = 3600     # the longest backoff a daemon may ask for (max_throttle), in seconds
DAEMON_OPTIONS = ("attach-daemon", "attach-control-daemon", "smart-attach-daemon",
                  "smart-attach-daemon2", "attach-daemon2")
CRON_OPTIONS = ("cron", "unique-cron", "cron2")

DaemonSpec = namedtuple("DaemonSpec", "option text command pidfile daemonize control freq stop_signal "
                        "reload_signal touch uid gid stdin chdir max_throttle")
CronSpec = namedtuple("CronSpec", "option text minute hour day month week command unique harakiri")

_DAEMON2_KEYS = {"command": "cmd", "cmd": "cmd", "exec": "cmd", "freq": "freq", "pidfile": "pidfile",
                 "control": "control", "daemonize": "daemonize", "daemon": "daemonize", "touch": "touch",
                 "stopsignal": "stopsignal", "stop_signal": "stopsignal", "reloadsignal": "reloadsignal",
                 "reload_signal": "reloadsignal", "stdin": "stdin", "uid": "uid", "gid": "gid",
                 "chdir": "chdir", "max_throttle": "max_throttle", "notifypid": "notifypid"}
_CRON2_KEYS = ("minute", "hour", "day", "month", "week", "unique", "harakiri")
_UNSUPPORTED = ("legion", "ns_pid")
_FALSE = {"false", "off", "no", "0", ""}
# field: lowest, highest, the largest N of -N (`*/N`)
CRON_FIELDS = {"minute": (0, 59, 60), "hour": (0, 23, 24), "day": (1, 31, 31), "month": (1, 12, 12),
               "week": (0, 7, 7)}
HORIZON = 8 * 366 * 86400   # how far ahead a cron's next run is looked for (Feb 29 is within)


def kvlist(text: str) -> list[tuple[str, str]]:
    """uWSGI's keyval list (core/utils.c `uwsgi_kvlist_parse`): items split on `,`, a backslash
    escapes the next character; each item is KEY=VALUE, split at its first `=`."""
    items: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    pairs = []
    for item in items:
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f'expected key=value, got "{item}"')
        pairs.append((key.strip(), value))
    return pairs


def _flag(value: str) -> bool:
    return value.strip().lower() not in _FALSE


def _number(what: str, value: str, lo: int, hi: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'{what}: expected an integer, got "{value}"')
    n = int(text)
    if not lo <= n <= hi:
        raise ValueError(f"{what}: must be between {lo} and {hi}, got {n}")
    return n


def signal_number(what: str, value: str) -> int:
    """A signal by number (as uWSGI) or by name (`TERM`, `SIGTERM`)."""
    text = value.strip().upper()
    if text and not text.lstrip("+").isdigit():
        name = text if text.startswith("SIG") else "SIG" + text
        try:
            n = int(signal.Signals[name])
        except KeyError:
            raise ValueError(f'{what}: unknown signal "{value}"') from None
    else:
        n = _number(what, value, 1, signal.NSIG - 1)
    if n == RESERVED_SIGNAL:
        raise ValueError(f"{what}: signal {n} is reserved by emperor (the keeper's kill order)")
    return n


def parse_daemon(option: str, text: str) -> DaemonSpec:
    """One daemon option's value -> its spec; ValueError says what is wrong."""
    value = text.strip()
    fields: dict = {"option": option, "text": value, "pidfile": None, "daemonize": False,
                    "control": option == "attach-control-daemon", "freq": 10,
                    "stop_signal": int(signal.SIGTERM), "reload_signal": 0, "touch": (), "uid": None,
                    "gid": None, "stdin": False, "chdir": None, "max_throttle": 60}
    if option == "attach-daemon2":
        fields["command"] = None
        for key, val in kvlist(value):
            if key in _UNSUPPORTED:
                raise ValueError(f'"{key}" is not supported by emperor')
            name = _DAEMON2_KEYS.get(key)
            if name is None:
                raise ValueError(f'unknown key "{key}" (known: {", ".join(sorted(_DAEMON2_KEYS))})')
            if name == "cmd":
                fields["command"] = val.strip()
            elif name in ("control", "daemonize", "stdin"):
                fields[name] = _flag(val)
            elif name == "notifypid":
                _flag(val)   # ours always are: the stop and reload signals reach a pidfile daemon too
            elif name == "freq":
                fields["freq"] = _number("freq", val, 1, 3600)
            elif name == "max_throttle":
                fields["max_throttle"] = _number("max_throttle", val, 1, MAX_THROTTLE)
            elif name == "stopsignal":
                fields["stop_signal"] = signal_number("stopsignal", val)
            elif name == "reloadsignal":
                fields["reload_signal"] = signal_number("reloadsignal", val)
            elif name == "touch":
                files = tuple(p.strip() for p in val.split(";") if p.strip())
                if not files or len(files) > MAX_TOUCH:
                    raise ValueError(f"touch: between 1 and {MAX_TOUCH} files separated by ';'")
                fields["touch"] = files
            else:   # pidfile, uid, gid, chdir
                if not val.strip():
                    raise ValueError(f"{key}: expected a value, got nothing")
                fields[name] = val.strip()
        if not fields["command"]:
            raise ValueError('a "cmd" key is required (cmd=COMMAND)')
        if fields["daemonize"] and not fields["pidfile"]:
            raise ValueError("daemonize needs a pidfile (the file it writes)")
    elif option.startswith("smart-attach-daemon"):
        head, _, command = value.partition(" ")
        pidfile, comma, freq = head.partition(",")
        if not pidfile or not command.strip():
            raise ValueError("expected PIDFILE[,FREQ] COMMAND")
        fields.update(pidfile=pidfile, command=command.strip(), daemonize=option.endswith("2"))
        if comma:
            fields["freq"] = _number("freq", freq, 1, 3600)
    else:
        if not value:
            raise ValueError("expected a command, got nothing")
        fields["command"] = value
    return DaemonSpec(**fields)


def parse_cron(option: str, text: str) -> CronSpec:
    """One cron option's value -> its spec; ValueError says what is wrong."""
    value = text.strip()
    times = {"minute": -1, "hour": -1, "day": -1, "month": -1, "week": -1}
    unique, harakiri = option == "unique-cron", None
    if option == "cron2":
        head, space, rest = value.partition(" ")
        command = value
        if "=" in head:
            if not space:
                raise ValueError("expected [key=value,...] COMMAND, got no command")
            command = rest.strip()
            for key, val in kvlist(head):
                if key == "legion":
                    raise ValueError('"legion" is not supported by emperor')
                if key not in _CRON2_KEYS:
                    raise ValueError(f'unknown key "{key}" (known: {", ".join(_CRON2_KEYS)})')
                if key == "unique":
                    unique = _flag(val)
                elif key == "harakiri":
                    harakiri = _number("harakiri", val, 0, 86400 * 365)
                else:
                    lo, hi, most = CRON_FIELDS[key]
                    times[key] = _cron_field(key, val, lo, hi, most)
    else:
        parts = value.split(None, 5)
        if len(parts) < 6:
            raise ValueError("expected MINUTE HOUR DAY MONTH WEEKDAY COMMAND (-1 for every, -N for every N)")
        for key, val in zip(times, parts):
            lo, hi, most = CRON_FIELDS[key]
            times[key] = _cron_field(key, val, lo, hi, most)
        command = parts[5].strip()
    if not command:
        raise ValueError("expected a command, got nothing")
    spec = CronSpec(option, value, command=command, unique=unique, harakiri=harakiri, **times)
    if next_match(spec, 0, time.gmtime) is None:
        raise NeverRuns("this date never comes (no day matches in 8 years)")
    return spec


def _cron_field(key: str, value: str, lo: int, hi: int, most: int) -> int:
    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'{key}: expected an integer, got "{value}"')
    n = int(text)
    if -most <= n < 0 or lo <= n <= hi:
        return n
    if n > hi:
        raise NeverRuns(f"{key} {n} is never reached ({lo} to {hi})")
    raise ValueError(f'{key}: expected {lo} to {hi}, or -N for every N (N at most {most}), got {n}')


class NeverRuns(ValueError):
    """A cron line uWSGI loads and never runs (its sscanf takes any number: core/cron.c)."""


def checker(parse: Callable[[str, str], object], option: str) -> Callable[[str], object]:
    """A converter for the config reader: checks the text, keeps it as it is. A cron task
    that can never run is left out with a warning, as uWSGI would load it and never run it."""
    def conv(text: str) -> object:
        try:
            parse(option, text)
        except NeverRuns as e:
            from emperor.values import Noted

            return Noted(None, [("warning", f"{e}: this task would never run (uWSGI loads it and never "
                                            "runs it); ignored")])
        return text.strip()
    return conv


# ---------- when a cron matches (core/master_utils.c uwsgi_cron_task_needs_execution) ----------
def _field(want: int, actual: int) -> bool:
    """-N: every N (`actual % N == 0`, so -1 is `*`); else exactly."""
    return actual % -want == 0 if want < 0 else actual == want


def day_matches(spec: CronSpec, tm: time.struct_time) -> bool:
    """Month, day of the month and day of the week; day and weekday are ORed when both are set,
    as in crontab (and uWSGI). Weekday 0 and 7 are Sunday."""
    if not _field(spec.month, tm.tm_mon):
        return False
    wday = (tm.tm_wday + 1) % 7          # Python counts from Monday, cron from Sunday
    week = 0 if spec.week == 7 else spec.week
    day, weekday = _field(spec.day, tm.tm_mday), _field(week, wday)
    if spec.day >= 0 and spec.week >= 0:
        return day or weekday
    return day and weekday


def matches(spec: CronSpec, tm: time.struct_time) -> bool:
    return _field(spec.minute, tm.tm_min) and _field(spec.hour, tm.tm_hour) and day_matches(spec, tm)


def next_match(spec: CronSpec, after: float,
               localtime: Callable[[float], time.struct_time] = time.localtime) -> int | None:
    """The first minute (epoch seconds, a multiple of 60) after the one `after` falls in whose
    local time matches; None if none within HORIZON. Skips whole days and hours that cannot
    match, so a yearly cron costs a few thousand steps, not half a million."""
    t = (int(after) // 60 + 1) * 60
    end = t + HORIZON
    while t < end:
        tm = localtime(t)
        since_midnight = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec
        if not day_matches(spec, tm):
            nxt = t + 86400 - since_midnight
            back = nxt - _since_midnight(localtime(nxt))
            t = back if back > t else nxt    # a 23-hour day (DST) overshot local midnight
        elif not _field(spec.hour, tm.tm_hour):
            t += 3600 - tm.tm_min * 60 - tm.tm_sec
        elif not _field(spec.minute, tm.tm_min):
            t += 60 - tm.tm_sec
        else:
            return t
    return None


def _since_midnight(tm: time.struct_time) -> int:
    return tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec
