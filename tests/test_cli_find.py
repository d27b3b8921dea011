"""How every command finds its emperor, and which vassal a NAME means, with real emperors.

Each test runs its emperors with a private runtime dir (EMPEROR_RUNTIME_DIR, short
enough for a UNIX socket path), so "the only emperor of this user" is only
ever one of ours, whatever else runs on the machine. Every process is killed
by PID at teardown (the `procs` fixture).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from support import cli, start_emperor, vassals

pytestmark = pytest.mark.timeout(60)

def shown_emperor(r: subprocess.CompletedProcess) -> int:
    """The PID in the first line of `status --once` (`emperor 1234 · up 3s · ...`)."""
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("emperor "), r.stdout
    return int(first.split()[1])


def test_every_command_takes_the_directory_as_dir_or_dash_d(tmp_path, procs, runtime):
    vassals(tmp_path / "blue", "flask.ini")
    vassals(tmp_path / "green", "flask.ini")
    blue = start_emperor(procs, tmp_path, "blue", running=("flask.ini",), log="blue.log")
    green = start_emperor(procs, tmp_path, "-d", "green", running=("flask.ini",), log="green.log")

    # status: DIR, -d DIR, --directory DIR, and DIR NAME
    assert shown_emperor(cli("status", "blue", "--once", cwd=tmp_path)) == blue.pid
    assert shown_emperor(cli("status", "-d", "green", "--once", cwd=tmp_path)) == green.pid
    assert shown_emperor(cli("status", "--once", "--directory", str(tmp_path / "blue"), cwd=tmp_path)) == blue.pid
    r = cli("status", "green", "flask.ini", "--once", cwd=tmp_path)
    assert r.returncode == 0 and "flask.ini  running  master" in r.stdout, r.stdout + r.stderr
    master = int(r.stdout.split("master ")[1].split()[0])
    assert master in [int(p) for p in open(f"/proc/{green.pid}/task/{green.pid}/children").read().split()]
    r = cli("status", "-d", "blue", "flask.ini", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running"

    # restart: DIR NAME and -d DIR NAME, each reaching its own emperor
    r = cli("restart", "blue", "flask.ini", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "emperor: flask.ini: restart requested, now reloading\n", r.stderr
    blue.wait_log("flask.ini: running -> reloading (emperor restart)")
    assert "emperor restart" not in green.log
    r = cli("restart", "-d", "green", "flask.ini", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    green.wait_log("flask.ini: running -> reloading (emperor restart)")

    # health: DIR and -d DIR
    for args, e in ((["blue"], blue), (["-d", "green"], green), (["--directory", "green", "--live"], green)):
        r = cli("health", *args, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.startswith("ok: "), r.stdout + r.stderr
        if "--live" in args:
            assert f"emperor pid {e.pid} answers" in r.stdout

    # two emperors and nothing that says which: one line naming both
    for args in (["status", "--once"], ["restart", "flask"], ["health"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1, r.stderr
        assert (f"2 emperors are running ({tmp_path / 'blue'}, {tmp_path / 'green'}): say which with -d DIR"
                in r.stderr), r.stderr

    # the directory given twice, differently
    r = cli("health", "blue", "-d", "green", cwd=tmp_path)
    assert r.returncode == 2 and "two directories given: blue and -d green" in r.stderr


def test_the_emperor_is_found_from_the_current_directory_and_the_environment(tmp_path, procs, runtime):
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    vassals(home / "vassals.d", "flask.ini")
    vassals(tmp_path / "other", "django.ini")
    elsewhere.mkdir()
    here = start_emperor(procs, home, running=("flask.ini",))        # ./vassals.d, no argument
    # `emperor run` takes $EMPEROR_DIRECTORY as its directory too
    other = start_emperor(procs, elsewhere, running=("django.ini",),
                          env={"EMPEROR_DIRECTORY": str(tmp_path / "other")})

    assert shown_emperor(cli("status", "--once", cwd=home)) == here.pid                 # ./vassals.d
    assert shown_emperor(cli("status", "--once", cwd=home / "vassals.d")) == here.pid   # the directory itself
    assert shown_emperor(cli("status", "--once", cwd=tmp_path / "other")) == other.pid
    assert shown_emperor(cli("status", "--once", cwd=elsewhere,
                             env={"EMPEROR_DIRECTORY": str(tmp_path / "other")})) == other.pid
    control = json.loads(cli("status", "--json", cwd=home).stdout)["directory"]
    assert control == str(home / "vassals.d")
    from emperor import paths
    sock = paths.control_socket(str(home / "vassals.d"))
    assert shown_emperor(cli("status", "--once", cwd=elsewhere, env={"EMPEROR_CONTROL": sock})) == here.pid
    r = cli("restart", "django", cwd=elsewhere, env={"EMPEROR_DIRECTORY": str(tmp_path / "other")})
    assert r.returncode == 0 and r.stdout == "emperor: django.ini: restart requested, now reloading\n", r.stderr
    r = cli("health", cwd=home)
    assert r.returncode == 0 and r.stdout.startswith("ok: 1 vassal: 1 running"), r.stdout + r.stderr


def test_the_only_emperor_running_is_found_from_anywhere(tmp_path, procs, runtime):
    vassals(tmp_path / "srv" / "vassals", "flask.ini", "api.ini")
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    e = start_emperor(procs, tmp_path / "srv", "vassals", running=("flask.ini", "api.ini"))
    assert [n for n in os.listdir(os.path.join(runtime, "emperor")) if n.startswith("vassals-")]  # ours, not /run's

    assert shown_emperor(cli("status", "--once", cwd=nowhere)) == e.pid
    r = cli("restart", "flask", cwd=nowhere)
    assert r.returncode == 0 and r.stdout == "emperor: flask.ini: restart requested, now reloading\n", r.stderr
    e.wait_log("flask.ini: running -> reloading (emperor restart)")
    r = cli("health", "--live", cwd=nowhere)
    assert r.returncode == 0 and f"emperor pid {e.pid} answers" in r.stdout, r.stderr

    e.signal(2)   # SIGINT: every vassal stops, then the emperor
    assert e.wait(10) == 0
    r = cli("status", "--once", cwd=nowhere)
    from emperor import paths
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"emperor: no emperor is running for {nowhere / 'vassals.d'} "
        f"(no answer on {paths.control_socket(str(nowhere / 'vassals.d'))})"]


def test_a_name_without_ini_and_a_list_when_none_matches(tmp_path, procs, runtime):
    vassals(tmp_path / "vassals.d", "flask.ini", "api.ini")
    (tmp_path / "flask").mkdir()   # a directory with a vassal's name: no emperor watches it
    e = start_emperor(procs, tmp_path, running=("flask.ini", "api.ini"))

    r = cli("restart", "flask", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "emperor: flask.ini: restart requested, now reloading\n", r.stderr
    e.wait_log("flask.ini: reloading -> running")
    for args in (["status", "flask", "--once"], ["status", "vassals.d/flask.ini", "--once"],
                 ["status", "-d", "vassals.d", "flask", "--once"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 0 and "flask.ini  running  master" in r.stdout, (args, r.stdout, r.stderr)
    r = cli("status", "api", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "running"
    r = cli("restart", "vassals.d/api.ini", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("emperor: api.ini: restart requested"), r.stderr

    for args in (["restart", "flsk"], ["status", "flsk", "--once"]):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr.splitlines() == ["emperor: no vassal named 'flsk' (vassals: api.ini, flask.ini)"]
