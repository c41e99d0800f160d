"""Bridge tests: the bridge and an MCP stand-in for Vestige as real processes on 127.0.0.1."""
