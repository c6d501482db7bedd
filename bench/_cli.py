"""Command line: run the workloads, print the table, write ``bench/results/latest.json``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import _claude_code as cc
from . import _ours as ours
from ._script import start_server
from ._stats import ratio, table
from ._workloads import CC, OURS, SCALES, WORKLOADS, Bench, Row

RESULTS = Path(__file__).resolve().parent / "results"

#: Variables that could point either system at a real account, a real store or another provider.
_SCRUB_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "CLAUDECODE", "AGENT_MAGIC_", "AWS_BEARER_TOKEN_BEDROCK", "OPENAI_")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the same scripted agent work on agent-magic and on Claude Code (the CLI bundled "
        "in claude-agent-sdk), offline against the fake Messages API server, and compare.",
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="full", help="session and data sizes (tiny: a smoke run under a minute)")
    p.add_argument("--runs", type=int, default=None, help="runs per timing (default: 1 tiny, 3 small, 5 full)")
    p.add_argument("--only", default=None, help=f"comma-separated workloads: {', '.join(WORKLOADS)}")
    p.add_argument("--systems", default=f"{OURS},{CC}", help="comma-separated: ours, claude_code")
    p.add_argument("--json", dest="json_path", default=str(RESULTS / "latest.json"), help="where to write the results")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (sessions, notebooks) for inspection")
    return p


def _scrub_environment() -> None:
    for k in list(os.environ):
        if k.startswith(_SCRUB_PREFIXES):
            del os.environ[k]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "agent_magic": ours.version(),
    }
    if cc.available():
        info.update(cc.versions())
    return info


def _ratio_cell(row: Row) -> str:
    r = ratio(row.ours, row.claude_code)
    if r is None:
        return "-"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = SCALES[args.scale]
    runs = args.runs if args.runs is not None else scale.runs
    if runs < 1:
        _parser().error("--runs must be at least 1")
    only = [w.strip() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [w for w in only if w not in WORKLOADS]
    if unknown:
        _parser().error(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if CC in systems and not cc.available():
        systems.remove(CC)

    _scrub_environment()
    tmp = Path(tempfile.mkdtemp(prefix="agent-magic-bench-"))
    # Guards: anything that falls back to a default store lands here, never in ~/.claude or the user's sessions.
    os.environ["CLAUDE_CONFIG_DIR"] = str(tmp / "guard-claude-config")
    os.environ["AGENT_MAGIC_HOME"] = str(tmp / "guard-agent-magic-home")
    os.environ["ANTHROPIC_CONFIG_DIR"] = str(tmp / "guard-anthropic-config")
    server = start_server()
    os.environ["ANTHROPIC_BASE_URL"] = server.url
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-fake"

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    bench = Bench(scale, runs, tmp, server.url, server, systems, log)
    rows: list[Row] = []
    try:
        for name in only:
            log(f"[{time.perf_counter() - started:6.1f}s] {name}")
            rows += WORKLOADS[name](bench)
    finally:
        server.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started

    header = ("workload", "agent-magic", "Claude Code", "ratio (am/cc)")
    print(f"\nscale {scale.name}, {runs} run(s) per timing; median (min-max); {elapsed:.0f} s in all\n")
    print(table([(r.label, r.ours.cell(), r.claude_code.cell(), _ratio_cell(r)) for r in rows], header))

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "scale": scale.name,
        "runs": runs,
        "systems": systems,
        "elapsed_seconds": round(elapsed, 1),
        "results": [
            {
                "workload": r.workload,
                "label": r.label,
                "agent_magic": r.ours.to_json(),
                "claude_code": r.claude_code.to_json(),
                "ratio": ratio(r.ours, r.claude_code),
                "cells": {"agent_magic": r.ours.cell(), "claude_code": r.claude_code.cell()},
            }
            for r in rows
        ],
    }
    out = Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0
