"""Build the control-plane binaries from the Go module proxy, once, into a cache keyed by version.

kube-apiserver, kube-controller-manager and kube-scheduler come from the `k8s.io/kubernetes` module
through the consumer module in `go/kube` (its go.mod replaces every staging module with its
published version); etcd from `go.etcd.io/etcd/server/v3` through `go/etcd`; kwok with
`go install sigs.k8s.io/kwok/cmd/kwok@<version>`. Each binary carries a stamp: a hash of the
inputs that built it, so a changed pin rebuilds and an unchanged one is reused in milliseconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
#: CoreDNS for the real node (go/coredns: only the plugins cluster DNS needs).
COREDNS_VERSION = "v1.14.7"

GO_DIR = Path(__file__).resolve().parent / "go"
# kubelet and kube-proxy run the real node (`up --node real`): same module, same pin.
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
# kwok's own stage definitions (shipped in its module) that make nodes Ready, keep their leases
# fresh, and walk pods through Running/Ready, completion and deletion.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("VESTIGE_CACHE_DIR", "~/.cache/vestige-operator")).expanduser()


def bin_dir() -> Path:
    return cache_root() / "cluster" / K8S_VERSION / "bin"


def _stamp(*parts: str | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.read_bytes() if isinstance(part, Path) else part.encode()
        digest.update(data + b"\0")
    return digest.hexdigest()


def _fresh(name: str, stamp: str) -> bool:
    target = bin_dir() / name
    stamp_file = bin_dir() / f".{name}.stamp"
    return target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp


def _mark(name: str, stamp: str) -> None:
    (bin_dir() / f".{name}.stamp").write_text(stamp)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is missing: install Go >= 1.26 "
            "(the control plane is built from the Go module proxy)"
        )
    return go


def _run(cmd: list[str], cwd: Path | None, env: dict[str, str], what: str) -> None:
    print(f"[cluster] building {what} (cold builds take several minutes) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    print(f"[cluster] built {what} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"})
    return env


def _module_dir(module: str, version: str, env: dict[str, str]) -> Path:
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"go mod download {module}@{version} failed:\n{out.stdout}{out.stderr}")
    return Path(json.loads(out.stdout)["Dir"])


def ensure_binaries() -> Path:
    """Build whatever is missing or stale; return the directory holding every binary.

    One build at a time per cache: several test sessions, `up` and `tests.prepare` started
    together wait for the first one and then find its binaries fresh (without the lock each ran
    its own Kubernetes build, N times the CPU for the same result)."""
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _ensure_binaries(out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_binaries(out: Path) -> Path:
    env = _env()

    kube = GO_DIR / "kube"
    kube_inputs = [kube / "go.mod", kube / "go.sum", *sorted(kube.glob("cmd/*/main.go"))]
    kube_stamp = _stamp(K8S_VERSION, *kube_inputs)
    if not all(_fresh(b, kube_stamp) for b in KUBE_BINARIES):
        minor = K8S_VERSION.split(".")[1]
        ldflags = " ".join(
            [
                "-s -w",
                f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
                "-X k8s.io/component-base/version.gitMajor=1",
                f"-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
                f"-X k8s.io/client-go/pkg/version.gitVersion={K8S_VERSION}",
            ]
        )
        cmd = [_go(), "build", "-trimpath", "-tags", "selinux,notest", "-ldflags", ldflags]
        _run([*cmd, "-o", f"{out}/", "./cmd/..."], kube, env, f"Kubernetes {K8S_VERSION}")
        for b in KUBE_BINARIES:
            _mark(b, kube_stamp)

    etcd = GO_DIR / "etcd"
    etcd_stamp = _stamp(ETCD_VERSION, etcd / "go.mod", etcd / "go.sum", etcd / "main.go")
    if not _fresh("etcd", etcd_stamp):
        cmd = [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."]
        _run(cmd, etcd, env, f"etcd {ETCD_VERSION}")
        _mark("etcd", etcd_stamp)

    coredns = GO_DIR / "coredns"
    coredns_stamp = _stamp(COREDNS_VERSION, coredns / "go.mod", coredns / "go.sum", coredns / "main.go")
    if not _fresh("coredns", coredns_stamp):
        cmd = [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "coredns"), "."]
        _run(cmd, coredns, env, f"CoreDNS {COREDNS_VERSION}")
        _mark("coredns", coredns_stamp)

    kwok_stamp = _stamp(KWOK_VERSION, *KWOK_STAGES)
    if not _fresh("kwok", kwok_stamp) or not (out / "kwok-stages.yaml").exists():
        install = [
            _go(),
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
        ]
        _run(install, None, {**env, "GOBIN": str(out)}, f"kwok {KWOK_VERSION}")
        src = _module_dir("sigs.k8s.io/kwok", KWOK_VERSION, env)
        docs = [(src / rel).read_text().strip() for rel in KWOK_STAGES]
        (out / "kwok-stages.yaml").write_text("\n---\n".join(docs) + "\n")
        _mark("kwok", kwok_stamp)
    return out
