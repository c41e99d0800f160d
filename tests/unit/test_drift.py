"""Drift compares only what the operator owns: keyed lists by their key (issue 13, item 5)."""

from __future__ import annotations

import json
from typing import Any

from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import render_children
from vestige_operator.plan import apply_reason, first_difference
from vestige_operator.vocabulary import Images, Owner

OWNER = Owner(name="agent-a", namespace="team", uid="uid-1")
IMAGES = Images(
    vestige="example.org/vestige:3", bridge="example.org/bridge:1", litestream="example.org/litestream:0.5.18"
)


def deployment() -> dict[str, Any]:
    dep = next(
        m for m in render_children(OWNER, VestigeMemorySpec(), IMAGES, "h").apply if m["kind"] == "Deployment"
    )
    return json.loads(json.dumps(dep))


def test_other_managers_entries_in_keyed_lists_are_not_drift() -> None:
    desired = deployment()
    live = deployment()
    pod = live["spec"]["template"]["spec"]
    pod["containers"][0]["env"].append({"name": "FOO", "value": "bar"})  # kubectl set env
    pod["containers"][1]["env"].insert(0, {"name": "INJECTED", "value": "1"})  # order moved too
    pod["containers"][0]["volumeMounts"].append({"name": "extra", "mountPath": "/extra"})
    pod["containers"][1]["ports"].append({"name": "metrics", "containerPort": 9090, "protocol": "TCP"})
    pod["volumes"].append({"name": "extra", "emptyDir": {}})
    pod["containers"].append({"name": "sidecar", "image": "example.org/sidecar:1"})
    assert apply_reason(desired, live) is None


def test_owned_entries_are_still_compared_by_key() -> None:
    desired = deployment()
    live = deployment()
    env = live["spec"]["template"]["spec"]["containers"][1]["env"]
    agent = next(e for e in env if e["name"] == "VESTIGE_AGENT_ID")
    agent["value"] = "someone-else"
    reason = apply_reason(desired, live)
    assert reason is not None and "/containers/1/env/" in reason

    live = deployment()
    env = live["spec"]["template"]["spec"]["containers"][1]["env"]
    env[:] = [e for e in env if e["name"] != "VESTIGE_AGENT_ID"]  # an owned entry removed
    assert apply_reason(desired, live) is not None

    live = deployment()
    mount = live["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["name"] = "not-data"  # our mountPath now mounts another volume
    assert apply_reason(desired, live) is not None


def test_unkeyed_lists_still_compare_element_wise() -> None:
    assert first_difference({"args": ["--http"]}, {"args": ["--http", "--evil"]}) == "/args"
    assert first_difference({"modes": ["ReadWriteOnce"]}, {"modes": ["ReadWriteMany"]}) == "/modes/0"
    # a list of scalars under a keyed name is compared element-wise too
    assert first_difference({"ports": [8000]}, {"ports": [8000, 9000]}) == "/ports"
