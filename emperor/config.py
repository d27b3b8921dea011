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
from collections.abc import Callable, Mapping

from emperor.attached import checker, parse_cron, parse_daemon
from emperor.files import TrustRule, Unreadable, Untrusted, read_untrusted

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Config", "ConfigError", "load_config"]

_PCT = "\x00"  # stands for a literal '%' (from '%%') until expansion is over
_MAGIC_RE = re.compile(r"%(.)", re.S)
_ENV_RE = re.compile(r"\$\(([^)]*)\)")
_PH_RE = re.compile(r"%\(([^)]*)\)")
_INT_RE = re.compile(r"\s*([+-]?[0-9]+)")
_FALSE = {"false", "off", "no", "0"}

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
        # attached daemons and cron (emperor/attached.py; run by emperor/master/daemons.py, cron.py)
        self.attach_daemon: list[str] = []
        self.attach_control_daemon: list[str] = []
        self.smart_attach_daemon: list[str] = []
        self.smart_attach_daemon2: list[str] = []
        self.attach_daemon2: list[str] = []
        self.cron: list[str] = []
        self.unique_cron: list[str] = []
        self.cron2: list[str] = []
        self.cron_harakiri: int = 0
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
        self.uid: str | None = None
        self.gid: str | None = None
        self.logto: str | None = None
        self.disable_logging: bool = False
        self.strict: bool = False
        self.snapshot: bool = False
        self.snapshot_ttl: int = 3600
        self.graceful_removal: bool | None = None   # None: as the emperor's --graceful-removal says
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

# ---- value converters: text -> value, ValueError(message) when the text is bad ----

def _int(lo: int = 0, hi: int | None = None) -> Callable[[str], int]:
    """Like uWSGI's atoi, leading digits are the number ('4 ; max workers' -> 4)."""
    def conv(text: str) -> int:
        m = _INT_RE.match(text)
        if not m:
            raise ValueError(f'expected an integer, got "{text}"')
        n = int(m.group(1))
        if n < lo or (hi is not None and n > hi):
            bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise ValueError(f"must be {bounds}, got {n}")
        return n
    return conv


def _bool(text: str) -> bool:
    """The first word decides, so 'vacuum = true ; clean up' works too."""
    word = re.split(r"[\s;#]", text, maxsplit=1)[0]
    return word.lower() not in _FALSE


def _str(text: str) -> str:
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("expected a value, got nothing")
    return text


def _address(text: str) -> str:
    """'host:port', ':port', '[v6]:port', or a UNIX path (has '/' or no ':')."""
    if not text:
        raise ValueError("expected an address, got nothing")
    if "/" in text or ":" not in text:
        return text
    m = re.fullmatch(r"\[([^\]]+)\]:(.*)", text)
    host, port = (m.group(1), m.group(2)) if m else text.rsplit(":", 1)
    if not m and ":" in host:
        raise ValueError(f'IPv6 address needs brackets: "{text}"')
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f'bad port "{port}" in "{text}" (expected 0-65535)')
    return text


def _chmod(text: str) -> str:
    """A bare 'chmod-socket' means 666, as in uWSGI."""
    if not text:
        return "666"
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise ValueError(f'expected an octal mode such as 660, got "{text}"')
    return text


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
    # attached daemons and cron: checked by emperor/attached.py, kept as text (the master parses them)
    "attach-daemon": _Opt("attach_daemon", checker(parse_daemon, "attach-daemon"), True),
    "attach-control-daemon": _Opt("attach_control_daemon", checker(parse_daemon, "attach-control-daemon"), True),
    "smart-attach-daemon": _Opt("smart_attach_daemon", checker(parse_daemon, "smart-attach-daemon"), True),
    "smart-attach-daemon2": _Opt("smart_attach_daemon2", checker(parse_daemon, "smart-attach-daemon2"), True),
    "attach-daemon2": _Opt("attach_daemon2", checker(parse_daemon, "attach-daemon2"), True),
    "cron": _Opt("cron", checker(parse_cron, "cron"), True),
    "unique-cron": _Opt("unique_cron", checker(parse_cron, "unique-cron"), True),
    "cron2": _Opt("cron2", checker(parse_cron, "cron2"), True),
    "cron-harakiri": _Opt("cron_harakiri", _int()),
    "die-on-term": _Opt("die_on_term", _bool),
    "worker-reload-mercy": _Opt("worker_reload_mercy", _int()),
    "reload-mercy": _Opt("reload_mercy", _int()),
    "listen": _Opt("listen", _int(1)),
    "buffer-size": _Opt("buffer_size", _int(512, 65535)),
    "socket-timeout": _Opt("socket_timeout", _int()),
    "harakiri": _Opt("harakiri", _int()),
    "max-requests": _Opt("max_requests", _int()),
    "lazy-apps": _Opt("lazy_apps", _bool, aliases=("lazy",)),
    "need-app": _Opt("need_app", _bool),
    "stats": _Opt("stats", _address, aliases=("stats-server",)),
    "stats-http": _Opt("stats_http", _bool),
    "vacuum": _Opt("vacuum", _bool),
    "chmod-socket": _Opt("chmod_socket", _chmod, aliases=("chmod",)),
    "uid": _Opt("uid", _nonempty),
    "gid": _Opt("gid", _nonempty),
    "logto": _Opt("logto", _nonempty),
    "disable-logging": _Opt("disable_logging", _bool),
    "strict": _Opt("strict", _bool),
    "snapshot": _Opt("snapshot", _bool),
    "snapshot-ttl": _Opt("snapshot_ttl", _int(1)),
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
    if not cfg.http_sockets and not cfg.uwsgi_sockets:
        raise ConfigError("no socket or http-socket", disp)
    if cfg.need_app and not cfg.module and not cfg.wsgi_file:
        raise ConfigError("no module or wsgi-file (an application is required)", disp)
    return cfg
