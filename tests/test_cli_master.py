"""`emperor master FILE` in the foreground: what SIGTERM does is said at start-up; a harakiri is logged once."""
from __future__ import annotations

import http.client
import signal
import socket
import threading

import pytest

from support import HELLO_APP, wait_for
from support import start_emperor, vassals
from support import http_get, worker_pids

pytestmark = pytest.mark.timeout(60)

NOTICE = ("SIGTERM reloads this master (uWSGI 2.0); SIGINT or Ctrl-C stops it; "
          "set die-on-term = true to stop on SIGTERM")


def test_a_foreground_master_says_at_start_that_sigterm_reloads_it(master):
    m = master("processes = 1\n", HELLO_APP)
    assert m.log.count(NOTICE) == 1
    serving = m.log.splitlines().index(next(l for l in m.log.splitlines() if "] serving http://" in l))
    assert m.log.splitlines()[serving + 1].endswith(NOTICE)   # right under the `serving` line
    m.signal(signal.SIGTERM)                                 # ... and it is true
    m.wait_log("running -> reloading (SIGTERM: brutal)")
    m.wait_log("-> running (generation 1 ready)")
    assert http_get(m.port).status == 200
    assert m.log.count(NOTICE) == 1                          # said once, not at every reload
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0


def test_no_notice_with_die_on_term(master):
    m = master("processes = 1\ndie-on-term = true\n", HELLO_APP)
    assert "SIGTERM" not in m.log
    m.signal(signal.SIGTERM)
    assert m.wait(10) == 0


def test_no_notice_under_an_emperor(tmp_path, procs, runtime):
    vassals(tmp_path / "vassals", "app.ini")
    e = start_emperor(procs, tmp_path, "vassals", running=("app.ini",))
    assert "serving http://" in e.log and "SIGTERM" not in e.log


def test_harakiri_is_logged_once(master):
    app = """
import time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        time.sleep(30)
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master("harakiri = 1\nprocesses = 1\n", app)
    before = worker_pids(m.pid)

    def stuck() -> None:
        try:
            http_get(m.port, "/stuck", timeout=8)
        except (http.client.HTTPException, OSError, socket.timeout):
            pass

    t = threading.Thread(target=stuck)
    t.start()
    m.wait_log("killed by SIGKILL; respawning")   # the master has reaped it: nothing more to say about it
    t.join()
    wait_for(lambda: worker_pids(m.pid) and worker_pids(m.pid) != before, 5)
    assert http_get(m.port).status == 200
    assert m.log.count("HARAKIRI") == 1, m.log
