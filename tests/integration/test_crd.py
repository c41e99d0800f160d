"""The generated VestigeMemory CRD against the real API server: schema, defaults, CEL, columns."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from vestige_operator import GROUP, KIND, PLURAL, VERSION
from vestige_operator.api import (
    MAX_ANNOTATION_VALUE_LENGTH,
    MAX_ENV,
    MAX_ENV_VALUE_LENGTH,
    MAX_LIST_ITEMS,
    VestigeMemorySpec,
    VestigeMemoryStatus,
)

from tests.integration.conftest import Kubectl

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crd_installed")]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


def vmem(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}}
    if spec is not None:
        body["spec"] = spec
    return body


class Resources:
    """Thin helper over CustomObjectsApi for VestigeMemory in one namespace."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace

    def create(self, body: dict[str, Any], field_validation: str = "Strict") -> dict[str, Any]:
        return self.api.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body, field_validation=field_validation
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def update(self, name: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, mutate and PUT the whole object (a real update, so transition rules run)."""
        obj = self.get(name)
        mutate(obj["spec"])
        return self.api.replace_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, obj, field_validation="Strict"
        )

    def patch_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.api.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )


@pytest.fixture
def vm(api_client: client.ApiClient, namespace: str) -> Resources:
    return Resources(client.CustomObjectsApi(api_client), namespace)


def rejection(call: Callable[[], Any]) -> str:
    """Run a call that the API server must refuse at admission; return the error message."""
    with pytest.raises(ApiException) as err:
        call()
    # 422 Invalid: schema, CEL or name validation; 400 BadRequest: strict field validation.
    expected = {422: "Invalid", 400: "BadRequest"}
    assert err.value.status in expected, f"got {err.value.status}: {err.value.body}"
    body = json.loads(err.value.body)
    assert body["reason"] == expected[err.value.status]
    return str(body["message"])


# -- 1. established, explained -----------------------------------------------------------------------


def _explain(kubectl: Kubectl, path: str, timeout: float = 60) -> str:
    """``kubectl explain``, retried while the API server publishes the new schema in OpenAPI."""
    deadline = time.monotonic() + timeout
    while True:
        proc = kubectl("explain", path, check=False)
        if proc.returncode == 0:
            return proc.stdout
        assert time.monotonic() < deadline, f"kubectl explain {path}: {proc.stderr}"
        time.sleep(1)


def test_crd_is_established_and_explained(kubectl: Kubectl) -> None:
    crd = json.loads(kubectl("get", "crd", f"{PLURAL}.{GROUP}", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert conditions.get("NonStructuralSchema") is None

    out = _explain(kubectl, "vestigememory.spec.storage")
    assert "The data volume." in out
    for field, words in {
        "size": "Requested size of the data volume",
        "storageClassName": "StorageClass of the data volume",
        "reclaimPolicy": "outlives the VestigeMemory",
    }.items():
        assert field in out and words in " ".join(out.split()), field
    detail = _explain(kubectl, "vmem.spec.storage.reclaimPolicy")
    assert "Retain" in detail and "Delete" in detail
    # The bounds are in the descriptions, and so is what only reconcile checks.
    env = " ".join(_explain(kubectl, "vmem.spec.vestige.env").split())
    assert f"At most {MAX_ENV} items" in env
    value = " ".join(_explain(kubectl, "vmem.spec.vestige.env.value").split())
    assert f"At most {MAX_ENV_VALUE_LENGTH} characters" in value
    schedule = " ".join(_explain(kubectl, "vmem.spec.backup.schedule").split())
    assert "checked when reconciled" in schedule


# -- 2. examples and defaults ---------------------------------------------------------------------------


def test_examples_are_accepted_and_defaults_filled(kubectl: Kubectl, namespace: str, vm: Resources) -> None:
    for example in ("minimal.yaml", "full.yaml"):
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / example))

    minimal = vm.get("my-agent")
    assert minimal["spec"] == {
        "suspend": False,
        "storage": {"size": "5Gi", "reclaimPolicy": "Retain"},
        "vestige": {"generation": "v3", "resources": {}},
        "bridge": {"resources": {}, "allowAnonymous": False},
        "auth": {},
        "service": {"type": "ClusterIP"},
        "ingress": {"enabled": False, "path": "/", "pathType": "Prefix"},
        "networkPolicy": {"enabled": True},
        "pod": {},
    }
    assert VestigeMemorySpec.model_validate(minimal["spec"]) == VestigeMemorySpec()

    full_doc = yaml.safe_load((EXAMPLES / "full.yaml").read_text())
    full = vm.get(full_doc["metadata"]["name"])
    assert VestigeMemorySpec.model_validate(full["spec"]) == VestigeMemorySpec.model_validate(
        full_doc["spec"]
    )
    # Free-form Kubernetes objects are kept verbatim.
    assert full["spec"]["pod"]["affinity"] == full_doc["spec"]["pod"]["affinity"]
    assert full["spec"]["networkPolicy"]["from"] == full_doc["spec"]["networkPolicy"]["from"]
    assert (
        full["spec"]["vestige"]["env"][1]["valueFrom"] == full_doc["spec"]["vestige"]["env"][1]["valueFrom"]
    )


def test_every_example_applies(kubectl: Kubectl, namespace: str) -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert len(examples) >= 4
    for example in examples:
        kubectl("apply", "-n", namespace, "-f", str(example))
    names = kubectl("get", "vestige", "-n", namespace, "-o", "name").stdout.split()
    for example in examples:
        doc = yaml.safe_load(example.read_text())
        assert f"{doc['kind'].lower()}.{GROUP}/{doc['metadata']['name']}" in names


def test_minimal_object_without_spec_gets_a_spec(vm: Resources) -> None:
    created = vm.create(vmem("no-spec"))
    assert created["spec"]["storage"]["size"] == "5Gi"
    assert created["spec"]["networkPolicy"]["enabled"] is True


# -- 3. malformed resources are rejected, naming the field ------------------------------------------------

LONG = "a" * 64
S3 = {"s3": {"bucket": "backups", "credentialsSecret": {"name": "s3-creds"}}}
INVALID_CREATES: list[tuple[str, dict[str, Any], str]] = [
    # (name, spec, field named in the error message)
    ("bad-suspend-type", {"suspend": "yes"}, "spec.suspend"),
    ("bad-storage-type", {"storage": "5Gi"}, "spec.storage"),
    ("bad-size-unit", {"storage": {"size": "5 GB"}}, "spec.storage.size"),
    ("bad-size-word", {"storage": {"size": "lots"}}, "spec.storage.size"),
    ("bad-size-float", {"storage": {"size": 1.5}}, "spec.storage.size"),
    ("zero-size", {"storage": {"size": "0"}}, "spec.storage.size"),
    ("zero-size-int", {"storage": {"size": 0}}, "spec.storage.size"),
    ("negative-size", {"storage": {"size": "-1Gi"}}, "spec.storage.size"),
    ("bad-reclaim", {"storage": {"reclaimPolicy": "Recycle"}}, "spec.storage.reclaimPolicy"),
    ("bad-class", {"storage": {"storageClassName": "Fast_SSD"}}, "spec.storage.storageClassName"),
    ("bad-generation", {"vestige": {"generation": "v2"}}, "spec.vestige.generation"),
    ("bad-pull-policy", {"vestige": {"imagePullPolicy": "Sometimes"}}, "spec.vestige.imagePullPolicy"),
    ("empty-image", {"vestige": {"image": ""}}, "spec.vestige.image"),
    (
        "negative-request",
        {"vestige": {"resources": {"requests": {"cpu": "-100m"}}}},
        "spec.vestige.resources.requests",
    ),
    ("bad-limit", {"bridge": {"resources": {"limits": {"memory": "lots"}}}}, "spec.bridge.resources.limits"),
    ("env-without-name", {"bridge": {"env": [{"value": "x"}]}}, "spec.bridge.env[0].name"),
    (
        "env-value-and-from",
        {"bridge": {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}},
        "spec.bridge.env[0]",
    ),
    (
        "env-duplicate",
        {"vestige": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.vestige.env[1]",
    ),
    (
        "env-too-many",
        {"vestige": {"env": [{"name": f"V{i}", "value": "x"} for i in range(MAX_ENV + 1)]}},
        "spec.vestige.env",
    ),
    ("bad-anonymous", {"bridge": {"allowAnonymous": "no"}}, "spec.bridge.allowAnonymous"),
    ("secret-without-name", {"auth": {"existingSecret": {"key": "token"}}}, "spec.auth.existingSecret.name"),
    ("bad-secret-name", {"auth": {"existingSecret": {"name": "Bad_Name"}}}, "spec.auth.existingSecret.name"),
    (
        "bad-secret-key",
        {"auth": {"existingSecret": {"name": "s", "key": "a b"}}},
        "spec.auth.existingSecret.key",
    ),
    ("bad-service-type", {"service": {"type": "ExternalName"}}, "spec.service.type"),
    ("bad-annotation-value", {"service": {"annotations": {"a": 1}}}, "spec.service.annotations.a"),
    ("bad-path", {"ingress": {"path": "no-slash"}}, "spec.ingress.path"),
    ("bad-path-type", {"ingress": {"pathType": "Regex"}}, "spec.ingress.pathType"),
    ("bad-host", {"ingress": {"host": "Bad Host"}}, "spec.ingress.host"),
    ("tls-without-host", {"ingress": {"tls": {"secretName": "t"}}}, "spec.ingress.tls"),
    ("tls-without-secret", {"ingress": {"host": "a.example.com", "tls": {}}}, "spec.ingress.tls.secretName"),
    ("bad-np-enabled", {"networkPolicy": {"enabled": "yes"}}, "spec.networkPolicy.enabled"),
    ("bad-np-from", {"networkPolicy": {"from": "everyone"}}, "spec.networkPolicy.from"),
    ("reserved-label", {"pod": {"labels": {"app.kubernetes.io/instance": "x"}}}, "spec.pod.labels"),
    ("bad-label-value", {"pod": {"labels": {"team": "has space"}}}, "spec.pod.labels.team"),
    ("bad-tolerations", {"pod": {"tolerations": "all"}}, "spec.pod.tolerations"),
    ("pull-secret-no-name", {"pod": {"imagePullSecrets": [{}]}}, "spec.pod.imagePullSecrets[0].name"),
    ("bad-priority-class", {"pod": {"priorityClassName": "UPPER"}}, "spec.pod.priorityClassName"),
    ("bad-agent-id", {"agentId": "Not_A_Label"}, "spec.agentId"),
    ("long-agent-id", {"agentId": LONG}, "spec.agentId"),
    ("agent-id-type", {"agentId": 42}, "spec.agentId"),
    # bounds and formats (issue 21 item 5, issue 22): refused at admission, not Stalled later
    ("bad-cron", {"backup": {"schedule": "every five minutes", "destination": S3}}, "spec.backup.schedule"),
    ("cron-six-fields", {"backup": {"schedule": "0 0 * * * *", "destination": S3}}, "spec.backup.schedule"),
    ("cron-macro", {"backup": {"schedule": "@hourly", "destination": S3}}, "spec.backup.schedule"),
    (
        "bad-max-age",
        {"backup": {"retention": {"maxAge": "1y"}, "destination": S3}},
        "spec.backup.retention.maxAge",
    ),
    (
        "restore-key-dotdot",
        {"restore": {"fromBackup": {"destination": S3, "source": "a/b", "key": "a/../b/x.tar.gz"}}},
        "spec.restore.fromBackup.key",
    ),
    ("bad-image", {"vestige": {"image": "Not An Image"}}, "spec.vestige.image"),
    ("image-with-space", {"bridge": {"image": "ghcr.io/a/b:1 --privileged"}}, "spec.bridge.image"),
    ("bad-env-name", {"vestige": {"env": [{"name": "A=B", "value": "1"}]}}, "spec.vestige.env[0].name"),
    (
        "long-env-value",
        {"vestige": {"env": [{"name": "A", "value": "x" * (MAX_ENV_VALUE_LENGTH + 1)}]}},
        "spec.vestige.env[0].value",
    ),
    (
        "env-from-bad-secret",
        {"bridge": {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]}},
        "spec.bridge.env[0].valueFrom.secretKeyRef.name",
    ),
    ("path-dotdot", {"ingress": {"path": "/a/../b"}}, "spec.ingress.path"),
    ("path-double-slash", {"ingress": {"path": "//evil.example.com/x"}}, "spec.ingress.path"),
    ("path-query", {"ingress": {"path": "/a?b=c"}}, "spec.ingress.path"),
    ("path-regex", {"ingress": {"path": "/(.*)"}}, "spec.ingress.path"),
    (
        "long-annotation",
        {"service": {"annotations": {"a": "x" * (MAX_ANNOTATION_VALUE_LENGTH + 1)}}},
        "spec.service.annotations.a",
    ),
    ("bad-annotation-key", {"ingress": {"annotations": {"bad key": "x"}}}, "spec.ingress.annotations"),
    ("long-label-key", {"pod": {"labels": {"a" * 64: "x"}}}, "spec.pod.labels"),
    ("bad-node-selector", {"pod": {"nodeSelector": {"k": "has space"}}}, "spec.pod.nodeSelector.k"),
    (
        "bad-resource-name",
        {"vestige": {"resources": {"requests": {"cpu!": "1"}}}},
        "spec.vestige.resources.requests",
    ),
    (
        "too-many-tolerations",
        {"pod": {"tolerations": [{"key": f"k{i}", "operator": "Exists"} for i in range(MAX_LIST_ITEMS + 1)]}},
        "spec.pod.tolerations",
    ),
    (
        "bad-toleration",
        {"pod": {"tolerations": [{"operator": "Sometimes"}]}},
        "spec.pod.tolerations[0].operator",
    ),
    (
        "affinity-weight",
        {
            "pod": {
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 1000, "preference": {}}
                        ]
                    }
                }
            }
        },
        "spec.pod.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
    ),
    (
        "bad-cidr",
        {"networkPolicy": {"from": [{"ipBlock": {"cidr": "everyone"}}]}},
        "spec.networkPolicy.from[0]",
    ),
]
INVALID_NAMES: list[tuple[str, str]] = [
    ("1starts-with-digit", "metadata.name"),
    ("a" * 47, "metadata.name"),
    ("dotted.name", "metadata.name"),
    ("ends-with-dash-", "metadata.name"),
]


@pytest.mark.parametrize(("name", "spec", "field"), INVALID_CREATES, ids=[c[0] for c in INVALID_CREATES])
def test_invalid_resource_is_rejected(vm: Resources, name: str, spec: dict[str, Any], field: str) -> None:
    message = rejection(lambda: vm.create(vmem(name, spec)))
    assert field in message, message


@pytest.mark.parametrize(("name", "field"), INVALID_NAMES, ids=["digit", "too-long", "dotted", "dash"])
def test_invalid_name_is_rejected(vm: Resources, name: str, field: str) -> None:
    message = rejection(lambda: vm.create(vmem(name)))
    assert field in message, message


def test_longest_name_is_accepted(vm: Resources) -> None:
    name = "a" * 46
    assert vm.create(vmem(name))["metadata"]["name"] == name


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A spec mutation: set (or with value None, remove) the dotted path."""

    def mutate(spec: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value

    return mutate


INVALID_UPDATES: list[tuple[str, dict[str, Any], str, Any, str]] = [
    # (name, initial spec, path changed, new value (None: removed), field named in the error)
    ("agent-change", {"agentId": "alpha"}, "agentId", "beta", "spec.agentId"),
    ("agent-set-later", {}, "agentId", "someone-else", "spec.agentId"),
    ("agent-removed", {"agentId": "alpha"}, "agentId", None, "spec.agentId"),
    (
        "class-change",
        {"storage": {"storageClassName": "standard"}},
        "storage.storageClassName",
        "fast",
        "spec.storage.storageClassName",
    ),
    ("class-set-later", {}, "storage.storageClassName", "fast", "spec.storage.storageClassName"),
    (
        "class-removed",
        {"storage": {"storageClassName": "standard"}},
        "storage.storageClassName",
        None,
        "spec.storage.storageClassName",
    ),
    ("shrink", {"storage": {"size": "10Gi"}}, "storage.size", "5Gi", "spec.storage.size"),
    ("shrink-int-to-string", {"storage": {"size": 10 * 2**30}}, "storage.size", "9Gi", "spec.storage.size"),
    ("shrink-by-removal", {"storage": {"size": "10Gi"}}, "storage.size", None, "spec.storage.size"),
]


@pytest.mark.parametrize(
    ("name", "initial", "path", "value", "field"), INVALID_UPDATES, ids=[c[0] for c in INVALID_UPDATES]
)
def test_forbidden_change_is_rejected(
    vm: Resources, name: str, initial: dict[str, Any], path: str, value: Any, field: str
) -> None:
    vm.create(vmem(name, copy.deepcopy(initial)))
    message = rejection(lambda: vm.update(name, _set(path, value)))
    assert field in message, message
    # Nothing changed.
    assert vm.get(name)["metadata"]["generation"] == 1


def test_allowed_changes_are_accepted(vm: Resources) -> None:
    vm.create(vmem("grows", {"storage": {"size": "5Gi", "storageClassName": "standard"}}))
    assert vm.update("grows", _set("storage.size", "6Gi"))["spec"]["storage"]["size"] == "6Gi"
    assert vm.update("grows", _set("storage.size", 8 * 2**30))["spec"]["storage"]["size"] == 8 * 2**30
    assert (
        vm.update("grows", _set("storage.reclaimPolicy", "Delete"))["spec"]["storage"]["reclaimPolicy"]
        == "Delete"
    )
    assert vm.update("grows", _set("suspend", True))["spec"]["suspend"] is True
    # Writing the name as the agent id keeps the agent id in force: allowed.
    assert vm.update("grows", _set("agentId", "grows"))["spec"]["agentId"] == "grows"
    assert vm.update("grows", _set("agentId", None))["spec"].get("agentId") is None


# (name, spec, the field and the words of kubectl's refusal)
KUBECTL_REFUSALS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "cron",
        {"backup": {"schedule": "every five minutes", "destination": S3}},
        ["spec.backup.schedule", "should match"],
    ),
    (
        "path",
        {"ingress": {"path": "/a/../b"}},
        ["spec.ingress.path", "ingress.path may not contain a '..' segment"],
    ),
    (
        "env",
        {"vestige": {"env": [{"name": f"V{i}", "value": "x"} for i in range(MAX_ENV + 1)]}},
        ["spec.vestige.env", f"must have at most {MAX_ENV} items"],
    ),
    (
        "long",
        {"bridge": {"env": [{"name": "A", "value": "x" * (MAX_ENV_VALUE_LENGTH + 1)}]}},
        ["spec.bridge.env[0].value", f"{MAX_ENV_VALUE_LENGTH}"],
    ),
    (
        "duration",
        {"backup": {"retention": {"maxAge": "30 days"}, "destination": S3}},
        ["spec.backup.retention.maxAge"],
    ),
    ("label-key", {"pod": {"labels": {"-bad": "x"}}}, ["spec.pod.labels", "keys must be qualified names"]),
]


@pytest.mark.parametrize(("name", "spec", "words"), KUBECTL_REFUSALS, ids=[c[0] for c in KUBECTL_REFUSALS])
def test_kubectl_apply_refuses_bad_input_with_the_reason(
    kubectl: Kubectl, namespace: str, name: str, spec: dict[str, Any], words: list[str]
) -> None:
    doc = vmem(f"refused-{name}", spec)
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert proc.returncode != 0, proc.stdout
    message = " ".join(proc.stderr.split())
    for word in words:
        assert word in message, message
    assert kubectl("get", "vmem", f"refused-{name}", "-n", namespace, check=False).returncode != 0


def test_largest_bounded_spec_is_accepted(vm: Resources) -> None:
    """The bounds are limits, not traps: a spec at every bound is admitted."""
    spec = {
        "vestige": {
            "env": [{"name": f"V{i}", "value": "x" * MAX_ENV_VALUE_LENGTH} for i in range(MAX_ENV)],
            "image": "registry.example.com:5000/team/vestige:3.2.0@sha256:" + "a" * 64,
        },
        "service": {
            "annotations": {f"example.com/a{i}": "x" * MAX_ANNOTATION_VALUE_LENGTH for i in range(8)}
        },
        "ingress": {"path": "/agents/research_assistant/v1.2/~mcp-"},
        "pod": {"tolerations": [{"key": f"k{i}", "operator": "Exists"} for i in range(MAX_LIST_ITEMS)]},
        "backup": {"schedule": "*/15 1-5,22 L JAN-MAR MON#2", "destination": S3},
    }
    created = vm.create(vmem("at-the-bounds", spec))
    assert len(created["spec"]["vestige"]["env"]) == MAX_ENV


def test_enough_malformed_cases() -> None:
    assert len(INVALID_CREATES) + len(INVALID_NAMES) + len(INVALID_UPDATES) >= 30


# -- 4. printer columns and category ---------------------------------------------------------------------


def test_columns_and_category(kubectl: Kubectl, namespace: str, vm: Resources) -> None:
    vm.create(vmem("columns", {"storage": {"size": "7Gi"}}))  # bound below with 20Gi
    vm.patch_status(
        "columns",
        {
            "phase": "Ready",
            "agentId": "columns",
            "endpoint": f"http://columns.{namespace}.svc:8000",
            "observedGeneration": 1,
            "storage": {"capacity": "20Gi"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllChildrenReady",
                    "message": "",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        },
    )
    out = kubectl("get", "vmem", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "AGENT", "PHASE", "READY", "ENDPOINT", "STORAGE", "AGE"]
    row = out[1].split()
    # STORAGE: the bound volume's capacity, not the 7Gi request.
    assert row[:6] == ["columns", "columns", "Ready", "True", f"http://columns.{namespace}.svc:8000", "20Gi"]

    listed = kubectl("get", "vestige", "-n", namespace, "-o", "name").stdout.split()
    assert listed == [f"vestigememory.{GROUP}/columns"]

    status = VestigeMemoryStatus.model_validate(vm.get("columns")["status"])
    assert status.condition("Ready") is not None


def test_operator_crd_command_output_applies_with_kubectl(kubectl: Kubectl) -> None:
    """`vestige-operator crd | kubectl apply -f -` installs every CRD (server-side dry run: the
    shared cluster keeps the ones the fixture applied)."""
    out = subprocess.run(
        [sys.executable, "-m", "vestige_operator", "crd"], capture_output=True, text=True, check=True
    ).stdout
    proc = kubectl("apply", "--dry-run=server", "-f", "-", "-o", "name", input=out)
    assert proc.stdout.split() == [
        f"customresourcedefinition.apiextensions.k8s.io/{PLURAL}.{GROUP}",
        f"customresourcedefinition.apiextensions.k8s.io/vestigebackups.{GROUP}",
        f"customresourcedefinition.apiextensions.k8s.io/vestigebackupgrants.{GROUP}",
    ]


def test_status_is_a_subresource(vm: Resources) -> None:
    vm.create(vmem("subres"))
    # Status sent with the main resource is ignored...
    obj = vm.get("subres")
    obj["status"] = {"phase": "Ready"}
    updated = vm.api.replace_namespaced_custom_object(GROUP, VERSION, vm.namespace, PLURAL, "subres", obj)
    assert "status" not in updated or updated["status"].get("phase") is None
    # ...and an invalid status is refused by the status subresource.
    message = rejection(lambda: vm.patch_status("subres", {"phase": "Running"}))
    assert "status.phase" in message


# -- 5. unknown fields -----------------------------------------------------------------------------------


def test_unknown_fields_rejected_by_kubectl(kubectl: Kubectl, namespace: str) -> None:
    doc = vmem("strict", {"storage": {"size": "1Gi", "sizee": "2Gi"}, "bogus": True})
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.bogus"' in proc.stderr
    assert 'unknown field "spec.storage.sizee"' in proc.stderr
    assert kubectl("get", "vmem", "strict", "-n", namespace, check=False).returncode != 0


def test_unknown_fields_rejected_by_strict_field_validation(vm: Resources) -> None:
    message = rejection(lambda: vm.create(vmem("strict-api", {"bogus": 1}), field_validation="Strict"))
    assert 'unknown field "spec.bogus"' in message


@pytest.mark.parametrize("mode", ["Ignore", "Warn"])
def test_unknown_fields_pruned_without_strict_validation(vm: Resources, mode: str) -> None:
    name = f"pruned-{mode.lower()}"
    created = vm.create(
        vmem(name, {"bogus": 1, "storage": {"size": "2Gi", "sizee": "3Gi"}}), field_validation=mode
    )
    stored = vm.get(name)
    for obj in (created, stored):
        assert "bogus" not in obj["spec"]
        assert obj["spec"]["storage"] == {"size": "2Gi", "reclaimPolicy": "Retain"}
    # Kubernetes objects passed to the pod are typed (bounded) too: their unknown fields go.
    peer = {"podSelector": {"matchLabels": {"a": "b"}}, "futureField": {"x": 1}}
    vm.create(vmem(f"{name}-peer", {"networkPolicy": {"from": [peer]}}), field_validation=mode)
    assert vm.get(f"{name}-peer")["spec"]["networkPolicy"]["from"] == [
        {"podSelector": {"matchLabels": {"a": "b"}}}
    ]
