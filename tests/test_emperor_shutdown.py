"""How the emperor stops: SIGTERM drains every vassal within --grace (--shutdown-delay first),
SIGINT and SIGQUIT stop at once, and a SIGKILLed emperor takes its masters along."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from support import (alive, answers, ask_cli, descendants, free_port, http_get, InFlight, refuses, serving,
                     vassal_ini, wait_for)


from emperor.paths import control_socket
from emperor.wire.control import query

pytestmark = pytest.mark.timeout(60)


def test_sigterm_stops_every_vassal_gracefully_and_exits_0(emperor, appdir, tmp_path):
    e = emperor()
    ports = [free_port(), free_port()]
    for name, port in zip(("a.ini", "b.ini"), ports):
        serving(e, name, port, appdir)
    slow = InFlight(ports[0], "/slow", tmp_path / "slow")
    e.signal(signal.SIGTERM)
    assert e.wait(15) == 0
    r = slow.result()
    assert r.status == 200 and r.text.startswith("a gen=0")  # finished, not cut
    assert all(refuses(p) for p in ports)
    assert "every vassal has stopped: bye" in e.log
    assert "SIGKILL" not in e.log


def test_sigterm_kills_stragglers_after_the_grace(emperor, appdir, tmp_path):
    e = emperor("--grace", "0.5")
    port = free_port()
    serving(e, "app.ini", port, appdir)
    slow = InFlight(port, "/slow?20", tmp_path / "slow", timeout=30)
    t0 = time.monotonic()
    e.signal(signal.SIGTERM)
    assert e.wait(15) == 0
    # the timing is the behaviour: killed once the grace (0.5 s) is over, not when the request ends (20 s)
    assert 0.5 <= time.monotonic() - t0 < 10
    assert "app.ini: master" in e.log and "SIGKILL to its process group" in e.log
    assert "app.ini: stopping -> gone (killed by SIGKILL)" in e.log
    assert refuses(port)
    assert slow.done(10)
    assert slow.error is not None or slow.response.status != 200   # killed with its worker: no answer


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["SIGINT", "SIGQUIT"])
def test_sigint_stops_every_vassal_and_exits_0(emperor, appdir, sig):
    e = emperor()
    port = free_port()
    serving(e, "app.ini", port, appdir)
    e.signal(sig)
    assert e.wait(15) == 0
    assert refuses(port)


def test_sigkill_of_the_emperor_takes_masters_and_workers_down(emperor, appdir):
    e = emperor()
    port = free_port()
    serving(e, "app.ini", port, appdir, extra="processes = 2\n")
    stack = wait_for(lambda: (d := descendants(e.pid)) and len(d) >= 3 and d)  # the master and its two workers
    e.signal(signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in stack))
    assert refuses(port)


@pytest.mark.parametrize("workers, clients", [
    pytest.param("processes = 2\nthreads = 2\n", 3, id="spare-workers"),
    pytest.param("processes = 1\n", 8, id="queued-in-backlog"),
])


def test_sigterm_under_load_completes_every_accepted_request(emperor, appdir, tmp_path, workers, clients):
    port = free_port()
    e = emperor(vassals={"app.ini": vassal_ini(port, appdir, workers)})
    wait_for(lambda: answers(port))
    results: list[tuple[str, float, object]] = []  # (path, when it was sent, status or error)
    sent = [0]
    stop = threading.Event()
    lock = threading.Lock()
    marker = tmp_path / "slow"

    def client(path: str) -> None:
        extra = f"X-Started: {marker}\r\n" if path.startswith("/slow") else ""
        while not stop.is_set():
            at = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                time.sleep(0.01)                  # a client's pause before it tries again
                continue                          # refused: never accepted, nothing to complete
            try:
                with s:
                    s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n{extra}\r\n".encode())
                    with lock:
                        sent[0] += 1
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                outcome: object = int(data.split()[1]) if data else "closed without a response"
            except (OSError, IndexError, ValueError) as exc:
                outcome = repr(exc)
            with lock:
                results.append((path, at, outcome))
            if path.startswith("/slow"):
                return

    threads = [threading.Thread(target=client, args=("/",), daemon=True) for _ in range(clients)]
    threads.append(threading.Thread(target=client, args=("/slow?1.5",), daemon=True))
    for t in threads:
        t.start()
    wait_for(lambda: marker.exists() and sent[0] > 5)   # load running, the slow request in flight
    sigterm_at = time.monotonic()
    e.signal(signal.SIGTERM)
    assert e.wait(10) == 0
    stop.set()
    for t in threads:
        t.join(10)
    before = [(path, outcome) for path, at, outcome in results if at < sigterm_at]
    assert len(before) > 5  # some load really ran (a busy machine serves fewer)
    assert [(p, o) for p, o in before if o != 200] == []
    assert ("/slow?1.5", 200) in before           # it was in the application when SIGTERM came
    assert "every vassal has stopped: bye" in e.log and "SIGKILL" not in e.log


def test_shutdown_delay_keeps_accepting_and_reports_draining(emperor, appdir, systemd):
    # everything between SIGTERM and the end of the delay must happen within it: a delay far
    # longer than that takes (the health checks start a Python each) keeps a loaded machine in
    port = free_port()
    delay = 6.0
    e = emperor("--shutdown-delay", str(delay), env={"NOTIFY_SOCKET": systemd.env},
                vassals={"app.ini": vassal_ini(port, appdir)})
    systemd.wait("READY", timeout=15)
    assert ask_cli("health", str(e.dir)).returncode == 0
    t0 = time.monotonic()
    e.signal(signal.SIGTERM)
    systemd.wait("STOPPING")
    doc = query(control_socket(str(e.dir)), timeout=10)
    assert doc["state"] == "draining" and doc["ready"] is False
    served = 0
    for _ in range(10):                           # new connections still served during the delay
        assert http_get(port).status == 200
        served += 1
        time.sleep(0.1)                           # spread over a second of it
    assert served > 5
    r = ask_cli("health", str(e.dir))
    assert r.returncode == 1 and "draining" in r.stderr
    assert ask_cli("health", str(e.dir), "--live").returncode == 0
    assert e.wait(delay + 10) == 0
    assert time.monotonic() - t0 >= delay
    assert not answers(port)
