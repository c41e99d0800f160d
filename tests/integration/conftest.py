"""Fixtures for tests against the real local control plane (tests/cluster).

The session fixture reuses a running cluster (`python -m tests.cluster up`) or starts one and
then stops it when the session ends. Nothing here mocks the Kubernetes API.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests import cluster
from tests.cluster import launcher

ROOT = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if str(item.path).startswith(str(Path(__file__).parent)):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster_state() -> Iterator[cluster.ClusterState]:
    running = cluster.status().get("up") is True
    st = cluster.up()
    yield st
    if not running:
        cluster.down()


@pytest.fixture(scope="session")
def kubeconfig(cluster_state: cluster.ClusterState) -> str:
    return cluster_state.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Kubectl:
    def run(
        *args: str,
        input: str | None = None,
        check: bool = True,
        as_user: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        impersonate = [f"--as={as_user}"] if as_user else []
        proc = launcher.run_kubectl(kubeconfig, *impersonate, *args, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def crd_installed(kubectl: Kubectl) -> None:
    files = sorted((ROOT / "crds").glob("vestige.dev_*.yaml"))
    assert files, "crds/ holds no generated CRD"
    for f in files:
        kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=vestige-tests", "-f", str(f))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    base = request.node.name.lower().replace("_", "-")
    base = "".join(ch for ch in base if ch.isalnum() or ch == "-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
