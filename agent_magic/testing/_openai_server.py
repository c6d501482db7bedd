"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and demos.

The same scripted replies as :class:`~agent_magic.testing.FakeAnthropicServer`
(``text``, ``tool_use``, ``message``, ``raw_tool_block``, ``error``, ``hang``,
``truncated``, ...), served in OpenAI's wire format: ``POST /v1/chat/completions``
streams ``data: {chunk}`` Server-Sent Events with ``choices[0].delta.content``
and ``delta.tool_calls[i].function.arguments`` fragments, a last usage chunk
when ``stream_options.include_usage`` asks for it, then ``data: [DONE]``;
without ``stream`` it answers one ``chat.completion`` object.

Requests are checked the way OpenAI checks them (every tool call answered by a
``role: "tool"`` message, and no tool message without its call), so a
conversation that OpenAI would refuse fails here too. Local servers' quirks can
be switched on: ``tools_unsupported_models`` answers 400 as Ollama does for a
model without tool calling, ``reject_stream_options`` as servers that do not
know ``stream_options``. ``reasoning_effort`` must be one of OpenAI's values
(``none``, ``minimal``, ``low``, ``medium``, ``high``, ``xhigh``, ``max``), else
OpenAI's 400 ``invalid_value``.

A :attr:`~FakeOpenAIServer.context_window` (input tokens estimated as the
request's bytes over four) refuses a longer request with OpenAI's 400
``context_length_exceeded`` ("This model's maximum context length is M tokens.
However, your messages resulted in N tokens. Please reduce the length of the
messages."). A summary request (the last user message holds
``<summary></summary>``) is answered before the queue and the rules with
``<summary>...</summary>``, as the Anthropic fake answers it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from ._replies import Reply, conversation_summary
from ._server import (
    SUMMARY_MARKER,
    RecordedRequest,
    _estimate_tokens,
    _ScriptedHandler,
    _ScriptedServer,
    _summary_focus,
    reply_usage,
)

_FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length", "stop_sequence": "stop", "refusal": "content_filter"}
_ROLES = ("system", "developer", "user", "assistant", "tool")
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: The values OpenAI takes for ``reasoning_effort`` (as the ``openai`` client's types list them).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def chat_last_prompt(body: dict[str, Any]) -> str:
    """The text of the last ``role: "user"`` message of a chat-completions request."""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def chat_steps_since_prompt(body: dict[str, Any]) -> int:
    """How many assistant messages follow the last user message (which step of a rule to play)."""
    n = 0
    for m in reversed(body.get("messages") or []):
        if not isinstance(m, dict):
            continue
        if m.get("role") == "assistant":
            n += 1
        elif m.get("role") == "user":
            return n
    return n


def chat_summary(body: dict[str, Any], instructions: str | None = None) -> str:
    """The summary the fake writes of a chat-completions request: its user texts and the tools it called.

    A user text holding the summary marker asks for the summary: it is not named,
    and what follows its marker line is taken as ``instructions``.
    """
    prompts: list[str] = []
    tools: list[str] = []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        if m.get("role") == "user":
            content = m.get("content")
            parts = [content] if isinstance(content, str) else [p.get("text") for p in content if isinstance(p, dict)] if isinstance(content, list) else []
            for part in parts:
                if not isinstance(part, str) or not part:
                    continue
                if SUMMARY_MARKER in part:
                    instructions = instructions or _summary_focus(part)
                else:
                    prompts.append(part)
        elif m.get("role") == "assistant":
            tools.extend(str((c.get("function") or {}).get("name")) for c in m.get("tool_calls") or [] if isinstance(c, dict))
    return conversation_summary(prompts, tools, instructions=instructions)


def check_reasoning_effort(body: dict[str, Any]) -> str | None:
    """OpenAI's 400 message for a ``reasoning_effort`` it does not know, or None."""
    if "reasoning_effort" not in body or body["reasoning_effort"] is None:
        return None
    value = body["reasoning_effort"]
    if value in REASONING_EFFORTS:
        return None
    allowed = ", ".join(f"'{v}'" for v in REASONING_EFFORTS[:-1]) + f", and '{REASONING_EFFORTS[-1]}'"
    shown = f"'{value}'" if isinstance(value, str) else json.dumps(value)
    return f"Invalid value: {shown[:60]}. Supported values are: {allowed}."


class ChatRecordedRequest(RecordedRequest):
    """A recorded chat-completions request."""

    @property
    def last_prompt(self) -> str:
        return chat_last_prompt(self.body or {})

    @property
    def effort(self) -> str | None:
        """The request's ``reasoning_effort``."""
        value = (self.body or {}).get("reasoning_effort")
        return value if isinstance(value, str) else None

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``role: "tool"`` messages after the request's last assistant message."""
        out: list[dict[str, Any]] = []
        for m in reversed((self.body or {}).get("messages") or []):
            if m.get("role") == "assistant":
                break
            if m.get("role") == "tool":
                out.append(m)
        return out[::-1]


def check_chat_request(body: dict[str, Any]) -> str | None:
    """What OpenAI would refuse in this request (its 400 message), or None."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    open_calls: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"Invalid value for 'messages[{i}].role'"
        role = m["role"]
        if role == "tool":
            if m.get("tool_call_id") not in open_calls:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls' (messages[{i}].tool_call_id={m.get('tool_call_id')!r})."
                )
            open_calls.remove(m["tool_call_id"])
            if not isinstance(m.get("content"), (str, list)):
                return f"Invalid type for 'messages[{i}].content': expected a string or an array."
            continue
        if open_calls:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(open_calls)}"
            )
        content = m.get("content")
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"Invalid 'messages[{i}].tool_calls': empty array."
                for k, c in enumerate(calls):
                    fn = c.get("function") if isinstance(c, dict) else None
                    if not isinstance(fn, dict) or not isinstance(c.get("id"), str) or c.get("type") != "function":
                        return f"Missing required parameter: 'messages[{i}].tool_calls[{k}]'."
                    if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                        return f"Invalid type for 'messages[{i}].tool_calls[{k}].function.arguments': expected a string."
                    open_calls.append(c["id"])
            elif content is None:
                return f"Missing required parameter: 'messages[{i}].content'."
        elif not isinstance(content, (str, list)):
            return f"Invalid type for 'messages[{i}].content': expected a string or an array."
        if isinstance(content, list):
            for k, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                    return f"Invalid value for 'messages[{i}].content[{k}].type'."
    if open_calls:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(open_calls)}"
        )
    for k, t in enumerate(body.get("tools") or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or t.get("type") != "function":
            return f"Missing required parameter: 'tools[{k}].function'."
        if not _NAME.match(str(fn.get("name", ""))):
            return f"Invalid 'tools[{k}].function.name': string does not match pattern '^[a-zA-Z0-9_-]+$'."
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            return f"Invalid type for 'tools[{k}].function.parameters': expected an object."
    return None


def _error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class _OpenAIHandler(_ScriptedHandler):
    server_version = "fake-openai/1"
    request_id_header = "x-request-id"
    record_cls = ChatRecordedRequest
    owner: FakeOpenAIServer

    def _prompt_of(self, body: dict[str, Any]) -> str:
        return chat_last_prompt(body)

    def _step_of(self, body: dict[str, Any]) -> int:
        return chat_steps_since_prompt(body)

    def _is_summary_request(self, body: dict[str, Any]) -> bool:
        return SUMMARY_MARKER in chat_last_prompt(body)

    def _default_summary(self, body: dict[str, Any], instructions: str | None) -> str:
        return chat_summary(body, instructions)

    def _refuse(self, rec: RecordedRequest, message: str, code: str | None = None, param: str | None = None) -> None:
        """Answer OpenAI's 400 ``invalid_request_error``; the record says why."""
        rec.refused = message
        self._record(rec, "invalid")
        self._send_json(400, _error_body(message, "invalid_request_error", code, param))

    def _data(self, payload: Any) -> None:
        self._chunk(f"data: {json.dumps(payload)}\n\n".encode())

    # -- routes --------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/health"):
            self._send_json(200, {"status": "ok"})
        elif path.endswith("/models"):
            models = sorted(self.owner.models or {"fake-model"})
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "agent-magic"} for m in models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error_body(f"Invalid URL (GET {self.path})", "invalid_request_error"))

    def do_POST(self) -> None:
        rec, body = self._read_request()
        path = self.path.split("?", 1)[0].rstrip("/")
        if not path.endswith("/chat/completions"):
            self._record(rec, "not_found")
            self._send_json(404, _error_body(f"Invalid URL (POST {self.path})", "invalid_request_error"))
            return
        if not isinstance(body, dict):
            self._refuse(rec, "We could not parse the JSON body of your request.")
            return
        problem = check_chat_request(body)
        if problem is not None:
            self._refuse(rec, problem)
            return
        problem = check_reasoning_effort(body)
        if problem is not None:
            self._refuse(rec, problem, "invalid_value", "reasoning_effort")
            return
        owner = self.owner
        model = str(body["model"])
        if owner.reject_stream_options and "stream_options" in body:
            self._record(rec, "stream_options_rejected")
            self._send_json(400, _error_body("Unrecognized request argument supplied: stream_options", "invalid_request_error"))
            return
        if owner.models is not None and model not in owner.models:
            self._record(rec, "model_not_found")
            self._send_json(
                404,
                _error_body(f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
            )
            return
        if body.get("tools") and model in owner.tools_unsupported_models:
            # Ollama's answer for a model whose template has no tool calling.
            self._record(rec, "tools_unsupported")
            self._send_json(400, _error_body(f"registry.ollama.ai/library/{model}:latest does not support tools", "api_error"))
            return
        tokens = rec.input_tokens = _estimate_tokens(self.body_size)
        window = self.state.context_window
        if window is not None and tokens > window:
            self._refuse(
                rec,
                f"This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. "
                "Please reduce the length of the messages.",
                "context_length_exceeded",
                "messages",
            )
            return
        summary = self._summary_reply(body)
        reply = summary if summary is not None else self._pick(body)
        self._record(rec, "summary" if summary is not None else str(reply.get("kind")))
        try:
            self._serve(reply, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _serve(self, reply: Reply, body: dict[str, Any]) -> None:
        kind = reply["kind"]
        if kind == "error":
            self._send_json(reply["status"], _error_body(reply["message"], reply["error_type"]), self._error_headers(reply))
            return
        if self._serve_common(reply):
            return
        if kind == "stream_error":
            self._start_stream()
            chunks = list(self._chunks(body, {"blocks": [{"type": "text", "text": "Partial answer " * 10}], "stop_reason": "end_turn", "chunk_size": 8}))
            for chunk in chunks[: reply["after"]]:
                self._data(chunk)
            self._data(_error_body(reply["message"], reply["error_type"]))
            self._end_stream()
            return
        if kind == "truncated":
            self._start_stream()
            chunks = list(self._chunks(body, {"blocks": reply["blocks"], "stop_reason": "end_turn", "chunk_size": 8}))
            for chunk in chunks[: reply["after"]]:
                self._data(chunk)
            self._cut_connection()
            return
        if kind != "message":
            raise ValueError(f"Unknown reply kind {kind!r}")
        if reply.get("first_delay"):
            time.sleep(reply["first_delay"])
        if not body.get("stream"):
            self._send_json(200, self._completion(body, reply))
            return
        self._start_stream()
        delay = float(reply.get("delay") or 0.0)
        for chunk in self._chunks(body, reply):
            self._data(chunk)
            if delay:
                time.sleep(delay)
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    # -- response building ------------------------------------------------
    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        inp, out = reply_usage(reply, self.body_size)
        cached = int((reply.get("usage") or {}).get("cache_read_input_tokens") or 0)
        # Chat completions count cached tokens inside prompt_tokens.
        return {
            "prompt_tokens": inp + cached,
            "completion_tokens": out,
            "total_tokens": inp + cached + out,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    @staticmethod
    def _head(body: dict[str, Any], reply: Reply, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake{int(time.time() * 1e6)}",
            "object": obj,
            "created": int(time.time()),
            "model": reply.get("model") or body.get("model", "fake-model"),
            "system_fingerprint": "fp_fake",
        }

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        text = "".join(b.get("text", "") for b in reply["blocks"] if b.get("type") == "text")
        calls = [
            {
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": b["raw_json"] if "raw_json" in b else json.dumps(b["input"])},
            }
            for b in reply["blocks"]
            if b.get("type") == "tool_use"
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        reasoning = "".join(b.get("thinking", "") for b in reply["blocks"] if b.get("type") == "thinking")
        if reasoning:
            message["reasoning_content"] = reasoning
        return {
            **self._head(body, reply, "chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH.get(reply["stop_reason"], "stop")}],
            "usage": self._usage(body, reply),
        }

    def _chunks(self, body: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
        head = self._head(body, reply, "chat.completion.chunk")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        size = int(reply.get("chunk_size") or 24)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                c["usage"] = None
            return c

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        n_calls = 0
        for b in reply["blocks"]:
            t = b["type"]
            if t == "text":
                s = b["text"]
                for k in range(0, len(s), size):
                    yield chunk({"content": s[k : k + size]})
            elif t == "thinking":
                s = b["thinking"]
                for k in range(0, len(s), size):
                    yield chunk({"reasoning_content": s[k : k + size]})
            elif t == "tool_use":
                js = b["raw_json"] if "raw_json" in b else json.dumps(b["input"])
                first = {"index": n_calls, "id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": ""}}
                yield chunk({"tool_calls": [first]})
                for k in range(0, len(js), size):
                    yield chunk({"tool_calls": [{"index": n_calls, "function": {"arguments": js[k : k + size]}}]})
                n_calls += 1
            else:
                raise ValueError(f"Unknown block type {t!r}")
        yield chunk({}, _FINISH.get(reply["stop_reason"], "stop"))
        if include_usage:
            yield {**head, "choices": [], "usage": self._usage(body, reply)}


class FakeOpenAIServer(_ScriptedServer):
    """A scripted OpenAI-compatible chat-completions server on 127.0.0.1 (port 0 picks a free port).

    Scripted with the same replies and API as :class:`FakeAnthropicServer`::

        with FakeOpenAIServer() as server:
            server.add(tool_use("Write", {"file_path": "a.txt", "content": "hi"}), text("Done."))
            with server.environ():
                ...  # OPENAI_BASE_URL and OPENAI_API_KEY point here
            assert server.requests[0].body["messages"]

    Attributes
    ----------
    tools_unsupported_models
        Models that answer a request with ``tools`` by a 400, as Ollama does.
    models
        When set, requests for other models get OpenAI's 404 ``model_not_found``.
    reject_stream_options
        Answer requests carrying ``stream_options`` by a 400, as some servers do.
    context_window
        Refuse longer requests with OpenAI's 400 ``context_length_exceeded`` (as for the Anthropic fake).
    summary_text
        The summary to answer summary requests with, instead of the server's own.
    """

    _handler_cls = _OpenAIHandler
    _thread_name = "fake-openai"
    _not_message_kinds = frozenset({"not_found", "invalid"})

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.tools_unsupported_models: set[str] = set()
        self.models: set[str] | None = None
        self.reject_stream_options = False

    @property
    def base_url(self) -> str:
        """The URL the ``openai`` client takes as ``base_url`` (ends in ``/v1``)."""
        return f"{self.url}/v1"

    def env(self, api_key: str = "sk-test-fake-openai-key") -> dict[str, str]:
        """Environment variables that point the ``openai`` client here."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": api_key}


__all__ = [
    "REASONING_EFFORTS",
    "ChatRecordedRequest",
    "FakeOpenAIServer",
    "chat_last_prompt",
    "chat_steps_since_prompt",
    "chat_summary",
    "check_chat_request",
    "check_reasoning_effort",
]
