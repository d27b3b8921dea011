"""Files as the emperor and the master see them: what makes one "changed".

One fingerprint for the vassals directory and for `touch-reload`, so both
agree on what a touch, an edit or a replacement is.
"""
from __future__ import annotations

import os
import stat

# (device, inode, mtime in ns, ctime in ns, size), following symlinks
Fingerprint = tuple[int, int, int, int, int]


def fingerprint(path: str, *, regular_only: bool = True) -> Fingerprint | None:
    """None when `path` is missing (or, with `regular_only`, not a regular file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if regular_only and not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
