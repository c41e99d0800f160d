"""Backups against the real API server (kube-apiserver, Job controller) and a real S3 server.

Pods do not run on the kwok node, so the runner's side is played honestly by the test: it runs
the Job's own container command (``python -m vestige_backup ...``, the args the operator rendered)
as a local process against a local store and the real versitygw server, and writes that process's
real JSON result into the Job pod's termination message (pod status), the way the kubelet would.
The Job controller then completes or fails the Job; everything the operator does (create
VestigeBackups and Jobs, read results, patch status, Events, retention) is real. The runner itself
is tested as a process in tests/backup/. The real-node end-to-end test comes with the node.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from vestige_operator import backup as b
from vestige_operator.backup_controller import BackupController
from vestige_operator.cluster import Cluster, make_api_client
from vestige_operator.vocabulary import LABEL_MEMORY, Images

from tests.backup import stores
from tests.backup.conftest import run_runner, runner_venv
from tests.integration.conftest import Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess
from tests.integration.operator_fixtures import operator_factory as operator_factory  # fixture
from tests.integration.operator_fixtures import operator_process as operator_process  # fixture
from tests.s3.server import S3Server

BUCKET = "vestige-backups"
#: No kwok node has this label: the Job pods stay Pending and the test plays the kubelet.
UNSCHEDULABLE = {"vestige.dev/test-no-such-node": "true"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "root").start()
    server.make_bucket(BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runner_python() -> Path:
    return runner_venv()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A live-shaped store standing in for the agent's volume (/data/vestige)."""
    data = tmp_path / "data" / "vestige"
    con = stores.create(data / "vestige.db")
    for i in range(30):
        stores.ingest(con, f"memory {i}")
    con.close()
    return data


def _memory(
    name: str, s3: S3Server, *, bucket: str = BUCKET, schedule: str | None = None, keep: int = 2
) -> str:
    backup: dict[str, Any] = {
        "retention": {"keepLast": keep},
        "destination": {
            "s3": {
                "endpoint": s3.endpoint,
                "bucket": bucket,
                "credentialsSecret": {"name": "s3-creds"},
                "forcePathStyle": True,
            }
        },
    }
    if schedule:
        backup["schedule"] = schedule
    doc = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name},
        "spec": {"pod": {"nodeSelector": UNSCHEDULABLE}, "backup": backup},
    }
    return json.dumps(doc)


def _restoring(name: str, source: str, s3: S3Server) -> str:
    """A VestigeMemory (pods never scheduled) whose volume starts from ``source``'s newest snapshot."""
    doc = {
        "apiVersion": "vestige.dev/v1alpha1",
        "kind": "VestigeMemory",
        "metadata": {"name": name},
        "spec": {
            "pod": {"nodeSelector": UNSCHEDULABLE},
            "restore": {
                "fromBackup": {
                    "source": source,
                    "latest": True,
                    "destination": json.loads(_memory("x", s3))["spec"]["backup"]["destination"],
                }
            },
        },
    }
    return json.dumps(doc)


def _stalled(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    """The memory's Stalled condition while it is True."""
    conds = (must_get(kubectl, ns, "vestigememory", name).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Stalled" and c["status"] == "True"), None)


def _creds_secret(kubectl: Kubectl, ns: str, s3: S3Server) -> None:
    kubectl(
        "-n", ns, "create", "secret", "generic", "s3-creds",
        f"--from-literal=accessKeyId={s3.access_key}", f"--from-literal=secretAccessKey={s3.secret_key}",
    )  # fmt: skip


def _job_pod(kubectl: Kubectl, ns: str, job: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        items = json.loads(kubectl("-n", ns, "get", "pods", "-l", f"job-name={job}", "-o", "json").stdout)[
            "items"
        ]
        return items[0] if items else None

    return wait_until(find, timeout=60, what=f"the pod of Job {job}")


def play_kubelet(
    kubectl: Kubectl, ns: str, job_name: str, s3: S3Server, runner_python: Path, data_dir: Path, tmp: Path
) -> dict[str, Any]:
    """Run the Job's container command locally (the real runner, the rendered args), then write
    its result into the pod status as the kubelet would; the runner's result."""
    job = must_get(kubectl, ns, "job", job_name)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "vestige_backup"]
    args = [
        str(data_dir) if a == "/data/vestige" else str(tmp) if a == "/tmp" else a for a in container["args"]
    ]
    env_names = {e["name"] for e in container["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_names
    creds = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    result_file = tmp / f"{job_name}.json"
    proc = run_runner(runner_python, args, env=creds, result_file=result_file)
    message = result_file.read_text()
    pod = _job_pod(kubectl, ns, job_name)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {
        "exitCode": proc.returncode,
        "reason": "Completed" if proc.returncode == 0 else "Error",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    status = {
        "status": {
            "phase": "Succeeded" if proc.returncode == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    kubectl(
        "-n", ns, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip

    def job_finished() -> bool:
        job = get(kubectl, ns, "job", job_name)
        if job is None:
            return True  # a running operator already read the result and deleted the Job
        conds = (job.get("status") or {}).get("conditions") or []
        return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conds)

    wait_until(job_finished, timeout=60, what=f"the Job controller to finish Job {job_name}")
    return json.loads(message)


class Harness:
    """The backup controller in-process with a test clock; its caches filled by LISTs."""

    def __init__(self, kubectl: Kubectl, ns: str, kubeconfig: str) -> None:
        self.kubectl = kubectl
        self.ns = ns
        self.cluster = Cluster(make_api_client(kubeconfig))
        self.now = datetime.now(UTC)
        self.controller = BackupController(
            self.cluster,
            Images(vestige="vestige:3", bridge="bridge:test", litestream="example.org/litestream:0.5.18"),
            clock=lambda: self.now,
        )

    def _list(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        return json.loads(self.kubectl("-n", self.ns, "get", kind, *selector, "-o", "json").stdout)["items"]

    def run(self, memory: str) -> None:
        key = (self.ns, memory)
        self.controller.owners = {
            key: self._list("vestigememories", "--field-selector", f"metadata.name={memory}")
        }
        self.controller.backups = {
            key: [o for o in self._list("vestigebackups") if o["spec"]["memory"] == memory]
        }
        self.controller.jobs = {key: self._list("jobs", "-l", f"{LABEL_MEMORY}={memory}")}
        asyncio.run(self.controller.reconcile(*key))

    def backups(self, memory: str) -> dict[str, dict[str, Any]]:
        return {
            o["metadata"]["name"]: o for o in self._list("vestigebackups") if o["spec"]["memory"] == memory
        }

    def close(self) -> None:
        self.cluster.close()


@pytest.mark.usefixtures("crd_installed")
def test_schedule_runs_and_retention_keeps_the_last_two(
    kubectl: Kubectl,
    namespace: str,
    kubeconfig: str,
    s3: S3Server,
    runner_python: Path,
    store_dir: Path,
    tmp_path: Path,
) -> None:
    _creds_secret(kubectl, namespace, s3)
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("sched", s3, schedule="* * * * *", keep=2))
    h = Harness(kubectl, namespace, kubeconfig)
    try:
        h.run("sched")
        assert h.backups("sched") == {}, "nothing is due right after creation"
        names = []
        for _ in range(4):
            h.now = h.now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            h.run("sched")  # creates <memory>-<UTC time>
            expected = b.scheduled_name("sched", h.now)
            assert expected in h.backups("sched")
            h.run("sched")  # starts its Job
            obj = h.backups("sched")[expected]
            assert obj["status"]["phase"] == "Running"
            job = must_get(kubectl, namespace, "job", obj["status"]["job"])
            pod_spec = job["spec"]["template"]["spec"]
            assert pod_spec["affinity"]["podAffinity"], "the Job follows the agent pod"
            assert pod_spec["nodeSelector"] == UNSCHEDULABLE
            if not names:  # one backup per memory at a time: a time falling due while it runs waits
                saved = h.now
                h.now += timedelta(minutes=1)
                h.run("sched")
                assert set(h.backups("sched")) == {expected}
                h.now = saved
            result = play_kubelet(
                kubectl, namespace, job["metadata"]["name"], s3, runner_python, store_dir, tmp_path
            )
            assert result["ok"] is True, result
            h.run("sched")  # reads the result, deletes the Job; retention may start a prune Job
            obj = h.backups("sched")[expected]
            assert obj["status"]["phase"] == "Completed", obj["status"]
            assert obj["status"]["sha256"] == result["sha256"] and obj["status"]["key"] == result["key"]
            assert get(kubectl, namespace, "job", job["metadata"]["name"]) is None or job_deleting(
                kubectl, namespace, job["metadata"]["name"]
            )
            names.append(expected)
            settle(h, kubectl, namespace, s3, runner_python, store_dir, tmp_path)
        left = h.backups("sched")
        assert sorted(left) == names[-2:], f"keepLast 2 after 4 runs left {sorted(left)}"
        snapshots = sorted(
            k for k in s3.objects(BUCKET) if k.startswith(f"{namespace}/sched/") and k.endswith(".tar.gz")
        )
        assert snapshots == sorted(f"{namespace}/sched/{n}.tar.gz" for n in names[-2:])
        for name in names[-2:]:  # the recorded sha256 is the stored object's
            import hashlib

            data = (s3.root / BUCKET / namespace / "sched" / f"{name}.tar.gz").read_bytes()
            assert hashlib.sha256(data).hexdigest() == left[name]["status"]["sha256"]
        # The operator missed three minutes (down): ONE run, for the newest time.
        h.now += timedelta(minutes=3)
        h.run("sched")
        created = set(h.backups("sched")) - set(left)
        assert created == {b.scheduled_name("sched", h.now.replace(second=0, microsecond=0))}
    finally:
        h.close()


def settle(
    h: Harness, kubectl: Kubectl, ns: str, s3: S3Server, runner_python: Path, store_dir: Path, tmp: Path
) -> None:
    """Passes until retention is done: each prune Job the operator creates is played, then the
    next pass deletes the expired VestigeBackups."""
    for _ in range(10):
        h.run("sched")
        prunes = [
            j
            for j in h._list("jobs", "-l", f"{LABEL_MEMORY}=sched,app.kubernetes.io/component=prune")
            if not j["metadata"].get("deletionTimestamp")
        ]
        if not prunes:
            return
        for prune in prunes:
            result = play_kubelet(kubectl, ns, prune["metadata"]["name"], s3, runner_python, store_dir, tmp)
            assert result["ok"] is True, result
        h.run("sched")
    raise AssertionError("retention did not settle")


def job_deleting(kubectl: Kubectl, ns: str, name: str) -> bool:
    job = get(kubectl, ns, "job", name)
    return job is None or bool(job["metadata"].get("deletionTimestamp"))


def _events(kubectl: Kubectl, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items = json.loads(kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]


def _condition(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    status = must_get(kubectl, ns, "vestigememory", name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "LastBackupSucceeded"), None)


def _set_bucket(kubectl: Kubectl, ns: str, bucket: str) -> None:
    patch = {"spec": {"backup": {"destination": {"s3": {"bucket": bucket}}}}}
    kubectl("-n", ns, "patch", "vestigememory", "agent", "--type=merge", "-p", json.dumps(patch))


def _vbak(name: str, memory: str) -> str:
    return json.dumps(
        {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeBackup",
            "metadata": {"name": name},
            "spec": {"memory": memory},
        }
    )


@pytest.mark.usefixtures("crd_installed")
def test_operator_runs_a_backup_reports_failure_once_and_recovers(
    kubectl: Kubectl,
    namespace: str,
    s3: S3Server,
    runner_python: Path,
    store_dir: Path,
    tmp_path: Path,
    operator_factory: Any,
) -> None:
    op: OperatorProcess = operator_factory(namespace, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "1"})
    op.wait_ready()
    _creds_secret(kubectl, namespace, s3)
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("agent", s3))

    def run(name: str) -> dict[str, Any]:
        kubectl("-n", namespace, "apply", "-f", "-", input=_vbak(name, "agent"))
        running = wait_until(
            lambda: (
                (get(kubectl, namespace, "vestigebackup", name) or {}).get("status", {}).get("phase")
                == "Running"
            ),
            timeout=60,
            what=f"{name} Running",
        )
        assert running
        job = must_get(kubectl, namespace, "vestigebackup", name)["status"]["job"]
        result = play_kubelet(kubectl, namespace, job, s3, runner_python, store_dir, tmp_path)
        wait_until(
            lambda: (
                must_get(kubectl, namespace, "vestigebackup", name).get("status", {}).get("phase")
                in ("Completed", "Failed")
            ),
            timeout=60,
            what=f"{name} finished",
        )
        return result

    # 1. success: Completed with the runner's key/size/sha256; status.backup and the condition.
    result = run("agent-manual-1")
    obj = must_get(kubectl, namespace, "vestigebackup", "agent-manual-1")
    assert obj["status"]["phase"] == "Completed"
    assert obj["status"]["sha256"] == result["sha256"] and obj["status"]["size"] == result["size"]
    assert obj["status"]["vestigeVersion"].startswith("v3")
    wait_until(
        lambda: (_condition(kubectl, namespace, "agent") or {}).get("status") == "True", what="condition True"
    )
    last = must_get(kubectl, namespace, "vestigememory", "agent")["status"]["backup"]["lastSuccessful"]
    assert last["key"] == result["key"]

    # 2. failure (missing bucket): Failed naming the cause, condition False, ONE Warning event.
    _set_bucket(kubectl, namespace, "no-such-bucket")
    run("agent-manual-2")
    failed = must_get(kubectl, namespace, "vestigebackup", "agent-manual-2")["status"]
    assert failed["phase"] == "Failed" and "bucket does not exist" in failed["message"]
    cond = wait_until(
        lambda: (c := _condition(kubectl, namespace, "agent")) and c["status"] == "False" and c,
        what="condition False",
    )
    assert cond["reason"] == "BackupFailed" and "bucket does not exist" in cond["message"]
    events = wait_until(
        lambda: _events(kubectl, namespace, "agent", "BackupFailed"), what="a BackupFailed event"
    )
    # a few more passes (ticks every second) post nothing more
    wait_until(lambda: op.probe()["passes"] > 0, what="passes")
    import time

    time.sleep(3)
    events = _events(kubectl, namespace, "agent", "BackupFailed")
    assert len(events) == 1 and events[0]["type"] == "Warning"

    # 3. fixed: the next backup succeeds and the condition turns True again.
    _set_bucket(kubectl, namespace, BUCKET)
    run("agent-manual-3")
    assert must_get(kubectl, namespace, "vestigebackup", "agent-manual-3")["status"]["phase"] == "Completed"
    wait_until(
        lambda: (_condition(kubectl, namespace, "agent") or {}).get("status") == "True", what="recovered"
    )

    # 4. a runner that cannot start (here: the kubelet reports the Secret missing) fails the run
    #    at once instead of at the Job's deadline.
    kubectl("-n", namespace, "apply", "-f", "-", input=_vbak("agent-manual-4", "agent"))
    wait_until(
        lambda: (
            (get(kubectl, namespace, "vestigebackup", "agent-manual-4") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        timeout=60,
        what="agent-manual-4 Running",
    )
    job = must_get(kubectl, namespace, "vestigebackup", "agent-manual-4")["status"]["job"]
    pod = _job_pod(kubectl, namespace, job)
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}
    status = {
        "status": {
            "containerStatuses": [
                {"name": "backup", "image": "bridge", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": waiting}}
            ]
        }
    }  # fmt: skip
    kubectl(
        "-n", namespace, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    failed = wait_until(
        lambda: (
            (o := must_get(kubectl, namespace, "vestigebackup", "agent-manual-4")["status"])["phase"]
            == "Failed"
            and o
        ),
        timeout=60,
        what="agent-manual-4 Failed",
    )
    assert failed["message"] == 'the backup container cannot start: secret "s3-creds" not found'

    # Credentials never appear in status, events or the operator's log.
    texts = [
        kubectl("-n", namespace, "get", "vestigebackups,vestigememories,events,jobs", "-o", "json").stdout,
        op.log_path.read_text(),
    ]
    for text in texts:
        assert s3.secret_key not in text and s3.access_key not in text
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") is None


@pytest.mark.usefixtures("crd_installed")
def test_restore_refusal_stalls_the_memory(
    kubectl: Kubectl, namespace: str, s3: S3Server, operator_factory: Any
) -> None:
    op: OperatorProcess = operator_factory(namespace, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "1"})
    op.wait_ready()
    kubectl("-n", namespace, "apply", "-f", "-", input=_restoring("restored", f"{namespace}/agent", s3))
    dep = wait_until(lambda: get(kubectl, namespace, "deployment", "restored"), what="the Deployment")
    pod_spec = dep["spec"]["template"]["spec"]
    (init,) = pod_spec["initContainers"]
    assert init["name"] == "restore" and init["args"][3:6] == ["--latest", "--prefix", f"{namespace}/agent/"]
    for c in pod_spec["containers"]:
        assert not any(e["name"].startswith("AWS_") for e in c.get("env", []))
    pod = wait_until(
        lambda: json.loads(
            kubectl(
                "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=restored", "-o", "json"
            ).stdout
        )["items"],
        timeout=60,
        what="the agent pod",
    )[0]
    # Play the kubelet: the init container exited 3 with the runner's refusal.
    message = json.dumps(
        {
            "ok": False,
            "refused": True,
            "message": "/data/vestige already holds a Vestige store: refusing to overwrite it",
        }
    )
    status = {
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "restore", "image": init["image"], "imageID": "", "ready": False, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": message}}}
            ],
        }
    }  # fmt: skip
    kubectl("-n", namespace, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
            "-p", json.dumps(status))  # fmt: skip

    cond = wait_until(lambda: _stalled(kubectl, namespace, "restored"), timeout=60, what="Stalled")
    assert cond["reason"] == "RestoreRefused" and "refusing to overwrite" in cond["message"]
    assert wait_until(
        lambda: _events(kubectl, namespace, "restored", "RestoreRefused"), what="the Warning event"
    )


@pytest.mark.usefixtures("crd_installed")
def test_backup_of_a_missing_memory_fails_after_the_grace(
    kubectl: Kubectl, namespace: str, kubeconfig: str
) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input=_vbak("ghost-1", "ghost"))
    h = Harness(kubectl, namespace, kubeconfig)
    try:
        h.run("ghost")
        assert "phase" not in (h.backups("ghost")["ghost-1"].get("status") or {}), (
            "not failed within the grace"
        )
        h.now += timedelta(minutes=2)
        h.run("ghost")
        status = h.backups("ghost")["ghost-1"]["status"]
        assert status["phase"] == "Failed" and status["message"] == "VestigeMemory ghost not found"
    finally:
        h.close()


@pytest.fixture
def source_namespace(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A second tenant's namespace (the restore source)."""
    name = f"{namespace[:55]}-src"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.usefixtures("crd_installed")
def test_a_restore_from_another_namespace_needs_the_source_sides_grant(
    kubectl: Kubectl, namespace: str, source_namespace: str, s3: S3Server, operator_factory: Any
) -> None:
    """The operator reads every namespace's backups; it never carries one tenant's snapshot into
    another's unless the source namespace grants it: without a VestigeBackupGrant there (a grant
    in the restoring namespace does not count) the memory stalls (RestoreRefused, one event) and no
    Deployment is created; the source side's grant lets the pod be created, restoring from the
    source agent's key space."""
    op: OperatorProcess = operator_factory(
        namespace, source_namespace, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "1"}
    )
    op.wait_ready()

    def grant(name: str, ns: str, allowed: str, agent: str) -> None:
        body = {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeBackupGrant",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"from": [{"namespace": allowed}], "to": [{"agentId": agent}]},
        }
        kubectl("apply", "-f", "-", input=json.dumps(body))

    # Grants that do not count: in the restoring namespace, or for another agent.
    grant("self-service", namespace, namespace, "agent")
    grant("other-agent", source_namespace, namespace, "someone-else")
    kubectl("-n", namespace, "apply", "-f", "-", input=_restoring("copy", f"{source_namespace}/agent", s3))
    cond = wait_until(lambda: _stalled(kubectl, namespace, "copy"), timeout=60, what="Stalled RestoreRefused")
    assert cond["reason"] == "RestoreRefused" and "another namespace" in cond["message"], cond
    assert f"VestigeBackupGrant in namespace {source_namespace}" in cond["message"], cond
    assert get(kubectl, namespace, "deployment", "copy") is None
    events = wait_until(lambda: _events(kubectl, namespace, "copy", "RestoreRefused"), what="the event")
    assert len(events) == 1 and events[0]["type"] == "Warning", events

    # The source side grants it: the grant's event brings the memory's pass, the pod is created.
    grant("to-copy", source_namespace, namespace, "agent")
    dep = wait_until(lambda: get(kubectl, namespace, "deployment", "copy"), timeout=60, what="the Deployment")
    args = dep["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert args[args.index("--prefix") + 1] == f"{source_namespace}/agent/"
    assert args[args.index("--expect-namespace") + 1] == source_namespace
    assert len(_events(kubectl, namespace, "copy", "RestoreRefused")) == 1


@pytest.mark.usefixtures("crd_installed")
def test_a_job_the_operator_did_not_create_is_never_read_adopted_or_deleted(
    kubectl: Kubectl, namespace: str, s3: S3Server, operator_factory: Any
) -> None:
    """A Job planted under the name of a backup's Job (with the operator's labels, claiming
    success) fails that backup with a named reason; the Job keeps its uid, spec and owners."""
    op: OperatorProcess = operator_factory(namespace, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "1"})
    op.wait_ready()
    _creds_secret(kubectl, namespace, s3)
    kubectl("-n", namespace, "apply", "-f", "-", input=_memory("agent", s3))
    planted = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": b.job_name("manual"),
            "labels": {
                "app.kubernetes.io/managed-by": "vestige-operator",
                "app.kubernetes.io/component": "backup",
                LABEL_MEMORY: "agent",
            },
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": UNSCHEDULABLE,
                    "containers": [{"name": "backup", "image": "example.org/not-the-runner:1"}],
                }
            },
        },
    }
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(planted))
    before = must_get(kubectl, namespace, "job", b.job_name("manual"))
    kubectl("-n", namespace, "apply", "-f", "-", input=_vbak("manual", "agent"))

    def finished() -> dict[str, Any] | None:
        status = must_get(kubectl, namespace, "vestigebackup", "manual").get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    status = wait_until(finished, timeout=60, what="the backup to finish")
    assert status["phase"] == "Failed" and "not owned by this VestigeBackup" in status["message"], status
    assert "sha256" not in status
    after = must_get(kubectl, namespace, "job", b.job_name("manual"))
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"].get("ownerReferences") is None
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/not-the-runner:1"
    events = wait_until(lambda: _events(kubectl, namespace, "agent", "BackupFailed"), what="the event")
    assert len(events) == 1 and b.job_name("manual") in events[0]["message"], events
