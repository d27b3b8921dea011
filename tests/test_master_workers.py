"""The master's workers (emperor/master/generations.py): respawned when killed, killed by
harakiri, retired at max-requests, serving with threads."""
from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

from support import HELLO_APP, STARTED, InFlight, children, http_get, wait_for


def test_killed_worker_is_respawned(master):
    m = master("processes = 2\n", HELLO_APP)
    victim = children(m.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(m.pid) and len(children(m.pid)) == 2)
    m.wait_log("killed by SIGKILL; respawning")
    assert http_get(m.port).status == 200


def test_harakiri_kills_a_stuck_request(master):
    app = """
import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        time.sleep(30)
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master("harakiri = 1\nprocesses = 1\n", app)
    before = children(m.pid)
    with pytest.raises((ConnectionError, socket.timeout)):
        http_get(m.port, "/stuck", timeout=20)
    log = m.wait_log("HARAKIRI")
    assert "GET /stuck" in log
    wait_for(lambda: children(m.pid) and children(m.pid) != before)
    assert http_get(m.port).status == 200


def test_harakiri_graceful_signal_comes_first_then_the_kill(master, tmp_path):
    """core/master_checks.c: with harakiri-graceful-timeout the stuck worker first gets
    harakiri-graceful-signal (here SIGSYS, which the app handles, as uWSGI's tests/harakiri.py),
    and SIGKILL only that many seconds later."""
    marker = tmp_path / "got-signal"
    app = f"""
import signal
import time


def on_sys(signum, frame):
    open({str(marker)!r}, "w").write(str(signum))


signal.signal(signal.SIGSYS, on_sys)


def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        time.sleep(30)
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master(f"harakiri = 1\nharakiri-graceful-timeout = 2\nharakiri-graceful-signal = {int(signal.SIGSYS)}\n"
               "processes = 1\nlazy-apps = true\n", app)
    with pytest.raises((ConnectionError, socket.timeout)):
        http_get(m.port, "/stuck", timeout=30)
    log = m.wait_log("HARAKIRI: worker 1")
    assert "HARAKIRI (graceful): worker 1" in log and f"signal {int(signal.SIGSYS)}, killed in 2s" in log
    assert marker.read_text() == str(int(signal.SIGSYS))
    graceful_at = log.index("HARAKIRI (graceful)")
    assert log.index("HARAKIRI: worker 1", graceful_at) > graceful_at
    assert http_get(m.port).status == 200


def test_max_requests_retires_worker(master):
    m = master("max-requests = 3\nprocesses = 1\n", HELLO_APP)
    pids = set()
    for _ in range(7):
        r = http_get(m.port)
        pids.add(r.header("X-Pid"))
    assert len(pids) >= 2
    assert "max-requests (3) reached" in m.log


def test_a_retiring_worker_leaves_the_queue_to_its_successors(master, tmp_path):
    """A worker at max-requests stops accepting: connections queued meanwhile are not its to
    answer (it used to take the whole backlog and serve it alone while its siblings idled)."""
    app = STARTED + """
import os, time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        started(environ)
        time.sleep(1.0)
    start_response("200 OK", [("X-Pid", str(os.getpid()))])
    return [b"ok"]
"""
    m = master("max-requests = 1\nprocesses = 2\n", app)
    first = set(children(m.pid))
    results: list = []

    def ask(path: str) -> None:
        r = http_get(m.port, path)
        results.append((path, r.status, int(r.header("X-Pid"))))

    # both workers are inside their last request: what comes now waits in the backlog
    slow = [InFlight(m.port, "/slow", tmp_path / f"slow-{i}") for i in (1, 2)]
    queued = [threading.Thread(target=ask, args=("/",)) for _ in range(6)]
    for t in queued:
        t.start()
    for t in queued:
        t.join(10)
    for r in slow:
        results.append(("/slow", r.result().status, int(r.result().header("X-Pid"))))
    assert sorted(p for p, _, _ in results) == ["/"] * 6 + ["/slow"] * 2
    assert all(status == 200 for _, status, _ in results)
    assert {pid for p, _, pid in results if p == "/slow"} == first
    assert not {pid for p, _, pid in results if p == "/"} & first


def test_threads_serve_concurrently(master, tmp_path):
    # each request waits inside the application until all four are in: served one after the
    # other, none would ever see the others arrive
    app = f"""
import os, time


def application(environ, start_response):
    here = os.path.join({str(tmp_path)!r}, "arrived")
    os.makedirs(here, exist_ok=True)
    open(os.path.join(here, str(time.monotonic_ns())), "w").close()
    deadline = time.monotonic() + 10
    while len(os.listdir(here)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    start_response("200 OK", [])
    return [b"together" if len(os.listdir(here)) >= 4 else b"alone"]
"""
    m = master("processes = 1\nthreads = 4\n", app)
    results = []

    def one():
        r = http_get(m.port, timeout=30)
        results.append((r.status, r.body))

    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [(200, b"together")] * 4


def test_a_ready_read_after_the_stop_began_changes_nothing(tmp_path):
    # The race seen when the emperor is SIGKILLed right after start: the master stops
    # (its channel hit EOF) and only then reads a worker's READY from before the kill.
    from emperor.config import load_config
    from emperor.master.generations import Generation, Workers
    from emperor.wire.scoreboard import Scoreboard

    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp-socket = 127.0.0.1:0\nmodule = x\n")
    w = Workers(load_config(str(tmp_path / "a.ini")), 0, log=lambda m: None, become_worker=lambda g, s: None)
    w.current = Generation(0, Scoreboard(1, 1), [4_000_000])
    w.stopping = True
    assert w.worker_ready(4_000_000) is False
    assert w.current.ready == set()


@pytest.mark.timeout(30)
def test_a_worker_error_written_before_the_master_records_the_fork_is_kept():
    """Seen once under load: a lazy-apps worker whose import failed wrote its error to the
    scoreboard before the master, preempted right after fork(), recorded the spawn, and the
    record's reset erased it ("worker exited 1 before its first request" in status instead
    of the RuntimeError). The record is now reset before the fork; after it, only the PID is
    written. Here the parent waits for the child's exit before recording, the worst order."""
    from emperor.wire.scoreboard import Scoreboard

    board = Scoreboard(1, 1)
    board.set_error(0, "RuntimeError: an earlier worker's")
    board.spawning(0, generation=3, respawns=2)
    assert board.error(0) == ""
    pid = os.fork()
    if pid == 0:
        board.set_error(0, "RuntimeError: the database is not there")
        os._exit(1)
    os.waitpid(pid, 0)
    board.spawned(0, pid)
    w = board.worker(0)
    assert board.error(0) == "RuntimeError: the database is not there"
    assert (w["pid"], w["generation"], w["respawn_count"]) == (pid, 3, 2)



def test_workers_that_serve_one_request_each_are_never_start_failures(master):
    """max-requests = 1 under 4 concurrent clients: each worker serves once, says so and
    leaves, and the master reaps it. Its READY and "served" notes are in the notify pipe
    before its exit can be reaped, but the master's loop can be woken for the SIGCHLD first:
    it took such a worker for one that died before its first request, and answered the next
    clients 503 itself (seen on a loaded machine). Every answer must be the app's."""
    m = master("max-requests = 1\nprocesses = 2\n", HELLO_APP)
    bad: list = []

    def client() -> None:
        for _ in range(40):
            r = http_get(m.port, timeout=30)
            if r.status != 200:
                bad.append(r.status)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert bad == []
    assert "before serving" not in m.log
