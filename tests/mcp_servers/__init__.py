"""MCP servers the tests start as processes."""
