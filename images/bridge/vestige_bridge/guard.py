"""ASGI middleware in front of every route: bearer auth, agent check, body limit, metrics.

Pure ASGI (no BaseHTTPMiddleware) so the /mcp transport streams untouched. Order per request:
401 (token missing or wrong; the answer never says which), 403 (``X-Agent-Id`` names another
agent), 413 (body over the limit, by ``Content-Length`` or while reading), then the app.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import Match, Router

from vestige_bridge.metrics import UNMATCHED, Metrics, method_label, status_label
from vestige_bridge.tokens import Tokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("vestige_bridge.access")

PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/readyz",
        "/livez",
        "/metrics",
        "/replication",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
UNAUTHORIZED = {"success": False, "data": None, "error": "unauthorized: a valid bearer token is required"}


async def send_json(
    send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()
) -> None:  # type: ignore[assignment]
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer credential (constant time)."""
    scheme, _, credential = (header or "").strip().partition(" ")
    ok_scheme = hmac.compare_digest(scheme.lower().encode(), b"bearer")
    ok_token = hmac.compare_digest(credential.strip().encode(), token.encode())
    return ok_scheme and ok_token


class Guard:
    """Authentication, agent isolation, body limit and request metrics."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Tokens,
        agent_id: str | None,
        max_body_bytes: int,
        metrics: Metrics,
        router: Router,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.agent_id = agent_id
        self.max_body = max_body_bytes
        self.metrics = metrics
        self.router = router
        self._templates: dict[tuple[str, str], str] = {}

    def _route(self, scope: Scope) -> str:
        """The route template for the metrics label; memoized per (method, path) of a full match.

        Only matched pairs are remembered, so the memo is bounded by the app's fixed routes.
        """
        key = (scope.get("method", ""), scope.get("path", ""))
        template = self._templates.get(key)
        if template is not None:
            return template
        for route in self.router.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                template = getattr(route, "path", UNMATCHED) or UNMATCHED
                if not child.get("path_params"):
                    self._templates[key] = template
                return template
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_tracking(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_tracking)
        finally:
            route = self._route(scope)
            method = method_label(scope.get("method", ""))
            status = status_label(status_holder["status"])
            self.metrics.requests.labels(route=route, method=method, status=status).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if path not in PUBLIC_PATHS:
            if self.tokens.enabled and not self.tokens.accepts(headers.get("authorization")):
                self.metrics.auth_failures.labels(status="401").inc()
                await send_json(send, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
            agent = headers.get("x-agent-id")
            if agent is not None and self.agent_id is not None and agent.strip() != self.agent_id:
                self.metrics.auth_failures.labels(status="403").inc()
                await send_json(
                    send,
                    403,
                    {"success": False, "data": None, "error": "forbidden: this bridge serves another agent"},
                )
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(
                    send, 400, {"success": False, "data": None, "error": "invalid Content-Length"}
                )
                return
            if int(declared) > self.max_body:
                await self._too_large(send)
                return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and declared is None:
            await self.app(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._too_large(send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, send: Send) -> None:
        message = f"request body larger than {self.max_body} bytes"
        await send_json(send, 413, {"success": False, "data": None, "error": message})

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
