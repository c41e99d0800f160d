"""Tokens on the real API server (issues 13 and 16): Vestige's internal token, moving existing
agents over, token rotation on request, ``allowAnonymous``. The operator runs as a real
subprocess; nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration import operator_fixtures
from tests.integration.conftest import Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorFactory, OperatorProcess
from tests.integration.test_operator import apply_memory, condition, pod_template, token_of, wait_ready

operator_factory = operator_fixtures.operator_factory
operator_process = operator_fixtures.operator_process

pytestmark = pytest.mark.timeout(300)

ROTATE = "vestige.dev/rotate-token"
GRACE = "vestige.dev/rotate-token-grace"


def annotate(kubectl: Kubectl, ns: str, name: str, **annotations: str) -> None:
    pairs = [f"{k}={v}" for k, v in annotations.items()]
    kubectl("-n", ns, "annotate", "--overwrite", "vmem", name, *pairs)


def events(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        "-n", ns, "get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}"
    ).stdout
    return list(json.loads(out)["items"])


def reasons(kubectl: Kubectl, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(kubectl, ns, name)]


def secret_values(kubectl: Kubectl, ns: str) -> set[str]:
    """Every token held by the namespace's Secrets (timestamps excluded)."""
    out = json.loads(kubectl("-n", ns, "get", "secrets", "-o", "json").stdout)
    values = set()
    for item in out["items"]:
        for key, value in (item.get("data") or {}).items():
            if key != "token-previous-expires":
                values.add(base64.b64decode(value).decode())
    return values


def assert_no_token_in(kubectl: Kubectl, ns: str, name: str, tokens: set[str], op: OperatorProcess) -> None:
    haystacks = {
        "events": json.dumps(events(kubectl, ns, name)),
        "status": json.dumps(must_get(kubectl, ns, "vmem", name).get("status")),
        "metadata": json.dumps(must_get(kubectl, ns, "vmem", name)["metadata"]),
        "operator log": op.log_path.read_text(errors="replace"),
    }
    for token in tokens:
        encoded = base64.b64encode(token.encode()).decode()
        for where, text in haystacks.items():
            assert token not in text, f"a token leaked into the {where}"
            assert encoded not in text, f"a base64 token leaked into the {where}"


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# -- issue 13 (3): Vestige's internal token ---------------------------------------------------------


def test_vestige_gets_its_own_token_never_the_agents(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "own")
    wait_ready(kubectl, namespace, "own")
    agents = token_of(kubectl, namespace, "own-auth")
    internal = token_of(kubectl, namespace, "own-auth", "vestige-token")
    assert len(internal) >= 40 and internal != agents
    template = pod_template(kubectl, namespace, "own")
    vestige, bridge = template["spec"]["containers"]
    ref = {"secretKeyRef": {"name": "own-auth", "key": "vestige-token"}}
    assert next(e for e in vestige["env"] if e["name"] == "VESTIGE_AUTH_TOKEN")["valueFrom"] == ref
    assert next(e for e in bridge["env"] if e["name"] == "VESTIGE_MCP_TOKEN")["valueFrom"] == ref
    # The agents' token reaches only the bridge, as files; the internal token is not among them.
    [volume] = [v for v in template["spec"]["volumes"] if v["name"] == "auth"]
    assert [i["key"] for i in volume["secret"]["items"]] == [
        "token",
        "token-previous",
        "token-previous-expires",
    ]
    assert all(m["name"] != "auth" for m in vestige.get("volumeMounts", []))
    assert all(e["name"] != "VESTIGE_AUTH_TOKEN" for e in bridge["env"])


def test_existing_agent_moves_over_keeping_its_token_and_data(
    kubectl: Kubectl, namespace: str, operator_factory: OperatorFactory
) -> None:
    """An agent created by the previous operator: ``<name>-auth`` has only ``token``. The new
    operator adds ``vestige-token`` once and never changes ``token``; the claim is kept."""
    apply_memory(kubectl, namespace, "legacy")
    memory = must_get(kubectl, namespace, "vmem", "legacy")
    owner_ref = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "name": "legacy",
        "uid": memory["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = {
        "app.kubernetes.io/name": "vestige",
        "app.kubernetes.io/instance": "legacy",
        "app.kubernetes.io/component": "auth",
        "app.kubernetes.io/managed-by": "vestige-operator",
    }
    old_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "legacy-auth", "labels": labels, "ownerReferences": [owner_ref]},
        "type": "Opaque",
        "data": {"token": base64.b64encode(b"the-agents-existing-token-0123456789").decode()},
    }
    kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(old_secret))
    before = must_get(kubectl, namespace, "secret", "legacy-auth")

    op = operator_factory(namespace)
    wait_ready(kubectl, namespace, "legacy")
    after = must_get(kubectl, namespace, "secret", "legacy-auth")
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert token_of(kubectl, namespace, "legacy-auth") == "the-agents-existing-token-0123456789"
    internal = token_of(kubectl, namespace, "legacy-auth", "vestige-token")
    assert internal and internal != "the-agents-existing-token-0123456789"
    pvc = must_get(kubectl, namespace, "pvc", "legacy-data")

    # Written once: further resyncs and a restart of the operator change nothing.
    version = after["metadata"]["resourceVersion"]
    time.sleep(op.resync_seconds * 2 + 1)
    op.restart()
    time.sleep(op.resync_seconds * 2 + 1)
    final = must_get(kubectl, namespace, "secret", "legacy-auth")
    assert final["metadata"]["resourceVersion"] == version
    assert token_of(kubectl, namespace, "legacy-auth", "vestige-token") == internal
    assert must_get(kubectl, namespace, "pvc", "legacy-data")["metadata"]["uid"] == pvc["metadata"]["uid"]
    managers = {m["manager"]: m["operation"] for m in final["metadata"]["managedFields"]}
    assert managers.get("vestige-operator") == "Update"
    assert_no_token_in(kubectl, namespace, "legacy", secret_values(kubectl, namespace), op)
    assert op.stop() == 0


def test_a_token_secret_not_owned_by_the_memory_is_never_written(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    """A Secret of the right name and labels that this VestigeMemory does not own is not written
    (no vestige-token added): the resource stalls and says why."""
    labels = {"app.kubernetes.io/managed-by": "vestige-operator", "app.kubernetes.io/instance": "foreign"}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "foreign-auth", "labels": labels},
        "data": {"token": base64.b64encode(b"someone-elses-token-0123456789").decode()},
    }
    kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(secret))
    before = must_get(kubectl, namespace, "secret", "foreign-auth")
    apply_memory(kubectl, namespace, "foreign")

    def stalled() -> dict[str, Any] | None:
        memory = must_get(kubectl, namespace, "vmem", "foreign")
        if not memory.get("status", {}).get("conditions"):
            return None
        return memory if condition(memory, "Stalled")["status"] == "True" else None

    memory = wait_until(stalled, 30, "the resource to stall")
    assert condition(memory, "Stalled")["reason"] == "ChildNotOwned"
    assert "not owned by this VestigeMemory" in condition(memory, "Stalled")["message"]
    time.sleep(operator_process.resync_seconds + 1)
    after = must_get(kubectl, namespace, "secret", "foreign-auth")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# -- issue 16: rotation on request ------------------------------------------------------------------


def test_rotation_on_request_with_grace_expiry_and_idempotence(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "rot")
    wait_ready(kubectl, namespace, "rot")
    old = token_of(kubectl, namespace, "rot-auth")
    internal = token_of(kubectl, namespace, "rot-auth", "vestige-token")
    template = pod_template(kubectl, namespace, "rot")
    generation = must_get(kubectl, namespace, "deployment", "rot")["metadata"]["generation"]
    assert "tokenRotatedAt" not in must_get(kubectl, namespace, "vmem", "rot")["status"]

    requested = datetime.now(UTC).replace(microsecond=0)
    annotate(kubectl, namespace, "rot", **{ROTATE: "2026-12-02T10.00.00Z-first", GRACE: "12s"})
    memory = wait_until(
        lambda: (
            (m := must_get(kubectl, namespace, "vmem", "rot")).get("status", {}).get("tokenRotatedAt") and m
        ),
        30,
        "status.tokenRotatedAt",
    )
    new = token_of(kubectl, namespace, "rot-auth")
    assert new != old and len(new) >= 40
    secret = must_get(kubectl, namespace, "secret", "rot-auth")
    assert token_of(kubectl, namespace, "rot-auth", "token-previous") == old
    assert token_of(kubectl, namespace, "rot-auth", "vestige-token") == internal  # never rotated
    expires = parse(token_of(kubectl, namespace, "rot-auth", "token-previous-expires"))
    rotated_at = parse(memory["status"]["tokenRotatedAt"])
    assert expires - rotated_at == timedelta(seconds=12)
    assert rotated_at >= requested - timedelta(seconds=1)
    assert (
        secret["metadata"]["annotations"]["vestige.dev/rotate-token-handled"] == "2026-12-02T10.00.00Z-first"
    )
    assert reasons(kubectl, namespace, "rot").count("TokenRotated") == 1
    [event] = [e for e in events(kubectl, namespace, "rot") if e["reason"] == "TokenRotated"]
    assert event["type"] == "Normal"
    # No restart: the pod template is the same object as before the rotation.
    assert pod_template(kubectl, namespace, "rot") == template
    assert must_get(kubectl, namespace, "deployment", "rot")["metadata"]["generation"] == generation

    # After the grace period the operator removes the previous token (its timer, not a resync).
    def cleaned() -> bool:
        data = must_get(kubectl, namespace, "secret", "rot-auth")["data"]
        return "token-previous" not in data and "token-previous-expires" not in data

    wait_until(cleaned, 12 + operator_process.resync_seconds + 20, "the previous token to be removed")
    assert datetime.now(UTC) >= expires
    assert token_of(kubectl, namespace, "rot-auth") == new

    # One request rotates once: the same id again (annotation rewritten, other edits) changes nothing.
    version = must_get(kubectl, namespace, "secret", "rot-auth")["metadata"]["resourceVersion"]
    annotate(kubectl, namespace, "rot", **{ROTATE: "2026-12-02T10.00.00Z-first", "unrelated": "x"})
    time.sleep(operator_process.resync_seconds * 2 + 1)
    assert must_get(kubectl, namespace, "secret", "rot-auth")["metadata"]["resourceVersion"] == version
    assert reasons(kubectl, namespace, "rot").count("TokenRotated") == 1

    # A new request id rotates again (default grace 10m).
    annotate(kubectl, namespace, "rot", **{ROTATE: "second"}, **{GRACE: ""})
    wait_until(lambda: token_of(kubectl, namespace, "rot-auth") != new, 30, "the second rotation")
    assert token_of(kubectl, namespace, "rot-auth", "token-previous") == new
    second_expires = parse(token_of(kubectl, namespace, "rot-auth", "token-previous-expires"))
    second_at = parse(must_get(kubectl, namespace, "vmem", "rot")["status"]["tokenRotatedAt"])
    assert second_expires - second_at == timedelta(minutes=10)
    assert pod_template(kubectl, namespace, "rot") == template
    assert reasons(kubectl, namespace, "rot").count("TokenRotated") == 2

    assert_no_token_in(kubectl, namespace, "rot", secret_values(kubectl, namespace) | {old}, operator_process)


def test_rotation_request_with_existing_secret_writes_nothing(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    kubectl(
        "-n", namespace, "create", "secret", "generic", "mine", "--from-literal=bearer=users-own-0123456789"
    )
    apply_memory(kubectl, namespace, "byo", {"auth": {"existingSecret": {"name": "mine", "key": "bearer"}}})
    wait_ready(kubectl, namespace, "byo")
    before = must_get(kubectl, namespace, "secret", "mine")
    own = must_get(kubectl, namespace, "secret", "byo-vestige")
    annotate(kubectl, namespace, "byo", **{ROTATE: "please"})
    wait_until(
        lambda: "RotationNotApplicable" in reasons(kubectl, namespace, "byo"),
        30,
        "a RotationNotApplicable event",
    )
    time.sleep(operator_process.resync_seconds * 2 + 1)
    assert reasons(kubectl, namespace, "byo").count("RotationNotApplicable") == 1
    assert (
        must_get(kubectl, namespace, "secret", "mine")["metadata"]["resourceVersion"]
        == before["metadata"]["resourceVersion"]
    )
    assert (
        must_get(kubectl, namespace, "secret", "byo-vestige")["metadata"]["resourceVersion"]
        == own["metadata"]["resourceVersion"]
    )
    assert "tokenRotatedAt" not in must_get(kubectl, namespace, "vmem", "byo")["status"]
    assert get(kubectl, namespace, "secret", "byo-auth") is None


# -- issue 13 (2): allowAnonymous ----------------------------------------------------------------


def test_allow_anonymous_gives_the_bridge_no_token_and_says_so(
    kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "open", {"bridge": {"allowAnonymous": True}})
    memory = wait_ready(kubectl, namespace, "open")
    ready = condition(memory, "Ready")
    assert ready["status"] == "True"
    assert "OPEN: spec.bridge.allowAnonymous is true" in ready["message"]
    wait_until(
        lambda: "AnonymousAccess" in reasons(kubectl, namespace, "open"), 30, "an AnonymousAccess event"
    )
    [event] = [e for e in events(kubectl, namespace, "open") if e["reason"] == "AnonymousAccess"]
    assert event["type"] == "Warning"

    template = pod_template(kubectl, namespace, "open")
    _, bridge = template["spec"]["containers"]
    env = {e["name"]: e for e in bridge["env"]}
    assert env["VESTIGE_ALLOW_ANONYMOUS"]["value"] == "true"
    assert "VESTIGE_AUTH_TOKEN" not in env and "VESTIGE_AUTH_TOKEN_DIR" not in env
    assert all(v["name"] != "auth" for v in template["spec"]["volumes"])
    assert env["VESTIGE_MCP_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "open-auth", "key": "vestige-token"}
    }

    # One event per transition: resyncs add none; closing it again removes the note.
    time.sleep(operator_process.resync_seconds * 2 + 1)
    assert reasons(kubectl, namespace, "open").count("AnonymousAccess") == 1
    kubectl(
        "-n",
        namespace,
        "patch",
        "vmem",
        "open",
        "--type=merge",
        "-p",
        '{"spec":{"bridge":{"allowAnonymous":false}}}',
    )
    memory = wait_ready(kubectl, namespace, "open")
    assert "OPEN" not in condition(memory, "Ready")["message"]
    env = {e["name"] for e in pod_template(kubectl, namespace, "open")["spec"]["containers"][1]["env"]}
    assert "VESTIGE_AUTH_TOKEN_DIR" in env
