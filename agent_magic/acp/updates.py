"""Our messages as ACP ``session/update`` notifications, for live turns and replayed transcripts.

A turn streams text (``agent_message_chunk``) and thinking
(``agent_thought_chunk``) from its stream events; each tool call becomes a
``tool_call`` when the model makes it and a ``tool_call_update`` when its
result comes: file edits carry ``diff`` content (the file's text before and
after), a NotebookEdit the edited cell's source before and after, other tools
their text output. A stored transcript replays through the same conversion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from acp import schema

from .._messages import (
    AssistantMessage,
    Message,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    block_from_dict,
)
from ..notebook._display import compaction_line, display_path, notebook_edit_phrase

Update: TypeAlias = (
    schema.UserMessageChunk
    | schema.AgentMessageChunk
    | schema.AgentThoughtChunk
    | schema.ToolCallStart
    | schema.ToolCallProgress
    | schema.UsageUpdate
)
ToolKind = Literal["read", "edit", "delete", "move", "search", "execute", "think", "fetch", "switch_mode", "other"]
ToolContent: TypeAlias = schema.ContentToolCallContent | schema.FileEditToolCallContent | schema.TerminalToolCallContent

_KINDS: dict[str, ToolKind] = {
    "Read": "read", "Variables": "read", "Glob": "search", "Grep": "search", "Write": "edit", "Edit": "edit",
    "NotebookEdit": "edit", "Bash": "execute", "Python": "execute", "Agent": "think", "WebFetch": "fetch",
    "WebSearch": "fetch",
}
#: Files larger than this are not read for a diff (the diff is then the call's own old/new strings).
_DIFF_MAX_BYTES = 1_000_000
#: Characters of a tool's text output sent in its update.
_OUTPUT_MAX_CHARS = 20_000


def tool_kind(name: str) -> ToolKind:
    """The ACP tool kind of one of our tools (``other`` for MCP and unknown tools)."""
    return _KINDS.get(name, "other")


def tool_title(name: str, tool_input: dict[str, Any], cwd: Path | None) -> str:
    """What a tool call shows in a client: "Write notes.txt", "Bash `sleep 30`", "NotebookEdit a.ipynb (replace cell x)"."""
    where = str(cwd) if cwd is not None else None
    if name == "Bash":
        command = str(tool_input.get("command") or "").strip().splitlines()
        return f"`{command[0][:100]}`" if command else "Bash"
    for key in ("file_path", "notebook_path", "path"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            title = f"{name} {display_path(value, where)}"
            if key == "notebook_path":
                title += f" ({notebook_edit_phrase(tool_input)})"
            return title
    pattern = tool_input.get("pattern")
    if isinstance(pattern, str) and pattern:
        return f"{name} {pattern}"
    description = tool_input.get("description")
    if isinstance(description, str) and description.strip():
        return f"{name}: {description.strip().splitlines()[0][:100]}"
    return name


def text_chunk(text: str, *, message_id: str | None = None) -> schema.AgentMessageChunk:
    return schema.AgentMessageChunk(
        session_update="agent_message_chunk", content=schema.TextContentBlock(type="text", text=text), message_id=message_id
    )


def _thought(text: str) -> schema.AgentThoughtChunk:
    return schema.AgentThoughtChunk(session_update="agent_thought_chunk", content=schema.TextContentBlock(type="text", text=text))


def _text_content(text: str) -> schema.ContentToolCallContent:
    if len(text) > _OUTPUT_MAX_CHARS:
        text = text[:_OUTPUT_MAX_CHARS] + "\n[... cut ...]"
    return schema.ContentToolCallContent(type="content", content=schema.TextContentBlock(type="text", text=text))


def _diff(path: str, old: str | None, new: str) -> schema.FileEditToolCallContent:
    return schema.FileEditToolCallContent(type="diff", path=path, old_text=old, new_text=new)


def _read_text(path: Path) -> str | None:
    """A text file's content (None: missing, too large, or not UTF-8)."""
    try:
        if path.stat().st_size > _DIFF_MAX_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _cell_source(path: Path, cell_id: str) -> str | None:
    """The source of one cell of a notebook on disk (None: no such notebook or cell)."""
    raw = _read_text(path)
    if raw is None or not cell_id:
        return None
    try:
        nb = json.loads(raw)
    except ValueError:
        return None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for i, cell in enumerate(cells if isinstance(cells, list) else []):
        if isinstance(cell, dict) and (cell.get("id") == cell_id or cell_id == f"cell-{i}"):
            source = cell.get("source", "")
            return "".join(source) if isinstance(source, list) else str(source)
    return None


@dataclass
class _Call:
    name: str
    input: dict[str, Any]
    path: Path | None
    #: The file's (or cell's) text when the model made the call: the "before" of its diff.
    before: str | None = None


class TurnUpdates:
    """Converts one session's messages, in order, into ACP session updates.

    Parameters
    ----------
    cwd
        The session's folder: relative paths in tool calls are resolved against it.
    replay
        Converting a stored transcript: prompts are echoed as user chunks and no
        file is read (its content now says nothing about then).
    """

    def __init__(self, cwd: Path, *, replay: bool = False) -> None:
        self.cwd = cwd
        self.replay = replay
        self._calls: dict[str, _Call] = {}
        self._streamed_text = False
        self._streamed_thinking = False
        #: The model's stop reason for its last answer in this turn (``max_tokens``, ``refusal``...).
        self.last_stop_reason: str | None = None

    def _path(self, tool_input: dict[str, Any]) -> Path | None:
        raw = tool_input.get("file_path") or tool_input.get("notebook_path")
        if not isinstance(raw, str) or not raw or "\x00" in raw:
            return None
        p = Path(raw).expanduser()
        return p if p.is_absolute() else self.cwd / p

    def convert(self, msg: Message) -> list[Update]:
        """The updates one message makes (often none)."""
        if isinstance(msg, StreamEvent):
            return self._stream(msg)
        if isinstance(msg, AssistantMessage):
            return self._assistant(msg)
        if isinstance(msg, UserMessage):
            if msg.is_prompt:
                if not self.replay or msg.parent_tool_use_id:
                    return []
                return [
                    schema.UserMessageChunk(
                        session_update="user_message_chunk",
                        content=schema.TextContentBlock(type="text", text=msg.text),
                        message_id=msg.uuid,
                    )
                ]
            return self._results(msg)
        if isinstance(msg, SystemMessage):
            if msg.subtype in ("warning", "hook", "hook_error"):
                return [text_chunk(f"\n\n> ⚠ {msg.data.get('message', '')}\n\n")]
            if msg.subtype == "compact_boundary":
                return [text_chunk(f"\n\n_{compaction_line(msg.data)}_\n\n")]
            return []
        if isinstance(msg, ResultMessage):
            return self._result(msg)
        return []

    # -- pieces ---------------------------------------------------------------------
    def _stream(self, msg: StreamEvent) -> list[Update]:
        if msg.parent_tool_use_id:
            return []  # a subagent's words are in its report
        event = msg.event
        if event.get("type") != "content_block_delta":
            return []
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            self._streamed_text = True
            return [text_chunk(str(delta["text"]))]
        if delta.get("type") == "thinking_delta" and delta.get("thinking"):
            self._streamed_thinking = True
            return [_thought(str(delta["thinking"]))]
        return []

    def _assistant(self, msg: AssistantMessage) -> list[Update]:
        out: list[Update] = []
        if not msg.parent_tool_use_id:
            self.last_stop_reason = msg.stop_reason
            for b in msg.content:
                if isinstance(b, ThinkingBlock) and b.thinking.strip() and not self._streamed_thinking:
                    out.append(_thought(b.thinking))
                elif isinstance(b, TextBlock) and b.text.strip() and not self._streamed_text:
                    out.append(text_chunk(b.text, message_id=msg.uuid))
            self._streamed_text = self._streamed_thinking = False
        for b in msg.content:
            if isinstance(b, ToolUseBlock):
                out.append(self._start(b))
        return out

    def _start(self, b: ToolUseBlock) -> schema.ToolCallStart:
        path = self._path(b.input)
        call = _Call(b.name, dict(b.input), path)
        self._calls[b.id] = call
        if path is not None and not self.replay:
            if b.name in ("Write", "Edit"):
                call.before = _read_text(path)
            elif b.name == "NotebookEdit" and b.input.get("edit_mode") != "insert":
                call.before = _cell_source(path, str(b.input.get("cell_id") or ""))
        return schema.ToolCallStart(
            session_update="tool_call",
            tool_call_id=b.id,
            title=tool_title(b.name, b.input, self.cwd),
            kind=tool_kind(b.name),
            status="pending",
            raw_input=b.input,
            content=self.preview(b.id) or None,
            locations=[schema.ToolCallLocation(path=str(path))] if path is not None else None,
        )

    def preview(self, tool_use_id: str) -> list[ToolContent]:
        """What a call will change, before it runs (for the tool call and its permission request)."""
        call = self._calls.get(tool_use_id)
        return _preview(call) if call is not None else []

    def _results(self, msg: UserMessage) -> list[Update]:
        out: list[Update] = []
        for b in msg.content if isinstance(msg.content, list) else []:
            if not isinstance(b, ToolResultBlock):
                continue
            call = self._calls.pop(b.tool_use_id, None)
            content: list[ToolContent] = []
            if call is not None and not b.is_error and call.name in ("Write", "Edit") and call.path is not None:
                after = None if self.replay else _read_text(call.path)
                content = [_diff(str(call.path), call.before, after)] if after is not None else _preview(call)
            elif call is not None and not b.is_error and call.name == "NotebookEdit":
                content = _preview(call) + ([_text_content(b.text)] if b.text else [])
            elif b.text:
                content = [_text_content(b.text)]
            summary = (msg.tool_use_result or {}).get("summary")
            out.append(
                schema.ToolCallProgress(
                    session_update="tool_call_update",
                    tool_call_id=b.tool_use_id,
                    status="failed" if b.is_error else "completed",
                    content=content or None,
                    raw_output={"summary": summary} if isinstance(summary, str) else None,
                )
            )
        return out

    def _result(self, msg: ResultMessage) -> list[Update]:
        out: list[Update] = []
        if msg.is_error and msg.result and msg.subtype != "interrupted":
            out.append(text_chunk(f"\n\n**{msg.subtype.replace('_', ' ')}:** {msg.result}\n"))
        if msg.context_tokens is not None and msg.context_window:
            cost = schema.Cost(amount=msg.total_cost_usd, currency="USD") if msg.total_cost_usd is not None else None
            out.append(
                schema.UsageUpdate(session_update="usage_update", used=msg.context_tokens, size=msg.context_window, cost=cost)
            )
        return out


def _preview(call: _Call) -> list[ToolContent]:
    """The diff a Write, Edit or NotebookEdit call makes, from its input and the text before it."""
    if call.path is None:
        return []
    inp = call.input
    if call.name == "Write" and isinstance(inp.get("content"), str):
        return [_diff(str(call.path), call.before, inp["content"])]
    if call.name == "Edit":
        old, new = inp.get("old_string"), inp.get("new_string")
        if not isinstance(old, str) or not isinstance(new, str):
            return []
        if call.before is not None and old and old in call.before:
            after = call.before.replace(old, new) if inp.get("replace_all") else call.before.replace(old, new, 1)
            return [_diff(str(call.path), call.before, after)]
        return [_diff(str(call.path), old, new)]
    if call.name == "NotebookEdit":
        mode = inp.get("edit_mode") or "replace"
        new_source = "" if mode == "delete" else str(inp.get("new_source") or "")
        before = call.before if call.before is not None else ("" if mode == "insert" else None)
        return [_diff(str(call.path), before, new_source)]
    return []


def stored_messages(rows: list[Any]) -> list[Message]:
    """A stored session's messages (``agent_magic.get_session_messages``) as live message objects."""
    out: list[Message] = []
    for m in rows:
        message = m.message
        if m.is_compact_boundary:
            out.append(SystemMessage("compact_boundary", dict(message)))
            continue
        content = message.get("content") if isinstance(message, dict) else None
        blocks = [block_from_dict(b) for b in content if isinstance(b, dict)] if isinstance(content, list) else None
        if m.type == "user":
            out.append(UserMessage(content if isinstance(content, str) else (blocks or []), uuid=m.uuid,
                                   parent_tool_use_id=m.parent_tool_use_id, session_id=m.session_id))
        elif m.type == "assistant" and blocks is not None:
            out.append(AssistantMessage(blocks, model=str(message.get("model") or ""), uuid=m.uuid,
                                        stop_reason=message.get("stop_reason"), session_id=m.session_id,
                                        parent_tool_use_id=m.parent_tool_use_id))
    return out


def replay(rows: list[Any], cwd: Path) -> list[Update]:
    """The updates that show a stored session's history: prompts, answers, tool calls and their results."""
    conv = TurnUpdates(cwd, replay=True)
    out: list[Update] = []
    for msg in stored_messages(rows):
        if isinstance(msg, UserMessage) and msg.is_prompt and isinstance(msg.content, list) and not msg.text:
            continue  # a prompt of images only: nothing to show as text
        out.extend(conv.convert(msg))
    return out
