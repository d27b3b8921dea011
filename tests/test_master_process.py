"""The serving master (emperor/master/process.py): its start-up, what a bad configuration or
application makes it say, its sockets, the application's environment, and the request log."""
from __future__ import annotations

import os
import signal
import socket
import sys
import time

from support import HELLO_APP, assert_no_traceback_of_ours, children, free_port, http_get


def test_serves_hello_with_two_workers(master):
    m = master("processes = 2\n", HELLO_APP)
    r = http_get(m.port)
    assert r.status == 200 and r.body == b"Hello, World!"
    assert len(children(m.pid)) == 2


def test_each_request_is_logged_with_its_status_and_size(master):
    m = master("", HELLO_APP)
    http_get(m.port, "/some/path?x=1")
    log = m.wait_log("GET /some/path?x=1 => 200")
    assert "bytes in" in log


def test_disable_logging_logs_no_request(master):
    m = master("disable-logging = true\n", HELLO_APP)
    assert http_get(m.port, "/quiet").status == 200
    time.sleep(0.5)   # an absence is the behaviour: no request line comes, however long one waits
    assert "/quiet" not in m.log


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


def test_a_port_already_taken_is_one_line_and_exit_non_zero(master):
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


def test_a_missing_vassal_file_is_one_line_and_exit_non_zero(procs, tmp_path):
    p = procs([sys.executable, "-m", "emperor", "master", str(tmp_path / "missing.ini")], tmp_path)
    assert p.wait(15) != 0
    assert "missing.ini" in p.log and "Traceback" not in p.log


def test_a_uwsgi_socket_speaks_the_uwsgi_protocol(master):
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


def test_env_pythonpath_and_wsgi_file_reach_the_application(procs, tmp_path):
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
