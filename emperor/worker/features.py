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
    """The application as the worker calls it: `app` inside the layers the config asks for."""
    if config.static_map or config.static_map2 or config.check_static or config.check_static_docroot:
        from emperor.worker.static import Static  # mimetypes and the table: only for a vassal that serves files

        app = Static(config, app)
    return app
