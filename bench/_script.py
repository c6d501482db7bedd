"""The model's side of every benchmark turn, identical for both systems.

A prompt carries the tool call the scripted model answers with, as one line of
JSON after :data:`MARK`; the reply to the request after the tool result is
"done". The responder is stateless (it looks only at the request), so it
serves any number of sessions, processes and both systems at once, and
ignores the extra user text Claude Code puts around a prompt (system
reminders arrive as further text blocks of the same message).
"""

from __future__ import annotations

import json
import time
from typing import Any

from agent_magic.testing import FakeAnthropicServer, last_prompt, steps_since_prompt, text, tool_use

MARK = "bench-call:"


def prompt(tool: str | None, input: dict[str, Any] | None = None, note: str = "") -> str:
    """A prompt whose scripted answer calls ``tool`` with ``input`` (``None``: just answer)."""
    call = json.dumps({"tool": tool, "input": input or {}}, separators=(",", ":"))
    return f"{note}\n{MARK}{call}" if note else f"{MARK}{call}"


def respond(body: dict[str, Any]) -> dict[str, Any]:
    """The fake server's reply to one Messages request."""
    p = last_prompt(body)
    i = p.rfind(MARK)
    if i < 0 or steps_since_prompt(body) > 0:
        return text("done")
    line = p[i + len(MARK) :].split("\n", 1)[0]
    try:
        call = json.loads(line)
    except ValueError:
        return text("done")
    if not call.get("tool"):
        return text("done")
    return tool_use(call["tool"], call["input"])


def start_server() -> FakeAnthropicServer:
    server = FakeAnthropicServer().start()
    server.set_default(respond)
    return server


def first_request_after(server: FakeAnthropicServer, t0: float) -> float | None:
    """Epoch time of the first Messages request the server received at or after ``t0``."""
    times = [r.time for r in server.message_requests if r.time >= t0]
    return min(times) if times else None


def now() -> float:
    return time.time()
