"""``python -m vestige_bridge --host 127.0.0.1 --port 8000``: run the bridge with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from vestige_bridge import __version__
from vestige_bridge.settings import ConfigError, Settings

# Loggers that may print request details at DEBUG; held at INFO so no header can leak.
QUIET_LOGGERS = (
    "httpx2",
    "httpx",
    "httpcore",
    "httpcore2",
    "hpack",
    "mcp.client.streamable_http",
    "mcp.client.sse",
)


def configure_logging(level: str) -> None:
    """Plain one-line logs on stderr at LOG_LEVEL; chatty transport loggers stay at INFO or above."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    floor = max(logging.getLevelName(level), logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(floor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vestige-bridge", description="REST/MCP front for one Vestige.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--version", action="version", version=f"vestige-bridge {__version__}")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        settings.check_startable()
    except (ConfigError, ValidationError) as exc:
        print(f"vestige-bridge: refusing to start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    import uvicorn

    from vestige_bridge.app import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"vestige-bridge: refusing to start: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
        # No access log: one line per request, 401s included, would carry each client's raw path
        # (up to the 16 KiB head limit) into the log at the client's pace. Requests are counted
        # in /metrics under bounded labels instead.
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # uvloop when installed (the bridge extra has it): less CPU per request. HTTP parsing
        # stays h11 on purpose: uvicorn's httptools protocol has no request-head size limit.
        loop="auto",
        http="h11",
        # Bounded resources under abuse: excess connections get 503, idle ones are closed, and
        # h11 refuses a request head still incomplete past 16 KiB (its default) rather than buffer it.
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keepalive_timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
