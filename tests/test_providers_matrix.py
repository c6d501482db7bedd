"""One scripted scenario, three providers: write, edit, notebook edit, rewind, resume, fork.

``anthropic`` and ``openai`` run agent-magic's own loop against the fake
Messages API and the fake OpenAI-compatible API; ``claude-code`` runs the
turns inside the real Claude Code CLI against the fake Messages API. Both fake
servers play the same scripts (FIFO, one reply per model request), so every
provider sees exactly the same tool calls and must leave the same files,
cells, checkpoints and sessions behind.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import AgentClient, AgentOptions, Message, ResultMessage, UserMessage
from agent_magic.store.local import SessionStore
from agent_magic.testing import (
    FakeAnthropicServer,
    FakeOpenAIServer,
    message,
    text,
    thinking_block,
    tool_block,
    tool_use,
)

PROVIDERS = [
    "anthropic",
    "openai",
    pytest.param(
        "claude-code",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(
                importlib.util.find_spec("claude_agent_sdk") is None,
                reason="the claude-code extra (claude-agent-sdk) is not installed",
            ),
        ],
    ),
]


@pytest.fixture(params=PROVIDERS)
def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home: Path
) -> Iterator[tuple[str, FakeAnthropicServer | FakeOpenAIServer]]:
    """The provider's name and a fake server its client is pointed at."""
    provider: str = request.param
    monkeypatch.setenv("AGENT_MAGIC_PROVIDER", provider)
    if provider == "openai":
        monkeypatch.delenv("OPENAI_MODEL", raising=False)
        monkeypatch.setenv("AGENT_MAGIC_MODEL", "llama-test")
        with FakeOpenAIServer() as oai:
            for k, v in oai.env("sk-test-fake-openai-key").items():
                monkeypatch.setenv(k, v)
            yield provider, oai
        return
    if provider == "claude-code":
        # Offline, and never the person's own ~/.claude.
        for sub in ("cc-home", "cc-config"):
            (tmp_path / sub).mkdir()
        monkeypatch.setenv("HOME", str(tmp_path / "cc-home"))
        monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc-config"))
        monkeypatch.setenv("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
    with FakeAnthropicServer() as api:
        for k, v in api.env().items():
            monkeypatch.setenv(k, v)
        yield provider, api


def _notebook(path: Path) -> bytes:
    nb = {
        "cells": [
            {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# Sales"},
            {"cell_type": "code", "execution_count": None, "id": "load", "metadata": {}, "outputs": [], "source": "df = load()"},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    data = (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    path.write_bytes(data)
    return data


def _sources(path: Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text())["cells"]
    return [(c["cell_type"], "".join(c["source"])) for c in cells]


def _prompts(home: Path, sid: str) -> list[str]:
    out = []
    for e in SessionStore(home).read_entries(sid):  # a fork's inherited lines first
        if e.get("type") == "user" and e.get("is_prompt"):
            c = e["message"]["content"]
            out.append(c if isinstance(c, str) else "".join(b.get("text", "") for b in c))
    return out


async def _turn(client: AgentClient, prompt: str) -> ResultMessage:
    await client.query(prompt)
    msgs: list[Message] = [m async for m in client.receive_response()]
    errors = [m for m in msgs if isinstance(m, UserMessage) and m.tool_use_result and m.tool_use_result.get("is_error")]
    assert not errors, errors
    res = msgs[-1]
    assert isinstance(res, ResultMessage) and res.subtype == "success", res
    assert res.checkpoint_id is not None
    return res


def test_same_scenario_on_every_provider(server: tuple[str, Any], home: Path, workspace: Path) -> None:
    provider, api = server
    report = workspace / "report.md"
    nb_path = workspace / "sales.ipynb"
    nb_before = _notebook(nb_path)
    nb = str(nb_path)

    def options(**kw: Any) -> AgentOptions:
        return AgentOptions(cwd=workspace, permission_mode="acceptEdits", **kw)

    async def first_client() -> tuple[str, str]:
        async with AgentClient(options()) as client:
            api.add(
                tool_use("Write", {"file_path": str(report), "content": "# Report\n\nTotal: 10\n"}),
                tool_use("Edit", {"file_path": str(report), "old_string": "Total: 10", "new_string": "Total: 12"}),
                tool_use("Read", {"file_path": nb}),
                tool_use("NotebookEdit", {"notebook_path": nb, "cell_id": "load", "new_source": "df = load('sales.csv')"}),
                text("Report written, loading fixed."),
            )
            first = await _turn(client, "first: write the report and fix the load cell")
            assert report.read_text() == "# Report\n\nTotal: 12\n"
            assert _sources(nb_path) == [("markdown", "# Sales"), ("code", "df = load('sales.csv')")]

            api.add(
                tool_use(
                    "NotebookEdit",
                    {"notebook_path": nb, "cell_id": "load", "new_source": "df.describe()", "edit_mode": "insert", "cell_type": "code"},
                ),
                tool_use("Write", {"file_path": str(workspace / "extra.txt"), "content": "scratch\n"}),
                text("Added a summary cell."),
            )
            second = await _turn(client, "second: add a summary cell")
            assert _sources(nb_path)[-1] == ("code", "df.describe()")
            assert (workspace / "extra.txt").exists()

            # Rewind the second turn: its cell and file go, the first turn's changes stay.
            assert second.checkpoint_id is not None
            r = await client.rewind_files(second.checkpoint_id)
            assert r.ok and r.conflicts == [], r.summary()
            assert not (workspace / "extra.txt").exists()
            assert _sources(nb_path) == [("markdown", "# Sales"), ("code", "df = load('sales.csv')")]
            assert report.read_text() == "# Report\n\nTotal: 12\n"
            assert client.session_id is not None and first.checkpoint_id is not None
            return client.session_id, first.checkpoint_id

    sid, first_cp = anyio.run(first_client)

    async def resumed() -> None:
        async with AgentClient(options(resume=sid)) as client:
            api.add(text("You asked for a report and a summary cell."))
            await _turn(client, "third: what did I ask for?")
            assert client.session_id == sid

    anyio.run(resumed)
    history = json.dumps(api.message_requests[-1].body)
    assert "first: write the report" in history and "second: add a summary cell" in history
    assert [p.split(":")[0] for p in _prompts(home, sid)] == ["first", "second", "third"]

    async def forked() -> str:
        async with AgentClient(options(resume=sid, fork_session=True)) as client:
            api.add(tool_use("Write", {"file_path": str(workspace / "fork.txt"), "content": "fork\n"}), text("Forked."))
            await _turn(client, "fourth: in the fork")
            assert client.session_id is not None and client.session_id != sid
            # Checkpoints from before the fork are valid in the fork.
            r = await client.rewind_files(first_cp)
            assert r.ok and r.conflicts == [], r.summary()
            return client.session_id

    fork = anyio.run(forked)
    history = json.dumps(api.message_requests[-1].body)
    assert "third: what did I ask for?" in history
    assert [p.split(":")[0] for p in _prompts(home, fork)] == ["first", "second", "third", "fourth"]
    assert [p.split(":")[0] for p in _prompts(home, sid)] == ["first", "second", "third"]
    # Everything the agent did since the first turn is undone.
    assert not report.exists() and not (workspace / "fork.txt").exists()
    assert nb_path.read_bytes() == nb_before
    assert sorted(p.name for p in workspace.iterdir()) == ["sales.ipynb"]
    # Every model request went to this provider's API, sent by its client.
    wire = {
        "anthropic": ("/v1/messages", "AsyncAnthropic/Python"),
        "openai": ("/v1/chat/completions", "AsyncOpenAI/Python"),
        "claude-code": ("/v1/messages", "claude-cli/"),
    }[provider]
    sent = api.message_requests
    assert sent and all(r.path.split("?")[0] == wire[0] for r in sent), {r.path for r in sent}
    assert all(r.headers.get("user-agent", "").startswith(wire[1]) for r in sent), {r.headers.get("user-agent") for r in sent}


def test_a_session_with_reasoning_from_an_openai_server_resumes_on_the_anthropic_api(
    monkeypatch: pytest.MonkeyPatch, home: Path, workspace: Path
) -> None:
    # Reasoning from an OpenAI-compatible server is kept as thinking without a signature; the
    # Messages API refuses such a block (found by the strict fake API), so it is not sent back.
    monkeypatch.setenv("AGENT_MAGIC_PROVIDER", "openai")
    monkeypatch.setenv("AGENT_MAGIC_MODEL", "llama-test")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)

    async def turn(prompt: str, **options: Any) -> ResultMessage:
        async with AgentClient(AgentOptions(cwd=workspace, **options)) as client:
            return await _turn(client, prompt)

    with FakeOpenAIServer() as oai:
        for k, v in oai.env("sk-test-fake-openai-key").items():
            monkeypatch.setenv(k, v)
        oai.add(message(thinking_block("Which files are there?"), tool_block("Glob", {"pattern": "*"})), text("Nothing yet."))
        first = anyio.run(turn, "what is here?")
    sid = first.session_id
    stored = json.dumps([json.loads(x) for x in (home / "sessions" / sid / "transcript.jsonl").read_text().splitlines()])
    assert "Which files are there?" in stored  # the reasoning is kept in the transcript
    monkeypatch.setenv("AGENT_MAGIC_PROVIDER", "anthropic")
    monkeypatch.delenv("AGENT_MAGIC_MODEL")
    with FakeAnthropicServer() as api:
        for k, v in api.env().items():
            monkeypatch.setenv(k, v)
        api.add(text("Still nothing."))
        second = anyio.run(lambda: turn("and now?", resume=sid))
        (sent,) = api.message_requests
    assert second.result == "Still nothing." and all(r.refused is None for r in api.requests)
    body = json.dumps((sent.body or {})["messages"])
    assert "Which files are there?" not in body and "Nothing yet." in body and '"tool_use"' in body
