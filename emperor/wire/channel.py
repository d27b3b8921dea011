"""emperor <-> master: one SOCK_STREAM socketpair per vassal, one message per line.

The master tells the emperor how it is doing, so that status, backoff and
readiness are decided from facts rather than guessed from PIDs; the emperor
tells the master what to do when a signal cannot say it (a graceful stop, a
reload before the master's handlers exist) and forks its reload preflights.
EOF means the other end is gone: a master whose emperor dies stops its stack.

Each message is a word, maybe followed by a space and text, then a newline;
a message may carry descriptors (SCM_RIGHTS). Both ends read through
`LineBuffer`, so a line split across reads is never lost.
"""
from __future__ import annotations

import socket

# master -> emperor
SPAWNED = "spawned"              # + its generation: sockets bound, signal handlers in place (SIGHUP is safe)
READY = "ready"                  # + its generation: every worker of it accepts
RESTORED = "restored"            # + the generation SIGURG brought back: it serves again
FAILING = "failing"              # + why: no worker can serve (each dies before its first request)
IDLE = "idle"                    # die-on-idle: no request for `idle` seconds, the master stops
RELOADING = "reloading"          # a graceful reload began
RELOAD_FAILED = "reload failed"  # + the last line of the error; the old generation keeps serving
LOYAL = "loyal"                  # the first request was served: the backoff may reset
STOPPING = "stopping"
ERROR = "error"                  # + one line: why it cannot start (its last words)
PREFLIGHT = "preflight"          # + the sockets it holds, with the output pipe as a descriptor:
                                 # fork my preflight; emperor -> master: + its exit code
# emperor -> master
GRACEFUL_STOP = "graceful stop"
RELOAD = "reload"

MASTER_SAYS = (SPAWNED, READY, RESTORED, FAILING, IDLE, RELOADING, RELOAD_FAILED, LOYAL, STOPPING, ERROR, PREFLIGHT)
EMPEROR_SAYS = (GRACEFUL_STOP, RELOAD, PREFLIGHT)
_WORDS = sorted(set(MASTER_SAYS + EMPEROR_SAYS), key=len, reverse=True)  # "reload failed" before "reload"

MAX_LINE = 4096      # a longer message is cut (encode) or refused (LineBuffer)
MAX_FDS = 4          # descriptors read per receive call


class ProtocolError(Exception):
    """The other end broke the protocol (a line too long); str() says how."""


def encode(word: str, text: str = "") -> bytes:
    """One message as it goes on the wire: newlines in the text become spaces, length is capped."""
    line = f"{word} {text}" if text else word
    return line.replace("\n", " ").encode("utf-8", "replace")[:MAX_LINE - 1] + b"\n"


def parse(line: str) -> tuple[str, str]:
    """(word, text) of one message; an unknown message is ("", line)."""
    line = line.strip()
    for word in _WORDS:
        if line == word:
            return word, ""
        if line.startswith(word + " "):
            return word, line[len(word) + 1:]
    return "", line


class LineBuffer:
    """Bytes in, complete lines out; a partial line waits for the rest, bounded by MAX_LINE."""

    def __init__(self, limit: int | None = MAX_LINE) -> None:
        self.limit = limit
        self.partial = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self.partial = (self.partial + data).split(b"\n")
        if self.limit is not None and len(self.partial) > self.limit:
            self.partial = b""
            raise ProtocolError(f"a message longer than {self.limit} bytes")
        return [line.decode("utf-8", "replace") for line in lines]


def send(sock: socket.socket, word: str, text: str = "", fds: list[int] | None = None) -> bool:
    """Send one message (blocking while the descriptors go); False when the other end is gone."""
    data = encode(word, text)
    try:
        if fds:
            blocking = sock.getblocking()
            sock.setblocking(True)
            try:
                socket.send_fds(sock, [data], fds)
            finally:
                sock.setblocking(blocking)
        else:
            sock.send(data)
        return True
    except OSError:
        return False
