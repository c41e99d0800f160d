"""The demo's view of the examples (tests/demo.py): what it changes to run them on the real node
with the real Vestige, and that the examples themselves keep what a real cluster needs."""

from __future__ import annotations

import copy

import pytest
from vestige_operator.api import VestigeMemorySpec

from tests import demo
from tests.cluster import node

IMAGE = "localhost/vestige:2.0.0-0123456789ab"
S3 = {
    "endpoint": "http://s3.demo.svc.cluster.local:7070",
    "bucket": "vestige-backups",
    "credentialsSecret": {"name": demo.S3_SECRET},
    "forcePathStyle": True,
    "region": "us-east-1",
}


@pytest.mark.parametrize("example", [*demo.AGENTS.values(), "restore.yaml"])
def test_the_demo_runs_each_example_with_the_real_vestige_on_the_real_node(example: str) -> None:
    original = demo._example(example)
    kept = copy.deepcopy(original)
    doc = demo._on_the_real_node(original, IMAGE, S3)
    assert original == kept, "the example itself was changed"
    spec = VestigeMemorySpec.model_validate(doc["spec"])  # what the CRD accepts
    assert doc["metadata"]["namespace"] == demo.NAMESPACE
    assert spec.vestige.image == IMAGE and spec.vestige.generation == "v1"
    assert spec.bridge.image is None  # the operator's default: the bridge built here
    assert spec.storage.storage_class_name == node.STORAGE_CLASS
    assert node.POD_PLACEMENT["nodeSelector"].items() <= (spec.pod.node_selector or {}).items()
    tolerations = list(spec.pod.tolerations or [])
    assert node.POD_PLACEMENT["tolerations"][0] in tolerations
    # What the example asked for stays (its own node selector and tolerations too).
    for key, value in (kept.get("spec", {}).get("pod", {}).get("nodeSelector") or {}).items():
        assert (spec.pod.node_selector or {})[key] == value
    assert len(tolerations) == len((kept.get("spec", {}).get("pod") or {}).get("tolerations") or []) + 1


def test_backups_and_restores_go_to_the_local_s3_server_keeping_the_prefix() -> None:
    full = demo._on_the_real_node(demo._example("full.yaml"), IMAGE, S3)
    dest = full["spec"]["backup"]["destination"]["s3"]
    assert dest == {**S3, "prefix": "team-a/"}  # the prefix restore.yaml reads from too
    restore = demo._on_the_real_node(demo._example("restore.yaml"), IMAGE, S3)
    assert restore["spec"]["restore"]["fromBackup"]["destination"] == {"s3": {**S3, "prefix": "team-a/"}}
    # a restore takes only its own namespace's snapshots: the demo's namespace, full.yaml's agent id
    assert restore["spec"]["restore"]["fromBackup"]["source"] == f"{demo.NAMESPACE}/research-assistant-prod"


def test_the_examples_keep_the_default_images_of_a_real_cluster() -> None:
    for example in ("minimal.yaml", "restore.yaml"):
        assert "vestige" not in (demo._example(example).get("spec") or {})
    full = demo._example("full.yaml")["spec"]
    assert full["vestige"]["image"].startswith("ghcr.io/") and full["vestige"]["generation"] == "v3"
    assert full["storage"]["storageClassName"] == "standard"
