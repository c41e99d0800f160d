"""Abuse on loopback: slow clients, connection floods and bad tokens leave the bridge answering, with
bounded memory and no 500. Loops are bounded in count; everything stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import httpx

from tests.bridge.conftest import Bridge, Upstream, start_bridge


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _addr(bridge: Bridge) -> tuple[str, int]:
    host, _, port = bridge.url.removeprefix("http://").partition(":")
    return host, int(port)


def test_slow_clients_hold_a_slot_each_and_nothing_more(tmp_path: Path, v3_upstream: Upstream) -> None:
    bridge = start_bridge(tmp_path, v3_upstream, name="bridge-slow", VESTIGE_MAX_CONNECTIONS="64")
    try:
        assert bridge.proc.popen is not None
        pid = bridge.proc.popen.pid
        with bridge.client() as http:
            assert http.post("/search", json={"query": "warm up"}).status_code == 200
        before = _rss_kib(pid)
        slow: list[socket.socket] = []
        try:
            # 100 clients that trickle a request: half stop inside the head, half inside a body.
            for i in range(100):
                sock = socket.create_connection(_addr(bridge), timeout=5)
                if i % 2:
                    sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
                else:
                    sock.sendall(
                        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b'Content-Length: 200000\r\n\r\n{"query": "' + b"a" * 1000
                    )
                slow.append(sock)
            # The server keeps answering: an idle request over a fresh connection either succeeds
            # or is refused with 503 once the connection limit is reached -- never a 500, never a hang.
            with httpx.Client(base_url=bridge.url, timeout=15, headers=bridge.headers()) as http:
                statuses = {http.get("/livez").status_code for _ in range(20)}
            assert statuses <= {200, 503}, statuses
            # A client sending an oversized head (200 KB: over the HTTP parser's limit) is refused.
            with socket.create_connection(_addr(bridge), timeout=10) as sock:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"j" * 200_000 + b"\r\n\r\n")
                with contextlib.suppress(ConnectionResetError):
                    answer = sock.recv(200)
                    assert not answer or answer.split()[1] in (b"400", b"431", b"503"), answer
            during = _rss_kib(pid)
        finally:
            for sock in slow:
                sock.close()
        # Released: the bridge serves normally again.
        with bridge.client() as http:
            for _ in range(50):
                if http.get("/livez").status_code == 200:
                    break
                asyncio.run(asyncio.sleep(0.1))
            assert http.post("/search", json={"query": "after"}).status_code == 200
        # Bounded memory: 100 stuck clients cost well under 50 MiB (they are not buffered).
        assert during - before < 50 * 1024, (before, during)
    finally:
        bridge.stop()


def test_connection_flood_is_refused_with_503_not_memory(tmp_path: Path, v3_upstream: Upstream) -> None:
    bridge = start_bridge(tmp_path, v3_upstream, name="bridge-flood", VESTIGE_MAX_CONNECTIONS="16")
    try:
        assert bridge.proc.popen is not None
        pid = bridge.proc.popen.pid
        before = _rss_kib(pid)

        async def flood() -> list[int]:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=bridge.url, timeout=30, limits=limits) as client:

                async def one(i: int) -> int:
                    headers = bridge.headers() if i % 2 else {"Authorization": f"Bearer nope-{i}"}
                    response = await client.post("/search", json={"query": f"q{i}"}, headers=headers)
                    return response.status_code

                return await asyncio.gather(*(one(i) for i in range(400)))

        statuses = asyncio.run(flood())
        assert set(statuses) <= {200, 401, 503}, set(statuses)
        assert 500 not in statuses
        assert _rss_kib(pid) - before < 50 * 1024
        with bridge.client() as http:
            assert http.get("/livez").status_code == 200
    finally:
        bridge.stop()
