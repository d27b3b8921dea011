"""Reading a vassal file as uWSGI 2.0 does (core/ini.c, config.c, utils.c): its lines,
sections, config logic and includes, into an ordered list of entries and findings.

A line is `key = value` split at the first '=' (ini.c); blank lines and lines whose
first character is ';' or '#' are comments, and there are no inline comments (a value
keeps everything after its '=', each option's parser decides what that means:
values.py). Magic variables (`%n`, `%d`...) are replaced as a line is read, with the
values of the file that has it; a '%' ending a line joins the next line to it, as in
uWSGI. `UWSGI_<OPTION>` environment variables come first, as options (utils.c
parse_sys_envs). `ini`/`include` read a file where they stand; `inherit` reads it after
everything else, so its options win (uwsgi.c uwsgi_opt_load, uwsgi_configure).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from emperor.config import catalog, expand, logic
from emperor.config.logic import Block, Context, LogicError
from emperor.config.model import ERROR, INCLUDE, LOGIC, SKIPPED, WARNING, Finding, shown, where
from emperor.config.options import (CANONICAL, INCLUDE_KEYS, NOOP_ALIASES, NOOPS, PLACEHOLDER_KEYS,
                                    PLUGIN_KEYS, SET_KEYS)
from emperor.config.resolve import Entry, ResolveError, Resolver, references
from emperor.files import TrustRule, Unreadable, Untrusted, read_untrusted

# Bounds of emperor's, for a vassal and everything it includes (uWSGI has none): the emperor
# reads the file in its own process, and in tyrant mode it is a tenant's. Real files have
# a few hundred lines at most.
MAX_FILES = 64
MAX_BYTES = 4 << 20     # all the files together (each one: files.MAX_CONFIG_BYTES)
MAX_LINES = 20000       # lines read, comments included
MAX_ENTRIES = 10000     # options, once for loops have repeated their lines
# UWSGI_* variables that are uWSGI's own state, not options (utils.c parse_sys_envs)
ENV_NOT_OPTIONS = {"UWSGI_RELOADS", "UWSGI_VASSALS_DIR", "UWSGI_EMPEROR_FD", "UWSGI_BROODLORD_NUM",
                   "UWSGI_EMPEROR_FD_CONFIG", "UWSGI_EMPEROR_PROXY", "UWSGI_JAIL_PID",
                   "UWSGI_ORIGINAL_PROC_NAME"}

OTHER_FORMATS = (".xml", ".yaml", ".yml", ".json", ".js")


class TooLarge(Exception):
    """Past one of the bounds above: reading stops there, with one error."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(message)
        self.file, self.line, self.message = file, line, message


def split_section(path: str, default: str = "uwsgi") -> tuple[str, str, str]:
    """'app.ini:prod' -> ('app.ini', 'prod', 'prod'), unless the whole name is a file; the
    third is the section as asked ('' when none was: the %x magic variable)."""
    head, colon, tail = path.rpartition(":")
    if colon and not os.path.exists(path) and os.path.isfile(head):
        return head, tail or default, tail
    return path, default, ""


def known_key(key: str) -> bool:
    """A name uWSGI or emperor knows, so that a bare line `key` means `key = ""` (ini.c)."""
    return (key in CANONICAL or key in NOOPS or key in NOOP_ALIASES or key in PLUGIN_KEYS
            or key in logic.OPENERS or key in logic.CLOSERS or catalog.lookup(key) is not None)


class Reader:
    def __init__(self, top: str, vassals_dir: str, environ: Mapping[str, str], trust: TrustRule | None) -> None:
        self.top, self.topdir = top, os.path.dirname(top)
        self.vassals_dir, self.environ, self.trust = vassals_dir, environ, trust
        self.static = expand.static_magic(vassals_dir)
        self.upper: dict[str, str] = {}
        self.items: list[Entry | Finding] = []
        self.entries: list[Entry] = []
        self.last: dict[str, Entry] = {}        # what %(name) and if-opt see so far
        self.blocks: list[Block] = []
        self.inherits: list[tuple[Entry, str, str, str, tuple]] = []
        self.files = 0
        self.bytes = self.rows = self.fed = 0   # against MAX_BYTES, MAX_LINES, MAX_ENTRIES
        self.said: set[str] = set()             # the messages given, each once
        self.refs: set[str] = set()             # names used by include lines (%(name)) and if-opt
        self.top_ok = True                      # the vassal file itself was read, its section found
        self.ctx = Context(environ, self.option_so_far, self.read_lines)

    # ---- results ----
    def display(self, path: str) -> str:
        return os.path.relpath(path, self.topdir)

    def problem(self, file: str, line: int | None, option: str, message: str, category: str = "reading") -> None:
        detail = message[len(option) + 2:] if option and message.startswith(option + ": ") else message
        text = where(file, line) + message
        if text not in self.said:
            self.said.add(text)
            self.items.append(Finding(file, line, option, ERROR, detail, text, category))

    def warn(self, file: str, line: int | None, option: str, message: str) -> None:
        text = where(file, line) + message
        if text not in self.said:
            self.said.add(text)
            self.items.append(Finding(file, line, option, WARNING, message, text))

    def warn_entry(self, e: Entry, message: str) -> None:
        self.warn(e.file, e.line, e.name, message)

    # ---- the whole vassal ----
    def read_all(self, section: str, asked: str, as_given: str) -> None:
        try:
            self.read_environment()
            self.read(self.top, section, asked, as_given)
            while self.inherits:
                at, path, sect, asked_sect, chain = self.inherits.pop(0)
                self.read(path, sect, asked_sect, at.value, chain, at)
        except TooLarge as e:
            self.problem(e.file, e.line, "", e.message)
            self.blocks.clear()
            self.top_ok = False   # what would follow from the lines not read ("no socket") is not news

    def read_environment(self) -> None:
        """UWSGI_<OPTION>=value: an option, before the file (so the file's scalars win);
        UWSGI_VASSAL_<OPTION>, which uWSGI's emperor passes on as UWSGI_<OPTION>, wins over it."""
        found: dict[str, tuple[str, str]] = {}
        for name, value in self.environ.items():
            if name.startswith("UWSGI_") and name not in ENV_NOT_OPTIONS and not name.startswith("UWSGI_VASSAL_"):
                found[name[6:].lower().replace("_", "-")] = (name, value)
        for name, value in self.environ.items():
            if name.startswith("UWSGI_VASSAL_") and len(name) > 13:
                found[name[13:].lower().replace("_", "-")] = (name, value)
        for key, (name, value) in found.items():
            self.feed(key, value, f"${name}", None, self.topdir, self.top)

    def read(self, path: str, section: str, asked: str, as_given: str, chain: tuple = (),
             at: Entry | None = None) -> None:
        disp = self.display(path)
        label = disp + ("" if section == "uwsgi" else ":" + section)
        ident = (os.path.realpath(path), section)
        seen = [c[:2] for c in chain]
        if ident in seen and at is not None:
            names = [c[2] for c in chain] + [chain[seen.index(ident)][2]]
            self.problem(at.file, at.line, at.name, "include cycle: " + " -> ".join(names))
            return
        self.files += 1
        try:
            if self.files > MAX_FILES:
                raise Unreadable(f"more than {MAX_FILES} files included")
            data = read_untrusted(path, self.trust)
            self.bytes += len(data)
            if self.bytes > MAX_BYTES:
                raise Unreadable(f"more than {MAX_BYTES} bytes in the files of one vassal")
        except (OSError, Unreadable) as e:
            why = getattr(e, "strerror", None) or str(e)
            verb = "refused" if isinstance(e, Untrusted) else "cannot read"
            if at is None:
                self.problem(disp, None, "", f"{verb} file: {why}" if verb == "cannot read" else f"{verb}: {why}", "file")
                self.top_ok = False
            else:
                self.problem(at.file, at.line, at.name, f'{at.name}: {verb} "{shown(at.value)}": {why}', "file")
            return
        text = data.decode("utf-8", "surrogateescape")
        if text.startswith("\ufeff"):
            text = text[1:]   # a UTF-8 byte order mark (uWSGI would read it as part of the first line)
        table = dict(self.static)
        table.update(expand.file_magic(path, as_given, asked))
        if at is None:
            self.upper = expand.top_magic(table)
        table.update(self.upper)
        chain = chain + ((ident[0], ident[1], label),)
        depth = len(self.blocks)
        if not self.lines(text, table, section, disp, path, chain):
            where_ = f" (included from {at.file}:{at.line})" if at else ""
            self.problem(disp, None, "", f"no [{section}] section{where_}")
            self.top_ok = self.top_ok and at is not None
        for b in reversed(self.blocks[depth:]):
            if not b.dead:
                self.warn(b.file, b.line, b.key, f"{b.key} block is not closed (endif/endfor); it ends with its file")
        del self.blocks[depth:]

    def lines(self, text: str, table: dict[str, str], section: str, disp: str, path: str, chain: tuple) -> bool:
        """Feed the lines of `section`; False when the file has no such section."""
        current, found = "", False
        rows = text.split("\n")
        self.rows += len(rows)
        if self.rows > MAX_LINES:
            raise TooLarge(disp, None, f"more than {MAX_LINES} lines in the files of one vassal")
        i = 0
        base = os.path.dirname(path)
        while i < len(rows):
            raw, lineno = rows[i].split("\0", 1)[0], i + 1   # a NUL ends a line, as in C
            i += 1
            first = raw.lstrip(" \t\r")[:1]
            if not first or first in ";#":
                continue
            while len(raw) - len(raw.rstrip("%")) & 1 and i < len(rows):
                raw = raw[:-1] + rows[i].split("\0", 1)[0]   # '%' + newline: uWSGI joins the lines
                i += 1
            line = expand.magic(raw, table).strip(" \t\r")
            if line.startswith("["):
                if not line.endswith("]"):
                    self.problem(disp, lineno, "", f'malformed section header "{shown(line)}"')
                    line += "]"   # read on as if it were closed: one problem, not one per line after it
                current = line[1:-1].strip().replace(expand.PCT, "%")
                found = found or current == section
                continue
            if current != section or not line:
                continue
            name, eq, value = line.partition("=")
            name = name.rstrip(" \t\r").replace(expand.PCT, "%")
            key = catalog.normal(name)
            if not eq and not known_key(key):
                hint = ""
                first_word = name.split()[0] if name.split() else ""
                if first_word and first_word != name and known_key(catalog.normal(first_word)):
                    hint = f' (did you mean "{shown(first_word)} = {shown(name[len(first_word):].strip())}"?)'
                self.problem(disp, lineno, "", f'syntax error: "{shown(name)}" is not "option = value"{hint}')
                continue
            if not name:
                self.warn(disp, lineno, "", "line has no option name; ignored")
                continue
            self.feed(key, value.strip(" \t\r"), disp, lineno, base, path, chain, name)
        return found

    # ---- one line ----
    def feed(self, key: str, value: str, file: str, line: int | None, base: str, path: str,
             chain: tuple = (), name: str = "") -> None:
        name = name or key
        if key in logic.CLOSERS:
            if self.blocks:
                b = self.blocks.pop()
                self.items.append(Finding(file, line, name, LOGIC, f"closes {b.describe()} of line {b.line}"))
            else:
                self.warn(file, line, name, f"{name}: no if/for block to close; ignored")
            return
        values = [value]
        rejected: Block | None = None
        for b in reversed(self.blocks):
            values = [out for v in values for out in b.values(v, self.ctx)]
            if not values:
                rejected = b
                break
        why = "" if rejected is None else (f"inside {rejected.describe()}, which was skipped" if rejected.dead
                                           else f"{rejected.describe()} is false" if rejected.key in logic.IFS
                                           else f"{rejected.describe()} has no items")
        if key in logic.OPENERS:
            if key in ("if-opt", "if-not-opt"):   # a name tested here is used as a placeholder
                self.refs.add(catalog.normal(value.partition("=")[0].strip()))
            if len(values) == 1:
                self.open(key, name, values[0], file, line, base)
                return
            if values:
                self.problem(file, line, name, f"{name}: an if/for block cannot be inside a for block")
            else:
                self.items.append(Finding(file, line, name, SKIPPED, why))
            self.blocks.append(Block(key, value, file, line, base, dead=True))
            return
        if not values:
            self.items.append(Finding(file, line, name, SKIPPED, why))
            return
        self.fed += len(values)
        if self.fed > MAX_ENTRIES:
            raise TooLarge(file, line, f"more than {MAX_ENTRIES} options in one vassal (for loops included)")
        for v in values:
            self.apply(key, name, v, file, line, base, path, chain)

    def open(self, key: str, name: str, arg: str, file: str, line: int | None, base: str) -> None:
        b = Block(key, arg, file, line, base)
        if key in logic.IFS:
            ok, current = b.test(self.ctx)
            detail = ("true" if ok else "false") + (f", %(_) = {current}" if ok and current is not None else "")
        else:
            try:
                items = b.items(self.ctx)
            except LogicError as e:
                self.problem(file, line, name, f"{name} = {shown(arg)}: {e}")
                self.blocks.append(Block(key, arg, file, line, base, dead=True))
                return
            detail = f"{len(items)} item{'s' if len(items) != 1 else ''}: {' '.join(items)}"
        self.items.append(Finding(file, line, name, LOGIC, detail))
        self.blocks.append(b)

    def apply(self, key: str, name: str, value: str, file: str, line: int | None, base: str, path: str,
              chain: tuple) -> None:
        if key in INCLUDE_KEYS:
            self.include(Entry(key, name, value, file, line, base), path, chain)
            return
        if key in PLACEHOLDER_KEYS or key in SET_KEYS:
            ph, eq, ph_value = value.partition("=")
            ph_name = ph.strip().replace(expand.PCT, "%")
            if not eq or not ph_name:
                self.problem(file, line, name, f'{name}: expected "name=value", got "{shown(value)}"')
                return
            only = key in PLACEHOLDER_KEYS
            if only and known_key(catalog.normal(ph_name)):
                self.problem(file, line, name, f'{name}: "{shown(ph_name)}" is an option, not a placeholder name')
                return
            e = Entry(catalog.normal(ph_name), ph_name, ph_value.strip(), file, line, base, only)
        else:
            e = Entry(key, name, value, file, line, base)
        self.items.append(e)
        self.entries.append(e)
        self.last[e.key] = e

    def include(self, e: Entry, path: str, chain: tuple) -> None:
        """Included options go in at this point (order matters: last wins); an inherited
        file's go after everything else. Its name may use placeholders defined above it."""
        self.refs |= references(e.value)
        resolver = Resolver(self.last, self.environ, self.trust, self.warn_entry)
        try:
            target = resolver.value(e)
        except ResolveError as exc:
            self.problem(exc.entry.file, exc.entry.line, exc.entry.name, exc.message, exc.category)
            return
        if not target:
            self.problem(e.file, e.line, e.name, f"{e.name}: expected a file name, got nothing")
            return
        if target.startswith(":"):  # another section of the same file
            file, sect, asked = path, target[1:] or "uwsgi", target[1:]
        else:
            file, sect, asked = split_section(os.path.join(e.base, target))
            if e.key != "ini" and file.endswith(OTHER_FORMATS):
                self.problem(e.file, e.line, e.name, f"{e.name}: {shown(target)}: emperor reads only ini "
                             "files (uWSGI would read this one as XML, YAML or JSON)", "unsupported")
                return
        e.value = target
        later = e.key == "inherit"
        detail = ("reads" if not later else "reads after the whole file (as uWSGI does)") + f" {shown(target)}"
        self.items.append(Finding(e.file, e.line, e.name, INCLUDE, detail))
        if later:
            self.inherits.append((e, file, sect, asked, chain))
        else:
            self.read(file, sect, asked, target, chain, e)

    # ---- what the logic blocks look at ----
    def option_so_far(self, key: str) -> str | None:
        e = self.last.get(key)
        return None if e is None else e.value.replace(expand.PCT, "%")

    def read_lines(self, path: str, block: Block) -> list[str]:
        try:
            return logic.readline_items(read_untrusted(path, self.trust))
        except (OSError, Unreadable) as e:
            why = getattr(e, "strerror", None) or str(e)
            self.problem(block.file, block.line, block.key, f'{block.key}: cannot read "{shown(block.arg)}": {why}', "file")
            return []
