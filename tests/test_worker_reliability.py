"""What an adversarial probe broke in the worker, each pinned by a test that failed before its fix.

Real masters on 127.0.0.1, raw sockets; "in flight" is the app's own marker file
(tests/apps/gate.py), never a sleep.
"""
from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from support import Client, worker_pids
from support import APPS, cpu_seconds, free_port, wait_for


def gate_master(procs, tmp_path: Path, body: str, port: int | None = None):
    """A master serving tests/apps/gate.py; returns the Proc with .port and .gate (its directory)."""
    port = port or free_port()
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = gate\n"
                   f"env = GATE_DIR={gate}\n" + body)
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)", timeout=20)
    p.port, p.gate, p.ini = port, gate, ini
    return p


def request(path: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def answered(port: int, path: str = "/probe", timeout: float = 10.0) -> bool:
    try:
        with Client(port, timeout=timeout) as c:
            c.send(request(path, close=True))
            return c.response().status == 200
    except OSError:
        return False


# ---------- 1. max-requests with idle keep-alive clients ----------
@pytest.mark.timeout(60)
def test_max_requests_with_idle_keep_alive_clients_replaces_the_workers(procs, tmp_path):
    """Four pooled clients, three requests each, then idle (an upstream keep-alive pool): the
    workers that reached max-requests leave and are replaced, and the next request is served.
    It hung for ever: the worker's loop blocked in epoll with no listener and no timeout."""
    m = gate_master(procs, tmp_path, "processes = 2\nmax-requests = 5\n")
    before = worker_pids(m.pid)
    clients = [Client(m.port, timeout=10) for _ in range(4)]
    try:
        for _ in range(40):  # until both workers reached max-requests (the kernel picks who accepts)
            if m.log.count("retiring after max-requests") >= 2:
                break
            for i, c in enumerate(clients):
                c.send(request("/"))
                r = c.response()
                assert r.status == 200
                if r.header("Connection") == "close":  # a retiring worker says so: a pool reconnects
                    c.close()
                    clients[i] = Client(m.port, timeout=10)
        m.wait_log("retiring after max-requests", count=2, timeout=15)
        # the clients now stay connected and idle
        wait_for(lambda: len(worker_pids(m.pid)) == 2 and not (worker_pids(m.pid) & before), timeout=20)
        assert answered(m.port)
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(60)
def test_a_graceful_stop_does_not_wait_out_the_mercy_for_idle_keep_alive_clients(procs, tmp_path):
    """SIGTERM with die-on-term and an idle keep-alive client: the worker closes it after its
    short linger and exits; it used to sit until worker-reload-mercy (here 40 s) and SIGKILL."""
    m = gate_master(procs, tmp_path, "processes = 1\ndie-on-term = true\nworker-reload-mercy = 40\n")
    with Client(m.port, timeout=10) as c:
        c.send(request("/"))
        assert c.response().status == 200
        started = time.monotonic()
        m.signal(signal.SIGTERM)
        assert m.wait(30) == 0
        assert time.monotonic() - started < 20  # the mercy is 40 s; the linger is 1 s
    assert "still busy" not in m.log


@pytest.mark.timeout(60)
def test_an_old_generation_with_idle_keep_alive_clients_leaves_soon_after_a_reload(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 1\nworker-reload-mercy = 40\n")
    with Client(m.port, timeout=10) as c:
        c.send(request("/"))
        assert c.response().status == 200
        m.signal(signal.SIGHUP)
        m.wait_log("generation 0 has left", timeout=20)  # the mercy is 40 s
    assert "still busy" not in m.log


# ---------- 5. a slow body the app does not read ----------
@pytest.mark.timeout(60)
def test_a_trickled_body_the_app_ignores_does_not_hold_the_worker(procs, tmp_path):
    """The app answers without reading the body; the client sends it a byte a second. The worker
    used to drain it with no overall deadline, so two such clients blocked a threads = 1 vassal.
    gunicorn and uWSGI close such a connection; so do we, after a bounded drain."""
    m = gate_master(procs, tmp_path, "processes = 1\nthreads = 1\nsocket-timeout = 4\n")
    slow = []
    try:
        for _ in range(2):
            c = Client(m.port, timeout=20)
            c.send(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nx")
            assert c.response().status == 200
            slow.append(c)
        stop = time.monotonic() + 8

        def trickle() -> None:
            for c in slow:
                try:
                    c.send(b"x")
                except OSError:
                    pass

        ok = 0
        while time.monotonic() < stop:
            trickle()
            ok += answered(m.port, timeout=3)
        assert ok >= 3, "probes were not served while bodies trickled in"
        for c in slow:
            assert c.closed(timeout=5), "the connection with the unread body stayed open"
    finally:
        for c in slow:
            c.close()


# ---------- 7. a pipelined request behind one in flight ----------
def _pipelined(m, trigger, rid: str) -> tuple:
    """Request 1 held in the app, request 2 already sent behind it on the same connection;
    `trigger()` runs while request 1 is in flight. Returns both responses (or the error)."""
    c = Client(m.port, timeout=10)
    try:
        c.send(request(f"/hold?id={rid}") + request("/second"))
        wait_for(lambda: (m.gate / f"{rid}.started").exists(), timeout=10)
        trigger()
        (m.gate / f"{rid}.release").touch()
        first = c.response()
        if first.header("Connection") == "close":
            return first, None
        return first, c.response()
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_a_pipelined_request_survives_a_graceful_reload(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 1\nthreads = 4\n")
    for i in range(3):
        def reload() -> None:
            m.signal(signal.SIGHUP)
            m.wait_log("retiring (SIGTERM)", count=i + 1, timeout=15)
        first, second = _pipelined(m, reload, f"r{i}")
        assert first.status == 200 and first.body == b"/hold"
        assert second is not None and second.status == 200 and second.body == b"/second", \
            "the buffered request was dropped"
        m.wait_log(f"generation {i} has left", timeout=15)


@pytest.mark.timeout(60)
def test_a_pipelined_request_survives_a_pause_and_resume(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 1\nthreads = 4\n")
    for i in range(2):
        def pause() -> None:
            m.signal(signal.SIGTSTP)
            m.wait_log("paused (SIGTSTP)", count=i + 1, timeout=10)
        c = Client(m.port, timeout=10)
        try:
            c.send(request(f"/hold?id=p{i}") + request("/second"))
            wait_for(lambda: (m.gate / f"p{i}.started").exists(), timeout=10)
            pause()
            (m.gate / f"p{i}.release").touch()
            first = c.response()
            assert first.status == 200 and first.body == b"/hold"
            m.signal(signal.SIGTSTP)  # a toggle: resume
            m.wait_log("resumed (SIGCONT)", count=i + 1, timeout=10)
            second = c.response()
            assert second.status == 200 and second.body == b"/second"
        finally:
            c.close()


@pytest.mark.timeout(60)
def test_a_pipelined_request_survives_max_requests(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 1\nthreads = 1\nmax-requests = 1\n")
    first, second = _pipelined(m, lambda: None, "m0")
    assert first.status == 200
    assert second is not None and second.status == 200 and second.body == b"/second"


@pytest.mark.timeout(60)
def test_a_request_that_came_in_time_is_not_timed_out_while_the_core_was_busy(procs, tmp_path):
    """The sweep ran before the loop read its events, so a connection whose request arrived
    within socket-timeout, while the only core was busy with another request, got a 408."""
    m = gate_master(procs, tmp_path, "processes = 1\nthreads = 1\nsocket-timeout = 1\n")
    with Client(m.port, timeout=10) as b, Client(m.port, timeout=10) as a:
        b.send(b"GET /b HTTP/1.1\r\nHo")
        a.send(request("/hold?id=busy"))
        wait_for(lambda: (m.gate / "busy.started").exists(), timeout=10)
        b.send(b"st: t\r\n\r\n")
        time.sleep(1.5)  # the behaviour under test: b's deadline passes while the core is busy
        (m.gate / "busy.release").touch()
        assert a.response().status == 200
        r = b.response()
        assert r.status == 200 and r.body == b"/b"


# ---------- 2. a worker out of descriptors ----------
@pytest.mark.timeout(90)
def test_a_worker_out_of_descriptors_pauses_accept_and_serves_again(procs, tmp_path):
    """`max-fd = 64` (uWSGI's option, core/uwsgi.c: setrlimit(RLIMIT_NOFILE)) and 300 idle
    connections: accept() fails with EMFILE while the listener stays readable. uWSGI's
    wsgi_req_accept (core/utils.c) just returns -1 and polls again, a spinning core; ours wrote
    a "Too many open files" line per attempt (3.6 M lines in 6 s). Now the worker sheds its
    oldest idle connection, stops accepting for a moment and says so once per pause; it
    serves again once the connections are gone."""
    m = gate_master(procs, tmp_path, "processes = 1\nmax-fd = 64\nsocket-timeout = 30\n")
    worker = next(iter(worker_pids(m.pid)))
    flood: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", m.port))  # the kernel queues what the backlog holds
            flood.append(s)
        m.wait_log("accept: Too many open files; pausing accept", timeout=20)
        cpu, started = cpu_seconds(worker), time.monotonic()
        time.sleep(3)  # the behaviour under test: the worker stays out of descriptors this long
        used, spent = cpu_seconds(worker) - cpu, time.monotonic() - started
        lines = m.log.count("Too many open files")
        assert lines <= 5 + spent / 0.1, f"{lines} lines in {spent:.1f}s: one per pause (0.1 s) at most"
        assert used < spent / 4, f"the worker used {used:.2f}s of CPU in {spent:.1f}s"
    finally:
        for s in flood:
            s.close()
    assert wait_for(lambda: answered(m.port, timeout=5), timeout=30)
    assert worker in worker_pids(m.pid) and "Traceback" not in m.log
