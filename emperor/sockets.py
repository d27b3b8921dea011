"""Listening sockets: bound once, inherited across every `execve`.

A reload must never close and re-bind a socket: the kernel keeps queueing
connections on a listening socket only while it stays open. The master hands
its sockets to its next image (emperor/wire/handoff.py); systemd's LISTEN_FDS
is honoured too.
"""
from __future__ import annotations

import errno
import os
import socket
import stat

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.config import Config

HTTP = "http"
HTTPS = "https"   # HTTP over TLS (emperor/tls.py): served by the workers as HTTP
UWSGI = "uwsgi"
STATS = "stats"


class SocketError(Exception):
    """A socket could not be bound; str() is one line naming the address."""


class Listener:
    """A bound, listening socket and what it serves."""

    __slots__ = ("kind", "address", "sock", "tls", "proxy", "timeout")

    def __init__(self, kind: str, address: str, sock: socket.socket) -> None:
        self.kind = kind          # HTTP, HTTPS or UWSGI
        self.address = address    # as written in the config (the identity across reloads)
        self.sock = sock
        self.tls: object = None   # HTTPS: its ssl.SSLContext (emperor/tls.py attach)
        self.proxy = False        # a PROXY protocol header may open its connections (worker/proxyproto.py)
        self.timeout = 4.0        # socket-timeout, or http-timeout for an HTTP socket (set by the worker)

    def __repr__(self) -> str:
        return f"Listener({self.kind!r}, {self.address!r}, fd {self.sock.fileno()})"

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    @property
    def family(self) -> int:
        return int(self.sock.family)

    @property
    def is_unix(self) -> bool:
        return self.sock.family == socket.AF_UNIX


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """'host:port', ':port', '[::1]:port', a UNIX path, or '@name' (Linux's abstract
    namespace, as uWSGI's core/socket.c reads it) -> (family, sockaddr)."""
    if address.startswith("@"):
        return socket.AF_UNIX, "\0" + address[1:]
    if "/" in address or ":" not in address:
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    if not host or host == "*":
        host = "0.0.0.0"
    return socket.AF_INET, (host, int(port))


def is_path(address: str) -> bool:
    """A UNIX socket with a file (not an abstract name, not TCP)."""
    return not address.startswith("@") and ("/" in address or ":" not in address)


def own(address: str, chmod: str | None = None, chown: str | None = None) -> None:
    """`chmod-socket` and `chown-socket` (user[:group], names or numbers) on a UNIX socket's file:
    after a bind, and again after every reload, so that an edited value takes effect."""
    if not is_path(address):
        return
    if chmod:
        os.chmod(address, int(chmod, 8))
    if chown:
        import grp
        import pwd

        user, _, group = chown.partition(":")
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid if user else -1
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid if group else -1
        except KeyError:
            raise OSError(errno.EINVAL, f"chown-socket {chown}: no such user or group") from None
        os.chown(address, uid, gid)


def bind(kind: str, address: str, backlog: int, chmod: str | None = None, chown: str | None = None) -> Listener:
    family, addr = parse_address(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if is_path(address):
            remove_stale_unix(address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        own(address, chmod, chown)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e)).lower()
        raise SocketError(f"cannot bind {kind} socket {address}: {why}") from None
    sock.setblocking(False)
    sock.set_inheritable(True)
    return Listener(kind, address, sock)


def remove_stale_unix(path: str) -> bool:
    """Remove a UNIX socket file nobody listens on; False if someone does (a conflict).

    Anything else at `path` is left alone: the bind that follows fails with a clear error.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISSOCK(st.st_mode):
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return True
    finally:
        probe.close()
    return False


def wanted(config: Config, private_stats: str | None = None,
           on_demand: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> list[tuple[str, str]]:
    """(kind, address) of every socket a vassal's master listens on, in order.

    `private_stats`: the emperor's stats socket for a vassal without `stats`; `on_demand`: the
    sockets its emperor holds for it (emperor/emperor/ondemand.py), served whatever the file says.
    """
    out = [(HTTP, a) for a in config.http_sockets] + [(UWSGI, a) for a in config.uwsgi_sockets]
    if config.https_sockets:
        from emperor.tls import split_spec

        out += [(HTTPS, split_spec(spec)[0]) for spec in config.https_sockets]
    out += [x for x in sorted(on_demand) if x not in out]
    stats = config.stats or private_stats
    if stats:
        out.append((STATS, stats))
    return out


def systemd_sockets(environ: dict[str, str]) -> list[socket.socket]:
    """Sockets from systemd socket activation, if they were meant for this process."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    n = int(environ.pop("LISTEN_FDS", "0") or 0)
    environ.pop("LISTEN_PID", None)
    environ.pop("LISTEN_FDNAMES", None)
    return [socket.socket(fileno=3 + i) for i in range(n)]


def _same_address(sock: socket.socket, address: str) -> bool:
    family, addr = parse_address(address)
    if sock.family != family:
        return False
    name = sock.getsockname()
    if isinstance(addr, str):
        return bool(name == addr)
    return tuple(name[:2]) == addr or (addr[1] == name[1] and addr[0] in ("0.0.0.0", "::"))


def open_listeners(want: list[tuple[str, str]], backlog: int, inherited: dict[tuple[str, str], socket.socket],
                   environ: dict[str, str], chmod: str | None = None, chown: str | None = None) -> list[Listener]:
    """Adopt inherited sockets that are still wanted, bind new ones, close dropped ones.

    A socket is reused only if it is the same kind at the same address: a reload
    that changes a socket's address really moves it. `inherited` is emptied.
    """
    activated = systemd_sockets(environ)
    out: list[Listener] = []
    for kind, address in want:
        sock = inherited.pop((kind, address), None)
        if sock is None:
            for cand in activated:
                if _same_address(cand, address):
                    sock = cand
                    activated.remove(cand)
                    break
        if sock is not None:
            sock.setblocking(False)
            sock.set_inheritable(True)
            try:
                sock.listen(backlog)  # a changed `listen` takes effect on reload
            except OSError:
                pass
            try:
                own(address, chmod, chown)  # and so do chmod-socket and chown-socket
            except OSError as e:
                raise SocketError(f"{address}: chmod-socket/chown-socket: {e.strerror or e}") from None
            out.append(Listener(kind, address, sock))
        else:
            out.append(bind(kind, address, backlog, chmod, chown))
    for (kind, address), sock in inherited.items():
        _close_dropped(address, sock)
    inherited.clear()
    for sock in activated:
        sock.close()
    return out


def _close_dropped(address: str, sock: socket.socket) -> None:
    family = sock.family
    sock.close()
    if family == socket.AF_UNIX and is_path(address):
        try:
            os.unlink(address)
        except OSError:
            pass


def vacuum(listeners: list[Listener], keep: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> None:
    """`vacuum`: remove the files of our UNIX sockets (not those in `keep`: an on-demand
    vassal's, which its emperor holds for the next master)."""
    for l in listeners:
        if is_path(l.address) and (l.kind, l.address) not in keep:
            try:
                os.unlink(l.address)
            except OSError:
                pass


def prepare(listeners: list[Listener], config: Config) -> None:
    """What the serving sockets need once bound, before the master drops privileges:
    TCP_DEFER_ACCEPT, and https-socket's certificates (emperor/tls.py). With no listener (a
    reload's preflight), only whether every certificate loads."""
    defer_accept(listeners, 0 if config.no_defer_accept else config.socket_timeout)
    if config.https_sockets:
        from emperor import tls

        try:
            tls.attach([l for l in listeners if l.kind == HTTPS], config)
        except tls.TLSError as e:
            raise SocketError(str(e)) from None


def defer_accept(listeners: list[Listener], seconds: int) -> None:
    """TCP_DEFER_ACCEPT: a connection reaches accept() only once its request bytes arrived.

    Both protocols we serve start with the client talking, so a worker's first
    read after accept() then always finds the request: no failed read, no
    epoll registration and wait for the common one-request connection (nginx's
    `uwsgi_pass`, `Connection: close`), and a client that connects and says
    nothing costs no worker at all. `seconds` bounds the wait (socket-timeout).
    """
    for l in listeners:
        if l.sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                # 0 (no-defer-accept) clears it on a socket a reload inherited
                l.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(int(seconds), 1) if seconds else 0)
            except OSError:
                pass


def inode(sock: socket.socket) -> int:
    """The kernel socket's inode: proof that a reload kept the same socket."""
    return os.fstat(sock.fileno()).st_ino
