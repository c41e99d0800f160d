"""Benchmark plumbing: the shared local cluster, a raw-JSON API client, watches, the API server's
``/metrics``, per-process CPU and memory from ``/proc``, and the machine description.

The client is the official ``kubernetes`` client's ``ApiClient`` used the way the operator's
``cluster.py`` uses it (raw JSON, urllib3 pool), so the floor measurement pays the same client
costs as the operator.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3

from tests import cluster as local_cluster

JsonDict = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
#: Where a run writes its results instead of RESULTS (and its report instead of docs/): the smoke
#: run of every benchmark (tests/integration/test_bench_smoke.py) points it at a temporary directory.
RESULTS_ENV = "VESTIGE_BENCH_RESULTS"
TIMEOUT = (10.0, 60.0)
#: How long a request is retried while the API server does not answer.
RETRY_SECONDS = 180.0


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message[:500]}")
        self.status = status


@dataclass(frozen=True)
class ClusterInfo:
    server: str
    kubeconfig: str
    pki_dir: Path


def shared_cluster() -> ClusterInfo:
    """The running local control plane; never starts, stops or restarts it."""
    status = local_cluster.status()
    state = local_cluster.ClusterState.load()
    if status.get("up") is not True or state is None:
        raise SystemExit("the local cluster is not up: run `.venv/bin/python -m tests.cluster up` first")
    return ClusterInfo(
        server=state.server,
        kubeconfig=state.kubeconfig,
        pki_dir=Path(state.state_dir) / "pki",
    )


class Kube:
    """A thread-safe raw-JSON client (one urllib3 pool) for the benchmark driver."""

    def __init__(self, kubeconfig: str, pool_size: int = 32) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        self.api = kubernetes.client.ApiClient(configuration)
        self.server = configuration.host
        self.ca_cert = configuration.ssl_ca_cert

    def close(self) -> None:
        self.api.close()

    def raw(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout: tuple[float, float | None] | None = TIMEOUT,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        deadline = time.monotonic() + (0 if stream else RETRY_SECONDS)
        while True:
            try:
                response = self.api.call_api(
                    method, url, header_params=headers, body=body, _request_timeout=timeout
                )
                break
            except kubernetes.client.ApiException as exc:
                raise KubeError(exc.status or 0, str(exc.body or exc.reason)) from exc
            except (OSError, urllib3.exceptions.HTTPError):
                # The shared control plane may be restarted by another user's fault test: wait.
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        if stream:
            return response.response
        return response.status, response.read() or b""

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: Any) -> JsonDict:
        status, data = self.raw(method, path, **kwargs)
        if status not in ok:
            raise KubeError(status, data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def get(self, path: str) -> JsonDict | None:
        status, data = self.raw("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeError(status, data.decode(errors="replace"))
        return json.loads(data)

    def create(self, path: str, body: JsonDict, field_manager: str = "vestige-bench") -> JsonDict:
        return self.request(
            "POST", path, query=[("fieldManager", field_manager)], body=body, content_type="application/json"
        )

    def apply(self, path: str, body: JsonDict, field_manager: str) -> JsonDict:
        """Server-side apply (force) of ``body`` at ``path``."""
        return self.request(
            "PATCH",
            path,
            query=[("fieldManager", field_manager), ("force", "true")],
            body=body,
            content_type="application/apply-patch+yaml",
        )

    def delete(self, path: str) -> None:
        status, data = self.raw(
            "DELETE",
            path,
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            content_type="application/json",
        )
        if status not in (200, 202, 404):
            raise KubeError(status, data.decode(errors="replace"))

    def metrics(self) -> str:
        status, data = self.raw("GET", "/metrics", accept="text/plain")
        if status != 200:
            raise KubeError(status, data.decode(errors="replace"))
        return data.decode()

    def watch(
        self,
        path: str,
        resource_version: str,
        on_event: Callable[[str, JsonDict], None],
        stop: threading.Event,
        label_selector: str | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Stream watch events of ``path`` into ``on_event`` until ``stop`` is set (reconnects).
        A request that fails is retried; ``on_error`` hears of it first (see ``refused``)."""
        rv = resource_version
        while not stop.is_set():
            query = [("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true")]
            query.append(("timeoutSeconds", "30"))
            if label_selector:
                query.append(("labelSelector", label_selector))
            try:
                resp = self.raw("GET", path, query=query, timeout=(10.0, 60.0), stream=True)
                if resp.status != 200:
                    body = resp.read().decode(errors="replace")
                    resp.release_conn()
                    raise KubeError(resp.status, body)
            except Exception as exc:
                if on_error is not None:
                    on_error(exc)
                if stop.wait(0.5):
                    return
                continue
            buf = b""
            try:
                for chunk in resp.stream(65536, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = ""  # expired: restart from the current state
                            continue
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if event.get("type") != "BOOKMARK":
                            on_event(event["type"], obj)
                    if stop.is_set():
                        break
            except Exception:
                if stop.is_set():
                    return
            finally:
                resp.release_conn()


def refused(exc: Exception) -> bool:
    """An answer that retrying does not change (a 4xx other than 410 Gone and 429): a harness
    error, not a slow or restarting API server."""
    return isinstance(exc, KubeError) and 400 <= exc.status < 500 and exc.status not in (410, 429)


def namespace_path(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}"


def create_namespace(kube: Kube, ns: str) -> None:
    kube.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"vestige.dev/benchmark": "true"}},
        },
    )


def delete_namespace(kube: Kube, ns: str, timeout: float = 900) -> float:
    """Delete ``ns`` and wait until it is gone; the seconds it took (-1 after ``timeout``)."""
    started = time.monotonic()
    kube.delete(namespace_path(ns))
    while time.monotonic() - started < timeout:
        if kube.get(namespace_path(ns)) is None:
            return time.monotonic() - started
        time.sleep(1.0)
    print(f"warning: namespace {ns} still terminating after {timeout:.0f}s", file=sys.stderr)
    return -1.0


# -- API server metrics --------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+([0-9.eE+-]+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of the metric ``name`` (labelled or not) in a Prometheus
    text exposition."""
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        m = _SAMPLE.match(line)
        if m:
            yield dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))


def request_totals(text: str, resources: set[str] | None = None) -> Counter[str]:
    """``apiserver_request_total`` summed by verb (optionally only for some resources)."""
    out: Counter[str] = Counter()
    for labels, value in samples(text, "apiserver_request_total"):
        if resources is None or labels.get("resource") in resources:
            out[labels.get("verb", "?")] += int(value)
    return out


def dispatched_by_flow_schema(text: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for labels, value in samples(text, "apiserver_flowcontrol_dispatched_requests_total"):
        out[labels.get("flow_schema", "?")] += int(value)
    return out


def counter_delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)
    }


# -- processes -------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of ``pid`` in KiB."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def component_cpu() -> dict[str, tuple[int, float]]:
    """(pid, CPU seconds) of every control-plane process (pids are re-read: another user's fault
    test may restart a component)."""
    state = local_cluster.ClusterState.load()
    comps = state.components if state else {}
    return {name: (c.pid, cpu_seconds(c.pid)) for name, c in comps.items()}


def cpu_delta(
    after: dict[str, tuple[int, float]], before: dict[str, tuple[int, float]]
) -> dict[str, float | None]:
    """CPU seconds per component between two ``component_cpu`` samples (None if it restarted)."""
    out: dict[str, float | None] = {}
    for name, (pid, cpu) in after.items():
        b = before.get(name)
        out[name] = round(cpu - b[1], 2) if b and b[0] == pid else None
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_low_load(threshold: float, timeout: float) -> list[float]:
    """Wait (up to ``timeout``) until the 1-minute load average is below ``threshold``."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > threshold and time.monotonic() < deadline:
        time.sleep(5)
    return load_average()


# -- description of the run ------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "operator"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty operator" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(kube: Kube | None = None) -> JsonDict:
    """Machine, versions and date of a run."""
    env: JsonDict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _mem_total_gib(),
            "kernel": platform.release(),
            "note": "2 cores shared with other developers' test runs; see load averages",
        },
        "versions": {
            "python": platform.python_version(),
            "kopf": _version("kopf"),
            "kubernetes-client": _version("kubernetes"),
            "mcp": _version("mcp"),
            "vestige-operator": _version("vestige-operator"),
            "kubernetes": local_cluster.K8S_VERSION,
            "etcd": local_cluster.ETCD_VERSION,
            "kwok": local_cluster.KWOK_VERSION,
            "commit": git_commit(),
        },
    }
    return env


def results_dir() -> Path:
    """RESULTS, or the directory named by ``$VESTIGE_BENCH_RESULTS``."""
    override = os.environ.get(RESULTS_ENV)
    return Path(override) if override else RESULTS


def write_result(name: str, key: str, run: JsonDict, limits: Mapping[str, str]) -> Path:
    """Merge one run (``key``: e.g. the N) into ``results/<name>.json``."""
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    doc: JsonDict = {"bench": name, "runs": {}}
    if path.exists():
        with contextlib.suppress(ValueError):
            doc = json.loads(path.read_text())
    doc["bench"] = name
    doc.setdefault("runs", {})[key] = run
    doc["limits"] = dict(limits)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path
