"""Command line: `emperor run|master|status|restart|check` and uWSGI's --reload/--stop PIDFILE.

Every failure a user can cause ends in one line on stderr and a non-zero exit,
never a traceback.
"""
from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    import argparse

PIDFILE_SIGNALS = {
    "reload": signal.SIGHUP,
    "stop": signal.SIGINT,
    "pause": signal.SIGTSTP,
    "resume": signal.SIGTSTP,
}


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="emperor", description="Keeps one master per vassal file; uWSGI-compatible.")
    for name in PIDFILE_SIGNALS:
        p.add_argument(f"--{name}", metavar="PIDFILE", help=f"{name} the master whose pidfile this is")
    sub = p.add_subparsers(dest="command")
    m = sub.add_parser("master", help="run one master in the foreground")
    m.add_argument("file", help="vassal file (FILE.ini or FILE.ini:section)")
    m.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    r = sub.add_parser("run", help="run the emperor over a vassals directory")
    r.add_argument("directory", nargs="?", default="vassals.d")
    r.add_argument("--grace", type=float, default=30.0, help="seconds vassals get to drain on SIGTERM")
    r.add_argument("--tyrant", action="store_true", help="run each vassal as its file's owner (root only)")
    r.add_argument("--control", help="control socket path")
    r.add_argument("--metrics", help="serve Prometheus metrics on HOST:PORT")
    r.add_argument("--shutdown-delay", type=float, default=0.0)
    r.add_argument("--graceful-removal", action="store_true",
                   help="a deleted vassal file stops its master gracefully (in-flight requests finish "
                        "within --grace) instead of at once (SIGINT, uWSGI's way); a file's own "
                        "`graceful-removal = true/false` decides for it")
    r.add_argument("--strict-compat", action="store_true",
                   help="a vassal using an option uWSGI knows but emperor does not support is refused")
    ck = sub.add_parser("check", help="read vassal files as their masters would and say what each line does")
    ck.add_argument("files", nargs="+", metavar="FILE", help="vassal file (FILE.ini or FILE.ini:section)")
    ck.add_argument("--json", action="store_true", help="one JSON document")
    ck.add_argument("--problems", action="store_true", help="only warnings and errors, and the summary")
    ck.add_argument("--strict-compat", action="store_true", help="as `emperor run --strict-compat` reads them")
    ck.add_argument("--vassals-dir", help="what %%v says (default: each file's directory)")
    s = sub.add_parser("status", help="live view of the vassals")
    s.add_argument("name", nargs="?")
    s.add_argument("--once", action="store_true")
    s.add_argument("--json", action="store_true")
    s.add_argument("--control")
    s.add_argument("--directory", default="vassals.d")
    h = sub.add_parser("health", help="exit 0 if the emperor answers and is healthy (for probes)")
    h.add_argument("directory", nargs="?", default="vassals.d")
    h.add_argument("--control", help="control socket path")
    h.add_argument("--live", action="store_true", help="only check that the emperor answers (liveness)")
    h.add_argument("--max-backoff", type=float, default=60.0,
                   help="a vassal in backoff this long (or longer) counts as failing (default 60)")
    h.add_argument("--timeout", type=float, default=3.0)
    h.add_argument("--grace", type=float, default=60.0,
                   help="a vassal starting, or failing to serve, longer than this is unhealthy (default 60)")
    rs = sub.add_parser("restart", help="clear a vassal's backoff and start or reload it now")
    rs.add_argument("name")
    rs.add_argument("--control")
    rs.add_argument("--directory", default="vassals.d")
    return p


def _signal_pidfile(action: str, path: str) -> int:
    from emperor.master.pidfile import PidfileError, read_master_pid

    try:
        pid = read_master_pid(path)
    except PidfileError as e:
        print(f"emperor: {e}", file=sys.stderr)
        return 1
    if action in ("pause", "resume"):
        from emperor.proc import process_name

        paused = process_name(pid) == "emperor paused"
        if paused == (action == "pause"):
            print(f"emperor: master {pid} is already {'paused' if paused else 'running'}")
            return 0
    try:
        os.kill(pid, PIDFILE_SIGNALS[action])
    except ProcessLookupError:
        print(f"emperor: {path}: process {pid} is gone", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"emperor: {path}: not allowed to signal process {pid}", file=sys.stderr)
        return 1
    print(f"emperor: sent {signal.Signals(PIDFILE_SIGNALS[action]).name} to master {pid} ({action})")
    return 0


def _run_master(path: str) -> int:
    from emperor.master.process import run_master

    try:
        return run_master(path)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "master" and not argv[1].startswith("-"):
        # How a master re-executes itself on every reload: skip argparse's ~10 ms import.
        return _run_master(argv[1])
    args = _parser().parse_args(argv)
    for action in PIDFILE_SIGNALS:
        path = getattr(args, action)
        if path:
            return _signal_pidfile(action, path)
    if args.command == "master":
        if args.preflight:
            from emperor.master.preflight import preflight

            return preflight(args.file)
        return _run_master(args.file)
    if args.command == "run":
        from emperor.emperor.process import run_emperor

        return run_emperor(args)
    if args.command == "status":
        from emperor.cli.status import run_status

        return run_status(args)
    if args.command == "health":
        from emperor.cli.health import run_health

        return run_health(args)
    if args.command == "check":
        from emperor.config.check import run_check

        return run_check(args)
    if args.command == "restart":
        from emperor.cli.status import run_restart

        return run_restart(args)
    _parser().print_help()
    return 2
