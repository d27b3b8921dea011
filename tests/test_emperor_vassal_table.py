"""The vassal table driven directly (emperor/emperor/masters.py, vassals.py): fake PIDs, a
clock the test moves, the channel's words said by the test; no process is started."""
from __future__ import annotations

import json
import os
import signal

import pytest

from support import free_port, vassal_ini

from emperor.emperor import process as emp
from emperor.states import VassalState as S
from emperor.wire import channel
from emperor.emperor.watch import Changes

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def driven(tmp_path, capfd):
    """An Emperor whose masters are fake PIDs and whose clock the test moves."""
    d = tmp_path / "vassals"
    d.mkdir()
    clock = Clock()
    pids = iter(range(5_000_000, 5_100_000))  # above any pid_max: signals to them do nothing
    launched: list[tuple[int, str, dict, int]] = []

    def launch(path, env, fd, uid, gid):
        pid = next(pids)
        launched.append((pid, path, env, os.dup(fd)))  # the master's end of the channel
        return pid

    e = emp.Emperor(str(d), clock=clock, launch=launch)
    e.clock_, e.launched, e.dir = clock, launched, d
    yield e
    for v in list(e.vassals.values()):
        e.masters.close_channel(v)
    for *_, fd in launched:
        os.close(fd)


def say(e, v, line: str) -> None:
    """What the vassal's master would say on its channel."""
    e.masters.on_message(v, *channel.parse(line))


def test_backoff_doubles_up_to_60s_and_resets_once_a_request_was_served(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    delays = []
    for _ in range(8):
        say(driven, v, "error app.ini: boom")
        driven.masters.on_exit(v.pid, 1)
        assert v.state is S.BACKOFF and v.last_error == "app.ini: boom"
        delays.append(v.retry_at - driven.clock_.now)
        assert driven.next_timeout() <= delays[-1]
        driven.clock_.now = v.retry_at
        driven.run_timers()
        assert v.state is S.STARTING
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]

    def retry_then(*messages: str) -> None:
        driven.clock_.now = v.retry_at
        driven.run_timers()
        for m in messages:
            say(driven, v, m)

    def crash(code: int = 1) -> float:
        driven.masters.on_exit(v.pid, code)
        return v.retry_at - driven.clock_.now

    # ready, then dead before serving anything: still a loop
    say(driven, v, "spawned")
    say(driven, v, "ready")
    assert v.state is S.RUNNING and v.backoff == 60
    assert crash() == 60
    # it served a request: the next crash is retried after 1 s
    retry_then("spawned", "ready", "loyal")
    assert v.backoff == 0
    assert crash(-9) == 1 and v.last_event == "killed by SIGKILL; retry in 1s"
    # a crash after a long calm (no request needed) is not a loop either
    for expected in (2, 4, 8):
        retry_then()
        assert crash() == expected
    retry_then("spawned", "ready")
    driven.clock_.now += 3600
    assert crash() == 1


def test_master_gets_its_channel_and_the_vassals_dir(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    pid, path, env, _ = driven.launched[0]
    assert path == str(driven.dir / "app.ini")
    assert env["EMPEROR_VASSALS_DIR"] == str(driven.dir) and env["EMPEROR_CHANNEL"].isdigit()
    assert "UWSGI_RELOADS" not in env


def test_rename_starts_the_new_name_after_the_old_master_left(driven, appdir):
    port = free_port()
    (driven.dir / "old.ini").write_text(vassal_ini(port, appdir))
    driven.apply(Changes(new=["old.ini"]))
    old = driven.vassals["old.ini"]
    os.rename(driven.dir / "old.ini", driven.dir / "new.ini")
    driven.apply(Changes(new=["new.ini"], deleted=["old.ini"]))
    new = driven.vassals["new.ini"]
    assert old.state is S.STOPPING and new.state is S.STARTING
    assert new.pid is None and new.waiting_for == {"old.ini"}
    driven.masters.on_exit(old.pid, 0)
    assert "old.ini" not in driven.vassals and new.pid is not None


def test_a_master_that_held_ports_wakes_the_vassals_backing_off_on_them(driven, appdir):
    port = free_port()
    for name in ("a.ini", "b.ini", "c.ini"):
        (driven.dir / name).write_text(vassal_ini(port, appdir))
    driven.apply(Changes(new=["a.ini"]))
    a = driven.vassals["a.ini"]
    say(driven, a, "spawned")                  # a bound the port
    driven.apply(Changes(new=["b.ini", "c.ini"]))
    b, c = driven.vassals["b.ini"], driven.vassals["c.ini"]
    driven.masters.on_exit(b.pid, 1)                         # could not bind
    driven.masters.on_exit(c.pid, 1)
    assert b.state is S.BACKOFF and c.state is S.BACKOFF  # a failure never restarts its peers: no ping-pong
    driven.masters.on_exit(a.pid, 1)                         # the holder left
    assert a.state is S.BACKOFF                      # itself: its own backoff
    assert b.state is S.STARTING and c.state is S.STARTING and b.pid and c.pid


def test_signals_are_dispatched_through_the_table(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    driven.masters.on_exit(v.pid, 1)
    assert v.state is S.BACKOFF
    driven.pending.append(signal.SIGURG)
    driven.dispatch_signals()
    assert v.state is S.STARTING and v.backoff == 0
    driven.pending.append(signal.SIGTERM)
    driven.dispatch_signals()
    assert v.state is S.STOPPING and driven.stopping == "graceful"
    assert v.kill_at == driven.clock_.now + 30
    driven.masters.on_exit(v.pid, 0)
    assert driven.vassals == {}


def test_shutdown_delay_keeps_serving_then_stops_gracefully(driven, appdir):
    driven.shutdown_delay = 2.0
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    driven.apply(Changes(new=["app.ini"]))
    v = driven.vassals["app.ini"]
    say(driven, v, "spawned")
    say(driven, v, "ready")
    driven.on_graceful_shutdown("SIGTERM")
    assert v.state is S.RUNNING and driven.next_timeout() == 2.0
    driven.clock_.now += 2.0
    driven.run_timers()
    assert v.state is S.STOPPING and v.kill_at == driven.clock_.now + 30
    master_end = driven.launched[0][3]
    assert os.read(master_end, 100) == b"graceful stop\n"


def test_snapshot_is_plain_json(driven, appdir):
    (driven.dir / "app.ini").write_text(vassal_ini(free_port(), appdir))
    (driven.dir / "bad.ini").write_text("[uwsgi]\nprocesses = x\n")
    driven.apply(Changes(new=["app.ini", "bad.ini"]))
    snap = json.loads(json.dumps(driven.snapshot()))
    assert snap["vassals"]["app.ini"]["state"] == "starting"
    assert snap["vassals"]["bad.ini"]["state"] == "config error"
    assert snap["vassals"]["bad.ini"]["last_error"].startswith("bad.ini:2: processes:")
    assert set(snap["vassals"]["app.ini"]) >= {"name", "path", "state", "pid", "generation", "backoff",
                                               "last_event", "last_error", "errors"}
