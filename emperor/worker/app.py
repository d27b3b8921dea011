"""Loading the WSGI application a vassal names (module, wsgi-file, callable, chdir...).

Failures become one line naming the vassal and the cause. A traceback is shown
only when it is the application's own (it raised while importing), because
that is the one a user can act on.
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
from importlib.machinery import SourceFileLoader
import os
import site
import sys
import traceback
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor.config import Config


class AppError(Exception):
    """The app could not be loaded; `detail` is the app's own traceback, if any."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def prepare_environment(config: Config) -> None:
    """Process-wide settings that must precede the import: env, chdir, paths, virtualenv."""
    from emperor.api import install

    install(config)  # `import uwsgi` / `import uwsgidecorators` as inside uWSGI
    for item in config.env:
        key, sep, value = item.partition("=")
        if not sep:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if config.chdir:
        try:
            os.chdir(config.chdir)
        except OSError as e:
            raise AppError(f"{config.name}: chdir {config.chdir}: {e.strerror}") from None
    if config.virtualenv:
        _activate_virtualenv(config)
    # uWSGI (python_plugin.c): each glob match in order, or the value itself when none,
    # inserted at the front of sys.path one after the other: the last one ends up first
    for path in config.pythonpath:
        for p in sorted(glob.glob(path)) or [path]:
            if p not in sys.path:
                sys.path.insert(0, p)
    # like `python app.py`, the current directory is importable
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _activate_virtualenv(config: Config) -> None:
    venv = config.virtualenv
    assert venv is not None
    pattern = os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    if not os.path.isdir(venv):
        raise AppError(f"{config.name}: virtualenv {venv}: no such directory")
    if not os.path.isdir(pattern):
        raise AppError(f"{config.name}: virtualenv {venv} has no {os.path.relpath(pattern, venv)} "
                       f"(made for another Python than {sys.version_info[0]}.{sys.version_info[1]}?)")
    before = list(sys.path)
    site.addsitedir(pattern)
    # venv packages take precedence over the interpreter's own site-packages
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    os.environ["VIRTUAL_ENV"] = venv


def _no_app(environ: dict, start_response: Callable) -> list[bytes]:
    """`need-app = false` and no application (a vassal that only serves static files):
    what uWSGI does then (plugins/python/wsgi_handlers.c: a 500, and this line in the log)."""
    from emperor.log import log

    log("--- no python application found, check your startup logs for errors ---")
    start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", "21")])
    return [b"Internal Server Error"]


def load(config: Config) -> Callable:
    """Import and return the WSGI callable (with `mount`s: the one that picks among them)."""
    prepare_environment(config)
    default = None
    if not config.module and not config.wsgi_file and not config.mounts:
        return _no_app  # need-app = false (the config reader requires one otherwise)
    if config.module:
        modname, _, attr = config.module.partition(":")
        default = _from_module(config, modname, attr or config.callable, "")
    elif config.wsgi_file:
        default = _from_file(config, config.wsgi_file, "")
    if not config.mounts:
        assert default is not None  # the config requires module, wsgi-file or mount
        return default
    from emperor.worker.mounts import Mounts, mountpoint

    apps: dict[str, Callable] = {}
    for item in config.mounts:
        point, target = mountpoint(item)
        where = f"mount {point or '/'}: "
        if target.endswith((".py", ".wsgi")):
            apps[point] = _from_file(config, target, where)
        else:
            modname, _, attr = target.partition(":")
            apps[point] = _from_module(config, modname, attr or config.callable, where)
    return Mounts(apps, default if default is not None else apps.get(""), fallback=not config.no_default_app)


def _from_module(config: Config, modname: str, attr: str, where: str) -> Callable:
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise AppError(f"{config.name}: {where}module {modname!r} not found "
                           f"(sys.path: {', '.join(sys.path[:4])}...)") from None
        raise AppError(f"{config.name}: {where}module {modname!r} failed to import: "
                       f"{type(e).__name__}: {e}", _app_traceback()) from None
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt,)):
            raise
        raise AppError(f"{config.name}: {where}module {modname!r} failed to import: "
                       f"{type(e).__name__}: {e}", _app_traceback()) from None
    return _callable(config, module, attr, f"{where}module {modname!r}", factory=attr.endswith("()"))


def _from_file(config: Config, path: str, where: str) -> Callable:
    if not os.path.isfile(path):
        raise AppError(f"{config.name}: {where}wsgi-file {path}: no such file")
    name = "uwsgi_file_" + _safe(path)
    # SourceFileLoader: `.wsgi` and `.py` files alike (the default finder only knows `.py`)
    loader = SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        loader.exec_module(module)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise AppError(f"{config.name}: {where}wsgi-file {path} failed to import: "
                       f"{type(e).__name__}: {e}", _app_traceback()) from None
    return _callable(config, module, config.callable, f"{where}wsgi-file {path}")


def _callable(config: Config, module: Any, attr: str, where: str, factory: bool = False) -> Callable:
    """`module = pkg.mod:create_app()`: the factory is called, with no argument, and what it
    returns is the application (uWSGI's module loader does so, pyloader.c uwsgi_uwsgi_loader;
    its wsgi-file loader does not)."""
    app = getattr(module, attr[:-2] if factory else attr, None)
    if app is None:
        raise AppError(f"{config.name}: {where} has no callable {attr[:-2] if factory else attr!r}")
    if factory:
        try:
            app = app()
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise AppError(f"{config.name}: {where}: {attr} failed: {type(e).__name__}: {e}",
                           _app_traceback()) from None
        if not callable(app):
            raise AppError(f"{config.name}: {where}: {attr} returned {type(app).__name__}, not an application")
    if not callable(app):
        raise AppError(f"{config.name}: {where}: {attr!r} is not callable")
    return app


def _safe(path: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in path)


def _app_traceback() -> str:
    """The traceback without our own frames: the part the user's code is in."""
    etype, value, tb = sys.exc_info()
    frames = traceback.extract_tb(tb)
    here = os.path.dirname(os.path.dirname(__file__))  # every module of the package
    keep = [f for f in frames if not f.filename.startswith(here) and "<frozen importlib" not in f.filename]
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(keep)
    lines += traceback.format_exception_only(etype, value)
    return "".join(lines).rstrip()
