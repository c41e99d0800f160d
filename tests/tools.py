"""Test tools built from the Go module proxy, once, into ``~/.cache/vestige-operator/tools/``.

- ``helm``: ``go install helm.sh/helm/v4/cmd/helm@<HELM_VERSION>`` (helm's own go.sum pins every
  dependency), with the version stamped in like helm's Makefile does.
- ``kstatus``: the real ``sigs.k8s.io/cli-utils`` kstatus (``status.Compute``) behind a small
  command (``tests/kstatus/go``) that reads objects from stdin and prints one verdict per object.
- ``promtool``: ``go install github.com/prometheus/prometheus/cmd/promtool@<PROMETHEUS_MODULE_VERSION>``
  with the ``remove_all_sd`` build tag (Prometheus' own switch that leaves out the cloud service
  discoveries promtool never needs here: AWS, Azure, GCE, ...), for ``promtool check rules`` and
  ``promtool test rules`` on the chart's alert rules (tests/monitoring).

Each binary carries a stamp (a hash of the inputs that built it): a changed pin or source
rebuilds, an unchanged one is reused in milliseconds. ``python -m tests.tools build [NAME ...]``
builds them (all without a name; ``tests/prepare.py`` calls it in its go lane);
``python -m tests.tools path helm`` prints a path.
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

#: Prometheus publishes its Go module as v0.<minor>.<patch> for release v3.<minor>.<patch>:
#: v0.316.0 is Prometheus 3.16.0 (its go.mod asks for Go 1.26.7).
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_MODULE_VERSION = "v0.316.0"
PROMTOOL_TAGS = "remove_all_sd"

KSTATUS_DIR = Path(__file__).resolve().parent / "kstatus" / "go"
TOOLS = ("helm", "kstatus", "promtool")


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


def _promtool_stamp() -> str:
    return _stamp(PROMETHEUS_MODULE, PROMETHEUS_MODULE_VERSION, PROMTOOL_TAGS)


def ensure_promtool() -> Path:
    out = tools_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = _promtool_stamp()
    if not _fresh("promtool", stamp):
        minor, patch = PROMETHEUS_MODULE_VERSION.removeprefix("v0.").split(".")
        release = f"3.{int(minor) - 300}.{patch}"  # what `promtool --version` prints
        ldflags = f"-s -w -X github.com/prometheus/common/version.Version={release}"
        module = f"{PROMETHEUS_MODULE}/cmd/promtool@{PROMETHEUS_MODULE_VERSION}"
        cmd = [_go(), "install", "-trimpath", "-tags", PROMTOOL_TAGS, "-ldflags", ldflags, module]
        _run(cmd, None, {**_env(), "GOBIN": str(out)}, f"promtool {PROMETHEUS_MODULE_VERSION}")
        (out / ".promtool.stamp").write_text(stamp)
    return out / "promtool"


BUILDERS = {"helm": ensure_helm, "kstatus": ensure_kstatus, "promtool": ensure_promtool}


def ensure_all(names: tuple[str, ...] = TOOLS) -> dict[str, Path]:
    return {name: BUILDERS[name]() for name in names}


def helm_binary() -> Path:
    return ensure_helm()


def kstatus_binary() -> Path:
    return ensure_kstatus()


def promtool_binary() -> Path:
    return ensure_promtool()


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
    if argv[:1] == ["build"] and set(argv[1:]) <= set(TOOLS):
        for name, path in ensure_all(tuple(argv[1:]) or TOOLS).items():
            print(f"{name}\t{path}")
        return 0
    if len(argv) == 2 and argv[0] == "path" and argv[1] in TOOLS:
        print(BUILDERS[argv[1]]())
        return 0
    print(
        f"usage: python -m tests.tools build [{' '.join(TOOLS)}] | path {{{','.join(TOOLS)}}}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
