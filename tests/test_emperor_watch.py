"""The directory watcher on real files: each way a vassal file can change is seen once."""
from __future__ import annotations

import os
import select
import shutil
import time

import pytest
from inotify_simple import Event, flags

from emperor.emperor.watch import DEBOUNCE, DELETE_GRACE, Changes, DirectoryWatcher

pytestmark = pytest.mark.timeout(20)


def settle(w: DirectoryWatcher, timeout: float = 5.0) -> Changes:
    """A tiny event loop, like the emperor's: the first non-empty report, or an empty one."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Changes()
        wait = max(min(w.timeout(), left), 0)
        if w.fileno() is not None:
            select.select([w.fileno()], [], [], wait)
        else:
            time.sleep(wait)   # the loop's timer: a watcher without inotify polls
        changes = w.changes()
        if changes:
            return changes


@pytest.fixture
def vdir(tmp_path):
    d = tmp_path / "vassals"
    d.mkdir()
    return d


@pytest.fixture
def watcher(vdir):
    (vdir / "app.ini").write_text("[uwsgi]\n")
    w = DirectoryWatcher(str(vdir))
    assert w.changes() == Changes(new=["app.ini"])
    yield w
    w.close()


def test_new_file_is_reported(watcher, vdir):
    (vdir / "b.ini").write_text("[uwsgi]\n")
    assert settle(watcher) == Changes(new=["b.ini"])


def test_touch_is_a_change(watcher, vdir):
    os.utime(vdir / "app.ini")
    assert settle(watcher) == Changes(changed=["app.ini"])


def test_edit_in_place_is_a_change(watcher, vdir):
    with open(vdir / "app.ini", "a") as f:
        f.write("processes = 2\n")
    assert settle(watcher) == Changes(changed=["app.ini"])


def test_editor_save_by_rename_over_is_a_change(watcher, vdir):
    tmp = vdir / ".app.ini.swp"
    tmp.write_text("[uwsgi]\nprocesses = 2\n")
    os.replace(tmp, vdir / "app.ini")
    assert settle(watcher) == Changes(changed=["app.ini"])


def test_mv_over_with_an_older_mtime_is_a_change(watcher, vdir, tmp_path):
    other = tmp_path / "staged.ini"
    other.write_text("[uwsgi]\n")
    past = time.time() - 86400
    os.utime(other, (past, past))
    os.rename(other, vdir / "app.ini")
    assert settle(watcher) == Changes(changed=["app.ini"])


class Clock:
    """The watcher's clock, moved by the test: its timing is checked exactly, not against the wall."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(vdir):
    """A watcher (real inotify) on a clock the test moves, past its first report of app.ini."""
    (vdir / "app.ini").write_text("[uwsgi]\n")
    clock = Clock()
    w = DirectoryWatcher(str(vdir), clock=clock)
    assert w.changes() == Changes(new=["app.ini"])
    w.clock_ = clock
    yield w
    w.close()


def event_read(w: DirectoryWatcher) -> None:
    """The kernel's inotify event is there, and the watcher has read it (it starts the debounce)."""
    assert select.select([w.fileno()], [], [], 10)[0]
    assert w.changes() is None
    assert w.timeout() == pytest.approx(DEBOUNCE)


def test_delete_is_reported_after_the_grace(clocked, vdir):
    os.unlink(vdir / "app.ini")
    event_read(clocked)
    clocked.clock_.now += DEBOUNCE
    assert clocked.changes() == Changes()              # missing, not yet for the grace
    assert clocked.timeout() == pytest.approx(DELETE_GRACE)
    clocked.clock_.now += DELETE_GRACE - 0.001
    assert not clocked.changes()                       # still within it
    clocked.clock_.now += 0.002
    assert clocked.changes() == Changes(deleted=["app.ini"])


def test_rewrite_within_the_grace_is_a_change_not_a_delete(watcher, vdir):
    os.rename(vdir / "app.ini", vdir / "app.ini~")  # vim's backup, then the new file
    time.sleep(0.1)   # vim's pace: the new file comes a moment later (the watcher is asked only after)
    (vdir / "app.ini").write_text("[uwsgi]\nprocesses = 3\n")
    assert settle(watcher) == Changes(changed=["app.ini"])


def test_rename_reports_old_deleted_and_new_at_once(clocked, vdir):
    os.rename(vdir / "app.ini", vdir / "new.ini")
    event_read(clocked)
    clocked.clock_.now += DEBOUNCE                     # the same inode under a new name: no grace
    assert clocked.changes() == Changes(new=["new.ini"], deleted=["app.ini"])


def test_configmap_update_seen_through_data_symlink(vdir):
    """Kubernetes re-points only `..data`; no event names app.ini."""
    def project(stamp: str, body: str) -> None:
        (vdir / stamp).mkdir()
        (vdir / stamp / "app.ini").write_text(body)
        os.symlink(stamp, vdir / "..data_tmp")
        os.rename(vdir / "..data_tmp", vdir / "..data")

    project("..2024_01", "[uwsgi]\n")
    os.symlink("..data/app.ini", vdir / "app.ini")
    w = DirectoryWatcher(str(vdir))
    assert w.changes() == Changes(new=["app.ini"])
    project("..2024_02", "[uwsgi]\nprocesses = 2\n")
    shutil.rmtree(vdir / "..2024_01")
    assert settle(w) == Changes(changed=["app.ini"])
    assert settle(w, 0.4) == Changes()  # the old directory's removal changes nothing
    w.close()


def test_symlink_to_a_file_outside_the_directory_edited_there(vdir, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "app.ini").write_text("[uwsgi]\n")
    os.symlink(outside / "app.ini", vdir / "app.ini")
    w = DirectoryWatcher(str(vdir))
    assert w.changes() == Changes(new=["app.ini"])
    with open(outside / "app.ini", "a") as f:
        f.write("processes = 2\n")
    assert settle(w) == Changes(changed=["app.ini"])
    w.close()


def test_other_files_do_not_wake_a_rescan(watcher, vdir):
    for i in range(20):
        (vdir / "app.pid").write_text(str(i))       # pidfiles and logs often live here
        (vdir / ".app.ini.swp").write_text(str(i))
    assert watcher.changes() is None
    assert watcher.timeout() > 10


def test_rescan_without_change_reports_nothing(watcher):
    watcher.rescan_now()
    assert watcher.changes() == Changes()


def test_directory_deleted_and_recreated(watcher, vdir):
    shutil.rmtree(vdir)
    assert settle(watcher) == Changes(deleted=["app.ini"])
    vdir.mkdir()
    (vdir / "app.ini").write_text("[uwsgi]\n")
    assert settle(watcher) == Changes(new=["app.ini"])


def test_inotify_overflow_triggers_a_full_rescan(watcher, vdir, monkeypatch):
    (vdir / "b.ini").write_text("[uwsgi]\n")
    watcher.inotify.read(timeout=0)  # the real events are lost, as in an overflow
    monkeypatch.setattr(watcher.inotify, "read", lambda timeout=0: [Event(-1, flags.Q_OVERFLOW, 0, "")])
    watcher.changes()
    monkeypatch.undo()
    assert settle(watcher) == Changes(new=["b.ini"])


def test_without_inotify_polling_still_sees_changes(vdir):
    (vdir / "app.ini").write_text("[uwsgi]\n")
    w = DirectoryWatcher(str(vdir), use_inotify=False)
    assert w.fileno() is None
    assert w.changes() == Changes(new=["app.ini"])
    assert w.timeout() <= 1.0
    (vdir / "b.ini").write_text("[uwsgi]\n")
    assert settle(w) == Changes(new=["b.ini"])


def test_idle_watcher_wants_no_wakeup_before_the_safety_rescan(watcher):
    assert watcher.changes() is None
    assert 25 < watcher.timeout() <= 30   # the safety rescan's (30 s from the start), not sooner
