"""The Jupyter AI persona: found as Jupyter AI finds personas, and chatting through our ACP agent.

Jupyter AI needs no server for this: its ``PersonaManager`` runs on a real
``YChat`` document and an asyncio loop, loads every ``jupyter_ai.personas``
entry point, and our persona starts ``agent-magic acp`` with Jupyter AI's own
ACP client. Messages go in through ``process_message`` (what the chat router
calls), permission buttons are answered through ``resolve_permission`` (what
the button's REST handler calls), and replies are read back from the YChat.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("jupyter_ai_acp_client", reason="the jupyter-ai extra: pip install -e '.[dev]'")

from importlib_metadata import entry_points  # what Jupyter AI reads personas with
from jupyter_ai_acp_client.base_acp_persona import BaseAcpPersona
from jupyter_ai_persona_manager import BasePersona, PersonaManager
from jupyterlab_chat.models import Message
from jupyterlab_chat.ychat import YChat

import agent_magic
from agent_magic.testing import FakeAnthropicServer, text, tool_use

ROOT = Path(agent_magic.__file__).resolve().parent.parent
PERSONA_ID = "jupyter-ai-personas::agent_magic::AgentMagicPersona"


def test_jupyter_ai_finds_the_persona_through_its_entry_point() -> None:
    eps = {ep.name: ep for ep in entry_points().select(group="jupyter_ai.personas")}
    assert "agent-magic" in eps, (
        "the installed agent-magic has no jupyter_ai.personas entry point; reinstall it: pip install -e '.[dev]'"
    )
    ep = eps["agent-magic"]
    assert ep.value == "agent_magic.jupyter_ai:AgentMagicPersona"
    persona_class = ep.load()
    # PersonaManager asserts this of every entry point it loads.
    assert issubclass(persona_class, BasePersona)
    assert issubclass(persona_class, BaseAcpPersona)

    from agent_magic.jupyter_ai import AVATAR_PATH, agent_command

    assert agent_command() == [sys.executable, "-m", "agent_magic.cli", "acp"]
    assert AVATAR_PATH.is_file() and AVATAR_PATH.read_text().lstrip().startswith("<svg")


def test_importing_agent_magic_does_not_import_jupyter_ai() -> None:
    code = (
        "import sys, agent_magic, agent_magic.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('jupyter_ai_acp_client', 'jupyter_ai_persona_manager', 'jupyterlab_chat', 'acp'))\n"
        "assert not loaded, loaded\n"
    )
    env = dict(os.environ) | {"PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


async def _wait_for(pred: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``pred()`` once it is truthy, polled: the chat is written by callbacks, not awaited."""
    with anyio.fail_after(seconds):
        while True:
            if found := pred():
                return found
            await anyio.sleep(0.02)


def _said(chat: YChat, since: int = 0) -> str:
    """What the persona wrote in the chat, from message ``since`` on."""
    return "\n".join(m.body for m in chat.get_messages()[since:] if m.sender == PERSONA_ID)


def _pending_permission(chat: YChat) -> dict[str, Any] | None:
    for m in chat.get_messages():
        for tc in (m.metadata or {}).get("tool_calls", []):
            if tc.get("permission_status") == "pending":
                return dict(tc)
    return None


def _user_message(body: str) -> Message:
    return Message(id=f"user-{time.monotonic_ns()}", body=body, sender="person", time=time.time())


def test_the_chat_runs_our_agent_with_permissions_and_rewind(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent the persona spawns inherits this environment: this checkout, the fake API, the store.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # Jupyter AI's own switch to leave out the personas it ships (Claude, Codex, Goose, ...).
    monkeypatch.setenv("JUPYTER_AI_ACP_CLIENT_E2E_TESTING_ONLY", "1")
    notes = workspace / "notes.txt"
    notes.write_text("old\n")
    fake_api.add(
        tool_use("Read", {"file_path": "notes.txt"}),
        tool_use("Write", {"file_path": "notes.txt", "content": "new\n"}),
        text("Wrote it."),
    )

    async def chat_session() -> str:
        chat = YChat()
        chat.initial_path = "talk.chat"  # the chat file; its folder is the agent's cwd
        manager = PersonaManager(
            chat=chat, root_dir=str(workspace), event_loop=asyncio.get_running_loop()
        )
        assert list(manager.personas) == [PERSONA_ID]
        persona = manager.personas[PERSONA_ID]
        assert persona.name == "agent-magic"
        assert await anyio.Path(persona.defaults.avatar_path).is_file()
        try:
            await persona.prepare()
            process = await persona.get_agent_subprocess()
            cmdline = (await anyio.Path(f"/proc/{process.pid}/cmdline").read_bytes()).split(b"\0")[
                :-1
            ]
            assert [a.decode() for a in cmdline] == [sys.executable, "-m", "agent_magic.cli", "acp"]
            client = await persona.get_client()
            assert (await client.get_agent_capabilities()).load_session
            sid = await persona.get_session_id()
            assert chat.get_metadata()["acp_session_ids"] == {PERSONA_ID: sid}
            commands = await _wait_for(lambda: {c.name for c in persona.acp_slash_commands})
            assert commands == {"checkpoints", "rewind", "fork", "sessions", "compact"}

            # A slash command as the chat's first message runs in the agent, not the model.
            n = len(chat.get_messages())
            await persona.process_message(_user_message("/checkpoints"))
            await _wait_for(lambda: _said(chat, n))
            assert not fake_api.message_requests

            # A turn that writes a file: the chat shows the diff and asks; the person allows once.
            n = len(chat.get_messages())
            turn = asyncio.ensure_future(persona.process_message(_user_message("Update notes.txt")))
            ask = await _wait_for(lambda: _pending_permission(chat))
            assert any(d.get("path", "").endswith("notes.txt") for d in ask.get("diffs", [])), ask
            allow = next(o for o in ask["permission_options"] if o["kind"] == "allow_once")
            assert client.resolve_permission(sid, ask["tool_call_id"], allow["option_id"])
            await asyncio.wait_for(turn, 30)
            assert notes.read_text() == "new\n"
            await _wait_for(lambda: "Wrote it." in _said(chat, n))

            # Jupyter AI has no undo; our /rewind puts the file back.
            n = len(chat.get_messages())
            await persona.process_message(_user_message("/rewind 1"))
            assert notes.read_text() == "old\n"
            await _wait_for(lambda: _said(chat, n))
        finally:
            await persona.shutdown()
        assert process.returncode is not None
        return str(sid)

    sid = asyncio.run(chat_session())
    # The chat's session is one of ours: a notebook resumes it with %agent resume <id>.
    info = agent_magic.get_session_info(sid)
    assert Path(info.cwd).resolve() == workspace.resolve()
    prompts = [m.message["content"] for m in agent_magic.get_session_messages(sid) if m.is_prompt]
    assert any("Update notes.txt" in str(p) for p in prompts), prompts
