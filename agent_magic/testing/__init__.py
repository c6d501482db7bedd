"""Test without an API key: fake model API servers and scripted replies.

In the spirit of ``httpx.MockTransport`` and moto: start a real HTTP server on
127.0.0.1 that streams Server-Sent Events exactly like the Messages API, script
what it answers, and point ``ANTHROPIC_BASE_URL`` at it::

    from agent_magic.testing import FakeAnthropicServer, text, tool_use

    with FakeAnthropicServer() as server, server.environ():
        server.on_prompt("hello", text("Hi there!"))
        ...  # run %%agent cells, agent_magic.query(...), or any Anthropic client

Requests are checked as the API checks them: a conversation the real API
refuses (a tool call without its result, an empty message, a malformed block,
a thinking block edited or without its signature, too many cache marks) gets
the API's 400 ``invalid_request_error``, worded as the API words it, so code
that builds conversations wrongly fails in tests as it would in production.

:class:`FakeOpenAIServer` serves the same scripts as an OpenAI-compatible
chat-completions API (``OPENAI_BASE_URL``), for the ``openai`` provider.

Run one from the command line (prints its URL)::

    python -m agent_magic.testing --port 0 [--script walkthrough]
"""

from __future__ import annotations

from ._openai_server import FakeOpenAIServer
from ._replies import (
    Reply,
    error,
    hang,
    message,
    raw,
    raw_tool_block,
    stream_error,
    text,
    text_block,
    thinking_block,
    tool_block,
    tool_use,
    tool_uses,
    truncated,
)
from ._server import FakeAnthropicServer, RecordedRequest, last_prompt, steps_since_prompt

__all__ = [
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "RecordedRequest",
    "Reply",
    "error",
    "hang",
    "last_prompt",
    "message",
    "raw",
    "raw_tool_block",
    "steps_since_prompt",
    "stream_error",
    "text",
    "text_block",
    "thinking_block",
    "tool_block",
    "tool_use",
    "tool_uses",
    "truncated",
]
