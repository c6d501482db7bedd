"""The Anthropic Messages API through the official ``anthropic`` client.

The client does the HTTP, SSE parsing, retries with backoff (429, 5xx, 529,
connection errors; ``retry-after`` honoured) and credential lookup
(``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, profiles) and honours
``ANTHROPIC_BASE_URL``. This module maps its errors to one-line
:class:`~agent_magic.ProviderError` messages.

``AGENT_MAGIC_MAX_RETRIES`` (default 3) and ``AGENT_MAGIC_TIMEOUT`` (seconds,
default 600) tune the client.

Prompt caching is on (``AGENT_MAGIC_PROMPT_CACHING=0`` turns it off): every
request marks the system prompt and the ends of the last two user messages with
``cache_control``, so each request of a session reads the conversation so far
from the cache (a tenth of the input price) instead of paying for it again.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, MissingAPIKeyError, ProviderError
from ..store.jsonl import crash_point
from .base import (
    EventCallback,
    ModelRequest,
    ModelResponse,
    PartialResponse,
    Provider,
    env_number,
    error_body,
    kept_blocks,
    one_line,
    status_error,
)

if TYPE_CHECKING:
    import anthropic

_RAW_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}
)


_NO_KEY = (
    "No Anthropic API key found: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN). "
    "To try agent-magic without a key, run `agent-magic demo`."
)


_SSL_CONTEXT: Any = None


def shared_ssl_context() -> Any:
    """One TLS context per process, built as the client's HTTP library builds its default.

    Building it reads the CA bundle (about 30 ms); every session opened in a kernel
    would pay that again.
    """
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import importlib

        import anthropic

        library = anthropic.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]  # httpx or httpx2
        make = getattr(importlib.import_module(library), "create_ssl_context", None)
        _SSL_CONTEXT = make() if make is not None else True
    return _SSL_CONTEXT


def _http_client(anthropic: Any) -> Any:
    return anthropic.DefaultAsyncHttpxClient(verify=shared_ssl_context())


#: The beta header of server-side compaction (``context_management`` edit ``compact_20260112``).
COMPACTION_BETA = "compact-2026-01-12"

#: Block types the API accepts a ``cache_control`` on (not thinking blocks).
_CACHEABLE = frozenset({"text", "image", "document", "tool_use", "tool_result", "search_result"})
_EPHEMERAL = {"type": "ephemeral"}


def prompt_caching_enabled() -> bool:
    return os.environ.get("AGENT_MAGIC_PROMPT_CACHING", "1").strip().lower() not in ("0", "false", "no", "off")


def _mark_last_block(message: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of ``message`` with a cache breakpoint on its last block that can carry one."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return None
        return {**message, "content": [{"type": "text", "text": content, "cache_control": _EPHEMERAL}]}
    if not isinstance(content, list):
        return None
    for i in range(len(content) - 1, -1, -1):
        b = content[i]
        if not isinstance(b, dict) or b.get("type") not in _CACHEABLE:
            continue
        if b.get("type") == "text" and not b.get("text"):
            continue  # the API refuses cache_control on an empty text block
        blocks = list(content)
        blocks[i] = {**b, "cache_control": _EPHEMERAL}
        return {**message, "content": blocks}
    return None


def without_unsigned_thinking(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` without thinking blocks that carry no signature.

    The API takes thinking back only with the signature it issued; reasoning
    recorded from another provider (an OpenAI-compatible server's
    ``reasoning_content``) has none, and sent as it is the whole request is
    refused ("Invalid `signature` in `thinking` block"). Previous thinking is
    optional context, so it is left out. Only the messages that change are copied.
    """
    out = messages
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for b in content:
            if b.get("type") == "thinking" and not b.get("signature"):
                break
        else:
            continue
        if out is messages:
            out = list(messages)
        out[i] = {**m, "content": [b for b in content if not (b.get("type") == "thinking" and not b.get("signature"))]}
    # A message that was only such thinking says nothing now: the API merges its neighbours.
    return out if out is messages else [m for m in out if m.get("content")]


def with_cache_breakpoints(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with cache breakpoints at the ends of the last two user messages.

    The last one writes the conversation so far to the cache; the one before was the
    previous request's last, so this request reads everything up to it from the cache.
    Only the two marked messages are copied; nothing stored is changed.
    """
    out = list(messages)
    marked = 0
    for i in range(len(out) - 1, -1, -1):
        if marked == 2:
            break
        if out[i].get("role") != "user":
            continue
        m = _mark_last_block(out[i])
        if m is not None:
            out[i] = m
            marked += 1
    return out


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


# One short answer with a text block and a tool call, as the API streams it.
_WARM_UP_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_warm_up", "type": "message", "role": "assistant", "model": "warm-up", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_warm_up", "name": "Read", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": '{"file_path": "x"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 2}}),
    ("message_stop", {"type": "message_stop"}),
]


def warm_up() -> None:
    """Do the API client's first-use work now, offline, so the first real turn does not wait.

    Imports ``anthropic`` and its HTTP stack, reads the CA bundle, and streams one
    answer from an in-memory transport through :meth:`AnthropicProvider.stream`:
    the client builds its response models (pydantic schemas, about 150 ms) on the
    first stream it reads. Nothing leaves the process. ``%load_ext agent_magic``
    runs this in a background thread.
    """
    import importlib

    import anthropic

    shared_ssl_context()
    library = importlib.import_module(anthropic.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
    body = _sse(_WARM_UP_EVENTS)

    def answer(request: Any) -> Any:
        return library.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    async def go() -> None:
        provider = AnthropicProvider()
        provider._client = anthropic.AsyncAnthropic(
            api_key="warm-up", base_url="http://warm-up.invalid", max_retries=0,
            http_client=library.AsyncClient(transport=library.MockTransport(answer)),
        )
        provider._loop = asyncio.get_running_loop()

        async def ignore(event: dict[str, Any]) -> None:
            pass

        request = ModelRequest(model="warm-up", system="", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                               tools=[], max_tokens=16)
        try:
            await provider.stream(request, ignore, PartialResponse())
        finally:
            await provider._client.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(go())
    else:  # called from async code: its own loop, in a thread of its own
        import threading

        t = threading.Thread(target=asyncio.run, args=(go(),), name="agent-magic-warm-up")
        t.start()
        t.join()


class AnthropicProvider(Provider):
    """Streams responses from the Anthropic Messages API."""

    name = "anthropic"

    def __init__(self) -> None:
        self._client: anthropic.AsyncAnthropic | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"

    def _get_client(self) -> anthropic.AsyncAnthropic:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        import anthropic

        try:
            client = anthropic.AsyncAnthropic(
                max_retries=int(env_number("AGENT_MAGIC_MAX_RETRIES", 3)),
                timeout=env_number("AGENT_MAGIC_TIMEOUT", 600.0),
                http_client=_http_client(anthropic),
            )
        except anthropic.AnthropicError as e:
            raise MissingAPIKeyError(f"{_NO_KEY} ({one_line(str(e))[:160]})") from None
        except ValueError as e:
            raise ConfigurationError(f"The Anthropic client could not be set up: {e}") from None
        if not (client.api_key or client.auth_token or client.credentials):
            raise MissingAPIKeyError(_NO_KEY)
        self._client = client
        self._loop = loop
        return client

    def check(self) -> None:
        if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            return
        if any(os.environ.get(k) for k in ("ANTHROPIC_PROFILE", "ANTHROPIC_IDENTITY_TOKEN", "ANTHROPIC_IDENTITY_TOKEN_FILE")):
            return
        # A profile on disk may still provide credentials; the client knows how to find it.
        import anthropic

        try:
            client = anthropic.AsyncAnthropic(max_retries=0)
            found = bool(client.api_key or client.auth_token or client.credentials)
        except Exception:
            found = False
        if not found:
            raise MissingAPIKeyError(_NO_KEY)

    async def stream(
        self,
        request: ModelRequest,
        on_event: EventCallback | None,
        partial: PartialResponse,
    ) -> ModelResponse:
        import anthropic

        client = self._get_client()
        caching = prompt_caching_enabled()
        messages = without_unsigned_thinking(request.messages)
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": with_cache_breakpoints(messages) if caching else messages,
        }
        if request.system:
            # The tools and the system prompt are the same for every request of a session
            # (and of every session in the notebook): cached on their own too.
            kwargs["system"] = [{"type": "text", "text": request.system, "cache_control": _EPHEMERAL}] if caching else request.system
        if request.tools:
            kwargs["tools"] = request.tools
        if request.metadata:
            kwargs["metadata"] = request.metadata
        if request.thinking is not None:
            kwargs["thinking"] = request.thinking
        if request.effort:
            kwargs["output_config"] = {"effort": request.effort}
        messages_api: Any = client.messages
        if request.compact_trigger is not None:
            # Server-side compaction (beta): the API summarises the conversation itself once
            # its input passes the trigger, and answers with a ``compaction`` block first.
            messages_api = client.beta.messages
            kwargs["betas"] = [COMPACTION_BETA]
            kwargs["context_management"] = {
                "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": request.compact_trigger}}]
            }
        # The client retries only until an answer starts; after that a connection error
        # means the answer broke off mid-stream (the connection was made).
        answering = False
        notices = _client_warnings(lambda: messages_api.stream(**kwargs))
        try:
            async with notices.value as stream:
                answering = True
                async for event in stream:
                    crash_point("stream.event")
                    ev: Any = event
                    etype = ev.type
                    if etype == "content_block_delta" and ev.delta.type == "text_delta":
                        partial.add_text(ev.index, ev.delta.text)
                    if on_event is not None and etype in _RAW_EVENTS:
                        await on_event(ev.model_dump(mode="json", exclude_none=True))
                final = await stream.get_final_message()
        except anthropic.APIStatusError as e:
            raise self._status_error(e) from None
        except anthropic.APITimeoutError:
            raise ProviderError(
                f"The API at {self.base_url} did not answer in time. Run the cell again, "
                "or raise AGENT_MAGIC_TIMEOUT (seconds).",
                kind="timeout",
            ) from None
        except anthropic.APIConnectionError as e:
            cause = e.__cause__ or e
            if answering:
                raise ProviderError(
                    f"The answer broke off mid-stream: the API closed the connection ({type(cause).__name__}). "
                    "The session is intact; run the cell again to resume it.",
                    kind="stream",
                ) from None
            raise ProviderError(
                f"Could not connect to the API at {self.base_url} ({type(cause).__name__}). "
                "Check your network connection and ANTHROPIC_BASE_URL, then run it again.",
                kind="connection",
            ) from None
        except anthropic.APIError as e:
            raise ProviderError(
                f"The API stream broke off ({one_line(str(e))}). Run it again; the session is intact.",
                kind="stream",
            ) from None
        except Exception as e:
            if not _is_transport_or_parse_error(e):
                raise
            if type(e).__module__.startswith(("httpx", "httpcore", "h11")):
                raise ProviderError(
                    f"The connection to the API broke off mid-answer ({type(e).__name__}). "
                    "Run it again; the session is intact.",
                    kind="connection",
                ) from None
            raise ProviderError(
                f"The API sent a response that could not be read ({type(e).__name__}: {one_line(str(e))}). "
                "Run it again; the session is intact.",
                kind="stream",
            ) from None
        usage = final.usage.model_dump(mode="json", exclude_none=True) if final.usage else {}
        usage.pop("iterations", None)
        if final.usage is not None and getattr(final.usage, "iterations", None):
            # A compaction's own sampling is billed but not in the top-level counts.
            extra = [it.model_dump(mode="json", exclude_none=True) for it in final.usage.iterations if it.type == "compaction"]
            if extra:
                usage["compaction_iterations"] = extra
        content = [_block_json(b) for b in final.content]
        return ModelResponse(
            content=kept_blocks([c for c in content if c is not None]),
            stop_reason=final.stop_reason,
            usage=usage,
            model=final.model,
            id=final.id,
            notices=notices.new,
        )

    def _status_error(self, e: anthropic.APIStatusError) -> ProviderError:
        status = e.status_code
        etype, emsg = error_body(e)
        if status < 400:
            # An ``error`` event in the middle of a stream (the HTTP status was 200).
            status = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500}.get(etype, 500)
            detail = f"{etype or 'error'} mid-stream" + (f": {one_line(emsg)[:200]}" if emsg else "")
            kind = {529: "overloaded", 429: "rate_limit"}.get(status, "server")
            return ProviderError(
                f"The API stopped the answer with an error ({detail}). Run it again; the session is intact.",
                status=status,
                kind=kind,
            )
        detail = f"{status} {etype}" if etype else str(status)
        if emsg:
            detail += f": {one_line(emsg)[:200]}"
        if status == 529 or etype == "overloaded_error":
            return ProviderError(
                f"The API is overloaded ({detail}) after retrying. Try again in a little while.", status=status, kind="overloaded"
            )
        return status_error(
            status, detail, key_var="ANTHROPIC_API_KEY", not_found="this model or endpoint; check the model name and ANTHROPIC_BASE_URL",
            too_long=status == 400 and "prompt is too long" in emsg,
        )


class _Warned:
    """What a call returned, and the notes it warned that were not shown before."""

    def __init__(self, value: Any, new: list[str]) -> None:
        self.value = value
        self.new = new


_SHOWN_LOCK = threading.Lock()
_SHOWN: set[str] = set()


def _client_warnings(call: Any) -> _Warned:
    """Run ``call`` (a synchronous client call), its warnings turned into notes shown once per process.

    The client warns when a request is made, e.g. ``DeprecationWarning: The model
    'claude-…' is deprecated and will reach end-of-life on …``. A dependency's
    warning must never fail a person's turn (as it would under ``-W error`` or
    pytest's ``filterwarnings = error``), and repeating it on every request of a
    session helps nobody. The call makes no request and never awaits: the window
    is an instant (``catch_warnings`` is process-wide, so a warning another thread
    raised in that instant would become a note too).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    new: list[str] = []
    for w in caught:
        note = one_line(str(w.message))
        with _SHOWN_LOCK:
            if note in _SHOWN:
                continue
            _SHOWN.add(note)
        new.append(f"The Anthropic client warns: {note}")
    return _Warned(value, new)


def _is_transport_or_parse_error(e: Exception) -> bool:
    """Errors of the HTTP stack or of decoding a broken stream (not our bugs)."""
    # A malformed event stream fails deep in the client's accumulator: an index no block
    # started (IndexError), an assertion on the event order, a missing field.
    if isinstance(e, (ValueError, LookupError, TypeError, AttributeError, AssertionError)):
        return True
    mod = type(e).__module__
    return mod.startswith(("httpx", "httpcore", "h11", "anyio", "anthropic"))


def _block_json(block: Any) -> dict[str, Any] | None:
    t = getattr(block, "type", None)
    if t == "text":
        return {"type": "text", "text": block.text}
    if t == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if t == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    if t == "tool_use":
        inp = block.input if isinstance(block.input, dict) else {}
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": inp}
    dumped = block.model_dump(mode="json", exclude_none=True) if hasattr(block, "model_dump") else None
    return dumped if isinstance(dumped, dict) else None
