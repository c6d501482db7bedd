"""Permissions, hooks and interrupt, through the real loop against the fake Messages API server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import (
    AgentClient,
    AgentOptions,
    HookMatcher,
    PermissionResultAllow,
    PermissionResultDeny,
    PermissionUpdate,
    ResultMessage,
    SystemMessage,
    ToolPermissionContext,
)
from agent_magic._permissions import Rule
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .conftest import result_of, run_query


def tool_result(server: FakeAnthropicServer, request: int = 1) -> dict[str, Any]:
    return server.message_requests[request].tool_results[0]


# -- modes ---------------------------------------------------------------------

CALLS = {
    "Read": ("Read", {"file_path": "data.txt"}),
    "Write": ("Write", {"file_path": "new.txt", "content": "x"}),
    "Bash": ("Bash", {"command": "echo hi > bash.txt"}),
}

#: mode -> tools that run without asking (everything else is denied: nobody can approve here)
EXPECTED = {
    "default": {"Read"},
    "acceptEdits": {"Read", "Write"},
    "bypassPermissions": {"Read", "Write", "Bash"},
    "plan": {"Read"},
}


@pytest.mark.parametrize("mode", list(EXPECTED))
@pytest.mark.parametrize("tool", list(CALLS))
def test_permission_modes(fake_api: FakeAnthropicServer, home: Path, workspace: Path, mode: str, tool: str) -> None:
    (workspace / "data.txt").write_text("data")
    name, inp = CALLS[tool]
    fake_api.add(tool_use(name, inp), text("ok"))
    result_of(run_query("go", cwd=workspace, permission_mode=mode))
    res = tool_result(fake_api)
    allowed = tool in EXPECTED[mode]
    assert bool(res.get("is_error")) is not allowed, res
    if not allowed:
        expected = "plan mode" if mode == "plan" and tool != "Read" else "no one is here to approve"
        assert expected in res["content"]
    if tool == "Write":
        assert (workspace / "new.txt").exists() is allowed
    if tool == "Bash":
        assert (workspace / "bash.txt").exists() is allowed


# -- rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "denied", "command", "runs"),
    [
        (["Bash(echo hi > bash.txt)"], [], "echo hi > bash.txt", True),
        (["Bash(echo *)"], [], "echo hi > bash.txt", True),
        (["Bash(echo:*)"], [], "echo hi > bash.txt", True),
        (["Bash(git status)"], [], "echo hi > bash.txt", False),
        (["Bash"], [], "echo hi > bash.txt", True),
        (["Bash"], ["Bash(echo *)"], "echo hi > bash.txt", False),  # deny wins
        ([], ["Bash"], "echo hi > bash.txt", False),
    ],
)
def test_allow_and_deny_rules(fake_api: FakeAnthropicServer, home: Path, workspace: Path, allowed: list[str], denied: list[str], command: str, runs: bool) -> None:
    fake_api.add(tool_use("Bash", {"command": command}), text("ok"))
    msgs = run_query("go", cwd=workspace, allowed_tools=allowed, disallowed_tools=denied)
    result_of(msgs)
    assert (workspace / "bash.txt").exists() is runs
    if denied == ["Bash"]:
        # a bare denied tool is not even offered to the model
        assert "Bash" not in [t["name"] for t in fake_api.message_requests[0].body["tools"]]
        assert "no tool named 'Bash'" in tool_result(fake_api)["content"]
    elif not runs and denied:
        assert "denied by the rule Bash(echo *)" in tool_result(fake_api)["content"]


def test_edit_path_rules(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "src").mkdir()
    fake_api.add(
        tool_use("Write", {"file_path": "src/a.py", "content": "a"}),
        tool_use("Write", {"file_path": "docs/b.md", "content": "b"}),
        text("ok"),
    )
    result_of(run_query("go", cwd=workspace, allowed_tools=["Write(src/**)"]))
    assert (workspace / "src/a.py").exists()
    assert not (workspace / "docs/b.md").exists()


@pytest.mark.parametrize("bad", ["", "Bash(", "(x)", "1abc", "Bash)("])
def test_invalid_rules(bad: str) -> None:
    from agent_magic import ConfigurationError

    with pytest.raises(ConfigurationError, match="Invalid permission rule"):
        Rule.parse(bad)


# -- paths escaping the workspace ----------------------------------------------------


def test_paths_outside_workspace_need_permission(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    fake_api.add(
        tool_use("Write", {"file_path": "../outside/dotdot.txt", "content": "x"}),
        tool_use("Write", {"file_path": "link/viasymlink.txt", "content": "x"}),
        tool_use("Write", {"file_path": str(outside / "absolute.txt"), "content": "x"}),
        tool_use("Write", {"file_path": "inside.txt", "content": "x"}),
        text("ok"),
    )
    result_of(run_query("go", cwd=workspace, permission_mode="acceptEdits"))
    assert list(outside.iterdir()) == []
    assert (workspace / "inside.txt").exists()
    for i in (1, 2, 3):
        res = tool_result(fake_api, i)
        assert res["is_error"] and "outside the workspace" in res["content"]


def test_add_dirs_extend_the_workspace(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    fake_api.add(tool_use("Write", {"file_path": str(extra / "ok.txt"), "content": "x"}), text("ok"))
    result_of(run_query("go", cwd=workspace, permission_mode="acceptEdits", add_dirs=[extra]))
    assert (extra / "ok.txt").exists()


def test_read_outside_workspace_asks(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("classified")
    asked: list[tuple[str, dict[str, Any]]] = []

    async def decide(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> Any:
        asked.append((name, inp))
        return PermissionResultDeny(message="Not that file.") if len(asked) == 1 else PermissionResultAllow()

    read = tool_use("Read", {"file_path": str(secret)})
    fake_api.add(read, tool_use("Read", {"file_path": str(secret)}), text("ok"))
    result_of(run_query("go", cwd=workspace, can_use_tool=decide))
    # Both reads were put to the person (not decided by a rule), and their answers obeyed.
    assert asked == [("Read", {"file_path": str(secret)})] * 2
    refused, allowed = tool_result(fake_api, 1), tool_result(fake_api, 2)
    assert refused["is_error"] and "Not that file." in refused["content"] and "classified" not in refused["content"]
    assert not allowed.get("is_error") and "classified" in allowed["content"]
    # Inside the workspace nobody is asked.
    (workspace / "mine.txt").write_text("mine")
    fake_api.add(tool_use("Read", {"file_path": str(workspace / "mine.txt")}), text("ok"))
    result_of(run_query("again", cwd=workspace, can_use_tool=decide))
    assert len(asked) == 2 and "mine" in tool_result(fake_api, 4)["content"]


# -- the can_use_tool callback --------------------------------------------------------


def test_callback_allow_deny_modify_and_always(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    seen: list[tuple[str, dict[str, Any], ToolPermissionContext]] = []

    async def decide(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> Any:
        seen.append((name, inp, ctx))
        cmd = inp.get("command", "")
        if "deny-me" in cmd:
            return PermissionResultDeny(message="Not that one.")
        if "rewrite-me" in cmd:
            return PermissionResultAllow(updated_input={"command": "echo rewritten > rewritten.txt"})
        if "always" in cmd:
            return PermissionResultAllow(updated_permissions=[PermissionUpdate(["Bash(echo:*)"])])
        return PermissionResultAllow()

    fake_api.add(
        tool_use("Bash", {"command": "echo deny-me > denied.txt"}),
        tool_use("Bash", {"command": "echo rewrite-me > original.txt"}),
        tool_use("Bash", {"command": "echo always > always.txt"}),
        tool_use("Bash", {"command": "echo later > later.txt"}),  # allowed by the rule just added: no callback
        text("done"),
    )
    result_of(run_query("go", cwd=workspace, can_use_tool=decide))
    assert not (workspace / "denied.txt").exists()
    assert tool_result(fake_api, 1)["content"] == "Not that one."
    assert (workspace / "rewritten.txt").exists() and not (workspace / "original.txt").exists()
    assert (workspace / "always.txt").exists() and (workspace / "later.txt").exists()
    assert len(seen) == 3
    ctx = seen[0][2]
    assert ctx.tool_use_id and ctx.preview == {"kind": "command", "command": "echo deny-me > denied.txt"}
    assert ctx.suggestions[0].rules == ["Bash(echo:*)"]
    assert "needs approval" in (ctx.decision_reason or "")


def test_callback_deny_with_interrupt_ends_turn(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    async def stop(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> Any:
        return PermissionResultDeny(message="Stop everything.", interrupt=True)

    fake_api.add(tool_use("Bash", {"command": "echo a"}), text("never"))
    res = result_of(run_query("go", cwd=workspace, can_use_tool=stop))
    assert res.subtype == "interrupted" and len(fake_api.message_requests) == 1


def test_failing_callback_denies_safely(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    async def broken(name: str, inp: dict[str, Any], ctx: ToolPermissionContext) -> Any:
        raise RuntimeError("boom")

    fake_api.add(tool_use("Bash", {"command": "touch x.txt"}), text("ok"))
    res = result_of(run_query("go", cwd=workspace, can_use_tool=broken))
    assert res.subtype == "success" and not (workspace / "x.txt").exists()
    assert "callback failed (RuntimeError: boom)" in tool_result(fake_api)["content"]


# -- hooks -------------------------------------------------------------------------


def test_hooks_deny_modify_observe_and_report_failures(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    events: list[str] = []

    async def deny_rm(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        events.append(f"pre:{inp['tool_name']}")
        if "rm " in inp["tool_input"].get("command", ""):
            return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": "no rm"}}
        return {}

    async def redirect(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        path = inp["tool_input"]["file_path"]
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "updatedInput": {**inp["tool_input"], "file_path": "sandbox/" + path}}}

    async def post(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        events.append(f"post:{inp['tool_name']}:{inp['tool_response']['is_error']}")
        return {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "Remember the style guide."}}

    async def on_prompt(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        events.append(f"prompt:{inp['prompt']}")
        return {"systemMessage": "prompt seen"}

    async def broken(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("hook bug")

    async def on_stop(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        events.append("stop")
        return {}

    hooks = {
        "PreToolUse": [HookMatcher("Bash", [deny_rm]), HookMatcher("Write|Edit", [redirect, broken])],
        "PostToolUse": [HookMatcher(None, [post])],
        "UserPromptSubmit": [HookMatcher(None, [on_prompt])],
        "Stop": [HookMatcher(None, [on_stop])],
    }
    (workspace / "sandbox").mkdir()
    fake_api.add(
        tool_use("Bash", {"command": "rm -rf data"}),
        tool_use("Write", {"file_path": "out.txt", "content": "x"}),
        text("done"),
    )
    msgs = run_query("do it", cwd=workspace, hooks=hooks, permission_mode="bypassPermissions")
    assert result_of(msgs).subtype == "success"
    assert tool_result(fake_api, 1)["content"] == "Blocked by a hook: no rm"
    assert (workspace / "sandbox/out.txt").exists() and not (workspace / "out.txt").exists()
    assert "Remember the style guide." in tool_result(fake_api, 2)["content"]
    assert events == ["prompt:do it", "pre:Bash", "post:Write:False", "stop"]
    notes = [m for m in msgs if isinstance(m, SystemMessage) and m.subtype in ("hook_error", "hook")]
    assert any(m.subtype == "hook_error" and "hook bug" in m.data["message"] for m in notes)
    assert any(m.subtype == "hook" and m.data["message"] == "prompt seen" for m in notes)


def test_hooks_that_say_nothing_add_nothing(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # Blank context from UserPromptSubmit and a blank reason to go on from Stop: sent to the
    # model, the API would refuse the whitespace-only text (the strict fake API found it).
    async def on_prompt(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"hookSpecificOutput": {"hookEventName": "UserPromptSubmit", "additionalContext": " \n "}}

    async def on_stop(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"decision": "block", "reason": "  "}

    hooks = {"UserPromptSubmit": [HookMatcher(None, [on_prompt])], "Stop": [HookMatcher(None, [on_stop])]}
    fake_api.add(text("done"), text("again"))
    first = result_of(run_query("go", cwd=workspace, hooks=hooks))
    assert first.subtype == "success" and first.result == "done"
    assert result_of(run_query("more", cwd=workspace, hooks=hooks, resume=first.session_id)).subtype == "success"
    assert all(r.refused is None for r in fake_api.requests) and len(fake_api.requests) == 2
    texts = [b["text"] for m in fake_api.requests[-1].body["messages"] for b in m["content"] if b["type"] == "text"]
    assert texts == ["go", "done", "more"]


def test_prompt_hook_can_block(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    async def block(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        return {"decision": "block", "reason": "no secrets in prompts"}

    res = result_of(run_query("my password is hunter2", cwd=workspace, hooks={"UserPromptSubmit": [HookMatcher(None, [block])]}))
    assert res.is_error and "no secrets in prompts" in (res.result or "")
    assert fake_api.requests == []


# -- interrupt -----------------------------------------------------------------------


def _live_processes(argv: list[str]) -> list[int]:
    """Pids of live (not zombie) processes with exactly this command line."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")[:-1]
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if [c.decode(errors="replace") for c in cmd] == argv and state != "Z":
            out.append(int(d.name))
    return out


def test_interrupt_during_30s_bash(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "sleep 30.123"}), text("never"))

    async def go() -> tuple[float, ResultMessage, str]:
        async with AgentClient(AgentOptions(cwd=workspace, permission_mode="bypassPermissions")) as client:
            await client.query("sleep")
            result: ResultMessage | None = None
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    nonlocal result
                    async for m in client.receive_response():
                        if isinstance(m, ResultMessage):
                            result = m

                tg.start_soon(read)
                await anyio.sleep(1.0)
                t0 = time.monotonic()
                await client.interrupt()
            elapsed = time.monotonic() - t0
            assert result is not None and client.session_id is not None
            return elapsed, result, client.session_id

    elapsed, result, sid = anyio.run(go)
    assert elapsed < 10.0  # generous: the command alone runs for 30 s
    assert result.subtype == "interrupted" and result.is_error
    # no sleep left behind, transcript consistent, resumable at once
    assert _live_processes(["sleep", "30.123"]) == []
    fake_api.reset()
    fake_api.add(text("resumed"))
    assert result_of(run_query("again", resume=sid)).subtype == "success"
    msgs = fake_api.message_requests[-1].body["messages"]
    results = [b for m in msgs for b in (m["content"] if isinstance(m["content"], list) else []) if b.get("type") == "tool_result"]
    assert results and results[0]["is_error"] and "Interrupted" in results[0]["content"]


def test_interrupt_mid_stream_keeps_partial_text(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # The whole answer would stream for about 30 s: the interrupt's bound is generous and still
    # far from what waiting for the end would take.
    full = "partial " * 2000
    fake_api.add(text(full, chunk_size=5, delay=0.01))

    async def go() -> tuple[float, ResultMessage, str]:
        async with AgentClient(AgentOptions(cwd=workspace, include_partial_messages=True)) as client:
            await client.query("talk")
            result: ResultMessage | None = None
            n = 0
            t0 = 0.0
            async for m in client.receive_response():
                n += 1
                if n == 30:
                    t0 = time.monotonic()
                    await client.interrupt()
                if isinstance(m, ResultMessage):
                    result = m
            assert result is not None and client.session_id is not None
            return time.monotonic() - t0, result, client.session_id

    elapsed, result, sid = anyio.run(go)
    assert elapsed < 10.0 and result.subtype == "interrupted"
    import agent_magic as am

    msgs = am.get_session_messages(sid)
    kept = msgs[-1].message["content"][0]["text"]
    assert msgs[-1].type == "assistant" and kept.startswith("partial") and len(kept) < len(full.strip())
