"""Request-body options: `limit-post` and `post-buffering` (uWSGI's Options doc; core/protocol.c,
uwsgi_parse_vars; core/utils.c, uwsgi_postbuffer_do_in_mem/_in_disk).

`limit-post = N`: a body announced larger than N bytes is answered 413 before any of it is
read (uWSGI drops such a request without an answer); a chunked body, whose size nobody
announced, is cut at N bytes: the read that passes N raises the same 413 (an application that
lets it through answers 413; one that catches it answers what it likes).

`post-buffering = N`: the whole body is read before the application is called, in memory when
it is smaller than N bytes, else into an anonymous temporary file (unlinked from the start,
closed once the response is sent): the application never waits on a slow uploader while it
holds its own resources (a database connection, a lock). The worker still waits, as uWSGI's
does: bounded by socket-timeout for each read. A chunked body gets the CONTENT_LENGTH it had
not (Django reads no body without one).
"""
from __future__ import annotations

import io
from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor.worker.layer import after, respond
from emperor.worker.protocols.http import HTTPError
from emperor.worker.streams import EMPTY_INPUT

_CHUNK = 65536


def _length(environ: dict) -> int | None:
    text = environ.get("CONTENT_LENGTH")
    if not text:
        return None
    if not text.isdigit():
        raise HTTPError(400, f"malformed CONTENT_LENGTH {text!r}")
    return int(text)


class LimitPost:
    """`limit-post`: 413 for a body over the limit."""

    def __init__(self, app: Callable, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        length = _length(environ)
        if length is not None:
            if length > self.limit:
                return respond(start_response, "413 Content Too Large",
                               b"Content Too Large\n", [("Connection", "close")])
        elif environ["wsgi.input"] is not EMPTY_INPUT:
            environ["wsgi.input"] = Limited(environ["wsgi.input"], self.limit)
        return self.app(environ, start_response)


class Limited:
    """A body of unknown length, cut at `limit` bytes: reading past it raises HTTPError(413)."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._left = limit

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise HTTPError(413, "request body over limit-post")
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while data := self._count(self._inner.read(_CHUNK)):
                parts.append(data)
            return b"".join(parts)
        return self._count(self._inner.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        # bounded: a line without a newline must not grow past the limit in memory
        bound = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        return self._count(self._inner.readline(bound))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return iter(self.readline, b"")

    def drain(self, limit: int, seconds: float) -> bool:
        return self._inner.drain(limit, seconds)


class PostBuffering:
    """`post-buffering`: the body read whole before the application runs."""

    def __init__(self, app: Callable, threshold: int) -> None:
        self.app = app
        self.threshold = threshold

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        inp = environ["wsgi.input"]
        if inp is EMPTY_INPUT:
            return self.app(environ, start_response)
        length = _length(environ)
        if length is not None and length < self.threshold:
            data = inp.read(length)
            if len(data) < length:
                raise HTTPError(400, "request body shorter than its Content-Length")
            environ["wsgi.input"] = io.BytesIO(data)
            return self.app(environ, start_response)
        body, total = self._spool(inp, length)
        if length is None:
            environ["CONTENT_LENGTH"] = str(total)
        environ["wsgi.input"] = body
        if isinstance(body, io.BytesIO):
            return self.app(environ, start_response)
        try:
            return after(self.app(environ, start_response), body.close)
        except BaseException:
            body.close()
            raise

    def _spool(self, inp: Any, length: int | None) -> tuple[Any, int]:
        """The body into memory up to the threshold, the rest (all of it, when its length says
        so at once) into a temporary file; (file at offset 0, size)."""
        body: Any = io.BytesIO()
        total = 0
        if length is not None:
            body = _tempfile()
        try:
            while True:
                data = inp.read(_CHUNK)
                if not data:
                    break
                total += len(data)
                if type(body) is io.BytesIO and total >= self.threshold:
                    spill = _tempfile()
                    spill.write(body.getvalue())
                    body = spill
                body.write(data)
            if length is not None and total < length:
                raise HTTPError(400, "request body shorter than its Content-Length")
            body.seek(0)
        except BaseException:
            body.close()
            raise
        return body, total


def _tempfile() -> Any:
    import tempfile  # only when a large body comes: not in every worker image

    return tempfile.TemporaryFile(prefix="emperor-body-")
