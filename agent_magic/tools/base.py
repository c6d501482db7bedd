"""The tool interface: what a tool declares, what it receives, what it returns.

A tool is a small object with a name, a description and a JSON input schema
(Claude Code's names and schemas, which Claude models are trained on) and an
async ``run``. Tools never talk to the model or the transcript; the loop does.
A tool that cannot do what it was asked raises :class:`~agent_magic.ToolError`
with a message for the model; the loop turns it into an error result.

Changes to files go through :class:`ChangeRecorder` *before* the file is
touched, so every change can be rewound. Tools that write must call it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._errors import ToolError

if TYPE_CHECKING:
    pass

ToolKind = Literal["read", "edit", "execute"]


@dataclass
class ToolResult:
    """What a tool returns.

    Parameters
    ----------
    content
        Text, or Messages API content blocks (text/image), sent to the model.
    is_error
        True when the tool failed; the model sees the content as an error.
    summary
        One line for people (the notebook shows it next to the tool call),
        e.g. ``"wrote 12 lines"``.
    data
        Structured details for displays (diffs, cell ids, exit code).
    """

    content: str | list[dict[str, Any]]
    is_error: bool = False
    summary: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CellEdit:
    """One NotebookEdit, described for checkpointing.

    ``before_cell`` and ``after_cell`` are nbformat cell dicts (``None`` for an
    insert's before and a delete's after). ``index`` is the cell's position
    before the edit (for an insert: the position it was inserted at);
    ``prev_cell_id`` is the id of the cell just before it, used to put a deleted
    cell back in the right place.
    """

    op: Literal["replace", "insert", "delete"]
    cell_id: str
    before_cell: dict[str, Any] | None
    after_cell: dict[str, Any] | None
    index: int
    prev_cell_id: str | None


class ChangeRecorder(Protocol):
    """Records the state of files before a tool changes them.

    Implemented by the checkpoint store. Every method must have made its
    backup durable (written and flushed) before it returns.
    """

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        """Back up ``path`` (or note that it does not exist) before it is written.

        ``new_content`` is what the tool is about to write (``None`` for a delete),
        recorded so that a rewind can tell the agent's version from a person's later edit.
        """

    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        """Back up one cell-level notebook edit before the notebook is written.

        ``notebook_bytes`` is the notebook as it is before the edit (stored in full
        once per session, as the fallback for notebooks whose cell ids change);
        ``new_notebook_bytes`` is what will be written.
        """

    def before_command(self) -> object:
        """Snapshot the workspace before a shell command; returns a token for :meth:`after_command`."""

    def after_command(self, token: object) -> list[str]:
        """Record what the command created, changed or deleted; returns the changed paths."""


class NullRecorder:
    """A recorder that records nothing (checkpointing turned off)."""

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        return None

    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        return None

    def before_command(self) -> object:
        return None

    def after_command(self, token: object) -> list[str]:
        return []


class NotebookBridge(Protocol):
    """Reads and edits notebooks that are open in a front end (the JupyterLab extension).

    When a bridge is present and a notebook is open there, the notebook tools
    read the open (possibly unsaved) content and apply edits to the open model
    instead of writing the file underneath the person.
    """

    def is_open(self, path: Path) -> bool: ...

    def read(self, path: Path) -> dict[str, Any] | None:
        """The open notebook's current content as an nbformat dict, or None."""

    def apply(self, path: Path, edit: CellEdit) -> bool:
        """Apply one cell edit to the open notebook; False if it could not."""

    def replace_all(self, path: Path, notebook: dict[str, Any]) -> bool:
        """Replace the open notebook's cells with ``notebook``'s (a rewind's last resort); False if it could not."""


@dataclass
class ToolContext:
    """What a tool can see of the session it runs in."""

    cwd: Path
    session_id: str
    tool_use_id: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    recorder: ChangeRecorder = field(default_factory=NullRecorder)
    #: Absolute paths the agent has read in this session, with the file's
    #: mtime_ns at that moment. NotebookEdit/Edit/Write refuse existing files not in here.
    read_files: dict[str, int] = field(default_factory=dict)
    notebook_bridge: NotebookBridge | None = None
    add_dirs: list[Path] = field(default_factory=list)
    #: For tools that run agent work of their own (the ``Agent`` tool): the calling turn's
    #: runtime and state (``agent_magic._loop.Runtime`` / ``_Turn``) and its message emitter.
    runtime: Any = None
    turn: Any = None
    emit: Any = None

    def resolve(self, file_path: str) -> Path:
        """Resolve a tool's path argument against the session cwd (symlinks and ``..`` resolved)."""
        if not isinstance(file_path, str) or not file_path:
            raise ToolError("A file path is required.")
        if "\x00" in file_path:
            raise ToolError("The path contains a NUL byte.")
        p = Path(file_path).expanduser()
        if not p.is_absolute():
            p = self.cwd / p
        return p.resolve()


class Tool(ABC):
    """Base class of every tool.

    Subclasses set the class attributes and implement :meth:`run`. ``kind``
    drives permissions: ``read`` tools are always allowed, ``edit`` tools are
    allowed in ``acceptEdits`` mode inside the workspace, ``execute`` tools ask
    unless a rule allows them.
    """

    # Plain attributes, set on the class by built-in tools and per instance by tools made at
    # run time (MCP servers' tools, kernel functions, the Agent tool listing its subagents).
    name: str
    description: str
    input_schema: dict[str, Any]
    kind: ToolKind = "read"

    @abstractmethod
    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Do the work; raise ToolError for failures the model should hear about."""

    def paths(self, input: dict[str, Any], ctx: ToolContext) -> list[Path]:
        """Absolute paths this call would read or write (for permission checks)."""
        for key in ("file_path", "notebook_path", "path"):
            value = input.get(key)
            if isinstance(value, str) and value:
                try:
                    return [ctx.resolve(value)]
                except ToolError:
                    return []
        return []

    def describe(self, input: dict[str, Any]) -> str:
        """A short human description of a call, e.g. ``Edit(src/app.py)``."""
        for key in ("file_path", "notebook_path", "command", "pattern", "path", "code"):
            value = input.get(key)
            if isinstance(value, str) and value:
                first = value.strip().splitlines()[0] if value.strip() else value
                return f"{self.name}({first[:80]})"
        return self.name

    def rule_content(self, input: dict[str, Any]) -> str | None:
        """The text a permission rule's parentheses match: a Bash command, a path."""
        for key in ("command", "file_path", "notebook_path", "path", "pattern", "code"):
            value = input.get(key)
            if isinstance(value, str):
                return value
        return None

    def spec(self) -> dict[str, Any]:
        """The tool's definition as sent to the model."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


def require_str(input: Mapping[str, Any], key: str, *, allow_empty: bool = False) -> str:
    """Return ``input[key]`` as a string or raise ToolError naming the missing parameter."""
    value = input.get(key)
    if not isinstance(value, str):
        raise ToolError(f"The required parameter `{key}` is missing or not a string.")
    if not allow_empty and value == "":
        raise ToolError(f"The parameter `{key}` must not be empty.")
    return value


def optional_int(input: Mapping[str, Any], key: str, *, minimum: int = 0) -> int | None:
    """Return ``input[key]`` as an int (None when absent) or raise ToolError."""
    value = input.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ToolError(f"The parameter `{key}` must be an integer.")
    if value < minimum:
        raise ToolError(f"The parameter `{key}` must be at least {minimum}.")
    return int(value)
