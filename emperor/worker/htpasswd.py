"""Password checks for the `basicauth` routing action (uWSGI's plugins/router_basicauth).

A `user:password` pair in the rule itself, or an htpasswd file. uWSGI reads the file again for
every request and checks `{SHA}` and crypt(3) hashes, cut to 13 characters (so DES only). Here
the file is read when the worker starts and again whenever it changes (a stat per check, no
read), and these hashes are checked: `{SHA}`, `$apr1$` (Apache's default, computed here),
and whatever the system's crypt(3) knows: DES, `$1$`, `$5$`, `$6$`, bcrypt `$2b$`/`$2y$`,
yescrypt `$y$` (libxcrypt, through ctypes: Python 3.13 has no crypt module). Comparisons
take constant time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

from emperor.log import log

_APR_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_crypt_lock = threading.Lock()
_libcrypt: list = []


def _crypt(password: str, setting: str) -> str | None:
    """crypt(3) of the C library (libcrypt), or None where there is none."""
    if not _libcrypt:
        import ctypes

        lib = None
        for name in ("libcrypt.so.1", "libcrypt.so.2", "libcrypt.so"):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is not None:
            lib.crypt.restype = ctypes.c_char_p
            lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        _libcrypt.append(lib)
    lib = _libcrypt[0]
    if lib is None:
        return None
    with _crypt_lock:  # crypt() returns a static buffer: one thread at a time
        out = lib.crypt(password.encode("utf-8"), setting.encode("ascii", "replace"))
    return out.decode("ascii", "replace") if out else None


def _to64(value: int, n: int) -> str:
    out = ""
    for _ in range(n):
        out += _APR_ALPHABET[value & 0x3F]
        value >>= 6
    return out


def md5_crypt(password: str, salt: str, magic: str = "$apr1$") -> str:
    """Poul-Henning Kamp's MD5-crypt, as Apache's htpasswd -m makes it (`$apr1$`, or `$1$`)."""
    pw, salt_b, magic_b = password.encode("utf-8"), salt[:8].encode("ascii"), magic.encode("ascii")
    final = hashlib.md5(pw + salt_b + pw).digest()
    ctx = pw + magic_b + salt_b
    for i in range(len(pw), 0, -16):
        ctx += final[:min(16, i)]
    i = len(pw)
    while i:
        ctx += b"\0" if i & 1 else pw[:1]
        i >>= 1
    final = hashlib.md5(ctx).digest()
    for i in range(1000):
        c = (pw if i & 1 else final) + (salt_b if i % 3 else b"") + (pw if i % 7 else b"")
        final = hashlib.md5(c + (final if i & 1 else pw)).digest()
    f = final
    text = "".join(_to64((f[a] << 16) | (f[b] << 8) | f[c], 4)
                   for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)))
    return f"{magic}{salt[:8]}${text}{_to64(f[11], 2)}"


def verify(password: str, hashed: str) -> bool:
    """Whether `password` is the one `hashed` (an htpasswd entry's second field) was made from."""
    if hashed.startswith("{SHA}"):
        digest = base64.b64encode(hashlib.sha1(password.encode("utf-8")).digest()).decode()
        return hmac.compare_digest(digest, hashed[5:])
    for magic in ("$apr1$", "$1$"):
        if hashed.startswith(magic):
            salt = hashed[len(magic):].partition("$")[0]
            return hmac.compare_digest(md5_crypt(password, salt, magic), hashed)
    computed = _crypt(password, hashed)
    return computed is not None and len(hashed) >= 13 and hmac.compare_digest(computed, hashed)


class Htpasswd:
    """An htpasswd file (`user:hash` lines), read again when it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.users: dict[str, str] = {}
        self.lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            if self.stamp != (0, 0, 0):
                log(f"basicauth: cannot read {self.path}: {e.strerror}; nobody is authenticated")
            self.stamp, self.users = (0, 0, 0), {}
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self.stamp:
            return
        with self.lock:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
            except OSError as e:
                log(f"basicauth: cannot read {self.path}: {e.strerror}; nobody is authenticated")
                self.stamp, self.users = (0, 0, 0), {}
                return
            users: dict[str, str] = {}
            for line in lines:
                user, colon, hashed = line.strip().partition(":")
                if colon and user and not user.startswith("#"):
                    users.setdefault(user, hashed.strip())
            self.stamp, self.users = stamp, users

    def check(self, user: str, password: str) -> bool:
        self.refresh()
        hashed = self.users.get(user)
        return hashed is not None and verify(password, hashed)
