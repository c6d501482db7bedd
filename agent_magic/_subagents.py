"""Subagents: the ``Agent`` tool runs a definition's own loop inside the parent's turn.

A subagent is :func:`agent_magic._loop.turn_body` run on a runtime of its own: its
system prompt is the definition's, its tools the parent's narrowed by ``tools`` /
``disallowedTools`` (never ``Agent``: no nesting), its conversation a transcript of its
own stored under the parent session (``<session>/subagents/agent-<id>.jsonl``, which
shared stores and bundles carry). Everything else it shares with the parent turn:

- the **checkpoint recorder**, so its file and cell changes are part of the parent's
  turn and rewinding that turn undoes them;
- the **cancel scope**: interrupting the parent cancels the tool call, and with it the
  subagent's request or tool; its transcript is closed like an interrupted turn's;
- **permissions** (rules, rules granted with "Always allow", ``can_use_tool``) and tool
  hooks, whose inputs carry ``agent_id`` and ``agent_type``;
- the **emitter**: its messages reach the parent's stream with ``parent_tool_use_id`` set
  to the ``Agent`` call's id, as the Agent SDK's do;
- **cost**: its usage and cost are added to the parent turn's.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import anyio

from ._errors import ProviderError, ToolError
from ._hooks import run_hooks
from ._messages import AssistantMessage, Message, StreamEvent, SystemMessage, UserMessage
from ._options import AgentDefinition
from ._pricing import add_usage
from .store.home import new_uuid
from .store.jsonl import JsonlFile
from .store.transcript import SessionState
from .tools.base import Tool, ToolContext, ToolResult, require_str

_FAMILIES = ("opus", "sonnet", "haiku")


class AgentTool(Tool):
    """Claude Code's ``Agent`` tool: hand a task to one of the session's subagents."""

    name = "Agent"
    kind = "read"  # starting a subagent changes nothing; each of its tool calls asks for itself

    def __init__(self, agents: dict[str, AgentDefinition]) -> None:
        self.agents = dict(agents)
        listing = "\n".join(f"- {name}: {d.description}" for name, d in self.agents.items())
        self.description = (
            "Launch a subagent to handle a task on its own, with its own context and tools. It works "
            "autonomously and returns one final report; it cannot see this conversation, so give it "
            "everything it needs in `prompt`, and say what it should report back. Available subagents:\n"
            f"{listing}"
        )
        self.input_schema = {
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "A short (3-5 word) description of the task."},
                "prompt": {"type": "string", "description": "The task for the subagent, complete and self-contained."},
                "subagent_type": {"type": "string", "enum": list(self.agents), "description": "Which subagent to use."},
            },
            "required": ["description", "prompt", "subagent_type"],
            "additionalProperties": False,
        }

    def describe(self, input: dict[str, Any]) -> str:
        kind = input.get("subagent_type")
        what = input.get("description")
        return f"Agent({kind}: {what})" if isinstance(kind, str) and isinstance(what, str) else "Agent"

    def rule_content(self, input: dict[str, Any]) -> str | None:
        kind = input.get("subagent_type")
        return kind if isinstance(kind, str) else None

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Any]:
        return []

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        kind = require_str(input, "subagent_type")
        prompt = require_str(input, "prompt")
        description = input.get("description") if isinstance(input.get("description"), str) else ""
        definition = self.agents.get(kind)
        if definition is None:
            raise ToolError(f"There is no subagent {kind!r}. Available: {', '.join(self.agents)}.")
        if ctx.runtime is None or ctx.emit is None:
            raise ToolError("Subagents run only inside an agent turn.")
        return await run_subagent(ctx, kind, definition, prompt, str(description))


def resolve_model(requested: str | None, parent_model: str) -> str:
    """A definition's ``model``: ``inherit``/None → the parent's; ``opus``/``sonnet``/``haiku`` → the newest
    model of that family in the model table when the parent is a Claude model, else the parent's."""
    if not requested or requested == "inherit":
        return parent_model
    if requested not in _FAMILIES:
        return requested
    if not parent_model.startswith("claude-"):
        return parent_model
    from ._context import _model_table

    def version(name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", name))

    family = [k for k in _model_table() if k.startswith(f"claude-{requested}-")]
    return max(family, key=version) if family else parent_model


def _tools_for(definition: AgentDefinition, parent_tools: dict[str, Tool]) -> dict[str, Tool]:
    tools = {n: t for n, t in parent_tools.items() if n != AgentTool.name}
    if definition.tools is not None:
        wanted = set(definition.tools)
        tools = {n: t for n, t in tools.items() if n in wanted or any(n.startswith(f"mcp__{w.removeprefix('mcp__')}__") for w in wanted)}
    if definition.mcpServers is not None:
        servers = {str(s) for s in definition.mcpServers}
        tools = {n: t for n, t in tools.items() if not n.startswith("mcp__") or n.split("__")[1] in servers}
    for banned in definition.disallowedTools or []:
        tools.pop(banned, None)
    return tools


def _child_hooks(hooks: dict[str, Any] | None) -> dict[str, Any]:
    """The parent's hooks as the subagent's loop sees them: its Stop is SubagentStop; no prompt hooks."""
    hooks = hooks or {}
    out = {k: v for k, v in hooks.items() if k not in ("UserPromptSubmit", "Stop", "SubagentStart", "SubagentStop")}
    if hooks.get("SubagentStop"):
        out["Stop"] = hooks["SubagentStop"]
    return out


async def run_subagent(ctx: ToolContext, kind: str, definition: AgentDefinition, prompt: str, description: str) -> ToolResult:
    """Run ``definition`` on ``prompt`` inside the parent turn of ``ctx``; its final text is the result."""
    from ._loop import Runtime, _record_interrupt, _Turn, hook_base, report_hook, turn_body

    parent: Runtime = ctx.runtime
    parent_turn: _Turn = ctx.turn
    parent_emit = ctx.emit
    agent_id = new_uuid()
    model = resolve_model(definition.model, parent.model)
    sid = parent.session.session_id
    header = {
        "type": "session", "session_id": agent_id, "parent_session_id": sid, "agent_type": kind,
        "parent_tool_use_id": ctx.tool_use_id, "description": description, "cwd": str(parent.session.cwd), "model": model,
    }
    store = parent.session.store
    if store is not None:
        from .store.subagents import create_subagent_transcript, subagent_path

        transcript = create_subagent_transcript(store, sid, agent_id, header)
        transcript_path = str(subagent_path(store, sid, agent_id))
    else:
        transcript, transcript_path = JsonlFile(None), ""
    hook_fields = {"session_id": sid, "agent_id": agent_id, "agent_type": kind}

    start = await run_hooks(parent.options.hooks, "SubagentStart", hook_base(parent, "SubagentStart") | hook_fields)
    await report_hook(start, parent_emit)
    if start.decision == "block" or start.stop:
        transcript.close()
        raise ToolError(f"A SubagentStart hook stopped the {kind} subagent: {start.reason or start.stop_reason}")

    options = parent.options.copy(
        hooks=_child_hooks(parent.options.hooks),
        permission_mode=definition.permissionMode or parent.options.permission_mode,
        max_turns=definition.maxTurns,
        effort=definition.effort or parent.options.effort,
        output_format=None,
        agents=None,
    )
    state = SessionState(
        session_id=agent_id, cwd=parent.session.cwd, scope=parent.session.scope, model=model,
        transcript=transcript, store=None, parent_session_id=sid,
    )
    child = Runtime(
        options=options, session=state, provider=parent.provider, tools=_tools_for(definition, parent.tools),
        recorder=parent.recorder, model=model, system_prompt=_system_prompt(definition, parent), env=parent.env,
        workspace=parent.workspace, allow_rules=parent.allow_rules, deny_rules=parent.deny_rules,
        granted_rules=parent.granted_rules, notebook_bridge=parent.notebook_bridge, transcript_path=transcript_path,
        after_step=parent.after_step, hook_fields=hook_fields | {"agent_transcript_path": transcript_path},
    )
    turn = _Turn(checkpoint_id=new_uuid(), start=time.monotonic())
    text = prompt
    if start.additional_context:
        text = prompt + "\n\n" + "\n".join(start.additional_context)
    turn.prompt_entry = state.append({"type": "user", "is_prompt": True, "message": {"role": "user", "content": text}})
    state.num_turns = 1

    async def emit(msg: Message) -> None:
        if isinstance(msg, StreamEvent):
            return  # the parent streams its own text; a subagent's arrives message by message
        if isinstance(msg, (UserMessage, AssistantMessage)):
            msg = replace(msg, parent_tool_use_id=ctx.tool_use_id)
        elif isinstance(msg, SystemMessage):
            msg = SystemMessage(msg.subtype, {**msg.data, "parent_tool_use_id": ctx.tool_use_id, "agent_id": agent_id})
        await parent_emit(msg)

    await parent_emit(SystemMessage("subagent_start", {
        "agent_id": agent_id, "agent_type": kind, "description": description, "parent_tool_use_id": ctx.tool_use_id, "model": model,
    }))
    error: str | None = None
    try:
        try:
            await turn_body(child, turn, emit)
        except ProviderError as e:
            error = str(e)
            turn.subtype = "error_during_execution"
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await _record_interrupt(child, turn, emit)
            _close(child, turn, parent_turn)
            await parent_emit(SystemMessage("subagent_stop", {
                "agent_id": agent_id, "agent_type": kind, "parent_tool_use_id": ctx.tool_use_id, "subtype": "interrupted",
            }))
        raise
    _close(child, turn, parent_turn)
    await parent_emit(SystemMessage("subagent_stop", {
        "agent_id": agent_id, "agent_type": kind, "parent_tool_use_id": ctx.tool_use_id, "subtype": turn.subtype,
        "num_turns": turn.api_calls, "total_cost_usd": turn.cost,
    }))
    calls = sum(1 for e in state.entries if e.get("type") == "user" and e.get("tool_use_result"))
    data = {"agent_id": agent_id, "subagent_type": kind, "tool_calls": calls, "num_turns": turn.api_calls}
    if error is not None or turn.subtype != "success":
        why = error or turn.result_text or turn.subtype
        return ToolResult(f"The {kind} subagent did not finish: {why}", is_error=True, summary=f"{kind}: {turn.subtype}", data=data)
    answer = turn.result_text or turn.last_text or "(the subagent gave no answer)"
    return ToolResult(answer, summary=f"{kind}: {calls} tool call" + ("" if calls == 1 else "s"), data=data)


def _system_prompt(definition: AgentDefinition, parent: Any) -> str:
    return (
        f"{definition.prompt}\n\n"
        f"You are a subagent of an agent-magic session, working in {parent.session.cwd}. "
        "You cannot ask the person questions; finish the task with your tools and end with a concise "
        "report of what you found or changed, which is all the calling agent will see."
    )


def _close(child: Any, turn: Any, parent_turn: Any) -> None:
    """Write the subagent's result line, close its transcript, and charge its usage to the parent turn."""
    entry: dict[str, Any] = {
        "type": "result", "subtype": turn.subtype, "num_turns": turn.api_calls,
        "duration_ms": int((time.monotonic() - turn.start) * 1000),
        "usage": {k: v for k, v in turn.usage.items() if v}, "total_cost_usd": turn.cost,
    }
    if turn.subtype != "success" and turn.result_text:
        entry["result"] = turn.result_text
    child.session.append(entry)
    child.session.transcript.close()
    add_usage(parent_turn.usage, turn.usage)
    parent_turn.cost = None if (turn.cost is None or parent_turn.cost is None) else parent_turn.cost + turn.cost
