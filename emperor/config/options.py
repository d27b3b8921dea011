"""What emperor does with each uWSGI option: honoured (a `Config` field), a no-op (emperor
already behaves as it asks), or, for every other option uWSGI knows, unsupported.

The aliases here are uWSGI's own (options with the same parser and target in its option
table, emperor/config/uwsgi_options.json: tests/test_config_options.py checks they stay
in step), plus the few emperor reads as another option on purpose (`ALIAS_NOTES`).
"""
from __future__ import annotations

import re
from collections import namedtuple

from emperor.config import values as v

# field: Config attribute; conv: values.Converter; many: a list option (every occurrence,
# in order); aliases: other names for it. A namedtuple, not typing.NamedTuple: `typing` is
# one more import in every master image.
Opt = namedtuple("Opt", "field conv many aliases", defaults=(False, ()))

# Every option emperor honours: canonical uWSGI name -> field, converter, list?, aliases.
# Defaults live on Config. Order here is the order of Config.ini_lines().
OPTIONS: dict[str, Opt] = {
    "http-socket": Opt("http_sockets", v.address, True, ("http", "http11-socket")),
    "socket": Opt("uwsgi_sockets", v.address, True, ("uwsgi-socket",)),
    "module": Opt("module", v.nonempty, aliases=("wsgi",)),
    "wsgi-file": Opt("wsgi_file", v.nonempty, aliases=("file",)),
    "callable": Opt("callable", v.nonempty),
    "chdir": Opt("chdir", v.nonempty),
    "pythonpath": Opt("pythonpath", v.string, True, ("python-path", "pp")),
    "virtualenv": Opt("virtualenv", v.nonempty, aliases=("home", "venv", "pyhome")),
    "env": Opt("env", v.string, True),
    "processes": Opt("processes", v.processes, aliases=("workers",)),
    "threads": Opt("threads", v.threads),
    "pidfile": Opt("pidfile", v.nonempty),
    "safe-pidfile": Opt("safe_pidfile", v.nonempty),
    "touch-reload": Opt("touch_reload", v.nonempty, True),
    "die-on-term": Opt("die_on_term", v.boolean),
    "worker-reload-mercy": Opt("worker_reload_mercy", v.integer()),
    "reload-mercy": Opt("reload_mercy", v.integer()),
    "listen": Opt("listen", v.integer()),
    "buffer-size": Opt("buffer_size", v.buffer_size),
    "socket-timeout": Opt("socket_timeout", v.integer()),
    "harakiri": Opt("harakiri", v.integer()),
    "max-requests": Opt("max_requests", v.integer()),
    "lazy-apps": Opt("lazy_apps", v.boolean, aliases=("lazy",)),
    "need-app": Opt("need_app", v.boolean),
    "stats": Opt("stats", v.address, aliases=("stats-server",)),
    "stats-http": Opt("stats_http", v.boolean),
    "vacuum": Opt("vacuum", v.boolean),
    "chmod-socket": Opt("chmod_socket", v.chmod, aliases=("chmod",)),
    "uid": Opt("uid", v.nonempty),
    "gid": Opt("gid", v.nonempty),
    "logto": Opt("logto", v.nonempty, aliases=("logto2",)),
    "disable-logging": Opt("disable_logging", v.boolean),
    "strict": Opt("strict", v.boolean),
    "print": Opt("print", v.string, True, ("iprint",)),
    # emperor's own (not uWSGI options)
    "strict-compat": Opt("strict_compat", v.boolean),
    "snapshot": Opt("snapshot", v.boolean),
    "snapshot-ttl": Opt("snapshot_ttl", v.integer(1)),
    "graceful-removal": Opt("graceful_removal", v.boolean),
}
EMPEROR_ONLY = ("strict-compat", "snapshot", "snapshot-ttl", "graceful-removal")
CANONICAL = {alias: name for name, opt in OPTIONS.items() for alias in (name, *opt.aliases)}

# Aliases that are not uWSGI's (another option there, read as this one by emperor), and why.
ALIAS_NOTES = {
    "http": "uWSGI starts its HTTP router here, a process proxying to the workers; "
            "emperor's workers serve HTTP on this address themselves",
    "http11-socket": "keep-alive HTTP/1.1: emperor's http-socket keeps connections alive already",
    "uwsgi-socket": "the uwsgi protocol whatever `protocol` says, as socket is by default",
    "lazy": "uWSGI's lazy also makes a reload recycle only the workers, not the master",
    "logto2": "opened before privileges are dropped (uWSGI opens logto2 after)",
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
    "auto-procname": ("emperor names its processes itself: emperor master, emperor worker N", None),
    "procname": ("emperor names its processes itself", None),
    "procname-prefix": ("emperor names its processes itself", None),
    "procname-prefix-spaced": ("emperor names its processes itself", None),
    "procname-append": ("emperor names its processes itself", None),
    "procname-master": ("emperor names its processes itself", None),
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
    "plugins-dir": ("emperor loads no plugins: Python and HTTP are built in", None),
    "wsgi-env-behaviour": ("each request gets its own environ dict", None),
}
NOOP_ALIASES = {"plugin-dir": "plugins-dir", "wsgi-env-behavior": "wsgi-env-behaviour"}

PLUGIN_KEYS = ("plugins", "plugin", "need-plugins", "need-plugin")
_BUILTIN_PLUGIN = re.compile(r"(python[0-9]*|http)")

# Keys the reader handles itself (config logic, inclusion, placeholders).
INCLUDE_KEYS = ("ini", "include", "inherit")
PLACEHOLDER_KEYS = ("set-placeholder", "set-ph")
SET_KEYS = ("set",)


def builtin_plugin(value: str) -> bool:
    """Every plugin of a `plugins` list is built into emperor (python3, python311, http;
    a path to one, /usr/lib/uwsgi/python3_plugin.so, as well)."""
    names = [p.strip() for p in value.split(",") if p.strip()]
    return all(_BUILTIN_PLUGIN.fullmatch(_plugin_name(p)) for p in names)


def _plugin_name(item: str) -> str:
    name = item.rsplit("/", 1)[-1]
    for suffix in (".so", "_plugin"):
        name = name[:-len(suffix)] if name.endswith(suffix) else name
    return name
