"""What the WSGI layers of features.py share: answering a request themselves, acting after
the response went out, and the simplest layer, headers added and removed (`add-header`,
`del-header`, `http-keepalive = 0`).
"""
from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from typing import Any

from emperor.worker.wsgi import FileWrapper


def status_line(code: int, reason: str = "") -> str:
    if not reason:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
    return f"{code} {reason}"


def respond(start_response: Callable, status: str, body: bytes = b"",
            headers: list[tuple[str, str]] | None = None, content_type: str = "text/plain") -> list[bytes]:
    """A whole response of a layer's own: `status` ("404 Not Found"), a body, a length."""
    out = [("Content-Type", content_type), ("Content-Length", str(len(body)))] + (headers or [])
    start_response(status, out)
    return [body]


class _ClosingList(list):
    """A list body (so the worker still frames it with a Content-Length) with a close()."""

    def __init__(self, items: Any, close: Callable[[], None]) -> None:
        super().__init__(items)
        self.close = close


class _Closing:
    """Any other body, passed through, with `then` run after its own close()."""

    def __init__(self, result: Any, close: Callable[[], None]) -> None:
        self._it = iter(result)
        self.close = close

    def __iter__(self):
        return self._it


def after(result: Any, then: Callable[[], None]) -> Any:
    """`result`, with `then()` called once the worker has sent it and closed it (PEP 3333's
    close(), which the worker always calls). A list keeps its Content-Length framing, a
    wsgi.file_wrapper its sendfile(2)."""
    own = getattr(result, "close", None)

    def close() -> None:
        try:
            if own is not None:
                own()
        finally:
            then()

    if isinstance(result, (list, tuple)):
        return _ClosingList(result, close)
    if isinstance(result, FileWrapper):
        result.close = close
        return result
    return _Closing(result, close)


class Headers:
    """`add-header` and `del-header` (and `http-keepalive = 0`, a `Connection: close` on every
    response): on every response of the vassal, the layers' own included (uWSGI adds its
    additional headers to every response it writes, core/writer.c)."""

    def __init__(self, app: Callable, add: list[str], remove: list[str]) -> None:
        self.app = app
        self.add = [(name.strip(), value.strip()) for name, _, value in (h.partition(":") for h in add)]
        self.remove = {name.strip().lower() for name in remove}

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        add, remove = self.add, self.remove

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            if remove:
                headers = [h for h in headers if h[0].lower() not in remove]
            return start_response(status, headers + add, exc_info)

        return self.app(environ, start)
