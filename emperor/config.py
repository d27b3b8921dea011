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

from emperor import routes
from emperor.files import TrustRule, Unreadable, Untrusted, read_untrusted
from emperor.settings import _CANONICAL, _OPTIONS, Config

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
_OWN_VARIABLES = {"log-format"}   # %(name) there is the request log's, unless the file sets `name`
HOOK_PHASES = ("as-root", "as-user", "pre-app", "post-app", "master-start", "as-user-atexit")
HOOK_ACTIONS = ("exec", "mkdir", "chmod", "chown", "unlink", "write", "print", "log")

# Accepted without a warning: emperor always behaves this way.
_NO_EFFECT = {"master", "enable-threads", "thunder-lock", "single-interpreter",
              "auto-procname", "memory-report"}
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


def _resolve(text: str, where: _Entry, values: Mapping[str, _Entry], seen: frozenset[str],
             keep_unknown: bool = False) -> str:
    """Expand %(key) recursively; the error points at the line that has the reference.

    `keep_unknown`: an unknown %(name) stays as it is (log-format's own variables)."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1).strip().replace("_", "-")
        src = values.get(name)
        if src is None and keep_unknown:
            return m.group(0)
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
    route_lines: list[tuple[str, int]] = []   # where each of cfg.routes was written
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
        text = _resolve(e.value, e, values, frozenset({e.key}), name in _OWN_VARIABLES).replace(_PCT, "%")
        try:
            value = opt.conv(text)
        except ValueError as exc:
            raise ConfigError(f"{e.key}: {exc}", e.file, e.line) from None
        if opt.many:
            lists.setdefault(opt.field, []).append(value)
        else:
            setattr(cfg, opt.field, value)
        if opt.field == "routes":
            route_lines.append((e.file, e.line))
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
    for option in ("logger", "req-logger"):
        value = getattr(cfg, option.replace("-", "_"))
        if value and not (value == "stdio" or (value.startswith("file:") and len(value) > 5)):
            file, line = cfg.origins.get(option, (disp, None))
            cfg.warnings.append(f'{file}:{line}: {option} "{value}": only file:PATH and stdio are supported '
                                f"by emperor; ignored")
            setattr(cfg, option.replace("-", "_"), None)
    for phase in HOOK_PHASES:
        for item in getattr(cfg, "hook_" + phase.replace("-", "_")):
            action = item.split(":", 1)[0]
            if action not in HOOK_ACTIONS:
                file, line = cfg.origins.get("hook-" + phase, (disp, None))
                cfg.warnings.append(f'{file}:{line}: hook-{phase}: action "{action}" is not supported '
                                    f"by emperor ({', '.join(HOOK_ACTIONS)}); ignored")
    for index, message, unsupported_here in routes.problems(cfg.routes):
        file, line = route_lines[index]
        if cfg.strict and unsupported_here:
            raise ConfigError(f"{message} (strict mode)", file, line)
        cfg.warnings.append(f"{file}:{line}: {cfg.routes[index][0]}: {message}")
    if not cfg.http_sockets and not cfg.uwsgi_sockets:
        raise ConfigError("no socket or http-socket", disp)
    if cfg.need_app and not cfg.module and not cfg.wsgi_file and not cfg.mounts:
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
