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
            import re

            try:
                ok = re.search(arg, socket.gethostname()) is not None
            except re.error:
                ok = False
        else:  # reload: a re-executed master image (uWSGI: UWSGI_RELOADS set at start)
            ok, current = "UWSGI_RELOADS" in ctx.environ, None
        return ok != negated, current

    def items(self, ctx: Context) -> list[str]:
        arg = self.arg
        if self.key == "for":
            return [t for t in arg.split(" ") if t]
        if self.key == "for-times":
            m = arg.strip().split(" ")[0]
            n = int(m) if m.lstrip("+-").isdigit() else 0
            return [str(i) for i in range(1, n + 1)]
        if self.key == "for-glob":
            found = sorted(glob.glob(arg, root_dir=self.base))
            return [p + "/" if os.path.isdir(self.path(p)) else p for p in found] or [arg]
        return ctx.read_lines(self.path(arg), self)

    def path(self, p: str) -> str:
        """Relative to the directory of the file that has the block (uWSGI: to its cwd,
        which for an emperor's vassal is the vassals directory)."""
        return os.path.join(self.base, p)


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
