"""uWSGI 2.0's complete option list (uwsgi_options.json, generated from uWSGI's C sources by
scripts/gen_uwsgi_options.py): which names uWSGI knows, for what emperor does not honour.

Read only when a file has an option emperor neither honours nor ignores on purpose, and
kept small in memory (names and availability, not the help texts): a master image of a
file that uses only honoured options never reads it.
"""
from __future__ import annotations

import os
import re

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "uwsgi_options.json")

_known: dict[str, str] | None = None   # normalised name -> "" or what a build needs to have it


def load(path: str = DATA) -> dict:
    """The whole data file: `uwsgi` (its source), `columns`, `options` (one list per option)."""
    import json

    with open(path, encoding="utf-8") as f:
        data: dict = json.load(f)
    return data


def rows(data: dict) -> list[dict]:
    cols = data["columns"]
    return [dict(zip(cols, r)) for r in data["options"]]


def normal(name: str) -> str:
    """A key as emperor compares it: `_` read as `-` (uWSGI itself does so only for UWSGI_* names)."""
    return name.replace("_", "-")


def availability(o: dict, embedded: tuple[str, ...] | list[str]) -> str:
    """'' for an option of the default build (`pip install uwsgi`), else what a build needs."""
    if o["in_build"]:
        return ""
    if o["plugin"] and o["plugin"] not in embedded:
        return f"its {o['plugin']} plugin"
    cond = re.sub(r"defined\((\w+)\)", r"\1", o["cond"] or "?")
    return f"a uWSGI built with {cond}"


def known() -> dict[str, str]:
    global _known
    if _known is None:
        data = load()
        embedded = data["uwsgi"]["embedded_plugins"]
        _known = {normal(o["name"]): availability(o, embedded) for o in rows(data)}
    return _known


def lookup(name: str) -> str | None:
    """None: not a uWSGI option; "": one of the default build; else what a build needs to have it."""
    return known().get(normal(name))


def suggest(name: str, extra: tuple[str, ...] = ()) -> str | None:
    """The closest option name to a typo (`vaccum` -> `vacuum`), if one is close enough."""
    import difflib

    names = list(known()) + list(extra)
    close = difflib.get_close_matches(normal(name), names, n=1, cutoff=0.75)
    return close[0] if close else None
