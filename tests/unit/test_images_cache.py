"""tests/cluster/images.py without buildah: the mirror it reads, its cache keys and archives."""

from __future__ import annotations

import json
import os
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from tests.cluster import images


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n",
    )
    write(
        tmp_path / "sources.list.d" / "other.sources",
        "Types: deb\nURIs: https://elsewhere\nSuites: nodistro\n",
    )
    assert images.apt_sources(tmp_path) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_mirror_from_one_line_sources_and_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list",
        "# deb http://commented/debian bookworm main\ndeb [arch=amd64] http://m/debian bookworm main\n",
    )
    assert images.apt_sources(tmp_path) == ("http://m/debian", images.DEFAULT_SECURITY_MIRROR)
    assert images.apt_sources(tmp_path / "empty") == (images.DEFAULT_MIRROR, images.DEFAULT_SECURITY_MIRROR)


def test_a_disabled_stanza_is_not_the_mirror(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "a.sources",
        "Types: deb\nURIs: http://off/debian\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src/debian\nSuites: bookworm\n",
    )
    assert images.apt_sources(tmp_path)[0] == images.DEFAULT_MIRROR


def test_the_hash_follows_file_contents_not_bytecode(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    write(pkg / "a.py", "x = 1\n")
    first = images._hash("k", pkg)
    write(pkg / "__pycache__" / "a.cpython-311.pyc", "bytecode")
    assert images._hash("k", pkg) == first
    write(pkg / "a.py", "x = 2\n")
    assert images._hash("k", pkg) != first
    assert images._hash("k", "base-1") != images._hash("k", "base-2")


def fake_archive(path: Path, digest: str) -> None:
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": digest}]}).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("index.json")
        info.size = len(index)
        tar.addfile(info, BytesIO(index))


def test_a_cached_archive_needs_its_stamp_and_ref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_CACHE_DIR", str(tmp_path))
    stamp = "ab" * 32
    archive = images._archive_path("bridge", stamp)
    assert archive.parent == tmp_path / "images" and stamp[:16] in archive.name
    archive.parent.mkdir(parents=True)
    assert images._cached("bridge", "localhost/b:1", stamp) is None
    fake_archive(archive, "sha256:" + "1" * 64)
    assert images._cached("bridge", "localhost/b:1", stamp) is None  # no metadata: half-written
    archive.with_suffix(".json").write_text(json.dumps({"stamp": stamp, "ref": "localhost/b:1"}))
    cached = images._cached("bridge", "localhost/b:1", stamp)
    assert cached is not None and cached.archive == archive
    assert images._cached("bridge", "localhost/b:2", stamp) is None
    assert images.archive_digest(archive) == "sha256:" + "1" * 64


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert images.missing_tools() == ["buildah", "debootstrap"]
    with pytest.raises(images.ImageError, match="buildah, debootstrap not installed"):
        images.ensure_bases()


def test_pruning_keeps_the_archives_used_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_CACHE_DIR", str(tmp_path))
    (tmp_path / "images").mkdir()
    stamps = [f"{i:02x}" * 32 for i in range(5)]
    for age, stamp in enumerate(stamps):
        archive = images._archive_path("bridge", stamp)
        fake_archive(archive, "sha256:" + "1" * 64)
        meta = archive.with_suffix(".json")
        meta.write_text(json.dumps({"stamp": stamp, "ref": f"r{age}"}))
        os.utime(meta, (1000 + age, 1000 + age))
    assert images._cached("bridge", "r0", stamps[0]) is not None  # used now: the newest
    other = images._archive_path("bridge-extra", stamps[0])
    fake_archive(other, "sha256:" + "2" * 64)
    images._prune("bridge")
    left = sorted(p.name for p in (tmp_path / "images").glob("bridge-*.oci.tar"))
    kept = sorted(images._archive_path("bridge", s).name for s in (stamps[0], stamps[3], stamps[4]))
    assert left == sorted([*kept, other.name])
