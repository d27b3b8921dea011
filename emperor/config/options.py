"""What emperor does with each uWSGI option: honoured (emperor/settings.py: a `Config` field,
its converter and aliases), a no-op (emperor already behaves as it asks), or, for every
other option uWSGI knows, unsupported.

The honoured options' aliases are uWSGI's own (options with the same parser and target in
its option table, emperor/config/uwsgi_options.json: tests/test_config_options.py checks
they stay in step), plus the few emperor reads as another option on purpose (`ALIAS_NOTES`).
"""
from __future__ import annotations

import re

from emperor import settings

CANONICAL = settings._CANONICAL   # every honoured name and alias -> the option's name
OPTIONS = settings._OPTIONS       # the honoured options

# Not uWSGI 2.0 options: emperor's own, and two that follow uWSGI's naming (cheaper-idle: the
# ticks an idle worker waits before the cheaper algorithm removes it; exec-master-start: as
# the other exec-<phase> shortcuts, for hook-master-start).
EMPEROR_ONLY = ("strict-compat", "snapshot", "snapshot-ttl", "graceful-removal", "cheaper-idle", "exec-master-start",
                "proxy-protocol-allow", "on-demand")

# Aliases that are not uWSGI's (another option there, read as this one by emperor), and why.
ALIAS_NOTES = {
    "http": "uWSGI starts its HTTP router here, a process proxying to the workers; "
            "emperor's workers serve HTTP on this address themselves",
    "worker-mount": "the application is loaded where the others are: in the master before the fork, "
                    "or in each worker with lazy-apps",
    "https": "uWSGI starts its HTTPS router here, a process proxying to the workers; emperor's "
             "workers serve HTTPS on this address themselves",
    "http-enable-proxy-protocol": "the HTTP router's option in uWSGI; here the workers' HTTP sockets read "
                                  "the PROXY header themselves",
    "http11-socket": "keep-alive HTTP/1.1: emperor's http-socket keeps connections alive already",
    "uwsgi-socket": "the uwsgi protocol whatever `protocol` says, as socket is by default",
    "lazy": "uWSGI's lazy also makes a reload recycle only the workers, not the master",
    "daemonize2": "the log file, as daemonize (uWSGI daemonizes after loading the app; emperor's "
                  "masters stay in the foreground, under the emperor)",
    "iprint": "printed with the print lines (uWSGI prints it at once, before any expansion)",
}

# Options emperor accepts silently because it already behaves as they ask: name ->
# (why, when). `when` None: whatever the value; True: only when it is true (otherwise
# the option asks for something emperor does not do, and is unsupported).
NOOPS: dict[str, tuple[str, bool | None]] = {
    "master": ("emperor always runs a master", True),
    "enable-threads": ("Python threads always work in emperor's workers; in uWSGI 2.0 this "
                       "option is a stub, always on, too", None),
    "thunder-lock": ("workers wait for connections with EPOLLEXCLUSIVE: one worker wakes per "
                     "connection, no thundering herd", None),
    "single-interpreter": ("each process runs one application in one interpreter", None),
    "memory-report": ("emperor's request log has no memory fields; each worker's memory is in "
                      "the stats document and `emperor status`", None),
    "auto-procname": ("emperor names its processes itself: emperor master, emperor worker N "
                      "(procname and its kind set the names)", None),
    "ignore-sigpipe": ("a Python process ignores SIGPIPE: a client gone is an error the worker "
                       "handles, never a signal, and it is not logged", None),
    "ignore-write-errors": ("emperor does not log a client's write errors", None),
    "disable-write-exception": ("emperor never raises a client's write error into the application", None),
    "write-errors-tolerance": ("emperor never raises a client's write error into the application", None),
    "py-call-osafterfork": ("workers are forked with os.fork(), which runs Python's after-fork "
                            "handling", True),
    "py-call-uwsgi-fork-hooks": ("workers are forked with os.fork(), which runs "
                                 "os.register_at_fork hooks", True),
    "close-on-exec": ("accepted connections are not inherited by child processes (PEP 446)", True),
    "no-orphans": ("workers die with their master (PR_SET_PDEATHSIG)", True),
    "skip-atexit": ("workers leave with os._exit(): atexit handlers never run in workers", None),
    "skip-atexit-teardown": ("workers leave with os._exit(): atexit handlers never run in workers", None),
    "honour-range": ("byte ranges are always honoured for static files and file responses", None),
    "log-master": ("each emperor process writes whole lines with one write(2) to the shared log, so "
                   "lines never interleave; uWSGI's one logging process is not needed for that", None),
    "plugins-dir": ("emperor loads no plugins: Python and HTTP are built in", None),
    "wsgi-env-behaviour": ("each request gets its own environ dict", None),
    "http-chunked-input": ("the workers decode a chunked request body themselves (wsgi.input ends at its "
                           "end); uWSGI's http router option", True),
    "http-raw-body": ("no HTTP router stands between the client and the workers: the body reaches the "
                      "application as sent (uWSGI's http router option)", True),
    "http-auto-chunked": ("a response of unknown length to an HTTP/1.1 keep-alive client is always sent "
                          "chunked (uWSGI's http router option; emperor's workers do it themselves)", True),
}
NOOP_ALIASES = {"plugin-dir": "plugins-dir", "wsgi-env-behavior": "wsgi-env-behaviour"}

# hooks (emperor/hooks.py): the phases of `hook-<phase>` and the actions emperor runs
HOOK_PHASES = ("as-root", "as-user", "pre-app", "post-app", "master-start", "as-user-atexit",
               "accepting", "accepting1", "accepting-once", "accepting1-once")
HOOK_ACTIONS = ("exec", "mkdir", "chmod", "chown", "unlink", "write", "print", "log", "unix_signal")
# unix_signal:<signum> <function>: the master's functions uWSGI's hook finds by name
# (core/hooks.c uwsgi_hook_unix_signal, core/uwsgi.c) -> the master's action they are here
UNIX_SIGNAL_FUNCTIONS = {"gracefully_kill_them_all": "graceful_stop", "kill_them_all": "stop",
                         "grace_them_all": "graceful_reload", "reap_them_all": "brutal_reload",
                         "end_me": "stop", "stats": "log_stats", "suspend_resume_them_all": "toggle_pause"}


def unix_signal(arg: str) -> tuple[int, str] | None:
    """(signal number, master action) of a unix_signal hook's "<signum> <function>", or None."""
    num, _, func = arg.strip().partition(" ")
    if not num.isdigit() or not 0 < int(num) < 65 or func.strip() not in UNIX_SIGNAL_FUNCTIONS \
            or int(num) in (9, 19):   # SIGKILL, SIGSTOP: no handler can be set
        return None
    return int(num), UNIX_SIGNAL_FUNCTIONS[func.strip()]

PLUGIN_KEYS = ("plugins", "plugin", "need-plugins", "need-plugin")
# Python and HTTP, and the plugins whose features emperor has: route actions basicauth, rewrite,
# redirect and static (uWSGI's router_* plugins) and the file logger (`logfile`: logger = file:).
_BUILTIN_PLUGIN = re.compile(r"(python[0-9]*|http|router_(basicauth|rewrite|redirect|static)|logfile)")

# Keys the reader handles itself (config logic, inclusion, placeholders).
INCLUDE_KEYS = ("ini", "include", "inherit")
PLACEHOLDER_KEYS = ("set-placeholder", "set-ph")
SET_KEYS = ("set",)


def builtin_plugin(value: str) -> bool:
    """Every plugin of a `plugins` list is built into emperor (python3, python311, http,
    router_basicauth; a path to one, /usr/lib/uwsgi/python3_plugin.so, as well)."""
    names = [p.strip() for p in value.split(",") if p.strip()]
    return all(_BUILTIN_PLUGIN.fullmatch(_plugin_name(p)) for p in names)


def _plugin_name(item: str) -> str:
    name = item.rsplit("/", 1)[-1]
    for suffix in (".so", "_plugin"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return name
