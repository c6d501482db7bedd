"""MCP servers and custom tools: real servers (stdio, streamable HTTP, SSE, in-process), no mocks.

The servers are in ``tests/mcp_servers/``, written with the official ``mcp`` package.
The end-to-end tests run the agent against the fake Messages API, with a scripted
model that calls the servers' tools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest
from mcp.server.lowlevel import Server
from mcp.types import CallToolResult, ListToolsResult, TextContent
from mcp.types import Tool as WireTool

import agent_magic as am
from agent_magic import (
    ConfigurationError,
    PermissionResultAllow,
    SystemMessage,
    ToolPermissionContext,
)
from agent_magic.testing import FakeAnthropicServer, message, text, tool_block, tool_use
from agent_magic.tools.base import NullRecorder, ToolContext, ToolResult
from agent_magic.tools.mcp import MAX_OUTPUT_CHARS, McpServers, McpTool, load_project_mcp_servers
from agent_magic.tools.sdk_mcp import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server, tool

from .conftest import result_of, run_query

SERVERS = Path(__file__).parent / "mcp_servers"
TOOLS_SERVER = str(SERVERS / "tools_server.py")
CRASH_SERVER = str(SERVERS / "crash_server.py")


def stdio_config(**env: str) -> dict[str, Any]:
    config: dict[str, Any] = {"command": sys.executable, "args": [TOOLS_SERVER]}
    if env:
        config["env"] = env
    return config


CRASH_CONFIG = {"command": sys.executable, "args": [CRASH_SERVER]}


class NetServer:
    """``tools_server.py`` serving streamable HTTP or SSE on a free port of 127.0.0.1."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, TOOLS_SERVER, mode], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        assert self.proc.stdout is not None
        # The server prints its port once its socket listens: connections from now on queue.
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), f"the {mode} server did not start: {line!r}"
        self.port = int(line.split()[1])
        path = "/sse" if mode == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.config = {"type": "sse" if mode == "sse" else "http", "url": self.url}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def http_server() -> Iterator[NetServer]:
    server = NetServer("streamable-http")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sse_server() -> Iterator[NetServer]:
    server = NetServer("sse")
    yield server
    server.stop()


@asynccontextmanager
async def mcp_servers(configs: dict[str, Any], cwd: Path, **kw: Any) -> AsyncIterator[McpServers]:
    async with anyio.create_task_group() as tg:
        servers = McpServers(configs, cwd=cwd, env=dict(os.environ), **kw)
        servers.bind(tg)
        try:
            yield servers
        finally:
            await servers.aclose()


def by_name(servers: McpServers) -> dict[str, McpTool]:
    out: dict[str, McpTool] = {}
    for t in servers.tools():
        assert isinstance(t, McpTool)
        out[t.name] = t
    return out


def ctx_for(cwd: Path, recorder: Any = None) -> ToolContext:
    return ToolContext(cwd=cwd, session_id="test", recorder=recorder or NullRecorder())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- connections through McpServers -------------------------------------------------


def test_stdio_server_lists_and_calls_tools(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"st": stdio_config(MCP_TEST_VAR="from-config")}, workspace) as servers:
            assert servers.status()[0]["state"] == "pending"  # nothing starts before the first turn
            assert servers.tools() == []
            assert await servers.start() == []
            tools = by_name(servers)
            assert {"mcp__st__echo", "mcp__st__add", "mcp__st__die"} <= set(tools)
            add = tools["mcp__st__add"]
            assert add.kind == "execute" and add.rule_content({"a": 1}) is None
            assert add.description == "Add two integers."
            assert add.input_schema["type"] == "object" and set(add.input_schema["required"]) == {"a", "b"}
            assert add.spec()["name"] == "mcp__st__add"
            assert tools["mcp__st__echo"].describe({"text": "select 1\nmore"}) == "mcp__st__echo(select 1)"
            ctx = ctx_for(workspace)
            assert (await add.run({"a": 2, "b": 40}, ctx)).content == "42"
            # The config's env is merged over the environment given (the agent's subprocess env).
            assert (await tools["mcp__st__getenv"].run({"name": "MCP_TEST_VAR"}, ctx)).content == "from-config"
            assert (await tools["mcp__st__getenv"].run({"name": "PATH"}, ctx)).content == os.environ["PATH"]
            (status,) = servers.status()
            assert status["name"] == "st" and status["type"] == "stdio" and status["state"] == "connected"
            assert "mcp__st__add" in status["tools"] and status["error"] is None

    anyio.run(go)


@pytest.mark.parametrize("which", ["http", "sse"])
def test_http_and_sse_servers_list_and_call_tools(
    which: str, http_server: NetServer, sse_server: NetServer, workspace: Path
) -> None:
    net = http_server if which == "http" else sse_server

    async def go() -> None:
        async with mcp_servers({"net": net.config}, workspace) as servers:
            assert await servers.start() == []
            tools = by_name(servers)
            res = await tools["mcp__net__echo"].run({"text": "over the wire"}, ctx_for(workspace))
            assert res == ToolResult("echo: over the wire", summary="echo: over the wire", data={"server": "net", "tool": "echo"})
            assert servers.status()[0]["type"] == which
            # The server runs elsewhere: its process is the one the test started.
            assert (await tools["mcp__net__pid"].run({}, ctx_for(workspace))).content == str(net.proc.pid)

    anyio.run(go)


def test_a_crashing_server_is_one_notice_and_the_others_work(workspace: Path, http_server: NetServer) -> None:
    configs = {
        "broken": CRASH_CONFIG,
        "db": {"command": "dbserve", "args": ["--ro"]},
        "st": stdio_config(),
        "net": http_server.config,
    }

    async def go() -> None:
        async with mcp_servers(configs, workspace) as servers:
            notices = await servers.start()
            assert notices == [
                "MCP server 'broken' failed to start (the server exited before it answered; its stderr ends: "
                "crash_server: cannot open database 'missing.db'); this turn goes on without its tools.",
                "MCP server 'db' failed to start (FileNotFoundError: no such command 'dbserve'); "
                "this turn goes on without its tools.",
            ]
            states = {s["name"]: s["state"] for s in servers.status()}
            assert states == {"broken": "failed", "db": "failed", "st": "connected", "net": "connected"}
            assert {t.name.split("__")[1] for t in servers.tools()} == {"st", "net"}
            tools = by_name(servers)
            assert (await tools["mcp__st__add"].run({"a": 1, "b": 1}, ctx_for(workspace))).content == "2"
            assert (await tools["mcp__net__add"].run({"a": 2, "b": 2}, ctx_for(workspace))).content == "4"
            # The next turn tries again, and the same failure is not said twice.
            assert await servers.start() == []
            assert {s["name"]: s["state"] for s in servers.status()} == states

    anyio.run(go)


def test_malformed_configs_are_failed_servers_not_exceptions(workspace: Path) -> None:
    configs: dict[str, Any] = {
        "ws": {"type": "websocket", "url": "ws://127.0.0.1:1"},
        "nocommand": {"type": "stdio", "args": ["x"]},
        "badargs": {"command": sys.executable, "args": "tools_server.py"},
        "nourl": {"type": "http"},
        "noinstance": {"type": "sdk", "name": "x", "instance": object()},
        "notadict": ["python", "server.py"],
    }

    async def go() -> None:
        async with mcp_servers(configs, workspace) as servers:
            notices = await servers.start()
            assert len(notices) == len(configs)
            assert all("\n" not in n and "invalid config" in n for n in notices)
            errors = {s["name"]: s["error"] for s in servers.status()}
            assert "unknown server type 'websocket'" in errors["ws"]
            assert "'command'" in errors["nocommand"] and "'args'" in errors["badargs"]
            assert "'url'" in errors["nourl"] and "create_sdk_mcp_server" in errors["noinstance"]
            assert all(s["state"] == "failed" for s in servers.status())

    anyio.run(go)


def test_a_server_that_died_is_restarted_on_the_next_call_and_on_start(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"st": stdio_config()}, workspace) as servers:
            await servers.start()
            tools = by_name(servers)
            ctx = ctx_for(workspace)
            first_pid = int((await tools["mcp__st__pid"].run({}, ctx)).content)  # type: ignore[arg-type]
            died = await tools["mcp__st__die"].run({}, ctx)
            assert died.is_error and "went away during the call to die" in str(died.content)
            assert not alive(first_pid)
            assert servers.status()[0]["state"] == "failed"
            # The next call starts the server again.
            second = await tools["mcp__st__pid"].run({}, ctx)
            assert not second.is_error and int(second.content) != first_pid  # type: ignore[arg-type]
            assert servers.status()[0]["state"] == "connected"
            # A server that died between turns is started again by the next turn's start().
            await by_name(servers)["mcp__st__die"].run({}, ctx)
            assert servers.status()[0]["state"] == "failed"
            assert await servers.start() == []
            assert servers.status()[0]["state"] == "connected"
            third = await by_name(servers)["mcp__st__pid"].run({}, ctx)
            assert int(third.content) not in (first_pid, int(second.content))  # type: ignore[arg-type]

    anyio.run(go)


def test_a_http_server_that_went_away_is_an_error_result_not_a_hang(workspace: Path) -> None:
    net = NetServer("streamable-http")
    try:

        async def go() -> None:
            async with mcp_servers({"net": net.config}, workspace) as servers:
                await servers.start()
                add = by_name(servers)["mcp__net__add"]
                assert (await add.run({"a": 1, "b": 2}, ctx_for(workspace))).content == "3"
                net.stop()
                t0 = time.monotonic()
                res = await add.run({"a": 1, "b": 2}, ctx_for(workspace))
                assert time.monotonic() - t0 < 30
                assert res.is_error and "MCP server 'net' is down" in str(res.content)
                assert servers.status()[0]["state"] == "failed"
                notices = await servers.start()
                assert len(notices) == 1 and notices[0].startswith("MCP server 'net' failed to start (")

        anyio.run(go)
    finally:
        net.stop()


def test_aclose_terminates_the_stdio_child(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"st": stdio_config()}, workspace) as servers:
            await servers.start()
            pid = int((await by_name(servers)["mcp__st__pid"].run({}, ctx_for(workspace))).content)  # type: ignore[arg-type]
            assert alive(pid)
            await servers.aclose()
            assert not alive(pid)
            assert servers.status()[0]["state"] == "stopped" and servers.tools() == []
            await servers.aclose()  # idempotent
            assert await servers.start() == []  # closed for good: nothing starts again
            assert servers.status()[0]["state"] == "stopped"

    anyio.run(go)


def test_results_become_messages_api_content(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"st": stdio_config()}, workspace) as servers:
            await servers.start()
            tools = by_name(servers)
            ctx = ctx_for(workspace)
            pic = await tools["mcp__st__picture"].run({}, ctx)
            assert isinstance(pic.content, list) and not pic.is_error
            assert pic.content[0] == {"type": "text", "text": "a 1x1 picture"}
            image = pic.content[1]
            assert image["type"] == "image" and image["source"]["type"] == "base64"
            assert image["source"]["media_type"] == "image/png" and image["source"]["data"].startswith("iVBOR")
            failed = await tools["mcp__st__fail"].run({"reason": "no rows"}, ctx)
            assert failed.is_error and "failed on purpose: no rows" in str(failed.content)
            big = await tools["mcp__st__big"].run({"chars": 3 * MAX_OUTPUT_CHARS}, ctx)
            assert isinstance(big.content, str) and len(big.content) < MAX_OUTPUT_CHARS + 200
            assert "cut from the middle of the output" in big.content
            assert big.data["output_cut_chars"] == 2 * MAX_OUTPUT_CHARS

    anyio.run(go)


def test_structured_content_without_text_and_odd_schemas(workspace: Path) -> None:
    # A hand-written lowlevel server: a tool with no usable schema, answering only structuredContent.
    async def on_list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(
            tools=[
                WireTool(name="stats", description="", input_schema={"type": "object"}),
                WireTool(name="bad name!", description="odd", input_schema={"type": "object", "properties": {}}),
            ]
        )

    async def on_call_tool(ctx: Any, params: Any) -> CallToolResult:
        if params.name == "stats":
            return CallToolResult(content=[], structured_content={"rows": 3, "cols": ["a", "b"]})
        return CallToolResult(content=[TextContent(text="")])

    server: Server[Any] = Server("raw", on_list_tools=on_list_tools, on_call_tool=on_call_tool)

    async def go() -> None:
        config = {"type": "sdk", "name": "raw", "instance": server}
        async with mcp_servers({"raw": config}, workspace) as servers:
            assert await servers.start() == []
            tools = by_name(servers)
            assert set(tools) == {"mcp__raw__stats", "mcp__raw__bad_name_"}
            stats = tools["mcp__raw__stats"]
            assert stats.input_schema == {"type": "object"}
            assert stats.description == "The tool stats of the MCP server 'raw'."
            res = await stats.run({}, ctx_for(workspace))
            assert json.loads(str(res.content)) == {"rows": 3, "cols": ["a", "b"]}
            # The normalised name still calls the server's tool by its own name; nothing is "(no output)".
            assert (await tools["mcp__raw__bad_name_"].run({}, ctx_for(workspace))).content == "(no output)"

    anyio.run(go)


def test_timeouts_and_interrupts_do_not_hang(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"st": stdio_config()}, workspace, tool_timeout=0.5) as servers:
            await servers.start()
            slow = by_name(servers)["mcp__st__slow"]
            t0 = time.monotonic()
            res = await slow.run({"seconds": 60}, ctx_for(workspace))
            assert res.is_error and "did not answer within 0.5 s" in str(res.content)
            # An interrupted turn cancels the call: it returns at once, and the server stays usable.
            with anyio.move_on_after(0.5) as scope:
                await by_name(servers)["mcp__st__slow"].run({"seconds": 60}, ctx_for(workspace))
            assert scope.cancelled_caught
            assert time.monotonic() - t0 < 20
            assert (await by_name(servers)["mcp__st__add"].run({"a": 1, "b": 1}, ctx_for(workspace))).content == "2"

    anyio.run(go)


class WorkspaceRecorder(NullRecorder):
    """A ChangeRecorder that snapshots the workspace around commands, as the checkpoint store does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []

    def _snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}

    def before_command(self) -> object:
        self.calls.append("before")
        return self._snapshot()

    def after_command(self, token: object) -> list[str]:
        self.calls.append("after")
        assert isinstance(token, dict)
        now = self._snapshot()
        return sorted(k for k in set(now) | set(token) if now.get(k) != token.get(k))


def test_a_call_is_checkpointed_like_a_shell_command(workspace: Path) -> None:
    recorder = WorkspaceRecorder(workspace)

    async def go() -> None:
        async with mcp_servers({"st": stdio_config()}, workspace) as servers:
            await servers.start()
            res = await by_name(servers)["mcp__st__write_file"].run(
                {"path": "out.txt", "text": "written by the server"}, ctx_for(workspace, recorder)
            )
            assert not res.is_error and res.data["changed_files"] == ["out.txt"]
            # A failed call is bracketed too.
            await by_name(servers)["mcp__st__fail"].run({"reason": "x"}, ctx_for(workspace, recorder))

    anyio.run(go)
    assert (workspace / "out.txt").read_text() == "written by the server"  # stdio servers start in cwd
    assert recorder.calls == ["before", "after", "before", "after"]


# -- .mcp.json ------------------------------------------------------------------------


def test_project_mcp_json_expands_variables(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_project_mcp_servers(workspace) == {}
    monkeypatch.setenv("MCP_TEST_DB", "sales.db")
    monkeypatch.setenv("MCP_TEST_TOKEN", "t0k")
    monkeypatch.delenv("MCP_TEST_UNSET", raising=False)
    (workspace / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "db": {
                        "command": "${MCP_TEST_BIN:-dbserve}",
                        "args": ["--db", "${MCP_TEST_DB}", "--mode=${MCP_TEST_UNSET:-ro}"],
                        "env": {"DB_FILE": "${MCP_TEST_DB}", "LEVEL": "${MCP_TEST_UNSET:-}"},
                    },
                    "api": {
                        "type": "http",
                        "url": "https://${MCP_TEST_HOST:-example.com}/mcp",
                        "headers": {"Authorization": "Bearer ${MCP_TEST_TOKEN}"},
                    },
                }
            }
        )
    )
    assert load_project_mcp_servers(workspace) == {
        "db": {"command": "dbserve", "args": ["--db", "sales.db", "--mode=ro"], "env": {"DB_FILE": "sales.db", "LEVEL": ""}},
        "api": {"type": "http", "url": "https://example.com/mcp", "headers": {"Authorization": "Bearer t0k"}},
    }


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param("{nope", "not valid JSON", id="not-json"),
        pytest.param('{"servers": {}}', "mcpServers", id="no-mcpServers"),
        pytest.param('{"mcpServers": {"db": "dbserve"}}', "one object per server", id="server-not-an-object"),
        pytest.param('{"mcpServers": {"db": {"command": "${MCP_TEST_UNSET}"}}}', "MCP_TEST_UNSET", id="unset-variable"),
    ],
)
def test_a_malformed_mcp_json_is_a_one_line_error_naming_the_file(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, content: str, needle: str
) -> None:
    monkeypatch.delenv("MCP_TEST_UNSET", raising=False)
    path = workspace / ".mcp.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError) as info:
        load_project_mcp_servers(workspace)
    message = str(info.value)
    assert str(path) in message and needle in message and "\n" not in message


# -- the Agent SDK's custom tools ------------------------------------------------------


def sdk_greeter() -> McpSdkServerConfig:
    """The Agent SDK's documented example, unchanged apart from the import."""

    @tool("greet", "Greet a user", {"name": str})
    async def greet_user(args: dict[str, Any]) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": f"Hello, {args['name']}!"}]}

    return create_sdk_mcp_server(name="my-tools", version="1.0.0", tools=[greet_user])


def sdk_calculator() -> McpSdkServerConfig:
    @tool(
        "divide",
        "Divide a by b",
        {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
    )
    async def divide(args: dict[str, Any]) -> dict[str, Any]:
        if args["b"] == 0:
            return {"content": [{"type": "text", "text": "Error: Division by zero"}], "is_error": True}
        return {"content": [{"type": "text", "text": f"Result: {args['a'] / args['b']}"}]}

    @tool("sqrt", "Square root", {"x": float})
    async def sqrt(args: dict[str, Any]) -> dict[str, Any]:
        if args["x"] < 0:
            raise ValueError("math domain error")
        return {"content": [{"type": "text", "text": str(args["x"] ** 0.5)}]}

    return create_sdk_mcp_server(name="calculator", version="2.0.0", tools=[divide, sqrt])


def test_sdk_documented_example_through_mcp_servers(workspace: Path) -> None:
    config = sdk_greeter()
    assert config["type"] == "sdk" and config["name"] == "my-tools" and isinstance(config["instance"], Server)

    async def go() -> None:
        async with mcp_servers({"tools": config}, workspace) as servers:
            assert await servers.start() == []
            (greet,) = servers.tools()
            assert greet.name == "mcp__tools__greet" and greet.description == "Greet a user"
            assert greet.input_schema == {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
            res = await greet.run({"name": "Ada"}, ctx_for(workspace))
            assert res.content == "Hello, Ada!" and not res.is_error
            assert servers.status() == [
                {"name": "tools", "type": "sdk", "state": "connected", "tools": ["mcp__tools__greet"], "error": None}
            ]

    anyio.run(go)


def test_sdk_calculator_json_schema_and_errors(workspace: Path) -> None:
    async def go() -> None:
        async with mcp_servers({"calc": sdk_calculator()}, workspace) as servers:
            await servers.start()
            tools = by_name(servers)
            divide, sqrt = tools["mcp__calc__divide"], tools["mcp__calc__sqrt"]
            assert divide.input_schema["properties"] == {"a": {"type": "number"}, "b": {"type": "number"}}
            ctx = ctx_for(workspace)
            assert (await divide.run({"a": 1, "b": 4}, ctx)).content == "Result: 0.25"
            zero = await divide.run({"a": 1, "b": 0}, ctx)
            assert zero.is_error and zero.content == "Error: Division by zero"
            invalid = await divide.run({"a": "one", "b": 2}, ctx)
            assert invalid.is_error and str(invalid.content).startswith("Input validation error:")
            raised = await sqrt.run({"x": -1}, ctx)
            assert raised.is_error and raised.content == "math domain error"

    anyio.run(go)


class Query(TypedDict):
    sql: str
    limit: int


def test_sdk_input_schema_conversions() -> None:
    from typing import Annotated

    from agent_magic.tools.sdk_mcp import _build_input_schema

    async def handler(args: Any) -> dict[str, Any]:
        return {"content": []}

    def schema(declared: Any) -> dict[str, Any]:
        return _build_input_schema(SdkMcpTool("t", "d", declared, handler))

    assert schema({"s": str, "i": int, "f": float, "b": bool, "l": list, "d": dict}) == {
        "type": "object",
        "properties": {
            "s": {"type": "string"}, "i": {"type": "integer"}, "f": {"type": "number"},
            "b": {"type": "boolean"}, "l": {"type": "array"}, "d": {"type": "object"},
        },
        "required": ["s", "i", "f", "b", "l", "d"],
    }
    assert schema({"tags": list[str], "note": Annotated[str, "a note"], "n": int | None})["properties"] == {
        "tags": {"type": "array", "items": {"type": "string"}},
        "note": {"type": "string", "description": "a note"},
        "n": {"type": "integer"},
    }
    assert schema(Query) == {
        "type": "object",
        "properties": {"sql": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["limit", "sql"],
    }
    full = {"type": "object", "properties": {"x": {"type": "string", "enum": ["a"]}}}
    assert schema(full) is full


# -- end to end: the agent, the fake Messages API, real servers ----------------------------


def tool_result(fake_api: FakeAnthropicServer, request: int) -> dict[str, Any]:
    (block,) = fake_api.message_requests[request].tool_results
    return block


def offered_tools(fake_api: FakeAnthropicServer, request: int = 0) -> list[str]:
    return [t["name"] for t in fake_api.message_requests[request].body.get("tools", [])]


def test_e2e_a_custom_tool_allowed_by_name(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("mcp__tools__greet", {"name": "Ada"}), text("I greeted Ada."))
    msgs = run_query(
        "Greet Ada", cwd=workspace, mcp_servers={"tools": sdk_greeter()}, allowed_tools=["mcp__tools__greet"]
    )
    res = result_of(msgs)
    assert res.subtype == "success" and res.result == "I greeted Ada."
    assert "mcp__tools__greet" in offered_tools(fake_api)
    sent = tool_result(fake_api, 1)
    assert sent["content"] == "Hello, Ada!" and not sent.get("is_error")
    init = next(m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "init")
    assert init.data["mcp_servers"] == [{"name": "tools", "status": "connected"}]
    assert "mcp__tools__greet" in init.data["tools"]


def test_e2e_a_deny_rule_is_honoured(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("mcp__tools__greet", {"name": "Ada"}), text("Could not."))
    res = result_of(
        run_query(
            "Greet Ada",
            cwd=workspace,
            mcp_servers={"tools": sdk_greeter()},
            allowed_tools=["mcp__tools"],
            disallowed_tools=["mcp__tools__greet"],
        )
    )
    assert res.subtype == "success"
    assert "mcp__tools__greet" not in offered_tools(fake_api)
    sent = tool_result(fake_api, 1)
    assert sent["is_error"] and "Hello" not in json.dumps(sent)


def test_e2e_a_server_level_rule_allows_all_its_tools(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(
        message(tool_block("mcp__calc__divide", {"a": 9, "b": 3}), tool_block("mcp__calc__sqrt", {"x": 16})),
        text("3 and 4."),
    )
    res = result_of(run_query("compute", cwd=workspace, mcp_servers={"calc": sdk_calculator()}, allowed_tools=["mcp__calc"]))
    assert res.subtype == "success"
    results = fake_api.message_requests[1].tool_results
    assert [r["content"] for r in results] == ["Result: 3.0", "4.0"]
    assert not any(r.get("is_error") for r in results)


def test_e2e_can_use_tool_is_asked_with_the_mcp_name(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    asked: list[tuple[str, dict[str, Any], str | None]] = []

    async def decide(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> Any:
        asked.append((name, inp, ctx.title))
        return PermissionResultAllow()

    fake_api.add(tool_use("mcp__tools__greet", {"name": "Grace"}), text("Done."))
    res = result_of(run_query("Greet Grace", cwd=workspace, mcp_servers={"tools": sdk_greeter()}, can_use_tool=decide))
    assert res.subtype == "success"
    assert asked == [("mcp__tools__greet", {"name": "Grace"}, "Allow mcp__tools__greet(Grace)?")]
    assert tool_result(fake_api, 1)["content"] == "Hello, Grace!"


def test_e2e_without_a_rule_or_callback_the_call_is_refused(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("mcp__tools__greet", {"name": "Ada"}), text("Not allowed."))
    res = result_of(run_query("Greet Ada", cwd=workspace, mcp_servers={"tools": sdk_greeter()}))
    assert res.subtype == "success"
    sent = tool_result(fake_api, 1)
    assert sent["is_error"] and "mcp__tools__greet" in json.dumps(sent) and "Hello" not in json.dumps(sent)


def test_e2e_stdio_and_http_servers_in_one_turn(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, http_server: NetServer
) -> None:
    fake_api.add(
        message(
            tool_block("mcp__local__echo", {"text": "from stdio"}),
            tool_block("mcp__remote__echo", {"text": "from http"}),
            tool_block("mcp__local__write_file", {"path": "made.txt", "text": "by an MCP server"}),
        ),
        text("All three worked."),
    )
    msgs = run_query(
        "use both",
        cwd=workspace,
        mcp_servers={"local": stdio_config(), "remote": http_server.config},
        allowed_tools=["mcp__local", "mcp__remote__*"],
    )
    res = result_of(msgs)
    assert res.subtype == "success" and res.result == "All three worked."
    init = next(m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "init")
    assert init.data["mcp_servers"] == [{"name": "local", "status": "connected"}, {"name": "remote", "status": "connected"}]
    results = fake_api.message_requests[1].tool_results
    assert [r["content"] for r in results[:2]] == ["echo: from stdio", "echo: from http"]
    # The file the server wrote is part of the turn's checkpoint, like a Bash command's.
    assert (workspace / "made.txt").read_text() == "by an MCP server"
    checkpoint = next(m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "checkpoint")
    assert any("made.txt" in json.dumps(f) for f in checkpoint.data["files"])


def test_e2e_a_crashing_server_is_one_warning_and_the_turn_succeeds(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    fake_api.add(tool_use("mcp__tools__greet", {"name": "Ada"}), text("Greeted."))
    msgs = run_query(
        "Greet Ada",
        cwd=workspace,
        mcp_servers={"broken": CRASH_CONFIG, "tools": sdk_greeter()},
        allowed_tools=["mcp__tools"],
    )
    res = result_of(msgs)
    assert res.subtype == "success" and res.result == "Greeted."
    warnings = [m.data["message"] for m in msgs if isinstance(m, SystemMessage) and m.subtype == "warning"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("MCP server 'broken' failed to start (") and "missing.db" in warnings[0]
    init = next(m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "init")
    assert {"name": "broken", "status": "failed"} in init.data["mcp_servers"]
    assert not any(name.startswith("mcp__broken") for name in offered_tools(fake_api))
    assert tool_result(fake_api, 1)["content"] == "Hello, Ada!"


def test_e2e_the_sdk_names_are_exported() -> None:
    assert am.tool is tool and am.create_sdk_mcp_server is create_sdk_mcp_server and am.SdkMcpTool is SdkMcpTool
