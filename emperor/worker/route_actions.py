"""The actions of internal routing, and the `$N` / `${VAR}` templates they expand.

Each action is compiled once, when the worker starts (its argument parsed, its template split
into parts), into a function of (environ, request state, groups) that returns what the rule
engine does next (emperor/worker/routing.py): None (the next rule), CONTINUE (to the
application), an int (goto that rule), DROP (close without an answer, as uWSGI's BREAK with
nothing sent) or a Response. uWSGI's sources: core/routing.c (uwsgi_routing_translate and
the core actions), plugins/router_redirect, router_rewrite, router_basicauth, router_static.

Expansion is one pass: a value a variable or a group brings in is never expanded again (uWSGI
expands `$N` first, then `${VAR}` in the result, so a request could inject a variable
reference). What goes into a header is refused with a 400 when it holds CR, LF or NUL; what
goes into a redirect's Location from the request is percent-encoded, and a Location that only
the request made protocol-relative (`//host`) is brought back to a path on this site.
"""
from __future__ import annotations

import base64
import os
import re
import stat
import time
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor import log as logmod
from emperor.files import open_nonblocking
from emperor.worker.layer import status_line
from emperor.worker.wsgi import FileWrapper

CONTINUE = "continue"
DROP = "drop"
_TOKEN = re.compile(r"\$(?:\{([^}]*)\}|([0-9]))")
_URL_SAFE = "/:?#[]@!$&'()*+,;=%~"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Response:
    """A routing action's own answer."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: Any = (b"",)) -> None:
        self.status, self.headers, self.body = status, headers, body


def text_response(status: str, body: bytes, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
                    + (headers or []), [body])


class Refused(Exception):
    """An expansion that cannot be used as is (CR or LF in a header): the request gets a 400."""


# ---------------------------------------------------------------- templates

def _route_var(name: str, arg: str) -> Callable[[dict], str]:
    """`${name[arg]}` (InternalRouting doc, "Pluggable routing variables"); unknown ones expand to ""."""
    if name == "qs":
        def qs(env: dict) -> str:
            for pair in env.get("QUERY_STRING", "").split("&"):
                key, _, value = pair.partition("=")
                if key == arg:
                    return value
            return ""
        return qs
    if name == "cookie":
        def cookie(env: dict) -> str:
            for pair in env.get("HTTP_COOKIE", "").split(";"):
                key, _, value = pair.strip().partition("=")
                if key == arg:
                    return value
            return ""
        return cookie
    if name in ("upper", "lower"):
        return (lambda env: str(env.get(arg, "")).upper()) if name == "upper" else (
            lambda env: str(env.get(arg, "")).lower())
    if name == "hex":
        return lambda env: str(env.get(arg, "")).encode("latin-1", "replace").hex()
    if name == "base64":
        return lambda env: base64.b64encode(str(env.get(arg, "")).encode("latin-1", "replace")).decode()
    if name == "mime":
        import mimetypes

        return lambda env: mimetypes.guess_type(str(env.get(arg, "")), strict=False)[0] or ""
    if name == "time":
        return (lambda env: str(int(time.time() * 1_000_000))) if arg == "micros" else (
            lambda env: str(int(time.time())))
    if name == "httptime":
        offset = int(arg) if arg.lstrip("-").isdigit() else 0
        return lambda env: time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + offset))
    return lambda env: ""


def _plain_var(name: str) -> Callable[[dict], str]:
    def get(env: dict) -> str:
        value = env.get(name)
        return value if type(value) is str else ""
    return get


class Template:
    """A rule's text with `$0`..`$9` (the test's regexp groups) and `${VAR}`, `${name[arg]}`."""

    __slots__ = ("parts", "const", "single", "starts_dynamic")

    def __init__(self, text: str) -> None:
        parts: list[Any] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() > pos:
                parts.append(text[pos:m.start()])
            if m.group(2) is not None:
                parts.append(int(m.group(2)))
            else:
                inner = m.group(1)
                name, bracket, rest = inner.partition("[")
                parts.append(_route_var(name, rest[:-1]) if bracket and rest.endswith("]") else _plain_var(inner))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.parts = parts
        self.const = text if all(type(p) is str for p in parts) else None
        # `${VAR}` alone, the commonest subject of a condition: no join
        self.single = parts[0] if len(parts) == 1 and callable(parts[0]) else None
        self.starts_dynamic = bool(parts) and type(parts[0]) is not str

    def __call__(self, env: dict, groups: tuple, quote: Callable[[str], str] | None = None) -> str:
        if self.const is not None:
            return self.const
        if self.single is not None and quote is None:
            return self.single(env)
        out = []
        for p in self.parts:
            if type(p) is str:
                out.append(p)
                continue
            if type(p) is int:
                value = groups[p] if p < len(groups) else ""
            else:
                value = p(env)
            out.append(quote(value) if quote is not None else value)
        return "".join(out)


def _url_quote(value: str) -> str:
    from urllib.parse import quote

    try:
        return quote(value, safe=_URL_SAFE, encoding="latin-1")
    except UnicodeEncodeError:
        return quote(value, safe=_URL_SAFE, encoding="utf-8")


def _header_text(text: str) -> str:
    if "\r" in text or "\n" in text or "\0" in text:
        raise Refused(f"CR, LF or NUL in a header from a route: {text!r}")
    return text


# ---------------------------------------------------------------- actions

def compile_action(action: str, arg: str, labels: dict[str, int], where: str) -> Callable:
    """The function that runs `action:arg`; `where` names the rule in log lines."""
    make = _ACTIONS.get(action)
    if make is None:  # the config reader warned: the rule is left out
        return lambda env, req, groups: None
    return make(arg, labels, where)


def _continue(arg: str, labels: dict, where: str) -> Callable:
    return lambda env, req, groups: CONTINUE


def _break(arg: str, labels: dict, where: str) -> Callable:
    """`break[:STATUS]`: the status line as written (no variables), no body, close (core/routing.c)."""
    if len(arg) < 3:
        return lambda env, req, groups: DROP
    code, _, reason = arg.partition(" ")
    status = status_line(int(code[:3]) if code[:3].isdigit() else 500, reason)
    return lambda env, req, groups: Response(status, [("Content-Type", "text/plain"), ("Connection", "close")])


def _return(arg: str, labels: dict, where: str) -> Callable:
    """`return:NNN`: status and its standard text as the body; unknown status: nothing is sent."""
    code = arg.strip()[:3]
    if not code.isdigit():
        return lambda env, req, groups: DROP
    status = status_line(int(code))
    if status.endswith(" Unknown"):
        return lambda env, req, groups: DROP
    body = status[4:].encode()
    return lambda env, req, groups: text_response(status, body)


def _log(arg: str, labels: dict, where: str) -> Callable:
    t = Template(arg)

    def act(env: dict, req: Any, groups: tuple) -> None:
        logmod.log(t(env, groups))
    return act


def _logvar(arg: str, labels: dict, where: str) -> Callable:
    key, _, value = arg.partition("=")
    t = Template(value)

    def act(env: dict, req: Any, groups: tuple) -> None:
        env.setdefault("emperor.logvars", {})[key] = t(env, groups)
    return act


def _donotlog(arg: str, labels: dict, where: str) -> Callable:
    def act(env: dict, req: Any, groups: tuple) -> None:
        env["emperor.donotlog"] = True
    return act


def _addvar(arg: str, labels: dict, where: str) -> Callable:
    key, _, value = arg.partition("=")
    t = Template(value)

    def act(env: dict, req: Any, groups: tuple) -> None:
        env[key] = t(env, groups)
    return act


def _goto(arg: str, labels: dict, where: str) -> Callable:
    t = Template(arg.strip())
    if t.const is not None:
        target = labels.get(t.const, int(t.const) if t.const.isdigit() else -1)
        return lambda env, req, groups: target

    def act(env: dict, req: Any, groups: tuple) -> int:
        name = t(env, groups)
        return labels.get(name, int(name) if name.isdigit() else -1)
    return act


def _header_pair(text: str) -> tuple[str, str]:
    name, colon, value = _header_text(text).partition(":")
    if not colon or not _HEADER_NAME.fullmatch(name.strip()):
        raise Refused(f"addheader: not a header line: {text!r}")
    return name.strip(), value.strip()


def _addheader(arg: str, labels: dict, where: str) -> Callable:
    t = Template(arg)
    if t.const is not None:
        try:
            header = _header_pair(t.const)   # checked once: the same header for every request
        except Refused as e:
            logmod.log(f"{where}: {e}; the rule answers 400")
        else:
            return lambda env, req, groups: req.add.append(header)

    def act(env: dict, req: Any, groups: tuple) -> None:
        req.add.append(_header_pair(t(env, groups)))
    return act


def _delheader(arg: str, labels: dict, where: str) -> Callable:
    t = Template(arg)

    def act(env: dict, req: Any, groups: tuple) -> None:
        req.remove.add(t(env, groups).strip().lower())
    return act


def _redirect(status: str, body: bytes) -> Callable:
    def make(arg: str, labels: dict, where: str) -> Callable:
        t = Template(arg)

        def act(env: dict, req: Any, groups: tuple) -> Response:
            location = _header_text(t(env, groups, _url_quote))
            if location[:2] in ("//", "/\\") and (t.starts_dynamic or not t.parts[0].startswith("//")):
                location = "/" + location.lstrip("/\\")   # the request made it another site's: not ours to send
            return text_response(status, body, [("Location", location)])
        return act
    return make


def _rewrite(last: bool) -> Callable:
    def make(arg: str, labels: dict, where: str) -> Callable:
        t = Template(arg)

        def act(env: dict, req: Any, groups: tuple) -> str | None:
            from urllib.parse import unquote_to_bytes

            target = t(env, groups)
            path, question, query = target.partition("?")
            old = env.get("QUERY_STRING", "")
            env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
            env["QUERY_STRING"] = (query + "&" + old if old else query) if question else old
            return CONTINUE if last else None
        return act
    return make


def _basicauth(next_on_failure: bool) -> Callable:
    def make(arg: str, labels: dict, where: str) -> Callable:
        from emperor.worker.htpasswd import Htpasswd

        realm, comma, secret = arg.partition(",")
        challenge = [("WWW-Authenticate", 'Basic realm="%s"' % realm.replace("\\", "\\\\").replace('"', '\\"'))]
        file = Htpasswd(secret) if comma and secret and ":" not in secret else None

        def act(env: dict, req: Any, groups: tuple) -> Response | None:
            if env.get("REMOTE_USER"):
                return None    # an earlier rule authenticated the request
            auth = env.get("HTTP_AUTHORIZATION", "")
            if len(auth) > 7 and secret:
                if not auth.startswith("Basic "):
                    return _unauthorized(challenge)
                try:
                    pair = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                except ValueError:
                    return _unauthorized(challenge)
                user, colon, password = pair.partition(":")
                import hmac

                ok = colon and (file.check(user, password) if file is not None
                                else hmac.compare_digest(pair.encode(), secret.encode()))
                if ok:
                    env["REMOTE_USER"] = user
                    return None
                if next_on_failure:
                    return None
            return _unauthorized(challenge)
        return act
    return make


def _unauthorized(challenge: list[tuple[str, str]]) -> Response:
    return text_response("401 Authorization Required", b"Unauthorized", challenge)


def _static(arg: str, labels: dict, where: str) -> Callable:
    """`static:PATH`: the file, through FileWrapper (sendfile). Until emperor/worker/static.py
    serves files apart from the application, this is the way; a path with a `..` segment is
    refused (uWSGI refuses one whose realpath differs; symlinks are allowed here)."""
    t = Template(arg)

    def act(env: dict, req: Any, groups: tuple) -> Response:
        path = t(env, groups)
        if env["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return text_response("405 Method Not Allowed", b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        if "\0" in path or ".." in path.split("/"):
            logmod.log(f"{where}: static: {logmod.printable(path)}: a '..' segment; refused")
            return text_response("404 Not Found", b"Not Found\n")
        if not os.path.isabs(path):
            path = os.path.join(os.getcwd(), path)
        try:   # without blocking: a FIFO where a file was expected must not stop the worker
            f = os.fdopen(open_nonblocking(path), "rb")
        except OSError:
            return text_response("404 Not Found", b"Not Found\n")
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            f.close()
            return text_response("404 Not Found", b"Not Found\n")
        modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime))
        if env.get("HTTP_IF_MODIFIED_SINCE") == modified:
            f.close()
            return Response("304 Not Modified", [("Last-Modified", modified)], [b""])
        import mimetypes

        kind = mimetypes.guess_type(path, strict=False)[0] or "application/octet-stream"
        return Response("200 OK", [("Content-Type", kind), ("Content-Length", str(st.st_size)),
                                   ("Last-Modified", modified)], FileWrapper(f, 65536))
    return act


_ACTIONS: dict[str, Callable] = {
    "continue": _continue, "last": _continue, "break": _break, "return": _return, "break-with-status": _return,
    "log": _log, "logvar": _logvar, "donotlog": _donotlog, "addvar": _addvar, "setvar": _addvar, "goto": _goto,
    "addheader": _addheader, "delheader": _delheader, "remheader": _delheader,
    "redirect": _redirect("302 Found", b"Moved"), "redirect-302": _redirect("302 Found", b"Moved"),
    "redirect-permanent": _redirect("301 Moved Permanently", b"Moved Permanently"),
    "redirect-301": _redirect("301 Moved Permanently", b"Moved Permanently"),
    "rewrite": _rewrite(False), "rewrite-last": _rewrite(True),
    "basicauth": _basicauth(False), "basicauth-next": _basicauth(True), "static": _static,
}
