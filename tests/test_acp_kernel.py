"""Sessions move between ACP clients and notebooks: made over ACP, resumed in a real kernel, and the other way round."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

pytest.importorskip("acp")

from acp import schema

from agent_magic.testing import FakeAnthropicServer, text

from .kernel_harness import Kernel
from .test_acp import acp_agent

pytestmark = [pytest.mark.kernel]




def _sent(fake_api: FakeAnthropicServer, i: int = -1) -> str:
    return json.dumps(fake_api.message_requests[i].body["messages"])


def test_a_session_made_over_acp_resumes_in_a_notebook(
    kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_api.add(text("Noted: the fiscal year starts in April."))

    async def over_acp() -> str:
        async with acp_agent(tmp_path / "agent.log") as (conn, _client):
            new = await conn.new_session(cwd=str(workspace), mcp_servers=[])
            reply = await conn.prompt(session_id=new.session_id, prompt=[schema.TextContentBlock(type="text", text="Remember: our fiscal year starts in April.")])
            assert reply.stop_reason == "end_turn"
            return new.session_id

    sid = anyio.run(over_acp)
    fake_api.add(text("It starts in April."))
    out = kernel.ok(f"%load_ext agent_magic\n%agent resume {sid[:8]}").text
    assert sid[:8] in out
    run = kernel.ok("%%agent\nWhen does our fiscal year start?")
    assert "It starts in April." in run.text
    sent = _sent(fake_api)
    assert "Remember: our fiscal year starts in April." in sent and "When does our fiscal year start?" in sent


def test_a_notebook_session_loads_over_acp_and_continues_there(
    kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path, tmp_path: Path
) -> None:
    fake_api.add(text("The sales table has 3 columns."))
    kernel.ok("%load_ext agent_magic")
    kernel.ok("%%agent\nHow many columns does the sales table have?")
    sid = kernel.ok("import agent_magic\nprint(agent_magic.list_sessions()[0].session_id)").text.strip()
    fake_api.add(text("Three, as I said."))

    async def over_acp() -> tuple[str, str]:
        async with acp_agent(tmp_path / "agent.log") as (conn, client):
            await conn.load_session(session_id=sid, cwd=str(workspace), mcp_servers=[])

            def replayed() -> str:
                return "".join(
                    u.content.text for s, u in client.updates
                    if s == sid and isinstance(u, schema.UserMessageChunk) and isinstance(u.content, schema.TextContentBlock)
                )

            # The client may answer a request before it has handled the notifications sent ahead of it.
            await client.wait_for(lambda: "sales table" in replayed())
            reply = await conn.prompt(session_id=sid, prompt=[schema.TextContentBlock(type="text", text="Say it again.")])
            assert reply.stop_reason == "end_turn"
            await client.wait_for(lambda: "Three, as I said." in client.said(sid))
            return replayed(), client.said(sid)

    replayed, said = anyio.run(over_acp)
    assert "How many columns does the sales table have?" in replayed
    assert "Three, as I said." in said
    assert "How many columns does the sales table have?" in _sent(fake_api)
