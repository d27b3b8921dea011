#!/usr/bin/env python3
"""Generate emperor/config/uwsgi_options.json: every option uWSGI knows, from its C sources.

    python3 scripts/gen_uwsgi_options.py UWSGI_CHECKOUT [--version 2.0.31] [--commit SHA] [-o FILE]

UWSGI_CHECKOUT is a checkout (or unpacked sdist) of https://github.com/unbit/uwsgi;
standard library only. What it reads:

- `core/uwsgi.c`: the `uwsgi_base_options[]` table;
- `buildconf/default.ini` (and what it inherits): the plugins embedded in the
  default build, the one `pip install uwsgi` compiles; for each, its
  `struct uwsgi_plugin` and the option table it names;
- every other plugin directory: options that exist only when that plugin is
  built and loaded (`plugin` column set, `in_build` false).

Options are listed in `uwsgi --help` order (the base table, request plugins by
modifier1, then generic plugins in embedding order). `#if` conditions around an
entry are kept as text (`cond`) and evaluated against the defines of a Linux
build whose optional libraries are those the PyPI wheel of 2.0.31 found (OpenSSL,
libxml2, yaml, zlib; no PCRE, so no internal routing): `in_build`. Options whose
condition is false there are still uWSGI options (another build has them).

Alias groups: options with the same parser function and the same target are one
setting under several names (`processes`/`workers`); `alias_of` names the first of
the group, and `exact` says whether the names are interchangeable (same argument
kind and flags, and a parser that does not look at the name it was called with).

This is a reader for these tables, not a C parser.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

# The PyPI build of uWSGI 2.0.31 on Linux/glibc with Python 3 (its `uwsgi --cflags`).
BUILD_DEFINES = {
    "__linux__": "1", "__GLIBC__": "1", "PYTHREE": "1", "PY_MAJOR_VERSION": "3", "MADV_MERGEABLE": "1",
    "RTLD_NEXT": "1", "UWSGI_HAS_IFADDRS": "1", "UWSGI_EVENT_USE_EPOLL": "1",
    "UWSGI_EVENT_TIMER_USE_TIMERFD": "1", "UWSGI_EVENT_FILEMONITOR_USE_INOTIFY": "1",
    "UWSGI_LOCK_USE_MUTEX": "1", "UWSGI_SSL": "1", "SSL_CTRL_SET_TLSEXT_HOSTNAME": "1",
    "UWSGI_UUID": "1", "UWSGI_XML": "1", "UWSGI_XML_LIBXML2": "1", "UWSGI_YAML": "1", "UWSGI_ZLIB": "1",
}
COLUMNS = ["name", "plugin", "argument", "flags", "alias_of", "exact", "in_build", "cond", "help"]
ARGUMENT = {"required_argument": "required", "no_argument": "none", "optional_argument": "optional"}

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:\\.|[^"\\\n])*") | (?P<chr>'(?:\\.|[^'\\\n])+')
  | (?P<ident>[A-Za-z_]\w*) | (?P<num>0[xX][0-9a-fA-F]+\w*|\d+(?:\.\d+)?\w*)
  | (?P<punct>->|\|\||&&|<<|>>|[{}()\[\],;=&|*+\-/<>!~?:.%^])
""", re.S | re.X)


def tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, line) of a C file; a preprocessor line is one ('pp', directive, line)."""
    out, pos, line, bol = [], 0, 1, True
    while pos < len(text):
        if bol:
            m = re.compile(r"[ \t]*#").match(text, pos)
            if m:
                end, start, parts = pos, line, []
                while True:  # a directive with its backslash continuations
                    e = text.find("\n", end)
                    e = len(text) if e < 0 else e
                    seg = text[end:e]
                    if not seg.endswith("\\"):
                        parts.append(seg)
                        break
                    parts.append(seg[:-1])
                    end, line = e + 1, line + 1
                directive = re.sub(r"/\*.*?\*/|//.*$", " ", " ".join(parts)).strip()
                out.append(("pp", directive, start))
                pos = e
                continue
        m = _TOKEN.match(text, pos)
        if not m:
            pos, bol = pos + 1, False
            continue
        kind, value = m.lastgroup or "", m.group()
        if kind == "nl":
            line, bol = line + 1, True
        elif kind == "comment":
            line += value.count("\n")
        elif kind != "space":
            out.append((kind, value, line))
            bol = False
        pos = m.end()
    return out


def c_string(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r'\\(x[0-9a-fA-F]+|[0-7]{1,3}|.)', lambda m: _escape(m.group(1)), body)


def _escape(e: str) -> str:
    if e[0] == "x":
        return chr(int(e[1:], 16))
    if e[0] in "01234567":
        return chr(int(e, 8))
    return {"n": "\n", "t": "\t", "r": "\r"}.get(e, e)


class Conditions:
    """The stack of #if blocks around the current line, as text and as a truth value."""

    def __init__(self, defines: dict[str, str]) -> None:
        self.defines = defines
        self.frames: list[dict] = []

    def evaluate(self, expr: str) -> bool:
        e = re.sub(r"defined\s*\(?\s*(\w+)\s*\)?", lambda m: "1" if m.group(1) in self.defines else "0", expr)
        e = re.sub(r"\b[A-Za-z_]\w*\s*\([^()]*\)", "0", e)   # function-like macros: unknown
        e = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: self._number(m.group()), e)
        e = re.sub(r"(\d+)[uUlL]+", r"\1", e.replace("||", " or ").replace("&&", " and "))
        e = re.sub(r"!(?!=)", " not ", e)
        try:
            return bool(eval(e, {"__builtins__": {}}, {}))  # noqa: S307 - digits and operators only
        except Exception:
            print(f"cannot evaluate #if {expr}: taken as false", file=sys.stderr)
            return False

    def _number(self, name: str) -> str:
        try:
            return str(int(self.defines.get(name, "0").strip('"'), 0))
        except ValueError:
            return "1"

    def directive(self, text: str) -> None:
        m = re.match(r"#\s*(\w+)\s*(.*)$", text)
        if not m:
            return
        word, rest = m.group(1), m.group(2).strip()
        if word in ("if", "ifdef", "ifndef"):
            cond = {"ifdef": f"defined({rest})", "ifndef": f"!defined({rest})"}.get(word, rest)
            value = self.evaluate(cond)
            self.frames.append({"before": [], "cond": cond, "taken": value, "active": value})
        elif word in ("elif", "else") and self.frames:
            f = self.frames[-1]
            f["before"].append(f["cond"])
            f["cond"] = rest if word == "elif" else None
            f["active"] = not f["taken"] and (word == "else" or self.evaluate(rest))
            f["taken"] = f["taken"] or f["active"]
        elif word == "endif" and self.frames:
            self.frames.pop()

    def active(self) -> bool:
        return all(f["active"] for f in self.frames)

    def text(self) -> str | None:
        parts = []
        for f in self.frames:
            parts += [f"!({c})" for c in f["before"]]
            if f["cond"] is not None:
                parts.append(f"({f['cond']})" if ("||" in f["cond"] or "&&" in f["cond"]) else f["cond"])
        return " && ".join(parts) or None


def _top_level_split(toks: list) -> list[list]:
    parts: list[list] = [[]]
    depth = 0
    for t in toks:
        if t[1] in "([{":
            depth += 1
        elif t[1] in ")]}":
            depth -= 1
        if depth == 0 and t[1] == ",":
            parts.append([])
        else:
            parts[-1].append(t)
    return [p for p in parts if p]


def _text(toks: list) -> str:
    out, prev = "", ""
    for kind, value, _ in toks:
        if prev in ("ident", "num") and kind in ("ident", "num"):
            out += " "
        out += value
        prev = kind
    return out


def _braced(toks: list, i: int) -> tuple[list, int]:
    """The tokens inside the braces opening at toks[i] (preprocessor lines dropped), and the index after."""
    depth, body, j = 1, [], i + 1
    while depth:
        kind, value, _ = toks[j]
        if kind != "pp":
            depth += (value == "{") - (value == "}")
            if depth:
                body.append(toks[j])
        j += 1
    return body, j


def parse_c(text: str, defines: dict[str, str]) -> tuple[dict, list]:
    """Option tables {name: [(fields, cond, active, line)]} and plugin structs of one C file."""
    toks = tokens(text)
    conds = Conditions(defines)
    tables: dict[str, list] = {}
    plugins: list[dict] = []
    i = 0
    while i < len(toks):
        kind, value, line = toks[i]
        words = [t[1] for t in toks[i:i + 6]]
        if kind == "pp":
            conds.directive(value)
        elif words[:2] == ["struct", "uwsgi_option"] and words[3:6] == ["[", "]", "="]:
            entries, j = [], i + 7
            while toks[j][1] != "}":
                if toks[j][0] == "pp":
                    conds.directive(toks[j][1])
                elif toks[j][1] == "{":
                    body, end = _braced(toks, j)
                    entries.append((_top_level_split(body), conds.text(), conds.active(), toks[j][2]))
                    j = end
                    continue
                j += 1
            tables[words[2]] = entries
            i = j
        elif words[:2] == ["struct", "uwsgi_plugin"] and words[3:5] == ["=", "{"]:
            body, j = _braced(toks, i + 4)
            fields = {p[1][1]: _text(p[3:]) for p in _top_level_split(body)
                      if len(p) >= 3 and p[0][1] == "." and p[2][1] == "="}
            plugins.append({"var": words[2], "fields": fields, "active": conds.active(), "line": line})
            i = j
            continue
        i += 1
    return tables, plugins


def option(fields: list, cond: str | None, active: bool, plugin: str | None, where: str) -> dict | None:
    fields = fields + [[("num", "0", 0)]] * (7 - len(fields))  # omitted trailing members are 0
    name_t, arg_t, _short, help_t, parser_t, data_t, flags_t = fields[:7]
    strings = [t for t in name_t if t[0] == "str"]
    if not strings:
        return None  # the terminating {0, ...}
    if len(fields) != 7:
        raise SystemExit(f"{where}: an option entry with {len(fields)} fields")
    flags = _text(flags_t)
    return {
        "name": "".join(c_string(t[1]) for t in strings),
        "plugin": plugin,
        "argument": ARGUMENT.get(_text(arg_t), _text(arg_t)),
        "flags": "" if flags in ("0", "") else "|".join(f.strip().replace("UWSGI_OPT_", "") for f in flags.split("|")),
        "parser": _text(parser_t),
        "target": "NULL" if _text(data_t) == "0" else _text(data_t),
        "in_build": active,
        "cond": cond,
        "help": "".join(c_string(t[1]) for t in help_t if t[0] == "str"),
    }


class Checkout:
    def __init__(self, root: str) -> None:
        self.root = root

    def read(self, path: str) -> str | None:
        try:
            with open(os.path.join(self.root, path), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(os.path.join(self.root, path)))

    def embedded_plugins(self, profile: str) -> list[str]:
        conf: dict[str, str] = {}
        while profile:
            text = self.read(profile)
            if text is None:
                raise SystemExit(f"{self.root}: no {profile}")
            own = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[:1] not in ";#[")
            own = {k.strip(): v.strip() for k, v in own.items()}
            conf = {**own, **conf}
            profile = f"buildconf/{own['inherit']}.ini" if "inherit" in own else ""
        listed = conf.get("embedded_plugins", "").replace("%(main_plugin)s", conf.get("main_plugin", ""))
        out: list[str] = []
        for item in listed.split(","):
            name = item.split("=")[0].strip()
            if name and name not in out:
                out.append(name)
        return out

    def plugin_options(self, name: str, defines: dict[str, str],
                       every_table: bool = False) -> tuple[dict | None, list[dict]]:
        """A plugin's struct (its fields) and options: the table its struct names (every table
        of its files when it has no struct, or with `every_table` when the struct names none)."""
        tables: dict[str, tuple[str, list]] = {}
        structs: list[dict] = []
        for f in self.listdir(f"plugins/{name}"):
            if not f.endswith((".c", ".cc", ".cpp", ".m")):
                continue
            text = self.read(f"plugins/{name}/{f}") or ""
            if "uwsgi_option" in text or "uwsgi_plugin" in text:
                t, s = parse_c(text, defines)
                tables.update({k: (f, v) for k, v in t.items()})
                structs += s
        ours = [s for s in structs if s["var"] == f"{name}_plugin"] or structs
        struct = next((s for s in ours if s["active"]), ours[0] if ours else None)
        if struct is not None and "options" in struct["fields"]:
            names = [struct["fields"]["options"]]
        else:
            names = list(tables) if struct is None or every_table else []
        opts = []
        for tname in names:
            if tname not in tables:
                continue
            path, entries = tables[tname]
            for fields, cond, active, line in entries:
                o = option(fields, cond, active and (struct is None or struct["active"]), name, f"plugins/{name}/{path}:{line}")
                if o:
                    opts.append(o)
        return struct, opts


def name_dependent_parsers(src: Checkout, dirs: list[str]) -> set[str]:
    """Parser functions whose body compares the option name it was called with (not an alias then)."""
    out = set()
    head = re.compile(r"\n(?:static\s+)?void\s+(\w+)\s*\(\s*char\s*\*\s*(\w+)\s*,\s*char\s*\*\s*\w+\s*,\s*void\s*\*\s*\w+\s*\)\s*\{")
    for d in dirs:
        for f in src.listdir(d):
            text = src.read(f"{d}/{f}") if f.endswith(".c") else None
            for m in head.finditer(text or ""):
                i, depth = m.end(), 1
                while depth and i < len(text or ""):
                    depth += (text[i] == "{") - (text[i] == "}")  # type: ignore[index]
                    i += 1
                body = (text or "")[m.end():i]
                arg = re.escape(m.group(2))
                if re.search(rf"(strcmp|strncmp|strchr|starts_with|uwsgi_startswith)\s*\(\s*(\"[^\"]*\"\s*,\s*)?{arg}\b", body):
                    out.add(m.group(1))
    return out


def generate(root: str, version: str, commit: str | None, ref: str | None, note: str | None = None) -> dict:
    src = Checkout(root)
    embedded = src.embedded_plugins("buildconf/default.ini")
    core_text = src.read("core/uwsgi.c")
    if core_text is None:
        raise SystemExit(f"{root}: not a uWSGI checkout (no core/uwsgi.c)")
    tables, _ = parse_c(core_text, BUILD_DEFINES)
    core = [o for f, c, a, line in tables["uwsgi_base_options"]
            if (o := option(f, c, a, None, f"core/uwsgi.c:{line}"))]
    request: dict[int, list[dict]] = {}
    generic: list[dict] = []
    for name in embedded:
        struct, opts = src.plugin_options(name, BUILD_DEFINES)
        if struct is not None and "request" in struct["fields"]:
            try:
                modifier = int(struct["fields"].get("modifier1", "0"), 0)
            except ValueError:
                modifier = 0
            request[modifier] = opts   # uwsgi.p[modifier1]: a later plugin replaces an earlier one
        else:
            generic += opts
    ordered = core + [o for m in sorted(request) for o in request[m]] + generic
    others = []
    for name in src.listdir("plugins"):
        if name not in embedded and os.path.isdir(os.path.join(root, "plugins", name)):
            for o in src.plugin_options(name, BUILD_DEFINES, every_table=True)[1]:
                o["in_build"] = False
                others.append(o)

    groups: dict[tuple[str, str], list[dict]] = {}
    for o in ordered:
        groups.setdefault((o["parser"], o["target"]), []).append(o)
    by_name = name_dependent_parsers(src, ["core"] + [f"plugins/{p}" for p in embedded])
    for (parser, _), members in groups.items():
        exact = (parser not in by_name and parser != "uwsgi_opt_noop"
                 and len({(m["argument"], m["flags"]) for m in members}) == 1)
        for m in members:
            m["alias_of"] = members[0]["name"] if len({x["name"] for x in members}) > 1 else None
            m["exact"] = exact if m["alias_of"] else None
    first: dict[str, dict] = {}
    for o in ordered + others:  # uwsgi_opt_get() takes the first option of a name the build has
        if o["name"] not in first or (o["in_build"] and not first[o["name"]]["in_build"]):
            first[o["name"]] = o
    rows = []
    for o in ordered + others:
        if first[o["name"]] is o:
            o.setdefault("alias_of", None)
            o.setdefault("exact", None)
            rows.append([o[c] for c in COLUMNS])
    return {
        "uwsgi": {"version": version, "repository": "https://github.com/unbit/uwsgi", "ref": ref,
                  "commit": commit, "profile": "buildconf/default.ini", "embedded_plugins": embedded,
                  "build_defines": sorted(BUILD_DEFINES), **({"note": note} if note else {})},
        "generated_by": "scripts/gen_uwsgi_options.py (emperor); see its docstring for what each column means",
        "columns": COLUMNS,
        "options": rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", help="a uWSGI source tree (git checkout or unpacked sdist)")
    ap.add_argument("--version", default="2.0.31", help="the uWSGI release these tables are (default 2.0.31)")
    ap.add_argument("--commit", help="the commit of the checkout (default: git rev-parse HEAD in it)")
    ap.add_argument("--ref", help="the branch or tag it was taken from")
    ap.add_argument("--note", help="a remark kept with the source (how the checkout relates to the release)")
    ap.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "..", "emperor",
                                                           "config", "uwsgi_options.json"))
    a = ap.parse_args()
    commit = a.commit
    if commit is None and os.path.exists(os.path.join(a.checkout, ".git")):
        commit = subprocess.run(["git", "-C", a.checkout, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or None
    data = generate(a.checkout, a.version, commit, a.ref, a.note)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write("{\n")
        head = {k: v for k, v in data.items() if k != "options"}
        for k, v in head.items():
            f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
        f.write(' "options": [\n')
        f.write(",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in data["options"]))
        f.write("\n ]\n}\n")
    built = sum(1 for r in data["options"] if r[COLUMNS.index("in_build")])
    print(f"{a.output}: {len(data['options'])} options, {built} in the default build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
