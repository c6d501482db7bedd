"""The openai provider through the real ``openai`` client and the real loop, against a fake server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

import agent_magic as am
from agent_magic import AssistantMessage, MissingAPIKeyError, StreamEvent, UserMessage
from agent_magic.providers.openai import chat_messages
from agent_magic.testing import (
    FakeOpenAIServer,
    error,
    hang,
    message,
    raw,
    raw_tool_block,
    stream_error,
    text,
    thinking_block,
    tool_block,
    tool_use,
    tool_uses,
    truncated,
)

from .conftest import result_of, run_query

MODEL = "llama-test"
KEY = "sk-test-fake-openai-key"


@pytest.fixture
def oai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server with OPENAI_BASE_URL/OPENAI_API_KEY pointing at it."""
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with FakeOpenAIServer() as server:
        for k, v in server.env(KEY).items():
            monkeypatch.setenv(k, v)
        yield server


def ask(prompt: str, **options: Any) -> list[am.Message]:
    options.setdefault("model", MODEL)
    return run_query(prompt, provider="openai", **options)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


# --------------------------------------------------------------------------- answers


def test_text_answer(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(text("Hello from a local model."))
    msgs = ask("hi", cwd=workspace)
    res = result_of(msgs)
    assert res.subtype == "success" and res.result == "Hello from a local model."
    init = msgs[0]
    assert isinstance(init, am.SystemMessage) and init.data["provider"] == "openai" and init.data["model"] == MODEL
    body = oai.message_requests[0].body
    assert body is not None
    assert body["model"] == MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16000 and "max_completion_tokens" not in body
    assert body["messages"][0]["role"] == "system" and "agent-magic" in body["messages"][0]["content"]
    assert body["messages"][1:] == [{"role": "user", "content": "hi"}]
    tools = {t["function"]["name"]: t for t in body["tools"]}
    assert tools["Write"]["type"] == "function"
    assert tools["Write"]["function"]["parameters"]["type"] == "object"
    assert tools["Write"]["function"]["description"]
    assert oai.message_requests[0].headers["authorization"] == "<redacted>"


def test_streamed_text_deltas_in_messages_api_shape(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    answer = "Streaming works one small piece at a time."
    oai.add(text(answer, chunk_size=5))
    msgs = ask("stream it", cwd=workspace, include_partial_messages=True)
    events = [m.event for m in msgs if isinstance(m, StreamEvent)]
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert events[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [m.text_delta for m in msgs if isinstance(m, StreamEvent) and m.text_delta is not None]
    assert len(deltas) == len(answer) // 5 + 1 and "".join(deltas) == answer
    assert {"type": "content_block_stop", "index": 0} in events
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert result_of(msgs).result == answer


def test_tool_round_writes_the_file(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(tool_use("Write", {"file_path": "notes.md", "content": "# Notes\n"}, text="Writing it."), text("Wrote notes.md."))
    msgs = ask("write notes", cwd=workspace, permission_mode="acceptEdits")
    res = result_of(msgs)
    assert res.subtype == "success" and res.num_turns == 2 and res.result == "Wrote notes.md."
    assert (workspace / "notes.md").read_text() == "# Notes\n"
    first = next(m for m in msgs if isinstance(m, AssistantMessage))
    assert first.stop_reason == "tool_use" and first.tool_uses[0].input == {"file_path": "notes.md", "content": "# Notes\n"}
    sent = oai.message_requests[1].body
    assert sent is not None
    assistant = sent["messages"][2]
    assert assistant["role"] == "assistant" and assistant["content"] == "Writing it."
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "Write"
    assert json.loads(call["function"]["arguments"]) == {"file_path": "notes.md", "content": "# Notes\n"}
    results = oai.message_requests[1].tool_results
    assert len(results) == 1 and results[0]["tool_call_id"] == call["id"]
    assert "notes.md" in results[0]["content"]


def test_several_tool_calls_in_one_response(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(
        tool_uses([("Write", {"file_path": "a.txt", "content": "A"}), ("Write", {"file_path": "b.txt", "content": "B"})]),
        text("Both written."),
    )
    msgs = ask("write two files", cwd=workspace, permission_mode="acceptEdits")
    assert result_of(msgs).subtype == "success"
    assert (workspace / "a.txt").read_text() == "A" and (workspace / "b.txt").read_text() == "B"
    calls = oai.message_requests[1].body["messages"][2]["tool_calls"]  # type: ignore[index]
    results = oai.message_requests[1].tool_results
    assert len(calls) == 2 and [r["tool_call_id"] for r in results] == [c["id"] for c in calls]


def test_invalid_tool_json_is_sent_back_and_the_corrected_call_works(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(
        message(raw_tool_block("Write", '{"file_path": "out.txt", "content": "unterminated')),
        tool_use("Write", {"file_path": "out.txt", "content": "fixed"}),
        text("Fixed it."),
    )
    msgs = ask("write out.txt", cwd=workspace, permission_mode="acceptEdits")
    res = result_of(msgs)
    assert res.subtype == "success" and res.result == "Fixed it."
    first_result = next(m for m in msgs if isinstance(m, UserMessage) and not m.is_prompt)
    block = first_result.content[0]
    assert isinstance(block, am.ToolResultBlock) and block.is_error and "not valid JSON" in block.text
    sent = oai.message_requests[1].tool_results
    assert "not valid JSON" in sent[0]["content"] and sent[0]["content"].startswith("Error: ")
    assert (workspace / "out.txt").read_text() == "fixed"


def test_reasoning_becomes_thinking_and_is_not_sent_back(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(message(thinking_block("The user wants a list."), tool_block("Glob", {"pattern": "*.py"})), text("No Python files."))
    msgs = ask("list python files", cwd=workspace)
    first = next(m for m in msgs if isinstance(m, AssistantMessage))
    assert isinstance(first.content[0], am.ThinkingBlock) and first.content[0].thinking == "The user wants a list."
    assistant = oai.message_requests[1].body["messages"][2]  # type: ignore[index]
    assert assistant["content"] is None and "reasoning" not in json.dumps(assistant)


# --------------------------------------------------------------------------- failures


def test_model_without_tools_is_a_clear_error(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.tools_unsupported_models = {"tiny"}
    res = result_of(ask("hi", cwd=workspace, model="tiny"))
    assert res.subtype == "error_during_execution" and res.api_error_status == 400
    msg = res.result or ""
    assert "'tiny' cannot call tools" in msg and "AGENT_MAGIC_MODEL" in msg and "\n" not in msg
    assert len(oai.message_requests) == 1  # a 400 is not retried


FAILURES = [
    pytest.param([error(401, "invalid_request_error", f"Incorrect API key provided: {KEY}.")], "OPENAI_API_KEY", 401, id="401"),
    pytest.param([error(404, "invalid_request_error", "The model `x` does not exist")], "AGENT_MAGIC_MODEL", 404, id="404"),
    pytest.param([error(429, "rate_limit_error", "slow down")] * 3, "Rate limited", 429, id="429-after-retries"),
    pytest.param([error(429, "insufficient_quota", "You exceeded your current quota")] * 3, "quota", 429, id="quota"),
    pytest.param([error(500, "server_error", "boom")] * 3, "server error", 500, id="500"),
    pytest.param([stream_error("server_error", "The server had an error", after=3)], "stopped the answer", None, id="stream-error"),
    pytest.param([truncated(after=4)], "broke off", None, id="truncated"),
    pytest.param([raw("data: {nope\n\n")], "could not be read", None, id="malformed-sse"),
]


@pytest.mark.parametrize(("replies", "needle", "status"), FAILURES)
def test_api_failures_end_the_turn_cleanly(
    oai: FakeOpenAIServer, home: Path, workspace: Path, replies: list[dict[str, Any]], needle: str, status: int | None
) -> None:
    oai.add(text("first turn works"))
    sid = result_of(ask("hello", cwd=workspace)).session_id
    oai.add(*replies)
    res = result_of(ask("this one fails", resume=sid))
    assert res.subtype == "error_during_execution" and res.is_error
    assert needle.lower() in (res.result or "").lower()
    assert "\n" not in (res.result or "")
    assert res.api_error_status == status
    assert KEY not in (res.result or "")
    oai.add(text("recovered"))
    assert result_of(ask("try again", resume=sid)).subtype == "success"
    msgs = oai.message_requests[-1].body["messages"]  # type: ignore[index]
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["hello", "try again"]


def test_429_is_retried(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(error(429, "rate_limit_error", "slow down"), text("made it"))
    res = result_of(ask("hi", cwd=workspace))
    assert res.subtype == "success" and res.result == "made it" and len(oai.message_requests) == 2


def test_connection_refused_names_the_base_url(home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    monkeypatch.setenv("AGENT_MAGIC_MAX_RETRIES", "0")
    res = result_of(ask("hi", cwd=workspace))
    assert res.subtype == "error_during_execution"
    msg = res.result or ""
    assert "Could not connect" in msg and "OPENAI_BASE_URL" in msg and "127.0.0.1" in msg and "\n" not in msg


def test_timeout(oai: FakeOpenAIServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MAGIC_TIMEOUT", "0.5")
    monkeypatch.setenv("AGENT_MAGIC_MAX_RETRIES", "0")
    oai.add(hang(3))
    res = result_of(ask("hi", cwd=workspace))
    assert res.subtype == "error_during_execution" and "did not answer in time" in (res.result or "")


def test_interrupt_mid_stream_keeps_the_partial_answer(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(text("word " * 200, chunk_size=5, delay=0.02))

    async def go() -> tuple[am.ResultMessage, str]:
        async with am.AgentClient(am.AgentOptions(cwd=workspace, provider="openai", model=MODEL, include_partial_messages=True)) as c:
            await c.query("talk a lot")
            seen = 0
            async for m in c.receive_response():
                if isinstance(m, StreamEvent) and m.text_delta:
                    seen += 1
                    if seen == 5:
                        await c.interrupt()
                if isinstance(m, am.ResultMessage):
                    assert c.session_id is not None
                    return m, c.session_id
        raise AssertionError("no result")

    res, sid = anyio.run(go)
    assert res.subtype == "interrupted"
    saved = [m for m in am.get_session_messages(sid) if m.type == "assistant"]
    assert saved and saved[-1].message["content"][0]["text"].startswith("word word")


# --------------------------------------------------------------------------- setup


def test_key_required_only_for_openai_itself(home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        ask("hi", cwd=workspace)
    with FakeOpenAIServer() as local:
        monkeypatch.setenv("OPENAI_BASE_URL", local.base_url)  # a local server, no key
        local.add(text("no key needed"))
        assert result_of(ask("hi", cwd=workspace)).result == "no key needed"


def test_model_must_be_named(oai: FakeOpenAIServer, home: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(am.ConfigurationError, match="AGENT_MAGIC_MODEL"):
        run_query("hi", cwd=workspace, provider="openai")
    assert oai.requests == []
    monkeypatch.setenv("OPENAI_MODEL", "from-openai-model")
    oai.add(text("ok"))
    res = result_of(run_query("hi", cwd=workspace, provider="openai"))
    assert res.subtype == "success" and oai.message_requests[0].body["model"] == "from-openai-model"  # type: ignore[index]
    monkeypatch.setenv("AGENT_MAGIC_MODEL", "from-agent-magic")
    monkeypatch.setenv("AGENT_MAGIC_PROVIDER", "openai")
    oai.add(text("ok"))
    run_query("hi", cwd=workspace)
    assert oai.message_requests[-1].body["model"] == "from-agent-magic"  # type: ignore[index]


def test_server_without_stream_options(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.reject_stream_options = True
    oai.add(text("one"), text("two"))
    res = result_of(ask("hi", cwd=workspace))
    assert res.subtype == "success" and res.result == "one" and res.usage == {}
    kinds = [r.reply_kind for r in oai.requests]
    assert kinds == ["stream_options_rejected", "message"]
    assert "stream_options" not in oai.requests[1].body  # type: ignore[operator]


def test_model_that_wants_max_completion_tokens(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(
        error(400, "invalid_request_error", "Unsupported parameter: 'max_tokens' is not supported with this model. "
              "Use 'max_completion_tokens' instead."),
        text("ok"),
        text("again"),
    )

    async def go() -> None:
        async with am.AgentClient(am.AgentOptions(cwd=workspace, provider="openai", model=MODEL)) as c:
            for prompt in ("one", "two"):
                await c.query(prompt)
                assert result_of([m async for m in c.receive_response()]).subtype == "success"

    anyio.run(go)
    bodies = [r.body or {} for r in oai.message_requests]
    assert ["max_tokens" in b for b in bodies] == [True, False, False]
    assert [b.get("max_completion_tokens") for b in bodies] == [None, 16000, 16000]  # remembered


def test_usage_counted_and_cost_unknown(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(
        tool_use("Glob", {"pattern": "*"}, usage={"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 30}),
        text("done", usage={"input_tokens": 150, "output_tokens": 5}),
    )
    res = result_of(ask("count", cwd=workspace))
    assert res.usage == {"input_tokens": 250, "output_tokens": 25, "cache_read_input_tokens": 30}
    assert res.total_cost_usd is None
    assert not am.get_session_info(res.session_id).cost_known


def test_configured_price_gives_a_cost(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(text("hi", usage={"input_tokens": 1_000_000, "output_tokens": 1_000_000}))
    res = result_of(ask("x", cwd=workspace, prices={MODEL: {"input": 0.5, "output": 1.5}}))
    assert res.total_cost_usd == pytest.approx(2.0)


# --------------------------------------------------------------------------- history


def test_resume_sends_the_whole_history_in_chat_format(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    oai.add(
        tool_use("Write", {"file_path": "a.py", "content": "x = 1\n"}, text="Creating a.py."),
        text("Created a.py."),
    )
    sid = result_of(ask("create a.py", cwd=workspace, permission_mode="acceptEdits")).session_id
    oai.add(tool_use("Read", {"file_path": "a.py"}), text("It sets x to 1."))
    res = result_of(ask("what does a.py do?", resume=sid))
    assert res.subtype == "success" and res.result == "It sets x to 1."
    # The fake refuses what OpenAI refuses (unanswered tool calls, orphan tool messages).
    assert all(r.reply_kind == "message" for r in oai.requests)
    msgs = oai.message_requests[-1].body["messages"]  # type: ignore[index]
    shape = [(m["role"], bool(m.get("tool_calls"))) for m in msgs]
    assert shape == [
        ("system", False),
        ("user", False), ("assistant", True), ("tool", False), ("assistant", False),
        ("user", False), ("assistant", True), ("tool", False),
    ]
    assert msgs[1]["content"] == "create a.py" and msgs[4]["content"] == "Created a.py."
    assert msgs[3]["tool_call_id"] == msgs[2]["tool_calls"][0]["id"]
    assert "x = 1" in msgs[7]["content"]


def test_history_after_max_turns_stays_valid(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    for _ in range(3):
        oai.add(tool_use("Glob", {"pattern": "*"}))
    sid = result_of(ask("loop", cwd=workspace, max_turns=2)).session_id
    oai.add(text("fine"))
    assert result_of(ask("go on", resume=sid)).subtype == "success"
    assert oai.requests[-1].reply_kind == "message"


def test_history_conversion_of_images_and_errors() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "tool_use", "id": "c1", "name": "Read", "input": {"file_path": "p.png"}},
            {"type": "tool_use", "id": "c2", "name": "Read", "input": {"file_path": "q.png"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "PNG 2x2"}, image]},
            {"type": "tool_result", "tool_use_id": "c2", "content": "No such file", "is_error": True},
            {"type": "text", "text": "also this"},
        ]},
    ]
    out = chat_messages("sys", messages)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert out[1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}
    assert out[2]["content"] is None and [c["id"] for c in out[2]["tool_calls"]] == ["c1", "c2"]
    assert out[3] == {"role": "tool", "tool_call_id": "c1", "content": "PNG 2x2\n[image below]"}
    assert out[4]["content"] == "Error: No such file"
    assert [p["type"] for p in out[5]["content"]] == ["text", "image_url", "text"]


# --------------------------------------------------------------------------- server quirks


def test_ollama_style_stream(oai: FakeOpenAIServer, home: Path, workspace: Path) -> None:
    """Whole tool calls in one chunk, no usage, and finish_reason "stop" after tool calls."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    calls = [
        {"id": "call_a", "index": 0, "type": "function", "function": {"name": "Write", "arguments": '{"file_path": "o.txt", "content": "1"}'}},
        {"id": "call_b", "index": 1, "type": "function", "function": {"name": "Glob", "arguments": '{"pattern": "*.txt"}'}},
    ]
    oai.add(
        raw(chunk({"role": "assistant", "content": ""}) + chunk({"role": "assistant", "content": "", "tool_calls": calls})
            + chunk({"role": "assistant", "content": ""}, "stop") + "data: [DONE]\n\n"),
        text("ok"),
    )
    msgs = ask("do both", cwd=workspace, permission_mode="acceptEdits")
    first = next(m for m in msgs if isinstance(m, AssistantMessage))
    assert first.stop_reason == "tool_use" and [t.id for t in first.tool_uses] == ["call_a", "call_b"]
    assert (workspace / "o.txt").read_text() == "1"
    assert result_of(msgs).subtype == "success"


def test_fake_server_speaks_openai_without_streaming(oai: FakeOpenAIServer) -> None:
    oai.add(tool_use("Read", {"file_path": "x"}, text="Reading."), text("plain"))
    client = openai.OpenAI(base_url=oai.base_url, api_key=KEY, max_retries=0)
    try:
        c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert c.choices[0].finish_reason == "tool_calls" and c.choices[0].message.content == "Reading."
        call = c.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "Read" and json.loads(call.function.arguments) == {"file_path": "x"}  # type: ignore[union-attr]
        assert c.usage is not None and c.usage.completion_tokens > 0
        assert [m.id for m in client.models.list()] == ["fake-model"]
        with pytest.raises(openai.BadRequestError, match="did not have response messages"):
            client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "Read", "arguments": "{}"}}]},
                    {"role": "user", "content": "no tool answer"},
                ],
            )
    finally:
        client.close()
    assert oai.message_requests[0].last_prompt == "hi"
