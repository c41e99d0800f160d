"""The VestigeMemory API (group vestige.dev, version v1alpha1) as pydantic v2 models.

These models are the single source of truth: ``crd.py`` generates the CustomResourceDefinition
schema from them (descriptions, defaults, enums, patterns and the CEL rules attached through
``json_schema_extra``), and the operator parses what the API server returns with them.

Python attributes are snake_case; the Kubernetes field names are their camelCase aliases
(``model_validate`` accepts both, ``model_dump(by_alias=True, exclude_none=True)`` writes the
Kubernetes form). Spec models forbid unknown fields; status models ignore them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, DecimalException, localcontext
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# --------------------------------------------------------------------------------------------
# Patterns and limits shared with the CRD (the same expressions Kubernetes itself uses).
# --------------------------------------------------------------------------------------------

#: resource.Quantity's serialization format, as in the Kubernetes OpenAPI and controller-gen.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: RFC 1123 label (k8s.io/apimachinery IsDNS1123Label): agent ids.
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1035 label (IsDNS1035Label): Service names, hence metadata.name of a VestigeMemory.
DNS1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 subdomain (IsDNS1123Subdomain): Secret, PriorityClass and IngressClass names.
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Ingress host: a DNS subdomain, optionally with a leading ``*.`` wildcard label.
INGRESS_HOST_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Secret data key (IsConfigMapKey).
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
#: metav1.Condition reason.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
#: metav1.Condition type (a qualified name).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
#: Label values (IsValidLabelValue).
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
#: Qualified name (IsQualifiedName): label, annotation, node selector and resource keys. An
#: optional DNS-subdomain prefix and '/', then a name of 1 to 63 characters.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: What a pattern means, in the words of the CRD's error messages (keys of maps).
PATTERN_NAMES = {
    QUALIFIED_NAME_PATTERN: (
        "qualified names (an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, "
        "'-', '_' or '.', starting and ending with a letter or digit)"
    ),
}
#: Environment variable name: printable ASCII except '=' (Kubernetes' rule since 1.30).
ENV_NAME_PATTERN = r"^[ -<>-~]+$"
_IMAGE_DOMAIN = (
    r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*(:[0-9]{1,5})?/"
)
_IMAGE_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
#: Container image reference, ``[registry[:port]/]path[:tag][@digest]`` (the grammar of
#: github.com/distribution/reference): e.g. ``ghcr.io/org/vestige:3.2.0``, ``vestige@sha256:<hex>``.
IMAGE_PATTERN = (
    rf"^({_IMAGE_DOMAIN})?{_IMAGE_COMPONENT}(/{_IMAGE_COMPONENT})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
#: Ingress path: '/' or '/'-separated non-empty segments of unreserved URL characters
#: (letters, digits, '.', '_', '~', '-'): no '//', no query, no regular expression.
INGRESS_PATH_PATTERN = r"^/([A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*/?)?$"
#: A ``..`` segment of a '/'-separated path or object key.
DOT_DOT_SEGMENT_PATTERN = r"(^|/)\.\.(/|$)"

#: Longest accepted metadata.name. Children are ``<name>``, ``<name>-auth`` and ``<name>-data``
#: (DNS labels, <= 63), and the Deployment's pods are ``<name>-<pod-template-hash>-<suffix>``
#: where the hash is a uint32 in decimal (<= 10 digits) and the suffix 5 characters:
#: 46 + 1 + 10 + 1 + 5 = 63, so every pod name is a whole DNS label and its hostname is never
#: truncated.
MAX_NAME_LENGTH = 46
MAX_AGENT_ID_LENGTH = 63
#: Bounds on lists and maps: they keep the CEL cost estimate of the CRD within the API server's
#: budget and catch runaway manifests early.
MAX_ENV = 64
MAX_MAP_ENTRIES = 64
MAX_LIST_ITEMS = 64
MAX_CONDITIONS = 16
#: Strings: DNS subdomains (Secret, class names) and qualified names (label, annotation keys).
MAX_DNS_SUBDOMAIN_LENGTH = 253
MAX_QUALIFIED_NAME_LENGTH = 253 + 1 + 63
MAX_LABEL_VALUE_LENGTH = 63
MAX_IMAGE_LENGTH = 512
MAX_ENV_NAME_LENGTH = 256
MAX_ENV_VALUE_LENGTH = 4096
#: 64 annotations of at most 317 + 2048 characters stay well within Kubernetes' 256 KiB total
#: for an object's annotations, with room for the operator's own.
MAX_ANNOTATION_VALUE_LENGTH = 2048
MAX_INGRESS_PATH_LENGTH = 1024
#: RFC 3339 timestamps written by the operator (``2026-12-03T03:00:00Z``; 64 is generous).
MAX_TIMESTAMP_LENGTH = 64
MAX_MESSAGE_LENGTH = 32768
#: URLs the operator publishes (scheme, host of <= 253 characters, port and an Ingress path).
MAX_URL_LENGTH = 2048
#: Object keys the operator records: a prefix and the key below it.
MAX_STATUS_KEY_LENGTH = 2048
#: Longest quantity string accepted (Kubernetes' own quantities are far shorter). The bound also
#: keeps the CEL cost estimate of the rules that parse quantities within the API server's budget.
MAX_QUANTITY_LENGTH = 64

#: Labels the operator sets on every pod (its selector); a user may not override them.
RESERVED_POD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIX_MULTIPLIERS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_NUMBER_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")


def parse_quantity(value: str | int) -> Decimal:
    """Return the exact value of a Kubernetes quantity (``"5Gi"`` -> 5368709120).

    Raises ValueError for anything that is not a quantity in Kubernetes' syntax.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str) or len(value) > MAX_QUANTITY_LENGTH or not _QUANTITY_RE.match(value):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    match = _NUMBER_RE.match(value)
    assert match is not None  # the quantity pattern guarantees a leading number
    number, suffix = Decimal(match.group(1)), match.group(2)
    with localcontext() as ctx:
        ctx.prec = 2 * MAX_QUANTITY_LENGTH  # exact for every accepted quantity string
        if suffix in _SUFFIX_MULTIPLIERS:
            return number * _SUFFIX_MULTIPLIERS[suffix]
        try:
            return number * (Decimal(10) ** Decimal(suffix[1:]))  # decimal exponent: 1e3, 2E-3
        except DecimalException as err:
            raise ValueError(f"quantity out of range: {value!r}") from err


def _quantity_to_str(value: object) -> object:
    """Accept integers as the API server does (int-or-string) and keep quantities as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    parse_quantity(value)
    return value


def _check_positive(value: str) -> str:
    if parse_quantity(value) <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    return value


def _check_non_negative(value: str) -> str:
    if parse_quantity(value) < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return value


def _quantity_schema(*rules: dict[str, str]) -> dict[str, Any]:
    """The schema of a quantity, as the Kubernetes core types publish it, plus CEL rules."""
    schema: dict[str, Any] = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "maxLength": MAX_QUANTITY_LENGTH,
        "x-kubernetes-int-or-string": True,
    }
    if rules:
        schema["x-kubernetes-validations"] = list(rules)
    return schema


# CEL: the quantity library parses strings only, and an int-or-string field may hold an integer;
# a malformed string is left to the pattern (one clear error instead of two).
_CEL_NOT_NEGATIVE = {
    "rule": "!isQuantity(string(self)) || !quantity(string(self)).isLessThan(quantity('0'))",
    "message": "must not be negative",
}

#: A Kubernetes quantity (``5Gi``, ``500m``, ``1``); integers are accepted and kept as strings.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    AfterValidator(_check_quantity),
    WithJsonSchema(_quantity_schema()),
]
#: A quantity that must not be negative (resource requests and limits).
NonNegativeQuantity = Annotated[
    Quantity, AfterValidator(_check_non_negative), WithJsonSchema(_quantity_schema(_CEL_NOT_NEGATIVE))
]
#: A quantity that must be greater than zero (storage size; its CEL rules are on the field).
PositiveQuantity = Annotated[Quantity, AfterValidator(_check_positive)]


# --------------------------------------------------------------------------------------------
# Rules stated once for the models and the CRD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """A rule that a pattern cannot express, stated once for both sides: ``check`` is what the
    models enforce, ``rule`` its CEL form in the CRD (``x-kubernetes-validations``, evaluated by
    the API server at admission), ``message`` the error both report.

    Use it as ``Annotated`` metadata after the type's constraints: ``Annotated[str, ..., CelRule(...)]``.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = dict(handler(schema))
        rules = [*out.get("x-kubernetes-validations", []), {"rule": self.rule, "message": self.message}]
        return {**out, "x-kubernetes-validations": rules}


def _no_dot_dot_segment(what: str) -> CelRule:
    return CelRule(
        rule=f"!self.matches(r'{DOT_DOT_SEGMENT_PATTERN}')",
        message=f"{what} may not contain a '..' segment",
        check=lambda value: re.search(DOT_DOT_SEGMENT_PATTERN, value) is None,
    )


# --------------------------------------------------------------------------------------------
# String, list and map types shared by the fields
# --------------------------------------------------------------------------------------------

#: A DNS-1123 subdomain: names of Secrets, StorageClasses, IngressClasses, PriorityClasses.
DNSSubdomain = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_DNS_SUBDOMAIN_LENGTH, pattern=DNS1123_SUBDOMAIN_PATTERN),
]
#: A key of a Secret's data.
DataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_DNS_SUBDOMAIN_LENGTH, pattern=DATA_KEY_PATTERN)
]
#: A qualified name: label, annotation, node selector and resource keys.
QualifiedName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_QUALIFIED_NAME_LENGTH, pattern=QUALIFIED_NAME_PATTERN),
]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_LENGTH, pattern=LABEL_VALUE_PATTERN)]
AnnotationValue = Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE_LENGTH)]
#: A container image reference.
Image = Annotated[str, StringConstraints(min_length=1, max_length=MAX_IMAGE_LENGTH, pattern=IMAGE_PATTERN)]
#: An RFC 3339 timestamp written by the operator.
Timestamp = Annotated[str, StringConstraints(max_length=MAX_TIMESTAMP_LENGTH)]


def _annotations_field(description: str) -> Any:
    return Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description=f"{description} Keys are qualified names (an optional DNS-subdomain prefix and '/', "
        "then a name of letters, digits, '-', '_' and '.').",
    )


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of spec models: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )


class StatusModel(BaseModel):
    """Base of status models: camelCase aliases, unknown fields ignored (forward compatible)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True
    )


def _nested(model: type[BaseModel], description: str) -> Any:
    """A nested object that always exists: the CRD defaults it to ``{}`` so its children's
    defaults apply, and pydantic builds it with its own defaults."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


# --------------------------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------------------------


class ReclaimPolicy(StrEnum):
    """What happens to the data volume when the VestigeMemory is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class ImagePullPolicy(StrEnum):
    """Kubernetes container image pull policy."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class VestigeGeneration(StrEnum):
    """Which Vestige generation the image runs."""

    V3 = "v3"
    V1 = "v1"


class ServiceType(StrEnum):
    """Kubernetes Service type."""

    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class PathType(StrEnum):
    """Ingress path matching."""

    EXACT = "Exact"
    PREFIX = "Prefix"
    IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"


class Phase(StrEnum):
    """Summary of a VestigeMemory's state."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    FAILED = "Failed"


class ConditionStatus(StrEnum):
    """Status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


class StorageSpec(SpecModel):
    """The persistent volume claim that holds the agent's memory (`<name>-data`)."""

    size: PositiveQuantity = Field(
        default="5Gi",
        description=(
            "Requested size of the data volume (a Kubernetes quantity such as 5Gi). It may grow "
            "(if the storage class allows volume expansion) but never shrink below the volume's "
            "actual capacity (status.storage.capacity): an expansion that did not happen can be "
            "undone by setting the size back."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))"
                    ),
                    "message": "storage.size must be greater than zero",
                },
            ]
        },
    )
    storage_class_name: DNSSubdomain | None = Field(
        default=None,
        description=(
            "StorageClass of the data volume (a DNS subdomain); the cluster's default class when "
            "unset. Immutable once the resource exists."
        ),
    )
    reclaim_policy: ReclaimPolicy = Field(
        default=ReclaimPolicy.RETAIN,
        description=(
            "Retain (default): the data volume outlives the VestigeMemory and a new one of the "
            "same name and agent id re-adopts it (the claim records its agent id; another agent "
            "never mounts it). Delete: the volume is deleted with the VestigeMemory."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "has(self.storageClassName) == has(oldSelf.storageClassName) && "
                        "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
                    ),
                    "message": "storage.storageClassName is immutable",
                    "fieldPath": ".storageClassName",
                    "reason": "FieldValueForbidden",
                }
            ]
        }
    )


# --------------------------------------------------------------------------------------------
# Kubernetes types the spec passes through to the pod (env valueFrom, NetworkPolicy peers,
# tolerations, affinity): kept as the user wrote them (plain dicts), checked against these
# models, which also give the CRD their bounded schema.
# --------------------------------------------------------------------------------------------

#: Lists inside the pass-through types (terms, expressions): smaller than MAX_LIST_ITEMS because
#: they nest, and the CEL cost of a rule below them grows with the product of the bounds.
MAX_NESTED_ITEMS = 16
#: An IPv4 or IPv6 CIDR (NetworkPolicy ipBlock); the API server checks the address itself.
CIDR_PATTERN = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}|[0-9A-Fa-f:.]{2,45}/[0-9]{1,3})$"
MAX_CIDR_LENGTH = 49
#: A field path of the pod (fieldRef.fieldPath, e.g. metadata.labels['team']).
MAX_FIELD_PATH_LENGTH = 512


@dataclass(frozen=True)
class KubernetesShape:
    """A pass-through Kubernetes object: the models keep the dict as written but validate it
    against ``model``, and the CRD's schema of the field is ``model``'s (bounded, no unknown
    fields)."""

    model: type[BaseModel]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Any:
            self.model.model_validate(value)
            return value

        return core_schema.no_info_after_validator_function(validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(self.model.__pydantic_core_schema__)


class KeySelector(SpecModel):
    """A key of a Secret or ConfigMap in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the Secret or ConfigMap (a DNS subdomain).")
    key: DataKey = Field(description="The key (letters, digits, '-', '_', '.').")
    optional: bool | None = Field(default=None, description="Start the container even if the key is missing.")


class ObjectFieldSelector(SpecModel):
    """A field of the pod (the downward API)."""

    api_version: str | None = Field(
        default=None, max_length=64, description="Version of the schema fieldPath is written in (v1)."
    )
    field_path: str = Field(
        min_length=1,
        max_length=MAX_FIELD_PATH_LENGTH,
        description=(
            "Path of the field, e.g. metadata.name; checked when reconciled (by the API server "
            "when the pod is applied)."
        ),
    )


class ResourceFieldSelector(SpecModel):
    """A resource request or limit of a container."""

    container_name: str | None = Field(
        default=None, max_length=63, pattern=DNS1123_LABEL_PATTERN, description="Container name."
    )
    resource: QualifiedName = Field(description="The resource, e.g. limits.memory.")
    divisor: Quantity | None = Field(default=None, description="Unit of the exposed value (default 1).")


class EnvVarSource(SpecModel):
    """Where an environment variable's value comes from (a Kubernetes EnvVarSource)."""

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource request or limit of a container."
    )


class SelectorOperator(StrEnum):
    """Operator of a label selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(SpecModel):
    """One requirement of a label selector."""

    key: QualifiedName = Field(description="The label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Label values (for In and NotIn).",
    )


class LabelSelector(SpecModel):
    """A Kubernetes label selector (matchLabels and matchExpressions are ANDed)."""

    match_labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP_ENTRIES, description="Labels that must all match."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Requirements that must all hold."
    )


class IPBlock(SpecModel):
    """A range of IP addresses (NetworkPolicy ipBlock)."""

    cidr: str = Field(
        max_length=MAX_CIDR_LENGTH,
        pattern=CIDR_PATTERN,
        description="The range, e.g. 10.0.0.0/8 or 2001:db8::/32.",
    )
    except_: list[Annotated[str, StringConstraints(max_length=MAX_CIDR_LENGTH, pattern=CIDR_PATTERN)]] = (
        Field(
            default_factory=list,
            alias="except",
            max_length=MAX_LIST_ITEMS,
            description="Ranges inside cidr that are excluded.",
        )
    )


class NetworkPolicyPeer(SpecModel):
    """Who may connect (a Kubernetes NetworkPolicyPeer)."""

    pod_selector: LabelSelector | None = Field(default=None, description="Pods with these labels.")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces with these labels (with podSelector: those pods in them)."
    )
    ip_block: IPBlock | None = Field(default=None, description="A range of IP addresses.")


class TolerationOperator(StrEnum):
    """Operator of a toleration."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """Effect of a taint."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    """A Kubernetes toleration of the pod."""

    key: QualifiedName | None = Field(default=None, description="Taint key; every key when unset (Exists).")
    operator: TolerationOperator | None = Field(default=None, description="Exists or Equal (default).")
    value: LabelValue | None = Field(default=None, description="Taint value (with Equal).")
    effect: TaintEffect | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; every effect when unset."
    )
    toleration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * 86400,
        description="With NoExecute: how long the pod stays bound to a tainted node.",
        json_schema_extra={"format": "int64"},
    )


class NodeSelectorOperator(StrEnum):
    """Operator of a node selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class NodeSelectorRequirement(SpecModel):
    """One requirement on a node's labels or fields."""

    key: QualifiedName = Field(description="The label key (or field, for matchFields).")
    operator: NodeSelectorOperator = Field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Values (one integer for Gt and Lt; none for Exists and DoesNotExist).",
    )


class NodeSelectorTerm(SpecModel):
    """Requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Requirements on node labels."
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Requirements on node fields."
    )


class NodeSelector(SpecModel):
    """Terms of which at least one must hold."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        max_length=MAX_NESTED_ITEMS, description="The terms (ORed)."
    )


class PreferredSchedulingTerm(SpecModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight of the preference.")
    preference: NodeSelectorTerm = Field(description="The preferred nodes.")


class NodeAffinity(SpecModel):
    """Which nodes the pod may or should run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pod must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Nodes the pod should run on."
    )


class PodAffinityTerm(SpecModel):
    """Pods (in some namespaces) next to which, by topology key, the pod is placed or not."""

    label_selector: LabelSelector | None = Field(default=None, description="The pods.")
    namespace_selector: LabelSelector | None = Field(default=None, description="Namespaces of the pods.")
    namespaces: list[Annotated[str, StringConstraints(max_length=63, pattern=DNS1123_LABEL_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS, description="Namespaces of the pods, by name."
    )
    topology_key: QualifiedName = Field(
        description="Node label that defines 'next to', e.g. kubernetes.io/hostname."
    )
    match_label_keys: list[QualifiedName] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Pod label keys also matched by value."
    )
    mismatch_label_keys: list[QualifiedName] = Field(
        default_factory=list,
        max_length=MAX_NESTED_ITEMS,
        description="Pod label keys matched by other values.",
    )


class WeightedPodAffinityTerm(SpecModel):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight of the preference.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(SpecModel):
    """Pod affinity or anti-affinity."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=MAX_NESTED_ITEMS, description="Terms that should hold."
    )


class Affinity(SpecModel):
    """A Kubernetes affinity of the pod."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


class ResourceRequirements(SpecModel):
    """Compute resources of a container (same shape as a Kubernetes container's resources)."""

    requests: dict[QualifiedName, NonNegativeQuantity] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Minimum resources the container needs, e.g. {cpu: 100m, memory: 256Mi}.",
    )
    limits: dict[QualifiedName, NonNegativeQuantity] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Maximum resources the container may use, e.g. {memory: 1Gi}.",
    )


class EnvVar(SpecModel):
    """An environment variable: a literal value or a Kubernetes valueFrom source."""

    name: str = Field(
        min_length=1,
        max_length=MAX_ENV_NAME_LENGTH,
        pattern=ENV_NAME_PATTERN,
        description="Name of the variable (printable ASCII characters, no '=').",
    )
    value: str | None = Field(default=None, max_length=MAX_ENV_VALUE_LENGTH, description="Literal value.")
    value_from: Annotated[dict[str, Any], KubernetesShape(EnvVarSource)] | None = Field(
        default=None,
        description=(
            "Source of the value, as in a Kubernetes EnvVar (secretKeyRef, configMapKeyRef, "
            "fieldRef, resourceFieldRef); passed through to the container."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.value) && has(self.valueFrom))",
                    "message": "env: set value or valueFrom, not both",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _value_xor_value_from(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("env: set value or valueFrom, not both")
        return self


def _env_field() -> Any:
    return Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Extra environment variables for the container (names are unique).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


def _unique_env_names(env: list[EnvVar]) -> list[EnvVar]:
    names = [e.name for e in env]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate env names: {', '.join(duplicates)}")
    return env


EnvList = Annotated[list[EnvVar], AfterValidator(_unique_env_names)]


class VestigeContainerSpec(SpecModel):
    """The Vestige container (the memory server, reachable only inside the pod)."""

    image: Image | None = Field(
        default=None,
        description=(
            "Vestige image reference ([registry[:port]/]path[:tag][@digest]); the operator's "
            "configured default when unset."
        ),
    )
    image_pull_policy: ImagePullPolicy | None = Field(
        default=None, description="Image pull policy; Kubernetes' default when unset."
    )
    generation: VestigeGeneration = Field(
        default=VestigeGeneration.V3,
        description=(
            "Vestige generation of the image: v3 (native MCP over HTTP on 127.0.0.1) or v1 "
            "(MCP over stdio, run behind a gateway bound to 127.0.0.1)."
        ),
    )
    resources: ResourceRequirements = _nested(ResourceRequirements, "Compute resources of the container.")
    env: EnvList = _env_field()


class BridgeContainerSpec(SpecModel):
    """The bridge container (REST and MCP front of Vestige, the only port the Service exposes)."""

    image: Image | None = Field(
        default=None,
        description=(
            "Bridge image reference ([registry[:port]/]path[:tag][@digest]); the operator's "
            "configured default when unset."
        ),
    )
    image_pull_policy: ImagePullPolicy | None = Field(
        default=None, description="Image pull policy; Kubernetes' default when unset."
    )
    resources: ResourceRequirements = _nested(ResourceRequirements, "Compute resources of the container.")
    env: EnvList = _env_field()
    allow_anonymous: bool = Field(
        default=False,
        description=(
            "Serve requests without a bearer token: the bridge gets no token at all and every "
            "caller that reaches it is served (the NetworkPolicy is then the only barrier). The "
            "operator says so in the Ready condition's message and with a Warning event. Vestige "
            "itself keeps its internal token. Off by default: the bridge fails closed."
        ),
    )


class SecretKeyRef(SpecModel):
    """A key of a Secret in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the Secret (a DNS subdomain).")
    key: DataKey = Field(
        default="token",
        description="Key in the Secret that holds the bearer token (letters, digits, '-', '_', '.').",
    )


class AuthSpec(SpecModel):
    """The bearer token that protects the bridge and Vestige."""

    existing_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Use this existing Secret's key as the agents' token; the operator never writes that "
            "Secret (rotate it yourself: the bridge follows the change without a restart) and "
            "keeps Vestige's internal token in its own Secret `<name>-vestige`. When unset the "
            "operator creates `<name>-auth` (keys `token` and `vestige-token`) once, and writes it "
            "again only for a rotation requested with the annotation `vestige.dev/rotate-token`."
        ),
    )


class ServiceSpec(SpecModel):
    """The Service `<name>` in front of the bridge (port 8000, named http)."""

    type: ServiceType = Field(default=ServiceType.CLUSTER_IP, description="Kubernetes Service type.")
    annotations: dict[QualifiedName, AnnotationValue] = _annotations_field(
        "Annotations added to the Service (e.g. for a load balancer controller)."
    )


class IngressTLS(SpecModel):
    """TLS for the Ingress."""

    secret_name: DNSSubdomain = Field(
        description="Secret (type kubernetes.io/tls) holding the certificate for host (a DNS subdomain).",
    )


class IngressSpec(SpecModel):
    """An optional Ingress `<name>` that routes to the bridge."""

    enabled: bool = Field(default=False, description="Create the Ingress.")
    class_name: DNSSubdomain | None = Field(
        default=None,
        description="IngressClass name (a DNS subdomain); the cluster's default class when unset.",
    )
    host: str | None = Field(
        default=None,
        max_length=MAX_DNS_SUBDOMAIN_LENGTH,
        pattern=INGRESS_HOST_PATTERN,
        description=(
            "Host name to route (a lowercase DNS name, optionally *.wildcard); every host when unset."
        ),
    )
    path: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_INGRESS_PATH_LENGTH, pattern=INGRESS_PATH_PATTERN),
        _no_dot_dot_segment("ingress.path"),
    ] = Field(
        default="/",
        description=(
            "HTTP path: '/' or '/'-separated segments of letters, digits, '.', '_', '~' and '-' "
            "(no empty segment, no '..' segment, no query, no regular expression)."
        ),
    )
    path_type: PathType = Field(default=PathType.PREFIX, description="How the path is matched.")
    annotations: dict[QualifiedName, AnnotationValue] = _annotations_field(
        "Annotations added to the Ingress (e.g. for cert-manager)."
    )
    tls: IngressTLS | None = Field(default=None, description="Serve host over TLS with this certificate.")

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.tls) || has(self.host)",
                    "message": "ingress.tls needs ingress.host",
                    "fieldPath": ".tls",
                    "reason": "FieldValueRequired",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _tls_needs_host(self) -> IngressSpec:
        if self.tls is not None and self.host is None:
            raise ValueError("ingress.tls needs ingress.host")
        return self


class NetworkPolicySpec(SpecModel):
    """The NetworkPolicy `<name>`: ingress to the bridge port only, from the allowed peers."""

    enabled: bool = Field(default=True, description="Create the NetworkPolicy.")
    from_: list[Annotated[dict[str, Any], KubernetesShape(NetworkPolicyPeer)]] = Field(
        default_factory=list,
        alias="from",
        max_length=MAX_LIST_ITEMS,
        description=(
            "Allowed peers (Kubernetes NetworkPolicyPeer objects: podSelector, namespaceSelector, "
            "ipBlock). Empty: pods of the same namespace."
        ),
    )


class LocalObjectReference(SpecModel):
    """A reference to an object in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the object (a DNS subdomain).")


def _labels_not_reserved(labels: dict[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in labels if k in RESERVED_POD_LABELS)
    if reserved:
        raise ValueError(f"pod.labels may not set the operator's labels: {', '.join(reserved)}")
    return labels


class PodTemplateOptions(SpecModel):
    """Scheduling and metadata options of the pod."""

    labels: Annotated[dict[QualifiedName, LabelValue], AfterValidator(_labels_not_reserved)] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description=(
            "Extra pod labels (the app.kubernetes.io labels of the operator cannot be overridden). "
            "Keys are qualified names; values at most 63 letters, digits, '-', '_' and '.'."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": " && ".join(f"!('{k}' in self)" for k in RESERVED_POD_LABELS),
                    "message": "pod.labels may not set the operator's app.kubernetes.io labels",
                }
            ],
        },
    )
    annotations: dict[QualifiedName, AnnotationValue] = _annotations_field("Extra pod annotations.")
    node_selector: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_MAP_ENTRIES,
        description="Node labels the pod must match (label keys and values).",
    )
    tolerations: list[Annotated[dict[str, Any], KubernetesShape(Toleration)]] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Kubernetes tolerations of the pod, passed through.",
    )
    affinity: Annotated[dict[str, Any], KubernetesShape(Affinity)] | None = Field(
        default=None, description="Kubernetes affinity of the pod, passed through."
    )
    priority_class_name: DNSSubdomain | None = Field(
        default=None, description="PriorityClass of the pod (a DNS subdomain)."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Secrets used to pull the images.",
    )


# --------------------------------------------------------------------------------------------
# Backups and restore (spec.backup, spec.restore, VestigeBackup): see docs/backup.md
# --------------------------------------------------------------------------------------------

#: S3 bucket names (3-63 characters, lowercase letters, digits, dots and hyphens).
S3_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_CRON_VALUE = r"([0-9]{1,2}|[A-Za-z]{3})"
_CRON_ITEM = rf"(\*|LW?|{_CRON_VALUE}(-{_CRON_VALUE})?(L|#[1-5])?)(/[0-9]{{1,2}})?"
_CRON_FIELD = rf"{_CRON_ITEM}(,{_CRON_ITEM})*"
#: The shape of a cron schedule: five fields (minute hour day-of-month month day-of-week), single
#: spaces, each a list of ``*``, numbers, ranges, steps or three-letter names. Value ranges and
#: names are checked when reconciled (cronsim).
CRON_PATTERN = rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$"
MAX_CRON_LENGTH = 128
#: A duration of whole minutes, hours, days or weeks (``30d``, ``12h``).
MAX_AGE_PATTERN = r"^[1-9][0-9]{0,5}(m|h|d|w)$"
#: ``namespace/name`` of a VestigeMemory.
SOURCE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z]([-a-z0-9]*[a-z0-9])?$"
#: An object key below a prefix (no leading slash, no control characters).
OBJECT_KEY_PATTERN = r"^[^/\x00-\x1f][^\x00-\x1f]*$"
#: A SHA-256 digest in lower-case hex (as VestigeBackup status.sha256 records it).
SHA256_PATTERN = r"^[0-9a-f]{64}$"
MAX_OBJECT_KEY_LENGTH = 1024
_MAX_AGE_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


#: A duration of Litestream's intervals: whole milliseconds, seconds, minutes or hours (Go syntax,
#: which CEL's ``duration()`` parses too).
DURATION_PATTERN = r"^[1-9][0-9]{0,4}(ms|s|m|h)$"
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
#: A point in time of a continuous replica: ``latest`` or an RFC 3339 time.
_RFC3339 = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
POINT_IN_TIME_PATTERN = rf"^(latest|{_RFC3339})$"
LATEST = "latest"


def duration_seconds(value: str) -> float:
    """Seconds of a duration like ``500ms``, ``30s``, ``10m`` or ``24h``."""
    match = re.match(DURATION_PATTERN, value)
    if match is None:
        raise ValueError(f"not a duration like 500ms, 30s, 10m or 24h: {value!r}")
    return int(value[: -len(match.group(1))]) * _DURATION_UNITS[match.group(1)]


def _duration_between(field: str, low: str, high: str) -> CelRule:
    return CelRule(
        rule=f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')",
        message=f"{field} must be between {low} and {high}",
        check=lambda value: duration_seconds(low) <= duration_seconds(value) <= duration_seconds(high),
    )


def _is_point_in_time(value: str) -> bool:
    from datetime import datetime

    if value == LATEST:
        return True
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def max_age_seconds(value: str) -> int:
    """Seconds of a ``maxAge`` duration (``"30d"`` -> 2592000)."""
    if not re.match(MAX_AGE_PATTERN, value):
        raise ValueError(f"not a duration like 30d, 12h, 90m or 4w: {value!r}")
    return int(value[:-1]) * _MAX_AGE_UNITS[value[-1]]


def _check_cron(value: str) -> str:
    from datetime import UTC, datetime

    from cronsim import CronSim, CronSimError

    if not re.match(CRON_PATTERN, value):
        raise ValueError(f"schedule must have five fields (minute hour day month weekday): {value!r}")
    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as err:
        raise ValueError(f"not a cron schedule: {value!r}: {err}") from None
    return value


class SecretRef(SpecModel):
    """A Secret in the same namespace."""

    name: DNSSubdomain = Field(description="Name of the Secret (a DNS subdomain).")


class CASecretRef(SpecModel):
    """A Secret holding a PEM CA bundle."""

    name: DNSSubdomain = Field(description="Name of the Secret (a DNS subdomain).")
    key: DataKey = Field(
        default="ca.crt",
        description="Key of the Secret holding the PEM CA bundle (letters, digits, '-', '_', '.').",
    )


class S3Destination(SpecModel):
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, versitygw, ...)."""

    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description=(
            "URL of the S3 API, e.g. https://s3.eu-west-1.amazonaws.com or http://minio.storage.svc:9000; "
            "AWS S3 of region when unset."
        ),
    )
    bucket: str = Field(
        max_length=63, pattern=S3_BUCKET_PATTERN, description="Bucket the snapshots are written to."
    )
    prefix: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^([^/\x00-\x1f][^\x00-\x1f]*/)?$",
        description=(
            "Bucket prefix (ends with /) put IN FRONT of every key; the operator derives the rest: "
            "snapshots go to `<prefix><namespace>/<agentId>/<backup>.tar.gz`, the continuous "
            "replica to `<prefix><namespace>/<agentId>/litestream/` (for restore: the namespace and "
            "agent id of spec.restore.fromBackup.source), so two namespaces or two agents never "
            "share keys."
        ),
    )
    region: str = Field(
        default="us-east-1",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9-]+$",
        description="Region of the bucket (signing region for S3-compatible servers).",
    )
    credentials_secret: SecretRef = Field(
        description=(
            "Secret with the keys `accessKeyId` and `secretAccessKey`. Given only to the backup "
            "Job's pod, the restore init containers and (backup.continuous) the Litestream sidecar, "
            "never to the bridge or Vestige containers."
        )
    )
    ca_secret: CASecretRef | None = Field(
        default=None,
        description="Secret with a PEM CA bundle to verify the endpoint's TLS certificate (private CAs).",
    )
    force_path_style: bool = Field(
        default=False,
        description="Address the bucket as <endpoint>/<bucket> instead of <bucket>.<endpoint> "
        "(most self-hosted servers need true).",
    )


class BackupDestination(SpecModel):
    """Where snapshots are stored."""

    s3: S3Destination = Field(description="An S3-compatible bucket.")


class BackupRetention(SpecModel):
    """Which snapshots (and VestigeBackup objects) are kept. The newest Completed one is always kept."""

    keep_last: int | None = Field(
        default=None, ge=1, le=10000, description="Keep at most this many Completed backups (newest first)."
    )
    max_age: Annotated[str, StringConstraints(max_length=8, pattern=MAX_AGE_PATTERN)] | None = Field(
        default=None,
        description=(
            "Delete Completed backups older than this: a whole number (1 to 999999) of minutes, "
            "hours, days or weeks (90m, 12h, 30d, 4w)."
        ),
    )


Duration = Annotated[str, StringConstraints(max_length=8, pattern=DURATION_PATTERN)]


class ContinuousBackupSpec(SpecModel):
    """Continuous replication of the store (a Litestream sidecar in the agent's pod) to
    spec.backup.destination, under the agent's own key space
    `<prefix><namespace>/<agentId>/litestream`."""

    enabled: bool = Field(
        default=False,
        description=(
            "Run the replication sidecar beside Vestige: every committed change reaches the bucket "
            "within about syncInterval plus a quarter second (docs/continuous-backup.md)."
        ),
    )
    sync_interval: Annotated[Duration, _duration_between("continuous.syncInterval", "250ms", "1h")] = Field(
        default="500ms",
        description=(
            "How often new changes are uploaded, 250ms to 1h (a number and ms, s, m or h; at most 8 "
            "characters). The loss window after a crash is about this plus a quarter second and one "
            "upload; each sync with changes is one PUT."
        ),
    )
    snapshot_interval: Annotated[
        Duration, _duration_between("continuous.snapshotInterval", "10m", "2160h")
    ] = Field(
        default="6h",
        description=(
            "How often a full snapshot of the store is written into the replica, 10m to 2160h and at "
            "most retention (at most 8 characters). A restore replays the changes since the snapshot "
            "before its time."
        ),
    )
    retention: Annotated[Duration, _duration_between("continuous.retention", "1h", "2160h")] = Field(
        default="24h",
        description=(
            "How far back a point-in-time restore can go, 1h to 2160h (90 days; at most 8 "
            "characters): older snapshots and changes are deleted from the replica."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "duration(self.snapshotInterval) <= duration(self.retention)",
                    "message": "continuous.snapshotInterval must not be longer than continuous.retention",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _snapshot_within_retention(self) -> ContinuousBackupSpec:
        if duration_seconds(self.snapshot_interval) > duration_seconds(self.retention):
            raise ValueError("continuous.snapshotInterval must not be longer than continuous.retention")
        return self


class BackupSpec(SpecModel):
    """Scheduled backups of the memory's store to object storage (one VestigeBackup per run)."""

    schedule: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_CRON_LENGTH, pattern=CRON_PATTERN),
            AfterValidator(_check_cron),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Cron schedule in UTC (five fields separated by single spaces: minute hour "
            "day-of-month month day-of-week, e.g. '0 3 * * *'; no @macros). The shape is checked "
            "at admission; value ranges (minute 0-59, ...) are checked when reconciled. Unset: no "
            "scheduled runs (VestigeBackup objects still work)."
        ),
    )
    retention: BackupRetention = _nested(BackupRetention, "Which backups are kept.")
    suspend: bool = Field(default=False, description="Pause scheduled runs (existing backups are kept).")
    destination: BackupDestination = Field(
        description="Where snapshots (and, with continuous, the continuous replica) are stored."
    )
    continuous: ContinuousBackupSpec | None = Field(
        default=None,
        description=(
            "Continuous backup: stream every commit to destination (Litestream sidecar), for "
            "restores to any moment of the retained window (restore.fromBackup.pointInTime). "
            "Snapshots (schedule) can run beside it."
        ),
    )


class RestoreSource(SpecModel):
    """The snapshot a new memory starts from."""

    destination: BackupDestination = Field(description="Where the snapshot is stored.")
    source: str = Field(
        max_length=300,
        pattern=SOURCE_PATTERN,
        description=(
            "namespace/agentId of the agent whose snapshot is restored (its VestigeMemory's name "
            "unless that set spec.agentId); selects its key space. Another namespace is accepted "
            "only when a VestigeBackupGrant in THAT namespace allows this namespace and agent "
            "(checked when reconciled, before the pod exists; else Stalled, RestoreRefused)."
        ),
    )
    key: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_OBJECT_KEY_LENGTH, pattern=OBJECT_KEY_PATTERN),
            _no_dot_dot_segment("restore.fromBackup.key"),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Object key of the snapshot (as in VestigeBackup status.key; no leading '/', no '..' "
            "segment, no control characters); it must lie in the source agent's key space (checked "
            "when reconciled). Set key, latest or pointInTime."
        ),
    )
    latest: bool | None = Field(
        default=None,
        description="Restore the newest snapshot under the prefix. Set key, latest or pointInTime.",
    )
    sha256: str | None = Field(
        default=None,
        max_length=64,
        pattern=SHA256_PATTERN,
        description=(
            "SHA-256 (lower-case hex) the snapshot at key must have: copy it from the VestigeBackup "
            "that wrote it (status.sha256); 64 characters. The restore refuses a snapshot with other "
            "content. Only with key. Unset: the checksum the snapshot recorded when it was uploaded "
            "is used."
        ),
    )
    point_in_time: (
        Annotated[
            str,
            StringConstraints(max_length=40, pattern=POINT_IN_TIME_PATTERN),
            CelRule(
                rule="self == 'latest' || timestamp(self) > timestamp('1970-01-01T00:00:00Z')",
                message="restore.fromBackup.pointInTime must be latest or a valid RFC 3339 time",
                check=_is_point_in_time,
            ),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Restore the source's CONTINUOUS replica (spec.backup.continuous) as of this moment: an "
            "RFC 3339 time (e.g. 2026-12-03T17:41:05Z) or `latest`; at most 40 characters. A time "
            "in the future, or older than the oldest snapshot the replica still holds, is refused "
            "(checked when restored, before the volume is touched). Set key, latest or pointInTime."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.key), has(self.latest) && self.latest, has(self.pointInTime)]"
                    ".filter(x, x).size() == 1",
                    "message": "restore.fromBackup: set key, latest: true or pointInTime (exactly one)",
                },
                {
                    "rule": "!has(self.sha256) || has(self.key)",
                    "message": "restore.fromBackup.sha256 pins the snapshot at key: set key with it",
                },
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> RestoreSource:
        chosen = [self.key is not None, bool(self.latest), self.point_in_time is not None]
        if chosen.count(True) != 1:
            raise ValueError("restore.fromBackup: set key, latest: true or pointInTime (exactly one)")
        return self

    @model_validator(mode="after")
    def _sha256_needs_key(self) -> RestoreSource:
        if self.sha256 is not None and self.key is None:
            raise ValueError("restore.fromBackup.sha256 pins the snapshot at key: set key with it")
        return self


class RestoreSpec(SpecModel):
    """Fill the NEW memory's empty volume from a snapshot before Vestige first starts."""

    from_backup: RestoreSource = Field(
        description=(
            "The snapshot (key or latest), or the moment of a continuous replica (pointInTime), to "
            "restore. Init containers restore it into an empty volume; a volume that already holds "
            "a store is never overwritten (the resource stalls, reason RestoreRefused)."
        )
    )


class BackupPhase(StrEnum):
    """Lifecycle of one VestigeBackup."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


#: Most namespaces, or agents, one VestigeBackupGrant names.
MAX_GRANT_ENTRIES = 32


class GrantFrom(SpecModel):
    """A namespace allowed to restore the granted agents' snapshots."""

    namespace: str = Field(
        max_length=63,
        pattern=DNS1123_LABEL_PATTERN,
        description="Namespace whose VestigeMemories may restore.",
    )


class GrantTo(SpecModel):
    """An agent of the grant's namespace whose snapshots may be restored."""

    agent_id: str = Field(
        max_length=MAX_AGENT_ID_LENGTH,
        pattern=DNS1123_LABEL_PATTERN,
        description="Agent id (spec.agentId, else the VestigeMemory's name) in this namespace.",
    )


class VestigeBackupGrantSpec(SpecModel):
    """Who may restore which of this namespace's agents' snapshots (the source side grants)."""

    from_: list[GrantFrom] = Field(
        alias="from",
        min_length=1,
        max_length=MAX_GRANT_ENTRIES,
        description="Namespaces allowed to restore; no wildcard: each is named.",
    )
    to: list[GrantTo] = Field(
        min_length=1,
        max_length=MAX_GRANT_ENTRIES,
        description="Agents of this namespace whose snapshots they may restore; no wildcard: each is named.",
    )

    def allows(self, namespace: str, agent_id: str) -> bool:
        """Whether this grant lets ``namespace`` restore ``agent_id``'s snapshots."""
        return any(f.namespace == namespace for f in self.from_) and any(
            t.agent_id == agent_id for t in self.to
        )


class VestigeBackupSpec(SpecModel):
    """One backup of one VestigeMemory's store, taken now."""

    memory: str = Field(
        max_length=MAX_NAME_LENGTH,
        pattern=DNS1035_LABEL_PATTERN,
        description=(
            "Name of the VestigeMemory (same namespace) to back up; its spec.backup.destination is used."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self == oldSelf",
                    "message": "spec.memory is immutable",
                    "reason": "FieldValueForbidden",
                }
            ]
        },
    )


class VestigeBackupStatus(StatusModel):
    """Observed state of a VestigeBackup, written by the operator."""

    phase: BackupPhase | None = Field(default=None, description="Pending, Running, Completed or Failed.")
    started_at: Timestamp | None = Field(
        default=None,
        description="When the backup Job was started (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    completed_at: Timestamp | None = Field(
        default=None,
        description="When the backup completed or failed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    key: str | None = Field(
        default=None,
        max_length=MAX_STATUS_KEY_LENGTH,
        description="Object key of the snapshot in the bucket.",
    )
    size: int | None = Field(
        default=None,
        ge=0,
        description="Size of the compressed snapshot in bytes.",
        json_schema_extra={"format": "int64"},
    )
    sha256: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "SHA-256 of the compressed snapshot (hex); a restore may pin it (restore.fromBackup.sha256)."
        ),
    )
    vestige_version: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_LENGTH + 64,
        description="Vestige generation and image of the memory when it was backed up.",
    )
    job: str | None = Field(
        default=None,
        max_length=MAX_DNS_SUBDOMAIN_LENGTH,
        description="Name of the Job that runs (or ran) the backup.",
    )
    message: str | None = Field(
        default=None,
        max_length=MAX_MESSAGE_LENGTH,
        description="Human-readable result or cause of the failure.",
    )


class LastBackup(StatusModel):
    """A backup that completed."""

    time: Timestamp | None = Field(
        default=None, description="When it completed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    key: str | None = Field(
        default=None, max_length=MAX_STATUS_KEY_LENGTH, description="Object key of its snapshot."
    )
    name: str | None = Field(
        default=None, max_length=MAX_DNS_SUBDOMAIN_LENGTH, description="Name of its VestigeBackup object."
    )


class MemoryBackupStatus(StatusModel):
    """Backups of this memory, as the operator last saw them."""

    last_successful: LastBackup | None = Field(default=None, description="The newest Completed backup.")


class VestigeMemorySpec(SpecModel):
    """Desired state of one agent's long-term memory: a Vestige server, its bridge, volume and token."""

    agent_id: str | None = Field(
        default=None,
        max_length=MAX_AGENT_ID_LENGTH,
        pattern=DNS1123_LABEL_PATTERN,
        description=(
            "Identity of the agent this memory belongs to (a DNS label); defaults to metadata.name. "
            "Immutable: the agent id in force (this value, or the name when unset) never changes."
        ),
    )
    suspend: bool = Field(
        default=False,
        description="Scale the memory to zero (data kept, phase Suspended) until set back to false.",
    )
    storage: StorageSpec = _nested(StorageSpec, "The data volume.")
    vestige: VestigeContainerSpec = _nested(VestigeContainerSpec, "The Vestige container.")
    bridge: BridgeContainerSpec = _nested(BridgeContainerSpec, "The bridge container.")
    auth: AuthSpec = _nested(AuthSpec, "The bearer token.")
    service: ServiceSpec = _nested(ServiceSpec, "The Service in front of the bridge.")
    ingress: IngressSpec = _nested(IngressSpec, "An optional Ingress to the bridge.")
    network_policy: NetworkPolicySpec = _nested(NetworkPolicySpec, "The NetworkPolicy of the pod.")
    pod: PodTemplateOptions = _nested(PodTemplateOptions, "Pod scheduling and metadata options.")
    backup: BackupSpec | None = Field(
        default=None, description="Scheduled backups to object storage (docs/backup.md)."
    )
    restore: RestoreSpec | None = Field(
        default=None, description="Start a NEW memory from a snapshot (docs/backup.md)."
    )

    def effective_agent_id(self, name: str) -> str:
        """The agent id in force: ``spec.agentId``, else the resource's name."""
        return self.agent_id or name


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


class Condition(StatusModel):
    """A Kubernetes condition (same shape as metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description=(
            "Condition type: Ready, Reconciling, Stalled, StorageReady, LastBackupSucceeded, "
            "RotationRefused, ReplicationHealthy."
        ),
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="Machine-readable CamelCase reason of the last transition.",
    )
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH, description="Human-readable details.")
    last_transition_time: Timestamp = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation the condition was computed from.",
        json_schema_extra={"format": "int64"},
    )


class StorageStatus(StatusModel):
    """Observed state of the data volume."""

    capacity: Quantity | None = Field(default=None, description="Capacity of the bound volume.")


class ReplicationStatus(StatusModel):
    """The continuous replica's position, as the agent's pod last reported it (spec.backup.continuous)."""

    last_replicated_at: Timestamp | None = Field(
        default=None,
        description=(
            "When the replica last held every change of the store (RFC 3339; refreshed every "
            "VESTIGE_REPLICATION_CHECK_SECONDS, kept while the pod cannot be asked)."
        ),
        json_schema_extra={"format": "date-time"},
    )
    lag_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Seconds the replica was behind the store at the last check (measured in the pod).",
        json_schema_extra={"format": "int64"},
    )


class VestigeMemoryStatus(StatusModel):
    """Observed state of a VestigeMemory, written by the operator."""

    phase: Phase | None = Field(
        default=None,
        description="Pending, Provisioning, Ready, Degraded, Suspended or Failed.",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation the status was computed from.",
        json_schema_extra={"format": "int64"},
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=(
            "Ready, Reconciling, Stalled, StorageReady and, when they apply, LastBackupSucceeded, "
            "RotationRefused and ReplicationHealthy (with backup.continuous: True Replicating, False "
            "Lagging or NotReplicating, Unknown when the pod cannot be asked)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    agent_id: str | None = Field(
        default=None, max_length=MAX_AGENT_ID_LENGTH, description="The agent id in force."
    )
    endpoint: str | None = Field(
        default=None, max_length=MAX_URL_LENGTH, description="In-cluster URL of the bridge."
    )
    url: str | None = Field(
        default=None,
        max_length=MAX_URL_LENGTH,
        description="External URL of the bridge (through the Ingress).",
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret and key holding the bearer token."
    )
    pvc_name: str | None = Field(
        default=None,
        max_length=MAX_DNS_SUBDOMAIN_LENGTH,
        description="Name of the data PersistentVolumeClaim.",
    )
    token_rotated_at: Timestamp | None = Field(
        default=None,
        description=(
            "When the operator last rotated the token on request (annotation "
            "`vestige.dev/rotate-token`); never the token itself (RFC 3339)."
        ),
        json_schema_extra={"format": "date-time"},
    )
    storage: StorageStatus | None = Field(default=None, description="Observed state of the data volume.")
    backup: MemoryBackupStatus | None = Field(default=None, description="Backups of this memory.")
    replication: ReplicationStatus | None = Field(
        default=None,
        description="The continuous replica's position (spec.backup.continuous; see ReplicationHealthy).",
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)


__all__ = [
    "Affinity",
    "AuthSpec",
    "BackupDestination",
    "BackupPhase",
    "BackupRetention",
    "BackupSpec",
    "BridgeContainerSpec",
    "CelRule",
    "Condition",
    "ConditionStatus",
    "ContinuousBackupSpec",
    "EnvVar",
    "EnvVarSource",
    "GrantFrom",
    "GrantTo",
    "ImagePullPolicy",
    "IngressSpec",
    "IngressTLS",
    "KubernetesShape",
    "LabelSelector",
    "LocalObjectReference",
    "MemoryBackupStatus",
    "NetworkPolicyPeer",
    "NetworkPolicySpec",
    "PathType",
    "Phase",
    "PodTemplateOptions",
    "ReclaimPolicy",
    "ReplicationStatus",
    "ResourceRequirements",
    "RestoreSource",
    "RestoreSpec",
    "S3Destination",
    "SecretKeyRef",
    "ServiceSpec",
    "ServiceType",
    "StorageSpec",
    "StorageStatus",
    "Toleration",
    "VestigeBackupGrantSpec",
    "VestigeBackupSpec",
    "VestigeBackupStatus",
    "VestigeContainerSpec",
    "VestigeGeneration",
    "VestigeMemorySpec",
    "VestigeMemoryStatus",
    "parse_quantity",
]
