"""uWSGI's internal routing, as a WSGI layer (InternalRouting doc; core/routing.c).

The rules are compiled once, when the worker starts: regexps compiled, templates split,
labels resolved, htpasswd files read; a request then evaluates only its vassal's rules.
Evaluation is uWSGI's `uwsgi_apply_routes_do`: rules in order, a rule's action runs when its
test matches, and says what comes next: the next rule, `continue`/`last` (the application),
`break` (the request ends: with a status, or closed with nothing sent), `goto` (forward only:
a backward jump ends the request, as uWSGI logs and does), or a response of its own
(redirect, return, basicauth's 401, static).

Three chains: `route*` before the application (after the request is parsed, the body
buffered and SCRIPT_NAME split: features.py orders the layers); `error-route*` when a status
is set, the application's or a route's own (a response it makes replaces the one set);
`final-route*` once the response went out (logging, logvar, donotlog). Headers that
`addheader`/`delheader` ask for go on whatever response the request gets.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor import routes
from emperor.config import Config
from emperor.log import log, printable
from emperor.worker.layer import after
from emperor.worker.route_actions import (CONTINUE, DROP, Refused, Response, Template, compile_action,
                                          text_response)
from emperor.worker.streams import ClientGone

_NUM = re.compile(r"\s*([+-]?[0-9]+)")


class Dropped(ClientGone):
    """`break` without a status: the connection is closed with nothing sent (as uWSGI's BREAK)."""


class _Req:
    """What the rules of one request gather."""

    __slots__ = ("add", "remove", "status", "replaced", "in_error")

    def __init__(self) -> None:
        self.add: list[tuple[str, str]] = []
        self.remove: set[str] = set()
        self.status = 0                        # the last status set, 0 before any
        self.replaced: Response | None = None  # an error route's answer, instead of the one set
        self.in_error = False


def _groups(m: re.Match[str]) -> tuple:
    return (m.group(0),) + m.groups("")


def _number(text: str) -> int:
    m = _NUM.match(text)
    return int(m.group(1)) if m else 0


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "equal": str.__eq__, "isequal": str.__eq__, "eq": str.__eq__, "==": str.__eq__,
    "startswith": str.startswith, "endswith": str.endswith,
    "contains": lambda a, b: b in a, "contain": lambda a, b: b in a,
    "ishigher": lambda a, b: _number(a) > _number(b), ">": lambda a, b: _number(a) > _number(b),
    "islower": lambda a, b: _number(a) < _number(b), "<": lambda a, b: _number(a) < _number(b),
    "ishigherequal": lambda a, b: _number(a) >= _number(b), ">=": lambda a, b: _number(a) >= _number(b),
    "islowerequal": lambda a, b: _number(a) <= _number(b), "<=": lambda a, b: _number(a) <= _number(b),
}
_CHECK: dict[str, Callable[[str], bool]] = {
    "empty": lambda s: s == "", "isfile": os.path.isfile, "isdir": os.path.isdir, "exists": os.path.exists,
    "islink": os.path.islink, "isexec": lambda s: os.access(s, os.X_OK),
}


def _never(env: dict, req: _Req) -> None:
    return None


def _condition(name: str, arg: str) -> Callable[[dict, _Req], tuple | None]:
    """A `route-if` condition: the groups of its match (none but regexp's) when true, else None."""
    if name in _CHECK:
        check, whole = _CHECK[name], Template(arg)
        return lambda env, req: () if check(whole(env, ())) else None
    left_text, semicolon, right_text = arg.partition(";")
    if not semicolon:
        return _never  # as uWSGI: a condition without its pattern is false
    left = Template(left_text)
    if name in ("regexp", "re"):
        rx = routes.pcre(right_text)   # uWSGI does not expand the pattern either

        def regexp(env: dict, req: _Req) -> tuple | None:
            m = rx.search(left(env, ()))
            return _groups(m) if m else None
        return regexp
    compare, right = _COMPARE[name], Template(right_text)
    if right.const is not None:
        pattern = right.const
        return lambda env, req: () if compare(left(env, ()), pattern) else None
    return lambda env, req: () if compare(left(env, ()), right(env, ())) else None


def _test(rule: routes.Rule) -> Callable[[dict, _Req], tuple | None]:
    kind = rule.kind
    if kind == "run":
        return lambda env, req: ()
    if kind == "status":
        code = int(rule.test)
        return lambda env, req: () if req.status == code else None
    if kind in ("if", "if-not"):
        cond = _condition(rule.cond, rule.test)
        if kind == "if":
            return cond
        return lambda env, req: () if cond(env, req) is None else None
    rx, var = routes.pcre(rule.test), kind

    def regexp(env: dict, req: _Req) -> tuple | None:
        subject = env.get(var)
        m = rx.search(subject if type(subject) is str else "")
        return _groups(m) if m else None
    return regexp


def _compile(rules: list[routes.Rule]) -> list[tuple[Callable, Callable, str]] | None:
    labels = routes.labels(rules)
    out: list[tuple[Callable, Callable, str]] = []
    for pos, rule in enumerate(rules):
        where = f"{rule.option} #{pos} ({rule.action or 'label'})"
        if rule.kind == "label" or routes.ignored(rule):
            out.append((_never, _never, where))   # kept: goto counts positions with it
        else:
            out.append((_test(rule), compile_action(rule.action, rule.arg, labels, where), where))
    return out if any(test is not _never for test, _, _ in out) else None


def _discard(data: bytes) -> None:
    """write() for an application whose response an error route replaced."""


class Routing:
    """The routing layer: put on by features.wrap when the vassal has routing options."""

    def __init__(self, config: Config, app: Callable) -> None:
        self.app = app
        chains = routes.chains(config.routes)
        self.request = _compile(chains["request"])
        self.error = _compile(chains["error"])
        self.final = _compile(chains["final"])

    def run(self, chain: list, env: dict, req: _Req) -> Any:
        """uwsgi_apply_routes_do: None (on to the application) or what ends the request."""
        i, n = 0, len(chain)
        while i < n:
            test, act, where = chain[i]
            groups = test(env, req)
            if groups is not None:
                try:
                    out = act(env, req, groups)
                except Refused as e:
                    log(f"{where}: {printable(str(e))}; answering 400")
                    return text_response("400 Bad Request", b"Bad Request\n", [("Connection", "close")])
                if out is not None:
                    if out is CONTINUE:
                        return None
                    if type(out) is int:
                        if out <= i:
                            log(f"{where}: goto can only jump forward (target {out}); the request ends here")
                            return DROP
                        i = out
                        continue
                    return out
            i += 1
        return None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        req = _Req()
        out = self.run(self.request, environ, req) if self.request is not None else None
        if out is DROP:
            raise Dropped("closed by a route (break)")
        start = start_response
        if req.add or req.remove or self.error is not None or self.final is not None:
            start = self._starter(environ, start_response, req)
        if out is not None:
            start(out.status, out.headers)
            result = req.replaced.body if req.replaced is not None else out.body
        else:
            result = self.app(environ, start)
            if self.error is not None:
                result = self._guard(result, req)
        if self.final is not None:
            final = self.final
            result = after(result, lambda: self.run(final, environ, req))
        return result

    def _starter(self, environ: dict, start_response: Callable, req: _Req) -> Callable:
        error = self.error

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            if req.replaced is not None:
                return _discard
            req.status = int(status[:3]) if status[:3].isdigit() else 0
            if error is not None and not req.in_error:
                req.in_error = True
                out = self.run(error, environ, req)
                if out is DROP:
                    raise Dropped("closed by an error route (break)")
                if out is not None:
                    req.replaced = out
                    req.status = int(out.status[:3])
                    start_response(out.status, self._headers(out.headers, req), exc_info)
                    return _discard
            return start_response(status, self._headers(headers, req), exc_info)
        return start

    @staticmethod
    def _headers(headers: list, req: _Req) -> list:
        if req.remove:
            headers = [h for h in headers if h[0].lower() not in req.remove]
        return headers + req.add if req.add else headers

    @staticmethod
    def _guard(result: Any, req: _Req) -> Any:
        """The application's response, unless an error route replaced it."""
        if req.replaced is not None:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return req.replaced.body
        if req.status:
            return result   # the status is set and kept: nothing more to watch

        def guarded() -> Any:   # start_response comes with the first item (a generator app)
            for item in result:
                if req.replaced is not None:
                    break
                yield item
            if req.replaced is not None:
                yield from req.replaced.body
        own = getattr(result, "close", None)
        return after(guarded(), own if own is not None else (lambda: None))
