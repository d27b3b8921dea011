"""`emperor health [DIR]`: one question to the emperor's control socket, for probes.

The emperor is found as by every command (emperor/cli/locate.py): `-d DIR` or
DIR, `$EMPEROR_DIRECTORY`, `./vassals.d`, or the only one running.

For a container HEALTHCHECK, a Kubernetes exec probe or a monitoring script.
Exit 0 with one line (`ok: 2 vassals: 2 running`) when healthy, exit 1 with
one line saying why otherwise:

- the emperor does not answer on its control socket within `--timeout`
  (not started yet, gone, or its loop is wedged);
- it is shutting down: state `draining` (SIGTERM came and `--shutdown-delay`
  still runs: the vassals serve, but new traffic should go elsewhere) or
  `stopping`;
- it is not ready yet: the vassals present at start have not settled, i.e. are
  neither serving nor failed (see emperor/emperor/systemd.py; at most 60 s);
- a vassal has not served within `--grace` seconds (default 60): still `starting`, or
  `failing` (its master runs but every worker dies before its first request);
- a vassal keeps failing: it is in `backoff` and its backoff delay has reached
  `--max-backoff` seconds (default 60, the ceiling: it has failed to start about
  seven times in a row, for about two minutes, without ever becoming ready).

Not failures: `config error` (restarting the container cannot fix a bad file;
the status says which), `reload failed` (the previous generation keeps serving),
and a vassal in its first backoffs (it may recover by itself).

`--live` asks only the first question (the emperor answers), for a liveness
probe: restarting the whole container because one vassal is broken, or because
it is draining, would do more harm than good.
"""
from __future__ import annotations

import argparse
import sys
import time

from emperor.cli.locate import NoEmperor, locate
from emperor.wire.control import query

MAX_BACKOFF = 60.0
GRACE = 60.0   # a vassal starting, or failing to serve, for longer than this is unhealthy


def check(doc: dict, *, live: bool = False, max_backoff: float = MAX_BACKOFF,
          grace: float = GRACE, now: float | None = None) -> tuple[bool, str]:
    """(healthy, one line) for a control-socket status document."""
    vassals = doc.get("vassals") or {}
    states = {name: (v or {}).get("state", "?") for name, v in vassals.items()}
    from emperor.emperor.systemd import summary

    line = summary(states)
    if live:
        return True, f"ok: emperor pid {doc.get('pid')} answers; {line}"
    state = doc.get("state", "running")
    if state != "running":
        return False, f"emperor is {state} (shutting down); {line}"
    if doc.get("ready") is False:
        starting = sorted(n for n, s in states.items() if s in ("starting", "reloading"))
        return False, "emperor is not ready yet" + (f": waiting for {', '.join(starting)}" if starting else "")
    failing = []
    now = time.time() if now is None else now
    for name, v in sorted(vassals.items()):
        v = v or {}
        stuck = now - float(v.get("since") or now)
        if v.get("state") in ("failing", "starting") and stuck > grace:
            err = (v.get("last_error") or v.get("last_event") or "").splitlines()
            failing.append(f"{name} has not served for {stuck:.0f}s ({v['state']}"
                           + (f": {err[0][:160]}" if err else "") + ")")
        elif v.get("state") == "backoff" and float(v.get("backoff") or 0) >= max_backoff:
            err = (v.get("last_error") or v.get("last_event") or "").splitlines()
            failing.append(f"{name} keeps failing (backoff {float(v['backoff']):g}s"
                           + (f": {err[0][:160]}" if err else "") + ")")
    if failing:
        return False, "; ".join(failing)
    return True, "ok: " + line


def run_health(args: argparse.Namespace) -> int:
    try:
        target = locate(args.directory, args.control)
    except NoEmperor as e:
        print(f"emperor health: {str(e).removeprefix('emperor: ')}", file=sys.stderr)
        return 1
    path = target.control
    try:
        # `health`: the emperor's table alone, answered at once (`status` also asks every master
        # for its stats); an emperor that does not know the word answers with its status.
        doc = query(path, "health", timeout=args.timeout)
        if not (isinstance(doc, dict) and "vassals" in doc):
            doc = query(path, timeout=args.timeout)
    except FileNotFoundError:
        print(f"emperor health: no emperor for {target.directory} (no {path})", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"emperor health: the emperor does not answer on {path}: {e}", file=sys.stderr)
        return 1
    if not isinstance(doc, dict):
        print(f"emperor health: unexpected answer on {path}", file=sys.stderr)
        return 1
    ok, line = check(doc, live=args.live, max_backoff=args.max_backoff,
                     grace=getattr(args, "grace", GRACE))
    print(line if ok else f"emperor health: {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
