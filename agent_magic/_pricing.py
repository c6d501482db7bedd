"""Token prices and cost computation.

Prices live in ``prices.json`` next to this module (USD per million tokens,
matched by the longest model-name prefix). Users override or extend them with
``AgentOptions(prices=...)`` or a JSON file named by ``$AGENT_MAGIC_PRICES``.
A model with no price costs ``None`` ("unknown"), never a made-up 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

Price = Mapping[str, float]


@lru_cache(maxsize=1)
def _builtin_prices() -> dict[str, dict[str, float]]:
    raw = json.loads((Path(__file__).parent / "prices.json").read_text())
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def _env_prices() -> dict[str, dict[str, float]]:
    path = os.environ.get("AGENT_MAGIC_PRICES")
    if not path:
        return {}
    try:
        raw = json.loads(Path(path).expanduser().read_text())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"Cannot read AGENT_MAGIC_PRICES={path!r}: {e}. Point it at a JSON file of prices.") from None
    if not isinstance(raw, dict):
        raise ConfigurationError(f"AGENT_MAGIC_PRICES={path!r} must hold a JSON object of model -> prices.")
    return {k: v for k, v in raw.items() if isinstance(v, dict)}


def price_for(model: str, overrides: Mapping[str, Mapping[str, float]] | None = None) -> Price | None:
    """The price entry for ``model`` (longest matching prefix), or None if unknown."""
    table: dict[str, Mapping[str, float]] = dict(_builtin_prices())
    table.update(_env_prices())
    if overrides:
        table.update(overrides)
    best: str | None = None
    for key in table:
        if model.startswith(key) and (best is None or len(key) > len(best)):
            best = key
    return table[best] if best is not None else None


def cost_usd(usage: Mapping[str, Any] | None, price: Price | None) -> float | None:
    """Cost of one response's ``usage`` at ``price``; None when the price is unknown."""
    if price is None:
        return None
    if not usage:
        return 0.0
    inp = float(usage.get("input_tokens") or 0)
    out = float(usage.get("output_tokens") or 0)
    cw = float(usage.get("cache_creation_input_tokens") or 0)
    cr = float(usage.get("cache_read_input_tokens") or 0)
    pin = float(price.get("input", 0.0))
    # A server-side compaction's own sampling is billed apart from the top-level counts.
    extra = sum(cost_usd(it, price) or 0.0 for it in usage.get("compaction_iterations") or [] if isinstance(it, Mapping))
    return extra + (
        inp * pin
        + out * float(price.get("output", 0.0))
        + cw * float(price.get("cache_write", pin * 1.25))
        + cr * float(price.get("cache_read", pin * 0.1))
    ) / 1_000_000


def add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    """Accumulate token counts of one response into ``total``."""
    if not usage:
        return
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = usage.get(key)
        if isinstance(value, (int, float)):
            total[key] = total.get(key, 0) + int(value)
    for it in usage.get("compaction_iterations") or []:
        if isinstance(it, Mapping):
            add_usage(total, it)
