"""`emperor --version`, and a help text on every command and every option, as `--help` prints them."""
from __future__ import annotations

import re

import pytest

from support import ROOT
from support import cli

pytestmark = pytest.mark.timeout(60)

COMMANDS = ("run", "master", "status", "restart", "health")


def entries(help_text: str) -> dict[str, str]:
    """argparse's listing: each argument's invocation -> its help (its own line, or the next ones)."""
    found: dict[str, str] = {}
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^ {2,4}(\S(?:\S| (?=\S))*)(?: {2,}(\S.*))?$", line)
        if not m or line.rstrip().endswith(":") or m.group(1).startswith("usage"):
            continue
        text = m.group(2) or ""
        if not text and i + 1 < len(lines) and re.match(r"^ {10,}\S", lines[i + 1]):
            text = lines[i + 1].strip()
        found[m.group(1)] = text
    return found


def test_version():
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    r = cli("--version", cwd=ROOT)
    assert r.returncode == 0 and r.stdout == f"emperor {version}\n"


def test_every_command_and_option_says_what_it_does(tmp_path):
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    top = entries(r.stdout)
    for name in COMMANDS:
        assert top.get(name), (name, r.stdout)
    for option in ("--version", "--reload PIDFILE", "--stop PIDFILE", "--pause PIDFILE", "--resume PIDFILE"):
        assert top.get(option), (option, r.stdout)
    assert "emperor run --pidfile" in " ".join(r.stdout.split())   # --reload/--stop work on an emperor too
    missing = []
    for name in COMMANDS:
        r = cli(name, "--help", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        listed = entries(r.stdout)
        assert len(listed) >= 2, r.stdout
        missing += [f"{name} {arg}" for arg, text in listed.items() if not text]
    assert missing == []
    run = entries(cli("run", "--help", cwd=tmp_path).stdout)
    for arg in ("DIR", "-d DIR, --directory DIR", "--pidfile FILE", "--shutdown-delay SECONDS", "--grace SECONDS"):
        assert run.get(arg), (arg, run)
    status = entries(cli("status", "--help", cwd=tmp_path).stdout)
    for arg in ("DIR", "NAME", "-d DIR, --directory DIR", "--once", "--json", "--control PATH"):
        assert status.get(arg), (arg, status)
