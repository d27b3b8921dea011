"""The bounds on what reading one vassal file may cost. The emperor reads every file in its
own process (in tyrant mode, a tenant's), and uWSGI's config logic and placeholders
(core/config.c uwsgi_logic_opt_for_times, utils.c uwsgi_apply_config_pass) have no bound:
a loop of 10^9 items, placeholders that double at each step or a regular expression that
backtracks for ever would stop the emperor's loop or fill its memory, and every vassal with
it. Each bound is far above what a real file uses (docs/configuration.md, "Bounds")."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from emperor.config import ConfigError, load_config

HEAD = "[uwsgi]\nhttp-socket = :8000\nmodule = app\n"


def load(tmp_path: Path, body: str, name: str = "app.ini"):
    path = tmp_path / name
    path.write_text(HEAD + body)
    return load_config(str(path), environ={})


def refused(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    return str(info.value)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("count", ["1001", "100000000000", "99999999999999999999999999"])
def test_a_for_times_past_1000_items_is_an_error_at_its_line(tmp_path, count):
    started = time.monotonic()
    message = refused(tmp_path, f"for-times = {count}\nprint = %(_)\nendfor\n")
    assert message == f"app.ini:4: for-times = {count}: more than 1000 items (a bound of emperor's)"
    assert time.monotonic() - started < 10   # the items are counted, not made


def test_a_for_times_of_1000_items_is_read(tmp_path):
    assert len(load(tmp_path, "for-times = 1000\nprint = %(_)\nendfor\n").print) == 1000


def test_a_for_readline_over_a_long_file_is_an_error(tmp_path):
    (tmp_path / "lines.txt").write_text("x\n" * 1001)
    message = refused(tmp_path, "for-readline = lines.txt\nprint = %(_)\nendfor\n")
    assert message == "app.ini:4: for-readline = lines.txt: more than 1000 items (a bound of emperor's)"


def test_a_for_glob_may_not_list_three_levels_of_directories(tmp_path):
    """`for-glob = /*/*/*/*/x` would walk the whole tree in the emperor's loop."""
    message = refused(tmp_path, "for-glob = /*/*/*/x\nprint = %(_)\nendfor\n")
    assert "for-glob = /*/*/*/x: more than 2 path components with a wildcard" in message
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("")
    assert load(tmp_path, "for-glob = */*.txt\nprint = %(_)\nendfor\n").print == ["d/a.txt"]


@pytest.mark.timeout(20)
def test_placeholders_that_double_at_each_step_are_an_error(tmp_path):
    """p1 = %(p0)%(p0), ... p40: 2^40 bytes, were it expanded."""
    lines = ["set-placeholder = p0=xxxxxxxx"] + [f"set-placeholder = p{i}=%(p{i - 1})%(p{i - 1})" for i in range(1, 41)]
    message = refused(tmp_path, "\n".join(lines) + "\nprint = %(p40)\n")
    assert "longer than 65536 bytes once expanded (a bound of emperor's)" in message


def test_a_value_of_many_file_contents_is_an_error(tmp_path):
    """`@(file)` a hundred times over a 1 KiB file: 100 KiB in one value."""
    (tmp_path / "kb").write_text("k" * 1024)
    message = refused(tmp_path, "print = " + "@(kb)" * 100 + "\n")
    assert message.startswith("app.ini:4: print: longer than 65536 bytes once expanded")


def test_more_than_20000_lines_is_an_error(tmp_path):
    message = refused(tmp_path, "; padding\n" * 20000)
    assert message == "app.ini: more than 20000 lines in the files of one vassal"


def test_more_than_10000_options_is_an_error_at_the_line_past_it(tmp_path):
    body = "for-times = 1000\n" + "".join(f"print = {i}-%(_)\n" for i in range(11)) + "endfor\n"
    message = refused(tmp_path, body)
    assert message == "app.ini:14: more than 10000 options in one vassal (for loops included)"


def test_the_files_of_one_vassal_together_are_bounded(tmp_path):
    """Each file may have 1 MiB; all of them together, 4 MiB."""
    for i in range(5):
        (tmp_path / f"part{i}.ini").write_text("[uwsgi]\n" + ";" * (1000 << 10) + "\n")
    message = refused(tmp_path, "".join(f"include = part{i}.ini\n" for i in range(5)))
    assert 'app.ini:8: include: cannot read "part4.ini": more than 4194304 bytes in the files of one vassal' in message


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", ["(a+)+$", "(x|xx)+y", "((.*)*)*z", "(?:a*)*!"])
def test_an_if_hostname_match_that_could_backtrack_for_ever_is_false(tmp_path, pattern):
    """PCRE, which uWSGI uses, gives up at its match limit; Python's re has none. A repeat
    inside a repeat (or alternatives under one) is never run: the test is false."""
    started = time.monotonic()
    assert load(tmp_path, f"if-hostname-match = {pattern}\nprint = yes\nendif\n").print == []
    assert time.monotonic() - started < 10


def test_an_if_hostname_match_of_an_ordinary_pattern_still_matches(tmp_path):
    head = socket.gethostname()[:3]
    body = f"if-hostname-match = ^{head}[^.]*$\nprint = yes\nendif\nif-hostname-match = ^(web|app)-[0-9]+$\nprint = no\nendif\n"
    assert load(tmp_path, body).print == (["yes"] if "." not in socket.gethostname() else [])


@pytest.mark.parametrize("expr,value", [
    ("99999999999999999999999 + 1", "-9223372036854775808"),   # strtoll saturates, then int64 wraps
    ("9223372036854775807 * 2", "-2"),
    ("0 - 99999999999999999999 - 1", "-9223372036854775808"),
])
def test_placeholder_arithmetic_is_int64_as_in_uwsgi(tmp_path, expr, value):
    """config.c uwsgi_manage_placeholder: strtoll operands (saturated at the int64 range) and
    int64_t results: the digits of a number stay bounded."""
    assert load(tmp_path, f"print = %({expr})\n").print == [value]
