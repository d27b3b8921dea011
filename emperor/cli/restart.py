"""`emperor restart [DIR] NAME`: clear a vassal's backoff and start or reload it now."""
from __future__ import annotations

import argparse
import sys

from emperor.cli.locate import NoEmperor, ask, locate, no_such_vassal, split_vassal_path, vassal_name
from emperor.wire.control import HEALTH, RESTART


def run_restart(args: argparse.Namespace) -> int:
    directory, name = args.directory, args.name
    if directory is None and args.control is None and (split := split_vassal_path(name)):
        directory, name = split         # `emperor restart vassals.d/app.ini`
    try:
        target = locate(directory, args.control)
        names = ask(target, HEALTH).get("vassals") or {}   # the table alone, answered at once
        found = vassal_name(name, names)
        if found is None:
            print(no_such_vassal(name, names), file=sys.stderr)
            return 1
        doc = ask(target, f"{RESTART} {found}")
    except NoEmperor as e:
        print(e, file=sys.stderr)
        return 1
    if not doc.get("ok"):
        print(f"emperor: {doc.get('error') or 'restart refused'}", file=sys.stderr)
        return 1
    print(f"emperor: {found}: restart requested, now {doc.get('state', '?')}")
    return 0
