"""uWSGI's `uwsgidecorators` (uwsgidecorators.py upstream), built on emperor's `uwsgi` module.

The same classes with the same semantics as upstream's (postfork, timer, rbtimer, mstimer,
cron, filemon, signal, lock, thread, harakiri), so an application's decorated functions
behave as under uWSGI. The mule and farm decorators raise at decoration: emperor has no
mules (docs/uwsgi-api.md). The spooler's (@spool, @spoolforever, @spoolraw) come from
emperor.api.spooldeco.
"""
from __future__ import annotations

from threading import Thread

from emperor.api import uwsgi
from emperor.api.spooldeco import *  # noqa: F401,F403  (spool, spoolforever, spoolraw)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

postfork_chain: list[Callable[[], object]] = []


def get_free_signal() -> int:
    for signum in range(0, 256):
        if not uwsgi.signal_registered(signum):
            return signum
    raise Exception("No free uwsgi signal available")


def postfork_chain_hook() -> None:
    for f in postfork_chain:
        f()


uwsgi.post_fork_hook = postfork_chain_hook   # the worker runs it after fork (emperor/worker/process.py)


class postfork:
    """Run the function in each worker after fork (`@postfork(N)`: in worker N only)."""

    def __init__(self, f: Any) -> None:
        if callable(f):
            self.wid = 0
            self.f: Any = f
        else:
            self.f = None
            self.wid = f
        postfork_chain.append(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.f:
            if self.wid > 0 and self.wid != uwsgi.worker_id():
                return None
            return self.f()
        self.f = args[0]
        return None


class signal:
    def __init__(self, num: int, **kwargs: Any) -> None:
        self.num = num
        self.target = kwargs.get("target", "")

    def __call__(self, f: Callable) -> Callable:
        uwsgi.register_signal(self.num, self.target, f)
        return f


class _Armed:
    """A decorator that registers its function for a free (or `signum=`) signal number, then
    arms what raises that signal: the timers, cron and file monitor below."""

    def __init__(self, **kwargs: Any) -> None:
        self.num = kwargs.get("signum", get_free_signal())
        self.target = kwargs.get("target", "")

    def arm(self) -> None:
        raise NotImplementedError

    def __call__(self, f: Callable) -> Callable:
        uwsgi.register_signal(self.num, self.target, f)
        self.arm()
        return f


class timer(_Armed):
    def __init__(self, secs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secs = secs

    def arm(self) -> None:
        uwsgi.add_timer(self.num, self.secs)


class mstimer(_Armed):
    def __init__(self, msecs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.msecs = msecs

    def arm(self) -> None:
        uwsgi.add_ms_timer(self.num, self.msecs)


class cron(_Armed):
    def __init__(self, minute: int, hour: int, day: int, month: int, dayweek: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.minute, self.hour, self.day, self.month, self.dayweek = minute, hour, day, month, dayweek

    def arm(self) -> None:
        uwsgi.add_cron(self.num, self.minute, self.hour, self.day, self.month, self.dayweek)


class rbtimer(_Armed):
    def __init__(self, secs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secs = secs

    def arm(self) -> None:
        uwsgi.add_rb_timer(self.num, self.secs)


class filemon(_Armed):
    def __init__(self, fsobj: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fsobj = fsobj

    def arm(self) -> None:
        uwsgi.add_file_monitor(self.num, self.fsobj)


class lock:
    """The function runs holding uwsgi.lock() (lock 0): one worker (and thread) at a time."""

    def __init__(self, f: Callable) -> None:
        self.f = f

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if uwsgi.i_am_the_spooler():
            return None
        uwsgi.lock()
        try:
            return self.f(*args, **kwargs)
        finally:
            uwsgi.unlock()


class thread:
    """Each call runs the function in a new daemon thread (upstream returns the function)."""

    def __init__(self, f: Callable) -> None:
        self.f = f

    def __call__(self, *args: Any) -> Callable:
        t = Thread(target=self.f, args=args)
        t.daemon = True
        t.start()
        return self.f


class harakiri:
    """The worker is killed if a call takes longer than `seconds` (uwsgi.set_user_harakiri)."""

    def __init__(self, seconds: int) -> None:
        self.s = seconds

    def real_call(self, *args: Any, **kwargs: Any) -> Any:
        uwsgi.set_user_harakiri(self.s)
        r = self.f(*args, **kwargs)
        uwsgi.set_user_harakiri(0)
        return r

    def __call__(self, f: Callable) -> Callable:
        self.f = f
        return self.real_call


class _NoMules:
    """mulefunc, mule, muleloop, mulemsg, farm, rpc: need processes emperor does not have."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError(f"@{type(self).__name__}: emperor has no mules, farms or RPC (docs/uwsgi-api.md)")


class mulefunc(_NoMules):
    pass


class mule(_NoMules):
    pass


class muleloop(_NoMules):
    pass


class mulemsg(_NoMules):
    pass


class farm(_NoMules):
    pass


class rpc(_NoMules):
    pass
