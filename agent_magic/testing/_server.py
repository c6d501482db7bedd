"""A fake Anthropic Messages API server on 127.0.0.1, for tests, demos and CI.

It speaks real HTTP/1.1 and streams Server-Sent Events exactly as the API does
(``message_start``, ``content_block_start``/``delta``/``stop`` with
``text_delta``, ``input_json_delta`` and ``thinking_delta``, ``ping``,
``message_delta`` with ``stop_reason`` and ``usage``, ``message_stop``), with
chunked transfer encoding. Replies come from, in order:

1. a FIFO queue (:meth:`FakeAnthropicServer.add`), one reply per request;
2. prompt rules (:meth:`FakeAnthropicServer.on_prompt`): the last prompt in the
   request is matched, and the number of assistant messages after it picks the
   step, so a multi-step tool round works statelessly (across kernel restarts,
   processes, or another agent implementation talking to the same server);
3. a fallback that says no reply was scripted.

Every request is recorded (API keys redacted) for assertions.

Requests are checked as the API checks them (``_validate.py``): a conversation
the real API refuses (a tool call without its result, an empty message, a
malformed block, a thinking block without its signature or edited, more than
four cache marks, a bad ``thinking`` or ``output_config.effort``, a
``context_management`` edit without its beta header, ...) gets the API's 400
``invalid_request_error`` with the API's wording, and its record says why
(``RecordedRequest.refused``).

Input tokens are estimated as the request's bytes over four. The API reads a
conversation from its last ``compaction`` block on, so when one is sent back
only the system prompt, the tools and the messages from that block on count.
A :attr:`~FakeAnthropicServer.context_window` refuses a longer input with the
API's 400 ``prompt is too long: N tokens > M maximum``.

Context management (beta, ``anthropic-beta`` header), applied in the order of
``context_management.edits`` before the model reads the request:

- ``clear_tool_uses_20250919``: past its trigger (100,000 input tokens by
  default, or a number of tool uses), the results of all but the last ``keep``
  tool calls (3) are replaced by ``[Old tool result content cleared]`` (and
  their inputs by ``{}`` with ``clear_tool_inputs``), except ``exclude_tools``;
  the response reports ``context_management.applied_edits``.
- ``compact_20260112``: past its trigger (150,000 input tokens by default), the
  server summarises the conversation (:func:`~agent_magic.testing._replies.conversation_summary`:
  its prompts, the tools it called, the edit's ``instructions``), answers a
  ``compaction`` block first (streamed as ``content_block_start``, one
  ``compaction_delta`` with the whole summary, ``content_block_stop``), sealed
  with ``encrypted_content`` so an edited block is refused when it comes back,
  then the scripted reply, which reads only the compacted context. ``usage``
  then holds ``iterations`` (the compaction's, then the message's) and its
  top-level counts are the message's. With ``pause_after_compaction`` the
  response is the compaction block alone (``stop_reason`` ``"compaction"``,
  no scripted reply used, ``reply_kind`` ``"compaction"``).

A client-side summary request, one whose last user message holds
``<summary></summary>`` (as compaction prompts ask the model to wrap its
summary), is answered before the queue and the rules, with the same summary
inside ``<summary>...</summary>`` (``reply_kind`` ``"summary"``,
:attr:`~_ScriptedServer.summary_requests`); text after the marker's line is
taken as the summary's instructions. :attr:`~_ScriptedServer.summary_text`
overrides the summary.

The scripting, recording and HTTP plumbing live in ``_ScriptedServer`` and
``_ScriptedHandler``, shared with the fake OpenAI-compatible server in
``_openai_server.py``; only the wire format differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

import orjson

from ..store.jsonl import no_gc
from ._prompt_cache import CacheControlError, PromptCache
from ._replies import Reply, conversation_summary, message, text
from ._validate import (
    check_messages_request,
    effective_messages,
    open_state,
    seal_state,
    sign_compaction,
    sign_thinking,
)

Responder = Callable[[dict[str, Any]], Reply]
Step = "Reply | Responder"
#: A summary the tests set: the text itself, or a function of the request body.
SummaryText = str | Callable[[dict[str, Any]], str] | None

_REDACT = {"x-api-key", "authorization", "proxy-authorization"}

#: The text that makes a request a summary request: compaction prompts ask the model to
#: "wrap your summary in a <summary></summary> block".
SUMMARY_MARKER = "<summary></summary>"
#: What ``clear_tool_uses_20250919`` puts in place of a cleared tool result.
CLEARED_TOOL_RESULT = "[Old tool result content cleared]"
#: Default triggers of the context-management edits, in input tokens.
COMPACTION_TRIGGER = 150_000
CLEAR_TOOL_USES_TRIGGER = 100_000


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    time: float
    reply_kind: str = ""
    #: The 400 message when the server refused the request as the API would (``reply_kind`` "invalid").
    refused: str | None = None
    #: When the last byte of the reply was written (epoch seconds), for latency measurements.
    completed: float | None = None
    #: The input tokens the model read, as estimated: after context management (None: not counted).
    input_tokens: int | None = None
    #: The summary the server wrote when it compacted this request (``compact_20260112``), else None.
    compaction: str | None = None
    #: The context-management edits applied to this request, as the response reports them.
    applied_edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_prompt(self) -> str:
        return last_prompt(self.body or {})

    @property
    def betas(self) -> list[str]:
        """The betas the request enabled (its ``anthropic-beta`` header)."""
        return [b.strip() for b in self.headers.get("anthropic-beta", "").split(",") if b.strip()]

    @property
    def thinking(self) -> dict[str, Any] | None:
        """The request's ``thinking`` setting."""
        value = (self.body or {}).get("thinking")
        return value if isinstance(value, dict) else None

    @property
    def effort(self) -> str | None:
        """The request's effort (``output_config.effort``)."""
        config = (self.body or {}).get("output_config")
        effort = config.get("effort") if isinstance(config, dict) else None
        return effort if isinstance(effort, str) else None

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the request's last user message."""
        msgs = (self.body or {}).get("messages") or []
        if not msgs:
            return []
        content = msgs[-1].get("content")
        if not isinstance(content, list):
            return []
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _is_prompt_message(m: dict[str, Any]) -> bool:
    """A user message with text of its own: a prompt, possibly after the error results of
    tool calls an interrupt or a crash cut off (the conversation merges them into one message)."""
    if m.get("role") != "user":
        return False
    content = m.get("content")
    if isinstance(content, str):
        return True
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "text" for b in content)


def _working_on(m: dict[str, Any]) -> tuple[int, str] | None:
    """(step, prompt) a compaction block of this assistant message carries over, if the fake wrote one."""
    content = m.get("content")
    if m.get("role") != "assistant" or not isinstance(content, list):
        return None
    for b in content:
        if isinstance(b, dict) and b.get("type") == "compaction":
            state = open_state(b.get("signature"))
            if state is not None:
                return int(state["step"]), str(state["prompt"])
    return None


def last_prompt(body: dict[str, Any]) -> str:
    """The text of the last user message that is a prompt (not only tool results).

    After a server-side compaction the prompt may be gone from the conversation:
    the fake's summary names it (and the step reached), as a model would carry on.
    """
    for m in reversed(body.get("messages") or []):
        if _is_prompt_message(m):
            return _text_of(m.get("content"))
        working = _working_on(m)
        if working is not None:
            return working[1]
    return ""


def _only_compaction(m: dict[str, Any]) -> bool:
    content = m.get("content")
    return isinstance(content, list) and bool(content) and all(isinstance(b, dict) and b.get("type") == "compaction" for b in content)


def steps_since_prompt(body: dict[str, Any]) -> int:
    """How many assistant messages follow the last prompt (which step of a rule to play).

    A message that is only a compaction block (a response paused after compacting) is no step.
    """
    n = 0
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "assistant":
            n += not _only_compaction(m)
            working = _working_on(m)
            if working is not None:
                return n + working[0]  # the steps taken before the compaction count too
        elif _is_prompt_message(m):
            return n
    return n


def _summary_focus(text: str) -> str | None:
    """What follows the line that holds the summary marker: the caller's instructions for the summary."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if SUMMARY_MARKER in line:
            rest = " ".join(" ".join(lines[k + 1 :]).split())
            return rest or None
    return None


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def is_summary_request(body: dict[str, Any]) -> bool:
    """Whether ``body`` asks for a summary: its last user message holds ``<summary></summary>``."""
    return SUMMARY_MARKER in _last_user_text(body)


def anthropic_summary(body: dict[str, Any], instructions: str | None = None) -> str:
    """The summary the fake writes of a Messages request (from its last compaction block on).

    Names the user texts (not those holding the summary marker, which ask for the
    summary), the tools called, an earlier compaction's summary, and ``instructions``
    (else the text after the marker line of a summary request).
    """
    messages = effective_messages(body.get("messages") or [])
    prompts: list[str] = []
    tools: list[str] = []
    earlier: str | None = None
    for m in messages:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content if isinstance(content, list) else []
        for b in blocks:
            if not isinstance(b, dict):
                continue
            t = b.get("type")
            if t == "text" and m.get("role") == "user":
                if SUMMARY_MARKER in str(b.get("text")):
                    instructions = instructions or _summary_focus(str(b.get("text")))
                else:
                    prompts.append(str(b.get("text")))
            elif t == "tool_use":
                tools.append(str(b.get("name")))
            elif t == "compaction" and b.get("content") and earlier is None:
                earlier = str(b["content"])
    return conversation_summary(prompts, tools, instructions=instructions, earlier=earlier)


@dataclass
class _Rule:
    match: str | re.Pattern[str] | Callable[[str], bool]
    steps: list[Any]
    after: Any = None

    def matches(self, prompt: str) -> bool:
        if isinstance(self.match, str):
            return self.match.lower() in prompt.lower()
        if isinstance(self.match, re.Pattern):
            return bool(self.match.search(prompt))
        return bool(self.match(prompt))


@dataclass
class _State:
    queue: deque[Any] = field(default_factory=deque)
    rules: list[_Rule] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    default: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    cond: threading.Condition = field(init=False)
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    #: The model's context window in tokens (None: unlimited); counted as input tokens are estimated.
    context_window: int | None = None
    #: The summary to give instead of the server's own (text, or a function of the request body).
    summary_text: SummaryText = None

    def __post_init__(self) -> None:
        self.cond = threading.Condition(self.lock)


def _estimate_tokens(chars: int) -> int:
    return max(1, chars // 4)


def reply_usage(reply: Reply, body_size: int) -> tuple[int, int]:
    """Input and output token counts for ``reply``: as scripted, else estimated.

    The input estimate is the request's length in bytes (``body_size``) over four.
    """
    given = reply.get("usage") or {}
    inp = given["input_tokens"] if "input_tokens" in given else _estimate_tokens(body_size)
    if "output_tokens" in given:
        out = given["output_tokens"]
    else:
        out_chars = sum(len(b.get("text", "")) + len(json.dumps(b.get("input", b.get("raw_json", "")))) for b in reply["blocks"])
        out = _estimate_tokens(out_chars)
    return int(inp), int(out)


def _signature(block: dict[str, Any]) -> str:
    """A thinking block's signature: as scripted, else one the server can check when it comes back."""
    sig = block.get("signature")
    return str(sig) if sig is not None else sign_thinking(str(block.get("thinking", "")))


def _sealed(block: dict[str, Any]) -> str | None:
    """A compaction block's ``encrypted_content``: as scripted, else a seal the server checks when it comes back."""
    given = block.get("encrypted_content")
    if given is not None:
        return str(given)
    content = block.get("content")
    return sign_compaction(str(content)) if content is not None else None


@dataclass
class _Context:
    """What the model reads of one request, as the API's context management leaves it."""

    #: The request as the model reads it (after compaction, the compacted context).
    body: dict[str, Any]
    #: Its length in bytes: the body's, less what was dropped (tokens are bytes over four).
    size: int
    #: Whether the request set ``context_management`` (the response then reports ``applied_edits``).
    managed: bool = False
    applied_edits: list[dict[str, Any]] = field(default_factory=list)
    #: The compaction block the server wrote, if the compaction trigger fired.
    compaction: dict[str, Any] | None = None
    #: The request as the compaction read it (as ``body`` when nothing was compacted).
    read_body: dict[str, Any] = field(default_factory=dict)
    #: Input tokens the compaction read, and its prompt-cache (read, written) tokens.
    compacted_tokens: int = 0
    compaction_cache: tuple[int, int] = (0, 0)
    pause: bool = False

    @property
    def tokens(self) -> int:
        return _estimate_tokens(self.size)

    def shrink(self, view: dict[str, Any]) -> None:
        """Read ``view`` instead of ``body`` from now on; the size changes by their difference."""
        self.size -= len(orjson.dumps(self.body)) - len(orjson.dumps(view))
        self.body = view


#: Statuses the official clients retry; the fake answers them with a short ``retry-after-ms``.
RETRIED_STATUSES = (408, 409, 429, 500, 502, 503, 504, 529)


class _ScriptedHandler(BaseHTTPRequestHandler):
    """HTTP plumbing and reply picking shared by the fake servers."""

    protocol_version = "HTTP/1.1"
    #: Length of the request body being served.
    body_size: int = 0
    #: Bytes of the request the model reads (for token estimates): the body, less what context management drops.
    input_size: int = 0
    #: Prompt-cache tokens (read, written) of the request being served.
    cache_usage: tuple[int, int] = (0, 0)
    sys_version = ""
    request_id_header = "request-id"
    record_cls: ClassVar[type[RecordedRequest]] = RecordedRequest
    state: _State  # set on the subclass made per server
    owner: Any  # the server object, set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def setup(self) -> None:
        super().setup()
        # Events are many small writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACKs hold each one back for up to 40 ms.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing ------------------------------------------------------
    def _read_body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _read_request(self) -> tuple[RecordedRequest, Any]:
        """Read a POST body; return its record (keys redacted) and the parsed JSON (None if not JSON).

        The record's ``time`` is when the request's headers arrived (before its body was
        read and parsed), so latency measurements do not count the server's own work.
        """
        arrived = time.time()
        raw_body = self._read_body()
        self.body_size = self.input_size = len(raw_body)
        try:
            with no_gc():  # a long conversation is thousands of dicts, none of them cyclic
                body = orjson.loads(raw_body) if raw_body else {}
        except ValueError:  # orjson's JSONDecodeError; like the API it refuses NaN and bad UTF-8
            body = None
        headers = {k.lower(): ("<redacted>" if k.lower() in _REDACT else v) for k, v in self.headers.items()}
        rec = self.record_cls(self.command, self.path, headers, body if isinstance(body, dict) else None, arrived)
        return rec, body

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header(self.request_id_header, f"req_fake_{int(time.time() * 1000)}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header(self.request_id_header, f"req_fake_{int(time.time() * 1000)}")
        self.end_headers()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut_connection(self) -> None:
        """Close the socket mid-response, as a dropped connection does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _error_headers(self, reply: Reply) -> dict[str, str]:
        headers = dict(reply.get("headers") or {})
        if reply["status"] in RETRIED_STATUSES and not any(k.lower().startswith("retry-after") for k in headers):
            # The clients honour retry-after-ms; keep scripted backoff short.
            headers["retry-after-ms"] = "20"
        return headers

    def _serve_common(self, reply: Reply) -> bool:
        """Serve the reply kinds whose wire form is the same for every API; False if not one."""
        kind = reply["kind"]
        if kind == "raw":
            data = reply["body"].encode()
            self.send_response(reply["status"])
            self.send_header("content-type", reply["content_type"])
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            return True
        if kind == "hang":
            time.sleep(reply["seconds"])
            self.close_connection = True
            return True
        return False

    def _record(self, rec: RecordedRequest, kind: str) -> None:
        rec.reply_kind = kind
        with self.state.cond:
            self.state.requests.append(rec)
            self.state.cond.notify_all()

    # -- scripting --------------------------------------------------------
    def _prompt_of(self, body: dict[str, Any]) -> str:
        return last_prompt(body)

    def _step_of(self, body: dict[str, Any]) -> int:
        return steps_since_prompt(body)

    def _is_summary_request(self, body: dict[str, Any]) -> bool:
        return is_summary_request(body)

    def _default_summary(self, body: dict[str, Any], instructions: str | None) -> str:
        return anthropic_summary(body, instructions)

    def _summary(self, body: dict[str, Any], instructions: str | None = None) -> str:
        """The summary of ``body``: the one the test set (:attr:`_ScriptedServer.summary_text`), else the server's own."""
        given = self.state.summary_text
        if callable(given):
            return str(given(body))
        if given is not None:
            return str(given)
        return self._default_summary(body, instructions)

    def _summary_reply(self, body: dict[str, Any]) -> Reply | None:
        """The answer to a client-side summary request (None if ``body`` is not one)."""
        if not self._is_summary_request(body):
            return None
        return text(f"<summary>\n{self._summary(body)}\n</summary>")

    def _pick(self, body: dict[str, Any]) -> Reply:
        st = self.state
        with st.lock:
            item = st.queue.popleft() if st.queue else None
            rules = list(st.rules)
            default = st.default
        if item is None:
            prompt = self._prompt_of(body)
            step = self._step_of(body)
            for rule in rules:
                if rule.matches(prompt):
                    if step < len(rule.steps):
                        item = rule.steps[step]
                    else:
                        item = rule.after or text("Done.")
                    break
        if item is None:
            item = default or text(f"[scripted] No reply is scripted for this prompt: {self._prompt_of(body)[:120]!r}")
        if callable(item):
            item = item(body)
        if not isinstance(item, dict) or "kind" not in item:
            raise TypeError(f"A scripted reply must be a reply dict, got {item!r}")
        return item


class _AnthropicHandler(_ScriptedHandler):
    server_version = "fake-anthropic/1"
    #: The context of the request being served (None before one is planned).
    context: _Context | None = None

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        self._chunk(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    # -- routes --------------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/health"):
            self._send_json(200, {"status": "ok"})
        elif self.path.startswith("/v1/models"):
            self._send_json(200, {"data": [{"type": "model", "id": m, "display_name": m} for m in FakeAnthropicServer.models], "has_more": False})
        else:
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        rec, body = self._read_request()
        self.context = None
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/v1/messages/count_tokens"):
            self._record(rec, "count_tokens")
            tokens = self._plan_context(body, edit=False).tokens if isinstance(body, dict) else _estimate_tokens(self.body_size)
            self._send_json(200, {"input_tokens": tokens})
            return
        if not path.endswith("/v1/messages"):
            self._record(rec, "not_found")
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"No route {self.path}"}})
            return
        if not isinstance(body, dict):
            self._refuse(rec, "Body is not JSON")
            return
        problem = check_messages_request(body, self._betas())
        if problem is not None:
            self._refuse(rec, problem)
            return
        ctx = self.context = self._plan_context(body)
        self.input_size = ctx.size
        rec.input_tokens = ctx.tokens
        rec.applied_edits = ctx.applied_edits
        rec.compaction = ctx.compaction["content"] if ctx.compaction else None
        window = self.state.context_window
        if window is not None and ctx.tokens > window:
            # The API's own wording (a 400 invalid_request_error).
            self._refuse(rec, f"prompt is too long: {ctx.tokens} tokens > {window} maximum")
            return
        try:
            # Marks are checked on what the model reads before any compaction; a compaction
            # reads that prefix, and the response after it reads the compacted one.
            self.cache_usage = self.state.prompt_cache.use(ctx.read_body)
            if ctx.compaction is not None:
                ctx.compaction_cache = self.cache_usage
                self.cache_usage = self.state.prompt_cache.use(ctx.body)
        except CacheControlError as e:
            self._refuse(rec, str(e))
            return
        if ctx.pause:
            kind, reply = "compaction", message(stop_reason="compaction", usage={"input_tokens": 0, "output_tokens": 0})
        else:
            summary = self._summary_reply(ctx.read_body)
            kind, reply = ("summary", summary) if summary is not None else ("", self._pick(body))
        self._record(rec, kind or str(reply.get("kind")))
        if ctx.compaction is not None and reply.get("kind") == "message":
            reply = {**reply, "blocks": [ctx.compaction, *reply["blocks"]]}
        try:
            self._serve(reply, body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            rec.completed = time.time()

    def _betas(self) -> list[str]:
        """The betas the request enables: its ``anthropic-beta`` headers, split at commas."""
        return [b.strip() for h in self.headers.get_all("anthropic-beta") or [] for b in h.split(",") if b.strip()]

    # -- context management ----------------------------------------------
    def _plan_context(self, body: dict[str, Any], *, edit: bool = True) -> _Context:
        """What the model reads of ``body``: from the last compaction block on, then the edits applied in order."""
        messages = body.get("messages")
        ctx = _Context(body, self.body_size, managed="context_management" in body)
        if isinstance(messages, list):
            effective = effective_messages(messages)
            if effective is not messages:
                ctx.shrink({**body, "messages": effective})
        edits = (body.get("context_management") or {}).get("edits") or [] if edit else []
        for e in edits:
            if e["type"] == "clear_tool_uses_20250919":
                self._clear_tool_uses(ctx, e)
            elif e["type"] == "compact_20260112":
                self._compact(ctx, e)
        if ctx.compaction is None:
            ctx.read_body = ctx.body
        return ctx

    def _clear_tool_uses(self, ctx: _Context, edit: dict[str, Any]) -> None:
        messages: list[dict[str, Any]] = ctx.body["messages"]
        uses = [
            b
            for m in messages
            if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for b in m["content"]
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        trigger = edit.get("trigger") or {"type": "input_tokens", "value": CLEAR_TOOL_USES_TRIGGER}
        reached = ctx.tokens if trigger["type"] == "input_tokens" else len(uses)
        if reached <= trigger["value"]:
            return
        keep = int((edit.get("keep") or {}).get("value", 3))
        exclude = set(edit.get("exclude_tools") or [])
        inputs = edit.get("clear_tool_inputs")
        old = {b["id"]: b["name"] for b in uses[: max(0, len(uses) - keep)] if b["name"] not in exclude}
        cleared: set[str] = set()
        edited: list[dict[str, Any]] = []
        for m in messages:
            content = m.get("content")
            if not isinstance(content, list):
                edited.append(m)
                continue
            blocks = []
            for b in content:
                if not isinstance(b, dict):
                    pass
                elif b.get("type") == "tool_result" and b.get("tool_use_id") in old and b.get("content") != CLEARED_TOOL_RESULT:
                    b = {**b, "content": CLEARED_TOOL_RESULT}
                    cleared.add(b["tool_use_id"])
                elif (
                    b.get("type") == "tool_use"
                    and b.get("id") in old
                    and b.get("input")
                    and (inputs is True or (isinstance(inputs, list) and b.get("name") in inputs))
                ):
                    b = {**b, "input": {}}
                    cleared.add(b["id"])
                blocks.append(b)
            edited.append({**m, "content": blocks})
        if not cleared:
            return
        before = ctx.tokens
        view = {**ctx.body, "messages": edited}
        at_least = edit.get("clear_at_least")
        if at_least and (len(orjson.dumps(ctx.body)) - len(orjson.dumps(view))) // 4 < at_least["value"]:
            return  # not worth breaking the cache for
        ctx.shrink(view)
        ctx.applied_edits.append(
            {"type": "clear_tool_uses_20250919", "cleared_tool_uses": len(cleared), "cleared_input_tokens": max(0, before - ctx.tokens)}
        )

    def _compact(self, ctx: _Context, edit: dict[str, Any]) -> None:
        trigger = (edit.get("trigger") or {}).get("value", COMPACTION_TRIGGER)
        if ctx.tokens <= trigger:
            return
        instructions = edit.get("instructions")
        summary = self._summary(ctx.body, instructions if isinstance(instructions, str) and instructions.strip() else None)
        ctx.compaction = {"type": "compaction", "content": summary, "encrypted_content": sign_compaction(summary)}
        prompt = last_prompt(ctx.body)
        if prompt:
            # A model carries on with the request it was working on; the fake keeps it (and the
            # step reached) in the block's opaque signature, so rules keep playing their steps.
            # (Its first 200 characters: enough for a rule to match, small as an opaque field is.)
            ctx.compaction["signature"] = seal_state({"step": steps_since_prompt(ctx.body), "prompt": prompt[:200]})
        ctx.compacted_tokens = ctx.tokens
        ctx.pause = bool(edit.get("pause_after_compaction"))
        ctx.read_body = ctx.body
        ctx.shrink({**ctx.body, "messages": [{"role": "assistant", "content": [ctx.compaction]}]})

    def _refuse(self, rec: RecordedRequest, message: str) -> None:
        """Answer the API's 400 for a request it would refuse."""
        rec.refused = message
        self._record(rec, "invalid")
        self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})

    def _serve(self, reply: Reply, body: dict[str, Any]) -> None:
        kind = reply["kind"]
        if kind == "error":
            self._send_json(
                reply["status"],
                {"type": "error", "error": {"type": reply["error_type"], "message": reply["message"]}},
                self._error_headers(reply),
            )
            return
        if self._serve_common(reply):
            return
        if kind == "stream_error":
            self._start_stream()
            events = list(self._message_events(body, {"blocks": [{"type": "text", "text": "Partial answer " * 10}], "stop_reason": "end_turn", "chunk_size": 8}))
            for name, payload in events[: reply["after"]]:
                self._event(name, payload)
            self._event("error", {"type": "error", "error": {"type": reply["error_type"], "message": reply["message"]}})
            self._end_stream()
            return
        if kind == "truncated":
            self._start_stream()
            events = list(self._message_events(body, {"blocks": reply["blocks"], "stop_reason": "end_turn", "chunk_size": 8}))
            for name, payload in events[: reply["after"]]:
                self._event(name, payload)
            self._cut_connection()
            return
        if kind != "message":
            raise ValueError(f"Unknown reply kind {kind!r}")
        if reply.get("first_delay"):
            time.sleep(reply["first_delay"])
        if not body.get("stream"):
            self._send_json(200, self._message_json(body, reply))
            return
        self._start_stream()
        delay = float(reply.get("delay") or 0.0)
        for name, payload in self._message_events(body, reply):
            self._event(name, payload)
            if delay:
                time.sleep(delay)
        self._end_stream()

    # -- message building ------------------------------------------------
    def _input_usage(self, inp: int, reply: Reply) -> dict[str, int]:
        """Input token counts: as scripted, else the estimate split by the prompt cache."""
        given = reply.get("usage") or {}
        if "input_tokens" in given:
            return {
                "input_tokens": int(given["input_tokens"]),
                "cache_creation_input_tokens": int(given.get("cache_creation_input_tokens") or 0),
                "cache_read_input_tokens": int(given.get("cache_read_input_tokens") or 0),
            }
        read, written = self.cache_usage
        return {
            "input_tokens": max(0, inp - read - written),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }

    def _usage(self, reply: Reply, *, final: bool) -> dict[str, Any]:
        """The response's ``usage``: top-level counts are the message's; ``iterations`` when it compacted."""
        inp, out = reply_usage(reply, self.input_size)
        usage: dict[str, Any] = {**self._input_usage(inp, reply), "output_tokens": out if final else 1}
        ctx = self.context
        if final and ctx is not None and ctx.compaction is not None and reply["blocks"] and reply["blocks"][0] is ctx.compaction:
            read, written = ctx.compaction_cache
            iterations: list[dict[str, Any]] = [
                {
                    "type": "compaction",
                    "input_tokens": max(0, ctx.compacted_tokens - read - written),
                    "output_tokens": _estimate_tokens(len(str(ctx.compaction["content"]))),
                    "cache_read_input_tokens": read,
                    "cache_creation_input_tokens": written,
                }
            ]
            if not ctx.pause:
                iterations.append({"type": "message", **self._input_usage(inp, reply), "output_tokens": out})
            usage["iterations"] = iterations
        return usage

    def _context_management(self) -> dict[str, Any]:
        ctx = self.context
        if ctx is None or not ctx.managed:
            return {}
        return {"context_management": {"applied_edits": ctx.applied_edits}}

    def _message_json(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        content = []
        for b in reply["blocks"]:
            if "raw_json" in b:
                b = {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
            elif b.get("type") == "thinking":
                b = {**b, "signature": _signature(b)}
            elif b.get("type") == "compaction":
                b = {**b, "encrypted_content": _sealed(b)}
            content.append(b)
        return {
            "id": f"msg_fake_{int(time.time() * 1e6)}",
            "type": "message",
            "role": "assistant",
            "model": reply.get("model") or body.get("model", "claude-sonnet-5-5"),
            "content": content,
            "stop_reason": reply["stop_reason"],
            "stop_sequence": None,
            "usage": self._usage(reply, final=True),
            **self._context_management(),
        }

    def _message_events(self, body: dict[str, Any], reply: Reply) -> Iterator[tuple[str, dict[str, Any]]]:
        size = int(reply.get("chunk_size") or 24)
        yield "message_start", {
            "type": "message_start",
            "message": {
                "id": f"msg_fake_{int(time.time() * 1e6)}",
                "type": "message",
                "role": "assistant",
                "model": reply.get("model") or body.get("model", "claude-sonnet-5-5"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": self._usage(reply, final=False),
                **self._context_management(),
            },
        }
        yield "ping", {"type": "ping"}
        for i, b in enumerate(reply["blocks"]):
            t = b["type"]
            if t == "text":
                yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}
                s = b["text"]
                for k in range(0, max(len(s), 1), size):
                    yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": s[k : k + size]}}
            elif t == "thinking":
                yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
                s = b["thinking"]
                for k in range(0, max(len(s), 1), size):
                    yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": s[k : k + size]}}
                yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "signature_delta", "signature": _signature(b)}}
            elif t == "compaction":
                # The API sends a compaction's summary whole, in one delta.
                start = {"type": "compaction", "content": None, **({"signature": b["signature"]} if b.get("signature") else {})}
                yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": start}
                delta = {"type": "compaction_delta", "content": b.get("content"), "encrypted_content": _sealed(b)}
                yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
            elif t == "tool_use":
                yield "content_block_start", {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}},
                }
                js = b["raw_json"] if "raw_json" in b else json.dumps(b["input"])
                yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": ""}}
                for k in range(0, len(js), size):
                    yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": js[k : k + size]}}
            else:
                raise ValueError(f"Unknown block type {t!r}")
            yield "content_block_stop", {"type": "content_block_stop", "index": i}
        usage = self._usage(reply, final=True)
        delta_usage = {"output_tokens": usage["output_tokens"]}
        if "iterations" in usage:
            # Cumulative counts, as the API sends them on the final message_delta.
            delta_usage = usage
        yield "message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": reply["stop_reason"], "stop_sequence": None},
            "usage": delta_usage,
            **self._context_management(),
        }
        yield "message_stop", {"type": "message_stop"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (killed, interrupted) is not the server's error.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


_S = TypeVar("_S", bound="_ScriptedServer")


class _ScriptedServer:
    """What every fake server shares: lifecycle, scripting and recorded requests."""

    _handler_cls: ClassVar[type[_ScriptedHandler]]
    _thread_name: ClassVar[str] = "fake-api"
    _not_message_kinds: ClassVar[frozenset[str]] = frozenset({"count_tokens", "not_found", "invalid"})

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._state = _State()
        handler = type("Handler", (self._handler_cls,), {"state": self._state, "owner": self})
        self._httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self: _S) -> _S:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name=self._thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------
    def add(self: _S, *replies: Reply | Responder) -> _S:
        """Queue replies, one per request, in order (they take precedence over rules)."""
        with self._state.lock:
            self._state.queue.extend(replies)
        return self

    def on_prompt(
        self: _S,
        match: str | re.Pattern[str] | Callable[[str], bool],
        *steps: Reply | Responder,
        after: Reply | None = None,
    ) -> _S:
        """Answer prompts matching ``match`` (substring, case-insensitive; regex; or predicate).

        ``steps[k]`` answers the request that follows ``k`` assistant messages
        since the prompt, so ``on_prompt("plot", tool_use(...), text("Done"))``
        plays a tool round. ``after`` answers further steps (default "Done.").
        The first matching rule wins.
        """
        with self._state.lock:
            self._state.rules.append(_Rule(match, list(steps), after))
        return self

    def set_default(self, reply: Reply | Responder | None) -> None:
        """The reply for requests no queue item or rule answers."""
        with self._state.lock:
            self._state.default = reply

    def reset(self) -> None:
        """Forget queued replies, rules, recorded requests, the context window and any summary set."""
        with self._state.lock:
            self._state.queue.clear()
            self._state.rules.clear()
            self._state.requests.clear()
            self._state.default = None
            self._state.context_window = None
            self._state.summary_text = None
        self._state.prompt_cache.clear()

    @property
    def context_window(self) -> int | None:
        """The model's context window: a request whose input passes it gets the API's 400.

        Input tokens are counted as the server estimates them for ``usage``: request
        bytes over four (for the Messages API, from the last compaction block on and
        after context management). ``None`` (the default) means no limit.
        """
        return self._state.context_window

    @context_window.setter
    def context_window(self, tokens: int | None) -> None:
        self._state.context_window = tokens

    @property
    def summary_text(self) -> SummaryText:
        """The summary the server gives, instead of its own, when it compacts or answers a summary request.

        A string, or a function of the request body (as the model reads it) that
        returns one; ``None`` (the default) is the server's own deterministic summary,
        which names the prompts summarised and the tools used.
        """
        return self._state.summary_text

    @summary_text.setter
    def summary_text(self, value: SummaryText) -> None:
        self._state.summary_text = value

    def clear_requests(self) -> None:
        """Forget the recorded requests, keeping the script.

        A long benchmark calls it between measurements: every request body is kept
        parsed, and a long session's bodies add up to hundreds of megabytes.
        """
        with self._state.lock:
            self._state.requests.clear()

    @property
    def pending(self) -> int:
        """Queued replies not yet used."""
        with self._state.lock:
            return len(self._state.queue)

    # -- inspection ------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Only the requests for a model response (``POST /v1/messages`` here), summary requests included."""
        return [r for r in self.requests if r.reply_kind not in self._not_message_kinds]

    @property
    def summary_requests(self) -> list[RecordedRequest]:
        """The client-side summary requests (``reply_kind`` ``"summary"``), answered before the script."""
        return [r for r in self.requests if r.reply_kind == "summary"]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout
        with self._state.cond:
            while len(self._state.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Only {len(self._state.requests)} of {n} requests arrived in {timeout}s")
                self._state.cond.wait(left)
            return list(self._state.requests)

    def env(self, api_key: str = "") -> dict[str, str]:
        """Environment variables that point the API's official client here."""
        raise NotImplementedError

    @contextlib.contextmanager
    def environ(self, api_key: str | None = None) -> Iterator[dict[str, str]]:
        """Set :meth:`env` in ``os.environ`` for the duration of the block."""
        new = self.env() if api_key is None else self.env(api_key)
        old = {k: os.environ.get(k) for k in new}
        os.environ.update(new)
        try:
            yield new
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class FakeAnthropicServer(_ScriptedServer):
    """A scripted Messages API server on 127.0.0.1 (port 0 picks a free port).

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeAnthropicServer() as server:
            server.add(tool_use("Write", {"file_path": "a.txt", "content": "hi"}), text("Done."))
            with server.environ():
                ...  # ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY point here
            assert server.requests[0].body["model"]
    """

    _handler_cls = _AnthropicHandler
    _thread_name = "fake-anthropic"
    #: Model ids the server lists (``GET /v1/models``): agent-magic's default, then two made-up
    #: names for tests that switch models (no client release will ever deprecate them).
    models: ClassVar[tuple[str, ...]] = ("claude-sonnet-5-5", "fake-model-large", "fake-model-small")

    @property
    def compactions(self) -> list[RecordedRequest]:
        """The requests the server compacted (``compact_20260112`` fired; see ``RecordedRequest.compaction``)."""
        return [r for r in self.requests if r.compaction is not None]

    def env(self, api_key: str = "sk-ant-test-fake-key") -> dict[str, str]:
        """Environment variables that point the ``anthropic`` client here."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": api_key}
