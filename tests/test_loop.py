"""The agent loop: tool rounds, limits, API failures, missing key, consistent transcripts."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

import agent_magic as am
from agent_magic import AssistantMessage, MissingAPIKeyError, UserMessage
from agent_magic.testing import (
    FakeAnthropicServer,
    error,
    hang,
    message,
    raw,
    stream_error,
    text,
    text_block,
    tool_block,
    tool_use,
    truncated,
)

from .conftest import result_of, run_query


def test_tool_round_until_end_turn(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "data.csv").write_text("a,b\n1,2\n")
    fake_api.add(tool_use("Read", {"file_path": "data.csv"}, text="Let me look."), text("It has two columns."))
    msgs = run_query("What is in data.csv?", cwd=workspace)
    res = result_of(msgs)
    assert res.subtype == "success" and res.num_turns == 2 and res.result == "It has two columns."
    tool_results = [m for m in msgs if isinstance(m, UserMessage) and not m.is_prompt]
    assert len(tool_results) == 1
    assert tool_results[0].tool_use_result and tool_results[0].tool_use_result["tool_name"] == "Read"
    sent = fake_api.message_requests[1].tool_results
    assert len(sent) == 1 and "a,b" in json.dumps(sent[0]) and not sent[0].get("is_error")
    # the tool_use id the model sent is the one answered
    tu = fake_api.message_requests[1].body["messages"][1]["content"][1]
    assert sent[0]["tool_use_id"] == tu["id"]


def test_unknown_tool_is_an_error_result_not_a_crash(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(tool_use("Teleport", {"where": "mars"}), text("Sorry."))
    res = result_of(run_query("go", cwd=workspace))
    assert res.subtype == "success"
    sent = fake_api.message_requests[1].tool_results[0]
    assert sent["is_error"] is True and "no tool named 'Teleport'" in sent["content"]


def test_max_turns(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    for _ in range(5):
        fake_api.add(tool_use("Glob", {"pattern": "*"}))
    msgs = run_query("loop forever", cwd=workspace, max_turns=3)
    res = result_of(msgs)
    assert res.subtype == "error_max_turns" and res.is_error and res.num_turns == 3
    assert len(fake_api.message_requests) == 3
    assert "max_turns=3" in (res.result or "")
    # the transcript stays valid: every tool call has a result
    sid = res.session_id
    fake_api.add(text("resumed fine"))
    assert result_of(run_query("continue", resume=sid)).subtype == "success"
    msgs_sent = fake_api.message_requests[-1].body["messages"]
    uses = [b["id"] for m in msgs_sent if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in msgs_sent if m["role"] == "user" for b in m["content"] if b.get("type") == "tool_result"]
    assert uses == results


def test_max_budget_usd(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 1000}
    for _ in range(5):
        fake_api.add(tool_use("Glob", {"pattern": "*"}, usage=usage))
    prices = {"claude-sonnet-5-5": {"input": 1.0, "output": 1.0}}  # $0.002 per response
    res = result_of(run_query("spend", cwd=workspace, max_budget_usd=0.005, prices=prices))
    assert res.subtype == "error_max_budget_usd" and res.is_error
    assert res.num_turns == 3 and res.total_cost_usd == pytest.approx(0.006)
    fake_api.add(text("ok"))
    assert result_of(run_query("after", resume=res.session_id)).subtype == "success"


def test_budget_needs_a_known_price(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    with pytest.raises(am.ConfigurationError, match="price"):
        run_query("x", cwd=workspace, model="some-local-model", max_budget_usd=1.0)
    assert fake_api.requests == []


def test_unknown_model_cost_is_unknown_not_zero(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("hi"))
    res = result_of(run_query("x", cwd=workspace, model="mystery-model-1"))
    assert res.total_cost_usd is None
    info = am.get_session_info(res.session_id)
    assert info.total_cost_usd is None and not info.cost_known


def test_missing_api_key_before_any_request(fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        run_query("hi", cwd=workspace)
    assert fake_api.requests == []


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


FAILURES = [
    pytest.param([error(401, "authentication_error", "invalid x-api-key")], "ANTHROPIC_API_KEY", 401, id="401"),
    pytest.param([error(429, "rate_limit_error", "slow down")] * 3, "Rate limited", 429, id="429-after-retries"),
    pytest.param([error(500, "api_error", "boom")] * 3, "server error", 500, id="500"),
    pytest.param([error(529, "overloaded_error", "Overloaded")] * 3, "overloaded", 529, id="529"),
    pytest.param([stream_error("overloaded_error", "Overloaded", after=3)], "mid-stream", 529, id="stream-error"),
    pytest.param([truncated(after=4)], "broke off", None, id="truncated"),
    pytest.param([raw("event: message_start\ndata: {nope\n\n")], "could not be read", None, id="malformed-sse"),
]


@pytest.mark.parametrize(("replies", "needle", "status"), FAILURES)
def test_api_failures_end_the_turn_cleanly(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, replies: list, needle: str, status: int | None
) -> None:
    fake_api.add(text("first turn works"))
    sid = result_of(run_query("hello", cwd=workspace)).session_id
    fake_api.add(*replies)
    res = result_of(run_query("this one fails", resume=sid))
    assert res.subtype == "error_during_execution" and res.is_error
    assert needle.lower() in (res.result or "").lower()
    assert "\n" not in (res.result or "")
    assert res.api_error_status == status
    assert "sk-ant-test-fake-key" not in (res.result or "")
    # The session resumes at once, and the failed prompt is not sent twice.
    fake_api.add(text("recovered"))
    res2 = result_of(run_query("try again", resume=sid))
    assert res2.subtype == "success"
    msgs = fake_api.message_requests[-1].body["messages"]
    texts = [b["text"] for m in msgs if m["role"] == "user" for b in m["content"] if b["type"] == "text"]
    assert texts == ["hello", "try again"]


def test_429_is_retried_with_backoff(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The server asks for a 250 ms wait: the client schedules its retry after exactly that
    # (its log says so), and the retry says it is one.
    fake_api.add(error(429, "rate_limit_error", "slow down", headers={"retry-after-ms": "250"}), text("made it"))
    with caplog.at_level(logging.INFO, logger="anthropic._base_client"):
        res = result_of(run_query("hi", cwd=workspace))
    assert res.subtype == "success" and res.result == "made it"
    first, retry = fake_api.message_requests
    assert first.reply_kind == "error" and retry.body == first.body
    assert [r.headers.get("x-stainless-retry-count") for r in (first, retry)] == ["0", "1"]
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Retrying request")]
    assert len(waits) == 1 and waits[0].endswith(" in 0.250000 seconds"), waits


def test_connection_refused(home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AGENT_MAGIC_MAX_RETRIES", "0")
    res = result_of(run_query("hi", cwd=workspace))
    assert res.subtype == "error_during_execution"
    assert "Could not connect" in (res.result or "") and "ANTHROPIC_BASE_URL" in (res.result or "")


def test_timeout(fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MAGIC_TIMEOUT", "0.5")
    monkeypatch.setenv("AGENT_MAGIC_MAX_RETRIES", "0")
    fake_api.add(hang(3))
    res = result_of(run_query("hi", cwd=workspace))
    assert res.subtype == "error_during_execution" and "did not answer in time" in (res.result or "")


def test_thinking_blocks_round_trip(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    from agent_magic.testing import message, thinking_block, tool_block

    fake_api.add(
        message(thinking_block("Let me think.", "sig-1"), tool_block("Glob", {"pattern": "*.py"})),
        text("Nothing found."),
    )
    msgs = run_query("find python files", cwd=workspace)
    assistants = [m for m in msgs if isinstance(m, AssistantMessage)]
    assert isinstance(assistants[0].content[0], am.ThinkingBlock)
    sent = fake_api.message_requests[1].body["messages"][1]["content"][0]
    assert sent == {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"}


def test_a_client_warning_is_a_note_once_never_a_failure(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The installed client warns (DeprecationWarning) for models on its deprecation list; which
    # models and dates change with every release, so a made-up name is put on the list. With
    # warnings as errors (pytest's filterwarnings), the turn must still succeed.
    from anthropic.resources.messages import messages as client_messages

    model = "fake-model-retired"
    monkeypatch.setitem(client_messages.DEPRECATED_MODELS, model, "the day after tomorrow")
    fake_api.add(text("first"), text("second"))
    first = run_query("one", cwd=workspace, model=model)
    assert result_of(first).subtype == "success" and result_of(first).result == "first"
    notes = [m.data["message"] for m in first if isinstance(m, am.SystemMessage) and m.subtype == "warning"]
    assert len(notes) == 1 and f"The model '{model}' is deprecated" in notes[0] and "the day after tomorrow" in notes[0]
    assert "\n" not in notes[0]
    # Said once: the next turn (another query in this process) is quiet.
    second = run_query("two", cwd=workspace, model=model, resume=result_of(first).session_id)
    assert result_of(second).subtype == "success"
    assert not [m for m in second if isinstance(m, am.SystemMessage) and m.subtype == "warning"]
    assert [r.body["model"] for r in fake_api.message_requests] == [model, model]


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param([message(text_block(""), tool_block("Glob", {"pattern": "*.txt"})), text("done")], id="empty-text-before-a-tool-call"),
        pytest.param([text(" \n")], id="whitespace-only-answer"),
    ],
)
def test_text_that_says_nothing_is_not_sent_back(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, replies: list[dict[str, Any]]
) -> None:
    # Models do send these; the API refuses them in the conversation ("text content blocks must
    # be non-empty" / "... non-whitespace text"), which left the session unable to go on.
    fake_api.add(*replies, text("next answer"))
    first = result_of(run_query("go", cwd=workspace))
    assert first.subtype == "success"
    second = result_of(run_query("and now?", cwd=workspace, resume=first.session_id))
    assert second.subtype == "success" and second.result == "next answer"
    assert all(r.refused is None for r in fake_api.requests)
