"""Whose vassal files the emperor runs, and as whom: a vassal file names the code to run.

Without --tyrant: a file anyone can write is refused, and a root emperor
refuses a file owned by another user (that user would run code as root:
sshd's StrictModes rule). With --tyrant (root only): each vassal runs as its
file's owner, never as root, and a file its group or others can write is refused.
"""
from __future__ import annotations

import os
import pwd
import stat

from emperor.files import TrustRule


def rule(tyrant: bool, owner: int | None) -> TrustRule:
    """Who may write what a vassal reads (its file, includes, and the directories on their way).

    As root: root alone, or in tyrant mode root and the vassal's owner; not writable by
    group or others. Otherwise anyone's files may be read (a bind-mounted directory of
    the host's user is normal in a container), but never a file anyone can write.
    """
    if os.geteuid() != 0:
        return TrustRule(None)
    return TrustRule(frozenset({0, owner}) if tyrant and owner is not None else frozenset({0}))


def owner_ids(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def check(path: str, name: str, tyrant: bool) -> tuple[int | None, int | None] | str:
    """(uid, gid) to run the vassal as (None: as us), or one line saying why it is refused."""
    try:
        st, lst = os.stat(path), os.lstat(path)
    except OSError as e:
        return f"{name}: {e.strerror}"
    mode = stat.S_IMODE(st.st_mode)
    if tyrant:
        if st.st_uid == 0:
            return f"{name}: owned by root; tyrant mode runs a vassal as its file's owner and never as root"
        if st.st_mode & 0o022:
            return f"{name}: writable by group or others (mode {mode:04o}); tyrant mode refuses it"
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, st.st_uid):
            return f"{name}: symlink owned by uid {lst.st_uid} points to a file of uid {st.st_uid}; refused"
        return st.st_uid, st.st_gid
    if st.st_mode & 0o002:
        return (f"{name}: writable by anyone (mode {mode:04o}); refused: "
                f"whoever writes it would choose the code this emperor runs")
    if os.geteuid() == 0 and st.st_uid != 0:
        try:
            owner = f"uid {st.st_uid} ({pwd.getpwuid(st.st_uid).pw_name})"
        except KeyError:
            owner = f"uid {st.st_uid}"
        return (f"{name}: owned by {owner} while the emperor runs as root; refused: its owner would "
                f"run code as root (chown it to root, or use --tyrant to run it as its owner)")
    return None, None
