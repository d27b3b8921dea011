"""Every key is honoured, a no-op, unsupported (known to uWSGI), or unknown (a typo) — from
uWSGI's own option table (emperor/config/uwsgi_options.json) — and docs/options.md is what
that data says."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import ROOT
from emperor.config import ConfigError, catalog, load_config, logic, optdoc, read_vassal
from emperor.config.expand import UWSGI_VERSION
from emperor.config.options import (ALIAS_NOTES, EMPEROR_ONLY, INCLUDE_KEYS, NOOP_ALIASES, NOOPS, OPTIONS,
                                    PLACEHOLDER_KEYS, PLUGIN_KEYS, SET_KEYS)

HEAD = "[uwsgi]\nhttp-socket = :8000\nmodule = app\n"
DATA = catalog.rows(catalog.load())
BY_NAME = {o["name"]: o for o in DATA}


def read(tmp_path: Path, body: str, **kw):
    (tmp_path / "app.ini").write_text(HEAD + body)
    kw.setdefault("environ", {})
    return read_vassal(str(tmp_path / "app.ini"), **kw)


# ---------------------------------------------------------------- the data and the tables agree

def test_the_data_file_says_where_it_comes_from():
    src = catalog.load()["uwsgi"]
    assert src["version"] == UWSGI_VERSION == "2.0.31"
    assert len(src["commit"]) == 40 and src["repository"] == "https://github.com/unbit/uwsgi"
    assert sum(1 for o in DATA if o["in_build"]) == 943   # `uwsgi --help` of the 2.0.31 PyPI build


def test_every_alias_of_an_honoured_option_in_uwsgis_table_is_honoured():
    """uWSGI's aliases are options with the same parser and target (config.c: one setting)."""
    for name, opt in OPTIONS.items():
        if name in EMPEROR_ONLY:
            continue
        group = BY_NAME[name]["alias_of"]
        uwsgi_aliases = {o["name"] for o in DATA if group and o["alias_of"] == group and o["exact"]} - {name}
        assert uwsgi_aliases <= set(opt.aliases), name
        for alias in set(opt.aliases) - uwsgi_aliases:
            assert alias in ALIAS_NOTES, f"{alias}: not uWSGI's alias of {name}, and no note says why"


def test_every_name_emperor_knows_is_a_uwsgi_option_but_its_own():
    names = [n for name, opt in OPTIONS.items() for n in (name, *opt.aliases)]
    names += [*NOOPS, *NOOP_ALIASES, *PLUGIN_KEYS, *INCLUDE_KEYS, *PLACEHOLDER_KEYS, *SET_KEYS,
              *logic.OPENERS, *[c for c in logic.CLOSERS if c != "end"]]
    for n in names:
        assert (n in BY_NAME) != (n in EMPEROR_ONLY), n


def test_docs_options_md_is_generated_from_the_data():
    """docs/options.md is `python -m emperor.config.optdoc`; regenerate it when this fails."""
    assert (ROOT / "docs" / "options.md").read_text() == optdoc.render()


def test_generator_reads_a_uwsgi_checkout(tmp_path):
    """scripts/gen_uwsgi_options.py on a miniature checkout: the base table, #if, a plugin."""
    files = {
        "buildconf/base.ini": "[uwsgi]\nembedded_plugins = %(main_plugin)s, ping\n",
        "buildconf/default.ini": "[uwsgi]\nmain_plugin = python\ninherit = base\n",
        "core/uwsgi.c": """
            static struct uwsgi_option uwsgi_base_options[] = {
            \t{"processes", required_argument, 'p', "spawn workers", uwsgi_opt_set_int, &uwsgi.numproc, 0},
            \t{"workers", required_argument, 'p', "spawn workers", uwsgi_opt_set_int, &uwsgi.numproc, 0},
            #ifdef UWSGI_ROUTING
            \t{"route", required_argument, 0, "add a route", uwsgi_opt_add_route, "path_info", 0},
            #endif
            \t{"strict", no_argument, 0, "strict", uwsgi_opt_true, &uwsgi.strict, UWSGI_OPT_IMMEDIATE},
            \t{0, 0, 0, 0, 0, 0, 0},
            };
        """,
        "plugins/python/python_plugin.c": """
            struct uwsgi_option uwsgi_python_options[] = {
            \t{"module", required_argument, 'w', "load a WSGI module", uwsgi_opt_set_str, &up.wsgi_config, 0},
            \t{0, 0, 0, 0, 0, 0, 0},
            };
            struct uwsgi_plugin python_plugin = { .name = "python", .modifier1 = 0,
            \t.options = uwsgi_python_options, .request = uwsgi_request_wsgi, };
        """,
        "plugins/ping/ping_plugin.c": "struct uwsgi_plugin ping_plugin = { .name = \"ping\" };\n",
        "plugins/cgi/cgi_plugin.c": """
            struct uwsgi_option uwsgi_cgi_options[] = {
            \t{"cgi", required_argument, 0, "add a cgi mountpoint", uwsgi_opt_add_cgi, NULL, 0},
            \t{0, 0, 0, 0, 0, 0, 0},
            };
            struct uwsgi_plugin cgi_plugin = { .name = "cgi", .options = uwsgi_cgi_options, };
        """,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_uwsgi_options.py"), str(tmp_path),
                        "--commit", "0" * 40, "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = catalog.rows(catalog.load(str(out)))
    got = [(o["name"], o["plugin"], o["alias_of"], o["in_build"], o["cond"], o["flags"]) for o in rows]
    assert got == [("processes", None, "processes", True, None, ""),
                   ("workers", None, "processes", True, None, ""),
                   ("route", None, None, False, "defined(UWSGI_ROUTING)", ""),
                   ("strict", None, None, True, None, "IMMEDIATE"),
                   ("module", "python", None, True, None, ""),
                   ("cgi", "cgi", None, False, None, "")]


# ---------------------------------------------------------------- verdicts

def test_verdicts_of_each_kind(tmp_path):
    r = read(tmp_path, "master = true\nsubscribe-to = 127.0.0.1:7000:s\nvaccum = true\ncgi = /cgi-bin=/srv\n"
                       "cap = setgid\nbase = /srv\nchdir = %(base)\n")
    assert [f.text() for f in r.findings[2:]] == [
        "app.ini:4: master: no-op because emperor always runs a master",
        "app.ini:5: subscribe-to: unsupported: known to uWSGI, not supported by emperor; ignored",
        'app.ini:6: vaccum: unknown: not a uWSGI option (did you mean "vacuum"?); ignored',
        "app.ini:7: cgi: unsupported: known to uWSGI (in its cgi plugin), not supported by emperor; ignored",
        "app.ini:8: cap: unsupported: known to uWSGI (in a uWSGI built with UWSGI_CAP), not supported "
        "by emperor; ignored",
        "app.ini:9: base: placeholder (= /srv)",
        "app.ini:10: chdir: honoured (/srv)",
    ]
    assert r.config.warnings == [
        'app.ini:5: option "subscribe-to" is not supported by emperor; ignored',
        'app.ini:6: unknown option "vaccum" (did you mean "vacuum"?)',
        'app.ini:7: option "cgi" is not supported by emperor; ignored',
        'app.ini:8: option "cap" is not supported by emperor; ignored',
    ]


@pytest.mark.parametrize("line", ["master = false", "py-call-osafterfork = false"])
def test_a_noop_only_when_true_warns_when_false(tmp_path, line):
    """`master = false` asks for uWSGI's masterless mode, which emperor does not have."""
    r = read(tmp_path, line + "\n")
    assert r.config.warnings == [f'app.ini:4: option "{line}" is not supported by emperor; ignored']


def test_noops_are_silent(tmp_path):
    r = read(tmp_path, "".join(f"{n}\n" for n in NOOPS) + "plugins = python3,http\nplugin = /usr/lib/uwsgi/python_plugin.so\n")
    assert r.config.warnings == []


def test_underscore_keys_are_honoured_with_a_note(tmp_path):
    """Deviation kept: emperor reads `die_on_term` as die-on-term; uWSGI reads it as a placeholder."""
    r = read(tmp_path, "die_on_term = true\n")
    assert r.config.die_on_term is True
    assert 'uWSGI 2.0 reads "die_on_term" as a placeholder' in r.findings[-1].detail


def test_strict_refuses_only_what_uwsgi_does_not_know(tmp_path):
    """uwsgi.c `strict`: a key that is not an option is fatal; options uWSGI knows start, with
    warnings for those emperor does not support."""
    r = read(tmp_path, "strict = true\nsubscribe-to = 127.0.0.1:7000:s\nlegion = lg 127.0.0.1:4001 100 bf-cbc:abc\nemperor-tyrant = true\n")
    assert r.config is not None and r.config.strict is True and len(r.config.warnings) == 3


@pytest.mark.parametrize("how", ["file", "argument"])
def test_strict_compat_refuses_unsupported_options(tmp_path, how):
    """`strict-compat = true` in the file, or `emperor run --strict-compat` for every vassal: an
    option uWSGI knows but emperor does not support is an error (a typo stays a warning)."""
    body = "subscribe-to = 127.0.0.1:7000:s\nvaccum = 1\n" + ("strict-compat = true\n" if how == "file" else "")
    (tmp_path / "app.ini").write_text(HEAD + body)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "app.ini"), environ={}, strict_compat=how == "argument")
    assert info.value.problems == ('app.ini:4: option "subscribe-to" is not supported by emperor (strict-compat)',)


def test_emperor_only_options_are_honoured_and_not_uwsgis(tmp_path):
    r = read(tmp_path, "strict = true\nsnapshot = true\ngraceful-removal = true\n")
    assert r.config.snapshot is True and r.config.graceful_removal is True and r.config.warnings == []
