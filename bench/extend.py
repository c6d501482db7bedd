"""Extending the agent (issue #17): what custom tools, MCP servers, subagents and memory cost a turn.

Everything runs against the fake Messages API (real HTTP and SSE on 127.0.0.1) and real MCP
servers written with the official ``mcp`` package (``tests/mcp_servers/tools_server.py``,
over stdio and streamable HTTP)::

    python bench/extend.py [--calls 40] [--runs 3] [--json PATH]

1. **Per tool call, through the agent loop.** One turn makes ``--calls`` calls of a trivial
   tool, one call per model response, then answers. The turn's wall time is divided by the
   calls; the built-in ``Glob`` on an empty folder is the baseline, so the difference is what
   the path to the tool adds (in-process SDK server, stdio server, HTTP server). Median of
   ``--runs``; each run a fresh client (the first turn's server start is timed apart).
2. **Server start**: the first ``McpServers.start()`` of a stdio and an HTTP server (the
   stdio one includes starting its Python process), and ``aclose`` of the stdio one.
3. **A subagent**: a turn whose model hands a task to a subagent that makes one ``Glob``
   call, against the same steps inline; the difference is what a subagent adds besides its
   model requests (its transcript under the session, hooks, the context it builds).
4. **Memory and structured answers**: the per-turn check whether memory files changed (a
   working directory 8 folders deep), and parsing + validating a structured answer.

Checks: every turn succeeds and every tool call returns without error; a failed check
replaces the number. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_magic import (  # noqa: E402
    AgentClient,
    AgentDefinition,
    AgentOptions,
    ResultMessage,
    UserMessage,
    create_sdk_mcp_server,
    tool,
)
from agent_magic.testing import FakeAnthropicServer, text, tool_use  # noqa: E402

SERVER = ROOT / "tests" / "mcp_servers" / "tools_server.py"


@tool("ping", "Answer pong.", {"text": str})
async def ping(args: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": f"pong {args['text']}"}]}


@contextmanager
def http_server() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(SERVER), "streamable-http"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the HTTP MCP server did not start: {line!r}")
        yield f"http://127.0.0.1:{line.split()[1]}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def _configs(url: str) -> dict[str, dict[str, Any]]:
    return {
        "builtin": {},
        "sdk": {"tools": create_sdk_mcp_server("bench-tools", tools=[ping])},
        "stdio": {"tools": {"type": "stdio", "command": sys.executable, "args": [str(SERVER)]}},
        "http": {"tools": {"type": "http", "url": url}},
    }


def _call(kind: str, i: int) -> tuple[str, dict[str, Any]]:
    if kind == "builtin":
        return "Glob", {"pattern": f"nothing-{i}-*"}
    if kind == "sdk":
        return "mcp__tools__ping", {"text": str(i)}
    return "mcp__tools__echo", {"text": str(i)}


async def _turn(client: AgentClient, prompt: str) -> tuple[float, ResultMessage, list[Any]]:
    t0 = time.perf_counter()
    await client.query(prompt)
    msgs = [m async for m in client.receive_response()]
    took = time.perf_counter() - t0
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success", res
    errors = [m for m in msgs if isinstance(m, UserMessage) and m.tool_use_result and m.tool_use_result.get("is_error")]
    assert not errors, errors[0].tool_use_result
    return took, res, msgs


def per_call(fake: FakeAnthropicServer, workspace: Path, url: str, calls: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, servers in _configs(url).items():
        times: list[float] = []
        first_turn: list[float] = []
        for _ in range(runs):
            async def go(kind: str = kind, servers: dict[str, Any] = servers) -> tuple[float, float]:
                opts = AgentOptions(cwd=workspace, mcp_servers=servers or None, permission_mode="bypassPermissions")
                async with AgentClient(opts) as client:
                    fake.add(text("warm"))
                    warm, _, _ = await _turn(client, "warm up")  # starts the servers
                    fake.add(*[tool_use(*_call(kind, i)) for i in range(calls)], text("done"))
                    took, res, _ = await _turn(client, "call the tool many times")
                    assert res.num_turns == calls + 1
                    return warm, took

            warm, took = anyio.run(go)
            first_turn.append(warm * 1000)
            times.append(took * 1000 / calls)
        out[kind] = {"ms_per_call": statistics.median(times), "first_turn_ms": statistics.median(first_turn)}
    base = out["builtin"]["ms_per_call"]
    for kind in out:
        out[kind]["overhead_ms"] = out[kind]["ms_per_call"] - base
    return out


def server_start(workspace: Path, url: str, runs: int) -> dict[str, Any]:
    from agent_magic.tools.mcp import McpServers

    out: dict[str, list[float]] = {"stdio_start_ms": [], "http_start_ms": [], "stdio_close_ms": []}
    for _ in range(runs):
        async def go() -> None:
            async with anyio.create_task_group() as tg:
                for name, config in (("stdio", {"type": "stdio", "command": sys.executable, "args": [str(SERVER)]}),
                                     ("http", {"type": "http", "url": url})):
                    servers = McpServers({"s": config}, cwd=workspace, env=dict(os.environ))
                    servers.bind(tg)
                    t0 = time.perf_counter()
                    notices = await servers.start()
                    out[f"{name}_start_ms"].append((time.perf_counter() - t0) * 1000)
                    assert not notices and servers.status()[0]["state"] == "connected", (notices, servers.status())
                    t0 = time.perf_counter()
                    await servers.aclose()
                    if name == "stdio":
                        out["stdio_close_ms"].append((time.perf_counter() - t0) * 1000)

        anyio.run(go)
    return {k: statistics.median(v) for k, v in out.items()}


def subagent(fake: FakeAnthropicServer, workspace: Path, runs: int) -> dict[str, Any]:
    agents = {"finder": AgentDefinition(description="Finds files", prompt="You find files.", tools=["Glob"])}
    inline: list[float] = []
    delegated: list[float] = []
    for _ in range(runs):
        async def go() -> tuple[float, float]:
            opts = AgentOptions(cwd=workspace, agents=agents, permission_mode="bypassPermissions")
            async with AgentClient(opts) as client:
                fake.add(text("warm"))
                await _turn(client, "warm up")
                fake.add(tool_use("Glob", {"pattern": "*.csv"}), text("No CSV files."))
                a, _, _ = await _turn(client, "find csv files")
                fake.add(
                    tool_use("Agent", {"description": "find csv", "prompt": "Find CSV files.", "subagent_type": "finder"}),
                    tool_use("Glob", {"pattern": "*.csv"}),
                    text("No CSV files."),
                    text("The finder found none."),
                )
                b, _, _ = await _turn(client, "have the finder look for csv files")
                return a, b

        a, b = anyio.run(go)
        inline.append(a * 1000)
        delegated.append(b * 1000)
    return {"inline_turn_ms": statistics.median(inline), "subagent_turn_ms": statistics.median(delegated),
            "extra_model_requests": 2}


def memory_and_structured(workspace: Path) -> dict[str, Any]:
    from agent_magic import _memory, _structured

    deep = workspace
    for i in range(8):
        deep = deep / f"level{i}"
    deep.mkdir(parents=True)
    (deep / "AGENTS.md").write_text("Use ISO dates.\n" * 50)
    (workspace / "CLAUDE.md").write_text("House style.\n" * 50)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        _memory.signature(deep, ["project", "user"])
    check_us = (time.perf_counter() - t0) * 1e6 / n
    t0 = time.perf_counter()
    files = _memory.find_memory_files(deep, ["project", "user"])
    load_us = (time.perf_counter() - t0) * 1e6
    schema = {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {
        "region": {"type": "string"}, "total": {"type": "number"}}, "required": ["region", "total"]}}}, "required": ["rows"]}
    answer = "```json\n" + json.dumps({"rows": [{"region": f"r{i}", "total": i * 1.5} for i in range(200)]}) + "\n```"
    t0 = time.perf_counter()
    for _ in range(200):
        ok, _, _ = _structured.parse(answer, schema)
        assert ok
    parse_us = (time.perf_counter() - t0) * 1e6 / 200
    return {"memory_files": len(files), "memory_check_us_per_turn": check_us, "memory_load_us": load_us,
            "structured_parse_us_200_rows": parse_us}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "extend.json")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "calls": args.calls, "runs": args.runs,
    }
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropicServer() as fake, http_server() as url:
        os.environ.update(fake.env())
        os.environ["AGENT_MAGIC_HOME"] = str(Path(tmp) / "store")
        os.environ["AGENT_MAGIC_CONFIG_DIR"] = str(Path(tmp) / "config")
        workspace = Path(tmp) / "project"
        workspace.mkdir()
        print(f"per tool call ({args.calls} calls per turn, median of {args.runs} runs)", flush=True)
        results["per_call"] = per_call(fake, workspace, url, args.calls, args.runs)
        for kind, row in results["per_call"].items():
            print(f"  {kind:8s} {row['ms_per_call']:7.2f} ms/call  (+{row['overhead_ms']:.2f} over built-in)  first turn {row['first_turn_ms']:.0f} ms")
        results["server_start"] = server_start(workspace, url, args.runs)
        print("server start: " + ", ".join(f"{k} {v:.0f}" for k, v in results["server_start"].items()), flush=True)
        results["subagent"] = subagent(fake, workspace, args.runs)
        s = results["subagent"]
        print(f"subagent: inline turn {s['inline_turn_ms']:.0f} ms, with a subagent {s['subagent_turn_ms']:.0f} ms "
              f"(+{s['extra_model_requests']} model requests)", flush=True)
        results["memory_structured"] = memory_and_structured(workspace)
        print("memory/structured: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in results["memory_structured"].items()), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
