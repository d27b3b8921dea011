"""`print`, `log-master` and `master-log`.

Reference: uWSGI's core/uwsgi.c (its option table, uwsgi_opt_print) and Options.rst; each
test names what it reproduces. Real masters; the tests wait for log lines, not for time.
"""
from __future__ import annotations

import signal

from conftest import HELLO_APP


def test_print_logs_its_text_at_start_up_and_on_each_reload(master, tmp_path):
    """core/uwsgi.c uwsgi_opt_print: `print` writes its value while the options are read, which
    uWSGI does again in every re-executed image."""
    m = master("print = hello from the file\nprint = second line\n", HELLO_APP)
    assert m.log.count("hello from the file") == 1 and "second line" in m.log
    m.signal(signal.SIGHUP)
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert m.log.count("hello from the file") == 2


def test_log_master_is_accepted_and_master_log_is_not_a_uwsgi_option(master):
    """core/uwsgi.c: "log-master" (delegate logging to the master) exists; "master-log" does not
    (only uwsgi_master_log(), the function reading the log pipe, has that name)."""
    m = master("log-master = true\nmaster-log = true\n", HELLO_APP)
    assert '"log-master"' not in m.log
    assert 'option "master-log" is not supported' in m.log

