"""Unit tests for emperor.config: uWSGI's ini dialect (docs/configuration.md).

The reader's finer points, each with the uWSGI behaviour it reproduces, are in
tests/test_config_reader.py, test_config_logic.py, test_config_values.py and
test_config_options.py.
"""
from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest

from emperor.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).parent / "configs"
MINIMAL = "http-socket = :8000\nmodule = app\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def load_text(tmp_path: Path, body: str, name: str = "app.ini", **kw) -> Config:
    """Load '[uwsgi]' + body; the minimal socket and module come first."""
    kw.setdefault("environ", {})
    return load_config(write(tmp_path, name, "[uwsgi]\n" + MINIMAL + body), **kw)


def error_of(tmp_path: Path, text: str, name: str = "app.ini", **kw) -> ConfigError:
    kw.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, name, text), **kw)
    return info.value


def cfg(name: str, **kw) -> Config:
    kw.setdefault("environ", {})
    return load_config(str(CONFIGS / name), **kw)


# ---------------------------------------------------------------- realistic files

def test_django_behind_nginx():
    c = cfg("django_nginx.ini")
    assert c.path == str(CONFIGS / "django_nginx.ini")
    assert c.name == "django_nginx.ini" and c.section == "uwsgi"
    assert c.uwsgi_sockets == ["/run/uwsgi/django_nginx.sock"]
    assert c.http_sockets == []
    assert c.chmod_socket == "660" and c.vacuum is True
    assert c.module == "mysite.wsgi:application" and c.wsgi_file is None
    assert c.chdir == "/srv/mysite/src" and c.virtualenv == "/srv/mysite/venv"
    assert c.env == ["DJANGO_SETTINGS_MODULE=mysite.settings.production", "LANG=en_US.UTF-8"]
    assert (c.processes, c.threads, c.harakiri, c.max_requests) == (4, 2, 30, 5000)
    assert (c.buffer_size, c.listen) == (32768, 1024)
    assert (c.uid, c.gid) == ("www-data", "www-data")
    assert c.die_on_term is True
    assert c.pidfile == "/run/uwsgi/django_nginx.pid"
    assert c.logto == "/var/log/uwsgi/django_nginx.log"
    assert c.touch_reload == ["/srv/mysite/src/mysite/wsgi.py"]
    assert c.warnings == []  # master, enable-threads, thunder-lock are accepted silently
    assert c.origins["processes"] == ("django_nginx.ini", 13)
    assert c.origins["socket"] == ("django_nginx.ini", 23)


def test_flask_http_socket():
    c = cfg("flask_http.ini")
    assert c.http_sockets == [":8080"] and c.uwsgi_sockets == []
    assert c.wsgi_file == str(CONFIGS / "app.py") and c.module is None
    assert c.callable == "app"
    assert (c.processes, c.threads, c.socket_timeout) == (2, 4, 10)
    assert c.stats == "127.0.0.1:9191" and c.stats_http is True
    assert c.disable_logging is True and c.need_app is True
    assert c.warnings == []


def test_include_and_ini_with_section():
    c = cfg("with_include.ini")
    assert c.http_sockets == ["127.0.0.1:8001"]
    assert c.module == "shop.wsgi"
    assert c.processes == 6  # after the include: last wins
    assert c.vacuum is True and c.die_on_term is True and c.worker_reload_mercy == 30
    assert (c.buffer_size, c.listen) == (16384, 512)  # from base.ini:tuning
    # %d in the included file is the included file's directory
    assert c.pythonpath == [str(CONFIGS / "common") + "/../lib", "/srv/shop"]
    assert c.env == ["COMMON=1", "APP=shop"]
    assert c.origins["vacuum"] == ("common/base.ini", 5)
    assert c.origins["listen"] == ("common/base.ini", 13)
    assert c.origins["processes"] == ("with_include.ini", 6)
    assert c.warnings == []


def test_placeholders_file():
    c = cfg("placeholders.ini")
    assert c.chdir == "/srv/shop/src"
    assert c.pythonpath == ["/srv/shop/lib"]
    assert c.module == "shop.wsgi:app"
    assert c.http_sockets == ["127.0.0.1:9000"]
    assert c.pidfile == "/run/shop-placeholders.pid"
    assert c.virtualenv == "/srv/shop/venv"  # forward reference
    assert c.warnings == []  # project, base_dir, venv are placeholders, not options


def test_env_file():
    environ = {"APP_PORT": "5000", "APP_HOME": "/srv/env", "APP_MODULE": "envapp.wsgi",
               "WEB_CONCURRENCY": "3", "APP_SECRET": "s3cr%t"}
    c = cfg("env_vars.ini", environ=environ)
    assert c.http_sockets == ["0.0.0.0:5000"]
    assert (c.chdir, c.module, c.processes) == ("/srv/env", "envapp.wsgi", 3)
    assert c.env == ["SECRET=s3cr%t", "UNSET="]
    assert c.warnings == ['env_vars.ini:7: environment variable "NOT_DEFINED_ANYWHERE" is not set; using ""']


def test_env_file_defaults_to_os_environ(monkeypatch):
    for k, v in {"APP_PORT": "5001", "APP_HOME": "/h", "APP_MODULE": "m",
                 "WEB_CONCURRENCY": "2", "APP_SECRET": "x"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NOT_DEFINED_ANYWHERE", raising=False)
    c = load_config(str(CONFIGS / "env_vars.ini"))
    assert c.http_sockets == ["0.0.0.0:5001"] and c.processes == 2


def test_multi_section_default():
    c = cfg("multi.ini")
    assert c.section == "uwsgi"
    assert c.http_sockets == [":8000"] and c.processes == 1
    assert c.module == "blog.wsgi" and c.chdir == "/srv/blog"


def test_multi_section_prod():
    c = cfg("multi.ini:prod")
    assert c.section == "prod" and c.name == "multi.ini"
    assert c.path == str(CONFIGS / "multi.ini")
    assert c.uwsgi_sockets == ["/run/blog.sock"] and c.http_sockets == []
    assert (c.processes, c.harakiri, c.strict) == (8, 60, True)
    assert c.env == ["DJANGO_SETTINGS_MODULE=blog.settings"]
    assert c.ini_lines()[0] == "[prod]"


def test_multi_section_dev():
    c = cfg("multi.ini:dev")
    assert c.http_sockets == ["127.0.0.1:8000"]
    assert c.lazy_apps is True and c.snapshot is True
    assert c.origins["lazy-apps"] == ("multi.ini", 22)


def test_legacy_file_warns_for_each_unsupported_option():
    c = cfg("legacy_uwsgi.ini")
    assert c.http_sockets == [":9090"] and c.module == "legacy.app:app"
    assert c.static_map == ["/static=/srv/legacy/static"] and c.offload_threads == 2  # honoured now
    assert c.warnings == [
        'legacy_uwsgi.ini:11: option "plugin = router_cache" is not supported by emperor; ignored',
    ]


def test_underscore_style_file():
    c = cfg("underscores.ini")
    assert c.http_sockets == [":8081"] and c.wsgi_file == "/srv/app/wsgi.py"
    assert c.die_on_term is True and c.lazy_apps is True
    assert (c.worker_reload_mercy, c.max_requests, c.socket_timeout) == (15, 100, 8)
    assert c.origins["die-on-term"] == ("underscores.ini", 4)
    assert c.warnings == []


def test_booleans_file():
    c = cfg("booleans.ini")
    assert c.vacuum is True
    assert c.lazy_apps is False and c.die_on_term is False
    assert c.disable_logging is True
    assert c.stats_http is False and c.need_app is True
    assert c.snapshot is False and c.strict is False
    assert c.warnings == []


def test_magic_file():
    c = cfg("magic.ini", vassals_dir="/etc/emperor/vassals.d")
    d = str(CONFIGS)
    assert c.http_sockets == ["/tmp/magic.sock"]
    assert c.chdir == d + "/"
    assert c.pidfile == "/etc/emperor/vassals.d/magic.ini.pid"
    assert c.logto == "/var/log/configs/magic.ini"
    assert c.env == [
        f"SELF={d}/magic.ini", f"HOST={socket.gethostname()}", "PERCENT=100%",
        f"FIRST={d.strip('/').split('/')[0]}", "LITERAL=%(notaplaceholder)", "UNKNOWN=",
    ]  # an unknown %y is removed, both characters (utils.c init_magic_table: every entry "")


def test_magic_vassals_dir_defaults_to_file_directory():
    assert cfg("magic.ini").pidfile == str(CONFIGS / "magic.ini.pid")


def test_unix_and_ipv6_file():
    c = cfg("unix_and_ipv6.ini")
    assert c.http_sockets == ["/run/app/http.sock", "[::1]:8443"]
    assert c.uwsgi_sockets == ["0.0.0.0:3031", "@abstract-name"]
    assert c.chmod_socket == "666"  # bare chmod-socket
    assert c.module == "pkg.app"  # 'wsgi' is uWSGI's alias of module
    assert c.processes == 5 and c.origins["processes"] == ("unix_and_ipv6.ini", 16)
    assert c.pythonpath == ["/srv/a", "/srv/b"]
    assert c.touch_reload == ["/srv/reload", "/srv/app/wsgi.py"]
    assert c.reload_mercy == 20 and c.safe_pidfile == "/run/app.pid"
    assert c.stats == "/run/app/stats.sock"


@pytest.mark.parametrize("name", ["django_nginx.ini", "flask_http.ini", "with_include.ini",
                                  "unix_and_ipv6.ini", "multi.ini:prod", "booleans.ini"])
def test_ini_lines_round_trip(tmp_path, name):
    c = cfg(name)
    again = load_config(write(tmp_path, "x.ini", "\n".join(c.ini_lines()) + "\n") + ":" + c.section,
                        environ={})
    skip = {"path", "name", "origins", "warnings"}
    for name in Config.FIELDS:
        if name not in skip:
            assert getattr(again, name) == getattr(c, name), name


def test_ini_lines_shape():
    lines = cfg("django_nginx.ini").ini_lines()
    assert lines[0] == "[uwsgi]"
    assert "processes = 4" in lines and "vacuum = true" in lines and "lazy-apps = false" in lines
    assert lines.count("env = LANG=en_US.UTF-8") == 1
    assert not any(line.startswith("stats =") for line in lines)  # None is left out


# ---------------------------------------------------------------- syntax

def test_defaults_match_a_blank_config(tmp_path):
    c = load_text(tmp_path, "")
    blank = Config(path=c.path, name=c.name)
    for name in Config.FIELDS:
        if name not in {"http_sockets", "module", "origins"}:
            assert getattr(c, name) == getattr(blank, name), name


def test_public_fields_are_stable():
    names = list(Config.FIELDS)
    assert names[:3] == ["path", "name", "section"]
    for n in ["http_sockets", "uwsgi_sockets", "module", "wsgi_file", "callable", "chdir",
              "pythonpath", "virtualenv", "env", "processes", "threads", "pidfile",
              "safe_pidfile", "touch_reload", "die_on_term", "worker_reload_mercy",
              "reload_mercy", "listen", "buffer_size", "socket_timeout", "harakiri",
              "max_requests", "lazy_apps", "need_app", "stats", "stats_http", "vacuum",
              "chmod_socket", "uid", "gid", "logto", "disable_logging", "strict",
              "snapshot", "warnings", "origins"]:
        assert n in names


def test_comments_blank_lines_and_whitespace(tmp_path):
    c = load_text(tmp_path, "\n   ; indented comment\n\t# hash comment\n"
                            "   processes   =    3   \n#processes = 9\n;threads = 9\n")
    assert c.processes == 3 and c.threads == 1


def test_key_without_equals_is_empty_string(tmp_path):
    c = load_text(tmp_path, "vacuum\ndie-on-term\npythonpath\n")
    assert c.vacuum is True and c.die_on_term is True
    assert c.pythonpath == [""]


def test_value_keeps_later_equals_signs(tmp_path):
    c = load_text(tmp_path, "env = QUERY=a=b=c\n")
    assert c.env == ["QUERY=a=b=c"]


def test_crlf_and_bom(tmp_path):
    path = tmp_path / "win.ini"
    path.write_bytes(b"\xef\xbb\xbf[uwsgi]\r\nhttp-socket = :8000\r\nmodule = app\r\nprocesses = 2\r\n")
    c = load_config(str(path), environ={})
    assert c.processes == 2 and c.module == "app" and c.origins["processes"] == ("win.ini", 4)


def test_other_sections_are_ignored(tmp_path):
    c = load_config(write(tmp_path, "app.ini", "[other]\nprocesses = 7\nbogus = 1\n[uwsgi]\n"
                                               + MINIMAL + "[more]\nthreads = 5\n"), environ={})
    assert c.processes == 1 and c.threads == 1 and c.warnings == []


def test_strings_are_taken_whole(tmp_path):
    c = load_text(tmp_path, "chdir = /srv/app ; not a comment\ncallable = app # neither\n")
    assert c.chdir == "/srv/app ; not a comment"
    assert c.callable == "app # neither"


def test_keys_are_case_sensitive(tmp_path):
    """uWSGI compares option names with strcmp (config.c uwsgi_opt_get): `Processes` is not one."""
    c = load_text(tmp_path, "Processes = 4\n")
    assert c.processes == 1
    assert c.warnings == ['app.ini:4: unknown option "Processes" (did you mean "processes"?)']


def test_underscores_are_dashes(tmp_path):
    c = load_text(tmp_path, "die_on_term = 1\nbuffer_size = 8192\n")
    assert c.die_on_term is True and c.buffer_size == 8192


def test_line_without_option_name_warns(tmp_path):
    c = load_text(tmp_path, "= value\n")
    assert c.warnings == ["app.ini:4: line has no option name; ignored"]


def test_malformed_section_header(tmp_path):
    e = error_of(tmp_path, "[uwsgi\n" + MINIMAL)
    assert str(e) == 'app.ini:1: malformed section header "[uwsgi"'


# ---------------------------------------------------------------- repetition

def test_list_options_collect_in_order_and_scalars_last_wins(tmp_path):
    c = load_text(tmp_path, "socket = /a.sock\nprocesses = 2\nuwsgi-socket = :3031\n"
                            "socket = /b.sock\nworkers = 5\nhttp = :8001\n")
    assert c.uwsgi_sockets == ["/a.sock", ":3031", "/b.sock"]
    assert c.http_sockets == [":8000", ":8001"]
    assert c.processes == 5
    assert c.origins["processes"] == ("app.ini", 8)  # recorded under the canonical name
    assert c.origins["socket"] == ("app.ini", 7)


@pytest.mark.parametrize("alias,field,value", [
    ("home", "virtualenv", "/v"), ("venv", "virtualenv", "/v"), ("virtualenv", "virtualenv", "/v"),
    ("file", "wsgi_file", "w.py"), ("wsgi-file", "wsgi_file", "w.py"),
    ("lazy", "lazy_apps", True), ("workers", "processes", 3),
])
def test_aliases(tmp_path, alias, field, value):
    c = load_text(tmp_path, f"{alias} = {value}\n")
    assert getattr(c, field) == value


# ---------------------------------------------------------------- booleans and integers

@pytest.mark.parametrize("text,expected", [
    ("false", False), ("FALSE", False), ("Off", False), ("no", False), ("0", False),
    ("true", True), ("on", True), ("yes", True), ("1", True), ("", True), ("anything", True),
    ("true ; clean up", True), ("false ; clean up", False), ("1 # on", True),
    ("no# off", False), ("off;x", False),
])
def test_booleans(tmp_path, text, expected):
    assert load_text(tmp_path, f"vacuum = {text}\n").vacuum is expected


@pytest.mark.parametrize("text,expected", [
    ("4", 4), ("4 ; max workers", 4), ("4 # comment", 4), ("30  ;secs", 30),
    ("+3", 3), ("7workers", 7), ("  12", 12),
])
def test_integers_accept_trailing_text_like_atoi(tmp_path, text, expected):
    assert load_text(tmp_path, f"harakiri = {text}\n").harakiri == expected


def test_bad_integer_message_is_exact():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "errors" / "bad_processes.ini"), environ={})
    e = info.value
    assert str(e) == 'bad_processes.ini:6: processes: expected an integer, got "four"'
    assert (e.path, e.line) == ("bad_processes.ini", 6)
    assert e.message == 'processes: expected an integer, got "four"'


def test_bad_integer_uses_the_name_as_written(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "workers =\n")
    assert str(e) == 'app.ini:4: workers: expected an integer, got ""'


@pytest.mark.parametrize("line,message", [
    ("buffer-size = 511", "buffer-size: must be between 512 and 65535, got 511"),
    ("harakiri = -1", "harakiri: must be at least 0, got -1"),
    ("processes = -2", "processes: must be at least 0, got -2"),
])
def test_integer_bounds(tmp_path, line, message):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + line + "\n")
    assert str(e) == f"app.ini:4: {message}"


def test_buffer_size_limits_are_inclusive(tmp_path):
    assert load_text(tmp_path, "buffer-size = 65535\n").buffer_size == 65535
    assert load_text(tmp_path, "buffer-size = 512\n").buffer_size == 512


# ---------------------------------------------------------------- expansion

def test_magic_variables(tmp_path):
    c = load_text(tmp_path, "chdir = %d|%n|%e|%s|%p|%c|%v\n", name="site/hello.ini",
                  vassals_dir="/vd")
    d = str(tmp_path / "site")
    assert c.chdir == f"{d}/|hello|ini|hello.ini|{d}/hello.ini|site|/vd"


def test_magic_percent_is_never_re_expanded(tmp_path):
    c = load_text(tmp_path, "chdir = %%n %%(x) %%%n\n")
    assert c.chdir == "%n %(x) %app"


def test_magic_in_included_file_uses_top_file_for_uppercase(tmp_path):
    write(tmp_path, "inc/base.ini", "[uwsgi]\nchdir = %n/%N/%c/%C\n")
    c = load_text(tmp_path, "ini = inc/base.ini\n", name="top.ini")
    assert c.chdir == f"base/top/inc/{tmp_path.name}"


def test_env_expansion(tmp_path):
    c = load_text(tmp_path, "chdir = $(HOME_DIR)/app\nenv = X=$(MISSING)\n",
                  environ={"HOME_DIR": "/home/u"})
    assert c.chdir == "/home/u/app" and c.env == ["X="]
    assert c.warnings == ['app.ini:5: environment variable "MISSING" is not set; using ""']


def test_expansion_order_magic_then_env_then_placeholders(tmp_path):
    c = load_text(tmp_path, "base = /b\nchdir = $(A)\ncallable = $(B)\n",
                  environ={"A": "%(base)/x", "B": "%n"})
    assert c.chdir == "/b/x"  # $(ENV) text takes part in %(key)
    assert c.callable == "%n"  # but magic variables ran before $(ENV)


def test_placeholder_value_gets_magic_of_its_own_line(tmp_path):
    c = load_text(tmp_path, "sock = /run/%n.sock\nsocket = %(sock)\n")
    assert c.uwsgi_sockets == ["/run/app.sock"]


def test_placeholders(tmp_path):
    c = load_text(tmp_path, "set-placeholder = a=1\nset-ph = b_c = 2\nthreads = %(a)%(b-c)\n"
                            "callable = %(threads)x\n")
    assert c.threads == 12 and c.callable == "12x" and c.warnings == []


def test_placeholder_takes_last_value_and_forward_references(tmp_path):
    c = load_text(tmp_path, "chdir = %(root)/src\nroot = /one\nroot = /two\n")
    assert c.chdir == "/two/src"


def test_unreferenced_unknown_key_warns_but_referenced_does_not(tmp_path):
    c = load_text(tmp_path, "used = x\nunused = y\ncallable = %(used)\n")
    assert c.warnings == ['app.ini:5: unknown option "unused"']


def test_unresolved_placeholder_is_an_error_with_line(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "\nchdir = /srv/%(nowhere)\n")
    assert str(e) == "app.ini:5: chdir: unknown placeholder %(nowhere)"


def test_unresolved_placeholder_in_a_placeholder_points_at_its_line(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "a = %(b)\nchdir = %(a)\n")
    assert (e.line, e.message) == (4, "a: unknown placeholder %(b)")


def test_placeholder_loop_is_an_error(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "a = %(b)\nb = %(a)\nchdir = %(a)\n")
    assert "placeholder loop" in str(e) and e.path == "app.ini"


def test_log_format_keeps_its_own_variables_and_takes_placeholders(tmp_path):
    """uWSGI leaves an unknown %(name) as it is: in log-format it is a request-log variable."""
    c = load_text(tmp_path, "set-ph = tag=shop\nlog-format = %(tag) %(addr) %(status)\n")
    assert c.log_format == "shop %(addr) %(status)" and c.warnings == []


def test_bad_set_placeholder(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "set-placeholder = novalue\n")
    assert str(e) == 'app.ini:4: set-placeholder: expected "name=value", got "novalue"'


# ---------------------------------------------------------------- inclusion

def test_include_relative_to_including_file_and_order(tmp_path):
    write(tmp_path, "conf/a.ini", "[uwsgi]\nprocesses = 2\nthreads = 2\ninclude = sub/b.ini\n")
    write(tmp_path, "conf/sub/b.ini", "[uwsgi]\nthreads = 3\nenv = FROM=b\n")
    c = load_text(tmp_path, "env = FIRST=1\nprocesses = 9\ninclude = conf/a.ini\nenv = LAST=1\n")
    assert c.processes == 2  # the include comes later than processes = 9
    assert c.threads == 3
    assert c.env == ["FIRST=1", "FROM=b", "LAST=1"]
    assert c.origins["threads"] == ("conf/sub/b.ini", 2)


def test_include_path_with_placeholder_and_magic(tmp_path):
    write(tmp_path, "parts/x.ini", "[uwsgi]\nprocesses = 4\n")
    c = load_text(tmp_path, "partdir = %dparts\nini = %(partdir)/x.ini\n")
    assert c.processes == 4
    assert c.warnings == []  # partdir is used as a placeholder


def test_include_path_with_unknown_placeholder(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "ini = %(nowhere)/x.ini\n")
    assert str(e) == "app.ini:4: ini: unknown placeholder %(nowhere)"


def test_include_same_file_other_section(tmp_path):
    c = load_config(write(tmp_path, "app.ini", "[base]\nprocesses = 3\n[uwsgi]\n" + MINIMAL
                                               + "ini = :base\n"), environ={})
    assert c.processes == 3


def test_missing_include_names_including_line(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "include = nope.ini\n")
    assert str(e) == 'app.ini:4: include: cannot read "nope.ini": No such file or directory'


def test_include_cycle_names_the_chain():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "errors" / "cycle_a.ini"), environ={})
    assert str(info.value) == "cycle_b.ini:3: include cycle: cycle_a.ini -> cycle_b.ini -> cycle_a.ini"


def test_self_include_is_a_cycle(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "ini = :uwsgi\n")
    assert str(e) == "app.ini:4: include cycle: app.ini -> app.ini"


def test_same_file_twice_is_not_a_cycle(tmp_path):
    write(tmp_path, "common.ini", "[uwsgi]\nenv = C=1\n")
    c = load_text(tmp_path, "ini = common.ini\nini = common.ini\n")
    assert c.env == ["C=1", "C=1"]


def test_included_file_without_section(tmp_path):
    write(tmp_path, "other.ini", "[uwsgi]\nprocesses = 2\n")
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "ini = other.ini:prod\n")
    assert str(e) == "other.ini: no [prod] section (included from app.ini:4)"


# ---------------------------------------------------------------- sections and paths

def test_missing_section_is_an_error():
    with pytest.raises(ConfigError) as info:
        load_config(str(CONFIGS / "errors" / "no_section.ini"), environ={})
    assert str(info.value) == "no_section.ini: no [uwsgi] section"


def test_missing_named_section(tmp_path):
    write(tmp_path, "app.ini", "[uwsgi]\n" + MINIMAL)
    with pytest.raises(ConfigError, match=r"^app.ini: no \[prod\] section$"):
        load_config(str(tmp_path / "app.ini") + ":prod", environ={})


def test_empty_section_suffix_means_uwsgi(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\n" + MINIMAL)
    assert load_config(path + ":", environ={}).section == "uwsgi"


def test_path_containing_a_colon(tmp_path):
    path = write(tmp_path, "odd:name.ini", "[uwsgi]\n" + MINIMAL)
    c = load_config(path, environ={})
    assert c.name == "odd:name.ini" and c.section == "uwsgi"
    write(tmp_path, "odd:name.ini", "[uwsgi]\n" + MINIMAL + "[dev]\n" + MINIMAL + "threads = 2\n")
    assert load_config(path + ":dev", environ={}).threads == 2


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, "rel.ini", "[uwsgi]\n" + MINIMAL)
    monkeypatch.chdir(tmp_path)
    c = load_config("rel.ini", environ={})
    assert c.path == str(tmp_path / "rel.ini") and c.name == "rel.ini"


def test_nonexistent_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "ghost.ini"), environ={})
    assert str(info.value) == "ghost.ini: cannot read file: No such file or directory"


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.ini").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "dir.ini"), environ={})
    assert str(info.value) == "dir.ini: cannot read file: not a regular file"


def test_not_utf8(tmp_path):
    """uWSGI reads bytes (io.c uwsgi_open_and_read): a value that is not UTF-8 is the same
    bytes in emperor, as a path the OS gets back unchanged."""
    (tmp_path / "bin.ini").write_bytes(b"[uwsgi]\nhttp-socket = :8000\nmodule = app\nchdir = \xff\xfe\n")
    c = load_config(str(tmp_path / "bin.ini"), environ={})
    assert c.chdir is not None and os.fsencode(c.chdir) == b"\xff\xfe"


# ---------------------------------------------------------------- unknown options, strict

def test_no_effect_options_do_not_warn(tmp_path):
    c = load_text(tmp_path, "master = true\nenable-threads\nthunder-lock = 1\nsingle-interpreter\n"
                            "auto-procname\nprocname-prefix-spaced = x\nmemory-report\n"
                            "plugins = python3\nplugin = python311\nplugins = http, python\n"
                            "plugins = python,router_basicauth\nplugin = python3,logfile,router_static\n"
                            "http-auto-chunked = true\n")
    assert c.warnings == []


def test_py_autoreload_and_die_on_idle_are_honoured(tmp_path):
    c = load_text(tmp_path, "die-on-idle = true\npy-autoreload = 2\n")
    assert c.die_on_idle is True and c.py_autoreload == 2
    assert c.warnings == []


def test_non_python_plugin_warns(tmp_path):
    c = load_text(tmp_path, "plugins = python3,gevent\n")
    assert c.warnings == ['app.ini:4: option "plugins = python3,gevent" '
                          'is not supported by emperor; ignored']


def test_strict_makes_unknown_options_fatal(tmp_path):
    """uWSGI's strict refuses a key that is not an option, wherever it is (config.c
    uwsgi_opt_get, uwsgi_configure); an option it knows (subscribe-to) is not refused."""
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "vaccum = true\nsubscribe-to = 127.0.0.1:7000:s\nstrict = true\n")
    assert str(e) == 'app.ini:4: unknown option "vaccum" refused by strict mode (did you mean "vacuum"?)'


def test_strict_from_an_included_file(tmp_path):
    write(tmp_path, "strict.ini", "[uwsgi]\nstrict\n")
    e = error_of(tmp_path, "[uwsgi]\nini = strict.ini\n" + MINIMAL + "cheapr = 2\n")
    assert (e.path, e.line) == ("app.ini", 5)


def test_strict_false_only_warns(tmp_path):
    c = load_text(tmp_path, "strict = false\nstatic-cache-paths = 30\n")
    assert c.strict is False and len(c.warnings) == 1


def test_strict_allows_set_placeholder_not_plain_placeholders(tmp_path):
    """Under strict, uWSGI refuses `root = /srv` (not an option) but not `set-placeholder`,
    whose entries are marked configured (config.c add_exported_option placeholder_only)."""
    c = load_text(tmp_path, "strict = true\nset-placeholder = root=/srv\nchdir = %(root)\n")
    assert c.chdir == "/srv" and c.warnings == []
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "strict = true\nroot = /srv\nchdir = %(root)\n")
    assert e.message.startswith('unknown option "root" refused by strict mode')


# ---------------------------------------------------------------- validation

def test_no_socket(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\nmodule = app\n")
    assert str(e) == "app.ini: no socket or http-socket"
    assert e.line is None


def test_no_application(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\nhttp-socket = :8000\n")
    assert str(e).startswith("app.ini: no module or wsgi-file")


def test_need_app_false_allows_no_application(tmp_path):
    c = load_config(write(tmp_path, "app.ini", "[uwsgi]\nhttp-socket = :8000\nneed-app = false\n"),
                    environ={})
    assert c.module is None and c.wsgi_file is None and c.need_app is False


@pytest.mark.parametrize("addr", ["127.0.0.1:8000", ":8000", "0.0.0.0:0", "localhost:65535",
                                  "[::1]:8080", "[::]:80", "/run/app.sock", "relative.sock",
                                  "@abstract", "/tmp/odd:name.sock"])
def test_good_addresses(tmp_path, addr):
    want = str(tmp_path / addr) if addr == "relative.sock" else addr   # see test_relative_unix_socket...
    assert load_text(tmp_path, f"socket = {addr}\nstats = {addr}\nchdir = {tmp_path}\n").uwsgi_sockets == [want]


def test_relative_unix_socket_paths_are_relative_to_chdir_and_kept_absolute(tmp_path, monkeypatch):
    """uWSGI changes to `chdir` before it binds (core/uwsgi.c uwsgi_setup: chdir, then
    uwsgi_bind_sockets); without chdir, the start directory. Absolute, `vacuum` finds it at exit."""
    monkeypatch.chdir(tmp_path)
    c = load_text(tmp_path, "socket = run/app.sock\n")
    assert c.uwsgi_sockets == [str(tmp_path / "run" / "app.sock")]
    c = load_text(tmp_path, "socket = app.sock\nchdir = /srv/app\n")
    assert c.uwsgi_sockets == ["/srv/app/app.sock"]


def test_shared_sockets_are_named_by_number_and_abstract_socket_goes_abstract(tmp_path):
    """core/socket.c: `=N` is the Nth shared-socket; abstract-socket binds in the abstract namespace."""
    c = load_text(tmp_path, "shared-socket = 127.0.0.1:9001\nshared-socket = :9002\nsocket = =1\n")
    assert c.uwsgi_sockets == [":9002"]
    e = error_of(tmp_path, "[uwsgi]\nhttp-socket = =0\nmodule = app\n")
    assert str(e) == "app.ini:2: http-socket: =0 names shared-socket 0, but there are 0"
    assert load_text(tmp_path, "socket = app.sock\nabstract-socket = true\n").uwsgi_sockets == ["@app.sock"]


@pytest.mark.parametrize("addr,message", [
    (":99999", 'bad port "99999" in ":99999" (expected 0-65535)'),
    (":65536", 'bad port "65536" in ":65536" (expected 0-65535)'),
    ("127.0.0.1:http", 'bad port "http" in "127.0.0.1:http" (expected 0-65535)'),
    ("127.0.0.1:", 'bad port "" in "127.0.0.1:" (expected 0-65535)'),
    ("::1:8000", 'IPv6 address needs brackets: "::1:8000"'),
    ("", "expected an address, got nothing"),
])
def test_bad_ports(tmp_path, addr, message):
    e = error_of(tmp_path, f"[uwsgi]\nmodule = app\n\nhttp-socket = {addr}\n")
    assert str(e) == f"app.ini:4: http-socket: {message}"


def test_bad_stats_address(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "stats = :70000\n")
    assert (e.line, e.message.split(":")[0]) == (4, "stats")


@pytest.mark.parametrize("text,expected", [("", "666"), ("660", "660"), ("0600", "0600")])
def test_chmod_socket(tmp_path, text, expected):
    assert load_text(tmp_path, f"chmod-socket = {text}\n").chmod_socket == expected


def test_bad_chmod_socket(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "chmod-socket = rw\n")
    assert str(e) == 'app.ini:4: chmod-socket: expected an octal mode such as 660, got "rw"'


def test_empty_module_is_an_error(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\nhttp-socket = :8000\nmodule =\n")
    assert str(e) == "app.ini:3: module: expected a value, got nothing"


# ---------------------------------------------------------------- ConfigError

def test_config_error_formats_and_pickles():
    e = ConfigError("processes: bad", "app.ini", 7)
    assert str(e) == "app.ini:7: processes: bad"
    assert str(ConfigError("no socket", "app.ini")) == "app.ini: no socket"
    assert str(ConfigError("plain")) == "plain"
    back = pickle.loads(pickle.dumps(e))
    assert (back.message, back.path, back.line, str(back)) == (e.message, e.path, e.line, str(e))


def test_error_messages_are_one_line(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "processes = four\nfive\n")
    assert "\n" not in str(e)


def test_config_pickles():
    c = cfg("django_nginx.ini")
    assert pickle.loads(pickle.dumps(c)) == c


def test_does_not_touch_os_environ(tmp_path):
    before = dict(os.environ)
    load_text(tmp_path, "env = A=b\n")
    assert dict(os.environ) == before


def test_cycle_between_sections_of_one_file(tmp_path):
    e = error_of(tmp_path, "[uwsgi]\n" + MINIMAL + "ini = :a\n[a]\nini = :b\n[b]\nini = :a\n")
    assert str(e) == "app.ini:8: include cycle: app.ini -> app.ini:a -> app.ini:b -> app.ini:a"
