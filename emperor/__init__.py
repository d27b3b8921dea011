"""emperor: a pure-Python application-server manager with uWSGI's Emperor semantics."""
from __future__ import annotations

import os

__version__ = "0.1.0"


def reload() -> bool:
    """Ask this process's master for a graceful reload.

    A message on the master's notify pipe rather than a signal to a PID read
    from somewhere: it cannot reach the wrong process. Returns False when not
    running under an emperor master.
    """
    from emperor.wire.notify import send_reload_request

    return send_reload_request()


def generation() -> int:
    """How many reloads this master has done (uWSGI's UWSGI_RELOADS)."""
    return int(os.environ.get("UWSGI_RELOADS", "0"))
