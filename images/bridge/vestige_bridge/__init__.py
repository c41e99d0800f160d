"""vestige-bridge: one REST/MCP front for one agent's Vestige memory server."""

__version__ = "0.1.0"
