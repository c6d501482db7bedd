"""Long sessions (issue #15): request size, compactions and resume time over thousands of turns.

One session per N, driven through ``AgentClient`` in this process against the
fake Messages API (real HTTP and SSE on 127.0.0.1, its context window enforced
with the API's 400), in a fresh ``AGENT_MAGIC_HOME``::

    python bench/long_session.py [--turns 500,1000,2000] [--window 40000]
                                 [--compaction client|server] [--json PATH]
                                 [--system ours|claude_code] [--fake-summaries]

Each turn asks the agent to Read one of five ``analysis_K.ipynb`` notebooks
(12 cells, 10 of them code with text outputs, one PNG plot; ~27 kB on disk)
and to answer with a paragraph; the scripted model calls Read, then answers
(~800 characters). Before each turn the notebook's training-log cell is
rewritten for that turn, so no two Reads return the same text.

Printed per N (and written to ``--json``, keyed by mode: client, server, claude_code, so the runs
share one file):

- request bytes: max and mean of the last 100 model requests (the JSON body's
  length, from ``content-length``; summary requests counted apart), beside what
  the last request would have been with nothing cleared or compacted (its
  system prompt and tools plus every message the transcript holds);
- compactions (``compact_boundary`` lines) and clearings (``context_edit`` lines);
- transcript and session folder size at the end;
- resume: from constructing ``AgentClient(AgentOptions(resume=sid))`` to the
  fake server receiving the new prompt's first request (median of 3); and
  ``SessionStore.read_live_entries`` against ``read_entries`` (median of 5);
- per-turn wall time by 100-turn block, to see whether turns slow down with N.

``--system claude_code`` drives Claude Code's bundled CLI through the same
turns on the same fake (see the section near the end); ``--fake-summaries``
leaves the fake's summaries uncapped (see :func:`capped_summary`).

Every run is checked: every turn succeeds with the scripted answer, no tool
result is an error, no request is refused (``RecordedRequest.refused``), and a
server-side run uses a window of at least 64,000 tokens (the API compacts from
50,000 = 0.8 x 62,500). No timing is asserted. The process is warm (imports
done, one untimed warm-up turn) before any clock starts.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import random
import re
import resource
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NOTEBOOKS = 5
LAST = 100  # requests the size statistics are taken over
RESUME_RUNS = 3
READ_RUNS = 5
MIN_SERVER_WINDOW = 64_000
SUMMARY_CAP = 8_000  # characters of a compaction summary (~2,000 tokens)
TURN_RE = re.compile(r"\[turn (\d+)\]")
RESUME_RE = re.compile(r"\[resume (\d+)\]")


# -- the workspace: realistic notebooks with outputs ----------------------------------


def _png(width: int, height: int, rng: random.Random) -> bytes:
    """A small line plot as an RGB PNG: white with light noise, axes, two noisy series."""
    px = bytearray()
    for _ in range(width * height):
        v = 255 - rng.randrange(12)
        px += bytes((v, v, v))

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            px[i : i + 3] = bytes(rgb)

    for x in range(8, width - 4):
        put(x, height - 8, (0, 0, 0))
    for y in range(4, height - 8):
        put(8, y, (0, 0, 0))
    for color, base in (((31, 119, 180), 0.35), ((255, 127, 14), 0.6)):
        y = height * base
        for x in range(9, width - 4):
            y = min(height - 10, max(5, y + rng.uniform(-2.5, 2.5)))
            for dy in (0, 1):
                put(x, int(y) + dy, color)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(px[y * width * 3 : (y + 1) * width * 3]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _table(rng: random.Random, columns: list[str], n: int, index: list[str] | None = None) -> str:
    """A pandas-like text table."""
    rows = [[(index[r] if index else str(r))] + [f"{rng.uniform(-500, 5000):.2f}" for _ in columns] for r in range(n)]
    head = ["", *columns]
    widths = [max(len(head[c]), *(len(r[c]) for r in rows)) for c in range(len(head))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _html(table: str) -> str:
    rows = [line.split() for line in table.splitlines()]
    out = ['<div>\n<table border="1" class="dataframe">\n  <tbody>']
    out += ["    <tr>" + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r in rows]
    out.append("  </tbody>\n</table>\n</div>")
    return "\n".join(out)


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def _code(cid: str, n: int, source: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": n, "id": cid, "metadata": {}, "outputs": outputs, "source": _lines(source)}


def _result(n: int, text: str, html: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"text/plain": _lines(text)}
    if html:
        data["text/html"] = _lines(html)
    return {"data": data, "execution_count": n, "metadata": {}, "output_type": "execute_result"}


def _stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"name": name, "output_type": "stream", "text": _lines(text)}


def training_log(k: int, turn: int) -> str:
    rng = random.Random(f"log-{k}-{turn}")
    loss = rng.uniform(0.9, 1.3)
    out = [f"run {turn}: fitting GradientBoostingRegressor(n_estimators=400, learning_rate=0.05) on 38,570 rows"]
    for epoch in range(1, 25):
        loss *= rng.uniform(0.9, 0.99)
        out.append(f"iter {epoch * 16:4d}  train_loss={loss:.4f}  valid_loss={loss * rng.uniform(1.0, 1.15):.4f}  elapsed={epoch * 0.41:.2f}s")
    out.append(f"best iteration {rng.randrange(200, 400)}, valid RMSE {rng.uniform(90, 140):.2f}, R^2 {rng.uniform(0.7, 0.9):.3f}")
    return "\n".join(out)


def make_notebook(k: int, turn: int) -> dict[str, Any]:
    """Notebook K as it stands at ``turn`` (only the training-log cell depends on the turn)."""
    rng = random.Random(f"notebook-{k}")
    cols = ["units", "price", "revenue", "discount", "cost", "margin", "returns"]
    months = [f"2025-{m:02d}" for m in range(1, 13)] + [f"2026-{m:02d}" for m in range(1, 13)]
    head = _table(rng, cols, 15)
    describe = _table(rng, cols, 8, ["count", "mean", "std", "min", "25%", "50%", "75%", "max"])
    monthly = _table(rng, ["revenue", "units", "margin", "returns"], 24, months)
    regions = ["north", "south", "east", "west", "central", "online", "wholesale", "export"]
    counts = "\n".join(f"{r:<10} {rng.randrange(1000, 9000):>6}" for r in regions) + "\nName: region, dtype: int64"
    nulls = "\n".join(f"{c:<10} {rng.randrange(0, 40):>4}" for c in ["date", "region", *cols]) + "\ndtype: int64"
    report = "\n".join(
        f"{r:>12}      {rng.uniform(0.6, 0.95):.2f}      {rng.uniform(0.6, 0.95):.2f}      {rng.uniform(0.6, 0.95):.2f}      {rng.randrange(300, 2000)}"
        for r in regions
    )
    info = "<class 'pandas.core.frame.DataFrame'>\nRangeIndex: 48213 entries, 0 to 48212\nData columns (total 9 columns):\n #   Column    Non-Null Count  Dtype\n---  ------    --------------  -----\n" + "\n".join(
        f" {i}   {c:<9} {48213 - rng.randrange(0, 40)} non-null  {'datetime64[ns]' if c == 'date' else 'object' if c == 'region' else 'float64'}"
        for i, c in enumerate(["date", "region", *cols])
    ) + "\ndtypes: datetime64[ns](1), float64(7), object(1)\nmemory usage: 3.3+ MB"
    png = base64.b64encode(_png(140, 90, rng)).decode()
    md = {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": _lines(f"# Sales analysis {k}\n\nMonthly revenue by region, 2025-2026, and a first model of next month's revenue.")}
    cells = [
        md,
        _code("imports", 1, "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\nfrom sklearn.ensemble import GradientBoostingRegressor", []),
        _code("load", 2, f'df = pd.read_csv("data/sales_{k}.csv", parse_dates=["date"])\nprint(df.shape)\ndf.info()', [_stream(f"(48213, {len(cols) + 2})\n" + info)]),
        _code("head", 3, "df.head(15)", [_result(3, head, _html(head))]),
        _code("describe", 4, "df.describe()", [_result(4, describe, _html(describe))]),
        _code("nulls", 5, "df.isna().sum()", [_result(5, nulls)]),
        _code("monthly", 6, 'monthly = df.groupby(df["date"].dt.to_period("M")).agg(\n    revenue=("revenue", "sum"), units=("units", "sum"),\n    margin=("margin", "mean"), returns=("returns", "sum"))\nmonthly', [_result(6, monthly)]),
        _code("plot", 7, 'ax = monthly[["revenue", "margin"]].plot(figsize=(8, 4), title="Monthly revenue and margin")\nplt.show()', [
            {"data": {"image/png": png, "text/plain": ["<Figure size 800x400 with 1 Axes>"]}, "metadata": {}, "output_type": "display_data"},
        ]),
        _code("regions", 8, 'df["region"].value_counts()', [_result(8, counts)]),
        {"cell_type": "markdown", "id": "model-md", "metadata": {}, "source": ["## A first model"]},
        _code("fit", 9 + turn, 'model = GradientBoostingRegressor(n_estimators=400, learning_rate=0.05, verbose=1)\nmodel.fit(X_train, y_train)', [
            _stream(training_log(k, turn)),
            _stream("/opt/conda/lib/python3.11/site-packages/sklearn/base.py:474: FutureWarning: `BaseEstimator._validate_data` is deprecated", "stderr"),
        ]),
        _code("report", 10 + turn, "print(region_report(model, X_test, y_test))", [_stream("      region  precision    recall  f1-score   support\n" + report)]),
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python", "version": "3.11.7"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_path(ws: Path, turn: int) -> Path:
    return ws / f"analysis_{turn % NOTEBOOKS}.ipynb"


def write_notebook(ws: Path, turn: int) -> None:
    path = notebook_path(ws, turn)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(make_notebook(turn % NOTEBOOKS, turn), indent=1) + "\n")
    os.replace(tmp, path)


# -- the scripted model ---------------------------------------------------------------


def prompt(ws: Path, turn: int) -> str:
    return f"[turn {turn}] Read {notebook_path(ws, turn).name} and tell me in one paragraph what its latest run shows."


def answer(turn: int) -> str:
    rng = random.Random(f"answer-{turn}")
    k = turn % NOTEBOOKS
    return (
        f"Turn {turn}: analysis_{k}.ipynb loads 48,213 rows of sales data, and its latest run (cell `fit`) "
        f"trains a gradient-boosted regressor whose validation loss falls steadily over 24 logged iterations, "
        f"ending at a validation RMSE near {rng.uniform(90, 140):.0f} and an R^2 around {rng.uniform(0.7, 0.9):.2f}. "
        f"Monthly revenue rises through 2025 with a dip in month {rng.randrange(1, 13)} and margin stays flat near "
        f"{rng.uniform(20, 40):.0f}%; the `nulls` cell shows a few dozen missing values per column, which the model "
        f"drops silently, and the region report is weakest for '{rng.choice(['export', 'wholesale', 'online'])}'. "
        f"The FutureWarning from scikit-learn is harmless for now. Next I would impute the missing prices, "
        f"hold out the last three months instead of a random split, and compare against a seasonal baseline."
    )


def capped_summary(body: dict[str, Any]) -> str:
    """The fake's own summary, cut to its first line and its newest ``SUMMARY_CAP`` characters.

    The fake's server-side summary nests every earlier summary whole, so over
    hundreds of compactions it grows without bound (a model rewrites its
    summary each time); uncapped, it fills the window by ~1,250 turns
    (``--fake-summaries`` shows that).
    """
    from agent_magic.testing._server import anthropic_summary

    full = anthropic_summary(body)
    if len(full) <= SUMMARY_CAP:
        return full
    head, rest = full.split("\n", 1)
    return f"{head}\n[...]\n{rest[-(SUMMARY_CAP - len(head) - 7):]}"


def script(server: Any, ws: Path, *, cap_summaries: bool = True) -> None:
    from agent_magic.testing import last_prompt, text, tool_use

    if cap_summaries:
        server.summary_text = capped_summary

    def turn_of(body: dict[str, Any]) -> int:
        m = TURN_RE.search(last_prompt(body))
        assert m is not None
        return int(m.group(1))

    server.on_prompt(
        TURN_RE,
        lambda body: tool_use("Read", {"file_path": str(notebook_path(ws, turn_of(body)))}),
        lambda body: text(answer(turn_of(body))),
    )
    server.on_prompt(RESUME_RE, lambda body: text(f"resumed {RESUME_RE.search(last_prompt(body)).group(1)}"))  # type: ignore[union-attr]


# -- driving and measuring -------------------------------------------------------------


def _json_bytes(obj: Any) -> int:
    """Bytes of ``obj`` as a request carries it (compact JSON, UTF-8)."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


class Recorder:
    """Keeps what each request's size and kind were, then lets the server forget it.

    The fake server keeps every parsed body; a 2,000-turn session would hold
    gigabytes of them, so they are harvested after every turn.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.rows: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.fixed_bytes: int | None = None  # a request's bytes besides its messages

    def harvest(self, turn: int) -> None:
        reqs = self.server.requests
        self.server.clear_requests()
        for r in reqs:
            if r.refused:
                self.refused.append(f"turn {turn}: {r.refused}")
            size = int(r.headers.get("content-length") or 0)
            last = json.dumps(((r.body or {}).get("messages") or [None])[-1])
            self.rows.append({
                "turn": turn, "bytes": size, "kind": r.reply_kind, "server_compacted": r.compaction is not None,
                "input_tokens": r.input_tokens, "asks_summary": "<summary>" in last,
            })
            if r.body and r.reply_kind != "summary":
                self.fixed_bytes = _json_bytes({k: v for k, v in r.body.items() if k != "messages"})

    def model_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["kind"] not in ("summary", "invalid", "count_tokens", "not_found")]


def _options(ws: Path, home: Path, args: argparse.Namespace, **kw: Any) -> Any:
    from agent_magic import AgentOptions

    return AgentOptions(cwd=ws, home=home, context_window=args.window, compaction=args.compaction, **kw)


async def drive(ws: Path, home: Path, args: argparse.Namespace, turns: int, rec: Recorder, start: int = 0) -> dict[str, Any]:
    from agent_magic import AgentClient, ResultMessage, SystemMessage, UserMessage

    out: dict[str, Any] = {"errors": [], "turn_seconds": [], "boundaries": 0, "cleared": 0, "max_context_tokens": 0, "usage": {}}
    t_start = time.perf_counter()
    async with AgentClient(_options(ws, home, args)) as client:
        for i in range(start, start + turns):
            write_notebook(ws, i)
            t0 = time.perf_counter()
            await client.query(prompt(ws, i))
            result = None
            async for m in client.receive_response():
                if isinstance(m, UserMessage) and isinstance(m.content, list):
                    for b in m.content:
                        if getattr(b, "is_error", False):
                            out["errors"].append(f"turn {i}: tool error {str(getattr(b, 'content', ''))[:200]}")
                elif isinstance(m, SystemMessage):
                    out["boundaries"] += m.subtype == "compact_boundary"
                    out["cleared"] += m.subtype == "context_cleared"
                elif isinstance(m, ResultMessage):
                    result = m
            out["turn_seconds"].append(time.perf_counter() - t0)
            if result is None or result.is_error or result.result != answer(i):
                out["errors"].append(f"turn {i}: {None if result is None else (result.subtype, (result.result or '')[:200])}")
            else:
                out["session_id"] = result.session_id
                out["max_context_tokens"] = max(out["max_context_tokens"], result.context_tokens or 0)
                for key, v in (result.usage or {}).items():
                    if isinstance(v, int):
                        out["usage"][key] = out["usage"].get(key, 0) + v
            rec.harvest(i)
            done = i + 1 - start
            if start == 0 and done % 100 == 0:
                last = rec.model_rows()[-1]["bytes"] if rec.model_rows() else 0
                print(f"  turn {done:5d}/{turns}  elapsed {time.perf_counter() - t_start:7.1f} s  last request {last:,} B", flush=True)
    out["seconds"] = time.perf_counter() - t_start
    return out


async def resume_once(ws: Path, home: Path, args: argparse.Namespace, sid: str, k: int, server: Any) -> dict[str, Any]:
    from agent_magic import AgentClient, ResultMessage

    server.clear_requests()
    gc.collect()
    t0 = time.time()
    client = AgentClient(_options(ws, home, args, resume=sid))
    async with client:
        await client.query(f"[resume {k}] Where were we?")
        result = None
        async for m in client.receive_response():
            if isinstance(m, ResultMessage):
                result = m
    reqs = server.requests
    server.clear_requests()
    if not reqs:
        return {"seconds": float("nan"), "first_request_kind": None, "first_request_bytes": 0, "refused": [],
                "error": ("no request", None if result is None else (result.subtype, result.result))}
    first = min(reqs, key=lambda r: r.time)
    ok = result is not None and not result.is_error and result.result == f"resumed {k}"
    return {
        "seconds": first.time - t0,
        "first_request_kind": first.reply_kind,
        "first_request_bytes": int(first.headers.get("content-length") or 0),
        "refused": [r.refused for r in reqs if r.refused],
        "error": None if ok else (None if result is None else (result.subtype, result.result)),
    }


def _median_time(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one(turns: int, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from agent_magic.store.local import SessionStore
    from agent_magic.store.transcript import build_api_messages
    from agent_magic.testing import FakeAnthropicServer

    with tempfile.TemporaryDirectory(prefix="long-session-") as tmp, FakeAnthropicServer() as server:
        ws, home = Path(tmp) / "work", Path(tmp) / "home"
        ws.mkdir()
        env = {**server.env(), "AGENT_MAGIC_HOME": str(home)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            for i in range(NOTEBOOKS):
                write_notebook(ws, i)
            script(server, ws, cap_summaries=not args.fake_summaries)
            server.context_window = args.window
            rec = Recorder(server)
            print(f"N={turns}: driving {turns} turns ({args.compaction} compaction, window {args.window:,}) ...", flush=True)
            drove = anyio.run(drive, ws, home, args, turns, rec)
            sid = drove.get("session_id")
            errors = list(drove["errors"]) + rec.refused
            if sid is None:
                raise SystemExit(f"N={turns}: no turn succeeded: {errors[:3]}")

            store = SessionStore.at(home)
            entries = store.read_entries(sid)
            live = store.read_live_entries(sid)
            transcript_bytes = store.transcript_path(sid).stat().st_size
            session_bytes = sum(p.stat().st_size for p in store.session_dir(sid).rglob("*") if p.is_file())
            boundaries = [e for e in entries if e.get("subtype") == "compact_boundary"]
            clearings = [e for e in entries if e.get("type") == "context_edit"]
            # Every message of the transcript as the API would get it, nothing cleared or compacted.
            whole = build_api_messages([e for e in entries if e.get("type") in ("user", "assistant") and not e.get("carried")])
            message_bytes = sum(_json_bytes(m) + 1 for m in whole)
            model = rec.model_rows()
            last = [r["bytes"] for r in model[-LAST:]]
            summaries = [r["bytes"] for r in rec.rows if r["kind"] == "summary"]
            seconds = drove["turn_seconds"]
            usage = drove["usage"]
            cache_read = usage.get("cache_read_input_tokens", 0)
            read_in = cache_read + usage.get("cache_creation_input_tokens", 0) + usage.get("input_tokens", 0)
            blocks = [seconds[b : b + 100] for b in range(0, len(seconds), 100)]

            resumes = [anyio.run(resume_once, ws, home, args, sid, k, server) for k in range(RESUME_RUNS)]
            for r in resumes:
                if r["error"] or r["refused"]:
                    errors.append(f"resume: {r['error'] or r['refused']}")
            live_s = _median_time(lambda: store.read_live_entries(sid), READ_RUNS)
            all_s = _median_time(lambda: store.read_entries(sid), READ_RUNS)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return {
        "turns": turns,
        "ok": not errors,
        "errors": errors[:20],
        "drive_seconds": round(drove["seconds"], 1),
        "model_requests": len(model),
        "request_bytes_last100_max": max(last),
        "request_bytes_last100_mean": round(statistics.fmean(last)),
        "request_bytes_max_all": max(r["bytes"] for r in model),
        "request_bytes_max_by_100_turns": [max((r["bytes"] for r in model if b <= r["turn"] < b + 100), default=0) for b in range(0, turns, 100)],
        "uncompacted_request_bytes": (rec.fixed_bytes or 0) + message_bytes,
        "summary_requests": len(summaries),
        "summary_request_bytes_max": max(summaries, default=0),
        "server_compactions": sum(r["server_compacted"] for r in rec.rows),
        "max_context_tokens": drove["max_context_tokens"],
        "usage": drove["usage"],
        "cache_read_share": round(cache_read / read_in, 3) if read_in else None,
        "compactions": len(boundaries),
        "compactions_by_method": {m: sum(b.get("method") == m for b in boundaries) for m in sorted({str(b.get("method")) for b in boundaries})},
        "summary_chars_max": max((len(b.get("summary") or "") for b in boundaries), default=0),
        "clearings": len(clearings),
        "transcript_bytes": transcript_bytes,
        "session_dir_bytes": session_bytes,
        "transcript_lines": len(entries),
        "live_lines": len(live),
        "resume_to_first_request_s": [round(r["seconds"], 4) for r in resumes],
        "resume_to_first_request_median_s": round(statistics.median(r["seconds"] for r in resumes), 4),
        "resume_first_request": {k: resumes[0][k] for k in ("first_request_kind", "first_request_bytes")},
        "read_live_entries_median_s": round(live_s, 5),
        "read_entries_median_s": round(all_s, 5),
        "turn_seconds_mean": round(statistics.fmean(seconds), 4),
        "turn_seconds_max": round(max(seconds), 3),
        "turn_seconds_mean_by_100_turns": [round(statistics.fmean(b), 4) for b in blocks],
    }


def warm_up(args: argparse.Namespace) -> None:
    """One untimed turn in a throwaway store: imports, the client's first use, nbformat."""
    import anyio

    from agent_magic.testing import FakeAnthropicServer

    with tempfile.TemporaryDirectory(prefix="long-session-warm-") as tmp, FakeAnthropicServer() as server:
        ws, home = Path(tmp) / "work", Path(tmp) / "home"
        ws.mkdir()
        env = server.env()
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            script(server, ws)
            anyio.run(drive, ws, home, args, 1, Recorder(server))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    gc.collect()


def _kb(n: int) -> str:
    return f"{n / 1000:,.1f} kB"


def print_table(res: dict[str, Any]) -> None:
    rows = [
        ("request bytes, last 100: max", _kb(res["request_bytes_last100_max"])),
        ("request bytes, last 100: mean", _kb(res["request_bytes_last100_mean"])),
        ("request bytes, max over the run", _kb(res["request_bytes_max_all"])),
        ("same request, nothing cleared/compacted", _kb(res["uncompacted_request_bytes"])),
        ("summary requests (max bytes)", f"{res['summary_requests']} ({_kb(res['summary_request_bytes_max'])})"),
        ("compactions (boundary lines)", f"{res['compactions']} {res['compactions_by_method']}, longest summary {res['summary_chars_max']:,} chars"),
        ("server compactions seen by the fake", str(res["server_compactions"])),
        ("clearings (context_edit lines)", str(res["clearings"])),
        ("input tokens read from the prompt cache", f"{res['cache_read_share']:.0%}" if res["cache_read_share"] is not None else "-"),
        ("transcript bytes", f"{_kb(res['transcript_bytes'])} ({res['transcript_lines']:,} lines, live {res['live_lines']})"),
        ("session folder bytes", _kb(res["session_dir_bytes"])),
        ("resume -> first request (median of 3)", f"{res['resume_to_first_request_median_s'] * 1000:.1f} ms"),
        ("resume's first request", f"{res['resume_first_request']['first_request_kind']}, {_kb(res['resume_first_request']['first_request_bytes'])}"),
        ("read_live_entries (median of 5)", f"{res['read_live_entries_median_s'] * 1000:.2f} ms"),
        ("read_entries, whole transcript", f"{res['read_entries_median_s'] * 1000:.2f} ms"),
        ("turn time mean / max", f"{res['turn_seconds_mean'] * 1000:.0f} ms / {res['turn_seconds_max'] * 1000:.0f} ms"),
        ("drive time", f"{res['drive_seconds']:.1f} s"),
        ("checks", "ok" if res["ok"] else "FAILED: " + "; ".join(res["errors"][:3])),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nN = {res['turns']} turns")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"  max request bytes per 100 turns: {', '.join(f'{b / 1000:.0f}k' for b in res['request_bytes_max_by_100_turns'])}")
    print(f"  mean turn ms per 100 turns: {', '.join(f'{s * 1000:.0f}' for s in res['turn_seconds_mean_by_100_turns'])}")
    print(flush=True)


# -- Claude Code beside it -------------------------------------------------------------
#
# The CLI bundled in claude-agent-sdk, offline against the same fake (bench/_claude_code.py).
# It compacts by itself: CLAUDE_CODE_AUTO_COMPACT_WINDOW (at least 100,000) sets its window,
# from which it keeps 20,000 tokens for output; CLAUDE_AUTOCOMPACT_PCT_OVERRIDE then puts the
# threshold at that share of the rest. Both are chosen so it compacts where agent-magic does
# (0.8 x --window). It does not carry the turn's prompt over a compaction (the summary holds
# it) and re-attaches recently read files after it, so the fake's stepping by "assistant
# messages since the prompt" does not work there: its responder looks at the last message.

RUN_RE = re.compile(r"run (\d+): fitting")
CC_WINDOW = 100_000
CC_OUTPUT_RESERVE = 20_000
#: What the fake refuses once per CLI process and the CLI then sends again without it.
CC_KNOWN_REFUSAL = "thinking.adaptive.display"


def claude_code_env(window: int) -> dict[str, str]:
    pct = 100 * 0.8 * window / (CC_WINDOW - CC_OUTPUT_RESERVE)
    return {"CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(CC_WINDOW), "CLAUDE_AUTOCOMPACT_PCT_OVERRIDE": f"{pct:g}"}


def claude_code_reply(ws: Path) -> Any:
    from agent_magic.testing import last_prompt, text, tool_use

    def respond(body: dict[str, Any]) -> Any:
        # Claude Code may end the messages with a role "system" one (environment, deferred tools).
        last = next((m for m in reversed(body.get("messages") or []) if m.get("role") == "user"), {})
        content = last.get("content") if isinstance(last.get("content"), list) else []
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            runs = RUN_RE.findall(json.dumps(results[-1].get("content")))
            return text(answer(int(runs[-1]))) if runs else text("no run found")
        prompt = last_prompt(body)
        if m := RESUME_RE.findall(prompt):
            return text(f"resumed {m[-1]}")
        if m := TURN_RE.findall(prompt):
            return tool_use("Read", {"file_path": str(notebook_path(ws, int(m[-1])))})
        return text("[scripted] nothing to do")

    return respond


async def drive_claude_code(root: Path, url: str, args: argparse.Namespace, turns: int, rec: Recorder) -> dict[str, Any]:
    from claude_agent_sdk import ClaudeSDKClient, ResultMessage, SystemMessage, UserMessage

    from bench import _claude_code as cc

    ws = root / "work"
    out: dict[str, Any] = {"errors": [], "turn_seconds": [], "boundaries": [], "pre_tokens": []}
    opts = cc.options(str(root), url)
    opts.env.update(claude_code_env(args.window))
    t_start = time.perf_counter()
    async with ClaudeSDKClient(opts) as client:
        for i in range(turns):
            write_notebook(ws, i)
            t0 = time.perf_counter()
            await client.query(prompt(ws, i))
            result = None
            async for m in client.receive_response():
                if isinstance(m, UserMessage) and isinstance(m.content, list):
                    for b in m.content:
                        if getattr(b, "is_error", False):
                            out["errors"].append(f"turn {i}: tool error {str(getattr(b, 'content', ''))[:200]}")
                elif isinstance(m, SystemMessage) and m.subtype == "compact_boundary":
                    meta = m.data.get("compact_metadata") or {}
                    out["boundaries"].append({"turn": i, "pre_tokens": meta.get("pre_tokens"), "post_tokens": meta.get("post_tokens")})
                elif isinstance(m, ResultMessage):
                    result = m
            out["turn_seconds"].append(time.perf_counter() - t0)
            if result is None or result.is_error or result.result != answer(i):
                out["errors"].append(f"turn {i}: {None if result is None else (result.subtype, (result.result or '')[:200])}")
            else:
                out["session_id"] = result.session_id
            rec.harvest(i)
            if (i + 1) % 100 == 0:
                last = rec.model_rows()[-1]["bytes"] if rec.model_rows() else 0
                print(f"  turn {i + 1:5d}/{turns}  elapsed {time.perf_counter() - t_start:7.1f} s  last request {last:,} B", flush=True)
    out["seconds"] = time.perf_counter() - t_start
    return out


async def resume_claude_code(root: Path, url: str, args: argparse.Namespace, sid: str, k: int, server: Any) -> dict[str, Any]:
    from claude_agent_sdk import ClaudeSDKClient, ResultMessage

    from bench import _claude_code as cc

    opts = cc.options(str(root), url, resume=sid)
    opts.env.update(claude_code_env(args.window))
    server.clear_requests()
    gc.collect()
    t0 = time.time()
    result = None
    async with ClaudeSDKClient(opts) as client:
        await client.query(f"[resume {k}] Where were we?")
        async for m in client.receive_response():
            if isinstance(m, ResultMessage):
                result = m
    reqs = [r for r in server.requests if r.reply_kind != "count_tokens"]
    server.clear_requests()
    ok = result is not None and not result.is_error and result.result == f"resumed {k}"
    if not reqs:
        return {"seconds": float("nan"), "first_request_kind": None, "first_request_bytes": 0, "refused": [], "error": "no request"}
    first = min(reqs, key=lambda r: r.time)
    return {
        "seconds": first.time - t0,
        "first_request_kind": first.reply_kind,
        "first_request_bytes": int(first.headers.get("content-length") or 0),
        "refused": [r.refused for r in reqs if r.refused and CC_KNOWN_REFUSAL not in r.refused],
        "error": None if ok else (None if result is None else (result.subtype, result.result)),
    }


def run_one_claude_code(turns: int, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from agent_magic.testing import FakeAnthropicServer
    from bench import _claude_code as cc

    with tempfile.TemporaryDirectory(prefix="long-session-cc-") as tmp, FakeAnthropicServer() as server:
        root = Path(tmp)
        cc.make_root(root)
        ws = root / "work"
        for i in range(NOTEBOOKS):
            write_notebook(ws, i)
        if not args.fake_summaries:
            server.summary_text = capped_summary
        server.set_default(claude_code_reply(ws))
        server.context_window = args.window
        rec = Recorder(server)
        print(f"N={turns}: driving {turns} Claude Code turns (window {args.window:,}, {claude_code_env(args.window)}) ...", flush=True)
        drove = anyio.run(drive_claude_code, root, server.url, args, turns, rec)
        sid = drove.get("session_id")
        known = [r for r in rec.refused if CC_KNOWN_REFUSAL in r]
        errors = list(drove["errors"]) + [r for r in rec.refused if CC_KNOWN_REFUSAL not in r]
        if sid is None:
            raise SystemExit(f"N={turns}: no Claude Code turn succeeded: {errors[:3]}")
        transcript = cc.project_dir(str(root)) / f"{sid}.jsonl"
        lines = [json.loads(x) for x in transcript.read_text().splitlines() if x.strip()]
        transcript_bytes = transcript.stat().st_size
        boundaries = [e for e in lines if e.get("subtype") == "compact_boundary"]
        model = rec.model_rows()
        last = [r["bytes"] for r in model[-LAST:]]
        summaries = [r["bytes"] for r in rec.rows if r["kind"] == "summary"]
        seconds = drove["turn_seconds"]
        resumes = [anyio.run(resume_claude_code, root, server.url, args, sid, k, server) for k in range(RESUME_RUNS)]
        for r in resumes:
            if r["error"] or r["refused"]:
                errors.append(f"resume: {r['error'] or r['refused']}")
        pre = [b["pre_tokens"] for b in drove["boundaries"] if isinstance(b["pre_tokens"], int)]
    return {
        "turns": turns,
        "ok": not errors,
        "errors": errors[:20],
        "drive_seconds": round(drove["seconds"], 1),
        "model_requests": len(model),
        "request_bytes_last100_max": max(last),
        "request_bytes_last100_mean": round(statistics.fmean(last)),
        "request_bytes_max_all": max(r["bytes"] for r in model),
        "request_bytes_max_by_100_turns": [max((r["bytes"] for r in model if b <= r["turn"] < b + 100), default=0) for b in range(0, turns, 100)],
        "summary_requests": len(summaries),
        "summary_request_bytes_max": max(summaries, default=0),
        "summary_asks_not_recognised": sum(r["asks_summary"] and r["kind"] != "summary" for r in rec.rows),
        "count_tokens_requests": sum(r["kind"] == "count_tokens" for r in rec.rows),
        "refused_display_then_resent": len(known),
        "compactions": len(boundaries),
        "compaction_pre_tokens_min_max": [min(pre), max(pre)] if pre else None,
        "transcript_bytes": transcript_bytes,
        "transcript_lines": len(lines),
        "resume_to_first_request_s": [round(r["seconds"], 4) for r in resumes],
        "resume_to_first_request_median_s": round(statistics.median(r["seconds"] for r in resumes), 4),
        "resume_first_request": {k: resumes[0][k] for k in ("first_request_kind", "first_request_bytes")},
        "turn_seconds_mean": round(statistics.fmean(seconds), 4),
        "turn_seconds_max": round(max(seconds), 3),
        "turn_seconds_mean_by_100_turns": [round(statistics.fmean(seconds[b : b + 100]), 4) for b in range(0, len(seconds), 100)],
    }


def print_table_claude_code(res: dict[str, Any]) -> None:
    rows = [
        ("request bytes, last 100: max", _kb(res["request_bytes_last100_max"])),
        ("request bytes, last 100: mean", _kb(res["request_bytes_last100_mean"])),
        ("request bytes, max over the run", _kb(res["request_bytes_max_all"])),
        ("summary requests answered (max bytes)", f"{res['summary_requests']} ({_kb(res['summary_request_bytes_max'])})"),
        ("compactions (boundary lines)", f"{res['compactions']}, at {res['compaction_pre_tokens_min_max']} tokens"),
        ("summary asks the fake did not recognise", str(res["summary_asks_not_recognised"])),
        ("count_tokens requests", str(res["count_tokens_requests"])),
        ("refused thinking.display, sent again", str(res["refused_display_then_resent"])),
        ("transcript bytes", f"{_kb(res['transcript_bytes'])} ({res['transcript_lines']:,} lines)"),
        ("resume -> first request (median of 3)", f"{res['resume_to_first_request_median_s'] * 1000:.0f} ms"),
        ("resume's first request", f"{res['resume_first_request']['first_request_kind']}, {_kb(res['resume_first_request']['first_request_bytes'])}"),
        ("turn time mean / max", f"{res['turn_seconds_mean'] * 1000:.0f} ms / {res['turn_seconds_max'] * 1000:.0f} ms"),
        ("drive time", f"{res['drive_seconds']:.1f} s"),
        ("checks", "ok" if res["ok"] else "FAILED: " + "; ".join(res["errors"][:3])),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nClaude Code, N = {res['turns']} turns")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(f"  max request bytes per 100 turns: {', '.join(f'{b / 1000:.0f}k' for b in res['request_bytes_max_by_100_turns'])}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", default="500,1000,2000", help="comma-separated session lengths")
    parser.add_argument("--window", type=int, default=None, help="context window in tokens (default 40000; 64000 for server and claude_code)")
    parser.add_argument("--compaction", choices=("client", "server"), default="client")
    parser.add_argument("--system", choices=("ours", "claude_code"), default="ours", help="agent-magic, or Claude Code's bundled CLI on the same fake")
    parser.add_argument("--fake-summaries", action="store_true", help="let the fake's summaries grow uncapped (they nest every earlier one)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "long_session.json")
    args = parser.parse_args(argv)
    if args.window is None:
        args.window = MIN_SERVER_WINDOW if args.compaction == "server" or args.system == "claude_code" else 40_000
    if args.compaction == "server" and args.window < MIN_SERVER_WINDOW:
        parser.error(f"--compaction server needs --window >= {MIN_SERVER_WINDOW:,} (the API compacts from 50,000 tokens)")
    try:
        turns = [int(t) for t in args.turns.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--turns {args.turns!r} is not a list of numbers")

    from agent_magic import __version__

    t0 = time.perf_counter()
    results = []
    if args.system == "claude_code":
        from bench import _claude_code as cc

        if not cc.available():
            parser.error("--system claude_code needs claude-agent-sdk (pip install claude-agent-sdk)")
        if args.compaction != "client":
            parser.error("Claude Code compacts by itself (client-side); leave --compaction out")
        for n in turns:
            res = run_one_claude_code(n, args)
            print_table_claude_code(res)
            results.append(res)
    else:
        warm_up(args)
        for n in turns:
            res = run_one(n, args)
            print_table(res)
            results.append(res)
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")

    if args.json:
        data: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
        key = ("claude_code" if args.system == "claude_code" else args.compaction) + ("-fake-summaries" if args.fake_summaries else "")
        data.setdefault("runs", {})[key] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "agent_magic": __version__,
            **({"claude_code": cc.versions(), "claude_code_env": claude_code_env(args.window)} if args.system == "claude_code" else {}),
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            },
            "window": args.window,
            "compaction": args.compaction,
            "summaries": "the fake's own, uncapped" if args.fake_summaries else f"the fake's own, capped at {SUMMARY_CAP:,} characters",
            "total_seconds": round(total, 1),
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
