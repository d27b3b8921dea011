"""https-socket and SNI as uWSGI reads them (core/uwsgi.c uwsgi_opt_add_ssl_socket, core/ssl.c
uwsgi_ssl_new_server_context and uwsgi_sni_cb; docs HTTPS.rst, SNI.rst), served by the workers.

Certificates are made in the test with openssl (Debian's; skipped, saying so, without it): a
test CA and leaf certificates for 127.0.0.1 and names under it. Clients are Python's ssl
module with the CA as its only trust anchor, and curl. Every process is killed by PID.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import free_port, wait_for

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found (Debian package openssl)")]

APP = r'''
import json, os
def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        body = b"0123456789abcdef" * 65536   # 1 MiB
    elif environ["PATH_INFO"] == "/file":
        f = open(__file__, "rb")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](f)
    else:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.dumps({"scheme": environ["wsgi.url_scheme"], "https": environ.get("HTTPS"),
                           "read": len(environ["wsgi.input"].read(n)) if n else 0,
                           "pid": os.getpid(), "version": open(os.environ["VERSION_FILE"]).read()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class CA:
    """A test certificate authority in `d`: leaf(name) -> (cert path, key path)."""

    def __init__(self, d: Path) -> None:
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=emperor test CA", "-days", "2", cwd=d)
        self.cert = d / "ca.crt"

    def leaf(self, name: str, cn: str | None = None, san: str = "") -> tuple[Path, Path]:
        cn = cn or name
        san = san or (f"IP:{name}" if name[0].isdigit() else f"DNS:{name}")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=self.d)
        (self.d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=self.d)
        return self.d / f"{name}.crt", self.d / f"{name}.key"

    def client(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return ctx


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CA:
    return CA(tmp_path_factory.mktemp("ca"))


def start(procs, tmp_path: Path, body: str, wait: bool = True):
    (tmp_path / "tlsapp.py").write_text(APP)
    (tmp_path / "version").write_text("v1")
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nchdir = {tmp_path}\nmodule = tlsapp\nprocesses = 2\nenv = VERSION_FILE={tmp_path}/version\n"
                   + body)
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    if wait:
        m.wait_log("running (workers ready)", timeout=20)
    m.ini = ini
    return m


def request(ctx: ssl.SSLContext, port: int, path: str = "/", host: str = "127.0.0.1", body: bytes = b"",
            conn: ssl.SSLSocket | None = None, close: bool = True) -> tuple[int, bytes, ssl.SSLSocket]:
    """One HTTP/1.1 request over TLS (on `conn` if given); (status, body, the TLS socket)."""
    if conn is None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = ctx.wrap_socket(raw, server_hostname=host)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    conn.sendall((head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, data
        data += chunk
    head_bytes, rest = data.split(b"\r\n\r\n", 1)
    lines = head_bytes.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(rest) < want:
            chunk = conn.recv(65536)
            assert chunk
            rest += chunk
    else:
        while chunk := conn.recv(65536):
            rest += chunk
    return int(lines[0].split()[1]), rest, conn


def test_https_socket_serves_wsgi_over_tls_with_keep_alive_bodies_and_files(procs, tmp_path, ca):
    """HTTPS.rst: `https-socket = ADDRESS,CERT,KEY`; the application sees wsgi.url_scheme https
    and HTTPS=on (uWSGI sets HTTPS for SSL sockets)."""
    cert, key = ca.leaf("127.0.0.1")
    port = free_port()
    start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{cert},{key}\n")
    ctx = ca.client()
    status, body, conn = request(ctx, port, body=b"x" * 200_000, close=False)
    doc = json.loads(body)
    assert status == 200 and doc["scheme"] == "https" and doc["https"] == "on" and doc["read"] == 200_000
    assert conn.version() in ("TLSv1.2", "TLSv1.3") and conn.selected_alpn_protocol() in (None, "http/1.1")
    status, body, conn = request(ctx, port, "/big", conn=conn, close=False)      # the same connection
    assert status == 200 and body == b"0123456789abcdef" * 65536
    status, body, _ = request(ctx, port, "/file", conn=conn)                    # wsgi.file_wrapper
    assert status == 200 and body == (tmp_path / "tlsapp.py").read_bytes()
    conn.close()
    r = subprocess.run(["curl", "-sS", "--cacert", str(ca.cert), f"https://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["scheme"] == "https", r.stderr


def test_plain_http_or_a_broken_handshake_costs_one_connection(procs, tmp_path, ca):
    cert, key = ca.leaf("127.0.0.1")
    port = free_port()
    m = start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{cert},{key}\nprocesses = 1\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""          # closed: no TLS, no answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")   # a handshake record that is no ClientHello
        s.recv(100)                                  # an alert, or the close: not a hang
    status, _, _ = request(ca.client(), port)
    assert status == 200 and "Traceback" not in m.log


def test_sni_chooses_the_certificate_by_name_and_sni_dir_loads_one_on_demand(procs, tmp_path, ca):
    """SNI.rst: `sni = NAME,CERT,KEY`; `sni-dir = DIR` has NAME.crt and NAME.key (core/ssl.c
    uwsgi_sni_cb looks there when no sni line matches)."""
    default = ca.leaf("127.0.0.1")
    one = ca.leaf("one.test")
    sni_dir = tmp_path / "sni"
    sni_dir.mkdir()
    two = ca.leaf("two.test")
    shutil.copy(two[0], sni_dir / "two.test.crt")
    shutil.copy(two[1], sni_dir / "two.test.key")
    port = free_port()
    start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{default[0]},{default[1]}\n"
                           f"sni = one.test,{one[0]},{one[1]}\nsni-dir = {sni_dir}\n")
    ctx = ca.client()
    for host in ("one.test", "two.test"):
        status, _, conn = request(ctx, port, host=host)   # verifies the certificate for `host`
        assert status == 200
        assert dict(x[0] for x in conn.getpeercert()["subject"])["commonName"] == host
    with pytest.raises(ssl.SSLCertVerificationError):
        request(ctx, port, host="three.test")                         # the default: 127.0.0.1's


def test_sni_dir_makes_a_path_only_of_a_plain_host_name(tmp_path, ca):
    """A client chooses the name: uWSGI joins it to sni-dir as it is; here only a host name
    (letters, digits, dots, dashes; no '..') is ever looked up, and at most MAX_SNI_DIR of them."""
    from emperor.config import Config
    from emperor.tls import SNI

    two = ca.leaf("two.test")
    (tmp_path / "sni").mkdir()
    shutil.copy(two[0], tmp_path / "sni" / "two.test.crt")
    shutil.copy(two[1], tmp_path / "sni" / "two.test.key")
    shutil.copy(two[0], tmp_path / "outside.crt")
    shutil.copy(two[1], tmp_path / "outside.key")
    c = Config(str(tmp_path / "app.ini"), "app.ini")
    c.sni_dir = str(tmp_path / "sni")
    sni = SNI(c)
    assert sni.from_directory("two.test") is not None
    for name in ("../outside", "..", "a/../../outside", "two.test/", "-x", ".hidden"):
        assert sni.from_directory(name) is None, name


def test_a_renewed_certificate_is_served_after_a_graceful_reload_with_no_failed_request(procs, tmp_path, ca):
    """Certificates are read when the master image starts: a touch (here SIGHUP) after renewing
    the files makes the next generation serve the new one; requests all along succeed."""
    cert, key = ca.leaf("127.0.0.1", cn="first")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    port = free_port()
    m = start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{live_cert},{live_key}\n")
    ctx = ca.client()
    failures: list = []
    seen: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _, conn = request(ctx, port)
                seen.add(dict(x[0] for x in conn.getpeercert()["subject"])["commonName"])
                if status != 200:
                    failures.append(status)
            except Exception as e:   # any failure at all is what this test is about
                failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: "first" in seen, timeout=20)
        cert2, key2 = ca.leaf("127.0.0.1", cn="second")
        shutil.copy(cert2, live_cert)
        shutil.copy(key2, live_key)
        m.signal(signal.SIGHUP)
        m.wait_log("generation 1 ready", timeout=30)
        wait_for(lambda: "second" in seen, timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    status, _, conn = request(ctx, port)
    assert dict(x[0] for x in conn.getpeercert()["subject"])["commonName"] == "second"


def test_a_certificate_that_cannot_be_loaded_is_one_line_at_start_and_fails_only_the_reload(procs, tmp_path, ca):
    cert, key = ca.leaf("127.0.0.1")
    port = free_port()
    m = start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{tmp_path}/missing.crt,{key}\n", wait=False)
    m.wait_log(f"https-socket 127.0.0.1:{port}: cannot load certificate {tmp_path}/missing.crt", timeout=20)
    assert m.popen.wait(20) == 1 and "Traceback" not in m.log
    # a running vassal whose renewed files are broken keeps serving the ones it has
    live = tmp_path / "live.crt"
    shutil.copy(cert, live)
    port = free_port()
    m = start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{live},{key}\n")
    live.write_text("not a certificate\n")
    m.signal(signal.SIGHUP)
    m.wait_log("reload failed, generation 0 keeps serving", timeout=30)
    assert request(ca.client(), port)[0] == 200 and "Traceback" not in m.log


def test_a_client_ca_with_bang_requires_a_client_certificate(procs, tmp_path, ca):
    """ssl.c: CLIENT_CA `!file` sets SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT."""
    cert, key = ca.leaf("127.0.0.1")
    client_cert, client_key = ca.leaf("client.test")
    port = free_port()
    start(procs, tmp_path, f"https-socket = 127.0.0.1:{port},{cert},{key},,!{ca.cert}\n")
    ctx = ca.client()
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        request(ctx, port)
    ctx.load_cert_chain(client_cert, client_key)
    assert request(ctx, port)[0] == 200


UWSGI = Path(sys.executable).parent / "uwsgi"


@pytest.mark.parametrize("server", ["emperor", pytest.param("uwsgi", marks=pytest.mark.skipif(
    not UWSGI.exists(), reason="no uWSGI in the venv"))])
def test_https_spelling_alone_serves_tls_as_under_uwsgi(procs, tmp_path, ca, server):
    """HTTPS.rst `https = ADDRESS,CERT,KEY` (plugins/http/http.c: the HTTP router's option, read
    by plugins/http/https.c uwsgi_opt_https as ADDRESS,CERT,KEY[,CIPHERS[,CA]]): uWSGI
    proxies from its router, emperor's workers serve it themselves; either way the file with only
    this line serves the application over TLS, HTTPS=on and wsgi.url_scheme https."""
    cert, key = ca.leaf("127.0.0.1")
    port = free_port()
    (tmp_path / "tlsapp.py").write_text(APP)
    (tmp_path / "version").write_text("v1")
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nmaster = true\nchdir = {tmp_path}\nmodule = tlsapp\n"
                   f"env = VERSION_FILE={tmp_path}/version\nhttps = 127.0.0.1:{port},{cert},{key}\n")
    argv = [sys.executable, "-m", "emperor", "master"] if server == "emperor" else [str(UWSGI), "--ini"]
    m = procs([*argv, str(ini)], tmp_path)
    m.wait_log("running (workers ready)" if server == "emperor" else "spawned uWSGI worker 1", timeout=30)

    def curl():
        r = subprocess.run(["curl", "-sS", "--cacert", str(ca.cert), f"https://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout if r.returncode == 0 else None
    doc = json.loads(wait_for(curl, timeout=20))
    assert doc["scheme"] == "https" and doc["https"] == "on", doc
    status, _, conn = request(ca.client(), port)
    assert status == 200 and conn.version() in ("TLSv1.2", "TLSv1.3")
    if server == "emperor":
        assert "not supported" not in m.log and "ignored" not in m.log and "Traceback" not in m.log
