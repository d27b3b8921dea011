"""Several applications in one vassal: `mount = /mountpoint=app` and `manage-script-name`.

As uWSGI (core/protocol.c, uwsgi_parse_vars; core/utils.c, uwsgi_get_app_id): an app is chosen
by SCRIPT_NAME, exactly, else the default app (the one of `module`/`wsgi-file`, or mounted at
`/`). SCRIPT_NAME comes from the web server (nginx's `uwsgi_param SCRIPT_NAME`), or, with
`manage-script-name`, from the request path: the longest mountpoint that is the path or a
prefix of it ending at a `/` moves from PATH_INFO to SCRIPT_NAME. `no-default-app`: a
SCRIPT_NAME no app is mounted at is not given to the default app (core/utils.c). The split happens when the
request is parsed, before internal routing; the choice after it (features.py orders them).

Differences from uWSGI: a mountpoint's trailing `/` is dropped (uWSGI then gives a PATH_INFO
without its leading `/`); a request no app is mounted for is a 404 (uWSGI: 500, "no python
application found").
"""
from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor.log import log
from emperor.worker.layer import respond


def mountpoint(item: str) -> tuple[str, str]:
    """'/app/=pkg.wsgi:app' -> ('/app', 'pkg.wsgi:app'); the root is ''."""
    point, _, target = item.partition("=")
    return point.rstrip("/"), target.strip()


class Mounts:
    """The application the worker calls when the vassal mounts several: it picks one."""

    def __init__(self, apps: dict[str, Callable], default: Callable | None, fallback: bool = True) -> None:
        self.apps = apps
        self.default = default
        self.fallback = fallback   # no-default-app = true: a SCRIPT_NAME no app has is a 404

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        script_name = environ.get("SCRIPT_NAME", "")
        app = self.apps.get(script_name.rstrip("/")) if script_name else self.default
        if app is None:
            app = self.default if self.fallback else None
            if app is None:
                log(f"no application mounted for SCRIPT_NAME={script_name!r} (PATH_INFO {environ['PATH_INFO']!r})")
                return respond(start_response, "404 Not Found", b"Not Found\n")
        return app(environ, start_response)


class ScriptName:
    """`manage-script-name`: SCRIPT_NAME and PATH_INFO split at the longest mountpoint."""

    def __init__(self, app: Callable, mounts: list[str]) -> None:
        self.app = app
        points = {mountpoint(m)[0] for m in mounts} - {""}
        self.points = sorted(points, key=len, reverse=True)

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ["PATH_INFO"]
        for point in self.points:
            if path.startswith(point) and (len(path) == len(point) or path[len(point)] == "/"):
                environ["SCRIPT_NAME"] = point
                environ["PATH_INFO"] = path[len(point):]
                break
        return self.app(environ, start_response)
