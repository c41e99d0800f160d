"""Every field of both CRDs is bounded, and every rule of the models has its counterpart in the CRD.

The models (api.py) and the CRD (crd.py, generated from the models' JSON schema) must refuse the
same input: the operator parses specs with the models, the API server admits them with the CRD.
A rule that only the models know is reported as Stalled long after `kubectl apply` said yes.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any, Union

import annotated_types as at
import pytest
from pydantic import AfterValidator, BaseModel, BeforeValidator, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from vestige_operator import api, crd

SCHEMAS = {
    "VestigeMemory": crd.openapi_schema(),
    "VestigeBackup": crd.backup_openapi_schema(),
    "VestigeBackupGrant": crd.grant_openapi_schema(),
}
ROOTS: dict[str, dict[str, type[BaseModel]]] = {
    "VestigeMemory": {"spec": api.VestigeMemorySpec, "status": api.VestigeMemoryStatus},
    "VestigeBackup": {"spec": api.VestigeBackupSpec, "status": api.VestigeBackupStatus},
}
#: Kept by the API server itself (names are restricted separately, see test_crd.py).
ENVELOPE = {".apiVersion", ".kind", ".metadata", ".metadata.name"}
RECONCILE_TIME = "checked when reconciled"


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def unbounded(path: str, node: dict[str, Any]) -> str | None:
    """Why this node is unbounded, or None."""
    if path in ENVELOPE:
        return None
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "keeps unknown fields (no bound on its contents)"
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string") or kind == "string":
        return None if "maxLength" in node or "enum" in node else "string without maxLength"
    if kind == "array":
        return None if "maxItems" in node else "list without maxItems"
    if kind == "object" and "properties" not in node:
        return None if "maxProperties" in node else "map without maxProperties"
    if kind in ("integer", "number"):
        bounded = "minimum" in node and ("maximum" in node or node.get("format") == "int64")
        return None if bounded else "number without minimum and maximum"
    return None


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_field_is_bounded(kind: str) -> None:
    problems = [f"{path}: {why}" for path, node in walk(SCHEMAS[kind]) if (why := unbounded(path, node))]
    assert problems == []


def test_the_bound_walker_finds_unbounded_fields() -> None:
    """The check above can fail: each kind of unbounded node is found."""
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "l": {"type": "array", "items": {"type": "string", "maxLength": 1}},
            "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}},
            "f": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "n": {"type": "integer", "minimum": 0},
            "ok": {"type": "string", "enum": ["a"]},
        },
    }
    found = {path for path, node in walk(schema) if unbounded(path, node)}
    assert found == {".s", ".l", ".m", ".f", ".n"}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_field_description_states_its_bounds(kind: str) -> None:
    """kubectl explain shows descriptions only: the bounds are written into them."""
    missing = []
    for path, node in walk(SCHEMAS[kind]):
        description = node.get("description", "")
        if not description or path in ENVELOPE:
            continue
        for key, words in (("maxLength", "characters"), ("maxItems", "items"), ("maxProperties", "entries")):
            if key in node and f"{node[key]} {words}" not in description:
                missing.append(f"{path}: {key} {node[key]}")
    assert missing == []


def test_annotations_stay_within_the_kubernetes_total() -> None:
    longest = api.MAX_MAP_ENTRIES * (api.MAX_QUALIFIED_NAME_LENGTH + api.MAX_ANNOTATION_VALUE_LENGTH)
    assert longest <= 256 * 1024 - 64 * 1024, "leave room for the operator's own annotations"


# -- each rule of the models has its counterpart in the CRD ---------------------------------------

#: Validator functions (AfterValidator) and model validators, with where the CRD enforces the
#: same rule: ("cel", message of the CEL rule on the node), ("pattern", pattern), ("list-map",
#: key) or ("reconcile", None): the CRD cannot express it and the description says so.
#: A validator missing here fails the test: add its CRD counterpart, then its row.
COUNTERPARTS: dict[str, tuple[str, str | None]] = {
    "_check_quantity": ("pattern", api.QUANTITY_PATTERN),
    "_check_non_negative": ("cel", "must not be negative"),
    "_check_positive": ("cel", "storage.size must be greater than zero"),
    "_unique_env_names": ("list-map", "name"),
    "_labels_not_reserved": ("cel", "pod.labels may not set the operator's app.kubernetes.io labels"),
    "_check_cron": ("reconcile", None),
    "EnvVar._value_xor_value_from": ("cel", "env: set value or valueFrom, not both"),
    "IngressSpec._tls_needs_host": ("cel", "ingress.tls needs ingress.host"),
    "RestoreSource._one_source": (
        "cel",
        "restore.fromBackup: set key, latest: true or pointInTime (exactly one)",
    ),
    "ContinuousBackupSpec._snapshot_within_retention": (
        "cel",
        "continuous.snapshotInterval must not be longer than continuous.retention",
    ),
    "RestoreSource._sha256_needs_key": (
        "cel",
        "restore.fromBackup.sha256 pins the snapshot at key: set key with it",
    ),
}


def _messages(node: dict[str, Any]) -> list[str]:
    return [r["message"] for r in node.get("x-kubernetes-validations", [])]


def _rules(node: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


class Checker:
    """Walks a model and its CRD node together and records every constraint without counterpart."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.seen_validators: set[str] = set()
        self.checked = 0

    def fail(self, path: str, what: str) -> None:
        self.problems.append(f"{path}: {what}")

    def model(self, model: type[BaseModel], node: dict[str, Any], path: str) -> None:
        for name in model.__pydantic_decorators__.model_validators:
            self.validator(f"{model.__name__}.{name}", node, path)
        assert not model.__pydantic_decorators__.field_validators, "use Annotated validators"
        properties = node.get("properties", {})
        for name, field in model.model_fields.items():
            alias = field.alias or to_camel(name)
            if alias not in properties:
                self.fail(f"{path}.{alias}", "field missing from the CRD")
                continue
            self.field(field, properties[alias], f"{path}.{alias}")

    def field(self, field: FieldInfo, node: dict[str, Any], path: str) -> None:
        self.annotation(field.annotation, list(field.metadata), node, path)

    def annotation(self, annotation: Any, metadata: list[Any], node: dict[str, Any], path: str) -> None:
        for item in metadata:
            self.constraint(item, node, path)
        if any(isinstance(item, api.KubernetesShape) for item in metadata):
            return  # the shape's model is the schema of this dict
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin is typing.Annotated:
            self.annotation(args[0], list(annotation.__metadata__), node, path)
        elif origin in (Union, types.UnionType):
            for arg in args:
                if arg is not type(None):
                    self.annotation(arg, [], node, path)
        elif origin is list:
            self.annotation(args[0], [], node["items"], f"{path}[]")
        elif origin is dict:
            self.keys(args[0], node, path)
            self.annotation(args[1], [], node["additionalProperties"], f"{path}.*")
        elif inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            self.model(annotation, node, path)

    def keys(self, key_type: Any, node: dict[str, Any], path: str) -> None:
        """Constraints on map keys are in a CEL rule of the map."""
        rules = " ".join(_rules(node))
        for item in self._flatten(typing.get_args(key_type)[1:] if typing.get_args(key_type) else []):
            self.checked += 1
            if isinstance(item, at.MaxLen) and f"k.size() <= {item.max_length}" not in rules:
                self.fail(f"{path}{{key}}", f"max length {item.max_length}")
            if isinstance(item, at.MinLen) and f"k.size() >= {item.min_length}" not in rules:
                self.fail(f"{path}{{key}}", f"min length {item.min_length}")
            pattern = getattr(item, "pattern", None)
            if pattern is not None and f"k.matches(r'{pattern}')" not in rules:
                self.fail(f"{path}{{key}}", f"pattern {pattern}")

    @staticmethod
    def _flatten(items: Any) -> list[Any]:
        out: list[Any] = []
        for item in items:
            out += list(item) if isinstance(item, at.GroupedMetadata) else [item]
        return out

    def constraint(self, item: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(item, at.GroupedMetadata):
            for sub in item:
                self.constraint(sub, node, path)
            return
        self.checked += 1
        kind = "string" if node.get("x-kubernetes-int-or-string") else node.get("type")
        size_key = {"string": "Length", "array": "Items", "object": "Properties"}.get(kind or "", "Length")
        if isinstance(item, at.MaxLen):
            if node.get(f"max{size_key}") != item.max_length:
                self.fail(path, f"max {item.max_length} not in the CRD (max{size_key})")
        elif isinstance(item, at.MinLen):
            if node.get(f"min{size_key}") != item.min_length:
                self.fail(path, f"min {item.min_length} not in the CRD (min{size_key})")
        elif isinstance(item, at.Ge):
            if node.get("minimum") != item.ge:
                self.fail(path, f"minimum {item.ge} not in the CRD")
        elif isinstance(item, at.Le):
            if node.get("maximum") != item.le:
                self.fail(path, f"maximum {item.le} not in the CRD")
        elif isinstance(item, (at.Gt, at.Lt, at.MultipleOf)):
            self.fail(path, f"{item!r}: use Ge/Le, which the CRD states as minimum/maximum")
        elif getattr(item, "pattern", None) is not None:
            if node.get("pattern") != item.pattern:
                self.fail(path, f"pattern {item.pattern} not in the CRD")
        elif isinstance(item, api.CelRule):
            if item.rule not in _rules(node) or item.message not in _messages(node):
                self.fail(path, f"CEL rule {item.rule} not in the CRD")
        elif isinstance(item, api.KubernetesShape):
            self.model(item.model, node, path)
        elif isinstance(item, AfterValidator):
            self.validator(item.func.__name__, node, path)
        elif isinstance(item, (BeforeValidator, WithJsonSchema)):
            pass  # a conversion (int to quantity string), the schema itself
        elif type(item).__name__ == "_PydanticGeneralMetadata":
            pass  # pattern=None
        else:
            self.fail(path, f"unknown constraint {item!r}: teach this test its CRD counterpart")

    def validator(self, name: str, node: dict[str, Any], path: str) -> None:
        self.seen_validators.add(name)
        if name not in COUNTERPARTS:
            self.fail(path, f"validator {name} has no CRD counterpart listed")
            return
        how, what = COUNTERPARTS[name]
        if how == "cel" and what not in _messages(node):
            self.fail(path, f"{name}: no CEL rule {what!r}")
        elif how == "pattern" and node.get("pattern") != what:
            self.fail(path, f"{name}: no pattern {what}")
        elif how == "list-map" and node.get("x-kubernetes-list-map-keys") != [what]:
            self.fail(path, f"{name}: not a list-map keyed by {what}")
        elif how == "reconcile" and RECONCILE_TIME not in node.get("description", ""):
            self.fail(path, f"{name}: the description does not say '{RECONCILE_TIME}'")


def test_every_model_constraint_has_its_counterpart_in_the_crd() -> None:
    checker = Checker()
    for kind, parts in ROOTS.items():
        for part, model in parts.items():
            checker.model(model, SCHEMAS[kind]["properties"][part], f"{kind}.{part}")
    assert checker.problems == []
    # Every listed counterpart is still used (no stale row), and the walk reached the constraints.
    assert checker.seen_validators == set(COUNTERPARTS)
    assert checker.checked > 300


def test_the_counterpart_check_finds_a_lost_pattern() -> None:
    """The check above can fail: a pattern that pydantic enforces but drops from its JSON schema
    (a Field(pattern=...) on an Annotated type with a validator, the bug that let any cron
    string through admission) is reported."""
    from pydantic import Field
    from vestige_operator.api import SpecModel

    def noop(value: str) -> str:
        return value

    class Lost(SpecModel):
        """A model whose pattern does not reach its JSON schema."""

        when: typing.Annotated[str, AfterValidator(noop)] | None = Field(
            default=None, max_length=8, pattern=r"^[0-9]+$", description="d"
        )

    node = crd.to_structural(Lost.model_json_schema(by_alias=True))
    checker = Checker()
    COUNTERPARTS["noop"] = ("reconcile", None)
    try:
        checker.model(Lost, node, "Lost")
    finally:
        del COUNTERPARTS["noop"]
    assert any("pattern ^[0-9]+$ not in the CRD" in p for p in checker.problems), checker.problems
