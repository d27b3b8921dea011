"""Static files, as uWSGI serves them: a WSGI layer in front of the application.

uWSGI's StaticFiles doc and its source are the reference: core/protocol.c (which
mappings are tried, in which order) and core/static.c (uwsgi_file_serve,
uwsgi_real_file_serve). A request is looked for, in this order, under each
`check-static` directory (+ PATH_INFO), each `static-map` (mountpoint replaced by
the directory; longest mountpoint first, the file's order among equal ones),
each `static-map2` (the whole PATH_INFO appended), and `DOCUMENT_ROOT` with
`check-static-docroot`; the first regular file found is served, and a request
that matches none goes to the application. Only GET and HEAD are served;
`static-skip-ext` sends a PATH_INFO (or a resolved file name) with that ending
to the application.

Safety. The path is resolved by the kernel: the file is opened with O_PATH (no
side effect, even on a FIFO or a device) and /proc/self/fd gives its real path,
symlinks and `..` resolved. That path must be the mapped root or under it, or
under a `static-safe` directory; otherwise the request is refused with 403
(uWSGI logs a security error and passes the request on to the application; a
refusal cannot serve the file by accident). Only a regular file is served, the
one that was checked: it is reopened through its O_PATH descriptor, so a
symlink swapped in between cannot redirect the read. A NUL in the path is a
400. Two deliberate differences from uWSGI: a mountpoint matches at a path
segment boundary (`/static` maps `/static/x`, not `/staticx`), and "under the
root" means under it as a directory (uWSGI compares strings, so `/srv/static2`
passes for `/srv/static`).

The response: `Content-Type` from the system MIME table (Python's `mimetypes`
defaults, then /etc/mime.types, then each `mimefile`), `Last-Modified`, a
strong `ETag` of mtime and size, `If-None-Match` then `If-Modified-Since` ->
304, one byte range -> 206 (416 when unsatisfiable; several ranges get the
whole file, 200, which RFC 9110 14.2 allows), `If-Range`, `Expires` as uWSGI's
`static-expires*` options compute it, and a `.br`/`.gz` sibling for a client
that accepts it when a `static-gzip*` option covers the file (with `Vary:
Accept-Encoding`). The body is the file through `wsgi.file_wrapper`: sendfile(2)
from the worker's loop, which never waits for a slow client (offload.py).
"""
from __future__ import annotations

import mimetypes
import os
import re
import stat
import time

from emperor.files import open_nonblocking
from emperor.log import log
from emperor.worker.wsgi import FileWrapper

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every worker image
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from emperor.config import Config

_O_PATH = getattr(os, "O_PATH", 0)
_PROC = _O_PATH != 0 and os.path.isdir("/proc/self/fd")
_NOT_MODIFIED = "304 Not Modified"
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")
_QVALUE = re.compile(r"q[ \t]*=[ \t]*([0-9.]+)")


def http_date(t: float) -> str:
    g = time.gmtime(t)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[g.tm_wday], g.tm_mday, _MONTH_NAMES[g.tm_mon],
                                                    g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


_MONTH_NAMES = ("",) + tuple(_MONTHS)


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form
    uWSGI reads (static.c: parse_http_date); the two obsolete forms RFC 9110 5.6.7 also names are
    read through email.utils, imported only then. None if it is no date."""
    t = text.strip()
    if len(t) == 29 and t[3] == "," and t.endswith(" GMT"):
        try:
            day, mon, year = int(t[5:7]), _MONTHS[t[8:11]], int(t[12:16])
            hh, mm, ss = int(t[17:19]), int(t[20:22]), int(t[23:25])
        except (KeyError, ValueError):
            return None
        # days from the civil date (H. Hinnant's algorithm): no calendar module in the worker
        y = year - (mon <= 2)
        era = y // 400
        yoe = y - era * 400
        doy = (153 * (mon + (-3 if mon > 2 else 9)) + 2) // 5 + day - 1
        days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
        return days * 86400 + hh * 3600 + mm * 60 + ss
    from email.utils import parsedate_tz, mktime_tz
    parsed = parsedate_tz(t)
    return mktime_tz(parsed) if parsed else None


def mime_table(files: list[str]) -> dict[str, str]:
    """Extension (without the dot) -> type: Python's table, then /etc/mime.types, then `mimefile`s."""
    mt = mimetypes.MimeTypes()
    for path in ["/etc/mime.types", *files]:
        try:
            mt.read(path)
        except OSError as e:
            if path in files:
                log(f"mimefile {path}: {e.strerror}; ignored")
    return {ext[1:]: t for ext, t in mt.types_map[True].items()}


def _expiry_rules(items: list[str], sep: str, regexp: bool) -> list[tuple[Any, int]]:
    out = []
    for item in items:
        key, _, secs = item.partition(sep)
        out.append((re.compile(key) if regexp else key, int(secs)))
    return out


class StaticFile:
    """The open file behind a static response: what FileWrapper and sendfile(2) need.
    `tell()` is the first byte to send; `read()` serves a layer that iterates the body."""

    __slots__ = ("fd", "offset", "end")

    def __init__(self, fd: int, offset: int, end: int) -> None:
        self.fd, self.offset, self.end = fd, offset, end

    def fileno(self) -> int:
        return self.fd

    def tell(self) -> int:
        return self.offset

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.offset if n < 0 else min(n, self.end - self.offset)
        data = os.pread(self.fd, n, self.offset) if n > 0 else b""
        self.offset += len(data)
        return data

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class Refused(Exception):
    """A path that resolves outside its root (or holds a NUL): answered, never passed on."""

    def __init__(self, status: str, why: str) -> None:
        super().__init__(why)
        self.status = status


class Static:
    """The layer: `static-map`, `check-static` & co. in front of `app` (emperor/worker/features.py)."""

    def __init__(self, config: Config, app: Callable) -> None:
        self.app = app
        self.skip_ext = tuple(config.static_skip_ext)
        self.index = [os.fsencode(n) for n in config.static_index]
        self.safe = [_dir_prefix(_real(os.fsencode(p))) for p in config.static_safe]
        self.docroot = config.check_static_docroot
        # (mountpoint, root bytes, root is a file, append the whole PATH_INFO)
        self.maps: list[tuple[str, bytes, bool, bool]] = []
        for d in config.check_static:
            self._add("check-static", "", d, True)
        for item in sorted(config.static_map, key=lambda m: -len(m.partition("=")[0])):
            mount, _, d = item.partition("=")
            self._add("static-map", mount, d, False)
        for item in sorted(config.static_map2, key=lambda m: -len(m.partition("=")[0])):
            mount, _, d = item.partition("=")
            self._add("static-map2", mount, d, True)
        self.mime = mime_table(config.mimefile)
        self.expires = [(_expiry_rules(config.static_expires, " ", True), False, "file"),
                        (_expiry_rules(config.static_expires_mtime, " ", True), True, "file"),
                        (_expiry_rules(config.static_expires_path_info, " ", True), False, "PATH_INFO"),
                        (_expiry_rules(config.static_expires_path_info_mtime, " ", True), True, "PATH_INFO"),
                        (_expiry_rules(config.static_expires_uri, " ", True), False, "REQUEST_URI"),
                        (_expiry_rules(config.static_expires_uri_mtime, " ", True), True, "REQUEST_URI"),
                        (_expiry_rules(config.static_expires_type, "=", False), False, "type"),
                        (_expiry_rules(config.static_expires_type_mtime, "=", False), True, "type")]
        self.expires = [e for e in self.expires if e[0]]
        self.gzip_all = config.static_gzip_all
        self.gzip_dirs = tuple(os.fsencode(d) for d in config.static_gzip_dir)
        self.gzip_exts = tuple(os.fsencode(e) for e in config.static_gzip_ext)
        self.gzip_res = [re.compile(os.fsencode(r)) for r in config.static_gzip]
        self.gzip = bool(self.gzip_all or self.gzip_dirs or self.gzip_exts or self.gzip_res)
        self.serve_mode = {"x-sendfile": "X-Sendfile", "x-accel-redirect": "X-Accel-Redirect"}.get(
            config.file_serve_mode or "")
        self.files: dict[tuple, tuple] = {}   # (real path, mtime, size, coding) -> describe(), lately served

    def _add(self, option: str, mount: str, directory: str, append: bool) -> None:
        try:
            root = os.path.realpath(os.fsencode(directory), strict=True)
            is_file = not os.path.isdir(root)
        except OSError as e:
            log(f'{option} {mount + "=" if mount else ""}{directory}: {e.strerror}; ignored')
            return
        self.maps.append((mount.rstrip("/") if not is_file else mount, root, is_file, append))

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"]
        if (method != "GET" and method != "HEAD") or (self.skip_ext and path.endswith(self.skip_ext)):
            return self.app(environ, start_response)
        try:
            for mount, root, is_file, append in self.maps:
                if mount:
                    if not path.startswith(mount):
                        continue
                    rest = path[len(mount):]
                    if rest and rest[0] != "/" and not is_file:
                        continue  # /static maps /static/x, not /staticx
                    if is_file:
                        if rest:
                            continue
                        found = self.find(root, root, b"")
                    else:
                        found = self.find(root, root, _fs(path if append else rest))
                else:
                    found = self.find(root, root, _fs(path))
                if found is not None:
                    return self.respond(environ, start_response, root, *found)
            if self.docroot and environ.get("DOCUMENT_ROOT"):
                root = _real(os.fsencode(environ["DOCUMENT_ROOT"]))
                found = self.find(root, root, _fs(path))
                if found is not None:
                    return self.respond(environ, start_response, root, *found)
        except Refused as e:
            log(f"static: {e} (PATH_INFO {path!r})")
            body = e.status.encode() + b"\n"
            start_response(e.status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return self.app(environ, start_response)

    def find(self, root: bytes, top: bytes, rel: bytes) -> tuple[int, bytes, os.stat_result] | None:
        """(descriptor, real path, stat) of the regular file `root + rel` names, or of a
        `static-index` file if it names a directory; None if there is none; Refused if the
        path resolves outside `top` and every static-safe directory."""
        if b"\0" in rel:
            raise Refused("400 Bad Request", "NUL in the path")
        if rel and rel[:1] != b"/":
            rel = b"/" + rel
        opened = _resolve(root + rel)
        if opened is None:
            return None
        fd, real, st = opened
        if not self.inside(real, top):
            os.close(fd)
            raise Refused("403 Forbidden", _security(real, top))
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            for name in self.index:
                inner = _resolve(real + b"/" + name)
                if inner is None:
                    continue
                if not self.inside(inner[1], top):
                    os.close(inner[0])
                    raise Refused("403 Forbidden", _security(inner[1], top))
                if stat.S_ISREG(inner[2].st_mode):
                    return self.regular(*inner)
                os.close(inner[0])
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return self.regular(fd, real, st)

    def regular(self, fd: int, real: bytes, st: os.stat_result) -> tuple[int, bytes, os.stat_result] | None:
        if self.skip_ext and os.fsdecode(real).endswith(self.skip_ext):
            os.close(fd)
            return None  # uWSGI checks the resolved name too (uwsgi_file_serve)
        return fd, real, st

    def inside(self, real: bytes, top: bytes) -> bool:
        if real.startswith(top) and (len(real) == len(top) or real[len(top)] == 47 or top[-1] == 47):  # "/"
            return True
        return any(real.startswith(s) or real + b"/" == s for s in self.safe)

    def respond(self, environ: dict, start_response: Callable, top: bytes, fd: int, real: bytes,
                st: os.stat_result) -> Any:
        """uwsgi_real_file_serve: the headers, the conditions, and the file (or its sibling)."""
        coding = ""
        covered = self.gzip and self.covers(real)
        if covered:
            for c in self.codings(environ.get("HTTP_ACCEPT_ENCODING")):
                sibling = _resolve(real + (b".br" if c == "br" else b".gz"))
                if sibling is None:
                    continue
                if stat.S_ISREG(sibling[2].st_mode) and self.inside(sibling[1], top):
                    os.close(fd)
                    fd, st, coding = sibling[0], sibling[2], c
                    break
                os.close(sibling[0])
        key = (real, st.st_mtime_ns, st.st_size, coding)
        entry = self.files.get(key)
        if entry is None:
            if len(self.files) >= 512:
                self.files.clear()
            entry = self.files[key] = self.describe(real, st, coding, covered)
        name, mime, base, etag, modified, mtime = entry
        headers = list(base)
        if self.expires:
            self.add_expires(headers, environ, name, mime, mtime)
        if "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ:
            inm = environ.get("HTTP_IF_NONE_MATCH")
            if inm is not None:
                fresh = inm.strip() == "*" or etag in [t.strip().removeprefix("W/") for t in inm.split(",")]
            else:
                since = parse_http_date(environ["HTTP_IF_MODIFIED_SINCE"])
                fresh = since is not None and mtime <= since
            if fresh:
                os.close(fd)
                start_response(_NOT_MODIFIED, headers[1:])
                return []
        if self.serve_mode:
            os.close(fd)  # the front server sends the file: uWSGI's file-serve-mode
            start_response("200 OK", headers + [(self.serve_mode, name)])
            return []
        size = st.st_size
        start, end, status = 0, size, "200 OK"
        spec = environ.get("HTTP_RANGE")
        if spec is not None and _if_range(environ.get("HTTP_IF_RANGE"), etag, modified):
            r = _byte_range(spec, size)
            if r is None:
                os.close(fd)
                start_response("416 Range Not Satisfiable", [("Content-Range", f"bytes */{size}"),
                                                             ("Content-Length", "0")] + headers[1:])
                return []
            if r:
                start, end = r
                status = "206 Partial Content"
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        headers += (("Accept-Ranges", "bytes"), ("Content-Length", str(end - start)))
        start_response(status, headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            os.close(fd)
            return []
        return FileWrapper(StaticFile(fd, start, end))

    def describe(self, real: bytes, st: os.stat_result, coding: str, covered: bool) -> tuple:
        """What a file's responses share, made once per file version: (name, type, headers, ETag,
        Last-Modified, mtime). The type is the real name's (a symlink's target's, as in uWSGI)."""
        name = os.fsdecode(real)
        dot = name.rfind(".")
        mime = None
        if dot > name.rfind("/"):
            mime = self.mime.get(name[dot + 1:]) or self.mime.get(name[dot + 1:].lower())
        mime = mime or "application/octet-stream"
        headers = [("Content-Type", mime)]
        if covered:
            headers.append(("Vary", "Accept-Encoding"))
        if coding:
            headers.append(("Content-Encoding", coding))
        mtime = int(st.st_mtime)
        modified = http_date(mtime)
        etag = '"%x-%x%s"' % (st.st_mtime_ns, st.st_size, coding and "-" + coding)
        headers += (("Last-Modified", modified), ("ETag", etag))
        return name, mime, tuple(headers), etag, modified, mtime

    def covers(self, real: bytes) -> bool:
        """Whether a static-gzip* option asks for a compressed sibling of this file (uwsgi_static_want_gzip)."""
        return bool(self.gzip_all or (self.gzip_dirs and real.startswith(self.gzip_dirs))
                    or (self.gzip_exts and real.endswith(self.gzip_exts)) or any(r.search(real) for r in self.gzip_res))

    @staticmethod
    def codings(accept: str | None) -> list[str]:
        """The siblings to try for this Accept-Encoding, best first: br (.br), then gzip (.gz), each
        only if the client accepts it (q > 0; uWSGI only looks for the word)."""
        if not accept:
            return []
        q = {}
        for part in accept.lower().split(","):
            token, _, params = part.partition(";")
            m = _QVALUE.search(params)
            try:
                q[token.strip()] = float(m.group(1)) if m else 1.0
            except ValueError:
                q[token.strip()] = 0.0
        star = q.get("*", 0.0)
        return [c for c, ok in (("br", q.get("br", star)), ("gzip", q.get("gzip", q.get("x-gzip", star)))) if ok > 0]

    def add_expires(self, headers: list, environ: dict, name: str, mime: str, mtime: int) -> None:
        """The first matching static-expires* rule, in the order static.c tries them."""
        for rules, from_mtime, subject in self.expires:
            text = name if subject == "file" else mime if subject == "type" else environ.get(subject, "")
            for key, secs in rules:
                if (key == text) if subject == "type" else key.search(text):
                    base = mtime if from_mtime else int(time.time())
                    headers.append(("Expires", http_date(base + secs)))
                    return


def _security(real: bytes, top: bytes) -> str:
    return f"security error: {os.fsdecode(real)} is not under {os.fsdecode(top)} or a static-safe path"


def _fs(path: str) -> bytes:
    """PATH_INFO (bytes as latin-1 code points, PEP 3333) -> the file name's bytes."""
    return path.encode("latin-1", "replace")


def _real(path: bytes) -> bytes:
    return os.path.realpath(path)


def _dir_prefix(path: bytes) -> bytes:
    return path if path.endswith(b"/") else path + b"/"


def _resolve(path: bytes) -> tuple[int, bytes, os.stat_result] | None:
    """(open descriptor, real path, stat) of what `path` names, following symlinks; None if
    nothing. With O_PATH the open has no side effect (a FIFO, a device); a regular file is then
    reopened for reading through /proc/self/fd, so what is read is what was checked."""
    if not _PROC:
        try:
            real = os.path.realpath(path, strict=True)
            fd = open_nonblocking(real)
        except (OSError, ValueError):
            return None
        return fd, real, os.fstat(fd)
    try:
        pfd = os.open(path, _O_PATH | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        proc = b"/proc/self/fd/%d" % pfd
        real = os.readlink(proc)
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            return pfd, real, st   # a directory (for the index) or something never read
        fd = os.open(proc, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(pfd)
        return None
    os.close(pfd)
    return fd, real, st


def _if_range(value: str | None, etag: str, modified: str) -> bool:
    """RFC 9110 13.1.5: the range applies if there is no If-Range, or it names this very
    representation (its strong ETag, or its Last-Modified exactly)."""
    if value is None:
        return True
    value = value.strip()
    return value == etag if value.startswith('"') else value == modified


def _byte_range(spec: str, size: int) -> tuple[int, ...] | None:
    """(first, end) of a single byte range; () to ignore the header and send the whole file (a
    form not understood, or several ranges: RFC 9110 14.2 allows it); None if unsatisfiable (14.1.2)."""
    m = _RANGE.fullmatch(spec.strip())
    if m is None:
        return ()
    first, last = m.groups()
    if not first:
        if not last:
            return ()
        n = int(last)
        if n == 0 or size == 0:
            return None
        return max(size - n, 0), size
    start = int(first)
    if start >= size:
        return None
    end = min(int(last) + 1, size) if last else size
    if end <= start:
        return ()   # last < first: invalid syntax, ignored
    return start, end
