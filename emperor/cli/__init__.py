"""Command line: `emperor run|master|status|restart|health|check` and uWSGI's --reload/--stop PIDFILE.

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
PIDFILE_HELP = {
    "reload": "gracefully reload the master whose pidfile this is (SIGHUP); an emperor's "
              "(`emperor run --pidfile`): reload every vassal",
    "stop": "stop the master whose pidfile this is now (SIGINT); an emperor's: stop every vassal and the emperor",
    "pause": "pause the master whose pidfile this is (SIGTSTP): it stops accepting until --resume",
    "resume": "resume the paused master whose pidfile this is",
}
EMPEROR_ACTIONS = {"reload": "reload every vassal", "stop": "stop every vassal"}
DIRECTORY_HELP = ("the vassals directory of the emperor to ask (default: $EMPEROR_DIRECTORY, else "
                  "./vassals.d or the current directory if an emperor runs for it, else the only "
                  "emperor of yours running)")
CONTROL_HELP = "the emperor's control socket, if it was started with --control"


def _parser() -> argparse.ArgumentParser:
    import argparse

    from emperor import __version__

    p = argparse.ArgumentParser(
        prog="emperor", description="Keeps one master per vassal file; uWSGI-compatible.",
        epilog="`emperor COMMAND --help` for each command. The commands that talk to a running emperor "
               "find it from -d DIR (or DIR), $EMPEROR_CONTROL, $EMPEROR_DIRECTORY, ./vassals.d or the "
               "current directory, or as the only one of yours running.")
    p.add_argument("--version", action="version", version=f"emperor {__version__}")
    for name in PIDFILE_SIGNALS:
        p.add_argument(f"--{name}", metavar="PIDFILE", help=PIDFILE_HELP[name])
    sub = p.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    r = sub.add_parser("run", help="run the emperor over a vassals directory (one master per .ini file)",
                       description="Run the emperor: one master per *.ini file of the vassals directory, "
                                   "started, reloaded and stopped as files appear, change and go.")
    r.add_argument("directory", nargs="?", metavar="DIR",
                   help="the vassals directory (default: $EMPEROR_DIRECTORY, else ./vassals.d)")
    r.add_argument("-d", "--directory", dest="directory_option", metavar="DIR", help="the same as DIR")
    r.add_argument("--pidfile", metavar="FILE",
                   help="write the emperor's PID here once it runs (removed at exit), for "
                        "`emperor --reload/--stop FILE`")
    r.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="how long vassals get to finish their requests on SIGTERM, then SIGKILL (default 30)")
    r.add_argument("--shutdown-delay", type=float, default=0.0, metavar="SECONDS",
                   help="on SIGTERM, keep every vassal serving this long first (the emperor reports "
                        "draining, so `emperor health` fails and load balancers move away); default 0")
    r.add_argument("--tyrant", action="store_true", help="run each vassal as its file's owner (root only)")
    r.add_argument("--control", metavar="PATH",
                   help="bind the control socket here instead of the runtime dir "
                        "(default: $EMPEROR_CONTROL, else one derived from DIR)")
    r.add_argument("--metrics", metavar="HOST:PORT", help="also serve Prometheus metrics at http://HOST:PORT/metrics")
    r.add_argument("--graceful-removal", action="store_true",
                   help="a deleted vassal file stops its master gracefully (in-flight requests finish "
                        "within --grace) instead of at once (SIGINT, uWSGI's way); a file's own "
                        "`graceful-removal = true/false` decides for it")
    r.add_argument("--emperor-on-demand-directory", metavar="DIR",
                   help="on-demand vassals (uWSGI's option): the emperor binds the UNIX socket DIR/NAME.socket "
                        "of vassal NAME.ini and starts its master at the first connection")
    r.add_argument("--emperor-on-demand-extension", metavar="EXT",
                   help="on-demand vassals (uWSGI's option): the socket of NAME.ini is the address written "
                        "in NAME.ini + EXT (e.g. .socket); the emperor binds it, a connection starts the master")
    r.add_argument("--emperor-on-demand-exec", metavar="CMD", help="not supported (refused)")
    r.add_argument("--preimport", metavar="MOD,...",
                   help="import these modules in the emperor before forking masters (e.g. django,django.db.models): "
                        "a cold start skips their import; every vassal then uses the emperor's copy")
    r.add_argument("--strict-compat", action="store_true",
                   help="refuse a vassal using an option uWSGI knows but emperor does not support "
                        "(by default: a warning)")
    m = sub.add_parser("master", help="run one master in the foreground (no emperor)",
                       description="Run one vassal's master in the foreground. SIGHUP reloads it gracefully; "
                                   "SIGINT (Ctrl-C) stops it; SIGTERM reloads it unless `die-on-term = true`.")
    m.add_argument("file", metavar="FILE", help="the vassal file (FILE.ini, or FILE.ini:section)")
    m.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
    s = sub.add_parser("status", help="the vassals of a running emperor, live (or --once, --json)",
                       description="A live view of a running emperor's vassals, refreshed every second "
                                   "(Ctrl-C quits); with NAME, that vassal's workers.")
    s.add_argument("first", nargs="?", metavar="DIR",
                   help="the vassals directory, when it is one; otherwise this is NAME")
    s.add_argument("name", nargs="?", metavar="NAME",
                   help="show this vassal's workers (its file name; `.ini` may be left out)")
    s.add_argument("-d", "--directory", metavar="DIR", help=DIRECTORY_HELP)
    s.add_argument("--control", metavar="PATH", help=CONTROL_HELP)
    s.add_argument("--once", action="store_true",
                   help="print one frame and exit (it takes a second, to measure requests per second)")
    s.add_argument("--json", action="store_true", help="print the emperor's whole status document as JSON")
    rs = sub.add_parser("restart", help="clear a vassal's backoff and start or reload it now",
                        description="Clear a vassal's backoff and start it now, or reload it gracefully "
                                    "if it runs.")
    rs.add_argument("first", nargs="?", metavar="DIR", help="the vassals directory (or use -d DIR)")
    rs.add_argument("name", metavar="NAME", help="the vassal: its file name (`.ini` may be left out)")
    rs.add_argument("-d", "--directory", metavar="DIR", help=DIRECTORY_HELP)
    rs.add_argument("--control", metavar="PATH", help=CONTROL_HELP)
    ck = sub.add_parser("check", help="read vassal files as their masters would and say what each line does",
                        description="Read each vassal file as its master would (placeholders, includes, "
                                    "config logic, this environment), without binding or importing, and "
                                    "say what each line does; exit 0 when every file would start.")
    ck.add_argument("files", nargs="+", metavar="FILE", help="a vassal file (FILE.ini, or FILE.ini:section)")
    ck.add_argument("--json", action="store_true", help="print one JSON document")
    ck.add_argument("--problems", action="store_true", help="print only warnings and errors, and the summary")
    ck.add_argument("--strict-compat", action="store_true", help="read them as `emperor run --strict-compat` does")
    ck.add_argument("--vassals-dir", metavar="DIR", help="what %%v says (default: each file's directory)")
    h = sub.add_parser("health", help="exit 0 if the emperor answers and is healthy (for probes)",
                       description="One line and exit 0 when the emperor answers and is healthy; exit 1 "
                                   "when it does not answer, is shutting down, is not ready yet, or a "
                                   "vassal keeps failing.")
    h.add_argument("first", nargs="?", metavar="DIR", help="the vassals directory (or use -d DIR)")
    h.add_argument("-d", "--directory", metavar="DIR", help=DIRECTORY_HELP)
    h.add_argument("--control", metavar="PATH", help=CONTROL_HELP)
    h.add_argument("--live", action="store_true", help="only check that the emperor answers (liveness)")
    h.add_argument("--max-backoff", type=float, default=60.0, metavar="SECONDS",
                   help="a vassal in backoff this long (or longer) counts as failing (default 60)")
    h.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS",
                   help="how long to wait for the emperor's answer (default 3)")
    h.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                   help="a vassal starting, or failing to serve, longer than this is unhealthy (default 60)")
    return p


def _one_directory(p: argparse.ArgumentParser, positional: str | None, option: str | None) -> str | None:
    if positional and option and os.path.abspath(positional) != os.path.abspath(option):
        p.error(f"two directories given: {positional} and -d {option}")
    return positional or option


def _signal_pidfile(action: str, path: str) -> int:
    from emperor.master.pidfile import EMPEROR, MASTER, PidfileError, read_pid

    try:
        pid, kind = read_pid(path, (MASTER, EMPEROR) if action in EMPEROR_ACTIONS else (MASTER,))
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
    what = EMPEROR_ACTIONS[action] if kind == EMPEROR else action
    print(f"emperor: sent {signal.Signals(PIDFILE_SIGNALS[action]).name} to {kind} {pid} ({what})")
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
    parser = _parser()
    args = parser.parse_args(argv)
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
        from emperor.cli.locate import ENV_CONTROL, default_directory
        from emperor.emperor.process import run_emperor

        args.directory = _one_directory(parser, args.directory, args.directory_option) or default_directory()
        args.control = args.control or os.environ.get(ENV_CONTROL) or None
        return run_emperor(args)
    if args.command in ("restart", "health"):
        args.directory = _one_directory(parser, args.first, args.directory)
    if args.command == "status":
        if args.name is not None:        # DIR NAME
            args.directory = _one_directory(parser, args.first, args.directory)
            args.first = None
        from emperor.cli.status import run_status

        return run_status(args)
    if args.command == "health":
        from emperor.cli.health import run_health

        return run_health(args)
    if args.command == "check":
        from emperor.config.check import run_check

        return run_check(args)
    if args.command == "restart":
        from emperor.cli.restart import run_restart

        return run_restart(args)
    parser.print_help()
    return 2
