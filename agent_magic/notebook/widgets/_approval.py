"""Approval prompt for a tool call: Approve / Deny / Always allow."""

from __future__ import annotations

import difflib
import html
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import traitlets

from ..._permissions import PermissionResultAllow, PermissionResultDeny, PermissionUpdate
from .._display import display_path, notebook_edit_phrase, strip_cwd
from ._base import Widget, _module


class ApprovalWidget(Widget):
    """Shows one tool call waiting for the person's decision."""

    _esm = _module("approval.js")
    title = traitlets.Unicode("", help="What the agent wants to do.").tag(sync=True)
    reason = traitlets.Unicode("", help="Why permission is needed.").tag(sync=True)
    preview = traitlets.Unicode("", help="The command, or a diff of the edit.").tag(sync=True)
    preview_kind = traitlets.Unicode("command", help="'command', 'diff' or 'text'.").tag(sync=True)
    always_rule = traitlets.Unicode("", help="The rule 'Always allow' adds.").tag(sync=True)
    decision = traitlets.Unicode("", help="'' while pending, then approve / always / deny.").tag(sync=True)
    status = traitlets.Unicode("", help="A line under the buttons.").tag(sync=True)
    expired = traitlets.Bool(False, help="The turn ended before a decision: shown as one collapsed line.").tag(sync=True)
    rendered = traitlets.Bool(False, help="A front end has shown the prompt.")

    def expire(self) -> None:
        """The turn ended with no decision: deny the call and collapse the prompt to one line."""
        if self.decision:
            return
        with self.hold_sync():
            self.expired = True
            self.decision = "expired"
            self.status = "Expired: the turn ended before a decision."
        finish = getattr(self, "_approval_finish", None)
        if finish is not None:
            finish(PermissionResultDeny(message="The turn ended before the person decided."))
        self.refresh_display()

    def fallback_text(self) -> str:
        if self.expired:
            return f"agent-magic approval expired (the turn ended before a decision): {self.title}"
        lines = [f"agent-magic approval: {self.title}"]
        if self.reason:
            lines.append(self.reason)
        preview = self.preview.splitlines()
        lines += ["    " + line for line in preview[:20]]
        if len(preview) > 20:
            lines.append(f"    [… {len(preview) - 20} more lines]")
        lines.append(self.status or ("Decision: " + self.decision if self.decision else "Waiting for a decision."))
        return "\n".join(lines)

    def fallback_html(self) -> str | None:
        if self.expired:
            return f"<div class='am-fallback' style='opacity:0.7'>{html.escape(self.fallback_text())}</div>"
        head, *rest = self.fallback_text().split("\n", 1)
        body = html.escape(rest[0]) if rest else ""
        return f"<div class='am-fallback'><b>{html.escape(head)}</b><pre style='font-size:85%'>{body}</pre></div>"


def preview_for(tool_name: str, tool_input: dict[str, Any], cwd: Path | None = None) -> tuple[str, str]:
    """The text to show for a call: a command, or a diff for edits."""
    if tool_name in ("Bash", "Python"):
        return str(tool_input.get("command") or tool_input.get("code") or ""), "command"
    if tool_name == "Edit":
        old = str(tool_input.get("old_string", "")).splitlines(keepends=True)
        new = str(tool_input.get("new_string", "")).splitlines(keepends=True)
        path = str(tool_input.get("file_path", ""))
        shown = display_path(path, str(cwd) if cwd else None)
        return "".join(difflib.unified_diff(old, new, f"a/{shown}", f"b/{shown}")), "diff"
    if tool_name == "Write":
        path = str(tool_input.get("file_path", ""))
        content = str(tool_input.get("content", ""))
        p = Path(path)
        if cwd is not None and not p.is_absolute():
            p = cwd / p
        try:
            before = p.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            before = []
        shown = display_path(path, str(cwd) if cwd else None)
        return "".join(difflib.unified_diff(before, content.splitlines(keepends=True), f"a/{shown}", f"b/{shown}")), "diff"
    if tool_name == "NotebookEdit":
        src = str(tool_input.get("new_source", ""))
        shown = display_path(str(tool_input.get("notebook_path", "")), str(cwd) if cwd else None)
        return f"{notebook_edit_phrase(tool_input)} in {shown}:\n{src}", "text"
    import json

    return json.dumps(tool_input, indent=1)[:4000], "text"


def show_approval(
    payload: dict[str, Any],
    reply: Callable[[Any], None],
    *,
    timeout: float,
    display: Callable[[Any], None],
    cwd: Path | None = None,
) -> ApprovalWidget:
    """Display a prompt; call ``reply`` with the PermissionResult when the person decides.

    If no front end shows the prompt within ``timeout`` seconds (a headless
    run), the call is denied with a message saying how to allow it.
    """
    ctx = payload.get("context")
    tool = str(payload["tool_name"])
    tool_input = payload.get("tool_input") or {}
    text, kind = preview_for(tool, tool_input, cwd)
    rules = ctx.suggestions[0].rules if ctx is not None and ctx.suggestions else [tool]
    w = ApprovalWidget(
        title=strip_cwd(ctx.title if ctx is not None and ctx.title else f"Allow {tool}?", str(cwd) if cwd else None),
        reason=(ctx.decision_reason or "") if ctx is not None else "",
        preview=text,
        preview_kind=kind,
        always_rule=", ".join(rules),
    )
    decided = threading.Event()

    def finish(result: Any) -> None:
        if not decided.is_set():
            decided.set()
            reply(result)

    def on_event(content: dict[str, Any]) -> None:
        if content.get("type") == "rendered":
            w.rendered = True
        elif content.get("type") == "decision" and not w.decision:
            d = str(content.get("decision"))
            if d == "approve":
                w.status = "Approved."
                finish(PermissionResultAllow())
            elif d == "always":
                w.status = f"Approved; always allowed from now on: {', '.join(rules)}."
                finish(PermissionResultAllow(updated_permissions=[PermissionUpdate(list(rules))]))
            elif d == "deny":
                w.status = "Denied."
                finish(PermissionResultDeny(message=f"The person denied this {tool} call."))
            else:
                return
            w.decision = d
            w.refresh_display()

    w.on_event(on_event)
    display(w)

    def headless() -> None:
        if not w.rendered and not decided.is_set():
            finish(
                PermissionResultDeny(
                    message=(
                        f"{tool} needs approval, but no notebook front end showed the prompt (a headless run). "
                        "Allow it with `%%agent --permission-mode acceptEdits` or `--allow \"Bash(...)\"`, "
                        "or `--permission-mode bypassPermissions`."
                    )
                )
            )

    timer = threading.Timer(timeout, headless)
    timer.daemon = True
    timer.start()
    w._approval_finish = finish  # lets the turn's end expire a prompt nobody answered
    return w
