"""Every benchmark runs end to end at a tiny size, so that none can rot unnoticed.

No timing is asserted (speed is what the benchmarks themselves measure, by hand): each test runs
one benchmark's ``main`` with tiny arguments against the shared local cluster (kwok nodes) or the
bridge's stand-in, and checks that it wrote its result and its report. Results go to a temporary
directory (``$VESTIGE_BENCH_RESULTS``), never to tests/bench/results or docs/benchmarks.md.

A harness error must surface at once, not after the run's timeout: the floor test breaks the
floor's writes and expects the harness' own error while the timeout is an hour.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import cluster
from tests.bench import (
    bench_bridge,
    bench_convergence,
    bench_failover,
    bench_idle,
    bench_memory,
    runs,
    session,
)
from tests.bench.kube import RESULTS_ENV

#: Never wait for a quiet machine: the smoke run measures nothing.
NO_LOAD_WAIT = ["--max-load", "1000", "--load-wait", "0"]


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "results"
    monkeypatch.setenv(RESULTS_ENV, str(out))
    return out


def run_main(main: Callable[[], None], monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    main()


def result(results: Path, name: str, key: str) -> dict[str, Any]:
    doc = json.loads((results / f"{name}.json").read_text())
    assert doc["bench"] == name and doc["limits"], doc
    report = (results / "benchmarks.md").read_text()
    assert "results:begin" in report and "results:end" in report
    return doc["runs"][key]


def test_convergence(
    cluster_state: cluster.ClusterState, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_main(bench_convergence.main, monkeypatch, "--n", "2", "--timeout", "300", *NO_LOAD_WAIT)
    run = result(results, "convergence", "2")
    assert run["floor"]["n"] == run["operator"]["n"] == 2
    assert run["floor"]["requests"]["apply_status"] == 2
    assert run["operator"]["operator_exit_code"] == 0
    assert run["ratio"] > 0


def test_idle(cluster_state: cluster.ClusterState, results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--n", "2", "--resync-seconds", "2", "--intervals", "1", "--timeout", "300"]
    run_main(bench_idle.main, monkeypatch, *args, *NO_LOAD_WAIT)
    idle = result(results, "idle", "2")["operator"]["idle"]
    assert idle["resyncs"] >= 1
    assert "operator_writes" in idle


def test_memory(cluster_state: cluster.ClusterState, results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--ns", "2", "--resync-seconds", "2", "--intervals", "1", "--timeout", "300"]
    run_main(bench_memory.main, monkeypatch, *args, *NO_LOAD_WAIT)
    run = result(results, "memory", "2")
    assert run["operator"]["rss_kib_end"]["VmHWM"] > 0


def test_failover(
    cluster_state: cluster.ClusterState, results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--n", "2", "--resync-seconds", "2", "--idle-resyncs", "1", "--timeout", "300"]
    run_main(bench_failover.main, monkeypatch, *args, *NO_LOAD_WAIT)
    run = result(results, "failover", "2")
    assert run["standby_writes_before_kill"] == {}
    assert run["leader_idle"]["resyncs"] == 1
    assert run["bridge_cpu_before"] == "5m"
    assert 0 < run["lease_seconds"] <= run["change_applied_seconds"]
    assert run["exit_codes"]["replica-b"] == 0


def test_bridge(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--requests", "3", "--max-requests", "6", "--rounds", "1", "--warmup", "1"]
    run_main(bench_bridge.main, monkeypatch, *args, *NO_LOAD_WAIT)
    run = result(results, "bridge", "search")
    assert [c["concurrency"] for c in run["clients"]] == list(bench_bridge.CONCURRENCY)
    assert run["results_per_search"] > 0


def test_a_failed_floor_says_why_at_once(
    cluster_state: cluster.ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A floor whose writes fail raises its harness error now; the hour-long timeout would
    otherwise run out first (pytest's own timeout stops the test long before)."""

    def broken(*_: Any) -> dict[str, Any]:
        raise TypeError("render_secret() missing 1 required positional argument")

    monkeypatch.setattr(session, "render_secret", broken)
    with session.bench_cluster() as (info, kube), pytest.raises(session.HarnessError, match="render_secret"):
        runs.floor_run(kube, info, 2, timeout=3600)


def test_pods_the_node_has_no_room_for_stop_a_run_at_once(cluster_state: cluster.ClusterState) -> None:
    """A pod no node can take (more CPU than any has) makes the scheduler's FailedScheduling
    event, and the runs' scheduling check raises its harness error with that message."""
    with session.bench_cluster() as (_, kube):
        timings: dict[str, float] = {}
        with session.bench_namespace(kube, "nofit", session.new_run_id(), timings) as ns:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "too-big"},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "example.org/none:1",
                            "resources": {"requests": {"cpu": "100000"}},
                        }
                    ]
                },
            }
            kube.create(f"/api/v1/namespaces/{ns}/pods", pod)
            check = session.SchedulingCheck(kube, ns)
            deadline = time.monotonic() + 60
            with pytest.raises(session.HarnessError, match="Insufficient cpu"):
                while time.monotonic() < deadline:
                    check()
                    time.sleep(1)
