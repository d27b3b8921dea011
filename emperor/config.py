"""Vassal files: uWSGI's ini dialect, read into a typed `Config`.

configparser cannot honour this dialect: it rejects repeated keys (strict) or keeps
only the last one (non-strict), forgets line numbers, and treats `%(x)s` and inline
`;` its own way. So a small line reader of our own, as in uWSGI's core/ini.c.

Choices, uWSGI compared:
- `_` in a key is read as `-` (`die_on_term` == `die-on-term`; uWSGI does not do
  this, but many real files rely on it); placeholder names likewise.
- `%(key)` is resolved after the whole file (with its includes) is read, so forward
  references work; it takes the *last* value of `key` (uWSGI: the first). An unknown
  placeholder is an error only in options we honour, so `log-format = %(addr) ...`
  (ignored, with a warning) is left alone.
- `%%` yields a literal `%` that later stages never re-expand.
- Magic variables: n e s p d c v h, 0-9 (directory components), and N E S P D C
  for the top-level vassal file; an unknown `%x` is kept as is, as uWSGI does.
- An app (`module`/`wsgi-file`) is required unless `need-app = false`.
Error and warning locations name files relative to the vassal's directory.
"""
from __future__ import annotations

import os
import re
import socket
from collections import namedtuple
from collections.abc import Mapping

from emperor.files import TrustRule, Unreadable, Untrusted, read_untrusted
from emperor.values import _address, _bool, _chmod, _choice, _int, _megabytes, _nonempty, _octal, _str

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Config", "ConfigError", "load_config"]

_PCT = "\x00"  # stands for a literal '%' (from '%%') until expansion is over
_MAGIC_RE = re.compile(r"%(.)", re.S)
_ENV_RE = re.compile(r"\$\(([^)]*)\)")
_PH_RE = re.compile(r"%\(([^)]*)\)")

_INCLUDE_KEYS = {"ini", "include", "inherit"}
MAX_FILES = 64   # a vassal and everything it includes
_PLACEHOLDER_KEYS = {"set-placeholder", "set-ph"}
# Accepted without a warning: emperor always behaves this way.
_NO_EFFECT = {"master", "enable-threads", "thunder-lock", "single-interpreter",
              "auto-procname", "procname", "procname-prefix", "procname-prefix-spaced",
              "memory-report"}
_PLUGIN_KEYS = {"plugin", "plugins"}
_BUILTIN_PLUGIN_RE = re.compile(r"(python[0-9]*|http)")


class ConfigError(Exception):
    """A vassal file that cannot be used; str() is one line 'file:line: message'."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message, path, line)  # args match the signature: picklable
        self.message, self.path, self.line = message, path, line

    def __str__(self) -> str:
        return _where(self.path, self.line) + self.message


def _where(path: str | None, line: int | None) -> str:
    if path is None:
        return ""
    return f"{path}:{line}: " if line is not None else f"{path}: "


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
        self.processes: int = 1
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
        self.snapshot: bool = False
        self.snapshot_ttl: int = 3600
        # master FIFO, py-autoreload, print, log-master (emperor/master/fifo.py, autoreload.py)
        self.master_fifo: list[str] = []
        self.py_autoreload: int = 0
        self.py_autoreload_ignore: list[str] = []
        self.prints: list[str] = []
        self.log_master: bool = False
        self.graceful_removal: bool | None = None   # None: as the emperor's --graceful-removal says
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
        self.warnings: list[str] = []
        self.origins: dict[str, tuple[str, int]] = {}

    def __repr__(self) -> str:
        return f"Config({self.path!r}, section={self.section!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Config and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def ini_lines(self) -> list[str]:
        """The effective config as ini lines (for the SIGUSR1 stats log)."""
        lines = [f"[{self.section}]"]
        for name, opt in _OPTIONS.items():
            value = getattr(self, opt.field)
            for v in value if isinstance(value, list) else [value]:
                if v is None:
                    continue
                text = ("true" if v else "false") if isinstance(v, bool) else str(v)
                lines.append(f"{name} = {text}")
        return lines



Config.FIELDS = tuple(vars(Config("", "")))

# field: Config attribute; conv: text -> value (ValueError when bad); many: a list option
# (every occurrence, in order); aliases: other names uWSGI accepts. A namedtuple, not
# typing.NamedTuple: `typing` is one more import in every master image.
_Opt = namedtuple("_Opt", "field conv many aliases", defaults=(False, ()))


# Every option emperor honours: canonical uWSGI name -> field, converter, list?, aliases.
# Defaults live on Config. Order here is the order of Config.ini_lines().
_OPTIONS: dict[str, _Opt] = {
    "http-socket": _Opt("http_sockets", _address, True, ("http",)),
    "socket": _Opt("uwsgi_sockets", _address, True, ("uwsgi-socket",)),
    "module": _Opt("module", _nonempty, aliases=("wsgi",)),
    "wsgi-file": _Opt("wsgi_file", _nonempty, aliases=("file",)),
    "callable": _Opt("callable", _nonempty),
    "chdir": _Opt("chdir", _nonempty),
    "pythonpath": _Opt("pythonpath", _str, True, ("python-path", "pp")),
    "virtualenv": _Opt("virtualenv", _nonempty, aliases=("home", "venv", "pyhome")),
    "env": _Opt("env", _str, True),
    "processes": _Opt("processes", _int(1), aliases=("workers",)),
    "threads": _Opt("threads", _int(1)),
    "pidfile": _Opt("pidfile", _nonempty),
    "safe-pidfile": _Opt("safe_pidfile", _nonempty),
    "touch-reload": _Opt("touch_reload", _nonempty, True),
    "die-on-term": _Opt("die_on_term", _bool),
    "worker-reload-mercy": _Opt("worker_reload_mercy", _int()),
    "reload-mercy": _Opt("reload_mercy", _int()),
    "listen": _Opt("listen", _int(1)),
    "buffer-size": _Opt("buffer_size", _int(512, 65535)),
    "socket-timeout": _Opt("socket_timeout", _int()),
    "harakiri": _Opt("harakiri", _int()),
    "max-requests": _Opt("max_requests", _int()),
    # -- adaptive workers and recycling: uWSGI's Cheaper doc and core/master_utils.c --
    "cheaper": _Opt("cheaper", _int()),
    "cheaper-initial": _Opt("cheaper_initial", _int()),
    "cheaper-step": _Opt("cheaper_step", _int(1)),
    "cheaper-overload": _Opt("cheaper_overload", _int(1)),
    "cheaper-algo": _Opt("cheaper_algo", _choice("spare", "spare2", "backlog", "busyness", "manual")),
    "cheaper-idle": _Opt("cheaper_idle", _int(1)),
    "cheaper-rss-limit-soft": _Opt("cheaper_rss_limit_soft", _int()),
    "cheaper-rss-limit-hard": _Opt("cheaper_rss_limit_hard", _int()),
    "cheaper-busyness-max": _Opt("cheaper_busyness_max", _int(0, 100)),
    "cheaper-busyness-min": _Opt("cheaper_busyness_min", _int(0, 100)),
    "cheaper-busyness-multiplier": _Opt("cheaper_busyness_multiplier", _int(1)),
    "cheaper-busyness-penalty": _Opt("cheaper_busyness_penalty", _int()),
    "cheaper-busyness-verbose": _Opt("cheaper_busyness_verbose", _bool),
    "cheaper-busyness-backlog-alert": _Opt("cheaper_busyness_backlog_alert", _int()),
    "cheaper-busyness-backlog-multiplier": _Opt("cheaper_busyness_backlog_multiplier", _int(1)),
    "cheaper-busyness-backlog-step": _Opt("cheaper_busyness_backlog_step", _int(1)),
    "cheaper-busyness-backlog-nonzero": _Opt("cheaper_busyness_backlog_nonzero", _int()),
    "idle": _Opt("idle", _int()),
    "die-on-idle": _Opt("die_on_idle", _bool),
    "cheap": _Opt("cheap", _bool),
    "reload-on-rss": _Opt("reload_on_rss", _megabytes),
    "reload-on-as": _Opt("reload_on_as", _megabytes),
    "evil-reload-on-rss": _Opt("evil_reload_on_rss", _megabytes),
    "evil-reload-on-as": _Opt("evil_reload_on_as", _megabytes),
    "max-worker-lifetime": _Opt("max_worker_lifetime", _int()),
    "max-worker-lifetime-delta": _Opt("max_worker_lifetime_delta", _int()),
    "max-requests-delta": _Opt("max_requests_delta", _int()),
    "min-worker-lifetime": _Opt("min_worker_lifetime", _int()),
    "limit-as": _Opt("limit_as", _megabytes),
    "reload-on-exception": _Opt("reload_on_exception", _bool),
    "lazy-apps": _Opt("lazy_apps", _bool, aliases=("lazy",)),
    "need-app": _Opt("need_app", _bool),
    "stats": _Opt("stats", _address, aliases=("stats-server",)),
    "stats-http": _Opt("stats_http", _bool),
    "vacuum": _Opt("vacuum", _bool),
    "chmod-socket": _Opt("chmod_socket", _chmod, aliases=("chmod",)),
    "chown-socket": _Opt("chown_socket", _nonempty),
    "umask": _Opt("umask", _octal),
    "shared-socket": _Opt("shared_sockets", _address, True),
    "abstract-socket": _Opt("abstract_socket", _bool),
    "uid": _Opt("uid", _nonempty),
    "gid": _Opt("gid", _nonempty),
    "logto": _Opt("logto", _nonempty),
    "disable-logging": _Opt("disable_logging", _bool),
    "strict": _Opt("strict", _bool),
    "snapshot": _Opt("snapshot", _bool),
    "snapshot-ttl": _Opt("snapshot_ttl", _int(1)),
    # -- master FIFO, py-autoreload, print, log-master: MasterFIFO.rst, plugins/python, core/uwsgi.c --
    "master-fifo": _Opt("master_fifo", _nonempty, True),
    "py-autoreload": _Opt("py_autoreload", _int(), aliases=("py-auto-reload", "python-auto-reload", "python-autoreload")),
    "py-auto-reload-ignore": _Opt("py_autoreload_ignore", _nonempty, True),
    "print": _Opt("prints", _str, True),
    "log-master": _Opt("log_master", _bool),
    "graceful-removal": _Opt("graceful_removal", _bool),
}
_CANONICAL = {alias: name for name, opt in _OPTIONS.items() for alias in (name, *opt.aliases)}


# key: normalised ('_' -> '-'); value: after magic variables and $(ENV); file: display path
_Entry = namedtuple("_Entry", "key value file line")


def _split_section(path: str, default: str = "uwsgi") -> tuple[str, str]:
    """'app.ini:prod' -> ('app.ini', 'prod'), unless the whole name is a file."""
    head, colon, tail = path.rpartition(":")
    if colon and not os.path.exists(path) and os.path.isfile(head):
        return head, tail or default
    return path, default


class _Reader:
    """Reads one file and its includes into a flat, ordered list of entries."""

    def __init__(self, top: str, vassals_dir: str, environ: Mapping[str, str], trust: TrustRule | None = None):
        self.top, self.vassals_dir, self.environ = top, vassals_dir, environ
        self.trust = trust      # who may have written each file read (None: no rule)
        self.files = 0
        self.topdir = os.path.dirname(top)
        self.hostname = socket.gethostname()
        self.warnings: list[str] = []
        self.include_refs: set[str] = set()  # placeholder names used by include paths

    def display(self, path: str) -> str:
        return os.path.relpath(path, self.topdir)

    def magic_table(self, path: str) -> dict[str, str]:
        table = {"v": self.vassals_dir, "h": self.hostname}
        for letters, p in (("nespdc", path), ("NESPDC", self.top)):
            d = os.path.dirname(p)
            name = os.path.basename(p)
            stem, dot, ext = name.rpartition(".")
            values = (stem if dot else name, ext if dot else "", name, p,
                      d.rstrip("/") + "/", os.path.basename(d))
            table.update(zip(letters, values))
        table.update((str(i), part) for i, part in enumerate(
            [c for c in os.path.dirname(path).split("/") if c][:10]))
        return table

    def read(self, path: str, section: str, chain: tuple[tuple[str, str, str], ...] = (),
             at: _Entry | None = None, so_far: list[_Entry] | None = None) -> list[_Entry]:
        disp = self.display(path)
        ident = (os.path.realpath(path), section, disp + ("" if section == "uwsgi" else ":" + section))
        seen = [c[:2] for c in chain]
        if ident[:2] in seen and at is not None:
            names = [c[2] for c in chain] + [chain[seen.index(ident[:2])][2]]
            raise ConfigError("include cycle: " + " -> ".join(names), at.file, at.line)
        self.files += 1
        try:
            if self.files > MAX_FILES:
                raise Unreadable(f"more than {MAX_FILES} files included")
            text = read_untrusted(path, self.trust).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError, Unreadable) as e:
            why = getattr(e, "strerror", None) or str(e)
            verb = "refused" if isinstance(e, Untrusted) else "cannot read"
            if at is not None:
                raise ConfigError(f'{at.key}: {verb} "{at.value}": {why}', at.file, at.line) from None
            raise ConfigError(f"{verb} file: {why}" if verb == "cannot read" else f"{verb}: {why}", disp) from None

        table = self.magic_table(path)
        entries = so_far if so_far is not None else []
        current, found = "", False
        for lineno, raw in enumerate(text.split("\n"), start=1):
            line = raw.strip()
            if not line or line[0] in ";#":
                continue
            line = _MAGIC_RE.sub(lambda m: _magic(m.group(1), table), line)
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ConfigError(f'malformed section header "{line}"', disp, lineno)
                current = line[1:-1].strip().replace(_PCT, "%")
                found = found or current == section
                continue
            if current != section:
                continue
            key, _, value = line.partition("=")
            key = key.strip().replace("_", "-").replace(_PCT, "%")
            if not key:
                self.warnings.append(f"{disp}:{lineno}: line has no option name; ignored")
                continue
            entry = _Entry(key, self._env(value.strip(), disp, lineno), disp, lineno)
            if key in _INCLUDE_KEYS:
                self._include(entry, path, chain + (ident,), entries)
            else:
                entries.append(entry)
        if not found:
            where = f" (included from {at.file}:{at.line})" if at else ""
            raise ConfigError(f"no [{section}] section{where}", disp)
        return entries

    def _include(self, entry: _Entry, path: str, chain: tuple[tuple[str, str, str], ...],
                 entries: list[_Entry]) -> None:
        """Included options go in at this point: order matters for last-wins."""
        self.include_refs.update(m.strip().replace("_", "-") for m in _PH_RE.findall(entry.value))
        target = _resolve(entry.value, entry, _by_name(entries), frozenset()).replace(_PCT, "%")
        if not target:
            raise ConfigError(f"{entry.key}: expected a file name, got nothing", entry.file, entry.line)
        if target.startswith(":"):  # uWSGI: another section of the same file
            file, sect = path, target[1:] or "uwsgi"
        else:
            file, sect = _split_section(os.path.join(os.path.dirname(path), target))
        self.read(file, sect, chain, entry._replace(value=target), entries)

    def _env(self, value: str, disp: str, lineno: int) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in self.environ:
                self.warnings.append(
                    f'{disp}:{lineno}: environment variable "{name}" is not set; using ""')
                return ""
            return self.environ[name]
        return _ENV_RE.sub(sub, value)


def _magic(letter: str, table: Mapping[str, str]) -> str:
    if letter == "%":
        return _PCT
    return table.get(letter, "%" + letter)  # '%(' and unknown letters stay


def _placeholder_entry(e: _Entry) -> _Entry:
    """'set-placeholder = name=value' -> an entry for 'name'."""
    name, eq, value = e.value.partition("=")
    if not eq or not name.strip():
        raise ConfigError(f'{e.key}: expected "name=value", got "{e.value}"', e.file, e.line)
    return e._replace(key=name.strip().replace("_", "-"), value=value.strip())


def _by_name(entries: list[_Entry]) -> dict[str, _Entry]:
    """What %(name) can see: the last entry of each key, set-placeholder ones included."""
    return {e.key: e for e in (_placeholder_entry(e) if e.key in _PLACEHOLDER_KEYS else e
                               for e in entries)}


def _resolve(text: str, where: _Entry, values: Mapping[str, _Entry], seen: frozenset[str]) -> str:
    """Expand %(key) recursively; the error points at the line that has the reference."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1).strip().replace("_", "-")
        src = values.get(name)
        if src is None:
            raise ConfigError(f"{where.key}: unknown placeholder %({m.group(1)})", where.file, where.line)
        if name in seen:
            raise ConfigError(f"{where.key}: placeholder loop through %({name})", where.file, where.line)
        return _resolve(src.value, src, values, seen | {name})
    return _PH_RE.sub(sub, text)


def _resolve_sockets(cfg: Config, disp: str) -> None:
    """Socket addresses as uWSGI binds them: `=N` is the Nth `shared-socket`; a relative UNIX
    path is relative to `chdir` (uWSGI changes directory before it binds, core/uwsgi.c), else
    to where the master starts, and is kept absolute, so that `vacuum` finds it at exit;
    `abstract-socket` puts every UNIX socket in the abstract namespace."""
    def one(address: str, option: str) -> str:
        if address.startswith("=") and address[1:].isdigit():
            n = int(address[1:])
            if n >= len(cfg.shared_sockets):
                raise ConfigError(f"{option}: {address} names shared-socket {n}, but there are "
                                  f"{len(cfg.shared_sockets)}", *cfg.origins.get(option, (disp, None)))
            address = cfg.shared_sockets[n]
        if address.startswith("@") or not ("/" in address or ":" not in address):
            return address
        if cfg.abstract_socket:
            return "@" + address
        return os.path.normpath(os.path.join(cfg.chdir or os.getcwd(), address))
    cfg.http_sockets = [one(a, "http-socket") for a in cfg.http_sockets]
    cfg.uwsgi_sockets = [one(a, "socket") for a in cfg.uwsgi_sockets]
    if cfg.stats:
        cfg.stats = one(cfg.stats, "stats")


def load_config(path: str, *, vassals_dir: str | None = None,
                environ: Mapping[str, str] | None = None, trust: TrustRule | None = None) -> Config:
    """Read a vassal file ('app.ini' or 'app.ini:section'); ConfigError on any problem.

    `trust`: who may have written it and every file it includes (emperor/files.py).
    """
    file, section = _split_section(path)
    top = os.path.abspath(file)
    reader = _Reader(top, vassals_dir if vassals_dir is not None else os.path.dirname(top),
                     os.environ if environ is None else environ, trust)
    entries = reader.read(top, section)

    values = _by_name(entries)
    referenced = reader.include_refs | {
        m.strip().replace("_", "-") for e in entries for m in _PH_RE.findall(e.value)}

    cfg = Config(path=top, name=os.path.basename(top), section=section)
    lists: dict[str, list[Any]] = {}
    unsupported: list[_Entry] = []
    for e in entries:
        if e.key in _PLACEHOLDER_KEYS or e.key in _NO_EFFECT:
            continue
        if e.key in _PLUGIN_KEYS:
            if not all(_BUILTIN_PLUGIN_RE.fullmatch(p.strip()) for p in e.value.split(",") if p.strip()):
                unsupported.append(e)
            continue
        name = _CANONICAL.get(e.key)
        if name is None:
            if e.key not in referenced:  # a key used as a placeholder is not an option
                unsupported.append(e)
            continue
        opt = _OPTIONS[name]
        text = _resolve(e.value, e, values, frozenset({e.key})).replace(_PCT, "%")
        try:
            value = opt.conv(text)
        except ValueError as exc:
            raise ConfigError(f"{e.key}: {exc}", e.file, e.line) from None
        if opt.many:
            lists.setdefault(opt.field, []).append(value)
        else:
            setattr(cfg, opt.field, value)
        cfg.origins[name] = (e.file, e.line)
    for fieldname, items in lists.items():
        setattr(cfg, fieldname, items)

    cfg.warnings = reader.warnings
    for e in unsupported:
        what = e.key if e.key not in _PLUGIN_KEYS else f"{e.key} = {e.value}"
        if cfg.strict:
            raise ConfigError(f'option "{what}" is not supported by emperor (strict mode)', e.file, e.line)
        cfg.warnings.append(f'{e.file}:{e.line}: option "{what}" is not supported by emperor; ignored')

    disp = reader.display(top)
    _resolve_sockets(cfg, disp)
    if not cfg.http_sockets and not cfg.uwsgi_sockets:
        raise ConfigError("no socket or http-socket", disp)
    if cfg.need_app and not cfg.module and not cfg.wsgi_file:
        raise ConfigError("no module or wsgi-file (an application is required)", disp)
    if cfg.cheaper:
        # as uWSGI's core/init.c: a minimum at or above the maximum is an error, too low a start a warning
        if cfg.cheaper >= cfg.processes:
            raise ConfigError(f"cheaper: must be lower than processes ({cfg.processes}), got {cfg.cheaper}",
                              *cfg.origins.get("cheaper", (disp, None)))
        if cfg.cheaper_initial and cfg.cheaper_initial < cfg.cheaper:
            file, line = cfg.origins["cheaper-initial"]
            cfg.warnings.append(f"{file}:{line}: cheaper-initial ({cfg.cheaper_initial}) is below cheaper "
                                f"({cfg.cheaper}); starting {cfg.cheaper} workers")
        cfg.cheaper_initial = min(max(cfg.cheaper_initial or cfg.cheaper, cfg.cheaper), cfg.processes)
    return cfg
