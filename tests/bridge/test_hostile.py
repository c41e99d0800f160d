"""Hostile traffic without a token (issue 21, item 4): a bounded loop of unauthenticated requests
with made-up methods, paths, headers, bodies and MCP session ids keeps the bridge's /metrics
series and its memory flat, never reaches Vestige and never writes the client's data to the log.

Every label the bridge exports must come from a fixed set (docs/bridge.md, "Metrics"): a label
taken from the request (a raw method, a raw path) makes every new value a new series that lives
for ever, and 20,000 requests of made-up methods cost about 90 MiB before this was fixed.
The requests cycle through kinds (i % KINDS), so the first WARM requests already contain every
kind: what appears after them is growth, not a kind seen late. Memory is a correctness property
here: RSS after the warm-up and at the end are compared with a generous bound, not timed.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from pathlib import Path

import httpx
import pytest

from tests.bridge.conftest import Bridge, Upstream, start_bridge

TOTAL = 20_000
WARM = 2_000
WORKERS = 8
RSS_GROWTH_LIMIT_KIB = 16 * 1024
"""After the warm-up, 18,000 more requests may grow RSS by this much at most (allocator noise);
one series per made-up method costs ~4.5 KiB, i.e. ~80 MiB over those requests."""
PUBLIC = ("/livez", "/metrics", "/openapi.json")
MARK = "zq"
"""Prefix of every made-up token, so a leak into /metrics or the log can be searched for."""


def _word(rng: random.Random, n: int = 10) -> str:
    return MARK + "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


def _request(i: int, rng: random.Random) -> tuple[str, str, dict[str, str], bytes | None]:
    """Request number i: method, path (with query), headers, body. Never a valid token."""
    headers = {f"X-{_word(rng, 6)}": _word(rng, 20) for _ in range(rng.randint(0, 4))}
    kind = i % 8
    if kind == 0:  # a made-up method on a made-up path
        return _word(rng, 8).upper(), f"/{_word(rng)}", headers, None
    if kind == 1:  # a standard method, a made-up path, a wrong token
        method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
        headers["Authorization"] = f"Bearer {_word(rng, 32)}"
        return method, f"/{_word(rng)}/{_word(rng)}?{_word(rng, 4)}={_word(rng)}", headers, None
    if kind == 2:  # /mcp with a made-up session id and JSON-RPC body, no token
        headers["Mcp-Session-Id"] = _word(rng, 32)
        headers["Accept"] = "application/json, text/event-stream"
        headers["Content-Type"] = "application/json"
        body = {"jsonrpc": "2.0", "id": i, "method": _word(rng), "params": {_word(rng, 4): _word(rng)}}
        return "POST", "/mcp", headers, json.dumps(body).encode()
    if kind == 3:  # a made-up method on a public path
        return _word(rng, 8).upper(), rng.choice(PUBLIC), headers, None
    if kind == 4:  # a real route with a body and a wrong scheme
        headers["Authorization"] = f"Basic {_word(rng, 16)}"
        headers["Content-Type"] = "application/json"
        return "POST", "/search", headers, json.dumps({"query": _word(rng)}).encode()
    if kind == 5:  # percent-encoded junk in the path
        return (
            "GET",
            "/" + "".join(f"%{rng.randrange(256):02X}" for _ in range(12)) + _word(rng),
            headers,
            None,
        )
    if kind == 6:  # a public path with made-up query and headers
        return "GET", f"/livez?{_word(rng, 4)}={_word(rng)}", headers, None
    return "DELETE", "/mcp", {**headers, "Mcp-Session-Id": _word(rng, 32)}, None  # kind 7


def series(text: str) -> set[str]:
    """Every exported series (name and labels, without the value)."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    target: str,
    head: bytes,
    body: bytes,
) -> tuple[int, bool]:
    """One request over a kept-alive connection: (status, the server keeps the connection)."""
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n".encode()
    writer.write(request + head + b"\r\n" + body)
    await writer.drain()
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    if method != "HEAD":
        await reader.readexactly(int(fields.get("content-length", "0")))
    return int(status_line.split()[1]), fields.get("connection", "").lower() != "close"


async def _hammer(bridge: Bridge, start: int, stop: int, statuses: dict[int, int]) -> None:
    """Requests start..stop-1 over WORKERS kept-alive connections (raw HTTP/1.1: a client library
    would cost more CPU than the bridge on this machine)."""
    host, _, port = bridge.url.removeprefix("http://").partition(":")

    async def worker(w: int) -> None:
        rng = random.Random(w * 1_000_003 + start)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in range(start + w, stop, WORKERS):
                method, target, headers, body = _request(i, rng)
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                status, keep = await asyncio.wait_for(
                    _exchange(reader, writer, method, target, head, body or b""), 60
                )
                statuses[status] = statuses.get(status, 0) + 1
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))


@pytest.mark.timeout(1800)  # a bounded loop; this machine may be busy
def test_unauthenticated_flood_keeps_metrics_and_memory_flat(tmp_path: Path, v3_upstream: Upstream) -> None:
    bridge = start_bridge(tmp_path, v3_upstream, name="bridge-hostile")
    try:
        assert bridge.proc.popen is not None
        pid = bridge.proc.popen.pid
        with bridge.client() as http:  # the legitimate series exist before the flood
            assert http.post("/search", json={"query": "warm up"}).status_code == 200
            http.get("/metrics")
        v3_upstream.calls.clear()
        statuses: dict[int, int] = {}

        asyncio.run(_hammer(bridge, 0, WARM, statuses))
        warm_series = series(httpx.get(bridge.url + "/metrics", timeout=60).text)
        warm_rss = _rss_kib(pid)

        asyncio.run(_hammer(bridge, WARM, TOTAL, statuses))
        text = httpx.get(bridge.url + "/metrics", timeout=60).text
        end_series = series(text)
        end_rss = _rss_kib(pid)

        assert sum(statuses.values()) == TOTAL
        assert set(statuses) <= {200, 401, 404, 405}, statuses  # never a 5xx
        assert statuses[401] >= TOTAL // 2, statuses
        assert len(end_series) == len(warm_series), sorted(end_series - warm_series)[:20]
        assert end_series == warm_series, sorted(end_series ^ warm_series)[:20]
        assert MARK not in text.lower()  # no client-supplied value is a label
        assert end_rss - warm_rss < RSS_GROWTH_LIMIT_KIB, (warm_rss, end_rss)
        assert v3_upstream.calls.calls() == []  # a 401 costs no Vestige call
        with bridge.client() as http:  # and the bridge still serves its agent
            assert http.post("/search", json={"query": "after"}).status_code == 200
    finally:
        bridge.stop()
    assert MARK not in bridge.proc.output().lower()  # nothing the clients sent reached the log
