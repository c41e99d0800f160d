"""Fixtures for tests whose pods really run: the real node (kubelet + containerd + runc) of the
local cluster, the images built here, an operator using them, and agents reached through
``kubectl port-forward`` on 127.0.0.1 (the only way the host reaches a pod here).

Where the real node cannot run (not root, Debian packages missing) these tests skip and say
why; ``tests/run.sh`` sets ``VESTIGE_REQUIRE_REAL_NODE=1`` where it can, so that in CI a missing
node is a failure, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import cluster
from tests.cluster import images as image_builds
from tests.cluster import launcher, netpol
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    api_client,
    cluster_state,
    crd_installed,
    kubeconfig,
    kubectl,
)
from tests.integration.operator_fixtures import OperatorFactory, operator_factory  # noqa: F401
from tests.node.helpers import Agents, RealNode


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/node/" in str(item.path):
            item.add_marker(pytest.mark.realnode)


@pytest.fixture(scope="session")
def real_node(cluster_state: cluster.ClusterState, kubeconfig: str) -> RealNode:  # noqa: F811
    if not cluster_state.real_node:
        reason = cluster_state.node_reason or f"the cluster runs nodes: {cluster_state.node}"
        if os.environ.get("VESTIGE_REQUIRE_REAL_NODE") == "1":
            pytest.fail(f"the real node is required here but absent: {reason}")
        pytest.skip(reason)
    return RealNode(cluster_state, launcher.real_node_layout(cluster_state), kubeconfig)


@pytest.fixture(scope="session")
def built_images(real_node: RealNode) -> image_builds.ImageRefs:
    """The images of this tree, built (or found in the cache) and imported into the node's
    containerd (``up`` imported those of the tree it started with)."""
    built = image_builds.ensure_images()
    image_builds.import_into(str(real_node.layout.containerd_sock), images=built)
    return built.refs


@pytest.fixture(scope="module")
def agents(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    operator_factory: OperatorFactory,  # noqa: F811
    crd_installed: None,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Agents]:
    """A namespace (PSA ``restricted`` enforced) with its own operator using the images built
    here; agents created through it run on the real node. Everything goes at module end."""
    with Agents.open(real_node, built_images, operator_factory) as made:
        yield made


@pytest.fixture(scope="module")
def policy_engine(real_node: RealNode) -> Iterator[str]:
    """The engine, installed (idempotent); removed again at the end when it was not there before,
    so other modules' expectations do not depend on the order the tests ran in."""
    was_there = netpol.installed(real_node.kubectl)
    ref = netpol.install(real_node.kubectl, real_node.layout)
    yield ref
    if not was_there:
        netpol.uninstall(real_node.kubectl, real_node.layout)
