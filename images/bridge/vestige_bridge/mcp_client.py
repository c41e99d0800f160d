"""One reused MCP session to Vestige, built on the official ``mcp`` SDK client.

The SDK's transports are async context managers whose task groups must be entered and left in
the same task, and a dead server makes the transport's task group fail as a whole. So each
session lives in its own runner task (:class:`_Connection`); callers from any request task send
through it and race their request against the connection's end. A lost session (server
restart: 404 "Session terminated", idle reaper, refused connection) is re-initialized and the
call retried once; a timeout or an error mid-call is not retried (the call may have been
applied). Every call is bounded by a timeout.

The SDK closes a POST's SSE answer as soon as the JSON-RPC response has arrived, before the
server's end of stream: httpx2 then closes the TCP connection instead of pooling it, so every
call would open a new one. A response hook (:func:`_drain_post_on_close`) reads such a leftover
(bounded in time and size) before releasing the response, so the connection is kept alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from vestige_bridge import __version__
from vestige_bridge.mapping import ServerProfile, ToolCall
from vestige_bridge.metrics import Metrics
from vestige_bridge.settings import Settings

log = logging.getLogger("vestige_bridge.mcp")

T = TypeVar("T")
CLIENT_INFO = types.Implementation(name="vestige-bridge", version=__version__)


DRAIN_SECONDS = 1.0
"""How long closing an unfinished POST answer waits for its end (then the connection is dropped)."""
DRAIN_BYTES = 1 << 20
"""How much of an unfinished POST answer closing it reads at most (then the connection is dropped)."""


class _DrainOnClose(httpx2.AsyncByteStream):
    """A response body that, closed before its end, first reads the rest (bounded).

    httpx2 returns a connection to its pool only when the response ended; closing it early
    closes the socket. The inner iterator is kept across ``__aiter__`` calls, so a reader that
    stops early (the SDK's SSE parser after the response event) does not abort it.
    """

    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        self._iterator: AsyncIterator[bytes] | None = None
        self._ended = False

    def _chunks(self) -> AsyncIterator[bytes]:
        if self._iterator is None:
            self._iterator = self._inner.__aiter__()
        return self._iterator

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._chunks()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                self._ended = True
                return
            yield chunk

    async def aclose(self) -> None:
        try:
            if not self._ended:
                drained = 0
                with anyio.move_on_after(DRAIN_SECONDS):
                    async for chunk in self._chunks():
                        drained += len(chunk)
                        if drained > DRAIN_BYTES:
                            break
        finally:
            if isinstance(self._iterator, AsyncGenerator):
                await self._iterator.aclose()
            await self._inner.aclose()


async def _drain_post_on_close(response: httpx2.Response) -> None:
    """httpx2 response hook: a POST answer closed early still releases its keep-alive connection."""
    if response.request.method == "POST" and isinstance(response.stream, httpx2.AsyncByteStream):
        response.stream = _DrainOnClose(response.stream)


class VestigeError(Exception):
    """Vestige could not be reached or did not speak MCP as expected (HTTP 502)."""


FAST_IDS = itertools.count(1 << 40)
"""JSON-RPC ids of the direct tools/call path: far above the SDK session's own counter."""


class _SessionHeaders:
    """Records the Mcp-Session-Id the server assigned (an httpx2 response hook)."""

    def __init__(self) -> None:
        self.session_id: str | None = None

    async def __call__(self, response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid and response.request.method == "POST" and response.status_code < 400:
            self.session_id = sid


class DirectToolCalls:
    """``tools/call`` as one Streamable HTTP POST on the SDK session's own HTTP client.

    The SDK's client sends each request through memory streams, a task group and a spawned task,
    and validates every JSON-RPC message twice with pydantic: per call that costs more CPU than
    the rest of the bridge. After the SDK has initialized the session (handshake, protocol
    version, session id), tool calls go out directly with the same headers the SDK would send
    (session id, negotiated protocol version, Accept, token) and their answer (JSON, or an SSE
    stream up to the response event) is parsed here. Everything else stays on the SDK session.
    """

    def __init__(self, http: httpx2.AsyncClient, url: str, ids: _SessionHeaders, protocol: str) -> None:
        self.http = http
        self.url = url
        self.ids = ids
        self.protocol = protocol

    async def call_tool(self, name: str, arguments: dict[str, Any], limit: float) -> types.CallToolResult:
        request_id = next(FAST_IDS)
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": self.protocol,
        }
        if self.ids.session_id:
            headers["mcp-session-id"] = self.ids.session_id
        try:
            request = self.http.build_request(
                "POST", self.url, content=json.dumps(body).encode(), headers=headers, timeout=limit
            )
            response = await self.http.send(request, stream=True)
        except httpx2.ConnectError as exc:  # nothing was sent
            raise SessionLost(describe(exc)) from exc
        except httpx2.HTTPError as exc:
            raise VestigeError(f"connection to Vestige failed during the call: {describe(exc)}") from exc
        try:
            message = await self._answer(response, request_id)
        except httpx2.HTTPError as exc:
            raise VestigeError(f"connection to Vestige failed during the call: {describe(exc)}") from exc
        finally:
            await response.aclose()
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            raise MCPError(int(error.get("code", types.INTERNAL_ERROR)), str(error.get("message", "")))
        return types.CallToolResult.model_validate(message.get("result"))

    async def _answer(self, response: httpx2.Response, request_id: int) -> dict[str, Any]:
        status = response.status_code
        if status == 404:
            raise SessionLost(f"HTTP 404 from {response.request.url}: session terminated")
        kind = response.headers.get("content-type", "").lower()
        if status >= 400:
            if kind.startswith("application/json"):
                with contextlib.suppress(ValueError):
                    message = json.loads(await response.aread())
                    if isinstance(message, dict) and "error" in message:
                        return {"error": message["error"]}
            if status == 400:  # some servers answer an expired session with a bare 400
                raise SessionLost(f"HTTP 400 from {response.request.url}")
            raise VestigeError(f"HTTP {status} from {response.request.url}")
        if kind.startswith("application/json"):
            message = json.loads(await response.aread())
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
            raise VestigeError("Vestige answered tools/call with an unexpected JSON body")
        if kind.startswith("text/event-stream"):
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:  # end of one event
                    with contextlib.suppress(ValueError):
                        message = json.loads("\n".join(data))
                        if isinstance(message, dict) and message.get("id") == request_id:
                            return message
                    data = []
            raise VestigeError("Vestige's event stream ended without the tools/call response")
        raise VestigeError(f"Vestige answered tools/call with content type {kind!r}")


class SessionLost(VestigeError):
    """The session is gone but the request was not processed: safe to re-initialize and retry."""


def _unwrap(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """A one-line description of a failure, never including headers or tokens."""
    exc = _unwrap(exc)
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    if isinstance(exc, httpx2.RequestError):
        return f"{type(exc).__name__} for {exc.request.url}" if exc.request else type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


HTTP_REJECTED = "server returned an error response"  # the SDK's stand-in for a non-JSON 4xx/5xx


def session_lost(exc: MCPError) -> bool:
    """Whether an error means the session is gone and the request was not processed.

    True for a closed connection, the SDK's "Session terminated" (HTTP 404 with a session id),
    a server's own "unknown/invalid session" error, and an HTTP-level rejection without a
    JSON-RPC body (some servers answer an expired session with a bare 400).
    """
    message = exc.message.lower()
    if exc.code == types.CONNECTION_CLOSED:
        return True
    if exc.code == types.INTERNAL_ERROR and message == HTTP_REJECTED:
        return True
    return "session" in message and (
        exc.code in (types.INVALID_REQUEST, types.INTERNAL_ERROR, -32000, types.INVALID_PARAMS)
        or "terminated" in message
        or "not found" in message
    )


@dataclass(frozen=True)
class Link:
    """What one request gets: the live SDK session, what the server reported at connect time,
    and the direct tools/call path on the same session (None over SSE)."""

    session: ClientSession
    profile: ServerProfile
    direct: DirectToolCalls | None = None


Call = Callable[[Link], Awaitable[T]]
"""One request, run on the live connection."""


class _Connection:
    """One initialized MCP session, owned by its runner task."""

    def __init__(self, settings: Settings, transport: str) -> None:
        self.settings = settings
        self.transport = transport
        self.session: ClientSession | None = None
        self.direct: DirectToolCalls | None = None
        self._http: httpx2.AsyncClient | None = None
        self._ids = _SessionHeaders()
        self.profile: ServerProfile | None = None
        self.instructions: str | None = None
        self.capabilities: types.ServerCapabilities | None = None
        self.failure: BaseException | None = None
        self.closed = anyio.Event()
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls: set[anyio.CancelScope] = set()

    async def open(self) -> None:
        """Start the runner and wait until the session is initialized (or failed)."""
        self._task = asyncio.create_task(self._run(), name=f"vestige-mcp-{self.transport}")
        with anyio.move_on_after(self.settings.connect_timeout) as scope:
            await self._ready.wait()
        if scope.cancelled_caught:
            await self.close()
            raise VestigeError(f"no MCP session within {self.settings.connect_timeout:g}s ({self.transport})")
        if self.failure is not None or self.session is None:
            await self.close()
            raise VestigeError(describe(self.failure or RuntimeError("connection closed")))

    def _headers(self) -> dict[str, str]:
        token = self.settings.upstream_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        timeout = self.settings.request_timeout
        if self.transport == "sse":
            return sse_client(
                self.settings.effective_sse_url,
                headers=self._headers(),
                timeout=self.settings.connect_timeout,
                sse_read_timeout=max(300.0, timeout),
            )
        http = httpx2.AsyncClient(
            event_hooks={"response": [_drain_post_on_close, self._ids]},
            headers=self._headers(),
            timeout=httpx2.Timeout(timeout, connect=self.settings.connect_timeout, read=max(300.0, timeout)),
        )
        self._http = http
        return _closing(http, streamable_http_client(self.settings.mcp_url, http_client=http))

    async def _run(self) -> None:
        try:
            async with self._transport() as (read, write):
                session = ClientSession(
                    read, write, read_timeout_seconds=self.settings.request_timeout, client_info=CLIENT_INFO
                )
                async with session:
                    init = await session.initialize()
                    tools = await _all_tools(session)
                    self.profile = ServerProfile(
                        name=init.server_info.name,
                        version=init.server_info.version,
                        protocol_version=init.protocol_version,
                        tools={t.name: t.input_schema for t in tools},
                    )
                    self.instructions = init.instructions
                    self.capabilities = init.capabilities
                    if self._http is not None:
                        self.direct = DirectToolCalls(
                            self._http, self.settings.mcp_url, self._ids, init.protocol_version
                        )
                    self.session = session
                    self._ready.set()
                    await self._stop.wait()
        except BaseException as exc:  # the runner must never leak: record and end
            if not isinstance(exc, asyncio.CancelledError | anyio.get_cancelled_exc_class()):
                self.failure = exc
                log.info("MCP session to Vestige ended: %s", describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.session = None
            self.direct = None
            self.closed.set()
            self._ready.set()
            for scope in list(self._calls):
                scope.cancel()

    async def request(self, call: Call[T], limit: float) -> T:
        """Run one request on this session, bounded by `limit` seconds, failing fast if the session dies."""
        session, profile = self.session, self.profile
        if session is None or profile is None or self.closed.is_set():
            raise SessionLost("session closed")
        link = Link(session, profile, self.direct)
        outcome: dict[str, Any] = {}
        # Run in the caller's task; the runner cancels `scope` when the session ends.
        with anyio.move_on_after(limit) as deadline, anyio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                outcome["value"] = await call(link)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                self._calls.discard(scope)
        if "value" in outcome:
            return outcome["value"]  # type: ignore[no-any-return]
        if "error" in outcome:
            err = outcome["error"]
            if isinstance(err, MCPError) and session_lost(err):
                raise SessionLost(describe(err)) from err
            if isinstance(err, MCPError) and err.code == types.REQUEST_TIMEOUT:
                raise TimeoutError(f"Vestige did not answer within {limit:g}s") from err
            raise err
        if deadline.cancelled_caught and not self.closed.is_set():
            raise TimeoutError(f"Vestige did not answer within {limit:g}s")
        failure = _unwrap(self.failure) if self.failure else None
        if failure is None or isinstance(failure, httpx2.ConnectError):
            raise SessionLost(describe(failure) if failure else "session closed")
        raise VestigeError(f"connection to Vestige failed during the call: {describe(failure)}")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            with anyio.move_on_after(5):
                await self.closed.wait()
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task


@contextlib.asynccontextmanager
async def _closing(http: httpx2.AsyncClient, inner: contextlib.AbstractAsyncContextManager[Any]) -> Any:
    async with http, inner as streams:
        yield streams


async def _all_tools(session: ClientSession) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a paginator that never ends cannot hang the connect
        result = await session.list_tools(
            params=types.PaginatedRequestParams(cursor=cursor) if cursor else None
        )
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


class VestigeClient:
    """The bridge's handle on Vestige: lazily connected, shared by all requests."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._conn: _Connection | None = None
        self._lock = anyio.Lock()
        self._ever_connected = False
        self._last_failure: tuple[float, str] | None = None
        self._health: asyncio.Future[ServerProfile] | None = None

    @property
    def profile(self) -> ServerProfile | None:
        conn = self._conn
        return conn.profile if conn is not None and not conn.closed.is_set() else None

    async def connection(self) -> _Connection:
        """The open connection, connecting (or reconnecting) first when needed."""
        conn = self._conn
        if conn is not None and not conn.closed.is_set():
            return conn
        waiting_since = time.monotonic()
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed.is_set():
                return conn
            if self._last_failure and self._last_failure[0] >= waiting_since:
                # A connect attempt failed while this caller queued: share its answer, so a
                # burst of requests against a dead Vestige costs one attempt, not one each.
                raise VestigeError(self._last_failure[1])
            if conn is not None:
                self._conn = None
                await conn.close()
            self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        transports = (
            ["streamable_http", "sse"] if self.settings.transport == "auto" else [self.settings.transport]
        )
        error: VestigeError | None = None
        for transport in transports:
            conn = _Connection(self.settings, transport)
            try:
                await conn.open()
            except VestigeError as exc:
                error = exc
                if isinstance(_unwrap(conn.failure or exc), httpx2.ConnectError):
                    break  # nothing listens there: another transport will not help
                continue
            assert conn.profile is not None
            if self._ever_connected:
                self.metrics.reconnects.inc()
            self._ever_connected = True
            self._last_failure = None
            self.metrics.connected.set(1)
            self.metrics.set_server(conn.profile.version, conn.profile.generation)
            log.info(
                "connected to %s %s over %s (protocol %s, %d tools)",
                conn.profile.name,
                conn.profile.version,
                transport,
                conn.profile.protocol_version,
                len(conn.profile.tools),
            )
            return conn
        assert error is not None
        self.metrics.mcp_errors.labels(kind="connect").inc()
        self.metrics.connected.set(0)
        message = f"cannot open an MCP session to Vestige: {error}"
        self._last_failure = (time.monotonic(), message)
        log.warning("%s", message)
        raise VestigeError(message) from error

    async def run(self, call: Call[T], limit: float | None = None) -> T:
        """Run one request; on a lost session re-initialize and retry once."""
        limit = limit if limit is not None else self.settings.request_timeout
        for attempt in (1, 2):
            conn = await self.connection()
            try:
                return await conn.request(call, limit)
            except SessionLost as exc:
                self.metrics.mcp_errors.labels(kind="session_lost").inc()
                self.metrics.connected.set(0)
                log.info("MCP session lost (%s); re-initializing", exc)
                await self._drop(conn)
                if attempt == 2:
                    raise VestigeError(f"MCP session lost twice: {exc}") from exc
            except TimeoutError as exc:
                self.metrics.mcp_errors.labels(kind="timeout").inc()
                raise VestigeError(str(exc)) from exc
            except MCPError as exc:
                self.metrics.mcp_errors.labels(kind="protocol").inc()
                raise VestigeError(describe(exc)) from exc
            except VestigeError:
                self.metrics.mcp_errors.labels(kind="protocol").inc()
                await self._drop(conn)
                raise
        raise AssertionError("unreachable")

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """``tools/call`` of a named tool with the configured timeout (the /mcp pass-through)."""
        result = await self.call_mapped(lambda _: ToolCall(name, arguments))
        return result[1]

    async def call_mapped(
        self, build: Callable[[ServerProfile], ToolCall]
    ) -> tuple[ToolCall, types.CallToolResult]:
        """Build the call for the connected server (again after a reconnect) and run it.

        `build` may raise (Unsupported, FieldError); that propagates unchanged.
        """
        timeout = self.settings.request_timeout
        made: list[ToolCall] = []

        async def call(link: Link) -> types.CallToolResult:
            tool_call = build(link.profile)
            made.append(tool_call)
            if link.direct is not None:
                return await link.direct.call_tool(tool_call.tool, tool_call.arguments, timeout)
            return await link.session.call_tool(
                tool_call.tool, tool_call.arguments, read_timeout_seconds=timeout
            )

        try:
            result = await self.run(call, timeout)
        except VestigeError:
            if made:
                self.metrics.mcp_calls.labels(tool=made[-1].tool, outcome="failed").inc()
            raise
        outcome = "tool_error" if result.is_error else "ok"
        self.metrics.mcp_calls.labels(tool=made[-1].tool, outcome=outcome).inc()
        return made[-1], result

    async def check(self, limit: float) -> ServerProfile:
        """Deep health check: a ``tools/list`` round trip on the (re)connected session.

        The probes that run it (/health, /readyz) are public, so concurrent checks share one
        round trip: a burst of unauthenticated probes costs Vestige one call at a time, not one
        each. A caller that gives up does not cancel the shared check.
        """
        shared = self._health
        if shared is None or shared.done():
            shared = self._health = asyncio.ensure_future(self._check(limit))
            shared.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(shared)

    async def _check(self, limit: float) -> ServerProfile:
        async def call(link: Link) -> types.ListToolsResult:
            return await link.session.list_tools()

        with anyio.fail_after(limit + self.settings.connect_timeout):
            await self.run(call, limit)
        profile = self.profile
        if profile is None:
            raise VestigeError("session closed during the health check")
        return profile

    async def _drop(self, conn: _Connection) -> None:
        async with self._lock:
            if self._conn is conn:
                self._conn = None
        await conn.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self.metrics.connected.set(0)
