"""An MCP server that fails before it answers anything: it cannot find its database."""

from __future__ import annotations

import sys

sys.stderr.write("crash_server: cannot open database 'missing.db'\n")
sys.exit(2)
