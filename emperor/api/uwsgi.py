"""The `uwsgi` module as uWSGI's Python plugin exposes it (plugins/python/uwsgi_pymodule.c).

Imported by an application as `import uwsgi` (emperor.api installs the alias). Values are
what uWSGI 2.0.31 gives, checked against the real binary: `opt` has str keys and bytes
values (a repeated option: its last value, a command-line flag: True), `version` and
`hostname` are bytes, `workers()` is a tuple of dicts with bytes `status`. What needs mules
or uWSGI's C internals raises ValueError with a sentence (docs/uwsgi-api.md lists them).
Facts that differ per worker are read at call time from emperor.api.state, which each
worker sets after fork: a value the app stored at import in the master is the master's.
"""
from __future__ import annotations

import os
import socket as _socket
import threading
import time

from emperor import log as _logmod
from emperor import reload as _reload
from emperor.api import state as _state
from emperor.api.usignal import *  # noqa: F401,F403  (register_signal, signal, add_timer, ...)

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from collections.abc import Callable

# "2.0.31": the uWSGI release whose API and behaviour this follows (apps test the version to
# pick features); "-emperor" as the stats document says, and as uWSGI marks its own builds
# ("2.1-dev-..."), so `version.split(b".")[:2]` still reads 2.0.
version = b"2.0.31-emperor"
version_info = (2, 0, 31, 0, b"emperor")
hostname = _socket.gethostname().encode()
_config = _state.config
numproc = _config.processes if _config else 1
cores = _config.threads if _config else 1
buffer_size = _config.buffer_size if _config else 4096
has_threads = 1
started_on = int(time.time())   # as uWSGI: when this image started (a reload re-executes it)
magic_table: dict = {}
is_a_reload = os.environ.get("UWSGI_RELOADS", "0") not in ("", "0")   # a bool, as in uWSGI (not a call)
applications = None
post_fork_hook: Callable[[], object] | None = None   # set by uwsgidecorators; run in each worker after fork


def _opt() -> dict[str, object]:
    """uwsgi.opt: the options as the file gave them (the 2.0.31 binary: str keys, bytes values,
    the last value of a repeated option; `ini` is the vassal file, as uWSGI's emperor passes it)."""
    c = _state.config
    if c is None:
        return {}
    out: dict[str, object] = {"ini": c.path.encode()}
    for name, value in c.given:
        out[name] = value.encode("utf-8", "surrogateescape")
    return out


opt = _opt()


# ---------- process facts ----------
def worker_id() -> int:
    return _state.worker_id


def mule_id() -> int:
    return 0


def masterpid() -> int:
    return _state.master_pid or os.getpid()


def i_am_the_spooler() -> bool | None:
    """None here; the spooler's processes get emperor.api.spool's (imported last, below)."""
    return None


def ready() -> bool | None:
    """The server is up: every worker of its first generation was forked."""
    return True if _state.worker_id else None


def accepting(value: bool = True) -> None:
    """uWSGI marks the worker accepting for its stats; emperor's workers say so themselves."""
    return None


def total_requests() -> int:
    """Requests served by this vassal's current workers (uWSGI: the master's counter)."""
    board = _state.board
    if board is None:
        return 0
    return sum(c["requests"] for s in range(board.workers) for c in board.worker(s)["cores"])


def request_id() -> int:
    """Requests the current thread's core finished before this one (uWSGI: cores[].requests)."""
    counters = getattr(_state.local, "counters", None)
    return counters.requests if counters is not None else 0


def mem() -> tuple[int, int]:
    """(RSS, VSZ) of this process, in bytes."""
    from emperor.proc import memory

    return memory(os.getpid())


def micros() -> int:
    return time.time_ns() // 1000


def is_connected(fd: int) -> bool:
    """Whether `fd` is a socket with a peer."""
    try:
        s = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        s.getpeername()
        return True
    except OSError:
        return False
    finally:
        s.close()


def log(message: str | bytes) -> bool:
    """One line in the vassal's log, as written (no prefix)."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    _logmod.write_raw(text + "\n")
    return True


def set_logvar(key: str, value: str) -> None:
    """A value for `%(KEY)` in this request's log-format line (emperor/worker/reqlog.py)."""
    environ = getattr(_state.local, "environ", None)
    if environ is not None:
        environ.setdefault("emperor.logvars", {})[str(key)] = str(value)


def get_logvar(key: str) -> bytes | None:
    """The value set_logvar gave `key` in this request, as bytes (uWSGI 2.0.31 does so)."""
    environ = getattr(_state.local, "environ", None)
    value = (environ.get("emperor.logvars") or {}).get(str(key)) if environ is not None else None
    return value.encode() if value is not None else None


def setprocname(name: str) -> None:
    """This process's title in ps."""
    from emperor.proc import set_command_line

    set_command_line(str(name))


def reload() -> bool:
    """uwsgi.reload(): a graceful reload of this vassal (as emperor.reload())."""
    if _state.worker_id == 0:   # in the master, while it loads the app: nothing to reload yet
        return False
    return _reload()


def stop() -> bool | None:
    """uwsgi.stop(): SIGQUIT to the master, as uWSGI (py_uwsgi_stop): the vassal stops now."""
    import signal as _signal

    if not _state.master_pid or _state.worker_id == 0:
        return None
    try:
        os.kill(_state.master_pid, _signal.SIGQUIT)
    except OSError:
        return None
    return True


def workers() -> tuple[dict, ...]:
    """The stats document's worker list (uWSGI's shape: bytes status), from the scoreboard."""
    board = _state.board
    if board is None:
        return ()
    out = []
    for slot in range(board.workers):
        w = board.worker(slot)
        requests = sum(c["requests"] for c in w["cores"])
        rt = sum(c["rt_sum"] for c in w["cores"])
        busy = any(c["busy_since"] for c in w["cores"])
        status = b"cheap" if not w["pid"] else b"pause" if w["paused"] else b"busy" if busy else b"idle"
        from emperor.proc import memory

        rss, vsz = memory(w["pid"] or None)
        out.append({"id": slot + 1, "pid": w["pid"], "requests": requests, "delta_requests": 0, "signals": 0,
                    "exceptions": sum(c["exceptions"] for c in w["cores"]), "status": status, "rss": rss,
                    "vsz": vsz, "running_time": rt, "last_spawn": int(w["last_spawn"]),
                    "respawn_count": w["respawn_count"], "tx": sum(c["tx"] for c in w["cores"]),
                    "avg_rt": rt // requests if requests else 0,
                    "apps": ({"id": 0, "modifier1": 0, "mountpoint": b"", "startup_time": 0,
                              "requests": requests, "exceptions": 0,
                              "chdir": ((_config.chdir if _config else None) or "").encode()},)})
    return tuple(out)


# ---------- locks (emperor/wire/uarea.py) ----------
_thread_locks: dict[int, threading.Lock] = {}
_held: set[int] = set()


def _lock_number(num: int) -> int:
    limit = _state.config.locks if _state.config else 0
    if not isinstance(num, int) or not 0 <= num <= limit:
        raise ValueError("Invalid lock number")
    if _state.area is None:
        raise ValueError("uwsgi locks need `import uwsgi` when the application loads "
                         "(it was first imported later, after the workers forked)")
    return num


def lock(num: int = 0) -> None:
    """Take lock `num` (0..locks), shared by every worker of the vassal and their threads."""
    num = _lock_number(num)
    assert _state.area is not None
    t = _thread_locks.setdefault(num, threading.Lock())
    t.acquire()
    _state.area.lock(num)
    _held.add(num)


def unlock(num: int = 0) -> None:
    num = _lock_number(num)
    assert _state.area is not None
    if num not in _held:
        return
    _held.discard(num)
    _state.area.unlock(num)
    _thread_locks[num].release()


def is_locked(num: int = 0) -> bool:
    num = _lock_number(num)
    assert _state.area is not None
    return num in _held or _state.area.held_elsewhere(num)


def set_user_harakiri(seconds: int) -> None:
    """Kill this worker if it is still at it `seconds` from now (0: never mind)."""
    area = _state.area
    if area is None or _state.worker_id == 0:
        return
    slot = _state.worker_id - 1
    if seconds > 0:
        area.set_deadline(slot, time.monotonic() + seconds)
        _state.tell({"op": "harakiri"})
    else:
        area.set_deadline(slot, 0.0)


def cl() -> int:
    """The current request's CONTENT_LENGTH."""
    environ = getattr(_state.local, "environ", None)
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) if environ is not None else 0
    except ValueError:
        return 0


def set_warning_message(message: str) -> bool:
    """uWSGI shows it in its stats; accepted here."""
    return True


def listen_queue(index: int = 0) -> int:
    """Connections waiting in the `index`th listening socket's queue (TCP only, else 0)."""
    import struct

    worker = _state.worker
    listeners = getattr(worker, "listeners", [])
    if not 0 <= index < len(listeners) or listeners[index].sock.family not in (_socket.AF_INET, _socket.AF_INET6):
        return 0
    try:
        info = listeners[index].sock.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_INFO, 104)
    except OSError:
        return 0
    return struct.unpack_from("<I", info, 24)[0]   # tcpi_unacked: the accept queue of a listener


# ---------- what needs mules or uWSGI internals ----------
def _no_mules(*args: object, **kwargs: object) -> None:
    raise ValueError("emperor has no mules (uWSGI's mule processes): see docs/uwsgi-api.md")


mule_msg = mule_get_msg = farm_msg = farm_get_msg = in_farm = _no_mules

# uWSGI 2.0.31's names emperor does not provide (docs/uwsgi-api.md): still an AttributeError
# (hasattr() stays False for an app that probes), with a sentence saying so
_ABSENT = frozenset(
    "add_var alarm async_connect async_sleep call chunked_read chunked_read_nb close connect connection_fd "
    "disconnect embedded_data env extract green_schedule i_am_the_lord log_this_request logsize loop "
    "lord_scroll metric_dec metric_div metric_get metric_inc metric_mul metric_set metric_set_max "
    "metric_set_min offload parsefile ready_fd recv register_rpc rpc rpc_list scrolls send sendfile "
    "sockets start_response suspend unbit wait_fd_read wait_fd_write websocket_handshake websocket_recv "
    "websocket_recv_nb websocket_send websocket_send_binary".split())


def __getattr__(name: str) -> object:
    if name in _ABSENT:
        raise AttributeError(f"uwsgi.{name} is not provided by emperor (see docs/uwsgi-api.md)")
    raise AttributeError(f"module 'uwsgi' has no attribute {name!r}")


# Last, so that the spooler's and the cache's names win over the fallbacks above.
from emperor.api.cache import *  # noqa: F401,F403,E402  (cache_get, cache_set, ...)
from emperor.api.spool import *  # noqa: F401,F403,E402  (spool, SPOOL_OK, ...)
