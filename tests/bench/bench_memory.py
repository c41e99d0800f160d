"""Memory and CPU: the operator's peak RSS (VmHWM from /proc/<pid>/status) after converging N
resources and a few idle resyncs, and its CPU seconds per resync, for each N (a fresh operator
process and namespace per N).

    .venv/bin/python -m tests.bench.bench_memory --ns 100,500,1000
"""

from __future__ import annotations

import argparse

from tests.bench import report
from tests.bench.kube import environment, write_result
from tests.bench.runs import common_arguments, operator_run, wait_load
from tests.bench.session import bench_cluster

LIMITS = {
    "rss": "the Python interpreter with kopf, aiohttp, pydantic and the kubernetes client imported "
    "(rss_kib_started), plus kopf's per-object state and the indexes: one trimmed copy of every "
    "VestigeMemory and child; the peak is reached during convergence (many passes and watch "
    "events in flight)",
    "cpu_per_resync": "one pass per resource: pydantic validation of the spec, rendering and the "
    "comparison with the cached objects; linear in N",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ns", default="100,500,1000", help="comma-separated values of N")
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--intervals", type=int, default=3)
    common_arguments(parser)
    args = parser.parse_args()

    with bench_cluster() as (info, kube):
        for n in (int(x) for x in args.ns.split(",") if x.strip()):
            env = environment(kube)
            env["load_at_start"] = wait_load(args)
            op = operator_run(
                kube,
                info,
                n,
                resync_seconds=args.resync_seconds,
                idle_intervals=args.intervals,
                timeout=args.timeout,
            )
            path = write_result("memory", str(n), {**env, "n": n, "operator": op}, LIMITS)
            hwm = op["rss_kib_end"].get("VmHWM", 0) / 1024
            print(f"memory N={n}: VmHWM {hwm:.1f} MiB -> {path}", flush=True)
            report.write()


if __name__ == "__main__":
    main()
