"""The VestigeMemory pydantic models (operator/vestige_operator/api.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.utils.quantity import parse_quantity as k8s_parse_quantity
from pydantic import BaseModel, ValidationError
from vestige_operator import api
from vestige_operator.api import (
    Condition,
    VestigeMemorySpec,
    VestigeMemoryStatus,
    parse_quantity,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"


def _example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


# -- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5Gi", Decimal(5 * 2**30)),
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        ("1.5G", Decimal(1_500_000_000)),
        ("+2Ki", Decimal(2048)),
        ("-1", Decimal(-1)),
        (".5", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("2E-3", Decimal("0.002")),
        ("100n", Decimal("1E-7")),
        ("3Ei", Decimal(3 * 2**60)),
        ("2E", Decimal(2 * 10**18)),
        ("1.5e2", Decimal(150)),
        ("0", Decimal(0)),
        (7, Decimal(7)),
    ],
)
def test_parse_quantity_values(text: str | int, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["5Gi", "500m", "1.5G", "2Ki", "1e3", "100n", "0.25", "12Mi", "3k"])
def test_parse_quantity_agrees_with_kubernetes_client(text: str) -> None:
    assert parse_quantity(text) == k8s_parse_quantity(text)


@pytest.mark.parametrize(
    "text", ["", "Gi", "5 Gi", "5gi", "5GB", "five", "1.2.3", "5Gi ", "--1", "1ki", True]
)
def test_parse_quantity_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_quantity_length_is_bounded_like_the_crd() -> None:
    longest = "1" * api.MAX_QUANTITY_LENGTH
    assert parse_quantity(longest) == Decimal(longest)
    with pytest.raises(ValueError):
        parse_quantity(longest + "1")


# -- spec defaults and round trips -------------------------------------------------------------


def test_empty_spec_takes_every_default() -> None:
    spec = VestigeMemorySpec.model_validate({})
    assert spec.agent_id is None
    assert spec.suspend is False
    assert spec.storage.size == "5Gi"
    assert spec.storage.storage_class_name is None
    assert spec.storage.reclaim_policy == "Retain"
    assert spec.vestige.generation == "v3"
    assert spec.vestige.image is None
    assert spec.bridge.allow_anonymous is False
    assert spec.auth.existing_secret is None
    assert spec.service.type == "ClusterIP"
    assert spec.ingress.enabled is False
    assert spec.ingress.path == "/"
    assert spec.ingress.path_type == "Prefix"
    assert spec.network_policy.enabled is True
    assert spec.network_policy.from_ == []
    assert spec.pod.tolerations == []


def test_enum_values_are_plain_strings() -> None:
    spec = VestigeMemorySpec.model_validate({"storage": {"reclaimPolicy": "Delete"}})
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert type(dumped["storage"]["reclaimPolicy"]) is str
    assert type(dumped["service"]["type"]) is str
    # A plain str dump is what yaml.safe_dump and the Kubernetes client can serialise.
    yaml.safe_dump(dumped)


def test_effective_agent_id() -> None:
    assert VestigeMemorySpec().effective_agent_id("alpha") == "alpha"
    assert VestigeMemorySpec(agent_id="beta").effective_agent_id("alpha") == "beta"


def test_snake_case_and_camel_case_are_both_accepted() -> None:
    by_alias = VestigeMemorySpec.model_validate({"networkPolicy": {"from": [{"podSelector": {}}]}})
    by_name = VestigeMemorySpec.model_validate({"network_policy": {"from_": [{"podSelector": {}}]}})
    assert by_alias == by_name
    assert by_alias.model_dump(by_alias=True)["networkPolicy"]["from"] == [{"podSelector": {}}]


def test_full_example_round_trips() -> None:
    spec_dict = _example("full.yaml")["spec"]
    spec = VestigeMemorySpec.model_validate(spec_dict)
    dumped = spec.model_dump(by_alias=True, exclude_none=True)
    assert VestigeMemorySpec.model_validate(dumped) == spec
    # Everything the example sets survives unchanged.
    _assert_subset(spec_dict, dumped)


def _assert_subset(expected: Any, actual: Any, path: str = "spec") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} lost"
            _assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, path


def test_full_example_sets_every_spec_field() -> None:
    spec_dict = _example("full.yaml")["spec"]
    missing = _unset_fields(VestigeMemorySpec, spec_dict, "spec")
    # spec.restore only makes sense for a new memory started from a snapshot: its example is
    # manifests/examples/restore.yaml (checked in tests/unit/test_crd_backup.py).
    missing = [m for m in missing if m != "spec.restore"]
    assert not missing, f"full.yaml does not set: {missing}"


def _unset_fields(model: type[BaseModel], data: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            missing.append(f"{path}.{key}")
            continue
        sub = _model_of(field.annotation)
        value = data[key]
        if sub is not None and isinstance(value, dict):
            missing += _unset_fields(sub, value, f"{path}.{key}")
        elif sub is not None and isinstance(value, list):
            # A list item field counts as set when any item sets it (value vs valueFrom).
            per_item = [set(_unset_fields(sub, item, f"{path}.{key}[]")) for item in value]
            missing += sorted(set.intersection(*per_item)) if per_item else [f"{path}.{key}[]"]
    return missing


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X``, ``X | None``, ``list[X]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def test_minimal_example_is_valid_and_name_only() -> None:
    doc = _example("minimal.yaml")
    assert set(doc) == {"apiVersion", "kind", "metadata"}
    assert set(doc["metadata"]) == {"name"}
    VestigeMemorySpec.model_validate(doc.get("spec", {}))


def test_accepts_what_the_api_server_returns() -> None:
    """The stored object: camelCase keys, defaults filled, quantities as given (int or str)."""
    stored = {
        "agentId": "a1",
        "suspend": False,
        "storage": {"size": 10737418240, "reclaimPolicy": "Retain"},
        "vestige": {"generation": "v3", "resources": {"limits": {"cpu": 1}}},
        "bridge": {"allowAnonymous": False},
        "auth": {},
        "service": {"type": "ClusterIP"},
        "ingress": {"enabled": False, "path": "/", "pathType": "Prefix"},
        "networkPolicy": {"enabled": True},
        "pod": {},
    }
    spec = VestigeMemorySpec.model_validate(stored)
    assert spec.storage.size == "10737418240"
    assert spec.vestige.resources.limits == {"cpu": "1"}


def test_every_field_has_a_description() -> None:
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> list[str]:
        if model in seen:
            return []
        seen.add(model)
        bad = [f"{model.__name__}.{n}" for n, f in model.model_fields.items() if not f.description]
        for f in model.model_fields.values():
            sub = _model_of(f.annotation)
            if sub is not None:
                bad += walk(sub)
        return bad

    assert walk(VestigeMemorySpec) + walk(VestigeMemoryStatus) == []
    assert len(seen) >= 15


# -- rejected specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"agentId": "Not_A_Label"}, "agentId"),
        ({"agentId": "a" * 64}, "agentId"),
        ({"agentId": "-leading"}, "agentId"),
        ({"suspend": "maybe"}, "suspend"),
        ({"storage": {"size": "0"}}, "size"),
        ({"storage": {"size": "-1Gi"}}, "size"),
        ({"storage": {"size": "5 GB"}}, "size"),
        ({"storage": {"size": 0}}, "size"),
        ({"storage": {"reclaimPolicy": "Recycle"}}, "reclaimPolicy"),
        ({"storage": {"storageClassName": "Fast_SSD"}}, "storageClassName"),
        ({"vestige": {"generation": "v2"}}, "generation"),
        ({"vestige": {"imagePullPolicy": "Sometimes"}}, "imagePullPolicy"),
        ({"vestige": {"resources": {"requests": {"cpu": "-100m"}}}}, "requests"),
        ({"bridge": {"resources": {"limits": {"memory": "lots"}}}}, "limits"),
        ({"bridge": {"env": [{"value": "x"}]}}, "name"),
        ({"bridge": {"env": [{"name": "A", "value": "1", "valueFrom": {}}]}}, "not both"),
        ({"vestige": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}, "duplicate"),
        ({"auth": {"existingSecret": {"key": "token"}}}, "name"),
        ({"auth": {"existingSecret": {"name": "s", "key": "a b"}}}, "key"),
        ({"service": {"type": "ExternalName"}}, "type"),
        ({"ingress": {"path": "no-slash"}}, "path"),
        ({"ingress": {"pathType": "Regex"}}, "pathType"),
        ({"ingress": {"host": "Bad Host"}}, "host"),
        ({"ingress": {"tls": {"secretName": "t"}}}, "tls needs"),
        ({"ingress": {"tls": {}, "host": "a.example"}}, "secretName"),
        ({"pod": {"labels": {"app.kubernetes.io/instance": "x"}}}, "app.kubernetes.io/instance"),
        ({"pod": {"imagePullSecrets": [{}]}}, "name"),
        ({"pod": {"tolerations": "all"}}, "tolerations"),
        ({"networkPolicy": {"from": {"podSelector": {}}}}, "from"),
        ({"unknownField": 1}, "unknownField"),
        # bounds and formats that reach admission too (tests/integration/test_crd.py)
        ({"vestige": {"image": "Not An Image"}}, "image"),
        ({"vestige": {"env": [{"name": "A=B", "value": "1"}]}}, "name"),
        ({"vestige": {"env": [{"name": "A", "value": "x" * 4097}]}}, "value"),
        ({"vestige": {"env": [{"name": f"V{i}", "value": "x"} for i in range(65)]}}, "env"),
        ({"ingress": {"path": "/a/../b"}}, "'..' segment"),
        ({"ingress": {"path": "//evil"}}, "path"),
        ({"ingress": {"path": "/a?b"}}, "path"),
        ({"service": {"annotations": {"a": "x" * 2049}}}, "annotations"),
        ({"service": {"annotations": {"bad key": "x"}}}, "annotations"),
        ({"pod": {"labels": {"a" * 64: "x"}}}, "labels"),
        ({"pod": {"nodeSelector": {"k": "has space"}}}, "nodeSelector"),
        ({"pod": {"tolerations": [{"operator": "Sometimes"}]}}, "operator"),
        ({"pod": {"tolerations": [{"key": "k", "futureField": 1}]}}, "futureField"),
        (
            {
                "pod": {
                    "affinity": {
                        "nodeAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {"weight": 101, "preference": {}}
                            ]
                        }
                    }
                }
            },
            "weight",
        ),
        ({"networkPolicy": {"from": [{"ipBlock": {"cidr": "everything"}}]}}, "cidr"),
        (
            {
                "bridge": {
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad_Name", "key": "k"}}}]
                }
            },
            "name",
        ),
        (
            {
                "backup": {
                    "schedule": "every five minutes",
                    "destination": {"s3": {"bucket": "b", "credentialsSecret": {"name": "c"}}},
                }
            },
            "schedule",
        ),
        (
            {
                "backup": {
                    "retention": {"maxAge": "1y"},
                    "destination": {"s3": {"bucket": "b", "credentialsSecret": {"name": "c"}}},
                }
            },
            "maxAge",
        ),
        ({"storage": {"sizee": "1Gi"}}, "sizee"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        VestigeMemorySpec.model_validate(spec)
    assert where in str(err.value)


def test_storage_size_integer_is_kept_as_quantity_string() -> None:
    assert VestigeMemorySpec.model_validate({"storage": {"size": 1024}}).storage.size == "1024"


def test_agent_id_of_63_chars_is_accepted() -> None:
    assert VestigeMemorySpec(agent_id="a" * 63).agent_id == "a" * 63


# -- status -----------------------------------------------------------------------------------


def test_status_parses_and_ignores_unknown_fields() -> None:
    status = VestigeMemoryStatus.model_validate(
        {
            "phase": "Ready",
            "observedGeneration": 3,
            "endpoint": "http://a.ns.svc:8000",
            "authSecretRef": {"name": "a-auth", "key": "token"},
            "pvcName": "a-data",
            "storage": {"capacity": "5Gi"},
            "agentId": "a",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllChildrenReady",
                    "message": "",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "observedGeneration": 3,
                }
            ],
            "somethingNew": {"x": 1},
        }
    )
    assert status.phase == "Ready"
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert status.condition("Stalled") is None
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert "somethingNew" not in dumped
    assert dumped["conditions"][0]["lastTransitionTime"] == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "condition",
    [
        {"type": "Ready", "status": "Yes", "reason": "R", "lastTransitionTime": "t"},
        {"type": "Ready", "status": "True", "reason": "", "lastTransitionTime": "t"},
        {"type": "Ready", "status": "True", "reason": "has space", "lastTransitionTime": "t"},
        {"type": "Ready", "status": "True", "reason": "R"},
    ],
)
def test_condition_shape_is_enforced(condition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Condition.model_validate(condition)


def test_phase_enum_is_closed() -> None:
    with pytest.raises(ValidationError):
        VestigeMemoryStatus.model_validate({"phase": "Running"})
    assert {p.value for p in api.Phase} == {
        "Pending",
        "Provisioning",
        "Ready",
        "Degraded",
        "Suspended",
        "Failed",
    }
