"""OpenAI-compatible chat completions through the official ``openai`` client.

One provider for OpenAI and every server that speaks its chat-completions API
with tool calling: Ollama, vLLM, llama.cpp's ``llama-server``, LM Studio. The
loop's Messages API format is translated both ways: the request (system
prompt, ``tool_use``/``tool_result`` blocks, tool definitions) into chat
messages and function tools, and the streamed chunks back into Messages API
events and content blocks.

``OPENAI_BASE_URL`` picks the server (default: OpenAI's). ``OPENAI_API_KEY`` is
required only without it; local servers get a placeholder key. The model comes
from ``AgentOptions.model`` or ``AGENT_MAGIC_MODEL``, else ``OPENAI_MODEL``;
there is no built-in default model and no built-in price (cost stays unknown
unless prices are configured).

``AGENT_MAGIC_MAX_RETRIES`` (default 3) and ``AGENT_MAGIC_TIMEOUT`` (seconds,
default 600) tune the client, which retries 408, 409, 429, 5xx and connection
errors with backoff.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from typing import Any

import openai

from .._errors import ConfigurationError, MissingAPIKeyError, ProviderError
from .._loop import INVALID_JSON_KEY
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

_NO_KEY = (
    "No OpenAI API key found: set OPENAI_API_KEY, or set OPENAI_BASE_URL to an OpenAI-compatible "
    "server such as Ollama (http://localhost:11434/v1)."
)
_NO_MODEL = (
    "The openai provider has no default model: set AGENT_MAGIC_MODEL (or OPENAI_MODEL) to a model "
    "your server offers, or pass AgentOptions(model=...)."
)
#: Sent when a local server needs no key; the client refuses to start without one.
_PLACEHOLDER_KEY = "no-key-needed"

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}

# What servers answer when the model has no tool calling (Ollama, vLLM without
# --enable-auto-tool-choice, llama.cpp without --jinja, OpenAI's older models).
_NO_TOOLS = re.compile(
    r"does not support tools|(tools?|function calling|tool calls?|tool use) (is |are )?not supported"
    r"|does not support (function|tool) calling|enable-auto-tool-choice|tools param requires",
    re.IGNORECASE,
)


class OpenAIProvider(Provider):
    """Streams responses from an OpenAI-compatible chat-completions API."""

    name = "openai"

    def __init__(self) -> None:
        self._client: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Learned from the server's 400s and kept for later requests.
        self._stream_options = True
        self._token_param: str | None = None

    @property
    def base_url(self) -> str:
        return _base_url_env() or "https://api.openai.com/v1"

    def default_model(self) -> str:
        """The model when neither ``AgentOptions.model`` nor ``AGENT_MAGIC_MODEL`` names one.

        Raises
        ------
        ConfigurationError
            ``OPENAI_MODEL`` is not set either.
        """
        model = os.environ.get("OPENAI_MODEL", "").strip()
        if not model:
            raise ConfigurationError(_NO_MODEL)
        return model

    def check(self) -> None:
        if not os.environ.get("OPENAI_API_KEY") and _base_url_env() is None:
            raise MissingAPIKeyError(_NO_KEY)

    def _get_client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is loop:
            return self._client
        self.check()
        try:
            client = openai.AsyncOpenAI(
                api_key=os.environ.get("OPENAI_API_KEY") or _PLACEHOLDER_KEY,
                base_url=_base_url_env(),
                max_retries=int(env_number("AGENT_MAGIC_MAX_RETRIES", 3)),
                timeout=env_number("AGENT_MAGIC_TIMEOUT", 600.0),
            )
        except openai.OpenAIError as e:
            raise ConfigurationError(f"The OpenAI client could not be set up: {one_line(str(e))[:200]}") from None
        self._client = client
        self._loop = loop
        return client

    async def stream(
        self,
        request: ModelRequest,
        on_event: EventCallback | None,
        partial: PartialResponse,
    ) -> ModelResponse:
        client = self._get_client()
        messages = chat_messages(request.system, request.messages)
        tools = [function_tool(t) for t in request.tools]
        token_param = self._token_param or ("max_completion_tokens" if _base_url_env() is None else "max_tokens")
        stream_options = self._stream_options
        tried: set[tuple[bool, str]] = set()
        while True:
            tried.add((stream_options, token_param))
            kwargs: dict[str, Any] = {
                "model": request.model,
                "messages": messages,
                "stream": True,
                token_param: request.max_tokens,
            }
            if tools:
                kwargs["tools"] = tools
            if stream_options:
                kwargs["stream_options"] = {"include_usage": True}
            if request.effort:
                # Chat completions name the levels alike, with no "max": its top is "xhigh".
                kwargs["reasoning_effort"] = "xhigh" if request.effort == "max" else request.effort
            try:
                response = await self._stream_once(client, kwargs, request, on_event, partial)
            except openai.APIStatusError as e:
                # Some servers reject a parameter OpenAI accepts (or the reverse): adapt once.
                retry = _adapted(e, stream_options, token_param)
                if retry is not None and retry not in tried:
                    stream_options, token_param = retry
                    continue
                raise self._status_error(e, request.model) from None
            self._stream_options, self._token_param = stream_options, token_param
            return response

    async def _stream_once(
        self,
        client: openai.AsyncOpenAI,
        kwargs: dict[str, Any],
        request: ModelRequest,
        on_event: EventCallback | None,
        partial: PartialResponse,
    ) -> ModelResponse:
        assembler = _Assembler(request.model, on_event, partial)
        answered = False
        try:
            stream = await client.chat.completions.create(**kwargs)
            answered = True
            async with stream:
                async for chunk in stream:
                    await assembler.add(chunk)
        except openai.APIStatusError:
            raise
        except openai.APITimeoutError:
            raise ProviderError(
                f"The API at {self.base_url} did not answer in time. Run the cell again, "
                "or raise AGENT_MAGIC_TIMEOUT (seconds).",
                kind="timeout",
            ) from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            if answered:
                raise ProviderError(
                    f"The connection to the API broke off mid-answer ({type(cause).__name__}). "
                    "Run it again; the session is intact.",
                    kind="connection",
                ) from None
            raise ProviderError(
                f"Could not connect to the API at {self.base_url} ({type(cause).__name__}). "
                "Check that the server is running and that OPENAI_BASE_URL is right, then run it again.",
                kind="connection",
            ) from None
        except openai.APIError as e:
            # An error object in the middle of the stream (the HTTP status was 200).
            etype, emsg = error_body(e)
            detail = (etype or "error") + (f": {self._redact(one_line(emsg))[:200]}" if emsg else "")
            raise ProviderError(
                f"The API stopped the answer with an error ({detail}). Run it again; the session is intact.",
                kind="stream",
            ) from None
        except Exception as e:
            if not _is_transport_or_parse_error(e):
                raise
            if type(e).__module__.startswith(("httpx", "httpcore", "h11", "h2")):
                raise ProviderError(
                    f"The connection to the API broke off mid-answer ({type(e).__name__}). "
                    "Run it again; the session is intact.",
                    kind="connection",
                ) from None
            raise ProviderError(
                f"The API sent a response that could not be read ({type(e).__name__}: {one_line(str(e))[:200]}). "
                "Run it again; the session is intact.",
                kind="stream",
            ) from None
        return await assembler.finish()

    def _redact(self, s: str) -> str:
        key = os.environ.get("OPENAI_API_KEY")
        return s.replace(key, "<OPENAI_API_KEY>") if key and len(key) >= 8 else s

    def _status_error(self, e: openai.APIStatusError, model: str) -> ProviderError:
        status = e.status_code
        etype, emsg = error_body(e)
        code = _error_code(e)
        detail = f"{status} {etype}" if etype else str(status)
        if emsg:
            detail += f": {self._redact(one_line(emsg))[:200]}"
        if 400 <= status < 500 and _NO_TOOLS.search(emsg):
            msg = (
                f"The model {model!r} cannot call tools ({detail}), and agent-magic needs tool calling. "
                "Choose a model that can with AGENT_MAGIC_MODEL."
            )
            return ProviderError(msg, status=status, kind="bad_request")
        if status == 429 and "insufficient_quota" in (etype, code):
            return ProviderError(
                f"The API quota is used up ({detail}). Check the account's plan and billing.", status=status, kind="rate_limit"
            )
        if status == 401:
            detail = f"{detail}; server {self.base_url}"
        return status_error(
            status,
            detail,
            key_var="OPENAI_API_KEY",
            not_found=(
                f"the model {model!r} or this endpoint at {self.base_url}; check AGENT_MAGIC_MODEL (a local server must "
                "have the model pulled) and OPENAI_BASE_URL (it usually ends in /v1)"
            ),
            too_long=code == "context_length_exceeded" or "context length" in emsg.lower(),
        )


def _base_url_env() -> str | None:
    return os.environ.get("OPENAI_BASE_URL", "").strip() or None


def _adapted(e: openai.APIStatusError, stream_options: bool, token_param: str) -> tuple[bool, str] | None:
    """The request settings to try after a 400 that names a parameter the server rejects."""
    if e.status_code not in (400, 422):
        return None
    msg = error_body(e)[1] or str(e)
    if stream_options and "stream_options" in msg:
        return False, token_param
    if token_param == "max_tokens" and "max_completion_tokens" in msg:
        return stream_options, "max_completion_tokens"
    if token_param == "max_completion_tokens" and "max_completion_tokens" in msg:
        return stream_options, "max_tokens"
    return None


def _error_code(e: Any) -> str:
    body = getattr(e, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    return str(err.get("code") or "") if isinstance(err, dict) else ""


def _is_transport_or_parse_error(e: Exception) -> bool:
    """Errors of the HTTP stack or of decoding a broken stream (not our bugs)."""
    if isinstance(e, json.JSONDecodeError):
        return True
    return type(e).__module__.startswith(("httpx", "httpcore", "h11", "h2", "anyio"))


# -- request: Messages API -> chat completions ------------------------------------------


def function_tool(spec: dict[str, Any]) -> dict[str, Any]:
    """A tool definition (``name``, ``description``, ``input_schema``) as a chat-completions function tool."""
    function: dict[str, Any] = {"name": spec["name"], "parameters": spec.get("input_schema") or {"type": "object"}}
    if spec.get("description"):
        function["description"] = spec["description"]
    return {"type": "function", "function": function}


def chat_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages API ``system`` + ``messages`` as chat-completions messages.

    Tool calls become the assistant's ``tool_calls``, tool results ``role: "tool"``
    messages (images in them follow in a user message, which tool messages cannot
    hold), and thinking blocks are dropped: chat completions take no reasoning back.
    """
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else [b for b in content or [] if isinstance(b, dict)]
        if m.get("role") == "assistant":
            out.extend(_assistant_message(blocks))
        else:
            out.extend(_user_messages(blocks))
    return out


def _assistant_message(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
    calls = [
        {
            "id": str(b.get("id")),
            "type": "function",
            "function": {"name": str(b.get("name")), "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False)},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    text = "\n\n".join(t for t in texts if t)
    if not text and not calls:
        return []
    msg: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def _user_messages(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for b in blocks:
        t = b.get("type")
        if t == "tool_result":
            text, images = _tool_result_parts(b.get("content"))
            if b.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id")), "content": text})
            if images:
                parts.append({"type": "text", "text": f"(Images returned by tool call {b.get('tool_use_id')}.)"})
                parts.extend(images)
        elif t == "text":
            parts.append({"type": "text", "text": str(b.get("text", ""))})
        elif t == "image":
            image = _image_part(b)
            parts.append(image or {"type": "text", "text": "[image omitted]"})
        elif t is not None:
            parts.append({"type": "text", "text": f"[{t} omitted]"})
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result_parts(content: Any) -> tuple[str, list[dict[str, Any]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            texts.append(str(b.get("text", "")))
        elif b.get("type") == "image":
            image = _image_part(b)
            if image is not None:
                images.append(image)
                texts.append("[image below]")
        else:
            texts.append(f"[{b.get('type')} omitted]")
    return "\n".join(texts), images


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    src = block.get("source")
    if not isinstance(src, dict):
        return None
    if src.get("type") == "base64" and src.get("data"):
        url = f"data:{src.get('media_type') or 'image/png'};base64,{src['data']}"
    elif src.get("type") == "url" and src.get("url"):
        url = str(src["url"])
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


# -- response: chat-completion chunks -> Messages API events and blocks ------------------


class _Assembler:
    """Builds Messages API events and content blocks from chat-completion chunks."""

    def __init__(self, model: str, on_event: EventCallback | None, partial: PartialResponse) -> None:
        self.model = model
        self.on_event = on_event
        self.partial = partial
        self.id: str | None = None
        self.started = False
        self.blocks: list[dict[str, Any]] = []
        self.args: dict[int, str] = {}  # block index -> tool arguments so far
        self.open: int | None = None
        self.tools: dict[Any, int] = {}  # the server's tool-call index -> block index
        self.last_tool: Any = None
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}

    async def _emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            await self.on_event(event)

    async def _start(self, block: dict[str, Any]) -> int:
        await self._close()
        self.blocks.append(block)
        i = len(self.blocks) - 1
        self.open = i
        start = dict(block)
        await self._emit({"type": "content_block_start", "index": i, "content_block": start})
        return i

    async def _close(self) -> None:
        if self.open is not None:
            i, self.open = self.open, None
            await self._emit({"type": "content_block_stop", "index": i})

    async def add(self, chunk: Any) -> None:
        if not self.started:
            self.started = True
            self.id = getattr(chunk, "id", None) or None
            self.model = getattr(chunk, "model", None) or self.model
            await self._emit(
                {
                    "type": "message_start",
                    "message": {
                        "id": self.id or f"msg_{uuid.uuid4().hex[:24]}",
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                }
            )
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = _usage(usage)
        for choice in getattr(chunk, "choices", None) or []:
            if (getattr(choice, "index", 0) or 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            if delta is not None:
                for attr in ("reasoning_content", "reasoning"):
                    await self._text("thinking", getattr(delta, attr, None))
                await self._text("text", getattr(delta, "content", None))
                await self._text("text", getattr(delta, "refusal", None))
                for call in getattr(delta, "tool_calls", None) or []:
                    await self._tool_call(call)
            if getattr(choice, "finish_reason", None):
                self.finish_reason = str(choice.finish_reason)

    async def _text(self, kind: str, s: Any) -> None:
        if not isinstance(s, str) or not s:
            return
        i = self.open
        if i is None or self.blocks[i]["type"] != kind:
            i = await self._start({"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "", "signature": ""})
        self.blocks[i][kind] += s
        if kind == "text":
            self.partial.add_text(i, s)
            delta = {"type": "text_delta", "text": s}
        else:
            delta = {"type": "thinking_delta", "thinking": s}
        await self._emit({"type": "content_block_delta", "index": i, "delta": delta})

    async def _tool_call(self, call: Any) -> None:
        fn = getattr(call, "function", None)
        call_id = getattr(call, "id", None) or None
        name = getattr(fn, "name", None) or None
        args = getattr(fn, "arguments", None)
        key = getattr(call, "index", None)
        if key is None:
            # No index: a new id starts a new call, no id continues the last one.
            key = self.last_tool if (call_id is None and self.last_tool is not None) else ("id", call_id or len(self.tools))
        i = self.tools.get(key)
        if i is not None and call_id and self.blocks[i]["id"] != call_id and self.args.get(i):
            # A server that numbers every call 0: a different id is a different call.
            key = ("id", call_id)
            i = self.tools.get(key)
        if i is None:
            block: dict[str, Any] = {"type": "tool_use", "id": call_id or f"call_{uuid.uuid4().hex[:24]}", "name": name or "", "input": {}}
            i = await self._start(block)
            self.tools[key] = i
            self.args[i] = ""
        elif name and not self.blocks[i]["name"]:
            self.blocks[i]["name"] = name
        self.last_tool = key
        if isinstance(args, str) and args:
            self.args[i] += args
            if self.open == i:
                await self._emit({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": args}})
        elif isinstance(args, dict):
            # Some servers send the arguments already parsed.
            self.args[i] += json.dumps(args)

    async def finish(self) -> ModelResponse:
        if self.finish_reason is None:
            raise ProviderError(
                "The API stream ended before the answer was complete. Run it again; the session is intact.",
                kind="stream",
            )
        await self._close()
        content: list[dict[str, Any]] = []
        for i, b in enumerate(self.blocks):
            if b["type"] == "tool_use":
                b = {**b, "input": _parse_arguments(self.args.get(i, ""))}
            content.append(b)
        has_tools = any(b["type"] == "tool_use" for b in content)
        stop = _STOP_REASONS.get(self.finish_reason, "end_turn")
        if has_tools and stop == "end_turn":
            # Ollama and others say "stop" after tool calls.
            stop = "tool_use"
        await self._emit(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": self.usage.get("output_tokens", 0), "input_tokens": self.usage.get("input_tokens", 0)},
            }
        )
        await self._emit({"type": "message_stop"})
        return ModelResponse(content=kept_blocks(content), stop_reason=stop, usage=dict(self.usage), model=self.model, id=self.id)


def _usage(usage: Any) -> dict[str, int]:
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    out: dict[str, int] = {}
    cached_n = int(cached) if isinstance(cached, (int, float)) else 0
    if isinstance(prompt, (int, float)):
        # Chat completions count cached tokens inside prompt_tokens; the Messages API apart.
        out["input_tokens"] = max(0, int(prompt) - cached_n)
    if isinstance(completion, (int, float)):
        out["output_tokens"] = int(completion)
    if cached_n:
        out["cache_read_input_tokens"] = cached_n
    return out


def _parse_arguments(raw: str) -> dict[str, Any]:
    """A tool call's arguments as a dict, or ``{INVALID_JSON_KEY: reason}`` for the loop to send back."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
        if isinstance(value, str):
            # Some models encode the arguments twice.
            value = json.loads(value)
    except ValueError as e:
        return {INVALID_JSON_KEY: one_line(str(e))[:200]}
    if not isinstance(value, dict):
        return {INVALID_JSON_KEY: f"the arguments are a JSON {type(value).__name__}, not an object"}
    return value


__all__ = ["OpenAIProvider", "chat_messages", "function_tool"]
