"""The provider interface: one streamed model response per call.

The agent loop speaks one neutral format, the Messages API's JSON (content
blocks: text, thinking, tool_use, tool_result). A provider turns a
:class:`ModelRequest` into one streamed response, reporting raw stream events
(Messages API event dicts) as they arrive and returning the whole
:class:`ModelResponse` at the end. Providers for other APIs translate both
ways, so the loop never changes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigurationError, ProviderError

EventCallback = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ModelRequest:
    """One request to the model."""

    model: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)
    #: ``{"type": "adaptive"}`` etc. (None: the provider's default, no thinking).
    thinking: dict[str, Any] | None = None
    #: ``low`` ... ``max`` (None: the API's default).
    effort: str | None = None
    #: Input tokens at which the API should compact the conversation itself (None: it should not).
    compact_trigger: int | None = None


@dataclass
class ModelResponse:
    """One complete model response."""

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: dict[str, Any]
    model: str
    id: str | None = None
    #: One-line notes for the person (e.g. the API client says the model is deprecated);
    #: the loop shows each as a warning, the turn goes on.
    notices: list[str] = field(default_factory=list)


@dataclass
class PartialResponse:
    """What has streamed so far; the loop keeps its text when a turn is interrupted."""

    text_blocks: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)

    def add_text(self, index: int, text: str) -> None:
        while len(self.text_blocks) <= index:
            self.text_blocks.append("")
        self.text_blocks[index] += text


class Provider(ABC):
    """A model API. Subclasses live in ``agent_magic.providers.<name>``."""

    name: str = "base"

    def default_model(self) -> str | None:
        """The model to use when neither ``model=`` nor ``AGENT_MAGIC_MODEL`` names one (None: agent-magic's default)."""
        return None

    def check(self) -> None:
        """Raise ConfigurationError/MissingAPIKeyError before any request if setup is incomplete."""
        return None

    @abstractmethod
    async def stream(
        self,
        request: ModelRequest,
        on_event: EventCallback | None,
        partial: PartialResponse,
    ) -> ModelResponse:
        """Send ``request``; call ``on_event`` with each raw stream event; return the response.

        Raises
        ------
        ProviderError
            With a one-line message saying what failed and what to do.
        """

    #: The API client a provider keeps (closed by :meth:`aclose`).
    _client: Any = None

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                await self._client.close()
            finally:
                self._client = None


# -- helpers shared by providers -------------------------------------------------------


def kept_blocks(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's blocks without text blocks that say nothing.

    Models do answer with an empty text block (before a tool call) or one of only
    whitespace; the Messages API refuses both when the conversation is sent back
    ("text content blocks must be non-empty", "... must contain non-whitespace
    text"), which would leave the session unable to take another turn.
    """
    return [b for b in content if b.get("type") != "text" or str(b.get("text", "")).strip()]


def one_line(s: str) -> str:
    return " ".join(s.split())


def env_number(name: str, default: float) -> float:
    """A numeric setting from the environment (``AGENT_MAGIC_TIMEOUT``, ...)."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number.") from None


def error_body(e: Any) -> tuple[str, str]:
    """(error type or code, message) from an API error's JSON body."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("type") or err.get("code") or ""), str(err.get("message") or "")
        if isinstance(err, str):
            return "", err
    return "", str(getattr(e, "message", "") or "")


#: What a "too long" error advises; replaced when there is nothing earlier to compact.
TOO_LONG_ADVICE = "Compact it with `%agent compact`, or start a new session with `--new`."
NOTHING_TO_COMPACT_ADVICE = "There is nothing earlier to compact: shorten the prompt, or what it attaches."


def window_in(detail: str) -> int | None:
    """The context window an API's "too long" error names, if it does.

    Anthropic: "prompt is too long: 210345 tokens > 200000 maximum"; OpenAI:
    "This model's maximum context length is 128000 tokens. ...".
    """
    import re

    m = re.search(r"tokens?\s*>\s*([\d,]+)\s*maximum", detail) or re.search(r"maximum context length is ([\d,]+)", detail)
    return int(m.group(1).replace(",", "")) if m else None


def status_error(status: int, detail: str, *, key_var: str, not_found: str, too_long: bool = False) -> ProviderError:
    """The one-line error for an HTTP status every model API shares.

    ``detail`` is "status type: message"; ``key_var`` names the credential to check,
    ``not_found`` says what to check on a 404. Provider-specific cases (overloaded,
    quota, no tool support) are decided by the provider before calling this.
    """
    if status == 401:
        return ProviderError(f"The API rejected the credentials ({detail}). Check {key_var}.", status=status, kind="auth")
    if status == 403:
        return ProviderError(f"The API refused access ({detail}). Check the key's permissions.", status=status, kind="auth")
    if status == 404:
        return ProviderError(f"The API does not know {not_found} ({detail}).", status=status, kind="bad_request")
    if status == 429:
        return ProviderError(
            f"Rate limited by the API ({detail}) after retrying. Wait a minute and run it again.", status=status, kind="rate_limit"
        )
    if status >= 500:
        return ProviderError(
            f"The API had a server error ({detail}) after retrying. Try again in a little while.", status=status, kind="server"
        )
    if status == 413 or too_long:
        return ProviderError(
            f"The conversation is too long for the model ({detail}). {TOO_LONG_ADVICE}",
            status=status,
            kind="too_long",
            limit=window_in(detail),
        )
    return ProviderError(f"The API refused the request ({detail}).", status=status, kind="bad_request")
