"""The fake APIs compact, edit context and answer summary requests as the real ones do (issue #15).

Everything goes through the official ``anthropic`` and ``openai`` clients, so the
shapes are the ones the clients parse: the beta ``compaction`` block (streamed as
one ``compaction_delta``), ``usage.iterations``, ``context_management.applied_edits``,
and the 400s for what the API refuses (a trigger under 50,000 tokens, an edit
without its beta header, an edited compaction block, bad ``thinking`` or effort,
a conversation past the context window).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import anyio
import openai
import pytest
from anthropic.types.beta import (
    BetaClearToolUses20250919EditResponse,
    BetaCompactionBlock,
    BetaCompactionIterationUsage,
    BetaMessage,
    BetaMessageIterationUsage,
    BetaTextBlock,
)

from agent_magic.testing import FakeAnthropicServer, FakeOpenAIServer, message, text, text_block
from agent_magic.testing._replies import compaction_block

MODEL = FakeAnthropicServer.models[1]
COMPACT = "compact-2026-01-12"
EDITING = "context-management-2025-06-27"
#: About 60,000 input tokens (the server counts four bytes a token).
LONG = "lorem ipsum " * 20_000
SUMMARY_PROMPT = (
    "Your task is to create a detailed summary of the conversation so far. "
    "You must wrap your summary in a <summary></summary> block."
)


def U(content: Any) -> Any:
    return {"role": "user", "content": content}


def A(content: Any) -> Any:
    return {"role": "assistant", "content": content}


def compact(value: int = 50_000, **extra: Any) -> Any:
    return {"edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": value}, **extra}]}


def sent_back(m: BetaMessage) -> list[dict[str, Any]]:
    """A response's content as a client sends it back (every field, as the client dumps it)."""
    return [b.model_dump() for b in m.content]


@pytest.fixture
def client(fake_api: FakeAnthropicServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake_api.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


@pytest.fixture
def oai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def oai_client(oai: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=oai.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def _beta(client: anthropic.Anthropic, messages: list[Any], **kw: Any) -> BetaMessage:
    kw.setdefault("betas", [COMPACT])
    m: BetaMessage = client.beta.messages.create(model=MODEL, max_tokens=256, messages=messages, **kw)
    return m


def first_text(m: Any) -> str:
    """The text of a response's first block (which must be text)."""
    block = m.content[0]
    assert block.type == "text", block
    return str(block.text)


def _refusal(call: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


# -- server-side compaction ---------------------------------------------------------


def test_compaction_fires_above_the_trigger_and_streams_as_the_api_does(
    client: anthropic.Anthropic, fake_api: FakeAnthropicServer
) -> None:
    fake_api.add(text("It says hello."))
    # A tool round whose result takes the input past the trigger.
    history: list[Any] = [U("read a.txt"), A([{"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "a.txt"}}]),
               U([{"type": "tool_result", "tool_use_id": "toolu_01", "content": LONG}])]
    deltas: list[str] = []

    async def go() -> BetaMessage:
        async with (
            anthropic.AsyncAnthropic(base_url=fake_api.url, api_key="sk-ant-test", max_retries=0) as ac,
            ac.beta.messages.stream(
                model=MODEL, max_tokens=256, messages=history, betas=[COMPACT],
                context_management=compact(instructions="Keep the file names."),
            ) as stream,
        ):
            async for event in stream:
                if event.type == "content_block_delta":
                    deltas.append(event.delta.type)
            return await stream.get_final_message()

    final = anyio.run(go)
    block, answer = final.content
    assert isinstance(block, BetaCompactionBlock) and isinstance(answer, BetaTextBlock)
    assert answer.text == "It says hello."
    assert deltas.count("compaction_delta") == 1 and deltas[0] == "compaction_delta"
    assert block.content == (
        "Summary of the conversation so far: 1 prompt, 1 tool call.\n"
        "Prompts:\n- read a.txt\nTools used: Read\nInstructions: Keep the file names."
    )
    assert block.encrypted_content
    usage = final.usage
    assert usage.iterations is not None
    compaction, msg = usage.iterations
    assert isinstance(compaction, BetaCompactionIterationUsage) and isinstance(msg, BetaMessageIterationUsage)
    assert compaction.input_tokens > 60_000 and compaction.output_tokens > 0
    # The top level is the message's, which read only the compacted context.
    assert usage.input_tokens == msg.input_tokens < 1_000 and usage.output_tokens == msg.output_tokens
    assert final.stop_reason == "end_turn"
    (rec,) = fake_api.requests
    assert rec.reply_kind == "message" and rec.compaction == block.content and fake_api.compactions == [rec]
    assert rec.input_tokens == usage.input_tokens and rec.betas == [COMPACT]


def test_no_compaction_below_the_trigger(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("short answer"))
    with client.beta.messages.stream(
        model=MODEL, max_tokens=256, messages=[U("tell me " + LONG)], betas=[COMPACT],
        context_management=compact(100_000),
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text"]
    assert final.usage.iterations is None and final.usage.input_tokens > 60_000
    assert final.context_management is not None and final.context_management.applied_edits == []
    assert fake_api.compactions == [] and fake_api.requests[0].compaction is None


def test_non_streamed_compaction_parses_into_the_beta_types(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("Answer."))
    m = _beta(client, [U("first question " + LONG), A("first answer"), U("second question")], context_management=compact())
    assert isinstance(m.content[0], BetaCompactionBlock) and m.content[1].type == "text"
    content = m.content[0].content or ""
    # Every prompt summarised, by its first 80 characters.
    assert "- first question lorem ipsum" in content and "- second question" in content
    assert "Summary of the conversation so far: 2 prompts, 0 tool calls." in content
    assert "Instructions:" not in content
    assert m.usage.iterations is not None
    assert [it.type for it in m.usage.iterations] == ["compaction", "message"]


def test_pause_after_compaction_returns_the_block_alone(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.on_prompt("summarise the log", text("step one"), text("step two"))
    history = [U("summarise the log " + LONG)]
    paused = _beta(client, history, context_management=compact(pause_after_compaction=True))
    assert paused.stop_reason == "compaction"
    assert [b.type for b in paused.content] == ["compaction"]
    assert paused.usage.iterations is not None and [it.type for it in paused.usage.iterations] == ["compaction"]
    assert paused.usage.input_tokens == 0 and paused.usage.output_tokens == 0
    assert fake_api.requests[-1].reply_kind == "compaction"
    # Continue from the compaction block: the rule's first step answers (the pause is no step),
    # and the model reads only the summary.
    history.append(A(sent_back(paused)))
    resumed = _beta(client, history, context_management=compact(pause_after_compaction=True))
    assert resumed.stop_reason == "end_turn" and first_text(resumed) == "step one"
    assert resumed.usage.iterations is None and resumed.usage.input_tokens < 1_000


def test_a_returned_compaction_block_hides_what_came_before(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("first"), text("second"), text("third"))
    history = [U("question one " + LONG)]
    first = _beta(client, history, context_management=compact())
    assert first.usage.iterations is not None and first.usage.iterations[0].input_tokens > 60_000
    assert fake_api.requests[-1].input_tokens == first.usage.input_tokens < 1_000
    history += [A(sent_back(first)), U("question two")]
    # The whole history is well past this window; what the API reads of it is not.
    fake_api.context_window = 5_000
    second = _beta(client, history, context_management=compact())
    assert first_text(second) == "second"
    assert second.usage.input_tokens < 1_000 and second.usage.iterations is None
    # The same history without the compaction block is read whole, and refused.
    without = [*history[:1], A([b for b in sent_back(first) if b["type"] != "compaction"]), history[2]]
    message_ = _refusal(lambda: _beta(client, without))
    assert re.fullmatch(r"prompt is too long: (\d+) tokens > 5000 maximum", message_)
    # The documented form: the compaction block first, then the messages kept.
    kept = [A([sent_back(first)[0]]), U("question three")]
    assert first_text(_beta(client, kept)) == "third"


def test_summaries_carry_over_an_earlier_summary(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("a"), text("b"))
    first = _beta(client, [U("alpha prompt " + LONG)], context_management=compact())
    history = [A([sent_back(first)[0]]), U("beta prompt " + LONG)]
    second = _beta(client, history, context_management=compact())
    assert isinstance(second.content[0], BetaCompactionBlock)
    content = second.content[0].content or ""
    assert content.startswith("Summary of the conversation so far: 1 prompt, 0 tool calls.\nEarlier summary:\n")
    assert "  - alpha prompt" in content and "\n- beta prompt" in content


def test_an_altered_compaction_block_is_refused(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("ok"))
    first = _beta(client, [U("q " + LONG)], context_management=compact())
    block = sent_back(first)[0]
    edited = [A([{**block, "content": block["content"] + " And the user likes cats."}]), U("go on")]
    assert _refusal(lambda: _beta(client, edited)) == "messages.0.content.0: Invalid `encrypted_content` in `compaction` block"
    unsealed = [A([{"type": "compaction", "content": block["content"]}]), U("go on")]
    assert _refusal(lambda: _beta(client, unsealed)) == "messages.0.content.0: Invalid `encrypted_content` in `compaction` block"
    empty = [A([{**block, "content": ""}]), U("go on")]
    assert _refusal(lambda: _beta(client, empty)).startswith("messages.0.content.0: `compaction` content must be non-empty")
    from_user = [U([block, {"type": "text", "text": "go on"}])]
    assert _refusal(lambda: _beta(client, from_user)) == "messages.0.content.0: `compaction` blocks can only be in `assistant` messages"
    assert all(r.reply_kind == "invalid" for r in fake_api.requests[1:])


def test_compaction_blocks_the_api_accepts(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("one"))
    # A failed compaction (content null) is a no-op, even first.
    assert first_text(_beta(client, [A([{"type": "compaction", "content": None}]), U("hi")])) == "one"
    # A scripted compaction block, sealed by the server, comes back with a cache mark.
    fake_api.reset()
    fake_api.add(message(compaction_block("We talked about a.txt."), text_block("Carrying on.")), text("two"))
    m = _beta(client, [U("hi")])
    assert isinstance(m.content[0], BetaCompactionBlock) and m.content[0].content == "We talked about a.txt."
    assert m.usage.iterations is None  # scripted, not a compaction the server ran
    marked = [A([sent_back(m)[0] | {"cache_control": {"type": "ephemeral"}}]), U("and then?")]
    assert first_text(_beta(client, marked)) == "two"
    # Blocks before the last compaction block are not read: an unanswered tool call there is no error.
    fake_api.add(text("three"))
    stale = [U("old"), A([{"type": "tool_use", "id": "toolu_09", "name": "Read", "input": {}}]), A(sent_back(m)), U("new")]
    assert first_text(_beta(client, stale)) == "three"
    assert fake_api.requests[-1].last_prompt == "new"


# -- what the API refuses -----------------------------------------------------------------------

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("trigger-under-50000", {"betas": [COMPACT], "context_management": compact(49_999)},
     "context_management.edits.0.compact_20260112.trigger.value: Input should be greater than or equal to 50000"),
    ("no-beta-header", {"context_management": compact()},
     "context_management.edits.0: the 'compact_20260112' edit requires the beta header 'anthropic-beta: compact-2026-01-12'"),
    ("compaction-without-its-beta", {"betas": [EDITING], "context_management": compact()},
     "context_management.edits.0: the 'compact_20260112' edit requires the beta header 'anthropic-beta: compact-2026-01-12'"),
    ("editing-without-its-beta", {"betas": [COMPACT], "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
     "context_management.edits.0: the 'clear_tool_uses_20250919' edit requires the beta header "
     "'anthropic-beta: context-management-2025-06-27'"),
    ("unknown-edit", {"betas": [COMPACT, EDITING], "context_management": {"edits": [{"type": "compact_20250101"}]}},
     "context_management.edits.0: Input tag 'compact_20250101' found using 'type' does not match any of the expected tags: "
     "'clear_tool_uses_20250919', 'clear_thinking_20251015', 'compact_20260112'"),
    ("unknown-edit-field", {"betas": [COMPACT], "context_management": compact(summary_model="haiku")},
     "context_management.edits.0.compact_20260112.summary_model: Extra inputs are not permitted"),
    ("thinking-unknown-type", {"thinking": {"type": "deep"}},
     "thinking: Input tag 'deep' found using 'type' does not match any of the expected tags: "
     "'enabled', 'disabled', 'adaptive', 'between_tools'"),
    ("thinking-budget-too-small", {"thinking": {"type": "enabled", "budget_tokens": 1023}, "max_tokens": 4096},
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("thinking-budget-not-below-max-tokens", {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
     "`max_tokens` must be greater than `thinking.budget_tokens`.…"),
    ("thinking-enabled-without-budget", {"thinking": {"type": "enabled"}},
     "thinking.enabled.budget_tokens: Field required"),
    ("thinking-adaptive-with-budget", {"thinking": {"type": "adaptive", "budget_tokens": 2048}},
     "thinking.adaptive.budget_tokens: Extra inputs are not permitted"),
    ("thinking-bad-display", {"thinking": {"type": "adaptive", "display": "full"}},
     "thinking.adaptive.display: Input should be 'summarized' or 'omitted'"),
    ("effort-unknown", {"output_config": {"effort": "extreme"}},
     "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"),
]


@pytest.mark.parametrize(("fields", "expected"), [pytest.param(f, m, id=i) for i, f, m in REFUSED])
def test_the_api_refuses_it(client: anthropic.Anthropic, fake_api: FakeAnthropicServer, fields: dict[str, Any], expected: str) -> None:
    fake_api.add(text("never sent"))
    kw = {"max_tokens": 256, **fields}
    got = _refusal(lambda: client.beta.messages.create(model=MODEL, messages=[U("hi")], **kw))
    if expected.endswith("…"):
        assert got.startswith(expected[:-1]), got
    else:
        assert got == expected
    assert fake_api.pending == 1 and fake_api.requests[0].refused == got


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "adaptive"}, "low"),
        ({"type": "adaptive", "display": "omitted"}, "xhigh"),
        ({"type": "enabled", "budget_tokens": 1024}, "max"),
        ({"type": "disabled"}, "medium"),
        (None, "high"),
    ],
)
def test_thinking_and_effort_the_api_accepts(
    client: anthropic.Anthropic, fake_api: FakeAnthropicServer, thinking: dict[str, Any] | None, effort: str
) -> None:
    fake_api.add(text("fine"))
    kw: dict[str, Any] = {"output_config": {"effort": effort}}
    if thinking is not None:
        kw["thinking"] = thinking
    m = client.messages.create(model=MODEL, max_tokens=2048, messages=[U("hi")], **kw)
    assert m.content[0].type == "text"
    (rec,) = fake_api.requests
    assert rec.refused is None and rec.thinking == thinking and rec.effort == effort


# -- context editing -----------------------------------------------------------------------------


def _tool_rounds(names: list[str], result: str) -> list[Any]:
    msgs: list[Any] = [U("look at the files")]
    for k, name in enumerate(names):
        tid = f"toolu_{k:02d}"
        msgs += [A([{"type": "tool_use", "id": tid, "name": name, "input": {"file_path": f"f{k}.txt"}}]),
                 U([{"type": "tool_result", "tool_use_id": tid, "content": result}])]
    return msgs


def _clear(**edit: Any) -> Any:
    return {"edits": [{"type": "clear_tool_uses_20250919", **edit}]}


def test_context_editing_clears_old_tool_results(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    history = _tool_rounds(["Read", "Grep", "Read", "Read", "Read"], "x" * 8_000)  # ~2,000 tokens per result
    trigger = {"type": "input_tokens", "value": 5_000}
    fake_api.add(text("a"), text("b"), text("c"), text("d"))
    with client.beta.messages.stream(
        model=MODEL, max_tokens=256, messages=history, betas=[EDITING],
        context_management=_clear(trigger=trigger, keep={"type": "tool_uses", "value": 2}),
    ) as stream:
        cleared = stream.get_final_message()
    assert cleared.context_management is not None
    (edit,) = cleared.context_management.applied_edits
    assert isinstance(edit, BetaClearToolUses20250919EditResponse) and edit.cleared_tool_uses == 3
    assert 5_000 < edit.cleared_input_tokens < 6_500
    rec = fake_api.requests[-1]
    assert rec.applied_edits == [edit.model_dump()]
    # The full history stays with the client: the edit only changes what the model reads.
    full = _beta(client, history, betas=[EDITING], context_management=_clear(trigger={"type": "input_tokens", "value": 100_000}))
    assert full.context_management is not None and full.context_management.applied_edits == []
    # (The two requests' own settings differ by a few bytes.)
    assert abs(full.usage.input_tokens - cleared.usage.input_tokens - edit.cleared_input_tokens) < 20
    # exclude_tools keeps Grep's result; clear_at_least past what can be cleared clears nothing.
    spared = _beta(client, history, betas=[EDITING], context_management=_clear(
        trigger=trigger, keep={"type": "tool_uses", "value": 2}, exclude_tools=["Grep"]))
    assert spared.context_management is not None
    assert spared.context_management.applied_edits[0].model_dump()["cleared_tool_uses"] == 2
    kept = _beta(client, history, betas=[EDITING], context_management=_clear(
        trigger=trigger, clear_at_least={"type": "input_tokens", "value": 50_000}))
    assert kept.context_management is not None and kept.context_management.applied_edits == []


def test_context_editing_by_tool_uses_and_inputs(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    history = _tool_rounds(["Read"] * 6, "a result long enough to be worth clearing")
    fake_api.add(text("done"))
    m = _beta(client, history, betas=[EDITING], context_management=_clear(
        trigger={"type": "tool_uses", "value": 5}, clear_tool_inputs=True))
    assert m.context_management is not None
    (edit,) = m.context_management.applied_edits
    assert isinstance(edit, BetaClearToolUses20250919EditResponse)
    assert edit.cleared_tool_uses == 3  # six calls, the last three kept (the default)
    assert edit.cleared_input_tokens > 0


def test_context_editing_and_compaction_together(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    # Results cleared first bring the input under the compaction trigger: no compaction.
    history = _tool_rounds(["Read"] * 5, "y" * 60_000)  # ~75,000 tokens of results
    fake_api.add(text("fine"))
    edits = {"edits": [_clear(trigger={"type": "input_tokens", "value": 50_000})["edits"][0], compact()["edits"][0]]}
    m = _beta(client, history, betas=[COMPACT, EDITING], context_management=edits)
    assert m.context_management is not None
    assert m.context_management.applied_edits[0].model_dump()["cleared_tool_uses"] == 2
    assert [b.type for b in m.content] == ["text"] and m.usage.iterations is None


# -- client-side summary requests ---------------------------------------------------------------------


def test_a_summary_request_is_answered_before_the_script(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("queued reply"))
    fake_api.on_prompt("summary", text("rule reply"))
    conversation = [
        U("plot the sales data"),
        A([{"type": "tool_use", "id": "toolu_01", "name": "NotebookEdit", "input": {"cell": 1}}]),
        U([{"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"}]),
        A("Plotted."),
        U(SUMMARY_PROMPT + "\n\nFocus on the chart   settings."),
    ]
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=conversation) as stream:
        answer = stream.get_final_text()
    assert answer == (
        "<summary>\nSummary of the conversation so far: 1 prompt, 1 tool call.\n"
        "Prompts:\n- plot the sales data\nTools used: NotebookEdit\nInstructions: Focus on the chart settings.\n</summary>"
    )
    assert fake_api.pending == 1  # the queue was not used
    (rec,) = fake_api.summary_requests
    assert rec.reply_kind == "summary" and fake_api.message_requests == [rec]
    # A test can set the summary: text, or a function of the request.
    fake_api.summary_text = "They plotted sales."
    again = client.messages.create(model=MODEL, max_tokens=1024, messages=conversation)
    assert again.content[0].type == "text" and again.content[0].text == "<summary>\nThey plotted sales.\n</summary>"
    fake_api.summary_text = lambda body: f"{len(body['messages'])} messages"
    again = client.messages.create(model=MODEL, max_tokens=1024, messages=conversation)
    assert again.content[0].type == "text" and again.content[0].text == "<summary>\n5 messages\n</summary>"
    # An ordinary request still gets the queue.
    plain = client.messages.create(model=MODEL, max_tokens=64, messages=[U("hi")])
    assert plain.content[0].type == "text" and plain.content[0].text == "queued reply"
    assert len(fake_api.summary_requests) == 3
    fake_api.reset()
    assert fake_api.summary_text is None


def test_a_summary_set_by_the_test_is_the_compaction_too(client: anthropic.Anthropic, fake_api: FakeAnthropicServer) -> None:
    fake_api.summary_text = "Short story."
    fake_api.add(text("ok"))
    m = _beta(client, [U("q " + LONG)], context_management=compact())
    assert isinstance(m.content[0], BetaCompactionBlock) and m.content[0].content == "Short story."


# -- the OpenAI-compatible fake ---------------------------------------------------------------------


def test_openai_context_window(oai: FakeOpenAIServer, oai_client: openai.OpenAI) -> None:
    oai.context_window = 1_000
    oai.add(text("fits"), text("never sent"))
    short = oai_client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "short"}])
    assert short.choices[0].message.content == "fits"
    with pytest.raises(openai.BadRequestError) as info:
        oai_client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x " * 3_000}])
    e = info.value
    assert e.status_code == 400 and e.code == "context_length_exceeded" and e.param == "messages"
    assert isinstance(e.body, dict)
    m = re.fullmatch(
        r"This model's maximum context length is 1000 tokens\. However, your messages resulted in (\d+) tokens\. "
        r"Please reduce the length of the messages\.",
        e.body["message"],
    )
    assert m is not None and int(m.group(1)) == oai.requests[-1].input_tokens and int(m.group(1)) > 1_500
    assert oai.requests[-1].refused == e.body["message"] and oai.pending == 1
    oai.reset()
    assert oai.context_window is None and oai.pending == 0


def test_openai_summary_request(oai: FakeOpenAIServer, oai_client: openai.OpenAI) -> None:
    oai.add(text("queued"))
    msgs: list[Any] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "count the rows"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "content": "42 rows."},
        {"role": "user", "content": SUMMARY_PROMPT + "\nKeep numbers."},
    ]
    out = oai_client.chat.completions.create(model="fake-model", messages=msgs)
    assert out.choices[0].message.content == (
        "<summary>\nSummary of the conversation so far: 1 prompt, 1 tool call.\n"
        "Prompts:\n- count the rows\nTools used: Bash\nInstructions: Keep numbers.\n</summary>"
    )
    assert oai.pending == 1 and [r.reply_kind for r in oai.summary_requests] == ["summary"]


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", "max"])
def test_openai_reasoning_effort_accepted(oai: FakeOpenAIServer, oai_client: openai.OpenAI, effort: str) -> None:
    oai.add(text("ok"))
    out = oai_client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], reasoning_effort=effort  # type: ignore[call-overload]
    )
    assert out.choices[0].message.content == "ok" and oai.requests[0].effort == effort


def test_openai_reasoning_effort_refused(oai: FakeOpenAIServer, oai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai_client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}], reasoning_effort="extreme"  # type: ignore[call-overload]
        )
    assert info.value.code == "invalid_value" and info.value.param == "reasoning_effort"
    assert isinstance(info.value.body, dict)
    assert info.value.body["message"] == (
        "Invalid value: 'extreme'. Supported values are: 'none', 'minimal', 'low', 'medium', 'high', 'xhigh', and 'max'."
    )
