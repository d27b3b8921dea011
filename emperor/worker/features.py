"""What the worker puts around the application, from the vassal's options.

Static files, internal routing, added headers, mounts and request-body options are
WSGI layers wrapped around the application once, when the worker starts. An option
not set adds no layer, so a request pays for exactly the features its vassal uses
and nothing else (scripts/bench_serve.py checks the bare path stays as it was).
"""
from __future__ import annotations

from collections.abc import Callable

from emperor.config import Config

WSGIApp = Callable


def wrap(config: Config, app: WSGIApp) -> WSGIApp:
    """The application as the worker calls it: `app` inside the layers the config asks for.

    From the inside out, in uWSGI's order of a request (core/protocol.c uwsgi_parse_vars, then
    core/routing.c uwsgi_apply_routes, then the app chosen by SCRIPT_NAME): the mounted app is
    chosen (emperor/worker/mounts.py: app.load made that callable); internal routing; the
    SCRIPT_NAME split of manage-script-name; the body read whole (post-buffering); the body's
    size checked before any of it is read (limit-post); static files, looked for before any of
    that as uWSGI's request parser does (static-map: emperor/worker/static.py); headers for every
    response, the layers' own and static files' included (add-header, del-header, http-keepalive = 0).
    """
    c = config
    if c.routes:
        from emperor.worker.routing import Routing

        app = Routing(c, app)
    if c.mounts and c.manage_script_name:
        from emperor.worker.mounts import ScriptName

        app = ScriptName(app, c.mounts)
    if c.post_buffering:
        from emperor.worker.body import PostBuffering

        app = PostBuffering(app, c.post_buffering)
    if c.limit_post:
        from emperor.worker.body import LimitPost

        app = LimitPost(app, c.limit_post)
    if c.static_map or c.static_map2 or c.check_static or c.check_static_docroot:
        from emperor.worker.static import Static  # mimetypes and the table: only for a vassal that serves files

        app = Static(c, app)
    if c.add_header or c.del_header or c.http_keepalive == 0:
        from emperor.worker.layer import Headers

        app = Headers(app, c.add_header + (["Connection: close"] if c.http_keepalive == 0 else []), c.del_header)
    return app
