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
    # -- adaptive workers and recycling: uWSGI's Cheaper doc and core/master_utils.c --
    "cheaper": Opt("cheaper", v.integer()),
    "cheaper-initial": Opt("cheaper_initial", v.integer()),
    "cheaper-step": Opt("cheaper_step", v.integer(1)),
    "cheaper-overload": Opt("cheaper_overload", v.integer(1)),
    "cheaper-algo": Opt("cheaper_algo", v.choice("spare", "spare2", "backlog", "busyness", "manual")),
    "cheaper-idle": Opt("cheaper_idle", v.integer(1)),
    "cheaper-rss-limit-soft": Opt("cheaper_rss_limit_soft", v.integer()),
    "cheaper-rss-limit-hard": Opt("cheaper_rss_limit_hard", v.integer()),
    "cheaper-busyness-max": Opt("cheaper_busyness_max", v.integer(0, 100)),
    "cheaper-busyness-min": Opt("cheaper_busyness_min", v.integer(0, 100)),
    "cheaper-busyness-multiplier": Opt("cheaper_busyness_multiplier", v.integer(1)),
    "cheaper-busyness-penalty": Opt("cheaper_busyness_penalty", v.integer()),
    "cheaper-busyness-verbose": Opt("cheaper_busyness_verbose", v.boolean),
    "cheaper-busyness-backlog-alert": Opt("cheaper_busyness_backlog_alert", v.integer()),
    "cheaper-busyness-backlog-multiplier": Opt("cheaper_busyness_backlog_multiplier", v.integer(1)),
    "cheaper-busyness-backlog-step": Opt("cheaper_busyness_backlog_step", v.integer(1)),
    "cheaper-busyness-backlog-nonzero": Opt("cheaper_busyness_backlog_nonzero", v.integer()),
    "idle": Opt("idle", v.integer()),
    "die-on-idle": Opt("die_on_idle", v.boolean),
    "cheap": Opt("cheap", v.boolean),
    "reload-on-rss": Opt("reload_on_rss", v.megabytes),
    "reload-on-as": Opt("reload_on_as", v.megabytes),
    "evil-reload-on-rss": Opt("evil_reload_on_rss", v.megabytes),
    "evil-reload-on-as": Opt("evil_reload_on_as", v.megabytes),
    "max-worker-lifetime": Opt("max_worker_lifetime", v.integer()),
    "max-worker-lifetime-delta": Opt("max_worker_lifetime_delta", v.integer()),
    "max-requests-delta": Opt("max_requests_delta", v.integer()),
    "min-worker-lifetime": Opt("min_worker_lifetime", v.integer()),
    "limit-as": Opt("limit_as", v.megabytes),
    "reload-on-exception": Opt("reload_on_exception", v.boolean),
    # -- hooks: uWSGI's Hooks doc, core/hooks.c --
    "hook-as-root": Opt("hook_as_root", v.string, True),
    "hook-as-user": Opt("hook_as_user", v.string, True),
    "hook-pre-app": Opt("hook_pre_app", v.string, True),
    "hook-post-app": Opt("hook_post_app", v.string, True),
    "hook-master-start": Opt("hook_master_start", v.string, True),
    "hook-as-user-atexit": Opt("hook_as_user_atexit", v.string, True),
    "exec-as-root": Opt("hook_as_root", v.exec_hook, True),
    "exec-as-user": Opt("hook_as_user", v.exec_hook, True),
    "exec-pre-app": Opt("hook_pre_app", v.exec_hook, True),
    "exec-post-app": Opt("hook_post_app", v.exec_hook, True),
    "exec-master-start": Opt("hook_master_start", v.exec_hook, True),
    "exec-as-user-atexit": Opt("hook_as_user_atexit", v.exec_hook, True),
    # -- log files and process names: uWSGI's Logging doc --
    "logto2": Opt("logto2", v.nonempty),
    "daemonize": Opt("daemonize", v.nonempty, aliases=("daemonize2",)),
    "log-maxsize": Opt("log_maxsize", v.integer()),
    "log-backupname": Opt("log_backupname", v.nonempty),
    "log-reopen": Opt("log_reopen", v.boolean),
    "logfile-chown": Opt("logfile_chown", v.string),
    "logfile-chmod": Opt("logfile_chmod", v.octal),
    "touch-logrotate": Opt("touch_logrotate", v.nonempty, True),
    "touch-logreopen": Opt("touch_logreopen", v.nonempty, True),
    "procname-prefix": Opt("procname_prefix", v.string),
    "procname-prefix-spaced": Opt("procname_prefix", v.spaced),
    "procname-append": Opt("procname_append", v.string),
    "procname-master": Opt("procname_master", v.nonempty),
    "procname": Opt("procname", v.nonempty),
    "lazy-apps": Opt("lazy_apps", v.boolean, aliases=("lazy",)),
    "need-app": Opt("need_app", v.boolean),
    "stats": Opt("stats", v.address, aliases=("stats-server",)),
    "stats-http": Opt("stats_http", v.boolean),
    "vacuum": Opt("vacuum", v.boolean),
    "chmod-socket": Opt("chmod_socket", v.chmod, aliases=("chmod",)),
    "chown-socket": Opt("chown_socket", v.nonempty),
    "umask": Opt("umask", v.octal),
    "shared-socket": Opt("shared_sockets", v.address, True),
    "abstract-socket": Opt("abstract_socket", v.boolean),
    "uid": Opt("uid", v.nonempty),
    "gid": Opt("gid", v.nonempty),
    "logto": Opt("logto", v.nonempty),
    "disable-logging": Opt("disable_logging", v.boolean),
    "strict": Opt("strict", v.boolean),
    "print": Opt("print", v.string, True, ("iprint",)),
    # emperor's own (not uWSGI options)
    "strict-compat": Opt("strict_compat", v.boolean),
    "snapshot": Opt("snapshot", v.boolean),
    "snapshot-ttl": Opt("snapshot_ttl", v.integer(1)),
    "graceful-removal": Opt("graceful_removal", v.boolean),
}
# Not uWSGI 2.0 options: emperor's own, and two that follow uWSGI's naming (cheaper-idle: the
# ticks an idle worker waits before the cheaper algorithm removes it; exec-master-start: as
# the other exec-<phase> shortcuts, for hook-master-start).
EMPEROR_ONLY = ("strict-compat", "snapshot", "snapshot-ttl", "graceful-removal", "cheaper-idle", "exec-master-start")
CANONICAL = {alias: name for name, opt in OPTIONS.items() for alias in (name, *opt.aliases)}

# Aliases that are not uWSGI's (another option there, read as this one by emperor), and why.
ALIAS_NOTES = {
    "http": "uWSGI starts its HTTP router here, a process proxying to the workers; "
            "emperor's workers serve HTTP on this address themselves",
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
    "plugins-dir": ("emperor loads no plugins: Python and HTTP are built in", None),
    "wsgi-env-behaviour": ("each request gets its own environ dict", None),
}
NOOP_ALIASES = {"plugin-dir": "plugins-dir", "wsgi-env-behavior": "wsgi-env-behaviour"}

# hooks (emperor/master/hooks.py): the phases of `hook-<phase>` and the actions emperor runs
HOOK_PHASES = ("as-root", "as-user", "pre-app", "post-app", "master-start", "as-user-atexit")
HOOK_ACTIONS = ("exec", "mkdir", "chmod", "chown", "unlink", "write", "print", "log")

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
