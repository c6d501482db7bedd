"""The agent loop: one turn = a prompt, then model responses and tool rounds until done.

A turn appends to the transcript as it goes (prompt, each assistant message,
each tool result, a result line), so a crash at any point leaves every
completed step on disk and the session can be resumed. Interrupts cancel the
turn's cancel scope; the cleanup records the partial answer, gives unfinished
tool calls an error result, and ends with a ``interrupted`` result.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import anyio

from . import _compaction as compaction
from . import _structured as structured
from ._context import ContextMeter, default_thinking
from ._errors import CompactionError, ConfigurationError, ProviderError, ToolError
from ._hooks import run_hooks
from ._messages import (
    AssistantMessage,
    Message,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    block_from_dict,
)
from ._options import AgentOptions
from ._permissions import (
    Decision,
    PermissionResultAllow,
    PermissionResultDeny,
    Rule,
    ToolPermissionContext,
    decide,
    suggestion_for,
)
from ._pricing import add_usage, cost_usd, price_for
from ._redact import RedactSecrets
from .providers.base import (
    NOTHING_TO_COMPACT_ADVICE,
    TOO_LONG_ADVICE,
    ModelRequest,
    PartialResponse,
    Provider,
)
from .store.home import new_uuid
from .store.jsonl import crash_point
from .store.transcript import SessionState, is_prompt_entry, prompt_text
from .tools.base import ChangeRecorder, NotebookBridge, Tool, ToolContext, ToolResult

log = logging.getLogger("agent_magic")
if not any(isinstance(f, RedactSecrets) for f in log.filters):
    log.addFilter(RedactSecrets())  # tracebacks and hook errors may quote an API key

Emit = Callable[[Message], Awaitable[None]]

MAX_TOOL_RESULT_CHARS = 100_000
#: A provider puts this key in a tool call's input when the model's arguments were not valid JSON.
INVALID_JSON_KEY = "__agent_magic_invalid_json__"
_INTERRUPTED = "Interrupted by the user before the tool finished."


def default_system_prompt(cwd: Path, scope: str, tools: list[Tool]) -> str:
    names = ", ".join(t.name for t in tools)
    nb = f"\nThe person is working in the notebook {scope}." if scope.endswith(".ipynb") else ""
    kernel = ""
    if any(t.name == "Python" for t in tools):
        kernel = (
            "\nYou run inside the person's live Jupyter kernel: use the Python tool to inspect "
            "their variables (DataFrames, models) before changing anything, and Variables to list them."
        )
    return (
        "You are an AI agent working with a data scientist in Jupyter, through agent-magic. "
        "You can read and change files and notebook cells with your tools; every change you make "
        "is checkpointed, so the person can rewind it."
        f"{nb}{kernel}\n"
        f"Working directory: {cwd}\nPlatform: {platform.system()} {platform.release()}, Python {sys.version.split()[0]}\n"
        f"Today's date: {date.today().isoformat()}\nTools: {names}\n\n"
        "Guidelines:\n"
        "- Read a file or notebook before editing it. Edit notebooks cell by cell with NotebookEdit, "
        "addressing cells by the ids Read shows.\n"
        "- Prefer small, reviewable changes; explain briefly what you changed and why.\n"
        "- Answer in Markdown. Be concise."
    )


@dataclass
class Runtime:
    """Everything a turn needs; lives as long as the client."""

    options: AgentOptions
    session: SessionState
    provider: Provider
    tools: dict[str, Tool]
    recorder: ChangeRecorder
    model: str
    system_prompt: str
    env: dict[str, str]
    workspace: list[Path]
    allow_rules: list[Rule] = field(default_factory=list)
    deny_rules: list[Rule] = field(default_factory=list)
    read_files: dict[str, int] = field(default_factory=dict)
    #: Rules granted during the session ("Always allow"); they survive option changes.
    granted_rules: list[Rule] = field(default_factory=list)
    notebook_bridge: NotebookBridge | None = None
    transcript_path: str = ""
    on_index: Callable[[str, dict[str, Any]], None] | None = None
    #: Context accounting (see _context.py and _compaction.py).
    meter: ContextMeter = field(default_factory=ContextMeter)
    #: Characters of the system prompt and tool specs (see _compaction.fixed_chars).
    fixed_chars: int | None = None
    #: Bumped whenever what is sent changes before its end (a clearing, a compaction).
    context_version: int = 0
    meter_version: int = 0
    #: The window a "prompt is too long" error reported (wins over the table).
    learned_window: int | None = None
    #: The API refused server-side compaction for this model: compact client-side.
    server_compaction_refused: bool = False
    #: Said once: compactions leave the conversation nearly as full as before.
    warned_crowded: bool = False
    #: An engine's own count (Claude Code): (context tokens, window) after its last turn.
    engine_context: tuple[int, int] | None = None
    #: Awaited once the turn's result line is written, before the result is emitted (the shared
    #: store's push: when a cell finishes, another host can resume it).
    before_result: Callable[[], Awaitable[int | None]] | None = None
    #: Called (never awaited) after each step is written: the prompt, each response, each
    #: batch of tool results (the shared store's per-step push runs in the background).
    after_step: Callable[[], None] | None = None
    #: Added to every hook input (a subagent's ``agent_id``, ``agent_type``, the parent's ``session_id``).
    hook_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def permission_mode(self) -> str:
        return self.options.permission_mode

    def apply_permission_updates(self, updates: Any) -> None:
        """Add the rules of a callback's ``updated_permissions`` (an "Always allow" answer)."""
        for upd in updates or []:
            target = self.allow_rules if upd.behavior == "allow" else self.deny_rules
            for r in upd.rules:
                rule = Rule.parse(r)
                if rule not in target:
                    target.append(rule)
                if upd.behavior == "allow" and rule not in self.granted_rules:
                    self.granted_rules.append(rule)


@dataclass
class _Turn:
    """The state of one running turn (engines update it too: usage, cost, subtype, result_text)."""

    checkpoint_id: str
    start: float
    #: The prompt's transcript line (a compaction that cut it off the live view carries it over).
    prompt_entry: dict[str, Any] | None = None
    api_calls: int = 0
    api_ms: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = 0.0
    subtype: str = "success"
    result_text: str | None = None
    errors: list[str] = field(default_factory=list)
    api_status: int | None = None
    partial: PartialResponse | None = None
    pending_tools: list[ToolUseBlock] = field(default_factory=list)
    done_tools: set[str] = field(default_factory=set)
    stop_requested: str | None = None
    interrupt_requested: bool = False
    had_response: bool = False
    last_text: str = ""
    #: With ``output_format``: the validated answer, and how often the model was asked again.
    structured_output: Any = None
    structured_retries: int = 0


async def run_turn(
    rt: Runtime,
    prompt: str | list[dict[str, Any]],
    emit: Emit,
    scope_holder: Callable[[anyio.CancelScope | None], None],
) -> ResultMessage:
    """Run one turn for ``prompt``; emit messages; return the result (also emitted)."""
    s = rt.session
    checkpoint_id = new_uuid()
    turn = _Turn(checkpoint_id=checkpoint_id, start=time.monotonic())
    content: str | list[dict[str, Any]] = prompt
    entry = s.append(
        {"type": "user", "uuid": checkpoint_id, "is_prompt": True, "message": {"role": "user", "content": content}}
    )
    turn.prompt_entry = entry
    s.num_turns += 1
    begin = getattr(rt.recorder, "begin_turn", None)
    if begin is not None:
        begin(checkpoint_id, s.num_turns, prompt_text(entry["message"]))
    if rt.on_index:
        # Absolute values: a process killed before this call must not leave the index a turn short.
        first = next((e for e in s.entries if is_prompt_entry(e)), entry)
        rt.on_index("turn", {"first_prompt": prompt_text(first.get("message")), "num_turns": s.num_turns})
    await emit(UserMessage(content=_content_blocks(content), uuid=checkpoint_id, session_id=s.session_id))

    with anyio.CancelScope() as scope:
        scope_holder(scope)
        try:
            engine = getattr(rt.provider, "run_turn_body", None)
            if engine is not None:
                # An engine (Claude Code) runs the model and tools itself; the prompt, the
                # checkpoint bookkeeping and the result line stay ours.
                await engine(rt, turn, emit)
            else:
                await turn_body(rt, turn, emit)
        except ProviderError as e:
            turn.subtype = "error_during_execution"
            turn.result_text = str(e)
            turn.errors.append(str(e))
            turn.api_status = e.status
        except ConfigurationError as e:
            turn.subtype = "error_during_execution"
            turn.result_text = str(e)
            turn.errors.append(str(e))
        except Exception as e:
            # A bug (ours or a library's) must still end the turn with a result line, so the
            # transcript stays whole and the session resumable; the traceback goes to the log.
            log.error("The turn failed unexpectedly:\n%s", traceback.format_exc())
            message = f"The turn failed unexpectedly ({type(e).__name__}: {_first_line(str(e))}). The session is intact; run it again."
            turn.subtype = "error_during_execution"
            turn.result_text = message
            turn.errors.append(message)
        finally:
            scope_holder(None)
    if scope.cancelled_caught or turn.interrupt_requested:
        await _record_interrupt(rt, turn, emit)

    end = getattr(rt.recorder, "end_turn", None)
    changes: dict[str, Any] = {}
    if end is not None:
        changes = end() or {}
    if changes.get("files") or changes.get("cells"):
        await emit(SystemMessage("checkpoint", {"checkpoint_id": checkpoint_id, **changes}))

    duration_ms = int((time.monotonic() - turn.start) * 1000)
    is_error = turn.subtype != "success"
    ctx_tokens, ctx_window = context_now(rt)
    # Only what is not stored elsewhere: the answer is in the last assistant line, the
    # changes in checkpoints.jsonl; flags are written when true. (Transcripts stay small.)
    result_entry: dict[str, Any] = {
        "type": "result",
        "subtype": turn.subtype,
        "checkpoint": checkpoint_id,
        "num_turns": turn.api_calls,
        "duration_ms": duration_ms,
        "usage": {k: v for k, v in turn.usage.items() if v or k in ("input_tokens", "output_tokens")},
        "total_cost_usd": turn.cost,
    }
    if turn.cost is None:
        result_entry["cost_unknown"] = True
    if not turn.had_response:
        result_entry["no_response"] = True
    if is_error and turn.result_text:
        result_entry["result"] = turn.result_text
    if turn.errors:
        result_entry["errors"] = turn.errors
    if turn.structured_output is not None:
        result_entry["structured_output"] = turn.structured_output
    if turn.api_status is not None:
        result_entry["api_error_status"] = turn.api_status
    if ctx_tokens is not None:
        result_entry["context_tokens"] = ctx_tokens
        result_entry["context_window"] = ctx_window
    stored = s.append(result_entry)
    if turn.cost is None:
        s.total_cost_usd = None
    elif s.total_cost_usd is not None:
        s.total_cost_usd += turn.cost
    if rt.on_index:
        rt.on_index("result", {"cost": turn.cost})
    result = ResultMessage(
        subtype=turn.subtype,
        session_id=s.session_id,
        num_turns=turn.api_calls,
        duration_ms=duration_ms,
        duration_api_ms=turn.api_ms,
        is_error=is_error,
        total_cost_usd=turn.cost,
        usage=dict(turn.usage),
        result=turn.result_text,
        checkpoint_id=checkpoint_id,
        uuid=stored["uuid"],
        errors=turn.errors or None,
        api_error_status=turn.api_status,
        context_tokens=ctx_tokens,
        context_window=ctx_window,
    )
    if turn.structured_output is not None:
        result.structured_output = turn.structured_output
    if rt.before_result is not None:
        with anyio.CancelScope(shield=True):
            result.sync_pending = await rt.before_result()
    await emit(result)
    return result


def context_now(rt: Runtime) -> tuple[int | None, int | None]:
    """Tokens the session's conversation holds now, and the model's window (None, None: not known)."""
    if getattr(rt.provider, "run_turn_body", None) is not None:
        return rt.engine_context or (None, None)
    try:
        return compaction.context_tokens(rt), compaction.window(rt)
    except ConfigurationError:
        return None, None


def _refuses_compaction(message: str) -> bool:
    """Whether a 400 refuses the server-side compaction edit (not the conversation)."""
    low = message.lower()
    return "context_management" in low or "compact_2026" in low or "compaction" in low


def _content_blocks(content: str | list[dict[str, Any]]) -> str | list[Any]:
    if isinstance(content, str):
        return content
    return [block_from_dict(b) for b in content]


def permission_for(
    rt: Runtime, name: str, tool: Tool, tool_input: dict[str, Any], ctx: ToolContext, hook_decision: str | None
) -> tuple[str, Decision]:
    """The permission rules' decision on one tool call, with a PreToolUse hook's ``allow``/``ask`` applied.

    Returns the behavior to follow (``allow``, ``deny`` or ``ask``) and the rules' decision.
    """
    paths = tool.paths(tool_input, ctx)
    rule_value = tool.rule_content(tool_input)
    rule_is_path = tool.kind != "execute" and bool(paths)
    if rule_is_path and paths:
        rule_value = str(paths[0])
    decision = decide(
        tool_name=name, kind=tool.kind, rule_value=rule_value, rule_is_path=rule_is_path, paths=paths,
        mode=rt.permission_mode, allow=rt.allow_rules, deny=rt.deny_rules, workspace=rt.workspace, cwd=rt.session.cwd,
    )
    behavior: str = decision.behavior
    if hook_decision == "allow" and behavior == "ask":
        behavior = "allow"
    elif hook_decision == "ask" and behavior == "allow":
        behavior = "ask"
    return behavior, decision


async def prompt_submit_hook(rt: Runtime, turn: _Turn, emit: Emit) -> list[str] | None:
    """Run the UserPromptSubmit hooks on the turn's prompt (the session's last entry).

    Returns the context the hooks added (also appended to the session as a user
    message), or None when a hook blocked the prompt (the turn is then an error).
    """
    outcome = await run_hooks(
        rt.options.hooks,
        "UserPromptSubmit",
        hook_base(rt, "UserPromptSubmit") | {"prompt": prompt_text(rt.session.entries[-1]["message"])},
    )
    await report_hook(outcome, emit)
    if outcome.decision == "block" or outcome.stop:
        turn.subtype = "error_during_execution"
        turn.result_text = f"A hook blocked the prompt: {outcome.reason or outcome.stop_reason}"
        turn.errors.append(turn.result_text)
        return None
    # Context that says nothing is not sent: the API refuses a whitespace-only text block.
    extra = [c for c in outcome.additional_context if c.strip()]
    if extra:
        rt.session.append({"type": "user", "is_prompt": False, "message": {"role": "user", "content": [{"type": "text", "text": "\n".join(extra)}]}})
    return extra


async def turn_body(rt: Runtime, turn: _Turn, emit: Emit) -> None:
    """The model and tool rounds of one turn whose prompt is the session's last entry (a subagent runs one too)."""
    s = rt.session
    opts = rt.options
    price = price_for(rt.model, opts.prices)

    if await prompt_submit_hook(rt, turn, emit) is None:
        return
    schema = opts.output_format["schema"] if opts.output_format else None
    if schema is not None:
        s.append({"type": "user", "is_prompt": False, "message": {"role": "user", "content": [{"type": "text", "text": structured.instructions(schema)}]}})

    messages = s.api_messages()
    tool_specs = [t.spec() for t in rt.tools.values()]
    stop_hook_active = False
    recovered_too_long = False
    while True:
        if rt.after_step is not None:
            rt.after_step()
        if opts.max_turns is not None and turn.api_calls >= opts.max_turns:
            turn.subtype = "error_max_turns"
            turn.result_text = f"Stopped after {turn.api_calls} model responses (max_turns={opts.max_turns})."
            return
        messages = await compaction.prepare_request(rt, turn, emit, messages)
        pre_tokens = compaction.estimate(rt, messages)
        thinking = opts.thinking if opts.thinking is not None else default_thinking(rt.model)
        request = ModelRequest(
            model=rt.model,
            system=rt.system_prompt,
            messages=messages,
            tools=tool_specs,
            max_tokens=opts.max_tokens,
            thinking=thinking if rt.provider.name == "anthropic" else None,
            effort=opts.resolved_effort(),
            compact_trigger=compaction.server_trigger(rt),
        )
        turn.partial = PartialResponse()
        on_event = None
        if opts.include_partial_messages:
            on_event = _event_forwarder(rt, emit)
        t0 = time.monotonic()
        try:
            response = await rt.provider.stream(request, on_event, turn.partial)
        except ProviderError as e:
            if request.compact_trigger is not None and e.kind == "bad_request" and _refuses_compaction(str(e)):
                # The model or API does not take server-side compaction: summarise here instead.
                rt.server_compaction_refused = True
                await emit(SystemMessage("warning", {"message": "The API does not compact this model's conversations; agent-magic summarises them itself."}))
                continue
            if e.kind != "too_long" or recovered_too_long or compaction.effective_mode(rt) == "off":
                raise
            # The API counted more than we estimated (or the window is smaller than the table
            # says): compact to fit the window it reported, then send again, once.
            recovered_too_long = True
            if e.limit:
                rt.learned_window = e.limit
            try:
                await compaction.compact_client(rt, emit, trigger="auto", turn=turn)
            except CompactionError:
                raise ProviderError(
                    str(e).replace(TOO_LONG_ADVICE, NOTHING_TO_COMPACT_ADVICE), status=e.status, kind=e.kind, limit=e.limit
                ) from None
            messages = s.api_messages()
            continue
        finally:
            turn.api_ms += int((time.monotonic() - t0) * 1000)
        turn.partial = None
        turn.api_calls += 1
        turn.had_response = True
        for note in response.notices:
            await emit(SystemMessage("warning", {"message": note}))
        add_usage(turn.usage, response.usage)
        c = cost_usd(response.usage, price)
        turn.cost = None if (c is None or turn.cost is None) else turn.cost + c

        content = response.content or []
        boundary = compaction.record_server_compaction(rt, content, response.usage, pre_tokens)
        if boundary is not None:
            await emit(boundary)
            crowded = compaction.crowded_note(rt, boundary.data.get("post_tokens"))
            if crowded:
                await emit(SystemMessage("warning", {"message": crowded}))
        entry = s.append(
            {
                "type": "assistant",
                "message": {
                    "role": "assistant",
                    "content": content,
                    "model": response.model,
                    "stop_reason": response.stop_reason,
                    "usage": {k: v for k, v in response.usage.items() if v},
                },
            }
        )
        if rt.after_step is not None:
            rt.after_step()  # the response is written: other hosts see it while its tools run
        if boundary is not None:
            # The API dropped what came before its compaction block: the conversation starts there.
            messages = [{"role": "assistant", "content": content}]
        elif content:
            messages.append({"role": "assistant", "content": content})
        compaction.measure(rt, messages, response.usage)
        # Kept in the transcript and sent back, but nothing a person reads: a compaction's summary
        # (reported as its boundary) and thinking the API redacted.
        blocks = [block_from_dict(b) for b in content if b.get("type") not in ("compaction", "redacted_thinking")]
        amsg = AssistantMessage(
            content=blocks,
            model=response.model,
            usage=response.usage,
            uuid=entry["uuid"],
            stop_reason=response.stop_reason,
            session_id=s.session_id,
        )
        text = amsg.text
        if text:
            turn.last_text = text
        await emit(amsg)

        tool_uses = amsg.tool_uses
        over_budget = opts.max_budget_usd is not None and turn.cost is not None and turn.cost >= opts.max_budget_usd
        if over_budget:
            if tool_uses:
                await _append_results(
                    rt, emit, messages,
                    [(tu, ToolResultBlock(tu.id, "Not run: the budget for this query was reached.", True), None) for tu in tool_uses],
                )
            turn.subtype = "error_max_budget_usd"
            turn.result_text = f"Stopped: this query cost ${turn.cost:.4f}, reaching max_budget_usd=${opts.max_budget_usd:g}."
            return
        if not tool_uses:
            stop = await run_hooks(opts.hooks, "Stop", hook_base(rt, "Stop") | {"stop_hook_active": stop_hook_active})
            await report_hook(stop, emit)
            if stop.decision == "block" and not stop_hook_active and stop.reason and stop.reason.strip():
                stop_hook_active = True
                more = {"role": "user", "content": [{"type": "text", "text": stop.reason}]}
                s.append({"type": "user", "is_prompt": False, "message": more})
                messages.append(more)
                continue
            if response.stop_reason == "max_tokens":
                turn.errors.append("The answer was cut off at max_tokens.")
            turn.result_text = turn.last_text
            if schema is not None:
                valid, value, problem = structured.parse(turn.last_text, schema)
                if valid:
                    turn.structured_output = value
                elif turn.structured_retries < structured.MAX_RETRIES:
                    turn.structured_retries += 1
                    more = {"role": "user", "content": [{"type": "text", "text": structured.retry_prompt(problem)}]}
                    s.append({"type": "user", "is_prompt": False, "message": more})
                    messages.append(more)
                    continue
                else:
                    turn.subtype = "error_max_structured_output_retries"
                    turn.result_text = (
                        f"The answer did not match the output schema after {structured.MAX_RETRIES + 1} tries: {problem}"
                    )
                    turn.errors.append(turn.result_text)
            return

        turn.pending_tools = list(tool_uses)
        for tu in tool_uses:
            if turn.stop_requested is not None:
                break
            block, meta = await _run_tool(rt, turn, tu, emit)
            await _append_results(rt, emit, messages, [(tu, block, meta)])
            turn.done_tools.add(tu.id)
        if turn.stop_requested is not None:
            rest = [tu for tu in tool_uses if tu.id not in turn.done_tools]
            if rest:
                await _append_results(
                    rt, emit, messages,
                    [(tu, ToolResultBlock(tu.id, f"Not run: {turn.stop_requested}", True), None) for tu in rest],
                )
            turn.pending_tools = []
            if turn.interrupt_requested:
                turn.subtype = "interrupted"
                turn.result_text = turn.stop_requested
                return
            turn.result_text = turn.stop_requested
            return
        turn.pending_tools = []


async def _append_results(
    rt: Runtime,
    emit: Emit,
    messages: list[dict[str, Any]],
    results: list[tuple[ToolUseBlock, ToolResultBlock, dict[str, Any] | None]],
) -> None:
    s = rt.session
    for tu, block, meta in results:
        bd = block.to_dict()
        # A tool result is never a prompt (its content says so); displays get the full
        # details live, the transcript keeps the one-line summary.
        entry: dict[str, Any] = {"type": "user", "message": {"role": "user", "content": [bd]}}
        if meta:
            entry["tool_use_result"] = {k: v for k, v in meta.items() if k != "data" and v not in (None, False)}
        stored = s.append(entry)
        if messages and messages[-1]["role"] == "user" and any(b.get("type") == "tool_result" for b in messages[-1]["content"]):
            messages[-1]["content"].append(bd)
        else:
            messages.append({"role": "user", "content": [bd]})
        await emit(
            UserMessage(
                content=[block],
                uuid=stored["uuid"],
                parent_tool_use_id=None,
                session_id=s.session_id,
                tool_use_result=meta or {"tool_name": tu.name, "is_error": bool(block.is_error), "summary": None},
            )
        )


def _event_forwarder(rt: Runtime, emit: Emit) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """An async callback that emits each raw stream event as a StreamEvent."""
    sid = rt.session.session_id

    async def on_event(event: dict[str, Any]) -> None:
        await emit(StreamEvent(uuid=new_uuid(), session_id=sid, event=event))

    return on_event


def hook_base(rt: Runtime, event: str) -> dict[str, Any]:
    """The fields every hook input has (and a subagent's ``agent_id``/``agent_type``)."""
    return {
        "hook_event_name": event,
        "session_id": rt.session.session_id,
        "transcript_path": rt.transcript_path,
        "cwd": str(rt.session.cwd),
        "permission_mode": rt.permission_mode,
    } | rt.hook_fields


async def report_hook(outcome: Any, emit: Emit) -> None:
    for err in outcome.errors:
        log.warning("%s", err)
        await emit(SystemMessage("hook_error", {"message": err}))
    for msg in outcome.system_messages:
        await emit(SystemMessage("hook", {"message": msg}))


def _cap(text: str, limit: int = MAX_TOOL_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n\n[... {len(text) - limit} characters cut ...]\n\n" + text[-half:]


async def _run_tool(
    rt: Runtime, turn: _Turn, tu: ToolUseBlock, emit: Emit
) -> tuple[ToolResultBlock, dict[str, Any]]:
    meta: dict[str, Any] = {"tool_name": tu.name, "is_error": True, "summary": None}
    tool = rt.tools.get(tu.name)
    if tool is None:
        msg = f"There is no tool named {tu.name!r}. Available tools: {', '.join(rt.tools)}."
        meta["summary"] = "unknown tool"
        return ToolResultBlock(tu.id, msg, True), meta
    tool_input: dict[str, Any] = dict(tu.input) if isinstance(tu.input, dict) else {}
    opts = rt.options
    if INVALID_JSON_KEY in tool_input:
        # The provider could not parse the arguments the model sent; let the model fix them.
        meta["summary"] = "invalid arguments"
        return ToolResultBlock(
            tu.id,
            f"The arguments of this {tu.name} call were not valid JSON ({tool_input.get(INVALID_JSON_KEY)}). "
            "Send the call again with valid JSON arguments.",
            True,
        ), meta

    pre = await run_hooks(
        opts.hooks,
        "PreToolUse",
        hook_base(rt, "PreToolUse") | {"tool_name": tu.name, "tool_input": tool_input, "tool_use_id": tu.id},
        tool_use_id=tu.id,
        target=tu.name,
    )
    await report_hook(pre, emit)
    if pre.updated_input is not None:
        tool_input = pre.updated_input
    if pre.stop:
        turn.stop_requested = pre.stop_reason or "a hook stopped the turn"
    if pre.decision in ("deny", "block"):
        meta["summary"] = "blocked by a hook"
        return ToolResultBlock(tu.id, f"Blocked by a hook: {pre.reason or 'no reason given'}", True), meta

    ctx = ToolContext(
        cwd=rt.session.cwd,
        session_id=rt.session.session_id,
        tool_use_id=tu.id,
        env=rt.env,
        recorder=rt.recorder,
        read_files=rt.read_files,
        notebook_bridge=rt.notebook_bridge,
        add_dirs=rt.workspace[1:],
        runtime=rt,
        turn=turn,
        emit=emit,
    )
    behavior, decision = permission_for(rt, tu.name, tool, tool_input, ctx, pre.decision)
    if behavior == "deny":
        meta["summary"] = "permission denied"
        return ToolResultBlock(tu.id, f"Permission denied: {decision.reason}.", True), meta
    if behavior == "ask":
        answer = await _ask(rt, tool, tu, tool_input, decision.reason, decision.blocked_path)
        if isinstance(answer, PermissionResultDeny):
            if answer.interrupt:
                turn.stop_requested = answer.message or "The person stopped the turn."
                turn.interrupt_requested = True
            meta["summary"] = "denied"
            return ToolResultBlock(tu.id, answer.message or f"The person denied permission to use {tu.name}.", True), meta
        if answer.updated_input is not None:
            tool_input = answer.updated_input
        rt.apply_permission_updates(answer.updated_permissions)

    crash_point("tool.start")
    try:
        result = await tool.run(tool_input, ctx)
    except ToolError as e:
        result = ToolResult(str(e), is_error=True, summary=_first_line(str(e)))
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as e:
        log.error("Tool %s failed unexpectedly:\n%s", tu.name, traceback.format_exc())
        result = ToolResult(
            f"{tu.name} failed unexpectedly: {type(e).__name__}: {e}", is_error=True, summary=f"{type(e).__name__}"
        )

    content: str | list[dict[str, Any]] = result.content
    post = await run_hooks(
        opts.hooks,
        "PostToolUse",
        hook_base(rt, "PostToolUse")
        | {"tool_name": tu.name, "tool_input": tool_input, "tool_use_id": tu.id, "tool_response": _response_for_hook(result)},
        tool_use_id=tu.id,
        target=tu.name,
    )
    await report_hook(post, emit)
    if post.stop:
        turn.stop_requested = post.stop_reason or "a hook stopped the turn"
    extra = list(post.additional_context)
    if post.decision == "block" and post.reason:
        extra.append(post.reason)
    if isinstance(content, str):
        content = _cap(content)
        if extra:
            content = content + "\n\n" + "\n".join(extra)
    elif extra:
        content = [*content, {"type": "text", "text": "\n".join(extra)}]
    meta = {"tool_name": tu.name, "is_error": result.is_error, "summary": result.summary, "data": _small(result.data)}
    return ToolResultBlock(tu.id, content, True if result.is_error else None), meta


def _response_for_hook(result: ToolResult) -> dict[str, Any]:
    return {"content": result.content, "is_error": result.is_error, "summary": result.summary, "data": result.data}


def _small(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (data or {}).items():
        if isinstance(v, str) and len(v) > 20_000:
            v = v[:20_000] + "\n[... cut ...]"
        out[k] = v
    return out


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0][:200] if s.strip() else ""


async def _ask(
    rt: Runtime, tool: Tool, tu: ToolUseBlock, tool_input: dict[str, Any], reason: str, blocked: str | None
) -> PermissionResultAllow | PermissionResultDeny:
    cb = rt.options.can_use_tool
    if cb is None:
        how = (
            f"allowed_tools=['{tu.name}']"
            if tool.kind != "execute"
            else f"allowed_tools=['{suggestion_for(tu.name, tool.rule_content(tool_input), tool.kind).rules[0]}']"
        )
        return PermissionResultDeny(
            message=(
                f"Permission to use {tu.name} was not granted ({reason}) and no one is here to approve it. "
                f"The person can allow it with {how} or another permission_mode."
            )
        )
    preview: dict[str, Any] = {"kind": "call", "description": tool.describe(tool_input)}
    if tool.kind == "execute":
        preview = {"kind": "command", "command": str(tool_input.get("command") or tool_input.get("code") or "")}
    elif tool.kind == "edit":
        preview = {"kind": "edit", "path": str(tool_input.get("file_path") or tool_input.get("notebook_path") or ""), "input": tool_input}
    ctx = ToolPermissionContext(
        tool_use_id=tu.id,
        suggestions=[suggestion_for(tu.name, tool.rule_content(tool_input), tool.kind)],
        blocked_path=blocked,
        decision_reason=reason,
        title=f"Allow {tool.describe(tool_input)}?",
        preview=preview,
    )
    try:
        answer = await cb(tu.name, tool_input, ctx)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as e:
        log.error("can_use_tool failed:\n%s", traceback.format_exc())
        return PermissionResultDeny(message=f"The permission callback failed ({type(e).__name__}: {e}); the call was not run.")
    if isinstance(answer, (PermissionResultAllow, PermissionResultDeny)):
        return answer
    return PermissionResultDeny(message=f"The permission callback returned {type(answer).__name__}, not a PermissionResult.")


async def _record_interrupt(rt: Runtime, turn: _Turn, emit: Emit) -> None:
    """Leave the transcript consistent after an interrupt, then mark the turn interrupted."""
    s = rt.session
    with anyio.CancelScope(shield=True):
        if turn.partial is not None:
            text = "".join(turn.partial.text_blocks).strip()
            if text:
                content = [{"type": "text", "text": text}]
                entry = s.append(
                    {
                        "type": "assistant",
                        "interrupted": True,
                        "message": {"role": "assistant", "content": content, "model": rt.model, "stop_reason": None},
                    }
                )
                turn.had_response = True
                await emit(AssistantMessage(content=[TextBlock(text)], model=rt.model, uuid=entry["uuid"], session_id=s.session_id))
            turn.partial = None
        rest = [tu for tu in turn.pending_tools if tu.id not in turn.done_tools]
        for tu in rest:
            block = ToolResultBlock(tu.id, _INTERRUPTED, True)
            stored = s.append(
                {
                    "type": "user",
                    "message": {"role": "user", "content": [block.to_dict()]},
                    "tool_use_result": {"tool_name": tu.name, "is_error": True, "summary": "interrupted"},
                }
            )
            await emit(
                UserMessage(
                    content=[block], uuid=stored["uuid"], session_id=s.session_id,
                    tool_use_result={"tool_name": tu.name, "is_error": True, "summary": "interrupted"},
                )
            )
        turn.pending_tools = []
    turn.subtype = "interrupted"
    if not turn.result_text:
        turn.result_text = "Interrupted by the user."


def subprocess_environment(options: AgentOptions) -> dict[str, str]:
    """The environment Bash and other subprocesses get: secrets removed unless allowed."""
    from .tools.bash import subprocess_env

    return subprocess_env(os.environ, options.env, options.pass_secrets_to_subprocesses)
