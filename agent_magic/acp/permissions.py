"""Our permission prompts as ACP ``session/request_permission``, and permission modes as session modes.

The loop asks ``AgentOptions.can_use_tool`` when a call needs approval; here
that becomes a request to the client with three options: allow once, always
allow (the context's suggested rules are added for the rest of the session),
reject. A cancelled request (the client's turn was cancelled) denies the call
and ends the turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from acp import schema

from .._options import CanUseTool
from .._permissions import (
    PermissionResult,
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)
from .updates import TurnUpdates, tool_kind, tool_title

#: Our permission modes, as ACP session modes: (id, name, description).
MODES: list[tuple[str, str, str]] = [
    ("default", "Ask", "Ask before edits and commands"),
    ("acceptEdits", "Accept edits", "Edit files in the workspace without asking; ask before commands"),
    ("plan", "Plan", "Read-only: explore and plan, change nothing"),
    ("bypassPermissions", "Bypass permissions", "Run every tool without asking"),
]
MODE_IDS = [m[0] for m in MODES]

ALLOW_ONCE, ALLOW_ALWAYS, REJECT = "allow_once", "allow_always", "reject_once"

RequestPermission = Callable[..., Awaitable[schema.RequestPermissionResponse]]


def mode_state(current: str) -> schema.SessionModeState:
    """The session's modes for ``session/new`` and ``session/load`` responses."""
    return schema.SessionModeState(
        current_mode_id=current,
        available_modes=[schema.SessionMode(id=i, name=n, description=d) for i, n, d in MODES],
    )


def mode_option(current: str) -> schema.SessionConfigOptionSelect:
    """The same modes as a ``mode`` config option, for clients that use config options."""
    return schema.SessionConfigOptionSelect(
        type="select",
        id="mode",
        name="Permission mode",
        category="mode",
        current_value=current,
        options=[schema.SessionConfigSelectOption(value=i, name=n, description=d) for i, n, d in MODES],
    )


def permission_callback(request: RequestPermission, session_id: Callable[[], str], updates: Callable[[], TurnUpdates]) -> CanUseTool:
    """``can_use_tool`` for one ACP session: asks the client with ``session/request_permission``.

    Parameters
    ----------
    request
        The connection's ``request_permission`` (the client's side of it).
    session_id
        The ACP session's id (read at call time).
    updates
        The session's converter, which knows the call's diff preview.
    """

    async def can_use_tool(name: str, tool_input: dict[str, Any], ctx: ToolPermissionContext) -> PermissionResult:
        conv = updates()
        rules = [r for s in ctx.suggestions for r in s.rules]
        always = f"Always allow {', '.join(rules)}" if rules else "Always allow"
        call = schema.ToolCallUpdate(
            tool_call_id=ctx.tool_use_id,
            title=tool_title(name, tool_input, conv.cwd),
            kind=tool_kind(name),
            status="pending",
            raw_input=tool_input,
            content=conv.preview(ctx.tool_use_id) or None,
        )
        options = [
            schema.PermissionOption(option_id=ALLOW_ONCE, name="Allow", kind="allow_once"),
            schema.PermissionOption(option_id=ALLOW_ALWAYS, name=always, kind="allow_always"),
            schema.PermissionOption(option_id=REJECT, name="Reject", kind="reject_once"),
        ]
        answer = await request(session_id=session_id(), tool_call=call, options=options)
        outcome = answer.outcome
        if isinstance(outcome, schema.AllowedOutcome):
            if outcome.option_id == ALLOW_ONCE:
                return PermissionResultAllow()
            if outcome.option_id == ALLOW_ALWAYS:
                return PermissionResultAllow(updated_permissions=list(ctx.suggestions))
            return PermissionResultDeny(message=f"The person rejected this {name} call.")
        return PermissionResultDeny(message="The person cancelled the turn.", interrupt=True)

    return can_use_tool
