"""Which emperor a command talks to, and which of its vassals a NAME means.

Every command that talks to a running emperor (`status`, `restart`, `health`)
finds it the same way, the first that applies:

1. `--control PATH`: that control socket;
2. the vassals directory given on the command line (`-d DIR`, or the positional
   DIR where the command has one): the control socket `emperor run DIR` binds;
3. `$EMPEROR_CONTROL` (a control socket), then `$EMPEROR_DIRECTORY` (a vassals
   directory; `emperor run` takes it as its default directory too);
4. the current directory: `./vassals.d` (what `emperor run` watches when run
   from here), or the current directory itself, if an emperor listens for it;
5. the only emperor of this user that is running (its control socket in the
   runtime dir, emperor/paths.py). With several, the command says which there
   are and asks for `-d DIR`; with none, it says nobody answers for `./vassals.d`.

A vassal NAME is its file name, with or without `.ini` (`flask` is `flask.ini`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from emperor import paths
from emperor.wire.control import HEALTH, query

DEFAULT_DIRECTORY = "vassals.d"
ENV_DIRECTORY = "EMPEROR_DIRECTORY"
ENV_CONTROL = "EMPEROR_CONTROL"


class NoEmperor(Exception):
    """Nobody (or nobody we can choose) answers; str() is the one line to print."""


@dataclass
class Target:
    control: str        # the control socket
    directory: str      # the vassals directory it is for, as far as we know (for messages)


def default_directory() -> str:
    """What `emperor run` watches with no directory given."""
    return os.environ.get(ENV_DIRECTORY) or DEFAULT_DIRECTORY


def locate(directory: str | None = None, control: str | None = None) -> Target:
    """The emperor to talk to (see the module's docstring); raises NoEmperor when several
    run and nothing says which."""
    if control:
        return Target(control, os.path.abspath(directory) if directory else control)
    if directory:
        return Target(paths.control_socket(directory), os.path.abspath(directory))
    if os.environ.get(ENV_CONTROL):
        return Target(os.environ[ENV_CONTROL], f"${ENV_CONTROL}")
    if os.environ.get(ENV_DIRECTORY):
        return locate(os.environ[ENV_DIRECTORY])
    here = os.path.abspath(DEFAULT_DIRECTORY)
    for d in (here, os.getcwd()):
        if paths.answers(paths.control_socket(d)):
            return Target(paths.control_socket(d), d)
    running = [Target(path, _directory_of(path)) for path in paths.listening_control_sockets()]
    if len(running) == 1:
        return running[0]
    if running:
        dirs = ", ".join(t.directory for t in running)
        raise NoEmperor(f"emperor: {len(running)} emperors are running ({dirs}): "
                        f"say which with -d DIR (or ${ENV_DIRECTORY})")
    return Target(paths.control_socket(here), here)   # nobody: ask() says so for ./vassals.d


def _directory_of(path: str) -> str:
    try:
        return str(query(path, HEALTH, timeout=1.0).get("directory") or path)
    except (OSError, ValueError):
        return path


def ask(target: Target, request: str = "status") -> dict:
    try:
        doc = query(target.control, request)
    except OSError:
        raise NoEmperor(f"emperor: no emperor is running for {target.directory} "
                        f"(no answer on {target.control})") from None
    except ValueError:
        raise NoEmperor(f"emperor: the emperor on {target.control} gave an unreadable answer") from None
    return doc


def vassal_name(name: str, names: Iterable[str]) -> str | None:
    """The vassal `name` means: itself, or `name.ini`; None if neither is there."""
    names = set(names)
    for candidate in (name, name + ".ini"):
        if candidate in names:
            return candidate
    return None


def no_such_vassal(name: str, names: Iterable[str]) -> str:
    return f"emperor: no vassal named {name!r} (vassals: {', '.join(sorted(names)) or 'none'})"


def split_vassal_path(text: str) -> tuple[str, str] | None:
    """`vassals.d/app.ini` (a path to an existing file): (its directory, its name)."""
    if os.sep in text and os.path.isfile(text):
        return os.path.dirname(os.path.abspath(text)), os.path.basename(text)
    return None
