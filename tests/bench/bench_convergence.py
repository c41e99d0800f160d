"""Convergence: time until N new VestigeMemory resources are all Ready, with the operator, against
the floor (the same children and Ready statuses server-side applied directly at the same client
concurrency, no operator), in the same run.

    .venv/bin/python -m tests.bench.bench_convergence --n 100   # also 500, 1000
"""

from __future__ import annotations

import argparse

from tests.bench import report
from tests.bench.kube import environment, write_result
from tests.bench.runs import common_arguments, floor_run, operator_run, wait_load
from tests.bench.session import bench_cluster

LIMITS = {
    "floor": "the control plane itself: the API server admitting and storing ~6 objects per resource, "
    "the controller manager (ReplicaSets, PV binding), the scheduler and kwok making the pod Ready, "
    "all on 2 shared cores; see cluster_cpu_seconds for where the CPU went",
    "operator": "the same control-plane work, plus the operator's passes: kopf's watch-event handling "
    "and the first pass's writes (token Secret, 4 applies, status patches) through 8 concurrent "
    "API calls; operator_cpu_seconds shows how much of the wall time the operator process itself used",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, default=100, help="number of VestigeMemory resources (100, 500, 1000)"
    )
    parser.add_argument("--resync-seconds", type=float, default=60.0, help="operator resync interval")
    common_arguments(parser)
    args = parser.parse_args()

    with bench_cluster() as (info, kube):
        env = environment(kube)
        env["load_at_start"] = wait_load(args)
        print(f"floor: N={args.n}", flush=True)
        floor = floor_run(kube, info, args.n, args.timeout)
        print(f"floor: {floor['seconds']}s; operator: N={args.n}", flush=True)
        wait_load(args)
        op = operator_run(
            kube, info, args.n, resync_seconds=args.resync_seconds, idle_intervals=0, timeout=args.timeout
        )
        conv = op["convergence"]["seconds"]
        run = {
            **env,
            "n": args.n,
            "floor": floor,
            "operator": op,
            "ratio": round(conv / floor["seconds"], 2),
        }
        path = write_result("convergence", str(args.n), run, LIMITS)
        print(f"operator: {conv}s; ratio {run['ratio']} -> {path}", flush=True)
        report.write()


if __name__ == "__main__":
    main()
