"""`python -m tests.prepare`: every build the test run needs, in parallel lanes, timed.

tests/run.sh calls this once before ruff and pytest. Each build below is cached and keyed by its
inputs (a warm call of the whole thing takes seconds); a cold machine builds everything here, and
two cores are kept busy by running independent chains side by side, because no single chain
keeps both cores busy all the time (module and crate downloads, linkers, debootstrap and pip are
mostly one thread or the network):

- ``go``: the control plane and the real node's binaries, helm and kstatus, versitygw, kube-router;
- ``images``: the base images and the project's images (debootstrap, pip, buildah), then the real
  Vestige 1.3.0/2.0.0 (cargo) and their images;
- ``npm``: the OpenClaw plugin's dependencies and its tsc build, then Litestream (a Go build, here
  because this lane is by far the shortest).

After the lanes: the kube-router and Litestream images (each needs the base image and a binary
of another lane). Every step writes its output to ``<cache>/logs/prepare-<step>.log``; a failed
step prints its tail, stops the other lanes and fails the run. The time of each step and lane is
printed at the end (this is where the README's measured cold and warm times come from).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import build

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    cwd: Path = ROOT


@dataclass
class LaneResult:
    name: str
    timings: list[tuple[str, float]] = field(default_factory=list)
    failed: str | None = None


def _node_tools() -> bool:
    """The real node's images need buildah and debootstrap (tests/setup.sh installs them as root)."""
    return shutil.which("buildah") is not None and shutil.which("debootstrap") is not None


def lanes() -> dict[str, list[Step]]:
    go = [
        Step("cluster", (PY, "-m", "tests.cluster", "build")),
        Step("tools", (PY, "-m", "tests.tools", "build")),
        Step("s3", (PY, "-m", "tests.s3.build")),
    ]
    images: list[Step] = []
    if _node_tools():
        go.append(Step("kube-router", (PY, "-c", "from tests.cluster import netpol; netpol.binary()")))
        images.append(Step("images-base", (PY, "-m", "tests.cluster", "images", "--no-vestige")))
    images.append(Step("vestige", (PY, "-m", "tests.vestige", "build", "--if-vendored")))
    if _node_tools():
        images.append(Step("images-vestige", (PY, "-m", "tests.cluster", "images")))
    openclaw = ROOT / "clients" / "openclaw"
    npm = [
        Step("npm-ci", ("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"), openclaw),
        Step("openclaw-build", ("npm", "run", "--silent", "build"), openclaw),
        # Litestream (a Go build) rides here: the go lane is the longest one, this the shortest.
        Step("litestream", (PY, "-m", "tests.litestream.build")),
    ]
    return {"go": go, "images": images, "npm": npm}


def after_lanes() -> list[Step]:
    if not _node_tools():
        return []
    return [
        Step("kube-router-image", (PY, "-m", "tests.cluster.netpol", "build")),
        Step("litestream-image", (PY, "-c", "from tests.cluster import images; images.litestream_image()")),
    ]


def _log_path(step: Step) -> Path:
    logs = build.cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"prepare-{step.name}.log"


class Runner:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()

    def run_lane(self, steps: list[Step], result: LaneResult) -> None:
        for step in steps:
            if self._stop.is_set():
                return
            why = self._run_step(step, result)
            if why is not None:
                result.failed = why
                self.stop()
                return

    def _run_step(self, step: Step, result: LaneResult) -> str | None:
        log = _log_path(step)
        _say(f"{result.name}: {step.name} ...")
        started = time.monotonic()
        with open(log, "wb") as fh:
            with self._lock:
                if self._stop.is_set():
                    return None
                proc = subprocess.Popen(step.argv, cwd=step.cwd, stdout=fh, stderr=subprocess.STDOUT)
                self._procs.add(proc)
            rc = proc.wait()
            with self._lock:
                self._procs.discard(proc)
        took = time.monotonic() - started
        result.timings.append((step.name, took))
        if rc != 0:
            if self._stop.is_set() and rc < 0:
                return None  # stopped because another lane failed
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
            return f"{step.name} failed (exit {rc}, {took:.0f} s; log {log}):\n{tail}"
        _say(f"{result.name}: {step.name} done in {took:.0f} s")
        return None

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            for proc in self._procs:
                proc.terminate()


def _say(message: str) -> None:
    print(f"[prepare] {message}", file=sys.stderr, flush=True)


def main() -> int:
    started = time.monotonic()
    runner = Runner()
    plan = lanes()
    results = {name: LaneResult(name) for name in plan}
    threads = [
        threading.Thread(target=runner.run_lane, args=(steps, results[name]), daemon=True)
        for name, steps in plan.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lane_times = {name: sum(t for _, t in r.timings) for name, r in results.items()}
    failures = [r.failed for r in results.values() if r.failed]
    if not failures:
        final = LaneResult("after")
        runner.run_lane(after_lanes(), final)
        results["after"] = final
        lane_times["after"] = sum(t for _, t in final.timings)
        if final.failed:
            failures.append(final.failed)
    for name, result in results.items():
        steps = ", ".join(f"{step} {took:.0f} s" for step, took in result.timings)
        _say(f"lane {name}: {lane_times.get(name, 0):.0f} s ({steps or 'nothing to do'})")
    _say(f"all builds: {time.monotonic() - started:.0f} s wall")
    for failure in failures:
        print(f"[prepare] {failure}", file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
