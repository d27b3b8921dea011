"""What systemd and probes see: sd_notify messages, `emperor health`, and shutdown under load.

A datagram socket of the test's own stands in for systemd's $NOTIFY_SOCKET; the
emperor and its masters are real processes (started through `procs`, killed by
PID at teardown).
"""
from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import answers, free_port, http_get, run_cli, vassal_ini, wait_for
from emperor.cli import health
from emperor.emperor import systemd as sdnotify
from emperor.wire.control import query
from emperor.paths import control_socket

pytestmark = pytest.mark.timeout(60)

class FakeSystemd:
    """An AF_UNIX datagram socket that collects what the emperor sends."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait(self, key: str, value: str = "1", timeout: float = 10.0, count: int = 1) -> dict[str, str]:
        def found():
            self._drain()
            hits = [m for _, m in self.messages if m.get(key) == value]
            return hits[count - 1] if len(hits) >= count else None
        try:
            return wait_for(found, timeout, interval=0.01)
        except TimeoutError:
            raise TimeoutError(f"no {key}={value} (#{count}) in {self.messages}") from None

    def keys(self) -> list[str]:
        self._drain()
        return [k for _, m in self.messages for k in m if k != "STATUS"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def shortdir():
    d = Path(tempfile.mkdtemp(prefix="emp-sd-"))   # AF_UNIX paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def systemd(shortdir):
    fake = FakeSystemd(str(shortdir / "notify"))
    fake.env = str(shortdir / "notify")
    yield fake
    fake.close()


# ---------- sd_notify with a real emperor ----------
def test_ready_once_vassals_serve_reloading_ready_around_sighup_stopping_at_sigterm(emperor, systemd, appdir):
    port = free_port()
    e = emperor(env={"NOTIFY_SOCKET": systemd.env, "IMPORT_DELAY": "0.7"},
                    vassals={"app.ini": vassal_ini(port, appdir)})
    ready = systemd.wait("READY", timeout=15)
    assert answers(port), "READY=1 came before the vassal served"
    assert ready["STATUS"] == "1 vassal: 1 running"
    assert " notify=- " in http_get(port, expect=200).text, "NOTIFY_SOCKET leaked into the vassal's environment"
    assert query(control_socket(str(e.dir)))["ready"] is True

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    e.signal(signal.SIGHUP)
    reloading = systemd.wait("RELOADING")
    assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    systemd.wait("READY", count=2, timeout=15)
    assert " gen=1 " in http_get(port).text
    keys = systemd.keys()
    assert keys.index("RELOADING") < len(keys) - 1 - keys[::-1].index("READY")

    e.signal(signal.SIGTERM)
    stopping = systemd.wait("STOPPING")
    assert stopping["STATUS"].startswith("stopping")
    assert e.wait(10) == 0
    assert systemd.keys() == ["READY", "RELOADING", "MONOTONIC_USEC", "READY", "STOPPING"]


def test_ready_does_not_wait_for_broken_vassals(emperor, systemd, appdir):
    (appdir / "crashapp.py").write_text("raise RuntimeError('broken at import')\n")
    good, bad = free_port(), free_port()
    e = emperor(env={"NOTIFY_SOCKET": systemd.env}, vassals={
        "good.ini": vassal_ini(good, appdir),
        "crash.ini": vassal_ini(bad, appdir).replace("wsgiapp:", "crashapp:"),
        "typo.ini": vassal_ini(bad, appdir, "processes = many\n"),
    })
    ready = systemd.wait("READY", timeout=15)
    log = e.log   # read at once: its second failure comes 1 s after its first
    assert "retry in 2s" not in log, systemd.messages   # READY at its first failure, not its second
    assert answers(good)
    assert ready["STATUS"] == "3 vassals: 1 backoff, 1 running, 1 config error"


def test_abstract_notify_socket_and_an_empty_directory(emperor):
    name = f"emperor-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        e = emperor(env={"NOTIFY_SOCKET": "@" + name})
        assert fake.wait("READY", timeout=10)["STATUS"] == "no vassals"
        e.signal(signal.SIGINT)
        fake.wait("STOPPING")
        assert e.wait(10) == 0
    finally:
        fake.close()


def test_no_notify_socket_is_fine(emperor, appdir):
    port = free_port()
    e = emperor(vassals={"app.ini": vassal_ini(port, appdir)})
    wait_for(lambda: answers(port))
    e.signal(signal.SIGTERM)
    assert e.wait(10) == 0


# ---------- the Notifier without processes ----------
class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_notifier_ready_timeout_and_status_lines():
    clock = Clock()
    n = sdnotify.Notifier(None, clock=clock, ready_timeout=60)
    assert not n.active
    n.update({"a.ini": "starting", "b.ini": "starting"})
    assert not n.ready and n.deadline() == 160
    n.update({"a.ini": "running", "b.ini": "starting"})
    assert not n.ready
    n.update({"a.ini": "running", "b.ini": "starting", "late.ini": "starting"})  # not present at start
    clock.now = 160
    n.update({"a.ini": "running", "b.ini": "starting", "late.ini": "starting"})
    assert n.ready and n.started and n.deadline() is None
    assert n.sent[-1].startswith("READY=1\nSTATUS=3 vassals: 1 running, 2 starting; not settled after 60s: b.ini")
    n.reloading(["a.ini"])
    assert not n.ready and n.started and n.sent[-1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    n.update({"a.ini": "reload failed"})      # settled: the old generation keeps serving
    assert n.ready and n.sent[-1] == "READY=1\nSTATUS=1 vassal: 1 reload failed"
    n.stopping("SIGTERM")
    n.update({"a.ini": "stopping"})
    n.reloading(["a.ini"])
    assert n.sent[-1] == "STOPPING=1\nSTATUS=stopping (SIGTERM)" and not n.ready


def test_notify_socket_addresses(shortdir):
    assert sdnotify.address("@abc") == b"\0abc"
    assert sdnotify.address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.address("") is None and sdnotify.address(None) is None
    assert sdnotify.address("vsock:2:1234") is None
    assert sdnotify.notify("READY=1", str(shortdir / "nobody-listens")) is False
    env = {"NOTIFY_SOCKET": "@x"}
    n = sdnotify.Notifier.from_environ(env)
    assert n.socket_path == "@x" and "NOTIFY_SOCKET" not in env


# ---------- emperor health ----------
def test_health_exit_codes(emperor, appdir, tmp_path):
    assert run_cli("health", str(tmp_path / "vassals")).returncode == 1  # nobody there: one line
    (appdir / "crashapp.py").write_text("raise RuntimeError('broken at import')\n")
    port, bad = free_port(), free_port()
    e = emperor(vassals={"app.ini": vassal_ini(port, appdir), "typo.ini": vassal_ini(bad, appdir, "threads = x\n")})
    wait_for(lambda: answers(port))
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(run_cli("health", str(e.dir))), timeout=30)
    assert r.stdout == "ok: 2 vassals: 1 running, 1 config error\n"   # a config error is not a failure
    (e.dir / "crash.ini").write_text(vassal_ini(bad, appdir).replace("wsgiapp:", "crashapp:"))
    e.wait_log("crash.ini: starting -> backoff")
    assert run_cli("health", str(e.dir)).returncode == 0                       # first backoffs: may recover
    r = run_cli("health", str(e.dir), "--max-backoff", "1")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("emperor health: crash.ini keeps failing (backoff ")
    assert "RuntimeError: broken at import" in r.stderr and r.stderr.count("\n") == 1
    assert run_cli("health", str(e.dir), "--live", "--max-backoff", "1").returncode == 0
    e.signal(signal.SIGTERM)
    assert e.wait(10) == 0
    r = run_cli("health", str(e.dir))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no emperor for" in r.stderr


def test_health_check_rules():
    def doc(state="running", ready=True, **vassals):
        return {"pid": 7, "state": state, "ready": ready, "vassals": vassals}
    ok = {"state": "running", "backoff": 0}
    assert health.check(doc(a=ok)) == (True, "ok: 1 vassal: 1 running")
    assert health.check(doc(state="draining", a=ok))[0] is False
    assert health.check(doc(state="stopping", a=ok))[0] is False
    assert health.check(doc(state="draining"), live=True)[0] is True
    assert health.check(doc(ready=False, a={"state": "starting"}))[1] == "emperor is not ready yet: waiting for a"
    looping = {"state": "backoff", "backoff": 60.0, "last_error": "exited 1: ImportError: x\nmore"}
    assert health.check(doc(a=ok, b=looping)) == (False, "b keeps failing (backoff 60s: exited 1: ImportError: x)")
    assert health.check(doc(b={**looping, "backoff": 8.0}))[0] is True
    assert health.check(doc(b={"state": "reload failed"}, c={"state": "config error"}))[0] is True


# ---------- shutdown under load, with real processes ----------
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
    assert run_cli("health", str(e.dir)).returncode == 0
    t0 = time.monotonic()
    e.signal(signal.SIGTERM)
    systemd.wait("STOPPING")
    doc = query(control_socket(str(e.dir)))
    assert doc["state"] == "draining" and doc["ready"] is False
    served = 0
    for _ in range(10):                           # new connections still served during the delay
        assert http_get(port).status == 200
        served += 1
        time.sleep(0.1)                           # spread over a second of it
    assert served > 5
    r = run_cli("health", str(e.dir))
    assert r.returncode == 1 and "draining" in r.stderr
    assert run_cli("health", str(e.dir), "--live").returncode == 0
    assert e.wait(delay + 10) == 0
    assert time.monotonic() - t0 >= delay
    assert not answers(port)
