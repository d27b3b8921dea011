"""An application that reads the whole request body and answers what it was given.

Used by scripts/fuzz.py (whose oracle calls `echo` on the environ it expects, so the
server's answer and the oracle's prediction are compared as equal documents) and by
tests/test_http_strict.py. The document goes in the body; its SHA-256 also goes in
the X-Echo header, so that a HEAD response (no body) can be checked too.
"""
from __future__ import annotations

import hashlib
import json
import os


def echo(environ: dict, body: bytes) -> dict:
    """The parts of a request that a server must deliver intact, as one JSON-able document."""
    fields = {k: v for k, v in environ.items()
              if k.startswith(("HTTP_", "CONTENT_")) and isinstance(v, str)}
    return {
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "query": environ.get("QUERY_STRING"),
        "protocol": environ.get("SERVER_PROTOCOL"),
        "fields": fields,
        "body": hashlib.sha256(body).hexdigest(),
        "length": len(body),
    }


def encode(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def application(environ, start_response):
    body = environ["wsgi.input"].read()
    data = encode(echo(environ, body))
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data))),
                              ("X-Echo", hashlib.sha256(data).hexdigest()),
                              ("X-Pid", str(os.getpid()))])
    return [data]
