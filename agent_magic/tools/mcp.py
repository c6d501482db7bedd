"""MCP servers: connections through the official ``mcp`` client, and their tools as agent tools.

:class:`McpServers` holds the servers of ``AgentOptions.mcp_servers`` (and a
project's ``.mcp.json``, see :func:`load_project_mcp_servers`), in the Agent
SDK's config shapes::

    {"type": "stdio", "command": "dbserve", "args": ["--ro"], "env": {"DB": "x"}}  # "type" optional
    {"type": "http", "url": "https://example.com/mcp", "headers": {...}}
    {"type": "sse", "url": "https://example.com/sse", "headers": {...}}
    {"type": "sdk", "name": "my-tools", "instance": <mcp.server.lowlevel.Server>}  # create_sdk_mcp_server

Nothing starts before the first turn. Each turn begins with :meth:`McpServers.start`,
which connects the servers not yet connected and reconnects the ones that died;
a server that cannot start is a one-line notice, never an exception, and the
turn goes on without its tools. Each server's tools become :class:`McpTool`
objects named ``mcp__<server>__<tool>`` (``server`` being the key in the
configs, as in Claude Code); they are ``execute`` tools, so they ask for
permission unless a rule allows them.

An ``mcp.Client`` must be entered and exited in one task, so every connection
lives in a task of the task group given to :meth:`McpServers.bind`; tool calls
are made from the turn's task through the connected client.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import anyio
import anyio.abc
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    Implementation,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp.types import Tool as WireTool

from .._errors import ConfigurationError
from .._version import __version__
from .base import Tool, ToolContext, ToolResult

__all__ = ["McpServers", "McpTool", "load_project_mcp_servers"]

#: Seconds a server has to start and list its tools (Claude Code's ``MCP_TIMEOUT``, in ms, overrides it).
DEFAULT_STARTUP_TIMEOUT = 30.0
#: Seconds one tool call may take (Claude Code's ``MCP_TOOL_TIMEOUT``, in ms, overrides it).
DEFAULT_TOOL_TIMEOUT = 300.0
#: Characters of text a tool result keeps; the middle of longer output is cut.
MAX_OUTPUT_CHARS = 100_000
#: Characters of a tool description sent to the model (Claude Code's limit).
MAX_DESCRIPTION_CHARS = 2048
#: Base64 characters of one image sent to the model (the Messages API takes 5 MB images).
MAX_IMAGE_CHARS = 5 * 1024 * 1024
#: Seconds a server is given to shut down (a stdio server: stdin closed, SIGTERM, SIGKILL).
_STOP_SECONDS = 10.0
_CONNECTION_CLOSED = -32000
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def _env_seconds(name: str, default: float) -> float:
    """A timeout given in milliseconds by an environment variable (Claude Code's convention)."""
    value = os.environ.get(name, "")
    try:
        ms = float(value)
    except ValueError:
        return default
    return ms / 1000 if ms > 0 else default


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _normalise(name: str) -> str:
    """A name part the Messages API accepts in a tool name (Claude Code's normalisation)."""
    return _NAME_CHARS.sub("_", name)


def _children(exc: BaseException) -> list[BaseException] | None:
    """The exceptions an exception group holds (duck-typed: ``BaseExceptionGroup`` is 3.11+)."""
    inner = getattr(exc, "exceptions", None)
    return list(inner) if isinstance(inner, (list, tuple)) and inner else None


def _leaf(exc: BaseException) -> BaseException:
    """The first meaningful exception inside (nested) exception groups."""
    while (children := _children(exc)) is not None:
        inner = [e for e in children if not isinstance(e, anyio.get_cancelled_exc_class())]
        exc = (inner or children)[0]
    return exc


def _refused(exc: BaseException) -> bool:
    """Whether a connection failure happened before any request reached the server."""
    todo = [exc]
    while todo:
        seen = todo.pop()
        children = _children(seen)
        if children is not None:
            todo.extend(children)
            continue
        if isinstance(seen, (httpx2.ConnectError, ConnectionRefusedError)):
            return True
        if seen.__cause__ is not None:
            todo.append(seen.__cause__)
    return False


class _WatchedReadStream:
    """A transport's read stream that reports its end: the server exited or hung up."""

    def __init__(self, inner: Any, on_end: Any) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise
        return item

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass
class _Connection:
    """One attempt to connect to a server, alive in one task of the bound task group."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    client: Client | None = None
    stderr: IO[str] | None = None
    lost: bool = False
    stopping: bool = False
    #: The connection failed before a request could reach the server (connection refused).
    refused: bool = False

    def end(self) -> None:
        self.lost = True
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if not self.ready.is_set() and self.scope is not None:
            self.scope.cancel()  # still starting: nothing to finish gracefully


@dataclass
class _Server:
    name: str
    config: Mapping[str, Any]
    type: str
    config_error: str | None = None
    state: str = "pending"
    error: str | None = None
    conn: _Connection | None = None
    tools: list[McpTool] = field(default_factory=list)
    lock: anyio.Lock | None = None
    #: The last failure notice start() returned (not repeated while it stays the same).
    reported: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "state": self.state,
            "tools": [t.name for t in self.tools] if self.state == "connected" else [],
            "error": self.error,
        }


def _server_type(config: Any) -> tuple[str, str | None]:
    """The config's transport type and what is wrong with it (None when it looks right)."""
    if not isinstance(config, Mapping):
        return "stdio", f"the config must be a dict, not {type(config).__name__}"
    kind = config.get("type")
    if kind is None:
        kind = "stdio" if "command" in config else ("http" if "url" in config else "stdio")
    if not isinstance(kind, str) or kind not in ("stdio", "http", "sse", "sdk"):
        return str(kind), f"unknown server type {kind!r} (use 'stdio', 'http', 'sse' or 'sdk')"
    if kind == "stdio":
        command = config.get("command")
        if not isinstance(command, str) or not command.strip():
            return kind, "a stdio server needs a 'command' string"
        args = config.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return kind, "'args' must be a list of strings"
        env = config.get("env", {})
        if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            return kind, "'env' must map names to strings"
    elif kind in ("http", "sse"):
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return kind, f"an {kind} server needs a 'url' starting with http:// or https://"
        headers = config.get("headers", {})
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            return kind, "'headers' must map names to strings"
    elif not isinstance(config.get("instance"), (Server, MCPServer)):
        return kind, "an sdk server needs an 'instance' made by create_sdk_mcp_server (an mcp Server)"
    return kind, None


class McpServers:
    """The MCP servers of one agent client, and their tools.

    Parameters
    ----------
    configs
        Server name (the key) to config, in the Agent SDK's shapes (see the module doc).
    cwd
        The working directory stdio servers start in.
    env
        The environment stdio servers get (the agent's subprocess environment);
        a config's ``env`` is merged over it.
    startup_timeout
        Seconds a server has to start and list its tools (default 30, or
        ``MCP_TIMEOUT`` milliseconds).
    tool_timeout
        Seconds one tool call may take (default 300, or ``MCP_TOOL_TIMEOUT`` milliseconds).
    """

    def __init__(
        self,
        configs: Mapping[str, Any],
        *,
        cwd: Path,
        env: Mapping[str, str],
        startup_timeout: float | None = None,
        tool_timeout: float | None = None,
    ) -> None:
        self._cwd = Path(cwd)
        self._env = dict(env)
        self._startup_timeout = startup_timeout or _env_seconds("MCP_TIMEOUT", DEFAULT_STARTUP_TIMEOUT)
        self._tool_timeout = tool_timeout or _env_seconds("MCP_TOOL_TIMEOUT", DEFAULT_TOOL_TIMEOUT)
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._servers: dict[str, _Server] = {}
        for name, config in configs.items():
            kind, problem = _server_type(config)
            server = _Server(name=str(name), config=config if isinstance(config, Mapping) else {}, type=kind)
            if problem is not None:
                server.config_error = server.error = f"invalid config: {problem}"
                server.state = "failed"
            self._servers[server.name] = server

    def bind(self, task_group: anyio.abc.TaskGroup) -> None:
        """Run the servers' long-lived connection tasks in ``task_group``.

        Parameters
        ----------
        task_group
            A task group that outlives every turn (the agent client's).
        """
        self._tg = task_group

    async def start(self) -> list[str]:
        """Connect the servers not connected yet, and reconnect the ones that died.

        Returns
        -------
        list of str
            One line for each server that failed, e.g. ``"MCP server 'db' failed to
            start (FileNotFoundError: no such command 'dbserve'); this turn goes on
            without its tools."``; a failure already reported is not repeated until
            it changes. Never raises for a server's failure.
        """
        if self._closed:
            return []
        if self._tg is None:
            raise RuntimeError("McpServers.bind() must be called before start().")
        async with anyio.create_task_group() as tg:
            for server in self._servers.values():
                tg.start_soon(self._ensure, server)
        notices: list[str] = []
        for server in self._servers.values():
            if server.state == "connected":
                server.reported = None
            elif server.state == "failed":
                notice = (
                    f"MCP server '{server.name}' failed to start ({server.error}); "
                    "this turn goes on without its tools."
                )
                if notice != server.reported:
                    notices.append(notice)
                    server.reported = notice
        return notices

    def tools(self) -> list[Tool]:
        """The tools of the connected servers, named ``mcp__<server>__<tool>``.

        Returns
        -------
        list of Tool
            :class:`McpTool` objects, in config order then the server's order.
        """
        out: list[Tool] = []
        for server in self._servers.values():
            if server.state == "connected":
                out.extend(server.tools)
        return out

    def status(self) -> list[dict[str, Any]]:
        """Each server's state, for ``%agent mcp`` and the init message.

        Returns
        -------
        list of dict
            ``{"name", "type", "state", "tools", "error"}``: ``type`` is ``stdio``,
            ``http``, ``sse`` or ``sdk``; ``state`` is ``pending``, ``connected``,
            ``failed`` or ``stopped``; ``tools`` the full tool names while connected.
        """
        return [s.status() for s in self._servers.values()]

    async def aclose(self) -> None:
        """Shut every server down (stdio servers' processes end); safe to call twice."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            conns = [s.conn for s in self._servers.values() if s.conn is not None]
            for conn in conns:
                conn.stop()
            with anyio.move_on_after(_STOP_SECONDS):
                for conn in conns:
                    await conn.done.wait()
            for server in self._servers.values():
                if server.conn is not None and server.conn.stderr is not None:
                    server.conn.stderr.close()
                if server.state in ("connected", "pending"):
                    server.state = "stopped"

    # -- connections ---------------------------------------------------------

    async def _ensure(self, server: _Server) -> _Connection | None:
        """The server's live connection, (re)connecting when there is none; None if it failed."""
        if server.lock is None:
            server.lock = anyio.Lock()
        async with server.lock:
            conn = server.conn
            if conn is not None and not conn.stopping and not conn.ready.is_set():
                await conn.ready.wait()  # still starting (a caller that was interrupted started it)
            if conn is not None and conn.client is not None and not conn.lost and not conn.stopping:
                return conn
            if self._closed or server.config_error is not None:
                return None
            if conn is not None:
                conn.stop()
                with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_SECONDS):
                    await conn.done.wait()
                if conn.stderr is not None:
                    conn.stderr.close()
            conn = server.conn = _Connection()
            try:
                assert self._tg is not None
                self._tg.start_soon(self._serve, server, conn, name=f"MCP server {server.name}")
            except Exception as e:  # the task group has closed: the client is going away
                server.state, server.error = "failed", f"{type(e).__name__}: {e}"
                return None
            await conn.ready.wait()
            return conn if server.state == "connected" and conn.client is not None else None

    async def _serve(self, server: _Server, conn: _Connection) -> None:
        """Connect, list the tools, then hold the connection open until stopped or lost."""
        connected = False
        failure: BaseException | None = None
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self._startup_timeout) as scope:
                conn.scope = scope
                target = self._target(server, conn)
                async with Client(
                    target, client_info=Implementation(name="agent-magic", version=__version__), cache=None
                ) as client:
                    wire_tools = await _list_tools(client)
                    scope.deadline = math.inf
                    server.tools = _adapters(self, server.name, wire_tools)
                    conn.client = client
                    server.state, server.error = "connected", None
                    connected = True
                    conn.ready.set()
                    await conn.wake.wait()
            if scope.cancelled_caught and not connected and not conn.stopping:
                failure = TimeoutError(f"no answer within {self._startup_timeout:g} s")
        except Exception as e:
            failure = e
        finally:
            conn.client = None
            if conn.stopping and self._closed:
                server.state = "stopped"
            elif conn.stopping:
                pass  # replaced by a new connection, which sets the state
            else:
                conn.lost = True
                server.state = "failed"
                server.error = self._describe(failure, conn, connected)
                conn.refused = failure is not None and _refused(failure)
            conn.ready.set()
            conn.done.set()

    def _target(self, server: _Server, conn: _Connection) -> Any:
        """What ``mcp.Client`` connects to for this server: a transport, or an in-process server."""
        config = server.config
        if server.type == "sdk":
            return config["instance"]
        if server.type == "stdio":
            env = {**self._env, **dict(config.get("env") or {})}
            command = str(config["command"])
            found = shutil.which(command, path=env.get("PATH", os.defpath)) if os.sep not in command else command
            if found is None or not Path(found).exists():
                raise FileNotFoundError(f"no such command {command!r}")
            cwd = Path(str(config.get("cwd") or self._cwd))
            if not cwd.is_absolute():
                cwd = self._cwd / cwd
            # The server's stderr goes to a file: a notebook's sys.stderr has no file descriptor,
            # and the last lines say why a server failed.
            # Closed when the connection is replaced or the servers are closed.
            conn.stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            params = StdioServerParameters(command=found, args=list(config.get("args") or []), env=env, cwd=cwd)
            return _watched(stdio_client(params, errlog=conn.stderr), conn)
        headers = dict(config.get("headers") or {})
        url = str(config["url"])
        if server.type == "sse":
            return _watched(sse_client(url, headers=headers or None), conn)
        return _watched(_streamable_http(url, headers), conn)

    def _describe(self, failure: BaseException | None, conn: _Connection, connected: bool) -> str:
        """One line saying why a server failed or went away."""
        last_words = _stderr_tail(conn.stderr)
        if failure is None:
            what = "the server closed the connection"
        else:
            leaf = _leaf(failure)
            if isinstance(leaf, MCPError) and leaf.code == _CONNECTION_CLOSED:
                what = "the server closed the connection" if connected else "the server exited before it answered"
            else:
                what = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
        if last_words:
            what += f"; its stderr ends: {last_words}"
        return _one_line(what)

    # -- tool calls ----------------------------------------------------------

    async def call(self, server_name: str, tool_name: str, arguments: dict[str, Any]) -> ToolResult:
        """Call one tool of one server; failures become error results.

        Parameters
        ----------
        server_name
            The server's key in the configs.
        tool_name
            The tool's name on the server.
        arguments
            The tool's arguments.

        Returns
        -------
        ToolResult
            The tool's result as Messages API content; ``is_error`` when the tool
            or the server failed.
        """
        server = self._servers.get(server_name)
        if server is None:
            return ToolResult(f"There is no MCP server named {server_name!r}.", is_error=True, summary="no such server")
        retried = False
        while True:
            conn = await self._ensure(server)
            if conn is None or conn.client is None:
                return _down(server, tool_name)
            try:
                with anyio.fail_after(self._tool_timeout):
                    result = await conn.client.call_tool(tool_name, arguments)
            except TimeoutError:
                return ToolResult(
                    f"The MCP tool {tool_name} of the server '{server_name}' did not answer within "
                    f"{self._tool_timeout:g} s; the call was cancelled.",
                    is_error=True,
                    summary=f"timed out after {self._tool_timeout:g}s",
                )
            except MCPError as e:
                if e.code != _CONNECTION_CLOSED:
                    return ToolResult(
                        f"The MCP server '{server_name}' refused the call to {tool_name}: {e.message} (code {e.code}).",
                        is_error=True,
                        summary=_one_line(e.message, 80),
                    )
                # Let the connection task finish, so that it says why the connection went away.
                with anyio.move_on_after(_STOP_SECONDS):
                    await conn.done.wait()
                if conn.refused and not retried:
                    retried = True  # the request never reached the server: safe to send again
                    continue
                if retried:
                    return _down(server, tool_name)
                # The request reached the server, which may have done part of the work: not re-sent.
                return ToolResult(
                    f"The MCP server '{server_name}' went away during the call to {tool_name} ({server.error}); "
                    "it may or may not have done its work. The server is restarted for the next call.",
                    is_error=True,
                    summary="server went away",
                )
            except Exception as e:  # e.g. a result that does not validate
                return ToolResult(
                    f"The call to the MCP tool {tool_name} of '{server_name}' failed: {type(e).__name__}: {_one_line(str(e))}",
                    is_error=True,
                    summary=type(e).__name__,
                )
            return _result(result)


def _down(server: _Server, tool_name: str) -> ToolResult:
    return ToolResult(
        f"The MCP server '{server.name}' is down ({server.error or 'not connected'}); "
        f"its tool {tool_name} could not run.",
        is_error=True,
        summary="server down",
    )


@asynccontextmanager
async def _watched(transport: Any, conn: _Connection) -> AsyncIterator[tuple[Any, Any]]:
    """``transport`` with a read stream that marks ``conn`` lost when the server hangs up."""
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, conn.end), write_stream


@asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[tuple[Any, Any]]:
    """The streamable HTTP transport with the config's headers (and mcp's default timeouts)."""
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


async def _list_tools(client: Client) -> list[WireTool]:
    tools: list[WireTool] = []
    cursor: str | None = None
    for _ in range(100):  # a server whose pages never end cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _stderr_tail(stream: IO[str] | None, max_bytes: int = 4096) -> str:
    """The last non-empty line a stdio server wrote to stderr."""
    if stream is None or stream.closed:
        return ""
    try:
        fd = stream.fileno()
        size = os.fstat(fd).st_size
        data = os.pread(fd, max_bytes, max(size - max_bytes, 0))
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _schema(tool: WireTool) -> dict[str, Any]:
    schema = tool.input_schema
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return dict(_EMPTY_SCHEMA)
    return schema


class McpTool(Tool):
    """One tool of an MCP server, as an agent tool named ``mcp__<server>__<tool>``.

    Made by :class:`McpServers`; ``name``, ``description`` and ``input_schema``
    come from the server. Calls go through the server's live connection
    (reconnecting when it died) and are checkpointed like ``Bash`` commands:
    files the server changes in the workspace can be rewound.
    """

    kind = "execute"

    def __init__(self, servers: McpServers, server_name: str, tool_name: str) -> None:
        self.server_name = server_name
        self.tool_name = tool_name
        self._servers = servers

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Path]:
        # What a server does with its arguments is its own business: no path checks on them.
        return []

    def rule_content(self, input: dict[str, Any]) -> str | None:
        return None

    def describe(self, input: dict[str, Any]) -> str:
        for value in input.values():
            if isinstance(value, str) and value.strip():
                return f"{self.name}({value.strip().splitlines()[0][:80]})"
        if input:
            return f"{self.name}({json.dumps(input, default=str)[:80]})"
        return self.name

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        token = ctx.recorder.before_command()
        changed: list[str] = []
        try:
            result = await self._servers.call(self.server_name, self.tool_name, input)
        finally:
            # Also after a failure or an interrupt: synchronous, so cancellation cannot cut it short.
            changed = ctx.recorder.after_command(token)
        result.data.setdefault("server", self.server_name)
        result.data.setdefault("tool", self.tool_name)
        if changed:
            result.data["changed_files"] = changed
        return result


def _adapters(servers: McpServers, server_name: str, wire_tools: list[WireTool]) -> list[McpTool]:
    """An :class:`McpTool` for each of a server's tools (names the API refuses are normalised)."""
    out: list[McpTool] = []
    seen: set[str] = set()
    for wt in wire_tools:
        name = f"mcp__{_normalise(server_name)}__{_normalise(wt.name)}"[:128]
        if name in seen:
            continue
        seen.add(name)
        description = (wt.description or "").strip() or f"The tool {wt.name} of the MCP server '{server_name}'."
        if len(description) > MAX_DESCRIPTION_CHARS:
            description = description[: MAX_DESCRIPTION_CHARS - 1] + "…"
        attrs = {"name": name, "description": description, "input_schema": _schema(wt)}
        cls = type("McpTool", (McpTool,), attrs)
        out.append(cast(McpTool, cls(servers, server_name, wt.name)))
    return out


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    middle = text[half : len(text) - half]
    return (
        text[:half]
        + f"\n\n… [{len(middle)} characters ({middle.count(chr(10))} lines) cut from the middle of the output] …\n\n"
        + text[len(text) - half :]
    )


def _result(result: CallToolResult) -> ToolResult:
    """An MCP tool result as Messages API content (text and images)."""
    blocks: list[dict[str, Any]] = []
    for item in result.content:
        if isinstance(item, TextContent):
            if item.text:
                blocks.append({"type": "text", "text": item.text})
        elif isinstance(item, ImageContent):
            blocks.append(_image(item.mime_type, item.data))
        elif isinstance(item, AudioContent):
            blocks.append({"type": "text", "text": f"[audio ({item.mime_type}, {len(item.data)} base64 characters) not shown]"})
        elif isinstance(item, ResourceLink):
            parts = [str(p) for p in (item.name, item.uri, item.description) if p]
            blocks.append({"type": "text", "text": "\n".join(parts)})
        elif isinstance(item, EmbeddedResource):
            res = item.resource
            if isinstance(res, TextResourceContents):
                blocks.append({"type": "text", "text": res.text or f"(empty resource {res.uri})"})
            elif isinstance(res, BlobResourceContents) and (res.mime_type or "") in _IMAGE_TYPES:
                blocks.append(_image(res.mime_type or "", res.blob))
            else:
                blocks.append({"type": "text", "text": f"[binary resource {res.uri} ({res.mime_type or 'unknown type'}) not shown]"})
    has_text = any(b["type"] == "text" for b in blocks)
    if result.structured_content is not None and not has_text:
        blocks.append({"type": "text", "text": json.dumps(result.structured_content, ensure_ascii=False, default=str)})
    if not blocks:
        blocks.append({"type": "text", "text": "(no output)"})
    texts = [b for b in blocks if b["type"] == "text"]
    total = sum(len(b["text"]) for b in texts)
    cut = 0
    if total > MAX_OUTPUT_CHARS:
        cut = total - MAX_OUTPUT_CHARS
        if len(texts) == len(blocks):
            joined = _cut("\n".join(b["text"] for b in texts), MAX_OUTPUT_CHARS)
            blocks = [{"type": "text", "text": joined}]
        else:
            share = MAX_OUTPUT_CHARS // len(texts)
            for b in texts:
                b["text"] = _cut(b["text"], share)
    first = next((b["text"] for b in blocks if b["type"] == "text"), "")
    summary = _one_line(first.splitlines()[0] if first.strip() else "", 80) or None
    images = sum(1 for b in blocks if b["type"] == "image")
    if images:
        summary = f"{images} image{'s' if images > 1 else ''}" + (f", {summary}" if summary else "")
    data: dict[str, Any] = {}
    if cut:
        data["output_cut_chars"] = cut
    content: str | list[dict[str, Any]]
    content = "\n".join(b["text"] for b in blocks) if all(b["type"] == "text" for b in blocks) else blocks
    return ToolResult(content, is_error=bool(result.is_error), summary=summary, data=data)


def _image(mime_type: str, data: str) -> dict[str, Any]:
    if mime_type not in _IMAGE_TYPES:
        return {"type": "text", "text": f"[image of type {mime_type} not shown: the model takes PNG, JPEG, GIF and WebP]"}
    if len(data) > MAX_IMAGE_CHARS:
        return {"type": "text", "text": f"[image not shown: {len(data)} base64 characters, over the 5 MB limit]"}
    return {"type": "image", "source": {"type": "base64", "media_type": mime_type, "data": data}}


# -- .mcp.json -----------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def _expand(value: str, where: str, path: Path) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigurationError(
            f"{path}: {where} uses ${{{name}}}, which is not set; set it or write ${{{name}:-default}}."
        )

    return _VAR.sub(sub, value)


def load_project_mcp_servers(cwd: Path) -> dict[str, Any]:
    """The MCP servers of a project's ``.mcp.json`` (Claude Code's project file).

    ``${VAR}`` and ``${VAR:-default}`` are expanded from the environment in
    ``command``, ``args``, ``env``, ``url`` and ``headers``, as Claude Code does.

    Parameters
    ----------
    cwd
        The project directory; only ``cwd / ".mcp.json"`` is read.

    Returns
    -------
    dict
        Server name to config; empty when there is no ``.mcp.json``.

    Raises
    ------
    ConfigurationError
        The file is not valid JSON, does not hold ``{"mcpServers": {...}}``, or
        uses a variable that is not set and has no default (one line naming the file).
    """
    path = Path(cwd) / ".mcp.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"{path}: cannot be read ({type(e).__name__}: {e}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
        raise ConfigurationError(f'{path}: must hold {{"mcpServers": {{"<name>": {{...}}}}}} with one object per server.')
    out: dict[str, Any] = {}
    for name, config in servers.items():
        expanded = dict(config)
        for key in ("command", "url"):
            if isinstance(expanded.get(key), str):
                expanded[key] = _expand(expanded[key], f"{name}.{key}", path)
        if isinstance(expanded.get("args"), list):
            expanded["args"] = [
                _expand(a, f"{name}.args", path) if isinstance(a, str) else a for a in expanded["args"]
            ]
        for key in ("env", "headers"):
            if isinstance(expanded.get(key), dict):
                expanded[key] = {
                    k: _expand(v, f"{name}.{key}.{k}", path) if isinstance(v, str) else v
                    for k, v in expanded[key].items()
                }
        out[name] = expanded
    return out
