"""Adaptive workers (`cheaper`) and `idle`/`cheap`: the algorithms driven directly with an
injected view, then real masters under a real load (uWSGI's Cheaper doc, core/master_utils.c)."""
from __future__ import annotations

import os
import signal
import json
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from spoolsupport import SERVERS, get as get_body, start as start_server
from support import APPS, alive, descendants, free_port, read_stats, wait_for, wait_port, worker_pids
from emperor.config import ConfigError, load_config
from emperor.master.cheaper import Backlog, Busyness, Spare, Spare2, View

pytestmark = pytest.mark.timeout(90)


def config(tmp_path: Path, body: str):
    (tmp_path / "c.ini").write_text("[uwsgi]\nhttp-socket = :0\nmodule = x\n" + body)
    return load_config(str(tmp_path / "c.ini"), environ={})


def view(busy: list[bool], cheaped: int, backlog: int = 0, now: float = 0.0, running=None) -> View:
    return View(busy, cheaped, running or [0] * len(busy), backlog, now)


# ---------- the algorithms, tick by tick ----------
def test_spare_adds_a_step_after_overload_ticks_all_busy_and_removes_one_per_overload_idle_ticks(tmp_path):
    """core/master_utils.c uwsgi_cheaper_algo_spare: all busy for cheaper-overload cycles ->
    spawn cheaper-step; one free worker is the stable state; otherwise cheap one every
    cheaper-overload idle cycles while above `cheaper`."""
    algo = Spare(config(tmp_path, "processes = 8\ncheaper = 2\ncheaper-step = 2\ncheaper-overload = 3\n"))
    assert [algo.decide(view([True, True], 6), True) for _ in range(3)] == [0, 0, 2]
    assert algo.decide(view([True, True, False, True], 4), True) == 0   # one spare: stable
    decisions = [algo.decide(view([False] * 4, 4), True) for _ in range(6)]
    assert decisions == [0, 0, -1, 0, 0, -1]
    assert algo.decide(view([False, False], 6), True) == 0                # at `cheaper`: never below


def test_spare2_keeps_cheaper_idle_workers(tmp_path):
    """core/master_utils.c uwsgi_cheaper_algo_spare2 (the Cheaper doc's example)."""
    algo = Spare2(config(tmp_path, "processes = 64\ncheaper = 4\ncheaper-step = 1\ncheaper-idle = 3\n"))
    assert algo.decide(view([False, False, True, True], 60), True) == 1   # 2 idle < 4: at most the step
    assert algo.decide(view([False] * 4, 60), True) == 0                 # exactly 4 idle
    assert [algo.decide(view([False] * 6, 58), True) for _ in range(3)] == [0, 0, -1]


def test_backlog_follows_the_listen_queue(tmp_path):
    algo = Backlog(config(tmp_path, "processes = 8\ncheaper = 1\ncheaper-overload = 5\ncheaper-step = 3\n"))
    assert algo.decide(view([True, True], 6, backlog=9), True) == 3
    assert algo.decide(view([True, True], 6, backlog=5), True) == 0
    assert algo.decide(view([False, False], 6, backlog=0), True) == -1


def test_busyness_spawns_above_max_and_cheaps_below_min_after_its_multiplier(tmp_path):
    """plugins/cheaper_busyness: average busyness over cheaper-overload seconds."""
    c = config(tmp_path, "processes = 8\ncheaper = 1\ncheaper-overload = 1\ncheaper-busyness-multiplier = 2\n"
                         "cheaper-algo = busyness\n")
    algo = Busyness(c)
    busy = [0, 0]
    # 1 s later, each worker spent 0.9 s in requests: 90 % > 50 %
    busy = [900_000, 900_000]
    assert algo.decide(view([True, True], 6, now=1.0, running=busy), True) == 1
    # then idle: nothing for multiplier (2) * overload (1) s, then one fewer
    decisions = [algo.decide(view([False] * 3, 5, now=2.0 + t, running=[900_000] * 3), True) for t in range(4)]
    assert decisions[0] == 0 and -1 in decisions


def test_cheaper_at_or_above_processes_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"c.ini:4: cheaper: must be lower than processes \(2\), got 2"):
        config(tmp_path, "cheaper = 2\nprocesses = 2\n")
    c = config(tmp_path, "processes = 4\ncheaper = 2\ncheaper-initial = 1\n")
    assert c.cheaper_initial == 2 and "cheaper-initial (1) is below cheaper (2)" in c.warnings[0]
    # core/init.c: uWSGI exits on a hard RSS limit without a soft one, or not above it
    with pytest.raises(ConfigError, match=r"cheaper-rss-limit-hard: needs cheaper-rss-limit-soft too"):
        config(tmp_path, "processes = 4\ncheaper = 1\ncheaper-rss-limit-hard = 200\n")
    with pytest.raises(ConfigError, match=r"cheaper-rss-limit-hard: must be higher than cheaper-rss-limit-soft "
                                          r"\(200\), got 100"):
        config(tmp_path, "processes = 4\ncheaper = 1\ncheaper-rss-limit-soft = 200\ncheaper-rss-limit-hard = 100\n")


# ---------- real masters ----------
def gate_master(procs, tmp_path: Path, body: str):
    port = free_port()
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n"
                   f"env = GATE_DIR={gate}\n{body}")
    m = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    m.port, m.gate = port, gate
    return m


def request(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    return data.partition(b"\r\n\r\n")[2]


def test_spare_spawns_workers_under_load_and_cheaps_them_after(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 4\ncheaper = 1\ncheaper-overload = 1\n")
    m.wait_log("running (workers ready)", timeout=20)
    assert len(worker_pids(m.pid)) == 1
    threads = [threading.Thread(target=request, args=(m.port, f"/hold?id=h{i}")) for i in range(2)]
    for t in threads:
        t.start()
    m.wait_log("cheaper (spare): 1 -> 2 workers", timeout=20)
    wait_for(lambda: (m.gate / "h0.started").exists() and (m.gate / "h1.started").exists(), timeout=20)
    for i in range(2):
        (m.gate / f"h{i}.release").touch()
    for t in threads:
        t.join(20)
    m.wait_log("cheaper (spare): 2 -> 1 workers", timeout=30)
    wait_for(lambda: len(worker_pids(m.pid)) == 1, timeout=20)
    assert request(m.port, "/")


def test_cheap_starts_without_workers_and_idle_puts_them_back_to_sleep(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 2\ncheap = true\nidle = 2\n")
    m.wait_log("cheap mode: the first connection starts the workers", timeout=20)
    m.wait_log("running (workers ready)", timeout=20)
    assert worker_pids(m.pid) == set()
    assert request(m.port, "/").isdigit()   # waits in the backlog while the workers start
    assert len(worker_pids(m.pid)) == 2
    m.wait_log("no request for 2s (idle)", timeout=20)
    m.wait_log("cheap mode: the first connection starts the workers", count=2, timeout=10)
    wait_for(lambda: worker_pids(m.pid) == set(), timeout=20)
    assert request(m.port, "/").isdigit()


def test_die_on_idle_ends_a_master_that_serves_nothing(procs, tmp_path):
    m = gate_master(procs, tmp_path, "processes = 1\nidle = 1\ndie-on-idle = true\n")
    m.wait_log("running (workers ready)", timeout=20)
    assert request(m.port, "/")
    assert m.wait(30) == 0
    assert "no request for 1s (idle)" in m.log


def cut_short(port: int, path: str) -> None:
    """A request whose server is killed under it: it ends, however it ends."""
    try:
        request(port, path)
    except (AssertionError, OSError):
        pass


def hold_two(m, tag: str, target=request) -> list[threading.Thread]:
    """Two requests held inside the app (the gate): both workers of a `cheaper = 1` master busy."""
    threads = [threading.Thread(target=target, args=(m.port, f"/hold?id={tag}{i}")) for i in range(2)]
    for t in threads:
        t.start()
    return threads


def release(m, tag: str, threads: list[threading.Thread]) -> None:
    wait_for(lambda: all((m.gate / f"{tag}{i}.started").exists() for i in range(2)), timeout=30)
    for i in range(2):
        (m.gate / f"{tag}{i}.release").touch()
    for t in threads:
        t.join(30)


def test_cheaper_goes_on_across_a_graceful_reload(procs, tmp_path):
    """A reload's new generation starts with cheaper-initial workers (as uWSGI's master starts
    a re-exec'd instance: core/master.c), the old one retires whatever it had grown to, and the
    algorithm keeps working on the new one."""
    m = gate_master(procs, tmp_path, "processes = 4\ncheaper = 1\ncheaper-overload = 1\nworker-reload-mercy = 30\n")
    m.wait_log("running (workers ready)", timeout=20)
    threads = hold_two(m, "a")
    m.wait_log("cheaper (spare): 1 -> 2 workers", timeout=30)
    release(m, "a", threads)
    m.signal(signal.SIGHUP)
    m.wait_log("generation 1 ready", timeout=30)
    wait_for(lambda: len(worker_pids(m.pid)) == 1, timeout=30)   # the new generation: cheaper-initial
    threads = hold_two(m, "b")
    m.wait_log("cheaper (spare): 1 -> 2 workers", count=2, timeout=30)
    release(m, "b", threads)
    m.wait_log("cheaper (spare): 2 -> 1 workers", count=1, timeout=40)


def cheaper_under_emperor(emperor, tmp_path: Path, processes: int):
    """An emperor running one `cheaper = 1` vassal of tests/apps/leaky.py (its gate in
    tmp_path/gate): (emperor, m) where m has the vassal's port and gate, for hold_two/release."""
    port = free_port()
    gate = tmp_path / "gate"
    gate.mkdir()
    e = emperor(vassals={"app.ini": f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {APPS}\nmodule = leaky\n"
                                    f"env = GATE_DIR={gate}\nprocesses = {processes}\ncheaper = 1\ncheaper-overload = 1\n"})
    e.wait_log("app.ini: starting -> running", timeout=30)
    return e, type("M", (), {"port": port, "gate": gate})()


def test_a_sigkilled_emperor_leaves_no_process_of_a_grown_vassal(emperor, tmp_path):
    """Workers the cheaper algorithm added die with their master, and the master with the emperor
    (PR_SET_PDEATHSIG down the tree): nothing of the vassal outlives a SIGKILLed emperor."""
    e, m = cheaper_under_emperor(emperor, tmp_path, processes=4)
    threads = hold_two(m, "k", cut_short)
    wait_for(lambda: all((m.gate / f"k{i}.started").exists() for i in range(2)), timeout=30)
    tree = descendants(e.pid)
    assert len(tree) >= 3   # the master and its two workers, at least
    os.kill(e.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in tree), timeout=30)
    for i in range(2):
        (m.gate / f"k{i}.release").touch()
    for t in threads:
        t.join(5)


def test_with_cheaper_a_crowded_worker_lets_a_keep_alive_client_go_through_the_listen_queue(procs, tmp_path):
    """Keep-alive clients stay with the worker that accepted them: under a rising load the
    workers cheaper adds got none (uWSGI's http-socket closes every connection, so its
    clients always go through the queue). A request waiting on another of the worker's
    connections makes the response `Connection: close`; alone, the connection stays open."""
    from support import Client, get_request

    m = gate_master(procs, tmp_path, "processes = 4\ncheaper = 1\ncheaper-overload = 30\n")
    m.wait_log("running (workers ready)", timeout=20)
    b = Client(m.port)
    b.send(get_request("/b1"))
    assert b.response().header("Connection") != "close"         # alone: kept alive
    a = Client(m.port)
    a.send(get_request("/hold?id=a"))
    wait_for(lambda: (m.gate / "a.started").exists(), timeout=20)
    b.send(get_request("/b2"))                                    # waits behind /hold in the one worker
    (m.gate / "a.release").touch()
    first = a.response()
    assert first.status == 200 and first.header("Connection") == "close"
    second = b.response()
    assert second.status == 200 and second.body == first.body   # the same worker answered both


# ---------- the worker count in the stats document; the RSS limits (emperor and real uWSGI) ----------
def active(doc: dict) -> int:
    """Workers running and not cheaped (a cheaped slot says "cheap"; its pid is 0 once it has gone)."""
    return sum(1 for w in doc["workers"] if w["pid"] and w["status"] != "cheap")


def stats_server(procs, server: str, tmp_path: Path, body: str):
    sport = free_port()
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    m = start_server(procs, server, tmp_path, f"stats = 127.0.0.1:{sport}\nenv = GATE_DIR={gate}\n{body}", app="leaky")
    wait_port(sport, 20)   # uWSGI's stats server comes up after its workers
    m.stats, m.gate = sport, gate
    return m


def held(m, rid: str, answers: list) -> threading.Thread:
    """GET /hold?id=rid in a thread; its body (or the error that cut it) goes to `answers`."""
    def run() -> None:
        try:
            answers.append(get_body(m.port, f"/hold?id={rid}", timeout=60))
        except OSError as e:
            answers.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("server", SERVERS)
def test_the_stats_document_follows_the_worker_count_cheaper_sets(procs, tmp_path, server):
    """The stats document lists every slot of `processes`, a cheaped one with status "cheap"
    (core/master_utils.c uwsgi_master_generate_stats): 1 worker running, 2 while two
    requests are held (spare: core/master_utils.c uwsgi_cheaper_algo_spare), 1 again after."""
    m = stats_server(procs, server, tmp_path, "processes = 2\ncheaper = 1\ncheaper-overload = 1\n")
    doc = read_stats(m.stats, timeout=10)
    assert len(doc["workers"]) == 2 and active(doc) == 1
    assert sorted(w["status"] for w in doc["workers"]) == ["cheap", "idle"]
    answers: list = []
    threads = [held(m, f"h{i}", answers) for i in range(2)]
    wait_for(lambda: active(read_stats(m.stats, timeout=10)) == 2, timeout=30)
    wait_for(lambda: all((m.gate / f"h{i}.started").exists() for i in range(2)), timeout=30)
    for i in range(2):
        (m.gate / f"h{i}.release").touch()
    for t in threads:
        t.join(30)
    assert all(isinstance(a, str) and a.isdigit() for a in answers), answers
    wait_for(lambda: active(read_stats(m.stats, timeout=10)) == 1, timeout=40)


@pytest.mark.parametrize("server", SERVERS)
def test_cheaper_rss_limit_soft_holds_spawning_back_while_the_workers_are_over_it(procs, tmp_path, server):
    """core/master_utils.c uwsgi_calc_cheaper: with the workers' total RSS at or above
    `cheaper-rss-limit-soft` (bytes) the algorithm may not spawn (Cheaper doc, "Setting memory
    limits"). The one worker holds 200 MiB and a request; another request waits: spare would
    add a worker after one tick, the soft limit (100 MiB) forbids it until harakiri replaces
    the fat worker with a slim one, which takes the waiting request: then the second worker
    comes. uWSGI wants memory-report with the soft limit (core/init.c); its master counts the
    RSS each worker reports after a request, emperor's reads /proc each tick."""
    m = stats_server(procs, server, tmp_path, "processes = 2\ncheaper = 1\ncheaper-overload = 1\nmemory-report = true\n"
                                            f"cheaper-rss-limit-soft = {100 << 20}\nharakiri = 4\n")
    get_body(m.port, "/leak?mb=200")
    answers: list = []
    fat = held(m, "a", answers)
    wait_for(lambda: (m.gate / "a.started").exists(), timeout=20)
    waiting = held(m, "b", answers)
    seen = []
    while not (m.gate / "b.started").exists():   # until harakiri has freed the worker for b
        doc = read_stats(m.stats, timeout=10)
        seen.append((sum(w["harakiri_count"] for w in doc["workers"]), active(doc)))
        assert len(seen) < 3000, "no harakiri came"
        time.sleep(0.01)
    assert {n for h, n in seen if h == 0} == {1}    # over the soft limit: never a second worker
    fat.join(20)
    wait_for(lambda: active(read_stats(m.stats, timeout=10)) == 2, timeout=30)   # the slim worker is busy: one more
    (m.gate / "b.release").touch()
    waiting.join(30)
    assert isinstance(answers[0], OSError) and answers[1].isdigit(), answers


@pytest.mark.parametrize("server", SERVERS)
def test_cheaper_rss_limit_hard_cheaps_a_worker_a_tick_down_to_one(procs, tmp_path, server):
    """core/master_utils.c uwsgi_calc_cheaper: at or above `cheaper-rss-limit-hard` the master
    cheaps one idle worker per tick ("cheaper hard rss memory limit exceeded") while more than
    one runs, whatever `cheaper` says; the soft limit keeps it from spawning them back. Here any
    worker is over both (1 and 2 MiB): 3 workers, then 1. `evil-reload-on-rss` (never reached)
    only makes uWSGI's workers report their RSS every 3 s (core/uwsgi.c mem_collector), as
    emperor's master reads it each tick, instead of after their requests only."""
    m = stats_server(procs, server, tmp_path, "processes = 3\ncheaper = 2\ncheaper-initial = 3\ncheaper-overload = 30\n"
                                            f"memory-report = true\ncheaper-rss-limit-soft = {1 << 20}\n"
                                            f"cheaper-rss-limit-hard = {2 << 20}\nevil-reload-on-rss = 4096\n")
    wait_for(lambda: active(read_stats(m.stats, timeout=10)) == 1, timeout=40)
    assert get_body(m.port, "/").isdigit()
    assert {"emperor": ">= cheaper-rss-limit-hard: 3 -> 2 workers", "uwsgi": "cheaper hard rss memory limit exceeded"}[server] in m.log


def test_emperor_status_json_counts_the_workers_cheaper_runs(emperor, tmp_path):
    """Issue 15: a worker count that cheaper changes shows in `emperor status`; its --json
    document's vassal `total` (live workers) is 1, 2 while two requests are held, 1 again."""
    from support import ask_cli

    e, m = cheaper_under_emperor(emperor, tmp_path, processes=2)

    def total() -> int:
        r = ask_cli("status", "--json", "-d", str(e.dir))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["vassals"]["app.ini"]["stats"]["total"]

    assert total() == 1
    threads = hold_two(m, "s")
    wait_for(lambda: total() == 2, timeout=30, interval=0.2)
    release(m, "s", threads)
    wait_for(lambda: total() == 1, timeout=40, interval=0.2)
