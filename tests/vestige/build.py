"""Build the real `vestige-mcp` from the vendored sources, once per source hash, into a cache.

The vendor directory (`../shared/vendor/vestige` beside the repository, or `VESTIGE_VENDOR_DIR`)
holds one archive and one keyword-only patch per version (its README says where they come from
and why the patch). For each version this unpacks the archive, applies the patch and runs
`cargo build --no-default-features --features vector-search -p vestige-mcp --bin vestige-mcp` (debug;
`CARGO_CONFIG` below: dependencies at opt-level 0, no debuginfo)
with one `CARGO_TARGET_DIR` shared by every version (most dependencies are built once). The
binary is copied out of the target dir under a name carrying the source hash (sha256 of archive
+ patch + recipe), so an unchanged source is reused in milliseconds and a changed one rebuilds.
A file lock serialises concurrent callers (several pytest sessions, `tests/run.sh`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.build import cache_root

REPO_ROOT = Path(__file__).resolve().parents[2]

# Debug profile: what the vendor README checked, and measured here as the faster choice on two
# cores (docs/bridge.md, "The real Vestige in the tests"). Upstream's dev profile sets
# opt-level 1 for everything and full debuginfo; for a cold build on two cores we keep opt-level 1
# for Vestige's own crates but build the dependencies at opt-level 0, without debuginfo and
# without incremental state (nothing here rebuilds incrementally: a changed source is a new build).
PROFILE = "debug"
CARGO_CONFIG = (
    "--config",
    'profile.dev.package."*".opt-level=0',
    "--config",
    "profile.dev.debug=0",
    "--config",
    "profile.dev.incremental=false",
)
CARGO_ARGS = (
    *CARGO_CONFIG,
    "build",
    "--locked",
    "--no-default-features",
    "--features",
    "vector-search",
    "-p",
    "vestige-mcp",
    "--bin",
    "vestige-mcp",
)


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Source:
    version: str
    archive: Path
    patch: Path


VERSIONS = ("1.3.0", "2.0.0")


def vestige_cache() -> Path:
    return cache_root() / "vestige"


def _default_vendor() -> Path:
    """`../shared/vendor/vestige` from the repository root; from a git worktree placed deeper
    (e.g. `/work/wt/<branch>`) the nearest ancestor holding `shared/vendor/vestige`."""
    for parent in REPO_ROOT.parents:
        candidate = parent / "shared" / "vendor" / "vestige"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "vendor" / "vestige"


def vendor_dir() -> Path | None:
    """The vendor directory, or None where it (or any version's archive/patch) is missing."""
    raw = os.environ.get("VESTIGE_VENDOR_DIR")
    path = (Path(raw).expanduser() if raw else _default_vendor()).resolve()
    if not path.is_dir():
        return None
    if not all(_source(path, v).archive.is_file() and _source(path, v).patch.is_file() for v in VERSIONS):
        return None
    return path


def missing_reason() -> str:
    raw = os.environ.get("VESTIGE_VENDOR_DIR")
    where = raw or str(_default_vendor())
    names = ", ".join(f"vestige-{v}.tar.gz + v{v}-keyword-only.patch" for v in VERSIONS)
    return f"real Vestige sources not found in {where} (set VESTIGE_VENDOR_DIR; expected {names})"


def _source(vendor: Path, version: str) -> Source:
    return Source(version, vendor / f"vestige-{version}.tar.gz", vendor / f"v{version}-keyword-only.patch")


def source_hash(src: Source) -> str:
    digest = hashlib.sha256()
    for part in (src.archive.read_bytes(), src.patch.read_bytes(), " ".join((PROFILE, *CARGO_ARGS)).encode()):
        digest.update(part + b"\0")
    return digest.hexdigest()


def binary_path(version: str, vendor: Path | None = None) -> Path:
    """Where the binary for this version's current sources lives (built or not)."""
    vendor = vendor or vendor_dir()
    if vendor is None:
        raise BuildError(missing_reason())
    digest = source_hash(_source(vendor, version))[:16]
    return vestige_cache() / "bin" / f"vestige-mcp-{version}-{digest}"


@contextmanager
def _locked() -> Iterator[None]:
    vestige_cache().mkdir(parents=True, exist_ok=True)
    with open(vestige_cache() / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tools() -> str:
    cargo = shutil.which("cargo") or str(Path("~/.cargo/bin/cargo").expanduser())
    if not Path(cargo).is_file():
        raise BuildError(
            "cargo is missing: install Rust (rustup, stable) to build the real Vestige "
            "(tests/vestige; the vendor README has the recipe)"
        )
    for tool in ("cc", "c++", "make", "perl"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"`{tool}` is missing: building Vestige's C parts (bundled SQLite, vendored OpenSSL, "
                "usearch) needs cc, c++, make and perl (Debian: build-essential perl)"
            )
    return cargo


def _unpack(src: Source, dest: Path) -> Path:
    """Unpack the archive and apply the patch into a fresh `dest`; return the source root."""
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with tarfile.open(src.archive) as tar:
        tar.extractall(tmp, filter="data")
    roots = [p for p in tmp.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise BuildError(f"{src.archive} should hold one top directory, found {[p.name for p in roots]}")
    proc = subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "-i", str(src.patch)],
        cwd=roots[0],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"applying {src.patch.name} failed:\n{proc.stdout}{proc.stderr}")
    tmp.rename(dest)
    return dest / roots[0].name


def _build(src: Source, out: Path) -> None:
    cargo = _tools()
    digest = out.name.rsplit("-", 1)[1]
    root = _unpack(src, vestige_cache() / "src" / f"{src.version}-{digest}")
    target = vestige_cache() / "target"
    env = {**os.environ, "CARGO_TARGET_DIR": str(target), "CARGO_TERM_COLOR": "never"}
    print(
        f"[vestige] building vestige-mcp {src.version} ({PROFILE}; cold: about 11 minutes on 2 cores) ...",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    args = [cargo, *CARGO_ARGS] + (["--release"] if PROFILE == "release" else [])
    log = vestige_cache() / f"build-{src.version}.log"
    with open(log, "w") as fh:
        proc = subprocess.run(args, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"building vestige-mcp {src.version} failed ({' '.join(args)}; log {log}):\n{tail}")
    built = target / PROFILE / "vestige-mcp"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.copy2(built, tmp)
    tmp.rename(out)
    shutil.rmtree(root.parent, ignore_errors=True)
    print(
        f"[vestige] built vestige-mcp {src.version} in {time.monotonic() - started:.0f}s -> {out}",
        file=sys.stderr,
        flush=True,
    )


def ensure(version: str) -> Path:
    """Absolute path of the `vestige-mcp` binary for `version`, building it if missing or stale."""
    if version not in VERSIONS:
        raise BuildError(f"unknown Vestige version {version!r}; vendored: {', '.join(VERSIONS)}")
    vendor = vendor_dir()
    if vendor is None:
        raise BuildError(missing_reason())
    out = binary_path(version, vendor)
    if out.is_file():
        return out
    with _locked():
        if not out.is_file():  # another caller may have built it while we waited
            _build(_source(vendor, version), out)
    return out


def ensure_all() -> dict[str, Path]:
    return {v: ensure(v) for v in VERSIONS}
