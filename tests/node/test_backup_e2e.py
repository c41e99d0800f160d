"""Backups end to end on the real node (issue 14, done-when 1, 3 and 5).

An S3 server (versitygw, ``tests.s3``) runs as a pod behind a Service in the test namespace; an
agent (the v3 stand-in, its memories in ``/data/vestige/vestige.db``, SQLite WAL) backs up every
minute to it with ``keepLast: 2``; the backup Jobs run on the real node next to the agent pod.
Then a new VestigeMemory is restored from the latest snapshot and finds the source's memories,
and one whose volume already holds a store is refused. The bucket is listed from the host
through ``kubectl port-forward`` with boto3 from the backup runner's venv (tests/backup).

One schedule of every minute: this module takes about six minutes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backup.conftest import runner_venv
from tests.cluster import images as image_builds
from tests.integration.helpers import wait_until
from tests.integration.operator_fixtures import OperatorFactory
from tests.node.helpers import Agent, Agents, RealNode, found_after, port_forward, recall, remember
from tests.s3 import pod as s3_pod
from tests.s3.pod import BUCKET, S3_NAME, S3_PORT

MEMORIES = [
    "The backup drill for the lighthouse keeper is on Thursdays at dawn",
    "Parsnip soup needs a pinch of nutmeg and a bay leaf",
    "The blue bicycle is locked behind the observatory",
]

#: boto3 lists the bucket (key -> sha256 of the object) from the host, through the port-forward.
LIST_SCRIPT = """
import hashlib, json, sys
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                  aws_secret_access_key=sys.argv[3], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
out = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[4], Prefix=sys.argv[5]):
    for obj in page.get("Contents", []):
        body = s3.get_object(Bucket=sys.argv[4], Key=obj["Key"])["Body"].read()
        out[obj["Key"]] = hashlib.sha256(body).hexdigest()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def backup_agents(
    real_node: RealNode,
    built_images: image_builds.ImageRefs,
    operator_factory: OperatorFactory,
    crd_installed: None,
) -> Iterator[Agents]:
    """Like ``agents`` (a restricted namespace, its own operator), the backup tick every 2 s."""
    with Agents.open(
        real_node, built_images, operator_factory, env={"VESTIGE_BACKUP_INTERVAL_SECONDS": "2"}
    ) as made:
        yield made


class S3Pod(s3_pod.S3Pod):
    """versitygw on the real node (tests/s3/pod.py), its bucket listed from the host."""

    def __init__(self, rn: RealNode, ns: str) -> None:
        super().__init__(rn.kubectl, ns)
        self.rn = rn

    def objects(self, prefix: str) -> dict[str, str]:
        """key -> sha256 of every object under ``prefix`` (boto3 through a port-forward)."""
        with port_forward(self.rn, self.ns, f"svc/{S3_NAME}", S3_PORT) as pf:
            proc = subprocess.run(
                [
                    str(runner_venv()),
                    "-c",
                    LIST_SCRIPT,
                    pf.url,
                    self.access_key,
                    self.secret_key,
                    BUCKET,
                    prefix,
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)


def _backups(rn: RealNode, ns: str, memory: str) -> dict[str, dict[str, Any]]:
    out = rn.kubectl("-n", ns, "get", "vestigebackups", "-l", f"vestige.dev/memory={memory}", "-o", "json")
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


def _completed(backups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: o for n, o in backups.items() if (o.get("status") or {}).get("phase") == "Completed"}


class JobPods:
    """The backup Jobs' pods as seen while polling (the operator deletes a Job once it read its
    result, so each pod is recorded when seen: node, phase, exit code)."""

    def __init__(self, rn: RealNode, ns: str) -> None:
        self.rn, self.ns = rn, ns
        self.seen: dict[str, dict[str, Any]] = {}

    def poll(self) -> None:
        out = self.rn.kubectl(
            "-n",
            self.ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=backup",
            "-o",
            "json",
            check=False,
        )
        if out.returncode != 0:
            return
        for pod in json.loads(out.stdout)["items"]:
            rec = self.seen.setdefault(pod["metadata"]["name"], {})
            rec["job"] = (pod["metadata"].get("labels") or {}).get("job-name")
            rec["node"] = pod["spec"].get("nodeName") or rec.get("node")
            rec["phase"] = pod["status"].get("phase")
            for cs in pod["status"].get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated")
                if term:
                    rec["exitCode"] = term.get("exitCode")


def _bound_volume(agent: Agent) -> Path | None:
    try:
        return agent.volume_dir()
    except AssertionError:
        return None


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _volume_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


#: Four scheduled runs a minute apart, then a restore: ~5 minutes of the test, more on a busy machine.
@pytest.mark.timeout(1500)
def test_scheduled_backups_retention_restore_and_refusal(backup_agents: Agents, real_node: RealNode) -> None:
    ns = backup_agents.namespace
    started = time.monotonic()
    timings: dict[str, float] = {}
    image = image_builds.versitygw_image()
    image_builds.import_into(
        str(real_node.layout.containerd_sock), images=image_builds.ImageSet({"versitygw": image})
    )
    s3 = S3Pod(real_node, ns)
    s3.start(image.ref)
    timings["s3 pod ready"] = time.monotonic() - started

    # The source agent, its memories ingested before the first scheduled run.
    src = backup_agents.create(
        "src",
        spec={
            "backup": {
                "schedule": "* * * * *",
                "retention": {"keepLast": 2},
                "destination": s3.destination(),
            }
        },
    )
    src.wait_ready()
    with src.client() as http:
        for text in MEMORIES:
            remember(http, text, tags=["backup-e2e"])
    timings["source ready + ingested"] = time.monotonic() - started
    agent_node = src.pod()["spec"]["nodeName"]
    prefix = f"{ns}/src/"

    # Done-when 1: >= 2 Completed, their sha256 the objects'; after 4 runs exactly 2 remain.
    jobs = JobPods(real_node, ns)
    seen_completed: dict[str, dict[str, Any]] = {}

    def completed(at_least: int) -> dict[str, dict[str, Any]] | None:
        jobs.poll()
        now = _completed(_backups(real_node, ns, "src"))
        seen_completed.update(now)
        failed = [
            (n, (o.get("status") or {}).get("message"))
            for n, o in _backups(real_node, ns, "src").items()
            if (o.get("status") or {}).get("phase") == "Failed"
        ]
        assert not failed, f"failed backups: {failed}\n{jobs.seen}"
        return now if len(seen_completed) >= at_least else None

    two = wait_until(lambda: completed(2), timeout=300, what="2 Completed backups", interval=2)
    timings["2 Completed"] = time.monotonic() - started
    assert len(two) == 2, sorted(two)
    objects = s3.objects(prefix)
    for name, obj in two.items():
        status = obj["status"]
        assert status["key"] == f"{prefix}{name}.tar.gz", status
        assert objects.get(status["key"]) == status["sha256"], (name, status, objects)

    # Generous: on the shared cluster another session may swap the CRD for a while (docs/backup.md).
    wait_until(lambda: completed(4), timeout=600, what="4 Completed backups", interval=2)
    timings["4 Completed"] = time.monotonic() - started
    real_node.kubectl(
        "-n", ns, "patch", "vestigememory", "src", "--type=merge", "-p",
        json.dumps({"spec": {"backup": {"suspend": True}}}),
    )  # fmt: skip

    def settled() -> tuple[dict[str, dict[str, Any]], dict[str, str]] | None:
        jobs.poll()
        left = _backups(real_node, ns, "src")
        if len(left) != 2 or len(_completed(left)) != 2:
            return None
        snapshots = {k: v for k, v in s3.objects(prefix).items() if k.endswith(".tar.gz")}
        return (left, snapshots) if len(snapshots) == 2 else None

    left, snapshots = wait_until(settled, timeout=180, what="retention to leave 2", interval=3)
    timings["retention settled"] = time.monotonic() - started
    assert len(seen_completed) >= 4
    newest = sorted(seen_completed)[-2:]
    assert sorted(left) == newest, f"keepLast 2 left {sorted(left)}, the newest are {newest}"
    assert snapshots == {o["status"]["key"]: o["status"]["sha256"] for o in left.values()}

    # The Jobs ran on the real node, next to the agent, and succeeded.
    ran = [rec for rec in jobs.seen.values() if rec.get("node")]
    assert ran, f"no backup Job pod was seen: {jobs.seen}"
    assert {rec["node"] for rec in ran} == {agent_node}, jobs.seen
    assert all(rec.get("exitCode") in (None, 0) and rec.get("phase") != "Failed" for rec in ran), jobs.seen
    assert any(rec.get("exitCode") == 0 or rec.get("phase") == "Succeeded" for rec in ran), jobs.seen

    # Done-when 3: a NEW VestigeMemory restored from the latest snapshot finds the memories.
    src_volume = src.volume_dir()
    src_files = _volume_files(src_volume)
    restored = backup_agents.create(
        "restored",
        spec={
            "restore": {
                "fromBackup": {"destination": s3.destination(), "source": f"{ns}/src", "latest": True}
            }
        },
    )
    restored.wait_ready()
    timings["restored ready"] = time.monotonic() - started
    for text in MEMORIES:
        found_after(restored.client, text, text)
        found_after(src.client, text, text)  # the source still has them
    restored_volume = restored.volume_dir()
    assert restored_volume != src_volume
    assert (restored_volume / "vestige" / ".vestige-restored.json").is_file()
    marker = json.loads((restored_volume / "vestige" / ".vestige-restored.json").read_text())
    assert marker.get("key") == left[newest[-1]]["status"]["key"], marker
    assert not (src_volume / "vestige" / ".vestige-restored.json").exists()
    assert _volume_files(src_volume) >= {f for f in src_files if not f.endswith(("-wal", "-shm"))}
    with src.client() as http:
        text = recall(http, MEMORIES[0])
    assert MEMORIES[0] in text

    # Done-when 5: a volume that already holds a store is never overwritten: Stalled RestoreRefused.
    refused = backup_agents.create(
        "refused",
        seed=src_volume,  # a copy of the source's store (no restore marker): not empty
        spec={
            "restore": {
                "fromBackup": {"destination": s3.destination(), "source": f"{ns}/src", "latest": True}
            }
        },
    )
    refused_volume = wait_until(lambda: _bound_volume(refused), timeout=120, what="the claim bound")
    seeded = _digests(refused_volume)
    assert "vestige/vestige.db" in seeded, sorted(seeded)
    cond = wait_until(lambda: _stalled(refused), timeout=180, what="Stalled RestoreRefused", interval=2)
    assert cond["reason"] == "RestoreRefused" and "overwrite" in cond["message"], cond
    assert _digests(refused_volume) == seeded, "the refused volume was modified"
    assert not (refused_volume / "vestige" / ".vestige-restored.json").exists()
    timings["refusal"] = time.monotonic() - started
    print(f"\n[backup-e2e] timings (s since start): { {k: round(v) for k, v in timings.items()} }")
    print(f"[backup-e2e] runs completed: {sorted(seen_completed)}; job pods: {jobs.seen}")


def _stalled(agent: Agent) -> dict[str, Any] | None:
    conds = (agent.resource().get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Stalled" and c["status"] == "True"), None)
