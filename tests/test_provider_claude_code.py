"""The claude-code engine: the real bundled Claude Code CLI against the fake Messages API.

Claude Code runs offline here: ``ANTHROPIC_BASE_URL`` points at the fake
server, ``HOME`` and ``CLAUDE_CONFIG_DIR`` are temporary (the person's
``~/.claude`` is never read) and non-essential traffic is off. Replies are
scripted in FIFO order (``server.add``): Claude Code sends exactly one request
per model step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("claude_agent_sdk", reason="the claude-code extra (claude-agent-sdk) is not installed")

import agent_magic as am
from agent_magic import (
    AgentClient,
    AgentOptions,
    AssistantMessage,
    ResultMessage,
    SystemMessage,
    UserMessage,
)
from agent_magic._errors import ConfigurationError, MissingAPIKeyError
from agent_magic._messages import ToolResultBlock
from agent_magic._permissions import (
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)
from agent_magic.providers.claude_code import cli_path
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, error, message, text, text_block, tool_use
from agent_magic.tools.base import Tool, ToolContext, ToolResult

from .conftest import tree_snapshot

pytestmark = pytest.mark.slow

if cli_path() is None:  # pragma: no cover - the extra bundles the CLI
    pytest.skip("the Claude Code CLI is not available", allow_module_level=True)


@pytest.fixture
def cc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_api: FakeAnthropicServer, home: Path) -> Iterator[FakeAnthropicServer]:
    """Claude Code offline against the fake server, with a private HOME and config dir."""
    for sub in ("cc-home", "cc-config"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "cc-home"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc-config"))
    monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
    monkeypatch.delenv("AGENT_MAGIC_CLAUDE_CODE_CLI", raising=False)
    yield fake_api


def notebook(path: Path) -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": "x = 1"},
            {"cell_type": "markdown", "id": "c2", "metadata": {}, "source": "# Title"},
            {"cell_type": "code", "execution_count": None, "id": "c3", "metadata": {}, "outputs": [], "source": "y = 2"},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def transcript(home: Path, sid: str) -> list[dict[str, Any]]:
    """The session's header and lines as read back (a fork's inherited lines first)."""
    return SessionStore(home).read_entries(sid)


def checkpoint_records(home: Path, sid: str) -> list[dict[str, Any]]:
    path = home / "sessions" / sid / "checkpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def opts(workspace: Path, **kw: Any) -> AgentOptions:
    kw.setdefault("permission_mode", "acceptEdits")
    return AgentOptions(cwd=workspace, provider="claude-code", **kw)


async def turn(client: AgentClient, prompt: str) -> list[am.Message]:
    await client.query(prompt)
    return [m async for m in client.receive_response()]


def tool_results(msgs: list[am.Message]) -> list[UserMessage]:
    return [m for m in msgs if isinstance(m, UserMessage) and not m.is_prompt]


def result_text(m: UserMessage) -> str:
    assert isinstance(m.content, list) and isinstance(m.content[0], ToolResultBlock)
    return m.content[0].text


# --------------------------------------------------------------------------- a turn, mirrored


def test_write_turn_is_mirrored_into_our_transcript(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    target = workspace / "notes.txt"
    cc.add(tool_use("Write", {"file_path": str(target), "content": "hello\n"}, text="Writing it."), text("Wrote notes.txt."))

    async def go() -> tuple[list[am.Message], str]:
        async with AgentClient(opts(workspace)) as client:
            msgs = await turn(client, "write the notes")
            assert client.session_id is not None
            return msgs, client.session_id

    msgs, sid = anyio.run(go)
    assert target.read_text() == "hello\n"
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success" and res.result == "Wrote notes.txt."
    assert res.num_turns == 2 and res.usage and res.usage["input_tokens"] > 0 and res.total_cost_usd is not None
    init = msgs[0]
    assert isinstance(init, SystemMessage) and init.data["provider"] == "claude-code"

    # Claude Code sends text and tool call as two messages; they are one response in our transcript.
    answers = [m for m in msgs if isinstance(m, AssistantMessage)]
    assert [a.text for a in answers] == ["Writing it.", "Wrote notes.txt."]
    assert answers[0].tool_uses[0].name == "Write"
    (result,) = tool_results(msgs)
    assert result.tool_use_result is not None and result.tool_use_result["tool_name"] == "Write"
    assert result.tool_use_result["summary"] == "created notes.txt" and "+hello" in result.tool_use_result["data"]["diff"]
    cp = next(m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "checkpoint")
    assert cp.data["files"] == ["notes.txt"]

    lines = transcript(home, sid)
    kinds = [(e["type"], e.get("is_prompt")) for e in lines]
    assert kinds == [("session", None), ("user", True), ("engine", None), ("assistant", None), ("user", False), ("assistant", None), ("result", None)]
    engine = lines[2]
    assert engine["engine"] == "claude-code" and engine["for_session"] == sid and len(engine["engine_session_id"]) == 36
    assert lines[3]["message"]["content"][1]["name"] == "Write" and lines[3]["engine_uuid"]
    assert lines[4]["message"]["content"][0]["type"] == "tool_result" and lines[4]["tool_use_result"]["tool_name"] == "Write"
    # The answer is stored once, in the last assistant line; the result line keeps the totals.
    assert lines[-2]["message"]["content"][0]["text"] == "Wrote notes.txt." and lines[-2]["message"]["model"] == "claude-opus-5-5"
    assert lines[-1]["subtype"] == "success" and lines[-1]["checkpoint"] == lines[1]["uuid"] and "result" not in lines[-1]
    # The request went to the fake API with only agent-magic's tool set.
    body = cc.message_requests[0].body
    assert body is not None and cc.message_requests[0].last_prompt.endswith("write the notes")
    assert {t["name"] for t in body["tools"]} >= {"Read", "Write", "Edit", "NotebookEdit", "Glob", "Grep", "Bash"}
    assert not {"Agent", "WebFetch", "WebSearch", "Skill"} & {t["name"] for t in body["tools"]}
    # Claude Code's own checkpointing stays off.
    assert not (Path(str(cc_config(home))) / "file-history").exists()


def cc_config(home: Path) -> Path:
    return home.parent / "cc-config"


# --------------------------------------------------------------------------- checkpoints


def test_checkpoints_from_hooks_rewind_files_cells_and_bash(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "data.csv").write_text("a,b\n1,2\n")
    nb_path = workspace / "analysis.ipynb"
    notebook(nb_path)
    before = tree_snapshot(workspace)
    nb = str(nb_path)
    cc.add(
        tool_use("Write", {"file_path": str(workspace / "out" / "new.py"), "content": "print('hi')\n"}),
        tool_use("Read", {"file_path": str(workspace / "data.csv")}),
        tool_use("Edit", {"file_path": str(workspace / "data.csv"), "old_string": "1,2", "new_string": "10,20"}),
        tool_use("Read", {"file_path": nb}),
        tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "c1", "new_source": "x = 100"}),
        tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "c1", "new_source": "z = x * 2", "edit_mode": "insert", "cell_type": "code"}),
        tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "c2", "new_source": "", "edit_mode": "delete"}),
        tool_use("Bash", {"command": "echo made > bash.txt && mkdir -p built && echo x >> data.csv"}),
        text("All done."),
    )

    async def go() -> None:
        async with AgentClient(opts(workspace, allowed_tools=["Bash"])) as client:
            msgs = await turn(client, "change everything")
            res = msgs[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success", res
            assert not [m for m in tool_results(msgs) if m.tool_use_result and m.tool_use_result["is_error"]]
            sid = client.session_id
            assert sid is not None

            assert (workspace / "out" / "new.py").exists() and (workspace / "bash.txt").exists()
            cells = json.loads(nb_path.read_text())["cells"]
            assert [c["source"] for c in cells] == ["x = 100", "z = x * 2", "y = 2"]
            inserted = cells[1]["id"]
            records = checkpoint_records(home, sid)
            cell_ops = [(r["op"], r["cell_id"]) for r in records if r["r"] == "cells"]
            assert cell_ops == [("replace", "c1"), ("insert", inserted), ("delete", "c2")]
            assert [r["tool"] for r in records if r["r"] == "file"] == ["Write", "Edit"]
            assert [r["r"] for r in records if r["r"].startswith("bash")] == ["bash_start", "bash"]

            # The person edits a cell the agent did not touch: cell-level rewind keeps it.
            nbj = json.loads(nb_path.read_text())
            nbj["cells"][2]["source"] = "y = 3  # mine"
            nb_path.write_text(json.dumps(nbj, indent=1))
            assert res.checkpoint_id is not None
            r = await client.rewind_files(res.checkpoint_id)
            assert r.conflicts == [] and r.ok, r.summary()
            after = tree_snapshot(workspace)
            mine = json.loads(after.pop("analysis.ipynb") or b"")
            expected = dict(before)
            want = json.loads(expected.pop("analysis.ipynb") or b"")
            assert after == expected  # new.py, out/, bash.txt, built/ gone; data.csv restored
            want["cells"][2]["source"] = "y = 3  # mine"
            assert [(c["id"], "".join(c["source"])) for c in mine["cells"]] == [(c["id"], c["source"]) for c in want["cells"]]

    anyio.run(go)


def test_writes_that_differ_from_the_backup_are_corrected(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    """The hook records what a call will write; when Claude Code writes something else (or
    nothing), the PostToolUse check records what is really there, so a rewind sees no conflict."""
    quotes = workspace / "quotes.txt"
    quotes.write_text("say \u201chello\u201d\n")
    plain = workspace / "plain.txt"
    plain.write_text("a file, not a folder\n")
    before = tree_snapshot(workspace)
    cc.add(
        tool_use("Read", {"file_path": str(quotes)}),
        # Claude Code matches straight quotes to curly ones; agent-magic's prediction does not.
        tool_use("Edit", {"file_path": str(quotes), "old_string": 'say "hello"', "new_string": 'say "bye"'}),
        # Fails when it runs (a file where a folder should be): nothing is written.
        tool_use("Write", {"file_path": str(plain / "inner.txt"), "content": "x"}),
        text("ok"),
    )

    async def go() -> None:
        async with AgentClient(opts(workspace)) as client:
            msgs = await turn(client, "edit")
            res = msgs[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success"
            assert "bye" in quotes.read_text()
            sid = client.session_id
            assert sid is not None
            files = [(r["path"], r["tool"]) for r in checkpoint_records(home, sid) if r["r"] == "file"]
            assert files.count(("quotes.txt", "Edit")) == 2  # the backup, then the correction
            assert res.checkpoint_id
            r = await client.rewind_files(res.checkpoint_id)
            assert r.conflicts == [], r.summary()
            assert tree_snapshot(workspace) == before

    anyio.run(go)


# --------------------------------------------------------------------------- permissions


def test_permissions_follow_our_rules_and_callback(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    asked: list[tuple[str, dict[str, Any], str | None]] = []

    async def approve(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> PermissionResultAllow | PermissionResultDeny:
        asked.append((name, inp, ctx.decision_reason))
        if "deny-me" in str(inp.get("command", "")):
            return PermissionResultDeny(message="Not that one.")
        return PermissionResultAllow(updated_input={"command": "echo approved > approved.txt"})

    cc.add(
        tool_use("Write", {"file_path": str(workspace / "secret.env"), "content": "KEY=1"}),
        tool_use("Bash", {"command": "echo deny-me > nope.txt"}),
        tool_use("Bash", {"command": "echo original > original.txt"}),
        text("done"),
    )

    async def go() -> None:
        o = opts(workspace, permission_mode="default", disallowed_tools=["Write(*.env)"], can_use_tool=approve)
        async with AgentClient(o) as client:
            msgs = await turn(client, "try things")
            res = msgs[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success"
            denied, refused, allowed = tool_results(msgs)
            assert "Permission denied: denied by the rule Write(*.env)" in result_text(denied)
            assert result_text(refused) == "Not that one."
            assert allowed.tool_use_result is not None and not allowed.tool_use_result["is_error"]
            assert not (workspace / "secret.env").exists() and not (workspace / "nope.txt").exists()
            assert not (workspace / "original.txt").exists() and (workspace / "approved.txt").read_text() == "approved\n"
            assert [a[0] for a in asked] == ["Bash", "Bash"] and asked[0][2] == "Bash needs approval in default mode"
            sid = client.session_id
            assert sid is not None
            # Only the approved call was checkpointed, and it rewinds.
            assert [r["r"] for r in checkpoint_records(home, sid) if r["r"] != "turn"] == ["bash_start", "bash"]
            assert res.checkpoint_id
            await client.rewind_files(res.checkpoint_id)
            assert not (workspace / "approved.txt").exists()

    anyio.run(go)


def test_plan_mode_denies_edits(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    cc.add(tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "x"}), text("ok"))

    async def go() -> None:
        async with AgentClient(opts(workspace, permission_mode="plan")) as client:
            msgs = await turn(client, "plan it")
            (r,) = tool_results(msgs)
            assert "plan mode allows read-only tools only" in result_text(r)

    anyio.run(go)
    assert not (workspace / "a.txt").exists()


def test_the_persons_hooks_and_read_rules_apply(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "keys.secret").write_text("s3cret")

    async def no_shell(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"decision": "block", "reason": "no shell today"}

    async def after_write(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        assert inp["tool_name"] == "Write" and inp["tool_response"]
        return {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "remember to test"}}

    async def on_prompt(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": "ctx-from-hook"}}

    hooks = {
        "PreToolUse": [am.HookMatcher(matcher="Bash", hooks=[no_shell])],
        "PostToolUse": [am.HookMatcher(matcher="Write", hooks=[after_write])],
        "UserPromptSubmit": [am.HookMatcher(hooks=[on_prompt])],
    }
    cc.add(
        tool_use("Read", {"file_path": str(workspace / "keys.secret")}),
        tool_use("Bash", {"command": "echo hi > x.txt"}),
        tool_use("Write", {"file_path": str(workspace / "ok.txt"), "content": "ok"}),
        text("done"),
    )

    async def go() -> list[am.Message]:
        async with AgentClient(opts(workspace, hooks=hooks, disallowed_tools=["Read(*.secret)"], allowed_tools=["Bash"])) as client:
            return await turn(client, "go")

    msgs = anyio.run(go)
    read, bash, write = tool_results(msgs)
    assert write.tool_use_result is not None and not write.tool_use_result["is_error"]
    assert "Permission denied: denied by the rule Read(*.secret)" in result_text(read) and "s3cret" not in result_text(read)
    assert result_text(bash) == "Blocked by a hook: no shell today"
    assert not (workspace / "x.txt").exists() and (workspace / "ok.txt").read_text() == "ok"
    bodies = [json.dumps(r.body) for r in cc.message_requests]
    assert "ctx-from-hook" in bodies[0] and "remember to test" in bodies[3]


# --------------------------------------------------------------------------- interrupt


def test_interrupt_mid_answer_and_mid_tool(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    cc.add(message(text_block("a long answer " * 40), delay=0.03, chunk_size=4))

    async def go() -> str:
        with anyio.fail_after(120):
            return await interrupted_twice()

    async def interrupted_twice() -> str:
        async with AgentClient(opts(workspace, include_partial_messages=True, allowed_tools=["Bash"])) as client:
            await client.query("talk for a while")
            seen: list[am.Message] = []
            async for m in client.receive_response():
                seen.append(m)
                if isinstance(m, am.StreamEvent) and m.text_delta and sum(1 for s in seen if isinstance(s, am.StreamEvent)) == 10:
                    await client.interrupt()
            res = seen[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "interrupted"

            cc.add(tool_use("Bash", {"command": "echo started > started.txt; sleep 30"}))
            await client.query("run something slow")
            async with anyio.create_task_group() as tg:
                async def stop() -> None:
                    with anyio.fail_after(30):
                        # Another process (Claude Code's shell) creates it: poll.
                        while not (workspace / "started.txt").exists():  # noqa: ASYNC110
                            await anyio.sleep(0.05)
                    await anyio.sleep(0.2)
                    await client.interrupt()

                tg.start_soon(stop)
                msgs = [m async for m in client.receive_response()]
            res = msgs[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "interrupted"
            (r,) = tool_results(msgs)
            assert r.tool_use_result is not None and r.tool_use_result["is_error"]

            # The session goes on.
            cc.add(text("still here"))
            res = (await turn(client, "hello again"))[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success" and res.result == "still here"
            assert client.session_id is not None
            return client.session_id

    sid = anyio.run(go)
    lines = transcript(home, sid)
    results = [e["subtype"] for e in lines if e["type"] == "result"]
    assert results == ["interrupted", "interrupted", "success"]
    # Every tool call has a result line; the Bash record was finished.
    uses = {b["id"] for e in lines if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"}
    answered = {b["tool_use_id"] for e in lines if e["type"] == "user" for b in (e["message"]["content"] if isinstance(e["message"]["content"], list) else []) if b.get("type") == "tool_result"}
    assert uses and uses == answered
    partial = [e for e in lines if e["type"] == "assistant" and e.get("interrupted")]
    assert partial and partial[0]["message"]["content"][0]["text"].startswith("a long answer")
    bash = [r for r in checkpoint_records(home, sid) if r["r"] == "bash"]
    assert len(bash) == 1 and any(c["path"] == "started.txt" for c in bash[0]["changes"])


def test_max_turns_and_model_changes(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    cc.add(tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "a"}), text("never sent"))

    async def go() -> None:
        async with AgentClient(opts(workspace, max_turns=1)) as client:
            res = (await turn(client, "loop"))[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "error_max_turns"
            assert res.result == "Stopped after 1 model responses (max_turns=1)."
            # Settings Claude Code takes at start reconnect it (same session); the model switches live.
            client.update_options(max_turns=None, model="claude-sonnet-5-5")
            cc.add(text("fine"))
            res = (await turn(client, "again"))[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success", res
            assert client.session_id is not None
            engines = [e for e in transcript(home, client.session_id) if e["type"] == "engine"]
            assert len(engines) == 1

    anyio.run(go)
    bodies = [r.body for r in cc.message_requests]
    assert bodies[0] is not None and bodies[0]["model"] == "claude-opus-5-5"  # Claude Code's own default
    assert bodies[-1] is not None and bodies[-1]["model"] == "claude-sonnet-5-5"
    assert "loop" in json.dumps(bodies[-1]["messages"])


# --------------------------------------------------------------------------- resume and fork


def test_resume_and_fork_map_onto_claude_codes(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    async def one(prompt: str, reply: str, **kw: Any) -> tuple[str, ResultMessage]:
        cc.add(text(reply))
        async with AgentClient(opts(workspace, **kw)) as client:
            res = (await turn(client, prompt))[-1]
            assert isinstance(res, ResultMessage) and res.subtype == "success", res
            assert client.session_id is not None
            return client.session_id, res

    sid, _ = anyio.run(one, "remember the word banana", "ok")
    engine_sid = transcript(home, sid)[2]["engine_session_id"]

    sid2, _ = anyio.run(lambda: one("what was the word?", "banana", resume=sid))
    assert sid2 == sid
    body = cc.message_requests[-1].body
    assert body is not None and "remember the word banana" in json.dumps(body["messages"])
    engines = [e for e in transcript(home, sid) if e["type"] == "engine"]
    assert [e["engine_session_id"] for e in engines] == [engine_sid]  # the same Claude Code session

    fork, _ = anyio.run(lambda: one("and in the fork?", "still banana", resume=sid, fork_session=True))
    assert fork != sid
    body = cc.message_requests[-1].body
    assert body is not None and "what was the word?" in json.dumps(body["messages"])
    fork_engines = [e for e in transcript(home, fork) if e["type"] == "engine"]
    assert fork_engines[0]["engine_session_id"] == engine_sid and fork_engines[-1]["for_session"] == fork
    assert fork_engines[-1]["engine_session_id"] != engine_sid  # Claude Code forked too
    assert sum(1 for e in transcript(home, sid) if e.get("is_prompt")) == 2  # the original is untouched

    # Resuming the fork continues the fork's Claude Code session (no second fork).
    anyio.run(lambda: one("once more", "yes", resume=fork))
    assert [e["engine_session_id"] for e in transcript(home, fork) if e["type"] == "engine"] == [
        e["engine_session_id"] for e in fork_engines
    ]


def test_a_lost_claude_code_session_starts_over_with_our_history(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    cc.add(text("noted"))
    sid = anyio.run(lambda: _first(workspace, "the code is 4711"))
    # Claude Code forgot it (another machine, cleaned up): our transcript still has it.
    lines = transcript(home, sid)
    lines[2]["engine_session_id"] = "00000000-0000-4000-8000-000000000000"
    (home / "sessions" / sid / "transcript.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    cc.add(text("4711"))

    async def go() -> list[am.Message]:
        async with AgentClient(opts(workspace, resume=sid)) as client:
            return await turn(client, "what is the code?")

    msgs = anyio.run(go)
    warn = [m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "warning"]
    assert warn and "no longer has its copy" in warn[0].data["message"]
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success"
    body = cc.message_requests[-1].body
    assert body is not None and "User: the code is 4711" in json.dumps(body["messages"])


async def _first(workspace: Path, prompt: str) -> str:
    async with AgentClient(opts(workspace)) as client:
        await turn(client, prompt)
        assert client.session_id is not None
        return client.session_id


# --------------------------------------------------------------------------- kernel tools over MCP


class _Echo(Tool):
    name = "Echo"
    kind = "read"
    description = "Echo the text back, shouting."
    input_schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(str(input["text"]).upper(), summary="echoed")

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Path]:
        return []


def test_extra_tools_are_offered_through_mcp(cc: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    cc.add(tool_use("mcp__agent_magic__Echo", {"text": "hi there"}), text("It said HI THERE."))

    async def go() -> list[am.Message]:
        async with AgentClient(opts(workspace, extra_tools=[_Echo()])) as client:
            return await turn(client, "echo hi there")

    msgs = anyio.run(go)
    (r,) = tool_results(msgs)
    assert result_text(r) == "HI THERE"
    use = next(m for m in msgs if isinstance(m, AssistantMessage) and m.tool_uses)
    assert use.tool_uses[0].name == "Echo"  # named back for our transcript
    body = cc.message_requests[0].body
    assert body is not None and "mcp__agent_magic__Echo" in {t["name"] for t in body["tools"]}


# --------------------------------------------------------------------------- setup and API errors


def test_missing_cli_is_one_clear_line(cc: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    monkeypatch.setenv("AGENT_MAGIC_CLAUDE_CODE_CLI", str(workspace / "no-such-claude"))

    async def go() -> None:
        async with AgentClient(opts(workspace)):
            pass

    with pytest.raises(ConfigurationError, match=r"AGENT_MAGIC_CLAUDE_CODE_CLI=.* is not an executable file\.$"):
        anyio.run(go)


def test_not_logged_in_is_one_clear_line(cc: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    async def go() -> None:
        async with AgentClient(opts(workspace)):
            pass

    with pytest.raises(MissingAPIKeyError, match=r"^Claude Code is not logged in: run `claude`"):
        anyio.run(go)


def test_claude_code_reporting_not_logged_in(cc: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch, workspace: Path, tmp_path: Path) -> None:
    # A config dir that looks used, but no credentials at all: Claude Code itself says so.
    (tmp_path / "cc-config" / ".claude.json").write_text("{}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    res = anyio.run(lambda: _one_result(workspace, "hi"))
    assert res.subtype == "error_during_execution" and res.is_error
    assert res.result is not None and res.result.startswith("Claude Code is not logged in")
    assert not cc.message_requests


def test_api_errors_become_one_line_results(cc: FakeAnthropicServer, workspace: Path) -> None:
    cc.set_default(error(401, "authentication_error", "invalid x-api-key"))
    res = anyio.run(lambda: _one_result(workspace, "hi"))
    assert res.subtype == "error_during_execution" and res.api_error_status == 401
    assert res.result is not None and res.result.startswith("Claude Code's credentials were rejected") and "\n" not in res.result


async def _one_result(workspace: Path, prompt: str) -> ResultMessage:
    async with AgentClient(opts(workspace, persist_session=False)) as client:
        res = (await turn(client, prompt))[-1]
        assert isinstance(res, ResultMessage)
        return res
