"""Prometheus metrics of one bridge process (own registry, served at /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vestige_bridge.replication import Reading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods counted under their own name; any other (h11 accepts any token) is ``other``."""
STATUSES = frozenset({200, 202, 204, 400, 401, 403, 404, 405, 406, 413, 422, 500, 501, 502, 503, 504})
"""Status codes counted under their own value; any other under its class (``4xx``, ...)."""
UNMATCHED = "unmatched"
"""The route label of a request no route matches (never its raw path)."""


def method_label(method: str) -> str:
    """The bounded ``method`` label: a standard method, or ``other``."""
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    """The bounded ``status`` label: a code the bridge answers, else its class (``5xx``)."""
    if status in STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


@dataclass
class Metrics:
    """The bridge's metric families. Every label value comes from a fixed set, whatever a client
    sends: route templates or ``unmatched``, :func:`method_label`, :func:`status_label`, tool names
    of the allow-list or the REST mapping, fixed outcome and error kinds."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "vestige_bridge_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "vestige_bridge_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mcp_calls = Counter(
            "vestige_bridge_mcp_calls_total",
            "MCP tool calls to Vestige by tool and outcome (ok, tool_error, failed).",
            ["tool", "outcome"],
            registry=r,
        )
        self.mcp_errors = Counter(
            "vestige_bridge_mcp_errors_total",
            "MCP failures talking to Vestige by kind (connect, session_lost, timeout, protocol).",
            ["kind"],
            registry=r,
        )
        self.reconnects = Counter(
            "vestige_bridge_mcp_reconnects_total",
            "MCP sessions re-established after a previous session was lost.",
            registry=r,
        )
        self.connected = Gauge(
            "vestige_bridge_vestige_connected", "1 while an MCP session to Vestige is open.", registry=r
        )
        self.vestige_info = Gauge(
            "vestige_bridge_vestige_info",
            "Version and tool generation of the connected Vestige (value 1).",
            ["version", "generation"],
            registry=r,
        )
        self.auth_failures = Counter(
            "vestige_bridge_auth_failures_total", "Requests refused with 401 or 403.", ["status"], registry=r
        )

        self.token_reloads = Counter(
            "vestige_bridge_token_reloads_total",
            "Changes of the accepted tokens read from VESTIGE_AUTH_TOKEN_DIR (rotations, clean-ups).",
            registry=r,
        )
        self.previous_token_expiry = Gauge(
            "vestige_bridge_previous_token_expiry_timestamp_seconds",
            "Unix time until which the previous token is accepted during a rotation (0: none).",
            registry=r,
        )

    def enable_replication(self) -> None:
        """The continuous-backup gauges (only in a pod with the Litestream sidecar)."""
        r = self.registry
        self.replication_up = Gauge(
            "vestige_bridge_replication_up",
            "1 when the Litestream sidecar's control socket answered at this scrape.",
            registry=r,
        )
        self.replication_last_sync = Gauge(
            "vestige_bridge_replication_last_sync_timestamp_seconds",
            "Unix time when the replica last held every change of the store (Litestream last_sync_at).",
            registry=r,
        )
        self.replication_lag = Gauge(
            "vestige_bridge_replication_lag_seconds",
            "Seconds since the replica last held every change of the store (now - last_sync_at).",
            registry=r,
        )

    def set_replication(self, reading: Reading) -> None:
        """Record one reading of the socket (no ``last_sync``: no answer, or no sync yet)."""
        self.replication_up.set(1 if reading.last_sync is not None else 0)
        if reading.last_sync is not None and reading.lag_seconds is not None:
            self.replication_last_sync.set(reading.last_sync.timestamp())
            self.replication_lag.set(reading.lag_seconds)

    def set_server(self, version: str, generation: str) -> None:
        self.vestige_info.clear()
        self.vestige_info.labels(version=version, generation=generation).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
