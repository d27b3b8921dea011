"""uWSGI's internal routing in a real master, with a real client (http.client, curl, raw sockets,
nginx in front): uWSGI's InternalRouting doc and core/routing.c are the reference, cited per test."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import free_port, wait_for, wait_port

pytestmark = pytest.mark.timeout(60)

ECHO = """
import json, os
def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("X-App", "1")])
        return [b"the app's 404"]
    if path == "/lazy":   # start_response from inside the iterable, as generator apps do
        def gen():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            yield b"lazy 404"
        return gen()
    seen = {k: v for k, v in environ.items() if isinstance(v, str)}
    body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Server", "echo"), ("X-App", "1")])
    return [body]
"""


def get(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def env(port: int, path: str, headers: dict | None = None) -> dict:
    status, _, body = get(port, path, headers)
    assert status == 200, body
    return json.loads(body)


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def raw(port: int, request: bytes) -> bytes:
    """What the server sends back before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_regexp_subjects_pick_rules_and_goto_jumps_forward_to_a_label(master):
    """InternalRouting doc, "GOTO" (its example, route-host to labels, `last:`); core/routing.c
    uwsgi_opt_add_route: route (PATH_INFO), route-host, route-uri, route-qs, route-user-agent,
    route-remote-addr test their variable with a PCRE regexp."""
    m = master(r"""
        route-host = ^local\.test$ goto:local
        route-user-agent = ^robot addheader:X-Robot: yes
        route-qs = (^|&)debug=1 addheader:X-Debug: on
        route-uri = \?x=1$ addheader:X-Uri: matched
        route-remote-addr = ^127\.0\.0\.1$ addheader:X-Loopback: 1
        route = ^/p addheader:X-Path: p
        route = .* last:
        route-label = local
        route = .* addheader:X-Local: 1
        """, app=ECHO)
    _, h, _ = get(m.port, "/p?x=1", {"Host": "other.test", "User-Agent": "robot/2"})
    assert (h["x-robot"], h["x-uri"], h["x-loopback"], h["x-path"]) == ("yes", "matched", "1", "p")
    assert "x-local" not in h and "x-debug" not in h
    _, h, _ = get(m.port, "/q?debug=1", {"Host": "local.test"})
    assert h["x-local"] == "1" and "x-path" not in h and "x-loopback" not in h   # jumped over them
    assert "x-debug" not in h


def test_route_if_conditions_and_their_negation(master, tmp_path):
    """InternalRouting doc, "route-if" (equal, startswith, endswith, regexp/re, contains, empty,
    isfile, isdir; `subject;pattern`); core/routing.c uwsgi_route_condition_*; route-if-not
    (core/uwsgi.c) negates."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("a")
    m = master(f"""
        route-if = equal:${{PATH_INFO}};/eq addheader:X-Equal: 1
        route-if = startswith:${{PATH_INFO}};/st addheader:X-Starts: 1
        route-if = endswith:${{PATH_INFO}};.txt addheader:X-Ends: 1
        route-if = regexp:${{HTTP_X_ID}};^id-([0-9]+)$ addheader:X-Id: $1
        route-if = re:${{QUERY_STRING}};a=(.) addheader:X-Re: $1
        route-if = contains:${{HTTP_ACCEPT}};json addheader:X-Contains: 1
        route-if = empty:${{QUERY_STRING}} addheader:X-Empty-Qs: 1
        route-if = isfile:{tmp_path}/docs${{PATH_INFO}} addheader:X-Isfile: 1
        route-if = isdir:{tmp_path}${{PATH_INFO}} addheader:X-Isdir: 1
        route-if-not = equal:${{REQUEST_METHOD}};GET addheader:X-Not-Get: 1
        route-if-not = empty:${{QUERY_STRING}} addheader:X-Has-Qs: 1
        """, app=ECHO)
    _, h, _ = get(m.port, "/eq", {"X-Id": "id-42", "Accept": "application/json"})
    assert (h["x-equal"], h["x-id"], h["x-contains"], h["x-empty-qs"]) == ("1", "42", "1", "1")
    assert not {"x-starts", "x-ends", "x-re", "x-isfile", "x-isdir", "x-not-get", "x-has-qs"} & set(h)
    _, h, _ = get(m.port, "/stuff/a.txt?a=z")
    assert (h["x-starts"], h["x-ends"], h["x-re"], h["x-has-qs"]) == ("1", "1", "z", "1")
    assert "x-isfile" not in h   # /docs/stuff/a.txt does not exist
    _, h, _ = get(m.port, "/a.txt")
    assert h["x-isfile"] == "1" and "x-isdir" not in h
    _, h, _ = get(m.port, "/docs", method="POST")
    assert h["x-isdir"] == "1" and h["x-not-get"] == "1"


def test_redirects_expand_groups_and_variables_and_escape_what_the_client_sent(master):
    """router_redirect.c uwsgi_routing_func_redirect(_permanent): 302/301 with Location;
    InternalRouting doc "Accessing request vars" (`redirect:http://uwsgi.it${REQUEST_URI}`).
    What the request brings into Location is percent-encoded (no CR/LF can reach the header)
    and a Location only the request made protocol-relative stays on this site."""
    m = master(r"""
        route = ^/old/([\s\S]*)$ redirect-permanent:/new/$1
        route = ^/moved redirect-301:https://example.test${REQUEST_URI}
        route = ^/tmp(.*)$ redirect:$1
        route = ^/to/(.*)$ redirect-302:/$1
        """, app=ECHO)
    status, h, body = get(m.port, "/old/a%20b%0d%0aSet-Cookie:x")
    assert status == 301 and body == b"Moved Permanently"
    assert h["location"] == "/new/a%20b%0D%0ASet-Cookie:x" and "set-cookie" not in h
    status, h, _ = get(m.port, "/moved?q=%22x%22")
    assert status == 301 and h["location"] == "https://example.test/moved?q=%22x%22"
    status, h, body = get(m.port, "/tmp//evil.example/x")
    assert status == 302 and body == b"Moved" and h["location"] == "/evil.example/x"
    status, h, _ = get(m.port, "/to//evil.example")
    assert h["location"] == "/evil.example"


def test_break_return_and_a_backward_goto_end_the_request(master):
    """InternalRouting doc, "break" (status line as written, no body), "return" (status and its
    text as the body), "GOTO" (forward only); core/routing.c uwsgi_router_break_func (no status:
    the request is closed, nothing sent), uwsgi_router_goto_func ("can only jump forward")."""
    m = master(r"""
        route-label = top
        route = ^/forbidden break:403 Forbidden for ${REMOTE_ADDR}
        route = ^/bare500 break:500
        route = ^/teapot return:418
        route = ^/gone return:410
        route = ^/drop break:
        route = ^/loop goto:top
        """, app=ECHO)
    status, h, body = get(m.port, "/forbidden")
    assert status == 403 and body == b"" and h["connection"] == "close"
    assert get(m.port, "/bare500")[0] == 500
    status, h, body = get(m.port, "/teapot")
    assert (status, body, h["content-type"]) == (418, b"I'm a Teapot", "text/plain")
    assert get(m.port, "/gone")[2] == b"Gone"
    assert raw(m.port, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert raw(m.port, b"GET /loop HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    m.wait_log("goto can only jump forward")
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{m.port}/drop"])
    assert r.returncode == 52   # curl: "Empty reply from server", as from uWSGI
    assert get(m.port, "/fine")[0] == 200


def test_addheader_delheader_and_header_injection_is_refused(master):
    """InternalRouting doc, "addheader", "delheader/remheader"; core/routing.c
    uwsgi_router_addheader_func, uwsgi_router_remheader_func (core/writer.c: removed headers are
    filtered as the response's headers are added). A value with CR or LF is refused: 400."""
    m = master(r"""
        route = ^/h/([\s\S]*)$ addheader:X-Echo: $1
        route-run = addheader:X-Host: ${HTTP_HOST}
        route-run = delheader:Server
        route = ^/keep remheader:X-App
        """, app=ECHO)
    status, h, _ = get(m.port, "/h/hello", {"Host": "site.test"})
    assert status == 200 and h["x-echo"] == "hello" and h["x-host"] == "site.test"
    assert "server" not in h and h["x-app"] == "1"
    assert "x-app" not in get(m.port, "/keep")[1]
    status, h, _ = get(m.port, "/h/a%0d%0aSet-Cookie:%20evil=1")
    assert status == 400 and "set-cookie" not in h
    m.wait_log("CR, LF or NUL in a header from a route")
    reply = raw(m.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")   # the Host value itself cannot carry one
    assert reply.startswith(b"HTTP/1.1 200")


def test_rewrite_changes_path_and_query_and_rewrite_last_stops(master):
    """router_rewrite.c uwsgi_routing_func_rewrite: PATH_INFO (URL-decoded) and QUERY_STRING from
    the target, the old query string appended after `&`; `rewrite` goes on to the next rule (which
    sees the new PATH_INFO), `rewrite-last` goes to the application."""
    m = master(r"""
        route = ^/blog/([0-9]+)$ rewrite:/index.php?post=$1
        route = ^/index\.php$ addheader:X-Seen-Rewritten: 1
        route = ^/last/(.*)$ rewrite-last:/final/$1
        route = ^/final addheader:X-After-Last: 1
        route = ^/plain/(.*)$ rewrite:/p/%%41$1
        """, app=ECHO)
    status, h, body = get(m.port, "/blog/7?utm=x")
    seen = json.loads(body)
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/index.php", "post=7&utm=x")
    assert seen["REQUEST_URI"] == "/blog/7?utm=x"   # uWSGI's rewrite leaves it
    assert h["x-seen-rewritten"] == "1"
    status, h, body = get(m.port, "/last/z")
    assert json.loads(body)["PATH_INFO"] == "/final/z" and "x-after-last" not in h
    assert env(m.port, "/plain/q?k=v")["PATH_INFO"] == "/p/Aq" and env(m.port, "/plain/q?k=v")["QUERY_STRING"] == "k=v"


def test_basicauth_with_user_password_in_the_rule(master):
    """InternalRouting doc, "basicauth" (`realm,user:password`, `realm,` answers 401 at once) and
    "basicauth-next"; router_basicauth.c uwsgi_routing_func_basicauth: 401 Authorization
    Required with WWW-Authenticate, REMOTE_USER on success, skipped once a user is set."""
    m = master(r"""
        route = ^/login basicauth-next:Trac Realm,pippo:pluto
        route = ^/login basicauth:Trac Realm,foo:bar
        route = ^/closed basicauth:Nobody,
        """, app=ECHO)
    status, h, body = get(m.port, "/login")
    assert status == 401 and body == b"Unauthorized" and h["www-authenticate"] == 'Basic realm="Trac Realm"'
    assert env(m.port, "/login", basic("pippo", "pluto"))["REMOTE_USER"] == "pippo"
    assert env(m.port, "/login", basic("foo", "bar"))["REMOTE_USER"] == "foo"
    assert get(m.port, "/login", basic("foo", "nope"))[0] == 401
    assert get(m.port, "/login", {"Authorization": "Bearer abcdefgh"})[0] == 401
    assert get(m.port, "/closed", basic("foo", "bar"))[0] == 401
    assert "REMOTE_USER" not in env(m.port, "/open")


def test_basicauth_with_an_htpasswd_file_read_again_when_it_changes(master, tmp_path):
    """router_basicauth.c htpasswd_check: `realm,FILE`, user:hash lines ({SHA} and crypt(3));
    here $apr1$ (Apache's default) and libcrypt's $6$ and bcrypt too. uWSGI reads the file for
    every request: an edit counts at once here too (stat per check, read when it changed)."""
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
    apr1 = subprocess.run(["openssl", "passwd", "-apr1", "apr-pw"], capture_output=True, text=True).stdout.strip()
    sha512 = subprocess.run(["openssl", "passwd", "-6", "sha-pw"], capture_output=True, text=True).stdout.strip()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{sha}\nbob:{apr1}\ncarol:{sha512}\n")
    m = master(f"route = ^/private basicauth:Private,{htpasswd}\n", app=ECHO)
    assert env(m.port, "/private", basic("alice", "s3cret"))["REMOTE_USER"] == "alice"
    assert env(m.port, "/private", basic("bob", "apr-pw"))["REMOTE_USER"] == "bob"
    assert env(m.port, "/private", basic("carol", "sha-pw"))["REMOTE_USER"] == "carol"
    for user, password in (("alice", "S3cret"), ("bob", "sha-pw"), ("dave", "x"), ("alice", "")):
        assert get(m.port, "/private", basic(user, password))[0] == 401
    htpasswd.write_text(f"dave:{sha}\n")
    assert env(m.port, "/private", basic("dave", "s3cret"))["REMOTE_USER"] == "dave"
    assert get(m.port, "/private", basic("alice", "s3cret"))[0] == 401


def test_addvar_setvar_log_logvar_and_donotlog(master):
    """InternalRouting doc, "addvar" (a CGI variable for the app), "log", "logvar" (for
    log-format's %(name)), "donotlog"; core/routing.c uwsgi_router_addvar_func,
    uwsgi_router_log_func, uwsgi_router_logvar_func, uwsgi_router_donotlog_func."""
    m = master(r"""
        log-format = LINE %(uri) %(who)
        route = ^/v/(.*)$ addvar:MY_VAR=got-$1-from-${HTTP_HOST}
        route = ^/v/ setvar:OTHER=${qs[k]}
        route = ^/v/ logvar:who=${cookie[user]}
        route = ^/logme/(.*)$ log:someone called $1 from ${REMOTE_ADDR}
        route = ^/quiet donotlog:
        """, app=ECHO)
    seen = env(m.port, "/v/abc?k=qv", {"Host": "h.test", "Cookie": "a=1; user=ann"})
    assert seen["MY_VAR"] == "got-abc-from-h.test" and seen["OTHER"] == "qv"
    m.wait_log("LINE /v/abc?k=qv ann")
    get(m.port, "/logme/there")
    m.wait_log("someone called there from 127.0.0.1")
    get(m.port, "/quiet")
    get(m.port, "/after")
    m.wait_log("LINE /after -")
    assert "/quiet" not in m.log


def test_static_sends_the_file_through_the_file_wrapper(master, tmp_path):
    """InternalRouting doc, "static" (router_static.c uwsgi_routing_func_static: a file, then
    BREAK). Sent with wsgi.file_wrapper (sendfile) until emperor/worker/static.py serves files;
    a missing file is a 404, a `..` from the request is refused."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "logo.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 100)
    m = master(f"""
        route = ^/logo$ static:{files}/logo.png
        route = ^/files/(.*)$ static:{files}/$1
        """, app=ECHO)
    status, h, body = get(m.port, "/logo")
    assert status == 200 and h["content-type"] == "image/png" and body == (files / "logo.png").read_bytes()
    status, h2, body = get(m.port, "/logo", {"If-Modified-Since": h["last-modified"]})
    assert status == 304 and body == b""
    status, h, body = get(m.port, "/logo", method="HEAD")
    assert status == 200 and int(h["content-length"]) == 4 + 25600 and body == b""
    assert get(m.port, "/files/nope.txt")[0] == 404
    assert get(m.port, "/files/../app.ini")[0] in (400, 404)   # http.client does not normalise
    assert get(m.port, "/files/..%2Fapp.ini")[0] == 404
    m.wait_log("a '..' segment; refused")
    os.mkfifo(files / "pipe")   # opened without blocking: a FIFO is no file, not a stuck worker
    assert get(m.port, "/files/pipe")[0] == 404
    assert get(m.port, "/logo")[0] == 200


def test_error_routes_replace_a_status_and_final_routes_run_after_the_response(master):
    """InternalRouting doc, "The routing chains": `error` when a status is set (core/writer.c
    uwsgi_response_prepare_headers calls uwsgi_apply_error_routes), `final` after the response
    (core/utils.c uwsgi_close_request, uwsgi_apply_final_routes); error-route-status and
    final-route-status test the status (core/routing.c uwsgi_route_condition_status)."""
    m = master(r"""
        route = ^/teapot return:418
        error-route-status = 404 redirect:/not-found-page
        error-route-status = 418 addheader:X-Error-Chain: 418
        final-route-status = 302 log:FINAL a 302 for ${PATH_INFO}
        final-route = ^/ok log:FINAL ok
        """, app=ECHO)
    status, h, body = get(m.port, "/missing")
    assert status == 302 and h["location"] == "/not-found-page" and body == b"Moved" and "x-app" not in h
    status, h, body = get(m.port, "/lazy")
    assert status == 302 and body == b"Moved"
    status, h, _ = get(m.port, "/teapot")
    assert status == 418 and h["x-error-chain"] == "418"
    m.wait_log("FINAL a 302 for /missing")
    get(m.port, "/ok")
    m.wait_log("FINAL ok")


def test_unsupported_actions_and_conditions_are_named_with_file_and_line(master):
    """core/routing.c uwsgi_opt_add_route exits on an unknown router or condition; emperor
    names it in the load warning (file:line) and leaves the rule out; a malformed rule (no
    action) is an error, as uWSGI's "invalid route syntax"."""
    m = master(r"""
        route = ^/c cache:key=$1
        route-if = ipv4in:${REMOTE_ADDR};10.0.0.0/8 break:403
        route = ^/ok addheader:X-Ok: 1
        """, app=ECHO)
    log = m.wait_log('app.ini:5: route: route action "cache" is not supported by emperor; rule ignored')
    assert 'app.ini:6: route-if: route condition "ipv4in" is not supported by emperor; rule ignored' in log
    assert get(m.port, "/ok")[1]["x-ok"] == "1" and get(m.port, "/c")[0] == 200
    from emperor.config import ConfigError, load_config
    bad = m.ini.parent / "bad.ini"
    bad.write_text(m.ini.read_text() + "route = ^/nothing-after-me\n")
    with pytest.raises(ConfigError, match=r"bad.ini:9: route: invalid route syntax"):
        load_config(str(bad))


def test_route_values_survive_loading_and_round_trip_as_ini(tmp_path):
    """`${VAR}` and `$1` are routing's, not the reader's placeholders (config.py resolves `%(x)` and
    `$(ENV)` only); Config.ini_lines writes each rule under its own option, in file order."""
    from emperor.config import load_config
    ini = tmp_path / "r.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :9\nmodule = m\n"
                   "route-host = ^(www\\.)?example$ redirect:https://example${REQUEST_URI}\n"
                   "route-label = x\nroute-if = regexp:${HTTP_X};^(a)$ addheader:X-A: $1\nroute-run = last:\n")
    c = load_config(str(ini))
    assert c.routes == [("route-host", "^(www\\.)?example$ redirect:https://example${REQUEST_URI}"),
                        ("route-label", "x"), ("route-if", "regexp:${HTTP_X};^(a)$ addheader:X-A: $1"),
                        ("route-run", "last:")]
    again = tmp_path / "again.ini"
    again.write_text("\n".join(c.ini_lines()) + "\n")
    assert load_config(str(again)).routes == c.routes


def test_add_header_and_del_header_options_apply_to_every_response(master):
    """Options.rst add-header / del-header (core/writer.c: additional headers go on every
    response uWSGI writes, a route's own answers included)."""
    m = master(r"""
        add-header = X-Frame-Options: DENY
        add-header = Strict-Transport-Security: max-age=63072000
        del-header = Server
        route = ^/r redirect:/elsewhere
        """, app=ECHO)
    for path in ("/", "/r"):
        _, h, _ = get(m.port, path)
        assert h["x-frame-options"] == "DENY" and h["strict-transport-security"] == "max-age=63072000"
        assert "server" not in h


def test_a_vassal_without_these_options_gets_no_layer(tmp_path):
    """features.wrap puts nothing around the application of a vassal that sets none of these
    options: its requests run the code they ran before (scripts/bench_serve.py measures it)."""
    from emperor.config import load_config
    from emperor.worker import features
    ini = tmp_path / "bare.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :9\nmodule = m\nhttp-keepalive = 30\n")

    def app(environ, start_response):
        return []
    assert features.wrap(load_config(str(ini)), app) is app


# ---------------------------------------------------------------- behind nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def nginx_in_front(procs, tmp_path: Path, upstream: int, mode: str) -> int:
    """nginx as a child on a free port: `uwsgi_pass` (mode "uwsgi") or `proxy_pass` (mode "http")."""
    if NGINX is None:
        pytest.skip("nginx binary not found: run scripts/install-test-deps.sh")
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    params = "/etc/nginx/uwsgi_params"
    location = (f"include {params}; uwsgi_pass 127.0.0.1:{upstream};" if mode == "uwsgi" else
                f"proxy_pass http://127.0.0.1:{upstream}; proxy_set_header Host $host;")
    temps = "".join(f"{kind}_temp_path {prefix}/tmp/{kind}; " for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(textwrap.dedent(f"""\
        {"user root;" if os.geteuid() == 0 else ""}
        worker_processes 1;
        events {{ worker_connections 64; }}
        http {{
            access_log off; {temps}
            server {{ listen 127.0.0.1:{port}; server_name localhost; location / {{ {location} }} }}
        }}
        """))
    procs([NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
           "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"], tmp_path, log=tmp_path / "nginx.log")
    wait_port(port)
    return port


@pytest.mark.parametrize("mode", ["uwsgi", "http"])
def test_routing_behind_nginx(master, procs, tmp_path, mode):
    """The same rules when nginx passes the request (uwsgi_pass: the uwsgi protocol's variables;
    proxy_pass: HTTP): redirect with ${REQUEST_URI}, basicauth, rewrite, break (nginx answers 502
    for a request closed with nothing sent, as in front of uWSGI), route-host, static."""
    upstream = free_port()
    body = f"{'socket' if mode == 'uwsgi' else 'http-socket'} = 127.0.0.1:{upstream}\n" + textwrap.dedent(r"""
        route = ^/old redirect-301:/new${REQUEST_URI}
        route = ^/admin basicauth:Admin,root:toor
        route = ^/blog/(.*)$ rewrite:/post?slug=$1
        route = ^/drop break:
        route-host = ^localhost$ addheader:X-Host-Rule: 1
        """)
    m = master(body, app=ECHO)
    port = nginx_in_front(procs, tmp_path, upstream, mode)
    status, h, _ = get(port, "/old?a=1")
    assert status == 301 and h["location"] == "/new/old?a=1"
    assert get(port, "/admin")[0] == 401
    assert env(port, "/admin", basic("root", "toor"))["REMOTE_USER"] == "root"
    seen = env(port, "/blog/hello%20world?x=2")
    assert (seen["PATH_INFO"], seen["QUERY_STRING"]) == ("/post", "slug=hello world&x=2")
    assert get(port, "/drop")[0] == 502
    assert get(port, "/", {"Host": "localhost"})[1]["x-host-rule"] == "1"
    wait_for(lambda: "GET /blog/hello%20world?x=2 => 200" in m.log)
