"""What systemd sees: sd_notify messages (emperor/emperor/systemd.py), with a real emperor and
the Notifier alone.

A datagram socket of the test's own (support.FakeSystemd) stands in for systemd's
$NOTIFY_SOCKET; the emperor and its masters are real processes (the `emperor` fixture,
killed by PID at teardown).
"""
from __future__ import annotations

import signal
import time
import uuid

import pytest

from support import answers, FakeSystemd, free_port, http_get, vassal_ini, wait_for

from emperor.emperor import systemd as sdnotify
from emperor.wire.control import query
from emperor.paths import control_socket

pytestmark = pytest.mark.timeout(60)


# ---------- sd_notify with a real emperor ----------


def test_ready_once_vassals_serve_reloading_ready_around_sighup_stopping_at_sigterm(emperor, systemd, appdir):
    port = free_port()
    e = emperor(env={"NOTIFY_SOCKET": systemd.env, "IMPORT_DELAY": "0.7"},
                    vassals={"app.ini": vassal_ini(port, appdir)})
    ready = systemd.wait("READY", timeout=15)
    assert answers(port), "READY=1 came before the vassal served"
    assert ready["STATUS"] == "1 vassal: 1 running"
    assert " notify=- " in http_get(port, expect=200).text, "NOTIFY_SOCKET leaked into the vassal's environment"
    assert query(control_socket(str(e.dir)), timeout=10)["ready"] is True

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


def test_notify_socket_is_a_path_or_abstract_and_anything_else_is_ignored(shortdir):
    assert sdnotify.address("@abc") == b"\0abc"
    assert sdnotify.address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.address("") is None and sdnotify.address(None) is None
    assert sdnotify.address("vsock:2:1234") is None
    assert sdnotify.notify("READY=1", str(shortdir / "nobody-listens")) is False
    env = {"NOTIFY_SOCKET": "@x"}
    n = sdnotify.Notifier.from_environ(env)
    assert n.socket_path == "@x" and "NOTIFY_SOCKET" not in env
