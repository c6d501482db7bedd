"""A realistic, reproducible large notebook: code cells with outputs, base64 PNG figures, HTML tables."""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from pathlib import Path
from typing import Any


def _png(width: int, height: int, rng: random.Random) -> bytes:
    """A valid RGB PNG: white with one pixel in eight inked, compressing about as a scatter plot does (~45 kB)."""
    rows = []
    for _ in range(height):
        row = bytearray([0])  # filter: none
        for _ in range(width):
            if rng.randrange(8):
                row += b"\xff\xff\xff"
            else:
                n = rng.randrange(1, 256)
                row += bytes((n, n, (n * 7) & 255))
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 6)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _table_html(rng: random.Random, rows: int) -> str:
    head = "".join(f"<th>col_{i}</th>" for i in range(6))
    body = "".join(
        "<tr><th>" + str(r) + "</th>" + "".join(f"<td>{rng.uniform(-1e3, 1e3):.4f}</td>" for _ in range(6)) + "</tr>\n"
        for r in range(rows)
    )
    return f'<div>\n<table border="1" class="dataframe">\n<thead><tr><th></th>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n</div>'


def _code_cell(i: int, rng: random.Random, png: str) -> dict[str, Any]:
    src = (
        f"# step {i}\n"
        f"df_{i} = load_frame('data/part_{i:03d}.parquet')\n"
        f"summary_{i} = df_{i}.describe()\n"
        f"fig, ax = plt.subplots(figsize=(6, 4))\n"
        f"ax.plot(df_{i}['t'], df_{i}['value'])\n"
        f"summary_{i}"
    )
    outputs: list[dict[str, Any]] = [
        {"output_type": "stream", "name": "stdout", "text": _lines("".join(f"row {k}: {rng.random():.6f}\n" for k in range(20)))},
        {
            "output_type": "execute_result",
            "execution_count": i,
            "metadata": {},
            "data": {"text/plain": _lines(f"<DataFrame {i}: 8 rows x 6 columns>"), "text/html": _lines(_table_html(rng, 8))},
        },
    ]
    if png:
        outputs.append(
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {"image/png": png, "text/plain": ["<Figure size 600x400 with 1 Axes>"]},
            }
        )
    return {"cell_type": "code", "execution_count": i, "id": f"code-{i:04d}", "metadata": {}, "outputs": outputs, "source": _lines(src)}


def build_notebook(path: Path, target_bytes: int, seed: int = 7) -> list[str]:
    """Write a notebook of about ``target_bytes`` to ``path``; return its code cell ids in order.

    Every code cell has a stdout stream and an HTML table; about two in three
    also carry a 400x300 PNG figure (about 60 kB of base64 each), as a
    notebook of plots does.
    """
    rng = random.Random(seed)
    pngs = [base64.b64encode(_png(400, 300, rng)).decode() + "\n" for _ in range(4)]
    cells: list[dict[str, Any]] = []
    code_ids: list[str] = []
    size = 0
    i = 0
    while size < target_bytes:
        i += 1
        if i % 5 == 1:
            cells.append({"cell_type": "markdown", "id": f"md-{i:04d}", "metadata": {}, "source": _lines(f"## Section {i}\n\nNotes on step {i}.")})
        png = pngs[i % len(pngs)] if i % 3 else ""
        cell = _code_cell(i, rng, png)
        cells.append(cell)
        code_ids.append(cell["id"])
        size += len(json.dumps(cell, indent=1))
    nb = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.7"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return code_ids
