"""tests.vestige.build without building: where the sources are looked up, the cache key, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.vestige import build


def fake_vendor(root: Path) -> Path:
    vendor = root / "vendor"
    vendor.mkdir()
    for v in build.VERSIONS:
        (vendor / f"vestige-{v}.tar.gz").write_bytes(f"archive {v}".encode())
        (vendor / f"v{v}-keyword-only.patch").write_text(f"patch {v}\n")
    return vendor


def test_missing_vendor_dir_is_none_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_VENDOR_DIR", str(tmp_path / "nowhere"))
    assert build.vendor_dir() is None
    assert str(tmp_path / "nowhere") in build.missing_reason()
    with pytest.raises(build.BuildError, match="not found"):
        build.ensure("1.3.0")


def test_incomplete_vendor_dir_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = fake_vendor(tmp_path)
    (vendor / "v2.0.0-keyword-only.patch").unlink()
    monkeypatch.setenv("VESTIGE_VENDOR_DIR", str(vendor))
    assert build.vendor_dir() is None


def test_cache_key_follows_archive_and_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = fake_vendor(tmp_path)
    monkeypatch.setenv("VESTIGE_VENDOR_DIR", str(vendor))
    monkeypatch.setenv("VESTIGE_CACHE_DIR", str(tmp_path / "cache"))
    assert build.vendor_dir() == vendor.resolve()
    first = build.binary_path("1.3.0")
    assert first.parent == tmp_path / "cache" / "vestige" / "bin"
    assert first != build.binary_path("2.0.0")
    (vendor / "v1.3.0-keyword-only.patch").write_text("patch 1.3.0, changed\n")
    assert build.binary_path("1.3.0") != first
    # a binary already in the cache is reused without building (no cargo needed)
    cached = build.binary_path("1.3.0")
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/true\n")
    monkeypatch.setenv("PATH", "")
    assert build.ensure("1.3.0") == cached


def test_unknown_version_is_refused() -> None:
    with pytest.raises(build.BuildError, match="unknown Vestige version"):
        build.ensure("9.9.9")


def test_missing_cargo_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_VENDOR_DIR", str(fake_vendor(tmp_path)))
    monkeypatch.setenv("VESTIGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cargo/bin/cargo either
    assert shutil.which("cargo") is None
    with pytest.raises(build.BuildError, match="cargo is missing"):
        build.ensure("2.0.0")
