"""`py-autoreload = N`: a graceful reload when a loaded module's file changes (development).

Reference: uWSGI's plugins/python/python_plugin.c (uwsgi_python_autoreloader_thread,
uwsgi_check_python_mtime) and its options table there (py-autoreload and its aliases,
py-auto-reload-ignore). Real masters, waiting on log lines; the fallback scan without
inotify is checked in-process on emperor/modwatch.py.
"""
from __future__ import annotations

import http.client
import os
import sys
import textwrap

APP = """
import greeting
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [greeting.TEXT.encode()]
"""


def get(port: int) -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/")
    body = c.getresponse().read()
    c.close()
    return body


def edit(path, text: str) -> None:
    """A save as an editor does it: new content, mtime moved on even within one clock tick."""
    before = os.stat(path).st_mtime_ns if path.exists() else 0
    path.write_text(textwrap.dedent(text))
    st = os.stat(path)
    if st.st_mtime_ns == before:
        os.utime(path, ns=(st.st_atime_ns, before + 1_000_000))


def test_a_changed_module_reloads_the_master_gracefully(master, tmp_path):
    """python_plugin.c uwsgi_check_python_mtime: a module file whose mtime changed -> SIGHUP to
    the master (here: the graceful reload, with its preflight)."""
    (tmp_path / "greeting.py").write_text("TEXT = 'one'\n")
    m = master("py-autoreload = 2\n", APP)
    assert "py-autoreload: watching" in m.log and get(m.port) == b"one"
    edit(tmp_path / "greeting.py", "TEXT = 'two'\n")
    m.wait_log(f"py-autoreload: module file {tmp_path / 'greeting.py'} has been modified")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert get(m.port) == b"two"


def test_a_broken_save_keeps_the_workers_serving_and_the_fix_reloads(master, tmp_path):
    """A save that does not import fails the reload's preflight; the watch goes on, so the next
    save is a reload again (uWSGI's thread ends after its first SIGHUP; its master re-executes)."""
    (tmp_path / "greeting.py").write_text("TEXT = 'one'\n")
    m = master("py-autoreload = 2\n", APP)
    edit(tmp_path / "greeting.py", "TEXT = (\n")
    m.wait_log("reload failed, generation 0 keeps serving", timeout=20)
    assert get(m.port) == b"one"
    edit(tmp_path / "greeting.py", "TEXT = 'fixed'\n")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert get(m.port) == b"fixed"


def test_an_ignored_module_does_not_reload(master, tmp_path):
    """python_plugin.c: py-auto-reload-ignore names a module the scan skips."""
    (tmp_path / "greeting.py").write_text("import other\nTEXT = 'one'\n")
    (tmp_path / "other.py").write_text("X = 1\n")
    m = master("py-autoreload = 1\npy-auto-reload-ignore = other\n", APP)
    edit(tmp_path / "other.py", "X = 2\n")
    edit(tmp_path / "greeting.py", "import other\nTEXT = 'two'\n")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    modified = [line for line in m.log.splitlines() if "has been modified" in line]
    assert len(modified) == 1 and modified[0].endswith(f"{tmp_path / 'greeting.py'} has been modified")


def test_with_lazy_apps_the_first_worker_watches_its_modules(master, tmp_path):
    """uWSGI runs the reloader in the workers (python_plugin.c, after fork); with lazy-apps only
    a worker has the app's modules, so the first one watches and asks for the reload."""
    (tmp_path / "greeting.py").write_text("TEXT = 'one'\n")
    m = master("py-autoreload = 1\nlazy-apps = true\nprocesses = 2\n", APP)
    assert get(m.port) == b"one"
    edit(tmp_path / "greeting.py", "TEXT = 'two'\n")
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    assert m.log.count("has been modified") == 1
    assert "[app.ini worker 1] py-autoreload: module file" in m.log
    assert get(m.port) == b"two"


def test_every_module_is_followed_and_inotify_means_no_timer(tmp_path):
    """As uWSGI's scan: every module of sys.modules with a file, the standard library too. With
    inotify on their directories nothing is looked at on a timer."""
    from emperor.config import Config
    from emperor.master.autoreload import AutoReloader
    from emperor.master.loop import Loop
    from emperor.modwatch import ModuleFiles

    files = ModuleFiles([], str(tmp_path), 3)
    assert os.__file__ in files.marks and not files.scanning
    config = Config("", "")
    config.py_autoreload = 3
    part = AutoReloader(config, str(tmp_path), Loop(), lambda why: None, lambda text: None)
    assert part.deadline() is None


def test_without_inotify_the_files_are_scanned_every_n_seconds(tmp_path, monkeypatch):
    """python_plugin.c: sleep(py-autoreload), then compare every module file's mtime: the
    fallback here when inotify cannot be had."""
    import emperor.modwatch as modwatch

    def no_inotify(**kw):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(modwatch, "INotify", no_inotify)
    module = tmp_path / "scanned_mod.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("scanned_mod")
    try:
        files = modwatch.ModuleFiles([], str(tmp_path), 2)
        assert files.scanning and files.fileno() is None and files.scan() is None
        edit(module, "X = 2\n")
        assert files.scan() == str(module)
        assert files.scan() is None   # once per change
        module.unlink()
        assert files.scan() is None   # a file that cannot be stat'ed is skipped, as uWSGI does
    finally:
        sys.modules.pop("scanned_mod", None)


def test_py_autoreload_aliases_are_uwsgis(tmp_path):
    """python_plugin.c: py-auto-reload, python-auto-reload and python-autoreload are the same option."""
    from emperor.config import load_config

    for name in ("py-autoreload", "py-auto-reload", "python-auto-reload", "python-autoreload"):
        ini = tmp_path / "a.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = :0\nmodule = x\n{name} = 3\n")
        assert load_config(str(ini)).py_autoreload == 3
