"""Values as uWSGI 2.0 parses them: text -> value, ValueError(message) when emperor refuses it.

uWSGI never strips an inline comment: `processes = 4 ; max` hands "4 ; max" to the
option's parser, and the parser decides (atoi stops at the first non-digit, a socket
address takes its port after the last ':'...). Each converter here reproduces its
parser's reading; where uWSGI's reading is absurd or hostile, emperor's is documented
(docs/configuration.md) and the difference is noted for `emperor check`.

A converter is called as `conv(text, notes)`; it may append to `notes`
("warning", text) for what a user must hear at load, or ("note", text) for what
`emperor check` shows (mostly: where uWSGI 2.0 reads the same text differently).
"""
from __future__ import annotations

import re
from collections.abc import Callable

Notes = list[tuple[str, str]]  # (kind, text): kind is "warning" or "note"
Converter = Callable[[str, Notes], object]

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_WORDS = {"true", "false", "yes", "no", "on", "off"}     # what people write where a number goes
_FALSE = {"false", "off", "no", "0"}
_COMMENT = re.compile(r"[ \t]+[;#].*\Z", re.S)          # an inline comment after a value


def atoi(text: str, notes: Notes, lo: int = 0, hi: int | None = None) -> int:
    """uWSGI's atoi: the leading number ('4 ; max workers' -> 4); a boolean word is 0.

    Emperor refuses text with no number at all ('four', '', an unexpanded '$(X)'),
    which uWSGI silently reads as 0 (uwsgi.c uwsgi_opt_set_int).
    """
    m = _ATOI.match(text)
    if m:
        n = int(m.group(1))
    elif text.strip().lower() in _WORDS:
        n = 0
        notes.append(("note", f'"{text.strip()}" is not a number: read as 0, as uWSGI\'s atoi does'))
    else:
        raise ValueError(f'expected an integer, got "{text}"')
    if n < lo or (hi is not None and n > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"must be {bounds}, got {n}")
    return n


def integer(lo: int = 0, hi: int | None = None) -> Converter:
    def conv(text: str, notes: Notes) -> int:
        return atoi(text, notes, lo, hi)
    return conv


def processes(text: str, notes: Notes) -> int:
    n = atoi(text, notes)
    if n == 0:
        notes.append(("warning", "0 is uWSGI's no-workers mode: the sockets are bound but no worker "
                                 "accepts, so no request is answered"))
    return n


def threads(text: str, notes: Notes) -> int:
    """0 (or `threads = true`, atoi 0) is one thread: uWSGI uses `threads` only when > 1 (init.c)."""
    n = atoi(text, notes)
    if n == 0:
        notes.append(("note", "0 threads means one thread per worker, as in uWSGI"))
        return 1
    return n


def buffer_size(text: str, notes: Notes) -> int:
    """uWSGI stores it in 16 bits and clamps to 65535 (uwsgi_opt_set_16bit); emperor also
    refuses less than 512, with which no real request head fits."""
    m = _ATOI.match(text)
    if m and int(m.group(1)) > 65535:
        notes.append(("warning", f"{int(m.group(1))} is more than 65535: clamped to 65535, as uWSGI does"))
        return 65535
    return atoi(text, notes, 512, 65535)


def boolean(text: str, notes: Notes) -> bool:
    """The first word decides, so 'vacuum = false ; clean up' is false.

    uWSGI compares the whole text (uwsgi_opt_true): there that line is true, since only
    exactly false/off/no/0 are false.
    """
    word = re.split(r"[\s;#]", text, maxsplit=1)[0]
    value = word.lower() not in _FALSE
    if value != (text.lower() not in _FALSE):
        notes.append(("note", f'uWSGI 2.0 reads "{text}" as {"false" if value else "true"} '
                              "(it compares the whole text, inline comment included)"))
    return value


def string(text: str, notes: Notes) -> str:
    return text


def nonempty(text: str, notes: Notes) -> str:
    if not text:
        raise ValueError("expected a value, got nothing")
    return text


def address(text: str, notes: Notes) -> str:
    """'host:port', ':port', '[v6]:port', or a UNIX path (has '/' or no ':'), as uWSGI reads it.

    An inline comment after it is dropped: uWSGI keeps it in the name but reads the port
    with atoi after the last ':', so '127.0.0.1:8000 ; plain HTTP' binds 127.0.0.1:8000
    there too. Where uWSGI's reading of the comment is absurd (a ':' inside it moves the
    port, a UNIX path gets the comment in its file name), the difference is noted.
    """
    if not text.strip():
        raise ValueError("expected an address, got nothing")
    bare = _COMMENT.sub("", text).strip()
    if bare != text.strip():
        unix = "/" in bare or ":" not in bare
        if unix:
            notes.append(("note", f'uWSGI 2.0 would name the socket "{text}", comment included'))
        elif ":" in text[len(bare):]:
            notes.append(("note", "uWSGI 2.0 takes the port after the last ':', here inside the comment"))
    text = bare
    if "/" in text or ":" not in text:
        return text
    m = re.fullmatch(r"\[([^\]]+)\]:(.*)", text)
    host, port = (m.group(1), m.group(2)) if m else text.rsplit(":", 1)
    if not m and ":" in host:
        raise ValueError(f'IPv6 address needs brackets: "{text}"')
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f'bad port "{port}" in "{text}" (expected 0-65535)')
    return text


def chmod(text: str, notes: Notes) -> str:
    """Three octal digits, or `1` for 666 (uwsgi.c uwsgi_opt_chmod_socket).

    Emperor also takes a bare `chmod-socket` as 666 (the command-line flag's meaning;
    uWSGI refuses an empty value from a file), a fourth leading digit, and an inline
    comment after the mode (uWSGI refuses both).
    """
    bare = _COMMENT.sub("", text).strip()
    if bare in ("", "1"):
        if bare == "":
            notes.append(("note", "uWSGI 2.0 refuses an empty chmod-socket in a file; emperor reads 666"))
        return "666"
    if not re.fullmatch(r"[0-7]{3,4}", bare):
        raise ValueError(f'expected an octal mode such as 660, got "{text}"')
    if bare != text or len(bare) == 4:
        notes.append(("note", f'uWSGI 2.0 refuses "{text}" (it wants exactly three octal digits)'))
    return bare


def megabytes(text: str, notes: Notes) -> int:
    """uWSGI's megabyte options (reload-on-rss = 256, limit-as = 1.5): a number of bytes."""
    m = re.match(r"\s*([0-9]+(?:\.[0-9]*)?)", text)
    if not m:
        raise ValueError(f'expected a number of megabytes, got "{text}"')
    return int(float(m.group(1)) * 1024 * 1024)


def choice(*names: str) -> Converter:
    def conv(text: str, notes: Notes) -> str:
        word = text.split()[0] if text.split() else ""
        if word not in names:
            raise ValueError(f'expected one of {", ".join(names)}, got "{text}"')
        return word
    return conv


def octal(text: str, notes: Notes) -> str:
    """A mode or mask in octal ('022', '0o022')."""
    word = text.split()[0] if text.split() else ""
    word = word[2:] if word.lower().startswith("0o") else word
    if not word or word.strip("01234567"):
        raise ValueError(f'expected an octal value such as 022, got "{text}"')
    return word


def exec_hook(text: str, notes: Notes) -> str:
    """`exec-<phase> = command`: the same as `hook-<phase> = exec:command`."""
    return "exec:" + text


def spaced(text: str, notes: Notes) -> str:
    """`procname-prefix-spaced`: the prefix and a space."""
    return text + " "
