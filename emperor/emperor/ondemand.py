"""On-demand vassals: the emperor holds a vassal's listening sockets and starts its master
at the first connection; `idle` + `die-on-idle` takes it back to no master at all.

uWSGI's Emperor does this for `--emperor-on-demand-directory DIR` (the socket
`DIR/NAME.socket`) and `--emperor-on-demand-extension EXT` (the socket named in
`NAME.ini` + EXT), core/emperor.c on_demand_bind / emperor_check_on_demand_socket /
emperor_back_to_ondemand; emperor adds `on-demand = true` in the file itself, which
holds the file's own `socket` / `http-socket` / `https-socket` addresses.

The emperor binds them and watches them in its loop (EPOLLIN, never accept):
the first readable event unwatches them and starts the master with the sockets
inherited, exactly as a reload hands them to the next image
(emperor/wire/handoff.py), so the connection that woke us waits in the listen
queue and the master's workers accept it. The emperor keeps its own copy: when
the master leaves (idle), the queue stays, and the sockets are watched again
once it has exited, so a connection that came meanwhile starts the next one.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import stat
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from emperor import log as logmod
from emperor import sockets
from emperor.emperor.vassals import Vassal
from emperor.states import VassalState
from emperor.wire import handoff

if TYPE_CHECKING:
    from emperor.config import Config

log = logmod.log

EXT_MAX = 4096   # bytes read from a NAME.ini.EXT file: it names one socket
EXEC_REFUSED = ("--emperor-on-demand-exec is not supported: it runs a command per vassal file in the "
                "emperor to name its socket; use --emperor-on-demand-extension or on-demand = true")


class OnDemand:
    """The sockets the emperor holds for on-demand vassals, and their place in its epoll."""

    def __init__(self, *, directory: str | None = None, extension: str | None = None,
                 tyrant: bool = False, watch: Callable[[int], None] = lambda fd: None,
                 unwatch: Callable[[int], None] = lambda fd: None) -> None:
        self.directory = os.path.abspath(directory) if directory else None
        self.extension = extension or None
        self.tyrant = tyrant
        self.watch, self.unwatch = watch, unwatch   # the emperor's epoll (EPOLLIN)
        self.fds: dict[int, Vassal] = {}            # armed listening fd -> its vassal
        # name -> (what to hold, listen backlog, chmod-socket, chown-socket), from its file
        self.plans: dict[str, tuple[list[tuple[str, str]], int, str | None, str | None]] = {}

    # ---------- which sockets ----------
    def flag_address(self, path: str) -> str | None:
        """The socket `emperor run`'s flag names for vassal file `path`, None if none.

        uWSGI: the extension's file holds the address up to its first control
        character; the directory gives DIR/NAME.socket, NAME the file name up to its last dot.
        """
        if self.extension:
            try:   # untrusted: a FIFO or a device there must not block or feed the emperor
                fd = os.open(path + self.extension, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                data = os.read(fd, EXT_MAX) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
            except OSError:
                data = b""
            finally:
                os.close(fd)
            text = data.decode("utf-8", "replace")
            end = next((i for i, c in enumerate(text) if ord(c) < 32), len(text))
            return text[:end] or None
        if self.directory:
            base = os.path.basename(path)
            if "." not in base:
                return None
            return os.path.join(self.directory, base.rsplit(".", 1)[0] + ".socket")
        return None

    def wanted(self, v: Vassal, config: Config) -> list[tuple[str, str]]:
        """(kind, address) the emperor holds for this vassal; [] when it is not on demand."""
        own = [w for w in sockets.wanted(config) if w[0] != sockets.STATS]
        flag = self.flag_address(v.path)
        if flag is not None:
            # the file's own kind for that address if it names it; else its `protocol` (uwsgi by
            # default), as for uWSGI's fd 0 (core/socket.c uwsgi_bind_sockets)
            default = sockets.HTTP if config.protocol == "http" else sockets.UWSGI
            return [next((w for w in own if w[1] == flag), (default, flag))]
        return own if config.on_demand else []

    # ---------- what the emperor's Masters ask ----------
    def plan(self, v: Vassal, config: Config) -> None:
        """Its file was read: remember what to hold and how to bind it."""
        want = self.wanted(v, config)
        if want:
            self.plans[v.name] = (want, config.listen, config.chmod_socket, config.chown_socket)
        else:
            self.plans.pop(v.name, None)

    def hold(self, v: Vassal, why: str, uid: int | None, gid: int | None) -> bool | str:
        """Before a master starts. False: start it (not on demand, or a connection waits: the
        sockets go to it). True: the sockets are held and watched, no master. A str: cannot bind."""
        plan = self.plans.get(v.name)
        if plan is None:
            self.release(v)   # not (or no longer) on demand
            return False
        v.uid, v.gid = uid, gid   # tyrant mode: who its UNIX sockets' files are given to
        try:
            self.sync(v, *plan)
        except (sockets.SocketError, OSError) as e:
            return str(e) if isinstance(e, sockets.SocketError) else f"on-demand socket: {e.strerror or e}"
        if v.wanted_now:
            v.wanted_now = False
            return False
        self.arm(v)
        v.to(VassalState.ON_DEMAND, f"{why}; waiting for a connection on {', '.join(l.address for l in v.held)}")
        return True

    def back(self, v: Vassal, code: int) -> bool:
        """Its master exited: True when it goes back to on-demand (left by itself: idle) now."""
        return bool(v.held) and code == 0

    # ---------- holding them ----------
    def sync(self, v: Vassal, want: list[tuple[str, str]], backlog: int, chmod: str | None,
             chown: str | None) -> None:
        """Keep what is still wanted, bind what is new, close what went: a touch on an idle
        vassal rebinds only what changed. Raises sockets.SocketError."""
        held = {(l.kind, l.address): l for l in v.held}
        kept: list[sockets.Listener] = []
        try:
            for kind, address in want:
                listener = held.pop((kind, address), None)
                if listener is None:
                    with self._as_owner(v):
                        listener = sockets.bind(kind, address, backlog, chmod, chown)
                    log(f"{v.name}: on-demand {kind} socket {address} bound")
                kept.append(listener)
        except (sockets.SocketError, OSError):
            new = [l for l in kept if (l.kind, l.address) not in {(h.kind, h.address) for h in v.held}]
            for l in new:
                self._close(l)
            raise
        for listener in held.values():
            self.disarm_one(listener.fd)
            with self._as_owner(v):
                self._close(listener)
        v.held = kept

    def env(self, v: Vassal, env: dict[str, str]) -> None:
        """What a master of an on-demand vassal starts with: our sockets, inherited."""
        if v.held:
            env[handoff.SOCKETS] = ";".join(f"{l.fd}={l.kind}={l.address}" for l in v.held)
            env[handoff.ON_DEMAND] = handoff.held([(l.kind, l.address) for l in v.held])

    def arm(self, v: Vassal) -> None:
        for l in v.held:
            if l.fd not in self.fds:
                self.fds[l.fd] = v
                self.watch(l.fd)

    def disarm(self, v: Vassal) -> None:
        for l in v.held:
            self.disarm_one(l.fd)

    def disarm_one(self, fd: int) -> None:
        if self.fds.pop(fd, None) is not None:
            self.unwatch(fd)

    def release(self, v: Vassal) -> None:
        """The file is gone (or the emperor stops): close ours, the port is free once its master left."""
        for l in v.held:
            self.disarm_one(l.fd)
            with self._as_owner(v):
                self._close(l)
        v.held = []
        v.wanted_now = False
        self.plans.pop(v.name, None)

    def on_readable(self, fd: int) -> Vassal | None:
        """A connection waits on `fd`: the vassal whose master must start now (unwatched until it exits)."""
        v = self.fds.get(fd)
        if v is None:
            return None
        self.disarm(v)
        v.cold_starts += 1
        v.last_start = time.time()
        v.wanted_now = True
        return v

    @contextlib.contextmanager
    def _as_owner(self, v: Vassal) -> Iterator[None]:
        """Tyrant mode: bind (and remove a socket file) as the vassal file's owner, as its master
        would have: the file names the addresses, so root's privileges (ports below 1024,
        directories only root may write) must not be lent to it. The emperor is one thread:
        its effective ids change for that moment only."""
        if not self.tyrant or v.uid is None or os.geteuid() != 0:
            yield
            return
        gid = v.gid if v.gid is not None else v.uid
        groups, egid = os.getgroups(), os.getegid()
        try:
            os.setgroups(os.getgrouplist(pwd.getpwuid(v.uid).pw_name, gid))
        except KeyError:
            os.setgroups([gid])
        os.setegid(gid)
        os.seteuid(v.uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(egid)
            os.setgroups(groups)

    @staticmethod
    def _close(listener: sockets.Listener) -> None:
        listener.sock.close()
        if sockets.is_path(listener.address):
            sockets.remove_stale_unix(listener.address)   # ours is closed: nobody listens there now
