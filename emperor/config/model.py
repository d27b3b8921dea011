"""What reading a vassal file produces: a `Config` (emperor/settings.py), or a `ConfigError`, and
the findings behind either."""
from __future__ import annotations

from emperor.settings import Config

__all__ = ["Config", "ConfigError", "Finding", "where", "shown"]

# A finding's verdict: what an option line does (honoured ... error), what another line
# does (placeholder ... skipped), or a warning about a line that is not about its option.
HONOURED, NOOP, UNSUPPORTED, UNKNOWN, ERROR = "honoured", "no-op", "unsupported", "unknown", "error"
PLACEHOLDER, LOGIC, INCLUDE, SKIPPED, WARNING = "placeholder", "logic", "include", "skipped", "warning"
VERDICTS = (HONOURED, NOOP, UNSUPPORTED, UNKNOWN, ERROR, WARNING, PLACEHOLDER, LOGIC, INCLUDE, SKIPPED)
PROBLEMS = (UNSUPPORTED, UNKNOWN, ERROR, WARNING)


def where(path: str | None, line: int | None) -> str:
    if path is None:
        return ""
    return f"{path}:{line}: " if line is not None else f"{path}: "


def shown(text: str) -> str:
    """`text` fit for a one-line message: bytes that were not UTF-8 as \\x escapes."""
    if text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in raw)


class Finding:
    """What one line of a vassal file (or one UWSGI_* variable) does: its verdict and why.

    `message`: for a warning or an error, the line as the log, `emperor status` and
    ConfigError show it ('app.ini:9: option "static-map" is not supported by emperor; ignored').
    `category` (errors only): "reading" (the file's text), "undefined" (a placeholder
    nothing defines: a typo, or a fragment whose includer defines it), "file" (a file it
    names is missing or refused), "unsupported" (a feature emperor does not have: an
    unsupported option under strict-compat, @(exec://...)), "vassal" (read fine, but
    without a socket or an application).
    """

    __slots__ = ("file", "line", "option", "verdict", "detail", "message", "category")

    def __init__(self, file: str, line: int | None, option: str, verdict: str, detail: str = "",
                 message: str = "", category: str = "") -> None:
        self.file, self.line, self.option = file, line, option
        self.verdict, self.detail = verdict, detail
        self.message, self.category = message, category

    def text(self) -> str:
        """One line, as `emperor check` prints it."""
        option = f"{shown(self.option)}: " if self.option else ""
        if not self.detail:
            detail = ""
        elif self.verdict == NOOP:
            detail = f" because {shown(self.detail)}"
        elif self.verdict in PROBLEMS:
            detail = f": {shown(self.detail)}"
        else:
            detail = f" ({shown(self.detail)})"
        return f"{where(self.file, self.line)}{option}{self.verdict}{detail}"

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"file": self.file, "line": self.line, "option": self.option,
                                "verdict": self.verdict, "detail": shown(self.detail)}
        if self.message:
            d["message"] = shown(self.message)
        if self.category:
            d["category"] = self.category
        return d

    def __repr__(self) -> str:
        return f"Finding({self.text()!r})"


class ConfigError(Exception):
    """A vassal file that cannot be used; str() is one line 'file:line: message'.

    `problems`: every problem found in the file, one line each (the first is this one's);
    str() mentions how many more there are.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 problems: tuple[str, ...] = ()) -> None:
        super().__init__(message, path, line, problems)  # args match the signature: picklable
        self.message, self.path, self.line = message, path, line
        self.problems: tuple[str, ...] = problems or (where(path, line) + message,)

    def __str__(self) -> str:
        first = where(self.path, self.line) + self.message
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
