"""The provider interface: one streamed model response per call.

The agent loop speaks one neutral format, the Messages API's JSON (content
blocks: text, thinking, tool_use, tool_result). A provider turns a
:class:`ModelRequest` into one streamed response, reporting raw stream events
(Messages API event dicts) as they arrive and returning the whole
:class:`ModelResponse` at the end. Providers for other APIs translate both
ways, so the loop never changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class ModelResponse:
    """One complete model response."""

    content: list[dict[str, Any]]
    stop_reason: str | None
    usage: dict[str, Any]
    model: str
    id: str | None = None


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

    async def aclose(self) -> None:
        return None
