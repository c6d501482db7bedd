"""Sessions: create, resume, continue, fork, custom ids, no-persist, helpers, torn lines."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anyio
import pytest

import agent_magic as am
from agent_magic import (
    AgentClient,
    AgentOptions,
    AssistantMessage,
    ConfigurationError,
    SessionExistsError,
    SessionNotFoundError,
    StreamEvent,
    SystemMessage,
    UserMessage,
)
from agent_magic.store.jsonl import TranscriptWarning
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .conftest import result_of, run_query


def transcript(home: Path, sid: str) -> Path:
    return home / "sessions" / sid / "transcript.jsonl"


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


def test_new_query_creates_a_session(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("Hello there."))
    msgs = run_query("Say hello", cwd=workspace)
    init = msgs[0]
    assert isinstance(init, SystemMessage) and init.subtype == "init"
    sid = init.data["session_id"]
    prompt = msgs[1]
    assert isinstance(prompt, UserMessage) and prompt.content == "Say hello" and prompt.uuid
    assert isinstance(msgs[2], AssistantMessage) and msgs[2].text == "Hello there."
    res = result_of(msgs)
    assert res.subtype == "success" and not res.is_error
    assert res.session_id == sid and res.result == "Hello there." and res.num_turns == 1
    assert res.checkpoint_id == prompt.uuid
    assert res.usage and res.usage["output_tokens"] > 0
    assert res.total_cost_usd is not None and res.total_cost_usd > 0  # default model has a price
    rows = lines(transcript(home, sid))
    assert rows[0]["type"] == "session" and rows[0]["cwd"] == str(workspace)
    assert [r["type"] for r in rows[1:]] == ["user", "assistant", "result"]
    assert rows[0]["session_id"] == sid
    for r in rows[1:]:
        assert {"type", "uuid", "parent_uuid", "timestamp"} <= r.keys()
        assert "session_id" not in r  # the folder and the header say which session it is
    assert rows[2]["parent_uuid"] == rows[1]["uuid"]
    body = fake_api.message_requests[0].body
    # The prompt ends the prefix the API caches for the next request (prompt caching).
    mark = {"cache_control": {"type": "ephemeral"}}
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello", **mark}]}]


def test_resume_continues_with_full_history(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("First answer."), text("Second answer."))
    sid = result_of(run_query("one", cwd=workspace)).session_id
    size_before = transcript(home, sid).stat().st_size
    res = result_of(run_query("two", resume=sid))
    assert res.session_id == sid
    body = fake_api.message_requests[1].body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0]["text"] == "First answer."
    rows = lines(transcript(home, sid))
    assert transcript(home, sid).stat().st_size > size_before
    assert [r["type"] for r in rows].count("session") == 1
    assert am.get_session_info(sid).num_turns == 2


def test_resume_by_unique_prefix(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("a"), text("b"))
    sid = result_of(run_query("one", cwd=workspace)).session_id
    assert result_of(run_query("two", resume=sid[:6])).session_id == sid


def test_resume_unknown_id_is_an_error_naming_it(fake_api: FakeAnthropicServer, home: Path) -> None:
    with pytest.raises(SessionNotFoundError, match="deadbeef-0000"):
        run_query("hi", resume="deadbeef-0000")
    assert fake_api.requests == []


def test_continue_conversation_resumes_latest_of_scope(fake_api: FakeAnthropicServer, home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    fake_api.add(text("1"), text("2"), text("3"))
    sid_a = result_of(run_query("in a", cwd=a)).session_id
    sid_b = result_of(run_query("in b", cwd=b)).session_id
    assert sid_a != sid_b
    res = result_of(run_query("again in a", cwd=a, continue_conversation=True))
    assert res.session_id == sid_a
    assert am.get_session_info(sid_a).num_turns == 2
    assert am.get_session_info(sid_b).num_turns == 1


def test_continue_with_no_session_starts_one(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("fresh"))
    res = result_of(run_query("hi", cwd=workspace, continue_conversation=True))
    assert am.get_session_info(res.session_id).num_turns == 1


def test_fork_leaves_original_byte_identical(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("one"), text("two"), text("fork answer"), text("original again"))
    sid = result_of(run_query("first", cwd=workspace)).session_id
    result_of(run_query("second", resume=sid))
    original = transcript(home, sid).read_bytes()
    msgs = run_query("try another way", resume=sid, fork_session=True)
    init = msgs[0]
    assert isinstance(init, SystemMessage) and init.data["forked_from"] == sid
    fork_id = result_of(msgs).session_id
    assert fork_id != sid
    assert transcript(home, sid).read_bytes() == original
    body = fake_api.message_requests[2].body
    assert [m["content"][0]["text"] for m in body["messages"] if m["role"] == "user"] == ["first", "second", "try another way"]
    info = am.get_session_info(fork_id)
    assert info.parent_session_id == sid and info.num_turns == 3
    # The original can still be resumed, unaffected by the fork.
    result_of(run_query("back to the original", resume=sid))
    body = fake_api.message_requests[3].body
    assert "try another way" not in json.dumps(body["messages"])


def test_fork_at_an_earlier_message(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("one"), text("two"), text("three"))
    sid = result_of(run_query("first", cwd=workspace)).session_id
    result_of(run_query("second", resume=sid))
    msgs = am.get_session_messages(sid)
    assert [m.type for m in msgs] == ["user", "assistant", "user", "assistant"]
    first_answer = msgs[1].uuid
    fork_id = am.fork_session(sid, up_to_message_id=first_answer[:8], title="branch")
    fmsgs = am.get_session_messages(fork_id)
    assert [m.uuid for m in fmsgs] == [m.uuid for m in msgs[:2]]
    assert am.get_session_info(fork_id).title == "branch"
    result_of(run_query("third", resume=fork_id))
    body = fake_api.message_requests[-1].body
    assert [m["content"][0]["text"] for m in body["messages"] if m["role"] == "user"] == ["first", "third"]


def test_custom_session_id(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("ok"), text("ok again"))
    res = result_of(run_query("hi", cwd=workspace, session_id="exp-1.a_B"))
    assert res.session_id == "exp-1.a_B"
    with pytest.raises(SessionExistsError, match=r"exp-1\.a_B"):
        run_query("hi", cwd=workspace, session_id="exp-1.a_B")
    assert result_of(run_query("resumed", resume="exp-1.a_B")).session_id == "exp-1.a_B"


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "slash/id", "..", "ünïcode"])
def test_invalid_custom_ids_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="session id"):
        AgentOptions(session_id=bad)


def test_no_persist_writes_nothing(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("Write", {"file_path": "out.txt", "content": "data"}), text("wrote it"))
    msgs = run_query("write a file", cwd=workspace, persist_session=False, permission_mode="acceptEdits")
    res = result_of(msgs)
    assert res.subtype == "success"
    assert (workspace / "out.txt").read_text() == "data"
    assert not home.exists() or not any(home.rglob("*"))
    with pytest.raises(SessionNotFoundError):
        am.get_session_info(res.session_id)


def test_no_persist_client_keeps_history_and_can_rewind(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("Write", {"file_path": "f.txt", "content": "v1"}), text("done"), text("still here"))

    async def go() -> None:
        async with AgentClient(AgentOptions(cwd=workspace, persist_session=False, permission_mode="acceptEdits")) as c:
            await c.query("write")
            first = [m async for m in c.receive_response()]
            cp = result_of(first).checkpoint_id
            await c.query("and now?")
            [m async for m in c.receive_response()]
            assert len(fake_api.message_requests[-1].body["messages"]) == 5
            assert cp is not None
            r = await c.rewind_files(cp)
            assert r.ok and not (workspace / "f.txt").exists()

    anyio.run(go)
    assert not home.exists() or not any(home.rglob("*"))


def test_resume_from_another_working_directory(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_api.add(text("first"), tool_use("Write", {"file_path": "note.txt", "content": "x"}), text("ok"))
    sid = result_of(run_query("start", cwd=workspace)).session_id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    msgs = run_query("write a note", resume=sid, permission_mode="acceptEdits")
    init = msgs[0]
    assert isinstance(init, SystemMessage) and init.data["cwd"] == str(workspace)
    assert result_of(msgs).session_id == sid
    assert (workspace / "note.txt").exists() and not (elsewhere / "note.txt").exists()


def test_session_helpers(fake_api: FakeAnthropicServer, home: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    fake_api.add(text("1"), text("2"), text("3"))
    s1 = result_of(run_query("alpha prompt", cwd=a)).session_id
    s2 = result_of(run_query("beta prompt", cwd=b)).session_id
    s3 = result_of(run_query("gamma prompt", cwd=a, scope=str(a / "nb.ipynb"))).session_id
    all_ids = [i.session_id for i in am.list_sessions()]
    assert all_ids == [s3, s2, s1]  # newest first
    assert {i.session_id for i in am.list_sessions(directory=a)} == {s1, s3}
    assert [i.session_id for i in am.list_sessions(scope=str(a / "nb.ipynb"))] == [s3]
    assert [i.session_id for i in am.list_sessions(limit=1, offset=1)] == [s2]
    info = am.get_session_info(s1)
    assert info.first_prompt == "alpha prompt" and info.summary == "alpha prompt"
    assert info.num_turns == 1 and info.cwd == str(a) and info.scope == str(a)
    assert info.created_at <= info.last_modified and info.parent_session_id is None and info.tag is None
    am.rename_session(s1, "My analysis")
    am.tag_session(s1, "keep")
    info = am.get_session_info(s1)
    assert info.title == "My analysis" and info.summary == "My analysis" and info.tag == "keep"
    am.tag_session(s1, None)
    assert am.get_session_info(s1).tag is None
    msgs = am.get_session_messages(s1)
    assert [m.type for m in msgs] == ["user", "assistant"] and msgs[0].message["content"] == "alpha prompt"
    assert am.get_session_messages(s1, limit=1, offset=1)[0].type == "assistant"
    am.delete_session(s2)
    with pytest.raises(SessionNotFoundError):
        am.get_session_info(s2)
    assert s2 not in [i.session_id for i in am.list_sessions()]


def test_index_is_rebuilt_from_transcripts(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("1"), text("2"))
    sid = result_of(run_query("remember me", cwd=workspace)).session_id
    am.rename_session(sid, "titled")
    from agent_magic.store.local import SessionStore

    SessionStore.forget_instances()
    (home / "index.sqlite3").write_bytes(b"this is not a database")
    for suffix in ("-wal", "-shm"):
        Path(str(home / "index.sqlite3") + suffix).unlink(missing_ok=True)
    info = am.get_session_info(sid)
    assert info.first_prompt == "remember me" and info.title == "titled" and info.num_turns == 1


@pytest.mark.parametrize("kind", ["older version", "half built"])
def test_an_index_left_unfinished_or_old_is_rebuilt(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, kind: str
) -> None:
    """The index's version is written last: one a crash left half made, or an older one, is rebuilt."""
    import sqlite3

    from agent_magic.store.local import SessionStore

    fake_api.add(text("1"))
    sid = result_of(run_query("still here", cwd=workspace)).session_id
    SessionStore.forget_instances()
    conn = sqlite3.connect(home / "index.sqlite3", isolation_level=None)
    conn.execute("DELETE FROM sessions")
    conn.execute("PRAGMA user_version=" + ("1" if kind == "older version" else "0"))
    conn.close()
    assert [i.session_id for i in am.list_sessions()] == [sid]
    assert am.get_session_info(sid).first_prompt == "still here"


def test_torn_last_line_is_skipped_then_repaired(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("fine"), text("after crash"))
    sid = result_of(run_query("before", cwd=workspace)).session_id
    path = transcript(home, sid)
    with open(path, "ab") as f:
        f.write(b'{"type":"assistant","uuid":"torn","message":{"role":"assis')
    with pytest.warns(TranscriptWarning, match="torn last line"):
        msgs = am.get_session_messages(sid)
    assert [m.type for m in msgs] == ["user", "assistant"]
    with pytest.warns(TranscriptWarning):
        res = result_of(run_query("after", resume=sid))
    assert res.subtype == "success"
    raw = path.read_bytes()
    assert b"\"uuid\":\"torn\"" not in raw and raw.endswith(b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [m.type for m in am.get_session_messages(sid)] == ["user", "assistant", "user", "assistant"]


def test_partial_messages_stream_text_deltas(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("streamed " * 20, chunk_size=10))
    msgs = run_query("stream please", cwd=workspace, include_partial_messages=True)
    deltas = [m.text_delta for m in msgs if isinstance(m, StreamEvent) and m.text_delta is not None]
    assert len(deltas) >= 15
    assert "".join(deltas) == "streamed " * 20
    kinds = [m.event["type"] for m in msgs if isinstance(m, StreamEvent)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    # Partials come before the complete assistant message.
    first_assistant = next(i for i, m in enumerate(msgs) if isinstance(m, AssistantMessage))
    assert all(i < first_assistant for i, m in enumerate(msgs) if isinstance(m, StreamEvent))


def test_client_session_id_and_multiple_queries(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("a"), text("b"))

    async def go() -> str:
        async with AgentClient(AgentOptions(cwd=workspace)) as client:
            assert client.session_id is None
            await client.query("one")
            assert client.session_id is not None
            sid = client.session_id
            r1 = result_of([m async for m in client.receive_response()])
            await client.query("two")
            r2 = result_of([m async for m in client.receive_response()])
            assert r1.session_id == r2.session_id == sid
            return sid

    sid = anyio.run(go)
    assert am.get_session_info(sid).num_turns == 2


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, agent_magic; print(','.join(m for m in ('anthropic','nbformat','IPython','openai','sqlite3','httpx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert out.stdout.strip() == ""


def test_public_api_names() -> None:
    expected = {
        "query", "AgentClient", "AgentOptions", "list_sessions", "get_session_info", "get_session_messages",
        "fork_session", "rename_session", "tag_session", "delete_session", "rewind_files", "rewind",
        "UserMessage", "AssistantMessage", "SystemMessage", "ResultMessage", "StreamEvent", "TextBlock",
        "ThinkingBlock", "ToolUseBlock", "ToolResultBlock", "HookMatcher", "PermissionResultAllow",
        "PermissionResultDeny", "export_session", "import_session", "list_checkpoints",
    }
    assert expected <= set(am.__all__)
    for name in am.__all__:
        assert getattr(am, name) is not None
