"""The cache (uWSGI's core/cache.c, Caching.rst): one vassal file and application
(tests/apps/spoolcache.py) under emperor and real uWSGI, the same answers expected; the one
intended difference is that emperor keeps the cache across a graceful reload."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from spoolsupport import APPS, SERVERS, UWSGI, get, result, start
from support import fd_targets, free_port, wait_for

def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


CACHE = "processes = 2\ncache2 = name=c,items=5,blocksize=64\n"


def from_other_worker(d, port: int, path: str, not_pid: str) -> str:
    """The answer of the worker other than `not_pid` (of two), by occupying the workers rather
    than hoping the scheduler picks one: a slow request (s=2) takes one worker; if that is
    `not_pid`, the other is the only free one. If not, a slower one (s=8) takes `not_pid`,
    the only free one then, and `path` waits in the queue for the first to finish. (A free
    worker taking the queue is the kernel's choice, and uWSGI's wake-up order made it the
    same worker for 60 s on CI.)"""
    def slow(seconds: int) -> threading.Thread:
        def run() -> None:
            try:
                get(port, f"/sleep?s={seconds}", timeout=30)
            except OSError:
                pass    # a loaded machine: this try fails, the next one goes
        t = threading.Thread(target=run)
        t.start()
        return t

    def busy() -> set[str]:
        return {m.name.split(".", 1)[1] for m in d.glob("busy.*")}

    def other():
        for old in d.glob("busy.*"):
            old.unlink()
        held = [slow(2)]
        try:
            first = wait_for(busy, 20)
            if not_pid not in first:
                held.append(slow(8))
                wait_for(lambda: not_pid in busy(), 20)
            text = get(port, path, timeout=30)
        finally:
            for t in held:
                t.join()
        return text if text.rsplit(" ", 1)[1] != not_pid else None
    return wait_for(other, 120, 0.01).rsplit(" ", 1)[0]


def stop(p) -> None:
    """SIGINT, as a deploy script stops it; uWSGI 2.0 sometimes hangs there (a worker never
    buried): then the test kills it, which leaves its store file as written as well."""
    p.signal(signal.SIGINT)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", SERVERS)
def test_a_value_set_in_one_worker_is_read_in_another(tmp_path, procs, server):
    p = start(procs, server, tmp_path, CACHE)
    answer = get(p.port, "/cache/set?k=shared&v=hello")
    assert answer.startswith("True ")
    pid = answer.rsplit(" ", 1)[1]
    assert from_other_worker(tmp_path, p.port, "/cache/get?k=shared", pid) == "b'hello'"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", SERVERS)
def test_return_values_are_uwsgis(tmp_path, procs, server):
    """set fails (None) on an existing key, update overwrites; del/exists answer True or None;
    the math functions work on the 8-byte number; a value over blocksize is refused."""
    p = start(procs, server, tmp_path, CACHE)
    seen = [result(p.port, path) for path in (
        "/cache/set?k=a&v=1", "/cache/set?k=a&v=2", "/cache/get?k=a", "/cache/update?k=a&v=3",
        "/cache/get?k=a", "/cache/exists?k=a", "/cache/exists?k=zz", "/cache/get?k=zz",
        "/cache/del?k=a", "/cache/del?k=a", "/cache/inc?k=n&v=5", "/cache/inc?k=n&v=1",
        "/cache/mul?k=n&v=3", "/cache/div?k=n&v=4", "/cache/dec?k=n&v=10", "/cache/num?k=n",
        "/cache/set?k=big&v=" + "x" * 65, "/cache/set?k=fits&v=" + "x" * 64, "/cache/keys",
        "/cache/clear", "/cache/keys")]
    assert seen == ["True", "None", "b'1'", "True", "b'3'", "True", "None", "None", "True", "None",
                    "True", "True", "True", "True", "True", "-6", "None", "True", "[b'fits', b'n']",
                    "True", "[]"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", SERVERS)
def test_a_full_cache_refuses_new_keys(tmp_path, procs, server):
    """items = 5 holds 4 keys (item 0 is never used, as in uWSGI); a fifth set fails, an update
    of a key already there still works."""
    p = start(procs, server, tmp_path, CACHE)
    sets = [result(p.port, f"/cache/set?k=k{i}&v=v") for i in range(5)]
    assert sets == ["True"] * 4 + ["None"]
    assert result(p.port, "/cache/update?k=k0&v=w") == "True"
    assert result(p.port, "/cache/del?k=k1") == "True"
    assert result(p.port, "/cache/set?k=k4&v=v") == "True"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", SERVERS)
def test_an_expired_key_is_gone(tmp_path, procs, server):
    """expires = 1 s: gone soon after (uWSGI's sweeper runs every 3 s; emperor checks at lookup)."""
    p = start(procs, server, tmp_path, CACHE)
    assert result(p.port, "/cache/set?k=brief&v=x&e=1") == "True"
    assert result(p.port, "/cache/set?k=stays&v=y") == "True"
    wait_for(lambda: result(p.port, "/cache/get?k=brief") == "None", 20, 0.2)
    assert result(p.port, "/cache/get?k=stays") == "b'y'"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", SERVERS)
def test_store_survives_a_restart(tmp_path, procs, server):
    """store=FILE: the cache is a file, read back by the next start of the server."""
    body = f"processes = 2\ncache2 = name=c,items=5,blocksize=64,store={tmp_path / 'cache.store'}\n"
    p = start(procs, server, tmp_path, body)
    assert result(p.port, "/cache/set?k=kept&v=on-disk") == "True"
    stop(p)
    p2 = start(procs, server, tmp_path, body, port=free_port(), log="second.log")
    assert result(p2.port, "/cache/get?k=kept") == "b'on-disk'"


@pytest.mark.timeout(200)
@pytest.mark.parametrize("server", SERVERS)
def test_a_graceful_reload_keeps_the_cache_under_emperor_only(tmp_path, procs, server):
    """The intended difference: emperor hands the memfd to its next image; uWSGI's reload starts
    with an empty cache (without store=)."""
    p = start(procs, server, tmp_path, CACHE)
    assert result(p.port, "/cache/set?k=warm&v=yes") == "True"
    p.signal(signal.SIGHUP)
    if server == "emperor":
        p.wait_log("(generation 1 ready)", timeout=30)
        assert "kept 1 item(s)" in p.log
    else:
        p.wait_log("spawned uWSGI worker 2", timeout=90, count=2)   # uWSGI 2.0 may stall ~30 s here
    got = wait_for(lambda: _try(p.port, "/cache/get?k=warm"), 60, 0.1)
    assert got == ("b'yes'" if server == "emperor" else "None")


def _try(port: int, path: str) -> str | None:
    try:
        return result(port, path)
    except OSError:
        return None


@pytest.mark.timeout(30)
def test_a_bad_cache2_line_is_one_clear_error(tmp_path):
    """Checked when the file is read, not when the master starts."""
    from emperor.config import ConfigError, load_config

    ini = tmp_path / "bad.ini"
    ini.write_text("[uwsgi]\nmodule = x\ncache2 = name=c,blocksize=10\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(ini))
    assert "you have to specify the maximum number of cache items" in str(e.value)
    assert sys.executable and UWSGI  # (the module's other tests need both)


django_missing = pytest.mark.skipif(not (_has("django") and _has("uwsgicache")), reason="django or django-uwsgi-cache absent")


@pytest.mark.timeout(200)
@django_missing
@pytest.mark.parametrize("server", SERVERS)
def test_django_uwsgi_cache_backend(tmp_path, procs, server):
    """A Django project with django-uwsgi-cache as its CACHES backend: a value set in one worker
    is read in another; across a graceful reload emperor keeps it, uWSGI does not."""
    body = f"processes = 2\nhome = {sys.prefix}\ncache2 = name=django,items=100,blocksize=4096\n"
    p = start(procs, server, tmp_path, body, app="djangocache")
    answer = get(p.port, "/cache/set?k=user1&v=alice")
    assert answer.startswith("True ")
    want = "{'value': 'alice'}"
    assert from_other_worker(tmp_path, p.port, "/cache/get?k=user1", answer.rsplit(" ", 1)[1]) == want
    p.signal(signal.SIGHUP)
    if server == "emperor":
        p.wait_log("(generation 1 ready)", timeout=60)
    else:
        p.wait_log("spawned uWSGI worker 2", timeout=90, count=2)   # uWSGI 2.0 may stall ~30 s here
    got = wait_for(lambda: _try(p.port, "/cache/get?k=user1"), 60, 0.1)
    assert got == (want if server == "emperor" else "None")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", SERVERS)
def test_concurrent_increments_from_two_workers_all_count(tmp_path, procs, server):
    """The table's writers exclude each other across processes: 4 clients x 100 cache_inc,
    spread over both workers, leave exactly 400 (and a concurrent reader sees whole values)."""
    p = start(procs, server, tmp_path, CACHE + "listen = 64\n")
    assert result(p.port, "/cache/set?k=text&v=" + "a" * 60) == "True"
    pids: set[str] = set()
    errors: list[str] = []

    def client() -> None:
        for _ in range(100):
            answer = get(p.port, "/cache/inc?k=hits&v=1")
            pids.add(answer.rsplit(" ", 1)[1])
            text = result(p.port, "/cache/get?k=text")
            if text != "b'" + "a" * 60 + "'":
                errors.append(text)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert result(p.port, "/cache/num?k=hits") == "400"
    assert len(pids) == 2


@pytest.mark.timeout(120)
def test_a_reload_without_the_cache_and_spooler_lines_frees_them(tmp_path, procs):
    """The lines removed, a graceful reload: the new image keeps no descriptor of the old
    cache (its memory is freed once the old generation has left), and starts cleanly."""
    p = start(procs, "emperor", tmp_path, CACHE + f"spooler = {tmp_path / 'spool'}\n")
    assert set(_memfds(p.pid)) == {"/memfd:emperor-cache-c (deleted)"}   # ours, and the mmap's own dup
    ini = tmp_path / "app.ini"
    ini.write_text("\n".join(line for line in ini.read_text().splitlines()
                             if not line.startswith(("cache2", "spooler"))) + "\n")
    p.signal(signal.SIGHUP)
    p.wait_log("(generation 1 ready)", timeout=60)
    assert _memfds(p.pid) == []
    assert result(p.port, "/cache/get?k=x") == "None"
    assert "Traceback" not in p.log


def _memfds(pid: int) -> list[str]:
    return [t for t in fd_targets(pid) if t.startswith("/memfd:emperor-cache")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("store", [False, True], ids=["memfd", "store"])
def test_a_reload_that_changes_the_cache_line_starts_it_empty(tmp_path, procs, store):
    """items changed: the new generation gets a new, empty cache of the new size (the old one is
    never resized under the workers still finishing with it); the same line again keeps it."""
    line = "cache2 = name=c,items={},blocksize=64" + (f",store={tmp_path / 'c.store'}" if store else "") + "\n"
    p = start(procs, "emperor", tmp_path, "processes = 2\n" + line.format(5))
    assert result(p.port, "/cache/set?k=a&v=1") == "True"
    ini = tmp_path / "app.ini"
    ini.write_text(ini.read_text().replace("items=5", "items=7"))
    p.signal(signal.SIGHUP)
    p.wait_log("(generation 1 ready)", timeout=60)
    assert result(p.port, "/cache/get?k=a") == "None"
    assert [result(p.port, f"/cache/set?k=k{i}&v=v") for i in range(7)] == ["True"] * 6 + ["None"]
    p.signal(signal.SIGHUP)
    p.wait_log("(generation 2 ready)", timeout=60)
    assert result(p.port, "/cache/get?k=k5") == "b'v'"
    assert "SIGBUS" not in p.log and "Traceback" not in p.log


@pytest.mark.timeout(60)
def test_an_unwritable_store_or_spooler_is_one_clear_line(tmp_path, procs):
    """A master that cannot create its cache's store file (or spooler directory) says which, in
    one line, and exits 1: no traceback."""
    for body, said in ((f"cache2 = name=c,items=5,store={tmp_path}/missing/dir/c.store\n",
                        f'cannot start: cache "c": {tmp_path}/missing/dir/c.store: No such file or directory'),
                       ("spooler = /proc/nope\n", "cannot start: spooler directory /proc/nope: ")):
        ini = tmp_path / "app.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{free_port()}\nwsgi-file = {APPS / 'spoolcache.py'}\n" + body)
        p = procs([sys.executable, "-m", "emperor", "master", str(ini)], tmp_path, log=tmp_path / "m.log")
        assert p.wait(30) == 1
        assert said in p.log and "Traceback" not in p.log
        (tmp_path / "m.log").unlink()
