"""Extending the agent, core: project memory, structured answers, subagents (fake Messages API, real HTTP)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest

import agent_magic as am
from agent_magic import (
    AgentDefinition,
    AgentOptions,
    AssistantMessage,
    HookMatcher,
    ResultMessage,
    SystemMessage,
    UserMessage,
)
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .conftest import result_of, run_query


def _system(request: Any) -> str:
    system = request.body.get("system")
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system)
    return str(system or "")


# -- project memory -----------------------------------------------------------------------
def test_agents_md_from_the_project_and_its_parents_reaches_the_system_prompt(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    (tmp_path / "CLAUDE.md").write_text("Outer rule: plots use the house style.\n")
    (workspace / "AGENTS.md").write_text("Project rule: dates are ISO 8601.\n")
    fake_api.add(text("ok"), text("ok"))
    run_query("hi", cwd=workspace, setting_sources=["project"])
    system = _system(fake_api.message_requests[0])
    assert "Project rule: dates are ISO 8601." in system and "Outer rule: plots use the house style." in system
    assert system.index("Outer rule") < system.index("Project rule")  # the nearer file has the last word
    run_query("hi", cwd=workspace)  # the SDK's default: no setting sources, no memory
    assert "Project rule" not in _system(fake_api.message_requests[1])


def test_user_memory_and_a_change_between_turns(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    monkeypatch.setenv("AGENT_MAGIC_CONFIG_DIR", str(config))
    (config / "AGENTS.md").write_text("User rule: answer in French.\n")
    (workspace / "AGENTS.md").write_text("version one\n")
    fake_api.add(text("un"), text("deux"))

    async def go() -> list[str]:
        async with am.AgentClient(AgentOptions(cwd=workspace, setting_sources=["project", "user"])) as client:
            await client.query("first")
            async for _ in client.receive_response():
                pass
            loaded = [f["path"] for f in client.memory_files()]
            (workspace / "AGENTS.md").write_text("version two, longer\n")
            await client.query("second")
            async for _ in client.receive_response():
                pass
            return loaded

    loaded = anyio.run(go)
    assert loaded == [str(config / "AGENTS.md"), str(workspace / "AGENTS.md")]
    first, second = (_system(r) for r in fake_api.message_requests)
    assert "User rule: answer in French." in first and "version one" in first
    assert "version two, longer" in second and "version one" not in second


# -- structured answers -------------------------------------------------------------------
SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "region": {"type": "string"}},
    "required": ["total", "region"],
    "additionalProperties": False,
}


def test_a_structured_answer_is_validated_and_asked_again_once(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text('{"total": "ten", "region": "north"}'), text('Here it is:\n```json\n{"total": 10.5, "region": "north"}\n```'))
    msgs = run_query("Total sales?", cwd=workspace, output_format={"type": "json_schema", "schema": SCHEMA})
    res = result_of(msgs)
    assert res.subtype == "success" and res.structured_output == {"total": 10.5, "region": "north"}
    first, second = fake_api.message_requests
    sent = " ".join(b["text"] for b in first.body["messages"][-1]["content"])
    assert "JSON schema" in sent and '"additionalProperties": false' in sent  # the schema went with the prompt
    retry = second.body["messages"][-1]
    assert retry["role"] == "user" and "'ten' is not of type 'number'" in json.dumps(retry)


def test_an_answer_that_never_validates_ends_the_turn_with_the_sdk_subtype(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    fake_api.add(text("about ten"), text("{}"), text('{"total": 1}'))
    res = result_of(run_query("Total?", cwd=workspace, output_format={"type": "json_schema", "schema": SCHEMA}))
    assert res.subtype == "error_max_structured_output_retries" and res.is_error and res.structured_output is None
    assert "'region' is a required property" in (res.result or "")
    assert len(fake_api.message_requests) == 3


def test_a_bad_schema_is_refused_up_front() -> None:
    with pytest.raises(am.ConfigurationError, match="not a valid JSON schema"):
        AgentOptions(output_format={"type": "json_schema", "schema": {"type": "nonsense"}})


# -- subagents ------------------------------------------------------------------------------
def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.id = "load-cell"
    nb.cells = [cell]
    nbformat.write(nb, str(path))


WRITER = AgentDefinition(
    description="Writes files and edits notebook cells",
    prompt="You are the writer subagent. Make the requested changes.",
    tools=["Read", "Write", "NotebookEdit"],
)


def test_a_subagent_writes_a_file_and_a_cell_and_the_parent_turns_rewind_undoes_both(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    nb = workspace / "analysis.ipynb"
    _notebook(nb)
    before = nb.read_bytes()
    fake_api.add(
        tool_use("Agent", {"description": "write notes", "prompt": "Write notes.txt and set x to 2.", "subagent_type": "writer"}),
        tool_use("Read", {"file_path": str(nb)}),
        tool_use("Write", {"file_path": "notes.txt", "content": "x is now 2\n"}),
        tool_use("NotebookEdit", {"notebook_path": str(nb), "cell_id": "load-cell", "new_source": "x = 2"}),
        text("Wrote notes.txt and set x = 2 in load-cell."),
        text("The writer did it."),
    )
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(event: str) -> Any:
        async def hook(data: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
            events.append((event, data))
            return {}

        return hook

    async def go() -> tuple[list[Any], Any]:
        hooks = {e: [HookMatcher(hooks=[await record(e)])] for e in ("SubagentStart", "SubagentStop", "PreToolUse")}
        opts = AgentOptions(cwd=workspace, agents={"writer": WRITER}, permission_mode="acceptEdits", hooks=hooks)
        async with am.AgentClient(opts) as client:
            await client.query("Have the writer update the notes and the notebook.")
            msgs = [m async for m in client.receive_response()]
            res = msgs[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success", res
            assert (workspace / "notes.txt").exists() and "x = 2" in nb.read_text()
            rewound = await client.rewind_files(res.checkpoint_id or "")
            return msgs, rewound

    msgs, _rewound = anyio.run(go)
    assert not (workspace / "notes.txt").exists()
    assert nbformat.reads(nb.read_text(), 4).cells[0].source == "x = 1" and nb.read_bytes() == before
    # The subagent's requests: its own prompt, its own tools (never Agent), the parent's model.
    sub = fake_api.message_requests[1]
    assert _system(sub).startswith("You are the writer subagent.")
    assert sorted(t["name"] for t in sub.body["tools"]) == ["NotebookEdit", "Read", "Write"]
    assert sub.body["messages"][0]["content"][0]["text"].startswith("Write notes.txt and set x to 2.")
    # Its report is the Agent call's result in the parent.
    assert "Wrote notes.txt and set x = 2" in json.dumps(fake_api.message_requests[5].tool_results[0])
    # Its messages reached the parent's stream, marked with the Agent call's id.
    agent_call = next(b for m in msgs if isinstance(m, AssistantMessage) for b in m.tool_uses if b.name == "Agent")
    inner = [m for m in msgs if isinstance(m, (AssistantMessage, UserMessage)) and m.parent_tool_use_id == agent_call.id]
    assert [b.name for m in inner if isinstance(m, AssistantMessage) for b in m.tool_uses] == ["Read", "Write", "NotebookEdit"]
    starts = [m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "subagent_start"]
    assert len(starts) == 1 and starts[0].data["agent_type"] == "writer"
    agent_id = starts[0].data["agent_id"]
    # Hooks: start and stop with the SDK's fields; the subagent's tool calls carry its id.
    names = [e for e, _ in events]
    assert names.count("SubagentStart") == 1 and names.count("SubagentStop") == 1
    stop = next(d for e, d in events if e == "SubagentStop")
    assert stop["agent_id"] == agent_id and stop["agent_type"] == "writer" and Path(stop["agent_transcript_path"]).exists()
    inner_pre = [d for e, d in events if e == "PreToolUse" and d.get("agent_id") == agent_id]
    assert [d["tool_name"] for d in inner_pre] == ["Read", "Write", "NotebookEdit"]
    # Its transcript is stored under the parent session.
    sid = msgs[-1].session_id
    assert am.list_subagents(sid) == [agent_id]
    sub_msgs = am.get_subagent_messages(sid, agent_id)
    assert sub_msgs[0].type == "user" and "Write notes.txt" in json.dumps(sub_msgs[0].message)
    assert sum(1 for m in sub_msgs if m.type == "assistant") == 4
    # The parent transcript holds only the Agent call and its result, not the subagent's steps.
    parent = am.get_session_messages(sid)
    assert not any("NotebookEdit" in json.dumps(m.message) for m in parent)
    # The notebook shows the subagent as one collapsible line with its tool lines inside.
    from agent_magic.notebook._display import TurnView

    view = TurnView(rich=True)
    for m in msgs:
        view.on_message(m)
    md = view.markdown()
    assert md.count("<details class='am-subagent'>") == 1
    head, inside = md.split("<details class='am-subagent'>")
    line = inside.split("</summary>")[0]
    assert "<b>Agent</b>" in line and "writer: write notes" in line and "writer: 3 tool calls" in line
    body = inside.split("</summary>", 1)[1]
    assert [n for n in ("Read", "Write", "NotebookEdit") if f"**{n}**" in body or f"<b>{n}</b>" in body] == ["Read", "Write", "NotebookEdit"]
    assert "Wrote notes.txt and set x = 2" in body and "The writer did it." in md.split("</details>")[-1]
    assert "**Read**" not in head and "<b>Read</b>" not in head


def test_stop_during_a_subagent_ends_both_quickly(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    runner = AgentDefinition(description="Runs commands", prompt="You run commands.", tools=["Bash"])
    fake_api.add(
        tool_use("Agent", {"description": "long job", "prompt": "Run the long job.", "subagent_type": "runner"}),
        tool_use("Bash", {"command": "sleep 30", "description": "the long job"}),
        text("never reached"),
    )

    async def go() -> tuple[ResultMessage, float, str]:
        opts = AgentOptions(cwd=workspace, agents={"runner": runner}, permission_mode="bypassPermissions")
        async with am.AgentClient(opts) as client:
            await client.query("Run the long job with the runner.")
            agent_id = ""
            stopped_at = 0.0
            async for m in client.receive_response():
                if isinstance(m, SystemMessage) and m.subtype == "subagent_start":
                    agent_id = m.data["agent_id"]
                if isinstance(m, AssistantMessage) and m.parent_tool_use_id and any(b.name == "Bash" for b in m.tool_uses):
                    await anyio.sleep(0.5)  # the command is running
                    stopped_at = time.monotonic()
                    await client.interrupt()
                if isinstance(m, ResultMessage):
                    return m, time.monotonic() - stopped_at, agent_id
        raise AssertionError("no result")

    res, took, agent_id = anyio.run(go)
    assert res.subtype == "interrupted" and took < 2.0, (res.subtype, took)
    lines = [json.loads(x) for x in next((home / "sessions").rglob(f"agent-{agent_id}.jsonl")).read_text().splitlines()]
    assert lines[-1]["type"] == "result" and lines[-1]["subtype"] == "interrupted"
    assert any(e.get("tool_use_result", {}).get("summary") == "interrupted" for e in lines)


def test_agent_definitions_are_checked() -> None:
    with pytest.raises(am.ConfigurationError, match="description"):
        AgentDefinition(description="", prompt="p")
    with pytest.raises(am.ConfigurationError, match="background is not supported"):
        AgentDefinition(description="d", prompt="p", background=True)
    with pytest.raises(am.ConfigurationError, match="must be an AgentDefinition"):
        AgentOptions(agents={"x": {"description": "d", "prompt": "p"}})  # type: ignore[dict-item]


def test_an_unknown_subagent_type_is_a_tool_error(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("Agent", {"description": "d", "prompt": "p", "subagent_type": "nobody"}), text("ok"))
    res = result_of(run_query("go", cwd=workspace, agents={"writer": WRITER}))
    assert res.subtype == "success"
    sent = fake_api.message_requests[1].tool_results[0]
    assert sent["is_error"] is True and "no subagent 'nobody'" in json.dumps(sent)


def test_stop_while_an_mcp_server_starts_ends_the_turn_at_once(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    import sys

    # A server that never answers the handshake: without Stop, the turn would wait for the startup timeout.
    silent = {"type": "stdio", "command": sys.executable, "args": ["-c", "import time; time.sleep(120)"]}
    fake_api.add(text("never asked"))

    async def go() -> tuple[ResultMessage, float]:
        async with am.AgentClient(AgentOptions(cwd=workspace, mcp_servers={"silent": silent})) as client:
            assert [s["state"] for s in client.mcp_status()] == ["pending"]
            await client.query("hello")
            await anyio.sleep(0.5)
            stopped = time.monotonic()
            await client.interrupt()
            async for m in client.receive_response():
                if isinstance(m, ResultMessage):
                    return m, time.monotonic() - stopped
        raise AssertionError("no result")

    res, took = anyio.run(go)
    assert res.subtype == "interrupted" and took < 2.0 and "MCP servers were starting" in (res.result or "")
    assert fake_api.message_requests == []  # nothing was sent
