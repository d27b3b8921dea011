"""What reading a vassal file produces: `Config`, `ConfigError`, and the findings behind them."""
from __future__ import annotations

__all__ = ["Config", "ConfigError", "Finding", "where", "shown"]

# A finding's verdict: what an option line does (honoured ... error), what another line
# does (placeholder ... skipped), or a warning about a line that is not about its option.
HONOURED, NOOP, UNSUPPORTED, UNKNOWN, ERROR = "honoured", "no-op", "unsupported", "unknown", "error"
PLACEHOLDER, LOGIC, INCLUDE, SKIPPED, WARNING = "placeholder", "logic", "include", "skipped", "warning"
VERDICTS = (HONOURED, NOOP, UNSUPPORTED, UNKNOWN, ERROR, WARNING, PLACEHOLDER, LOGIC, INCLUDE, SKIPPED)
PROBLEMS = (UNSUPPORTED, UNKNOWN, ERROR, WARNING)


def where(path: str | None, line: int | None) -> str:
    if path is None:
        return ""
    return f"{path}:{line}: " if line is not None else f"{path}: "


def shown(text: str) -> str:
    """`text` fit for a one-line message: bytes that were not UTF-8 as \\x escapes."""
    if text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in raw)


class Finding:
    """What one line of a vassal file (or one UWSGI_* variable) does: its verdict and why.

    `message`: for a warning or an error, the line as the log, `emperor status` and
    ConfigError show it ('app.ini:9: option "static-map" is not supported by emperor; ignored').
    `category` (errors only): "reading" (the file's text), "undefined" (a placeholder
    nothing defines: a typo, or a fragment whose includer defines it), "file" (a file it
    names is missing or refused), "unsupported" (a feature emperor does not have: an
    unsupported option under strict-compat, @(exec://...)), "vassal" (read fine, but
    without a socket or an application).
    """

    __slots__ = ("file", "line", "option", "verdict", "detail", "message", "category")

    def __init__(self, file: str, line: int | None, option: str, verdict: str, detail: str = "",
                 message: str = "", category: str = "") -> None:
        self.file, self.line, self.option = file, line, option
        self.verdict, self.detail = verdict, detail
        self.message, self.category = message, category

    def text(self) -> str:
        """One line, as `emperor check` prints it."""
        option = f"{shown(self.option)}: " if self.option else ""
        if not self.detail:
            detail = ""
        elif self.verdict == NOOP:
            detail = f" because {shown(self.detail)}"
        elif self.verdict in PROBLEMS:
            detail = f": {shown(self.detail)}"
        else:
            detail = f" ({shown(self.detail)})"
        return f"{where(self.file, self.line)}{option}{self.verdict}{detail}"

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"file": self.file, "line": self.line, "option": self.option,
                                "verdict": self.verdict, "detail": shown(self.detail)}
        if self.message:
            d["message"] = shown(self.message)
        if self.category:
            d["category"] = self.category
        return d

    def __repr__(self) -> str:
        return f"Finding({self.text()!r})"


class ConfigError(Exception):
    """A vassal file that cannot be used; str() is one line 'file:line: message'.

    `problems`: every problem found in the file, one line each (the first is this one's);
    str() mentions how many more there are.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 problems: tuple[str, ...] = ()) -> None:
        super().__init__(message, path, line, problems)  # args match the signature: picklable
        self.message, self.path, self.line = message, path, line
        self.problems: tuple[str, ...] = problems or (where(path, line) + message,)

    def __str__(self) -> str:
        first = where(self.path, self.line) + self.message
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")


class Config:
    """One vassal file's effective settings, as attributes; `FIELDS` names them in order.

    A plain class, not a dataclass: `dataclasses` imports `inspect` and `ast`, ~1.5 MiB
    and ~10 ms in every master image, and every graceful reload starts a new image.
    """

    FIELDS: tuple[str, ...] = ()   # filled in below the class

    def __init__(self, path: str, name: str, section: str = "uwsgi") -> None:
        self.path: str = path
        self.name: str = name
        self.section: str = section
        self.http_sockets: list[str] = []
        self.uwsgi_sockets: list[str] = []
        self.module: str | None = None
        self.wsgi_file: str | None = None
        self.callable: str = "application"
        self.chdir: str | None = None
        self.pythonpath: list[str] = []
        self.virtualenv: str | None = None
        self.env: list[str] = []
        self.processes: int = 1           # 0: uWSGI's no-workers mode (sockets bound, nobody accepts)
        self.threads: int = 1
        self.pidfile: str | None = None
        self.safe_pidfile: str | None = None
        self.touch_reload: list[str] = []
        self.die_on_term: bool = False
        self.worker_reload_mercy: int = 60
        self.reload_mercy: int | None = None
        self.listen: int = 100
        self.buffer_size: int = 4096
        self.socket_timeout: int = 4
        self.harakiri: int = 0
        self.max_requests: int = 0
        self.lazy_apps: bool = False
        self.need_app: bool = True
        self.stats: str | None = None
        self.stats_http: bool = False
        self.vacuum: bool = False
        self.chmod_socket: str | None = None
        self.chown_socket: str | None = None
        self.umask: str | None = None
        self.shared_sockets: list[str] = []
        self.abstract_socket: bool = False
        self.uid: str | None = None
        self.gid: str | None = None
        self.logto: str | None = None
        self.disable_logging: bool = False
        self.strict: bool = False
        self.strict_compat: bool = False  # options uWSGI knows but emperor does not: errors, not warnings
        self.snapshot: bool = False
        self.snapshot_ttl: int = 3600
        self.graceful_removal: bool | None = None   # None: as the emperor's --graceful-removal says
        self.print: list[str] = []        # `print` lines, logged by the master as it starts
        # adaptive workers (emperor/master/cheaper.py) and recycling (generations.py, worker)
        self.cheaper: int = 0
        self.cheaper_initial: int = 0
        self.cheaper_step: int = 1
        self.cheaper_overload: int = 3
        self.cheaper_algo: str = "spare"
        self.cheaper_idle: int = 10
        self.cheaper_rss_limit_soft: int = 0
        self.cheaper_rss_limit_hard: int = 0
        self.cheaper_busyness_max: int = 50
        self.cheaper_busyness_min: int = 25
        self.cheaper_busyness_multiplier: int = 10
        self.cheaper_busyness_penalty: int = 2
        self.cheaper_busyness_verbose: bool = False
        self.cheaper_busyness_backlog_alert: int = 33
        self.cheaper_busyness_backlog_multiplier: int = 3
        self.cheaper_busyness_backlog_step: int = 1
        self.cheaper_busyness_backlog_nonzero: int = 60
        self.idle: int = 0
        self.die_on_idle: bool = False
        self.cheap: bool = False
        self.reload_on_rss: int = 0
        self.reload_on_as: int = 0
        self.evil_reload_on_rss: int = 0
        self.evil_reload_on_as: int = 0
        self.max_worker_lifetime: int = 0
        self.max_worker_lifetime_delta: int = 0
        self.max_requests_delta: int = 0
        self.min_worker_lifetime: int = 0
        self.limit_as: int = 0
        self.reload_on_exception: bool = False
        # hooks (emperor/master/hooks.py): "action:argument" per phase, in file order
        self.hook_as_root: list[str] = []
        self.hook_as_user: list[str] = []
        self.hook_pre_app: list[str] = []
        self.hook_post_app: list[str] = []
        self.hook_master_start: list[str] = []
        self.hook_as_user_atexit: list[str] = []
        # log files and process names (emperor/master/logfiles.py, names.py)
        self.logto2: str | None = None
        self.daemonize: str | None = None
        self.log_maxsize: int = 0
        self.log_backupname: str | None = None
        self.log_reopen: bool = False
        self.logfile_chown: str | None = None
        self.logfile_chmod: str | None = None
        self.touch_logrotate: list[str] = []
        self.touch_logreopen: list[str] = []
        self.procname_prefix: str = ""
        self.procname_append: str = ""
        self.procname_master: str | None = None
        self.procname: str | None = None
        self.warnings: list[str] = []
        self.origins: dict[str, tuple[str, int]] = {}

    def __repr__(self) -> str:
        return f"Config({self.path!r}, section={self.section!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Config and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def log_path(self) -> str | None:
        """The file every process of the vassal logs to, if any (logto2, logto, daemonize)."""
        return self.logto2 or self.logto or self.daemonize

    def ini_lines(self) -> list[str]:
        """The effective config as ini lines (for the SIGUSR1 stats log)."""
        from emperor.config.options import OPTIONS

        lines = [f"[{self.section}]"]
        done: set[str] = set()
        for name, opt in OPTIONS.items():
            if opt.field in done:   # procname-prefix-spaced, exec-as-root...: another way to set a field
                continue
            done.add(opt.field)
            value = getattr(self, opt.field)
            for v in value if isinstance(value, list) else [value]:
                if v is None:
                    continue
                text = ("true" if v else "false") if isinstance(v, bool) else str(v)
                lines.append(f"{name} = {text}")
        return lines


Config.FIELDS = tuple(vars(Config("", "")))
