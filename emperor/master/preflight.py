"""The reload preflight: run in a throwaway process before the master re-executes.

If the new config does not parse, a new socket cannot be bound or the app
fails to import, the master must keep its current generation serving; doing
the check in a separate process costs the serving generation nothing.
"""
from __future__ import annotations

import os
import sys

from emperor import sockets
from emperor.config import ConfigError, load_config
from emperor.files import Scarce, TrustRule
from emperor.master import cron, daemons
from emperor.proc import drop_privileges
from emperor.wire import handoff
from emperor.worker.app import AppError, load


def preflight(path: str) -> int:
    try:
        # a preflight is always for a reload: what `if-reload` tests (UWSGI_RELOADS) is set in the next image
        environ = dict(os.environ)
        environ.setdefault(handoff.RELOADS, "1")
        config = load_config(path, vassals_dir=os.environ.get(handoff.VASSALS_DIR), environ=environ,
                             trust=TrustRule.adopt(os.environ.get(handoff.TRUST, "")),
                             strict_compat=os.environ.get(handoff.STRICT_COMPAT) == "1",
                             given_socket=bool(os.environ.get(handoff.ON_DEMAND)))   # an on-demand vassal's
        daemons.specs(config), cron.specs(config)   # their number is bounded: a reload must not fail later
        held = handoff.read_held(os.environ.get(handoff.HELD, ""))
        for kind, address in sockets.wanted(config):
            if (kind, address) in held:
                continue
            family, _ = sockets.parse_address(address)
            if family == sockets.socket.AF_UNIX:
                continue  # binding would replace a live file; checked for real after execve
            sockets.bind(kind, address, 1).sock.close()
        sockets.prepare([], config)   # a renewed certificate that cannot be loaded fails the reload, not the vassal
        drop_privileges(config.uid, config.gid)  # the app is imported as the master will import it
        load(config)
    except ConfigError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 1
    except sockets.SocketError as e:
        print(str(e), file=sys.stderr)
        return 1
    except Scarce as e:   # out of descriptors: this reload fails, the running generation stays
        print(f"{path}: cannot read: {e}", file=sys.stderr)
        return 1
    except AppError as e:
        if e.detail:
            print(e.detail, file=sys.stderr)
        print(str(e), file=sys.stderr)
        return 1
    return 0
