"""Figures (median with min and max over runs, or a reason there is no number) and their formatting."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One system's measurement of one workload."""

    unit: str  # "s" or "B"
    values: list[float] = field(default_factory=list)
    #: Why there is no number (``"fails: ..."``, ``"not installed"``, ``"n/a ..."``).
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values and self.note is None else None

    def cell(self) -> str:
        if self.note is not None:
            return self.note
        if not self.values:
            return "-"
        med, lo, hi = statistics.median(self.values), min(self.values), max(self.values)
        div, suffix = _scale(med, self.unit)
        if len(self.values) == 1 or lo == hi:
            return f"{_num(med / div)} {suffix}"
        return f"{_num(med / div)} {suffix} ({_num(lo / div)}-{_num(hi / div)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "median": self.median,
            "min": min(self.values) if self.values and self.note is None else None,
            "max": max(self.values) if self.values and self.note is None else None,
            "runs": self.values,
            "note": self.note,
            "detail": self.detail,
        }


def _scale(v: float, unit: str) -> tuple[float, str]:
    if unit == "s":
        if v < 1e-3:
            return 1e-6, "µs"
        if v < 1:
            return 1e-3, "ms"
        return 1.0, "s"
    if unit == "B":
        for suffix, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= k:
                return k, suffix
        return 1.0, "B"
    return 1.0, unit


def _num(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt(v: float, unit: str) -> str:
    div, suffix = _scale(v, unit)
    return f"{_num(v / div)} {suffix}"


def ratio(ours: Figure, theirs: Figure) -> float | None:
    a, b = ours.median, theirs.median
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(rows: list[tuple[str, str, str, str]], header: tuple[str, str, str, str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)
