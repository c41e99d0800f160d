"""Bridge overhead: latency (p50/p99) and requests/s of the bridge's ``POST /search`` against the
same tool call made directly over MCP (an ``mcp`` SDK ``ClientSession``), in the same run, at 1 and
16 concurrent clients, against the MCP stand-in (tests/bridge/standin.py) or the real Vestige.

Upstream (``--upstream``): ``standin`` = the v1 stand-in over stdio behind supergateway (npm,
Streamable HTTP, stateful) when node and supergateway are installed (tests/bridge installs it
under ~/.cache/vestige-operator/npm), else the v3 stand-in serving Streamable HTTP itself;
``real-1.3.0`` / ``real-2.0.0`` = the real Vestige (built by tests.vestige) behind PyPI mcp-proxy
in the v1 pod's shape (tests/bridge/real.py), where "direct" is the same MCP call through the same
gateway. Everything listens on 127.0.0.1; request counts are bounded; direct and bridge rounds
alternate so load changes hit both alike.

    .venv/bin/python -m tests.bench.bench_bridge [--upstream real-1.3.0] [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.bench import report
from tests.bench.kube import JsonDict, cpu_seconds, environment, load_average, wait_for_low_load, write_result
from tests.bridge.conftest import (
    LOOPBACK_PRELOAD,
    NPM_PREFIX,
    PYTHON,
    TOKEN,
    UPSTREAM_TOKEN,
    Proc,
    base_env,
    free_port,
)

CONCURRENCY = (1, 16)
QUERY = "kubernetes operator memory"
# The real Vestige's search is FTS5 keyword search (keyword-only builds): the words must occur
# together as in the corpus, else it finds nothing and the benchmark would time an empty search.
QUERY_REAL = "kubernetes operator"
CORPUS = [
    f"note {i}: the kubernetes operator keeps agent memory number {i} in a volume" for i in range(40)
] + [f"unrelated fact {i} about gardening and tomatoes" for i in range(40)]
LIMITS = {
    "direct": "the stand-in (a Python MCP server, one process per session behind supergateway) and "
    "supergateway's stdio relay: one session serializes on one stdio pipe, so concurrency adds "
    "queueing, not throughput, on 2 cores",
    "direct_real": "real Vestige 1.3.0/2.0.0 runs: the debug build (tests.vestige) answering over "
    "one stdio pipe behind mcp-proxy (Python, one shared stdio session, JSON answers); 1.x/2.x "
    "serialize tool calls on one storage mutex, and each search also writes (strengthen on access)",
    "bridge": "one more HTTP hop and a Python process (uvicorn + FastAPI request parsing, "
    "pydantic validation, REST→MCP mapping and schema check, the MCP client round trip over "
    "the shared session, JSON envelope): CPU per request in the bridge process "
    "(bridge_cpu_ms_per_request) adds to the same 2 cores as the upstream and the load generator",
}


def supergateway_entry() -> Path | None:
    entry = NPM_PREFIX / "node_modules" / "supergateway" / "dist" / "index.js"
    return entry if entry.exists() and shutil.which("node") else None


def start_upstream(tmp: Path, upstream: str = "standin") -> tuple[str, str, str | None, list[Proc]]:
    """(transport description, MCP URL, upstream token, processes)."""
    if upstream.startswith("real-"):
        from tests.bridge.conftest import _ensure_mcp_proxy
        from tests.bridge.real import start_real

        version = upstream.removeprefix("real-")
        real = start_real(tmp, _ensure_mcp_proxy(), version, name=f"vestige-{version}")
        return (
            f"real Vestige {version} (debug build, keyword-only) over stdio behind mcp-proxy",
            real.mcp_url,
            None,
            real.procs,
        )
    port = free_port()
    entry = supergateway_entry()
    if entry is not None:
        command = f"{PYTHON} -m tests.bridge.standin --generation v1 --stdio"
        argv = [
            "node",
            "--require",
            str(LOOPBACK_PRELOAD),
            str(entry),
            "--stdio",
            command,
            "--port",
            str(port),
        ]
        argv += ["--outputTransport", "streamableHttp", "--streamableHttpPath", "/mcp", "--stateful"]
        argv += ["--sessionTimeout", "600000", "--logLevel", "none"]
        proc = Proc("supergateway", argv, base_env(), tmp / "supergateway.log", port).start().wait_port(60)
        return (
            "supergateway (stdio v1 stand-in → Streamable HTTP)",
            f"http://127.0.0.1:{port}/mcp",
            None,
            [proc],
        )
    argv = [PYTHON, "-m", "tests.bridge.standin", "--generation", "v3", "--port", str(port)]
    argv += ["--token", UPSTREAM_TOKEN]
    proc = Proc("standin", argv, base_env(), tmp / "standin.log", port, keep_stdin=True).start().wait_port(30)
    return "direct Streamable HTTP (v3 stand-in)", f"http://127.0.0.1:{port}/mcp", UPSTREAM_TOKEN, [proc]


def start_bridge(
    tmp: Path, mcp_url: str, upstream_token: str | None, extra_path: str | None = None
) -> tuple[str, Proc]:
    port = free_port()
    settings = {"VESTIGE_AUTH_TOKEN": TOKEN, "VESTIGE_AGENT_ID": "bench", "VESTIGE_MCP_URL": mcp_url}
    if upstream_token:
        settings["VESTIGE_MCP_TOKEN"] = upstream_token
    env = base_env(**settings)
    if extra_path:  # e.g. a directory with uvloop and httptools, which uvicorn then picks up
        env["PYTHONPATH"] = f"{extra_path}:{env['PYTHONPATH']}"
    argv = [PYTHON, "-m", "vestige_bridge", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc("bridge", argv, env, tmp / "bridge.log", port).start().wait_port(30)
    return f"http://127.0.0.1:{port}", proc


@contextlib.asynccontextmanager
async def mcp_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def run_load(
    call: Callable[[], Awaitable[None]], concurrency: int, total: int
) -> tuple[list[float], float]:
    """``total`` calls by ``concurrency`` workers, each back to back; (latencies s, elapsed s)."""
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], elapsed: float) -> JsonDict:
    ordered = sorted(latencies)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "requests": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "rps": round(len(ordered) / elapsed, 1),
    }


async def bench(args: argparse.Namespace, tmp: Path) -> JsonDict:
    transport, mcp_url, upstream_token, upstreams = start_upstream(tmp, args.upstream)
    query = QUERY if args.upstream == "standin" else QUERY_REAL
    bridge_url, bridge = start_bridge(tmp, mcp_url, upstream_token, args.bridge_extra_path)
    try:
        async with (
            mcp_session(mcp_url, upstream_token) as session,
            httpx.AsyncClient(
                base_url=bridge_url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                limits=httpx.Limits(
                    max_connections=max(CONCURRENCY), max_keepalive_connections=max(CONCURRENCY)
                ),
                timeout=60,
            ) as http,
        ):
            tools = {t.name for t in (await session.list_tools()).tools}
            tool = "search" if "search" in tools else "recall"
            # Same corpus through both paths (behind a stateful gateway each session has its own server).
            for text in CORPUS:
                ingest = "ingest" if "ingest" in tools else "smart_ingest"
                await session.call_tool(ingest, {"content": text, "node_type": "fact"})
                resp = await http.post("/ingest", json={"content": text})
                resp.raise_for_status()

            async def direct() -> None:
                result = await session.call_tool(tool, {"query": query, "limit": 10})
                if result.is_error:
                    raise RuntimeError(f"direct {tool} failed: {result.content}")

            async def via_bridge() -> None:
                resp = await http.post("/search", json={"query": query, "limit": 10})
                if resp.status_code != 200 or not resp.json().get("success"):
                    raise RuntimeError(f"bridge /search: {resp.status_code} {resp.text[:300]}")

            first = (await http.post("/search", json={"query": query, "limit": 10})).json()
            hits = first["data"]["content"][0]["text"][:200]
            found = len(json.loads(first["data"]["content"][0]["text"]).get("results", []))
            if found == 0:
                raise RuntimeError(f"query {query!r} finds nothing: the benchmark would time an empty search")
            clients = []
            for concurrency in CONCURRENCY:
                total = args.requests * concurrency if concurrency > 1 else args.requests
                total = min(total, args.max_requests)
                await run_load(direct, concurrency, args.warmup)
                await run_load(via_bridge, concurrency, args.warmup)
                lat: dict[str, list[float]] = {"direct": [], "bridge": []}
                elapsed = {"direct": 0.0, "bridge": 0.0}
                bridge_cpu = 0.0
                for r in range(args.rounds):
                    order = ("direct", "bridge") if r % 2 == 0 else ("bridge", "direct")
                    for mode in order:
                        cpu0 = cpu_seconds(bridge.popen.pid) if bridge.popen else 0.0
                        got, took = await run_load(
                            direct if mode == "direct" else via_bridge, concurrency, total
                        )
                        if mode == "bridge" and bridge.popen:
                            bridge_cpu += cpu_seconds(bridge.popen.pid) - cpu0
                        lat[mode] += got
                        elapsed[mode] += took
                d, b = summary(lat["direct"], elapsed["direct"]), summary(lat["bridge"], elapsed["bridge"])
                clients.append(
                    {
                        "concurrency": concurrency,
                        "requests_per_round": total,
                        "rounds": args.rounds,
                        "direct": d,
                        "bridge": b,
                        "p50_overhead_ms": round(b["p50_ms"] - d["p50_ms"], 3),
                        "p99_overhead_ms": round(b["p99_ms"] - d["p99_ms"], 3),
                        "throughput_ratio": round(b["rps"] / d["rps"], 3),
                        "bridge_cpu_ms_per_request": round(1000 * bridge_cpu / len(lat["bridge"]), 3),
                        "load_after": load_average(),
                    }
                )
                print(
                    f"{concurrency} client(s): direct p50 {d['p50_ms']} ms {d['rps']} req/s; "
                    f"bridge p50 {b['p50_ms']} ms {b['rps']} req/s",
                    flush=True,
                )
            return {
                "transport": transport,
                "tool": tool,
                "query": query,
                "results_per_search": found,
                "sample_answer": hits,
                "clients": clients,
            }
    finally:
        bridge.stop()
        for proc in upstreams:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per round per client")
    parser.add_argument("--max-requests", type=int, default=3000, help="cap of requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/bridge rounds")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per path and concurrency")
    parser.add_argument(
        "--bridge-extra-path",
        default=None,
        help="directory prepended to the bridge's PYTHONPATH (an experiment: uvloop + httptools)",
    )
    parser.add_argument(
        "--upstream",
        choices=("standin", "real-1.3.0", "real-2.0.0"),
        default="standin",
        help="what the bridge fronts (real-*: the real Vestige behind mcp-proxy)",
    )
    parser.add_argument(
        "--key", default=None, help="result key in bridge.json (default: search / <upstream>-search)"
    )
    parser.add_argument("--variant", default=None, help="label of the bridge variant in the report")
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--load-wait", type=float, default=300)
    args = parser.parse_args()

    env = environment()
    env["load_at_start"] = wait_for_low_load(args.max_load, args.load_wait)
    tmp = Path(tempfile.mkdtemp(prefix="vestige-bench-bridge-"))
    result = asyncio.run(bench(args, tmp))
    run = {**env, **result, "load_after": load_average()}
    run["bridge_extra_path"] = args.bridge_extra_path
    run["upstream"] = args.upstream
    if args.variant:
        run["variant"] = args.variant
    key = args.key or ("search" if args.upstream == "standin" else f"{args.upstream}-search")
    path = write_result("bridge", key, run, LIMITS)
    print(f"-> {path}", flush=True)
    report.write()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
