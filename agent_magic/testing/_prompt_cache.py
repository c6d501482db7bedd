"""Prompt caching as the Messages API does it, for the fake server.

A request marks blocks with ``cache_control``; the prefix up to each mark
(tools, then system, then messages, in that order whatever the JSON's key
order) is a cache entry. A request reads the longest cached prefix ending at
one of its marks and writes the prefixes up to its marks that are long enough
(1,024 tokens, as for Sonnet and Opus). The response's usage says so:
``cache_read_input_tokens``, ``cache_creation_input_tokens`` and the
uncached rest as ``input_tokens``. The marks are validated as the API does: at
most four, ``{"type": "ephemeral"}`` with an optional ``ttl``, never on an empty
text block or a thinking block.

Tokens are estimated as the server's other counts are: four bytes of JSON each.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import orjson

MIN_TOKENS = 1024
MAX_BREAKPOINTS = 4


class CacheControlError(ValueError):
    """A ``cache_control`` the API would refuse (answered with a 400)."""


def _strip(unit: dict[str, Any], where: str) -> dict[str, Any]:
    cc = unit["cache_control"]
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise CacheControlError(f"{where}.cache_control.type: Input should be 'ephemeral'")
    if cc.get("ttl") not in (None, "5m", "1h"):
        raise CacheControlError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    kind = unit.get("type")
    if kind in ("thinking", "redacted_thinking"):
        raise CacheControlError(f"{where}.{kind}.cache_control: Extra inputs are not permitted")
    if kind == "text" and not unit.get("text"):
        raise CacheControlError(f"{where}: cache_control cannot be set for empty text blocks")
    return {k: v for k, v in unit.items() if k != "cache_control"}


def breakpoints(body: dict[str, Any]) -> list[tuple[str, int]]:
    """``(prefix hash, prefix tokens)`` at each ``cache_control`` mark, in prefix order.

    Raises
    ------
    CacheControlError
        For marks the API refuses.
    """
    units: list[Any] = []
    marks: list[int] = []

    def add(unit: Any, where: str) -> None:
        if isinstance(unit, dict) and "cache_control" in unit:
            unit = _strip(unit, where)
            marks.append(len(units))
        units.append(unit)

    for i, tool in enumerate(body.get("tools") or []):
        add(tool, f"tools.{i}")
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            add(block, f"system.{i}")
    elif system:
        units.append(system)
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, dict):
            continue
        units.append(message.get("role"))
        content = message.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                add(block, f"messages.{i}.content.{j}")
        else:
            units.append(content)
    if len(marks) > MAX_BREAKPOINTS:
        raise CacheControlError(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}.")
    digest = hashlib.sha256(str(body.get("model", "")).encode())
    out: list[tuple[str, int]] = []
    start = size = 0
    for mark in marks:
        # The units' JSON joined by commas, whatever the marks cut it into: the same
        # prefix hashes the same wherever this request put its marks.
        chunk = orjson.dumps(units[start : mark + 1])[1:-1]
        if start:
            chunk = b"," + chunk
        digest.update(chunk)
        size += len(chunk)
        start = mark + 1
        out.append((digest.copy().hexdigest(), size // 4))
    return out


class PromptCache:
    """The server's cache: prefix hash -> tokens (entries never expire; a test is shorter than 5 minutes)."""

    def __init__(self) -> None:
        self._entries: dict[str, int] = {}
        self._lock = threading.Lock()

    def use(self, body: dict[str, Any]) -> tuple[int, int]:
        """Look the request's prefixes up and store them; ``(read, written)`` tokens.

        Raises
        ------
        CacheControlError
            For marks the API refuses.
        """
        marks = breakpoints(body)
        if not marks:
            return 0, 0
        with self._lock:
            read = next((tokens for h, tokens in reversed(marks) if h in self._entries), 0)
            last = marks[-1][1]
            written = last - read if last >= MIN_TOKENS else 0
            for h, tokens in marks:
                if tokens >= MIN_TOKENS:
                    self._entries[h] = tokens
        return read, written

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
