"""From the entries a file's reading gave to a `Config`: what each option does, every problem.

Every key of a file is one of: honoured (options.OPTIONS); a no-op (options.NOOPS:
emperor already behaves as it asks, silent); known to uWSGI but not supported (a
warning, an error with strict-compat); or unknown to uWSGI, which uWSGI reads as a
placeholder: fine when something refers to it with %(name), a warning otherwise (a
typo), and an error with `strict = true` as in uWSGI (config.c uwsgi_opt_get).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from emperor import values
from emperor.config import catalog, expand
from emperor.config.model import (ERROR, HONOURED, NOOP, PLACEHOLDER, UNKNOWN, UNSUPPORTED, WARNING, Config,
                                  ConfigError, Finding, shown, where)
from emperor.config.options import (ALIAS_NOTES, CANONICAL, HOOK_ACTIONS, HOOK_PHASES, NOOP_ALIASES, NOOPS, OPTIONS,
                                    PLUGIN_KEYS, UNIX_SIGNAL_FUNCTIONS, builtin_plugin, unix_signal)
from emperor.config.reader import Reader, split_section
from emperor.config.resolve import Entry, ResolveError, Resolver, references
from emperor.files import TrustRule

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

PROTOCOLS = {"uwsgi": "uwsgi", "http": "http", "http11": "http"}


class Reading:
    """What reading one vassal file found: `config` (None when the file cannot start), every
    finding in file order, and the errors and warnings among them."""

    def __init__(self, config: Config | None, findings: list[Finding]) -> None:
        self.config = config
        self.findings = findings
        self.errors = [f for f in findings if f.verdict == ERROR]
        self.warnings = [f for f in findings if f.message and f.verdict != ERROR]

    def error(self) -> ConfigError:
        first = self.errors[0]
        message = first.message[len(where(first.file, first.line)):]
        return ConfigError(message, first.file, first.line, tuple(f.message for f in self.errors))


def read_vassal(path: str, *, vassals_dir: str | None = None, environ: Mapping[str, str] | None = None,
                trust: TrustRule | None = None, strict_compat: bool = False, given_socket: bool = False) -> Reading:
    """Read a vassal file ('app.ini' or 'app.ini:section') exactly as its master would.

    `given_socket`: its emperor hands it a socket (an on-demand vassal named by `emperor run
    --emperor-on-demand-*`), so a file without one is not an error (uWSGI's fd 0)."""
    file, section, asked = split_section(path)
    top = os.path.abspath(file)
    vdir = vassals_dir if vassals_dir is not None else os.path.dirname(top)
    as_given = os.path.relpath(top, vdir) if top.startswith(vdir.rstrip("/") + "/") else file
    reader = Reader(top, vdir, os.environ if environ is None else environ, trust)
    reader.read_all(section, asked, as_given + (f":{asked}" if asked else ""))
    judge = _Judge(reader, Config(path=top, name=os.path.basename(top), section=section), strict_compat)
    if given_socket:
        judge.seen.add("socket")
    findings = judge.run()
    errors = [f for f in findings if f.verdict == ERROR]
    return Reading(None if errors else judge.cfg, findings)


def load_config(path: str, *, vassals_dir: str | None = None, environ: Mapping[str, str] | None = None,
                trust: TrustRule | None = None, strict_compat: bool = False, given_socket: bool = False) -> Config:
    """Read a vassal file ('app.ini' or 'app.ini:section'); ConfigError naming every problem.

    `trust`: who may have written it and every file it reads (emperor/files.py).
    `strict_compat`: options uWSGI knows but emperor does not support are errors
    (`emperor run --strict-compat`), as the file's own `strict-compat = true` makes them.
    """
    r = read_vassal(path, vassals_dir=vassals_dir, environ=environ, trust=trust, strict_compat=strict_compat,
                    given_socket=given_socket)
    if r.config is None:
        raise r.error()
    return r.config


class _Judge:
    """Decides each entry's fate, in file order, and fills the Config."""

    def __init__(self, reader: Reader, cfg: Config, strict_compat: bool) -> None:
        self.reader, self.cfg = reader, cfg
        self.out: list[Finding] = []
        self.by_name = {e.key: e for e in reader.entries}   # %(name): the last one (emperor's choice)
        own = frozenset(k for k, v in CANONICAL.items() if v == "log-format")
        self.resolver = Resolver(self.by_name, reader.environ, reader.trust, self.warn_entry, own)
        self.referenced = set(reader.refs)
        for e in reader.entries:
            self.referenced |= references(e.value)
        self.strict = self.flag("strict")
        self.strict_compat = strict_compat or self.flag("strict-compat")
        self.lists: dict[str, list[Any]] = {}
        self.sockets: list[tuple[bool, str]] = []   # (default protocol?, address), in order
        self.seen: set[str] = set()                  # option names met (valid or not)
        self.protocol = "uwsgi"
        self.route_lines: list[tuple[str, int | None]] = []   # where each of cfg.routes was written
        self.given: list[tuple[str, str]] = []       # every option line (name, value): uwsgi.opt

    def flag(self, name: str) -> bool:
        """The last value of a boolean option, read before the judging (it changes the verdicts)."""
        e = next((e for e in reversed(self.reader.entries)
                  if CANONICAL.get(e.key) == name and not e.placeholder_only), None)
        quiet = Resolver(self.by_name, self.reader.environ, self.reader.trust, lambda e, m: None)
        try:
            return e is not None and values._truth(quiet.value(e))
        except ResolveError:
            return False

    def warn_entry(self, e: Entry, message: str) -> None:
        self.add(e, WARNING, message, message)

    def add(self, e: Entry, verdict: str, detail: str = "", message: str = "", category: str = "") -> None:
        text = where(e.file, e.line) + message if message else ""
        if text and text in self.reader.said:
            return
        self.reader.said.add(text)
        self.out.append(Finding(e.file, e.line, e.name, verdict, detail, text, category))

    def error(self, e: Entry, detail: str, category: str = "reading") -> None:
        self.add(e, ERROR, detail, f"{e.name}: {detail}", category)

    def run(self) -> list[Finding]:
        for item in self.reader.items:
            if isinstance(item, Finding):
                self.out.append(item)
            else:
                self.entry(item)
        self.finish()
        return self.out

    # ---- one entry ----
    def entry(self, e: Entry) -> None:
        raw = e.value.replace(expand.PCT, "%")
        if e.placeholder_only:
            self.add(e, PLACEHOLDER, f"set-placeholder: {shown(raw)}")
            return
        name = CANONICAL.get(e.key)
        noop = NOOPS.get(NOOP_ALIASES.get(e.key, e.key))
        if name is not None:
            self.honour(e, name)
            return
        self.given.append((e.name, raw))
        if e.key in PLUGIN_KEYS:
            if builtin_plugin(raw):
                self.add(e, NOOP, "Python and HTTP are built into emperor")
            else:
                self.unsupported(e, catalog.lookup(e.key) or "", f"{e.name} = {raw}")
        elif noop is not None:
            reason, when = noop
            if when is True and not values._truth(raw):
                self.unsupported(e, "", f"{e.name} = {raw}", f"{reason}: it cannot do without")
            else:
                self.add(e, NOOP, reason)
        elif e.key in ("protocol", "socket-protocol"):
            proto = raw.split()[0] if raw.split() else ""
            if proto in PROTOCOLS:
                self.protocol = PROTOCOLS[proto]
                self.add(e, HONOURED, f"socket speaks {PROTOCOLS[proto]}")
            else:
                self.unsupported(e, "", f"{e.name} = {raw}")
        else:
            known = catalog.lookup(e.key)
            if known is not None:
                self.unsupported(e, known)
            else:
                self.unknown(e)

    def honour(self, e: Entry, name: str) -> None:
        opt = OPTIONS[name]
        if name in ("socket", "http-socket", "https-socket", "module", "wsgi-file", "mount"):
            self.seen.add("socket" if "socket" in name else "app")
        try:
            text = self.resolver.value(e)
        except ResolveError as exc:
            self.error(exc.entry, exc.message.partition(": ")[2], exc.category)
            return
        self.given.append((e.name, text))
        try:
            value = opt.conv(text)
        except ValueError as exc:
            self.error(e, str(exc))
            return
        notes: list[tuple[str, str]] = []
        if isinstance(value, values.Noted):
            notes = value.notes
            value = value.value
        if name == "socket":
            self.sockets.append((e.key == "socket", str(value)))
        elif opt.many:
            if value is not None:   # None: an item left out with a warning (a cron that never runs)
                self.lists.setdefault(opt.field, []).append(value)
                if opt.field == "routes":
                    self.route_lines.append((e.file, e.line))
        else:
            setattr(self.cfg, opt.field, value)
        self.cfg.origins[name] = (e.file, e.line or 0)
        said = [("true" if value else "false") if isinstance(value, bool) else shown(str(value))]
        if e.key != name:
            note = ALIAS_NOTES.get(e.key)
            said.append(f"read as {name}: {note}" if note else f"{e.name} is uWSGI's other name for {name}")
        if "_" in e.name:
            said.append(f'uWSGI 2.0 reads "{e.name}" as a placeholder, not as {name}')
        said += [text for kind, text in notes if kind == "note"] + self.resolver.notes.get(id(e), [])
        self.add(e, HONOURED, "; ".join(said))
        for kind, text in notes:
            if kind == "warning":
                self.add(e, WARNING, text, f"{e.name}: {text}")

    def unsupported(self, e: Entry, needs: str, what: str = "", why: str = "") -> None:
        what = what or e.name
        if self.strict_compat:
            message = f'option "{shown(what)}" is not supported by emperor (strict-compat)'
            self.add(e, ERROR, message, message, "unsupported")
            return
        detail = why or ("known to uWSGI" + (f" (in {needs})" if needs else "") + ", not supported by emperor; ignored")
        self.add(e, UNSUPPORTED, detail, f'option "{shown(what)}" is not supported by emperor; ignored')

    def unknown(self, e: Entry) -> None:
        from_env = e.line is None and e.file.startswith("$")
        close = catalog.suggest(e.name, tuple(OPTIONS)) if not from_env else None
        hint = f' (did you mean "{close}"?)' if close else ""
        if self.strict:
            extra = "" if hint or from_env else " (under strict, a placeholder is set with set-placeholder)"
            message = f'unknown option "{shown(e.name)}" refused by strict mode{hint or extra}'
            self.add(e, ERROR, message, message)
        elif e.key in self.referenced:
            self.add(e, PLACEHOLDER, f"= {shown(e.value.replace(expand.PCT, '%'))}")
        elif from_env:
            self.add(e, PLACEHOLDER, "not a uWSGI option: an unused placeholder, as in uWSGI")
        else:
            self.add(e, UNKNOWN, f"not a uWSGI option{hint}; ignored", f'unknown option "{shown(e.name)}"{hint}')

    # ---- the whole file ----
    def finish(self) -> None:
        cfg = self.cfg
        for field, items in self.lists.items():
            setattr(cfg, field, items)
        for default, address in self.sockets:
            (cfg.http_sockets if default and self.protocol == "http" else cfg.uwsgi_sockets).append(address)
        cfg.strict, cfg.strict_compat = self.strict, self.strict_compat
        cfg.protocol = self.protocol   # an on-demand socket the emperor names speaks it (as uWSGI's fd 0)
        cfg.given = self.given
        top = self.reader.display(self.reader.top)
        self.sockets_as_bound(top)
        self.hooks_and_cheaper(top)
        self.loggers(top)
        self.proxy_and_tls(top)
        self.routing()
        if not self.reader.top_ok:   # nothing was read: "no socket" would only repeat that
            self.seen |= {"socket", "app"}
        if not (cfg.http_sockets or cfg.uwsgi_sockets or cfg.https_sockets) and "socket" not in self.seen:
            self.out.append(Finding(top, None, "", ERROR, "no socket or http-socket",
                                    f"{top}: no socket or http-socket", "vassal"))
        if cfg.need_app and not cfg.module and not cfg.wsgi_file and not cfg.mounts and "app" not in self.seen:
            text = "no module or wsgi-file (an application is required)"
            self.out.append(Finding(top, None, "", ERROR, text, f"{top}: {text}", "vassal"))
        cfg.warnings = [f.message for f in self.out if f.message and f.verdict != ERROR]

    def problem_at(self, option: str, top: str, detail: str, verdict: str = ERROR, named: bool = True) -> None:
        """A problem of an option's value as a whole, shown at its (last) line."""
        file, line = self.cfg.origins.get(option, (top, 0))
        text = f"{option}: {detail}" if named else detail
        self.out.append(Finding(file, line or None, option, verdict, detail, where(file, line or None) + text,
                                "reading" if verdict == ERROR else ""))

    def sockets_as_bound(self, top: str) -> None:
        """Socket addresses as uWSGI binds them: `=N` is the Nth `shared-socket`; a relative UNIX
        path is relative to `chdir` (uWSGI changes directory before it binds, core/uwsgi.c), else
        to where the master starts, and is kept absolute, so that `vacuum` finds it at exit;
        `abstract-socket` puts every UNIX socket in the abstract namespace."""
        cfg = self.cfg

        def one(address: str, option: str) -> str:
            if address.startswith("=") and address[1:].isdigit():
                n = int(address[1:])
                if n >= len(cfg.shared_sockets):
                    self.problem_at(option, top, f"{address} names shared-socket {n}, but there are "
                                                 f"{len(cfg.shared_sockets)}")
                    return address
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

    def routing(self) -> None:
        """What a route rule asks that emperor does not do, or a goto with nowhere to go: named at
        the rule's line (an error under strict, as an unknown action is in uWSGI)."""
        if not self.cfg.routes:
            return
        from emperor import routes

        for index, message, unsupported_here in routes.problems(self.cfg.routes):
            file, line = self.route_lines[index]
            option = self.cfg.routes[index][0]
            verdict = ERROR if self.strict and unsupported_here else WARNING
            text = f"{message} (strict mode)" if verdict == ERROR else message
            self.out.append(Finding(file, line, option, verdict, text, where(file, line) + f"{option}: {text}",
                                    "unsupported" if verdict == ERROR else ""))

    def proxy_and_tls(self, top: str) -> None:
        if self.cfg.enable_proxy_protocol and self.cfg.https_sockets:
            self.problem_at("enable-proxy-protocol", top, "read on http-socket only: an https-socket connection "
                                                          "starts with TLS, its PROXY header is not looked for",
                            WARNING)

    def loggers(self, top: str) -> None:
        """uWSGI's logger plugins (syslog, socket, zeromq...) are not emperor's: file:PATH and stdio are."""
        for option in ("logger", "req-logger"):
            value = getattr(self.cfg, option.replace("-", "_"))
            if value and not (value == "stdio" or (value.startswith("file:") and len(value) > 5)):
                self.problem_at(option, top, f'{option} "{value}": only file:PATH and stdio are supported by '
                                             "emperor; ignored", WARNING, named=False)
                setattr(self.cfg, option.replace("-", "_"), None)

    def hooks_and_cheaper(self, top: str) -> None:
        cfg = self.cfg
        for phase in HOOK_PHASES:
            for item in getattr(cfg, "hook_" + phase.replace("-", "_")):
                action, _, arg = item.partition(":")
                if action not in HOOK_ACTIONS:
                    self.problem_at(f"hook-{phase}", top, f'action "{action}" is not supported by emperor '
                                                          f"({', '.join(HOOK_ACTIONS)}); ignored", WARNING)
                elif action == "unix_signal" and unix_signal(arg) is None:
                    self.problem_at(f"hook-{phase}", top, f'unix_signal:{arg}: expected "<signum> <function>" '
                                                          f"with one of {', '.join(UNIX_SIGNAL_FUNCTIONS)}; ignored",
                                    WARNING)
        if cfg.cheaper:
            # as uWSGI's core/init.c: a minimum at or above the maximum is an error, too low a start a warning
            if cfg.cheaper >= cfg.processes:
                self.problem_at("cheaper", top, f"must be lower than processes ({cfg.processes}), got {cfg.cheaper}")
            if cfg.cheaper_initial and cfg.cheaper_initial < cfg.cheaper:
                self.problem_at("cheaper-initial", top, f"cheaper-initial ({cfg.cheaper_initial}) is below cheaper "
                                                        f"({cfg.cheaper}); starting {cfg.cheaper} workers", WARNING,
                                named=False)
            cfg.cheaper_initial = min(max(cfg.cheaper_initial or cfg.cheaper, cfg.cheaper), cfg.processes)
            # core/init.c: a hard RSS limit needs a soft one below it (uWSGI exits on either)
            if cfg.cheaper_rss_limit_hard and not cfg.cheaper_rss_limit_soft:
                self.problem_at("cheaper-rss-limit-hard", top, "needs cheaper-rss-limit-soft too")
            elif cfg.cheaper_rss_limit_hard and cfg.cheaper_rss_limit_hard <= cfg.cheaper_rss_limit_soft:
                self.problem_at("cheaper-rss-limit-hard", top, f"must be higher than cheaper-rss-limit-soft "
                                                               f"({cfg.cheaper_rss_limit_soft}), got "
                                                               f"{cfg.cheaper_rss_limit_hard}")
