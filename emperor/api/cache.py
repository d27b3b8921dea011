"""uWSGI's caching framework for applications: uwsgi.cache_get/set/... (plugins/python/uwsgi_pymodule.c).

Return values are uWSGI's: bytes or None from cache_get; True or None from set, update,
del, exists, clear and the math functions (uWSGI returns None, not False, on failure).
Keys and values may be bytes or str (str is UTF-8, as PyArg "s#" reads it). The last
argument names the cache (`cache2 = name=...`); without it, the first cache of the file
(the old-style `cache = N` one first, as uwsgi_cache_create_all orders them). A remote
cache (`name@host:port`) is not supported: the call behaves as for a missing cache.

The caches themselves are created by the master (emperor/master/spooler.py `api_parts`)
before the workers fork; `caches` is filled there and inherited by every worker.
"""
from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing into every master image
if TYPE_CHECKING:
    from emperor.api.cachemem import Cache

__all__ = ["cache_get", "cache_set", "cache_update", "cache_del", "cache_exists", "cache_clear",
           "cache_keys", "cache_inc", "cache_dec", "cache_mul", "cache_div", "cache_num"]

caches: dict[str, Cache] = {}      # name -> cache, in the file's order (the first is the default)


def _cache(name: str | bytes | None) -> Cache | None:
    if not name:      # None, or "" (django-uwsgi-cache's LOCATION left empty)
        return next(iter(caches.values()), None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return caches.get(name)


def _b(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _true(ok: bool) -> bool | None:
    return True if ok else None


def cache_get(key: str | bytes, cache: str | None = None) -> bytes | None:
    c = _cache(cache)
    return c.get(_b(key, "key")) if c is not None else None


def cache_exists(key: str | bytes, cache: str | None = None) -> bool | None:
    c = _cache(cache)
    return _true(c is not None and c.exists(_b(key, "key")))


def cache_set(key: str | bytes, value: str | bytes, expires: int = 0, cache: str | None = None) -> bool | None:
    """Fails (None) when the key exists: cache_update overwrites."""
    c = _cache(cache)
    return _true(c is not None and c.set(_b(key, "key"), _b(value, "value"), int(expires)))


def cache_update(key: str | bytes, value: str | bytes, expires: int = 0, cache: str | None = None) -> bool | None:
    c = _cache(cache)
    return _true(c is not None and c.set(_b(key, "key"), _b(value, "value"), int(expires), update=True))


def cache_del(key: str | bytes, cache: str | None = None) -> bool | None:
    c = _cache(cache)
    return _true(c is not None and c.delete(_b(key, "key")))


def cache_clear(cache: str | None = None) -> bool | None:
    c = _cache(cache)
    return _true(c is not None and c.clear())


def cache_keys(cache: str | None = None) -> list[bytes]:
    c = _cache(cache)
    if c is None:
        raise ValueError("no local uWSGI cache available")
    return c.keys()


def cache_num(key: str | bytes, cache: str | None = None) -> int:
    """The 8-byte number at `key` (what cache_inc keeps there), 0 when absent or not 8 bytes."""
    value = cache_get(key, cache)
    return int.from_bytes(value, "little", signed=True) if value is not None and len(value) == 8 else 0


def _math(op: str, key: str | bytes, value: int, expires: int, cache: str | None) -> bool | None:
    c = _cache(cache)
    return _true(c is not None and c.math(_b(key, "key"), int(value), op, int(expires)))


def cache_inc(key: str | bytes, value: int = 1, expires: int = 0, cache: str | None = None) -> bool | None:
    return _math("inc", key, value, expires, cache)


def cache_dec(key: str | bytes, value: int = 1, expires: int = 0, cache: str | None = None) -> bool | None:
    return _math("dec", key, value, expires, cache)


def cache_mul(key: str | bytes, value: int = 2, expires: int = 0, cache: str | None = None) -> bool | None:
    return _math("mul", key, value, expires, cache)


def cache_div(key: str | bytes, value: int = 2, expires: int = 0, cache: str | None = None) -> bool | None:
    return _math("div", key, value, expires, cache)
