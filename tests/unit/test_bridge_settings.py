"""Bridge settings from the environment: fail closed, defaults, validation; guard helpers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from vestige_bridge.app import _field_of, envelope
from vestige_bridge.guard import token_matches
from vestige_bridge.settings import ConfigError, Settings

ENV = (
    "VESTIGE_AUTH_TOKEN",
    "VESTIGE_ALLOW_ANONYMOUS",
    "VESTIGE_AGENT_ID",
    "VESTIGE_MCP_URL",
    "VESTIGE_SSE_URL",
    "VESTIGE_TRANSPORT",
    "VESTIGE_MCP_TOKEN",
    "VESTIGE_REQUEST_TIMEOUT",
    "VESTIGE_MAX_BODY_BYTES",
    "LOG_LEVEL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_defaults_follow_the_predecessor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_AUTH_TOKEN", "t0k")
    s = Settings()
    s.check_startable()
    assert s.mcp_url == "http://localhost:3100/mcp"
    assert s.transport == "streamable_http"
    assert s.request_timeout == 30.0
    assert s.log_level == "INFO"
    assert s.max_body_bytes == 256 * 1024
    assert s.upstream_token == "t0k"  # VESTIGE_MCP_TOKEN defaults to the bridge token
    assert s.effective_sse_url == "http://localhost:3100/sse"
    assert "t0k" not in repr(s)


@pytest.mark.parametrize("token", [None, "", "  "])
def test_no_token_refuses_to_start(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    if token is not None:
        monkeypatch.setenv("VESTIGE_AUTH_TOKEN", token)
    with pytest.raises(ConfigError, match="VESTIGE_ALLOW_ANONYMOUS"):
        Settings().check_startable()


def test_anonymous_needs_explicit_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_ALLOW_ANONYMOUS", "false")
    with pytest.raises(ConfigError):
        Settings().check_startable()
    monkeypatch.setenv("VESTIGE_ALLOW_ANONYMOUS", "true")
    Settings().check_startable()


def test_separate_upstream_token_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_AUTH_TOKEN", "bridge")
    monkeypatch.setenv("VESTIGE_MCP_TOKEN", "vestige")
    monkeypatch.setenv("VESTIGE_MCP_URL", "http://127.0.0.1:3100/custom")
    monkeypatch.setenv("VESTIGE_TRANSPORT", "sse")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = Settings()
    assert s.upstream_token == "vestige"
    assert s.effective_sse_url == "http://127.0.0.1:3100/custom/sse"
    assert s.transport == "sse"
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VESTIGE_AGENT_ID", "Agent_A"),
        ("VESTIGE_AGENT_ID", "-a"),
        ("VESTIGE_TRANSPORT", "websocket"),
        ("VESTIGE_MCP_URL", "ftp://x/mcp"),
        ("VESTIGE_REQUEST_TIMEOUT", "0"),
        ("VESTIGE_MAX_BODY_BYTES", "10"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv("VESTIGE_AUTH_TOKEN", "t")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_agent_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VESTIGE_AGENT_ID", " agent-7 ")
    assert Settings().agent_id == "agent-7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("BEARER  s3cret ", True),
        ("Bearer s3cret2", False),
        ("Bearer s3cre", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearer", False),
        ("", False),
        (None, False),
    ],
)
def test_token_matches(header: str | None, expected: bool) -> None:
    assert token_matches(header, "s3cret") is expected


@pytest.mark.parametrize(
    ("loc", "field"),
    [
        (("body", "query"), "query"),
        (("body",), "body"),
        (("body", "trigger", "Trigger", "type"), "trigger.type"),
        (("body", "trigger", "str"), "trigger"),
        (("body", "tags", 2), "tags.2"),
        (("query", "limit"), "limit"),
    ],
)
def test_field_of(loc: tuple[object, ...], field: str) -> None:
    assert _field_of(loc) == field


def test_envelope() -> None:
    import mcp_types as types

    ok = types.CallToolResult(content=[types.TextContent(text="{}")])
    assert envelope(ok) == {
        "success": True,
        "data": {"content": [{"type": "text", "text": "{}"}]},
        "error": None,
    }
    bad = types.CallToolResult(
        content=[types.TextContent(text="boom"), types.TextContent(text="again")], is_error=True
    )
    result = envelope(bad)
    assert result["success"] is False
    assert result["error"] == "boom\nagain"
    empty = types.CallToolResult(content=[], is_error=True)
    assert envelope(empty)["error"] == "Vestige reported a tool error"
