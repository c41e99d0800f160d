"""Build versitygw once from the Go module proxy into a cache keyed by version (like tests/cluster)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.cluster.build import cache_root

#: Newest release on the module proxy when this was written (2026-09); Apache-2.0; no advisory
#: for it was found (docs/backup.md, "Object storage in tests").
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "s3" / VERSITYGW_VERSION


def binary() -> Path:
    return cache_dir() / "bin" / "versitygw"


def _stamp() -> str:
    return hashlib.sha256(f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}".encode()).hexdigest()


def ensure() -> Path:
    """The versitygw binary, built if missing or stale (a cold build takes a few minutes)."""
    target = binary()
    stamp_file = target.parent / ".versitygw.stamp"
    if target.exists() and stamp_file.exists() and stamp_file.read_text() == _stamp():
        return target
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is missing: install Go >= 1.25 (versitygw is built from the module proxy)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target.parent)}
    print(
        f"[s3] building versitygw {VERSITYGW_VERSION} (cold: a few minutes) ...", file=sys.stderr, flush=True
    )
    proc = subprocess.run(
        [go, "install", f"{VERSITYGW_MODULE}@{VERSITYGW_VERSION}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not target.exists():
        raise BuildError(f"building versitygw failed:\n{proc.stderr[-4000:]}")
    stamp_file.write_text(_stamp())
    return target


if __name__ == "__main__":
    print(ensure())
