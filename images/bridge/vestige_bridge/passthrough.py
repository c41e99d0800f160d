"""Authenticated MCP pass-through at ``/mcp``.

An MCP server (the SDK's low-level ``Server`` over its Streamable HTTP transport, stateless, JSON
answers) whose tools and resources are Vestige's own: ``tools/list``, ``tools/call``,
``resources/list`` and ``resources/read`` are forwarded unchanged over the bridge's shared
session. MCP clients (Claude Code, ...) use the agent's memory with the bridge token; they never
see Vestige's own token, and a Vestige restart is invisible to them (the bridge reconnects).
A ``tools/call`` is first checked against the REST API's rules (:mod:`vestige_bridge.argrules`:
file arguments, ``allowAnyPath``/``allowSecrets``, deletion confirmations); a call that breaks
one is answered with a JSON-RPC ``invalid params`` error naming the argument and never reaches
Vestige.
Authentication and the body limit are applied by the bridge's middleware before this app runs.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError

from vestige_bridge import __version__
from vestige_bridge.argrules import check_arguments
from vestige_bridge.mcp_client import VestigeClient, VestigeError

INSTRUCTIONS = (
    "Long-term memory of this agent (Vestige), served through vestige-bridge. "
    "Tools are Vestige's own; search before answering, save what is worth remembering."
)


def _unavailable(exc: VestigeError) -> MCPError:
    return MCPError(types.INTERNAL_ERROR, f"Vestige unavailable: {exc}")


def build_passthrough(client: VestigeClient, max_body_bytes: int) -> tuple[StreamableHTTPSessionManager, Any]:
    """The session manager (run it in the app's lifespan) and the ASGI app to mount at /mcp."""

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        try:
            return await client.run(lambda link: link.session.list_tools(params=params))
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        refusal = check_arguments(params.name, arguments)
        if refusal is not None:
            raise MCPError(types.INVALID_PARAMS, refusal.message(params.name), {"argument": refusal.argument})
        try:
            return await client.call_tool(params.name, arguments)
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    async def list_resources(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        try:
            conn = await client.connection()
            if conn.capabilities is None or conn.capabilities.resources is None:
                return types.ListResourcesResult(resources=[])
            return await client.run(lambda link: link.session.list_resources(params=params))
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        try:
            return await client.run(lambda link: link.session.read_resource(params.uri))
        except VestigeError as exc:
            raise _unavailable(exc) from exc

    server: Server[Any] = Server(
        "vestige-bridge",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )
    # No DNS-rebinding Host/Origin allow-list: the bridge is reached by Service and Ingress names
    # and every request carries the bearer token, checked before this app runs.
    manager = StreamableHTTPSessionManager(
        app=server,
        json_response=True,
        stateless=True,
        security_settings=None,
        max_request_body_size=max_body_bytes,
    )
    return manager, StreamableHTTPASGIApp(manager)
