"""Small MCP servers, written with the official ``mcp`` package, that the MCP tests connect to."""
