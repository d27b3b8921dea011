"""The emperor: keeps one master per vassal file, reloads it, stops it, restarts it.

One event loop (`Emperor.loop`, epoll) waits on the signal wakeup fd, the
directory watcher and one channel per vassal (a socketpair; the master
reports `spawned`, `ready`, `reloading`, `reload failed …`, `loyal`,
`stopping`, `error …`). Signal handlers only record the signal. Timers
(backoff, stop deadlines, the watcher's debounce) are the poll timeout; the
loop never sleeps, so one vassal's trouble never delays another.

Each vassal's state is a `VassalState`; every change goes through
`Emperor.to`, which logs `[emperor] app.ini: running -> reloading (file changed)`.
The table (`Emperor.vassals`) is plain data, exported by `snapshot()`.
"""
from __future__ import annotations

import collections
import ctypes
import os
import pwd
import select
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from emperor import log as logmod
from emperor import paths
from emperor.config import ConfigError, load_config
from emperor.emperor.control import ControlError, ControlServer
from emperor.emperor.launch import fork_master, fork_preflight, preload
from emperor.master.process import ENV_CHANNEL, ENV_HELD, ENV_PREFLIGHTS, ENV_STATS, INTERNAL_ENV
from emperor.emperor.prometheus import stats_socket
from emperor.emperor.systemd import Notifier
from emperor.signals import SignalQueue, reaped
from emperor.states import VassalState as S
from emperor.emperor.watch import Changes, DirectoryWatcher

log = logmod.log

# The emperor's signal table: signal -> handler method (on_<action>). SPEC 6.3.
SIGNALS: dict[int, str] = {
    signal.SIGTERM: "graceful_shutdown",  # every vassal stops gracefully within --grace, then exit 0
    signal.SIGINT: "stop",                # SIGINT to every master (immediate stop), then exit 0
    signal.SIGQUIT: "stop",
    signal.SIGHUP: "reload_all",          # SIGHUP to every master (graceful reload)
    signal.SIGUSR1: "log_table",
    signal.SIGURG: "clear_backoff",
    signal.SIGWINCH: "rescan",
    signal.SIGCHLD: "reap",               # every child, orphans included (PID 1 / subreaper duty)
}

# Which edges a vassal may take; None is "not in the table" (new file / gone).
EDGES: dict[S | None, set[S | None]] = {
    None: {S.STARTING, S.CONFIG_ERROR, S.BACKOFF},
    S.STARTING: {S.RUNNING, S.RELOADING, S.RELOAD_FAILED, S.STOPPING, S.BACKOFF, S.CONFIG_ERROR, None},
    S.RUNNING: {S.PAUSED, S.RELOADING, S.STOPPING, S.BACKOFF, S.CONFIG_ERROR},
    S.PAUSED: {S.RUNNING, S.RELOADING, S.STOPPING, S.BACKOFF, S.CONFIG_ERROR},
    S.RELOADING: {S.RUNNING, S.RELOAD_FAILED, S.STOPPING, S.BACKOFF, S.CONFIG_ERROR},
    S.RELOAD_FAILED: {S.RUNNING, S.RELOADING, S.STOPPING, S.BACKOFF, S.CONFIG_ERROR},
    S.BACKOFF: {S.STARTING, S.CONFIG_ERROR, None},
    S.CONFIG_ERROR: {S.STARTING, S.RELOADING, S.STOPPING, S.CONFIG_ERROR, None},
    S.STOPPING: {S.STARTING, S.BACKOFF, S.CONFIG_ERROR, None},  # restart after an owner change
}

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STOP_MERCY = 10.0   # a master that has not left this long after SIGINT is SIGKILLed, group and all
PR_SET_CHILD_SUBREAPER = 36
ENV_VASSALS_DIR = "EMPEROR_VASSALS_DIR"
_DROP_ENV = set(INTERNAL_ENV) | {ENV_CHANNEL, ENV_VASSALS_DIR, ENV_STATS, ENV_PREFLIGHTS,
                                 "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}


@dataclass
class Vassal:
    name: str
    path: str
    state: S | None = None
    pid: int | None = None
    generation: int = 0          # the master's UWSGI_RELOADS
    starts: int = 0              # masters started for this file
    backoff: float = 0.0         # the last backoff delay; 0 once it served a request (`loyal`)
    started_at: float = 0.0      # the emperor's clock when its current master was started
    retry_at: float | None = None
    kill_at: float | None = None
    last_event: str = ""
    last_error: str = ""
    errors: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=5))
    since: float = field(default_factory=time.time)
    uid: int | None = None       # what the master runs as (tyrant mode)
    gid: int | None = None
    addresses: set[str] = field(default_factory=set)
    waiting_for: set[str] = field(default_factory=set)  # they hold our ports: start after they left
    stats_address: str = ""      # where its master answers its stats (its `stats`, or our private socket)
    removed: bool = False        # the file is gone: when the master exits, the vassal goes
    restart: bool = False        # start a new master when this one has exited
    spawned: bool = False        # the master has said `spawned`: its signal handlers are in place
    images: int = 0
    channel: socket.socket | None = None
    buf: bytes = b""
    fds: collections.deque[int] = field(default_factory=collections.deque)  # came with its messages
    env: dict[str, str] = field(default_factory=dict)  # what its master was started with

    def snapshot(self, now: float) -> dict:
        return {
            "name": self.name, "path": self.path,
            "state": self.state.value if self.state else "gone",
            "pid": self.pid, "generation": self.generation, "starts": self.starts,
            "backoff": self.backoff,
            "retry_in": round(max(self.retry_at - now, 0.0), 3) if self.retry_at is not None else None,
            "last_event": self.last_event, "last_error": self.last_error,
            "errors": list(self.errors), "since": self.since,
            "uid": self.uid, "gid": self.gid,
            "waiting_for": sorted(self.waiting_for),
            "stats_address": self.stats_address,
        }


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited {code}"


def _prctl(option: int, arg: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _address_key(address: str) -> str:
    """Two vassals clash on a TCP port whatever the host part; UNIX paths clash exactly."""
    if "/" in address or ":" not in address:
        return address
    return "port " + address.rsplit(":", 1)[1]


class Emperor:
    def __init__(self, directory: str, *, grace: float = 30.0, tyrant: bool = False,
                 shutdown_delay: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 launch: Callable[[str, dict[str, str], int, int | None, int | None], int] | None = None,
                 watcher: DirectoryWatcher | None = None, control_path: str | None = None,
                 metrics_address: str | None = None) -> None:
        self.directory = os.path.abspath(directory)
        self.grace = grace
        self.tyrant = tyrant
        self.shutdown_delay = shutdown_delay
        self.clock = clock
        self.launch = launch or fork_master
        self.preload = launch is None   # masters are forks of this process: import their code once
        self.watcher = watcher
        self.vassals: dict[str, Vassal] = {}
        self.signals = SignalQueue(SIGNALS)
        self.pending = self.signals.pending  # the test seam: push a signal, call dispatch_signals()
        self.stopping = ""                 # "", "graceful" or "now"
        self.shutdown_at: float | None = None
        self.started_at = time.time()
        self.ep: select.epoll | None = None
        self.by_fd: dict[int, Vassal] = {}
        self.control_path = control_path
        self.control: ControlServer | None = None
        self.metrics_address = metrics_address
        self.preflights: dict[int, tuple[Vassal, int]] = {}   # preflight pid -> (vassal, its master)
        self.sd = Notifier.from_environ(clock=clock, log=log)  # systemd's READY=1 etc.; also `ready` below

    # ---------- the table ----------
    def snapshot(self) -> dict:
        now = self.clock()
        return {
            "pid": os.getpid(), "directory": self.directory,
            # "draining": SIGTERM came, --shutdown-delay still runs: serving, but not ready
            "state": ("draining" if self.shutdown_at is not None else "stopping") if self.stopping else "running",
            "ready": self.sd.started and not self.stopping,   # emperor/sdnotify.py: the vassals present at start settled
            "tyrant": self.tyrant, "started": self.started_at, "uptime": round(time.time() - self.started_at, 1),
            "vassals": {name: v.snapshot(now) for name, v in sorted(self.vassals.items())},
        }

    def to(self, v: Vassal, new: S | None, why: str) -> None:
        """The one place a vassal changes state; one log line per change."""
        old = v.state
        if new is old and new is not S.CONFIG_ERROR:
            return
        if new not in EDGES[old]:
            log(f"{v.name}: unexpected transition {old.value if old else 'new'} -> "
                f"{new.value if new else 'gone'} ({why})")
        v.state = new
        v.since = time.time()
        v.last_event = why
        log(f"{v.name}: {old.value if old else 'new'} -> {new.value if new else 'gone'}"
            + (f" ({why})" if why else ""))
        if new is None:
            self.vassals.pop(v.name, None)

    # ---------- what the watcher found ----------
    def apply(self, changes: Changes) -> None:
        for name in changes.deleted:       # first: a rename's new name may need the old one's port
            if name in self.vassals:
                self.on_deleted(self.vassals[name])
        for name in changes.changed:
            self.on_file(name, "file changed")
        for name in changes.new:
            self.on_file(name, "new file")

    def on_file(self, name: str, why: str) -> None:
        v = self.vassals.get(name)
        if v is None:
            v = self.vassals[name] = Vassal(name, os.path.join(self.directory, name))
            self.start(v, why)
            return
        if v.removed:
            v.removed, v.restart = False, True
            log(f"{name}: the file is back; starts again once its master has stopped")
            return
        if v.state is S.STOPPING:
            return
        if self.tyrant and v.pid is not None and self._owner_ids(v) != (v.uid, v.gid):
            v.restart = True  # the master runs as the old owner: it must go
            self.stop_master(v, "file owner changed")
            return
        checked = self.check(v)
        if isinstance(checked, str):
            self._config_error(v, checked)
            return
        v.addresses |= checked[0]
        if v.pid is None:
            self.start(v, why)
        else:
            self.reload(v, why)

    def on_deleted(self, v: Vassal) -> None:
        v.removed, v.restart = True, False
        v.retry_at = None
        if v.pid is None:
            self.to(v, None, "file deleted")
        else:
            self.stop_master(v, "file deleted")

    # ---------- acting on one vassal ----------
    def check(self, v: Vassal) -> tuple[set[str], int | None, int | None] | str:
        """(addresses, uid, gid) to start the vassal with, or why it cannot start."""
        uid = gid = None
        if self.tyrant:
            owner = self._owner(v)
            if isinstance(owner, str):
                return owner
            uid, gid = owner
        else:
            distrust = self._distrust(v)
            if distrust:
                return distrust
        try:
            config = load_config(v.path, vassals_dir=self.directory)
        except ConfigError as e:
            return str(e)
        addresses = config.http_sockets + config.uwsgi_sockets + ([config.stats] if config.stats else [])
        # tyrant-mode masters run as someone else and cannot bind in our private runtime dir
        v.stats_address = config.stats or ("" if self.tyrant else stats_socket(v.path) or "")
        return {_address_key(a) for a in addresses}, uid, gid

    def _owner_ids(self, v: Vassal) -> tuple[int, int] | None:
        try:
            st = os.stat(v.path)
        except OSError:
            return None
        return st.st_uid, st.st_gid

    def _owner(self, v: Vassal) -> tuple[int, int] | str:
        try:
            st, lst = os.stat(v.path), os.lstat(v.path)
        except OSError as e:
            return f"{v.name}: {e.strerror}"
        if st.st_uid == 0:
            return f"{v.name}: owned by root; tyrant mode runs a vassal as its file's owner and never as root"
        if st.st_mode & 0o022:
            return (f"{v.name}: writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"tyrant mode refuses it")
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, st.st_uid):
            return f"{v.name}: symlink owned by uid {lst.st_uid} points to a file of uid {st.st_uid}; refused"
        return st.st_uid, st.st_gid

    def _distrust(self, v: Vassal) -> str:
        """Why a file's writers could run code as us, or ''. A vassal file names the code to run."""
        try:
            st = os.stat(v.path)
        except OSError as e:
            return f"{v.name}: {e.strerror}"
        if st.st_mode & 0o002:
            return (f"{v.name}: writable by anyone (mode {stat.S_IMODE(st.st_mode):04o}); refused: "
                    f"whoever writes it would choose the code this emperor runs")
        if os.geteuid() == 0 and st.st_uid != 0:
            try:
                owner = f"uid {st.st_uid} ({pwd.getpwuid(st.st_uid).pw_name})"
            except KeyError:
                owner = f"uid {st.st_uid}"
            return (f"{v.name}: owned by {owner} while the emperor runs as root; refused: its owner would "
                    f"run code as root (chown it to root, or use --tyrant to run it as its owner)")
        return ""

    def _config_error(self, v: Vassal, problem: str) -> None:
        v.last_error = problem
        v.errors.append(problem)
        v.retry_at = None
        log(problem if problem.startswith(v.name) else f"{v.name}: {problem}")
        kept = "; the running generation keeps serving" if v.pid else "; not started"
        self.to(v, S.CONFIG_ERROR, "invalid file" + kept)

    def start(self, v: Vassal, why: str) -> None:
        v.retry_at = None
        if self.stopping:
            return
        checked = self.check(v)
        if isinstance(checked, str):
            self._config_error(v, checked)
            return
        addresses, uid, gid = checked
        v.addresses = addresses
        v.waiting_for = {o.name for o in self.vassals.values()
                         if o is not v and o.pid and o.state is S.STOPPING and o.addresses & addresses}
        if v.waiting_for:
            self.to(v, S.STARTING, f"{why}; waiting for {', '.join(sorted(v.waiting_for))} to free its ports")
            return
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {k: val for k, val in os.environ.items() if k not in _DROP_ENV}
        env[ENV_CHANNEL] = str(child.fileno())
        env[ENV_VASSALS_DIR] = self.directory
        if v.stats_address and v.stats_address == stats_socket(v.path):
            env[ENV_STATS] = v.stats_address  # used by a master whose file has no `stats`
        if self.preload:
            env[ENV_PREFLIGHTS] = "emperor"   # its reload preflights are forks of this process
        v.env = env
        v.started_at = self.clock()
        try:
            pid = self.launch(v.path, env, child.fileno(), uid, gid)
        except OSError as e:
            parent.close()
            v.last_error = f"cannot start its master: {e}"
            self._backoff(v, v.last_error)
            return
        finally:
            child.close()
        parent.setblocking(False)
        v.channel, v.buf = parent, b""
        if self.ep is not None:
            self.ep.register(parent.fileno(), select.EPOLLIN)
        self.by_fd[parent.fileno()] = v
        v.pid, v.uid, v.gid = pid, uid, gid
        v.starts += 1
        v.spawned, v.images, v.generation, v.restart = False, 0, 0, False
        if v.state is S.STARTING:  # it was waiting for ports: no new state, still worth a line
            log(f"{v.name}: master pid {pid} ({why})")
        self.to(v, S.STARTING, f"{why}; master pid {pid}")

    def reload(self, v: Vassal, why: str) -> None:
        if v.pid is None or v.state is S.STOPPING:
            return
        if v.spawned:
            self._kill(v.pid, signal.SIGHUP)
        else:
            # Before `spawned` its handlers may not be installed yet and SIGHUP would
            # kill it; the channel holds the message until its loop reads it.
            self._send(v, "reload")
        self.to(v, S.RELOADING, why)

    def stop_master(self, v: Vassal, why: str, graceful: bool = False) -> None:
        """Graceful: workers finish their requests. Otherwise SIGINT, the whole stack at once."""
        if v.pid is None:
            return
        if not (graceful and self._send(v, "graceful stop")):
            self._kill(v.pid, signal.SIGINT)
        deadline = self.clock() + (self.grace if graceful else STOP_MERCY)
        v.kill_at = deadline if v.kill_at is None else min(v.kill_at, deadline)
        self.to(v, S.STOPPING, why)

    def _backoff(self, v: Vassal, detail: str) -> None:
        if self.clock() - v.started_at >= BACKOFF_MAX:
            v.backoff = 0.0  # it ran longer than any backoff: a crash after a calm, not a loop
        delay = BACKOFF_FIRST if not v.backoff else min(v.backoff * 2, BACKOFF_MAX)
        v.backoff = delay
        v.retry_at = self.clock() + delay
        self.to(v, S.BACKOFF, f"{detail}; retry in {delay:g}s")

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _send(self, v: Vassal, message: str) -> bool:
        if v.channel is None:
            return False
        try:
            v.channel.send(message.encode() + b"\n")
            return True
        except OSError:
            return False

    # ---------- what masters tell us ----------
    def read_channel(self, v: Vassal) -> None:
        eof = False
        while v.channel is not None:
            try:
                data, fds, _, _ = socket.recv_fds(v.channel, 65536, 4)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data, fds = b"", []
            v.fds.extend(fds)
            if not data:
                eof = True
                break
            v.buf += data
        *lines, v.buf = v.buf.split(b"\n")
        for line in lines:
            self.on_message(v, line.decode(errors="replace").strip())
        if eof:
            self._close_channel(v)

    def _close_channel(self, v: Vassal) -> None:
        if v.channel is None:
            return
        fd = v.channel.fileno()
        self.by_fd.pop(fd, None)
        if self.ep is not None:
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
        v.channel.close()
        v.channel = None
        while v.fds:
            os.close(v.fds.popleft())

    def on_message(self, v: Vassal, line: str) -> None:
        word, _, rest = line.partition(" ")
        if line == "spawned":
            v.spawned = True
            v.images += 1
            v.generation = v.images - 1
        elif line == "loyal":
            v.backoff = 0.0  # it served a request: whatever made it crash before is over
        elif line == "ready":
            # Not a backoff reset: a master that gets ready and dies before serving
            # anything (its app fails on the first request, a worker crashes) is a loop.
            if v.state in (S.STARTING, S.RELOADING, S.RELOAD_FAILED):
                v.last_error = ""
                self.to(v, S.RUNNING, "ready" if v.generation == 0 else f"generation {v.generation} ready")
        elif line == "reloading":
            if v.state in (S.STARTING, S.RUNNING, S.PAUSED, S.RELOAD_FAILED):
                self.to(v, S.RELOADING, "the master reloads")
        elif line.startswith("reload failed"):
            v.last_error = line[len("reload failed"):].strip()
            v.errors.append(v.last_error)
            if v.state is not S.STOPPING and v.state is not S.CONFIG_ERROR:
                self.to(v, S.RELOAD_FAILED, v.last_error or "reload failed")
        elif line == "stopping":
            if v.state is not S.STOPPING and v.state is not S.CONFIG_ERROR:
                self.to(v, S.STOPPING, "the master stops")
        elif word == "preflight":
            self.preflight(v, rest)
        elif word == "error":
            v.last_error = rest
            v.errors.append(rest)
        elif line:
            log(f"{v.name}: unknown message from the master: {line[:200]!r}")

    def preflight(self, v: Vassal, held: str) -> None:
        """A master asks for its reload preflight: a fork of us, output to the pipe it sent."""
        if not v.fds or v.pid is None:
            self._send(v, "preflight 1")
            return
        out = v.fds.popleft()
        try:
            pid = fork_preflight(v.path, dict(v.env, **{ENV_HELD: held}), out, v.uid, v.gid)
        except OSError as e:
            os.write(out, f"{v.name}: cannot fork the preflight: {e.strerror}\n".encode())
            self._send(v, "preflight 1")
            return
        finally:
            os.close(out)
        self.preflights[pid] = (v, v.pid)

    def on_exit(self, pid: int, code: int) -> None:
        if pid in self.preflights:
            v, master = self.preflights.pop(pid)
            if v.pid == master:
                self._send(v, f"preflight {code}")
            return
        v = next((x for x in self.vassals.values() if x.pid == pid), None)
        if v is None:
            if os.environ.get("EMPEROR_DEBUG"):
                log(f"reaped orphan {pid} ({_describe(code)})")
            return
        self.read_channel(v)   # its last words (`error …`) may still be unread
        self._close_channel(v)
        _killpg(pid, signal.SIGKILL)  # nothing of its stack may keep the port
        _unlink(stats_socket(v.path))  # its private stats socket, if it had one
        held = v.spawned  # it says `spawned` once its sockets are bound: it held its ports
        v.pid, v.kill_at, v.spawned = None, None, False
        how = _describe(code)
        if self.stopping or v.removed:
            self.to(v, None, how)
        elif v.restart:
            self.start(v, f"restart after {how}")
        elif v.state is S.CONFIG_ERROR:
            log(f"{v.name}: master {how}; starts again once the file is fixed")
        else:
            self._backoff(v, f"{how}: {v.last_error}" if v.last_error else how)
        for w in list(self.vassals.values()):
            if w.waiting_for and w.pid is None:
                w.waiting_for = {n for n in w.waiting_for if n in self.vassals and self.vassals[n].pid}
                if not w.waiting_for:
                    self.start(w, "ports free")
            elif held and w is not v and w.state is S.BACKOFF and w.addresses & v.addresses:
                # it may have failed on a port this master held: try now, not after its backoff
                self.start(w, f"{v.name} left {', '.join(sorted(w.addresses & v.addresses))}")

    # ---------- the signal table's actions ----------
    def on_graceful_shutdown(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = "graceful"
        self.sd.stopping(why)
        if self.shutdown_delay > 0:
            log(f"{why}: vassals keep serving {self.shutdown_delay:g}s more (--shutdown-delay), then stop")
            self.shutdown_at = self.clock() + self.shutdown_delay
        else:
            self._stop_all(why, graceful=True)

    def on_stop(self, why: str) -> None:
        if self.stopping == "now":
            return
        self.stopping, self.shutdown_at = "now", None
        self.sd.stopping(why)
        self._stop_all(why, graceful=False)

    def _stop_all(self, why: str, graceful: bool) -> None:
        log(f"{why}: stopping every vassal{' gracefully' if graceful else ''}")
        for v in list(self.vassals.values()):
            v.retry_at = None
            if v.pid is None:
                self.to(v, None, why)
            else:
                self.stop_master(v, why, graceful=graceful)

    def on_reload_all(self, why: str) -> None:
        targets = [v for v in self.vassals.values() if v.pid is not None and v.state is not S.CONFIG_ERROR]
        if not self.stopping:
            self.sd.reloading(v.name for v in targets)
        for v in targets:
            self.reload(v, why)

    def on_log_table(self, why: str) -> None:
        now = self.clock()
        lines = [f"vassal table ({why}), {len(self.vassals)} vassal(s):"]
        for v in sorted(self.vassals.values(), key=lambda x: x.name):
            line = f"  {v.name}: {v.state.value if v.state else 'gone'}, pid {v.pid or '-'}, " \
                   f"generation {v.generation}, starts {v.starts}"
            if v.retry_at is not None:
                line += f", retry in {max(v.retry_at - now, 0):.1f}s (backoff {v.backoff:g}s)"
            if v.last_error:
                line += f", last error: {v.last_error}"
            lines.append(line)
        log("\n".join(lines))

    def on_clear_backoff(self, why: str) -> None:
        log(f"{why}: clearing every backoff")
        for v in list(self.vassals.values()):
            v.backoff = 0.0
            if v.state is S.BACKOFF:
                self.start(v, f"{why}: backoff cleared")

    def on_rescan(self, why: str) -> None:
        log(f"{why}: rescanning {self.directory}")
        if self.watcher is not None:
            self.watcher.rescan_now()

    def on_reap(self, why: str) -> None:
        for pid, code in reaped():
            self.on_exit(pid, code)

    # ---------- the loop ----------
    def dispatch_signals(self) -> None:
        self.signals.dispatch(self)

    def next_timeout(self) -> float:
        deadlines = [t for v in self.vassals.values() for t in (v.retry_at, v.kill_at) if t is not None]
        if self.shutdown_at is not None:
            deadlines.append(self.shutdown_at)
        if self.sd.deadline() is not None:
            deadlines.append(self.sd.deadline())
        if self.control is not None and (t := self.control.next_deadline()) is not None:
            deadlines.append(t)   # a status request waiting for its masters' stats
        now = self.clock()
        if self.watcher is not None and not self.stopping:
            deadlines.append(now + self.watcher.timeout())
        if not deadlines:
            return -1
        return max(min(deadlines) - now, 0.0)

    def run_timers(self) -> None:
        now = self.clock()
        if self.shutdown_at is not None and now >= self.shutdown_at:
            self.shutdown_at = None
            self._stop_all("SIGTERM", graceful=True)
        for v in list(self.vassals.values()):
            if v.retry_at is not None and now >= v.retry_at:
                self.start(v, "backoff over")
            if v.kill_at is not None and now >= v.kill_at and v.pid:
                log(f"{v.name}: master {v.pid} still there after its deadline: SIGKILL to its process group")
                _killpg(v.pid, signal.SIGKILL)
                v.kill_at = None
        if self.watcher is not None and not self.stopping:
            changes = self.watcher.changes()
            if changes:
                self.apply(changes)
        if self.control is not None:
            self.control.run_timers()

    def setup(self) -> None:
        logmod.set_prefix("[emperor]")
        if os.getpid() == 1:
            # PID 1 gets no default signal actions: every handler is installed below.
            log("running as PID 1: reaping every orphan")
        elif not _prctl(PR_SET_CHILD_SUBREAPER, 1):
            log("cannot become a child subreaper: orphaned workers will go to init")
        if self.preload:
            preload()
        self.wake_r = self.signals.install()
        self.ep = select.epoll()
        self.ep.register(self.wake_r, select.EPOLLIN)
        if self.watcher is None:
            self.watcher = DirectoryWatcher(self.directory, log=log)
        if self.watcher.fileno() is not None:
            self.ep.register(self.watcher.fileno(), select.EPOLLIN)
        for v in self.vassals.values():
            if v.channel is not None:
                self.ep.register(v.channel.fileno(), select.EPOLLIN)
        if self.control_path or self.metrics_address:
            # the control socket and --metrics: one inner epoll, answered from this loop
            self.control = ControlServer(self.control_path, self.on_control,
                                         metrics_address=self.metrics_address, clock=self.clock)
            self.ep.register(self.control.fileno(), select.EPOLLIN)
        log(f"watching {self.directory} (pid {os.getpid()}{', tyrant mode' if self.tyrant else ''})")

    def loop(self) -> int:
        while True:
            self.dispatch_signals()
            self.sd.update(self.vassals, scanned=False)   # an exit seen here may restart before the next look
            if self.stopping and self.shutdown_at is None and not any(v.pid for v in self.vassals.values()):
                for pid in self.preflights:   # their masters are gone: nobody waits for them
                    _killpg(pid, signal.SIGKILL)
                log("every vassal has stopped: bye")
                return 0
            try:
                events = self.ep.poll(self.next_timeout())
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd == self.wake_r:
                    pass  # dispatch_signals() drains it at the top of the loop
                elif fd in self.by_fd:
                    self.read_channel(self.by_fd[fd])
                elif self.control is not None and fd == self.control.fileno():
                    self.control.on_readable()
            self.run_timers()
            self.sd.update(self.vassals)   # systemd's READY=1/STATUS=, and `ready` in the status

    def on_control(self, request: str) -> dict:
        """A control-socket request: `status` (default) or `restart NAME`."""
        verb, _, arg = request.partition(" ")
        if verb == "restart":
            return self.on_restart_request(arg.strip())
        return self.snapshot()

    def on_restart_request(self, name: str) -> dict:
        v = self.vassals.get(name)
        if v is None:
            return {"ok": False, "error": f"no vassal named {name!r}"}
        log(f"{name}: restart requested over the control socket")
        v.backoff = 0.0
        v.retry_at = None
        self.on_file(name, "emperor restart")
        return {"ok": True, "state": v.state.value if v.state else "gone"}

    def run(self) -> int:
        self.setup()
        try:
            return self.loop()
        finally:
            if self.control is not None:
                self.control.close()


def _unlink(path: str | None) -> None:
    try:
        if path:
            os.unlink(path)
    except OSError:
        pass


def run_emperor(args) -> int:
    directory = os.path.abspath(args.directory)
    try:
        os.listdir(directory)
    except OSError as e:
        print(f"emperor: vassals directory {directory}: {e.strerror}", file=sys.stderr)
        return 1
    if args.tyrant and os.geteuid() != 0:
        print("emperor: --tyrant runs each vassal as its file's owner and needs root", file=sys.stderr)
        return 1
    if args.grace < 0:
        print("emperor: --grace must not be negative", file=sys.stderr)
        return 2
    emperor = Emperor(directory, grace=args.grace, tyrant=args.tyrant,
                      shutdown_delay=getattr(args, "shutdown_delay", 0.0) or 0.0,
                      control_path=getattr(args, "control", None) or paths.control_socket(directory),
                      metrics_address=getattr(args, "metrics", None))
    try:
        return emperor.run()
    except ControlError as e:  # raised by setup, before any vassal starts
        print(f"emperor: {e}", file=sys.stderr)
        return 1
