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
  thinking is off, and never ends with a thinking block. ``thinking`` itself is
  ``{"type": "adaptive"}``, ``{"type": "enabled", "budget_tokens": n}`` with
  1,024 <= n < ``max_tokens``, ``{"type": "disabled"}`` (or ``between_tools``,
  which the client knows too), with an optional ``display``;
  ``output_config.effort`` is ``low``, ``medium``, ``high``, ``xhigh`` or ``max``.
- **Compaction.** A ``compaction`` block comes from the model (assistant turns
  only), with non-empty ``content`` or ``content: null`` (a failed compaction,
  which the API treats as a no-op). The API reads a conversation from its last
  compaction block with content on: the blocks before it must be well-formed
  but are otherwise ignored (the turn and tool-call rules above apply from that
  block on, and they count no tokens), and a conversation may start with an
  assistant message that opens with a compaction block. The fake server seals
  the summaries it writes (``encrypted_content``, which the client
  round-trips), so a compaction block sent back without its ``encrypted_content``
  (or ``signature``), or with its content edited, is refused.
- **Context management** (beta). ``context_management.edits`` holds
  ``compact_20260112`` (needs the ``compact-2026-01-12`` beta; a trigger of at
  least 50,000 input tokens), ``clear_tool_uses_20250919`` and
  ``clear_thinking_20251015`` (need ``context-management-2025-06-27``); the
  betas are the request's ``anthropic-beta`` header. Unknown edit types and
  fields are refused as the API's closed schema refuses them.

Messages quoted from the real API (``messages.N: `tool_use` ids were found
without `tool_result` blocks immediately after: ...``) are reproduced word for
word, so code that matches on them is tested; the few the API's documentation
does not show are written in its style.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Collection
from typing import Any

__all__ = [
    "COMPACTION_BETA",
    "CONTEXT_MANAGEMENT_BETA",
    "THINKING_DOCS",
    "check_messages_request",
    "compaction_boundary",
    "effective_messages",
    "sign_compaction",
    "sign_thinking",
]

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
    "compaction": (
        {},
        {
            "content": (str, _NONE),
            "encrypted_content": (str, _NONE),
            "signature": (str, _NONE),
            "tool_changes": (list, _NONE),
            "cache_control": _DICT,
        },
    ),
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
    "tool_addition",
    "tool_removal",
    "mcp_tool_listing",
    "fallback",
)
_KNOWN_TYPES = tuple(_FIELDS) + _OTHER_TYPES
_MODEL_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking", "server_tool_use", "compaction"})
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


_COMPACTION_PREFIX = "fakecmp_"

#: The beta that enables server-side compaction (the ``compact_20260112`` edit).
COMPACTION_BETA = "compact-2026-01-12"
#: The beta that enables context editing (``clear_tool_uses_20250919``, ``clear_thinking_20251015``).
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
#: The smallest ``trigger`` the API takes for compaction, in input tokens.
MIN_COMPACTION_TRIGGER = 50_000

_EDIT_BETAS = {
    "clear_tool_uses_20250919": CONTEXT_MANAGEMENT_BETA,
    "clear_thinking_20251015": CONTEXT_MANAGEMENT_BETA,
    "compact_20260112": COMPACTION_BETA,
}
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_THINKING_TYPES = ("enabled", "disabled", "adaptive", "between_tools")


def sign_compaction(content: str) -> str:
    """The ``encrypted_content`` the fake server sends with a compaction block of this summary."""
    digest = hmac.new(_SIGNING_KEY, b"compaction\0" + content.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return _COMPACTION_PREFIX + digest[:32]


_STATE_PREFIX = "fakestate_"


def seal_state(state: dict[str, Any]) -> str:
    """A compaction block's ``signature`` carrying the fake's own state (JSON), sealed against edits."""
    payload = base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()
    mac = hmac.new(_SIGNING_KEY, b"state\0" + payload.encode(), hashlib.sha256).hexdigest()[:24]
    return f"{_STATE_PREFIX}{payload}.{mac}"


def open_state(seal: Any) -> dict[str, Any] | None:
    """The state :func:`seal_state` sealed, or None (not one, or edited)."""
    if not isinstance(seal, str) or not seal.startswith(_STATE_PREFIX) or "." not in seal:
        return None
    payload, mac = seal[len(_STATE_PREFIX) :].rsplit(".", 1)
    want = hmac.new(_SIGNING_KEY, b"state\0" + payload.encode(), hashlib.sha256).hexdigest()[:24]
    if not hmac.compare_digest(mac, want):
        return None
    try:
        state = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def compaction_boundary(messages: Any) -> tuple[int, int] | None:
    """Where the API starts reading ``messages``: (message, block) of the last compaction block with content.

    Every block before it is ignored. A compaction block whose ``content`` is null
    is a no-op, not a boundary. None when there is no such block.
    """
    if not isinstance(messages, list):
        return None
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        content = m.get("content") if isinstance(m, dict) and m.get("role") != "system" else None
        if not isinstance(content, list):
            continue
        for j in range(len(content) - 1, -1, -1):
            b = content[j]
            if isinstance(b, dict) and b.get("type") == "compaction" and b.get("content") is not None:
                return i, j
    return None


def effective_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the model reads: from the last compaction block on (all of them if there is none)."""
    start = compaction_boundary(messages)
    if start is None:
        return messages
    i, j = start
    return [{**messages[i], "content": messages[i]["content"][j:]}, *messages[i + 1 :]]


class _Refused(Exception):
    """The API's 400 message for the request."""


def check_messages_request(body: dict[str, Any], betas: Collection[str] = ()) -> str | None:
    """The message of the 400 the Messages API answers for ``body``, or None if it would accept it.

    Parameters
    ----------
    body
        A parsed ``POST /v1/messages`` request body.
    betas
        The betas the request enables (its ``anthropic-beta`` header, split at commas).

    Returns
    -------
    str or None
        The ``error.message`` of an ``invalid_request_error``; None for a valid request.
    """
    try:
        _check(body, frozenset(betas))
    except _Refused as e:
        return str(e)
    return None


def _check(body: dict[str, Any], betas: frozenset[str]) -> None:
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
    _check_thinking_config(body.get("thinking"), body["max_tokens"])
    _check_output_config(body.get("output_config"))
    if "context_management" in body:
        _check_context_management(body["context_management"], betas)
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _Refused("messages: Input should be a valid list")
    if not messages:
        raise _Refused("messages: at least one message is required")
    for i, m in enumerate(messages):
        _check_message_shape(i, m, final=i == len(messages) - 1)
    # The API reads from the last compaction block on; what comes before it is not checked.
    turns = _turns(messages, compaction_boundary(messages) or (0, 0))
    if not turns:
        raise _Refused("messages: at least one user message is required")
    if turns[0].role != "user" and not _opens_with_compaction(turns[0]):
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
            elif block.get("type") == "compaction":
                _check_compaction(i, j, block)
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


# -- request options --------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tags(allowed: tuple[str, ...]) -> str:
    return ", ".join(f"'{a}'" for a in allowed)


def _literal(allowed: tuple[str, ...]) -> str:
    quoted = [f"'{a}'" for a in allowed]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _check_closed(where: str, obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise _Refused(f"{where}.{extra[0]}: Extra inputs are not permitted")


def _check_thinking_config(thinking: Any, max_tokens: int) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise _Refused("thinking: Input should be a valid dictionary")
    if "type" not in thinking:
        raise _Refused("thinking: Unable to extract tag using discriminator 'type'")
    t = thinking["type"]
    if t not in _THINKING_TYPES:
        raise _Refused(f"thinking: Input tag '{t}' found using 'type' does not match any of the expected tags: {_tags(_THINKING_TYPES)}")
    where = f"thinking.{t}"
    fields = {"enabled": ("type", "budget_tokens", "display"), "adaptive": ("type", "display")}.get(t, ("type",))
    _check_closed(where, thinking, fields)
    if thinking.get("display") not in (None, "summarized", "omitted"):
        raise _Refused(f"{where}.display: Input should be 'summarized' or 'omitted'")
    if t != "enabled":
        return
    if "budget_tokens" not in thinking:
        raise _Refused(f"{where}.budget_tokens: Field required")
    budget = thinking["budget_tokens"]
    if not _is_int(budget):
        raise _Refused(f"{where}.budget_tokens: Input should be a valid integer")
    if budget < 1024:
        raise _Refused(f"{where}.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= max_tokens:
        raise _Refused(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            f"{THINKING_DOCS}#max-tokens-and-context-window-size"
        )


def _check_output_config(config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _Refused("output_config: Input should be a valid dictionary")
    _check_closed("output_config", config, ("effort", "format", "task_budget"))
    if config.get("effort") not in (None, *_EFFORTS):
        raise _Refused(f"output_config.effort: Input should be {_literal(_EFFORTS)}")


def _check_count(where: str, obj: Any, types: tuple[str, ...], minimum: int = 0) -> None:
    """A ``{"type": ..., "value": n}`` count (a trigger, a keep, a clear_at_least)."""
    if not isinstance(obj, dict):
        raise _Refused(f"{where}: Input should be a valid dictionary")
    if obj.get("type") not in types:
        raise _Refused(f"{where}.type: Input should be {_literal(types)}")
    _check_closed(where, obj, ("type", "value"))
    if "value" not in obj:
        raise _Refused(f"{where}.value: Field required")
    if not _is_int(obj["value"]):
        raise _Refused(f"{where}.value: Input should be a valid integer")
    if obj["value"] < minimum:
        raise _Refused(f"{where}.value: Input should be greater than or equal to {minimum}")


def _check_names(where: str, names: Any) -> None:
    if not isinstance(names, list):
        raise _Refused(f"{where}: Input should be a valid list")
    for k, name in enumerate(names):
        if not isinstance(name, str):
            raise _Refused(f"{where}.{k}: Input should be a valid string")


def _check_context_management(config: Any, betas: frozenset[str]) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _Refused("context_management: Input should be a valid dictionary")
    _check_closed("context_management", config, ("edits",))
    edits = config.get("edits")
    if edits is None:
        return
    if not isinstance(edits, list):
        raise _Refused("context_management.edits: Input should be a valid list")
    seen: set[str] = set()
    for k, edit in enumerate(edits):
        where = f"context_management.edits.{k}"
        if not isinstance(edit, dict) or "type" not in edit:
            raise _Refused(f"{where}: Unable to extract tag using discriminator 'type'")
        t = edit["type"]
        if t not in _EDIT_BETAS:
            raise _Refused(f"{where}: Input tag '{t}' found using 'type' does not match any of the expected tags: {_tags(tuple(_EDIT_BETAS))}")
        if _EDIT_BETAS[t] not in betas:
            raise _Refused(f"{where}: the '{t}' edit requires the beta header 'anthropic-beta: {_EDIT_BETAS[t]}'")
        if t in seen:
            raise _Refused(f"context_management.edits: each edit type may appear only once; found '{t}' twice")
        seen.add(t)
        where = f"{where}.{t}"
        if t == "compact_20260112":
            _check_compact_edit(where, edit)
        elif t == "clear_tool_uses_20250919":
            _check_clear_tool_uses_edit(where, edit)
        else:
            _check_closed(where, edit, ("type", "keep"))
            keep = edit.get("keep")
            if keep is not None and keep != "all":
                if isinstance(keep, dict) and keep.get("type") == "all":
                    _check_closed(f"{where}.keep", keep, ("type",))
                else:
                    _check_count(f"{where}.keep", keep, ("thinking_turns",), 1)
            if k:
                raise _Refused(
                    "context_management.edits: clear_thinking_20251015 must be the first edit when it is combined with other edits"
                )


def _check_compact_edit(where: str, edit: dict[str, Any]) -> None:
    _check_closed(where, edit, ("type", "trigger", "instructions", "pause_after_compaction"))
    if edit.get("trigger") is not None:
        _check_count(f"{where}.trigger", edit["trigger"], ("input_tokens",), MIN_COMPACTION_TRIGGER)
    if not isinstance(edit.get("instructions"), (str, _NONE)):
        raise _Refused(f"{where}.instructions: Input should be a valid string")
    if not isinstance(edit.get("pause_after_compaction", False), bool):
        raise _Refused(f"{where}.pause_after_compaction: Input should be a valid boolean")


def _check_clear_tool_uses_edit(where: str, edit: dict[str, Any]) -> None:
    _check_closed(where, edit, ("type", "trigger", "keep", "clear_at_least", "exclude_tools", "clear_tool_inputs"))
    if edit.get("trigger") is not None:
        _check_count(f"{where}.trigger", edit["trigger"], ("input_tokens", "tool_uses"), 1)
    if edit.get("keep") is not None:
        _check_count(f"{where}.keep", edit["keep"], ("tool_uses",))
    if edit.get("clear_at_least") is not None:
        _check_count(f"{where}.clear_at_least", edit["clear_at_least"], ("input_tokens",))
    if edit.get("exclude_tools") is not None:
        _check_names(f"{where}.exclude_tools", edit["exclude_tools"])
    inputs = edit.get("clear_tool_inputs")
    if inputs is not None and not isinstance(inputs, bool):
        _check_names(f"{where}.clear_tool_inputs", inputs)


# -- turns ------------------------------------------------------------------------


class _Turn:
    """Consecutive messages of one role, as the API combines them; blocks keep their places."""

    def __init__(self, role: str) -> None:
        self.role = role
        #: (message index, block index, block)
        self.blocks: list[tuple[int, int, dict[str, Any]]] = []
        self.first = -1
        self.last = -1


def _turns(messages: list[dict[str, Any]], start: tuple[int, int] = (0, 0)) -> list[_Turn]:
    """The user and assistant turns from block ``start`` on; system messages stand beside them, in no turn."""
    turns: list[_Turn] = []
    for i, m in enumerate(messages):
        if m["role"] == "system" or i < start[0]:
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
            skip = start[1] if i == start[0] else 0
            turn.blocks.extend((i, j, b) for j, b in enumerate(content) if j >= skip)
    return turns


def _opens_with_compaction(turn: _Turn) -> bool:
    return turn.role == "assistant" and bool(turn.blocks) and turn.blocks[0][2].get("type") == "compaction"


def _after_compaction(blocks: list[Any], type_of: Any) -> list[Any]:
    """``blocks`` without the compaction blocks that open them (a response starts with its compaction)."""
    k = 0
    while k < len(blocks) and type_of(blocks[k]) == "compaction":
        k += 1
    return blocks[k:]


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


def _check_compaction(i: int, j: int, block: dict[str, Any]) -> None:
    content = block.get("content")
    if content is None:
        return  # a failed compaction: a no-op, with nothing to verify
    if not content:
        raise _Refused(f"messages.{i}.content.{j}: `compaction` content must be non-empty, or null for a failed compaction")
    # The round-trip fields come back as issued: at least one of them, and the fake's own unedited.
    sealed = [(name, block.get(name)) for name in ("encrypted_content", "signature") if block.get(name)]
    for name, seal in sealed or [("encrypted_content", "")]:
        if (
            not seal
            or (seal.startswith(_COMPACTION_PREFIX) and not hmac.compare_digest(seal, sign_compaction(content)))
            or (seal.startswith(_STATE_PREFIX) and open_state(seal) is None)
        ):
            raise _Refused(f"messages.{i}.content.{j}: Invalid `{name}` in `compaction` block")


def _check_thinking_order(turn: _Turn) -> None:
    # Each message of the turn is one model response: its thinking comes first.
    by_message: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for i, j, b in turn.blocks:
        by_message.setdefault(i, []).append((j, b))
    for i, all_blocks in by_message.items():
        blocks = _after_compaction(all_blocks, lambda jb: jb[1].get("type"))
        if not blocks:
            continue
        types = [b.get("type") for _, b in blocks]
        if any(t in ("thinking", "redacted_thinking") for t in types) and types[0] not in ("thinking", "redacted_thinking"):
            raise _Refused(
                f"messages.{i}.content.{blocks[0][0]}: If an assistant message contains any thinking blocks, "
                f"the first block must be thinking or redacted_thinking. Found {types[0]}."
            )


def _check_thinking_leads(turn: _Turn) -> None:
    blocks = _after_compaction(turn.blocks, lambda ijb: ijb[2].get("type"))
    if not blocks:
        return
    i, j, first = blocks[0]
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
