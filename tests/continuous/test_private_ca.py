"""Continuous backup to an S3 endpoint whose certificate a private CA signed
(``destination.s3.caSecret``), as real processes: versitygw serving HTTPS with a certificate of a
CA made here; Litestream replicating with the bundle where the operator's sidecar gets it
(``SSL_CERT_DIR``: its CA volume, added to the image's public roots), and the point-in-time
restore's two init containers run with their rendered arguments and environment (the runner's
check with ``--ca-file``, Litestream's restore with ``SSL_CERT_DIR``), and a snapshot (the backup
Job's runner, ``--ca-file``). ``AWS_CA_BUNDLE``, which
the AWS SDK documents, makes Litestream 0.5.18 fail at start (``unable to add custom RootCAs
HTTPClient``): found here, hence the variable Go's own TLS reads. Without the bundle nothing is
uploaded: the CA is what lets it through, not a skipped verification.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.backup import CA_MOUNT, render_backup_job
from vestige_operator.children import render_deployment
from vestige_operator.vocabulary import Owner

from tests.cluster.pki import generate
from tests.continuous.conftest import BUCKET, FLAVOURS, Flavour, MakeSidecar, ingestor
from tests.continuous.test_operator_restore import IMAGES, _check, _credentials, _fill, _local, _rfc3339
from tests.litestream.replica import settings_for
from tests.s3.server import S3Server

NAMESPACE = "tenant-ca"
CA_KEY = "ca.crt"


@pytest.fixture(scope="module")
def tls_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pki = generate(tmp_path_factory.mktemp("pki"), "10.96.0.1")  # its serving pair names 127.0.0.1
    root = tmp_path_factory.mktemp("s3-tls") / "root"
    server = S3Server(root, tls=(pki.serving_cert, pki.serving_key), ca=pki.ca_cert).start()
    server.make_bucket(BUCKET)
    yield server
    server.stop()


def _destination(s3: S3Server) -> dict[str, Any]:
    return {
        "s3": {
            "endpoint": s3.endpoint,
            "bucket": BUCKET,
            "credentialsSecret": {"name": "s3-creds"},
            "caSecret": {"name": "s3-ca", "key": CA_KEY},
            "forcePathStyle": True,
        }
    }


def _pod(spec: dict[str, Any], name: str) -> dict[str, Any]:
    model = VestigeMemorySpec.model_validate(spec)
    return render_deployment(Owner(name, NAMESPACE, "u"), model, IMAGES, "h")["spec"]["template"]["spec"]


def _bundle(pod: dict[str, Any], container: dict[str, Any]) -> str:
    """SSL_CERT_DIR of ``container``: the mount path of the caSecret's volume."""
    env = {e["name"]: e.get("value") for e in container["env"]}
    directory = str(env["SSL_CERT_DIR"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "s3-ca", "items": [{"key": CA_KEY, "path": CA_KEY}]}
    return directory


def test_replicate_and_restore_through_a_private_ca(
    tmp_path: Path, tls_s3: S3Server, replicator: MakeSidecar
) -> None:
    s3 = tls_s3
    assert s3.endpoint.startswith("https://") and s3.ca is not None
    ca_dir = tmp_path / "ca-volume"  # what the kubelet projects from the caSecret
    ca_dir.mkdir()
    shutil.copy(s3.ca, ca_dir / CA_KEY)

    # the sidecar as the operator renders it: the bundle in its own CA volume
    pod = _pod({"backup": {"destination": _destination(s3), "continuous": {"enabled": True}}}, "tls")
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "litestream")
    mount = _bundle(pod, sidecar)
    path = next(e["value"] for e in sidecar["env"] if e["name"] == "LITESTREAM_PATH")

    flavour = FLAVOURS["standin-v3"]
    source = tmp_path / "source"
    server = flavour.start(source, tmp_path)
    server.initialize()
    trusted = {**_credentials(s3), "SSL_CERT_DIR": _local(mount, source, {mount: ca_dir})}
    replicating = replicator(Flavour.db(source), settings_for(s3, BUCKET, path), trusted)
    # the same store to another key space, without the bundle: the endpoint is not trusted
    untrusting = replicator(Flavour.db(source), settings_for(s3, BUCKET, "untrusted/"), _credentials(s3))
    ing = ingestor(server, flavour)
    try:
        assert ing.ingest(1)
        replicating.start()
        untrusting.start()
        time.sleep(3)  # the first snapshot is written when the sidecar sees the store
        assert ing.ingest(2)
        time.sleep(1.5)
        moment = _rfc3339(time.time())
        time.sleep(1.5)
        assert ing.ingest(3)
        time.sleep(2)
    finally:
        assert replicating.stop() == 0, replicating.output()[-3000:]
        untrusting.kill()
        server.close()
    keys = s3.objects(BUCKET)
    assert any(k.startswith(path) for k in keys), keys
    assert not any(k.startswith("untrusted/") for k in keys), keys
    assert "certificate signed by unknown authority" in untrusting.output(), untrusting.output()[-2000:]
    # what a failing Litestream logs (the last line reaches the status as RestoreFailing) names
    # no credential
    for output in (untrusting.output(), replicating.output()):
        assert s3.secret_key not in output and s3.access_key not in output

    # the point-in-time restore, through its rendered init containers (the bundle at CA_MOUNT)
    restore = {"destination": _destination(s3), "source": f"{NAMESPACE}/tls", "pointInTime": moment}
    restored_pod = _pod({"restore": {"fromBackup": restore}}, "restored")
    check, fill = restored_pod["initContainers"]
    assert _bundle(restored_pod, fill) == CA_MOUNT
    assert f"{CA_MOUNT}/{CA_KEY}" in check["args"]
    mounts = {CA_MOUNT: ca_dir}
    volume = tmp_path / "restored"
    volume.mkdir()
    code, result = _check(check, volume, s3, tmp_path, mounts)
    assert code == 0 and result["ok"] is True, result
    res = _fill(fill, volume, s3, mounts)
    assert res.returncode == 0, res.stdout + res.stderr
    assert s3.secret_key not in res.stdout + res.stderr
    assert flavour.markers(Flavour.db(volume)) == {1, 2}

    # a snapshot beside it: the backup Job's runner (--ca-file) uploads through the same CA
    spec = VestigeMemorySpec.model_validate({"backup": {"destination": _destination(s3)}})
    job = render_backup_job("tls-snapshot", "uid-1", Owner("tls", NAMESPACE, "u"), spec, IMAGES)
    runner = job["spec"]["template"]["spec"]["containers"][0]
    assert f"{CA_MOUNT}/{CA_KEY}" in runner["args"]
    code, result = _check(runner, source, s3, tmp_path, mounts)
    assert code == 0 and result["ok"] is True, result
    assert result["key"] in s3.objects(BUCKET), result

    # without the bundle the restore's check cannot reach the replica: nothing is written
    bare = tmp_path / "no-ca"
    bare.mkdir()
    code, result = _check(check, bare, s3, tmp_path, {CA_MOUNT: tmp_path / "empty-ca-volume"})
    assert code != 0 and result["ok"] is False, result
    assert not any(bare.iterdir())
