"""Bridge settings, read from the environment (the predecessor's variables plus a few new ones)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

AGENT_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(ValueError):
    """The configuration cannot be served safely; the message says what to set."""


class Settings(BaseSettings):
    """Everything the bridge reads from its environment.

    Fail closed: without ``VESTIGE_AUTH_TOKEN`` the bridge refuses to start unless
    ``VESTIGE_ALLOW_ANONYMOUS=true`` is set explicitly (see :meth:`check_startable`).
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    auth_token: SecretStr | None = Field(
        default=None,
        validation_alias="VESTIGE_AUTH_TOKEN",
        description="Bearer token clients must present (constant-time compared).",
    )
    auth_token_dir: Path | None = Field(
        default=None,
        validation_alias="VESTIGE_AUTH_TOKEN_DIR",
        description=(
            "Directory holding the token files (a mounted Secret: token, token-previous, "
            "token-previous-expires), re-read every VESTIGE_AUTH_RELOAD_SECONDS; wins over "
            "VESTIGE_AUTH_TOKEN."
        ),
    )
    replication_socket: Path | None = Field(
        default=None,
        validation_alias="VESTIGE_REPLICATION_SOCKET",
        description=(
            "Litestream's control socket (continuous backup, set by the operator): the replication "
            "lag is read from it into /metrics."
        ),
    )
    auth_reload_seconds: float = Field(
        default=2.0, gt=0, le=300, validation_alias="VESTIGE_AUTH_RELOAD_SECONDS"
    )
    allow_anonymous: bool = Field(default=False, validation_alias="VESTIGE_ALLOW_ANONYMOUS")
    agent_id: str | None = Field(
        default=None,
        validation_alias="VESTIGE_AGENT_ID",
        description="The one agent this bridge serves; an X-Agent-Id naming another agent gets 403.",
    )
    mcp_url: str = Field(default="http://localhost:3100/mcp", validation_alias="VESTIGE_MCP_URL")
    sse_url: str | None = Field(
        default=None,
        validation_alias="VESTIGE_SSE_URL",
        description="SSE endpoint (VESTIGE_TRANSPORT=sse|auto); default: VESTIGE_MCP_URL, /mcp -> /sse.",
    )
    transport: Literal["streamable_http", "sse", "auto"] = Field(
        default="streamable_http", validation_alias="VESTIGE_TRANSPORT"
    )
    mcp_token: SecretStr | None = Field(
        default=None,
        validation_alias="VESTIGE_MCP_TOKEN",
        description=(
            "Bearer token sent to Vestige (its internal token, never the agents'); defaults to "
            "VESTIGE_AUTH_TOKEN when that is set."
        ),
    )
    request_timeout: float = Field(default=30.0, gt=0, le=600, validation_alias="VESTIGE_REQUEST_TIMEOUT")
    connect_timeout: float = Field(default=10.0, gt=0, le=600, validation_alias="VESTIGE_CONNECT_TIMEOUT")
    health_timeout: float = Field(default=5.0, gt=0, le=600, validation_alias="VESTIGE_HEALTH_TIMEOUT")
    max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        validation_alias=AliasChoices("VESTIGE_MAX_BODY_BYTES", "BRIDGE_MAX_BODY_BYTES"),
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        le=100_000,
        validation_alias="VESTIGE_MAX_CONNECTIONS",
        description="Concurrent connections (open or idle) before the bridge answers 503: bounds memory.",
    )
    keepalive_timeout: float = Field(
        default=5.0,
        gt=0,
        le=600,
        validation_alias="VESTIGE_KEEPALIVE_TIMEOUT",
        description="Seconds an idle keep-alive connection is kept open.",
    )
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = Field(
        default="INFO", validation_alias="LOG_LEVEL"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("auth_token", "mcp_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("auth_token_dir", "replication_socket", mode="before")
    @classmethod
    def _blank_dir_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("agent_id", mode="before")
    @classmethod
    def _agent_id(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
        if isinstance(value, str) and not AGENT_ID.match(value):
            raise ValueError("VESTIGE_AGENT_ID must be a DNS label (lowercase letters, digits, '-')")
        return value

    @model_validator(mode="after")
    def _urls(self) -> Settings:
        for name in ("mcp_url", "sse_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name.upper()} must be an http(s) URL")
        return self

    @property
    def upstream_token(self) -> str | None:
        """The token the bridge presents to Vestige."""
        token = self.mcp_token or self.auth_token
        return token.get_secret_value() if token is not None else None

    @property
    def effective_sse_url(self) -> str:
        """Where the SSE transport connects."""
        if self.sse_url:
            return self.sse_url
        base = self.mcp_url.rstrip("/")
        return base[: -len("/mcp")] + "/sse" if base.endswith("/mcp") else base + "/sse"

    def check_startable(self) -> None:
        """Raise ConfigError when the bridge must not start (no token, no anonymous opt-in)."""
        if self.auth_token is None and self.auth_token_dir is None and not self.allow_anonymous:
            raise ConfigError(
                "neither VESTIGE_AUTH_TOKEN nor VESTIGE_AUTH_TOKEN_DIR is set. The bridge refuses "
                "to start without a token; set one of them, or set VESTIGE_ALLOW_ANONYMOUS=true to "
                "serve without authentication on purpose."
            )

    @property
    def anonymous(self) -> bool:
        """Serving without authentication: opted in and no token configured."""
        return self.allow_anonymous and self.auth_token is None and self.auth_token_dir is None
