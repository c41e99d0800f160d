"""Idle cost: with N resources Ready, count the operator's API requests by verb over several
resyncs (from the API server's /metrics: APF dispatch counters of FlowSchemas matching only the
operator's ServiceAccount, one per verb; apiserver_request_total for all clients alongside) and
the resourceVersion changes in its namespace.

    .venv/bin/python -m tests.bench.bench_idle --n 100 --resync-seconds 10 --intervals 5
"""

from __future__ import annotations

import argparse

from tests.bench import report
from tests.bench.kube import environment, write_result
from tests.bench.runs import common_arguments, operator_run, wait_load
from tests.bench.session import bench_cluster

LIMITS = {
    "requests": "by design a steady-state pass reads only kopf's watch caches and writes nothing; the "
    "remaining requests are kopf's long-running watches, which the API server ends after "
    "--min-request-timeout (30-60 min) and kopf re-opens, so a window shorter than that sees none",
    "writes": "a write would come from a status or child that differs from the rendering; "
    "resourceVersion changes count every object of the namespace, including Pods and "
    "ReplicaSets that only kwok and the controller manager write",
    "cpu": "operator_cpu_seconds_per_resync: one pass per resource (spec validation, rendering and "
    "comparison against the cache) on one core; bounded by Python, not by the API",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--intervals", type=int, default=5, help="resyncs in the measured window")
    common_arguments(parser)
    args = parser.parse_args()

    with bench_cluster() as (info, kube):
        env = environment(kube)
        env["load_at_start"] = wait_load(args)
        op = operator_run(
            kube,
            info,
            args.n,
            resync_seconds=args.resync_seconds,
            idle_intervals=args.intervals,
            timeout=args.timeout,
        )
        path = write_result("idle", str(args.n), {**env, "n": args.n, "operator": op}, LIMITS)
        idle = op["idle"]
        print(
            f"idle N={args.n}: {idle['operator_requests']} request(s) over {idle['resyncs']} resync(s), "
            f"{idle['operator_writes']} write(s), "
            f"{idle['resource_version_changes_total']} rv change(s) -> {path}",
            flush=True,
        )
        report.write()


if __name__ == "__main__":
    main()
