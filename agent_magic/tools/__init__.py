"""Built-in tools (Claude Code's names and input schemas) and the tool interface.

``Read``, ``Write``, ``Edit``, ``NotebookEdit``, ``Glob``, ``Grep`` and ``Bash``
are always available; the notebook layer adds ``Python`` and ``Variables``
(they run in the live kernel) through ``AgentOptions.extra_tools``.
"""

from __future__ import annotations

from .base import (
    CellEdit,
    ChangeRecorder,
    NotebookBridge,
    NullRecorder,
    Tool,
    ToolContext,
    ToolKind,
    ToolResult,
)

BUILTIN_TOOL_NAMES: tuple[str, ...] = ("Read", "Write", "Edit", "NotebookEdit", "Glob", "Grep", "Bash")


_BUILTIN: dict[str, tuple[str, str]] = {
    "Read": ("files", "ReadTool"),
    "Write": ("files", "WriteTool"),
    "Edit": ("files", "EditTool"),
    "NotebookEdit": ("notebook", "NotebookEditTool"),
    "Glob": ("search", "GlobTool"),
    "Grep": ("search", "GrepTool"),
    "Bash": ("bash", "BashTool"),
}


def builtin_tools(names: list[str] | tuple[str, ...] | None = None) -> list[Tool]:
    """Instances of the built-in tools, optionally only those named (in the standard order)."""
    import importlib

    wanted = BUILTIN_TOOL_NAMES if names is None else tuple(n for n in BUILTIN_TOOL_NAMES if n in set(names))
    out: list[Tool] = []
    for name in wanted:
        module, cls = _BUILTIN[name]
        out.append(getattr(importlib.import_module(f"{__name__}.{module}"), cls)())
    return out


__all__ = [
    "BUILTIN_TOOL_NAMES",
    "CellEdit",
    "ChangeRecorder",
    "NotebookBridge",
    "NullRecorder",
    "Tool",
    "ToolContext",
    "ToolKind",
    "ToolResult",
    "builtin_tools",
]
