"""Expansions of a value: magic variables `%x`, `$(ENV)`, `@(file)`, and `%(name)` with
uWSGI's placeholder arithmetic (`%(%k * 2)`, `%(processes + 1)`).

uWSGI 2.0 (core/uwsgi.c uwsgi_setup, utils.c magic_sub, config.c uwsgi_manage_placeholder):
magic variables are replaced in a file's text as it is read, then `$()`, `@()` and `%()`
are replaced, in that order, in the values of the options. What this module does not
decide (which entry a name refers to, what an error means) its callers pass in.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable

PCT = "\x00"              # stands for a literal '%' (from '%%') until expansion is over
UWSGI_VERSION = "2.0.31"  # what %V says: the uWSGI release whose dialect this is (uwsgi_options.json)
_ATOLL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")


def static_magic(vassals_dir: str) -> dict[str, str]:
    """The magic variables that are the same in every file (uwsgi.c uwsgi_setup)."""
    now = time.time()
    uid, gid = os.getuid(), os.getgid()
    return {"v": vassals_dir, "h": socket.gethostname(), "t": str(int(now)), "T": str(int(now * 1e6)),
            "V": UWSGI_VERSION, "k": str(os.cpu_count() or 1), "[": "\x1b",
            "u": str(uid), "U": _user(uid), "g": str(gid), "G": _group(gid), "b": sys.executable}


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def djb33x(text: str) -> int:
    """uWSGI's hash (core/hash.c), over the bytes as C's signed chars."""
    h = 5381
    for b in text.encode("utf-8", "surrogateescape"):
        h = (((h << 5) + h) ^ (b - 256 if b > 127 else b)) & 0xFFFFFFFF
    return h


def file_magic(path: str, as_given: str, section: str) -> dict[str, str]:
    """The per-file magic variables (uwsgi.c config_magic_table_fill): `path` the file,
    `as_given` its name as the including line (or the emperor) gave it, `section` the
    section asked for after ':' ('' when none was)."""
    p = os.path.abspath(path) if os.path.islink(path) else os.path.realpath(path)
    d = os.path.dirname(p)
    s = os.path.basename(p)
    stem, dot, ext = s.rpartition(".")
    table = {"o": as_given, "p": p, "s": s, "d": d.rstrip("/") + "/", "e": ext if dot else "",
             "n": stem if dot else s, "c": os.path.basename(d), "x": section,
             "j": djb33x(p).to_bytes(4, "little").hex().upper()}   # uWSGI prints the bytes in memory order
    try:
        table["i"] = str(os.lstat(path).st_ino)
    except OSError:
        table["i"] = ""
    parts = [c for c in d.split("/") if c]
    table.update((str(i), parts[i] if i < len(parts) else "") for i in range(10))
    return table


def top_magic(table: dict[str, str]) -> dict[str, str]:
    """%O %P %S ...: the top file's values, seen from every file it includes."""
    return {k.upper(): table[k] for k in "opsdencxij"}


def magic(line: str, table: dict[str, str]) -> str:
    """Replace every `%c` of `line`: a variable, `%%` (a literal %), `%(` (kept for
    placeholders); any other `%c` disappears, both characters, as in uWSGI."""
    if "%" not in line:
        return line
    out = []
    i, n = 0, len(line)
    while i < n:
        j = line.find("%", i)
        if j < 0 or j == n - 1:
            out.append(line[i:])
            break
        out.append(line[i:j])
        c = line[j + 1]
        out.append(PCT if c == "%" else "%(" if c == "(" else table.get(c, ""))
        i = j + 2
    return "".join(out)


MAX_VALUE = 1 << 16   # bytes of one value once expanded: a bound of emperor's (uWSGI has none)


class TooLong(Exception):
    """A value past MAX_VALUE while being expanded (placeholders that double at each step
    would otherwise fill the emperor's memory)."""


def scan(text: str, symbol: str, fn: Callable[[str], str | None]) -> str:
    """Replace each `SYMBOL(key)` of `text` by fn(key); None keeps it as written.

    Parentheses inside the key are counted (`%((%k * 2) + 1)`), and a `SYMBOL(` inside a
    key is replaced first (uWSGI restarts its scan there: utils.c uwsgi_apply_config_pass).
    `SYMBOL()` and an unclosed `SYMBOL(` stay as written.
    """
    opener = symbol + "("
    if opener not in text:
        return text
    out = []
    i, n = 0, len(text)
    size = 0
    while i < n:
        j = text.find(opener, i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        depth, k = 0, j + 1
        while k < n:
            depth += (text[k] == "(") - (text[k] == ")")
            if depth == 0:
                break
            k += 1
        if k >= n:
            out.append(text[j:])
            break
        key = text[j + 2:k]
        if opener in key:
            key = scan(key, symbol, fn)
        got = fn(key) if key else None
        out.append(opener + key + ")" if got is None else got)
        size += len(out[-1]) + j - i
        if size > MAX_VALUE:
            raise TooLong()
        i = k + 1
    return "".join(out)


INT64 = 1 << 63


def strtoll(text: str) -> int:
    """C's strtoll: saturates at the int64 range (so a number's digits stay bounded)."""
    m = _ATOLL.match(text)
    if not m:
        return 0
    digits = m.group(1)
    if len(digits.lstrip("+-")) > 19:
        return INT64 - 1 if not digits.startswith("-") else -INT64
    return max(-INT64, min(INT64 - 1, int(digits)))


def wrap64(n: int) -> int:
    """int64_t arithmetic as uWSGI's placeholder math does it: wraps around."""
    return (n + INT64) % (1 << 64) - INT64


def arithmetic(expr: str, value_of: Callable[[str], str], parentheses: bool = True) -> str | None:
    """uWSGI's placeholder pipeline (config.c uwsgi_manage_placeholder), for a key with a space.

    Tokens are separated by spaces; a number is itself, `+ - * /` apply to the next
    operand only, `++`/`--` add or subtract 1, anything else is the value of that name
    (`value_of`); without an operator, operands are concatenated. No precedence:
    `%(1 + 2 * 3)` is 9. Division truncates and `/ 0` gives 0. Emperor adds parentheses
    (`%((%k * 2) + 1)`), which uWSGI reads as names `(2` and `2)`: emperor's docs say so.
    None when there is no operand at all (uWSGI leaves the text as written then).
    `parentheses=False` reads the expression as uWSGI 2.0 does.
    """
    tokens = re.findall(r"[()]|[^\s()]+" if parentheses else r"\S+", expr)
    value, _ = _pipeline(tokens, 0, value_of)
    return value


def arithmetic_names(expr: str) -> list[str]:
    """The names an arithmetic key refers to (what is neither a number, an operator nor a parenthesis)."""
    return [t for t in re.findall(r"[^\s()]+", expr)
            if t not in ("+", "-", "*", "/", "++", "--") and not (t.isascii() and t.isdigit())]


def _pipeline(tokens: list[str], pos: int, value_of: Callable[[str], str]) -> tuple[str | None, int]:
    current: str | None = None
    op = ""
    while pos < len(tokens):
        t = tokens[pos]
        pos += 1
        if t == ")":
            break
        if t in ("+", "-", "*", "/"):
            op = t
            continue
        if t in ("++", "--"):
            if current is not None:
                current = str(wrap64(strtoll(current) + (1 if t == "++" else -1)))
            op = ""
            continue
        if t == "(":
            inner, pos = _pipeline(tokens, pos, value_of)
            value = inner or ""
        else:
            value = t if t.isascii() and t.isdigit() else value_of(t)
        if not op:
            current = (current or "") + value
        else:
            a, b = strtoll(current or ""), strtoll(value)
            if op == "+":
                current = str(wrap64(a + b))
            elif op == "-":
                current = str(wrap64(a - b))
            elif op == "*":
                current = str(wrap64(a * b))
            else:
                current = str(0 if b == 0 else wrap64((abs(a) // abs(b)) * (1 if (a < 0) == (b < 0) else -1)))
        op = ""
    return current, pos


def strip_one_newline(content: str) -> str:
    """`@(file)` drops exactly one trailing \\n or \\r (uwsgi.c uwsgi_at_file_read)."""
    return content[:-1] if content[-1:] in ("\n", "\r") else content
