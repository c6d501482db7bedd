"""Scripted replies for the fake Messages API server.

A reply is a plain, JSON-serialisable dict, so scripts can be handed to a
server running in another process. Build them with the helpers here::

    text("Done.")
    tool_use("Write", {"file_path": "a.txt", "content": "hi"}, text="Writing it.")
    message(text_block("Let me look."), tool_block("Read", {"file_path": "a.txt"}))
    error(429, "rate_limit_error", "Slow down", headers={"retry-after": "0"})
    stream_error("overloaded_error", "Overloaded", after=3)
    truncated(after=4)

A compaction block (:func:`compaction_block`) can be scripted too, and
:func:`conversation_summary` writes the deterministic summary the fake servers
give when they compact a conversation or answer a summary request.
"""

from __future__ import annotations

import itertools
from typing import Any

Reply = dict[str, Any]
Block = dict[str, Any]

_ids = itertools.count(1)


def _tool_id() -> str:
    return f"toolu_{next(_ids):04d}{'x' * 20}"


def text_block(text: str) -> Block:
    """A text content block."""
    return {"type": "text", "text": text}


def thinking_block(thinking: str, signature: str | None = None) -> Block:
    """An extended-thinking block.

    Without ``signature`` the server signs the text, and refuses the block if it
    comes back changed, as the API does.
    """
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def compaction_block(content: str | None, encrypted_content: str | None = None) -> Block:
    """A compaction block (beta), as the API puts at the start of a response when it compacts.

    Without ``encrypted_content`` the server seals the summary, and refuses the
    block if it comes back changed, as the API does. ``content=None`` is a failed
    compaction, which the API treats as a no-op.
    """
    return {"type": "compaction", "content": content, "encrypted_content": encrypted_content}


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def conversation_summary(
    prompts: list[str],
    tools: list[str],
    *,
    instructions: str | None = None,
    earlier: str | None = None,
) -> str:
    """The fake servers' summary of a conversation: plain, deterministic, easy to assert on.

    Parameters
    ----------
    prompts
        The user texts summarised, oldest first; each is named by its first 80
        characters, whitespace collapsed.
    tools
        The names of the tools called, one per call; each is named once, in order of first use.
    instructions
        The caller's instructions for the summary; written on an ``Instructions:`` line.
    earlier
        The summary a previous compaction wrote, carried over (indented) first.

    Returns
    -------
    str
        For example::

            Summary of the conversation so far: 2 prompts, 3 tool calls.
            Prompts:
            - plot the sales data
            - now as a bar chart
            Tools used: Read, NotebookEdit
            Instructions: keep the file names
    """
    lines = [f"Summary of the conversation so far: {len(prompts)} prompt{'s' * (len(prompts) != 1)}, "
             f"{len(tools)} tool call{'s' * (len(tools) != 1)}."]
    if earlier:
        lines.append("Earlier summary:")
        lines.extend("  " + line for line in earlier.splitlines())
    lines.append("Prompts:" if prompts else "Prompts: none")
    lines.extend(f"- {_clip(p, 80)}" for p in prompts)
    lines.append(f"Tools used: {', '.join(dict.fromkeys(tools)) or 'none'}")
    if instructions and instructions.strip():
        lines.append(f"Instructions: {' '.join(instructions.split())}")
    return "\n".join(lines)


def tool_block(name: str, input: dict[str, Any], id: str | None = None) -> Block:
    """A tool_use block; ``id`` defaults to a fresh ``toolu_...`` id."""
    return {"type": "tool_use", "id": id or _tool_id(), "name": name, "input": input}


def raw_tool_block(name: str, partial_json: str, id: str | None = None) -> Block:
    """A tool_use block whose input JSON is sent verbatim (it may be invalid)."""
    return {"type": "tool_use", "id": id or _tool_id(), "name": name, "raw_json": partial_json}


def message(
    *blocks: Block,
    stop_reason: str | None = None,
    chunk_size: int = 24,
    delay: float = 0.0,
    first_delay: float = 0.0,
    usage: dict[str, int] | None = None,
    model: str | None = None,
) -> Reply:
    """A streamed assistant message made of ``blocks``.

    Parameters
    ----------
    stop_reason
        Defaults to ``tool_use`` when a block is a tool call, else ``end_turn``.
    chunk_size
        Characters of text (or JSON) per delta event.
    delay
        Seconds to wait between events (to test streaming and interrupts).
    first_delay
        Seconds to wait before the response headers.
    usage
        Token counts to report; estimated from the text when omitted.
    """
    if stop_reason is None:
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    return {
        "kind": "message",
        "blocks": list(blocks),
        "stop_reason": stop_reason,
        "chunk_size": max(1, int(chunk_size)),
        "delay": float(delay),
        "first_delay": float(first_delay),
        "usage": usage,
        "model": model,
    }


def text(s: str, **kw: Any) -> Reply:
    """A streamed assistant message with one text block (stop_reason ``end_turn``)."""
    return message(text_block(s), **kw)


def tool_use(name: str, input: dict[str, Any], *, text: str | None = None, id: str | None = None, **kw: Any) -> Reply:
    """A streamed assistant message calling one tool, optionally after some text."""
    blocks = ([text_block(text)] if text else []) + [tool_block(name, input, id)]
    return message(*blocks, **kw)


def tool_uses(calls: list[tuple[str, dict[str, Any]]], *, text: str | None = None, **kw: Any) -> Reply:
    """A streamed assistant message calling several tools at once."""
    blocks = ([text_block(text)] if text else []) + [tool_block(n, i) for n, i in calls]
    return message(*blocks, **kw)


def error(status: int, error_type: str, msg: str = "", *, headers: dict[str, str] | None = None) -> Reply:
    """An HTTP error response, as the API sends it (JSON body, no stream)."""
    return {"kind": "error", "status": int(status), "error_type": error_type, "message": msg or error_type, "headers": headers or {}}


def stream_error(error_type: str = "overloaded_error", msg: str = "Overloaded", *, after: int = 2) -> Reply:
    """A stream that starts fine, then sends an ``error`` event after ``after`` events."""
    return {"kind": "stream_error", "error_type": error_type, "message": msg, "after": int(after)}


def truncated(after: int = 3, *, blocks: list[Block] | None = None) -> Reply:
    """A stream that stops (connection closed) after ``after`` events."""
    return {"kind": "truncated", "after": int(after), "blocks": blocks or [text_block("This answer will be cut off " * 4)]}


def raw(body: str, *, status: int = 200, content_type: str = "text/event-stream; charset=utf-8") -> Reply:
    """A verbatim response body (for malformed-SSE tests)."""
    return {"kind": "raw", "body": body, "status": status, "content_type": content_type}


def hang(seconds: float = 30.0) -> Reply:
    """Accept the request and send nothing for ``seconds`` (timeouts, interrupts)."""
    return {"kind": "hang", "seconds": float(seconds)}


__all__ = [
    "Reply",
    "compaction_block",
    "conversation_summary",
    "error",
    "hang",
    "message",
    "raw",
    "raw_tool_block",
    "stream_error",
    "text",
    "text_block",
    "thinking_block",
    "tool_block",
    "tool_use",
    "tool_uses",
    "truncated",
]
