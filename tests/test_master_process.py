"""The serving master: start-up, bad configuration, worker supervision (issue 2)."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import pytest

from support import HELLO_APP, STARTED, InFlight, assert_no_traceback_of_ours, children, free_port, http_get, wait_for


def test_serves_hello_with_two_workers(master):
    m = master("processes = 2\n", HELLO_APP)
    r = http_get(m.port)
    assert r.status == 200 and r.body == b"Hello, World!"
    assert len(children(m.pid)) == 2


def test_sigint_stops_everything_exit_0(master):
    m = master("processes = 2\n", HELLO_APP)
    workers = children(m.pid)
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    for w in workers:
        assert not os.path.exists(f"/proc/{w}") or open(f"/proc/{w}/stat").read().split()[2] == "Z"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", m.port), timeout=1).close()


def test_sigquit_stops_too(master):
    m = master("", HELLO_APP)
    m.signal(signal.SIGQUIT)
    assert m.wait(10) == 0


def test_killed_worker_is_respawned(master):
    m = master("processes = 2\n", HELLO_APP)
    victim = children(m.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(m.pid) and len(children(m.pid)) == 2)
    m.wait_log("killed by SIGKILL; respawning")
    assert http_get(m.port).status == 200


def test_request_log_line(master):
    m = master("", HELLO_APP)
    http_get(m.port, "/some/path?x=1")
    log = m.wait_log("GET /some/path?x=1 => 200")
    assert "bytes in" in log


def test_disable_logging(master):
    m = master("disable-logging = true\n", HELLO_APP)
    assert http_get(m.port, "/quiet").status == 200
    time.sleep(0.5)   # an absence is the behaviour: no request line comes, however long one waits
    assert "/quiet" not in m.log


def test_harakiri_kills_a_stuck_request(master):
    app = """
import time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        time.sleep(30)
    start_response("200 OK", [])
    return [b"ok"]
"""
    m = master("harakiri = 1\nprocesses = 1\n", app)
    before = children(m.pid)
    with pytest.raises((ConnectionError, socket.timeout)):
        http_get(m.port, "/stuck", timeout=20)
    log = m.wait_log("HARAKIRI")
    assert "GET /stuck" in log
    wait_for(lambda: children(m.pid) and children(m.pid) != before)
    assert http_get(m.port).status == 200


def test_max_requests_retires_worker(master):
    m = master("max-requests = 3\nprocesses = 1\n", HELLO_APP)
    pids = set()
    for _ in range(7):
        r = http_get(m.port)
        pids.add(r.header("X-Pid"))
    assert len(pids) >= 2
    assert "max-requests (3) reached" in m.log


def test_a_retiring_worker_leaves_the_queue_to_its_successors(master, tmp_path):
    """A worker at max-requests stops accepting: connections queued meanwhile are not its to
    answer (it used to take the whole backlog and serve it alone while its siblings idled)."""
    app = STARTED + """
import os, time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        started(environ)
        time.sleep(1.0)
    start_response("200 OK", [("X-Pid", str(os.getpid()))])
    return [b"ok"]
"""
    m = master("max-requests = 1\nprocesses = 2\n", app)
    first = set(children(m.pid))
    results: list = []

    def ask(path: str) -> None:
        r = http_get(m.port, path)
        results.append((path, r.status, int(r.header("X-Pid"))))

    # both workers are inside their last request: what comes now waits in the backlog
    slow = [InFlight(m.port, "/slow", tmp_path / f"slow-{i}") for i in (1, 2)]
    queued = [threading.Thread(target=ask, args=("/",)) for _ in range(6)]
    for t in queued:
        t.start()
    for t in queued:
        t.join(10)
    for r in slow:
        results.append(("/slow", r.result().status, int(r.result().header("X-Pid"))))
    assert sorted(p for p, _, _ in results) == ["/"] * 6 + ["/slow"] * 2
    assert all(status == 200 for _, status, _ in results)
    assert {pid for p, _, pid in results if p == "/slow"} == first
    assert not {pid for p, _, pid in results if p == "/"} & first


def test_an_exclusive_wakeup_strands_a_connection_until_listeners_are_re_added(tmp_path):
    """Why a retiring worker has every worker woken: with EPOLLEXCLUSIVE the kernel tells one
    sleeping epoll of a new connection. If that worker stops accepting without taking it, the
    others never hear of it, until they re-add their listeners (what a WAKE order makes them do).
    Two real worker loops (`Core`) in this process, one listening socket, the real kernel."""
    from emperor import sockets
    from emperor.config import load_config
    from emperor.wire.scoreboard import Scoreboard
    from emperor.worker.core import Core
    from emperor.states import WorkerState
    from emperor.worker.process import Worker

    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp-socket = 127.0.0.1:0\nmodule = x\n")
    config = load_config(str(tmp_path / "a.ini"))
    listener = sockets.bind(sockets.HTTP, "127.0.0.1:0", 16)
    listener.sock.setblocking(False)

    def idle_worker() -> Core:
        w = Worker(config=config, slot=0, listeners=[listener], app=None, board=Scoreboard(1, 1),
                   notify_fd=-1, load_app=lambda: None)
        w.master_pid = os.getpid()  # its SIGWINCH comes to us: ignored by default
        c = Core(w, 0, os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)[0])
        c.apply_orders()  # accepting: the listener is in its epoll
        return c

    cores = [idle_worker(), idle_worker()]
    woken: dict[int, list] = {}
    tids: list[int] = []

    def sleep_in_epoll(i: int) -> None:
        tids.append(threading.get_native_id())
        woken[i] = cores[i].ep.poll(1.0)

    threads = [threading.Thread(target=sleep_in_epoll, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    wait_for(lambda: len(tids) == 2 and all(_in_epoll_wait(t) for t in tids))
    client = socket.create_connection(listener.sock.getsockname()[:2], timeout=5)
    for t in threads:
        t.join(5)
    told = [i for i in (0, 1) if woken[i]]
    assert len(told) == 1, woken                 # one epoll was told, the other slept on
    first, other = cores[told[0]], cores[1 - told[0]]
    first.worker.life.to(WorkerState.RETIRING, "test")  # it retires without accepting
    first.apply_orders()
    assert not first.accepting
    assert other.ep.poll(0.3) == []              # stranded: the other loop never hears of it
    other.worker.wakes += 1                      # a WAKE order
    other.apply_orders()
    assert [fd for fd, _ in other.ep.poll(0)] == [listener.fd]
    client.close()
    for c in cores:
        c.ep.close()
    listener.sock.close()


def _in_epoll_wait(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/wchan") as f:
        return "epoll" in f.read()  # do_epoll_wait (ep_poll on older kernels)


def test_threads_serve_concurrently(master, tmp_path):
    # each request waits inside the application until all four are in: served one after the
    # other, none would ever see the others arrive
    app = f"""
import os, time
def application(environ, start_response):
    here = os.path.join({str(tmp_path)!r}, "arrived")
    os.makedirs(here, exist_ok=True)
    open(os.path.join(here, str(time.monotonic_ns())), "w").close()
    deadline = time.monotonic() + 10
    while len(os.listdir(here)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    start_response("200 OK", [])
    return [b"together" if len(os.listdir(here)) >= 4 else b"alone"]
"""
    m = master("processes = 1\nthreads = 4\n", app)
    results = []

    def one():
        r = http_get(m.port, timeout=30)
        results.append((r.status, r.body))

    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [(200, b"together")] * 4


def one_line_error(log: str) -> list[str]:
    return [l for l in log.splitlines() if l.strip()]


def test_missing_module_is_one_clear_line(master):
    m = master("module = no_such_module_xyz\n", wait=False)
    assert m.wait(15) != 0
    log = m.log
    assert "module 'no_such_module_xyz' not found" in log
    assert "Traceback" not in log


def test_app_raising_at_import_shows_its_traceback_and_one_line(master):
    app = """
raise RuntimeError("database is down")
"""
    m = master("", app, wait=False)
    assert m.wait(15) != 0
    log = m.log
    assert "RuntimeError: database is down" in log
    assert "failed to import" in log
    assert_no_traceback_of_ours(log)  # the traceback is the application's own


def test_port_already_taken(master):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        m = master("", HELLO_APP, wait=False, port=port)
        assert m.wait(15) != 0
        assert f"cannot bind http socket 127.0.0.1:{port}: address already in use" in m.log
        assert "Traceback" not in m.log
    finally:
        s.close()


def test_config_error_names_file_and_line(master):
    m = master("processes = four\n", HELLO_APP, wait=False)
    assert m.wait(15) != 0
    assert 'app.ini:4: processes: expected an integer, got "four"' in m.log
    assert "Traceback" not in m.log


def test_unreadable_file(procs, tmp_path):
    p = procs([sys.executable, "-m", "emperor", "master", str(tmp_path / "missing.ini")], tmp_path)
    assert p.wait(15) != 0
    assert "missing.ini" in p.log and "Traceback" not in p.log


def test_uwsgi_socket_serves(master):
    from emperor.worker.protocols.uwsgi import encode_vars
    port2 = free_port()
    master(f"socket = 127.0.0.1:{port2}\n", HELLO_APP)
    s = socket.create_connection(("127.0.0.1", port2), timeout=5)
    s.sendall(encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
                           "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "x"}))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"Hello, World!")


def test_unix_http_socket_with_vacuum(procs, tmp_path):
    sock_path = tmp_path / "app.sock"
    (tmp_path / "wsgiapp.py").write_text(HELLO_APP)
    ini = tmp_path / "u.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = {sock_path}\nchdir = {tmp_path}\nmodule = wsgiapp\n"
                   "vacuum = true\nchmod-socket = 660\n")
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)")
    assert oct(os.stat(sock_path).st_mode & 0o777) == "0o660"
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert b"Hello, World!" in s.recv(4096)
    s.close()
    p.signal(signal.SIGINT)
    assert p.wait(10) == 0
    assert not sock_path.exists()


def test_env_pythonpath_and_wsgi_file(procs, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "helper.py").write_text("VALUE = 'from-pythonpath'\n")
    (tmp_path / "site.wsgi").write_text(
        "import os, helper\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [(helper.VALUE + ' ' + os.environ['GREETING']).encode()]\n")
    port = free_port()
    ini = tmp_path / "w.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {tmp_path}/site.wsgi\n"
                   f"callable = app\npythonpath = {lib}\nenv = GREETING=hi there\n")
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)")
    assert http_get(port).body == b"from-pythonpath hi there"


def test_virtualenv_packages_are_importable(procs, tmp_path):
    venv = tmp_path / "venv"
    site = venv / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    site.mkdir(parents=True)
    (site / "venvonly.py").write_text("NAME = 'venv-package'\n")
    (tmp_path / "wsgiapp.py").write_text(
        "import venvonly\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [venvonly.NAME.encode()]\n")
    port = free_port()
    ini = tmp_path / "v.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = wsgiapp\n"
                   f"virtualenv = {venv}\n")
    p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path)
    p.wait_log("running (workers ready)")
    assert http_get(port).body == b"venv-package"


def test_lazy_apps_import_in_each_worker(master):
    app = """
import os
LOADED_IN = os.getpid()
def application(environ, start_response):
    start_response("200 OK", [])
    return [str(LOADED_IN == os.getpid()).encode()]
"""
    m = master("lazy-apps = true\n", app)
    assert http_get(m.port).body == b"True"


def test_a_ready_read_after_the_stop_began_changes_nothing(tmp_path):
    # The race seen when the emperor is SIGKILLed right after start: the master stops
    # (its channel hit EOF) and only then reads a worker's READY from before the kill.
    from emperor.config import load_config
    from emperor.master.generations import Generation, Workers
    from emperor.wire.scoreboard import Scoreboard

    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp-socket = 127.0.0.1:0\nmodule = x\n")
    w = Workers(load_config(str(tmp_path / "a.ini")), 0, log=lambda m: None, become_worker=lambda g, s: None)
    w.current = Generation(0, Scoreboard(1, 1), [4_000_000])
    w.stopping = True
    assert w.worker_ready(4_000_000) is False
    assert w.current.ready == set()
