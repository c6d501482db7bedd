"""Sessions that outlive the model's context window (issue #15), through the Python API.

One session is driven well past a small context window on the fake APIs (real
HTTP, windows enforced with the API's own 400): no turn fails, no request
passes the window, each compaction is one message, checkpoints from before the
first compaction still rewind files and cells exactly, and a fork before the
first boundary holds the whole history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest

import agent_magic as am
from agent_magic import AgentClient, AgentOptions, ResultMessage, SystemMessage
from agent_magic.store.local import SessionStore
from agent_magic.store.transcript import SUMMARY_INTRO
from agent_magic.testing import FakeAnthropicServer, FakeOpenAIServer
from agent_magic.testing._replies import error, message, text, tool_block, tool_use

from .conftest import tree_snapshot

DATA_CHARS = 5_000


def _workspace(ws: Path, n: int) -> None:
    for i in range(n):
        rows = [f"row {i}-{k}: " + "abcdefghij" * 6 for k in range(DATA_CHARS // 70)]
        (ws / f"data{i}.csv").write_text("\n".join(rows))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x{k} = 0", id=f"c{k}") for k in range(3)]
    nbformat.write(nb, ws / "analysis.ipynb")


def _script(server: Any, n: int) -> None:
    """Turn i reads a data file and the notebook, changes a cell and a file, then answers."""
    for i in range(n):
        server.on_prompt(
            f"step {i}: look at data{i}.csv",
            message(tool_block("Read", {"file_path": f"data{i}.csv"}), tool_block("Read", {"file_path": "analysis.ipynb"})),
            message(
                tool_block("NotebookEdit", {"notebook_path": "analysis.ipynb", "cell_id": f"c{i % 3}", "new_source": f"x{i % 3} = {i}"}),
                tool_block("Write", {"file_path": "out.txt", "content": f"turn {i}\n"}),
            ),
            # A long answer: clearing old tool results alone cannot keep the session in its window.
            text(f"done {i}. " + "Findings: " * (DATA_CHARS // 20)),
        )


async def _drive(client: AgentClient, start: int, n: int, seen: list[Any], snapshots: dict[int, Any], ws: Path) -> list[ResultMessage]:
    results = []
    for i in range(start, start + n):
        snapshots[i] = tree_snapshot(ws)
        await client.query(f"step {i}: look at data{i}.csv")
        async for m in client.receive_response():
            seen.append(m)
            if isinstance(m, ResultMessage):
                results.append(m)
    return results


def _check_long_session(server: Any, window: int, home: Path, ws: Path, options: dict[str, Any], turns: int) -> dict[str, Any]:
    _workspace(ws, turns)
    _script(server, turns)
    server.context_window = window
    seen: list[Any] = []
    snapshots: dict[int, Any] = {}

    async def go() -> tuple[list[ResultMessage], Any]:
        opts = AgentOptions(cwd=ws, context_window=window, permission_mode="acceptEdits", **options)
        async with AgentClient(opts) as client:
            results = await _drive(client, 0, turns, seen, snapshots, ws)
            return results, client.session_id

    results, sid = anyio.run(go)
    # No turn failed, every answer is the one scripted for its turn.
    assert [r.subtype for r in results] == ["success"] * turns, [r.result for r in results if r.is_error]
    assert [(r.result or "").split(".")[0] for r in results] == [f"done {i}" for i in range(turns)]
    # No request passed the window: the fake refuses one as the API does, and none was refused.
    assert [r.refused for r in server.requests if r.refused] == []
    boundaries = [m for m in seen if isinstance(m, SystemMessage) and m.subtype == "compact_boundary"]
    store = SessionStore.at(home)
    lines = [e for e in store.read_entries(sid) if e.get("subtype") == "compact_boundary"]
    # The session went well past its window, compacting each time: one message per boundary line.
    sent_chars = sum(len(json.dumps(e.get("message"))) for e in store.read_entries(sid) if e.get("type") in ("user", "assistant"))
    assert sent_chars / 4 > 3 * window
    assert len(boundaries) >= 3 and len(boundaries) == len(lines)
    for b in boundaries:
        assert b.data["trigger"] == "auto" and b.data["post_tokens"] < b.data["pre_tokens"]
    # Every result says how full the context is; after each compaction it is under the window.
    assert all(r.context_window == window and 0 < (r.context_tokens or 0) < window for r in results)

    # A checkpoint from before the first compaction rewinds files and cells exactly.
    entries = store.read_entries(sid)
    first_b = next(i for i, e in enumerate(entries) if e.get("subtype") == "compact_boundary")
    early = [r for r in results if any(e.get("uuid") == r.checkpoint_id for e in entries[:first_b])]
    target = early[1] if len(early) > 1 else early[0]
    turn_index = results.index(target)
    am.rewind_files(sid, target.checkpoint_id, home=home)
    assert tree_snapshot(ws) == snapshots[turn_index]
    nb = nbformat.read(ws / "analysis.ipynb", as_version=4)
    assert [c.source for c in nb.cells] == [c.source for c in nbformat.reads(snapshots[turn_index]["analysis.ipynb"].decode(), as_version=4).cells]

    # A fork up to a message before the first boundary holds the whole history before it.
    before = next(e["uuid"] for e in reversed(entries[:first_b]) if e.get("type") == "assistant")
    fork = am.fork_session(sid, up_to_message_id=before, home=home)
    full = [m for m in am.get_session_messages(sid, home=home) if not m.is_compact_boundary]
    forked = am.get_session_messages(fork, home=home)
    assert [m.uuid for m in forked] == [m.uuid for m in full[: len(forked)]]
    assert forked[0].is_prompt and "step 0" in json.dumps(forked[0].message)
    assert not any(m.is_compact_boundary for m in forked)
    # The original keeps every line, the boundaries marked.
    history = am.get_session_messages(sid, home=home)
    assert sum(m.is_compact_boundary for m in history) == len(lines)
    assert sum(m.is_prompt for m in history) == turns
    return {"sid": sid, "boundaries": boundaries, "results": results}


def test_client_compaction_keeps_a_session_alive_past_its_window(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    out = _check_long_session(fake_api, 20_000, home, workspace, {"compaction": "client"}, 40)
    assert all(b.data["method"] == "client" for b in out["boundaries"])
    assert len(fake_api.summary_requests) == len(out["boundaries"])
    # Each summary request kept the same system prompt and tools (the prompt cache serves them)
    # and asked to keep what the work needs.
    req = fake_api.summary_requests[0].body or {}
    last = json.dumps(req["messages"][-1])
    assert "<summary></summary>" in last and "cell ids" in last and "Kernel variables" in last
    assert req["tools"] == (fake_api.message_requests[0].body or {})["tools"]


def test_server_compaction_keeps_a_session_alive_past_its_window(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # The API compacts server-side only from 50,000 tokens: the smallest window that allows it.
    global DATA_CHARS
    saved, DATA_CHARS = DATA_CHARS, 16_000
    try:
        out = _check_long_session(fake_api, 64_000, home, workspace, {"compaction": "server"}, 64)
    finally:
        DATA_CHARS = saved
    assert all(b.data["method"] == "server" for b in out["boundaries"])
    assert fake_api.summary_requests == []
    sent = [r for r in fake_api.message_requests if (r.body or {}).get("context_management")]
    assert sent and all(r.headers.get("anthropic-beta") == "compact-2026-01-12" for r in sent)
    edit = (sent[0].body or {})["context_management"]["edits"][0]
    assert edit == {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 51_200}}


def test_openai_compatible_provider_compacts_client_side(home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as oai:
        for k, v in oai.env().items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("AGENT_MAGIC_MODEL", "gpt-test")
        out = _check_long_session(oai, 20_000, home, workspace, {"provider": "openai", "compaction": "auto"}, 40)
        assert all(b.data["method"] == "client" for b in out["boundaries"])
        assert len(oai.summary_requests) == len(out["boundaries"])


def _run(prompts: list[str], **opts: Any) -> list[Any]:
    async def go() -> list[Any]:
        out: list[Any] = []
        async with AgentClient(AgentOptions(**opts)) as client:
            for p in prompts:
                await client.query(p)
                async for m in client.receive_response():
                    out.append(m)
        return out

    return anyio.run(go)


def _long_session(fake_api: FakeAnthropicServer, workspace: Path, turns: int, **opts: Any) -> str:
    _workspace(workspace, turns)
    _script(fake_api, turns)
    msgs = _run([f"step {i}: look at data{i}.csv" for i in range(turns)], cwd=workspace, permission_mode="acceptEdits", **opts)
    assert all(not m.is_error for m in msgs if isinstance(m, ResultMessage))
    sid = next(m.session_id for m in msgs if isinstance(m, ResultMessage))
    return str(sid)


def test_resume_after_a_boundary_sends_the_summary_and_what_follows(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _long_session(fake_api, workspace, 12, context_window=12_000, compaction="client")
    store = SessionStore.at(home)
    all_entries = store.read_entries(sid)
    live = store.read_live_entries(sid)
    assert live[0]["type"] == "session" and live[1]["subtype"] == "compact_boundary"
    assert len(live) < len(all_entries) / 2
    fake_api.clear_requests()
    fake_api.add(text("resumed"))
    msgs = _run(["and now?"], resume=sid, cwd=workspace, context_window=12_000, compaction="client")
    assert isinstance(msgs[-1], ResultMessage) and msgs[-1].result == "resumed"
    assert msgs[0].data["turn"] == 13  # the boundary counts the turns before it
    body = fake_api.message_requests[0].body or {}
    first = json.dumps(body["messages"][0])
    assert SUMMARY_INTRO in first and live[1]["summary"] in json.loads(first)["content"][0]["text"]
    assert "row 0-" not in json.dumps(body)  # and the early data is not sent again
    info = am.get_session_info(sid, home=home)
    assert info.num_turns == 13 and info.context_window == 12_000 and 0 < (info.context_tokens or 0) < 12_000
    # The history shows where each compaction happened, in the terminal and in the notebook.
    from agent_magic.cli import main
    from agent_magic.notebook._views import history_view

    boundaries = sum(1 for e in all_entries if e.get("subtype") == "compact_boundary")
    main(["--home", str(home), "history", sid])
    out = capsys.readouterr().out
    assert out.count("compacted (auto): ") == boundaries and out.count("you: step") == 12
    md = history_view(am.get_session_messages(sid, home=home), sid)._repr_markdown_()
    assert md.count("Compacted the conversation (auto): ") == boundaries


def test_old_tool_results_are_cleared_before_compacting(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # Big results, small answers: clearing the old ones is enough for a while.
    turns = 14
    for i in range(turns):
        (workspace / f"f{i}.txt").write_text(f"line {i} of f{i}.txt, some text\n" * 300)
        fake_api.on_prompt(f"read f{i}.txt", tool_use("Read", {"file_path": f"f{i}.txt"}), text(f"ok {i}"))
    msgs = _run([f"read f{i}.txt" for i in range(turns)], cwd=workspace, context_window=40_000, compaction="client")
    cleared = [m for m in msgs if isinstance(m, SystemMessage) and m.subtype == "context_cleared"]
    assert cleared and not any(isinstance(m, SystemMessage) and m.subtype == "compact_boundary" for m in msgs)
    assert cleared[0].data["tool_results"] >= 4 and cleared[0].data["tokens_saved"] > 10_000
    results = [m for m in msgs if isinstance(m, ResultMessage)]
    assert [r.result for r in results] == [f"ok {i}" for i in range(turns)]
    sent = json.dumps(fake_api.message_requests[-1].body)
    # The old Reads went out as stubs saying what they were and how to get them again ...
    assert "[Cleared to save context: Read of f0.txt (about" in sent and "Read it again if you need it" in sent
    assert "line 0 of f0.txt" not in sent and f"line {turns - 1} of f{turns - 1}.txt" in sent
    # ... while the transcript keeps them whole.
    sid = results[0].session_id
    assert "line 0 of f0.txt" in SessionStore.at(home).transcript_path(sid).read_text()
    # The prompt cache kept working: every turn after the clearing read its prefix from the cache.
    first_cleared = next(k for k, r in enumerate(fake_api.message_requests) if "[Cleared to save context" in json.dumps(r.body))
    later_turns = [r for r in results if r.usage and r.num_turns and results.index(r) > 0][-3:]
    assert first_cleared < len(fake_api.message_requests) - 3
    assert all((r.usage or {}).get("cache_read_input_tokens", 0) > 5_000 for r in later_turns)


def test_manual_compaction_with_focus_and_pre_compact_hook(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    calls: list[dict[str, Any]] = []

    async def on_compact(inp: dict[str, Any], tool_use_id: str | None, ctx: dict[str, Any]) -> dict[str, Any]:
        calls.append(inp)
        return {"hookSpecificOutput": {"hookEventName": "PreCompact", "additionalContext": "Keep the column names."}}

    fake_api.add(text("first"), text("second"), text("third"))

    async def go() -> tuple[SystemMessage, list[Any]]:
        opts = AgentOptions(cwd=workspace, hooks={"PreCompact": [am.HookMatcher(hooks=[on_compact])]})
        async with AgentClient(opts) as client:
            for p in ("one", "two"):
                await client.query(p)
                async for _ in client.receive_response():
                    pass
            boundary = await client.compact("the sales figures")
            await client.query("three")
            rest = [m async for m in client.receive_response()]
            return boundary, rest

    boundary, rest = anyio.run(go)
    assert boundary.subtype == "compact_boundary" and boundary.data["trigger"] == "manual"
    assert calls and calls[0]["trigger"] == "manual" and calls[0]["custom_instructions"] == "the sales figures"
    ask = json.dumps((fake_api.summary_requests[-1].body or {})["messages"][-1])
    assert "the sales figures" in ask and "Keep the column names." in ask
    assert isinstance(rest[-1], ResultMessage) and rest[-1].result == "third"
    first = json.dumps((fake_api.message_requests[-1].body or {})["messages"][0])
    assert SUMMARY_INTRO in first


def test_compact_with_nothing_to_compact_says_so(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    async def go() -> None:
        async with AgentClient(AgentOptions(cwd=workspace)) as client:
            await client.compact()

    with pytest.raises(am.CompactionError, match="nothing to compact"):
        anyio.run(go)


def test_a_window_smaller_than_the_table_says_is_learned_from_the_api(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # The table says 200,000; the API says 9,000: the turn compacts to fit and goes on.
    sid = _long_session(fake_api, workspace, 3)
    fake_api.context_window = 9_000
    fake_api.add(text("fits now"))
    msgs = _run(["go on"], resume=sid, cwd=workspace)
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success" and res.result == "fits now"
    assert res.context_window == 9_000
    assert any(isinstance(m, SystemMessage) and m.subtype == "compact_boundary" for m in msgs)
    refused = [r.refused for r in fake_api.requests if r.refused]
    assert len(refused) == 1 and "prompt is too long" in (refused[0] or "")  # once, then it fits


def test_compaction_off_fails_the_turn_with_advice(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    sid = _long_session(fake_api, workspace, 3)
    fake_api.context_window = 5_000
    res = _run(["go on"], resume=sid, cwd=workspace, compaction="off")[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "error_during_execution"
    assert "too long for the model" in (res.result or "") and "%agent compact" in (res.result or "")


def test_thinking_and_effort_reach_the_request(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("a"), text("b"), text("c"))
    _run(["default"], cwd=workspace, model="claude-sonnet-5-5")
    _run(["tuned"], cwd=workspace, model="claude-sonnet-5-5", effort="low", thinking={"type": "enabled", "budget_tokens": 2048})
    _run(["older"], cwd=workspace, model="claude-3-7-sonnet-20250219")
    default, tuned, older = (r.body or {} for r in fake_api.message_requests)
    assert default["thinking"] == {"type": "adaptive"} and "output_config" not in default
    assert tuned["thinking"] == {"type": "enabled", "budget_tokens": 2048} and tuned["output_config"] == {"effort": "low"}
    assert "thinking" not in older
    with pytest.raises(am.ConfigurationError, match="effort"):
        AgentOptions(effort="extreme")
    with pytest.raises(am.ConfigurationError, match="budget_tokens"):
        AgentOptions(thinking={"type": "enabled"})


def test_context_window_setting_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_magic._context import context_window_for

    assert context_window_for("claude-sonnet-5-5") == 200_000
    assert context_window_for("some-local-model") == 128_000
    assert context_window_for("claude-sonnet-5-5", 50_000) == 50_000
    monkeypatch.setenv("AGENT_MAGIC_CONTEXT_WINDOW", "64000")
    assert context_window_for("claude-sonnet-5-5") == 64_000
    monkeypatch.setenv("AGENT_MAGIC_CONTEXT_WINDOW", "lots")
    with pytest.raises(am.ConfigurationError, match="AGENT_MAGIC_CONTEXT_WINDOW"):
        context_window_for("x")
    monkeypatch.setenv("AGENT_MAGIC_COMPACTION", "sometimes")
    from agent_magic._context import compaction_mode

    with pytest.raises(am.ConfigurationError, match="compaction"):
        compaction_mode(None)


def test_server_mode_needs_a_big_enough_window(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("a"))
    res = _run(["hi"], cwd=workspace, context_window=20_000, compaction="server")[-1]
    assert isinstance(res, ResultMessage) and res.is_error and "at least 50,000 tokens" in (res.result or "")


def test_server_compaction_refused_falls_back_to_client(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # An API (or model) that does not take the compaction edit: the session goes on with client-side summaries.
    fake_api.add(error(400, "invalid_request_error", "context_management: compact_20260112 is not supported on this model"), text("fine"))
    msgs = _run(["hi"], cwd=workspace, context_window=100_000, compaction="auto")
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.result == "fine"
    assert any(isinstance(m, SystemMessage) and m.subtype == "warning" and "summarises them itself" in m.data["message"] for m in msgs)
    assert "context_management" not in (fake_api.message_requests[-1].body or {})


def test_a_claude_code_compaction_is_recorded_and_resume_finds_its_session(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    pytest.importorskip("claude_agent_sdk")
    from agent_magic._compaction import record_engine_compaction
    from agent_magic.providers.claude_code import ClaudeCodeEngine

    fake_api.add(text("one"), text("two"))

    async def go() -> str:
        async with AgentClient(AgentOptions(cwd=workspace)) as client:
            for p in ("one", "two"):
                await client.query(p)
                async for _ in client.receive_response():
                    pass
            rt = client._rt
            assert rt is not None
            # What the engine does when Claude Code reports {"subtype": "compact_boundary", ...}.
            msg = record_engine_compaction(rt, None, {"compact_metadata": {"trigger": "auto", "pre_tokens": 150_000}}, "claude-code", "cc-123")
            assert msg.data == {"trigger": "auto", "pre_tokens": 150_000, "post_tokens": None, "method": "claude-code"}
            return str(client.session_id)

    sid = anyio.run(go)
    store = SessionStore.at(home)
    live = store.read_live_entries(sid)
    assert live[1]["subtype"] == "compact_boundary" and live[1]["engine_session_id"] == "cc-123"

    class _Rt:
        class session:
            entries = live[1:]

    assert ClaudeCodeEngine()._engine_entry(_Rt()) is live[1]  # a resumed engine finds its session
    history = am.get_session_messages(sid, home=home)
    assert [m.is_compact_boundary for m in history][-1] is True and sum(m.is_prompt for m in history) == 2


def test_compacting_by_hand_is_refused_for_the_claude_code_engine(home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("claude_agent_sdk")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")

    async def go() -> None:
        async with AgentClient(AgentOptions(cwd=workspace, provider="claude-code")) as client:
            await client.compact()

    with pytest.raises(am.CompactionError, match="compacts its conversation by itself"):
        anyio.run(go)


def test_a_client_compaction_after_a_server_one_in_the_same_turn_keeps_the_turn(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    # The API's summary is long (45k tokens of a 64k window) and the turn then reads a big file:
    # the next request would pass the window, so agent-magic summarises again, client-side.
    # The request and the file just read must survive that (found by bench/long_session.py).
    def summary(body: dict[str, Any]) -> str:
        if not body.get("context_management"):
            return "Short summary of it all."
        return "API summary. " * 14_000 if "read the big file" in json.dumps(body["messages"][-1]) else "Short API summary."

    fake_api.summary_text = summary
    (workspace / "big.txt").write_text("\n".join(f"big line {k}: " + "z" * 60 for k in range(1_500)))
    for i in range(7):
        fake_api.on_prompt(f"fill {i}.", text(f"filled {i}. " + "words " * 5_000))
    fake_api.on_prompt(
        "read the big file",
        tool_use("Read", {"file_path": "big.txt"}),
        lambda body: text("read: " + ("saw big line 1499" if "big line 1499" in json.dumps(body) else "lost the file")),
    )
    msgs = _run([*(f"fill {i}." for i in range(7)), "read the big file"], cwd=workspace, context_window=64_000, compaction="server")
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success", res.result
    assert res.result == "read: saw big line 1499"
    methods = [m.data["method"] for m in msgs if isinstance(m, SystemMessage) and m.subtype == "compact_boundary"]
    assert methods[-2:] == ["server", "client"]
    last = fake_api.message_requests[-1].body or {}
    prompts = [b.get("text", "") for m in last["messages"] if m["role"] == "user" for b in m["content"] if b.get("type") == "text"]
    assert any(p == "read the big file" for p in prompts)  # the request itself was carried over
    assert [r.refused for r in fake_api.requests if r.refused] == []
