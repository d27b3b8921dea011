"""`emperor check FILE...`: each file read as its master would, one line per finding, a
summary, exit 0 when every file would start; `--json` for scripts. Run as the real command."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from support import ROOT

HEAD = "[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nmodule = not_importable_at_all\n"


def check(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "emperor", "check", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=60)


def test_one_line_per_finding_and_a_summary(tmp_path):
    (tmp_path / "app.ini").write_text(
        "[uwsgi]\nhttp-socket = 127.0.0.1:8000 ; plain HTTP\nmodule = app\nmaster = true\n"
        "subscribe-to = 127.0.0.1:7000:s\nvaccum = true\nif-env = NOPE\nprocesses = 8\nendif\nprocesses = %k\n")
    r = check("app.ini", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "app.ini:2: http-socket: honoured (127.0.0.1:8000)",
        "app.ini:3: module: honoured (app)",
        "app.ini:4: master: no-op because emperor always runs a master",
        "app.ini:5: subscribe-to: unsupported: known to uWSGI, not supported by emperor; ignored",
        'app.ini:6: vaccum: unknown: not a uWSGI option (did you mean "vacuum"?); ignored',
        "app.ini:7: if-env: logic (false)",
        "app.ini:8: processes: skipped (if-env = NOPE is false)",
        "app.ini:9: endif: logic (closes if-env = NOPE of line 7)",
        f"app.ini:10: processes: honoured ({os.cpu_count()})",
        "app.ini: would start, with 2 warnings (3 honoured, 1 no-op, 1 unsupported, 1 unknown, 2 logic, 1 skipped)",
    ]


def test_a_file_that_would_not_start_exits_1_with_every_problem(tmp_path):
    (tmp_path / "bad.ini").write_text("[uwsgi]\nhttp-socket = :99999\nprocesses = four\nmodule = app\n")
    (tmp_path / "good.ini").write_text("[uwsgi]\nhttp-socket = :8000\nmodule = app\n")
    r = check("--problems", "bad.ini", "good.ini", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        'bad.ini:2: http-socket: error: bad port "99999" in ":99999" (expected 0-65535)',
        'bad.ini:3: processes: error: expected an integer, got "four"',
        "bad.ini: would not start (1 honoured, 2 error)",
        "good.ini: would start (2 honoured)",
        "2 files: 1 would start (1 with no warning), 1 would not",
    ]


def test_check_binds_nothing_and_imports_nothing(tmp_path):
    """A port in use and a module that does not exist: a master would fail later, not the reading."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        (tmp_path / "app.ini").write_text(HEAD.format(port=busy.getsockname()[1]))
        r = check("app.ini", cwd=tmp_path)
    assert r.returncode == 0 and "would start" in r.stdout.splitlines()[-1]
    assert "not_importable_at_all" not in sys.modules


def test_json(tmp_path):
    (tmp_path / "app.ini").write_text(HEAD.format(port=8000) + "subscribe-to = 127.0.0.1:7000:s\n")
    r = check("--json", "app.ini", "missing.ini", cwd=tmp_path)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert (doc["starts"], doc["fails"]) == (1, 1)
    app, missing = doc["files"]
    assert app["starts"] is True and app["clean"] is False
    assert app["warnings"] == ['app.ini:4: option "subscribe-to" is not supported by emperor; ignored']
    assert app["findings"][1] == {"file": "app.ini", "line": 3, "option": "module", "verdict": "honoured",
                                  "detail": "not_importable_at_all"}
    assert missing["errors"] == ["missing.ini: cannot read file: No such file or directory"]
    assert missing["findings"][0]["category"] == "file"


def test_the_environment_is_the_masters(tmp_path):
    """UWSGI_* variables and $(VAR) come from the environment `emperor check` runs in."""
    (tmp_path / "app.ini").write_text("[uwsgi]\nhttp-socket = :$(PORT)\nmodule = app\n")
    r = check("app.ini", cwd=tmp_path, env={"PORT": "8123", "UWSGI_PROCESSES": "3"})
    assert r.stdout.splitlines()[:2] == ["$UWSGI_PROCESSES: processes: honoured (3)",
                                         "app.ini:2: http-socket: honoured (:8123)"]


def test_strict_compat(tmp_path):
    (tmp_path / "app.ini").write_text(HEAD.format(port=8000) + "subscribe-to = 127.0.0.1:7000:s\n")
    r = check("--strict-compat", "--problems", "app.ini", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == ('app.ini:4: subscribe-to: error: option "subscribe-to" is not '
                                        'supported by emperor (strict-compat)')


def test_the_readme_sample_starts_as_written_and_uwsgi_reads_it_the_same(tmp_path):
    """The README's `[uwsgi]` sample: no warning, no error, and no line uWSGI reads otherwise."""
    readme = (ROOT / "README.md").read_text()
    sample = readme.split("```ini\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mysite.ini").write_text(sample)
    r = check("--json", "mysite.ini", cwd=tmp_path)
    doc = json.loads(r.stdout)["files"][0]
    assert r.returncode == 0 and doc["clean"], doc
    assert [f["detail"] for f in doc["findings"] if "uWSGI 2.0" in f["detail"]] == []
    assert {f["option"]: f["detail"] for f in doc["findings"]}["http-socket"] == "127.0.0.1:8000"
