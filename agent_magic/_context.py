"""Context accounting: how much of the model's window the next request fills, and what to drop.

A session only grows, so before each request the loop asks this module three
questions:

1. **How big is the next request?** The last response's usage is exact
   (input + cache read + cache creation + output tokens); what was added since
   is estimated from its length, at the tokens-per-character ratio the last
   response measured (:class:`ContextMeter`).
2. **Can old tool results go?** Above the threshold, the bulk of old tool
   results (Reads, Bash, Python, Grep output, images) is replaced in what is
   *sent* by a one-line stub saying what was there and how to get it again
   (:func:`tool_results_to_clear`, :func:`stub_for`). The transcript keeps
   everything; a ``context_edit`` line records which results are cleared, so
   every later request (and a resumed session) sends the same prefix and the
   prompt cache stays warm.
3. **Must it compact?** When clearing is not enough, the conversation is
   summarised: by the API itself where it offers server-side compaction, else
   by a summary request to the same provider (``_compaction.py``).

The model table (``models.json``) gives each model's context window;
``AgentOptions(context_window=N)`` and ``AGENT_MAGIC_CONTEXT_WINDOW`` override it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

#: The window assumed for a model the table does not know (the smallest in common use).
DEFAULT_CONTEXT_WINDOW = 128_000
#: Characters per token assumed until a response measures the real ratio (code and JSON
#: run denser than prose; guessing low keeps the estimate on the safe side).
DEFAULT_CHARS_PER_TOKEN = 3.0
#: Tool results kept whole when old ones are cleared: the agent is usually working on them.
KEEP_RECENT_RESULTS = 4
#: A result shorter than this is not worth a stub.
MIN_CLEARED_CHARS = 600
#: The API refuses a server-side compaction trigger below this.
MIN_SERVER_TRIGGER = 50_000
COMPACTION_MODES = ("auto", "server", "client", "off")


@lru_cache(maxsize=1)
def _model_table() -> dict[str, dict[str, Any]]:
    raw = json.loads((Path(__file__).parent / "models.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, dict)}


def model_info(model: str) -> dict[str, Any]:
    """What the table knows of ``model`` (longest matching prefix), or ``{}``."""
    table = _model_table()
    best = max((k for k in table if model.startswith(k)), key=len, default=None)
    return dict(table[best]) if best is not None else {}


def context_window_for(model: str, override: int | None = None) -> int:
    """The context window in tokens: ``override``, else ``$AGENT_MAGIC_CONTEXT_WINDOW``, else the table's."""
    if override is not None:
        return int(override)
    raw = os.environ.get("AGENT_MAGIC_CONTEXT_WINDOW", "").strip().replace("_", "").replace(",", "")
    if raw:
        try:
            value = int(float(raw))
        except ValueError:
            raise ConfigurationError(f"AGENT_MAGIC_CONTEXT_WINDOW={raw!r} is not a number of tokens.") from None
        if value < 1000:
            raise ConfigurationError(f"AGENT_MAGIC_CONTEXT_WINDOW={raw!r} is too small; give the window in tokens, e.g. 200000.")
        return value
    return int(model_info(model).get("context_window") or DEFAULT_CONTEXT_WINDOW)


def compaction_mode(option: str | None) -> str:
    """``AgentOptions.compaction``, else ``$AGENT_MAGIC_COMPACTION``, else ``auto``."""
    mode = (option or os.environ.get("AGENT_MAGIC_COMPACTION") or "auto").strip().lower()
    if mode not in COMPACTION_MODES:
        raise ConfigurationError(f"compaction={mode!r} is not one of {', '.join(COMPACTION_MODES)}.")
    return mode


def default_thinking(model: str) -> dict[str, Any] | None:
    """The thinking a model gets when none is asked for (adaptive where the model has it)."""
    kind = model_info(model).get("thinking")
    return {"type": kind} if isinstance(kind, str) else None


def json_chars(obj: Any) -> int:
    """Characters of ``obj`` as JSON: what a request carries, for estimates."""
    return len(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def usage_tokens(usage: Mapping[str, Any] | None) -> int:
    """Tokens a response's context held: everything read in, plus what it wrote (sent back next)."""
    if not usage:
        return 0
    return sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")
    )


@dataclass
class ContextMeter:
    """Estimates a request's tokens from the last measured one.

    ``anchor_tokens`` is what the last response's usage says the conversation
    held; ``anchor_chars`` is the request's length then (system, tools and
    messages as JSON) plus the answer. A request that extends it is estimated as
    the anchor plus the new characters at the measured ratio; one that changed
    what came before (a clearing, a compaction) is estimated whole at that ratio.
    """

    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    anchor_tokens: int | None = None
    anchor_chars: int = 0
    anchor_messages: int = 0

    def estimate(self, fixed_chars: int, messages: list[dict[str, Any]], *, same_prefix: bool = True) -> int:
        """Tokens of a request with ``fixed_chars`` of system and tools and these ``messages``."""
        if self.anchor_tokens is not None and same_prefix and len(messages) >= self.anchor_messages:
            new = sum(json_chars(m) for m in messages[self.anchor_messages :])
            return self.anchor_tokens + int(new / self.chars_per_token)
        total = fixed_chars + sum(json_chars(m) for m in messages)
        return int(total / self.chars_per_token)

    def measure(self, fixed_chars: int, messages: list[dict[str, Any]], usage: Mapping[str, Any] | None) -> None:
        """Learn from a response: ``messages`` is what was sent plus the answer."""
        tokens = usage_tokens(usage)
        if tokens <= 0:
            return
        chars = fixed_chars + sum(json_chars(m) for m in messages)
        if chars > 2000:  # too small a sample says more about overhead than about the text
            self.chars_per_token = max(1.5, min(6.0, chars / tokens))
        self.anchor_tokens = tokens
        self.anchor_chars = chars
        self.anchor_messages = len(messages)

    def forget_anchor(self) -> None:
        self.anchor_tokens = None
        self.anchor_messages = 0


# ---------------------------------------------------------------------------
# Clearing old tool results
# ---------------------------------------------------------------------------


def _result_chars(block: dict[str, Any]) -> int:
    content = block.get("content")
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for b in content:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "image":
                total += 6000  # an image costs about 1,500 tokens whatever its bytes
            else:
                total += json_chars(b)
        return total
    return 0


def tool_results_to_clear(
    messages: list[dict[str, Any]], already: Iterable[str], *, keep_recent: int = KEEP_RECENT_RESULTS
) -> tuple[list[str], int]:
    """The ids of old tool results to clear now, and the characters that saves.

    Every result but the last ``keep_recent`` is cleared, unless it is small or
    was cleared before. All at once rather than a few at a time: each clearing
    changes the conversation's prefix, which the prompt cache then writes again.
    """
    done = set(already)
    results: list[tuple[str, int]] = []
    for m in messages:
        if m.get("role") != "user" or not isinstance(m.get("content"), list):
            continue
        for b in m["content"]:
            if isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str):
                results.append((b["tool_use_id"], _result_chars(b)))
    old = results[: max(0, len(results) - keep_recent)]
    picked = [(tid, n) for tid, n in old if tid not in done and n >= MIN_CLEARED_CHARS]
    return [tid for tid, _ in picked], sum(n for _, n in picked)


def stub_for(tool_use: dict[str, Any] | None, chars: int) -> str:
    """The text a cleared tool result becomes: what it was, and how to get it again."""
    tokens = f"about {max(1, chars // 4):,} tokens"
    if tool_use is None:
        return f"[Cleared to save context: an earlier tool result ({tokens}). Run the tool again if you need it.]"
    name = str(tool_use.get("name") or "tool")
    inp = tool_use.get("input") if isinstance(tool_use.get("input"), dict) else {}
    assert isinstance(inp, dict)
    target = inp.get("file_path") or inp.get("notebook_path") or inp.get("path") or inp.get("pattern")
    what = f"{name} of {target}" if isinstance(target, str) and target else name
    if name in ("Bash", "Python"):
        code = str(inp.get("command") or inp.get("code") or "").strip().splitlines()
        what = f"the output of {name} `{code[0][:80]}`" if code else f"the output of {name}"
        again = "Run it again if you need the output (it may have changed since)."
    elif name in ("Read", "NotebookRead"):
        again = "Read it again if you need it (it may have changed since)."
    else:
        again = f"Call {name} again if you need it."
    return f"[Cleared to save context: {what} ({tokens}). {again}]"


def clear_results(messages: list[dict[str, Any]], cleared: set[str]) -> list[dict[str, Any]]:
    """``messages`` with the results in ``cleared`` replaced by stubs; only changed messages are copied."""
    if not cleared:
        return messages
    uses: dict[str, dict[str, Any]] = {}
    out = list(messages)
    for i, m in enumerate(out):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        if m.get("role") == "assistant":
            for b in content:
                if isinstance(b, dict) and b.get("type") == "tool_use" and isinstance(b.get("id"), str):
                    uses[b["id"]] = b
            continue
        changed = False
        blocks = []
        for b in content:
            if isinstance(b, dict) and b.get("type") == "tool_result" and b.get("tool_use_id") in cleared:
                nb = {k: v for k, v in b.items() if k not in ("content", "cache_control")}
                nb["content"] = stub_for(uses.get(b["tool_use_id"]), _result_chars(b))
                blocks.append(nb)
                changed = True
            else:
                blocks.append(b)
        if changed:
            out[i] = {**m, "content": blocks}
    return out
