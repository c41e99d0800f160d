"""The backup controller against the in-memory port: it never reads a result from, deletes or
adopts a Job or VestigeBackup it did not create, and a taken name never makes a run skip
silently (issue 21). The caches are rebuilt from the fake API server before every pass, as the
watches would have them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from vestige_operator import backup as b
from vestige_operator.backup_controller import BackupController, trim_backup
from vestige_operator.vocabulary import (
    ANNOTATION_SCHEDULED_AT,
    COMPONENT_BACKUP,
    LABEL_BACKUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MEMORY,
    MANAGED_BY,
    Images,
    Owner,
)

from tests.unit.fake_port import FakePort

NS = "team-a"
T0 = datetime(2026, 12, 2, 10, 0, 30, tzinfo=UTC)
IMAGES = Images(vestige="vestige:3", bridge="bridge:1", litestream="example.org/litestream:0.5.18")
S3 = {"s3": {"endpoint": "http://s3:7070", "bucket": "backups", "credentialsSecret": {"name": "creds"}}}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def world(schedule: str | None = "0 * * * *") -> tuple[FakePort, BackupController, Clock, Owner]:
    port = FakePort()
    backup: dict[str, Any] = {"destination": S3, "retention": {"keepLast": 1}}
    if schedule:
        backup["schedule"] = schedule
    body = port.put(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeMemory",
            "metadata": {"name": "agent", "namespace": NS, "creationTimestamp": "2026-12-02T09:00:00Z"},
            "spec": {"backup": backup},
        }
    )
    clock = Clock()
    controller = BackupController(port, IMAGES, clock=clock)  # type: ignore[arg-type]
    return port, controller, clock, Owner("agent", NS, body["metadata"]["uid"])


def refresh(port: FakePort, controller: BackupController) -> None:
    backups: dict[Any, list[Any]] = defaultdict(list)
    jobs: dict[Any, list[Any]] = defaultdict(list)
    for obj in port.of_kind("VestigeBackup"):
        backups[(NS, obj["spec"]["memory"])].append(trim_backup(obj))
    for job in port.of_kind("Job"):
        labels = job["metadata"].get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and LABEL_MEMORY in labels:
            jobs[(NS, labels[LABEL_MEMORY])].append(job)
    owners = {(NS, o["metadata"]["name"]): [o] for o in port.of_kind("VestigeMemory")}
    controller.attach(owners=owners, backups=dict(backups), jobs=dict(jobs), deployments={})


async def run(port: FakePort, controller: BackupController) -> None:
    refresh(port, controller)
    await controller.reconcile(NS, "agent")


def foreign_job(name: str, *, labelled: bool = True) -> dict[str, Any]:
    """A Job someone else created with the name (and, if ``labelled``, the labels) the operator uses."""
    labels = (
        {LABEL_MANAGED_BY: MANAGED_BY, LABEL_MEMORY: "agent", LABEL_COMPONENT: COMPONENT_BACKUP}
        if labelled
        else {}
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "mine"}]}}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }


def manual_backup(port: FakePort, name: str) -> dict[str, Any]:
    return port.put(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeBackup",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"memory": "agent"},
        }
    )


def scheduled_runs(port: FakePort) -> list[dict[str, Any]]:
    return [
        o
        for o in port.of_kind("VestigeBackup")
        if (o["metadata"].get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT)
    ]


def warnings(port: FakePort, reason: str) -> list[dict[str, Any]]:
    return [e for e in port.events if e.get("reason") == reason and e.get("type") == "Warning"]


async def test_a_foreign_job_with_the_backup_jobs_name_fails_the_backup_and_is_left_alone() -> None:
    for labelled in (True, False):
        port, controller, _, _ = world(schedule=None)
        manual_backup(port, "manual")
        planted = port.put(foreign_job(b.job_name("manual"), labelled=labelled))
        await run(port, controller)
        await run(port, controller)
        vbak = port.find("VestigeBackup", NS, "manual")
        assert vbak is not None and vbak["status"]["phase"] == "Failed", vbak
        assert "not owned by this VestigeBackup" in vbak["status"]["message"]
        assert "sha256" not in vbak["status"], "a result was read from a Job the operator did not create"
        assert port.find("Job", NS, planted["metadata"]["name"]) == planted, "the foreign Job was touched"
        assert not [w for w in port.writes if w[1] == "Job"], port.writes
        assert len(warnings(port, "BackupFailed")) == 1


async def test_a_running_backup_whose_job_was_swapped_is_failed_not_read() -> None:
    port, controller, _, _ = world(schedule=None)
    manual_backup(port, "manual")
    await run(port, controller)  # starts: the operator's Job exists, the backup is Running
    assert port.find("VestigeBackup", NS, "manual")["status"]["phase"] == "Running"  # type: ignore[index]
    # The Job is replaced by one with the same name and labels, claiming success.
    port.objects.pop(("Job", NS, b.job_name("manual")))
    planted = port.put(foreign_job(b.job_name("manual")))
    await run(port, controller)
    vbak = port.find("VestigeBackup", NS, "manual")
    assert vbak is not None and vbak["status"]["phase"] == "Failed"
    assert "not owned by this VestigeBackup" in vbak["status"]["message"]
    assert port.find("Job", NS, planted["metadata"]["name"]) == planted
    assert ("delete", "Job") not in port.requests


async def test_a_taken_scheduled_name_runs_under_a_generated_name_and_says_so_once() -> None:
    port, controller, clock, memory = world()
    clock.now = T0 + timedelta(hours=1)  # 11:00 is due
    due = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    taken = manual_backup(port, b.scheduled_name("agent", due))
    taken["status"] = {"phase": "Failed", "completedAt": "2026-12-02T10:00:00Z"}  # not active
    taken = port.put(taken)
    await run(port, controller)
    runs = scheduled_runs(port)
    assert len(runs) == 1, port.of_kind("VestigeBackup")
    run_obj = runs[0]
    assert run_obj["metadata"]["name"].startswith(taken["metadata"]["name"] + "-")
    assert len(run_obj["metadata"]["name"]) <= b.MAX_JOB_NAME
    assert b.is_scheduled_run(run_obj, memory, due)
    assert port.find("VestigeBackup", NS, taken["metadata"]["name"])["metadata"] == taken["metadata"]  # type: ignore[index]
    events = warnings(port, "BackupNameTaken")
    assert len(events) == 1 and run_obj["metadata"]["name"] in events[0]["message"], events
    # Later passes neither create another run for 11:00 nor repeat the event.
    for _ in range(3):
        await run(port, controller)
    assert len(warnings(port, "BackupNameTaken")) == 1
    assert len(scheduled_runs(port)) == 1


async def test_only_the_schedulers_own_runs_move_the_schedule_on() -> None:
    port, controller, clock, _ = world()
    clock.now = T0 + timedelta(hours=1)
    # Someone plants a finished "scheduled" backup far in the future, without the memory's ownership.
    planted = manual_backup(port, "planted")
    planted["metadata"]["annotations"] = {ANNOTATION_SCHEDULED_AT: "2030-01-01T00:00:00Z"}
    planted["status"] = {"phase": "Completed"}
    port.put(planted)
    await run(port, controller)
    names = [o["metadata"]["name"] for o in port.of_kind("VestigeBackup")]
    assert b.scheduled_name("agent", datetime(2026, 12, 2, 11, 0, tzinfo=UTC)) in names, names


async def test_the_schedulers_own_run_is_not_a_taken_name() -> None:
    port, controller, clock, _ = world()
    clock.now = T0 + timedelta(hours=1)
    await run(port, controller)
    controller._scheduled.clear()  # a restarted operator whose cache has not seen the run yet
    controller.attach(owners=controller.owners, backups={}, jobs={}, deployments={})
    await controller.reconcile(NS, "agent")
    assert not warnings(port, "BackupNameTaken")
    assert len(port.of_kind("VestigeBackup")) == 1


async def test_a_taken_prune_job_name_is_reported_once_and_left_alone() -> None:
    port, controller, _, _ = world(schedule=None)
    for i, name in enumerate(("old", "new")):
        obj = manual_backup(port, name)
        obj["status"] = {
            "phase": "Completed",
            "completedAt": f"2026-12-02T0{i + 1}:00:00Z",
            "key": f"{NS}/agent/{name}.tar.gz",
        }
        port.put(obj)
    # keepLast 1: "old" is expired; its prune Job's name is taken.
    planted = port.put(foreign_job(b.prune_job_name("agent", ["old"]), labelled=False))
    for _ in range(3):
        await run(port, controller)
    assert port.find("Job", NS, planted["metadata"]["name"]) == planted
    assert port.find("VestigeBackup", NS, "old") is not None, "a backup went without its snapshot pruned"
    events = warnings(port, "PruneFailed")
    assert len(events) == 1 and "not owned by this VestigeMemory" in events[0]["message"], events


def test_the_backup_job_carries_the_backup_name_as_a_valid_label() -> None:
    memory = Owner("a" * 46, NS, "uid")
    name = b.scheduled_name(memory.name, T0)
    manifest = b.backup_manifest(memory, name, T0, generate=True)
    assert "name" not in manifest["metadata"]
    assert len(manifest["metadata"]["generateName"]) + 5 <= b.MAX_JOB_NAME
    generated = manifest["metadata"]["generateName"] + "abcde"
    job = b.render_backup_job(generated, "uid-b", memory, _spec(), IMAGES)
    assert len(job["metadata"]["labels"][LABEL_BACKUP]) <= 63


def _spec() -> Any:
    from vestige_operator.api import VestigeMemorySpec

    return VestigeMemorySpec.model_validate({"backup": {"destination": S3}})


async def test_a_failing_restore_container_is_read_from_the_memorys_own_pod() -> None:
    """A restore init container that fails (not a refusal) is reported until the pod gets
    through; the pod of a backup Job of the same memory is not read."""
    from vestige_operator.vocabulary import labels, selector_labels

    port, controller, _, _ = world(schedule=None)
    source = {"destination": S3, "source": f"{NS}/old", "pointInTime": "latest"}
    port.put(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeMemory",
            "metadata": {"name": "copy", "namespace": NS, "creationTimestamp": "2026-12-02T09:00:00Z"},
            "spec": {"restore": {"fromBackup": source}},
        }
    )
    changed: list[Any] = []
    controller.on_change = changed.append

    def pod(name: str, pod_labels: dict[str, str], exit_code: int, message: str) -> dict[str, Any]:
        terminated = {"exitCode": exit_code, "message": message}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": pod_labels},
            "status": {
                "initContainerStatuses": [{"name": "restore-replica", "state": {"terminated": terminated}}]
            },
        }

    port.put(pod("copy-backup-x", labels("copy", COMPONENT_BACKUP), 1, "Error: a backup Job's pod"))
    refresh(port, controller)
    await controller.reconcile(NS, "copy")
    assert controller.restore_failure((NS, "copy")) is None and changed == []

    port.put(
        pod("copy-5d9f-a", selector_labels("copy"), 1, "Error: cannot open store: dial tcp: i/o timeout")
    )
    await controller.reconcile(NS, "copy")
    assert controller.restore_failure((NS, "copy")) == (
        "init container restore-replica exited with 1: Error: cannot open store: dial tcp: i/o timeout"
    )
    assert controller.restore_problem((NS, "copy")) is None and changed == [(NS, "copy")]

    port.put(pod("copy-5d9f-a", selector_labels("copy"), 0, ""))  # the kubelet's retry got through
    await controller.reconcile(NS, "copy")
    assert controller.restore_failure((NS, "copy")) is None and changed == [(NS, "copy")] * 2
