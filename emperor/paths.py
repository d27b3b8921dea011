"""Where an emperor's control socket lives, derived from its vassals directory alone.

So `emperor status`, run from the directory where `emperor run` was started,
finds that emperor with no option: both compute the same path.
"""
from __future__ import annotations

import hashlib
import os


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "emperor")
    return f"/tmp/emperor-{os.getuid()}"


def control_socket(directory: str) -> str:
    real = os.path.realpath(directory)
    digest = hashlib.sha1(real.encode()).hexdigest()[:12]
    return os.path.join(runtime_dir(), f"{os.path.basename(real) or 'root'}-{digest}.sock")


def ensure_runtime_dir() -> str:
    """Create the directory private to this user (0700), refusing one owned by someone else."""
    d = runtime_dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.stat(d)
    if st.st_uid != os.getuid():
        raise PermissionError(f"{d} belongs to uid {st.st_uid}, not to us")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)
    return d
