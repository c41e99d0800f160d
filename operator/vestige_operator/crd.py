"""Generate the VestigeMemory CustomResourceDefinition from the pydantic models in ``api.py``.

``to_structural`` turns pydantic's JSON schema into a Kubernetes structural schema: ``$ref`` are
inlined, ``Optional`` (``anyOf`` with ``null``) collapses to the non-null branch, titles and null
defaults go, free-form objects keep unknown fields (``x-kubernetes-preserve-unknown-fields``) and
every node has a ``type``. The constraints on map keys (``propertyNames`` and
``patternProperties``, which Kubernetes does not support) become a CEL rule on the map, and each
field's description ends with its bounds (``kubectl explain`` shows descriptions only).
``crd_manifest`` adds what only the CRD knows: names, printer columns, the status subresource and
the rules on the root that need ``metadata.name``.

``python -m vestige_operator.crd --write`` regenerates ``crds/`` and ``docs/api.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from vestige_operator import (
    BACKUP_KIND,
    BACKUP_PLURAL,
    BACKUP_SINGULAR,
    GRANT_KIND,
    GRANT_PLURAL,
    GRANT_SINGULAR,
    GROUP,
    KIND,
    PLURAL,
    SINGULAR,
    VERSION,
)
from vestige_operator.api import (
    DNS1035_LABEL_PATTERN,
    MAX_NAME_LENGTH,
    PATTERN_NAMES,
    VestigeBackupGrantSpec,
    VestigeBackupSpec,
    VestigeBackupStatus,
    VestigeMemorySpec,
    VestigeMemoryStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = f"{GROUP}_{PLURAL}.yaml"
SHORT_NAMES = ["vmem"]
CATEGORIES = ["vestige"]
BACKUP_CRD_NAME = f"{BACKUP_PLURAL}.{GROUP}"
BACKUP_CRD_FILE = f"{GROUP}_{BACKUP_PLURAL}.yaml"
BACKUP_SHORT_NAMES = ["vbak"]
GRANT_CRD_FILE = f"{GROUP}_{GRANT_PLURAL}.yaml"
GRANT_SHORT_NAMES = ["vbgrant"]
#: Longest VestigeBackup name: its Job and the Job's pods carry it in a label value (<= 63).
MAX_BACKUP_NAME_LENGTH = 63

#: Keys of pydantic's JSON schema that a Kubernetes schema does not use.
_DROPPED_KEYS = frozenset({"title", "$defs", "discriminator", "examples"})

_HEADER = (
    "# Generated from operator/vestige_operator/api.py by `python -m vestige_operator crd`.\n"
    "# Do not edit: change the models and run `python -m vestige_operator.crd --write`.\n"
)


class SchemaConversionError(ValueError):
    """The pydantic schema uses a construct that has no structural Kubernetes equivalent."""


def to_structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a pydantic JSON schema (with ``$defs``) into a Kubernetes structural schema."""
    return _convert(schema, schema.get("$defs", {}), "")


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """Inline ``$ref`` and single-item ``allOf``; keys next to the reference win (a field's
    description and default override the referenced model's)."""
    if "$ref" in node:
        ref = node["$ref"]
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
            raise SchemaConversionError(f"{path or '<root>'}: unresolvable $ref {ref!r}")
        target = _resolve(defs[ref[len(prefix) :]], defs, path)
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "allOf" in node:
        parts = node["allOf"]
        if len(parts) != 1:
            raise SchemaConversionError(f"{path or '<root>'}: allOf with {len(parts)} parts")
        inner = _resolve(parts[0], defs, path)
        node = {**inner, **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str, field: bool = True) -> dict[str, Any]:
    """Convert one node; ``field`` nodes (the root and properties) must carry a description."""
    node = _resolve(node, defs, path)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaConversionError(
                f"{path or '<root>'}: a union of {len(options)} types has no structural form"
            )
        inner = _resolve(options[0], defs, path)
        node = {**inner, **{k: v for k, v in node.items() if k != "anyOf"}}
        if "anyOf" in inner and "anyOf" not in node:
            node["anyOf"] = inner["anyOf"]
        return _convert(node, defs, path, field)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {
                name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            out["items"] = _convert(value, defs, f"{path}[]", field=False)
        elif key == "additionalProperties":
            if isinstance(value, dict) and value:
                out["additionalProperties"] = _convert(value, defs, f"{path}.*", field=False)
            elif (value is True or value == {}) and not ({"properties", "patternProperties"} & set(node)):
                out["x-kubernetes-preserve-unknown-fields"] = True
            # additionalProperties: false (extra="forbid") is implicit: structural schemas prune.
        elif key == "patternProperties":
            # dict[<key type with a pattern>, V]: pydantic moves the key's pattern here.
            if len(value) != 1:
                raise SchemaConversionError(f"{path or '<root>'}: {len(value)} key patterns")
            ((key_pattern, values),) = value.items()
            out["additionalProperties"] = _convert(values, defs, f"{path}.*", field=False)
            keys = {**node.get("propertyNames", {}), "pattern": key_pattern}
            out.setdefault("x-kubernetes-validations", []).append(_key_rule(keys, path))
        elif key == "propertyNames":
            if "patternProperties" not in node:
                out.setdefault("x-kubernetes-validations", []).append(_key_rule(value, path))
        elif key == "x-kubernetes-validations":
            out[key] = [*value, *out.get(key, [])]
        else:
            out[key] = value

    if "type" not in out and not (
        out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        if "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        else:
            raise SchemaConversionError(f"{path or '<root>'}: no type")
    if field and not out.get("description"):
        raise SchemaConversionError(f"{path or '<root>'}: no description")
    if field and (bounds := _bounds_text(out)):
        out["description"] = f"{out['description'].rstrip()} {bounds}"
    # Readable order: type and description first, as kubectl and controller-gen show them.
    head = {k: out.pop(k) for k in ("type", "description") if k in out}
    return {**head, **out}


def _key_rule(keys: dict[str, Any], path: str) -> dict[str, str]:
    """The CEL rule that checks every key of a map against the key type's constraints."""
    unknown = set(keys) - {"minLength", "maxLength", "pattern"}
    if unknown or "maxLength" not in keys:
        raise SchemaConversionError(f"{path or '<root>'}: map keys need maxLength, not {sorted(unknown)}")
    low, high = keys.get("minLength", 0), keys["maxLength"]
    checks = [f"k.size() <= {high}"]
    size = f"at most {high} characters"
    if low:
        checks.insert(0, f"k.size() >= {low}")
        size = f"{low} to {high} characters"
    what = "strings"
    if "pattern" in keys:
        pattern = keys["pattern"]
        if "'" in pattern:
            raise SchemaConversionError(f"{path or '<root>'}: a key pattern with a quote")
        checks.append(f"k.matches(r'{pattern}')")
        what = PATTERN_NAMES.get(pattern, f"strings matching {pattern}")
    return {"rule": f"self.all(k, {' && '.join(checks)})", "message": f"keys must be {what} of {size}"}


def _bounds_text(node: dict[str, Any]) -> str:
    """The bounds of a field in words, for its description."""
    kind = node.get("type")
    if kind == "string" or node.get("x-kubernetes-int-or-string"):
        if "maxLength" not in node:
            return ""
        low = node.get("minLength", 0)
        if low > 1:
            return f"{low} to {node['maxLength']} characters."
        return f"At most {node['maxLength']} characters."
    if kind == "array" and "maxItems" in node:
        return f"At most {node['maxItems']} items."
    if kind == "object" and "maxProperties" in node:
        text = f"At most {node['maxProperties']} entries"
        rules = node.get("x-kubernetes-validations", [])
        keys = [r["message"] for r in rules if r["message"].startswith("keys")]
        if keys:
            text += f"; keys of {keys[0].rsplit(' of ', 1)[1]}"
        values = node.get("additionalProperties", {})
        if isinstance(values, dict) and "maxLength" in values:
            text += f"; values at most {values['maxLength']} characters"
        return text + "."
    if kind in ("integer", "number") and "maximum" in node:
        return f"From {node.get('minimum', '-')} to {node['maximum']}."
    return ""


def _root_validations() -> list[dict[str, Any]]:
    """CEL rules on the root object: the only place where metadata.name is visible."""
    effective = "(has({o}.spec) && has({o}.spec.agentId) ? {o}.spec.agentId : {o}.metadata.name)"
    return [
        {
            "rule": f"{effective.format(o='self')} == {effective.format(o='oldSelf')}",
            "message": "spec.agentId is immutable: the agent id in force (spec.agentId, else "
            "metadata.name) cannot change",
            "fieldPath": ".spec.agentId",
            "reason": "FieldValueForbidden",
        },
        _SIZE_RULE,
    ]


def _has_path(root: str, *fields: str) -> str:
    return " && ".join(f"has({'.'.join((root, *fields[: i + 1]))})" for i in range(len(fields)))


_NEW_SIZE = "self.spec.storage.size"
_OLD_SIZE = "oldSelf.spec.storage.size"
_CAPACITY = "oldSelf.status.storage.capacity"
#: storage.size never shrinks, except back down to (not below) the capacity the operator last
#: observed on the bound claim: an expansion that did not happen can be undone. A root rule,
#: because a rule on the field cannot see the status. oldSelf.status is the stored status (a
#: spec update cannot change it); the claim's own validation still refuses anything below its
#: real capacity, so a forged status shrinks nothing.
_SIZE_RULE = {
    "rule": (
        f"!({_has_path('self', 'spec', 'storage', 'size')}) || "
        f"!({_has_path('oldSelf', 'spec', 'storage', 'size')}) || "
        f"!isQuantity(string({_NEW_SIZE})) || !isQuantity(string({_OLD_SIZE})) || "
        f"quantity(string({_NEW_SIZE})).compareTo(quantity(string({_OLD_SIZE}))) >= 0 || "
        f"({_has_path('oldSelf', 'status', 'storage', 'capacity')} && "
        f"isQuantity(string({_CAPACITY})) && "
        f"quantity(string({_NEW_SIZE})).compareTo(quantity(string({_CAPACITY}))) >= 0)"
    ),
    "message": "storage.size may grow, and shrink only back down to the volume's actual capacity "
    "(status.storage.capacity), never below it",
    "fieldPath": ".spec.storage.size",
    "reason": "FieldValueForbidden",
}


def openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the served version."""
    spec = to_structural(VestigeMemorySpec.model_json_schema(by_alias=True))
    spec["default"] = {}
    status = to_structural(VestigeMemoryStatus.model_json_schema(by_alias=True, mode="serialization"))
    return {
        "type": "object",
        "description": (
            "VestigeMemory is the long-term memory of one AI agent: a Vestige MCP server with "
            "its own volume and token, fronted by an authenticating REST/MCP bridge."
        ),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this representation of the object (vestige.dev/v1alpha1).",
            },
            "kind": {
                "type": "string",
                "description": "Kind is the REST resource this object represents (VestigeMemory).",
            },
            "metadata": {
                # Kubernetes allows only restrictions of name/generateName here (no description).
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": MAX_NAME_LENGTH,
                        "pattern": DNS1035_LABEL_PATTERN,
                    }
                },
            },
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": _root_validations(),
    }


def printer_columns() -> list[dict[str, Any]]:
    """Columns of ``kubectl get vmem``."""
    return [
        {
            "name": "Agent",
            "type": "string",
            "jsonPath": ".status.agentId",
            "description": "The agent id in force.",
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Summary state."},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Status of the Ready condition.",
        },
        {
            "name": "Endpoint",
            "type": "string",
            "jsonPath": ".status.endpoint",
            "description": "In-cluster URL of the bridge.",
        },
        {
            "name": "Storage",
            "type": "string",
            "jsonPath": ".status.storage.capacity",
            "description": "Capacity of the bound data volume (the request is spec.storage.size).",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Replicated",
            "type": "date",
            "priority": 1,
            "jsonPath": ".status.replication.lastReplicatedAt",
            "description": "When the continuous replica last held every change (-o wide).",
        },
    ]


def _crd(
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    columns: list[dict[str, Any]],
    schema: dict[str, Any],
    status: bool = True,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "vestige-operator", "app.kubernetes.io/part-of": "vestige"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if status else {}),
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of VestigeMemory."""
    return _crd(KIND, PLURAL, SINGULAR, SHORT_NAMES, printer_columns(), openapi_schema())


# -- VestigeBackup ----------------------------------------------------------------------------


def _envelope(kind: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of a small kind: apiVersion, kind, a DNS-1035 name of at most 63
    characters (a label value), and ``properties`` (spec, status)."""
    return {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"APIVersion of this representation of the object ({GROUP}/{VERSION}).",
            },
            "kind": {
                "type": "string",
                "description": f"Kind is the REST resource this object represents ({kind}).",
            },
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": MAX_BACKUP_NAME_LENGTH,
                        "pattern": DNS1035_LABEL_PATTERN,
                    }
                },
            },
            **properties,
        },
        "required": ["spec"],
    }


def backup_openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of VestigeBackup."""
    spec = to_structural(VestigeBackupSpec.model_json_schema(by_alias=True))
    status = to_structural(VestigeBackupStatus.model_json_schema(by_alias=True, mode="serialization"))
    return _envelope(
        BACKUP_KIND,
        "VestigeBackup is one backup of a VestigeMemory's store to the object storage named in "
        "its spec.backup.destination: a consistent, compressed snapshot with its SHA-256. "
        "Create one to back up now; scheduled runs create them too (<memory>-<UTC timestamp>).",
        {"spec": spec, "status": status},
    )


def backup_printer_columns() -> list[dict[str, Any]]:
    """Columns of ``kubectl get vbak``."""
    return [
        {
            "name": "Memory",
            "type": "string",
            "jsonPath": ".spec.memory",
            "description": "The VestigeMemory backed up.",
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
        {
            "name": "Started",
            "type": "date",
            "jsonPath": ".status.startedAt",
            "description": "When the backup Job started.",
        },
        {
            "name": "Size",
            "type": "integer",
            "jsonPath": ".status.size",
            "description": "Size of the compressed snapshot in bytes.",
        },
        {
            "name": "Key",
            "type": "string",
            "priority": 1,
            "jsonPath": ".status.key",
            "description": "Object key of the snapshot.",
        },
        {
            "name": "Message",
            "type": "string",
            "priority": 1,
            "jsonPath": ".status.message",
            "description": "Result or cause of the failure.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def backup_crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of VestigeBackup."""
    columns, schema = backup_printer_columns(), backup_openapi_schema()
    return _crd(BACKUP_KIND, BACKUP_PLURAL, BACKUP_SINGULAR, BACKUP_SHORT_NAMES, columns, schema)


# -- VestigeBackupGrant -----------------------------------------------------------------------


def grant_openapi_schema() -> dict[str, Any]:
    """The openAPIV3Schema of VestigeBackupGrant."""
    return _envelope(
        GRANT_KIND,
        "VestigeBackupGrant lets VestigeMemories of other namespaces restore snapshots of "
        "agents in ITS namespace (spec.restore.fromBackup.source <this namespace>/<agentId>). "
        "Created in the source namespace, by whoever owns those agents: without one, the "
        "operator refuses every restore across namespaces (Gateway API's ReferenceGrant "
        "pattern). It is checked before the restoring agent's pod is created; deleting it "
        "stops later restores, not one that already ran.",
        {"spec": to_structural(VestigeBackupGrantSpec.model_json_schema(by_alias=True))},
    )


def grant_printer_columns() -> list[dict[str, Any]]:
    """Columns of ``kubectl get vbgrant``."""
    return [
        {
            "name": "From",
            "type": "string",
            "jsonPath": ".spec.from[*].namespace",
            "description": "Namespaces allowed to restore.",
        },
        {
            "name": "Agents",
            "type": "string",
            "jsonPath": ".spec.to[*].agentId",
            "description": "Agents of this namespace whose snapshots they may restore.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def grant_crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of VestigeBackupGrant (no status)."""
    columns, schema = grant_printer_columns(), grant_openapi_schema()
    return _crd(GRANT_KIND, GRANT_PLURAL, GRANT_SINGULAR, GRANT_SHORT_NAMES, columns, schema, status=False)


def grant_crd_yaml() -> str:
    """The VestigeBackupGrant CRD as YAML, with a do-not-edit header."""
    return _yaml(grant_crd_manifest())


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared sub-trees in full: YAML anchors would make the CRD hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(manifest: dict[str, Any]) -> str:
    body = yaml.dump(manifest, Dumper=_NoAliasDumper, sort_keys=False, width=10_000, allow_unicode=True)
    return _HEADER + body


def crd_yaml() -> str:
    """The VestigeMemory CRD as YAML, with a do-not-edit header (the content of ``crds/``)."""
    return _yaml(crd_manifest())


def backup_crd_yaml() -> str:
    """The VestigeBackup CRD as YAML, with a do-not-edit header."""
    return _yaml(backup_crd_manifest())


def all_crds_yaml() -> str:
    """Every CRD the operator serves, one multi-document YAML (``kubectl apply -f -`` takes it)."""
    return "---\n".join((crd_yaml(), backup_crd_yaml(), grant_crd_yaml()))


# --------------------------------------------------------------------------------------------
# Field reference (docs/api.md), generated from the same schema
# --------------------------------------------------------------------------------------------


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type_of(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map[string]{_type_of(node['additionalProperties'])}"
    return str(kind)


def _constraints(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "default" in node and node["default"] != {}:
        parts.append(f"default `{_inline(node['default'])}`")
    if "maxLength" in node:
        parts.append(f"max length {node['maxLength']}")
    if "maxItems" in node:
        parts.append(f"max {node['maxItems']} items")
    if "maxProperties" in node:
        parts.append(f"max {node['maxProperties']} entries")
    if "pattern" in node and not node.get("x-kubernetes-int-or-string"):
        parts.append(f"pattern `{node['pattern']}`")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(node.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    rules = list(node.get("x-kubernetes-validations", []))
    if node.get("type") == "array":
        rules += node.get("items", {}).get("x-kubernetes-validations", [])
    parts.extend(rule["message"] for rule in rules)
    values = node.get("additionalProperties")
    if isinstance(values, dict):
        parts.extend(f"values {rule['message']}" for rule in values.get("x-kubernetes-validations", []))
    return "; ".join(parts)


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _rows(node: dict[str, Any], prefix: str, required: bool) -> list[str]:
    rows = []
    desc = " ".join(node.get("description", "").split()).replace("|", "\\|")
    notes = _constraints(node).replace("|", "\\|")
    mark = " (required)" if required else ""
    rows.append(f"| `{prefix}`{mark} | {_type_of(node)} | {desc} | {notes} |")
    children = node.get("properties", {})
    if node.get("type") == "array":
        children = node.get("items", {}).get("properties", {})
        prefix = f"{prefix}[]"
        req = set(node.get("items", {}).get("required", []))
    else:
        req = set(node.get("required", []))
    for name, child in children.items():
        rows.extend(_rows(child, f"{prefix}.{name}", name in req))
    return rows


def api_reference_markdown() -> str:
    """A field reference of spec and status, generated from the CRD schema."""
    schema = openapi_schema()
    header = "| Field | Type | Description | Default, constraints, rules |\n|---|---|---|---|"
    lines = [
        "<!-- Generated by `python -m vestige_operator.crd --write` from api.py; do not edit. -->",
        f"# {KIND} API reference ({GROUP}/{VERSION})",
        "",
        schema["description"],
        "",
        f"Short name `{SHORT_NAMES[0]}`, category `{CATEGORIES[0]}`, namespaced, status subresource.",
        f"`metadata.name` must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters (children "
        "are `<name>`, `<name>-auth`, `<name>-data`, and pod names `<name>-<hash>-<suffix>` stay "
        "within 63 characters).",
        "",
    ]
    for part in ("spec", "status"):
        lines += [f"## {part}", "", header]
        lines += _rows(schema["properties"][part], part, False)
        lines.append("")
    lines += ["## Rules on the whole object", ""]
    lines += [f"- `{r['rule']}`: {r['message']}" for r in schema["x-kubernetes-validations"]]
    lines += ["", "## Printer columns", ""]
    lines += [f"- {c['name'].upper()}: `{c['jsonPath']}`" for c in printer_columns()]
    backup = backup_openapi_schema()
    lines += [
        "",
        f"# {BACKUP_KIND} API reference ({GROUP}/{VERSION})",
        "",
        backup["description"],
        "",
        f"Short name `{BACKUP_SHORT_NAMES[0]}`, category `{CATEGORIES[0]}`, namespaced, status "
        f"subresource. `metadata.name` must be a DNS-1035 label of at most {MAX_BACKUP_NAME_LENGTH} "
        "characters. See [backup.md](backup.md).",
        "",
    ]
    for part in ("spec", "status"):
        lines += [f"## {BACKUP_KIND} {part}", "", header]
        lines += _rows(backup["properties"][part], part, part in backup.get("required", []))
        lines.append("")
    lines += [f"## {BACKUP_KIND} printer columns", ""]
    lines += [f"- {c['name'].upper()}: `{c['jsonPath']}`" for c in backup_printer_columns()]
    grant = grant_openapi_schema()
    lines += [
        "",
        f"# {GRANT_KIND} API reference ({GROUP}/{VERSION})",
        "",
        grant["description"],
        "",
        f"Short name `{GRANT_SHORT_NAMES[0]}`, category `{CATEGORIES[0]}`, namespaced, no status. "
        "See [backup.md](backup.md) and [security.md](security.md).",
        "",
        f"## {GRANT_KIND} spec",
        "",
        header,
    ]
    lines += _rows(grant["properties"]["spec"], "spec", True)
    lines += ["", f"## {GRANT_KIND} printer columns", ""]
    lines += [f"- {c['name'].upper()}: `{c['jsonPath']}`" for c in grant_printer_columns()]
    return "\n".join(lines) + "\n"


def write(root: Path) -> list[Path]:
    """Write ``crds/<files>`` and ``docs/api.md`` under the repository root."""
    targets = {
        root / "crds" / CRD_FILE: crd_yaml(),
        root / "crds" / BACKUP_CRD_FILE: backup_crd_yaml(),
        root / "crds" / GRANT_CRD_FILE: grant_crd_yaml(),
        root / "docs" / "api.md": api_reference_markdown(),
    }
    for target, text in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return list(targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vestige_operator.crd", description=__doc__)
    parser.add_argument("--write", action="store_true", help="write crds/ and docs/api.md")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.root):
            print(path)
    else:
        sys.stdout.write(all_crds_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
