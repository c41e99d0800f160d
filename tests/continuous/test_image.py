"""The Litestream image (images/litestream/Dockerfile), built here with buildah, run in a
throwaway containerd as the sidecar and the restore init container would be: the image's user
(uid 1000), a read-only root filesystem and NO writable /tmp, only the data volume mounted,
configuration by environment only, credentials in the environment. The host's network
(``--net-host``) reaches the S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backup import stores
from tests.cluster import images
from tests.continuous.conftest import BUCKET
from tests.images.test_images import CTR, ctr, data_dir, image_config
from tests.litestream.build import LITESTREAM_VERSION
from tests.litestream.replica import restore, settings_for, wait_for
from tests.s3.server import S3Server

pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def image() -> images.Image:
    if missing := images.missing_tools():
        pytest.skip(f"cannot build images here: {', '.join(missing)} not installed")
    return images.litestream_image()


@pytest.fixture(scope="module")
def containerd(image: images.Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if missing := [t for t in ("containerd", "ctr", "runc") if shutil.which(t) is None]:
        pytest.skip(f"cannot run images here: {', '.join(missing)} not installed")
    with images.scratch_containerd(tmp_path_factory.mktemp("ctd")) as address:
        images.import_into(address, images=images.ImageSet({"litestream": image}))
        yield address


def _flags(env: dict[str, str], mount: str) -> list[str]:
    flags = ["--read-only", "--seccomp", "--net-host", "--mount", mount]
    for name, value in env.items():
        flags += ["--env", f"{name}={value}"]
    return flags


def test_the_image_is_the_pinned_static_binary_as_uid_1000(image: images.Image, containerd: str) -> None:
    config = image_config(image)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/usr/local/bin/litestream"]
    assert config["Cmd"] == ["replicate"]

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        name = f"ls-{uuid.uuid4().hex[:10]}"
        return ctr(containerd, "run", "--rm", "--read-only", "--seccomp", image.ref, name, *cmd)

    res = run("/usr/local/bin/litestream", "version")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == LITESTREAM_VERSION
    assert run("/bin/sh", "-c", "id").returncode != 0  # no shell in the image


def test_the_image_replicates_and_restores_with_a_read_only_root(
    image: images.Image, containerd: str, tmp_path: Path
) -> None:
    s3 = S3Server(tmp_path / "s3" / "root").start()
    try:
        _replicate_and_restore(image, containerd, tmp_path, s3)
    finally:
        s3.stop()


def _replicate_and_restore(image: images.Image, containerd: str, tmp_path: Path, s3: S3Server) -> None:
    s3.make_bucket(BUCKET)
    credentials = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    data, mount = data_dir(tmp_path)
    db = data / "vestige" / "vestige.db"
    con = stores.create(db)
    for i in range(20):
        stores.ingest(con, f"image test memory {i}")
    for path in (db.parent, *db.parent.iterdir()):
        os.chown(path, 1000, 1000)  # what fsGroup arranges on the PVC
    settings = settings_for(s3, BUCKET, "team-a/agent-image/litestream")
    env = {**settings.env(Path("/data/vestige/vestige.db")), **credentials}
    name = f"ls-{uuid.uuid4().hex[:10]}"
    sidecar = [*CTR, containerd, "--namespace", "k8s.io", "run", "--rm", *_flags(env, mount), image.ref, name]
    proc = subprocess.Popen(
        sidecar, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for i in range(20, 30):  # while it replicates
            stores.ingest(con, f"image test memory {i}")
        probe = tmp_path / "probe" / "vestige.db"

        def replicated() -> bool:
            probe.unlink(missing_ok=True)
            return restore(probe, settings, credentials).returncode == 0 and len(stores.ids(probe)) == 30

        wait_for(replicated, 120, "the container to replicate 30 memories", interval=1.0)
    finally:
        ctr(containerd, "tasks", "kill", "--signal", "SIGTERM", name)
        out, _ = proc.communicate(timeout=120)
        con.close()
    assert proc.returncode == 0, out
    assert "level=ERROR" not in out, out
    # the restore init container: fills an empty volume, then (a pod restart) leaves it alone
    env = {**settings.env(Path("/data/restored/vestige.db")), **credentials}
    for attempt in ("restore", "restart"):
        res = ctr(
            containerd, "run", "--rm", *_flags(env, mount), image.ref, f"ls-{uuid.uuid4().hex[:10]}",
            "/usr/local/bin/litestream", "restore", "-if-db-not-exists", "-integrity-check", "full",
            "/data/restored/vestige.db",
        )  # fmt: skip
        assert res.returncode == 0, f"{attempt}: {res.stdout}{res.stderr}"
    restored = data / "restored" / "vestige.db"
    assert stores.ids(restored) == stores.ids(db)
    assert stores.check(restored) == ("ok", 30)
    assert restored.stat().st_uid == 1000
