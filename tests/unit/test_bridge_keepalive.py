"""The bridge keeps one upstream connection when the MCP SDK closes an SSE answer early.

A gateway such as supergateway answers each POST with an SSE stream that ends right after the
response event; the SDK stops reading at that event and closes the response, and without the
bridge's response hook httpx2 then closes the socket, so every call opened a new connection.
A real HTTP/1.1 server on 127.0.0.1 counts the connections.
"""

from __future__ import annotations

import asyncio

import httpx2
from vestige_bridge.mcp_client import _drain_post_on_close


async def _serve(counter: list[int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                event = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(event):x}\r\n".encode() + event + b"\r\n"
                )
                await writer.drain()
                await asyncio.sleep(0.05)  # the end of the stream comes a little later
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _calls(hooks: list, n: int) -> int:
    counter = [0]
    server = await _serve(counter)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx2.AsyncClient(event_hooks={"response": hooks}, timeout=5) as client:
            for _ in range(n):
                async with client.stream("POST", f"http://127.0.0.1:{port}/mcp", json={"x": 1}) as resp:
                    async for chunk in resp.aiter_bytes():
                        assert b"result" in chunk
                        break  # like the SDK: stop at the response event, close early
    finally:
        server.close()
        await server.wait_closed()
    return counter[0]


def test_early_closed_answers_reuse_one_connection() -> None:
    assert asyncio.run(_calls([_drain_post_on_close], 10)) == 1


def test_without_the_hook_each_call_opens_a_connection() -> None:
    """The control: the server and client above do reproduce the problem the hook fixes."""
    assert asyncio.run(_calls([], 10)) == 10
