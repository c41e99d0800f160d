"""The operator's point-in-time restore, as real processes: the init containers the operator
renders (``restore`` = the runner's ``restore-check``, then ``restore-replica`` = ``litestream
restore``), run with their rendered arguments and environment against a replica Litestream wrote
to the S3 server, with the v3 stand-in's store.

Proves: a time between two ingests restores the memories before it and not those after; a pod
restart after the restore is a no-op; a future time, a time before the oldest retained snapshot,
a volume that holds a store and a source without a replica are refused (exit 3, the refusal the
operator reads) with nothing written.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from vestige_operator import backup
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import render_deployment
from vestige_operator.vocabulary import DATA_MOUNT, Images, Owner

from tests.backup.conftest import run_runner, runner_venv
from tests.continuous.conftest import BUCKET, FLAVOURS, Flavour, MakeSidecar, ingestor
from tests.litestream import build
from tests.litestream.replica import CONFIG, settings_for
from tests.s3.server import S3Server

NAMESPACE = "tenant-a"
PREFIX = "operator/"
IMAGES = Images(vestige="v", bridge="b", litestream="l")


def _credentials(s3: S3Server) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _destination(s3: S3Server) -> dict[str, Any]:
    return {
        "s3": {
            "endpoint": s3.endpoint,
            "bucket": BUCKET,
            "prefix": PREFIX,
            "credentialsSecret": {"name": "s3-creds"},
            "forcePathStyle": True,
        }
    }


def _init_containers(s3: S3Server, source: str, point: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = VestigeMemorySpec.model_validate(
        {"restore": {"fromBackup": {"destination": _destination(s3), "source": source, "pointInTime": point}}}
    )
    pod = render_deployment(Owner("restored", NAMESPACE, "u"), spec, IMAGES, "h")["spec"]["template"]["spec"]
    check, fill = pod["initContainers"]
    return check, fill


def _local(value: str, volume: Path, mounts: dict[str, Path] | None = None) -> str:
    """A path of the pod's data volume on the test's volume directory (and of the other
    ``mounts``, e.g. a CA bundle's, on theirs)."""
    for mount, local in {DATA_MOUNT: volume, **(mounts or {})}.items():
        if value == mount or value.startswith(f"{mount}/"):
            return str(local / value.removeprefix(mount).lstrip("/"))
    return value


def _check(
    check: dict[str, Any], volume: Path, s3: S3Server, tmp: Path, mounts: dict[str, Path] | None = None
) -> tuple[int, dict[str, Any]]:
    args = [_local(a, volume, mounts) for a in check["args"]]
    result = tmp / f"result-{time.monotonic_ns()}.json"
    res = run_runner(runner_venv(), args, env=_credentials(s3), result_file=result)
    assert s3.secret_key not in res.stdout + res.stderr
    return res.returncode, json.loads(result.read_text())


def _fill(
    fill: dict[str, Any], volume: Path, s3: S3Server, mounts: dict[str, Path] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {e["name"]: _local(e["value"], volume, mounts) for e in fill["env"] if "value" in e}
    args = [_local(a, volume, mounts) for a in fill["args"]]
    return subprocess.run(
        [str(build.ensure()), args[0], "-config", str(CONFIG), *args[1:]],
        env={"PATH": "/usr/bin:/bin", "HOME": str(volume), **env, **_credentials(s3)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


@pytest.fixture
def between(tmp_path: Path, s3: S3Server, replicator: MakeSidecar) -> tuple[str, Flavour]:
    """Agent ``pit`` replicated by Litestream to the operator's key space: memories 1-2, the
    returned moment, memories 3-4."""
    flavour = FLAVOURS["standin-v3"]
    volume = tmp_path / "source"
    path = backup.replica_path(
        VestigeMemorySpec.model_validate({"backup": {"destination": _destination(s3)}}).backup.destination,  # type: ignore[union-attr]
        NAMESPACE,
        "pit",
    )
    server = flavour.start(volume, tmp_path)
    server.initialize()
    sidecar = replicator(Flavour.db(volume), settings_for(s3, BUCKET, path), _credentials(s3))
    ing = ingestor(server, flavour)
    try:
        assert ing.ingest(1)
        sidecar.start()
        time.sleep(3)  # the first snapshot (level 9) is written when the sidecar starts
        assert ing.ingest(2)
        time.sleep(1.5)
        moment = _rfc3339(time.time())
        time.sleep(1.5)
        assert ing.ingest(3) and ing.ingest(4)
        time.sleep(2)
    finally:
        assert sidecar.stop() == 0, sidecar.output()[-3000:]
        server.close()
    return moment, flavour


def test_restore_to_a_moment_and_the_restart_is_a_no_op(
    tmp_path: Path, s3: S3Server, between: tuple[str, Flavour]
) -> None:
    moment, flavour = between
    check, fill = _init_containers(s3, f"{NAMESPACE}/pit", moment)
    volume = tmp_path / "new-volume"
    volume.mkdir()
    code, result = _check(check, volume, s3, tmp_path)
    assert code == 0 and result["ok"] is True, result
    res = _fill(fill, volume, s3)
    assert res.returncode == 0, res.stdout + res.stderr
    db = Flavour.db(volume)
    assert _integrity(db) == "ok"
    assert flavour.markers(db) == {1, 2}
    # the pod restarts: the check passes (its marker), the restore leaves the store alone
    code, result = _check(check, volume, s3, tmp_path)
    assert code == 0 and "already restored" in result["message"]
    before = db.stat().st_mtime_ns
    assert _fill(fill, volume, s3).returncode == 0
    assert db.stat().st_mtime_ns == before
    # latest has every memory
    latest_check, latest_fill = _init_containers(s3, f"{NAMESPACE}/pit", "latest")
    latest = tmp_path / "latest-volume"
    latest.mkdir()
    assert _check(latest_check, latest, s3, tmp_path)[0] == 0
    assert _fill(latest_fill, latest, s3).returncode == 0
    assert flavour.markers(Flavour.db(latest)) == {1, 2, 3, 4}


def test_refusals_touch_nothing(tmp_path: Path, s3: S3Server, between: tuple[str, Flavour]) -> None:
    moment, _ = between
    for case in ("future", "before-window", "holds-a-store", "no-replica"):
        source, point = f"{NAMESPACE}/pit", moment
        volume = tmp_path / case
        volume.mkdir()
        if case == "future":
            point = _rfc3339(time.time() + 3600)
        elif case == "before-window":
            point = _rfc3339(time.time() - 3600)
        elif case == "holds-a-store":
            Flavour.db(volume).parent.mkdir()
            shutil.copy(Flavour.db(tmp_path / "source"), Flavour.db(volume))
        else:
            source = f"{NAMESPACE}/nobody"
        before = sorted(p.relative_to(volume) for p in volume.rglob("*"))
        check, _ = _init_containers(s3, source, point)
        code, result = _check(check, volume, s3, tmp_path)
        assert code == backup.EXIT_REFUSED, (case, result)
        assert result["ok"] is False and result["refused"] is True
        print(f"{case}: {result['message']}")
        assert sorted(p.relative_to(volume) for p in volume.rglob("*")) == before, case  # nothing written
        # the operator reads it from the pod as it reads the snapshot restore's refusal
        terminated = {"exitCode": code, "message": json.dumps(result)}
        pod = {
            "status": {
                "initContainerStatuses": [{"name": check["name"], "state": {"terminated": terminated}}]
            }
        }
        assert backup.restore_refusal([pod]) == result["message"]
