"""The VestigeBackup CRD and the backup/restore fields of VestigeMemory (generated from api.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from vestige_operator import crd
from vestige_operator.api import VestigeBackupSpec, VestigeMemorySpec, max_age_seconds

ROOT = Path(__file__).resolve().parents[2]
STALE = "stale: run `.venv/bin/python -m vestige_operator.crd --write` and commit the result"
S3 = {"s3": {"bucket": "backups", "credentialsSecret": {"name": "s3-creds"}}}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return crd.backup_crd_manifest()


@pytest.fixture(scope="module")
def schema(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_backup_crd_is_fresh() -> None:
    path = ROOT / "crds" / crd.BACKUP_CRD_FILE
    assert path.name == "vestige.dev_vestigebackups.yaml"
    assert path.read_text(encoding="utf-8") == crd.backup_crd_yaml(), f"{path} is {STALE}"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == crd.backup_crd_manifest()


def test_kustomization_lists_both_crds() -> None:
    kustomization = yaml.safe_load((ROOT / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (ROOT / "crds").glob("vestige.dev_*.yaml")
    )


def test_names_group_version(manifest: dict[str, Any]) -> None:
    assert manifest["metadata"]["name"] == "vestigebackups.vestige.dev"
    spec = manifest["spec"]
    assert spec["group"] == "vestige.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "VestigeBackup",
        "listKind": "VestigeBackupList",
        "plural": "vestigebackups",
        "singular": "vestigebackup",
        "shortNames": ["vbak"],
        "categories": ["vestige"],
    }
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_printer_columns(manifest: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in manifest["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Memory", "Phase", "Started", "Size", "Key", "Message", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Key"]["priority"] == 1  # -o wide


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Paths of properties without a description (kubectl explain shows nothing for them)."""
    missing = []
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and path != ".metadata" and not child.get("description"):
            missing.append(here)
        missing += _walk(child, here)
    if node.get("type") == "array":
        missing += _walk(node.get("items") or {}, f"{path}[]")
    return missing


def test_every_field_is_described(schema: dict[str, Any]) -> None:
    assert _walk(schema, "") == []
    memory = crd.openapi_schema()
    assert _walk(memory["properties"]["spec"]["properties"]["backup"], ".spec.backup") == []
    assert _walk(memory["properties"]["spec"]["properties"]["restore"], ".spec.restore") == []


def test_status_fields_and_phases(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    assert set(status) >= {
        "phase",
        "startedAt",
        "completedAt",
        "key",
        "size",
        "sha256",
        "vestigeVersion",
        "message",
    }
    assert status["phase"]["enum"] == ["Pending", "Running", "Completed", "Failed"]
    assert status["size"]["format"] == "int64"


def test_spec_memory_is_required_and_immutable(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["memory"]
    rules = spec["properties"]["memory"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "self == oldSelf"
    assert schema["required"] == ["spec"]
    with pytest.raises(ValidationError):
        VestigeBackupSpec.model_validate({})
    assert VestigeBackupSpec.model_validate({"memory": "my-agent"}).memory == "my-agent"


def test_memory_backup_schema_names() -> None:
    spec = crd.openapi_schema()["properties"]["spec"]["properties"]
    backup = spec["backup"]["properties"]
    assert set(backup) == {"schedule", "retention", "suspend", "destination", "continuous"}
    assert set(backup["continuous"]["properties"]) == {
        "enabled",
        "syncInterval",
        "snapshotInterval",
        "retention",
    }
    assert set(backup["retention"]["properties"]) == {"keepLast", "maxAge"}
    s3 = backup["destination"]["properties"]["s3"]["properties"]
    assert set(s3) == {
        "endpoint",
        "bucket",
        "prefix",
        "region",
        "credentialsSecret",
        "caSecret",
        "forcePathStyle",
    }
    restore = spec["restore"]["properties"]["fromBackup"]
    assert set(restore["properties"]) == {"destination", "source", "key", "latest", "sha256", "pointInTime"}
    assert restore["x-kubernetes-validations"][0]["message"].startswith("restore.fromBackup")
    status = crd.openapi_schema()["properties"]["status"]["properties"]["backup"]["properties"]
    assert set(status["lastSuccessful"]["properties"]) >= {"time", "key"}


def test_backup_spec_validation() -> None:
    ok = VestigeMemorySpec.model_validate(
        {
            "backup": {
                "schedule": "*/5 * * * *",
                "retention": {"keepLast": 2, "maxAge": "30d"},
                "destination": S3,
            }
        }
    )
    assert ok.backup is not None and ok.backup.retention.keep_last == 2
    for bad in ("61 * * * *", "* * * *", "@hourly", "*/5 * * * * *"):
        with pytest.raises(ValidationError, match="schedule"):
            VestigeMemorySpec.model_validate({"backup": {"schedule": bad, "destination": S3}})
    with pytest.raises(ValidationError):
        VestigeMemorySpec.model_validate({"backup": {"destination": {"s3": {"bucket": "Bad_Bucket"}}}})
    assert max_age_seconds("12h") == 43200 and max_age_seconds("4w") == 4 * 7 * 86400
    with pytest.raises(ValueError):
        max_age_seconds("1y")


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ({"source": "agents/a", "latest": True}, True),
        ({"source": "agents/a", "key": "agents/a/a-20260101000000.tar.gz"}, True),
        ({"source": "agents/a"}, False),
        ({"source": "agents/a", "latest": True, "key": "k"}, False),
        ({"source": "agents/a", "latest": False}, False),
        ({"source": "a", "latest": True}, False),
        ({"source": "agents/a", "key": "x/../y"}, False),
        ({"source": "agents/a", "key": "agents/a/x.tar.gz", "sha256": "0f" * 32}, True),
        ({"source": "agents/a", "latest": True, "sha256": "0f" * 32}, False),
        ({"source": "agents/a", "key": "agents/a/x.tar.gz", "sha256": "0f" * 31}, False),
    ],
)
def test_restore_key_xor_latest(source: dict[str, Any], ok: bool) -> None:
    body = {"restore": {"fromBackup": {"destination": S3, **source}}}
    if ok:
        assert VestigeMemorySpec.model_validate(body).restore is not None
    else:
        with pytest.raises(ValidationError):
            VestigeMemorySpec.model_validate(body)


def test_examples_are_valid() -> None:
    from vestige_operator.api import VestigeBackupSpec as BackupSpec

    restore = yaml.safe_load((ROOT / "manifests" / "examples" / "restore.yaml").read_text())
    spec = VestigeMemorySpec.model_validate(restore["spec"])
    assert spec.restore is not None and spec.restore.from_backup.latest is True
    now = yaml.safe_load((ROOT / "manifests" / "examples" / "backup-now.yaml").read_text())
    assert now["kind"] == "VestigeBackup" and BackupSpec.model_validate(now["spec"]).memory == "my-agent"
