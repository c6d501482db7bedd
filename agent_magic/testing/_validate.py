"""What the Messages API refuses, checked as the fake server receives a request.

:func:`check_messages_request` returns the message of the 400
``invalid_request_error`` the real API answers for a request body, or None when
the API would accept it. The fake server (``_server.py``) answers every
``POST /v1/messages`` through it, so a conversation our code builds wrongly
fails in tests as it would against the API, not only in production.

The rules, from the API reference (the ``messages`` parameter's documentation,
shipped in the ``anthropic`` client's ``message_create_params.py``) and the
API's own error messages:

- **Shape.** ``model``, ``max_tokens`` and ``messages`` are required; a message
  has ``role`` ``user`` or ``assistant`` and ``content``, a string or a list of
  content blocks; a block has a known ``type``, its required fields with the
  right types and no others (``Field required``, ``Extra inputs are not
  permitted``: the API's schema is closed). ``tools`` have unique names matching
  the API's pattern and an ``input_schema``.
- **Turns.** Consecutive messages of one role are combined into one turn (the
  API merges them; so do we before the checks below); the first turn must be the
  user's. ``role: "system"`` messages (text for the model among the messages, as
  Claude Code sends them) stand beside the turns. Every message but a final
  assistant message needs non-empty content; text blocks must be non-empty and
  not whitespace only.
- **Roles of blocks.** ``tool_use``, ``thinking`` and ``redacted_thinking`` come
  from the model (assistant turns only), ``tool_result`` from the caller (user
  turns only).
- **Tool calls.** Every ``tool_use`` id of an assistant turn has a
  ``tool_result`` at the start of the next user turn (results first, any text
  after them); every ``tool_result`` answers a ``tool_use`` of the assistant
  turn just before; ids are unique and answered once.
- **Thinking.** A ``thinking`` block carries its ``signature``, unchanged (the
  fake server signs the thinking it streams, so an edited block is refused as
  the API refuses it); an assistant turn with thinking starts with it; with
  ``thinking`` enabled, the assistant turn a tool result answers starts with a
  thinking block; a final (prefill) assistant turn holds no thinking when
  thinking is off, and never ends with a thinking block.

Messages quoted from the real API (``messages.N: `tool_use` ids were found
without `tool_result` blocks immediately after: ...``) are reproduced word for
word, so code that matches on them is tested; the few the API's documentation
does not show are written in its style.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

__all__ = ["THINKING_DOCS", "check_messages_request", "sign_thinking"]

THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

#: Fields each block type allows: (required, optional), with the Python types of each.
_STR, _DICT, _LIST, _BOOL = (str,), (dict,), (list,), (bool,)
_NONE = type(None)
_FIELDS: dict[str, tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, ...]]]] = {
    "text": ({"text": _STR}, {"cache_control": _DICT, "citations": (list, _NONE)}),
    "image": ({"source": _DICT}, {"cache_control": _DICT, "transformations": (dict, _NONE)}),
    "document": (
        {"source": _DICT},
        {"cache_control": _DICT, "citations": (dict, _NONE), "context": (str, _NONE), "title": (str, _NONE)},
    ),
    "search_result": ({"content": _LIST, "source": _STR, "title": _STR}, {"cache_control": _DICT, "citations": _DICT}),
    "thinking": ({"thinking": _STR, "signature": _STR}, {}),
    "redacted_thinking": ({"data": _STR}, {}),
    "tool_use": (
        {"id": _STR, "name": _STR, "input": _DICT},
        {"cache_control": _DICT, "caller": (dict, _NONE), "toolset_name": (str, _NONE)},
    ),
    "tool_result": (
        {"tool_use_id": _STR},
        {"content": (str, list), "is_error": _BOOL, "cache_control": _DICT, "toolset_name": (str, _NONE)},
    ),
}
#: Server-tool and other block types the API knows; only their ``type`` is checked here.
_OTHER_TYPES = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
    # beta
    "advisor_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "compaction",
    "tool_addition",
    "tool_removal",
    "mcp_tool_listing",
    "fallback",
)
_KNOWN_TYPES = tuple(_FIELDS) + _OTHER_TYPES
_MODEL_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking", "server_tool_use"})
_CALLER_ONLY = frozenset({"tool_result"})
_TOOL_RESULT_CONTENT = ("text", "image", "document", "search_result", "tool_reference")
_SYSTEM_MESSAGE_CONTENT = ("text", "tool_addition", "tool_removal")
_TYPE_NAMES = {str: "a valid string", dict: "a valid dictionary", list: "a valid list", bool: "a valid boolean"}

#: Key for the fake server's thinking signatures (not a secret: they only need to change with the text).
_SIGNING_KEY = b"agent-magic fake Messages API"
_SIGNED_PREFIX = "fakesig_"


def sign_thinking(thinking: str) -> str:
    """The signature the fake server sends with a thinking block of this text."""
    digest = hmac.new(_SIGNING_KEY, thinking.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return _SIGNED_PREFIX + digest[:32]


class _Refused(Exception):
    """The API's 400 message for the request."""


def check_messages_request(body: dict[str, Any]) -> str | None:
    """The message of the 400 the Messages API answers for ``body``, or None if it would accept it.

    Parameters
    ----------
    body
        A parsed ``POST /v1/messages`` request body.

    Returns
    -------
    str or None
        The ``error.message`` of an ``invalid_request_error``; None for a valid request.
    """
    try:
        _check(body)
    except _Refused as e:
        return str(e)
    return None


def _check(body: dict[str, Any]) -> None:
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise _Refused(f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _Refused("model: Input should be a valid string")
    if isinstance(body["max_tokens"], bool) or not isinstance(body["max_tokens"], int):
        raise _Refused("max_tokens: Input should be a valid integer")
    if body["max_tokens"] < 1:
        raise _Refused("max_tokens: Input should be greater than or equal to 1")
    _check_system(body.get("system"))
    _check_tools(body.get("tools"))
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _Refused("messages: Input should be a valid list")
    if not messages:
        raise _Refused("messages: at least one message is required")
    for i, m in enumerate(messages):
        _check_message_shape(i, m, final=i == len(messages) - 1)
    turns = _turns(messages)
    if not turns:
        raise _Refused("messages: at least one user message is required")
    if turns[0].role != "user":
        raise _Refused('messages: first message must use the "user" role')
    thinking = body.get("thinking")
    thinking_type = thinking.get("type") if isinstance(thinking, dict) else None
    thinking_on = thinking_type in ("enabled", "adaptive")
    # Only "enabled" makes every answer think; with "adaptive" the model may answer without.
    thinking_always = thinking_type == "enabled"
    for n, turn in enumerate(turns):
        for i, j, block in turn.blocks:
            _check_block_role(turn.role, i, j, block)
            if block.get("type") == "thinking":
                _check_signature(i, j, block)
        if turn.role == "assistant":
            _check_thinking_order(turn)
            _check_tool_calls(turn, turns[n + 1] if n + 1 < len(turns) else None)
        if turn.role == "user":
            _check_tool_results(turn, turns[n - 1] if n > 0 else None)
    last = turns[-1]
    if last.role == "assistant":
        _check_prefill(last, thinking_on)
    elif thinking_always and any(b.get("type") == "tool_result" for _, _, b in last.blocks) and len(turns) > 1:
        _check_thinking_leads(turns[-2])


# -- shapes -----------------------------------------------------------------------


def _type_error(where: str, types: tuple[type, ...]) -> _Refused:
    return _Refused(f"{where}: Input should be {_TYPE_NAMES.get(types[0], 'valid')}")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _Refused("system: Input should be a valid string or a valid list")
    for k, b in enumerate(system):
        where = f"system.{k}"
        if not isinstance(b, dict) or b.get("type") != "text":
            raise _Refused(f"{where}.type: Input should be 'text'")
        _check_fields(where, b, "text")
        _check_text(where, b["text"])


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _Refused("tools: Input should be a valid list")
    names: set[str] = set()
    for k, t in enumerate(tools):
        if not isinstance(t, dict):
            raise _Refused(f"tools.{k}: Input should be a valid dictionary")
        if t.get("type") not in (None, "custom"):
            continue  # server and client tools with versioned types (web_search_..., bash_...)
        where = f"tools.{k}.custom"
        name = t.get("name")
        if not isinstance(name, str):
            raise _Refused(f"{where}.name: Field required")
        if not _TOOL_NAME.match(name):
            raise _Refused(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        if "input_schema" not in t:
            raise _Refused(f"{where}.input_schema: Field required")
        schema = t["input_schema"]
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Refused(f"{where}.input_schema.type: Input should be 'object'")
        if "description" in t and not isinstance(t["description"], str):
            raise _Refused(f"{where}.description: Input should be a valid string")
        if name in names:
            raise _Refused("tools: Tool names must be unique.")
        names.add(name)


def _check_message_shape(i: int, m: Any, *, final: bool) -> None:
    where = f"messages.{i}"
    if not isinstance(m, dict):
        raise _Refused(f"{where}: Input should be a valid dictionary")
    if "role" not in m:
        raise _Refused(f"{where}.role: Field required")
    if m["role"] == "system":
        _check_system_message(where, m)
        return
    if m["role"] not in ("user", "assistant"):
        raise _Refused(f"{where}.role: Input should be 'user', 'assistant' or 'system'")
    if "content" not in m:
        raise _Refused(f"{where}.content: Field required")
    extra = sorted(set(m) - {"role", "content"})
    if extra:
        raise _Refused(f"{where}.{extra[0]}: Extra inputs are not permitted")
    content = m["content"]
    final_assistant = final and m["role"] == "assistant"
    if isinstance(content, str):
        if not content and not final_assistant:
            raise _Refused(f"{where}: all messages must have non-empty content except for the optional final assistant message")
        if content and not final_assistant:
            _check_text(where, content)
        return
    if not isinstance(content, list):
        raise _Refused(f"{where}.content: Input should be a valid string or a valid list")
    if not content and not final_assistant:
        raise _Refused(f"{where}: all messages must have non-empty content except for the optional final assistant message")
    for j, b in enumerate(content):
        _check_block(f"{where}.content.{j}", b)


def _check_system_message(where: str, m: dict[str, Any]) -> None:
    """A ``role: "system"`` message among the messages: text (or tool changes) for the model, no turn of its own."""
    extra = sorted(set(m) - {"role", "content", "output_config", "clear_at"})
    if extra:
        raise _Refused(f"{where}.{extra[0]}: Extra inputs are not permitted")
    if m.get("clear_at") not in (None, "next_user_message", "never"):
        raise _Refused(f"{where}.clear_at: Input should be 'next_user_message' or 'never'")
    if "output_config" in m and not isinstance(m["output_config"], (dict, type(None))):
        raise _Refused(f"{where}.output_config: Input should be a valid dictionary")
    content = m.get("content")
    if content is None:
        if not m.get("output_config"):
            raise _Refused(f"{where}: a system message needs content or output_config")
        return
    if isinstance(content, str):
        _check_text(where, content)
        return
    if not isinstance(content, list):
        raise _Refused(f"{where}.content: Input should be a valid string or a valid list")
    for j, b in enumerate(content):
        _check_block(f"{where}.content.{j}", b, _SYSTEM_MESSAGE_CONTENT)


def _check_block(where: str, b: Any, allowed: tuple[str, ...] = _KNOWN_TYPES) -> None:
    if not isinstance(b, dict):
        raise _Refused(f"{where}: Input should be a valid dictionary")
    t = b.get("type")
    if "type" not in b:
        raise _Refused(f"{where}: Unable to extract tag using discriminator 'type'")
    if t not in allowed:
        tags = ", ".join(f"'{a}'" for a in allowed)
        raise _Refused(f"{where}: Input tag '{t}' found using 'type' does not match any of the expected tags: {tags}")
    if t not in _FIELDS:
        return
    _check_fields(where, b, t)
    if t == "text":
        if not b["text"] and "cache_control" in b:
            # The API checks the mark first: this is the message it gives.
            raise _Refused(f"{where}: cache_control cannot be set for empty text blocks")
        _check_text(where, b["text"])
    elif t == "tool_result" and isinstance(b.get("content"), list):
        for k, inner in enumerate(b["content"]):
            _check_block(f"{where}.content.{k}", inner, _TOOL_RESULT_CONTENT)
    elif t == "search_result":
        for k, inner in enumerate(b["content"]):
            _check_block(f"{where}.content.{k}", inner, ("text",))


def _check_fields(where: str, b: dict[str, Any], t: str) -> None:
    required, optional = _FIELDS[t]
    for name, types in required.items():
        if name not in b:
            raise _Refused(f"{where}.{t}.{name}: Field required")
        if not isinstance(b[name], types) or (bool not in types and isinstance(b[name], bool)):
            raise _type_error(f"{where}.{t}.{name}", types)
    for name, value in b.items():
        if name == "type" or name in required:
            continue
        if name not in optional:
            raise _Refused(f"{where}.{t}.{name}: Extra inputs are not permitted")
        if not isinstance(value, optional[name]):
            raise _type_error(f"{where}.{t}.{name}", optional[name])


def _check_text(where: str, text: str) -> None:
    if not text:
        raise _Refused("messages: text content blocks must be non-empty" if where.startswith("messages") else f"{where}: text content blocks must be non-empty")
    if not text.strip():
        raise _Refused(
            "messages: text content blocks must contain non-whitespace text"
            if where.startswith("messages")
            else f"{where}: text content blocks must contain non-whitespace text"
        )


# -- turns ------------------------------------------------------------------------


class _Turn:
    """Consecutive messages of one role, as the API combines them; blocks keep their places."""

    def __init__(self, role: str) -> None:
        self.role = role
        #: (message index, block index, block)
        self.blocks: list[tuple[int, int, dict[str, Any]]] = []
        self.first = -1
        self.last = -1


def _turns(messages: list[dict[str, Any]]) -> list[_Turn]:
    """The user and assistant turns; system messages stand beside them, in no turn."""
    turns: list[_Turn] = []
    for i, m in enumerate(messages):
        if m["role"] == "system":
            continue
        if not turns or turns[-1].role != m["role"]:
            turns.append(_Turn(m["role"]))
            turns[-1].first = i
        turn = turns[-1]
        turn.last = i
        content = m["content"]
        if isinstance(content, str):
            if content:
                turn.blocks.append((i, 0, {"type": "text", "text": content}))
        else:
            turn.blocks.extend((i, j, b) for j, b in enumerate(content))
    return turns


def _check_block_role(role: str, i: int, j: int, block: dict[str, Any]) -> None:
    t = block.get("type")
    if role == "user" and t in _MODEL_ONLY:
        raise _Refused(f"messages.{i}.content.{j}: `{t}` blocks can only be in `assistant` messages")
    if role == "assistant" and t in _CALLER_ONLY:
        raise _Refused(f"messages.{i}.content.{j}: `{t}` blocks can only be in `user` messages")


def _check_tool_calls(turn: _Turn, following: _Turn | None) -> None:
    seen: set[str] = set()
    ids: list[str] = []
    where = turn.first
    for i, j, b in turn.blocks:
        if b.get("type") != "tool_use":
            continue
        if b["id"] in seen:
            raise _Refused(f"messages.{i}.content.{j}: `tool_use` ids must be unique")
        seen.add(b["id"])
        ids.append(b["id"])
        where = i
    if not ids or following is None:
        return  # a final assistant turn is a prefill; the model continues it
    answered: set[str] = set()
    for _, _, b in following.blocks:
        if b.get("type") != "tool_result":
            break  # results first: anything after the first other block is not "immediately after"
        answered.add(b["tool_use_id"])
    missing = [x for x in ids if x not in answered]
    if missing:
        raise _Refused(
            f"messages.{where}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
        )


def _check_tool_results(turn: _Turn, previous: _Turn | None) -> None:
    calls: set[str] = set()
    if previous is not None:
        calls = {b["id"] for _, _, b in previous.blocks if b.get("type") == "tool_use"}
    answered: set[str] = set()
    for i, j, b in turn.blocks:
        if b.get("type") != "tool_result":
            continue
        tid = b["tool_use_id"]
        if tid not in calls:
            raise _Refused(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {tid}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        if tid in answered:
            raise _Refused(
                f"messages.{i}.content.{j}: each tool_use must have a single result. Found multiple `tool_result` blocks with id: {tid}"
            )
        answered.add(tid)


# -- thinking -----------------------------------------------------------------------


def _check_signature(i: int, j: int, block: dict[str, Any]) -> None:
    sig = block["signature"]
    if not sig or (sig.startswith(_SIGNED_PREFIX) and not hmac.compare_digest(sig, sign_thinking(block["thinking"]))):
        raise _Refused(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")


def _check_thinking_order(turn: _Turn) -> None:
    # Each message of the turn is one model response: its thinking comes first.
    by_message: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for i, j, b in turn.blocks:
        by_message.setdefault(i, []).append((j, b))
    for i, blocks in by_message.items():
        types = [b.get("type") for _, b in blocks]
        if any(t in ("thinking", "redacted_thinking") for t in types) and types[0] not in ("thinking", "redacted_thinking"):
            raise _Refused(
                f"messages.{i}.content.{blocks[0][0]}: If an assistant message contains any thinking blocks, "
                f"the first block must be thinking or redacted_thinking. Found {types[0]}."
            )


def _check_thinking_leads(turn: _Turn) -> None:
    i, j, first = turn.blocks[0]
    t = first.get("type")
    if t not in ("thinking", "redacted_thinking"):
        raise _Refused(
            f"messages.{i}.content.{j}.type: Expected `thinking` or `redacted_thinking`, but found `{t}`. "
            "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
            "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
            "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
            f"Please consult our documentation at {THINKING_DOCS}"
        )


def _check_prefill(turn: _Turn, thinking_on: bool) -> None:
    if not turn.blocks:
        return
    if not thinking_on:
        for i, j, b in turn.blocks:
            if b.get("type") in ("thinking", "redacted_thinking"):
                raise _Refused(
                    f"messages.{i}.content.{j}: When thinking is disabled, an `assistant` message in the final position "
                    "cannot contain `thinking`. To use thinking blocks, enable `thinking` in your request."
                )
    i, _, last = turn.blocks[-1]
    if last.get("type") in ("thinking", "redacted_thinking"):
        raise _Refused(f"messages.{i}: The final block in an assistant message cannot be `{last.get('type')}`.")
    if last.get("type") == "text" and last["text"] != last["text"].rstrip():
        raise _Refused("messages: final assistant content cannot end with trailing whitespace")
