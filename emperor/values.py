"""Option values as uWSGI reads them: text in, a typed value out, ValueError(message) if bad.

uWSGI reads integers with `atoi` (the leading digits: `4 ; max workers` is 4) and
booleans as "anything but false/off/no/0"; real files rely on both.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from emperor import routes

_INT_RE = re.compile(r"\s*([+-]?[0-9]+)")
_FALSE = {"false", "off", "no", "0"}


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


def _megabytes(text: str) -> int:
    """uWSGI's megabyte options ('256', '1.5'): a number of bytes."""
    m = re.match(r"\s*([0-9]+(?:\.[0-9]*)?)", text)
    if not m:
        raise ValueError(f'expected a number of megabytes, got "{text}"')
    return int(float(m.group(1)) * 1024 * 1024)


def _choice(*names: str) -> Callable[[str], str]:
    def conv(text: str) -> str:
        word = text.split()[0] if text.split() else ""
        if word not in names:
            raise ValueError(f'expected one of {", ".join(names)}, got "{text}"')
        return word
    return conv


def _chmod(text: str) -> str:
    """A bare 'chmod-socket' means 666, as in uWSGI."""
    if not text:
        return "666"
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise ValueError(f'expected an octal mode such as 660, got "{text}"')
    return text


def _octal(text: str) -> str:
    """A mode or mask in octal ('022', '0o022')."""
    word = text.split()[0] if text.split() else ""
    word = word[2:] if word.lower().startswith("0o") else word
    if not word or word.strip("01234567"):
        raise ValueError(f'expected an octal value such as 022, got "{text}"')
    return word


def _exec_hook(text: str) -> str:
    """`exec-<phase> = command`: the same as `hook-<phase> = exec:command`."""
    return "exec:" + text


def _spaced(text: str) -> str:
    """`procname-prefix-spaced`: the prefix and a space."""
    return text + " "


def _logger(text: str) -> str:
    """`logger`/`req-logger`: emperor writes to a file (`file:PATH`) or the process's own log
    (`stdio`); another kind is kept as written, and config.load_config warns that it is ignored."""
    return text.strip()


def _route(option: str) -> Callable[[str], tuple[str, str]]:
    """A routing option: (option, rule) in Config.routes, so the chains keep the file's order;
    a malformed rule is an error at its line, as uWSGI exits on it (emperor/routes.py)."""
    def conv(text: str) -> tuple[str, str]:
        routes.parse(option, text)
        return option, text
    return conv


def _header(text: str) -> str:
    """`add-header = Name: value`, as it goes on the wire."""
    name, colon, _ = text.partition(":")
    if not colon or not name or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        raise ValueError(f'expected "Name: value", got "{text}"')
    return text


def _mount(text: str) -> str:
    """`mount = /mountpoint=app`: app is module[:callable] or a .py/.wsgi file."""
    point, eq, app = text.partition("=")
    if not eq or not app.strip() or (point and not point.startswith("/")):
        raise ValueError(f'expected "/mountpoint=module[:callable]" or "/mountpoint=file.py", got "{text}"')
    return text


def _keepalive(text: str) -> int:
    """`http-keepalive`: bare or true is on (1), false or 0 off, N > 1 an idle timeout of N s."""
    word = re.split(r"[\s;#]", text.strip(), maxsplit=1)[0] if text.strip() else ""
    if not word or word.lower() in ("true", "on", "yes"):
        return 1
    if word.lower() in _FALSE:
        return 0
    return _int()(word)
