"""Pure backup pieces: schedule, retention, Job / init-container rendering, results, status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from vestige_operator import backup
from vestige_operator.api import BackupRetention, VestigeBackupGrantSpec, VestigeMemorySpec
from vestige_operator.children import render_deployment
from vestige_operator.status import Observation, compute_status
from vestige_operator.times import format_time
from vestige_operator.vocabulary import (
    ANNOTATION_PRUNES,
    ANNOTATION_SCHEDULED_AT,
    LABEL_BACKUP,
    Images,
    Owner,
)

OWNER = Owner(name="agent", namespace="agents", uid="uid-1")
IMAGES = Images(vestige="vestige:3", bridge="bridge:1", litestream="example.org/litestream:0.5.18")
S3 = {
    "s3": {
        "endpoint": "http://s3.storage.svc:7070",
        "bucket": "backups",
        "credentialsSecret": {"name": "s3-creds"},
        "caSecret": {"name": "s3-ca"},
        "forcePathStyle": True,
    }
}
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def _spec(**extra: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(
        {"backup": {"schedule": "* * * * *", "retention": {"keepLast": 2}, "destination": S3}, **extra}
    )


def _vbak(
    name: str, phase: str | None, when: datetime, key: str | None = None, message: str = ""
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if phase in ("Completed", "Failed"):
        status["completedAt"] = format_time(when)
    if key:
        status["key"] = key
    if message:
        status["message"] = message
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": format_time(when),
            "annotations": {ANNOTATION_SCHEDULED_AT: format_time(when)},
        },
        "spec": {"memory": "agent"},
        "status": status,
    }


# -- schedule -------------------------------------------------------------------------------------


def test_due_run_takes_the_newest_missed_time_once() -> None:
    every5 = "*/5 * * * *"
    assert backup.due_run(every5, T0, T0 + timedelta(minutes=4)) is None
    assert backup.due_run(every5, T0, T0 + timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    # The operator was down for 32 minutes: one run, for 10:30, not six.
    assert backup.due_run(every5, T0, T0 + timedelta(minutes=32)) == T0 + timedelta(minutes=30)
    assert backup.due_run(every5, T0 + timedelta(minutes=30), T0 + timedelta(minutes=34)) is None


def test_scheduled_names_fit_a_job_name() -> None:
    name = backup.scheduled_name("a" * 46, T0)
    assert name == "a" * 46 + "-20261202100000" and len(name) == 61
    assert backup.job_name(name) == name
    long = backup.job_name("b" * 70)
    assert len(long) == 63 and long != backup.job_name("b" * 71)
    assert backup.last_scheduled(
        [_vbak("x", None, T0), _vbak("y", None, T0 + timedelta(minutes=1))]
    ) == T0 + timedelta(minutes=1)


# -- retention --------------------------------------------------------------------------------------


def test_keep_last_two_of_four() -> None:
    objs = [_vbak(f"agent-{i}", "Completed", T0 + timedelta(minutes=i), f"k{i}") for i in range(4)]
    plan = backup.retention_plan(objs, BackupRetention(keep_last=2), T0 + timedelta(minutes=5))
    assert sorted(o["metadata"]["name"] for o in plan.prune) == ["agent-0", "agent-1"]
    assert plan.delete_failed == ()


def test_max_age_never_removes_the_newest_completed() -> None:
    objs = [_vbak(f"agent-{i}", "Completed", T0 + timedelta(days=i), f"k{i}") for i in range(3)]
    plan = backup.retention_plan(objs, BackupRetention(max_age="1d"), T0 + timedelta(days=30))
    assert sorted(o["metadata"]["name"] for o in plan.prune) == ["agent-0", "agent-1"]
    assert backup.retention_plan(objs, BackupRetention(), T0 + timedelta(days=30)).prune == ()


def test_failed_history_is_bounded_and_running_is_never_touched() -> None:
    objs = [_vbak(f"f-{i}", "Failed", T0 + timedelta(minutes=i)) for i in range(5)]
    objs.append(_vbak("running", "Running", T0))
    plan = backup.retention_plan(objs, BackupRetention(keep_last=1), T0 + timedelta(hours=1))
    assert sorted(o["metadata"]["name"] for o in plan.delete_failed) == ["f-0", "f-1"]
    assert [o["metadata"]["name"] for o in backup.active(objs)] == ["running"]


# -- status -----------------------------------------------------------------------------------------


def test_summary_and_condition() -> None:
    ok = _vbak("agent-1", "Completed", T0, "agents/agent/agent-1.tar.gz")
    bad = _vbak("agent-2", "Failed", T0 + timedelta(minutes=1), message="bucket does not exist")
    assert backup.summarize([]) == backup.BackupSummary(None, None)
    summary = backup.summarize([ok, bad])
    assert summary.status == {
        "lastSuccessful": {
            "time": "2026-12-02T10:00:00Z",
            "key": "agents/agent/agent-1.tar.gz",
            "name": "agent-1",
        }
    }
    assert summary.condition == (False, "BackupFailed", "VestigeBackup agent-2 failed: bucket does not exist")
    assert backup.summarize([ok]).condition == (True, "Completed", "VestigeBackup agent-1 completed")
    status = compute_status(
        OWNER, _spec(), Observation(generation=1, backup=summary), None, "2026-12-02T10:02:00Z"
    )
    cond = {c["type"]: c for c in status["conditions"]}["LastBackupSucceeded"]
    assert cond["status"] == "False" and cond["reason"] == "BackupFailed"
    assert status["backup"]["lastSuccessful"]["key"] == "agents/agent/agent-1.tar.gz"
    plain = compute_status(
        OWNER, VestigeMemorySpec(), Observation(generation=1), None, "2026-12-02T10:02:00Z"
    )
    assert "LastBackupSucceeded" not in {c["type"] for c in plain["conditions"]} and "backup" not in plain


def test_restore_refused_stalls() -> None:
    spec = VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": S3, "source": "a/b", "latest": True}}}
    )
    status = compute_status(
        OWNER,
        spec,
        Observation(generation=1, restore_refused="already holds a store"),
        None,
        "2026-12-02T10:00:00Z",
    )
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Stalled"]["status"] == "True" and conds["Stalled"]["reason"] == "RestoreRefused"
    assert conds["Ready"]["status"] == "False"


# -- rendering --------------------------------------------------------------------------------------


def _restricted(pod: dict[str, Any]) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def _secret_refs(container: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env", [])
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }


def test_backup_job_runs_next_to_the_agent_with_the_credentials() -> None:
    job = backup.render_backup_job("agent-20261202100000", "vbak-uid", OWNER, _spec(), IMAGES)
    assert job["metadata"]["name"] == "agent-20261202100000"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "VestigeBackup"
    assert job["metadata"]["labels"][LABEL_BACKUP] == "agent-20261202100000"
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    _restricted(pod)
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "agent"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "agent-data"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "vestige_backup"] and container["image"] == "bridge:1"
    args = container["args"]
    assert args[:3] == ["backup", "--data-dir", "/data/vestige"]
    assert args[args.index("--key") + 1] == "agents/agent/agent-20261202100000.tar.gz"
    assert (
        "--force-path-style" in args and args[args.index("--ca-file") + 1] == "/etc/vestige-backup/ca/ca.crt"
    )
    assert _secret_refs(container) == {"s3-creds"}
    assert {e["name"] for e in container["env"]} == {"HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # A hostile prefix stays one argument (no shell, no YAML text).
    spec = _spec()
    assert spec.backup is not None
    spec.backup.destination.s3.prefix = "x y\n'z: {{a}}/"
    job = backup.render_backup_job("b", "u", OWNER, spec, IMAGES)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--key") + 1] == "x y\n'z: {{a}}/agents/agent/b.tar.gz"


def test_every_key_is_derived_from_namespace_and_agent_id() -> None:
    """A user prefix only goes in front: two namespaces with the same memory name and prefix, or
    two agents, never share a key; the run records whose snapshot it is."""
    spec = _spec()
    assert spec.backup is not None
    spec.backup.destination.s3.prefix = "shared/"
    mine = backup.render_backup_job("b", "u", OWNER, spec, IMAGES)
    theirs = backup.render_backup_job("b", "u", Owner("agent", "other", "uid-2"), spec, IMAGES)
    renamed = spec.model_copy(update={"agent_id": "agent-2"})
    third = backup.render_backup_job("b", "u", OWNER, renamed, IMAGES)
    keys = []
    for job in (mine, theirs, third):
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        keys.append(args[args.index("--key") + 1])
    assert keys == [
        "shared/agents/agent/b.tar.gz",
        "shared/other/agent/b.tar.gz",
        "shared/agents/agent-2/b.tar.gz",
    ]
    args = mine["spec"]["template"]["spec"]["containers"][0]["args"]
    metadata = [args[i + 1] for i, a in enumerate(args) if a == "--metadata"]
    assert "namespace=agents" in metadata and "agent-id=agent" in metadata


def test_restore_of_another_namespace_or_outside_the_key_space_is_refused() -> None:
    def spec(source: str, **which: object) -> VestigeMemorySpec:
        return VestigeMemorySpec.model_validate(
            {"restore": {"fromBackup": {"destination": S3, "source": source, **which}}}
        )

    assert backup.restore_problem(OWNER, spec("agents/old", latest=True)) is None
    assert backup.restore_problem(OWNER, spec("agents/old", key="agents/old/x.tar.gz")) is None
    other_ns = backup.restore_problem(OWNER, spec("other/old", latest=True))
    assert other_ns is not None and "another namespace" in other_ns
    outside = backup.restore_problem(OWNER, spec("agents/old", key="agents/victim/x.tar.gz"))
    assert outside is not None and "key space agents/old/" in outside
    assert backup.restore_problem(OWNER, VestigeMemorySpec()) is None


def test_a_grant_in_the_source_namespace_allows_exactly_what_it_names() -> None:
    def spec(source: str, **which: object) -> VestigeMemorySpec:
        return VestigeMemorySpec.model_validate(
            {"restore": {"fromBackup": {"destination": S3, "source": source, **which}}}
        )

    def grant(namespaces: list[str], agents: list[str]) -> VestigeBackupGrantSpec:
        return VestigeBackupGrantSpec.model_validate(
            {"from": [{"namespace": n} for n in namespaces], "to": [{"agentId": a} for a in agents]}
        )

    wanted = spec("other/old", latest=True)
    assert OWNER.namespace == "agents"
    assert backup.restore_problem(OWNER, wanted, [grant(["agents"], ["old"])]) is None
    assert (
        backup.restore_problem(OWNER, wanted, [grant(["x"], ["y"]), grant(["agents", "b"], ["z", "old"])])
        is None
    )
    for grants in ([], [grant(["elsewhere"], ["old"])], [grant(["agents"], ["other-agent"])]):
        refused = backup.restore_problem(OWNER, wanted, grants)
        assert refused is not None and "VestigeBackupGrant in namespace other" in refused, grants
    # A grant does not widen the key space: a key outside the agent's space is still refused.
    outside = spec("other/old", key="other/victim/x.tar.gz")
    assert "key space other/old/" in (
        backup.restore_problem(OWNER, outside, [grant(["agents"], ["old"])]) or ""
    )
    with pytest.raises(ValidationError):
        VestigeBackupGrantSpec.model_validate({"from": [], "to": [{"agentId": "a"}]})
    with pytest.raises(ValidationError):
        VestigeBackupGrantSpec.model_validate({"from": [{"namespace": "*"}], "to": [{"agentId": "a"}]})


def test_suspended_memory_backs_up_without_pod_affinity() -> None:
    job = backup.render_backup_job("b", "u", OWNER, _spec(suspend=True), IMAGES)
    assert "affinity" not in job["spec"]["template"]["spec"]


def test_prune_job_deletes_keys_and_mounts_no_volume() -> None:
    objs = [_vbak("agent-0", "Completed", T0, "agents/agent/agent-0.tar.gz")]
    job = backup.render_prune_job(OWNER, _spec(), IMAGES, objs)
    assert json.loads(job["metadata"]["annotations"][ANNOTATION_PRUNES]) == ["agent-0"]
    pod = job["spec"]["template"]["spec"]
    _restricted(pod)
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert pod["containers"][0]["args"][:5] == [
        "prune",
        "--key",
        "agents/agent/agent-0.tar.gz",
        "--prefix",
        "agents/agent/",
    ]


def test_retention_deletes_only_keys_inside_the_memorys_key_space() -> None:
    objs = [
        _vbak("agent-0", "Completed", T0, "agents/agent/agent-0.tar.gz"),
        _vbak("agent-1", "Completed", T0, "agents/victim/agent-1.tar.gz"),
        _vbak("agent-2", "Completed", T0, "agents/agent/../victim/x.tar.gz"),
        _vbak("agent-3", "Failed", T0),
    ]
    assert backup.prunable_keys("agents/agent/", objs) == ["agents/agent/agent-0.tar.gz"]
    args = backup.render_prune_job(OWNER, _spec(), IMAGES, objs)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--key"] == ["agents/agent/agent-0.tar.gz"]


def test_restore_init_container_has_the_only_credentials_of_the_agent_pod() -> None:
    spec = VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": S3, "source": "old/agent", "latest": True}}}
    )
    pod = render_deployment(OWNER, spec, IMAGES, "hash")["spec"]["template"]["spec"]
    _restricted(pod)
    (init,) = pod["initContainers"]
    assert init["name"] == "restore"
    assert init["args"][:10] == [
        "restore",
        "--data-dir",
        "/data/vestige",
        "--latest",
        "--prefix",
        "old/agent/",
        "--expect-namespace",
        "old",
        "--expect-agent-id",
        "agent",
    ]
    assert _secret_refs(init) == {"s3-creds"}
    for container in pod["containers"]:  # vestige and bridge never see the storage credentials
        assert "s3-creds" not in _secret_refs(container)
        assert not any(e["name"].startswith("AWS_") for e in container["env"])
    names = {v["name"] for v in pod["volumes"]}
    assert {"restore-tmp", "backup-ca"} <= names
    with_key = VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": S3, "source": "old/agent", "key": "old/agent/x.tar.gz"}}}
    )
    init = render_deployment(OWNER, with_key, IMAGES, "h")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][3:5] == ["--key", "old/agent/x.tar.gz"]
    assert "--expect-sha256" not in init["args"]
    digest = "ab" * 32
    pinned = VestigeMemorySpec.model_validate(
        {
            "restore": {
                "fromBackup": {**with_key.restore.from_backup.model_dump(by_alias=True), "sha256": digest}
            }
        }  # type: ignore[union-attr]
    )
    init = render_deployment(OWNER, pinned, IMAGES, "h")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][3:7] == ["--key", "old/agent/x.tar.gz", "--expect-sha256", digest]
    for bad in ({"latest": True, "sha256": digest}, {"key": "old/agent/x.tar.gz", "sha256": "AB" * 32}):
        with pytest.raises(ValidationError):
            VestigeMemorySpec.model_validate(
                {"restore": {"fromBackup": {"destination": S3, "source": "old/agent", **bad}}}
            )
    assert (
        "initContainers"
        not in render_deployment(OWNER, VestigeMemorySpec(), IMAGES, "h")["spec"]["template"]["spec"]
    )


# -- results ----------------------------------------------------------------------------------------


def _job_status(kind: str) -> dict[str, Any]:
    return {"status": {"conditions": [{"type": kind, "status": "True", "reason": "X", "message": "m"}]}}


def _pod(message: str, exit_code: int = 0, init: bool = False, name: str = "backup") -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    term = {"exitCode": exit_code, "message": message}
    return {"status": {key: [{"name": name, "state": {"terminated": term}}]}}


def test_job_outcome() -> None:
    ok = json.dumps({"ok": True, "key": "k", "size": 10, "sha256": "ab"})
    assert backup.job_outcome({"status": {}}, [], "backup") is None
    outcome = backup.job_outcome(_job_status("Complete"), [_pod(ok)], "backup")
    assert outcome is not None and outcome.succeeded and outcome.result["sha256"] == "ab"
    failed = backup.job_outcome(
        _job_status("Failed"), [_pod('{"ok":false,"message":"bucket does not exist"}', 1)], "backup"
    )
    assert failed is not None and not failed.succeeded and failed.message == "bucket does not exist"
    silent = backup.job_outcome(_job_status("Failed"), [], "backup")
    assert silent is not None and "no result" in silent.message
    # A log tail (FallbackToLogsOnError) before the JSON line is skipped.
    assert backup.parse_result("Traceback...\n" + ok) == json.loads(ok)


def test_restore_failure_from_the_agent_pod() -> None:
    """Any exit but 0 and the refusal's, of either restore init container, now or last time."""
    runner = json.dumps({"ok": False, "message": "could not reach the bucket: EndpointConnectionError"})
    assert backup.restore_failure([_pod(runner, 1, init=True, name="restore")]) == (
        "init container restore exited with 1: could not reach the bucket: EndpointConnectionError"
    )
    log = "time=... level=INFO msg=restoring\nError: cannot open store: s3: dial tcp: i/o timeout\n"
    failed = backup.restore_failure([_pod(log, 1, init=True, name="restore-replica")])
    assert (
        failed
        == "init container restore-replica exited with 1: Error: cannot open store: s3: dial tcp: i/o timeout"
    )
    refused = json.dumps({"ok": False, "refused": True, "message": "holds a store"})
    assert backup.restore_failure([_pod(refused, 3, init=True, name="restore")]) is None  # Stalled instead
    assert backup.restore_failure([_pod("", 0, init=True, name="restore-replica")]) is None
    assert (
        backup.restore_failure([_pod("", 1, init=True, name="litestream")]) is None
    )  # the sidecar: not a restore
    retrying = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": "restore-replica",
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 2}},
                }
            ]
        }
    }
    assert backup.restore_failure([retrying]) == "init container restore-replica exited with 2: no message"
    assert len(backup.restore_failure([_pod("x" * 5000, 1, init=True, name="restore")]) or "") < 500


def test_restore_refusal_from_the_agent_pod() -> None:
    msg = json.dumps({"ok": False, "refused": True, "message": "already holds a store"})
    assert backup.restore_refusal([_pod(msg, 3, init=True, name="restore")]) == "already holds a store"
    assert backup.restore_refusal([_pod(msg, 1, init=True, name="restore")]) is None


def test_a_runner_that_cannot_start_fails_now() -> None:
    waiting = {
        "status": {
            "containerStatuses": [
                {
                    "name": "backup",
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "s3" not found',
                        }
                    },
                }
            ]
        }
    }
    assert (
        backup.stuck_reason([waiting], "backup") == 'the backup container cannot start: secret "s3" not found'
    )
    pulling = {
        "status": {
            "containerStatuses": [{"name": "backup", "state": {"waiting": {"reason": "ErrImagePull"}}}]
        }
    }
    assert backup.stuck_reason([pulling], "backup") is None  # may still succeed
    assert backup.stuck_reason([], "backup") is None
