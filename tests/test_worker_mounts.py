"""Several applications in one vassal: `mount` and `manage-script-name`, in a real master with a
real client (uWSGI's Options.rst and Python.rst; core/protocol.c, core/utils.c cited per test)."""
from __future__ import annotations

import http.client
import json
import socket

import pytest

from conftest import free_port
from support import wait_port

pytestmark = pytest.mark.timeout(60)

APP = """
import json
def make(name):
    def application(environ, start_response):
        body = json.dumps({"app": name, "script_name": environ["SCRIPT_NAME"],
                           "path_info": environ["PATH_INFO"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return application
application = make("root")
blog = make("blog")
shop = make("shop")
deep = make("shop/admin")
"""


def seen(port: int, path: str) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        return json.loads(body)
    finally:
        c.close()


def status(port: int, path: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        return c.getresponse().status
    finally:
        c.close()


def test_manage_script_name_splits_at_the_longest_mountpoint(master, tmp_path):
    """core/protocol.c uwsgi_parse_vars (manage_script_name): the longest mountpoint that is the
    path, or a prefix of it followed by `/`, becomes SCRIPT_NAME, the rest PATH_INFO; the app
    is the one mounted there (core/utils.c uwsgi_get_app_id), else the default app (module)."""
    (tmp_path / "filed.py").write_text(APP.replace('application = make("root")', 'application = make("file")'))
    m = master("""
        module = wsgiapp:application
        mount = /blog=wsgiapp:blog
        mount = /shop=wsgiapp:shop
        mount = /shop/admin/=wsgiapp:deep
        mount = /files=filed.py
        manage-script-name = true
        """, app=APP)
    assert seen(m.port, "/blog/2024/hello") == {"app": "blog", "script_name": "/blog", "path_info": "/2024/hello"}
    assert seen(m.port, "/blog") == {"app": "blog", "script_name": "/blog", "path_info": ""}
    assert seen(m.port, "/shop/admin/users")["app"] == "shop/admin"
    assert seen(m.port, "/shop/admin/users")["script_name"] == "/shop/admin"
    assert seen(m.port, "/shop/cart") == {"app": "shop", "script_name": "/shop", "path_info": "/cart"}
    assert seen(m.port, "/shopping") == {"app": "root", "script_name": "", "path_info": "/shopping"}
    assert seen(m.port, "/files/x")["app"] == "file"
    assert seen(m.port, "/")["app"] == "root"


def test_without_manage_script_name_the_web_server_s_script_name_chooses(master):
    """Python.rst, "Mountpoints": with no manage-script-name the app is chosen by the SCRIPT_NAME
    the web server passes (nginx `uwsgi_param SCRIPT_NAME`), exactly (core/utils.c
    uwsgi_get_app_id); over plain HTTP SCRIPT_NAME is empty: the default app."""
    from emperor.worker.protocols.uwsgi import encode_vars
    uport = free_port()
    m = master(f"""
        socket = 127.0.0.1:{uport}
        module = wsgiapp:application
        mount = /blog=wsgiapp:blog
        """, app=APP)
    assert seen(m.port, "/blog/x")["app"] == "root"
    with socket.create_connection(("127.0.0.1", uport), timeout=10) as s:
        s.sendall(encode_vars({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/blog", "PATH_INFO": "/x",
                               "REQUEST_URI": "/blog/x", "SERVER_PROTOCOL": "HTTP/1.1"}))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"app": "blog", "script_name": "/blog", "path_info": "/x"}


def test_no_default_app_refuses_a_script_name_nothing_is_mounted_at(master):
    """core/utils.c uwsgi_get_app_id: a SCRIPT_NAME no app is mounted at goes to the default app
    unless no-default-app (core/uwsgi.c "do not fallback to default app"); SCRIPT_NAME ""
    still finds the module's app, mounted at "" as in uWSGI."""
    from emperor.worker.protocols.uwsgi import encode_vars

    def via_uwsgi(port: int, script_name: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(encode_vars({"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": "/x",
                                   "REQUEST_URI": script_name + "/x", "SERVER_PROTOCOL": "HTTP/1.1"}))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data

    for i, (flag, want) in enumerate((("", b"200"), ("no-default-app = true", b"404"))):
        uport = free_port()
        m = master(f"""
            socket = 127.0.0.1:{uport}
            module = wsgiapp:application
            mount = /blog=wsgiapp:blog
            {flag}
            """, app=APP, name=f"app{i}.ini")
        wait_port(uport)
        wait_port(m.port)
        assert via_uwsgi(uport, "/nope").split()[1] == want
        assert seen(m.port, "/x")["app"] == "root"


def test_wsgi_disable_file_wrapper_takes_it_out_of_the_environ(master, tmp_path):
    """uWSGI's python plugin sets wsgi.file_wrapper unless wsgi-disable-file-wrapper
    (plugins/python/wsgi_subhandler.c); static files are still sent with sendfile."""
    app = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str("wsgi.file_wrapper" in environ).encode()]
"""
    static = tmp_path / "st"
    static.mkdir()
    (static / "a.txt").write_text("static\n")
    m = master(f"wsgi-disable-file-wrapper = true\nstatic-map = /s={static}\n", app=app)
    c = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    c.request("GET", "/")
    assert c.getresponse().read() == b"False"
    c.request("GET", "/s/a.txt")
    assert c.getresponse().read() == b"static\n"
    c.close()


def test_mounts_alone_answer_404_where_nothing_is_mounted(master):
    """Without `module` or `wsgi-file`, mounts are the applications (need-app is satisfied); a
    path no mountpoint covers finds no app: 404 (uWSGI answers 500, "no python application
    found", core/utils.c / plugins/python/wsgi_handlers.c)."""
    m = master("""
        ; the mounts are the applications: no module here
        mount = /blog=wsgiapp:blog
        manage-script-name = true
        """, app=APP)
    assert seen(m.port, "/blog/a")["app"] == "blog"
    assert status(m.port, "/elsewhere") == 404
    m.wait_log("no application mounted for SCRIPT_NAME=''")


def test_routes_see_the_split_path_and_choose_before_the_app(master):
    """uWSGI's order (core/routing.c uwsgi_apply_routes calls uwsgi_parse_vars first): the
    SCRIPT_NAME split happens before the routes, so `route` tests the mounted app's PATH_INFO;
    the app is chosen after them."""
    m = master(r"""
        module = wsgiapp:application
        mount = /blog=wsgiapp:blog
        manage-script-name = true
        route = ^/secret$ break:403 Forbidden
        """, app=APP)
    assert status(m.port, "/blog/secret") == 403
    assert status(m.port, "/secret") == 403
    assert seen(m.port, "/blog/public")["path_info"] == "/public"


def test_a_mount_that_fails_to_import_is_named(master):
    """A mounted app that cannot be loaded stops the vassal as a failing `module` does, and the
    message names the mountpoint."""
    m = master("""
        module = wsgiapp:application
        mount = /x=no_such_module_here:app
        """, app=APP, wait=False)
    m.wait_log("mount /x: module 'no_such_module_here' not found", timeout=15)


def test_mount_option_is_checked_when_the_file_is_read(tmp_path):
    """`mount = /mountpoint=app` (core/uwsgi.c "mount"); a value without `=` is an error at its line."""
    from emperor.config import ConfigError, load_config
    ini = tmp_path / "m.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :9\nmount = /blog\n")
    with pytest.raises(ConfigError, match=r"m.ini:3: mount: expected"):
        load_config(str(ini))
    ini.write_text("[uwsgi]\nhttp-socket = :9\nmount = /blog=blog:app\n")
    c = load_config(str(ini))
    assert c.mounts == ["/blog=blog:app"] and "mount = /blog=blog:app" in c.ini_lines()
