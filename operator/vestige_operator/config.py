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
#: Leader election (leader.py, README "High availability"): a replica that renewed the Lease
#: last at t leads until t + renew deadline at the latest; the others may take it at t + lease
#: duration, counted from when they saw that renewal. renew < lease leaves the margin; the
#: election library asks renew > 1.2 x retry and whole seconds >= 1. Shorter than client-go's
#: 15/10/2: after a crash of the leader the standby takes over within lease + ~1-2 retries
#: (about 12 s; the takeover target is 15 s), for one GET + PUT of the Lease every 2 s.
DEFAULT_LEASE_NAME = "vestige-operator"
DEFAULT_LEASE_DURATION_SECONDS = 10
DEFAULT_LEASE_RENEW_DEADLINE_SECONDS = 7
DEFAULT_LEASE_RETRY_PERIOD_SECONDS = 2
#: The namespace of an in-cluster ServiceAccount (the Lease namespace when POD_NAMESPACE is unset).
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: At most this many agents restart at once for new operator default images (0: all at once).
DEFAULT_MAX_FLEET_ROLLOUTS = 10
#: Seconds between two questions to an agent's pod about its continuous replica.
DEFAULT_REPLICATION_CHECK_SECONDS = 30

LogFormat = Literal["json", "plain"]
LeaderElection = Literal["auto", "on", "off"]


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


def _parse_int(name: str, raw: str, minimum: int = 1) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
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


def _parse_leader_election(raw: str) -> LeaderElection:
    value = raw.strip().lower()
    if value in ("", "auto"):
        return "auto"
    try:
        return "on" if _parse_bool("VESTIGE_LEADER_ELECTION", value) else "off"
    except ConfigError:
        raise ConfigError(f"VESTIGE_LEADER_ELECTION must be auto, true or false, got {raw!r}") from None


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
    #: auto: elect a leader when the Lease namespace is known (in a pod), else lead alone.
    leader_election: LeaderElection = "auto"
    lease_name: str = DEFAULT_LEASE_NAME
    #: Empty: $POD_NAMESPACE, else the in-cluster ServiceAccount's namespace (lease_namespace()).
    lease_namespace: str = ""
    lease_duration_seconds: int = DEFAULT_LEASE_DURATION_SECONDS
    lease_renew_deadline_seconds: int = DEFAULT_LEASE_RENEW_DEADLINE_SECONDS
    lease_retry_period_seconds: int = DEFAULT_LEASE_RETRY_PERIOD_SECONDS
    max_fleet_rollouts: int = DEFAULT_MAX_FLEET_ROLLOUTS
    #: Seconds between two questions to an agent's pod about its replica (backup.continuous).
    replication_check_seconds: int = DEFAULT_REPLICATION_CHECK_SECONDS

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
            max_concurrent_reconciles=_parse_int(
                "VESTIGE_MAX_CONCURRENT_RECONCILES",
                env.get("VESTIGE_MAX_CONCURRENT_RECONCILES", str(DEFAULT_MAX_CONCURRENT_RECONCILES)),
            ),
            verify_resyncs=_parse_int(
                "VESTIGE_VERIFY_RESYNCS", env.get("VESTIGE_VERIFY_RESYNCS", str(DEFAULT_VERIFY_RESYNCS))
            ),
            metrics_host=env.get("VESTIGE_METRICS_HOST", "").strip() or DEFAULT_METRICS_HOST,
            metrics_port=_parse_port("VESTIGE_METRICS_PORT", env.get("VESTIGE_METRICS_PORT", "")),
            leader_election=_parse_leader_election(env.get("VESTIGE_LEADER_ELECTION", "")),
            lease_name=env.get("VESTIGE_LEASE_NAME", "").strip() or DEFAULT_LEASE_NAME,
            lease_namespace=env.get("VESTIGE_LEASE_NAMESPACE", "").strip(),
            lease_duration_seconds=_parse_int(
                "VESTIGE_LEASE_DURATION_SECONDS",
                env.get("VESTIGE_LEASE_DURATION_SECONDS", str(DEFAULT_LEASE_DURATION_SECONDS)),
            ),
            lease_renew_deadline_seconds=_parse_int(
                "VESTIGE_LEASE_RENEW_DEADLINE_SECONDS",
                env.get("VESTIGE_LEASE_RENEW_DEADLINE_SECONDS", str(DEFAULT_LEASE_RENEW_DEADLINE_SECONDS)),
            ),
            lease_retry_period_seconds=_parse_int(
                "VESTIGE_LEASE_RETRY_PERIOD_SECONDS",
                env.get("VESTIGE_LEASE_RETRY_PERIOD_SECONDS", str(DEFAULT_LEASE_RETRY_PERIOD_SECONDS)),
            ),
            max_fleet_rollouts=_parse_int(
                "VESTIGE_MAX_FLEET_ROLLOUTS",
                env.get("VESTIGE_MAX_FLEET_ROLLOUTS", str(DEFAULT_MAX_FLEET_ROLLOUTS)),
                minimum=0,
            ),
            replication_check_seconds=_parse_int(
                "VESTIGE_REPLICATION_CHECK_SECONDS",
                env.get("VESTIGE_REPLICATION_CHECK_SECONDS", str(DEFAULT_REPLICATION_CHECK_SECONDS)),
                minimum=5,
            ),
        ).checked()

    def checked(self) -> OperatorConfig:
        """``self``, or ConfigError when settings contradict each other (the Lease timings)."""
        lease, renew, retry = (
            self.lease_duration_seconds,
            self.lease_renew_deadline_seconds,
            self.lease_retry_period_seconds,
        )
        if not renew < lease:
            raise ConfigError(
                f"VESTIGE_LEASE_RENEW_DEADLINE_SECONDS ({renew}) must be less than "
                f"VESTIGE_LEASE_DURATION_SECONDS ({lease}): a leader must stop before others may take over"
            )
        if not renew > 1.2 * retry:
            raise ConfigError(
                f"VESTIGE_LEASE_RENEW_DEADLINE_SECONDS ({renew}) must exceed 1.2 x "
                f"VESTIGE_LEASE_RETRY_PERIOD_SECONDS ({retry}): at least one retry fits in it"
            )
        return self

    def lease_namespace_in(self, env: Mapping[str, str] | None = None) -> str:
        """Where the Lease lives: the setting, else the operator's own namespace."""
        return self.lease_namespace or self.own_namespace(env)

    @staticmethod
    def own_namespace(env: Mapping[str, str] | None = None) -> str:
        """The namespace the operator's pod runs in: $POD_NAMESPACE (downward API), else the
        in-cluster ServiceAccount's namespace; empty when none is known (not in a pod)."""
        env = os.environ if env is None else env
        if env.get("POD_NAMESPACE", "").strip():
            return env["POD_NAMESPACE"].strip()
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE_FILE, encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            return ""

    def replace(self, **changes: object) -> OperatorConfig:
        """A copy with some settings changed (command-line overrides)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
