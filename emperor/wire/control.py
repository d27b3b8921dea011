"""command line -> emperor: the control socket.

A UNIX socket (mode 0600, emperor/paths.py says where); one request line in,
one JSON document out, then close. Requests: `status` (the default, also an
empty line): the emperor's table with each master's stats; `health`: the
table alone, answered at once; `restart NAME`: clear a backoff and start or
reload that vassal.
"""
from __future__ import annotations

import json
import socket

STATUS = "status"
HEALTH = "health"
RESTART = "restart"

TIMEOUT = 2.0          # a client has this long to send its request and read the answer
MAX_REQUEST = 8192


def query(path: str, request: str = STATUS, timeout: float = TIMEOUT) -> dict:
    """Ask the emperor at `path`; raises OSError (nobody there) or ValueError (bad answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(request.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc
