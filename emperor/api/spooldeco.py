"""uwsgidecorators' spooler decorators (@spool, @spoolforever, @spoolraw), as upstream writes them.

Upstream uwsgidecorators.py, so that tasks uWSGI wrote run here and the other way round:
the function's name under `ud_spool_func`; with `pass_arguments=True` its positional and
keyword arguments pickled under `args` and `kwargs`; `ud_spool_ret` fixes the result
(@spool: SPOOL_OK, the task is done whatever the function returns; @spoolforever:
SPOOL_RETRY, it runs again at every scan). Importing this module makes
`manage_spool_request` the vassal's spooler function (`uwsgi.spooler`), as upstream does.
"""
from __future__ import annotations

import pickle
from functools import partial

from emperor.api import spool as _spool_api
from emperor.api import state

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: `typing` stays out of the processes that run the app
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["spool", "spoolforever", "spoolraw", "spool_decorate", "spooler_functions", "manage_spool_request"]

spooler_functions: dict[str, Callable] = {}


def _encode1(val: Any) -> Any:
    return val.encode("utf-8") if isinstance(val, str) else val


def _decode1(val: Any) -> Any:
    if isinstance(val, bytes):
        try:
            return val.decode("utf-8")
        except UnicodeDecodeError:
            return val       # a binary body: upstream raises here (and the task is retried forever)
    return val


def manage_spool_request(vars: dict) -> int:
    """The spooler function: the decorated function named by the task, its result."""
    vars = {_decode1(k): v for k, v in vars.items()}
    if "args" in vars:
        for k in ("args", "kwargs"):
            vars[k] = pickle.loads(vars.pop(k))
    vars = {_decode1(k): _decode1(v) for k, v in vars.items()}
    f = spooler_functions[vars["ud_spool_func"]]
    if "args" in vars:
        ret = f(*vars["args"], **vars["kwargs"])
    else:
        ret = f(vars)
    return int(vars.get("ud_spool_ret", ret))


class _spoolraw:
    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        arguments = self.base_dict.copy()
        if not self.pass_arguments:
            if len(args) > 0:
                arguments.update(args[0])
            if kwargs:
                arguments.update(kwargs)
        else:
            spooler_args: dict[str, Any] = {}
            for key in ("message_dict", "spooler", "priority", "at", "body"):
                if key in kwargs:
                    spooler_args.update({key: kwargs.pop(key)})
            arguments.update(spooler_args)
            arguments.update({"args": pickle.dumps(args), "kwargs": pickle.dumps(kwargs)})
        return _spool_api.spool({_encode1(k): _encode1(v) for k, v in arguments.items()})

    def spool(self, *args: Any, **kwargs: Any) -> bytes:
        """For backward compatibility (uWSGI < 1.9.13)."""
        return self.__class__.__call__(self, *args, **kwargs)

    def __init__(self, f: Callable, pass_arguments: bool) -> None:
        if state.config is not None and not state.config.spooler:
            raise Exception(f"you have to enable the uWSGI spooler to use @{self.__class__.__name__} decorator")
        self.f = f
        spooler_functions[f.__name__] = f
        f.spool = self.__call__   # type: ignore[attr-defined]
        self.pass_arguments = pass_arguments
        self.base_dict: dict[str, Any] = {"ud_spool_func": f.__name__}


class _spool(_spoolraw):
    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.base_dict["ud_spool_ret"] = str(_spool_api.SPOOL_OK)
        return _spoolraw.__call__(self, *args, **kwargs)


class _spoolforever(_spoolraw):
    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        self.base_dict["ud_spool_ret"] = str(_spool_api.SPOOL_RETRY)
        return _spoolraw.__call__(self, *args, **kwargs)


def spool_decorate(f: Callable | None = None, pass_arguments: bool = False, _class: type = _spoolraw) -> Any:
    if not f:
        return partial(_class, pass_arguments=pass_arguments)
    return _class(f, pass_arguments)


def spoolraw(f: Callable | None = None, pass_arguments: bool = False) -> Any:
    return spool_decorate(f, pass_arguments)


def spool(f: Callable | None = None, pass_arguments: bool = False) -> Any:
    return spool_decorate(f, pass_arguments, _spool)


def spoolforever(f: Callable | None = None, pass_arguments: bool = False) -> Any:
    return spool_decorate(f, pass_arguments, _spoolforever)


def _install() -> None:
    from emperor.api import uwsgi

    uwsgi.spooler = manage_spool_request


_install()
