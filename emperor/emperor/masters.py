"""The vassal table, and what the emperor does to each vassal's master.

Files come in (`apply`), masters are started, reloaded, stopped and restarted
with a capped backoff, and what a master says on its channel moves its
vassal's state. Everything here is a step the emperor's loop takes: nothing
waits, and the clock, the launcher and the loop's epoll are given from
outside (the test seam: `Emperor(clock=, launch=)`).
"""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

from emperor import log as logmod
from emperor import paths, sockets
from emperor.config import ConfigError, load_config
from emperor.emperor import trust
from emperor.emperor.launch import fork_preflight
from emperor.emperor.ondemand import OnDemand
from emperor.emperor.vassals import Vassal
from emperor.emperor.watch import Changes
from emperor.files import Scarce
from emperor.proc import describe_exit, killpg_quietly, signal_quietly
from emperor.states import VassalState as S
from emperor.wire import channel, handoff

log = logmod.log

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STOP_MERCY = 10.0   # a master that has not left this long after SIGINT is SIGKILLed, group and all
MAX_WARNINGS = 50   # of a vassal file's warnings kept for `emperor status`
# What no master inherits from the emperor's own environment.
DROP_ENV = set(handoff.INTERNAL) | set(handoff.FROM_EMPEROR) | set(handoff.SYSTEMD)

Launch = Callable[[str, dict[str, str], int, "int | None", "int | None"], int]


def address_key(address: str) -> str:
    """Two vassals clash on a TCP port whatever the host part; UNIX paths clash exactly."""
    if "/" in address or ":" not in address:
        return address
    return "port " + address.rsplit(":", 1)[1]


class Masters:
    def __init__(self, directory: str, *, launch: Launch, clock: Callable[[], float], tyrant: bool,
                 grace: float, preflights_here: bool, watch: Callable[[int, Vassal], None],
                 unwatch: Callable[[int], None], stopping: Callable[[], bool],
                 graceful_removal: bool = False, strict_compat: bool = False,
                 on_demand: OnDemand | None = None) -> None:
        self.directory = directory
        self.launch = launch
        self.clock = clock
        self.tyrant = tyrant
        self.grace = grace
        self.preflights_here = preflights_here   # masters are our forks: we fork their preflights too
        self.watch, self.unwatch = watch, unwatch  # the emperor's epoll, for each master's channel
        self.stopping = stopping
        self.graceful_removal = graceful_removal
        self.strict_compat = strict_compat   # --strict-compat: unsupported uWSGI options refused
        self.vassals: dict[str, Vassal] = {}
        self.preflights: dict[int, tuple[Vassal, int, str]] = {}   # pid -> (vassal, its master, seq)
        self.od = on_demand or OnDemand()   # the sockets we hold for on-demand vassals
        self.environ: dict[str, str] | None = None   # while apply() runs

    def to(self, v: Vassal, new: S | None, why: str) -> None:
        v.to(new, why)
        if new is None:
            self.vassals.pop(v.name, None)
            self.od.release(v)

    def by_pid(self, pid: int) -> Vassal | None:
        return next((x for x in self.vassals.values() if x.pid == pid), None)

    # ---------- what the watcher found ----------
    def apply(self, changes: Changes) -> None:
        # one copy of our environment for the whole batch: each file reads it ($(VAR), UWSGI_*), and
        # os.environ decodes every key at each look (a thousand new files at start-up)
        self.environ = dict(os.environ)
        for name in changes.deleted:       # first: a rename's new name may need the old one's port
            if name in self.vassals:
                self.on_deleted(self.vassals[name])
        for name in changes.changed:
            self.on_file(name, "file changed")
        for name in changes.new:
            self.on_file(name, "new file")
        self.environ = None

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
        if self.tyrant and v.pid is not None and trust.owner_ids(v.path) != (v.uid, v.gid):
            v.restart = True  # the master runs as the old owner: it must go
            self.stop_master(v, "file owner changed")
            return
        checked = self.check(v)
        if isinstance(checked, (str, Scarce)):
            self._config_error(v, checked)
            return
        v.addresses |= checked[0]
        if v.pid is None:
            self.start(v, why)
        else:
            self.reload(v, why)

    def on_deleted(self, v: Vassal) -> None:
        """SIGINT, uWSGI's way: in-flight requests are cut. With --graceful-removal (or the
        file's own `graceful-removal = true`): stop accepting, finish them within the grace."""
        v.removed, v.restart = True, False
        v.retry_at = None
        graceful = self.graceful_removal if v.graceful_removal is None else v.graceful_removal
        if v.pid is None:
            self.to(v, None, "file deleted")
        else:
            self.stop_master(v, "file deleted" + (", gracefully" if graceful else ""), graceful=graceful)

    # ---------- acting on one vassal ----------
    def check(self, v: Vassal) -> tuple[set[str], int | None, int | None] | str | Scarce:
        """(addresses, uid, gid) to start the vassal with, or why it cannot start (Scarce: now)."""
        owner = trust.check(v.path, v.name, self.tyrant)
        if isinstance(owner, str):
            return owner
        v.trust = trust.rule(self.tyrant, owner[0])
        try:
            config = load_config(v.path, vassals_dir=self.directory, trust=v.trust, environ=self.environ,
                                 strict_compat=self.strict_compat, given_socket=self.od.flag_address(v.path) is not None)
        except ConfigError as e:
            for problem in e.problems[1:]:   # the first is the vassal's error, logged with its state
                log(problem if problem.startswith(v.name) else f"{v.name}: {problem}")
            return str(e)
        except Scarce as e:
            return e
        except Exception as e:  # a bug of ours in reading a hostile file costs that vassal alone
            return f"{v.name}: cannot read: {type(e).__name__}: {e}"
        v.warnings = config.warnings[:MAX_WARNINGS]
        v.graceful_removal = config.graceful_removal
        self.od.plan(v, config)
        # a master that drops privileges can no longer remove its root-owned socket files:
        # with `vacuum`, we do it once it has gone
        v.vacuum = [a for a in config.http_sockets + config.uwsgi_sockets if sockets.is_path(a)] \
            if config.vacuum and (config.uid or config.gid) and os.geteuid() == 0 else []
        if v.state is S.CONFIG_ERROR:  # fixed: the error is history, not the vassal's news
            v.last_error = ""
            v.errors.clear()
        addresses = config.http_sockets + config.uwsgi_sockets + ([config.stats] if config.stats else [])
        # tyrant-mode masters run as someone else and cannot bind in our private runtime dir
        v.stats_address = config.stats or ("" if self.tyrant else paths.stats_socket(v.path) or "")
        return {address_key(a) for a in addresses}, owner[0], owner[1]

    def _config_error(self, v: Vassal, problem: str | Scarce) -> None:
        if isinstance(problem, Scarce):   # out of descriptors: a failed start, not the file's fault
            v.fail(f"cannot read its file now: {problem}")
            if v.pid is None:
                self._backoff(v, v.last_error)
            else:
                log(f"{v.name}: {v.last_error}: not reloaded; the running generation keeps serving")
            return
        v.fail(problem)
        v.retry_at = None
        log(problem if problem.startswith(v.name) else f"{v.name}: {problem}")
        kept = "; the running generation keeps serving" if v.pid else "; not started"
        self.to(v, S.CONFIG_ERROR, "invalid file" + kept)

    def start(self, v: Vassal, why: str) -> None:
        v.retry_at = None
        if self.stopping():
            return
        checked = self.check(v)
        if isinstance(checked, (str, Scarce)):
            self._config_error(v, checked)
            return
        addresses, uid, gid = checked
        v.addresses = addresses
        v.waiting_for = {o.name for o in self.vassals.values()
                         if o is not v and o.pid and o.state is S.STOPPING and o.addresses & addresses}
        if v.waiting_for:
            self.to(v, S.STARTING, f"{why}; waiting for {', '.join(sorted(v.waiting_for))} to free its ports")
            return
        held = self.od.hold(v, why, uid, gid)   # on demand: no master until a connection comes
        if held:
            if isinstance(held, str):   # cannot bind: a failure as a master's, its backoff grows
                v.fail(held)
                v.started_at = self.clock()
                self._backoff(v, held)
            return
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:  # out of descriptors: this vassal waits, the others are not touched
            v.fail(f"cannot start its master: {e.strerror}")
            self._backoff(v, v.last_error)
            return
        env = {k: val for k, val in os.environ.items() if k not in DROP_ENV}
        env[handoff.CHANNEL] = str(child.fileno())
        env[handoff.VASSALS_DIR] = self.directory
        env[handoff.TRUST] = v.trust.export()
        if self.strict_compat:
            env[handoff.STRICT_COMPAT] = "1"
        if v.stats_address and v.stats_address == paths.stats_socket(v.path):
            env[handoff.STATS_SOCKET] = v.stats_address  # used by a master whose file has no `stats`
        if self.preflights_here:
            env[handoff.PREFLIGHTS] = "emperor"   # its reload preflights are forks of this process
        self.od.env(v, env)
        v.env = env
        v.started_at = self.clock()
        try:
            pid = self.launch(v.path, env, child.fileno(), uid, gid)
        except OSError as e:
            parent.close()
            v.fail(f"cannot start its master: {e.strerror or e}")
            self._backoff(v, v.last_error)
            return
        finally:
            child.close()
        parent.setblocking(False)
        v.channel, v.buf = parent, type(v.buf)()
        self.watch(parent.fileno(), v)
        v.pid, v.uid, v.gid = pid, uid, gid
        v.starts += 1
        v.spawned, v.images, v.generation, v.restart, v.restored = False, 0, 0, False, False
        if v.state is S.STARTING:  # it was waiting for ports: no new state, still worth a line
            log(f"{v.name}: master pid {pid} ({why})")
        self.to(v, S.STARTING, f"{why}; master pid {pid}")

    def reload(self, v: Vassal, why: str) -> None:
        if v.pid is None or v.state is S.STOPPING:
            return
        if v.spawned:
            signal_quietly(v.pid, signal.SIGHUP)
        else:
            # Before `spawned` its handlers may not be installed yet and SIGHUP would
            # kill it; the channel holds the message until its loop reads it.
            v.send(channel.RELOAD)
        self.to(v, S.RELOADING, why)

    def stop_master(self, v: Vassal, why: str, graceful: bool = False) -> None:
        """Graceful: workers finish their requests. Otherwise SIGINT, the whole stack at once."""
        if v.pid is None:
            return
        if not (graceful and v.send(channel.GRACEFUL_STOP)):
            signal_quietly(v.pid, signal.SIGINT)
        deadline = self.clock() + (self.grace if graceful else STOP_MERCY)
        v.kill_at = deadline if v.kill_at is None else min(v.kill_at, deadline)
        self.to(v, S.STOPPING, why)

    def stop_all(self, why: str, graceful: bool) -> None:
        for v in list(self.vassals.values()):
            v.retry_at = None
            if v.pid is None:
                self.to(v, None, why)
            else:
                self.stop_master(v, why, graceful=graceful)

    def _backoff(self, v: Vassal, detail: str) -> None:
        if self.clock() - v.started_at >= BACKOFF_MAX:
            v.backoff = 0.0  # it ran longer than any backoff: a crash after a calm, not a loop
        delay = BACKOFF_FIRST if not v.backoff else min(v.backoff * 2, BACKOFF_MAX)
        v.backoff = delay
        v.retry_at = self.clock() + delay
        self.to(v, S.BACKOFF, f"{detail}; retry in {delay:g}s")

    def clear_backoff(self, why: str) -> None:
        for v in list(self.vassals.values()):
            v.backoff = 0.0
            if v.state is S.BACKOFF:
                self.start(v, f"{why}: backoff cleared")

    # ---------- what masters tell us ----------
    def read(self, v: Vassal) -> None:
        try:
            messages, eof = v.receive()
        except channel.ProtocolError as e:
            v.fail(f"its master broke the channel protocol ({e}): killed")
            log(f"{v.name}: {v.last_error}")
            self.close_channel(v)
            if v.pid:
                killpg_quietly(v.pid, signal.SIGKILL)  # its exit is a crash: backoff, as any crash
            return
        for word, text in messages:
            self.on_message(v, word, text)
        if eof:
            self.close_channel(v)

    def close_channel(self, v: Vassal) -> None:
        fd = v.close_channel()
        if fd is not None:
            self.unwatch(fd)

    def on_message(self, v: Vassal, word: str, text: str = "") -> None:
        if word == channel.SPAWNED:
            v.spawned = True
            v.images += 1
            v.generation = int(text) if text.isdigit() else v.images - 1
        elif word == channel.LOYAL:
            v.backoff = 0.0  # it served a request: whatever made it crash before is over
        elif word == channel.READY:
            # Not a backoff reset: a master that gets ready and dies before serving
            # anything (its app fails on the first request, a worker crashes) is a loop.
            if text.isdigit():
                v.generation, v.restored = int(text), False
            if v.state in (S.STARTING, S.RELOADING, S.RELOAD_FAILED, S.FAILING):
                v.last_error = ""
                self.to(v, S.RUNNING, "ready" if v.generation == 0 else f"generation {v.generation} ready")
        elif word == channel.FAILING:
            v.fail(text)
            if v.state in (S.STARTING, S.RUNNING, S.PAUSED, S.RELOADING, S.RELOAD_FAILED, S.FAILING):
                self.to(v, S.FAILING, text)
        elif word == channel.RESTORED:
            v.generation, v.restored = int(text) if text.isdigit() else v.generation, True
            v.rollbacks += 1
            v.last_event = f"rolled back to generation {v.generation} (SIGURG); the file on disk is newer"
            log(f"{v.name}: {v.last_event}")
        elif word == channel.RELOADING:
            if v.state in (S.STARTING, S.RUNNING, S.PAUSED, S.RELOAD_FAILED):
                self.to(v, S.RELOADING, "the master reloads")
        elif word == channel.RELOAD_FAILED:
            v.fail(text)
            if v.state is not S.STOPPING and v.state is not S.CONFIG_ERROR:
                self.to(v, S.RELOAD_FAILED, v.last_error or "reload failed")
        elif word == channel.STOPPING:
            if v.state is not S.STOPPING and v.state is not S.CONFIG_ERROR:
                # asked to reload, it stops (exit-on-reload): start it again at once, no backoff
                v.restart = v.restart or v.state is S.RELOADING
                self.to(v, S.STOPPING, "the master stops")
        elif word == channel.PREFLIGHT:
            preflight(self.preflights, v, text)
        elif word == channel.ERROR:
            v.fail(text)
        elif text:
            log(f"{v.name}: unknown message from the master: {text[:200]!r}")

    def on_exit(self, pid: int, code: int) -> None:
        if pid in self.preflights:
            v, master, seq = self.preflights.pop(pid)
            if v.pid == master:
                v.send(channel.PREFLIGHT, f"{seq} {code}")
            return
        found = self.by_pid(pid)
        if found is None:
            if os.environ.get("EMPEROR_DEBUG"):
                log(f"reaped orphan {pid} ({describe_exit(code)})")
            return
        v = found
        self.read(v)   # its last words (`error …`) may still be unread
        self.close_channel(v)
        killpg_quietly(pid, signal.SIGKILL)  # nothing of its stack may keep the port
        _unlink(paths.stats_socket(v.path))  # its private stats socket, if it had one
        for path in v.vacuum:
            sockets.remove_stale_unix(path)   # only a socket nobody listens on
        held = v.spawned  # it says `spawned` once its sockets are bound: it held its ports
        v.pid, v.kill_at, v.spawned = None, None, False
        how = describe_exit(code)
        if self.stopping() or v.removed:
            self.to(v, None, how)
        elif v.restart or self.od.back(v, code):
            self.start(v, f"restart after {how}" if v.restart else f"master {how}: back to on-demand")
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

    # ---------- timers ----------
    def deadlines(self) -> list[float]:
        return [t for v in self.vassals.values() for t in (v.retry_at, v.kill_at) if t is not None]

    def run_timers(self, now: float) -> None:
        for v in list(self.vassals.values()):
            if v.retry_at is not None and now >= v.retry_at:
                self.start(v, "backoff over")
            if v.kill_at is not None and now >= v.kill_at and v.pid:
                log(f"{v.name}: master {v.pid} still there after its deadline: SIGKILL to its process group")
                killpg_quietly(v.pid, signal.SIGKILL)
                v.kill_at = None

    def kill_preflights(self) -> None:
        for pid in self.preflights:   # their masters are gone: nobody waits for them
            killpg_quietly(pid, signal.SIGKILL)


def preflight(preflights: dict[int, tuple[Vassal, int, str]], v: Vassal, text: str) -> None:
    """A master asks for its reload preflight (`SEQ HELD`, with the output pipe as a
    descriptor): a fork of us. One per vassal: a new request, or `cancel`, ends the
    running one, whose result is then never reported."""
    for pid, (w, _, _) in list(preflights.items()):
        if w is v:
            killpg_quietly(pid, signal.SIGKILL)
            del preflights[pid]
    if text == "cancel":
        return
    seq, _, held = text.partition(" ")
    if not v.fds or v.pid is None:
        v.send(channel.PREFLIGHT, f"{seq} 1")
        return
    out = v.fds.popleft()
    try:
        pid = fork_preflight(v.path, dict(v.env, **{handoff.HELD: held}), out, v.uid, v.gid)
    except OSError as e:
        os.write(out, f"{v.name}: cannot fork the preflight: {e.strerror}\n".encode())
        v.send(channel.PREFLIGHT, f"{seq} 1")
        return
    finally:
        os.close(out)
    preflights[pid] = (v, v.pid, seq)


def _unlink(path: str | None) -> None:
    try:
        if path:
            os.unlink(path)
    except OSError:
        pass
