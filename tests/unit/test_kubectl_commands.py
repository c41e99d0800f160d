"""The plugin's commands write what the operator reads, built with the operator's own functions:
the rotation annotations (read by tokens.rotation_request) and the VestigeBackup (the backup
scheduler's builder). The API is a recording stand-in for the plugin's Kube (the real API server
is in tests/integration/test_kubectl_plugin.py)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vestige_operator import backup, tokens
from vestige_operator.cluster import VESTIGE_BACKUP, VESTIGE_MEMORY, Kind
from vestige_operator.kubectl import commands, render
from vestige_operator.kubectl.cli import build_parser
from vestige_operator.kubectl.kube import PluginError
from vestige_operator.vocabulary import Owner

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
MEMORY = {
    "apiVersion": "vestige.dev/v1alpha1",
    "kind": "VestigeMemory",
    "metadata": {"name": "agent", "namespace": "team", "uid": "u-1", "resourceVersion": "7"},
    "spec": {},
}


class RecordingKube:
    """Answers GETs of the one VestigeMemory; records every write."""

    def __init__(self) -> None:
        self.patches: list[tuple[Kind, str, str, Mapping[str, Any]]] = []
        self.created: list[tuple[Kind, str, Mapping[str, Any]]] = []

    def get(self, resource: Kind, namespace: str, name: str) -> dict[str, Any]:
        assert (resource, namespace, name) == (VESTIGE_MEMORY, "team", "agent")
        return MEMORY

    def merge_patch(self, resource: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> dict:
        self.patches.append((resource, namespace, name, patch))
        return {}

    def create(self, resource: Kind, namespace: str, manifest: Mapping[str, Any]) -> dict:
        self.created.append((resource, namespace, manifest))
        return dict(manifest)


def run(*argv: str, kube: RecordingKube | None = None) -> tuple[RecordingKube, str]:
    kube = kube if kube is not None else RecordingKube()
    out = io.StringIO()
    ctx = commands.Context(
        kube=kube,  # type: ignore[arg-type]
        namespace="team",
        flags=render.KubeFlags(),
        out=out,
        err=io.StringIO(),
        clock=lambda: NOW,
    )
    args = build_parser().parse_args(list(argv))
    assert args.func(ctx, args) == 0
    return kube, out.getvalue()


def written_annotations(kube: RecordingKube) -> dict[str, str]:
    ((resource, namespace, name, patch),) = kube.patches
    assert (resource, namespace, name) == (VESTIGE_MEMORY, "team", "agent")
    return dict(patch["metadata"]["annotations"])


@pytest.mark.parametrize(
    ("flag", "grace"),
    [
        ([], tokens.DEFAULT_GRACE),
        (["--grace", "0"], timedelta(0)),  # after a leak: the old token goes at once
        (["--grace", "1h30m"], timedelta(hours=1, minutes=30)),
        (["--grace", "168h"], tokens.MAX_GRACE),
    ],
)
def test_rotate_token_writes_a_grace_the_operator_reads(flag: list[str], grace: timedelta) -> None:
    kube, out = run("rotate-token", "agent", *flag)
    annotations = written_annotations(kube)
    assert tokens.rotation_request(annotations) == tokens.RotationRequest("2026-12-02T12:00:00Z", grace)
    assert "token rotation requested" in out


@pytest.mark.parametrize(
    ("grace", "message"),
    [("200h", "maximum grace period 168h"), ("+5m", "sign"), ("-1m", "negative"), ("soon", "invalid")],
)
def test_rotate_token_refuses_what_the_operator_would_not_take(grace: str, message: str) -> None:
    with pytest.raises(PluginError, match=message) as exc:
        commands.parse_grace(grace)
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["rotate-token", "agent", "--grace", grace])
    assert usage.value.code == 2


def test_backup_creates_what_the_scheduler_creates() -> None:
    kube, out = run("backup", "agent")
    ((resource, namespace, manifest),) = kube.created
    owner = Owner(name="agent", namespace="team", uid="u-1")
    expected = backup.backup_manifest(owner, backup.scheduled_name("agent", NOW), None)
    assert (resource, namespace) == (VESTIGE_BACKUP, "team")
    assert manifest == expected
    assert manifest["metadata"]["name"] == "agent-20261202120000"
    assert out.strip() == "vestigebackup.vestige.dev/agent-20261202120000 created"


S3 = {
    "s3": {"endpoint": "http://s3.storage.svc:7070", "bucket": "backups", "credentialsSecret": {"name": "c"}}
}
SOURCE = {
    "apiVersion": "vestige.dev/v1alpha1",
    "kind": "VestigeMemory",
    "metadata": {"name": "old", "namespace": "team-a", "uid": "u-9"},
    "spec": {
        "agentId": "research",
        "vestige": {"generation": "v1", "image": "example.org/vestige:2.0.0"},
        "storage": {"size": "20Gi", "reclaimPolicy": "Retain"},
        "backup": {"destination": S3, "continuous": {"enabled": True}},
    },
}


class SourceKube(RecordingKube):
    def get(self, resource: Kind, namespace: str, name: str) -> dict[str, Any]:
        assert (resource, namespace, name) == (VESTIGE_MEMORY, "team-a", "old")
        return SOURCE


def run_restore(*argv: str) -> tuple[RecordingKube, str]:
    return run("restore", *argv, kube=SourceKube())


def test_restore_at_a_moment_creates_a_new_memory_from_the_sources_replica() -> None:
    kube, out = run_restore("new", "--from", "team-a/old", "--at", "2026-12-02T11:00:00Z")
    ((resource, namespace, manifest),) = kube.created
    assert (resource, namespace) == (VESTIGE_MEMORY, "team")
    assert manifest["metadata"] == {"name": "new", "namespace": "team"}
    assert manifest["spec"]["restore"] == {
        "fromBackup": {"destination": S3, "source": "team-a/research", "pointInTime": "2026-12-02T11:00:00Z"}
    }
    # the same Vestige generation and a volume as large; not the source's backup, agent id or policy
    assert manifest["spec"]["vestige"] == SOURCE["spec"]["vestige"]  # type: ignore[index]
    assert manifest["spec"]["storage"] == {"size": "20Gi"}
    assert "new created, restoring team-a/old as of 2026-12-02T11:00:00Z" in out


def test_restore_of_a_snapshot_defaults_to_the_latest() -> None:
    kube, _ = run_restore("new", "--from", "team-a/old")
    assert kube.created[0][2]["spec"]["restore"]["fromBackup"]["latest"] is True
    kube, _ = run_restore("new", "--from", "team-a/old", "--snapshot", "p/team-a/research/x.tar.gz")
    assert kube.created[0][2]["spec"]["restore"]["fromBackup"]["key"] == "p/team-a/research/x.tar.gz"


def test_restore_refuses_what_the_operator_would_not_take() -> None:
    plain = {**SOURCE, "spec": {**SOURCE["spec"], "backup": {"destination": S3}}}  # type: ignore[dict-item]
    with pytest.raises(PluginError, match="no continuous backup"):
        commands.restore_manifest("new", "team", plain, at="latest", key=None)
    with pytest.raises(PluginError, match=r"no spec\.backup\.destination"):
        commands.restore_manifest("new", "team", {**SOURCE, "spec": {}}, at=None, key=None)
    with pytest.raises(PluginError, match="would not be accepted"):
        commands.restore_manifest("new", "team", SOURCE, at="yesterday", key=None)
    with pytest.raises(PluginError, match="would not be accepted"):
        commands.restore_manifest("new", "team", SOURCE, at=None, key="../other/x.tar.gz")


class PodsKube(RecordingKube):
    """Lists pods as the API server does: every ``key=value`` of the selector must match."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        super().__init__()
        self.pods = pods

    def list(
        self, resource: Kind, namespace: str, label_selector: str = "", **_: Any
    ) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        return [
            p
            for p in self.pods
            if wanted.items() <= p["metadata"]["labels"].items() and p["metadata"]["namespace"] == namespace
        ]


def _pod(name: str, labels: dict[str, str], created: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team", "labels": labels, "creationTimestamp": created},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_the_agents_pod_is_never_one_of_its_backup_jobs_pods() -> None:
    """A backup Job's pod carries the memory's name too, and may be newer and Ready: logs and
    port-forwards must still go to the memory's own pod (its Deployment's selector)."""
    from vestige_operator.vocabulary import COMPONENT_BACKUP, labels, selector_labels

    own = _pod(
        "agent-5d9f-abcde", {**selector_labels("agent"), "pod-template-hash": "5d9f"}, "2026-12-02T10:00:00Z"
    )
    job = _pod("agent-backup-1-xyz", labels("agent", COMPONENT_BACKUP), "2026-12-02T11:59:00Z")
    other = _pod("agent2-77-q", selector_labels("agent2"), "2026-12-02T11:00:00Z")
    kube = PodsKube([own, job, other])
    ctx = commands.Context(
        kube=kube,  # type: ignore[arg-type]
        namespace="team",
        flags=render.KubeFlags(),
        out=io.StringIO(),
        err=io.StringIO(),
        clock=lambda: NOW,
    )
    assert [p["metadata"]["name"] for p in commands.agent_pods(ctx, "agent")] == ["agent-5d9f-abcde"]
    assert commands.running_pod(ctx, MEMORY)["metadata"]["name"] == "agent-5d9f-abcde"
