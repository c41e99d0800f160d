"""Ask an agent's memory over MCP with the official `mcp` SDK (Streamable HTTP on the bridge's /mcp).

    VESTIGE_TOKEN=$(kubectl vestige token my-agent -n demo) python tests/demo_mcp.py \\
        http://127.0.0.1:PORT/mcp "oolong"

Prints the server the bridge says it is, the tools Vestige offers through it, and what Vestige's
``search`` tool (``recall`` in 3.x) finds for the query. The demo (tests/demo.py) runs the same function.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


@dataclass
class Answer:
    server: str  # "<name> <version>" of the MCP server that answered (the bridge)
    tools: list[str]
    found: str  # the text of the search tool's result


async def _ask(url: str, token: str, query: str) -> Answer:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(60))
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=60) as session,
    ):
        init = await session.initialize()
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        tool = "search" if "search" in tools else "recall"  # Vestige 1.x/2.x; 3.x
        result = await session.call_tool(tool, {"query": query})
        if result.is_error:
            raise RuntimeError(f"search failed: {result.content}")
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        return Answer(f"{init.server_info.name} {init.server_info.version}", tools, text)


def ask(url: str, token: str, query: str) -> Answer:
    """initialize, tools/list and tools/call search against ``url`` (the bridge's /mcp)."""
    return anyio.run(_ask, url, token, query)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not os.environ.get("VESTIGE_TOKEN"):
        print(__doc__, file=sys.stderr)
        return 2
    answer = ask(argv[0], os.environ["VESTIGE_TOKEN"], argv[1])
    print(f"server: {answer.server}")
    print(f"tools:  {', '.join(answer.tools)}")
    try:
        print(json.dumps(json.loads(answer.found), indent=2)[:2000])
    except ValueError:
        print(answer.found[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
