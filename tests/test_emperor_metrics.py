"""`emperor run --metrics HOST:PORT`: Prometheus text from the emperor's loop, checked line by line.

The same three vassals as tests/test_cli_status.py (support.three_vassals: healthy,
config error, crash-looping), plus one with its own `stats` socket, which must keep uWSGI's
shape for uwsgitop while the emperor reads it too.
"""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from support import STATS_TOP_KEYS, STATS_WORKER_KEYS, free_port, http_get, http_request, run_cli, wait_for
from emperor.emperor import prometheus as metrics
from emperor.emperor import summary
from emperor.states import VassalState
from emperor.wire import control

pytestmark = pytest.mark.timeout(60)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
HELP = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")
SAMPLE = re.compile(rf'^({NAME})(?:\{{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\}})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, dict]:
    """Prometheus text format 0.0.4, strictly: {family: {"type", "help", "samples": {labels: value}}}."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if m := HELP.match(line):
            assert m[1] not in families, f"family {m[1]} twice"
            current = families[m[1]] = {"help": m[2], "type": None, "samples": {}}
        elif m := TYPE.match(line):
            assert current is families.get(m[1]) and current["type"] is None and not current["samples"]
            current["type"] = m[2]
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            assert current is families.get(m[1]) and current["type"], f"{m[1]} outside its family"
            labels = tuple((k, re.sub(r"\\(.)", lambda e: "\n" if e[1] == "n" else e[1], v))
                           for k, v in LABEL.findall(m[2] or ""))
            assert labels not in current["samples"], f"duplicate sample {line!r}"
            current["samples"][labels] = float(m[3])
    for name, fam in families.items():
        if fam["type"] == "counter":
            assert name.endswith("_total"), name
    return families


def scrape(port: int, path: str = "/metrics", method: str = "GET"):
    return http_request(port, method, path)


def value(families: dict, name: str, **labels: str) -> float:
    return families[name]["samples"][tuple(labels.items())]


@pytest.fixture(scope="module")
def stack(three_vassal_emperor):
    mport = free_port()
    p = three_vassal_emperor("--metrics", f"127.0.0.1:{mport}")
    p.metrics = mport
    return p


def test_metrics_are_valid_prometheus_text_about_every_vassal(stack):
    wait_for(lambda: control.query(stack.control, timeout=10)["vassals"]["crash.ini"]["starts"] >= 2)
    r = scrape(stack.metrics)
    assert r.status == 200 and r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    fams = parse(r.body.decode())
    assert set(metrics.METRICS) == set(fams)
    assert value(fams, "emperor_vassals") == 3
    assert abs(value(fams, "emperor_start_time_seconds") - time.time()) < 60
    up = {dict(k)["vassal"]: v for k, v in fams["emperor_vassal_up"]["samples"].items()}
    assert up == {"good.ini": 1, "bad.ini": 0, "crash.ini": 0}
    for vassal, state in (("good.ini", "running"), ("bad.ini", "config error")):
        states = {dict(k)["state"]: v for k, v in fams["emperor_vassal_state"]["samples"].items()
                  if dict(k)["vassal"] == vassal}
        assert len(states) == len(VassalState) and states[state] == 1 and sum(states.values()) == 1
    assert value(fams, "emperor_vassal_restarts_total", vassal="crash.ini") >= 1
    assert value(fams, "emperor_vassal_backoff_seconds", vassal="crash.ini") >= 1
    assert value(fams, "emperor_vassal_stats_ok", vassal="good.ini") == 1
    assert value(fams, "emperor_vassal_stats_ok", vassal="crash.ini") == 0
    assert value(fams, "emperor_vassal_workers", vassal="good.ini") == 2
    assert value(fams, "emperor_vassal_rss_bytes", vassal="good.ini") > 10 << 20
    workers = {dict(k)["worker"] for k in fams["emperor_worker_rss_bytes"]["samples"]}
    assert workers == {"1", "2"}
    assert fams["emperor_worker_requests_total"]["type"] == "counter"
    assert fams["emperor_vassal_avg_response_seconds"]["type"] == "gauge"


def test_requests_served_are_counted_per_worker(stack):
    def requests() -> tuple[float, float]:
        fams = parse(scrape(stack.metrics).body.decode())
        per_worker = sum(v for k, v in fams["emperor_worker_requests_total"]["samples"].items()
                         if dict(k)["vassal"] == "good.ini")
        return per_worker, value(fams, "emperor_vassal_requests_total", vassal="good.ini")

    before, total = requests()
    assert before == total
    for _ in range(7):
        http_get(stack.port, expect=200)
    after, total = requests()
    assert after == total == before + 7
    fams = parse(scrape(stack.metrics).body.decode())
    assert 0 < value(fams, "emperor_vassal_avg_response_seconds", vassal="good.ini") < 0.5


def test_metrics_answer_404_elsewhere_405_to_other_methods_and_head(stack):
    r = scrape(stack.metrics, "/nope")
    assert r.status == 404
    r = scrape(stack.metrics, "/metrics", "POST")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD"
    r = scrape(stack.metrics, "/metrics", "HEAD")
    assert r.status == 200 and r.body == b"" and int(r.header("Content-Length")) > 1000
    r = scrape(stack.metrics, "/metrics?name[]=x")
    assert r.status == 200 and b"emperor_vassal_up" in r.body


def test_a_scraper_that_sends_nothing_holds_nobody_up(stack):
    with socket.create_connection(("127.0.0.1", stack.metrics)):
        t0 = time.monotonic()
        assert scrape(stack.metrics).status == 200
        assert control.query(stack.control, timeout=10)["pid"] == stack.pid
        assert time.monotonic() - t0 < 1.5   # a scraper that holds the loop would cost its 2 s timeout


def test_own_stats_socket_keeps_uwsgi_shape_and_feeds_the_emperor(stack, tmp_path):
    sport, port = free_port(), free_port()
    app = stack.base / "app"
    (stack.dir / "own.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {app}\n"
                                       f"module = wsgiapp:application\nstats = 127.0.0.1:{sport}\n")
    try:
        stack.wait_log("own.ini: starting -> running")
        http_get(port, expect=200)
        with socket.create_connection(("127.0.0.1", sport), timeout=5) as s:   # what uwsgitop reads
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        raw = json.loads(data)
        assert all(k in raw for k in STATS_TOP_KEYS)
        assert all(k in w for w in raw["workers"] for k in STATS_WORKER_KEYS)
        v = control.query(stack.control, timeout=10)["vassals"]["own.ini"]
        assert v["stats_address"] == f"127.0.0.1:{sport}"
        assert v["stats"]["pid"] == raw["pid"] == v["pid"] and v["stats"]["requests"] == 1
        assert value(parse(scrape(stack.metrics).body.decode()), "emperor_vassal_requests_total", vassal="own.ini") == 1
    finally:
        (stack.dir / "own.ini").unlink()
        stack.wait_log("own.ini: stopping -> gone", timeout=10)


def test_metrics_port_taken_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        (tmp_path / "vassals.d").mkdir()
        r = run_cli("run", "--metrics", f"127.0.0.1:{port}", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"emperor: --metrics 127.0.0.1:{port}: address already in use"


# ---------- without processes ----------
def test_label_values_and_help_are_escaped():
    doc = {"started": 1.5, "vassals": {'we"ird\\name\n.ini': {"state": "running", "pid": 7, "starts": 3,
                                                               "generation": 2, "backoff": 0, "stats": None}}}
    text = metrics.render(doc)
    assert 'emperor_vassal_up{vassal="we\\"ird\\\\name\\n.ini"} 1\n' in text
    fams = parse(text)
    assert value(fams, "emperor_vassal_restarts_total", vassal='we"ird\\name\n.ini') == 2
    assert value(fams, "emperor_vassal_generation", vassal='we"ird\\name\n.ini') == 2


def test_rates_count_per_worker_so_a_respawn_is_not_negative():
    rates = summary.Rates()
    assert rates.rate("a", {10: 100, 11: 50}, now=0.0) is None      # nothing to compare with yet
    assert rates.rate("a", {10: 110, 11: 60}, now=1.0) == 20.0
    assert rates.rate("a", {10: 120, 12: 5}, now=2.0) == 15.0       # 11 was respawned as 12
    assert rates.rate("a", {20: 3, 21: 4}, now=3.0) == 7.0          # a reload: a new generation
    assert rates.rate("a", {20: 3, 21: 4}, now=30.0) is None        # older samples are forgotten
