"""`agent-magic acp`: the ACP agent, driven as a subprocess by the SDK's own client, on the fake Messages API."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("acp")

from acp import PROTOCOL_VERSION, RequestError, schema, spawn_agent_process

import agent_magic
from agent_magic import AgentClient, AgentOptions, ResultMessage
from agent_magic.testing import (
    FakeAnthropicServer,
    message,
    text,
    text_block,
    thinking_block,
    tool_use,
)

from .conftest import result_of, run_query

ROOT = Path(agent_magic.__file__).resolve().parent.parent


class RecordingClient:
    """An ACP client that records every update and answers permission requests with ``answer``."""

    def __init__(self, answer: str = "allow_once") -> None:
        self.answer = answer
        self.updates: list[tuple[str, Any]] = []
        self.permissions: list[schema.ToolCallUpdate] = []
        self._changed = anyio.Event()

    async def request_permission(
        self, options: list[schema.PermissionOption], session_id: str, tool_call: schema.ToolCallUpdate, **kwargs: Any
    ) -> schema.RequestPermissionResponse:
        self.permissions.append(tool_call)
        assert {o.option_id for o in options} >= {self.answer}
        return schema.RequestPermissionResponse(outcome=schema.AllowedOutcome(outcome="selected", option_id=self.answer))

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))
        self._changed.set()

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    def on_connect(self, conn: Any) -> None:
        return None

    def of(self, session_id: str, kind: type[Any]) -> list[Any]:
        return [u for sid, u in self.updates if sid == session_id and isinstance(u, kind)]

    def said(self, session_id: str, start: int = 0) -> str:
        return "".join(
            u.content.text for sid, u in self.updates[start:]
            if sid == session_id and isinstance(u, schema.AgentMessageChunk) and isinstance(u.content, schema.TextContentBlock)
        )

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        """Until ``pred()`` holds (checked after each update; 10 s at most)."""
        with anyio.fail_after(10):
            while not pred():
                self._changed = anyio.Event()
                await self._changed.wait()


@asynccontextmanager
async def acp_agent(log: Path, *args: str, answer: str = "allow_once") -> AsyncIterator[tuple[Any, RecordingClient]]:
    """`agent-magic acp` in a subprocess (this checkout's package), initialized; exits 0 when stdin closes."""
    client = RecordingClient(answer)
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    with log.open("ab") as err:
        async with spawn_agent_process(
            client, sys.executable, "-m", "agent_magic.cli", "acp", *args, env=env,
            transport_kwargs={"stderr": err}, use_unstable_protocol=True,
        ) as (conn, process):
            init = await conn.initialize(protocol_version=PROTOCOL_VERSION)
            assert init.agent_info is not None and init.agent_info.name == "agent-magic"
            yield conn, client
        assert process.returncode == 0, f"the agent failed; its log: {log}"


def _text(update: Any) -> str:
    return update.content.text if isinstance(update.content, schema.TextContentBlock) else ""


def test_a_turn_with_an_edit_its_undo_and_the_history_in_a_second_process(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    notes = workspace / "notes.txt"
    notes.write_text("old\n")
    fake_api.add(
        tool_use("Read", {"file_path": "notes.txt"}),
        tool_use("Write", {"file_path": "notes.txt", "content": "new\n"}),
        text("Wrote it."),
    )
    log = tmp_path / "agent.log"

    async def first() -> str:
        async with acp_agent(log) as (conn, client):
            new = await conn.new_session(cwd=str(workspace), mcp_servers=[])
            sid = new.session_id
            assert new.modes is not None and new.modes.current_mode_id == "default"
            await client.wait_for(lambda: bool(client.of(sid, schema.AvailableCommandsUpdate)))
            names = {c.name for c in client.of(sid, schema.AvailableCommandsUpdate)[0].available_commands}
            assert names == {"checkpoints", "rewind", "fork", "sessions", "compact"}

            resp = await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="Update notes.txt")])
            assert resp.stop_reason == "end_turn"
            assert notes.read_text() == "new\n"
            # The SDK's client may handle a response before notifications sent ahead of it.
            await client.wait_for(lambda: "Wrote it." in client.said(sid) and len(client.of(sid, schema.ToolCallProgress)) == 2)
            starts = {u.tool_call_id: u for u in client.of(sid, schema.ToolCallStart)}
            write = next(u for u in starts.values() if u.title.startswith("Write"))
            assert write.kind == "edit" and [s.kind for s in starts.values()] == ["read", "edit"]
            done = [u for u in client.of(sid, schema.ToolCallProgress) if u.tool_call_id == write.tool_call_id]
            assert [u.status for u in done] == ["completed"]
            diff = done[0].content[0]
            assert isinstance(diff, schema.FileEditToolCallContent)
            assert (diff.path, diff.old_text, diff.new_text) == (str(notes.resolve()), "old\n", "new\n")
            # Read needs no approval; Write does, and the client answered "allow once".
            assert [p.tool_call_id for p in client.permissions] == [write.tool_call_id]

            mark = len(client.updates)
            resp = await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="/checkpoints")])
            assert resp.stop_reason == "end_turn"
            await client.wait_for(lambda: "turn 1" in client.said(sid, mark))
            listing = client.said(sid, mark)
            assert "turn 1" in listing and "notes.txt" in listing

            resp = await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="/rewind 1")])
            assert resp.stop_reason == "end_turn"
            assert notes.read_text() == "old\n"
            assert len(fake_api.message_requests) == 3  # the commands asked the model nothing
            return sid

    sid = anyio.run(first)
    checkpoint = agent_magic.list_checkpoints(sid)[0].checkpoint_id

    async def second() -> None:
        async with acp_agent(log) as (conn, client):
            listed = await conn.list_sessions(cwd=str(workspace))
            assert [s.session_id for s in listed.sessions] == [sid]
            assert listed.sessions[0].title == "Update notes.txt"
            await conn.load_session(cwd=str(workspace), session_id=sid, mcp_servers=[])
            await client.wait_for(lambda: "Wrote it." in client.said(sid) and len(client.of(sid, schema.ToolCallProgress)) == 2)
            users = client.of(sid, schema.UserMessageChunk)
            assert [(_text(u), u.message_id) for u in users] == [("Update notes.txt", checkpoint)]
            assert "Wrote it." in client.said(sid)
            calls = client.of(sid, schema.ToolCallStart)
            assert [c.kind for c in calls] == ["read", "edit"]
            results = client.of(sid, schema.ToolCallProgress)
            assert [r.status for r in results] == ["completed", "completed"]
            assert isinstance(results[1].content[0], schema.FileEditToolCallContent)
            assert results[1].content[0].new_text == "new\n"
            # The loaded session goes on with its history.
            fake_api.add(text("Still here."))
            resp = await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="and now?")])
            assert resp.stop_reason == "end_turn"
            sent = fake_api.message_requests[-1].body["messages"]
            assert sent[0]["content"][0]["text"] == "Update notes.txt" and sent[-1]["content"][0]["text"] == "and now?"

    anyio.run(second)

    # ... and in the Python API, as `%agent resume` would.
    async def resume() -> ResultMessage:
        fake_api.add(text("From Python."))
        async with AgentClient(AgentOptions(resume=sid)) as client:
            await client.query("one more")
            return result_of([m async for m in client.receive_response()])

    res = anyio.run(resume)
    assert res.session_id == sid and res.result == "From Python."
    assert agent_magic.get_session_info(sid).num_turns == 3


def test_cancel_ends_a_long_bash_within_two_seconds(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "sleep 30"}), text("never asked for"))

    async def go() -> None:
        async with acp_agent(tmp_path / "agent.log") as (conn, client):
            sid = (await conn.new_session(cwd=str(workspace), mcp_servers=[])).session_id
            await conn.set_session_mode(session_id=sid, mode_id="bypassPermissions")
            outcome: dict[str, Any] = {}

            async def turn() -> None:
                outcome["response"] = await conn.prompt(
                    session_id=sid, prompt=[schema.TextContentBlock(type="text", text="wait a while")]
                )
                outcome["ended"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(turn)
                await client.wait_for(lambda: any(u.kind == "execute" for u in client.of(sid, schema.ToolCallStart)))
                await anyio.sleep(0.5)  # the command is running
                cancelled = time.monotonic()
                await conn.cancel(session_id=sid)
            assert outcome["response"].stop_reason == "cancelled"
            assert outcome["ended"] - cancelled < 2.0
            await client.wait_for(lambda: bool(client.of(sid, schema.ToolCallProgress)))
            assert [u.status for u in client.of(sid, schema.ToolCallProgress)] == ["failed"]
            assert client.permissions == []  # bypassPermissions: nothing asked
            assert any(u.current_mode_id == "bypassPermissions" for u in client.of(sid, schema.CurrentModeUpdate))
            assert len(fake_api.message_requests) == 1

    anyio.run(go)


def test_a_python_session_loads_over_acp_and_rewinds_by_extension(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    fake_api.add(tool_use("Write", {"file_path": "made.txt", "content": "made\n"}), text("Made it."))
    sid = result_of(run_query("Make made.txt", cwd=workspace, permission_mode="acceptEdits")).session_id
    made = workspace / "made.txt"
    assert made.read_text() == "made\n"
    checkpoint = agent_magic.list_checkpoints(sid)[0].checkpoint_id

    async def go() -> None:
        async with acp_agent(tmp_path / "agent.log") as (conn, client):
            await conn.load_session(cwd=str(workspace), session_id=sid, mcp_servers=[])
            await client.wait_for(lambda: "Made it." in client.said(sid))
            assert [_text(u) for u in client.of(sid, schema.UserMessageChunk)] == ["Make made.txt"]
            assert [u.status for u in client.of(sid, schema.ToolCallProgress)] == ["completed"]
            points = await conn.ext_method("session/rewind_points", {"sessionId": sid})
            assert [p["messageId"] for p in points["points"]] == [checkpoint]
            dry = await conn.ext_method("session/rewind", {"sessionId": sid, "messageId": checkpoint, "dryRun": True})
            assert dry["files"]["canRewind"] is True and dry["files"]["filesChanged"] == ["made.txt"]
            assert made.exists()
            done = await conn.ext_method("agent-magic/rewind", {"sessionId": sid, "turn": 1})
            assert done["checkpoint_id"] == checkpoint and done["ok"] is True and not done["dry_run"]
            assert [c["action"] for c in done["changes"]] == ["delete"]
            with pytest.raises(RequestError):
                await conn.ext_method("agent-magic/rewind", {"sessionId": sid, "turn": 7})

    anyio.run(go)
    assert not made.exists()


def test_fork_resume_close_and_a_conversation_rewind(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    fake_api.add(message(thinking_block("Let me think."), text_block("one")), text("two"), text("after the rewind"))

    async def go() -> None:
        async with acp_agent(tmp_path / "agent.log") as (conn, client):
            sid = (await conn.new_session(cwd=str(workspace), mcp_servers=[])).session_id
            for words in ("first", "second"):
                await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text=words)])

            await client.wait_for(lambda: "two" in client.said(sid))
            thoughts = [_text(u) for u in client.of(sid, schema.AgentThoughtChunk)]
            assert "".join(thoughts) == "Let me think." and "one" in client.said(sid)

            fork = await conn.fork_session(session_id=sid, cwd=str(workspace), mcp_servers=[])
            assert fork.session_id != sid
            assert agent_magic.get_session_info(fork.session_id).parent_session_id == sid
            mark = len(client.updates)
            await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="/sessions")])
            await client.wait_for(lambda: "this chat" in client.said(sid, mark))
            assert fork.session_id[:8] in client.said(sid, mark)

            mark = len(client.updates)
            await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="/rewind 2 --conversation")])
            await client.wait_for(lambda: "Conversation rewound" in client.said(sid, mark))
            await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="again")])
            sent = [b["text"] for m in fake_api.message_requests[-1].body["messages"] for b in m["content"] if b["type"] == "text"]
            assert sent == ["first", "one", "again"]
            assert agent_magic.get_session_info(sid).num_turns == 2  # the original is as it was

            await conn.resume_session(session_id=fork.session_id, cwd=str(workspace), mcp_servers=[])
            await conn.close_session(session_id=fork.session_id)
            with pytest.raises(RequestError):
                await conn.prompt(session_id=fork.session_id, prompt=[schema.TextContentBlock(type="text", text="gone")])
            assert len(fake_api.message_requests) == 3

    anyio.run(go)


def test_mcp_servers_from_the_client_become_ours() -> None:
    from agent_magic.acp.agent import mcp_servers

    servers = [
        schema.McpServerStdio(name="db", command="db-mcp", args=["--ro"], env=[schema.EnvVariable(name="DB", value="x")]),
        schema.HttpMcpServer(type="http", name="web", url="https://mcp.example/", headers=[schema.HttpHeader(name="A", value="b")]),
    ]
    assert mcp_servers(servers) == {
        "db": {"type": "stdio", "command": "db-mcp", "args": ["--ro"], "env": {"DB": "x"}},
        "web": {"type": "http", "url": "https://mcp.example/", "headers": {"A": "b"}},
    }
