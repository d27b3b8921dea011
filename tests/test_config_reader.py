"""The reader: lines, sections, magic variables, $(ENV), @(file), %(name), UWSGI_* variables,
includes, and every problem of a file at once. Each test names the uWSGI 2.0 behaviour it
reproduces (source file and function, or documentation section), or the documented
deviation it checks (docs/configuration.md, "Where emperor differs")."""
from __future__ import annotations

import os
import pickle
import pwd
import socket
import time
from pathlib import Path

import pytest

from emperor.config import ConfigError, load_config, read_vassal
from emperor.config.expand import djb33x
from emperor.files import TrustRule

HEAD = "[uwsgi]\nhttp-socket = :8000\nmodule = app\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def load(tmp_path: Path, body: str, name: str = "app.ini", **kw):
    kw.setdefault("environ", {})
    return load_config(write(tmp_path, name, HEAD + body), **kw)


def problems(tmp_path: Path, text: str, name: str = "app.ini", **kw) -> ConfigError:
    kw.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, name, text), **kw)
    return info.value


def printed(tmp_path: Path, body: str, **kw) -> list[str]:
    """What `print` lines say once every expansion is done (uwsgi.c uwsgi_opt_print)."""
    return load(tmp_path, body, **kw).print


# ---------------------------------------------------------------- lines

def test_inline_comment_text_stays_in_a_string_value(tmp_path):
    """ini.c uwsgi_ini_config: only a line whose first character is ';' or '#' is a comment."""
    assert printed(tmp_path, "print = x ; y\nprint = a # b\n  ; indented\n\t# tab\n") == ["x ; y", "a # b"]


def test_value_split_at_the_first_equals_sign(tmp_path):
    """ini.c ini_get_key: key and value split at the first '='."""
    assert printed(tmp_path, "print = a=b=c\n") == ["a=b=c"]


def test_a_section_may_come_back_and_all_its_blocks_count(tmp_path):
    """ini.c: every line under a header equal to the section is read, in file order."""
    c = load_config(write(tmp_path, "app.ini", "[uwsgi]\nhttp-socket = :8000\n[other]\nprocesses = 7\n"
                                               "[uwsgi]\nmodule = app\nprocesses = 3\n"), environ={})
    assert (c.module, c.processes) == ("app", 3)


def test_bare_option_is_the_empty_string(tmp_path):
    """ini.c ini_get_key: `vacuum` alone is vacuum = "" (true for a flag: uwsgi_opt_true)."""
    c = load(tmp_path, "vacuum\ndie-on-term\nharakiri-verbose\nemperor-nofollow\n")
    assert c.vacuum is True and c.die_on_term is True and c.harakiri_verbose is True
    assert c.warnings == ['app.ini:7: option "emperor-nofollow" is not supported by emperor; ignored']


def test_a_line_that_is_not_an_option_without_equals_is_a_syntax_error(tmp_path):
    """uWSGI would read `processes 4` as a placeholder named "processes 4", silently; emperor's
    choice (the issue's): a line with no '=' that is not a known option is a syntax error."""
    e = problems(tmp_path, HEAD + "processes 4\n")
    assert str(e) == 'app.ini:4: syntax error: "processes 4" is not "option = value" (did you mean "processes = 4"?)'


def test_every_problem_of_a_file_is_reported_one_line_each(tmp_path):
    e = problems(tmp_path, HEAD + "processes = four\nbogus line\nthreads = -1\nchdir = %(nope)\n")
    assert e.problems == (
        'app.ini:4: processes: expected an integer, got "four"',
        'app.ini:5: syntax error: "bogus line" is not "option = value"',
        'app.ini:6: threads: must be at least 0, got -1',
        'app.ini:7: chdir: unknown placeholder %(nope)',
    )
    assert str(e) == 'app.ini:4: processes: expected an integer, got "four" (and 3 more problems)'
    assert (e.path, e.line, e.message) == ("app.ini", 4, 'processes: expected an integer, got "four"')
    back = pickle.loads(pickle.dumps(e))
    assert back.problems == e.problems and str(back) == str(e)


def test_crlf_lines(tmp_path):
    """ini.c: lines are trimmed of ' ', '\\t' and '\\r' at both ends, so CRLF files work."""
    c = load_config(write(tmp_path, "app.ini", b"[uwsgi]\r\nhttp-socket = :8000\r\nmodule = app\r\n"), environ={})
    assert c.module == "app"


def test_a_nul_ends_its_line(tmp_path):
    """ini.c trims with strlen: a NUL byte ends the line."""
    assert printed(tmp_path, "print = before\0after\n") == ["before"]


def test_a_file_that_is_not_utf8_still_loads(tmp_path):
    """uWSGI reads bytes (io.c uwsgi_open_and_read); a GBK comment, or a GBK path the OS gets back."""
    gbk = "# 配置域应该是uwsgi\n".encode("gbk") + b"chdir = /srv/\xc5\xe4\xd6\xc3\n"
    c = load_config(write(tmp_path, "app.ini", HEAD.encode() + gbk), environ={})
    assert os.fsencode(c.chdir) == b"/srv/\xc5\xe4\xd6\xc3"


def test_a_section_header_is_trimmed_inside(tmp_path):
    """Deviation: uWSGI drops the last character and compares the rest exactly, so `[ uwsgi ]`
    is section " uwsgi "; emperor trims it (docs/configuration.md)."""
    c = load_config(write(tmp_path, "app.ini", "[ uwsgi ]\nhttp-socket = :8000\nmodule = app\n"), environ={})
    assert c.module == "app"


# ---------------------------------------------------------------- magic variables

def test_file_magic_variables(tmp_path):
    """uwsgi.c config_magic_table_fill: %p %s %d (with its '/') %e %n %c %x %0.. of the file."""
    out = printed(tmp_path, "print = %p|%s|%d|%e|%n|%c|%x|%1\n", name="site/hello.ini")
    d = tmp_path / "site"
    assert out == [f"{d}/hello.ini|hello.ini|{d}/|ini|hello|site||{str(d).split('/')[2]}"]


def test_section_magic_variable(tmp_path):
    path = write(tmp_path, "app.ini", "[uwsgi]\n[prod]\n" + HEAD[8:] + "print = %x|%o\n")
    assert load_config(path + ":prod", environ={}).print == ["prod|app.ini:prod"]


def test_inode_and_hash_magic_variables(tmp_path):
    """%i is the file's inode (lstat); %j the djb33x hash of %p, its four bytes in memory
    order (core/hash.c; uWSGI 2.0.31 prints 403570A2 for /etc/uwsgi/vassals/app.ini)."""
    path = write(tmp_path, "app.ini", HEAD + "print = %i|%j\n")
    h = djb33x(os.path.realpath(path)).to_bytes(4, "little").hex().upper()
    assert load_config(path, environ={}).print == [f"{os.lstat(path).st_ino}|{h}"]
    assert djb33x("/etc/uwsgi/vassals/app.ini").to_bytes(4, "little").hex().upper() == "403570A2"


def test_static_magic_variables(tmp_path):
    """uwsgi.c uwsgi_setup: %v %h %V %k %u %U %g %G %[ %t %T, the same in every file."""
    before = int(time.time())
    out = printed(tmp_path, "print = %v|%h|%V|%k|%u|%U|%g|%[|%t\n", vassals_dir="/vd")[0].split("|")
    uid = os.getuid()
    assert out[:8] == ["/vd", socket.gethostname(), "2.0.31", str(os.cpu_count()), str(uid),
                       pwd.getpwuid(uid).pw_name, str(os.getgid()), "\x1b"]
    assert before <= int(out[8]) <= time.time()


def test_processes_from_the_cpu_count(tmp_path):
    """`processes = %k` (Configuration.rst, magic variables): the detected CPU cores."""
    assert load(tmp_path, "processes = %k\n").processes == os.cpu_count()


def test_unknown_magic_variable_disappears(tmp_path):
    """utils.c init_magic_table sets all 256 entries to "": `%q` and `% ` vanish, both characters."""
    assert printed(tmp_path, "print = [%q]|50% off|100%%\n") == ["[]|50off|100%"]


def test_percent_percent_is_never_expanded_again(tmp_path):
    """`%%` is a literal '%'. Deviation: uWSGI then expands a `%(x)` made of `%%(x)`; emperor
    keeps it literal (docs/configuration.md)."""
    assert printed(tmp_path, "x = 1\nprint = %%n %%(x)\n") == ["%n %(x)"]


def test_percent_at_end_of_line_joins_the_next_line(tmp_path):
    """utils.c magic_sub runs on the whole text: '%' + newline is an unknown pair, removed."""
    assert printed(tmp_path, "print = a%\nb\nprint = after\n") == ["ab", "after"]


def test_percent_at_end_of_a_comment_does_not_swallow_the_next_line(tmp_path):
    """Deviation: in uWSGI `; 100%` joins the next line to the comment, losing it."""
    assert printed(tmp_path, "; we want 100%\nprint = kept\n") == ["kept"]


def test_uppercase_magic_is_the_vassal_file_in_every_include(tmp_path):
    """uwsgi.c config_magic_table_fill: %N %P ... are those of the first file (--ini, as uWSGI's
    emperor starts vassals), even inside an included file."""
    write(tmp_path, "inc/base.ini", "[uwsgi]\nprint = %n %N %c\n")
    assert printed(tmp_path, "ini = inc/base.ini\nprint = %n\n", name="top.ini") == ["base top inc", "top"]


# ---------------------------------------------------------------- $(ENV), @(file)

def test_env_variables(tmp_path):
    """uwsgi.c: the `$` pass, getenv(NAME); an empty variable is ""."""
    assert printed(tmp_path, "print = $(A)|$(B)|\n", environ={"A": "a", "B": ""}) == ["a||"]


def test_unset_env_variable_is_empty_with_a_warning(tmp_path):
    """Deviation, emperor's choice kept: uWSGI leaves `$(NOPE)` as written."""
    c = load(tmp_path, "print = [$(NOPE)]\n")
    assert c.print == ["[]"] and c.warnings == ['app.ini:4: environment variable "NOPE" is not set; using ""']


def test_env_option_does_not_feed_dollar(tmp_path):
    """`env` is applied after the `$` pass (uwsgi.c uwsgi_opt_set_env is not immediate)."""
    c = load(tmp_path, "env = FOO=1\nprint = [$(FOO)]\n")
    assert c.print == ["[]"] and len(c.warnings) == 1


def test_unset_env_in_an_ignored_option_says_nothing(tmp_path):
    """Only values that are used are expanded: an unsupported option's $(VAR) is not looked at."""
    c = load(tmp_path, "subscribe-to = 127.0.0.1:7000:$(MOUNT)media\n")
    assert c.warnings == ['app.ini:4: option "subscribe-to" is not supported by emperor; ignored']


def test_at_file_reads_a_file_without_one_trailing_newline(tmp_path):
    """uwsgi.c uwsgi_at_file_read: the content, exactly one trailing \\n or \\r removed, no magic."""
    write(tmp_path, "somaxconn", "4096\n")
    write(tmp_path, "two", "a\n\n")
    c = load(tmp_path, "listen = @(somaxconn)\nprint = [@(two)]|@(%dsomaxconn)\n")
    assert c.listen == 4096 and c.print == ["[a\n]|4096"]


def test_at_file_from_proc(tmp_path):
    """`listen = @(/proc/sys/net/core/somaxconn)`: a /proc file (size 0) is read to its end."""
    with open("/proc/sys/net/core/somaxconn") as f:
        want = int(f.read())
    assert load(tmp_path, "listen = @(/proc/sys/net/core/somaxconn)\n").listen == want


def test_at_file_missing_is_an_error(tmp_path):
    """io.c uwsgi_open_and_read: an @() file that cannot be opened is fatal in uWSGI too."""
    e = problems(tmp_path, HEAD + "listen = @(nope)\n")
    assert str(e) == "app.ini:4: listen: @(nope): cannot read: No such file or directory"


@pytest.mark.parametrize("target,why", [("/dev/zero", "not a regular file"), ("fifo", "not a regular file")])
def test_at_file_reads_only_regular_files(tmp_path, target, why):
    """Every file a vassal reads goes through emperor.files.read_untrusted (regular, <= 1 MiB, O_NONBLOCK)."""
    os.mkfifo(tmp_path / "fifo")
    e = problems(tmp_path, HEAD + f"listen = @({target})\n")
    assert e.message.endswith(why)


def test_at_file_follows_the_trust_rule(tmp_path):
    write(tmp_path, "open", "9")
    os.chmod(tmp_path / "open", 0o666)
    e = problems(tmp_path, HEAD + "listen = @(open)\n", trust=TrustRule(None))
    assert "refused" in str(e) and "writable by" in str(e)


def test_at_file_schemes_are_refused(tmp_path):
    """uWSGI also reads exec://, http://... (io.c); emperor never runs a command to read a file."""
    e = problems(tmp_path, HEAD + "listen = @(exec://echo 9)\n")
    assert "emperor reads only files" in str(e)


# ---------------------------------------------------------------- %(name)

def test_placeholders_forward_reference_and_options_as_placeholders(tmp_path):
    """config.c uwsgi_manage_placeholder: any entry, an option too, of the whole file."""
    assert printed(tmp_path, "print = %(later)|%(module)\nlater = ok\n") == ["ok|app"]


def test_placeholder_is_the_last_value(tmp_path):
    """Deviation, emperor's choice kept: uWSGI's %(x) is the first value of x."""
    assert printed(tmp_path, "x = 1\nx = 2\nprint = %(x)\n") == ["2"]


def test_placeholder_arithmetic(tmp_path):
    """Configuration.rst "Placeholders math": tokens separated by spaces, left to right, no
    precedence; `/ 0` is 0; names without operator concatenate."""
    out = printed(tmp_path, "n = 5\nprint = %(n + 1)|%(1 + 2 * 3)|%(n / 0)|%(7 / 2)|%(n ++)|%(2 3 + 1)|%(n n)\n")
    assert out == ["6|9|0|3|6|24|55"]


def test_arithmetic_with_magic_and_options(tmp_path):
    """`%(%k * 2)` works because %k is replaced as the line is read; `%(processes + 1)` is an option."""
    c = load(tmp_path, "processes = 3\nthreads = %(processes + 1)\nlisten = %(%k * 2)\n")
    assert (c.threads, c.listen) == (4, 2 * os.cpu_count())


def test_arithmetic_parentheses_with_a_note(tmp_path):
    """Deviation: uWSGI has no parentheses (`%((2 * 2) + 1)` reads names "(2" and "2)": 1);
    emperor groups them, and `emperor check` says what uWSGI computes."""
    r = read_vassal(write(tmp_path, "app.ini", HEAD + "processes = %((2 * 2) + 1)\n"), environ={})
    assert r.config.processes == 5
    assert "uWSGI 2.0 computes %((2 * 2) + 1) as 1" in r.findings[-1].detail


def test_unknown_name_in_arithmetic_is_an_error(tmp_path):
    """Deviation (uWSGI reads an unknown name as ""): a typo is caught where it is used."""
    e = problems(tmp_path, HEAD + "processes = %(procs * 2)\n")
    assert str(e) == 'app.ini:4: processes: unknown placeholder "procs" in %(procs * 2)'


def test_set_sets_an_option_or_a_placeholder(tmp_path):
    """uwsgi.c uwsgi_opt_set_placeholder with data NULL: `set = pidfile=x` sets the option."""
    c = load(tmp_path, "set = pidfile=/run/x.pid\nset = name=web\nprint = %(name)\n")
    assert c.pidfile == "/run/x.pid" and c.print == ["web"] and c.warnings == []


def test_set_placeholder_cannot_name_an_option(tmp_path):
    """config.c add_exported_option: "you cannot use ... as a placeholder", fatal."""
    e = problems(tmp_path, HEAD + "set-placeholder = processes=4\n")
    assert e.message == 'set-placeholder: "processes" is an option, not a placeholder name'


# ---------------------------------------------------------------- UWSGI_* variables

def test_uwsgi_environment_variables_are_options(tmp_path):
    """utils.c parse_sys_envs: UWSGI_<NAME> lowercased, '_' -> '-', before the file."""
    c = load(tmp_path, "", environ={"UWSGI_PROCESSES": "3", "UWSGI_HARAKIRI": "20", "UWSGI_ENV": "A=1"})
    assert (c.processes, c.harakiri, c.env) == (3, 20, ["A=1"])
    assert c.origins["processes"] == ("$UWSGI_PROCESSES", 0)


def test_the_file_wins_over_the_environment(tmp_path):
    """Environment entries come first: a scalar of the file, later, wins; a list gets both."""
    c = load(tmp_path, "processes = 5\nenv = B=2\n", environ={"UWSGI_PROCESSES": "3", "UWSGI_ENV": "A=1"})
    assert c.processes == 5 and c.env == ["A=1", "B=2"]


def test_if_not_env_defaults_with_uwsgi_variables(tmp_path):
    """The healthchecks/mitodl idiom: defaults under `if-not-env = UWSGI_PROCESSES`."""
    body = "if-not-env = UWSGI_PROCESSES\nprocesses = 4\nendif\n"
    assert load(tmp_path, body).processes == 4
    assert load(tmp_path, body, environ={"UWSGI_PROCESSES": "2"}).processes == 2


def test_uwsgi_state_variables_are_not_options(tmp_path):
    """parse_sys_envs skips UWSGI_RELOADS, UWSGI_VASSALS_DIR, UWSGI_EMPEROR_FD..."""
    r = read_vassal(write(tmp_path, "app.ini", HEAD), environ={"UWSGI_RELOADS": "2", "UWSGI_EMPEROR_FD": "3"})
    assert r.config is not None and not any(f.file.startswith("$") for f in r.findings)


def test_unknown_uwsgi_variable_is_a_silent_placeholder_but_strict_refuses_it(tmp_path):
    """An unknown UWSGI_FOO becomes a placeholder (add_exported_option); under strict it is
    fatal in uWSGI too: `unknown config directive: foo`."""
    assert load(tmp_path, "print = %(foo)\n", environ={"UWSGI_FOO": "x"}).print == ["x"]
    e = problems(tmp_path, HEAD + "strict = true\n", environ={"UWSGI_FOO": "x"})
    assert str(e) == '$UWSGI_FOO: unknown option "foo" refused by strict mode'


def test_uwsgi_vassal_variables_win(tmp_path):
    """uWSGI's emperor passes UWSGI_VASSAL_<NAME> to its vassals as UWSGI_<NAME> (emperor.c)."""
    c = load(tmp_path, "", environ={"UWSGI_PROCESSES": "3", "UWSGI_VASSAL_PROCESSES": "6"})
    assert c.processes == 6


# ---------------------------------------------------------------- includes

def test_inherit_is_read_after_the_whole_file_and_wins(tmp_path):
    """uwsgi.c uwsgi_configure: inherit's options are appended at the end of the list, so its
    scalars override the including file's, wherever `inherit` is written (ParsingOrder.rst)."""
    write(tmp_path, "tpl.ini", "[uwsgi]\npidfile = /run/tpl.pid\nenv = T=1\n")
    c = load(tmp_path, "inherit = tpl.ini\npidfile = /run/parent.pid\nenv = P=1\n")
    assert c.pidfile == "/run/tpl.pid" and c.env == ["P=1", "T=1"]


def test_ini_reads_where_it_stands(tmp_path):
    """`ini` and `include` are immediate: the file's options go in at that point."""
    write(tmp_path, "base.ini", "[uwsgi]\npidfile = /run/base.pid\n")
    assert load(tmp_path, "include = base.ini\npidfile = /run/app.pid\n").pidfile == "/run/app.pid"
    assert load(tmp_path, "pidfile = /run/app.pid\nini = base.ini\n").pidfile == "/run/base.pid"


def test_include_of_another_format_is_refused(tmp_path):
    """uWSGI's include picks a reader by the extension (uwsgi.c uwsgi_opt_load): XML, YAML, JSON."""
    write(tmp_path, "base.yaml", "uwsgi:\n")
    e = problems(tmp_path, HEAD + "include = base.yaml\n")
    assert "emperor reads only ini files" in str(e)


def test_include_of_a_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.ini")
    e = problems(tmp_path, HEAD + "include = pipe.ini\n")
    assert str(e) == 'app.ini:4: include: cannot read "pipe.ini": not a regular file'
