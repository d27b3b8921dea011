"""The layout is the architecture: floors that import only downwards, no cycles, a light master image.

Floors, from the top: the command line (`emperor.cli`), the emperor process
(`emperor.emperor`), the master (`emperor.master`), the worker
(`emperor.worker`), and the shared floor (`emperor.wire` and the modules at the
package's top: config, sockets, proc, ...). Data flows one way, cli -> emperor
-> master -> worker, so a module may import its own floor and the ones below.
"""
from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, free_port, wait_port

PACKAGE = ROOT / "emperor"
FLOORS = {"cli": 4, "emperor": 3, "master": 2, "worker": 1}
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 350


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(module: str) -> int:
    parts = module.split(".")
    if module == "emperor.__main__":
        return FLOORS["cli"]
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """The emperor modules `path` imports at run time (at any depth, TYPE_CHECKING blocks aside)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("emperor"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("emperor"):
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    found.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists()
                              or (ROOT / sub.replace(".", "/")).is_dir() else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(me)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_a_module_imports_only_its_own_floor_and_the_ones_below():
    wrong = [f"{m} (floor {floor(m)}) imports {i} (floor {floor(i)})"
             for m, p in all_modules().items() for i in sorted(imports(p)) if floor(i) > floor(m)]
    assert wrong == []


def test_there_is_no_import_cycle():
    graph = {m: {i for i in imports(p) if i in all_modules()} for m, p in all_modules().items()}
    # an import of a package runs its __init__, which imports nothing of ours but docstrings
    cycles = []
    state: dict[str, int] = {}

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                walk(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])
    assert cycles == []


def test_no_module_over_500_lines_and_no_class_over_350():
    big = []
    for m, p in all_modules().items():
        text = p.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{m}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []


@pytest.mark.timeout(60)
def test_no_test_module_imports_another():
    """Shared helpers live in tests/support.py and fixtures in conftest.py: a test module
    imported by another runs its fixtures' module state twice and hides what it shares."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert offenders == []


def test_a_master_image_imports_neither_the_emperor_nor_rich_nor_typing(tmp_path, procs):
    """A re-executed master (every graceful reload starts one) carries only what it runs:
    checked on the real process with `python -X importtime`, before and after a reload."""
    port = free_port()
    (tmp_path / "app.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nchdir = {tmp_path}\nmodule = app\n"
                   "touch-reload = app.ini\n")
    m = procs([sys.executable, "-X", "importtime", "-m", "emperor", "master", str(ini)], tmp_path)
    m.wait_log("running (workers ready)", timeout=20)
    wait_port(port)
    m.signal(signal.SIGHUP)
    m.wait_log("reloading -> running (generation 1 ready)", timeout=20)
    m.signal(signal.SIGINT)
    assert m.wait(10) == 0
    loaded = {line.rsplit("|", 1)[1].strip() for line in m.log.splitlines() if line.startswith("import time:")}
    assert "emperor.master.process" in loaded and "emperor.worker.core" in loaded
    unwanted = sorted(n for n in loaded if n.split(".")[0] in ("rich", "typing", "argparse", "dataclasses")
                      or n.startswith(("emperor.emperor", "emperor.cli.")))
    assert unwanted == []


@pytest.mark.timeout(300)
def test_mypy_passes_on_the_package():
    """The type hints are checked (configured in pyproject.toml), not decoration."""
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
