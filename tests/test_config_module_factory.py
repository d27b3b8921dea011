"""`module = pkg.mod:create_app()`: the factory is called, as uWSGI's module loader does.

uWSGI 2.0 plugins/python/pyloader.c uwsgi_uwsgi_loader: a callable name ending with
exactly `()` is looked up without the parentheses and called with no argument; what it
returns is the application. Its wsgi-file loader (uwsgi_file_loader) has no such rule.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from emperor.config import Config
from emperor.worker.app import AppError, load

FACTORY_MODULE = """
calls = []

def create_app():
    calls.append(1)
    def application(environ, start_response):
        start_response("200 OK", [])
        return [b"made"]
    return application

def broken():
    raise RuntimeError("no database")

def not_an_app():
    return 42
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    name = f"factory_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def config(tmp_path: Path, **fields) -> Config:
    c = Config(str(tmp_path / "app.ini"), "app.ini")
    for k, v in fields.items():
        setattr(c, k, v)
    return c


def call(app) -> list[bytes]:
    return list(app({}, lambda status, headers: None))


def test_module_factory_is_called_once_with_no_argument(tmp_path, factory_module):
    app = load(config(tmp_path, module=f"{factory_module}:create_app()"))
    assert call(app) == [b"made"]
    assert sys.modules[factory_module].calls == [1]


def test_callable_option_with_parentheses_is_a_factory_too(tmp_path, factory_module):
    """pyloader.c: the `callable` option is used when the module has no ':', with the same rule."""
    app = load(config(tmp_path, module=factory_module, callable="create_app()"))
    assert call(app) == [b"made"]


def test_arguments_are_not_a_factory_call(tmp_path, factory_module):
    """`Factory(1)` does not end with `()`: uWSGI looks the whole name up, and fails."""
    with pytest.raises(AppError, match=r"has no callable 'create_app\(1\)'"):
        load(config(tmp_path, module=f"{factory_module}:create_app(1)"))


def test_a_factory_that_raises_is_the_apps_error_with_its_traceback(tmp_path, factory_module):
    with pytest.raises(AppError) as info:
        load(config(tmp_path, module=f"{factory_module}:broken()"))
    assert "broken() failed: RuntimeError: no database" in str(info.value)
    assert "no database" in info.value.detail


def test_a_factory_must_return_an_application(tmp_path, factory_module):
    with pytest.raises(AppError, match=r"not_an_app\(\) returned int, not an application"):
        load(config(tmp_path, module=f"{factory_module}:not_an_app()"))


def test_wsgi_file_callable_is_never_called(tmp_path):
    """uwsgi_file_loader looks `callable` up as written: `create_app()` is not a name there."""
    path = tmp_path / "wsgi_factory.py"
    path.write_text(textwrap.dedent(FACTORY_MODULE))
    with pytest.raises(AppError, match=r"has no callable 'create_app\(\)'"):
        load(config(tmp_path, wsgi_file=str(path), callable="create_app()"))
