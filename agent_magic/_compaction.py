"""Keeping a session inside the model's context window: clearing, then compaction.

Before each model request the loop calls :func:`prepare_request`. Under the
threshold (``compact_threshold`` of the window) nothing happens. Above it, old
tool results are cleared from what is sent (a ``context_edit`` line in the
transcript says which); if the conversation is still too big, it is compacted:

- **server** (the Anthropic API's ``compact_20260112``, where the model has it):
  the request carries the trigger and the API answers with a ``compaction``
  block first; :func:`record_server_compaction` writes the boundary.
- **client** (every other case, and ``%agent compact``): a summary request to the
  same provider, with the same system prompt and tools so the prompt cache still
  serves the conversation; :func:`compact_client` writes the boundary.

A boundary is one transcript line (``type: system``, ``subtype:
compact_boundary``) holding the summary and the turn count. Nothing before it
is deleted: checkpoints before it still rewind, and a fork up to a message
before it has the whole uncompacted history. The current turn's lines are
carried over the boundary verbatim (copies marked ``carried``), so the model
keeps the request it is working on and its progress.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ._context import (
    MIN_SERVER_TRIGGER,
    clear_results,
    compaction_mode,
    context_window_for,
    json_chars,
    tool_results_to_clear,
    usage_tokens,
)
from ._errors import CompactionError, ConfigurationError, ProviderError
from ._hooks import run_hooks
from ._messages import SystemMessage
from ._pricing import add_usage, cost_usd, price_for
from .providers.base import ModelRequest, PartialResponse
from .store.transcript import (
    SUMMARY_INTRO,
    build_api_messages,
    is_boundary,
    is_prompt_entry,
    prompt_text,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._loop import Runtime, _Turn
    from ._messages import Message

    Emit = Callable[[Message], Awaitable[None]]

#: The instruction of a client-side summary request. The literal ``<summary></summary>`` is
#: what Anthropic's own compaction prompt asks for; the fake API server answers requests with it.
SUMMARY_PROMPT = """\
The conversation above is about to be replaced by a summary, because it no longer fits the model's context. \
Write that summary now so the work can continue from it without the raw history. Keep, concisely:
1. The person's task and every request they made, in their words where the wording matters.
2. Decisions taken and why; approaches that failed and why.
3. Files and notebook cells read or changed: paths, cell ids, and what each holds or was changed to.
4. Kernel variables in use: names, types, shapes, what they hold.
5. Errors met and how they were fixed; open problems; the next steps.
Respond with text only and call no tools. You must wrap your summary in a <summary></summary> block."""

#: Output tokens a summary may take.
SUMMARY_MAX_TOKENS = 8192
#: After clearing, compact anyway when the conversation still fills more than this share of the threshold:
#: clearing again and again a few turns apart would rewrite the prompt cache each time.
_CLEAR_IS_ENOUGH = 0.7


def fixed_chars(rt: Runtime) -> int:
    """Characters of what every request carries besides the messages: system prompt and tools.

    Counted once per runtime (both are fixed for its life); every estimate needs it.
    """
    if rt.fixed_chars is None:
        rt.fixed_chars = len(rt.system_prompt) + sum(json_chars(t.spec()) for t in rt.tools.values())
    return rt.fixed_chars


def window(rt: Runtime) -> int:
    """The context window in tokens: one the API reported, else the option's or the table's."""
    return rt.learned_window or context_window_for(rt.model, rt.options.context_window)


def threshold(rt: Runtime) -> int:
    return int(window(rt) * rt.options.compact_threshold)


def effective_mode(rt: Runtime) -> str:
    """``server``, ``client`` or ``off`` for this session now."""
    mode = compaction_mode(rt.options.compaction)
    if mode in ("client", "off"):
        return mode
    server_ok = rt.provider.name == "anthropic" and threshold(rt) >= MIN_SERVER_TRIGGER
    if mode == "server":
        if rt.provider.name != "anthropic":
            raise ConfigurationError(
                f"compaction='server' needs the Anthropic API; the {rt.provider.name} provider compacts with 'client' (or 'auto')."
            )
        if not server_ok:
            raise ConfigurationError(
                f"compaction='server' needs a trigger of at least {MIN_SERVER_TRIGGER:,} tokens, and "
                f"{rt.options.compact_threshold:g} of a {window(rt):,}-token window is less; use compaction='client' or 'auto'."
            )
        return "server"
    from ._context import model_info

    if server_ok and model_info(rt.model).get("server_compaction") and not rt.server_compaction_refused:
        return "server"
    return "client"


def server_trigger(rt: Runtime) -> int | None:
    """The ``compact_20260112`` trigger to send with requests, or None."""
    return max(MIN_SERVER_TRIGGER, threshold(rt)) if effective_mode(rt) == "server" else None


def estimate(rt: Runtime, messages: list[dict[str, Any]]) -> int:
    return rt.meter.estimate(fixed_chars(rt), messages, same_prefix=rt.meter_version == rt.context_version)


def context_tokens(rt: Runtime) -> int:
    """Tokens the session's conversation holds now (what the next request would carry, before a new prompt)."""
    return estimate(rt, rt.session.api_messages())


def measure(rt: Runtime, sent: list[dict[str, Any]], usage: dict[str, Any] | None) -> None:
    """Learn from a response's usage (``sent``: the request's messages plus the answer)."""
    rt.meter.measure(fixed_chars(rt), sent, usage)
    rt.meter_version = rt.context_version


def _changed(rt: Runtime) -> None:
    """What is sent changed before its end: the next estimate starts afresh."""
    rt.context_version += 1


async def prepare_request(rt: Runtime, turn: _Turn, emit: Emit, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages to send next: as they are, with old tool results cleared, or compacted."""
    limit = threshold(rt)
    tokens = estimate(rt, messages)
    if tokens <= limit:
        return messages
    s = rt.session
    ids, _ = tool_results_to_clear(messages, s.cleared_ids())
    if ids:
        cleared = clear_results(messages, set(ids))
        shrunk = sum(json_chars(m) for m in messages) - sum(json_chars(m) for m in cleared)
        saved = int(shrunk / rt.meter.chars_per_token)
        s.append({"type": "context_edit", "cleared": ids, "tokens_saved": saved})
        _changed(rt)
        messages = s.api_messages()
        tokens = estimate(rt, messages)
        await emit(SystemMessage("context_cleared", {"tool_results": len(ids), "tokens_saved": saved, "context_tokens": tokens}))
        if tokens <= limit * _CLEAR_IS_ENOUGH:
            return messages
    mode = effective_mode(rt)
    if mode == "off" or (mode == "server" and tokens <= window(rt)):
        return messages  # a server-side compaction happens in the request itself
    try:
        await compact_client(rt, emit, trigger="auto", turn=turn)
    except CompactionError:
        return messages  # nothing before this turn: send it; the API says if it is too long
    return s.api_messages()


def _summary_text(content: list[dict[str, Any]]) -> str:
    text = "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text").strip()
    m = re.search(r"<summary>(.*?)(?:</summary>|$)", text, re.S)
    return (m.group(1) if m else text).strip()


def _fit(rt: Runtime, conv: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """``conv`` cut to ``budget`` tokens for a summary request: every tool result cleared, then the oldest messages dropped."""
    if rt.meter.estimate(fixed_chars(rt), conv, same_prefix=False) <= budget:
        return conv
    ids, _ = tool_results_to_clear(conv, (), keep_recent=0)
    conv = clear_results(conv, set(ids))
    while len(conv) > 2 and rt.meter.estimate(fixed_chars(rt), conv, same_prefix=False) > budget:
        conv = conv[2:]  # a user message and the answer to it
        while conv and (conv[0]["role"] != "user" or any(b.get("type") == "tool_result" for b in conv[0]["content"])):
            conv = conv[1:]
    return conv


async def compact_client(
    rt: Runtime, emit: Emit | None, *, trigger: str, instructions: str | None = None, turn: _Turn | None = None
) -> SystemMessage:
    """Summarise the conversation before the current turn with the session's own provider; write the boundary.

    Raises
    ------
    CompactionError
        Nothing to compact yet, or the model gave no summary.
    ProviderError
        The summary request failed.
    """
    s = rt.session
    before, kept = _split_turn(s.entries, turn)
    raw = build_api_messages(before)
    conv = _summarisable(raw)
    # Something to summarise: answers, or the API's own summary of what came before.
    if not any(m["role"] == "assistant" for m in conv) and conv == raw:
        raise CompactionError("There is nothing to compact yet: the conversation has no answers before this turn.")
    pre_tokens = estimate(rt, s.api_messages())

    outcome = await run_hooks(
        rt.options.hooks,
        "PreCompact",
        {
            "hook_event_name": "PreCompact",
            "session_id": s.session_id,
            "transcript_path": rt.transcript_path,
            "cwd": str(s.cwd),
            "permission_mode": rt.permission_mode,
            "trigger": trigger,
            "custom_instructions": instructions,
        },
    )
    if emit is not None:
        for err in outcome.errors:
            await emit(SystemMessage("hook_error", {"message": err}))
        for msg in outcome.system_messages:
            await emit(SystemMessage("hook", {"message": msg}))
    if emit is not None:
        await emit(SystemMessage("compacting", {"trigger": trigger}))
    focus = [x for x in [instructions, *outcome.additional_context] if x and x.strip()]
    ask = SUMMARY_PROMPT + ("\n\nFocus the summary on: " + "\n".join(focus) if focus else "")

    budget = window(rt) - SUMMARY_MAX_TOKENS - 2000
    conv = _fit(rt, conv, budget)
    if conv and conv[-1]["role"] == "user":
        conv = [*conv[:-1], {"role": "user", "content": [*conv[-1]["content"], {"type": "text", "text": ask}]}]
    else:
        conv = [*conv, {"role": "user", "content": [{"type": "text", "text": ask}]}]
    request = ModelRequest(
        model=rt.model,
        system=rt.system_prompt,
        messages=conv,
        tools=[t.spec() for t in rt.tools.values()],
        max_tokens=min(rt.options.max_tokens, SUMMARY_MAX_TOKENS),
    )
    try:
        response = await rt.provider.stream(request, None, PartialResponse())
    except ProviderError as e:
        raise ProviderError(f"Compacting the conversation failed: {e}", status=e.status, kind=e.kind, limit=e.limit) from None
    summary = _summary_text(response.content or [])
    if not summary:
        raise CompactionError("The model gave no summary, so the conversation was not compacted. Run `%agent compact` again.")
    price = price_for(rt.model, rt.options.prices)
    cost = cost_usd(response.usage, price)
    if turn is not None:
        add_usage(turn.usage, response.usage)
        turn.cost = None if (cost is None or turn.cost is None) else turn.cost + cost

    first = next((e for e in before if is_prompt_entry(e)), None)
    boundary: dict[str, Any] = {
        "type": "system",
        "subtype": "compact_boundary",
        "trigger": trigger,
        "method": "client",
        "pre_tokens": pre_tokens,
        "summary": summary,
        "turns_before": s.num_turns,
        "usage": {k: v for k, v in response.usage.items() if v},
    }
    if first is not None:
        boundary["first_prompt"] = prompt_text(first.get("message"))[:500]
    if turn is None:
        boundary["cost_usd"] = cost  # a manual compaction's cost (a turn's is in its result line)
    carried = [{**e, "carried": True} for e in kept if e.get("type") in ("user", "assistant", "context_edit")]
    after = build_api_messages([boundary, *carried])
    boundary["post_tokens"] = rt.meter.estimate(fixed_chars(rt), after, same_prefix=False)
    _replace_live(rt, boundary, carried)
    data = {k: boundary[k] for k in ("trigger", "pre_tokens", "post_tokens", "method")}
    boundary_msg = SystemMessage("compact_boundary", data)
    if emit is not None:
        await emit(boundary_msg)
        note = crowded_note(rt, boundary["post_tokens"])
        if note:
            await emit(SystemMessage("warning", {"message": note}))
    return boundary_msg


#: After a compaction, a conversation still above this share of the window is compacting in vain.
_CROWDED = 0.6


def crowded_note(rt: Runtime, post_tokens: Any) -> str | None:
    """A one-time warning when a compaction left the conversation nearly as full as before."""
    if not isinstance(post_tokens, int) or rt.warned_crowded or post_tokens <= _CROWDED * window(rt):
        return None
    rt.warned_crowded = True
    share = round(100 * post_tokens / window(rt))
    return (
        f"After compacting, the conversation still fills {share}% of the model's context, so it will compact "
        "again soon. Start a new session (`%%agent --new`) or fork this one for the next task."
    )


def _split_turn(entries: list[dict[str, Any]], turn: _Turn | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what to summarise, the turn in progress to carry over verbatim) of a live view."""
    if turn is None:
        return entries, []
    ids = [e.get("uuid") for e in entries]
    if turn.checkpoint_id in ids:
        k = ids.index(turn.checkpoint_id)
        return entries[:k], entries[k:]
    # A server-side compaction earlier in this turn cut the prompt off the live view: carry the
    # prompt and the latest step (the calls the model is waiting on and their results); the
    # steps between are summarised with the API's own summary.
    last = max((i for i, e in enumerate(entries) if e.get("type") == "assistant"), default=len(entries))
    prompt = [turn.prompt_entry] if turn.prompt_entry is not None else []
    if last == len(entries):
        return entries, prompt
    # The API's compaction block (in that step's message) is summarised, the step's calls carried.
    step = entries[last]
    content = step.get("message", {}).get("content") if isinstance(step.get("message"), dict) else None
    blocks = content if isinstance(content, list) else []
    summary = [b for b in blocks if isinstance(b, dict) and b.get("type") == "compaction"]
    if not summary:
        return entries[:last], prompt + entries[last:]
    rest = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "compaction")]
    as_summary = {**step, "message": {**step["message"], "content": summary}}
    as_step = {**step, "message": {**step["message"], "content": rest}}
    return [*entries[:last], as_summary], [*prompt, as_step, *entries[last + 1 :]]


def _summarisable(conv: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``conv`` as a summary request can send it: a leading server compaction block becomes text.

    (The summary request carries no compaction edit, and the API takes a compaction block
    only from a request that does.)
    """
    if not conv or conv[0]["role"] != "assistant":
        return conv
    first = conv[0]["content"]
    if not first or first[0].get("type") != "compaction":
        return conv
    summary = str(first[0].get("content") or "")
    head = {"role": "user", "content": [{"type": "text", "text": f"{SUMMARY_INTRO}\n\n{summary}"}]}
    rest = first[1:]
    return [head, *([{"role": "assistant", "content": rest}] if rest else []), *conv[1:]]


def _replace_live(rt: Runtime, boundary: dict[str, Any], carried: list[dict[str, Any]]) -> None:
    """Append the boundary (and carried lines); the live view starts at the boundary from now on."""
    s = rt.session
    stored = s.append(boundary)
    for e in carried:
        s.append(dict(e))
    s.entries = s.entries[s.entries.index(stored) :]
    _changed(rt)


def record_server_compaction(rt: Runtime, content: list[dict[str, Any]], usage: dict[str, Any], pre_tokens: int) -> SystemMessage | None:
    """Write the boundary of a compaction the API did in this response (its ``compaction`` block), if it did."""
    block = next((b for b in content if b.get("type") == "compaction"), None)
    if block is None:
        return None
    s = rt.session
    boundary: dict[str, Any] = {
        "type": "system",
        "subtype": "compact_boundary",
        "trigger": "auto",
        "method": "server",
        "pre_tokens": pre_tokens,
        "post_tokens": usage_tokens(usage),
        "summary": block.get("content") or "",
        "turns_before": s.num_turns,
    }
    _replace_live(rt, boundary, [])
    return SystemMessage("compact_boundary", {k: boundary[k] for k in ("trigger", "pre_tokens", "post_tokens", "method")})


def count_turns(entries: list[dict[str, Any]]) -> int:
    """The turns a live view stands for: those before its boundary, plus the prompts after it."""
    base = 0
    start = 0
    for i in range(len(entries) - 1, -1, -1):
        if is_boundary(entries[i]):
            t = entries[i].get("turns_before")
            base = t if isinstance(t, int) else 0
            start = i + 1
            break
    return base + sum(1 for e in entries[start:] if is_prompt_entry(e))


def seed_meter(rt: Runtime) -> None:
    """Anchor the estimate on the last answer's usage in the transcript (a resumed session's first request)."""
    entries = rt.session.entries
    for i in range(len(entries) - 1, -1, -1):
        e = entries[i]
        if e.get("type") == "system" and e.get("subtype") == "compact_boundary":
            return
        message = e.get("message")
        usage = message.get("usage") if e.get("type") == "assistant" and isinstance(message, dict) else None
        if not isinstance(usage, dict) or not usage_tokens(usage):
            continue
        sent = build_api_messages(entries[: i + 1])
        rt.meter.measure(fixed_chars(rt), sent, usage)
        # A clearing after that answer changed what comes before its end: keep the ratio only.
        if any(x.get("type") == "context_edit" for x in entries[i + 1 :]):
            rt.meter.forget_anchor()
        rt.meter_version = rt.context_version
        return


def record_engine_compaction(
    rt: Runtime, turn: _Turn | None, data: dict[str, Any], engine: str, engine_session_id: str | None
) -> SystemMessage:
    """Write the boundary of a compaction an engine (Claude Code) did by itself.

    The engine keeps its own summary; the boundary records when it happened and
    how big the conversation was, carries the current turn's lines over, and
    names the engine's session so a resumed session finds it again.
    """
    meta = data.get("compact_metadata") or data.get("compactMetadata") or {}
    if not isinstance(meta, dict):
        meta = {}
    trigger = meta.get("trigger") if meta.get("trigger") in ("auto", "manual") else "auto"
    pre = meta.get("pre_tokens", meta.get("preTokens"))
    s = rt.session
    entries = s.entries
    keep_from = len(entries)
    if turn is not None:
        keep_from = next((i for i, e in enumerate(entries) if e.get("uuid") == turn.checkpoint_id), len(entries))
    boundary: dict[str, Any] = {
        "type": "system",
        "subtype": "compact_boundary",
        "trigger": trigger,
        "method": "claude-code",
        "pre_tokens": pre if isinstance(pre, int) else None,
        "post_tokens": None,
        "summary": "",
        "turns_before": s.num_turns,
        "engine": engine,
        "engine_session_id": engine_session_id,
    }
    carried = [{**e, "carried": True} for e in entries[keep_from:] if e.get("type") in ("user", "assistant")]
    _replace_live(rt, boundary, carried)
    return SystemMessage("compact_boundary", {k: boundary[k] for k in ("trigger", "pre_tokens", "post_tokens", "method")})
