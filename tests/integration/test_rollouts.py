"""Paced fleet rollouts against the real API server (kwok runs the pods): an operator upgrade that
changes the default bridge image restarts at most VESTIGE_MAX_FLEET_ROLLOUTS agents at a time,
every agent converges, and one agent's own spec change made during the fleet rollout is applied
at once. The figures go to results/faults.json (section ``paced_rollout``); no timed assertion.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import Kubectl
from tests.integration.operator_fixtures import OperatorFactory
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture
from tests.integration.test_faults import apply_memory, items, patch_spec, record, settled

OLD = "example.org/vestige-bridge:0.1.0"
NEW = "example.org/vestige-bridge:0.2.0"
LIMIT = 3


def _bridge_image(deployment: dict[str, Any]) -> str:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return str(next(c["image"] for c in containers if c["name"] == "bridge"))


def _rolled_out(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) >= 1
        and status.get("availableReplicas", 0) >= 1
        and status.get("replicas", 0) == 1
    )


#: The agent's own change made during the fleet rollout (its Deployment has other env vars).
OWN_ENV = {"name": "RUST_LOG", "value": "debug"}


def _env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return list(next(c for c in containers if c["name"] == "vestige").get("env") or [])


@pytest.mark.parametrize(
    "agents", [pytest.param(24, id="24"), pytest.param(200, id="200", marks=pytest.mark.slow)]
)
@pytest.mark.usefixtures("crd_installed")
def test_new_default_images_roll_out_at_most_n_at_a_time(
    kubectl: Kubectl, namespace: str, operator_factory: OperatorFactory, agents: int
) -> None:
    ns = namespace
    settings = {"VESTIGE_MAX_FLEET_ROLLOUTS": str(LIMIT), "VESTIGE_MAX_CONCURRENT_RECONCILES": "8"}
    first = operator_factory(ns, env=settings)
    names = [f"agent-{i:03d}" for i in range(agents)]
    for name in names:
        apply_memory(kubectl, ns, name, {})
    deadline = time.monotonic() + 60 + agents * 3
    while time.monotonic() < deadline:
        memories = items(kubectl, ns, "vmem")
        if len(memories) == agents and all(settled(m, "Ready") for m in memories):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"{agents} agents not Ready: {[m['metadata']['name'] for m in memories]}")
    first.stop()

    # The operator upgrade: same settings, a new default bridge image.
    upgraded = operator_factory(ns, env={**settings, "VESTIGE_BRIDGE_IMAGE": NEW})
    started = time.monotonic()
    own = names[-1]  # last in line: its own change must not wait for the fleet
    own_changed_at: float | None = None
    own_applied_at: float | None = None
    fleet_new_when_own_applied: int | None = None
    most_rolling = 0
    samples = 0
    waiting_seen = 0
    deadline = started + 120 + agents * 5
    while time.monotonic() < deadline:
        deployments = {d["metadata"]["name"]: d for d in items(kubectl, ns, "deployments")}
        new = [n for n, d in deployments.items() if _bridge_image(d) == NEW]
        rolling = [n for n in new if n != own and not _rolled_out(deployments[n])]
        most_rolling = max(most_rolling, len(rolling))
        samples += 1
        if own_changed_at is None and 0 < len(new) < agents // 2:
            patch_spec(kubectl, ns, own, {"vestige": {"env": [OWN_ENV]}})
            own_changed_at = time.monotonic()
        # (elif: this sample was read before the change)
        elif own_changed_at is not None and own_applied_at is None and OWN_ENV in _env(deployments[own]):
            own_applied_at = time.monotonic()
            fleet_new_when_own_applied = len(new)
        memories = items(kubectl, ns, "vmem")
        waiting_seen = max(
            waiting_seen,
            sum(
                1
                for m in memories
                if any(
                    c["type"] == "Reconciling" and c.get("reason") == "RolloutPending"
                    for c in (m.get("status") or {}).get("conditions") or []
                )
            ),
        )
        if (
            len(new) == agents
            and all(_rolled_out(d) for d in deployments.values())
            and all(settled(m, "Ready") for m in memories)
        ):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"the fleet did not converge: {len(new)}/{agents} on {NEW}")
    converged = time.monotonic() - started

    assert most_rolling <= LIMIT, f"{most_rolling} agents restarted at once (limit {LIMIT})"
    assert waiting_seen > 0, "no agent was ever reported waiting (RolloutPending)"
    assert own_applied_at is not None and fleet_new_when_own_applied is not None
    assert fleet_new_when_own_applied < agents, "the agent's own change waited for the whole fleet"
    assert upgraded.alive(), "the upgraded operator exited"
    record(
        f"paced_rollout_{agents}",
        {
            "agents": agents,
            "limit": LIMIT,
            "most_restarting_at_once_seen": most_rolling,
            "most_waiting_seen": waiting_seen,
            "samples": samples,
            "fleet_converged_seconds": round(converged, 1),
            "own_change_applied_after_seconds": round(own_applied_at - (own_changed_at or own_applied_at), 1),
            "agents_on_new_image_when_own_change_applied": fleet_new_when_own_applied,
        },
    )
