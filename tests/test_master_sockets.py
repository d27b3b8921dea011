"""Socket ownership and naming as uWSGI does them: chown-socket, chmod-socket (on reload too),
umask, abstract sockets, shared-socket, relative paths, vacuum (uWSGI's core/socket.c, core/uwsgi.c)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from support import APPS, descendants, free_port, wait_for, wait_port

pytestmark = pytest.mark.timeout(60)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


@pytest.fixture
def public(tmp_path):
    """A directory everyone can traverse (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="emperor-sock-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def master(procs, tmp_path: Path, body: str, path: Path | None = None):
    ini = path or tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = leaky\n" + textwrap.dedent(body))
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    m.ini = ini
    return m


def uwsgi_get(address: str | tuple) -> bytes:
    from emperor.worker.protocols.uwsgi import encode_vars
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(address)
        s.sendall(encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_PROTOCOL": "HTTP/1.1"}))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_chown_socket_lets_nginx_as_www_data_in_through_a_660_socket(procs, tmp_path, public):
    """The standard set-up: a root master, nginx's workers as www-data, `chmod-socket = 660`,
    `chown-socket = www-data:www-data`. It answered 502: the socket stayed root's."""
    if os.geteuid() != 0 or NGINX is None:
        pytest.skip("needs root and nginx (scripts/install-test-deps.sh)")
    sock = public / "app.sock"
    master(procs, tmp_path, f"socket = {sock}\nchmod-socket = 660\nchown-socket = www-data:www-data\n")
    st = sock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660 and (st.st_uid, st.st_gid) == (33, 33)
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(textwrap.dedent(f"""\
        user www-data;
        worker_processes 1;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {prefix}/tmp/c; proxy_temp_path {prefix}/tmp/p;
            fastcgi_temp_path {prefix}/tmp/f; uwsgi_temp_path {prefix}/tmp/u; scgi_temp_path {prefix}/tmp/s;
            server {{
                listen 127.0.0.1:{port};
                location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}
            }}
        }}
        """))
    nginx = procs([NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                   "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"], tmp_path, log=tmp_path / "nginx.log")
    try:
        wait_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        assert any(Path(f"/proc/{p}/status").read_text().count("\nUid:\t33\t") for p in descendants(nginx.pid))
    finally:  # nginx's master first: killing its workers first makes it spawn new ones
        for p in [nginx.pid] + descendants(nginx.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_chmod_socket_edited_takes_effect_on_reload(procs, tmp_path, public):
    """It kept the old mode: the socket is inherited across the reload, never re-bound."""
    sock = public / "app.sock"
    m = master(procs, tmp_path, f"socket = {sock}\nchmod-socket = 600\n")
    assert mode(sock) == 0o600
    m.ini.write_text(m.ini.read_text().replace("chmod-socket = 600", "chmod-socket = 666"))
    m.signal(signal.SIGHUP)
    m.wait_log("generation 1 ready", timeout=20)
    assert mode(sock) == 0o666
    assert uwsgi_get(str(sock)).startswith(b"HTTP/1.1 200")


def test_umask_shapes_the_socket_file(procs, tmp_path, public):
    sock = public / "app.sock"
    master(procs, tmp_path, f"socket = {sock}\numask = 077\n")
    assert mode(sock) & 0o077 == 0


def test_an_abstract_socket_has_no_file(procs, tmp_path):
    name = f"emperor-test-{os.getpid()}-{os.urandom(3).hex()}"
    master(procs, tmp_path, f"socket = @{name}\nvacuum = true\n")
    assert uwsgi_get("\0" + name).startswith(b"HTTP/1.1 200")


def test_shared_socket_by_number(procs, tmp_path):
    port = free_port()
    master(procs, tmp_path, f"shared-socket = 127.0.0.1:{port}\nsocket = =0\n")
    assert uwsgi_get(("127.0.0.1", port)).startswith(b"HTTP/1.1 200")


def test_a_relative_socket_path_is_under_chdir_and_vacuum_removes_it(procs, tmp_path):
    """It landed in the emperor's working directory and `vacuum` never found it."""
    work = tmp_path / "work"
    work.mkdir()
    ini = tmp_path / "rel.ini"
    ini.write_text(f"[uwsgi]\nchdir = {work}\npythonpath = {APPS}\nmodule = leaky\nsocket = app.sock\nvacuum = true\n")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    assert (work / "app.sock").exists() and not (tmp_path / "app.sock").exists()
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    assert not (work / "app.sock").exists()


def test_vacuum_for_a_master_that_dropped_privileges(procs, tmp_path, public):
    """A root emperor's master running as www-data cannot remove its root-owned socket file:
    the emperor does it once the master has gone."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    app = public / "app"
    app.mkdir(mode=0o755)
    shutil.copy(APPS / "leaky.py", app / "leaky.py")
    (app / "leaky.py").chmod(0o644)
    vdir = public / "vassals"
    vdir.mkdir()
    sock = public / "app.sock"
    path = vdir / "app.ini"
    path.write_text(f"[uwsgi]\nsocket = {sock}\nchdir = {app}\nmodule = leaky\nuid = www-data\nvacuum = true\n")
    python = "/usr/bin/python3.11"
    if not os.access(python, os.X_OK):
        pytest.skip("no Python that www-data can run")
    e = procs([python, "-m", "emperor", "run", str(vdir)], tmp_path,
              env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    e.wait_log("app.ini: starting -> running", timeout=20)
    assert sock.exists()
    path.unlink()
    e.wait_log("app.ini: stopping -> gone", timeout=20)
    wait_for(lambda: not sock.exists(), timeout=5)


def test_no_defer_accept_clears_tcp_defer_accept_which_is_on_by_default(tmp_path):
    """uWSGI sets TCP_DEFER_ACCEPT on TCP sockets unless no-defer-accept (core/socket.c:748,
    uwsgi_bind_to_port, uwsgi.no_defer_accept); emperor does the same in sockets.prepare,
    and clears it on a socket a reload inherited with it set."""
    from emperor.config import load_config
    from emperor.sockets import HTTP, Listener, prepare

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    ini = tmp_path / "a.ini"
    try:
        for body, want in (("", True), ("no-defer-accept = true\n", False)):
            ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:0\nmodule = x\n{body}")
            prepare([Listener(HTTP, "127.0.0.1:0", s)], load_config(str(ini), environ={}))
            assert bool(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)) is want
    finally:
        s.close()
