"""Static files as uWSGI serves them (emperor/worker/static.py), each option on a real master.

The reference is uWSGI's StaticFiles doc and core/static.c, core/protocol.c; each test names
the section or function it reproduces. Clients are curl and raw sockets; the application
behind answers `404 app <PATH_INFO>` to anything, so a request it gets is told apart from a
file. Everything is killed by PID (conftest).
"""
from __future__ import annotations

import calendar
import gzip
import os
import socket
import subprocess
import time
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from support import NGINX, free_port, wait_port
from emperor.config import ConfigError, load_config
from emperor.worker.protocols.uwsgi import encode_vars

pytestmark = pytest.mark.timeout(60)

APP = r'''
def application(environ, start_response):
    body = b"app " + environ["PATH_INFO"].encode("latin-1")
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
CSS = b"body { color: red }\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """static/ (files, a sub-directory with an index, a symlink out, a .gz sibling), other/, secret/."""
    s = tmp_path / "static"
    (s / "sub").mkdir(parents=True)
    (s / "deep").mkdir()
    (s / "a.css").write_bytes(CSS)
    (s / "a.css.gz").write_bytes(gzip.compress(CSS))
    (s / "a.css.br").write_bytes(b"pretend-brotli")
    (s / "page.php").write_bytes(b"<?php secret(); ?>")
    (s / "data.bin").write_bytes(bytes(range(256)) * 4)
    (s / "sub" / "index.html").write_bytes(b"<p>index</p>")
    (s / "deep" / "x.txt").write_bytes(b"from static/deep")
    (s / "odd.foo").write_bytes(b"foo")
    (s / "big.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "other" / "deep").mkdir(parents=True)
    (tmp_path / "other" / "deep" / "x.txt").write_bytes(b"from other/deep")
    (tmp_path / "other" / "only.txt").write_bytes(b"only in other")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd").write_bytes(b"SECRET-OUTSIDE-THE-ROOT")
    (s / "out").symlink_to(tmp_path / "secret" / "passwd")
    (s / "outdir").symlink_to(tmp_path / "secret")
    (s / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(s / "fifo")
    return tmp_path


def curl(port: int, path: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) from curl, the path sent as written."""
    r = subprocess.run(["curl", "-sS", "--path-as-is", "-D", "-", "-o", "/dev/stderr", *args,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=30)
    assert r.returncode == 0, r
    lines = r.stdout.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, r.stderr


def raw(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split()[1]), data


def start(master, tree: Path, body: str):
    return master(body.replace("@", str(tree)), app=APP)


def test_static_map_serves_a_file_with_type_length_dates_and_etag(master, tree):
    """StaticFiles doc, "Mode 3: using static file mount points", and uwsgi_real_file_serve:
    Content-Type from the system MIME table, Last-Modified; plus an ETag; other paths,
    directories without an index and methods other than GET/HEAD go to the application."""
    m = start(master, tree, "static-map = /static=@/static\n")
    status, h, body = curl(m.port, "/static/a.css")
    assert (status, body) == (200, CSS)
    assert h["content-type"] == "text/css" and h["content-length"] == str(len(CSS))
    mtime = int((tree / "static" / "a.css").stat().st_mtime)
    assert calendar.timegm(parsedate_to_datetime(h["last-modified"]).utctimetuple()) == mtime
    assert h["etag"].startswith('"') and h["accept-ranges"] == "bytes"
    assert curl(m.port, "/static/data.bin")[1]["content-type"] == "application/octet-stream"
    assert curl(m.port, "/static/nope.css")[2] == b"app /static/nope.css"
    assert curl(m.port, "/static/deep")[2] == b"app /static/deep"            # a directory, no index
    assert curl(m.port, "/staticx/a.css")[2] == b"app /staticx/a.css"        # a segment boundary
    assert curl(m.port, "/static/a.css", "-X", "POST")[2] == b"app /static/a.css"
    assert curl(m.port, "/static/big.bin")[2] == (tree / "static" / "big.bin").read_bytes()


def test_longest_mountpoint_first_and_several_directories_per_mountpoint(master, tree):
    """StaticFiles doc, Mode 3: several static-map for one mountpoint are searched in order
    (core/protocol.c walks uwsgi.static_maps); across mountpoints the longest is tried first."""
    m = start(master, tree, "static-map = /s=@/static\nstatic-map = /s=@/other\nstatic-map = /s/deep=@/other/deep\n")
    assert curl(m.port, "/s/deep/x.txt")[2] == b"from other/deep"   # /s/deep before /s
    assert curl(m.port, "/s/only.txt")[2] == b"only in other"       # second directory of /s
    assert curl(m.port, "/s/a.css")[2] == CSS


def test_static_map2_appends_the_whole_path_and_a_map_can_name_a_file(master, tree):
    """StaticFiles doc, Mode 3: `static-map2 /images=/var/www/img` looks for
    /var/www/img/images/logo.png; "You can map (or map2) both directories and files"."""
    m = start(master, tree, "static-map2 = /static=@\nstatic-map = /favicon.ico=@/static/a.css\n")
    assert curl(m.port, "/static/a.css")[2] == CSS
    status, h, body = curl(m.port, "/favicon.ico")
    assert (status, body, h["content-type"]) == (200, CSS, "text/css")
    assert curl(m.port, "/favicon.ico/x")[2] == b"app /favicon.ico/x"


def test_check_static_tries_each_directory_then_the_app(master, tree):
    """StaticFiles doc, "Mode 1": check-static (and its alias static-check) may be given several
    times; the first directory holding the file wins, else the application."""
    m = start(master, tree, "check-static = @/static\nstatic-check = @/other\n")
    assert curl(m.port, "/a.css")[2] == CSS
    assert curl(m.port, "/only.txt")[2] == b"only in other"
    assert curl(m.port, "/deep/x.txt")[2] == b"from static/deep"
    assert curl(m.port, "/missing")[2] == b"app /missing"


def test_static_index_and_static_skip_ext(master, tree):
    """StaticFiles doc, "Setting the index page" (the first existing name wins) and "Skipping
    specific extensions" (checked on PATH_INFO in core/protocol.c and on the file in static.c)."""
    m = start(master, tree, "static-map = /static=@/static\nstatic-index = nope.html\nstatic-index = index.html\n"
                            "static-skip-ext = .php\n")
    status, h, body = curl(m.port, "/static/sub/")
    assert (status, body, h["content-type"]) == (200, b"<p>index</p>", "text/html")
    assert curl(m.port, "/static/sub")[2] == b"<p>index</p>"
    assert curl(m.port, "/static/page.php")[2] == b"app /static/page.php"


def test_if_modified_since_and_if_none_match_answer_304(master, tree):
    """uwsgi_real_file_serve: If-Modified-Since at or after the file's mtime -> 304 Not Modified
    (StaticFiles doc, Notes); and If-None-Match with the file's ETag (strong or W/) -> 304."""
    m = start(master, tree, "static-map = /static=@/static\n")
    mtime = (tree / "static" / "a.css").stat().st_mtime
    status, h, _ = curl(m.port, "/static/a.css")
    etag = h["etag"]
    for ims, want in ((mtime, 304), (mtime + 60, 304), (mtime - 60, 200)):
        assert curl(m.port, "/static/a.css", "-H", f"If-Modified-Since: {formatdate(ims, usegmt=True)}")[0] == want
    status, h304, body = curl(m.port, "/static/a.css", "-H", f"If-None-Match: {etag}")
    assert (status, body, h304["etag"]) == (304, b"", etag)
    assert curl(m.port, "/static/a.css", "-H", f'If-None-Match: "x", W/{etag}')[0] == 304
    assert curl(m.port, "/static/a.css", "-H", 'If-None-Match: "other"')[0] == 200
    # If-None-Match decides alone when both are sent (RFC 9110 13.2.2)
    assert curl(m.port, "/static/a.css", "-H", 'If-None-Match: "other"',
                "-H", f"If-Modified-Since: {formatdate(mtime + 60, usegmt=True)}")[0] == 200


def test_head_and_single_ranges(master, tree):
    """HEAD gets the headers only (uwsgi_real_file_serve skips the transfer); one byte range ->
    206 with Content-Range, an unsatisfiable one -> 416 with `bytes */size` (static.c with
    uwsgi_fix_range_for_size); several ranges get the whole file (200), as RFC 9110 14.2 allows;
    If-Range must name this very file (its ETag or its Last-Modified) for the range to apply."""
    m = start(master, tree, "static-map = /static=@/static\n")
    data = (tree / "static" / "data.bin").read_bytes()
    status, reply = raw(m.port, b"HEAD /static/data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 200 and reply.endswith(b"\r\n\r\n") and f"Content-Length: {len(data)}\r\n".encode() in reply
    status, h, body = curl(m.port, "/static/data.bin", "-r", "10-19")
    assert (status, body, h["content-range"]) == (206, data[10:20], f"bytes 10-19/{len(data)}")
    assert curl(m.port, "/static/data.bin", "-r", "-5")[2] == data[-5:]
    assert curl(m.port, "/static/data.bin", "-r", "1000-")[2] == data[1000:]
    assert curl(m.port, "/static/data.bin", "-r", "0-")[0:3:2] == (206, data)
    status, h, _ = curl(m.port, "/static/data.bin", "-r", "5000-6000")
    assert (status, h["content-range"]) == (416, f"bytes */{len(data)}")
    assert curl(m.port, "/static/data.bin", "-r", "0-1,5-6")[0:3:2] == (200, data)
    etag = h["etag"]
    assert curl(m.port, "/static/data.bin", "-r", "0-3", "-H", f"If-Range: {etag}")[0:3:2] == (206, data[:4])
    assert curl(m.port, "/static/data.bin", "-r", "0-3", "-H", 'If-Range: "stale"')[0:3:2] == (200, data)


def test_gzip_siblings_only_for_clients_that_accept_them(master, tree):
    """StaticFiles doc, "GZIP": static-gzip-all serves `name.gz` to a client accepting gzip
    (uwsgi_static_want_gzip; `.br` first for one accepting br), with Content-Encoding and
    Vary: Accept-Encoding; a client that does not, or refuses it with q=0, gets the file."""
    m = start(master, tree, "static-map = /static=@/static\nstatic-gzip-all = true\n")
    status, h, body = curl(m.port, "/static/a.css", "-H", "Accept-Encoding: gzip")
    assert (status, h["content-encoding"], h["vary"], h["content-type"]) == (200, "gzip", "Accept-Encoding", "text/css")
    assert gzip.decompress(body) == CSS
    status, h, body = curl(m.port, "/static/a.css")
    assert body == CSS and "content-encoding" not in h and h["vary"] == "Accept-Encoding"
    assert curl(m.port, "/static/a.css", "-H", "Accept-Encoding: gzip;q=0, identity")[2] == CSS
    status, h, body = curl(m.port, "/static/a.css", "-H", "Accept-Encoding: gzip, br")
    assert (h["content-encoding"], body) == ("br", b"pretend-brotli")
    assert curl(m.port, "/static/data.bin", "-H", "Accept-Encoding: gzip")[1].get("content-encoding") is None


@pytest.mark.parametrize("option", ["static-gzip-dir = @/static/", "static-gzip-prefix = @/static/a",
                                    "static-gzip-ext = .css", "static-gzip-suffix = a.css",
                                    r"static-gzip = \.css$"])
def test_gzip_by_directory_extension_or_regexp(master, tree, option):
    """StaticFiles doc, "GZIP": static-gzip-dir/-prefix, -ext/-suffix and static-gzip (a regexp),
    all applied to the resolved file name (uwsgi_static_want_gzip)."""
    m = start(master, tree, f"static-map = /static=@/static\n{option}\n")
    assert curl(m.port, "/static/a.css", "-H", "Accept-Encoding: gzip")[1]["content-encoding"] == "gzip"
    assert "content-encoding" not in curl(m.port, "/static/odd.foo", "-H", "Accept-Encoding: gzip")[1]


def _expires(h: dict) -> int:
    return calendar.timegm(parsedate_to_datetime(h["expires"]).utctimetuple())


@pytest.mark.parametrize("option,base", [
    ("static-expires-type = text/css=3600", "now"),
    ("static-expires-type-mtime = text/css=3600", "mtime"),
    (r"static-expires = /a\.css$ 3600", "now"),
    (r"static-expires-mtime = \.css 3600", "mtime"),
    ("static-expires-uri = ^/static/a 3600", "now"),
    ("static-expires-uri-mtime = ^/static/a 3600", "mtime"),
    ("static-expires-path-info = css$ 3600", "now"),
    ("static-expires-path-info-mtime = css$ 3600", "mtime")])
def test_expires_as_uwsgi_computes_it(master, tree, option, base):
    """StaticFiles doc, "Setting the Expires headers", and static.c's uwsgi_add_expires*: now
    (the request's start) or the file's mtime, plus the seconds of the first matching rule."""
    m = start(master, tree, f"static-map = /static=@/static\n{option}\n")
    t0 = int(time.time())
    status, h, _ = curl(m.port, "/static/a.css")
    t1 = int(time.time())
    if base == "now":
        assert t0 + 3600 <= _expires(h) <= t1 + 3600
    else:
        assert _expires(h) == int((tree / "static" / "a.css").stat().st_mtime) + 3600
    assert "expires" not in curl(m.port, "/static/odd.foo")[1]


def test_mimefile_adds_types(master, tree):
    """StaticFiles doc, "MIME types": /etc/mime.types, plus each `mime-file` (alias `mimefile`)."""
    (tree / "extra.types").write_text("# comment\napplication/x-emperor-foo\tfoo\n")
    m = start(master, tree, "static-map = /static=@/static\nmime-file = @/extra.types\n")
    assert curl(m.port, "/static/odd.foo")[1]["content-type"] == "application/x-emperor-foo"


def test_a_symlink_out_is_refused_unless_static_safe_allows_its_target(master, tree):
    """StaticFiles doc, "Security": the mapping is translated to the real path; outside the
    root it is a security error (here a 403: uWSGI passes it on to the app), unless the real
    path is under a static-safe directory. A FIFO is no regular file: not served."""
    m = start(master, tree, "static-map = /static=@/static\n")
    assert curl(m.port, "/static/out")[0:3:2] == (403, b"403 Forbidden\n")
    assert curl(m.port, "/static/outdir/passwd")[0] == 403
    assert "security error" in m.log
    assert curl(m.port, "/static/fifo")[2] == b"app /static/fifo"


def test_static_safe_allows_a_symlink_s_target(master, tree):
    """StaticFiles doc, "Security": `--static-safe /tmp` lets the symlink to /tmp/foo.png be served."""
    m = start(master, tree, "static-map = /static=@/static\nstatic-safe = @/secret\n")
    assert curl(m.port, "/static/out")[0:3:2] == (200, b"SECRET-OUTSIDE-THE-ROOT")
    assert curl(m.port, "/static/outdir/passwd")[0] == 200


@pytest.mark.parametrize("mode,header", [("x-sendfile", "x-sendfile"), ("x-accel-redirect", "x-accel-redirect"),
                                         ("nginx", "x-accel-redirect")])
def test_file_serve_mode_leaves_the_transfer_to_the_front(master, tree, mode, header):
    """StaticFiles doc, "X-Sendfile" and "X-Accel-Redirect" (uwsgi_opt_fileserve_mode): the
    headers name the real file, and no body goes out."""
    m = start(master, tree, f"static-map = /static=@/static\nfile-serve-mode = {mode}\n")
    status, h, body = curl(m.port, "/static/a.css")
    assert (status, body, h[header]) == (200, b"", str(tree / "static" / "a.css"))
    assert "last-modified" in h


def test_check_static_docroot_trusts_the_front_s_document_root(master, tree):
    """StaticFiles doc, "Mode 2": with check-static-docroot the DOCUMENT_ROOT the front sends
    (uwsgi protocol) is a directory to look in; over http-socket no client can set it."""
    uport = free_port()
    m = start(master, tree, f"socket = 127.0.0.1:{uport}\ncheck-static-docroot = true\n")
    with socket.create_connection(("127.0.0.1", uport), timeout=10) as s:
        s.sendall(encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": "/a.css", "REQUEST_URI": "/a.css",
                               "DOCUMENT_ROOT": str(tree / "static"), "SERVER_PROTOCOL": "HTTP/1.1"}))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(CSS)
    assert curl(m.port, "/a.css", "-H", f"Document-Root: {tree / 'static'}")[2] == b"app /a.css"


TRAVERSAL = [
    "/static/../secret/passwd", "/static/../../secret/passwd", "/static/./../secret/passwd",
    "/static/sub/../../secret/passwd", "/static/%2e%2e/secret/passwd", "/static/%2E%2E/secret/passwd",
    "/static/.%2e/secret/passwd", "/static/%2e./secret/passwd", "/static/%2e%2e%2fsecret%2fpasswd",
    "/static/..%2fsecret%2fpasswd", "/static/%252e%252e/secret/passwd", "/static/%252e%252e%252fsecret%252fpasswd",
    "/static/..%5csecret%5cpasswd", "/static/..\\secret\\passwd", "/static/%5c..%5csecret%5cpasswd",
    "/static/%c0%ae%c0%ae/secret/passwd", "/static/%c0%ae%c0%ae%c0%afsecret%c0%afpasswd",
    "/static/%e0%80%ae%e0%80%ae/secret/passwd", "/static/%uff0e%uff0e/secret/passwd",
    "/static/a.css%00.txt", "/static/%00", "/static/../secret/passwd%00.css", "/static/out",
    "/static/outdir/passwd", "/static/sub/../outdir/passwd", "/static//..//secret/passwd",
    "/static/.../secret/passwd", "/static/....//secret/passwd", "/static/@/secret/passwd",
    "/static/C:/secret/passwd", "/static/C:\\secret\\passwd", "/static/%43:%5csecret%5cpasswd",
    "/static/file:///@/secret/passwd", "//@/secret/passwd", "/@/secret/passwd",
    "/static/%2f@/secret/passwd", "/static/..;/secret/passwd", "/static/%2e%2e;/secret/passwd",
    "/static/..%00/secret/passwd", "/static/..%0d%0a/secret/passwd",
    "/static/" + "../" * 40 + "@/secret/passwd",
]


def test_traversal_corpus_never_reaches_a_file_outside_the_root(master, tree):
    """StaticFiles doc, "Security", and uwsgi_file_serve's realpath check: dot segments (plain,
    encoded, double-encoded, overlong UTF-8), backslashes, NUL, symlinks out, absolute and
    Windows-drive paths: each is answered 400, 403 or 404, never with the file outside the root."""
    m = start(master, tree, "static-map = /static=@/static\ncheck-static = @/other\nstatic-map2 = /sub=@/static\n")
    assert len(TRAVERSAL) >= 30
    for path in TRAVERSAL:
        target = path.replace("@", str(tree).lstrip("/"))
        for request in (f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode("latin-1"),
                        f"GET http://t{target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode("latin-1")):
            status, data = raw(m.port, request)
            assert status in (400, 403, 404), (path, data[:300])
            assert b"SECRET" not in data, path
    assert curl(m.port, "/static/a.css")[2] == CSS  # still serving


def test_option_values_are_checked_with_file_and_line(tmp_path):
    """Option syntax as uWSGI's parsers want it (core/uwsgi.c: uwsgi_opt_static_map needs
    `mountpoint=docroot`; the expires regexps are compiled at start): errors name file and line."""
    base = "[uwsgi]\nhttp-socket = :0\nmodule = x\n"
    for line, message in (("static-map = /static", 'expected "mountpoint=path"'),
                          ("static-expires = [ 3600", "bad regular expression"),
                          ("static-expires-type = text/css", 'expected "mime/type=seconds"')):
        (tmp_path / "app.ini").write_text(base + line + "\n")
        with pytest.raises(ConfigError) as e:
            load_config(str(tmp_path / "app.ini"))
        assert e.value.line == 4 and message in str(e.value), str(e.value)
    # uwsgi_opt_fileserve_mode ignores a word it does not know (the worker sends the file): a warning
    (tmp_path / "app.ini").write_text(base + "file-serve-mode = carrier-pigeon\n")
    c = load_config(str(tmp_path / "app.ini"))
    assert c.file_serve_mode is None and any("app.ini:4: file-serve-mode:" in w and "not a mode" in w
                                             for w in c.warnings), c.warnings


# ---------------------------------------------------------------- behind a real nginx

def nginx_front(procs, tmp_path: Path, server: str) -> int:
    """A real nginx (a child on a free port, as tests/test_worker_behind_nginx.py starts it) with
    `server`'s directives inside its server block; its port."""
    if NGINX is None:
        pytest.skip("nginx binary not found: run scripts/install-test-deps.sh")
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    port = free_port()
    temps = " ".join(f"{k}_temp_path {prefix}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(f"""{'user root;' if os.geteuid() == 0 else ''}
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off; {temps}
    server {{ listen 127.0.0.1:{port}; {server} }}
}}
""")
    procs([NGINX, "-e", "stderr", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                   "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr;"], tmp_path, log=tmp_path / "nginx.log")
    wait_port(port)
    return port


@pytest.fixture
def nginx(procs, tmp_path):
    """start(server directives) -> nginx's port; killed by PID at teardown (conftest.procs)."""
    return lambda server: nginx_front(procs, tmp_path, server)


def test_through_nginx_proxy_pass_files_ranges_and_304(master, tree, nginx):
    """Static serving behind nginx `proxy_pass` over kept-alive upstream connections (what the
    README recommends): a file, a range, a 304 and a 1 MiB file (sent from the worker's loop)
    arrive as served, and requests for the application still reach it."""
    m = start(master, tree, "static-map = /static=@/static\n")
    port = nginx(f"""location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
    upstream up {{ server 127.0.0.1:{m.port}; keepalive 4; """)
    status, h, body = curl(port, "/static/a.css")
    assert (status, body, h["content-type"]) == (200, CSS, "text/css")
    assert curl(port, "/static/data.bin", "-r", "4-7")[0:3:2] == (206, bytes(range(4, 8)))
    assert curl(port, "/static/a.css", "-H", f"If-None-Match: {h['etag']}")[0] == 304
    for _ in range(3):
        assert curl(port, "/static/big.bin")[2] == (tree / "static" / "big.bin").read_bytes()
    assert curl(port, "/dynamic")[2] == b"app /dynamic"
    assert curl(port, "/static/../secret/passwd")[0] in (400, 403, 404)


def test_through_nginx_uwsgi_pass_with_check_static_docroot(master, tree, nginx):
    """StaticFiles doc, "Mode 2: trust frontend's DOCUMENT_ROOT": nginx's `root` becomes
    DOCUMENT_ROOT (uwsgi_params), and emperor serves the file from it over the uwsgi protocol."""
    uport = free_port()
    m = start(master, tree, f"socket = 127.0.0.1:{uport}\ncheck-static-docroot = true\n")
    port = nginx(f"root {tree / 'static'}; location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{uport}; }}")
    assert curl(port, "/a.css")[0:3:2] == (200, CSS)
    assert curl(port, "/big.bin")[2] == (tree / "static" / "big.bin").read_bytes()
    assert curl(port, "/nothing")[2] == b"app /nothing"
    assert "GET /a.css => 200" in m.log


def test_through_nginx_x_accel_redirect(master, tree, nginx):
    """StaticFiles doc, "X-Accel-Redirect": emperor only names the file; nginx, which can read
    it, sends it from an `internal` location; the client never sees the header."""
    m = start(master, tree, "static-map = /static=@/static\nfile-serve-mode = x-accel-redirect\n")
    port = nginx(f"location / {{ proxy_pass http://127.0.0.1:{m.port}; }} "
                 f"location {tree}/static/ {{ internal; root /; }}")
    status, h, body = curl(port, "/static/a.css")
    assert (status, body) == (200, CSS) and "x-accel-redirect" not in h
    assert curl(port, "/static/big.bin")[2] == (tree / "static" / "big.bin").read_bytes()
    assert curl(port, f"{tree}/static/a.css")[0] == 404  # internal: not for clients


def test_a_vassal_with_no_application_serves_its_files(procs, tmp_path, tree):
    """`need-app = false` with only static-map: the files are served; anything else gets what
    uWSGI answers without an application (plugins/python/wsgi_handlers.c: 500, and "no python
    application found" in the log)."""
    import sys
    port = free_port()
    (tmp_path / "static.ini").write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nneed-app = false\n"
                                         f"static-map = /static={tree / 'static'}\n")
    m = procs([sys.executable, "-m", "emperor", "master", str(tmp_path / "static.ini")], tmp_path)
    m.wait_log("running (workers ready)", timeout=15)
    assert curl(port, "/static/a.css")[0:3:2] == (200, CSS)
    assert curl(port, "/other")[0] == 500
    m.wait_log("no python application found")
