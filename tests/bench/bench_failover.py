"""Failover: with N VestigeMemory resources Ready and two operator replicas (leader election on,
the chart's Lease timings), SIGKILL the leader and change one agent's spec at once. Measured from
the kill: when the standby holds the Lease, when the change reaches the agent's Deployment, and
when the new leader's full resync (one pass per resource, from its warm caches) has ended. Before
the kill: the standby's writes (there must be none), and the leader's writes, CPU and memory over
``--idle-resyncs`` resyncs of the converged fleet (the idle benchmark's figures, at this N).

    .venv/bin/python -m tests.bench.bench_failover --n 100   # also 1000, 5000

The replicas are host processes on the shared cluster (as the other benchmarks run the operator),
so a kill is seen by the API server only through the Lease: exactly what a lost pod looks like.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.bench import report
from tests.bench.kube import (
    ClusterInfo,
    JsonDict,
    Kube,
    cpu_seconds,
    environment,
    load_average,
    memory_kib,
    samples,
    write_result,
)
from tests.bench.runs import common_arguments, settle, wait_load
from tests.bench.session import (
    HarnessError,
    Identity,
    OperatorUnderTest,
    ReadyTracker,
    SchedulingCheck,
    bench_cluster,
    bench_namespace,
    checks,
    create_memories,
    free_port,
    memories_path,
    memory_name,
    new_run_id,
)

LEASE = "vestige-operator"
#: The verbs that change something; a standby must send none of them.
WRITES = ("apply", "create", "update", "patch", "patch_status", "delete", "hand over")
#: How often the clock of the takeover is read (a GET of the Lease and of one Deployment).
POLL_SECONDS = 0.1

LIMITS = {
    "lease": "the Lease duration (10 s, the chart's default): the standby takes an unrenewed Lease "
    "only that long after it saw the last renewal, plus up to one retry period (2 s); it does not "
    "grow with N",
    "change_applied": "the takeover plus the changed agent's pass: the new leader requests a pass of "
    "every resource at once, so the changed one waits behind up to N-1 others on the queue (8 "
    "concurrent passes); from warm caches each is a no-op",
    "resync_done": "N passes from warm caches through 8 workers after the takeover: the operator's "
    "CPU per pass (no API requests for a settled resource)",
}


def _metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text exposition."""
    return sum(value for _, value in samples(text, name))


def _writes_by(text: str) -> dict[str, float]:
    """The operator's write requests so far, by verb (its own request counter)."""
    out: dict[str, float] = {}
    for labels, value in samples(text, "vestige_operator_api_requests_total"):
        if labels.get("verb") in WRITES:
            out[labels["verb"]] = out.get(labels["verb"], 0.0) + value
    return out


class Replica:
    """One operator replica with leader election and its metrics endpoint."""

    def __init__(self, name: str, identity: Identity, ns: str, resync: float, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.op = OperatorUnderTest.start(
            identity.kubeconfig,
            ns,
            resync,
            workdir / f"operator-{name}.log",
            extra_env={
                "POD_NAME": name,  # the candidate identity
                "VESTIGE_LEADER_ELECTION": "true",
                "VESTIGE_LEASE_NAMESPACE": ns,
                "VESTIGE_METRICS_HOST": "127.0.0.1",
                "VESTIGE_METRICS_PORT": str(self.port),
            },
        )

    def metrics(self) -> str:
        # A standby busy with its first listing (30,000 objects at N = 5,000) answers late.
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=60) as resp:
            return str(resp.read().decode())


def _holder(kube: Kube, ns: str) -> str | None:
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEASE}") or {}
    return (lease.get("spec") or {}).get("holderIdentity")


def _wait(what: str, done: Callable[[], bool], timeout: float, check: Callable[[], None]) -> float:
    """Poll ``done`` until true; the monotonic time it turned true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return time.monotonic()
        check()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


def _bridge_cpu(kube: Kube, ns: str, name: str) -> str | None:
    dep = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}") or {}
    for c in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", []):
        if "bridge" in c["name"]:
            return str(((c.get("resources") or {}).get("requests") or {}).get("cpu"))
    return None


def failover_run(
    kube: Kube, info: ClusterInfo, n: int, *, resync_seconds: float, idle_resyncs: int, timeout: float
) -> JsonDict:
    timings: dict[str, float] = {}
    run_id = new_run_id()
    result: JsonDict = {"n": n, "resync_seconds": resync_seconds, "load_before": load_average()}
    workdir = Path(tempfile.mkdtemp(prefix="vestige-bench-failover-"))
    with bench_namespace(kube, "failover", run_id, timings) as ns:
        identity = Identity(kube, info, ns, run_id, workdir / "operator.kubeconfig")
        replicas: list[Replica] = []
        try:
            identity.setup()
            a = Replica("replica-a", identity, ns, resync_seconds, workdir)
            replicas.append(a)
            _wait("replica-a to lead", lambda: _holder(kube, ns) == "replica-a", 60, a.op.check_running)
            tracker = ReadyTracker(kube, ns)
            try:
                cpu0 = cpu_seconds(a.op.pid)
                start, _ = create_memories(kube, ns, n)
                if not tracker.wait_all(
                    n, timeout, check=checks(a.op.check_running, SchedulingCheck(kube, ns))
                ):
                    raise RuntimeError(f"{len(tracker.ready_at)}/{n} Ready within {timeout:.0f}s")
                # The leader's convergence alone (no floor in this run, resyncs every
                # `resync_seconds` meanwhile): the convergence benchmark gives the ratio.
                result["leader_convergence"] = {
                    "seconds": round(max(tracker.ready_at.values()) - start, 2),
                    "operator_cpu_seconds": round(cpu_seconds(a.op.pid) - cpu0, 2),
                    "rss_kib": memory_kib(a.op.pid),
                }
            finally:
                tracker.stop()
            launched = time.monotonic()
            b = Replica("replica-b", identity, ns, resync_seconds, workdir)
            replicas.append(b)
            listed = _wait(
                "the standby's caches to hold every resource",
                lambda: _metric(b.metrics(), "vestige_operator_resources") >= n,
                timeout,
                b.op.check_running,
            )
            # A replica starting beside N agents (a standby, or the only replica after a restart).
            result["standby_start"] = {
                "seconds": round(listed - launched, 2),
                "cpu_seconds": round(cpu_seconds(b.op.pid), 2),
                "rss_kib": memory_kib(b.op.pid),
            }
            # The leader idle (both replicas up): its writes over `idle_resyncs` resyncs, after one
            # resync that settles what convergence left (the idle benchmark's window, here at N).
            settled = settle(a.op)
            line0 = a.op.wait_resync(int(settled["resync"]), timeout)
            writes0, cpu0, t0 = _writes_by(a.metrics()), cpu_seconds(a.op.pid), time.monotonic()
            line1 = a.op.wait_resync(int(line0["resync"]) + idle_resyncs - 1, timeout)
            writes1, cpu1, t1 = _writes_by(a.metrics()), cpu_seconds(a.op.pid), time.monotonic()
            resyncs = int(line1["resync"]) - int(line0["resync"])
            result["leader_idle"] = {
                "resyncs": resyncs,
                "window_seconds": round(t1 - t0, 1),
                "writes": {
                    k: v - writes0.get(k, 0.0) for k, v in writes1.items() if v != writes0.get(k, 0.0)
                },
                "api_requests": int(line1["api_requests"]) - int(line0["api_requests"]),
                "cpu_seconds_per_resync": round((cpu1 - cpu0) / resyncs, 3),
                "rss_kib": memory_kib(a.op.pid),
            }
            standby_writes = _writes_by(b.metrics())
            leader_gauge = _metric(b.metrics(), "vestige_operator_leader")
            passes0 = _metric(b.metrics(), "vestige_operator_reconciles_total")
            target = memory_name(0)
            path = memories_path(ns, target)
            cpu_before = _bridge_cpu(kube, ns, target)

            killed = time.monotonic()
            os.kill(a.op.pid, signal.SIGKILL)
            kube.request(
                "PATCH",
                path,
                body={"spec": {"bridge": {"resources": {"requests": {"cpu": "6m", "memory": "32Mi"}}}}},
                content_type="application/merge-patch+json",
            )
            patched = time.monotonic()
            leased = _wait(
                "replica-b to hold the Lease",
                lambda: _holder(kube, ns) == "replica-b",
                120,
                b.op.check_running,
            )
            applied = _wait(
                "the change to reach the Deployment",
                lambda: _bridge_cpu(kube, ns, target) == "6m",
                timeout,
                b.op.check_running,
            )
            resynced = _wait(
                "the new leader's full resync",
                lambda: _metric(b.metrics(), "vestige_operator_reconciles_total") >= passes0 + n,
                timeout,
                b.op.check_running,
            )
            result.update(
                standby_writes_before_kill=standby_writes,
                standby_leader_gauge_before_kill=leader_gauge,
                bridge_cpu_before=cpu_before,
                patch_seconds=round(patched - killed, 2),
                lease_seconds=round(leased - killed, 2),
                change_applied_seconds=round(applied - killed, 2),
                resync_done_seconds=round(resynced - killed, 2),
                new_leader_rss_kib=memory_kib(b.op.pid),
                new_leader_warnings=b.op.warnings()[:20],
            )
            if standby_writes:
                raise HarnessError(f"the standby wrote before the kill: {standby_writes}")
        finally:
            for replica in replicas:
                result.setdefault("exit_codes", {})[replica.name] = replica.op.stop()
            identity.teardown()
    result["load_after"] = load_average()
    result["cleanup"] = timings
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100, help="number of VestigeMemory resources")
    parser.add_argument("--resync-seconds", type=float, default=30.0, help="operator resync interval")
    parser.add_argument(
        "--idle-resyncs", type=int, default=2, help="resyncs of the idle leader measured before the kill"
    )
    common_arguments(parser)
    args = parser.parse_args()
    with bench_cluster() as (info, kube):
        env = environment(kube)
        env["load_at_start"] = wait_load(args)
        run = {
            **env,
            **failover_run(
                kube,
                info,
                args.n,
                resync_seconds=args.resync_seconds,
                idle_resyncs=args.idle_resyncs,
                timeout=args.timeout,
            ),
        }
        path = write_result("failover", str(args.n), run, LIMITS)
        print(
            f"failover N={args.n}: Lease {run['lease_seconds']}s, "
            f"change applied {run['change_applied_seconds']}s, "
            f"resync done {run['resync_done_seconds']}s -> {path}",
            flush=True,
        )
        report.write()


if __name__ == "__main__":
    main()
