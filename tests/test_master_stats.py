"""The master's stats server keeps uWSGI's JSON shape: the real uwsgitop reads it."""
from __future__ import annotations

import json
import shutil

import pytest

from support import HELLO_APP, STATS_TOP_KEYS, STATS_WORKER_KEYS, Tmux, free_port, http_get, read_stats, tool, wait_for


def test_stats_document_has_uwsgi_shape(master):
    sport = free_port()
    m = master(f"stats = 127.0.0.1:{sport}\nprocesses = 2\n", HELLO_APP)
    for _ in range(5):
        http_get(m.port)
    doc = read_stats(sport)
    for key in STATS_TOP_KEYS:
        assert key in doc
    assert doc["pid"] == m.pid
    assert len(doc["workers"]) == 2
    for w in doc["workers"]:
        for key in STATS_WORKER_KEYS:
            assert key in w, key
            if key not in ("status", "apps", "cores"):
                assert isinstance(w[key], int), key
        assert w["status"] in ("idle", "busy", "pause", "cheap")
    assert sum(w["requests"] for w in doc["workers"]) == 5


def test_stats_http_serves_the_document_over_http(master):
    sport = free_port()
    m = master(f"stats = 127.0.0.1:{sport}\nstats-http = true\n", HELLO_APP)
    r = http_get(sport)
    assert r.status == 200 and json.loads(r.body)["pid"] == m.pid


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")
def test_real_uwsgitop_reads_master_stats(master, tmp_path):
    uwsgitop = tool("uwsgitop")
    if not uwsgitop:
        pytest.skip("uwsgitop is not installed (pip install uwsgitop)")
    sport = free_port()
    m = master(f"stats = 127.0.0.1:{sport}\nprocesses = 2\n", HELLO_APP)
    for _ in range(3):
        http_get(m.port)
    tmux = Tmux(tmp_path, 120, 30, f"TERM=xterm {uwsgitop} 127.0.0.1:{sport}; sleep 30")
    try:
        screen = tmux.screen

        def worker_rows(text: str) -> list[list[str]]:
            return [l.split() for l in text.splitlines() if l.strip()[:2] in ("1 ", "2 ")]

        try:
            # curses may draw the header before the worker rows: wait for both
            text = wait_for(lambda: (s := screen()) and "req: 3" in s and len(worker_rows(s)) == 2 and s, 30)
        except TimeoutError:
            raise AssertionError("uwsgitop screen:\n" + screen())
        assert text.startswith("uwsgi-2.0.31-emperor")
        doc = read_stats(sport)
        rows = worker_rows(text)
        assert sorted(int(r[2]) for r in rows) == sorted(w["pid"] for w in doc["workers"])
        assert all(r[7] == "idle" for r in rows)
    finally:
        tmux.kill()
