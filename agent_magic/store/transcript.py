"""What transcript lines mean: session info and messages, prompts, compaction boundaries,
the conversation sent to the model, and a session loaded for running turns.

Transcript lines carry ``type``, ``uuid``, ``parent_uuid``, ``timestamp`` and, for
messages, ``message`` (Messages API JSON). Each line holds only its own message, so a
transcript grows linearly with the conversation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._context import clear_results
from .home import iso_now, new_uuid
from .jsonl import JsonlFile, no_gc

if TYPE_CHECKING:
    from .local import SessionStore

_INTERRUPTED_TOOL_TEXT = "The tool call did not finish (the turn was interrupted or the process stopped)."


@dataclass
class SessionInfo:
    """Metadata of one stored session (what :func:`list_sessions` returns)."""

    session_id: str
    summary: str
    created_at: int
    last_modified: int
    num_turns: int
    cwd: str
    scope: str
    title: str | None = None
    first_prompt: str | None = None
    parent_session_id: str | None = None
    forked_at: str | None = None
    tag: str | None = None
    model: str | None = None
    total_cost_usd: float | None = None
    cost_known: bool = True
    file_size: int = 0
    label: str | None = None
    """A fork's name until it is given a title: "fork at turn 2 of “<title>”"."""
    context_tokens: int | None = None
    """Tokens the conversation carries into its next request (after its last turn); set by :func:`get_session_info`."""
    context_window: int | None = None
    """The model's context window in tokens; set by :func:`get_session_info`."""

    @property
    def custom_title(self) -> str | None:
        """The Agent SDK's name for :attr:`title`."""
        return self.title


@dataclass
class SessionMessage:
    """A user or assistant message read back from a transcript."""

    type: str
    uuid: str
    session_id: str
    message: dict[str, Any]
    timestamp: str | None = None
    parent_uuid: str | None = None
    is_prompt: bool = False
    #: For a subagent's messages: the id of the ``Agent`` call in the parent session that ran it.
    parent_tool_use_id: str | None = None

    @property
    def is_compact_boundary(self) -> bool:
        """True for the ``system`` message that marks a compaction (``message["content"]`` is its summary)."""
        return self.type == "system" and self.message.get("subtype") == "compact_boundary"


_HEADER_STRINGS = frozenset({"cwd", "scope", "model", "parent_session_id", "forked_at", "session_id", "timestamp"})


def _opt_str(value: Any) -> str | None:
    """A string field of a stored line, or None when it is missing or damaged (not a string)."""
    return value if isinstance(value, str) else None


def _preview(text: str, n: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _summary(title: str | None, label: str | None, first_prompt: str | None) -> str:
    """What lists show for a session: its title, else a fork's label, else its first prompt.

    Forks copy their parent's first prompt, so without the label a notebook's
    sessions and their forks all read the same.
    """
    return title or label or (first_prompt and _preview(first_prompt, 120)) or "(no prompt yet)"


def fork_label(parent_name: str, turns: int) -> str:
    """ "fork at turn 2 of “Load sales.csv, fix…”" (``turns``: the prompts the fork copied).

    Where comes first: lists cut long names at the end, and the parent is usually shown too.
    """
    one = " ".join(parent_name.split())
    if len(one) > 40:  # cut at a word, so the name reads as words
        cut = one[:39]
        one = (cut[: cut.rindex(" ")] if " " in cut else cut).rstrip(" ,;:") + "…"
    name = one or "another session"
    return f"fork at turn {turns} of “{name}”" if turns else f"fork before turn 1 of “{name}”"


def prompt_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def is_prompt_entry(entry: dict[str, Any]) -> bool:
    """True for a transcript line holding a person's prompt (a turn's start)."""
    if entry.get("type") != "user" or entry.get("carried"):
        return False
    if "is_prompt" in entry:
        return bool(entry["is_prompt"])
    message = entry.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return True
    return isinstance(content, list) and not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


# ---------------------------------------------------------------------------
# Building the API conversation from transcript entries
# ---------------------------------------------------------------------------


#: Bytes every compaction boundary line holds (the tail reader looks for them).
BOUNDARY_MARKER = b'"compact_boundary"'


def is_boundary(entry: dict[str, Any]) -> bool:
    """True for a transcript line that marks a compaction (its summary inside)."""
    return entry.get("type") == "system" and entry.get("subtype") == "compact_boundary"


def session_messages(
    entries: list[dict[str, Any]], session_id: str, *, limit: int | None = None, offset: int = 0,
    parent_tool_use_id: str | None = None,
) -> list[SessionMessage]:
    """The user and assistant messages of ``entries``, oldest first, with each compaction as a
    ``system`` message holding its summary (a session's, or a subagent's with ``parent_tool_use_id``)."""
    out: list[SessionMessage] = []
    for e in entries:
        if is_boundary(e):
            data: dict[str, Any] = {k: e.get(k) for k in ("trigger", "pre_tokens", "post_tokens", "method") if k in e}
            out.append(
                SessionMessage(
                    type="system", uuid=str(e.get("uuid")), session_id=session_id,
                    message={"role": "system", "subtype": "compact_boundary", "content": e.get("summary") or "", **data},
                    timestamp=e.get("timestamp"), parent_uuid=e.get("parent_uuid"), parent_tool_use_id=parent_tool_use_id,
                )
            )
            continue
        if e.get("carried"):
            continue  # a copy of a line shown already, carried over a compaction
        if e.get("type") in ("user", "assistant") and isinstance(e.get("message"), dict) and not e.get("synthetic"):
            out.append(
                SessionMessage(
                    type=e["type"], uuid=str(e.get("uuid")), session_id=session_id, message=e["message"],
                    timestamp=e.get("timestamp"), parent_uuid=e.get("parent_uuid"), is_prompt=is_prompt_entry(e),
                    parent_tool_use_id=parent_tool_use_id,
                )
            )
    out = out[offset:]
    return out[:limit] if limit is not None else out


def is_boundary_line(line: bytes) -> bool:
    if BOUNDARY_MARKER not in line:
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and is_boundary(obj)


def last_boundary(entries: list[dict[str, Any]]) -> int | None:
    """The index of the last compaction boundary in ``entries``, if any."""
    for i in range(len(entries) - 1, -1, -1):
        if is_boundary(entries[i]):
            return i
    return None


def live_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries the model still sees: from the last compaction boundary on (all if none)."""
    b = last_boundary(entries)
    return entries if b is None else entries[b:]


SUMMARY_INTRO = (
    "This session continues an earlier conversation that was compacted to fit the model's context. "
    "Summary of the earlier part:"
)
SUMMARY_OUTRO = (
    "Files, notebook cells and kernel variables are as the earlier part left them; read them again "
    "when you need their current content."
)
SUMMARY_ACK = "Understood. I have the summary of the earlier conversation and will continue from it."


def summary_messages(summary: str) -> list[dict[str, Any]]:
    """What a client-side compaction's summary becomes in the conversation sent to the model."""
    text = f"{SUMMARY_INTRO}\n\n{summary.strip()}\n\n{SUMMARY_OUTRO}"
    return [
        {"role": "user", "content": [{"type": "text", "text": text}]},
        {"role": "assistant", "content": [{"type": "text", "text": SUMMARY_ACK}]},
    ]


def build_api_messages(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Messages API ``messages`` list for a transcript.

    From the last compaction boundary on: a client-side compaction's summary
    comes first (then the lines carried over after it), a server-side one's
    ``compaction`` block starts the conversation as the API expects. Tool results
    a ``context_edit`` line cleared are sent as one-line stubs.

    - prompts of turns that failed before the model said anything are dropped
      (the person will send them again);
    - consecutive messages of the same role are merged;
    - a tool call without a result (interrupted, crashed) gets an error result,
      so the conversation is always valid to send;
    - what the API refuses but a damaged or older transcript may hold is left out:
      a line written twice (same uuid), a repeated tool call id, blank text blocks.
    """
    head: list[dict[str, Any]] = []
    b = last_boundary(entries)
    if b is not None:
        boundary = entries[b]
        entries = entries[b + 1 :]
        summary = boundary.get("summary")
        if boundary.get("method") != "server" and isinstance(summary, str) and summary.strip():
            head = summary_messages(summary)
    cleared: set[str] = set()
    for e in entries:
        if e.get("type") == "context_edit" and isinstance(e.get("cleared"), list):
            cleared.update(str(t) for t in e["cleared"])
    failed_prompts = {
        e["checkpoint"]
        for e in entries
        if e.get("type") == "result" and e.get("no_response") and isinstance(e.get("checkpoint"), str)
    }
    msgs: list[dict[str, Any]] = list(head)
    seen: set[str] = set()
    tool_ids: set[str] = set()
    for e in entries:
        t = e.get("type")
        if t not in ("user", "assistant"):
            continue
        if e.get("synthetic"):
            continue
        uid = e.get("uuid")
        if isinstance(uid, str):
            if uid in seen:
                continue  # the same line twice (a torn append written again)
            seen.add(uid)
        if t == "user" and isinstance(e.get("uuid"), str) and e["uuid"] in failed_prompts:
            continue
        m = e.get("message")
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if t == "assistant":
            if not isinstance(content, list) or not content:
                continue
            blocks = [b for b in content if _valid_block(b)]
            # A tool call id the API has seen already cannot be sent again.
            blocks = [b for b in blocks if b.get("type") != "tool_use" or b["id"] not in tool_ids]
            tool_ids.update(b["id"] for b in blocks if b.get("type") == "tool_use")
            if not blocks:
                continue
            msgs.append({"role": "assistant", "content": blocks})
        else:
            if isinstance(content, str):
                blocks = [{"type": "text", "text": content}]
            elif isinstance(content, list):
                blocks = [b for b in content if _valid_block(b)]
            else:
                continue
            if not blocks:
                continue
            msgs.append({"role": "user", "content": blocks})
    return clear_results(_repair_conversation(msgs), cleared)


def _valid_block(b: Any) -> bool:
    """Whether a stored content block has the shape the API needs (a damaged line may not)."""
    if not isinstance(b, dict):
        return False
    t = b.get("type")
    if t == "text":
        text = b.get("text")
        return isinstance(text, str) and bool(text.strip())  # the API refuses blank text blocks
    if t == "tool_use":
        return isinstance(b.get("id"), str) and isinstance(b.get("name"), str) and isinstance(b.get("input"), dict)
    if t == "tool_result":
        return isinstance(b.get("tool_use_id"), str) and isinstance(b.get("content", ""), (str, list))
    return t in _API_BLOCK_TYPES  # a type damaged on disk would make the API refuse the whole request


#: The content block types the Messages API accepts back in a conversation.
_API_BLOCK_TYPES = frozenset({
    "image", "document", "search_result", "thinking", "redacted_thinking", "server_tool_use",
    "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result", "compaction",
})


def _repair_conversation(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in msgs:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": list(out[-1]["content"]) + list(m["content"])}
        else:
            out.append({"role": m["role"], "content": list(m["content"])})
    # Every tool_use needs a tool_result in the next user message, and tool_results
    # must answer a tool_use of the previous assistant message.
    fixed: list[dict[str, Any]] = []
    i = 0
    while i < len(out):
        m = out[i]
        if m["role"] == "assistant":
            fixed.append(m)
            ids = [b.get("id") for b in m["content"] if b.get("type") == "tool_use"]
            nxt = out[i + 1] if i + 1 < len(out) and out[i + 1]["role"] == "user" else None
            if ids:
                have = set()
                rest: list[dict[str, Any]] = []
                results: list[dict[str, Any]] = []
                if nxt is not None:
                    for b in nxt["content"]:
                        if b.get("type") == "tool_result" and b.get("tool_use_id") in ids and b.get("tool_use_id") not in have:
                            have.add(b.get("tool_use_id"))
                            results.append(b)
                        elif b.get("type") != "tool_result":
                            rest.append(b)
                for tid in ids:
                    if tid not in have:
                        results.append(
                            {"type": "tool_result", "tool_use_id": tid, "content": _INTERRUPTED_TOOL_TEXT, "is_error": True}
                        )
                order = {tid: k for k, tid in enumerate(ids)}
                results.sort(key=lambda b: order.get(b.get("tool_use_id"), 0))
                fixed.append({"role": "user", "content": results + rest})
                i += 2 if nxt is not None else 1
                continue
            i += 1
            continue
        # user message: drop orphan tool_results (their tool_use is gone)
        prev_ids: set[Any] = set()
        if fixed and fixed[-1]["role"] == "assistant":
            prev_ids = {b.get("id") for b in fixed[-1]["content"] if b.get("type") == "tool_use"}
        content = [b for b in m["content"] if b.get("type") != "tool_result" or b.get("tool_use_id") in prev_ids]
        if content:
            if fixed and fixed[-1]["role"] == "user":
                fixed[-1] = {"role": "user", "content": fixed[-1]["content"] + content}
            else:
                fixed.append({"role": "user", "content": content})
        i += 1
    # Dropping orphan results can leave two messages of one role in a row: merge them (an
    # assistant message without tool calls only ever merges into the one after it).
    merged: list[dict[str, Any]] = []
    for m in fixed:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + m["content"]}
        else:
            merged.append(m)
    fixed = merged
    # Start with a user message, and one that answers no tool call: a damaged or lost line
    # can leave an assistant message first, or results whose tool_use is gone.
    while fixed:
        if fixed[0]["role"] != "user":
            first_block = fixed[0]["content"][0] if fixed[0]["content"] else {}
            if first_block.get("type") == "compaction":
                break  # a server-side compaction starts the conversation, as the API expects
            fixed.pop(0)
            continue
        content = [b for b in fixed[0]["content"] if b.get("type") != "tool_result"]
        if content:
            fixed[0] = {"role": "user", "content": content}
            break
        fixed.pop(0)
    return fixed


@dataclass
class SessionState:
    """A session loaded for running turns (persistent or in memory)."""

    session_id: str
    cwd: Path
    scope: str
    model: str | None
    transcript: JsonlFile
    store: SessionStore | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    parent_session_id: str | None = None
    num_turns: int = 0
    last_uuid: str | None = None
    total_cost_usd: float | None = 0.0

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one line to the transcript (durable in the OS before returning)."""
        entry.setdefault("uuid", new_uuid())
        entry.setdefault("parent_uuid", self.last_uuid)
        # The session is the folder (and the header line); lines do not repeat its id.
        entry.pop("session_id", None)
        entry.setdefault("timestamp", iso_now())
        self.transcript.append(entry)
        self.entries.append(entry)
        if entry.get("type") in ("user", "assistant"):
            self.last_uuid = entry["uuid"]
        return entry

    def api_messages(self) -> list[dict[str, Any]]:
        with no_gc():  # thousands of fresh dicts, none cyclic: see _store.no_gc
            return build_api_messages(self.entries)

    def cleared_ids(self) -> set[str]:
        """Tool results cleared from what is sent since the last compaction."""
        return {
            str(t)
            for e in live_entries(self.entries)
            if e.get("type") == "context_edit" and isinstance(e.get("cleared"), list)
            for t in e["cleared"]
        }

    def prompts(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if is_prompt_entry(e)]
