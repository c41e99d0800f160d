"""Operator settings, read once from the environment (command-line flags override them).

Every setting is documented in ``docs/operator.md``; the names below are the whole contract.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from vestige_operator import __version__

#: Vestige v3.x image with native MCP over HTTP (built by images/vestige/Dockerfile).
DEFAULT_VESTIGE_IMAGE = "ghcr.io/vestige-operator/vestige:3"
#: The bridge image of this release.
DEFAULT_BRIDGE_IMAGE = f"ghcr.io/vestige-operator/vestige-bridge:{__version__}"
#: The Litestream image of continuous backups (built by images/litestream/Dockerfile; the version
#: tests/litestream/build.py pins).
DEFAULT_LITESTREAM_IMAGE = "ghcr.io/vestige-operator/litestream:0.5.18"
DEFAULT_RESYNC_SECONDS = 60.0
#: kopf's liveness endpoint. In a pod the kubelet probes the pod IP, hence 0.0.0.0 by default;
#: local runs and tests pass a 127.0.0.1 URL (or an empty string to turn it off).
DEFAULT_LIVENESS_ENDPOINT = "http://0.0.0.0:8081/healthz"
#: Prometheus metrics on http://<host>:<port>/metrics (port 0: off). 8080 like controller-runtime
#: operators (metrics :8080, health probes :8081); the manifests expose both ports.
DEFAULT_METRICS_HOST = "0.0.0.0"  # noqa: S104  # scraped on the pod IP
DEFAULT_METRICS_PORT = 8080
DEFAULT_MAX_CONCURRENT_RECONCILES = 8
#: Every this many resyncs the watch caches are checked against a metadata-only LIST.
DEFAULT_VERIFY_RESYNCS = 10
#: At most this many agents restart at once for new operator default images (0: all at once).
DEFAULT_MAX_FLEET_ROLLOUTS = 10

LogFormat = Literal["json", "plain"]


class ConfigError(ValueError):
    """A setting has an unusable value."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def _parse_positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than zero, got {raw!r}")
    return value


def _parse_positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {raw!r}")
    return value


def _parse_count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {raw!r}")
    return value


def _parse_port(name: str, raw: str) -> int:
    if not raw.strip():
        return DEFAULT_METRICS_PORT
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number (0: off), got {raw!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, got {raw!r}")
    return value


def _parse_namespaces(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ns.strip() for ns in raw.split(",") if ns.strip()))


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Settings of one operator process.

    ``namespaces`` empty and ``all_namespaces`` false means "nothing to watch": the runner
    refuses to start rather than guessing a scope.
    """

    default_vestige_image: str = DEFAULT_VESTIGE_IMAGE
    default_bridge_image: str = DEFAULT_BRIDGE_IMAGE
    default_litestream_image: str = DEFAULT_LITESTREAM_IMAGE
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    liveness_endpoint: str = DEFAULT_LIVENESS_ENDPOINT
    max_concurrent_reconciles: int = DEFAULT_MAX_CONCURRENT_RECONCILES
    verify_resyncs: int = DEFAULT_VERIFY_RESYNCS
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int = DEFAULT_METRICS_PORT
    max_fleet_rollouts: int = DEFAULT_MAX_FLEET_ROLLOUTS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Build the settings from ``VESTIGE_*`` variables (``os.environ`` by default)."""
        env = os.environ if env is None else env
        log_format = env.get("VESTIGE_LOG_FORMAT", "json").strip().lower()
        if log_format not in ("json", "plain"):
            raise ConfigError(f"VESTIGE_LOG_FORMAT must be json or plain, got {log_format!r}")
        log_level = env.get("VESTIGE_LOG_LEVEL", "INFO").strip().upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"VESTIGE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        return cls(
            default_vestige_image=env.get("VESTIGE_DEFAULT_IMAGE", "").strip() or DEFAULT_VESTIGE_IMAGE,
            default_bridge_image=env.get("VESTIGE_BRIDGE_IMAGE", "").strip() or DEFAULT_BRIDGE_IMAGE,
            default_litestream_image=env.get("VESTIGE_LITESTREAM_IMAGE", "").strip()
            or DEFAULT_LITESTREAM_IMAGE,
            resync_seconds=_parse_positive_float(
                "VESTIGE_RESYNC_SECONDS", env.get("VESTIGE_RESYNC_SECONDS", str(DEFAULT_RESYNC_SECONDS))
            ),
            namespaces=_parse_namespaces(env.get("VESTIGE_NAMESPACES", "")),
            all_namespaces=_parse_bool("VESTIGE_ALL_NAMESPACES", env.get("VESTIGE_ALL_NAMESPACES", "")),
            log_format=log_format,  # type: ignore[arg-type]  # checked above
            log_level=log_level,
            liveness_endpoint=env.get("VESTIGE_LIVENESS_ENDPOINT", DEFAULT_LIVENESS_ENDPOINT).strip(),
            max_concurrent_reconciles=_parse_positive_int(
                "VESTIGE_MAX_CONCURRENT_RECONCILES",
                env.get("VESTIGE_MAX_CONCURRENT_RECONCILES", str(DEFAULT_MAX_CONCURRENT_RECONCILES)),
            ),
            verify_resyncs=_parse_positive_int(
                "VESTIGE_VERIFY_RESYNCS", env.get("VESTIGE_VERIFY_RESYNCS", str(DEFAULT_VERIFY_RESYNCS))
            ),
            metrics_host=env.get("VESTIGE_METRICS_HOST", "").strip() or DEFAULT_METRICS_HOST,
            metrics_port=_parse_port("VESTIGE_METRICS_PORT", env.get("VESTIGE_METRICS_PORT", "")),
            max_fleet_rollouts=_parse_count(
                "VESTIGE_MAX_FLEET_ROLLOUTS",
                env.get("VESTIGE_MAX_FLEET_ROLLOUTS", str(DEFAULT_MAX_FLEET_ROLLOUTS)),
            ),
        )

    def replace(self, **changes: object) -> OperatorConfig:
        """A copy with some settings changed (command-line overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
