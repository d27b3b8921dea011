"""uWSGI's config logic: `if-*` and `for*` blocks, closed by `endif`/`endfor` (core/config.c).

A block does not run its lines once: each line read while it is open is tested (an
`if-*`) or repeated (a `for*`) at the moment it is read, with `%(_)` in its value
replaced by the test's value or the loop's item (config.c uwsgi_logic_opt_*). So
`if-not-opt = foo` / `foo = 1` / `bar = 2` adds foo and then skips bar, as in uWSGI.

Where emperor differs from uWSGI 2.0 (docs/configuration.md lists it): blocks nest (uWSGI
exits on an `if` inside a true block, and lets the inner `endif` close the outer one
when it is false), and a block ends with the file that opened it.
"""
from __future__ import annotations

import glob
import os
import socket
from collections.abc import Callable, Mapping

from emperor.config.options import builtin_plugin

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

CLOSERS = ("end", "endif", "end-if", "endfor", "end-for")

# opener -> (test name, negated). Names as uWSGI spells them, aliases included.
IFS: dict[str, tuple[str, bool]] = {
    "if-env": ("env", False), "ifenv": ("env", False), "if-not-env": ("env", True),
    "if-opt": ("opt", False), "if-not-opt": ("opt", True),
    "if-exists": ("exists", False), "ifexists": ("exists", False), "if-not-exists": ("exists", True),
    "if-file": ("file", False), "if-not-file": ("file", True),
    "if-dir": ("dir", False), "ifdir": ("dir", False), "if-directory": ("dir", False),
    "if-not-dir": ("dir", True),
    "if-plugin": ("plugin", False), "ifplugin": ("plugin", False), "if-not-plugin": ("plugin", True),
    "if-hostname": ("hostname", False), "if-not-hostname": ("hostname", True),
    "if-hostname-match": ("hostname-match", False), "if-not-hostname-match": ("hostname-match", True),
    "if-reload": ("reload", False), "if-not-reload": ("reload", True),
}
FORS = ("for", "for-glob", "for-readline", "for-times")
OPENERS = (*IFS, *FORS)
# Bounds of emperor's (uWSGI has none): a vassal file is read in the emperor's process, and
# in tyrant mode it is a tenant's. Real files loop over a handful of items.
MAX_ITEMS = 1000        # items of one for block
MAX_GLOB_STARS = 2      # path components of a for-glob with a wildcard: each one lists a directory tree level


class LogicError(Exception):
    """A block its file cannot have: the message is the reason (the reader names file:line)."""


class Context:
    """What the tests look at: the environment, the options read so far, the filesystem."""

    def __init__(self, environ: Mapping[str, str], option: Callable[[str], str | None],
                 read_lines: Callable[[str, Block], list[str]]) -> None:
        self.environ = environ
        self.option = option          # name -> the value of the last entry of that name so far
        self.read_lines = read_lines  # (path, block) -> its lines (for-readline), through the trust rule


class Block:
    """One open `if-*`/`for*`; `dead` when its own line was skipped by an outer block (it
    then only waits for its closer, so that closers pair up with openers)."""

    def __init__(self, key: str, arg: str, file: str, line: int | None, base: str, dead: bool = False) -> None:
        self.key, self.arg, self.file, self.line, self.base = key, arg, file, line, base
        self.dead = dead
        self.found: list[str] | None = None   # a for's items, made once when it opens

    def describe(self) -> str:
        return f"{self.key} = {self.arg}"

    def values(self, value: str, ctx: Context) -> list[str]:
        """The line's value as this block lets it through: [] skips the line, several
        values repeat it (a for), each with `%(_)` replaced."""
        if self.dead:
            return []
        if self.key in FORS:
            return [value.replace("%(_)", item) for item in self.items(ctx)]
        ok, current = self.test(ctx)
        if not ok:
            return []
        return [value if current is None else value.replace("%(_)", current)]

    def test(self, ctx: Context) -> tuple[bool, str | None]:
        """(true?, the value %(_) stands for or None)."""
        kind, negated = IFS[self.key]
        arg = self.arg
        current: str | None = arg
        if kind in ("env", "opt"):
            name, eq, want = arg.partition("=")
            current = ctx.environ.get(name) if kind == "env" else ctx.option(name.replace("_", "-"))
            ok = current is not None and (not eq or current == want)
        elif kind == "exists":
            ok = os.access(self.path(arg), os.R_OK)
        elif kind == "file":
            ok = os.path.isfile(self.path(arg))
        elif kind == "dir":
            ok = os.path.isdir(self.path(arg))
        elif kind == "plugin":
            ok = builtin_plugin(arg)
        elif kind == "hostname":
            ok = socket.gethostname() == arg
        elif kind == "hostname-match":
            ok = hostname_matches(arg)
        else:  # reload: a re-executed master image (uWSGI: UWSGI_RELOADS set at start)
            ok, current = "UWSGI_RELOADS" in ctx.environ, None
        return ok != negated, current

    def items(self, ctx: Context) -> list[str]:
        """The loop's items; LogicError past MAX_ITEMS (counted before they are made).
        Made once: the lines of the block use the items of its opening."""
        if self.found is None:
            self.found = self._items(ctx)
        return self.found

    def _items(self, ctx: Context) -> list[str]:
        arg = self.arg
        if self.key == "for":
            found = [t for t in arg.split(" ") if t]
        elif self.key == "for-times":
            m = arg.strip().split(" ")[0]
            digits = m.lstrip("+-")
            if not digits.isdigit():
                n = 0   # atoi
            else:
                n = int(m) if len(digits) <= 18 else 0 if m.startswith("-") else MAX_ITEMS + 1
            if n > MAX_ITEMS:
                raise LogicError(f"more than {MAX_ITEMS} items (a bound of emperor's)")
            return [str(i) for i in range(1, n + 1)]
        elif self.key == "for-glob":
            stars = sum(1 for part in arg.split("/") if glob.has_magic(part))
            if stars > MAX_GLOB_STARS:
                raise LogicError(f"more than {MAX_GLOB_STARS} path components with a "
                                 "wildcard (a bound of emperor's: each one lists another level of directories)")
            found = []
            for p in glob.iglob(arg, root_dir=self.base):
                found.append(p)
                if len(found) > MAX_ITEMS:
                    break
            found.sort()
            found = [p + "/" if os.path.isdir(self.path(p)) else p for p in found] or [arg]
        else:
            found = ctx.read_lines(self.path(arg), self)
        if len(found) > MAX_ITEMS:
            raise LogicError(f"more than {MAX_ITEMS} items (a bound of emperor's)")
        return found

    def path(self, p: str) -> str:
        """Relative to the directory of the file that has the block (uWSGI: to its cwd,
        which for an emperor's vassal is the vassals directory)."""
        return os.path.join(self.base, p)


def hostname_matches(pattern: str) -> bool:
    """`if-hostname-match`: a regular expression searched in the host name. One that could
    backtrack for ever (a repeat inside a repeat, or alternatives under a repeat, as in
    `(a+)+$`) is refused as false: PCRE, which uWSGI uses, gives up at its match limit, and
    Python's re has none, so it would stop the emperor's loop."""
    import re
    import re._parser   # type: ignore[import-not-found]  # the parser re itself uses (3.11+)

    try:
        parsed = re._parser.parse(pattern)
        if _nested_repeat(parsed, False):
            return False
        return re.search(pattern, socket.gethostname()) is not None
    except (re.error, RecursionError):
        return False


def _nested_repeat(sub: Any, inside: bool) -> bool:
    """Whether a parsed pattern has an unbounded-ish repeat within a repeat, or a branch within one."""
    for op, av in sub:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, item = av
            if hi > 1 and inside:
                return True
            if _nested_repeat(item, inside or hi > 1):
                return True
        elif name == "BRANCH":
            if inside:
                return True
            if any(_nested_repeat(b, inside) for b in av[1]):
                return True
        elif name in ("SUBPATTERN", "ATOMIC_GROUP", "ASSERT", "ASSERT_NOT"):
            items = av[-1] if name != "ATOMIC_GROUP" else av
            if _nested_repeat(items, inside):
                return True
    return False


def readline_items(data: bytes) -> list[str]:
    """for-readline's items: each line, at most 1023 bytes a piece (fgets), without its
    trailing \\r and \\n (config.c uwsgi_logic_opt_for_readline)."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        pieces = [line[i:i + 1023] for i in range(0, len(line), 1023)] or [b""]
        out += [p.rstrip(b"\r\n").decode("utf-8", "surrogateescape") for p in pieces]
    return out
