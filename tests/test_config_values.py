"""Values as uWSGI 2.0's option parsers read them (core/uwsgi.c uwsgi_opt_*, socket.c), the
aliases real files use, and where emperor reads a value otherwise (docs/configuration.md)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from emperor.config import ConfigError, load_config, read_vassal
from emperor.worker.app import prepare_environment

HEAD = "[uwsgi]\nmodule = app\n"


def write(tmp_path: Path, text: str, name: str = "app.ini") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(tmp_path: Path, body: str, socket: bool = True, **kw):
    kw.setdefault("environ", {})
    return load_config(write(tmp_path, HEAD + ("http-socket = :8000\n" if socket else "") + body), **kw)


def finding(tmp_path: Path, body: str) -> str:
    r = read_vassal(write(tmp_path, HEAD + "http-socket = :8000\n" + body), environ={})
    return r.findings[-1].text()


# ---------------------------------------------------------------- addresses with a comment

def test_the_readme_sample_http_socket_with_an_inline_comment(tmp_path):
    """socket.c bind_to_tcp: the port is atoi() of what follows the last ':', so
    `127.0.0.1:8000 ; plain HTTP` binds 127.0.0.1:8000 in uWSGI too."""
    c = load(tmp_path, "http-socket = 127.0.0.1:8001 ; plain HTTP\nsocket = /run/app.sock    ; for nginx\n",
             socket=False)
    assert c.http_sockets == ["127.0.0.1:8001"] and c.uwsgi_sockets == ["/run/app.sock"]
    assert c.warnings == []


def test_where_uwsgi_reads_a_comment_absurdly_check_says_so(tmp_path):
    """uWSGI takes the port after the last ':' (socket.c uwsgi_socket_type / strrchr): in
    `:8000 # a: b` that is inside the comment; a UNIX path keeps the comment in its name."""
    assert finding(tmp_path, "socket = :8001 # note: b\n").endswith(
        "socket: honoured (:8001; uWSGI 2.0 takes the port after the last ':', here inside the comment)")
    assert "uWSGI 2.0 would name the socket" in finding(tmp_path, "socket = /run/x.sock ; c\n")


# ---------------------------------------------------------------- integers

@pytest.mark.parametrize("text,expected", [("4 ; max", 4), ("1000         # Restart", 1000), ("4k", 4),
                                           ("  +7", 7)])
def test_integers_are_atoi(tmp_path, text, expected):
    """uwsgi.c uwsgi_opt_set_int: atoi(), which stops at the first character that is not a digit."""
    assert load(tmp_path, f"max-requests = {text}\n").max_requests == expected


def test_threads_true_is_one_thread(tmp_path):
    """atoi("true") is 0, and 0 threads is one (init.c sanitize_args: cores = threads only if > 1)."""
    c = load(tmp_path, "threads = true\n")
    assert c.threads == 1 and c.warnings == []
    assert "0 threads means one thread" in finding(tmp_path, "threads = true\n")


def test_processes_zero_is_no_workers_with_a_warning(tmp_path):
    """uwsgi.c: numproc 0 is the no-workers mode (sockets bound, no worker accepts)."""
    c = load(tmp_path, "processes = 0\n")
    assert c.processes == 0
    assert c.warnings == ["app.ini:4: processes: 0 is uWSGI's no-workers mode: the sockets are bound "
                          "but no worker accepts, so no request is answered"]


def test_listen_zero(tmp_path):
    """uwsgi.c: listen = 0 is accepted and passed to listen(2)."""
    assert load(tmp_path, "listen = 0\n").listen == 0


def test_a_word_is_not_a_number(tmp_path):
    """Deviation: uWSGI's atoi reads "four" as 0 (no workers); emperor refuses it."""
    with pytest.raises(ConfigError, match='processes: expected an integer, got "four"'):
        load(tmp_path, "processes = four\n")


@pytest.mark.parametrize("text,expected", [("65535", 65535), ("65536", 65535), ("400000", 65535),
                                           ("32768 ; big headers", 32768)])
def test_buffer_size_is_clamped_to_16_bits(tmp_path, text, expected):
    """uwsgi.c uwsgi_opt_set_16bit: a value above 65535 is 65535."""
    c = load(tmp_path, f"buffer-size = {text}\n")
    assert c.buffer_size == expected
    big = int(text.split()[0]) > 65535
    assert c.warnings == ([f"app.ini:4: buffer-size: {text} is more than 65535: clamped to 65535, as uWSGI does"]
                          if big else [])


# ---------------------------------------------------------------- chmod-socket, booleans

@pytest.mark.parametrize("text,expected", [("1", "666"), ("660", "660"), ("", "666"), ("0660", "0660"),
                                           ("664 ; nginx", "664")])
def test_chmod_socket(tmp_path, text, expected):
    """uwsgi.c uwsgi_opt_chmod_socket: `1` means 666, else three octal digits. Emperor also
    takes a bare one (666), a fourth digit and an inline comment, which uWSGI refuses."""
    assert load(tmp_path, f"chmod-socket = {text}\n").chmod_socket == expected


def test_boolean_first_word_with_a_note_where_uwsgi_differs(tmp_path):
    """uwsgi.c uwsgi_opt_true compares the whole value: `false ; x` is true there. Emperor reads
    the first word (its choice, kept) and `emperor check` says uWSGI's reading."""
    assert load(tmp_path, "vacuum = false ; clean up\n").vacuum is False
    assert 'uWSGI 2.0 reads "false ; clean up" as true' in finding(tmp_path, "vacuum = false ; clean up\n")
    assert load(tmp_path, "strict = true  # Fail if any option is unknown\n").strict is True


# ---------------------------------------------------------------- aliases real files use

@pytest.mark.parametrize("line,field,value", [
    ("http11-socket = :8001", "http_sockets", [":8000", ":8001"]),
    ("http = :8001", "http_sockets", [":8000", ":8001"]),
    ("workers = 3", "processes", 3),
    ("wsgi = pkg.app", "module", "pkg.app"),
    ("pp = /srv/lib", "pythonpath", ["/srv/lib"]),
    ("pyhome = /v", "virtualenv", "/v"),
    ("stats-server = 127.0.0.1:9191", "stats", "127.0.0.1:9191"),
    ("iprint = hi", "print", ["hi"]),
])
def test_alias(tmp_path, line, field, value):
    """Aliases from uWSGI's option table (same parser, same target), and http11-socket (keep-alive
    HTTP: what emperor's http-socket does), http (uWSGI's router; emperor serves it directly)."""
    assert getattr(load(tmp_path, line + "\n"), field) == value


def test_protocol_http_makes_socket_speak_http(tmp_path):
    """uwsgi.c `protocol`: the protocol of the default sockets (`socket`), not of uwsgi-socket."""
    c = load(tmp_path, "socket = :9311\nuwsgi-socket = :9312\nprotocol = http\n", socket=False)
    assert c.http_sockets == [":9311"] and c.uwsgi_sockets == [":9312"]


def test_pythonpath_globs(tmp_path, monkeypatch):
    """python_plugin.c uwsgi_opt_pythonpath: glob() the value, every match added (none: the
    value as is); each is then inserted at the front of sys.path in turn (python_plugin.c
    uwsgi_python_init): the last one first."""
    for d in ("pp2", "pp1"):
        (tmp_path / d).mkdir()
    c = load(tmp_path, f"pythonpath = {tmp_path}/pp*\npythonpath = {tmp_path}/none*\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    prepare_environment(c)
    assert sys.path[:3] == [f"{tmp_path}/none*", f"{tmp_path}/pp2", f"{tmp_path}/pp1"]


def test_module_factory_is_read_as_written(tmp_path):
    """`module = pkg.mod:Factory()` is kept whole; the worker calls the factory
    (tests/test_config_module_factory.py)."""
    assert load(tmp_path, "module = app:create_app()\n").module == "app:create_app()"


def test_print_lines_are_expanded(tmp_path):
    """uwsgi.c uwsgi_opt_print: printed after every expansion; the master logs them at start."""
    assert load(tmp_path, "name = web\nprint = hello %(name) %n\n").print == ["hello web app"]
