"""A value's `$(ENV)`, `@(file)` and `%(name)`, in uWSGI's order (uwsgi.c uwsgi_setup: the `$`
pass, then `@`, then `%`), over the entries of a whole file and its includes.

Emperor's choices (docs/configuration.md): `%(name)` is the *last* value of `name`
(uWSGI: the first), and it is expanded itself before it is inserted, so a placeholder
whose value starts with another one works (uWSGI leaves that one as written); an unset
`$(VAR)` is "" with a warning (uWSGI leaves `$(VAR)` as written); a name that is not
defined is an error where the value is used (uWSGI leaves `%(name)` as written).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from emperor.config import expand
from emperor.config.model import shown
from emperor.files import TrustRule, Unreadable, Untrusted, read_untrusted

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class Entry:
    """One `key = value` as read: `key` compared (`_` read as `-`), `name` as written,
    `value` after the magic variables, `base` the directory relative paths start from."""

    __slots__ = ("key", "name", "value", "file", "line", "base", "placeholder_only")

    def __init__(self, key: str, name: str, value: str, file: str, line: int | None, base: str,
                 placeholder_only: bool = False) -> None:
        self.key, self.name, self.value = key, name, value
        self.file, self.line, self.base = file, line, base
        self.placeholder_only = placeholder_only   # set-placeholder: never an option

    def __repr__(self) -> str:
        return f"Entry({self.file}:{self.line}: {self.name} = {self.value!r})"


class ResolveError(Exception):
    """A value that cannot be expanded; `entry` is the line that has the faulty reference."""

    def __init__(self, message: str, entry: Entry, category: str = "reading") -> None:
        super().__init__(message)
        self.message, self.entry, self.category = message, entry, category


def references(text: str) -> set[str]:
    """The names a value refers to with %(name) or inside %(a + b) (normalised)."""
    found: set[str] = set()

    def note(key: str) -> str | None:
        names = expand.arithmetic_names(key) if " " in key else [key]
        found.update(n.strip().replace("_", "-") for n in names)
        return None
    expand.scan(text, "%", note)
    return found


class Resolver:
    """Expands entries' values. `entries`: name -> the entry %(name) means."""

    def __init__(self, entries: Mapping[str, Entry], environ: Mapping[str, str], trust: TrustRule | None,
                 warn: Callable[[Entry, str], None], own_variables: frozenset[str] = frozenset()) -> None:
        self.entries, self.environ, self.trust, self.warn = entries, environ, trust, warn
        self.own_variables = own_variables   # keys whose unknown %(name) is theirs (log-format's variables)
        self.done: dict[int, str] = {}
        self.notes: dict[int, list[str]] = {}   # id(entry) -> where uWSGI reads its value otherwise

    def value(self, e: Entry) -> str:
        """The value of `e` fully expanded, a literal '%' where the file had '%%'."""
        return self.expand(e, frozenset({e.key})).replace(expand.PCT, "%")

    def expand(self, e: Entry, seen: frozenset[str]) -> str:
        if id(e) in self.done:
            return self.done[id(e)]
        try:
            text = expand.scan(e.value, "$", lambda name: self.env(name, e))
            text = expand.scan(text, "@", lambda path: self.at_file(path, e))
            text = expand.scan(text, "%", lambda key: self.placeholder(key, e, seen))
        except expand.TooLong:
            raise ResolveError(f"{e.name}: longer than {expand.MAX_VALUE} bytes once expanded "
                               "(a bound of emperor's)", e) from None
        self.done[id(e)] = text
        return text

    def env(self, name: str, e: Entry) -> str:
        if name not in self.environ:
            self.warn(e, f'environment variable "{shown(name)}" is not set; using ""')
            return ""
        return self.environ[name]

    def at_file(self, path: str, e: Entry) -> str:
        """`@(file)`: the content of a file (relative to the file that names it), without
        one trailing newline; read as every vassal file is, through the trust rule."""
        if _SCHEME.match(path):
            raise ResolveError(f"{e.name}: @({shown(path)}): emperor reads only files "
                               "(uWSGI's exec://, http://... are not supported)", e, "unsupported")
        full = os.path.join(e.base, path.replace(expand.PCT, "%"))
        try:
            data = read_untrusted(full, self.trust)
        except (OSError, Unreadable) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            verb = "refused" if isinstance(exc, Untrusted) else "cannot read"
            raise ResolveError(f"{e.name}: @({shown(path)}): {verb}: {why}", e, "file") from None
        return expand.strip_one_newline(data.decode("utf-8", "surrogateescape"))

    def placeholder(self, key: str, e: Entry, seen: frozenset[str]) -> str | None:
        if key == "_":
            raise ResolveError(f"{e.name}: %(_) outside an if/for block (or its test has no value)", e, "undefined")
        if " " in key:
            result = expand.arithmetic(key, lambda name: self.named(name, key, e, seen))
            if "(" in key or ")" in key:
                theirs = expand.arithmetic(key, lambda name: self.quiet(name, e, seen), parentheses=False)
                if theirs != result:
                    self.notes.setdefault(id(e), []).append(
                        f"uWSGI 2.0 computes %({shown(key)}) as {shown(str(theirs))}: it has no parentheses")
            return result
        if e.key in self.own_variables and key.strip().replace("_", "-") not in self.entries:
            return None   # log-format = %(addr) ...: the request log's variable, unless the file sets it
        return self.named(key, key, e, seen)

    def quiet(self, name: str, e: Entry, seen: frozenset[str]) -> str:
        try:
            return self.named(name, name, e, seen)
        except ResolveError:
            return ""

    def named(self, name: str, written: str, e: Entry, seen: frozenset[str]) -> str:
        norm = name.strip().replace("_", "-")
        src = self.entries.get(norm)
        if src is None:
            what = "" if name == written else f'"{shown(name)}" in '
            raise ResolveError(f"{e.name}: unknown placeholder {what}%({shown(written)})", e, "undefined")
        if norm in seen:
            raise ResolveError(f"{e.name}: placeholder loop through %({shown(norm)})", e)
        return self.expand(src, seen | {norm})
