"""``python -m vestige_backup backup | restore | restore-check | prune``: the runner the operator
starts. ``restore-check`` guards a continuous (Litestream) restore: it runs before ``litestream
restore`` in the agent pod and refuses a volume that holds a store, a missing replica and a point
in time outside the replica's retained window, before anything is written.

Credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (set from the credentials
Secret by secretKeyRef in the Job's pod or the init container only). The result is one JSON object
written to ``--result-file`` (the container's termination message, which the operator reads) and
to stdout: ``{"ok": true, "key": ..., "size": ..., "sha256": ...}`` or ``{"ok": false, "message":
...}``. Exit status: 0 done, 1 failed, 3 restore refused (the volume already holds a store, or
the continuous replica cannot give the requested moment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vestige_backup import store
from vestige_backup.errors import ObjectStoreError, scrub
from vestige_backup.keys import belongs, under

EXIT_FAILED = 1
EXIT_REFUSED = 3
#: The kubelet keeps at most 4096 bytes of a termination message.
MAX_RESULT_BYTES = 4000


def _target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--force-path-style", action="store_true")
    parser.add_argument("--ca-file", default=None)
    parser.add_argument(
        "--result-file",
        default=os.environ.get("VESTIGE_BACKUP_RESULT_FILE", "/dev/termination-log"),
        help="where the JSON result goes (the termination message path in a pod)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vestige-backup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="snapshot the store and upload it")
    backup.add_argument("--data-dir", type=Path, required=True)
    backup.add_argument("--key", required=True)
    backup.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    backup.add_argument("--metadata", action="append", default=[], metavar="K=V")
    _target_args(backup)
    restore = sub.add_parser("restore", help="fill an empty data directory from a snapshot")
    restore.add_argument("--data-dir", type=Path, required=True)
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--key")
    which.add_argument("--latest", action="store_true")
    restore.add_argument(
        "--prefix", required=True, help="the source agent's key space: --key must be under it"
    )
    restore.add_argument("--expect-namespace", required=True, help="namespace the snapshot must record")
    restore.add_argument("--expect-agent-id", required=True, help="agent id the snapshot must record")
    restore.add_argument(
        "--expect-sha256",
        default=None,
        help="sha256 the operator recorded for the snapshot (VestigeBackup status); trusted over "
        "the object's own metadata",
    )
    _target_args(restore)
    check = sub.add_parser(
        "restore-check", help="before `litestream restore`: refuse what it must not do, mark the volume"
    )
    check.add_argument("--data-dir", type=Path, required=True)
    check.add_argument("--prefix", required=True, help="the source agent's key space")
    check.add_argument("--replica", required=True, help="the continuous replica's path (under --prefix)")
    check.add_argument("--point-in-time", required=True, help="RFC 3339 time or latest")
    check.add_argument("--expect-namespace", required=True)
    check.add_argument("--expect-agent-id", required=True)
    _target_args(check)
    prune = sub.add_parser("prune", help="delete snapshots (retention)")
    prune.add_argument("--key", dest="keys", action="append", default=[])
    prune.add_argument("--prefix", required=True, help="the agent's key space: every --key must be under it")
    _target_args(prune)
    return parser


def _write_result(path: str, result: dict[str, Any]) -> None:
    text = scrub(json.dumps(result, separators=(",", ":")))
    if len(text.encode()) > MAX_RESULT_BYTES:
        result = {k: v for k, v in result.items() if k != "files"}
        if "message" in result:
            result["message"] = str(result["message"])[:1000]
        text = scrub(json.dumps(result, separators=(",", ":")))
    print(text, flush=True)
    try:
        Path(path).write_text(text)
    except OSError as exc:
        print(f"cannot write the result to {path}: {exc}", file=sys.stderr)


def _target(args: argparse.Namespace) -> Any:
    from vestige_backup.objects import Target

    return Target(
        bucket=args.bucket,
        endpoint=args.endpoint,
        region=args.region,
        force_path_style=args.force_path_style,
        ca_file=args.ca_file,
    )


def run_backup(args: argparse.Namespace) -> dict[str, Any]:
    from vestige_backup.objects import Store

    started = time.monotonic()
    target = _target(args)
    bucket = Store(target)
    snapshot = store.create_snapshot(args.data_dir, args.work_dir, "snapshot.tar.gz")
    try:
        metadata = dict(item.split("=", 1) for item in args.metadata if "=" in item)
        size = bucket.upload(snapshot.path, args.key, snapshot.sha256, metadata)
    finally:
        snapshot.path.unlink(missing_ok=True)
    return {
        "ok": True,
        "key": args.key,
        "size": size,
        "sha256": snapshot.sha256,
        "files": snapshot.files,
        "seconds": round(time.monotonic() - started, 3),
    }


def run_restore(args: argparse.Namespace) -> dict[str, Any]:
    from vestige_backup.objects import Store

    data_dir: Path = args.data_dir
    marker = store.restore_marker(data_dir)
    if marker is not None:
        return {"ok": True, "key": marker.get("key"), "message": "already restored; nothing to do"}
    if store.holds_store(data_dir):
        raise store.RestoreRefused(
            f"{data_dir} already holds a Vestige store that was not restored from a snapshot: "
            "refusing to overwrite it (restore needs a new, empty volume)"
        )
    who = f"{args.expect_namespace}/{args.expect_agent_id}"
    if args.key is not None and not under(args.prefix, args.key):
        raise store.StoreError(f"snapshot {args.key} is not in agent {who}'s key space {args.prefix}")
    bucket = Store(_target(args))
    key = args.key or bucket.latest(
        args.prefix, lambda meta: belongs(meta, args.expect_namespace, args.expect_agent_id)
    )
    metadata = bucket.metadata(key)
    if not belongs(metadata, args.expect_namespace, args.expect_agent_id):
        raise store.StoreError(f"snapshot {key} does not record agent {who}: not restored")
    sha256 = args.expect_sha256 or bucket.recorded_sha256(key, metadata)
    if not sha256:
        raise store.StoreError(f"snapshot {key} has no recorded sha256: it cannot be verified, not restored")
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".restore-download-", dir=data_dir.parent))
    try:
        archive = work / "snapshot.tar.gz"
        bucket.download(key, archive)
        files = store.restore_snapshot(archive, data_dir, sha256, {"key": key, "sha256": sha256})
    finally:
        for child in work.iterdir():
            child.unlink(missing_ok=True)
        work.rmdir()
    return {"ok": True, "key": key, "sha256": sha256, "files": files, "message": f"restored {key}"}


#: Where Litestream's S3 client keeps its files under a replica's path:
#: ``<level, 4 digits>/<minTXID>-<maxTXID>.ltx``; level 9 holds the full snapshots (the start of
#: every restore).
SNAPSHOT_LEVEL_DIR = "0009/"


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise store.StoreError(f"point in time {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise store.StoreError(f"point in time {value!r} has no time zone")
    return parsed


def run_restore_check(args: argparse.Namespace, now: datetime | None = None) -> dict[str, Any]:
    """Refuse (exit 3, nothing written) a volume holding a store, a replica that does not exist,
    and a point in time in the future or before the oldest snapshot the replica still holds:
    Litestream itself gives "latest" for a future time and may restore an OLDER state, exit 0, for
    a time that left its window. Then write the restore marker, so a pod restart after the
    restore passes (``litestream restore -if-db-not-exists`` is then a no-op)."""
    from vestige_backup.objects import Store

    data_dir: Path = args.data_dir
    marker = store.restore_marker(data_dir)
    if marker is not None:
        return {"ok": True, "replica": marker.get("replica"), "message": "already restored; nothing to do"}
    if store.holds_store(data_dir):
        raise store.RestoreRefused(
            f"{data_dir} already holds a Vestige store that was not restored: refusing to overwrite "
            "it (restore needs a new, empty volume)"
        )
    who = f"{args.expect_namespace}/{args.expect_agent_id}"
    replica = args.replica.rstrip("/") + "/"
    if not under(args.prefix, replica) or not args.prefix.endswith(f"{who}/"):
        raise store.StoreError(f"replica {args.replica} is not in agent {who}'s key space {args.prefix}")
    bucket = Store(_target(args))
    files = [(key, when) for key, when in bucket.list_keys(replica) if key.endswith(".ltx")]
    if not files:
        raise store.RestoreRefused(
            f"no continuous replica of agent {who} under {replica} in {bucket.target.where}: nothing "
            "to restore (is spec.backup.continuous enabled on the source?)"
        )
    if args.point_in_time != "latest":
        when = _parse_time(args.point_in_time)
        now = now or datetime.now(UTC)
        if when > now:
            raise store.RestoreRefused(
                f"point in time {args.point_in_time} is in the future (now {now:%Y-%m-%dT%H:%M:%SZ}): "
                "refused (use latest)"
            )
        level = f"{replica}{SNAPSHOT_LEVEL_DIR}"
        snapshots = [bucket.replica_time(key, modified) for key, modified in files if key.startswith(level)]
        oldest = min(snapshots) if snapshots else None
        if oldest is None or when < oldest:
            since = (
                f"the oldest restorable moment is {oldest:%Y-%m-%dT%H:%M:%SZ}"
                if oldest
                else "no snapshot yet"
            )
            raise store.RestoreRefused(
                f"point in time {args.point_in_time} is outside the retained window of agent {who}'s "
                f"replica ({since}): refused, nothing restored"
            )
    data_dir.mkdir(parents=True, exist_ok=True)
    store.write_restore_marker(data_dir, {"replica": replica, "pointInTime": args.point_in_time})
    return {"ok": True, "replica": replica, "message": f"restoring {who}'s replica at {args.point_in_time}"}


def run_prune(args: argparse.Namespace) -> dict[str, Any]:
    from vestige_backup.objects import Store

    outside = [key for key in args.keys if not under(args.prefix, key)]
    if outside:
        raise store.StoreError(f"refusing to delete keys outside {args.prefix}: {', '.join(outside)}")
    deleted = Store(_target(args)).delete(list(args.keys))
    return {"ok": True, "deleted": deleted}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {
        "backup": run_backup,
        "restore": run_restore,
        "restore-check": run_restore_check,
        "prune": run_prune,
    }
    try:
        result = runners[args.command](args)
    except store.RestoreRefused as exc:
        _write_result(args.result_file, {"ok": False, "refused": True, "message": str(exc)})
        return EXIT_REFUSED
    except Exception as exc:  # every failure becomes a result the operator can show
        known = isinstance(exc, store.StoreError | ObjectStoreError)
        message = str(exc) if known else f"{args.command} failed: {type(exc).__name__}: {exc}"
        _write_result(args.result_file, {"ok": False, "message": message})
        return EXIT_FAILED
    _write_result(args.result_file, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
