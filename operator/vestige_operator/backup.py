"""Pure pieces of backups and restore: names, schedule, retention, Job and init-container rendering,
reading a Job's result, and the VestigeMemory's backup status. No I/O, no clock (``now`` is passed).

The runner (``python -m vestige_backup``, images/backup) does the work in a pod that holds the
object-storage credentials; the operator never sees them (it only names the Secret in
``secretKeyRef``). See docs/backup.md for the rules written out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cronsim import CronSim, CronSimError

from vestige_operator import BACKUP_KIND, GROUP, VERSION
from vestige_operator.api import (
    LATEST,
    BackupDestination,
    BackupPhase,
    BackupRetention,
    ContinuousBackupSpec,
    VestigeBackupGrantSpec,
    VestigeGeneration,
    VestigeMemorySpec,
    duration_seconds,
    max_age_seconds,
)
from vestige_operator.times import format_time, parse_time
from vestige_operator.vocabulary import (
    ANNOTATION_PRUNES,
    ANNOTATION_SCHEDULED_AT,
    COMPONENT_BACKUP,
    COMPONENT_PRUNE,
    DATA_MOUNT,
    LABEL_BACKUP,
    LABEL_MANAGED_BY,
    LABEL_MEMORY,
    MANAGED_BY,
    TMP_DIR,
    VESTIGE_DATA_DIR,
    VESTIGE_DATABASE,
    Images,
    Owner,
    container_security_context,
    labels,
    owner_reference,
    pod_security_context,
    pvc_name,
    selector_labels,
)

LAST_BACKUP_SUCCEEDED = "LastBackupSucceeded"
#: Failed VestigeBackups kept for inspection per memory (older ones are deleted; they have no snapshot).
FAILED_HISTORY = 3
SNAPSHOT_SUFFIX = ".tar.gz"
CA_MOUNT = "/etc/vestige-backup/ca"
RUNNER_COMMAND = ["python", "-m", "vestige_backup"]
JOB_DEADLINE_SECONDS = 3600
JOB_TTL_SECONDS = 86400
EXIT_REFUSED = 3
RUNNER_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
MAX_JOB_NAME = 63
#: generateName prefix of a fallback scheduled run: with the API server's 5 random characters the
#: name stays a valid label value (the Job carries it in a label).
MAX_GENERATE_PREFIX = MAX_JOB_NAME - 5


# -- names -------------------------------------------------------------------------------------


#: Object metadata every backup run records: whose snapshot it is (the runner checks it on
#: restore; tests/unit/test_contract.py keeps both sides in step).
METADATA_NAMESPACE = "namespace"
METADATA_AGENT_ID = "agent-id"


def key_space(destination: BackupDestination, namespace: str, agent_id: str) -> str:
    """Where one agent's snapshots live: ``<prefix><namespace>/<agentId>/``.

    Derived, never free text: a user's ``prefix`` only goes in front (the bucket's layout), so two
    namespaces with the same memory name, or two agents, never write, list or prune the same keys.
    """
    return f"{destination.s3.prefix or ''}{namespace}/{agent_id}/"


#: The continuous replica's folder inside an agent's key space (Litestream's ``path``).
REPLICA_FOLDER = "litestream"


def replica_path(destination: BackupDestination, namespace: str, agent_id: str) -> str:
    """Where one agent's continuous replica lives: ``<prefix><namespace>/<agentId>/litestream``
    (inside its key space, so the same tenancy rule holds for snapshots and the replica)."""
    return f"{key_space(destination, namespace, agent_id)}{REPLICA_FOLDER}"


def in_key_space(space: str, key: str) -> bool:
    return key.startswith(space) and ".." not in key.split("/")


def restore_source(spec: VestigeMemorySpec) -> tuple[str, str]:
    """(namespace, agent id) of the snapshot ``spec.restore`` restores."""
    if spec.restore is None:
        raise ValueError("the memory has no spec.restore")
    namespace, agent_id = spec.restore.from_backup.source.split("/", 1)
    return namespace, agent_id


def restore_problem(
    owner: Owner, spec: VestigeMemorySpec, grants: Iterable[VestigeBackupGrantSpec] = ()
) -> str | None:
    """Why ``spec.restore`` may not run for ``owner`` (None: it may). Checked before the agent's pod
    exists, so a refused restore touches no volume.

    A namespace is the tenancy boundary, and the operator (which reads every namespace's backups)
    must not carry one tenant's memory into another's: another namespace's snapshots are refused
    unless one of ``grants`` (the VestigeBackupGrants of the SOURCE namespace) names this namespace
    and the source agent. A key outside the source agent's key space is refused as well (the
    runner checks both again, with the snapshot's recorded identity).
    """
    if spec.restore is None:
        return None
    source = spec.restore.from_backup
    namespace, agent_id = restore_source(spec)
    if namespace != owner.namespace and not any(g.allows(owner.namespace, agent_id) for g in grants):
        return (
            f"restore.fromBackup.source {source.source}: restoring another namespace's snapshots "
            f"needs a VestigeBackupGrant in namespace {namespace} that allows namespace "
            f"{owner.namespace} and agent {agent_id}; there is none, so the restore is refused"
        )
    space = key_space(source.destination, namespace, agent_id)
    if source.key is not None and not in_key_space(space, source.key):
        return f"restore.fromBackup.key {source.key} is not in agent {source.source}'s key space {space}"
    return None


def snapshot_key(prefix: str, backup_name: str) -> str:
    return f"{prefix}{backup_name}{SNAPSHOT_SUFFIX}"


def scheduled_name(memory: str, when: datetime) -> str:
    """The name of a VestigeBackup of ``memory`` created for ``when`` (a scheduled run, or
    ``kubectl vestige backup``): ``<memory>-<UTC yyyymmddhhmmss>`` (at most 46 + 1 + 14 = 61
    characters: a valid Job name too)."""
    return f"{memory}-{when.astimezone(UTC):%Y%m%d%H%M%S}"


def _short(name: str, limit: int = MAX_JOB_NAME) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def job_name(backup_name: str) -> str:
    return _short(backup_name)


def prune_job_name(memory: str, backup_names: Iterable[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(backup_names)).encode()).hexdigest()[:10]
    return _short(f"{memory}-prune-{digest}")


# -- schedule ----------------------------------------------------------------------------------


def latest_fire(schedule: str, now: datetime) -> datetime:
    """The newest cron time at or before ``now`` (UTC, whole seconds)."""
    after = now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
    return next(iter(CronSim(schedule, after, reverse=True)))


@lru_cache(maxsize=16384)
def next_fire(schedule: str, after: datetime) -> datetime | None:
    """The first cron time after ``after`` (None for a schedule cronsim refuses)."""
    try:
        return next(iter(CronSim(schedule, after)))
    except (CronSimError, StopIteration):
        return None


def due_run(schedule: str, baseline: datetime, now: datetime) -> datetime | None:
    """The run to start now, if any: the newest cron time in ``(baseline, now]``.

    ``baseline`` is the newest time a run was created for (else the memory's creation time).
    Several missed times (operator down) yield ONE run, for the newest of them.
    """
    fire = latest_fire(schedule, now)
    return fire if fire > baseline else None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _phase(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def backup_time(obj: Mapping[str, Any]) -> datetime:
    """When a backup happened (completedAt, else scheduled time, else creation)."""
    status = obj.get("status") or {}
    meta = _meta(obj)
    for value in (
        status.get("completedAt"),
        (meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT),
        meta.get("creationTimestamp"),
    ):
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    return datetime.min.replace(tzinfo=UTC)


def last_scheduled(backups: Iterable[Mapping[str, Any]]) -> datetime | None:
    times = [parse_time((_meta(b).get("annotations") or {}).get(ANNOTATION_SCHEDULED_AT)) for b in backups]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def active(backups: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Backups not finished yet (Pending, Running or new), oldest first."""
    out = [b for b in backups if _phase(b) not in (BackupPhase.COMPLETED, BackupPhase.FAILED)]
    return sorted(out, key=lambda b: (_meta(b).get("creationTimestamp") or "", _meta(b).get("name") or ""))


# -- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What retention removes: Completed backups whose snapshots go first (prune Job), then their
    objects; Failed backups beyond the history (no snapshot: deleted directly)."""

    prune: tuple[Mapping[str, Any], ...]
    delete_failed: tuple[Mapping[str, Any], ...]


def retention_plan(
    backups: Sequence[Mapping[str, Any]], retention: BackupRetention, now: datetime
) -> RetentionPlan:
    """The newest Completed backup is always kept; then ``keepLast`` and ``maxAge`` both apply."""
    completed = sorted(
        (b for b in backups if _phase(b) == BackupPhase.COMPLETED), key=backup_time, reverse=True
    )
    prune = []
    limit = timedelta(seconds=max_age_seconds(retention.max_age)) if retention.max_age else None
    for index, obj in enumerate(completed):
        if index == 0:
            continue
        too_many = retention.keep_last is not None and index >= retention.keep_last
        too_old = limit is not None and now - backup_time(obj) > limit
        if too_many or too_old:
            prune.append(obj)
    failed = sorted((b for b in backups if _phase(b) == BackupPhase.FAILED), key=backup_time, reverse=True)
    return RetentionPlan(tuple(prune), tuple(failed[FAILED_HISTORY:]))


# -- status of the VestigeMemory ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """What the VestigeMemory's status says about its backups."""

    status: dict[str, Any] | None
    #: (status, reason, message) of LastBackupSucceeded; None: no finished backup yet.
    condition: tuple[bool, str, str] | None


def summarize(backups: Iterable[Mapping[str, Any]]) -> BackupSummary:
    """``status.backup`` and the LastBackupSucceeded condition from the memory's VestigeBackups."""
    finished = sorted(
        (b for b in backups if _phase(b) in (BackupPhase.COMPLETED, BackupPhase.FAILED)), key=backup_time
    )
    completed = [b for b in finished if _phase(b) == BackupPhase.COMPLETED]
    status = None
    if completed:
        last = completed[-1]
        status = {
            "lastSuccessful": {
                "time": (last.get("status") or {}).get("completedAt"),
                "key": (last.get("status") or {}).get("key"),
                "name": _meta(last).get("name"),
            }
        }
    if not finished:
        return BackupSummary(status, None)
    newest = finished[-1]
    name = _meta(newest).get("name")
    if _phase(newest) == BackupPhase.COMPLETED:
        return BackupSummary(status, (True, "Completed", f"VestigeBackup {name} completed"))
    message = (newest.get("status") or {}).get("message") or "failed"
    return BackupSummary(status, (False, "BackupFailed", f"VestigeBackup {name} failed: {message}"))


# -- rendering ---------------------------------------------------------------------------------


def runner_image(spec: VestigeMemorySpec, images: Images) -> str:
    """The runner's image: the memory's bridge image (built with the backup extra)."""
    return spec.bridge.image or images.bridge


def _credentials_env(destination: BackupDestination) -> list[dict[str, Any]]:
    secret = destination.s3.credentials_secret.name
    return [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": "accessKeyId"}}},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "secretAccessKey"}},
        },
    ]


def _target_args(destination: BackupDestination) -> list[str]:
    s3 = destination.s3
    args = ["--bucket", s3.bucket, "--region", s3.region]
    if s3.endpoint:
        args += ["--endpoint", s3.endpoint]
    if s3.force_path_style:
        args.append("--force-path-style")
    if s3.ca_secret is not None:
        args += ["--ca-file", f"{CA_MOUNT}/{s3.ca_secret.key}"]
    return args


def _ca_volume(
    destination: BackupDestination, name: str = "backup-ca", mount: str = CA_MOUNT
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) for the CA bundle, if any."""
    ca = destination.s3.ca_secret
    if ca is None:
        return [], []
    volume = {
        "name": name,
        "secret": {"secretName": ca.name, "items": [{"key": ca.key, "path": ca.key}]},
    }
    return [volume], [{"name": name, "mountPath": mount, "readOnly": True}]


def vestige_version(spec: VestigeMemorySpec, images: Images) -> str:
    return f"{VestigeGeneration(spec.vestige.generation)} ({spec.vestige.image or images.vestige})"


def _scheduling(memory: Owner, spec: VestigeMemorySpec, follow_agent: bool) -> dict[str, Any]:
    """Node placement of a runner pod: next to the agent's pod (the RWO volume is attached to its
    node), with the agent pod's node selector, tolerations and pull secrets."""
    pod = spec.pod
    out: dict[str, Any] = {}
    if follow_agent:
        out["affinity"] = {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": selector_labels(memory.name)},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    if pod.node_selector:
        out["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        out["tolerations"] = [dict(t) for t in pod.tolerations]
    if pod.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": s.name} for s in pod.image_pull_secrets]
    return out


def _job(
    name: str,
    memory: Owner,
    component: str,
    owner_ref: dict[str, Any],
    pod_spec: dict[str, Any],
    extra_labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    job_labels = {**labels(memory.name, component), LABEL_MEMORY: memory.name, **extra_labels}
    meta: dict[str, Any] = {
        "name": name,
        "namespace": memory.namespace,
        "labels": job_labels,
        "ownerReferences": [owner_ref],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def render_backup_job(
    backup_name: str,
    backup_uid: str,
    memory: Owner,
    spec: VestigeMemorySpec,
    images: Images,
) -> dict[str, Any]:
    """The Job that snapshots ``memory``'s store and uploads it as VestigeBackup ``backup_name``.

    It runs on the agent's node (pod affinity to the agent pod; without it, when the memory is
    suspended, anywhere the volume can attach), mounts the same volume, and is the only pod that
    gets the credentials (secretKeyRef). No service account token: it reports through its
    termination message, which the operator reads.
    """
    if spec.backup is None:
        raise ValueError("the memory has no spec.backup")
    destination = spec.backup.destination
    agent_id = spec.effective_agent_id(memory.name)
    key = snapshot_key(key_space(destination, memory.namespace, agent_id), backup_name)
    ca_volumes, ca_mounts = _ca_volume(destination)
    args = [
        "backup",
        "--data-dir",
        VESTIGE_DATA_DIR,
        "--key",
        key,
        "--work-dir",
        TMP_DIR,
        "--metadata",
        f"{METADATA_NAMESPACE}={memory.namespace}",
        "--metadata",
        f"{METADATA_AGENT_ID}={agent_id}",
        "--metadata",
        f"memory={memory.namespace}/{memory.name}",
        "--metadata",
        f"backup={backup_name}",
        *_target_args(destination),
    ]
    container = {
        "name": "backup",
        "image": runner_image(spec, images),
        "command": RUNNER_COMMAND,
        "args": args,
        "env": [{"name": "HOME", "value": TMP_DIR}, *_credentials_env(destination)],
        "resources": {k: dict(v) for k, v in RUNNER_RESOURCES.items()},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "tmp", "mountPath": TMP_DIR},
            *ca_mounts,
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": pvc_name(memory.name)}},
            {"name": "tmp", "emptyDir": {}},
            *ca_volumes,
        ],
        **_scheduling(memory, spec, follow_agent=not spec.suspend),
    }
    owner_ref = owner_reference(Owner(backup_name, memory.namespace, backup_uid), BACKUP_KIND)
    return _job(
        job_name(backup_name), memory, COMPONENT_BACKUP, owner_ref, pod_spec, {LABEL_BACKUP: backup_name}
    )


def prunable_keys(space: str, backups: Iterable[Mapping[str, Any]]) -> list[str]:
    """The snapshot keys retention may delete: those the memory's own runs recorded (status.key,
    written by the operator) inside its key space. A key outside it (written under another prefix
    before the destination changed) is kept."""
    keys = ((b.get("status") or {}).get("key") for b in backups)
    return [key for key in keys if isinstance(key, str) and key and in_key_space(space, key)]


def render_prune_job(
    memory: Owner, spec: VestigeMemorySpec, images: Images, backups: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The Job that deletes the snapshots of ``backups`` (retention). It needs no volume."""
    if spec.backup is None:
        raise ValueError("the memory has no spec.backup")
    destination = spec.backup.destination
    names = sorted(_meta(b)["name"] for b in backups)
    space = key_space(destination, memory.namespace, spec.effective_agent_id(memory.name))
    args = ["prune"]
    for key in prunable_keys(space, backups):
        args += ["--key", key]
    args += ["--prefix", space, *_target_args(destination)]
    ca_volumes, ca_mounts = _ca_volume(destination)
    container = {
        "name": "prune",
        "image": runner_image(spec, images),
        "command": RUNNER_COMMAND,
        "args": args,
        "env": [{"name": "HOME", "value": TMP_DIR}, *_credentials_env(destination)],
        "resources": {k: dict(v) for k, v in RUNNER_RESOURCES.items()},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_DIR}, *ca_mounts],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *ca_volumes],
        **_scheduling(memory, spec, follow_agent=False),
    }
    return _job(
        prune_job_name(memory.name, names),
        memory,
        COMPONENT_PRUNE,
        owner_reference(memory),
        pod_spec,
        {},
        {ANNOTATION_PRUNES: json.dumps(names)},
    )


def render_restore_init_containers(
    owner: Owner, spec: VestigeMemorySpec, images: Images
) -> list[dict[str, Any]]:
    """The agent pod's init containers that fill an empty volume from a snapshot, or from a
    continuous replica at ``pointInTime`` (exit 3 and a termination message of the container
    ``restore`` when the volume already holds a store it did not restore, or the replica cannot
    give that moment)."""
    if spec.restore is None:
        raise ValueError("the memory has no spec.restore")
    source = spec.restore.from_backup
    namespace, agent_id = restore_source(spec)
    if source.point_in_time is not None:
        return _restore_replica_containers(spec, images, namespace, agent_id)
    args = ["restore", "--data-dir", VESTIGE_DATA_DIR]
    args += ["--key", source.key] if source.key else ["--latest"]
    if source.sha256:
        args += ["--expect-sha256", source.sha256]
    args += [
        "--prefix",
        key_space(source.destination, namespace, agent_id),
        "--expect-namespace",
        namespace,
        "--expect-agent-id",
        agent_id,
    ]
    return [_runner_restore_container(spec, images, args)]


def _runner_restore_container(spec: VestigeMemorySpec, images: Images, args: list[str]) -> dict[str, Any]:
    """The init container ``restore``: the runner with ``args`` (then the source's target), the
    source's credentials, the data volume and a scratch directory. Its refusal (exit 3 and a
    termination message) is what ``restore_refusal`` reads."""
    assert spec.restore is not None
    destination = spec.restore.from_backup.destination
    _, ca_mounts = _ca_volume(destination)
    return {
        "name": "restore",
        "image": runner_image(spec, images),
        "command": RUNNER_COMMAND,
        "args": [*args, *_target_args(destination)],
        "env": [{"name": "HOME", "value": TMP_DIR}, *_credentials_env(destination)],
        "resources": {k: dict(v) for k, v in RUNNER_RESOURCES.items()},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "restore-tmp", "mountPath": TMP_DIR},
            *ca_mounts,
        ],
    }


def restore_volumes(spec: VestigeMemorySpec) -> list[dict[str, Any]]:
    """Extra pod volumes the restore init containers need."""
    if spec.restore is None:
        return []
    ca_volumes, _ = _ca_volume(spec.restore.from_backup.destination)
    return [{"name": "restore-tmp", "emptyDir": {}}, *ca_volumes]


# -- continuous backup (Litestream) ------------------------------------------------------------

#: The control API's socket (``GET /list``: last_sync_at) on an emptyDir shared in the pod.
LITESTREAM_RUN = "/run/litestream"
LITESTREAM_SOCKET = f"{LITESTREAM_RUN}/litestream.sock"
LITESTREAM_RUN_VOLUME = "litestream-run"
LITESTREAM_METRICS_PORT = 9091
LITESTREAM_PORT_NAME = "litestream"
#: The sidecar's CA bundle: its own volume (the memory's destination may name another CA than
#: the restore's source, whose bundle is at CA_MOUNT).
SIDECAR_CA_VOLUME = "litestream-ca"
SIDECAR_CA_MOUNT = "/etc/litestream/ca"
#: Per-sync files are kept this long after compaction: a point in time inside it is restored to
#: the sync; older ones to the level-1 compaction (30 s) before it.
LITESTREAM_L0_RETENTION = "1h"
#: The WAL read period is half the sync interval, bounded to [250ms, 1s].
MONITOR_INTERVAL_BOUNDS_MS = (250, 1000)
LITESTREAM_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
#: The restore init container filled by Litestream (after the runner's ``restore`` check).
REPLICA_RESTORE_CONTAINER = "restore-replica"


def monitor_interval(sync_interval: str) -> str:
    low, high = MONITOR_INTERVAL_BOUNDS_MS
    half = round(duration_seconds(sync_interval) * 1000 / 2)
    return f"{min(max(half, low), high)}ms"


def litestream_env(
    destination: BackupDestination,
    path: str,
    continuous: ContinuousBackupSpec | None,
    ca_mount: str = CA_MOUNT,
) -> list[dict[str, Any]]:
    """The environment of a Litestream container (images/litestream/litestream.yml reads every
    value from it): the replica at ``path`` and, for the sidecar (``continuous``), its intervals,
    metrics and control socket; then the credentials by secretKeyRef. The one mapping of the
    settings to Litestream's variables (the sidecar, the restore init container, the tests)."""
    s3 = destination.s3
    values = {
        "LITESTREAM_DB": VESTIGE_DATABASE,
        "LITESTREAM_BUCKET": s3.bucket,
        "LITESTREAM_PATH": path,
        "LITESTREAM_ENDPOINT": s3.endpoint or "",
        "LITESTREAM_REGION": s3.region,
        "LITESTREAM_FORCE_PATH_STYLE": "true" if s3.force_path_style else "false",
        "LITESTREAM_MONITOR_INTERVAL": monitor_interval(continuous.sync_interval) if continuous else "",
        "LITESTREAM_SYNC_INTERVAL": continuous.sync_interval if continuous else "",
        "LITESTREAM_SNAPSHOT_INTERVAL": continuous.snapshot_interval if continuous else "",
        "LITESTREAM_RETENTION": continuous.retention if continuous else "",
        "LITESTREAM_L0_RETENTION": LITESTREAM_L0_RETENTION if continuous else "",
        "LITESTREAM_METRICS_ADDR": f":{LITESTREAM_METRICS_PORT}" if continuous else "",
        "LITESTREAM_SOCKET_ENABLED": "true" if continuous else "false",
        "LITESTREAM_SOCKET": LITESTREAM_SOCKET if continuous else "",
    }
    env = [{"name": name, "value": value} for name, value in values.items()]
    if s3.ca_secret is not None:
        # Go adds every certificate in SSL_CERT_DIR to the system roots (the image's public CAs
        # stay). Not AWS_CA_BUNDLE: Litestream 0.5.18 then fails to start ("unable to add custom
        # RootCAs HTTPClient", its own http.Client), tests/continuous/test_private_ca.py.
        env.append({"name": "SSL_CERT_DIR", "value": ca_mount})
    return env + _credentials_env(destination)


def continuous_enabled(spec: VestigeMemorySpec) -> bool:
    return spec.backup is not None and spec.backup.continuous is not None and spec.backup.continuous.enabled


def render_replication_sidecar(owner: Owner, spec: VestigeMemorySpec, images: Images) -> dict[str, Any]:
    """The Litestream sidecar: a native sidecar (an init container with ``restartPolicy: Always``),
    so it starts before Vestige and stops after it (its last sync runs after the last write).
    It replicates the store to the memory's own key space, gets the credentials (the only
    container of the running pod that does) and serves the control socket on an emptyDir. No
    readiness probe: a lagging replica must not take the memory out of its Service."""
    if spec.backup is None or spec.backup.continuous is None:
        raise ValueError("the memory has no spec.backup.continuous")
    destination = spec.backup.destination
    path = replica_path(destination, owner.namespace, spec.effective_agent_id(owner.name))
    _, ca_mounts = _ca_volume(destination, SIDECAR_CA_VOLUME, SIDECAR_CA_MOUNT)
    return {
        "name": "litestream",
        "image": images.litestream,
        "args": ["replicate"],
        "restartPolicy": "Always",
        "env": litestream_env(destination, path, spec.backup.continuous, SIDECAR_CA_MOUNT),
        "ports": [
            {"name": LITESTREAM_PORT_NAME, "containerPort": LITESTREAM_METRICS_PORT, "protocol": "TCP"}
        ],
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": LITESTREAM_PORT_NAME, "scheme": "HTTP"},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {k: dict(v) for k, v in LITESTREAM_RESOURCES.items()},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": LITESTREAM_RUN_VOLUME, "mountPath": LITESTREAM_RUN},
            *ca_mounts,
        ],
    }


def replication_volumes(spec: VestigeMemorySpec) -> list[dict[str, Any]]:
    """Extra pod volumes of the sidecar: the control socket's emptyDir, its CA bundle if any."""
    if not continuous_enabled(spec) or spec.backup is None:
        return []
    ca_volumes, _ = _ca_volume(spec.backup.destination, SIDECAR_CA_VOLUME, SIDECAR_CA_MOUNT)
    return [{"name": LITESTREAM_RUN_VOLUME, "emptyDir": {}}, *ca_volumes]


def _restore_replica_containers(
    spec: VestigeMemorySpec, images: Images, namespace: str, agent_id: str
) -> list[dict[str, Any]]:
    """A continuous restore: the runner's ``restore-check`` (named ``restore``, so its refusal,
    exit 3, is read as a snapshot restore's is), then ``litestream restore`` into the volume."""
    assert spec.restore is not None and spec.restore.from_backup.point_in_time is not None
    source = spec.restore.from_backup
    point = source.point_in_time
    path = replica_path(source.destination, namespace, agent_id)
    _, ca_mounts = _ca_volume(source.destination)
    check = _runner_restore_container(
        spec,
        images,
        [
            "restore-check",
            "--data-dir",
            VESTIGE_DATA_DIR,
            "--prefix",
            key_space(source.destination, namespace, agent_id),
            "--replica",
            path,
            "--point-in-time",
            point,
            "--expect-namespace",
            namespace,
            "--expect-agent-id",
            agent_id,
        ],
    )
    # -if-replica-exists is never passed: with it a refused time exits 0 with NO database.
    args = ["restore", "-if-db-not-exists", "-integrity-check", "full"]
    if point != LATEST:
        args += ["-timestamp", point]
    restore = {
        "name": REPLICA_RESTORE_CONTAINER,
        "image": images.litestream,
        "args": [*args, VESTIGE_DATABASE],
        "env": litestream_env(source.destination, path, None),
        "resources": {k: dict(v) for k, v in LITESTREAM_RESOURCES.items()},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}, *ca_mounts],
    }
    return [check, restore]


# -- reading results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished runner Job: whether it succeeded and what the runner reported."""

    succeeded: bool
    result: dict[str, Any]
    message: str


def _terminated(pod: Mapping[str, Any], container: str, init: bool = False) -> Mapping[str, Any] | None:
    key = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(key) or []:
        if status.get("name") == container:
            state = status.get("state") or {}
            last = status.get("lastState") or {}
            return state.get("terminated") or last.get("terminated")
    return None


def parse_result(text: str | None) -> dict[str, Any] | None:
    """The runner's JSON result from a termination message (the last JSON line of it)."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def job_outcome(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], container: str
) -> JobOutcome | None:
    """The outcome of a finished Job (None while it runs)."""
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    complete = (conditions.get("Complete") or {}).get("status") == "True"
    failed = (conditions.get("Failed") or {}).get("status") == "True"
    if not complete and not failed:
        return None
    result: dict[str, Any] | None = None
    for pod in pods:
        terminated = _terminated(pod, container)
        if terminated is not None:
            result = parse_result(terminated.get("message"))
            if result is not None:
                break
    if complete and result is not None and result.get("ok") is True:
        return JobOutcome(True, result, str(result.get("message") or "completed"))
    if result is not None and result.get("message"):
        return JobOutcome(False, result, str(result["message"]))
    reason = (conditions.get("Failed") or {}).get("message") or (conditions.get("Failed") or {}).get("reason")
    return JobOutcome(False, result or {}, f"the runner reported no result ({reason or 'no message'})")


#: Waiting reasons of a runner container that no amount of waiting fixes without a change.
STUCK_REASONS = frozenset({"CreateContainerConfigError", "InvalidImageName", "CreateContainerError"})


def stuck_reason(pods: Iterable[Mapping[str, Any]], container: str) -> str | None:
    """Why the runner container of a Job that has not finished cannot start (e.g. the credentials
    Secret or one of its keys is missing), so the run can fail now instead of at its deadline."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if status.get("name") == container and waiting.get("reason") in STUCK_REASONS:
                return (
                    f"the {container} container cannot start: {waiting.get('message') or waiting['reason']}"
                )
    return None


#: The restore's init containers, in their order (a snapshot restore has the first only).
RESTORE_CONTAINERS = ("restore", REPLICA_RESTORE_CONTAINER)
#: At most this much of a failed restore container's message reaches the status.
RESTORE_FAILURE_CHARS = 400


def restore_failure(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """Why a restore init container failed (any exit but 0 and the refusal's: the kubelet runs
    it again, so it may still succeed), from the agent's pods; else None. The runner's result
    message, else the last line of the container's log (FallbackToLogsOnError; neither holds
    credentials)."""
    for pod in pods:
        for name in RESTORE_CONTAINERS:
            terminated = _terminated(pod, name, init=True)
            code = (terminated or {}).get("exitCode")
            if terminated is None or code in (0, EXIT_REFUSED):
                continue
            text = str(terminated.get("message") or "")
            result = parse_result(text) or {}
            lines = [line for line in text.strip().splitlines() if line.strip()]
            detail = str(
                result.get("message") or (lines[-1] if lines else terminated.get("reason") or "no message")
            )
            return f"init container {name} exited with {code}: {detail[:RESTORE_FAILURE_CHARS]}"
    return None


def restore_refusal(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """Why the restore init container refused to run (exit 3), from the agent's pods; else None."""
    for pod in pods:
        terminated = _terminated(pod, "restore", init=True)
        if terminated is not None and terminated.get("exitCode") == EXIT_REFUSED:
            result = parse_result(terminated.get("message")) or {}
            return str(result.get("message") or "the volume already holds a store: restore refused")
    return None


def backup_manifest(
    memory: Owner, name: str, scheduled_at: datetime | None, *, generate: bool = False
) -> dict[str, Any]:
    """A VestigeBackup of ``memory``, as the scheduler (``scheduled_at``: its cron time) and
    ``kubectl vestige backup`` (None) create it: owned by the memory, so the objects go with it
    (the snapshots in the bucket stay). ``generate``: the API server names it ``<name>-<random>``
    (the scheduler's fallback when the name is taken by an object it did not create)."""
    meta: dict[str, Any] = {
        "namespace": memory.namespace,
        "labels": {LABEL_MEMORY: memory.name, LABEL_MANAGED_BY: MANAGED_BY},
        "ownerReferences": [owner_reference(memory)],
    }
    if generate:
        meta["generateName"] = f"{name[: MAX_GENERATE_PREFIX - 1]}-"
    else:
        meta["name"] = name
    if scheduled_at is not None:
        meta["annotations"] = {ANNOTATION_SCHEDULED_AT: format_time(scheduled_at)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": BACKUP_KIND,
        "metadata": meta,
        "spec": {"memory": memory.name},
    }


def is_scheduled_run(obj: Mapping[str, Any], memory: Owner, due: datetime) -> bool:
    """Whether ``obj`` is the scheduler's VestigeBackup of ``memory`` for the run due at ``due``."""
    annotations = _meta(obj).get("annotations") or {}
    return (obj.get("spec") or {}).get("memory") == memory.name and parse_time(
        annotations.get(ANNOTATION_SCHEDULED_AT)
    ) == due
