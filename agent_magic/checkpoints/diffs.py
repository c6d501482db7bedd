"""Unified diffs for previews: of whole text files, and of one cell's source."""

from __future__ import annotations

import difflib


def text_diff(a: bytes | None, b: bytes | None, name: str) -> str:
    def lines(x: bytes | None) -> list[str] | None:
        if x is None:
            return []
        if b"\x00" in x[:8192]:
            return None
        try:
            return x.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            return None

    la, lb = lines(a), lines(b)
    if la is None or lb is None:
        return f"Binary file {name} differs\n"
    return _udiff(la, lb, f"a/{name} (now)", f"b/{name} (checkpoint)", 20_000)


def _udiff(a: list[str], b: list[str], fa: str, fb: str, limit: int) -> str:
    out = []
    size = 0
    for line in difflib.unified_diff(a, b, fa, fb, n=2):
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        out.append(line)
        size += len(line)
        if size > limit:
            out.append("[... diff cut ...]\n")
            break
    return "".join(out)


def _cell_lines(source: str) -> list[str]:
    # A cell's source has no "end of file": its last line never gets the no-newline marker.
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def src_diff(old: str, new: str, cid: str) -> str:
    return _udiff(_cell_lines(old), _cell_lines(new), f"cell {cid} (now)", f"cell {cid} (checkpoint)", 10_000)
