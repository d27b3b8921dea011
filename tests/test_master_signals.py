"""The master's signal table (emperor/master/process.py: SIGNALS) on a real master: SIGINT and
SIGQUIT stop, SIGUSR1 and SIGUSR2 report, SIGTSTP pauses and resumes (graceful and brutal
reloads, SIGHUP, SIGTERM and SIGURG, are test_master_reload's)."""
from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from support import HELLO_APP, children, http_get, InFlight, versioned_app, wait_for


def test_sigint_stops_everything_exit_0(master):
    m = master("processes = 2\n", HELLO_APP)
    workers = children(m.pid)
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    for w in workers:
        assert not os.path.exists(f"/proc/{w}") or open(f"/proc/{w}/stat").read().split()[2] == "Z"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", m.port), timeout=1).close()


def test_sigquit_stops_everything_exit_0(master):
    m = master("", HELLO_APP)
    m.signal(signal.SIGQUIT)
    assert m.wait(10) == 0


def test_sigusr1_logs_statistics(master):
    m = master("processes = 2\n", versioned_app("v"))
    http_get(m.port)
    m.signal(signal.SIGUSR1)
    log = m.wait_log("statistics (SIGUSR1)")
    assert "processes = 2" in log
    assert "worker 1 pid" in log and "requests" in log


def test_sigusr2_logs_worker_status_and_keeps_serving(master, tmp_path):
    m = master("processes = 1\nthreads = 2\n", versioned_app("v"))
    slow = InFlight(m.port, "/slow?1.5", tmp_path / "slow")
    m.signal(signal.SIGUSR2)
    m.wait_log("worker status (SIGUSR2)")
    wait_for(lambda: "GET /slow running" in m.log)
    assert http_get(m.port).status == 200
    assert slow.result().status == 200
    assert os.path.exists(f"/proc/{m.pid}")


def test_sigtstp_pauses_and_waiting_clients_are_served_on_resume(master):
    m = master("processes = 2\n", versioned_app("v"))
    m.signal(signal.SIGTSTP)
    m.wait_log("running -> paused")
    m.wait_log("paused (SIGTSTP)", count=2)   # each worker has taken the order
    s = socket.create_connection(("127.0.0.1", m.port), timeout=10)  # accepted by the kernel backlog
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s.settimeout(0.7)
    with pytest.raises(socket.timeout):
        s.recv(100)          # an absence is the behaviour: no answer while paused
    m.signal(signal.SIGTSTP)
    m.wait_log("paused -> running")
    s.settimeout(5)
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200 OK")
    s.close()


def test_sigtstp_reaches_idle_threads_while_the_main_thread_serves_a_long_request(master, tmp_path):
    """Orders used to be read by a worker's main thread only: with it inside a long request,
    the worker's other threads went on accepting through a pause (and a retire)."""
    app = """
import threading, time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        name = threading.current_thread().name
        with open(environ["QUERY_STRING"], "a") as f:
            f.write(name + "\\n")
        time.sleep(3 if name == "MainThread" else 0.3)
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master("processes = 1\nthreads = 4\n", app)
    names = tmp_path / "names"
    names.write_text("")
    slow = []
    for i in range(4):  # the kernel wakes a busy worker's idle threads first: the main one comes last
        slow.append(threading.Thread(target=http_get, args=(m.port, f"/slow?{names}"), kwargs={"timeout": 15}))
        slow[-1].start()
        wait_for(lambda: len(names.read_text().split()) == i + 1)
        if names.read_text().split()[-1] == "MainThread":
            break
    assert names.read_text().split()[-1] == "MainThread"
    for t in slow[:-1]:
        t.join(5)            # the other threads are idle again; the main one still sleeps
    m.signal(signal.SIGTSTP)
    m.wait_log("running -> paused")
    m.wait_log("paused (SIGTSTP)")            # the worker has taken the order (an idle thread read it)
    s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s.settimeout(0.7)
    with pytest.raises(socket.timeout):
        s.recv(100)          # an absence is the behaviour: an idle thread did not take it
    m.signal(signal.SIGTSTP)
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    s.close()
    slow[-1].join(15)


def test_sigtstp_while_reloading_keeps_pause(master):
    m = master("processes = 1\n", versioned_app("v"))
    m.signal(signal.SIGHUP)
    m.signal(signal.SIGTSTP)
    m.wait_log("generation 1 ready")
    s = socket.create_connection(("127.0.0.1", m.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(100)
    m.signal(signal.SIGTSTP)
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
