"""Continuous backup (Litestream) as the operator renders it: the API's bounds, the sidecar, the
point-in-time restore's init containers, the key space and the credentials' reach."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from vestige_operator import backup
from vestige_operator.api import VestigeMemorySpec, duration_seconds
from vestige_operator.children import render_deployment
from vestige_operator.config import DEFAULT_LITESTREAM_IMAGE, OperatorConfig
from vestige_operator.vocabulary import Images, Owner

from tests.litestream.build import LITESTREAM_VERSION
from tests.litestream.replica import Settings

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner(name="agent", namespace="team-a", uid="uid-1")
IMAGES = Images(vestige="vestige:3", bridge="bridge:1", litestream="example.org/litestream:0.5.18")
S3 = {
    "s3": {
        "endpoint": "http://s3.storage.svc:7070",
        "bucket": "backups",
        "prefix": "platform/",
        "credentialsSecret": {"name": "s3-creds"},
        "forcePathStyle": True,
    }
}
CONTINUOUS = {"enabled": True, "syncInterval": "1s", "snapshotInterval": "1h", "retention": "48h"}


def _spec(**extra: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(
        {"backup": {"destination": S3, "continuous": CONTINUOUS}, **extra}
    )


def _pod(spec: VestigeMemorySpec, owner: Owner = OWNER) -> dict[str, Any]:
    return render_deployment(owner, spec, IMAGES, "hash")["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<ref>") for e in container["env"]}


def _secret_refs(container: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env", [])
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }


def _restricted(container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000


# -- API --------------------------------------------------------------------------------------------


def test_defaults_and_bounds() -> None:
    spec = VestigeMemorySpec.model_validate({"backup": {"destination": S3, "continuous": {"enabled": True}}})
    continuous = spec.backup.continuous  # type: ignore[union-attr]
    assert continuous is not None
    assert (continuous.sync_interval, continuous.snapshot_interval, continuous.retention) == (
        "500ms",
        "6h",
        "24h",
    )
    for bad in (
        {"syncInterval": "100ms"},
        {"syncInterval": "2h"},
        {"syncInterval": "0s"},
        {"syncInterval": "1d"},
        {"retention": "30m"},
        {"retention": "2161h"},
        {"snapshotInterval": "5m"},
        {"snapshotInterval": "48h", "retention": "24h"},
        {"bogus": True},
    ):
        with pytest.raises(ValidationError):
            VestigeMemorySpec.model_validate(
                {"backup": {"destination": S3, "continuous": {"enabled": True, **bad}}}
            )
    assert duration_seconds("250ms") == 0.25 and duration_seconds("90m") == 5400


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ({"pointInTime": "latest"}, True),
        ({"pointInTime": "2026-12-03T17:41:05Z"}, True),
        ({"pointInTime": "2026-12-03T17:41:05.123+01:00"}, True),
        ({"pointInTime": "2026-13-03T17:41:05Z"}, False),
        ({"pointInTime": "2026-12-03 17:41:05"}, False),
        ({"pointInTime": "2026-12-03T17:41:05"}, False),
        ({"pointInTime": "yesterday"}, False),
        ({"pointInTime": "latest", "latest": True}, False),
        ({"pointInTime": "latest", "key": "team-a/old/x.tar.gz"}, False),
        ({"pointInTime": "latest", "sha256": "0f" * 32}, False),
    ],
)
def test_point_in_time_is_one_of_the_three_sources(source: dict[str, Any], ok: bool) -> None:
    body = {"restore": {"fromBackup": {"destination": S3, "source": "team-a/old", **source}}}
    if ok:
        assert VestigeMemorySpec.model_validate(body).restore is not None
    else:
        with pytest.raises(ValidationError):
            VestigeMemorySpec.model_validate(body)


def test_the_default_image_is_the_pinned_build() -> None:
    assert DEFAULT_LITESTREAM_IMAGE.endswith(f":{LITESTREAM_VERSION.removeprefix('v')}")
    assert OperatorConfig.from_env({}).default_litestream_image == DEFAULT_LITESTREAM_IMAGE
    assert OperatorConfig.from_env({"VESTIGE_LITESTREAM_IMAGE": "r/l:1"}).default_litestream_image == "r/l:1"


# -- the sidecar ------------------------------------------------------------------------------------


def test_the_sidecar_replicates_into_the_memorys_own_key_space() -> None:
    pod = _pod(_spec())
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "litestream" and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == IMAGES.litestream and sidecar["args"] == ["replicate"]
    _restricted(sidecar)
    env = _env(sidecar)
    assert env["LITESTREAM_PATH"] == "platform/team-a/agent/litestream"
    assert env["LITESTREAM_PATH"].startswith(backup.key_space(_spec().backup.destination, "team-a", "agent"))  # type: ignore[union-attr]
    assert env["LITESTREAM_DB"] == "/data/vestige/vestige.db"
    assert (env["LITESTREAM_BUCKET"], env["LITESTREAM_ENDPOINT"]) == ("backups", "http://s3.storage.svc:7070")
    assert env["LITESTREAM_FORCE_PATH_STYLE"] == "true"
    assert (env["LITESTREAM_SYNC_INTERVAL"], env["LITESTREAM_MONITOR_INTERVAL"]) == ("1s", "500ms")
    assert (env["LITESTREAM_SNAPSHOT_INTERVAL"], env["LITESTREAM_RETENTION"]) == ("1h", "48h")
    assert env["LITESTREAM_SOCKET"] == "/run/litestream/litestream.sock"
    assert env["LITESTREAM_SOCKET_ENABLED"] == "true"
    assert {"name": "data", "mountPath": "/data"} in sidecar["volumeMounts"]
    assert "readinessProbe" not in sidecar  # a lagging replica never takes the memory out of its Service
    assert {"name": "litestream-run", "emptyDir": {}} in pod["volumes"]
    # the agent id, not the memory's name, selects the key space
    other = _pod(_spec(agentId="research"))
    assert _env(other["initContainers"][0])["LITESTREAM_PATH"] == "platform/team-a/research/litestream"


def test_credentials_only_in_the_litestream_containers() -> None:
    pod = _pod(_spec())
    assert _secret_refs(pod["initContainers"][0]) == {"s3-creds"}
    for container in pod["containers"]:  # vestige and bridge never see the storage credentials
        assert "s3-creds" not in _secret_refs(container)
        assert not any(e["name"].startswith(("AWS_", "LITESTREAM_")) for e in container["env"])
    assert pod.get("shareProcessNamespace") is not True  # nobody reads the sidecar's environment


def test_monitor_interval_is_half_the_sync_interval_within_bounds() -> None:
    assert [backup.monitor_interval(v) for v in ("250ms", "500ms", "1s", "3s", "1h")] == [
        "250ms",
        "250ms",
        "500ms",
        "1000ms",
        "1000ms",
    ]


def test_disabled_or_absent_means_no_sidecar() -> None:
    off = VestigeMemorySpec.model_validate({"backup": {"destination": S3, "continuous": {"enabled": False}}})
    for spec in (off, VestigeMemorySpec(), VestigeMemorySpec.model_validate({"backup": {"destination": S3}})):
        pod = _pod(spec)
        assert "initContainers" not in pod
        assert "litestream-run" not in {v["name"] for v in pod["volumes"]}


def test_each_private_ca_reaches_its_litestream_container() -> None:
    source_ca = {"s3": {**S3["s3"], "caSecret": {"name": "old-ca"}}}
    own_ca = {"s3": {**S3["s3"], "caSecret": {"name": "own-ca", "key": "bundle.pem"}}}
    restore = {"fromBackup": {"destination": source_ca, "source": "team-a/old", "pointInTime": "latest"}}
    spec = VestigeMemorySpec.model_validate(
        {"backup": {"destination": own_ca, "continuous": {"enabled": True}}, "restore": restore}
    )
    pod = _pod(spec)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])  # no name twice
    assert volumes["backup-ca"]["secret"]["secretName"] == "old-ca"
    assert volumes["litestream-ca"]["secret"]["secretName"] == "own-ca"
    _, fill, sidecar = pod["initContainers"]
    assert _env(fill)["SSL_CERT_DIR"] == "/etc/vestige-backup/ca"
    assert _env(sidecar)["SSL_CERT_DIR"] == "/etc/litestream/ca"
    assert "AWS_CA_BUNDLE" not in _env(fill) | _env(sidecar)  # Litestream 0.5.18 fails to start with it
    assert {m["name"] for m in sidecar["volumeMounts"]} == {"data", "litestream-run", "litestream-ca"}


def test_the_variables_are_the_configuration_files() -> None:
    """The operator's mapping, the tests' Settings and images/litestream/litestream.yml name the
    same variables."""
    config = (ROOT / "images" / "litestream" / "litestream.yml").read_text()
    in_config = set(re.findall(r"\$\{(LITESTREAM_[A-Z0-9_]+)\}", config))
    rendered = {e["name"] for e in backup.litestream_env(_spec().backup.destination, "p", None)}  # type: ignore[union-attr]
    assert {n for n in rendered if n.startswith("LITESTREAM_")} == in_config
    assert set(Settings(bucket="b", path="p").env(Path("/x"))) == in_config


# -- point-in-time restore --------------------------------------------------------------------------


def _restore_spec(point: str, source: str = "team-a/old", **extra: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": S3, "source": source, "pointInTime": point}}, **extra}
    )


def test_a_point_in_time_restore_checks_then_fills_the_volume_before_vestige() -> None:
    spec = _restore_spec("2026-12-03T17:41:05Z", backup={"destination": S3, "continuous": {"enabled": True}})
    pod = _pod(spec)
    check, fill, sidecar = pod["initContainers"]
    assert [c["name"] for c in (check, fill, sidecar)] == ["restore", "restore-replica", "litestream"]
    for container in (check, fill, sidecar):
        _restricted(container)
    assert check["image"] == "bridge:1" and check["command"] == ["python", "-m", "vestige_backup"]
    args = check["args"]
    assert args[0] == "restore-check"
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--prefix"] == "platform/team-a/old/"
    assert pairs["--replica"] == "platform/team-a/old/litestream"
    assert pairs["--point-in-time"] == "2026-12-03T17:41:05Z"
    assert (pairs["--expect-namespace"], pairs["--expect-agent-id"]) == ("team-a", "old")
    assert fill["image"] == IMAGES.litestream
    assert fill["args"] == [
        "restore",
        "-if-db-not-exists",
        "-integrity-check",
        "full",
        "-timestamp",
        "2026-12-03T17:41:05Z",
        "/data/vestige/vestige.db",
    ]
    assert "-if-replica-exists" not in fill["args"]  # a refused time would exit 0 with no database
    assert "restartPolicy" not in fill  # a plain init container: Vestige waits for it
    # the restore reads the SOURCE's replica; the sidecar writes the memory's own
    assert _env(fill)["LITESTREAM_PATH"] == "platform/team-a/old/litestream"
    assert _env(sidecar)["LITESTREAM_PATH"] == "platform/team-a/agent/litestream"
    for container in (check, fill, sidecar):
        assert _secret_refs(container) == {"s3-creds"}
    for container in pod["containers"]:
        assert _secret_refs(container).isdisjoint({"s3-creds"})


def test_latest_restores_without_a_timestamp() -> None:
    fill = _pod(_restore_spec("latest"))["initContainers"][1]
    assert "-timestamp" not in fill["args"] and fill["args"][-1] == "/data/vestige/vestige.db"
    assert _env(fill)["LITESTREAM_SYNC_INTERVAL"] == ""  # a restore is not a sidecar


def test_another_namespaces_replica_is_refused_before_any_pod() -> None:
    assert backup.restore_problem(OWNER, _restore_spec("latest", source="team-b/old")) is not None
    assert backup.restore_problem(OWNER, _restore_spec("latest", source="team-a/old")) is None


def test_the_snapshot_restore_is_unchanged() -> None:
    spec = VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": S3, "source": "team-a/old", "latest": True}}}
    )
    (init,) = _pod(spec)["initContainers"]
    assert init["name"] == "restore" and init["args"][:4] == [
        "restore",
        "--data-dir",
        "/data/vestige",
        "--latest",
    ]


def test_the_bridge_reads_the_lag_from_the_sidecars_socket() -> None:
    pod = _pod(_spec())
    bridge = next(c for c in pod["containers"] if c["name"] == "bridge")
    assert _env(bridge)["VESTIGE_REPLICATION_SOCKET"] == "/run/litestream/litestream.sock"
    assert {"name": "litestream-run", "mountPath": "/run/litestream", "readOnly": True} in bridge[
        "volumeMounts"
    ]
    vestige = next(c for c in pod["containers"] if c["name"] == "vestige")
    assert "litestream-run" not in {m["name"] for m in vestige["volumeMounts"]}
    plain = next(c for c in _pod(VestigeMemorySpec())["containers"] if c["name"] == "bridge")
    assert "VESTIGE_REPLICATION_SOCKET" not in _env(plain)


def test_the_socket_answer_is_parsed() -> None:
    from vestige_bridge import replication

    body = {
        "databases": [{"path": "/data/vestige/vestige.db", "last_sync_at": "2026-12-03T17:41:05.123456789Z"}]
    }
    parsed = replication.parse_list(body)
    assert parsed is not None and parsed.isoformat() == "2026-12-03T17:41:05.123456+00:00"
    assert replication.parse_list({"databases": [{"path": "x"}]}) is None
    assert replication.parse_list({"databases": []}) is None
    assert replication.parse_list(["bogus"]) is None


def test_the_default_images_annotation_records_the_sidecars_image() -> None:
    """Paced rollouts compare the defaults a Deployment was rendered with: the sidecar's image is
    one of them; an annotation written before it existed still decodes (the upgrade stays paced)."""
    assert Images.decode(IMAGES.encode()) == IMAGES
    old = Images.decode('{"bridge":"bridge:1","vestige":"vestige:3"}')
    assert old is not None and (old.vestige, old.bridge) == ("vestige:3", "bridge:1")
    # a change of the litestream default alone changes no pod of a memory without the sidecar
    other = Images(vestige=IMAGES.vestige, bridge=IMAGES.bridge, litestream="example.org/litestream:9")
    plain = VestigeMemorySpec()
    assert _pod(plain) == render_deployment(OWNER, plain, other, "hash")["spec"]["template"]["spec"]
    assert _pod(_spec()) != render_deployment(OWNER, _spec(), other, "hash")["spec"]["template"]["spec"]
