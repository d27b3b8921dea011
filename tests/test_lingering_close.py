"""lingering_close over real loopback TCP: a refused client reads its 4xx instead of a reset.

The server side of each test is an accepted socket driven from the test thread; the
client runs in a thread of its own, which the test joins (no sleeps). The client
sends far more than the kernel's buffers hold (tcp_wmem + tcp_rmem are a few MiB),
so the server's close happens with request bytes still unread or still coming:
exactly the state of a worker refusing an oversized request.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from emperor.protocols.http import error_response, lingering_close

pytestmark = pytest.mark.timeout(30)

BIG = 32 << 20  # well above what loopback buffers can absorb
RESPONSE = error_response(431)


class ClientThread(threading.Thread):
    """Runs `script(sock)` on a connected client socket; keeps its result or its exception."""

    def __init__(self, port: int, script: Callable[[socket.socket], object]) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.script = script
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.script(self.sock)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            self.sock.close()


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def _send_big_then_read(sock: socket.socket) -> bytes:
    """What a client with a big request does: send it all, then read the answer to EOF."""
    sock.sendall(b"GET /" + b"a" * BIG)
    out = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        out += data


def _serve_refusal(listener: socket.socket, script) -> tuple[socket.socket, ClientThread]:
    """Accept the client, read one buffer of its request, send the refusal."""
    client = ClientThread(listener.getsockname()[1], script)
    client.start()
    conn, _ = listener.accept()
    conn.recv(65536)
    conn.sendall(RESPONSE)
    return conn, client


def test_a_plain_close_resets_a_client_that_is_still_sending(listener):
    """The problem itself, proved with the same client: without lingering, the client's
    send fails with a reset and it never gets to read the 431."""
    conn, client = _serve_refusal(listener, _send_big_then_read)
    conn.close()
    client.join(15)
    assert isinstance(client.error, (ConnectionResetError, BrokenPipeError)), client.error


def test_lingering_close_lets_the_client_finish_sending_and_read_the_refusal(listener):
    """RFC 9112 9.6: half-close, drain, then close: the client's send completes, and it reads
    the whole 431 followed by a clean EOF."""
    conn, client = _serve_refusal(listener, _send_big_then_read)
    discarded = lingering_close(conn, timeout=10, limit=2 * BIG)
    client.join(15)
    assert client.error is None, client.error
    assert client.result == RESPONSE
    assert discarded > BIG - (1 << 20)
    assert conn.fileno() == -1


def test_lingering_close_returns_at_once_when_the_client_closes(listener):
    """The usual case: the client reads the refusal and closes; nothing is waited for."""

    def read_then_close(sock: socket.socket) -> bytes:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        return sock.recv(65536)

    conn, client = _serve_refusal(listener, read_then_close)
    start = time.monotonic()
    lingering_close(conn, timeout=5, idle=5)
    assert time.monotonic() - start < 2.0
    client.join(5)
    assert client.result == RESPONSE


def test_lingering_close_gives_up_on_an_idle_client_after_idle(listener):
    """A client that keeps the connection open without sending must not hold the thread
    for the whole timeout."""
    done = threading.Event()

    def keep_open(sock: socket.socket) -> None:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        done.wait(10)

    conn, client = _serve_refusal(listener, keep_open)
    start = time.monotonic()
    lingering_close(conn, timeout=5, idle=0.3)
    elapsed = time.monotonic() - start
    done.set()
    client.join(5)
    assert 0.25 < elapsed < 2.0


def test_lingering_close_gives_up_on_an_endless_sender_after_timeout(listener):
    """A client that never stops sending is cut off after `timeout`, whatever it sends."""
    stop = threading.Event()

    def send_forever(sock: socket.socket) -> None:
        chunk = b"x" * 65536
        while not stop.is_set():
            try:
                sock.sendall(chunk)
            except OSError:
                return

    conn, client = _serve_refusal(listener, send_forever)
    start = time.monotonic()
    discarded = lingering_close(conn, timeout=0.5, idle=0.3, limit=1 << 40)
    elapsed = time.monotonic() - start
    stop.set()
    client.join(5)
    assert 0.4 < elapsed < 2.0 and discarded > 0


def test_lingering_close_stops_after_limit_bytes(listener):
    conn, client = _serve_refusal(listener, _send_big_then_read)
    start = time.monotonic()
    discarded = lingering_close(conn, timeout=10, idle=5, limit=1 << 20)
    assert discarded == 1 << 20
    assert time.monotonic() - start < 3.0
    client.join(15)
    assert client.error is not None or client.result == RESPONSE  # reset now, or buffers held it


def test_lingering_close_of_a_socket_the_client_already_reset(listener):
    """A reset before we linger is no error: the socket is closed and nothing is raised."""
    client = ClientThread(listener.getsockname()[1], lambda sock: sock.sendall(b"GET / HTTP/1.1\r\n"))
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.start()
    conn, _ = listener.accept()
    client.join(5)  # closed with SO_LINGER 0: a reset
    assert conn.recv(100) == b"GET / HTTP/1.1\r\n"
    lingering_close(conn, timeout=1)
    assert conn.fileno() == -1
