"""Cron: uWSGI's `cron`, `unique-cron`, `cron2` and `cron-harakiri`, run by the master.

The matching and the scheduler are driven with an injected clock (fast); a few real masters
check what only real processes show: a `-1 -1 -1 -1 -1` task runs on the minute, its output
in the vassal's log, once per minute across a graceful reload; harakiri and a SIGKILLed
master leave none of a job's processes behind. Every process is killed by PID at teardown.
"""
from __future__ import annotations

import calendar
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

import sys

from support import HELLO_APP, descendants, free_port, wait_for
from emperor.attached import matches, next_match, parse_cron
from emperor.config import ConfigError, load_config
from emperor.master.cron import MAX_CRONS, MAX_RUNNING, Cron
from emperor.master.loop import Loop
from emperor.wire.handoff import HandOff

pytestmark = pytest.mark.timeout(30)


def utc(text: str) -> int:
    """'2024-03-31 02:30' (UTC) -> epoch seconds."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M"))


def spec(text: str, option: str = "cron"):
    return parse_cron(option, text)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------- the syntax ----------
def test_the_three_options_read_as_uwsgi_reads_them():
    """core/cron.c uwsgi_cron_add (`%d %d %d %d %d %n`), uwsgi_opt_add_unique_cron and
    uwsgi_opt_add_cron2 (key=value list, then the command; every field defaults to -1)."""
    s = spec("59 2 -1 -1 -1 /usr/bin/backup_my_home --recursive")
    assert (s.minute, s.hour, s.day, s.month, s.week) == (59, 2, -1, -1, -1)
    assert s.command == "/usr/bin/backup_my_home --recursive" and not s.unique and s.harakiri is None
    assert spec("0 -2 -1 -1 -1 x", "unique-cron").unique
    s = spec("minute=30,hour=5,unique=1 /usr/local/bin/backup.sh", "cron2")
    assert (s.minute, s.hour, s.day, s.command, s.unique) == (30, 5, -1, "/usr/local/bin/backup.sh", True)
    s = spec("my command", "cron2")        # Cron.rst: "execute `my command` every minute"
    assert (s.minute, s.hour, s.command) == (-1, -1, "my command")
    assert spec("harakiri=0 my command", "cron2").harakiri == 0   # 0: no harakiri for this one


@pytest.mark.parametrize("option,text,message", [
    ("cron", "-1 -1 -1 -1 echo", "expected MINUTE HOUR DAY MONTH WEEKDAY COMMAND"),
    ("cron", "-1 -1 0 -1 -1 x", "day: expected 1 to 31"),
    ("cron", "-1 -1 -1 -1 -61 x", "week: expected 0 to 7"),
    ("cron2", "minute=5", "no command"),
    ("cron2", "minute=1,legion=x cmd", '"legion" is not supported'),
    ("cron2", "minute=1,hours=2 cmd", 'unknown key "hours"'),
])
def test_a_bad_cron_line_is_a_config_error_with_its_line(tmp_path, option, text, message):
    """uWSGI exits at start on a malformed line (core/cron.c "invalid cron syntax")."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = :8000\nmodule = x\n{option} = {text}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(ini))
    assert str(e.value).startswith(f"app.ini:4: {option}: ") and message in str(e.value)


@pytest.mark.parametrize("text,message", [
    ("120 -1 -1 -1 -1 x", "minute 120 is never reached (0 to 59)"),   # from a real file (tests/corpus)
    ("0 0 31 2 -1 x", "this date never comes"),
])
def test_a_cron_that_never_runs_is_left_out_with_a_warning(tmp_path, text, message):
    """uWSGI reads the five numbers with sscanf and no range check (core/cron.c uwsgi_opt_add_cron),
    so such a file loads and the task never runs: here too, and the file says so."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = :8000\nmodule = x\ncron = {text}\ncron = 5 -1 -1 -1 -1 y\n")
    config = load_config(str(ini))
    assert config.cron == ["5 -1 -1 -1 -1 y"]
    assert [w for w in config.warnings if message in w and w.startswith("app.ini:4: cron: ")
            and "never run" in w and w.endswith("ignored")]


def test_the_number_of_tasks_is_bounded(tmp_path):
    """Everything a config can ask is bounded: at most MAX_CRONS tasks per vassal."""
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :8000\nmodule = x\n" + "cron = -1 -1 -1 -1 -1 true\n" * (MAX_CRONS + 1))
    with pytest.raises(ConfigError, match=f"at most {MAX_CRONS}"):
        Cron(load_config(str(ini)), HandOff(), Loop(), keepers=FakeKeepers())


# ---------- when it matches ----------
def at(text: str) -> time.struct_time:
    return time.gmtime(utc(text))


def test_minus_n_is_every_n_and_day_and_weekday_are_ored():
    """core/master_utils.c uwsgi_cron_task_needs_execution: -N matches when the value modulo N
    is 0 (-1 is `*`), the month counts from 1, weekday 7 is Sunday, and day and weekday are
    ORed only when both are set (Cron.rst: "day and weekday are ORed")."""
    assert matches(spec("-1 -1 -1 -1 -1 x"), at("2024-05-17 13:41"))
    every_two_hours = spec("0 -2 -1 -1 -1 x")
    assert matches(every_two_hours, at("2024-05-17 14:00"))
    assert not matches(every_two_hours, at("2024-05-17 13:00"))
    assert not matches(every_two_hours, at("2024-05-17 14:01"))
    even_months = spec("0 0 1 -2 -1 x")
    assert matches(even_months, at("2024-02-01 00:00")) and not matches(even_months, at("2024-01-01 00:00"))
    sunday = spec("0 12 -1 -1 7 x")                     # 2024-05-19 is a Sunday
    assert matches(sunday, at("2024-05-19 12:00")) and not matches(sunday, at("2024-05-20 12:00"))
    assert matches(spec("0 12 -1 -1 0 x"), at("2024-05-19 12:00"))
    first_or_monday = spec("0 12 1 -1 1 x")             # the 1st, or any Monday
    assert matches(first_or_monday, at("2024-05-01 12:00"))     # a Wednesday, the 1st
    assert matches(first_or_monday, at("2024-05-20 12:00"))     # a Monday
    assert not matches(first_or_monday, at("2024-05-21 12:00"))
    first_monday_only = spec("0 12 -1 -1 1 x")          # weekday alone: every Monday
    assert not matches(first_monday_only, at("2024-05-01 12:00"))


def test_the_next_run_is_the_next_matching_minute():
    """The scheduler's deadline: the first matching minute after the current one."""
    gm = time.gmtime
    assert next_match(spec("-1 -1 -1 -1 -1 x"), utc("2024-05-17 13:41") + 12.5, gm) == utc("2024-05-17 13:42")
    assert next_match(spec("59 2 -1 -1 -1 x"), utc("2024-05-17 03:00"), gm) == utc("2024-05-18 02:59")
    assert next_match(spec("59 2 -1 -1 -1 x"), utc("2024-05-17 02:59"), gm) == utc("2024-05-18 02:59")
    assert next_match(spec("0 0 29 2 -1 x"), utc("2024-03-01 00:00"), gm) == utc("2028-02-29 00:00")
    assert next_match(spec("-7 -1 -1 -1 -1 x"), utc("2024-05-17 13:57"), gm) == utc("2024-05-17 14:00")
    t0 = time.perf_counter()
    next_match(spec("0 0 29 2 1 x"), utc("2024-03-01 00:00"), gm)
    assert time.perf_counter() - t0 < 0.5    # days that cannot match are skipped whole


def test_local_time_across_daylight_saving_changes():
    """Matching is on local time (uWSGI: localtime()); a minute that does not exist on the day
    clocks go forward is not run that day, and the day after comes at its midnight."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        start = time.mktime((2024, 3, 31, 0, 0, 0, 0, 0, -1))     # clocks go 02:00 -> 03:00 that night
        t = next_match(spec("30 2 -1 -1 -1 x"), start)
        assert time.localtime(t)[:5] == (2024, 4, 1, 2, 30)
        t = next_match(spec("0 0 -1 -1 -1 x"), start + 60)
        assert time.localtime(t)[:5] == (2024, 4, 1, 0, 0)
        t = next_match(spec("30 1 -1 -1 -1 x"), time.mktime((2024, 10, 26, 12, 0, 0, 0, 0, -1)))
        assert time.localtime(t)[:5] == (2024, 10, 27, 1, 30)
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


# ---------- the scheduler, on an injected clock ----------
class FakeKeepers:
    """Stands for emperor/master/keeper.Keepers: records, forks nothing, signals nobody."""

    def __init__(self) -> None:
        self.spawned: list[str] = []
        self.killed: list[tuple[int, int]] = []
        self.sent: list[tuple[int, int]] = []
        self.next_pid = 10_000_000     # beyond any real PID

    def spawn(self, command: str, label: str, **kw) -> int:
        self.spawned.append(command)
        self.next_pid += 1
        return self.next_pid

    def kill(self, keeper: int, stage: int) -> None:
        self.killed.append((keeper, stage))

    def send(self, keeper: int, sig: int) -> None:
        self.sent.append((keeper, sig))

    def read(self) -> None:
        pass

    def fds(self) -> list[int]:
        return []


class Clock:
    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def scheduler(tmp_path: Path, lines: str, clock: Clock, inherited: HandOff | None = None):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :8000\nmodule = x\n" + textwrap.dedent(lines))
    keepers = FakeKeepers()
    logged: list[str] = []
    cron = Cron(load_config(str(ini)), inherited or HandOff(), Loop(), log=logged.append,
                clock=lambda: clock.wall, monotonic=lambda: clock.mono, localtime=time.gmtime,
                keepers=keepers)  # type: ignore[arg-type]
    return cron, keepers, logged


def test_a_task_runs_at_start_when_its_minute_matches_then_on_each_matching_minute(tmp_path):
    """core/cron.c uwsgi_manage_command_cron: a task runs when the current minute matches and
    it has not run in the last 60 s; the master looks at start-up too. Here the loop's
    deadline is the start of the next matching minute: no polling in between."""
    clock = Clock(utc("2024-05-17 13:41") + 25)
    cron, keepers, _ = scheduler(tmp_path, "cron = -1 -1 -1 -1 -1 every\ncron = 0 -1 -1 -1 -1 hourly\n", clock)
    assert keepers.spawned == ["every"]
    assert cron.deadline() == pytest.approx(clock.mono + 35)
    cron.run_timers(clock.mono)                   # woken early (or twice): nothing more this minute
    assert keepers.spawned == ["every"]
    clock.advance(35)
    cron.run_timers(clock.mono)
    assert keepers.spawned == ["every"] * 2
    clock.advance(60 * 18)                        # 14:00:00: both, once each
    cron.run_timers(clock.mono)
    cron.run_timers(clock.mono + 0.5)
    assert keepers.spawned == ["every"] * 3 + ["hourly"]


def test_the_wait_is_re_armed_from_the_wall_clock_at_least_hourly(tmp_path):
    """A yearly task does not mean a year-long monotonic wait: a clock step or drift would
    move it; the deadline is at most MAX_WAIT away and is recomputed then."""
    clock = Clock(utc("2024-05-17 13:41"))
    cron, keepers, _ = scheduler(tmp_path, "cron = 0 0 1 1 -1 new-year\n", clock)
    assert cron.deadline() == pytest.approx(clock.mono + 3600)
    clock.mono += 3600                            # the monotonic clock moved, the wall clock stepped back
    cron.run_timers(clock.mono)
    assert keepers.spawned == [] and cron.deadline() == pytest.approx(clock.mono + 3600)


def test_unique_is_not_started_again_while_running_and_starts_when_it_ends_within_its_minute(tmp_path):
    """Cron.rst "Unique crons": never two at once; "a new process will be started right after
    the previous one finishes" (core/cron.c: skipped while `pid >= 0`, checked again each
    second of a matching minute). A plain task overlaps, bounded by MAX_RUNNING."""
    clock = Clock(utc("2024-05-17 13:41") + 5)
    cron, keepers, logged = scheduler(tmp_path, "unique-cron = -1 -1 -1 -1 -1 slow\ncron = -1 -1 -1 -1 -1 plain\n",
                                      clock)
    first = keepers.next_pid
    assert keepers.spawned == ["plain", "slow"]
    clock.advance(55)
    cron.run_timers(clock.mono)                   # 13:42: slow still runs
    assert keepers.spawned == ["plain", "slow", "plain"]
    assert any("still running" in line and "(unique)" in line for line in logged)
    clock.advance(10)
    cron.reaped(first, 0)                         # it ends at 13:42:10: due this minute, so now
    assert keepers.spawned[-1] == "slow" and len(keepers.spawned) == 4
    for _ in range(MAX_RUNNING + 3):
        clock.advance(60)
        cron.run_timers(clock.mono)
    assert keepers.spawned.count("plain") == MAX_RUNNING   # none of them ever ended


def test_harakiri_kills_a_run_that_takes_too_long(tmp_path):
    """--cron-harakiri and cron2's harakiri= (Cron.rst "Harakiri"; core/master_checks.c
    uwsgi_master_check_crons_deadline: "HARAKIRI ON CRON", SIGKILL to its group). cron2's
    harakiri=0 takes a task out of the global limit."""
    clock = Clock(utc("2024-05-17 13:41") + 5)
    cron, keepers, logged = scheduler(
        tmp_path, "cron-harakiri = 10\ncron = -1 -1 -1 -1 -1 global\ncron2 = harakiri=0 exempt\n"
                  "cron2 = harakiri=3 own\n", clock)
    pids = dict(zip(keepers.spawned, range(keepers.next_pid - 2, keepers.next_pid + 1)))
    assert set(pids) == {"global", "exempt", "own"}
    assert cron.deadline() == pytest.approx(clock.mono + 3)
    clock.advance(3)
    cron.run_timers(clock.mono)
    assert keepers.killed == [(pids["own"], 0)]
    assert any('HARAKIRI ON CRON "own"' in line for line in logged)
    clock.advance(7)
    cron.run_timers(clock.mono)
    assert (pids["global"], 0) in keepers.killed and all(k != pids["exempt"] for k, _ in keepers.killed)


def test_a_reload_hands_the_last_minute_over_so_nothing_runs_twice(tmp_path):
    """uWSGI's re-executed master forgets `last_job` and runs a matching task again in the
    same minute; the minute crosses the re-exec here (emperor/wire/handoff.py CRONS)."""
    clock = Clock(utc("2024-05-17 13:41") + 5)
    cron, keepers, _ = scheduler(tmp_path, "cron = -1 -1 -1 -1 -1 every\n", clock)
    h = HandOff()
    cron.hand_over(h)
    clock.advance(20)
    _, keepers2, _ = scheduler(tmp_path, "cron = -1 -1 -1 -1 -1 every\n", clock, inherited=h)
    assert keepers2.spawned == []
    _, keepers3, _ = scheduler(tmp_path, "cron = -1 -1 -1 -1 -1 changed\n", clock, inherited=h)
    assert keepers3.spawned == ["changed"]        # another line: another task


def test_the_vassal_stopping_stops_running_jobs(tmp_path):
    """No job outlives its vassal: SIGTERM, then the keeper's kill order after the mercy."""
    clock = Clock(utc("2024-05-17 13:41") + 5)
    cron, keepers, _ = scheduler(tmp_path, "cron = -1 -1 -1 -1 -1 job\n", clock)
    keeper = keepers.next_pid
    cron.stop(graceful=True)
    assert keepers.sent == [(keeper, signal.SIGTERM)] and cron.alive()
    clock.advance(3)
    cron.run_timers(clock.mono)
    assert keepers.killed == [(keeper, 0)]
    clock.advance(60)
    cron.run_timers(clock.mono)
    assert keepers.spawned == ["job"]              # stopped: no new run
    cron.reaped(keeper, -9)
    assert not cron.alive()


# ---------- real masters ----------
@pytest.mark.timeout(150)
def test_every_minute_runs_on_the_minute_with_its_output_in_the_vassal_log(master, tmp_path):
    """`cron = -1 -1 -1 -1 -1 CMD` (Cron.rst): run by the master at start (its minute matches)
    and at the start of the next minute; the command's output goes to the vassal's log (here
    `logto`); a graceful reload in between runs nothing twice in a minute."""
    log = tmp_path / "vassal.log"
    runs = tmp_path / "runs"
    m = master(f"logto = {log}\ncron = -1 -1 -1 -1 -1 date +%%s >> {runs}; echo cron-said-hello\n", app=HELLO_APP,
               wait=False)
    wait_for(lambda: log.exists() and "running (workers ready)" in log.read_text(), 15)
    wait_for(lambda: runs.exists() and len(runs.read_text().split()) >= 1, 10)
    m.signal(signal.SIGHUP)
    wait_for(lambda: "generation 1 ready" in log.read_text(), 15)
    wait_for(lambda: len(runs.read_text().split()) >= 2, 75)
    times = [int(t) for t in runs.read_text().split()]
    assert len({t // 60 for t in times}) == len(times)          # never twice in one minute
    assert times[1] % 60 <= 5                                     # on the minute
    text = log.read_text()
    assert text.count("cron-said-hello") >= 2 and 'cron "date +%s' in text and "exited 0" in text


def test_harakiri_and_a_sigkilled_master_leave_no_process_of_a_job(master, tmp_path):
    """cron2's harakiri kills the job with what it started (uWSGI: kill(-pid, SIGKILL)); a
    SIGKILLed master takes its running jobs along (the keeper's parent-death signal)."""
    pids = tmp_path / "pids"
    m = master(f"cron2 = harakiri=1 sleep 1000 & echo $! >> {pids}; echo $$ >> {pids}; wait\n"
               f"cron = -1 -1 -1 -1 -1 sleep 1001 & echo $! >> {pids}; wait\n", app=HELLO_APP)
    doomed = wait_for(lambda: pids.exists() and len(pids.read_text().split()) >= 3 and pids.read_text().split())
    try:
        m.wait_log("HARAKIRI ON CRON", timeout=5)
        m.wait_log("killed by SIGKILL after", timeout=5)
        left = [int(p) for p in doomed if alive(int(p)) and "1001" in open(f"/proc/{p}/cmdline").read()]
        assert len(left) == 1
        m.signal(signal.SIGKILL)
        wait_for(lambda: not any(alive(int(p)) for p in doomed), 5)
    finally:
        for p in doomed:
            if alive(int(p)):
                os.kill(int(p), signal.SIGKILL)


def test_under_the_emperor_a_sigkilled_master_or_emperor_takes_its_running_jobs_along(procs, tmp_path):
    """A running job is held by its keeper, whose parent-death signal kills it: when the master
    is SIGKILLed (the emperor starts the vassal again, whose job runs anew) and when the
    emperor is (its masters go, theirs)."""
    d = tmp_path / "vassals"
    d.mkdir()
    (tmp_path / "wsgiapp.py").write_text(HELLO_APP)
    pids = tmp_path / "pids"
    (d / "app.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nchdir = {tmp_path}\n"
                               f"module = wsgiapp:application\n"
                               f"cron = -1 -1 -1 -1 -1 sleep 1003 & echo $! >> {pids}; wait\n")
    e = procs([sys.executable, "-m", "emperor", "run", str(d)], tmp_path, log=tmp_path / "emperor.log")
    jobs = lambda: [int(p) for p in pids.read_text().split()] if pids.exists() else []
    first = wait_for(lambda: jobs()[:1], 15)[0]
    try:
        master_pid = wait_for(lambda: next((p for p in descendants(e.pid) if first in descendants(p)), None))
        os.kill(master_pid, signal.SIGKILL)
        wait_for(lambda: not alive(first), 5)
        second = wait_for(lambda: jobs()[1:2], 15)[0]
        e.signal(signal.SIGKILL)
        wait_for(lambda: not alive(second), 5)
    finally:
        for p in jobs():
            if alive(p):
                os.kill(p, signal.SIGKILL)
