"""Config logic: if-*, for*, endif/endfor, %(_). uWSGI 2.0 core/config.c (uwsgi_logic_opt_*,
add_exported_option) and ConfigLogic.rst; each test says which behaviour it reproduces."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from emperor.config import ConfigError, load_config, read_vassal

HEAD = "[uwsgi]\nhttp-socket = :8000\nmodule = app\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def printed(tmp_path: Path, body: str, environ: dict | None = None, name: str = "app.ini") -> list[str]:
    return load_config(write(tmp_path, name, HEAD + body), environ=environ or {}).print


def findings(tmp_path: Path, body: str, environ: dict | None = None) -> list[str]:
    r = read_vassal(write(tmp_path, "app.ini", HEAD + body), environ=environ or {})
    return [f.text() for f in r.findings if f.line and f.line > 3]


# ---------------------------------------------------------------- if-env, if-not-env

@pytest.mark.parametrize("environ,expected", [({"FOO": "v"}, ["in v"]), ({"FOO": ""}, ["in "]), ({}, [])])
def test_if_env_is_true_when_set_even_empty(tmp_path, environ, expected):
    """config.c uwsgi_logic_opt_if_env: getenv() not NULL; %(_) is the value."""
    assert printed(tmp_path, "if-env = FOO\nprint = in %(_)\nendif\n", environ) == expected


def test_if_env_with_a_value_compares_exactly(tmp_path):
    body = "if-env = FOO=v\nprint = eq\nendif\nif-env = FOO=V\nprint = case\nendif\n"
    assert printed(tmp_path, body, {"FOO": "v"}) == ["eq"]


def test_if_not_env(tmp_path):
    """uwsgi_logic_opt_if_not_env: true when unset, or (NAME=VALUE) set to something else;
    %(_) is then the value it has."""
    body = "if-not-env = NOPE\nprint = unset\nendif\nif-not-env = FOO=x\nprint = other %(_)\nendif\n"
    assert printed(tmp_path, body, {"FOO": "v"}) == ["unset", "other v"]


# ---------------------------------------------------------------- filesystem tests

def test_if_exists_file_dir(tmp_path):
    """uwsgi_logic_opt_if_exists (readable), if_file (S_ISREG), if_dir (S_ISDIR); %(_) the path.
    Relative paths start at the file's directory (uWSGI: the cwd, which for an emperor's vassal
    is the vassals directory)."""
    write(tmp_path, "f.txt", "x")
    (tmp_path / "d").mkdir()
    body = ("if-exists = f.txt\nprint = exists %(_)\nendif\nif-not-exists = nope\nprint = nope\nendif\n"
            "if-file = d\nprint = wrong\nendif\nif-not-file = d\nprint = not a file\nendif\n"
            "if-dir = d/\nprint = dir %(_)\nendif\nif-not-dir = f.txt\nprint = not a dir\nendif\n")
    assert printed(tmp_path, body) == ["exists f.txt", "nope", "not a file", "dir d/", "not a dir"]


def test_if_file_then_include_it(tmp_path):
    """The Kiwi TCMS / polemarch idiom: `if-file = local.ini` then `ini = %(_)`."""
    write(tmp_path, "local.ini", "[uwsgi]\nprocesses = 7\n")
    body = "if-file = local.ini\nini = %(_)\nendif\nif-file = missing.ini\nini = %(_)\nendif\n"
    assert load_config(write(tmp_path, "app.ini", HEAD + body), environ={}).processes == 7


# ---------------------------------------------------------------- if-opt, per-line tests

def test_if_opt_and_value(tmp_path):
    """uwsgi_logic_opt_if_opt: an entry of that name so far (option or placeholder); with
    NAME=VALUE its value compares exactly; %(_) is its value."""
    body = "foo = 1\nif-opt = foo\nprint = foo %(_)\nendif\nif-opt = foo=2\nprint = two\nendif\n"
    assert printed(tmp_path, body) == ["foo 1"]


def test_a_name_tested_by_if_opt_is_a_placeholder_in_use(tmp_path):
    """The polemarch idiom: `if-not-opt = daemon` / `daemon = true`: `daemon` is no typo."""
    c = load_config(write(tmp_path, "app.ini", HEAD + "if-not-opt = daemon\ndaemon = true\nendif\n"), environ={})
    assert c.warnings == []


def test_each_line_of_a_block_is_tested_when_it_is_read(tmp_path):
    """config.c add_exported_option calls the test for every line: after `foo = 1` the
    if-not-opt = foo block lets nothing more through (ConfigLogic.rst)."""
    assert printed(tmp_path, "if-not-opt = foo\nfoo = 1\nprint = bar\nendif\n") == []


# ---------------------------------------------------------------- for

def test_for_splits_on_spaces_and_repeats_each_line(tmp_path):
    """uwsgi_logic_opt_for: strtok on ' ' (runs collapse, a tab is not a separator); every item
    for the first line, then every item for the second."""
    body = "for = a  b\tc d\nprint = 1%(_)\nprint = 2%(_)\nendfor\n"
    assert printed(tmp_path, body) == ["1a", "1b\tc", "1d", "2a", "2b\tc", "2d"]


def test_for_glob(tmp_path):
    """uwsgi_logic_opt_for_glob: glob(GLOB_MARK|GLOB_NOCHECK): sorted, directories with '/',
    no match gives the pattern itself."""
    write(tmp_path, "sub/b.txt", "")
    write(tmp_path, "sub/a.txt", "")
    (tmp_path / "sub" / "c.txt").mkdir()
    body = "for-glob = sub/*.txt\nprint = %(_)\nendfor\nfor-glob = none*\nprint = %(_)\nendfor\n"
    assert printed(tmp_path, body) == ["sub/a.txt", "sub/b.txt", "sub/c.txt/", "none*"]


def test_for_glob_sets_the_virtualenv(tmp_path):
    """The NYPL library_registry file: a glob picks the virtualenv and its paths."""
    (tmp_path / "venv-abc").mkdir()
    body = f"for-glob = {tmp_path}/venv-*\n  virtualenv = %(_)\n  pythonpath = %(_)lib\nendfor =\n"
    c = load_config(write(tmp_path, "app.ini", HEAD + body), environ={})
    assert c.virtualenv == f"{tmp_path}/venv-abc/" and c.pythonpath == [f"{tmp_path}/venv-abc/lib"]


def test_for_readline(tmp_path):
    """uwsgi_logic_opt_for_readline: each line without its trailing \\r\\n; empty lines count."""
    (tmp_path / "lines.txt").write_bytes(b"a\n\nb\r\n")
    assert printed(tmp_path, "for-readline = lines.txt\nprint = [%(_)]\nendfor\n") == ["[a]", "[]", "[b]"]


def test_for_readline_reads_through_read_untrusted(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "app.ini", HEAD + "for-readline = pipe\nprint = %(_)\nendfor\n"), environ={})
    assert str(info.value) == 'app.ini:4: for-readline: cannot read "pipe": not a regular file'


def test_for_times(tmp_path):
    """uwsgi_logic_opt_for_times: 1..N."""
    assert printed(tmp_path, "for-times = 3\nprint = %(_)\nendfor\n") == ["1", "2", "3"]


# ---------------------------------------------------------------- closing, nesting

@pytest.mark.parametrize("closer", ["endif", "end-if", "endfor", "end-for", "end", "endif ="])
def test_every_closer_closes_whatever_is_open(tmp_path, closer):
    """config.c: end, endif, end-if, endfor, end-for close the open block, whatever it is."""
    body = f"if-env = NOPE\nprint = no\n{closer}\nprint = after\n"
    assert printed(tmp_path, body) == ["after"]


def test_a_closer_with_no_block_warns(tmp_path):
    """uWSGI does nothing; emperor warns, since a stray endif usually means a lost if."""
    c = load_config(write(tmp_path, "app.ini", HEAD + "endif\n"), environ={})
    assert c.warnings == ["app.ini:4: endif: no if/for block to close; ignored"]


def test_blocks_nest(tmp_path):
    """Deviation: uWSGI exits on an if inside a true block ("recursive logic in options is not
    supported"), and a false outer block's lines end at the inner endif. Emperor nests them."""
    body = ("if-env = A\nif-env = B\nprint = both\nendif\nprint = a only\nendif\n"
            "if-env = NOPE\nif-env = A\nprint = never\nendif\nprint = never either\nendif\nprint = after\n")
    assert printed(tmp_path, body, {"A": "1", "B": "2"}) == ["both", "a only", "after"]


def test_for_inside_if_binds_the_innermost(tmp_path):
    body = "if-env = A\nfor = x y\nprint = %(_)\nendfor\nendif\n"
    assert printed(tmp_path, body, {"A": "1"}) == ["x", "y"]


def test_no_block_inside_a_for(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "app.ini", HEAD + "for = a b\nif-env = A\nprint = x\nendif\nendfor\n"),
                    environ={"A": "1"})
    assert str(info.value) == "app.ini:5: if-env: an if/for block cannot be inside a for block"


def test_a_block_ends_with_its_file(tmp_path):
    """Deviation: in uWSGI an if left open in an included file filters the including file's
    following lines; emperor closes it at the end of its file, with a warning."""
    write(tmp_path, "inc.ini", "[uwsgi]\nif-env = NOPE\nprint = no\n")
    c = load_config(write(tmp_path, "app.ini", HEAD + "ini = inc.ini\nprint = yes\n"), environ={})
    assert c.print == ["yes"]
    assert c.warnings == ["inc.ini:2: if-env block is not closed (endif/endfor); it ends with its file"]


# ---------------------------------------------------------------- other tests, %(_), findings

def test_if_hostname_and_if_plugin(tmp_path):
    """uwsgi_logic_opt_if_hostname (exact), if_plugin (python, http and the router plugins emperor has are built in)."""
    body = (f"if-hostname = {socket.gethostname()}\nprint = host\nendif\n"
            "if-plugin = python3\nprint = py\nendif\nif-not-plugin = gevent\nprint = no gevent\nendif\n")
    assert printed(tmp_path, body) == ["host", "py", "no gevent"]


def test_if_reload(tmp_path):
    """uwsgi_logic_opt_if_reload: UWSGI_RELOADS was set at start (init.c uwsgi_setup_reload)."""
    body = "if-reload\nprint = reload\nendif\nif-not-reload\nprint = first\nendif\n"
    assert printed(tmp_path, body) == ["first"]
    assert printed(tmp_path, body, {"UWSGI_RELOADS": "1"}) == ["reload"]


def test_underscore_outside_a_block_is_an_error_where_used(tmp_path):
    """uWSGI leaves %(_) as written (an unknown placeholder); emperor says where it is."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "app.ini", HEAD + "chdir = /srv/%(_)\n"), environ={})
    assert "%(_) outside an if/for block" in str(info.value)


def test_logic_inside_an_included_file(tmp_path):
    write(tmp_path, "inc.ini", "[uwsgi]\nif-env = PORTS\nfor = 1 2\nenv = P%(_)=1\nendfor\nendif\n")
    c = load_config(write(tmp_path, "app.ini", HEAD + "ini = inc.ini\n"), environ={"PORTS": "1"})
    assert c.env == ["P1=1", "P2=1"]


def test_findings_say_what_each_logic_line_did(tmp_path):
    assert findings(tmp_path, "if-env = NOPE\nprocesses = 2\nendif\nfor = a b\nenv = X=%(_)\nendfor\n") == [
        "app.ini:4: if-env: logic (false)",
        "app.ini:5: processes: skipped (if-env = NOPE is false)",
        "app.ini:6: endif: logic (closes if-env = NOPE of line 4)",
        "app.ini:7: for: logic (2 items: a b)",
        "app.ini:8: env: honoured (X=a)",
        "app.ini:8: env: honoured (X=b)",
        "app.ini:9: endfor: logic (closes for = a b of line 7)",
    ]
