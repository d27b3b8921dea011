"""Option values as uWSGI 2.0's parsers read them: text in, a typed value out, ValueError(message)
if emperor refuses it.

uWSGI never strips an inline comment: `processes = 4 ; max` hands "4 ; max" to the option's
parser, which decides (atoi stops at the first non-digit, a socket address takes its port
after the last ':'...). Each converter reproduces its parser's reading; where uWSGI's is
absurd or hostile, emperor's is documented (docs/configuration.md). A converter that has
something to say about a value returns it wrapped in `Noted`: ("warning", text) for what the
log must show, ("note", text) for what `emperor check` shows (mostly: where uWSGI 2.0 reads
the same text otherwise).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from emperor import routes

_INT_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_FALSE = {"false", "off", "no", "0"}
_WORDS = {"true", "false", "yes", "no", "on", "off"}     # what people write where a number goes
_COMMENT = re.compile(r"[ \t]+[;#].*\Z", re.S)          # an inline comment after a value


class Noted:
    """A converted value and what to say about it: [("warning" | "note", text)]."""

    __slots__ = ("value", "notes")

    def __init__(self, value: object, notes: list[tuple[str, str]]) -> None:
        self.value, self.notes = value, notes


def _atoi(text: str, lo: int = 0, hi: int | None = None) -> tuple[int, list[tuple[str, str]]]:
    """uWSGI's atoi (uwsgi.c uwsgi_opt_set_int): the leading number ('4 ; max workers' -> 4);
    a boolean word is 0. Text with no number at all ('four', '', an unexpanded '$(X)') is
    refused, which uWSGI silently reads as 0."""
    notes = []
    m = _INT_RE.match(text)
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
    return n, notes


def _noted(value: object, notes: list[tuple[str, str]]) -> object:
    return Noted(value, notes) if notes else value


def _int(lo: int = 0, hi: int | None = None) -> Callable[[str], object]:
    """Like uWSGI's atoi, leading digits are the number ('4 ; max workers' -> 4)."""
    def conv(text: str) -> object:
        return _noted(*_atoi(text, lo, hi))
    return conv


def _processes(text: str) -> object:
    """0 is uWSGI's no-workers mode (uwsgi.c: the sockets are bound, nobody accepts)."""
    n, notes = _atoi(text)
    if n == 0:
        notes.append(("warning", "0 is uWSGI's no-workers mode: the sockets are bound but no worker "
                                 "accepts, so no request is answered"))
    return _noted(n, notes)


def _threads(text: str) -> object:
    """0 (or `threads = true`, atoi 0) is one thread: uWSGI uses `threads` only when > 1 (init.c)."""
    n, notes = _atoi(text)
    if n == 0:
        return Noted(1, notes + [("note", "0 threads means one thread per worker, as in uWSGI")])
    return _noted(n, notes)


def _buffer_size(text: str) -> object:
    """uWSGI stores it in 16 bits and clamps to 65535 (uwsgi_opt_set_16bit); emperor also
    refuses less than 512, with which no real request head fits."""
    m = _INT_RE.match(text)
    if m and int(m.group(1)) > 65535:
        return Noted(65535, [("warning", f"{int(m.group(1))} is more than 65535: clamped to 65535, as uWSGI does")])
    return _noted(*_atoi(text, 512, 65535))


def _bool(text: str) -> object:
    """The first word decides, so 'vacuum = false ; clean up' is false. uWSGI compares the whole
    text (uwsgi_opt_true): there that line is true, since only exactly false/off/no/0 are false."""
    value = _truth(text)
    if value != (text.lower() not in _FALSE):
        return Noted(value, [("note", f'uWSGI 2.0 reads "{text}" as {"false" if value else "true"} '
                                      "(it compares the whole text, inline comment included)")])
    return value


def _truth(text: str) -> bool:
    """A flag's value, the first word deciding (what _bool converts, without notes)."""
    word = re.split(r"[\s;#]", text, maxsplit=1)[0]
    return word.lower() not in _FALSE


def _log_date(text: str) -> str | None:
    """log-date / log-prefix: a strftime format; alone, or true, emperor's own dated stamp
    (uWSGI core/uwsgi.c uwsgi_opt_log_date). false means the same: emperor's lines are always dated."""
    value = text.strip()
    return None if value.lower() in ("", "true", "1", "on", "yes", "false", "0", "off", "no") else value


def _str(text: str) -> str:
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("expected a value, got nothing")
    return text


def _address(text: str) -> object:
    """'host:port', ':port', '[v6]:port', or a UNIX path (has '/' or no ':'), as uWSGI reads it.

    An inline comment after it is dropped: uWSGI keeps it in the name but reads the port
    with atoi after the last ':', so '127.0.0.1:8000 ; plain HTTP' binds 127.0.0.1:8000
    there too. Where uWSGI's reading of the comment is absurd (a ':' inside it moves the
    port, a UNIX path gets the comment in its file name), the difference is noted.
    """
    if not text.strip():
        raise ValueError("expected an address, got nothing")
    notes = []
    bare = _COMMENT.sub("", text).strip()
    if bare != text.strip():
        if "/" in bare or ":" not in bare:
            notes.append(("note", f'uWSGI 2.0 would name the socket "{text}", comment included'))
        elif ":" in text[len(bare):]:
            notes.append(("note", "uWSGI 2.0 takes the port after the last ':', here inside the comment"))
    return _noted(_host_port(bare), notes)


def _host_port(text: str) -> str:
    if "/" in text or ":" not in text:
        return text
    m = re.fullmatch(r"\[([^\]]+)\]:(.*)", text)
    host, port = (m.group(1), m.group(2)) if m else text.rsplit(":", 1)
    if not m and ":" in host:
        raise ValueError(f'IPv6 address needs brackets: "{text}"')
    if not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f'bad port "{port}" in "{text}" (expected 0-65535)')
    return text


def _tls_spec(text: str) -> str:
    """https-socket and sni: NAME,CERT,KEY[,CIPHERS[,CLIENT_CA]] (uwsgi.c uwsgi_opt_add_ssl_socket);
    for https-socket NAME is an address. The files are read when the master starts."""
    from emperor.tls import split_spec

    name = split_spec(text)[0]
    if ":" in name and "/" not in name:
        _host_port(name)
    return text.strip()


def _cidrs(text: str) -> list[str]:
    """Networks, comma- or space-separated: 10.0.0.0/8, 192.0.2.7, ::1, unix."""
    import ipaddress

    out = []
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        if item != "unix":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f'expected networks such as 10.0.0.0/8 or unix, got "{item}"') from None
        out.append(item)
    return out


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


def _chmod(text: str) -> object:
    """Three octal digits, or `1` for 666 (uwsgi.c uwsgi_opt_chmod_socket).

    Emperor also takes a bare `chmod-socket` as 666 (the command-line flag's meaning;
    uWSGI refuses an empty value from a file), a fourth leading digit, and an inline
    comment after the mode (uWSGI refuses both).
    """
    bare = _COMMENT.sub("", text).strip()
    if bare in ("", "1"):
        return _noted("666", [("note", "uWSGI 2.0 refuses an empty chmod-socket in a file; emperor reads 666")]
                      if bare == "" else [])
    if not re.fullmatch(r"[0-7]{3,4}", bare):
        raise ValueError(f'expected an octal mode such as 660, got "{text}"')
    if bare != text or len(bare) == 4:
        return Noted(bare, [("note", f'uWSGI 2.0 refuses "{text}" (it wants exactly three octal digits)')])
    return bare


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


def _static_map(text: str) -> str:
    """`static-map`/`static-map2 = MOUNTPOINT=PATH` (uWSGI's uwsgi_opt_static_map)."""
    mount, eq, path = text.partition("=")
    if not eq or not mount.strip() or not path.strip():
        raise ValueError(f'expected "mountpoint=path", got "{text}"')
    if not mount.strip().startswith("/"):
        raise ValueError(f'the mountpoint must start with "/", got "{mount.strip()}"')
    return f"{mount.strip()}={path.strip()}"


def _expires_type(text: str) -> str:
    """`static-expires-type(-mtime) = MIME/TYPE=SECONDS` (uWSGI's uwsgi_opt_add_dyn_dict)."""
    mime, eq, secs = text.partition("=")
    if not eq or not mime.strip():
        raise ValueError(f'expected "mime/type=seconds", got "{text}"')
    _int()(secs)
    return f"{mime.strip()}={secs.strip()}"


def _expires_regexp(text: str) -> str:
    """`static-expires(-uri, -path-info)(-mtime) = REGEXP SECONDS` (uwsgi_opt_add_regexp_dyn_dict:
    the regexp ends at the first space)."""
    pattern, space, secs = text.strip().partition(" ")
    if not space:
        raise ValueError(f'expected "regexp seconds", got "{text}"')
    _regexp(pattern)
    _int()(secs)
    return f"{pattern} {secs.strip()}"


def _regexp(text: str) -> str:
    try:
        re.compile(text)
    except re.error as e:
        raise ValueError(f'bad regular expression "{text}": {e}') from None
    return text


def _file_serve_mode(text: str) -> object:
    """uWSGI's uwsgi_opt_fileserve_mode: x-sendfile (Apache, lighttpd) or x-accel-redirect (nginx).
    Any other word leaves uWSGI's default, the worker sending the file: so here, with a warning."""
    word = text.strip().lower()
    if word in ("x-sendfile", "xsendfile"):
        return "x-sendfile"
    if word in ("x-accel-redirect", "xaccelredirect", "nginx"):
        return "x-accel-redirect"
    return Noted(None, [("warning", f'"{text}" is not a mode uWSGI knows (x-sendfile, x-accel-redirect, '
                                    "nginx): the worker sends the files itself, as uWSGI does then")])


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
    return _atoi(word)[0]
