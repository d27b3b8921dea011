"""Snapshot and roll-back (SPEC 4.4): `snapshot = true` keeps the generation the last graceful
reload retired, parked, and SIGURG brings it back. Real masters, real sockets, real signals."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import NGINX, ROOT, Client, free_port, nginx_conf, stop_nginx, wait_for, wait_port

pytestmark = pytest.mark.timeout(90)

APP = """
import os
VERSION = {version!r}
def application(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        body = b"x" * (8 << 20)
    else:
        body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Pid", str(os.getpid()))])
    return [body]
"""


def deploy(directory: Path, version: str) -> None:
    (directory / "snapapp.py").write_text(APP.format(version=version))


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with Client(port, timeout=5) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        r = c.response()
        return r.status, r.body


def version(port: int) -> str:
    status, body = get(port)
    assert status == 200
    return body.decode()


def start(procs, tmp_path: Path, extra: str = "", v: str = "v1"):
    port = free_port()
    deploy(tmp_path, v)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = snapapp\n"
                   f"processes = 2\nsnapshot = true\nworker-reload-mercy = 60\n{extra}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    m.port, m.ini, m.dir = port, ini, tmp_path
    m.reloads = 0
    return m


def reload_to(m, v: str) -> None:
    deploy(m.dir, v)
    m.reloads += 1
    m.signal(signal.SIGHUP)
    m.wait_log(f"generation {m.reloads} ready", timeout=20)
    wait_for(lambda: version(m.port) == v, timeout=10)


def test_a_kept_generation_never_leaves_a_keep_alive_client_waiting(procs, tmp_path):
    """The snapshot's workers were stopped (SIGTSTP) holding accepted keep-alive connections:
    the client's next request on one was never answered. Now the generation kept as the
    snapshot retires its connections first (as any retiring generation does), then parks."""
    m = start(procs, tmp_path)
    clients = [Client(m.port, timeout=10) for _ in range(4)]
    try:
        for c in clients:
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert c.response().body == b"v1"
        reload_to(m, "v2")
        m.wait_log("generation 0 kept as snapshot")
        m.wait_log("-> parked (SIGUSR1)", count=2, timeout=10)
        for c in clients:
            try:
                c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                r = c.response()
                assert r.status == 200
                assert r.body == b"v1" and r.header("Connection") == "close" or r.body == b"v2"
            except (EOFError, ConnectionError):
                pass  # closed after the linger, cleanly: a client reconnects (RFC 9112 9.3.1)
        assert version(m.port) == "v2"
    finally:
        for c in clients:
            c.close()


def test_sigurg_restores_the_generation_the_last_reload_retired_and_a_second_undoes_it(procs, tmp_path):
    m = start(procs, tmp_path)
    reload_to(m, "v2")
    reload_to(m, "v3")
    m.wait_log("snapshot of generation 0 dropped: generation 1 is the snapshot now")
    m.signal(signal.SIGURG)
    m.wait_log("restored generation 1; generation 2 is the snapshot now")
    wait_for(lambda: version(m.port) == "v2", timeout=10)
    m.signal(signal.SIGURG)
    m.wait_log("restored generation 2; generation 1 is the snapshot now")
    wait_for(lambda: version(m.port) == "v3", timeout=10)
    for _ in range(10):
        assert version(m.port) == "v3"
    # a reload after a restore keeps what it retired: the restored one, not an older one
    m.signal(signal.SIGURG)
    wait_for(lambda: version(m.port) == "v2", timeout=10)
    reload_to(m, "v4")
    m.wait_log("generation 1 kept as snapshot", count=2)
    m.signal(signal.SIGURG)
    wait_for(lambda: version(m.port) == "v2", timeout=10)


def test_a_restored_generation_retired_by_a_reload_leaves_like_any_other(procs, tmp_path):
    m = start(procs, tmp_path, "snapshot-ttl = 3600\n")
    reload_to(m, "v2")
    m.signal(signal.SIGURG)
    wait_for(lambda: version(m.port) == "v1", timeout=10)
    m.ini.write_text(m.ini.read_text().replace("snapshot = true", "snapshot = false"))
    reload_to(m, "v3")
    m.wait_log("snapshot of generation 1 dropped: the file says snapshot = false", timeout=10)
    m.wait_log("generation 0 has left", timeout=20)   # the mercy is 60 s: it left on its own
    m.wait_log("generation 1 has left", timeout=20)
    m.signal(signal.SIGURG)
    m.wait_log("no snapshot to restore")
    assert version(m.port) == "v3"


def test_a_snapshot_older_than_its_ttl_is_dropped(procs, tmp_path):
    m = start(procs, tmp_path, "snapshot-ttl = 2\n")
    reload_to(m, "v2")
    m.wait_log("snapshot of generation 0 dropped: older than snapshot-ttl (2s)", timeout=15)
    m.wait_log("generation 0 has left", timeout=10)
    m.signal(signal.SIGURG)
    m.wait_log("no snapshot to restore")


def test_status_and_metrics_show_the_generation_actually_serving(tmp_path, procs):
    vdir = tmp_path / "vassals"
    vdir.mkdir()
    app = tmp_path / "app"
    app.mkdir()
    deploy(app, "v1")
    port, mport = free_port(), free_port()
    path = vdir / "snap.ini"
    path.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\nmodule = snapapp\n"
                    "processes = 1\nsnapshot = true\n")
    e = procs([sys.executable, "-m", "emperor", "run", str(vdir), "--metrics", f"127.0.0.1:{mport}"], tmp_path)
    e.wait_log("snap.ini: starting -> running", timeout=20)
    deploy(app, "v2")
    os.utime(path)
    e.wait_log("snap.ini: reloading -> running (generation 1 ready)", timeout=20)
    e.wait_log("generation 0 kept as snapshot", timeout=10)
    master = json.loads(_status(vdir))["vassals"]["snap.ini"]["pid"]
    os.kill(master, signal.SIGURG)
    e.wait_log("snap.ini: rolled back to generation 0 (SIGURG); the file on disk is newer", timeout=10)
    wait_for(lambda: version(port) == "v1", timeout=10)
    v = json.loads(_status(vdir))["vassals"]["snap.ini"]
    assert v["generation"] == 0 and v["restored"] is True and v["rollbacks"] == 1
    assert "rolled back to generation 0" in v["last_event"]
    assert v["stats"]["generation"] == 0
    once = _status(vdir, "--once")
    assert "0*" in once
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = b""
        while chunk := s.recv(65536):
            text += chunk
    assert b'emperor_vassal_rollbacks_total{vassal="snap.ini"} 1' in text
    assert b'emperor_vassal_restored{vassal="snap.ini"} 1' in text
    assert b'emperor_vassal_generation{vassal="snap.ini"} 0' in text


def _status(vdir: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "emperor", "status", *(args or ("--json",)), "--directory", str(vdir)],
                       capture_output=True, text=True, timeout=15, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_slow_reader_of_a_large_response_is_not_cut_while_it_reads(procs, tmp_path):
    """A client reading 8 MiB slowly through a small receive buffer was cut after
    socket-timeout (the send queue never drained enough to make the socket writable in
    time), and the log said `0 bytes`. The timeout now means "no progress for N s",
    and the log says what was sent and that the response was cut."""
    m = start(procs, tmp_path, "socket-timeout = 2\nthreads = 1\n")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", m.port))
    s.settimeout(10)
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        started = time.monotonic()
        while time.monotonic() - started < 6:   # the behaviour: three socket-timeouts of slow reading
            got += len(s.recv(2048))
            time.sleep(0.02)
        assert got > 0
        # now it stops reading: cut after 2 s without progress, with the bytes that went out
        m.wait_log("(cut: no progress for 2s)", timeout=20)
    finally:
        s.close()
    line = next(l for l in m.log.splitlines() if "(cut:" in l)
    sent = int(line.split("=> 200 ")[1].split(" bytes")[0])
    assert sent >= got > 0


@pytest.mark.timeout(240)
def test_behind_nginx_keepalive_32_under_load_no_error_and_no_slow_request(procs, tmp_path):
    """Issue 18's bar for item 1: nginx with `keepalive 32` pooled upstream connections, under wrk,
    across 10 snapshot reloads and 5 restores (SIGURG): no non-2xx, no socket error, no request
    slower than 1 s (a parked worker holding a pooled connection showed up as 1.7 s stalls)."""
    if NGINX is None or shutil.which("wrk") is None:
        pytest.skip("nginx or wrk not found: run scripts/install-test-deps.sh")
    m = start(procs, tmp_path)
    prefix = tmp_path / "nginx"
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, port, m.port, "proxy-keepalive", keepalive=32))
    nginx = procs([NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                   "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"], tmp_path, log=tmp_path / "nginx.log")
    try:
        wait_port(port, timeout=10)
        wrk = subprocess.Popen(["wrk", "-t", "2", "-c", "32", "-d", "180s", f"http://127.0.0.1:{port}/"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            restores = 0
            for i in range(10):
                reload_to(m, f"v{i + 2}")
                if i % 2:   # after every second reload, roll back and forth
                    m.signal(signal.SIGURG)
                    restores += 1
                    m.wait_log(": restored generation", count=restores, timeout=20)
            assert restores == 5
        finally:
            wrk.send_signal(signal.SIGINT)   # wrk prints its summary on SIGINT
            out, _ = wrk.communicate(timeout=30)
    finally:
        stop_nginx(nginx.pid)
    assert "requests in" in out, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    latency = next(l.split() for l in out.splitlines() if l.strip().startswith("Latency"))
    worst = latency[3]   # Latency  avg  stdev  max  +/- stdev
    seconds = float(worst[:-2]) / 1000 if worst.endswith("ms") else float(worst[:-2]) / 1e6 \
        if worst.endswith("us") else float(worst[:-1]) * (60 if worst.endswith("m") else 1)
    assert seconds < 1.0, out
