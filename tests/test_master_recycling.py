"""Recycling workers: a worker past a limit finishes its request and is replaced, with no
failed request (uWSGI's core/utils.c uwsgi_close_request, core/master_checks.c)."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

from spoolsupport import SERVERS, get as get_body, start as start_server
from support import worker_pids
from support import APPS, free_port, wait_for
from emperor.config import load_config
from emperor.proc import memory
from emperor.wire.scoreboard import Scoreboard
from emperor.worker.process import Worker

pytestmark = pytest.mark.timeout(90)


def start(procs, tmp_path: Path, body: str):
    port = free_port()
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n"
                   f"env = GATE_DIR={gate}\n{body}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    m.port, m.gate = port, gate
    return m


def get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Load:
    """Clients hitting `path` until stopped; every status kept."""

    def __init__(self, port: int, path: str, clients: int = 3) -> None:
        self.port, self.path = port, path
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.statuses.append(get(self.port, self.path)[0])
            except OSError:
                self.statuses.append(0)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)


def test_reload_on_rss_replaces_a_leaking_worker_without_a_failed_request(procs, tmp_path):
    m = start(procs, tmp_path, "processes = 2\nreload-on-rss = 60\n")
    before = worker_pids(m.pid)
    with Load(m.port, "/leak?mb=8") as load:
        m.wait_log("reload-on-rss: RSS", count=2, timeout=60)
        wait_for(lambda: len(load.statuses) > 20, timeout=30)
    assert load.statuses and set(load.statuses) == {200}, sorted(set(load.statuses))
    assert worker_pids(m.pid) - before


def test_evil_reload_on_rss_kills_a_worker_the_master_sees_too_big(procs, tmp_path):
    m = start(procs, tmp_path, "processes = 1\nevil-reload-on-rss = 60\n")
    victim = next(iter(worker_pids(m.pid)))
    for _ in range(8):
        get(m.port, "/leak?mb=10")
    m.wait_log("evil-reload-on-rss", timeout=20)
    wait_for(lambda: worker_pids(m.pid) and victim not in worker_pids(m.pid), timeout=20)
    assert get(m.port, "/")[0] == 200


def test_max_worker_lifetime_retires_workers_after_their_time(procs, tmp_path):
    m = start(procs, tmp_path, "processes = 2\nmax-worker-lifetime = 2\nmax-worker-lifetime-delta = 1\n")
    before = worker_pids(m.pid)
    with Load(m.port, "/", clients=2) as load:
        m.wait_log("lifetime reached (2s): retiring it", timeout=20)
        m.wait_log("lifetime reached (3s): retiring it", timeout=20)
        wait_for(lambda: not (worker_pids(m.pid) & before) and len(worker_pids(m.pid)) == 2, timeout=20)
    assert set(load.statuses) == {200}


def test_reload_on_exception_replaces_the_worker_that_raised(procs, tmp_path):
    m = start(procs, tmp_path, "processes = 1\nreload-on-exception = true\n")
    first = next(iter(worker_pids(m.pid)))
    assert get(m.port, "/boom")[0] == 500
    m.wait_log("reload-on-exception: the application raised", timeout=10)
    wait_for(lambda: worker_pids(m.pid) and first not in worker_pids(m.pid), timeout=20)
    assert get(m.port, "/")[0] == 200


def test_min_worker_lifetime_holds_max_requests_back(procs, tmp_path):
    """uWSGI: no recycling before min-worker-lifetime (its default is 10 s; emperor's is 0,
    so that max-requests means what it says: docs/configuration.md)."""
    m = start(procs, tmp_path, "processes = 1\nmax-requests = 1\nmin-worker-lifetime = 60\n")
    pids = {get(m.port, "/")[1] for _ in range(5)}
    assert len(pids) == 1 and "max-requests (1) reached" not in m.log


def test_limit_as_caps_each_worker_s_address_space(procs, tmp_path):
    m = start(procs, tmp_path, "processes = 1\nlimit-as = 2048\n")
    assert get(m.port, "/limits")[1] == str(2048 << 20).encode()


def test_max_requests_delta_gives_each_worker_its_own_limit(tmp_path):
    """core/utils.c: max_requests + (worker_id - 1) * max_requests_delta."""
    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp-socket = :0\nmodule = x\nmax-requests = 100\n"
                                    "max-requests-delta = 10\nprocesses = 3\n")
    c = load_config(str(tmp_path / "a.ini"), environ={})
    limits = [Worker(config=c, slot=s, listeners=[], app=None, board=Scoreboard(3, 1), notify_fd=-1,
                     load_app=lambda: None).max_requests for s in range(3)]
    assert limits == [100, 110, 120]


# ---------- address space (reload-on-as, evil-reload-on-as), under emperor and real uWSGI ----------
@pytest.mark.parametrize("server", SERVERS)
def test_reload_on_as_replaces_the_worker_after_the_request_that_passed_it(procs, tmp_path, server):
    """core/utils.c uwsgi_close_request: once a request has been answered, a worker whose
    address space (VSZ) is at or above `reload-on-as` exits (goodbye_cruel_world) and
    the master respawns it. The app maps 2 GiB it never touches: address space, not RSS.
    `min-worker-lifetime = 0`: uWSGI's default (10 s, core/init.c) would hold a young worker back."""
    m = start_server(procs, server, tmp_path, "processes = 1\nreload-on-as = 1024\nmin-worker-lifetime = 0\n",
                     app="leaky")
    first = get_body(m.port, "/")
    assert get_body(m.port, "/") == first                     # under the limit: kept
    assert get_body(m.port, "/reserve?mb=2048") == first      # the request that passes it is answered
    assert get_body(m.port, "/") != first                     # ...by a worker that then left
    assert memory(int(get_body(m.port, "/")))[1] < 1024 << 20
    assert {"emperor": "reload-on-as: address space", "uwsgi": "The work of process"}[server] in m.log


@pytest.mark.parametrize("server", SERVERS)
def test_evil_reload_on_as_is_the_master_killing_a_worker_in_its_request(procs, tmp_path, server):
    """core/master_checks.c uwsgi_master_check_workers_deadline: past `evil-reload-on-as` the
    master SIGKILLs the worker ("EVIL RELOAD ON WORKER ... ADDRESS SPACE") without waiting for
    its request to end (the worker's own check, after the request, would never come: the
    request is held), and the worker is respawned."""
    gate = tmp_path / "gate"
    gate.mkdir()
    m = start_server(procs, server, tmp_path, f"processes = 1\nevil-reload-on-as = 1024\nenv = GATE_DIR={gate}\n",
                     app="leaky")
    victim = int(get_body(m.port, "/"))
    cut: list[BaseException] = []

    def held() -> None:
        try:
            get_body(m.port, "/reserve?mb=2048&id=e", timeout=40)
        except OSError as e:
            cut.append(e)

    t = threading.Thread(target=held)
    t.start()
    wait_for(lambda: (gate / "e.started").exists(), timeout=20)
    wait_for(lambda: worker_pids(m.pid) and victim not in worker_pids(m.pid), timeout=30)
    (gate / "e.release").touch()
    t.join(30)
    assert cut                                                # cut short: it never got an answer
    assert int(get_body(m.port, "/")) != victim
    assert {"emperor": "address space", "uwsgi": "EVIL RELOAD ON WORKER 1 ADDRESS SPACE"}[server] in m.log
    assert "evil-reload-on-as (1024 MiB): killing it" in m.log or server == "uwsgi"
