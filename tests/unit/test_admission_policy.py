"""The admission policy's text against its sources (docs/admission.md): the params it reads are
the documented ones, the Secret names it never allows are those the operator derives, and every
field of the CRDs that names an image or a Secret is one the policy checks. Its behaviour on the
real API server: tests/integration/test_admission.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
CHART = ROOT / "manifests" / "helm" / "vestige-operator"
POLICY = (BASE / "admission-policy.yaml").read_text()


def test_the_params_the_policy_reads_are_the_documented_ones() -> None:
    """Each key of admission-params.yaml is read by the policy, documented in the chart's schema
    and in docs/admission.md, and the policy reads no other key."""
    read = set(re.findall(r"'(\w+)' in variables\.data", POLICY))
    params = set(yaml.safe_load((BASE / "admission-params.yaml").read_text())["data"])
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = set(schema["properties"]["admissionPolicy"]["properties"]["params"]["properties"])
    assert read == params == in_schema
    doc = (ROOT / "docs" / "admission.md").read_text()
    assert not [k for k in params if f"`{k}`" not in doc]


def test_the_policy_refuses_exactly_the_secret_names_the_operator_derives() -> None:
    from vestige_operator import vocabulary

    derived = re.search(r"- name: derivedSecret\n\s+expression: [>|]-\n(.*?)\n\s+- name:", POLICY, re.S)
    assert derived is not None
    suffixes = set(re.findall(r"endsWith\('([^']+)'\)", derived.group(1)))
    own = {vocabulary.secret_name("x")[1:], vocabulary.vestige_secret_name("x")[1:]}
    assert suffixes == own, "the policy's derived Secret names differ from the operator's"


#: A field whose name says it holds an image or names a Secret (or brings in a Secret's keys).
SENSITIVE = re.compile(r"(?i)(image$|secret|envFrom)")


def _sensitive_fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, sub in (schema.get("properties") or {}).items():
        if SENSITIVE.search(name):
            yield (*path, name)
            continue
        yield from _sensitive_fields(sub, (*path, name))
        if "items" in sub:
            yield from _sensitive_fields(sub["items"], (*path, name))


def _spec_schema(crd_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_every_image_and_secret_field_of_the_crd_is_checked() -> None:
    """A new image or Secret field (a runner image, envFrom, another credentials Secret) fails
    here until the policy checks it: creating a VestigeMemory must not grow a way around it."""
    fields = sorted(_sensitive_fields(_spec_schema("vestige.dev_vestigememories.yaml")))
    assert ("vestige", "image") in fields and ("auth", "existingSecret") in fields
    # env[].valueFrom.secretKeyRef is checked for every env list by one rule over each entry.
    env_ref = "dyn(e.valueFrom).secretKeyRef" in POLICY
    unchecked = [
        f
        for f in fields
        if f"variables.spec.{'.'.join(f)}" not in POLICY
        and not (env_ref and f[1:] == ("env", "valueFrom", "secretKeyRef"))
    ]
    assert not unchecked, f"fields the admission policy does not check: {unchecked}"
    assert env_ref


def test_vestigebackup_names_nothing_the_policy_would_have_to_check() -> None:
    """VestigeBackup is not matched (docs/admission.md): it may only name a memory. A field that
    names an image or a Secret there needs the policy to match it first."""
    assert list(_sensitive_fields(_spec_schema("vestige.dev_vestigebackups.yaml"))) == []
    schema = json.dumps(_spec_schema("vestige.dev_vestigebackups.yaml"))
    assert "x-kubernetes-preserve-unknown-fields" not in schema
