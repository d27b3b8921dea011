"""TLS on an HTTP socket the workers serve: `https-socket = ADDRESS,CERT,KEY[,CIPHERS[,CLIENT_CA]]`
(uWSGI core/uwsgi.c uwsgi_opt_add_ssl_socket, core/ssl.c uwsgi_ssl_new_server_context) and
SNI (`sni = HOST,CERT,KEY[,CIPHERS[,CLIENT_CA]]`, `sni-dir`; ssl.c uwsgi_sni_cb).

The master makes the contexts before it drops privileges (a key only root reads works, as
with uWSGI) and its workers inherit them. A graceful reload re-executes the master, which
reads the files again: a renewed certificate is served by the next generation, and the
reload's preflight loads it first, so a broken one fails the reload, never the vassal.

In a worker, a connection's socket is a `TLSSocket`: the same recv/send calls as the
plain socket, so the core, the protocols and WSGI do not know. It runs OpenSSL over memory
buffers and moves the bytes itself, with MSG_DONTWAIT as everywhere; a send returns once
its ciphertext is in the kernel (waiting at most socket-timeout without progress, as a plain
send does), so no encrypted byte is ever left behind in a buffer nobody flushes.
"""
from __future__ import annotations

import _socket
import os
import re
import select
import socket
import ssl

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.config import Config
    from emperor.sockets import Listener

CHUNK = 64 * 1024          # plaintext encrypted per send: four TLS records
MAX_SNI_DIR = 256          # contexts sni-dir may load in one worker
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_NOWAIT = socket.MSG_DONTWAIT


class TLSError(Exception):
    """A certificate, key or cipher list that cannot be used; str() names the option and file."""


def split_spec(text: str) -> tuple[str, str, str, str, str]:
    """ADDRESS_OR_HOST,CERT,KEY[,CIPHERS[,CLIENT_CA]] -> its five parts ('' when absent)."""
    parts = [p.strip() for p in text.split(",", 4)]
    if len(parts) < 3 or not all(parts[:3]):
        raise ValueError("expected ADDRESS,CERT,KEY[,CIPHERS[,CLIENT_CA]]")
    parts += [""] * (5 - len(parts))
    return parts[0], parts[1], parts[2], parts[3], parts[4]


def server_context(what: str, cert: str, key: str, ciphers: str = "", client_ca: str = "",
                   tlsv1: bool = False) -> ssl.SSLContext:
    """Python's server defaults (TLS 1.2 and 1.3, forward-secret AEAD ciphers, no compression,
    no renegotiation); CIPHERS replaces the TLS 1.2 list and makes the server's order win, as
    in uWSGI; CLIENT_CA asks for a client certificate, and `!CA` requires one (ssl.c)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if tlsv1:   # ssl-enable-tlsv1: as uWSGI's flag (insecure; OpenSSL's security level may still refuse)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise TLSError(f"{what}: cannot load certificate {cert} and key {key}: "
                       f"{getattr(e, 'strerror', None) or e}") from None
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TLSError(f'{what}: no cipher matches "{ciphers}"') from None
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if client_ca:
        required = client_ca.startswith("!")
        try:
            ctx.load_verify_locations(client_ca.lstrip("!"))
        except (OSError, ssl.SSLError) as e:
            raise TLSError(f"{what}: cannot load client CA {client_ca.lstrip('!')}: "
                           f"{getattr(e, 'strerror', None) or e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class SNI:
    """The contexts SNI chooses from: `sni` lines by exact name, then `sni-dir`'s NAME.crt and
    NAME.key (and NAME.ca) loaded on first use, as uWSGI's uwsgi_sni_cb looks them up."""

    def __init__(self, config: Config) -> None:
        self.tlsv1 = config.ssl_enable_tlsv1
        self.by_name: dict[str, ssl.SSLContext] = {}
        for line in config.sni:
            host, cert, key, ciphers, ca = split_spec(line)
            self.by_name[host.lower()] = server_context(f"sni {host}", cert, key, ciphers, ca, self.tlsv1)
        self.directory = config.sni_dir
        self.dir_ciphers = config.sni_dir_ciphers or ""
        self.loaded: dict[str, ssl.SSLContext | None] = {}

    def choose(self, tls: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        if not name:
            return
        name = name.lower()
        chosen = self.by_name.get(name)
        if chosen is None and self.directory:
            chosen = self.from_directory(name)
        if chosen is not None:
            tls.context = chosen

    def from_directory(self, name: str) -> ssl.SSLContext | None:
        """A name is looked up once; only a plain host name is ever made into a path."""
        if name in self.loaded:
            return self.loaded[name]
        if not _HOSTNAME.fullmatch(name) or ".." in name or len(self.loaded) >= MAX_SNI_DIR:
            return None
        base = os.path.join(self.directory or "", name)
        chosen = None
        if os.path.isfile(base + ".crt") and os.path.isfile(base + ".key"):
            ca = base + ".ca" if os.path.isfile(base + ".ca") else ""
            try:
                chosen = server_context(f"sni-dir {name}", base + ".crt", base + ".key", self.dir_ciphers, ca,
                                        self.tlsv1)
            except TLSError:
                chosen = None
        self.loaded[name] = chosen
        return chosen


def attach(listeners: list[Listener], config: Config) -> None:
    """Give each https-socket listener its context (the master, before dropping privileges);
    with none, only check that every context can be made (a reload's preflight)."""
    specs = {}
    for line in config.https_sockets:
        address, cert, key, ciphers, ca = split_spec(line)
        specs[address] = (cert, key, ciphers, ca)
    sni = SNI(config) if config.sni or config.sni_dir else None
    if not listeners:
        for address, (cert, key, ciphers, ca) in specs.items():
            server_context(f"https-socket {address}", cert, key, ciphers, ca, config.ssl_enable_tlsv1)
    for listener in listeners:
        cert, key, ciphers, ca = specs[listener.address]
        ctx = server_context(f"https-socket {listener.address}", cert, key, ciphers, ca, config.ssl_enable_tlsv1)
        if sni is not None:
            ctx.sni_callback = sni.choose
        listener.tls = ctx


class TLSSocket:
    """A client connection's socket speaking TLS, with the plain socket's recv/send(data, flags)."""

    __slots__ = ("raw", "obj", "inc", "out", "timeout", "shook")

    def __init__(self, ctx: ssl.SSLContext, raw: _socket.socket, timeout: float) -> None:
        self.raw = raw
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.timeout = timeout
        self.shook = False

    # ---- what Conn and the core call ----
    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def family(self) -> int:
        return int(self.raw.family)

    def setsockopt(self, *args: int) -> None:
        self.raw.setsockopt(*args)

    def getsockname(self) -> object:
        return self.raw.getsockname()

    def gettimeout(self) -> float | None:
        return self.raw.gettimeout()

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)

    def close(self) -> None:
        self.raw.close()

    def recv(self, n: int, flags: int = 0) -> bytes:
        """Plaintext, up to n bytes; BlockingIOError when none is there yet (the handshake
        included); b'' when the client closed. A TLS error is an OSError (ssl.SSLError)."""
        if flags & socket.MSG_PEEK:
            if self.obj.pending():
                return b"x"
            return self.raw.recv(1, flags)
        while True:
            try:
                if not self.shook:
                    self.obj.do_handshake()
                    self.shook = True
                    self._flush()
                data = self.obj.read(n)
                while len(data) < n and self.obj.pending():
                    data += self.obj.read(n - len(data))
                return data
            except ssl.SSLWantReadError:
                self._flush()   # what the handshake has to say
                chunk = self.raw.recv(65536, _NOWAIT)   # BlockingIOError: nothing yet
                if not chunk:
                    return b""
                self.inc.write(chunk)
            except ssl.SSLZeroReturnError:
                return b""

    def send(self, data: bytes | memoryview, flags: int = 0) -> int:
        """Encrypt up to CHUNK bytes of `data` and hand all their ciphertext to the kernel."""
        chunk = data[:CHUNK]
        n = self.obj.write(chunk)
        self._flush()
        return n

    def shutdown(self, how: int) -> None:
        try:
            self.obj.unwrap()   # close_notify: the client's reply is not waited for
        except ssl.SSLError:
            pass
        try:
            self._flush()
        except OSError:
            pass
        self.raw.shutdown(how)

    def _flush(self) -> None:
        """Every pending ciphertext byte into the kernel, waiting at most `timeout` without progress."""
        data = self.out.read()
        view = memoryview(data)
        poll = None
        while view:
            try:
                view = view[self.raw.send(view, _NOWAIT):]
            except BlockingIOError:
                if poll is None:
                    poll = select.poll()
                    poll.register(self.raw.fileno(), select.POLLOUT)
                if not poll.poll(self.timeout * 1000):
                    raise TimeoutError(f"no progress for {self.timeout:g}s") from None
