"""A vassal's settings: the typed `Config`, and the table of every option emperor honours.

emperor/config/ reads a file into entries; this module says what each option
becomes (its attribute, its converter, whether it repeats, uWSGI's aliases). What
emperor does with the other options (no-ops, unsupported ones) is emperor/config/options.py.
"""
from __future__ import annotations

from collections import namedtuple

from emperor.api.cachespec import check as _cache2
from emperor.attached import checker, parse_cron, parse_daemon
from emperor.routes import OPTIONS as ROUTE_OPTIONS
from emperor.values import (_address, _bool, _buffer_size, _chmod, _choice, _cidrs, _exec_hook, _expires_regexp,
                            _expires_type, _file_serve_mode, _header, _int, _keepalive, _log_date, _logger,
                            _megabytes, _mount, _nonempty, _octal, _processes, _regexp, _route, _spaced, _static_map,
                            _str, _threads, _tls_spec)


class Config:
    """One vassal file's effective settings, as attributes; `FIELDS` names them in order.

    A plain class, not a dataclass: `dataclasses` imports `inspect` and `ast`, ~1.5 MiB
    and ~10 ms in every master image, and every graceful reload starts a new image.
    """

    FIELDS: tuple[str, ...] = ()   # filled in below the class
    # every line as read, (name as written, value): uwsgi.opt (emperor/api/uwsgi.py). Set by the
    # loader, not a setting: not in FIELDS, so ini_lines() and the round trip leave it alone
    given: list[tuple[str, str]] = []

    def __init__(self, path: str, name: str, section: str = "uwsgi") -> None:
        self.path: str = path
        self.name: str = name
        self.section: str = section
        self.http_sockets: list[str] = []
        self.https_sockets: list[str] = []   # ADDRESS,CERT,KEY[,CIPHERS[,CLIENT_CA]] (emperor/tls.py)
        self.uwsgi_sockets: list[str] = []
        self.module: str | None = None
        self.wsgi_file: str | None = None
        self.callable: str = "application"
        self.chdir: str | None = None
        self.pythonpath: list[str] = []
        self.virtualenv: str | None = None
        self.env: list[str] = []
        self.processes: int = 1           # 0: uWSGI's no-workers mode (sockets bound, nobody accepts)
        self.threads: int = 1
        self.pidfile: str | None = None
        self.safe_pidfile: str | None = None
        self.touch_reload: list[str] = []
        # attached daemons and cron (emperor/attached.py; run by emperor/master/daemons.py, cron.py)
        self.attach_daemon: list[str] = []
        self.attach_control_daemon: list[str] = []
        self.smart_attach_daemon: list[str] = []
        self.smart_attach_daemon2: list[str] = []
        self.attach_daemon2: list[str] = []
        self.cron: list[str] = []
        self.unique_cron: list[str] = []
        self.cron2: list[str] = []
        self.cron_harakiri: int = 0
        self.die_on_term: bool = False
        self.worker_reload_mercy: int = 60
        self.reload_mercy: int | None = None
        self.listen: int = 100
        self.buffer_size: int = 4096
        self.socket_timeout: int = 4
        self.http_timeout: int | None = None   # an HTTP(S) socket's own socket-timeout
        # TLS (emperor/tls.py) and the PROXY protocol (emperor/worker/proxyproto.py)
        self.sni: list[str] = []
        self.sni_dir: str | None = None
        self.sni_dir_ciphers: str | None = None
        self.ssl_enable_tlsv1: bool = False
        self.enable_proxy_protocol: bool = False
        self.proxy_protocol_allow: list[list[str]] = []
        self.harakiri: int = 0
        self.max_requests: int = 0
        self.lazy_apps: bool = False
        self.need_app: bool = True
        self.stats: str | None = None
        self.stats_http: bool = False
        self.vacuum: bool = False
        self.chmod_socket: str | None = None
        self.chown_socket: str | None = None
        self.umask: str | None = None
        self.shared_sockets: list[str] = []
        self.abstract_socket: bool = False
        self.uid: str | None = None
        self.gid: str | None = None
        self.logto: str | None = None
        self.disable_logging: bool = False
        self.strict: bool = False
        self.strict_compat: bool = False  # options uWSGI knows but emperor does not: errors, not warnings
        self.snapshot: bool = False
        self.snapshot_ttl: int = 3600
        # master FIFO, py-autoreload (emperor/master/fifo.py, autoreload.py)
        self.master_fifo: list[str] = []
        self.py_autoreload: int = 0
        self.py_autoreload_ignore: list[str] = []
        self.graceful_removal: bool | None = None   # None: as the emperor's --graceful-removal says
        # adaptive workers (emperor/master/cheaper.py) and recycling (generations.py, worker)
        self.cheaper: int = 0
        self.cheaper_initial: int = 0
        self.cheaper_step: int = 1
        self.cheaper_overload: int = 3
        self.cheaper_algo: str = "spare"
        self.cheaper_idle: int = 10
        self.cheaper_rss_limit_soft: int = 0
        self.cheaper_rss_limit_hard: int = 0
        self.cheaper_busyness_max: int = 50
        self.cheaper_busyness_min: int = 25
        self.cheaper_busyness_multiplier: int = 10
        self.cheaper_busyness_penalty: int = 2
        self.cheaper_busyness_verbose: bool = False
        self.cheaper_busyness_backlog_alert: int = 33
        self.cheaper_busyness_backlog_multiplier: int = 3
        self.cheaper_busyness_backlog_step: int = 1
        self.cheaper_busyness_backlog_nonzero: int = 60
        self.idle: int = 0
        self.die_on_idle: bool = False
        self.cheap: bool = False
        self.protocol: str = "uwsgi"           # `protocol`: what a socket without its own kind speaks
        self.on_demand: bool = False          # emperor's own: the emperor binds the sockets, starts the master on a connection
        self.reload_on_rss: int = 0
        self.reload_on_as: int = 0
        self.evil_reload_on_rss: int = 0
        self.evil_reload_on_as: int = 0
        self.max_worker_lifetime: int = 0
        self.max_worker_lifetime_delta: int = 0
        self.max_requests_delta: int = 0
        self.min_worker_lifetime: int = 0
        self.limit_as: int = 0
        self.reload_on_exception: bool = False
        # static files and non-blocking file transfers (emperor/worker/static.py, offload.py)
        self.static_map: list[str] = []
        self.static_map2: list[str] = []
        self.check_static: list[str] = []
        self.check_static_docroot: bool = False
        self.static_index: list[str] = []
        self.static_skip_ext: list[str] = []
        self.static_safe: list[str] = []
        self.mimefile: list[str] = []
        self.static_expires_type: list[str] = []
        self.static_expires_type_mtime: list[str] = []
        self.static_expires: list[str] = []
        self.static_expires_mtime: list[str] = []
        self.static_expires_uri: list[str] = []
        self.static_expires_uri_mtime: list[str] = []
        self.static_expires_path_info: list[str] = []
        self.static_expires_path_info_mtime: list[str] = []
        self.static_gzip: list[str] = []
        self.static_gzip_all: bool = False
        self.static_gzip_dir: list[str] = []
        self.static_gzip_ext: list[str] = []
        self.file_serve_mode: str | None = None
        self.offload_threads: int = 0
        # hooks (emperor/hooks.py): "action:argument" per phase, in file order
        self.hook_as_root: list[str] = []
        self.hook_as_user: list[str] = []
        self.hook_pre_app: list[str] = []
        self.hook_post_app: list[str] = []
        self.hook_master_start: list[str] = []
        self.hook_as_user_atexit: list[str] = []
        self.hook_accepting: list[str] = []      # run by each worker (emperor/hooks.py accepting)
        self.hook_accepting1: list[str] = []
        self.hook_accepting_once: list[str] = []
        self.hook_accepting1_once: list[str] = []
        # log files and process names (emperor/master/logfiles.py, names.py)
        self.logto2: str | None = None
        self.daemonize: str | None = None
        self.log_maxsize: int = 0
        self.log_backupname: str | None = None
        self.log_reopen: bool = False
        self.logfile_chown: bool = False
        self.logfile_chmod: str | None = None
        self.touch_logrotate: list[str] = []
        self.touch_logreopen: list[str] = []
        self.procname_prefix: str = ""
        self.procname_append: str = ""
        self.procname_master: str | None = None
        self.procname: str | None = None
        # the request log (emperor/worker/reqlog.py)
        self.log_format: str | None = None
        self.log_4xx: bool = False
        self.log_5xx: bool = False
        self.log_slow: int = 0
        self.log_big: int = 0
        self.log_zero: bool = False
        self.log_sendfile: bool = False          # with disable-logging: still log file responses
        self.harakiri_graceful_timeout: int = 0  # a signal first, the SIGKILL this much later (generations.py)
        self.harakiri_graceful_signal: int = 15
        self.exit_on_reload: bool = False        # a reload request stops the master instead (exit 0)
        self.no_default_app: bool = False        # worker/mounts.py: no fallback for an unmounted SCRIPT_NAME
        self.wsgi_disable_file_wrapper: bool = False
        self.no_defer_accept: bool = False       # sockets.defer_accept: off, as uWSGI's no-defer-accept
        self.max_fd: int = 0                     # RLIMIT_NOFILE, set while still root (hooks.drop_privileges)
        self.log_x_forwarded_for: bool = False
        self.log_date: str | None = None
        self.logformat_strftime: bool = False
        self.log_micros: bool = False
        self.req_logger: str | None = None
        self.logger: str | None = None
        self.print: list[str] = []        # `print` lines, logged by the master as it starts
        # internal routing, headers, mounts, request bodies (emperor/worker/features.py puts them on)
        self.routes: list[tuple[str, str]] = []  # (option, rule) in file order: route*, error-route*, final-route*
        self.add_header: list[str] = []
        self.del_header: list[str] = []
        self.mounts: list[str] = []
        self.manage_script_name: bool = False
        self.post_buffering: int = 0
        self.limit_post: int = 0
        self.http_keepalive: int = 1             # 0: no keep-alive; N > 1: a connection may idle N s between requests
        self.harakiri_verbose: bool = False
        # the spooler and the cache (emperor/master/spooler.py, emperor/api/spool.py, cache.py)
        self.spooler: list[str] = []
        self.spooler_processes: int = 1
        self.spooler_frequency: int = 30
        self.spooler_max_tasks: int = 0
        self.spooler_harakiri: int = 0
        self.spooler_ordered: bool = False
        self.spooler_quiet: bool = False
        self.spooler_chdir: str | None = None
        self.spooler_import: list[str] = []
        self.cache2: list[str] = []
        self.cache: int = 0                # the old-style cache "default": its items
        self.cache_blocksize: int = 65536
        self.locks: int = 0                      # uwsgi.lock(n): n from 0 to locks (emperor/wire/uarea.py)
        self.warnings: list[str] = []
        self.origins: dict[str, tuple[str, int]] = {}

    def __repr__(self) -> str:
        return f"Config({self.path!r}, section={self.section!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Config and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def log_path(self) -> str | None:
        """The file every process of the vassal logs to, if any (logto2, logto, daemonize, logger)."""
        logger = self.logger[5:] if self.logger and self.logger.startswith("file:") else None
        return self.logto2 or self.logto or self.daemonize or logger

    def ini_lines(self) -> list[str]:
        """The effective config as ini lines (for the SIGUSR1 stats log)."""
        lines = [f"[{self.section}]"]
        done: set[str] = set()
        for name, opt in _OPTIONS.items():
            if opt.field in done:
                continue  # one name per setting (exec-as-root adds to hook-as-root's list)
            done.add(opt.field)
            value = getattr(self, opt.field)
            for v in value if isinstance(value, list) else [value]:
                if v is None:
                    continue
                if isinstance(v, tuple):   # (option, value): several options share one ordered list (routes)
                    lines.append(f"{v[0]} = {v[1]}")
                    continue
                text = ("true" if v else "false") if isinstance(v, bool) else str(v)
                lines.append(f"{name} = {text}")
        return lines



Config.FIELDS = tuple(vars(Config("", "")))

# field: Config attribute; conv: text -> value (ValueError when bad); many: a list option
# (every occurrence, in order); aliases: other names uWSGI accepts. A namedtuple, not
# typing.NamedTuple: `typing` is one more import in every master image.
_Opt = namedtuple("_Opt", "field conv many aliases", defaults=(False, ()))


# Every option emperor honours: canonical uWSGI name -> field, converter, list?, aliases.
# Defaults live on Config. Order here is the order of Config.ini_lines().
_OPTIONS: dict[str, _Opt] = {
    "http-socket": _Opt("http_sockets", _address, True, ("http", "http11-socket")),
    "socket": _Opt("uwsgi_sockets", _address, True, ("uwsgi-socket",)),
    "https-socket": _Opt("https_sockets", _tls_spec, True, ("https",)),
    "module": _Opt("module", _nonempty, aliases=("wsgi",)),
    "wsgi-file": _Opt("wsgi_file", _nonempty, aliases=("file",)),
    "callable": _Opt("callable", _nonempty),
    "chdir": _Opt("chdir", _nonempty),
    "pythonpath": _Opt("pythonpath", _str, True, ("python-path", "pp")),
    "virtualenv": _Opt("virtualenv", _nonempty, aliases=("home", "venv", "pyhome")),
    "env": _Opt("env", _str, True),
    "processes": _Opt("processes", _processes, aliases=("workers",)),
    "threads": _Opt("threads", _threads),
    "pidfile": _Opt("pidfile", _nonempty),
    "safe-pidfile": _Opt("safe_pidfile", _nonempty),
    "touch-reload": _Opt("touch_reload", _nonempty, True),
    # attached daemons and cron: checked by emperor/attached.py, kept as text (the master parses them)
    "attach-daemon": _Opt("attach_daemon", checker(parse_daemon, "attach-daemon"), True),
    "attach-control-daemon": _Opt("attach_control_daemon", checker(parse_daemon, "attach-control-daemon"), True),
    "smart-attach-daemon": _Opt("smart_attach_daemon", checker(parse_daemon, "smart-attach-daemon"), True),
    "smart-attach-daemon2": _Opt("smart_attach_daemon2", checker(parse_daemon, "smart-attach-daemon2"), True),
    "attach-daemon2": _Opt("attach_daemon2", checker(parse_daemon, "attach-daemon2"), True),
    "cron": _Opt("cron", checker(parse_cron, "cron"), True),
    "unique-cron": _Opt("unique_cron", checker(parse_cron, "unique-cron"), True),
    "cron2": _Opt("cron2", checker(parse_cron, "cron2"), True),
    "cron-harakiri": _Opt("cron_harakiri", _int()),
    "die-on-term": _Opt("die_on_term", _bool),
    "worker-reload-mercy": _Opt("worker_reload_mercy", _int()),
    "reload-mercy": _Opt("reload_mercy", _int()),
    "listen": _Opt("listen", _int()),
    "buffer-size": _Opt("buffer_size", _buffer_size),
    "socket-timeout": _Opt("socket_timeout", _int()),
    "http-timeout": _Opt("http_timeout", _int(1)),
    "sni": _Opt("sni", _tls_spec, True),
    "sni-dir": _Opt("sni_dir", _nonempty),
    "sni-dir-ciphers": _Opt("sni_dir_ciphers", _nonempty),
    "ssl-enable-tlsv1": _Opt("ssl_enable_tlsv1", _bool),
    "enable-proxy-protocol": _Opt("enable_proxy_protocol", _bool, aliases=("http-enable-proxy-protocol",)),
    "proxy-protocol-allow": _Opt("proxy_protocol_allow", _cidrs, True),
    "harakiri": _Opt("harakiri", _int()),
    "max-requests": _Opt("max_requests", _int()),
    # -- adaptive workers and recycling: uWSGI's Cheaper doc and core/master_utils.c --
    "cheaper": _Opt("cheaper", _int()),
    "cheaper-initial": _Opt("cheaper_initial", _int()),
    "cheaper-step": _Opt("cheaper_step", _int(1)),
    "cheaper-overload": _Opt("cheaper_overload", _int(1)),
    "cheaper-algo": _Opt("cheaper_algo", _choice("spare", "spare2", "backlog", "busyness", "manual")),
    "cheaper-idle": _Opt("cheaper_idle", _int(1)),
    "cheaper-rss-limit-soft": _Opt("cheaper_rss_limit_soft", _int()),
    "cheaper-rss-limit-hard": _Opt("cheaper_rss_limit_hard", _int()),
    "cheaper-busyness-max": _Opt("cheaper_busyness_max", _int(0, 100)),
    "cheaper-busyness-min": _Opt("cheaper_busyness_min", _int(0, 100)),
    "cheaper-busyness-multiplier": _Opt("cheaper_busyness_multiplier", _int(1)),
    "cheaper-busyness-penalty": _Opt("cheaper_busyness_penalty", _int()),
    "cheaper-busyness-verbose": _Opt("cheaper_busyness_verbose", _bool),
    "cheaper-busyness-backlog-alert": _Opt("cheaper_busyness_backlog_alert", _int()),
    "cheaper-busyness-backlog-multiplier": _Opt("cheaper_busyness_backlog_multiplier", _int(1)),
    "cheaper-busyness-backlog-step": _Opt("cheaper_busyness_backlog_step", _int(1)),
    "cheaper-busyness-backlog-nonzero": _Opt("cheaper_busyness_backlog_nonzero", _int()),
    "idle": _Opt("idle", _int()),
    "die-on-idle": _Opt("die_on_idle", _bool),
    "cheap": _Opt("cheap", _bool),
    "on-demand": _Opt("on_demand", _bool),
    "reload-on-rss": _Opt("reload_on_rss", _megabytes),
    "reload-on-as": _Opt("reload_on_as", _megabytes),
    "evil-reload-on-rss": _Opt("evil_reload_on_rss", _megabytes),
    "evil-reload-on-as": _Opt("evil_reload_on_as", _megabytes),
    "max-worker-lifetime": _Opt("max_worker_lifetime", _int()),
    "max-worker-lifetime-delta": _Opt("max_worker_lifetime_delta", _int()),
    "max-requests-delta": _Opt("max_requests_delta", _int()),
    "min-worker-lifetime": _Opt("min_worker_lifetime", _int()),
    "limit-as": _Opt("limit_as", _megabytes),
    "max-fd": _Opt("max_fd", _int()),
    "no-defer-accept": _Opt("no_defer_accept", _bool),
    "no-default-app": _Opt("no_default_app", _bool),
    "exit-on-reload": _Opt("exit_on_reload", _bool),
    "wsgi-disable-file-wrapper": _Opt("wsgi_disable_file_wrapper", _bool),
    "harakiri-graceful-timeout": _Opt("harakiri_graceful_timeout", _int()),
    "harakiri-graceful-signal": _Opt("harakiri_graceful_signal", _int(1)),
    "reload-on-exception": _Opt("reload_on_exception", _bool),
    # -- static files: uWSGI's StaticFiles and OffloadSubsystem docs, core/static.c, core/protocol.c --
    "static-map": _Opt("static_map", _static_map, True),
    "static-map2": _Opt("static_map2", _static_map, True),
    "check-static": _Opt("check_static", _nonempty, True, ("static-check",)),
    "check-static-docroot": _Opt("check_static_docroot", _bool),
    "static-index": _Opt("static_index", _nonempty, True),
    "static-skip-ext": _Opt("static_skip_ext", _nonempty, True),
    "static-safe": _Opt("static_safe", _nonempty, True),
    "mimefile": _Opt("mimefile", _nonempty, True, ("mime-file",)),
    "static-expires-type": _Opt("static_expires_type", _expires_type, True),
    "static-expires-type-mtime": _Opt("static_expires_type_mtime", _expires_type, True),
    "static-expires": _Opt("static_expires", _expires_regexp, True),
    "static-expires-mtime": _Opt("static_expires_mtime", _expires_regexp, True),
    "static-expires-uri": _Opt("static_expires_uri", _expires_regexp, True),
    "static-expires-uri-mtime": _Opt("static_expires_uri_mtime", _expires_regexp, True),
    "static-expires-path-info": _Opt("static_expires_path_info", _expires_regexp, True),
    "static-expires-path-info-mtime": _Opt("static_expires_path_info_mtime", _expires_regexp, True),
    "static-gzip": _Opt("static_gzip", _regexp, True),
    "static-gzip-all": _Opt("static_gzip_all", _bool),
    "static-gzip-dir": _Opt("static_gzip_dir", _nonempty, True, ("static-gzip-prefix",)),
    "static-gzip-ext": _Opt("static_gzip_ext", _nonempty, True, ("static-gzip-suffix",)),
    "file-serve-mode": _Opt("file_serve_mode", _file_serve_mode, aliases=("fileserve-mode",)),
    "offload-threads": _Opt("offload_threads", _int(), aliases=("offload-thread",)),
    # -- hooks: uWSGI's Hooks doc, core/hooks.c --
    "hook-as-root": _Opt("hook_as_root", _str, True),
    "hook-as-user": _Opt("hook_as_user", _str, True),
    "hook-pre-app": _Opt("hook_pre_app", _str, True),
    "hook-post-app": _Opt("hook_post_app", _str, True),
    "hook-master-start": _Opt("hook_master_start", _str, True),
    "hook-as-user-atexit": _Opt("hook_as_user_atexit", _str, True),
    "hook-accepting": _Opt("hook_accepting", _str, True),
    "hook-accepting1": _Opt("hook_accepting1", _str, True),
    "hook-accepting-once": _Opt("hook_accepting_once", _str, True),
    "hook-accepting1-once": _Opt("hook_accepting1_once", _str, True),
    "exec-as-root": _Opt("hook_as_root", _exec_hook, True),
    "exec-as-user": _Opt("hook_as_user", _exec_hook, True),
    "exec-pre-app": _Opt("hook_pre_app", _exec_hook, True),
    "exec-post-app": _Opt("hook_post_app", _exec_hook, True),
    "exec-master-start": _Opt("hook_master_start", _exec_hook, True),
    "exec-as-user-atexit": _Opt("hook_as_user_atexit", _exec_hook, True),
    # -- log files and process names: uWSGI's Logging doc --
    "logto2": _Opt("logto2", _nonempty),
    "daemonize": _Opt("daemonize", _nonempty, aliases=("daemonize2",)),
    "log-maxsize": _Opt("log_maxsize", _int()),
    "log-backupname": _Opt("log_backupname", _nonempty),
    "log-reopen": _Opt("log_reopen", _bool),
    "logfile-chown": _Opt("logfile_chown", _bool),
    "logfile-chmod": _Opt("logfile_chmod", _octal),
    "touch-logrotate": _Opt("touch_logrotate", _nonempty, True),
    "touch-logreopen": _Opt("touch_logreopen", _nonempty, True),
    "procname-prefix": _Opt("procname_prefix", _str),
    "procname-prefix-spaced": _Opt("procname_prefix", _spaced),
    "procname-append": _Opt("procname_append", _str),
    "procname-master": _Opt("procname_master", _nonempty),
    "procname": _Opt("procname", _nonempty),
    # -- the request log: uWSGI's LogFormat and Logging docs --
    "log-format": _Opt("log_format", _nonempty, aliases=("logformat",)),
    "log-4xx": _Opt("log_4xx", _bool),
    "log-5xx": _Opt("log_5xx", _bool),
    "log-slow": _Opt("log_slow", _int()),
    "log-big": _Opt("log_big", _int()),
    "log-zero": _Opt("log_zero", _bool),
    "log-sendfile": _Opt("log_sendfile", _bool),
    "log-x-forwarded-for": _Opt("log_x_forwarded_for", _bool),
    "log-date": _Opt("log_date", _log_date, aliases=("logdate", "log-prefix")),
    "logformat-strftime": _Opt("logformat_strftime", _bool, aliases=("log-format-strftime",)),
    "log-micros": _Opt("log_micros", _bool),
    "req-logger": _Opt("req_logger", _logger, aliases=("logger-req",)),
    "logger": _Opt("logger", _logger),
    # -- internal routing, headers, mounts, request bodies: uWSGI's InternalRouting doc (core/routing.c),
    #    Options.rst (add-header, mount, manage-script-name, post-buffering, limit-post, http-keepalive) --
    **{name: _Opt("routes", _route(name), True) for name in ROUTE_OPTIONS},
    "add-header": _Opt("add_header", _header, True),
    "del-header": _Opt("del_header", _nonempty, True, ("rem-header",)),
    "mount": _Opt("mounts", _mount, True, ("worker-mount",)),
    "manage-script-name": _Opt("manage_script_name", _bool),
    "post-buffering": _Opt("post_buffering", _int()),
    "limit-post": _Opt("limit_post", _int()),
    "http-keepalive": _Opt("http_keepalive", _keepalive),
    "harakiri-verbose": _Opt("harakiri_verbose", _bool),
    "locks": _Opt("locks", _int(0, 64)),
    "lazy-apps": _Opt("lazy_apps", _bool, aliases=("lazy",)),
    "need-app": _Opt("need_app", _bool),
    "stats": _Opt("stats", _address, aliases=("stats-server",)),
    "stats-http": _Opt("stats_http", _bool),
    "vacuum": _Opt("vacuum", _bool),
    "chmod-socket": _Opt("chmod_socket", _chmod, aliases=("chmod",)),
    "chown-socket": _Opt("chown_socket", _nonempty),
    "umask": _Opt("umask", _octal),
    "shared-socket": _Opt("shared_sockets", _address, True),
    "abstract-socket": _Opt("abstract_socket", _bool),
    "uid": _Opt("uid", _nonempty),
    "gid": _Opt("gid", _nonempty),
    "logto": _Opt("logto", _nonempty),
    "disable-logging": _Opt("disable_logging", _bool),
    "strict": _Opt("strict", _bool),
    "print": _Opt("print", _str, True, ("iprint",)),
    # emperor's own (not uWSGI options)
    "strict-compat": _Opt("strict_compat", _bool),
    "snapshot": _Opt("snapshot", _bool),
    "snapshot-ttl": _Opt("snapshot_ttl", _int(1)),
    # -- master FIFO, py-autoreload: MasterFIFO.rst, plugins/python --
    "master-fifo": _Opt("master_fifo", _nonempty, True),
    "py-autoreload": _Opt("py_autoreload", _int(), aliases=("py-auto-reload", "python-auto-reload", "python-autoreload")),
    "py-auto-reload-ignore": _Opt("py_autoreload_ignore", _nonempty, True),
    "graceful-removal": _Opt("graceful_removal", _bool),
    # -- the spooler and the cache: uWSGI's Spooler.rst (core/spooler.c), Caching.rst (core/cache.c) --
    "spooler": _Opt("spooler", _nonempty, True),
    "spooler-processes": _Opt("spooler_processes", _int(1)),
    "spooler-frequency": _Opt("spooler_frequency", _int(1), aliases=("spooler-freq",)),
    "spooler-quiet": _Opt("spooler_quiet", _bool),
    "spooler-max-tasks": _Opt("spooler_max_tasks", _int()),
    "spooler-harakiri": _Opt("spooler_harakiri", _int()),
    "spooler-ordered": _Opt("spooler_ordered", _bool),
    "spooler-chdir": _Opt("spooler_chdir", _nonempty),
    "spooler-import": _Opt("spooler_import", _nonempty, True, ("spooler-pyimport", "spooler-py-import",
                                                                         "spooler-python-import")),
    "cache2": _Opt("cache2", _cache2, True),
    "cache": _Opt("cache", _int()),
    "cache-blocksize": _Opt("cache_blocksize", _int(1)),
}
_CANONICAL = {alias: name for name, opt in _OPTIONS.items() for alias in (name, *opt.aliases)}
