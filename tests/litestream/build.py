"""Build Litestream once from the Go module proxy into a cache keyed by version (like tests/s3).

``go install github.com/benbjohnson/litestream/cmd/litestream@<version>`` with cgo off (v0.5 uses
the pure-Go modernc.org/sqlite, so the binary is static and runs on any base, even ``scratch``)
and upstream's release tags and ldflags (its Dockerfile: ``osusergo,netgo,
sqlite_omit_load_extension``, ``-X main.Version``). The module's own go.sum pins every
dependency. The licence text comes from the module, for the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster.build import _stamp, cache_root

LITESTREAM_MODULE = "github.com/benbjohnson/litestream"
#: Newest v0.5.x on the module proxy when this was written (2026-12); Apache-2.0. Its go.mod
#: says `go 1.26.0`, which the machines' Go (1.26.x) satisfies: no toolchain download.
LITESTREAM_VERSION = "v0.5.18"
BUILD_TAGS = "osusergo,netgo,sqlite_omit_load_extension"


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "litestream" / LITESTREAM_VERSION


def binary() -> Path:
    return cache_dir() / "bin" / "litestream"


def licence() -> Path:
    return cache_dir() / "doc" / "LICENSE"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is missing: install Go >= 1.26 (Litestream is built from the module proxy)"
        )
    return go


def _env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}


def _ldflags() -> str:
    return f"-s -w -X main.Version={LITESTREAM_VERSION}"


def _build_stamp() -> str:
    return _stamp(LITESTREAM_MODULE, LITESTREAM_VERSION, BUILD_TAGS, _ldflags())


def ensure() -> Path:
    """The litestream binary, built if missing or stale (cold: a few minutes, mostly downloads)."""
    target = binary()
    stamp_file = target.parent / ".litestream.stamp"
    stamp = _build_stamp()
    if target.exists() and licence().exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return target
    go = _go()
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[litestream] building {LITESTREAM_VERSION} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    cmd = [
        go,
        "install",
        "-trimpath",
        "-tags",
        BUILD_TAGS,
        "-ldflags",
        _ldflags(),
        f"{LITESTREAM_MODULE}/cmd/litestream@{LITESTREAM_VERSION}",
    ]
    proc = subprocess.run(
        cmd, env={**_env(), "GOBIN": str(target.parent)}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not target.exists():
        raise BuildError(f"building litestream failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    found = subprocess.run(
        [go, "mod", "download", "-json", f"{LITESTREAM_MODULE}@{LITESTREAM_VERSION}"],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise BuildError(f"go mod download {LITESTREAM_MODULE}@{LITESTREAM_VERSION} failed:\n{found.stderr}")
    licence().parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(json.loads(found.stdout)["Dir"]) / "LICENSE", licence())
    stamp_file.write_text(stamp)
    print(f"[litestream] built in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return target


if __name__ == "__main__":
    print(ensure())
