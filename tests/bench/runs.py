"""The measured procedures shared by the operator benchmarks: the floor run and the operator run
(convergence, then optionally an idle window of several resyncs)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.kube import (
    ClusterInfo,
    JsonDict,
    Kube,
    component_cpu,
    counter_delta,
    cpu_delta,
    cpu_seconds,
    dispatched_by_flow_schema,
    load_average,
    memory_kib,
    request_totals,
    wait_for_low_load,
)
from tests.bench.session import (
    CONCURRENCY,
    Floor,
    Identity,
    OperatorUnderTest,
    ReadyTracker,
    SchedulingCheck,
    bench_namespace,
    checks,
    create_memories,
    new_run_id,
    rv_changes,
    rv_snapshot,
)
from tests.cluster import ClusterState

#: Resources whose apiserver_request_total the idle report sums (cluster-wide counter).
OPERATOR_RESOURCES = {
    "vestigememories",
    "secrets",
    "persistentvolumeclaims",
    "deployments",
    "services",
    "networkpolicies",
    "ingresses",
    "events",
}
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=900, help="max seconds to wait for Ready")
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.0,
        help="wait (up to --load-wait seconds) until the 1-minute load average is below this",
    )
    parser.add_argument("--load-wait", type=float, default=300)


def floor_run(kube: Kube, info: ClusterInfo, n: int, timeout: float) -> JsonDict:
    """The same children and Ready statuses written directly (no operator); time to all Ready."""
    timings: dict[str, float] = {}
    run_id = new_run_id()
    result: JsonDict = {"n": n, "concurrency": CONCURRENCY, "load_before": load_average()}
    with bench_namespace(kube, "floor", run_id, timings) as ns:
        tracker = ReadyTracker(kube, ns)
        floor = Floor(kube, ns)
        try:
            comp0 = component_cpu()
            start, created = create_memories(kube, ns, n, on_created=floor.on_created)
            ok = tracker.wait_all(n, timeout, check=checks(floor.check, SchedulingCheck(kube, ns)))
            comp1 = component_cpu()
            floor.check()
            if not ok:
                raise RuntimeError(f"floor: {len(tracker.ready_at)}/{n} Ready within {timeout:.0f}s")
            end = max(tracker.ready_at.values())
            result.update(
                seconds=round(end - start, 2),
                create_seconds=round(created - start, 2),
                requests=dict(floor.requests),
                cluster_cpu_seconds=cpu_delta(comp1, comp0),
                load_after=load_average(),
            )
        finally:
            tracker.stop()
            floor.close()
    result["cleanup"] = timings
    return result


def settle(op: OperatorUnderTest, max_resyncs: int = 6) -> JsonDict:
    """Wait for resyncs after now until the operator's request counter stays flat across one
    interval (resync lines already in the log are history, never part of a window)."""
    last = op.resync_lines()
    line = op.wait_resync(int(last[-1]["resync"]) if last else 0, 120)
    for _ in range(max_resyncs):
        nxt = op.wait_resync(int(line["resync"]), 120)
        if nxt["api_requests"] == line["api_requests"]:
            return nxt
        line = nxt
    return line


def operator_run(
    kube: Kube,
    info: ClusterInfo,
    n: int,
    *,
    resync_seconds: float,
    idle_intervals: int,
    timeout: float,
) -> JsonDict:
    """Start an operator on a fresh namespace, create N resources, time until all are Ready; then
    (``idle_intervals`` > 0) measure ``idle_intervals`` resyncs of the converged state."""
    timings: dict[str, float] = {}
    run_id = new_run_id()
    result: JsonDict = {
        "n": n,
        "concurrency": CONCURRENCY,
        "resync_seconds": resync_seconds,
        "load_before": load_average(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="vestige-bench-"))
    with bench_namespace(kube, "op", run_id, timings) as ns:
        identity = Identity(kube, info, ns, run_id, workdir / "operator.kubeconfig")
        try:
            identity.setup()
            op = OperatorUnderTest.start(identity.kubeconfig, ns, resync_seconds, workdir / "operator.log")
            tracker = ReadyTracker(kube, ns)
            try:
                # VestigeMemory + 6 child kinds: every cache is listed and watched before timing.
                identity.wait_watching(7, check=op.check_running)
                time.sleep(1.0)
                result["rss_kib_started"] = memory_kib(op.pid)
                cpu0, comp0 = cpu_seconds(op.pid), component_cpu()
                flows0 = identity.by_verb(dispatched_by_flow_schema(kube.metrics()))
                start, created = create_memories(kube, ns, n)
                ok = tracker.wait_all(n, timeout, check=checks(op.check_running, SchedulingCheck(kube, ns)))
                if not ok:
                    raise RuntimeError(f"operator: {len(tracker.ready_at)}/{n} Ready within {timeout:.0f}s")
                end = max(tracker.ready_at.values())
                cpu1, comp1 = cpu_seconds(op.pid), component_cpu()
                flows1 = identity.by_verb(dispatched_by_flow_schema(kube.metrics()))
                result["convergence"] = {
                    "seconds": round(end - start, 2),
                    "create_seconds": round(created - start, 2),
                    "operator_cpu_seconds": round(cpu1 - cpu0, 2),
                    "cluster_cpu_seconds": cpu_delta(comp1, comp0),
                    "operator_requests_by_verb": counter_delta(flows1, flows0),
                    "rss_kib": memory_kib(op.pid),
                }
                if idle_intervals > 0:
                    result["idle"] = _idle(kube, identity, op, ns, n, idle_intervals)
                result["rss_kib_end"] = memory_kib(op.pid)
                result["warnings"] = op.warnings()[:20]
            finally:
                tracker.stop()
                result["operator_exit_code"] = op.stop()
        finally:
            identity.teardown()
    result["load_after"] = load_average()
    result["cleanup"] = timings
    return result


def _apiserver_pid() -> int:
    state = ClusterState.load()
    comp = state.components.get("kube-apiserver") if state else None
    return comp.pid if comp else 0


def _idle(kube: Kube, identity: Identity, op: OperatorUnderTest, ns: str, n: int, intervals: int) -> JsonDict:
    """The idle window; measured again (up to 3 times) when the shared API server was restarted
    during it (by another user's fault test: its counters reset and kopf re-lists everything)."""
    skipped = 0
    while True:
        pid = _apiserver_pid()
        result = _idle_window(kube, identity, op, ns, n, intervals)
        restarted = pid != _apiserver_pid() or any(
            v < 0 for v in result["operator_requests_by_verb"].values()
        )
        if not restarted or skipped >= 2:
            result["windows_discarded_for_apiserver_restart"] = skipped
            result["apiserver_restarted_in_window"] = restarted
            return result
        skipped += 1


def _idle_window(
    kube: Kube, identity: Identity, op: OperatorUnderTest, ns: str, n: int, intervals: int
) -> JsonDict:
    settled = settle(op)
    first = int(settled["resync"])
    rvs0 = rv_snapshot(kube, ns)
    # Start just after a resync line: the window then holds exactly `intervals` resyncs.
    line0 = op.wait_resync(first, 120)
    text0 = kube.metrics()
    cpu0 = cpu_seconds(op.pid)
    line1 = op.wait_resync(int(line0["resync"]) + intervals - 1, 120 + intervals * 2 * op.resync_seconds)
    text1 = kube.metrics()
    cpu1 = cpu_seconds(op.pid)
    rvs1 = rv_snapshot(kube, ns)
    by_verb = counter_delta(
        identity.by_verb(dispatched_by_flow_schema(text1)), identity.by_verb(dispatched_by_flow_schema(text0))
    )
    resyncs = int(line1["resync"]) - int(line0["resync"])
    total = sum(by_verb.values())
    writes = sum(by_verb.get(v, 0) for v in WRITE_VERBS)
    changes = rv_changes(rvs0, rvs1)
    return {
        "resyncs": resyncs,
        "window_seconds": round(resyncs * op.resync_seconds, 1),
        "operator_requests_by_verb": by_verb,
        "operator_requests": total,
        "requests_per_resource_per_resync": round(total / (n * resyncs), 4) if resyncs else None,
        "operator_writes": writes,
        "operator_counter_delta": int(line1["api_requests"]) - int(line0["api_requests"]),
        "passes": int(line1["passes"]) - int(line0["passes"]),
        "resource_version_changes": changes,
        "resource_version_changes_total": sum(changes.values()),
        "apiserver_request_total_delta_all_clients": counter_delta(
            request_totals(text1, OPERATOR_RESOURCES), request_totals(text0, OPERATOR_RESOURCES)
        ),
        "operator_cpu_seconds_per_resync": round((cpu1 - cpu0) / resyncs, 3) if resyncs else None,
    }


def wait_load(args: Any) -> list[float]:
    load = wait_for_low_load(args.max_load, args.load_wait)
    print(f"load average {load}", flush=True)
    return load
