"""Test tools built from the Go module proxy, once, into ``~/.cache/vestige-operator/tools/``.

- ``helm``: ``go install helm.sh/helm/v4/cmd/helm@<HELM_VERSION>`` (helm's own go.sum pins every
  dependency), with the version stamped in like helm's Makefile does.
- ``kstatus``: the real ``sigs.k8s.io/cli-utils`` kstatus (``status.Compute``) behind a small
  command (``tests/kstatus/go``) that reads objects from stdin and prints one verdict per object.

Each binary carries a stamp (a hash of the inputs that built it): a changed pin or source
rebuilds, an unchanged one is reused in milliseconds. ``python -m tests.tools build`` builds both
(``tests/run.sh`` calls it before pytest); ``python -m tests.tools path helm`` prints a path.
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

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"
#: The cli-utils release whose kstatus the helper runs (pinned in tests/kstatus/go/go.mod).
CLI_UTILS_VERSION = "v0.37.2"

KSTATUS_DIR = Path(__file__).resolve().parent / "kstatus" / "go"
TOOLS = ("helm", "kstatus")


class BuildError(RuntimeError):
    pass


def tools_dir() -> Path:
    return cache_root() / "tools"


def _fresh(name: str, stamp: str) -> bool:
    target = tools_dir() / name
    stamp_file = tools_dir() / f".{name}.stamp"
    return target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is missing: install Go >= 1.26 (helm and kstatus are built from it)"
        )
    return go


def _env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}


def _run(cmd: list[str], cwd: Path | None, env: dict[str, str], what: str) -> None:
    print(f"[tools] building {what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    print(f"[tools] built {what} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _helm_stamp() -> str:
    return _stamp(HELM_MODULE, HELM_VERSION)


def _kstatus_stamp() -> str:
    return _stamp(CLI_UTILS_VERSION, *(KSTATUS_DIR / f for f in ("go.mod", "go.sum", "main.go")))


def ensure_helm() -> Path:
    out = tools_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = _helm_stamp()
    if not _fresh("helm", stamp):
        ldflags = f"-s -w -X {HELM_MODULE}/internal/version.version={HELM_VERSION}"
        cmd = [_go(), "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"]
        _run(cmd, None, {**_env(), "GOBIN": str(out)}, f"helm {HELM_VERSION}")
        (out / ".helm.stamp").write_text(stamp)
    return out / "helm"


def ensure_kstatus() -> Path:
    out = tools_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = _kstatus_stamp()
    if not _fresh("kstatus", stamp):
        cmd = [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "kstatus"), "."]
        _run(cmd, KSTATUS_DIR, _env(), f"kstatus (cli-utils {CLI_UTILS_VERSION})")
        (out / ".kstatus.stamp").write_text(stamp)
    return out / "kstatus"


def ensure_all() -> dict[str, Path]:
    return {"helm": ensure_helm(), "kstatus": ensure_kstatus()}


def helm_binary() -> Path:
    return ensure_helm()


def kstatus_binary() -> Path:
    return ensure_kstatus()


def kstatus(objects: list[dict]) -> list[dict]:
    """kstatus' verdicts (status, message) for ``objects``, in order."""
    stream = "\n".join(json.dumps(o) for o in objects)
    proc = subprocess.run(
        [str(kstatus_binary())], input=stream, capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kstatus failed ({proc.returncode}): {proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        for name, path in ensure_all().items():
            print(f"{name}\t{path}")
        return 0
    if len(argv) == 2 and argv[0] == "path" and argv[1] in TOOLS:
        print({"helm": ensure_helm, "kstatus": ensure_kstatus}[argv[1]]())
        return 0
    print("usage: python -m tests.tools build | path {helm,kstatus}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
