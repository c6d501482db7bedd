"""Message and content-block classes, shaped like the Claude Agent SDK's.

A query yields, in order: one :class:`SystemMessage` (``subtype="init"``), the
:class:`UserMessage` that starts the turn (its ``uuid`` is the turn's checkpoint
id), then :class:`AssistantMessage` and tool-result :class:`UserMessage` pairs,
optional :class:`StreamEvent` partials, and one :class:`ResultMessage` last.

Content blocks convert to and from the Messages API's JSON form with
:func:`block_from_dict` and ``block.to_dict()``; that JSON form is what
transcripts store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class TextBlock:
    """Text written by the model or the person."""

    text: str
    type: Literal["text"] = field(default="text", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass
class ThinkingBlock:
    """Extended-thinking text; ``signature`` must be sent back unchanged."""

    thinking: str
    signature: str = ""
    type: Literal["thinking"] = field(default="thinking", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "thinking", "thinking": self.thinking, "signature": self.signature}


@dataclass
class ToolUseBlock:
    """A tool call requested by the model."""

    id: str
    name: str
    input: dict[str, Any]
    type: Literal["tool_use"] = field(default="tool_use", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input}


@dataclass
class ToolResultBlock:
    """The result of a tool call, sent back to the model."""

    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None
    type: Literal["tool_result"] = field(default="tool_result", init=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "tool_result", "tool_use_id": self.tool_use_id}
        if self.content is not None:
            d["content"] = self.content
        if self.is_error:
            d["is_error"] = True
        return d

    @property
    def text(self) -> str:
        """The result's text content joined into one string."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock


def block_from_dict(d: dict[str, Any]) -> ContentBlock:
    """Build a content block from its Messages API JSON form.

    Unknown block types (redacted thinking, server tools) are kept as text
    describing them so that nothing raises on a newer API's output.
    """
    t = d.get("type")
    if t == "text":
        return TextBlock(str(d.get("text", "")))
    if t == "thinking":
        return ThinkingBlock(str(d.get("thinking", "")), str(d.get("signature", "")))
    if t == "tool_use":
        inp = d.get("input")
        return ToolUseBlock(str(d["id"]), str(d["name"]), inp if isinstance(inp, dict) else {})
    if t == "tool_result":
        return ToolResultBlock(str(d["tool_use_id"]), d.get("content"), d.get("is_error"))
    return TextBlock(f"[{t} block]")


def blocks_from_content(content: str | list[dict[str, Any]]) -> str | list[ContentBlock]:
    """Convert a message's ``content`` (string or list of block dicts) to blocks."""
    if isinstance(content, str):
        return content
    return [block_from_dict(b) for b in content]


def content_to_json(content: str | list[ContentBlock]) -> str | list[dict[str, Any]]:
    """Convert blocks (or a string) to the Messages API JSON form."""
    if isinstance(content, str):
        return content
    return [b.to_dict() for b in content]


@dataclass
class UserMessage:
    """A message from the person (a prompt) or carrying tool results.

    ``uuid`` is always set. For the prompt that starts a turn it is the turn's
    checkpoint id, which :func:`agent_magic.rewind_files` accepts.
    """

    content: str | list[ContentBlock]
    uuid: str
    parent_tool_use_id: str | None = None
    session_id: str | None = None
    #: For tool results: ``{"tool_name", "summary", "is_error", "data"}`` for displays.
    tool_use_result: dict[str, Any] | None = None

    @property
    def is_prompt(self) -> bool:
        """True for a person's prompt, False for a message of tool results."""
        if isinstance(self.content, str):
            return True
        return not any(isinstance(b, ToolResultBlock) for b in self.content)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))


@dataclass
class AssistantMessage:
    """One model response: text, thinking and tool calls."""

    content: list[ContentBlock]
    model: str
    usage: dict[str, Any] | None = None
    uuid: str | None = None
    stop_reason: str | None = None
    session_id: str | None = None
    parent_tool_use_id: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]


@dataclass
class SystemMessage:
    """Metadata from agent-magic itself.

    ``subtype="init"`` comes first in every query; ``data`` has ``session_id``,
    ``cwd``, ``model``, ``tools``, ``permission_mode``, ``scope`` and, for a
    fork, ``forked_from``. Other subtypes: ``hook_error``, ``hook`` (a hook's
    ``systemMessage``), ``warning``, ``checkpoint`` (a turn's recorded changes).
    """

    subtype: str
    data: dict[str, Any]


ResultSubtype = Literal[
    "success",
    "error_max_turns",
    "error_max_budget_usd",
    "error_during_execution",
    "error_max_structured_output_retries",
    "interrupted",
]


@dataclass
class ResultMessage:
    """The last message of every query.

    ``total_cost_usd`` is ``None`` when the model's price is unknown; it is
    never a made-up 0. ``result`` is the final text, or for errors the
    one-line explanation.
    """

    subtype: str
    session_id: str
    num_turns: int
    duration_ms: int
    is_error: bool
    duration_api_ms: int = 0
    total_cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    result: str | None = None
    checkpoint_id: str | None = None
    stop_reason: str | None = None
    uuid: str | None = None
    errors: list[str] | None = None
    api_error_status: int | None = None
    #: Tokens the conversation will carry into the next request, and the model's window (None: unknown).
    context_tokens: int | None = None
    context_window: int | None = None
    #: With a shared store: lines written here that have not reached it yet (None: no shared store).
    sync_pending: int | None = None
    #: With ``output_format``: the final answer parsed and validated against its schema.
    structured_output: Any = None


@dataclass
class StreamEvent:
    """A raw streaming event (Messages API event dict), when partial messages are on."""

    uuid: str
    session_id: str
    event: dict[str, Any]
    parent_tool_use_id: str | None = None

    @property
    def text_delta(self) -> str | None:
        """The text of a ``text_delta`` event, else ``None``."""
        if self.event.get("type") == "content_block_delta":
            delta = self.event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return str(delta.get("text", ""))
        return None


Message = UserMessage | AssistantMessage | SystemMessage | ResultMessage | StreamEvent
