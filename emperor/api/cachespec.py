"""`cache2 = name=N,items=I,...`: one cache's definition, as uWSGI's core/cache.c reads it.

Checked when the vassal file is read (so a bad line is one clear error, not a master that
dies at start), and read again by the master that creates the cache (emperor/api/cachemem.py).
uWSGI's defaults (uwsgi_cache_create): blocksize 65536, keysize 2048, hashsize 65536.
"""
from __future__ import annotations

# the keys of uWSGI's kvlist (cache.c), ours or accepted and ignored (clusters, bitmaps, LRU)
_NUMBERS = ("items", "blocksize", "keysize", "hashsize", "math_initial")
_ALIASES = {"max_items": "items", "maxitems": "items", "hash_size": "hashsize", "key_size": "keysize",
            "lazy": "lazy_expire", "storesync": "store_sync", "storedelete": "store_delete",
            "nodes": "node", "udp_servers": "udp", "udp_server": "udp", "udpservers": "udp",
            "udpserver": "udp", "lru": "purge_lru"}
_IGNORED = ("blocks", "hash", "store_sync", "store_delete", "node", "sync", "udp", "bitmap", "lastmod",
            "purge_lru", "sweep_on_full", "clear_on_full", "no_expire")
# honoured flags: no "cache is FULL" line; expiry at lookup (what emperor always does)
_FLAGS = ("ignore_full", "lazy_expire")
MAX_BYTES = 1 << 36          # 64 GiB of items x blocksize: a typo, not a cache
MAX_ITEMS = (1 << 31) - 1    # item numbers are 32-bit in the shared table


class CacheSpec:
    __slots__ = ("name", "items", "blocksize", "keysize", "hashsize", "store", "math_initial", "ignored",
                 "ignore_full")

    def __init__(self, name: str, items: int, blocksize: int = 65536, keysize: int = 2048,
                 hashsize: int = 65536, store: str = "", math_initial: int = 0) -> None:
        self.name, self.items, self.blocksize, self.keysize = name, items, blocksize, keysize
        self.hashsize, self.store, self.math_initial = hashsize, store, math_initial
        self.ignored: list[str] = []     # keys uWSGI has that emperor does not act on
        self.ignore_full = False

    def geometry(self) -> tuple[int, int, int, int]:
        return (self.items, self.blocksize, self.keysize, self.hashsize)


def parse(text: str) -> CacheSpec:
    """A cache2 line -> CacheSpec; ValueError with uWSGI's complaint when it is wrong."""
    values: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        key = _ALIASES.get(key, key)
        if key not in _NUMBERS + _IGNORED + _FLAGS + ("name", "store"):
            raise ValueError(f'unable to parse cache definition: unknown key "{key}"')
        values[key] = value.strip() if eq else "1"
    if not values.get("name"):
        raise ValueError("you have to specify a cache name")
    if "items" not in values:
        raise ValueError("you have to specify the maximum number of cache items")
    nums = {}
    for key in _NUMBERS:
        if key in values:
            try:
                nums[key] = int(values[key])
            except ValueError:
                raise ValueError(f'invalid cache {key} "{values[key]}"') from None
    spec = CacheSpec(values["name"], **nums, store=values.get("store", ""))
    spec.ignored = [k for k in _IGNORED if k in values]
    spec.ignore_full = "ignore_full" in values
    if not 2 <= spec.items <= MAX_ITEMS:
        raise ValueError(f"invalid cache items {spec.items} (2 .. {MAX_ITEMS}; item 0 is never used, as in uWSGI)")
    if spec.blocksize < 1 or spec.items * spec.blocksize > MAX_BYTES:
        raise ValueError(f'invalid cache blocksize for "{spec.name}"')
    if not 0 < spec.keysize < 0xffff:
        raise ValueError(f'invalid cache keysize for "{spec.name}"')
    if not 0 < spec.hashsize <= MAX_ITEMS:
        raise ValueError(f'invalid cache hashsize for "{spec.name}"')
    return spec


def check(text: str) -> str:
    """The option's converter (emperor/settings.py): the line stays text, checked."""
    parse(text)
    return text
