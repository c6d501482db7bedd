"""Hooks: async callbacks at PreToolUse, PostToolUse, UserPromptSubmit, Stop, PreCompact,
SubagentStart and SubagentStop.

The callback shape is the Agent SDK's: ``async def cb(input, tool_use_id, context) -> dict``.
``input`` carries ``hook_event_name``, ``session_id``, ``transcript_path``, ``cwd``,
``permission_mode`` and, per event, ``tool_name``/``tool_input``/``tool_use_id``
(PreToolUse), plus ``tool_response`` (PostToolUse), ``prompt`` (UserPromptSubmit),
``trigger`` (``"auto"``/``"manual"``) and ``custom_instructions`` (PreCompact),
``agent_id``/``agent_type`` (SubagentStart; SubagentStop adds ``agent_transcript_path`` and
``stop_hook_active``). Tool hooks inside a subagent carry its ``agent_id`` and ``agent_type``;
a SubagentStop hook that blocks sends its reason to the subagent once, as Stop does.
A PreCompact hook cannot stop a compaction (a session past its window has no
other way on); its ``additionalContext`` is added to the summary's instructions.

A callback may return:

- ``{"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision":
  "allow" | "deny" | "ask", "permissionDecisionReason": "...", "updatedInput": {...}}}``
- ``{"decision": "block", "reason": "..."}`` (blocks the tool call or the prompt)
- ``{"hookSpecificOutput": {"additionalContext": "..."}}`` (added for the model)
- ``{"continue_": False, "stopReason": "..."}`` (ends the turn)
- ``{"systemMessage": "..."}`` (shown to the person)

A callback that raises or times out is reported as a ``hook_error`` system
message and counts as no decision.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

HookCallback = Callable[[dict[str, Any], "str | None", dict[str, Any]], Awaitable[dict[str, Any]]]
HOOK_EVENTS = ("PreToolUse", "PostToolUse", "UserPromptSubmit", "Stop", "PreCompact", "SubagentStart", "SubagentStop")


@dataclass
class HookMatcher:
    """Callbacks for the tools whose name matches ``matcher`` (a regex; None or "*" for all)."""

    matcher: str | None = None
    hooks: list[HookCallback] = field(default_factory=list)
    timeout: float | None = None

    def matches(self, target: str | None) -> bool:
        if self.matcher in (None, "", "*"):
            return True
        if target is None:
            return False
        try:
            return re.fullmatch(self.matcher, target) is not None
        except re.error:
            return self.matcher == target


@dataclass
class HookOutcome:
    """The combined effect of every hook that ran for one event."""

    decision: str | None = None  # "allow" | "deny" | "ask" | "block"
    reason: str | None = None
    updated_input: dict[str, Any] | None = None
    additional_context: list[str] = field(default_factory=list)
    system_messages: list[str] = field(default_factory=list)
    stop: bool = False
    stop_reason: str | None = None
    errors: list[str] = field(default_factory=list)


def _name(cb: Any) -> str:
    return str(getattr(cb, "__qualname__", None) or getattr(cb, "__name__", None) or repr(cb))


async def run_hooks(
    hooks: dict[str, list[HookMatcher]] | None,
    event: str,
    input: dict[str, Any],
    *,
    tool_use_id: str | None = None,
    target: str | None = None,
) -> HookOutcome:
    """Run every callback registered for ``event`` whose matcher fits ``target``."""
    out = HookOutcome()
    if not hooks:
        return out
    for matcher in hooks.get(event, []):
        if not matcher.matches(target):
            continue
        for cb in matcher.hooks:
            payload = dict(input)
            if out.updated_input is not None and "tool_input" in payload:
                payload["tool_input"] = out.updated_input
            try:
                with anyio.fail_after(matcher.timeout or 60.0):
                    result = await cb(payload, tool_use_id, {"signal": None})
            except TimeoutError:
                out.errors.append(f"{event} hook {_name(cb)} timed out after {matcher.timeout or 60.0:g}s")
                continue
            except Exception as e:
                out.errors.append(f"{event} hook {_name(cb)} failed: {type(e).__name__}: {e}")
                continue
            if result is None:
                continue
            if not isinstance(result, dict):
                out.errors.append(f"{event} hook {_name(cb)} returned {type(result).__name__}, not a dict")
                continue
            _merge(out, result)
    return out


def _merge(out: HookOutcome, result: dict[str, Any]) -> None:
    if result.get("systemMessage"):
        out.system_messages.append(str(result["systemMessage"]))
    if result.get("continue_") is False or result.get("continue") is False:
        out.stop = True
        out.stop_reason = str(result.get("stopReason") or "a hook stopped the turn")
    if result.get("decision") == "block":
        out.decision = "block"
        out.reason = str(result.get("reason") or "blocked by a hook")
    spec = result.get("hookSpecificOutput")
    if isinstance(spec, dict):
        pd = spec.get("permissionDecision")
        if pd in ("allow", "deny", "ask"):
            # deny > ask > allow across several hooks
            rank = {"allow": 0, "ask": 1, "deny": 2, "block": 3}
            if out.decision is None or rank[pd] > rank.get(out.decision, -1):
                out.decision = pd
                out.reason = str(spec.get("permissionDecisionReason") or "") or out.reason
        ui = spec.get("updatedInput")
        if isinstance(ui, dict):
            out.updated_input = ui
        ctx = spec.get("additionalContext")
        if ctx:
            out.additional_context.append(str(ctx))
