"""An MCP server with a few test tools, served over stdio, streamable HTTP or SSE.

``python tools_server.py`` serves stdio. ``python tools_server.py streamable-http`` or
``... sse`` binds a free port on 127.0.0.1 first, prints ``PORT <n>`` on stdout (so the
test knows where it listens, and that it already accepts connections), then serves.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import anyio
import uvicorn
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# The smallest valid PNG (1x1, transparent).
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)

mcp = MCPServer("test-tools", version="0.1.0", log_level="WARNING")


@mcp.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return f"echo: {text}"


@mcp.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(description="The server's process id.")
def pid() -> str:
    return str(os.getpid())


@mcp.tool(description="An environment variable of the server process.")
def getenv(name: str) -> str:
    return os.environ.get(name, "<unset>")


@mcp.tool(description="Write a file (relative paths are under the server's working directory).")
def write_file(path: str, text: str) -> str:
    Path(path).write_text(text)
    return f"wrote {len(text)} characters to {path}"


@mcp.tool(description="Return a tiny PNG and a caption.", structured_output=False)
def picture() -> list[object]:
    return ["a 1x1 picture", Image(data=PNG_1X1, format="png")]


@mcp.tool(description="Fail on purpose.")
def fail(reason: str) -> str:
    raise ToolError(f"failed on purpose: {reason}")


@mcp.tool(description="Return a lot of text.")
def big(chars: int) -> str:
    return "x" * chars


@mcp.tool(description="Wait a while, then answer.")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "done waiting"


@mcp.tool(description="End the server process at once.")
def die() -> str:
    os._exit(3)


def _serve_http(transport: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Answers go out at once: with Nagle's algorithm on this socket (uvicorn does not set
    # TCP_NODELAY on a socket it is handed), each call waited ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    app = mcp.sse_app() if transport == "sse" else mcp.streamable_http_app()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    print(f"PORT {port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        mcp.run("stdio")
    else:
        _serve_http(mode)
