"""End to end on kind: real containers, real Vestige, the bridge answering through a port-forward.

Needs a Docker engine and the `kind` binary (https://kind.sigs.k8s.io). Where either is missing
(as on the project's CI machines, which have no Docker engine) the test skips with the reason.
Images are built from this repository: Dockerfile.operator, images/bridge/Dockerfile and
images/vestige/Dockerfile (which compiles Vestige v3 with cargo: allow 15+ minutes cold).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "vestige-e2e"
IMAGES = {
    "ghcr.io/vestige-operator/vestige-operator:0.1.0": ("Dockerfile.operator", "."),
    "ghcr.io/vestige-operator/vestige-bridge:0.1.0": ("images/bridge/Dockerfile", "."),
    "ghcr.io/vestige-operator/vestige:3": ("images/vestige/Dockerfile", "images/vestige"),
}


def _docker_reason() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False, timeout=60)
    if info.returncode != 0:
        return "no Docker engine is reachable (`docker info` failed): kind cannot run here"
    if shutil.which("kind") is None:
        return "the kind binary is not on PATH"
    return None


REASON = _docker_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def run(*cmd: str, timeout: float = 1800, **kw: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return str(proc.stdout)


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kubeconfig = str(tmp_path_factory.mktemp("kind") / "kubeconfig")
    run("kind", "create", "cluster", "--name", CLUSTER, "--kubeconfig", kubeconfig, "--wait", "120s")
    try:
        for tag, (dockerfile, context) in IMAGES.items():
            run("docker", "build", "-f", str(ROOT / dockerfile), "-t", tag, str(ROOT / context))
            run("kind", "load", "docker-image", tag, "--name", CLUSTER)
        yield kubeconfig
    finally:
        run("kind", "delete", "cluster", "--name", CLUSTER)


def test_install_example_and_call_the_bridge(kind_cluster: str) -> None:
    k = ["kubectl", f"--kubeconfig={kind_cluster}"]
    run(*k, "apply", "-k", str(ROOT / "manifests"))
    run(*k, "-n", "vestige-system", "rollout", "status", "deploy/vestige-operator", "--timeout=300s")
    run(*k, "create", "namespace", "agents")
    run(*k, "-n", "agents", "apply", "-f", str(ROOT / "manifests/examples/minimal.yaml"))
    # First boot downloads the embedding model: be patient.
    run(*k, "-n", "agents", "wait", "--for=condition=Ready", "vmem/my-agent", "--timeout=900s")
    token = base64.b64decode(
        run(*k, "-n", "agents", "get", "secret", "my-agent-auth", "-o", "jsonpath={.data.token}")
    ).decode()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pf = subprocess.Popen(
        [*k, "-n", "agents", "port-forward", "--address=127.0.0.1", "svc/my-agent", f"{port}:8000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/health")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["vestige_connected"] is True
        body = json.dumps({"content": "kind e2e memory", "tags": ["e2e"]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/smart_ingest",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["success"] is True
    finally:
        pf.terminate()
        pf.wait(timeout=10)
