"""What an application written for uWSGI imports: `uwsgi` and `uwsgidecorators`.

Inside uWSGI `uwsgi` is a built-in module, so no file on sys.path provides it;
`uwsgidecorators` is a file pip installs beside the `uwsgi` binary. Here both
names are resolved by a finder placed first on `sys.meta_path` by `install()`,
which only the master and its workers call before loading the application:
outside those processes (a shell, a test runner, a real uWSGI) nothing changes,
and nothing is imported until the application asks (an app that never imports
`uwsgi` costs a master nothing).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image

if TYPE_CHECKING:
    from emperor.config import Config

# the names an application imports -> emperor's modules that implement them
ALIASES = {"uwsgi": "emperor.api.uwsgi", "uwsgidecorators": "emperor.api.uwsgidecorators"}


class _Alias:
    """`import uwsgi` gives emperor.api.uwsgi itself (one module object under two names).

    A finder and loader by duck typing: importlib.abc would import `typing` into every master."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname in ALIASES:
            return importlib.machinery.ModuleSpec(fullname, self)  # type: ignore[arg-type]
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> object:
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module: object) -> None:
        pass  # already executed under its own name


_finder = _Alias()


def install(config: Config | None = None) -> None:
    """Make `import uwsgi` / `import uwsgidecorators` resolve to emperor's modules (idempotent)."""
    if config is not None:
        from emperor.api import state

        state.config = config
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)  # type: ignore[arg-type]
