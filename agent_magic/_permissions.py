"""Permissions: modes, allow/deny rules, and the ``can_use_tool`` callback.

Order of decision for one tool call:

1. a ``disallowed_tools`` rule matches: deny (deny always wins);
2. ``plan`` mode and the tool is not read-only: deny;
3. an ``allowed_tools`` rule matches: allow (a bare tool name, e.g. ``Edit``,
   allows it inside the workspace only);
4. ``bypassPermissions``: allow;
5. read-only tools inside the workspace: allow;
6. ``acceptEdits`` and an edit tool inside the workspace: allow;
7. otherwise ask: the ``can_use_tool`` callback decides; without one, deny
   with a message saying how to allow it.

The workspace is the session's cwd plus ``add_dirs``; paths are resolved
(symlinks and ``..``) before they are compared.

Rules look like Claude Code's: ``Bash``, ``Bash(git status)`` (exact),
``Bash(pytest *)`` (glob), ``Bash(npm run:*)`` (prefix), ``Edit(src/**)``
(path glob, relative to the cwd), ``Read(*.csv)``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._errors import ConfigurationError

_RULE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*(?:__\*)?)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass
class PermissionUpdate:
    """Rules to add for the rest of the session (an "Always allow" answer)."""

    rules: list[str]
    behavior: Literal["allow", "deny"] = "allow"


@dataclass
class PermissionResultAllow:
    """Allow the call, optionally with changed input and new rules."""

    behavior: Literal["allow"] = "allow"
    updated_input: dict[str, Any] | None = None
    updated_permissions: list[PermissionUpdate] | None = None


@dataclass
class PermissionResultDeny:
    """Deny the call; ``message`` goes to the model. ``interrupt=True`` also ends the turn."""

    behavior: Literal["deny"] = "deny"
    message: str = ""
    interrupt: bool = False


PermissionResult = PermissionResultAllow | PermissionResultDeny


@dataclass
class ToolPermissionContext:
    """What ``can_use_tool`` is told about a call."""

    tool_use_id: str
    suggestions: list[PermissionUpdate] = field(default_factory=list)
    blocked_path: str | None = None
    decision_reason: str | None = None
    title: str | None = None
    #: Structured preview for UIs: ``{"kind": "command", "command": ...}`` or
    #: ``{"kind": "diff", "path": ..., "diff": ...}``.
    preview: dict[str, Any] = field(default_factory=dict)
    signal: Any | None = None


@dataclass(frozen=True)
class Rule:
    """One parsed permission rule."""

    tool: str
    content: str | None

    @classmethod
    def parse(cls, text: str) -> Rule:
        m = _RULE_RE.match(text or "")
        if not m:
            raise ConfigurationError(
                f"Invalid permission rule {text!r}: write a tool name, optionally with a pattern, e.g. 'Edit' or 'Bash(git status)'."
            )
        content = m.group(2)
        if content is not None:
            content = content.strip()
            if content in ("", "*"):
                content = None
        return cls(m.group(1), content)

    def __str__(self) -> str:
        return self.tool if self.content is None else f"{self.tool}({self.content})"

    def names(self, tool: str) -> bool:
        """Whether the rule is about ``tool``: its name, or for MCP tools (``mcp__server__tool``)
        the server's (``mcp__server``, ``mcp__server__*``), as Claude Code's rules do."""
        if self.tool == tool:
            return True
        if not tool.startswith("mcp__"):
            return False
        server = self.tool[:-3] if self.tool.endswith("__*") else self.tool
        return server.startswith("mcp__") and server.count("__") == 1 and tool.startswith(server + "__")

    def matches(self, tool: str, value: str | None, cwd: Path, is_path: bool) -> bool:
        if not self.names(tool):
            return False
        if self.content is None:
            return True
        if value is None:
            return False
        pattern = self.content
        if is_path:
            candidates = {value}
            try:
                p = Path(value)
                if p.is_absolute():
                    candidates.add(str(p.relative_to(cwd)))
            except ValueError:
                pass
            pat = pattern
            if pat.startswith("./"):
                pat = pat[2:]
            return any(_glob_match(pat, c) for c in candidates)
        value = value.strip()
        if pattern.endswith(":*"):
            prefix = pattern[:-2]
            return value == prefix or value.startswith(prefix + " ") or value.startswith(prefix)
        if "*" in pattern or "?" in pattern:
            return fnmatch.fnmatchcase(value, pattern)
        return value == pattern


def _glob_match(pattern: str, path: str) -> bool:
    """Glob where ``**`` crosses folders and ``*`` does not."""
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif c == "*":
            regex += "[^/]*"
            i += 1
        elif c == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(c)
            i += 1
    return re.fullmatch(regex, path) is not None


def parse_rules(rules: list[str] | tuple[str, ...]) -> list[Rule]:
    return [Rule.parse(r) for r in rules]


@dataclass
class Decision:
    """The outcome of the rule check (before any callback)."""

    behavior: Literal["allow", "deny", "ask"]
    reason: str
    blocked_path: str | None = None


def inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def decide(
    *,
    tool_name: str,
    kind: str,
    rule_value: str | None,
    rule_is_path: bool,
    paths: list[Path],
    mode: str,
    allow: list[Rule],
    deny: list[Rule],
    workspace: list[Path],
    cwd: Path,
) -> Decision:
    """Apply mode and rules to one tool call."""
    for r in deny:
        if r.matches(tool_name, rule_value, cwd, rule_is_path):
            return Decision("deny", f"denied by the rule {r}")
    if mode == "plan" and kind != "read":
        return Decision("deny", "plan mode allows read-only tools only")
    outside = [p for p in paths if not inside(p, workspace)]
    for r in allow:
        if r.matches(tool_name, rule_value, cwd, rule_is_path):
            if r.content is None and outside and kind != "execute":
                break
            return Decision("allow", f"allowed by the rule {r}")
    if mode == "bypassPermissions":
        return Decision("allow", "bypassPermissions mode")
    if outside:
        return Decision("ask", f"{outside[0]} is outside the workspace", blocked_path=str(outside[0]))
    if kind == "read":
        return Decision("allow", "read-only tool")
    if kind == "edit" and mode == "acceptEdits":
        return Decision("allow", "acceptEdits mode")
    return Decision("ask", f"{tool_name} needs approval in {mode} mode")


def suggestion_for(tool_name: str, rule_value: str | None, kind: str) -> PermissionUpdate:
    """The rule an "Always allow" answer would add."""
    if kind == "execute" and rule_value:
        first = rule_value.strip().split()
        if tool_name == "Bash" and first:
            return PermissionUpdate([f"Bash({first[0]}:*)"])
        return PermissionUpdate([f"{tool_name}({rule_value.strip()})"])
    return PermissionUpdate([tool_name])
