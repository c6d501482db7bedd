"""Prompt caching: every request marks its prefix, the next one reads it, the cost says so.

The fake server caches prefixes as the Messages API does (see
``agent_magic.testing._prompt_cache``): hits and writes come back in ``usage``
exactly where the API reports them, so these tests see what a person's bill sees.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from agent_magic.providers.anthropic import with_cache_breakpoints
from agent_magic.testing import FakeAnthropicServer, text, tool_use
from agent_magic.testing._prompt_cache import (
    MIN_TOKENS,
    CacheControlError,
    PromptCache,
    breakpoints,
)

from .conftest import result_of, run_query

EPHEMERAL = {"type": "ephemeral"}


def _marks(body: dict[str, Any]) -> list[str]:
    """Where a request put its cache_control marks."""
    out = []
    system = body.get("system")
    if isinstance(system, list):
        out += [f"system.{i}" for i, b in enumerate(system) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            out += [f"messages.{i}.{j}" for j, b in enumerate(m["content"]) if "cache_control" in b]
    return out


def test_each_request_of_a_turn_reads_what_the_one_before_wrote(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("x\n" * 50)
    fake_api.add(
        tool_use("Read", {"file_path": str(workspace / "notes.txt")}),
        tool_use("Glob", {"pattern": "*"}),
        text("Read both."),
    )
    msgs = run_query("look around", cwd=workspace)
    res = result_of(msgs)
    reqs = fake_api.message_requests
    assert len(reqs) == 3
    for r in reqs:
        body = r.body or {}
        n = len(body["messages"])
        # The system prompt, the last user message and the one before it (the previous request's last).
        expected = ["system.0", f"messages.{n - 1}.{len(body['messages'][-1]['content']) - 1}"]
        if n >= 3:
            expected.insert(1, f"messages.{n - 3}.{len(body['messages'][n - 3]['content']) - 1}")
        assert _marks(body) == expected
        assert body["system"][0]["cache_control"] == EPHEMERAL
    usage = [m.usage for m in msgs if getattr(m, "usage", None) and type(m).__name__ == "AssistantMessage"]
    assert len(usage) == 3
    # The first request writes tools + system + prompt; each later one reads all the previous one wrote.
    assert usage[0]["cache_read_input_tokens"] == 0 and usage[0]["cache_creation_input_tokens"] >= MIN_TOKENS
    for before, after in itertools.pairwise(usage):
        assert after["cache_read_input_tokens"] == before["cache_read_input_tokens"] + before["cache_creation_input_tokens"]
        assert 0 < after["cache_creation_input_tokens"] < before["cache_creation_input_tokens"] + after["cache_read_input_tokens"]
    # The result adds them up, and the transcript keeps no cache marks.
    assert res.usage["cache_read_input_tokens"] == sum(u["cache_read_input_tokens"] for u in usage)
    transcript = next((home / "sessions").glob("*/transcript.jsonl")).read_text()
    assert "cache_control" not in transcript


def test_caching_makes_a_long_conversation_cheaper(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def script() -> None:
        fake_api.add(*[tool_use("Glob", {"pattern": f"*{k}"}) for k in range(6)], text("done"))

    script()
    cached = result_of(run_query("search", cwd=workspace))
    monkeypatch.setenv("AGENT_MAGIC_PROMPT_CACHING", "0")
    script()
    uncached = result_of(run_query("search", cwd=workspace))
    body = fake_api.message_requests[-1].body or {}
    assert _marks(body) == [] and isinstance(body["system"], str)
    assert not uncached.usage.get("cache_read_input_tokens") and not uncached.usage.get("cache_creation_input_tokens")
    assert cached.total_cost_usd is not None and uncached.total_cost_usd is not None
    assert cached.total_cost_usd < 0.6 * uncached.total_cost_usd, (cached.total_cost_usd, uncached.total_cost_usd)


def test_a_resumed_session_reads_the_previous_turn_from_the_cache(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    fake_api.add(tool_use("Glob", {"pattern": "*"}), text("first"), text("second"))
    first = result_of(run_query("one", cwd=workspace))
    assert first.usage.get("cache_creation_input_tokens", 0) >= MIN_TOKENS
    res = result_of(run_query("two", cwd=workspace, resume=first.session_id))
    # The new prompt follows the previous turn's last answer: everything before it was cached.
    assert res.usage.get("cache_read_input_tokens", 0) >= MIN_TOKENS


def test_marks_copy_only_what_they_mark() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "tool_use", "id": "t1", "name": "Glob", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}, {"type": "text", "text": ""}]},
    ]
    before = copy.deepcopy(messages)
    out = with_cache_breakpoints(messages)
    assert messages == before  # the session's own messages are untouched
    assert out[0]["content"][0]["cache_control"] == EPHEMERAL
    # The empty text block cannot carry a mark: the tool result before it does.
    assert out[2]["content"][0]["cache_control"] == EPHEMERAL and "cache_control" not in out[2]["content"][1]
    assert out[1] is messages[1]
    assert with_cache_breakpoints([{"role": "user", "content": "plain"}])[0]["content"] == [
        {"type": "text", "text": "plain", "cache_control": EPHEMERAL}
    ]


def _body(n_blocks: int, **extra: Any) -> dict[str, Any]:
    blocks = [{"type": "text", "text": "w" * 3000, "cache_control": EPHEMERAL} for _ in range(n_blocks)]
    return {"model": "m", "messages": [{"role": "user", "content": blocks}], **extra}


def test_the_fake_server_refuses_marks_the_api_refuses(fake_api: FakeAnthropicServer) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=fake_api.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match=re.escape("A maximum of 4 blocks with cache_control may be provided. Found 5.")):
        client.messages.create(model="m", max_tokens=10, messages=_body(5)["messages"])
    with pytest.raises(anthropic.BadRequestError, match="empty text blocks"):
        client.messages.create(
            model="m", max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "text", "text": "", "cache_control": EPHEMERAL}]}],
        )
    fake_api.add(text("ok"))
    ok = client.messages.create(model="m", max_tokens=10, messages=_body(4)["messages"])
    assert ok.usage.cache_creation_input_tokens and ok.usage.cache_creation_input_tokens >= MIN_TOKENS


def test_prefixes_follow_the_api_order_not_the_json_order() -> None:
    tools = [{"name": "T", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}]
    a = breakpoints({"model": "m", "tools": tools, "system": "s", "messages": [{"role": "user", "content": "q"}]})
    b = breakpoints({"messages": [{"role": "user", "content": "q"}], "system": "s", "tools": tools, "model": "m"})
    assert a == b and len(a) == 1
    # A prefix hashes the same whatever other marks cut it (the previous request marked elsewhere).
    blocks = [{"type": "text", "text": f"b{k}"} for k in range(6)]
    one = [dict(b) for b in blocks]
    one[5]["cache_control"] = EPHEMERAL
    two = [dict(b) for b in one]
    two[2]["cache_control"] = EPHEMERAL
    h_one = breakpoints({"messages": [{"role": "user", "content": one}]})
    h_two = breakpoints({"messages": [{"role": "user", "content": two}]})
    assert len(h_two) == 2 and h_two[-1] == h_one[0] and h_two[0][1] < h_one[0][1]
    cache = PromptCache()
    big = _body(2)
    assert cache.use(big) == (0, breakpoints(big)[-1][1])
    assert cache.use(big)[0] == breakpoints(big)[-1][1]  # read in full the second time
    other_model = dict(big, model="n")
    assert cache.use(other_model)[0] == 0  # a cache belongs to one model
    with pytest.raises(CacheControlError):
        breakpoints({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]}]})
