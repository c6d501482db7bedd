"""The fake Messages API refuses what the real API refuses, as a person's client sees it.

Each malformed conversation goes through the official ``anthropic`` client and
must come back as the API's 400 ``invalid_request_error`` with the API's
wording (``agent_magic/testing/_validate.py`` has the rules and their sources).
Conversations the API accepts (merged turns, results then text, prefill, system
messages, a thinking block sent back unchanged) must still be answered, so the
strictness costs no valid request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from agent_magic.testing import (
    FakeAnthropicServer,
    message,
    text,
    text_block,
    thinking_block,
    tool_block,
)

from .conftest import result_of, run_query

MODEL = FakeAnthropicServer.models[1]
EPHEMERAL = {"type": "ephemeral"}


def U(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def A(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def T(s: str) -> dict[str, Any]:
    return {"type": "text", "text": s}


def use(tid: str = "toolu_01", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": "Read", "input": {"file_path": "a.txt"}, **extra}


def result(tid: str = "toolu_01") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tid, "content": "ok"}


SIGNED = {"type": "thinking", "thinking": "hm", "signature": "sig-from-the-api"}

_MISSING_RESULT = (
    "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01. "
    "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
)
_NON_EMPTY = "all messages must have non-empty content except for the optional final assistant message"

# (id, request fields, the API's message: exact, or a prefix ending in "…")
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # tool calls and their results
    ("tool_use-without-result", {"messages": [U("hi"), A([use()]), U("go on")]}, _MISSING_RESULT),
    ("result-after-text", {"messages": [U("hi"), A([use()]), U([T("first this"), result()])]}, _MISSING_RESULT),
    ("result-in-a-later-message", {"messages": [U("hi"), A([use()]), U("wait"), U([result()])]}, _MISSING_RESULT),
    ("one-of-two-results-missing", {"messages": [U("hi"), A([use(), use("toolu_02")]), U([result()])]},
     "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_02.…"),
    ("result-without-tool_use", {"messages": [U("hi"), A("done"), U([result()])]},
     "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01. "
     "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."),
    ("result-for-an-older-call", {"messages": [U("hi"), A([use()]), U([result()]), A("done"), U([result()])]},
     "messages.4.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01.…"),
    ("duplicate-tool_use-ids", {"messages": [U("hi"), A([use(), use()]), U([result()])]},
     "messages.1.content.1: `tool_use` ids must be unique"),
    ("two-results-for-one-call", {"messages": [U("hi"), A([use()]), U([result(), result()])]},
     "messages.2.content.1: each tool_use must have a single result.…"),
    # empty content
    ("empty-string-content", {"messages": [U("")]}, f"messages.0: {_NON_EMPTY}"),
    ("empty-block-list", {"messages": [U("hi"), A([]), U("again")]}, f"messages.1: {_NON_EMPTY}"),
    ("empty-text-block", {"messages": [U([T("")])]}, "messages: text content blocks must be non-empty"),
    ("whitespace-text-block", {"messages": [U([T(" \n")])]}, "messages: text content blocks must contain non-whitespace text"),
    # malformed blocks and messages
    ("unknown-block-type", {"messages": [U([{"type": "banana", "text": "x"}])]},
     "messages.0.content.0: Input tag 'banana' found using 'type' does not match any of the expected tags: 'text', …"),
    ("block-without-type", {"messages": [U([{"text": "x"}])]},
     "messages.0.content.0: Unable to extract tag using discriminator 'type'"),
    ("tool_use-without-input", {"messages": [U("hi"), A([{"type": "tool_use", "id": "toolu_01", "name": "Read"}])]},
     "messages.1.content.0.tool_use.input: Field required"),
    ("tool_result-without-id", {"messages": [U("hi"), A([use()]), U([{"type": "tool_result", "content": "ok"}])]},
     "messages.2.content.0.tool_result.tool_use_id: Field required"),
    ("text-not-a-string", {"messages": [U([{"type": "text", "text": 5}])]},
     "messages.0.content.0.text.text: Input should be a valid string"),
    ("tool-input-not-an-object", {"messages": [U("hi"), A([use() | {"input": "a.txt"}])]},
     "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
    ("extra-field-in-a-block", {"messages": [U([T("hi") | {"interrupted": True}])]},
     "messages.0.content.0.text.interrupted: Extra inputs are not permitted"),
    ("extra-field-in-a-message", {"messages": [U("hi") | {"uuid": "1234"}]},
     "messages.0.uuid: Extra inputs are not permitted"),
    ("unknown-role", {"messages": [{"role": "robot", "content": "beep"}]},
     "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
    ("message-without-content", {"messages": [{"role": "user"}]}, "messages.0.content: Field required"),
    ("no-messages", {"messages": []}, "messages: at least one message is required"),
    # roles
    ("assistant-first", {"messages": [A("I start"), U("hi")]}, 'messages: first message must use the "user" role'),
    ("tool_use-from-the-user", {"messages": [U([use()])]},
     "messages.0.content.0: `tool_use` blocks can only be in `assistant` messages"),
    ("tool_result-from-the-assistant", {"messages": [U("hi"), A([result()])]},
     "messages.1.content.0: `tool_result` blocks can only be in `user` messages"),
    # thinking
    ("thinking-without-signature", {"messages": [U("hi"), A([{"type": "thinking", "thinking": "hm"}, use()]), U([result()])]},
     "messages.1.content.0.thinking.signature: Field required"),
    ("thinking-with-empty-signature", {"messages": [U("hi"), A([SIGNED | {"signature": ""}, use()]), U([result()])]},
     "messages.1.content.0: Invalid `signature` in `thinking` block"),
    ("thinking-after-text", {"messages": [U("hi"), A([T("first"), SIGNED]), U("go on")]},
     "messages.1.content.0: If an assistant message contains any thinking blocks, the first block must be thinking "
     "or redacted_thinking. Found text."),
    ("thinking-from-the-user", {"messages": [U([SIGNED, T("hi")])]},
     "messages.0.content.0: `thinking` blocks can only be in `assistant` messages"),
    ("thinking-with-cache-mark", {"messages": [U("hi"), A([SIGNED | {"cache_control": EPHEMERAL}, T("ok")]), U("more")]},
     "messages.1.content.0.thinking.cache_control: Extra inputs are not permitted"),
    ("thinking-enabled-tool-loop-without-thinking",
     {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048,
      "messages": [U("hi"), A([use()]), U([result()])]},
     "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` "
     "is enabled, a final `assistant` message must start with a thinking block…"),
    ("prefill-with-thinking-when-disabled", {"messages": [U("hi"), A([SIGNED, T("So")])]},
     "messages.1.content.0: When thinking is disabled, an `assistant` message in the final position cannot contain "
     "`thinking`. To use thinking blocks, enable `thinking` in your request."),
    ("prefill-with-trailing-space", {"messages": [U("hi"), A("The answer is ")]},
     "messages: final assistant content cannot end with trailing whitespace"),
    # cache marks and tools
    ("five-cache-marks", {"messages": [U([T(f"part {i}") | {"cache_control": EPHEMERAL} for i in range(5)])]},
     "A maximum of 4 blocks with cache_control may be provided. Found 5."),
    ("tool-names-not-unique", {"messages": [U("hi")], "tools": [
        {"name": "Read", "input_schema": {"type": "object"}}, {"name": "Read", "input_schema": {"type": "object"}}]},
     "tools: Tool names must be unique."),
    ("tool-without-schema", {"messages": [U("hi")], "tools": [{"name": "Read"}]},
     "tools.0.custom.input_schema: Field required"),
]

ACCEPTED: list[tuple[str, list[dict[str, Any]]]] = [
    ("consecutive-user-messages-merge", [U("one"), U([T("two")])]),
    ("results-then-text", [U("hi"), A([T("Reading."), use()]), U([result(), T("and also this")])]),
    ("results-then-a-prompt-message", [U("hi"), A([use()]), U([result()]), U("next question")]),
    ("consecutive-assistant-messages-merge", [U("hi"), A([use()]), A([use("toolu_02")]), U([result(), result("toolu_02")])]),
    ("prefill", [U("hi"), A("The answer is")]),
    ("empty-final-assistant", [U("hi"), A([])]),
    ("system-message-among-messages", [U("hi"), {"role": "system", "content": "Answer briefly."}]),
    ("thinking-sent-back", [U("hi"), A([SIGNED, use()]), U([result()])]),
]


@pytest.fixture
def client(fake_api: FakeAnthropicServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_api.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


def _create(client: anthropic.Anthropic, fields: dict[str, Any]) -> Any:
    return client.messages.create(**{"model": MODEL, "max_tokens": 64, **fields})


@pytest.mark.parametrize(("fields", "expected"), [pytest.param(f, m, id=i) for i, f, m in REFUSED])
def test_the_api_refuses_it(client: anthropic.Anthropic, fake_api: FakeAnthropicServer, fields: dict[str, Any], expected: str) -> None:
    fake_api.add(text("never sent"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        _create(client, fields)
    e = caught.value
    assert e.status_code == 400
    assert isinstance(e.body, dict) and e.body["type"] == "error"
    err = e.body["error"]
    assert err["type"] == "invalid_request_error"
    if expected.endswith("…"):
        assert err["message"].startswith(expected[:-1]), err["message"]
    else:
        assert err["message"] == expected
    # Refused before any reply was used, and recorded with the reason.
    assert fake_api.pending == 1
    (rec,) = fake_api.requests
    assert rec.reply_kind == "invalid" and rec.refused == err["message"]


@pytest.mark.parametrize("messages", [pytest.param(m, id=i) for i, m in ACCEPTED])
def test_the_api_accepts_it(client: anthropic.Anthropic, fake_api: FakeAnthropicServer, messages: list[dict[str, Any]]) -> None:
    fake_api.add(text("fine"))
    reply = _create(client, {"messages": messages})
    assert reply.content[0].type == "text" and reply.content[0].text == "fine"
    assert fake_api.requests[0].refused is None


def test_a_thinking_block_must_come_back_unchanged(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    # The server signs the thinking it sends; the block comes back as sent, or not at all.
    fake_api.add(message(thinking_block("Let me look at a.txt."), tool_block("Read", {"file_path": "a.txt"}, id="toolu_01")))
    with client.messages.stream(model=MODEL, max_tokens=64, messages=[U("read a.txt")]) as stream:
        first = stream.get_final_message()
    thinking, call = first.content[0].model_dump(), first.content[1].model_dump(exclude_none=True)
    assert thinking["type"] == "thinking" and thinking["signature"]
    history = [U("read a.txt"), A([thinking, call]), U([result()])]
    fake_api.add(text("It says ok."))
    assert _create(client, {"messages": history}).content[0].text == "It says ok."
    edited = [U("read a.txt"), A([thinking | {"thinking": "Let me look at b.txt."}, call]), U([result()])]
    with pytest.raises(anthropic.BadRequestError, match=re.escape("messages.1.content.0: Invalid `signature` in `thinking` block")):
        _create(client, {"messages": edited})
    # Dropped entirely (thinking off, as agent-magic sends): accepted.
    fake_api.add(text("Still ok."))
    assert _create(client, {"messages": [U("read a.txt"), A([call]), U([result()])]}).content[0].text == "Still ok."


def test_agent_magic_conversations_pass(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    # A turn with a tool round and a prompt after it, sent by agent-magic's loop: every request valid.
    (workspace / "a.txt").write_text("hello\n")
    fake_api.add(
        message(text_block("Reading it."), tool_block("Read", {"file_path": str(workspace / "a.txt")})),
        text("It says hello."),
        text("Yes."),
    )
    first = result_of(run_query("what is in a.txt?", cwd=workspace))
    assert first.subtype == "success"
    assert result_of(run_query("sure?", cwd=workspace, resume=first.session_id)).subtype == "success"
    assert all(r.refused is None for r in fake_api.requests)
    assert len(fake_api.message_requests) == 3


def test_a_prompt_past_the_context_window_is_refused(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.context_window = 2_000
    fake_api.add(text("fits"))
    assert _create(client, {"messages": [U("short")]}).content[0].text == "fits"
    with pytest.raises(anthropic.BadRequestError) as info:
        _create(client, {"messages": [U("word " * 4_000)]})
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index, call-overload]
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 2000 maximum", info.value.body["error"]["message"])  # type: ignore[index, call-overload]
    fake_api.reset()
    assert fake_api.context_window is None


def test_a_session_past_the_window_says_so_in_one_line(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.context_window = 1_500
    res = result_of(run_query("x " * 4_000, cwd=workspace))
    assert res.is_error and res.result is not None
    assert res.result.startswith("The conversation is too long for the model") and "prompt is too long" in res.result
