"""The request log: one line per request, emperor's own or `log-format`'s (uWSGI's LogFormat doc).

Which requests: all of them unless `disable-logging`; then only those `log-4xx`,
`log-5xx`, `log-slow` (ms), `log-big` and `log-zero` ask for (these two look at the
body's size, uWSGI's response_size). A `log-format` line is written as it is
formatted, with no prefix, as uWSGI does (so a JSON format gives JSON lines);
`logformat-strftime` only makes `%(ftime)` use `log-date`'s format: as in uWSGI 2.0,
the line itself never goes through strftime (a `%Y` a client puts in the URI stays).
A request the `donotlog` routing action marked has no line. Every value from the request is escaped (log.printable): a client
cannot inject a line. `req-logger = file:PATH` sends these lines to their own file;
`req-logger = stdio` to the stdout the master started with, even when `logger = file:`
sends the rest of the log to a file (as uWSGI's stdio logger).
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from emperor import log as logmod
from emperor import routes
from emperor.config import Config
from emperor.proc import memory

_VAR = re.compile(r"%\(([^)]+)\)")
_ENVIRON = {"uri": "REQUEST_URI", "method": "REQUEST_METHOD", "user": "REMOTE_USER", "addr": "REMOTE_ADDR",
            "host": "HTTP_HOST", "proto": "SERVER_PROTOCOL", "uagent": "HTTP_USER_AGENT",
            "referer": "HTTP_REFERER"}


class Request:
    """What one request's log line may show."""

    __slots__ = ("environ", "status", "sent", "head_size", "headers", "started", "duration", "worker",
                 "core", "cut")

    def __init__(self, environ: dict, status: int, sent: int, head_size: int, headers: int,
                 started: float, duration: float, worker: int, core: int, cut: str) -> None:
        self.environ = environ
        self.status = status
        self.sent = sent
        self.head_size = head_size
        self.headers = headers
        self.started = started      # wall clock, seconds
        self.duration = duration    # seconds
        self.worker = worker        # from 1
        self.core = core
        self.cut = cut


def _ltime(t: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(t))


# name -> value of a request; `var.X` and user-defined names are looked up apart
CHUNKS: dict[str, Callable[[Request], object]] = {
    "status": lambda r: r.status,
    "micros": lambda r: int(r.duration * 1_000_000),
    "msecs": lambda r: int(r.duration * 1000),
    "secs": lambda r: f"{r.duration:.6f}",
    "time": lambda r: int(r.started),
    "ctime": lambda r: time.ctime(r.started),
    "epoch": lambda r: int(time.time()),
    "size": lambda r: r.sent,
    "ltime": lambda r: _ltime(r.started),
    "hsize": lambda r: r.head_size,
    "rsize": lambda r: max(r.sent - r.head_size, 0),
    "cl": lambda r: r.environ.get("CONTENT_LENGTH") or 0,
    "pid": lambda r: os.getpid(),
    "wid": lambda r: r.worker,
    "core": lambda r: r.core,
    "switches": lambda r: 0,
    "vars": lambda r: sum(1 for k in r.environ if k.isupper()),
    "headers": lambda r: r.headers,
    "vsz": lambda r: memory(os.getpid())[1],
    "rss": lambda r: memory(os.getpid())[0],
    "vszM": lambda r: memory(os.getpid())[1] >> 20,
    "rssM": lambda r: memory(os.getpid())[0] >> 20,
    "pktsize": lambda r: 0,
    "modifier1": lambda r: 0,
    "modifier2": lambda r: 0,
    "rerr": lambda r: 0,
    "werr": lambda r: int(bool(r.cut)),
    "ioerr": lambda r: int(bool(r.cut)),
    "tmsecs": lambda r: int(r.started * 1000),
    "tmicros": lambda r: int(r.started * 1_000_000),
}


class RequestLog:
    def __init__(self, config: Config) -> None:
        c = self.config = config
        self.parts = self._compile(c.log_format) if c.log_format else None
        self.filtered = c.disable_logging   # then only what log-4xx and the others ask for
        self.active = not c.disable_logging or bool(c.log_4xx or c.log_5xx or c.log_slow or c.log_big or c.log_zero
                                                         or c.log_sendfile)
        # requests a `donotlog` route marked (emperor/worker/routing.py) leave no line
        self.skips = any(routes.parse(option, rule).action == "donotlog" for option, rule in c.routes)
        self.fd = -1
        if c.req_logger and c.req_logger.startswith("file:"):
            self.fd = os.open(c.req_logger[5:], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        elif c.req_logger == "stdio":
            self.fd = logmod.stdio_fd   # the master's original stdout, if `logger = file:` took the log

    def wanted(self, status: int, duration: float, size: int, via_file: bool = False) -> bool:
        """`size`: the body's bytes, as uWSGI's response_size (log-big and log-zero look at that)."""
        if not self.filtered:
            return True
        c = self.config
        return bool((c.log_4xx and 400 <= status < 500) or (c.log_5xx and status >= 500)
                    or (c.log_slow and duration * 1000 >= c.log_slow) or (c.log_big and size >= c.log_big)
                    or (c.log_zero and size == 0) or (c.log_sendfile and via_file))

    def line(self, r: Request, peer: str) -> str:
        if self.skips and r.environ.get("emperor.donotlog"):
            return ""
        if self.parts is None:
            return self._default(r, peer)
        return "".join(p if isinstance(p, str) else p(r) for p in self.parts) + "\n"

    def _default(self, r: Request, peer: str) -> str:
        env = r.environ
        qs = env.get("QUERY_STRING")
        uri = env.get("REQUEST_URI") or env["PATH_INFO"] + ("?" + qs if qs else "")
        if self.config.log_x_forwarded_for and env.get("HTTP_X_FORWARDED_FOR"):
            peer = env["HTTP_X_FORWARDED_FOR"].split(",")[0].strip()
        took = f"{int(r.duration * 1_000_000)} us" if self.config.log_micros else f"{r.duration * 1000:.2f} ms"
        return logmod.line(f"{logmod.printable(peer)} {logmod.printable(env['REQUEST_METHOD'])} "
                           f"{logmod.printable(uri)} => {r.status} {r.sent} bytes"
                           f"{f' (cut: {r.cut})' if r.cut else ''} in {took}")

    def write(self, text: str) -> bool:
        """Write lines to `req-logger`'s file; False when they go to the process's log."""
        if self.fd < 0:
            return False
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        return True

    def _compile(self, fmt: str) -> list[str | Callable[[Request], str]]:
        parts: list[str | Callable[[Request], str]] = []
        pos = 0
        for m in _VAR.finditer(fmt):
            if m.start() > pos:
                parts.append(fmt[pos:m.start()])
            parts.append(self._chunk(m.group(1)))
            pos = m.end()
        if pos < len(fmt):
            parts.append(fmt[pos:])
        return parts

    def _chunk(self, name: str) -> Callable[[Request], str]:
        xff = self.config.log_x_forwarded_for
        if name == "addr" and xff:
            return lambda r: logmod.printable(
                (r.environ.get("HTTP_X_FORWARDED_FOR") or r.environ.get("REMOTE_ADDR", "-")).split(",")[0].strip())
        if name in _ENVIRON:
            key, empty = _ENVIRON[name], "-" if name == "user" else ""
            return lambda r: logmod.printable(str(r.environ.get(key) or empty))
        if name.startswith("var."):
            var = name[4:]
            return lambda r: logmod.printable(str(r.environ.get(var, "")))
        if name == "ftime":   # uWSGI: log-date's format only with logformat-strftime, else ltime
            fmt = self.config.log_date if self.config.logformat_strftime and self.config.log_date else None
            return (lambda r: time.strftime(fmt, time.localtime(r.started))) if fmt else lambda r: _ltime(r.started)
        fn = CHUNKS.get(name)
        if fn is not None:
            return lambda r: str(fn(r))
        # a variable the application set (uwsgi.set_logvar), else "-"
        return lambda r: logmod.printable(str((r.environ.get("emperor.logvars") or {}).get(name, "-")))
