"""Model providers, imported lazily by name.

``AGENT_MAGIC_PROVIDER`` (or ``AgentOptions.provider``) picks one:
``anthropic`` (default), ``openai`` (any OpenAI-compatible server).
"""

from __future__ import annotations

import importlib
import os

from .._errors import ConfigurationError
from .base import ModelRequest, ModelResponse, PartialResponse, Provider

_PROVIDERS = {
    "anthropic": ("agent_magic.providers.anthropic", "AnthropicProvider"),
    "openai": ("agent_magic.providers.openai", "OpenAIProvider"),
    "claude-code": ("agent_magic.providers.claude_code", "ClaudeCodeEngine"),
}


def provider_names() -> list[str]:
    return sorted(_PROVIDERS)


def get_provider(name: str | Provider | None = None) -> Provider:
    """A provider instance for ``name`` (default ``$AGENT_MAGIC_PROVIDER`` or ``anthropic``)."""
    if isinstance(name, Provider):
        return name
    key = (name or os.environ.get("AGENT_MAGIC_PROVIDER") or "anthropic").strip().lower()
    try:
        module_name, cls_name = _PROVIDERS[key]
    except KeyError:
        raise ConfigurationError(
            f"Unknown provider {key!r}; choose one of {', '.join(provider_names())} (AGENT_MAGIC_PROVIDER)."
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(
            f"The {key} provider needs an extra package ({e.name}). Install it with `pip install agent-magic[{key}]`."
        ) from None
    cls: type[Provider] = getattr(module, cls_name)
    return cls()


__all__ = ["ModelRequest", "ModelResponse", "PartialResponse", "Provider", "get_provider", "provider_names"]
