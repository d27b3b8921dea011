"""On-demand vassals (issue 17; emperor/emperor/ondemand.py): the emperor binds the sockets,
the first connection starts the master, `idle` + `die-on-idle` takes it back to none.

uWSGI: core/emperor.c (on_demand_bind, emperor_check_on_demand_socket,
emperor_back_to_ondemand) and the Emperor doc's "On demand vassals" section.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from support import VASSAL_APP, ask_cli, descendants, free_port, http_get, vassal_ini, wait_for


def masters_of(emperor_proc) -> list[int]:
    """The emperor's masters: its children (no preflight runs in these tests)."""
    return [p for p in descendants(emperor_proc.pid) if _ppid(p) == emperor_proc.pid]


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def status(emperor_proc) -> dict:
    from emperor.paths import control_socket

    out = ask_cli("status", "--json", "--control", control_socket(str(emperor_proc.dir)))
    return json.loads(out.stdout)


@pytest.fixture
def app(tmp_path):
    d = tmp_path / "app"
    d.mkdir()
    (d / "wsgiapp.py").write_text(VASSAL_APP)
    return d


def on_demand_ini(port: int, app, extra: str = "") -> str:
    return vassal_ini(port, app, "on-demand = true\n" + extra)


@pytest.mark.timeout(90)
def test_no_master_before_the_first_connection_which_is_served(emperor, app):
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app)})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    assert masters_of(e) == []
    doc = status(e)["vassals"]["od.ini"]
    assert doc["state"] == "on-demand" and doc["on_demand"] and doc["cold_starts"] == 0 and doc["pid"] is None
    # the first connection: served (not refused, not reset) by the master it started
    assert http_get(port, timeout=30).body.startswith(b"od gen=0")
    assert len(masters_of(e)) == 1
    doc = status(e)["vassals"]["od.ini"]
    assert doc["cold_starts"] == 1 and doc["last_start"] and doc["state"] == "running"
    assert "od.ini: on-demand -> starting (a connection" in e.log


@pytest.mark.timeout(120)
def test_idle_master_exits_the_port_is_rearmed_and_the_next_connection_starts_another(emperor, app):
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app, "idle = 1\ndie-on-idle = true\n")})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    first = http_get(port, timeout=30).body
    e.wait_log("back to on-demand", timeout=30)
    wait_for(lambda: masters_of(e) == [], timeout=20)
    assert status(e)["vassals"]["od.ini"]["state"] == "on-demand"
    second = http_get(port, timeout=30).body
    assert first.split(b"pid=")[1] != second.split(b"pid=")[1]   # a new master's worker
    assert status(e)["vassals"]["od.ini"]["cold_starts"] == 2


@pytest.mark.timeout(150)
def test_requests_while_the_master_goes_idle_are_all_served(emperor, app):
    """A client that keeps connecting across idle exits never sees a refused or dropped request:
    the emperor's copy of the socket keeps the listen queue, and re-arms once the master left."""
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app, "idle = 1\ndie-on-idle = true\n")})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    failures: list[str] = []
    done = 0
    deadline = time.monotonic() + 100
    # requests spaced around the idle time (some land while the master stops), and gaps longer
    # than it (so that it does stop)
    while e.log.count("back to on-demand") < 3 and time.monotonic() < deadline:
        try:
            r = http_get(port, timeout=30)
            if r.status != 200:
                failures.append(str(r.status))
            done += 1
        except OSError as exc:
            failures.append(repr(exc))
        time.sleep((0.95, 1.0, 1.05, 1.1, 1.8, 2.5)[done % 6])
    assert failures == []
    assert e.log.count("back to on-demand") >= 3 and done >= 3


@pytest.mark.timeout(90)
def test_touch_on_an_idle_vassal_rebinds_only_what_changed(emperor, app):
    port, port2, port3 = free_port(), free_port(), free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app, f"socket = 127.0.0.1:{port2}\n")})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    path = e.dir / "od.ini"
    path.write_text(on_demand_ini(port, app, f"socket = 127.0.0.1:{port3}\n"))
    e.wait_log(f"uwsgi socket 127.0.0.1:{port3} bound", timeout=20)
    assert e.log.count(f"http socket 127.0.0.1:{port} bound") == 1   # kept, not bound again
    assert masters_of(e) == []
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port2))   # the dropped one is free
    probe.close()
    assert http_get(port, timeout=30).body.startswith(b"od ")


@pytest.mark.timeout(90)
def test_delete_frees_the_port_at_once(emperor, app):
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app)})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    (e.dir / "od.ini").unlink()
    e.wait_log("od.ini: on-demand -> gone", timeout=20)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.close()


@pytest.mark.timeout(90)
def test_on_demand_directory_flag(emperor, app, shortdir):
    body = f"[uwsgi]\nchdir = {app}\nmodule = wsgiapp:application\nenv = VASSAL=%n\nhttp-socket = {shortdir}/dd.socket\n"
    e = emperor("--emperor-on-demand-directory", str(shortdir), vassals={"dd.ini": body})
    e.wait_log("dd.ini: new -> on-demand", timeout=20)
    assert masters_of(e) == []
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(30)
    c.connect(str(shortdir / "dd.socket"))
    c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    assert data.startswith(b"HTTP/1.") and b"dd gen=0" in data
    assert len(masters_of(e)) == 1


@pytest.mark.timeout(90)
def test_on_demand_extension_flag_reads_the_socket_from_the_ext_file(emperor, app):
    port = free_port()
    body = f"[uwsgi]\nchdir = {app}\nmodule = wsgiapp:application\nenv = VASSAL=%n\nhttp-socket = 127.0.0.1:{port}\n"
    e = emperor("--emperor-on-demand-extension", ".socket", wait=False)
    (e.dir / "ex.ini.socket").write_text(f"127.0.0.1:{port}\nignored after the first control character")
    (e.dir / "ex.ini").write_text(body)
    e.wait_log("ex.ini: new -> on-demand", timeout=20)
    assert masters_of(e) == []
    assert http_get(port, timeout=30).body.startswith(b"ex gen=0")


@pytest.mark.timeout(30)
def test_on_demand_exec_is_refused_with_a_reason(emperor):
    e = emperor("--emperor-on-demand-exec", "/bin/true", wait=False)
    assert e.wait(20) == 2
    assert "--emperor-on-demand-exec is not supported" in e.log


@pytest.mark.timeout(90)
def test_status_table_json_and_prometheus(emperor, app):
    port, metrics = free_port(), free_port()
    e = emperor("--metrics", f"127.0.0.1:{metrics}", vassals={"od.ini": on_demand_ini(port, app)})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    from emperor.paths import control_socket

    table = ask_cli("status", "--once", "--control", control_socket(str(e.dir))).stdout
    assert "on-demand (idle)" in table and "0 cold starts" in table
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
    assert 'emperor_vassal_on_demand{vassal="od.ini"} 1' in text
    assert 'emperor_vassal_cold_starts_total{vassal="od.ini"} 0' in text
    http_get(port, timeout=30)
    wait_for(lambda: 'emperor_vassal_cold_starts_total{vassal="od.ini"} 1' in
             urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode(), timeout=20)


@pytest.mark.timeout(120)
def test_concurrent_first_connections_all_served(emperor, app):
    """Twenty clients connect at once to an idle vassal: one master starts, all are answered."""
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app, "processes = 2\n")})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    results: list[object] = []

    def get() -> None:
        try:
            results.append(http_get(port, timeout=30).status)
        except OSError as exc:
            results.append(repr(exc))
    threads = [threading.Thread(target=get) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 20
    assert len(masters_of(e)) == 1 and status(e)["vassals"]["od.ini"]["cold_starts"] == 1


@pytest.mark.timeout(120)
def test_tyrant_master_runs_as_the_file_owner_on_the_emperors_sockets(unprivileged, tyrant_user):
    """The root emperor binds (a TCP port and a UNIX socket it hands to the owner, whose master
    may then chmod-socket it); the master runs as the file's owner on them."""
    e, vdir, appdir = unprivileged("--tyrant")
    port = free_port()
    run = vdir.parent / "run"   # where the owner may create its socket (the emperor binds as the owner)
    run.mkdir()
    os.chown(run, tyrant_user.pw_uid, tyrant_user.pw_gid)
    sock_path = run / "ty.sock"
    path = vdir / "ty.ini"
    path.write_text(vassal_ini(port, appdir, f"on-demand = true\nsocket = {sock_path}\nchmod-socket = 660\n"))
    os.chown(path, tyrant_user.pw_uid, tyrant_user.pw_gid)
    e.wait_log("ty.ini: new -> on-demand", timeout=20)
    assert masters_of(e) == [] and os.stat(sock_path).st_uid == tyrant_user.pw_uid
    assert http_get(port, timeout=30).text.endswith(f"pid={tyrant_user.pw_uid}")
    assert os.stat(f"/proc/{masters_of(e)[0]}").st_uid == tyrant_user.pw_uid
    assert oct(os.stat(sock_path).st_mode & 0o777) == oct(0o660)
    # the emperor binds as the owner: no root-only directory for a tenant's socket
    evil = vdir / "evil.ini"
    evil.write_text(vassal_ini(free_port(), appdir, "on-demand = true\nsocket = /root/emperor-od-evil.sock\n"))
    os.chown(evil, tyrant_user.pw_uid, tyrant_user.pw_gid)
    e.wait_log("evil.ini: new -> backoff (cannot bind uwsgi socket /root/emperor-od-evil.sock: permission denied", timeout=20)
    assert not os.path.exists("/root/emperor-od-evil.sock") and os.geteuid() == 0


@pytest.mark.timeout(90)
def test_preimport_imports_in_the_emperor_once_for_every_cold_start(emperor, app, tmp_path):
    """`--preimport MOD`: imported before the emperor forks, so a master's import finds it loaded;
    a module that fails to import costs one line, not the emperor."""
    marks = tmp_path / "marks"
    (app / "heavy.py").write_text(f"import os\nwith open({str(marks)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n")
    (app / "wsgiapp.py").write_text("import heavy\n" + VASSAL_APP)
    port = free_port()
    e = emperor("--preimport", "heavy, no_such_module_here", vassals={"pre.ini": on_demand_ini(port, app)},
                env={"PYTHONPATH": str(app)})
    e.wait_log("pre.ini: new -> on-demand", timeout=20)
    assert http_get(port, timeout=30).body.startswith(b"pre gen=0")
    assert marks.read_text().split() == [str(e.pid)]
    assert "--preimport no_such_module_here: ModuleNotFoundError" in e.log


@pytest.mark.timeout(90)
def test_touch_on_a_running_on_demand_vassal_reloads_it_as_usual(emperor, app):
    port = free_port()
    e = emperor(vassals={"od.ini": on_demand_ini(port, app)})
    e.wait_log("od.ini: new -> on-demand", timeout=20)
    assert http_get(port, timeout=30).body.startswith(b"od gen=0")
    pid = masters_of(e)
    os.utime(e.dir / "od.ini")
    e.wait_log("od.ini: running -> reloading (file changed)", timeout=20)
    wait_for(lambda: http_get(port, timeout=30).body.startswith(b"od gen=1"), timeout=30)
    assert masters_of(e) == pid   # the same master, re-executed on the sockets it inherited
    doc = status(e)["vassals"]["od.ini"]
    assert doc["cold_starts"] == 1 and doc["sockets"] == [f"http://127.0.0.1:{port}"]
