"""Reliability figures for the README: kills survived, fuzz cases run, bad inputs tried, data lost.

Runs the core loops of the crash, concurrency and bad-input suites
(``tests/reliability/``) outside pytest and prints one line per suite and a
table; the exit code is 1 if any data was lost or any case failed::

    python bench/reliability.py                       # CI size: 200 kills, a few hundred fuzz cases
    python bench/reliability.py --kills 5000 --fuzz 3000 --json test-artifacts/reliability.json

Everything runs against the fake Messages API in temporary directories; no key
and no network are needed (Linux: the crash suite reads ``/proc``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _isolate(tmp: Path) -> None:
    import logging

    logging.getLogger("anthropic").setLevel(logging.ERROR)  # "ANTHROPIC_API_KEY takes precedence..." on every client
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                "AGENT_MAGIC_MODEL", "AGENT_MAGIC_PROVIDER", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AGENT_MAGIC_CRASH_AT"):
        os.environ.pop(var, None)
    os.environ.update(
        AGENT_MAGIC_HOME=str(tmp / "home"), AGENT_MAGIC_MAX_RETRIES="2", IPYTHONDIR=str(tmp / "ipython"),
        ANTHROPIC_CONFIG_DIR=str(tmp / "anthropic-config"), JPY_SESSION_NAME="",
    )


def crash_suite(tmp: Path, kills: int, jobs: int, seed: int | None) -> dict[str, Any]:
    from tests.reliability.crash import run_campaign

    report = run_campaign(tmp / "crash", kills=kills, jobs=jobs, seed=seed)
    print(report.summary(), flush=True)
    return {**report.to_json(), "lost": report.data_lost}


def concurrency_suite(tmp: Path) -> dict[str, Any]:
    from tests.reliability.concurrency import run_all

    report = run_all(tmp / "concurrency")
    print(report.summary(), flush=True)
    return {"processes": report.processes, "turns": report.turns, "locked_out": report.locked_out,
            "waited": report.waited, "reads": report.reads, "sessions_created": report.sessions_created,
            "failures": report.failures, "lost": len(report.failures), "seconds": round(report.seconds, 1)}


def fuzz_suite(tmp: Path, cases: int, seed: int) -> dict[str, Any]:
    """Random magic argument strings and transcript damage, then every table of bad inputs."""
    import shutil
    import warnings

    from agent_magic import _bundle, export_session
    from agent_magic.store.local import SessionStore
    from agent_magic.testing import FakeAnthropicServer, text
    from tests.reliability import fuzz

    t0 = time.monotonic()
    rng = random.Random(seed)
    failures: list[str] = []
    counts = {"magic_lines": 0, "magic_cells": 0, "transcript_damage": 0, "magic_table": 0, "tool_inputs": 0,
              "notebooks": 0, "api_replies": 0, "bundles": 0}
    work = tmp / "fuzz"
    (work / "project").mkdir(parents=True)
    with FakeAnthropicServer() as server, server.environ():
        server.set_default(text("ok"))
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with fuzz.magic_shell(work / "project") as shell:
                for line in fuzz.NASTY_LINES:
                    _magic_case(failures, shell, line, None)
                    counts["magic_table"] += 1
                for line in fuzz.NASTY_CELL_LINES:
                    _magic_case(failures, shell, line, "hello")
                    counts["magic_table"] += 1
                fuzz.run_magic(shell, "--permission-mode acceptEdits", "make a session")
                from agent_magic import list_checkpoints, list_sessions

                sid0 = list_sessions()[0].session_id
                cp0 = list_checkpoints(sid0)[0].checkpoint_id
                for line in fuzz.NASTY_LINES_WITH_A_SESSION:
                    if not line.startswith("delete"):
                        _magic_case(failures, shell, line.format(sid=sid0, sid4=sid0[:4], cp=cp0[:8]), None)
                        counts["magic_table"] += 1
                for i in range(cases):
                    cell = i % 4 == 3
                    line = fuzz.random_argument_line(rng, fuzz.CELL_WORDS if cell else fuzz.LINE_WORDS)
                    try:
                        fuzz.run_magic(shell, line, "hello" if cell else None)
                    except Exception as e:
                        failures.append(f"{'%%' if cell else '%'}agent {line!r}: {type(e).__name__}: {e}")
                    counts["magic_cells" if cell else "magic_lines"] += 1
        server.reset()

        home, cwd = work / "sample" / "store", work / "sample" / "project"
        cwd.mkdir(parents=True)
        sid = fuzz.make_session(home, cwd, server)
        bundle = export_session(sid, work / "good.zip", home=home)
        n_lines = len((home / "sessions" / sid / "transcript.jsonl").read_bytes().splitlines())
        for _ in range(cases):
            ops, cut = fuzz.random_ops(rng, n_lines)
            try:
                fuzz.check_corrupted_session(home, work / "damage", sid, cwd, server, ops, cut)
            except Exception as e:
                failures.append(f"transcript damage {ops} cut={cut}: {type(e).__name__}: {e}")
            counts["transcript_damage"] += 1

        for name, case in fuzz.TOOL_CASES.items():
            _run_case(failures, f"tool input {name}", case, work / "tools" / name)
            counts["tool_inputs"] += 1
        for name, case in fuzz.NOTEBOOK_CASES.items():
            _run_case(failures, f"notebook {name}", case, work / "notebooks" / name)
            counts["notebooks"] += 1
        for name in fuzz.API_CASES:
            copy = work / "api" / name
            shutil.copytree(home, copy)
            _run_case(failures, f"API reply {name}", lambda _p, c=copy, n=name: fuzz.check_api_case(n, c, cwd, server, sid), copy)
            counts["api_replies"] += 1
        saved = _bundle.MAX_ENTRY_BYTES
        for name in fuzz.BUNDLE_CASES:
            _bundle.MAX_ENTRY_BYTES = 16 << 20 if name == "blob-zip-bomb" else saved
            (work / "bundles").mkdir(exist_ok=True)
            _run_case(failures, f"bundle {name}", lambda _p, n=name: fuzz.check_bundle_case(n, bundle, home, work / "bundles"), work)
            counts["bundles"] += 1
        _bundle.MAX_ENTRY_BYTES = saved
        SessionStore.forget_instances()
    fuzz_cases = counts["magic_lines"] + counts["magic_cells"] + counts["transcript_damage"]
    tables = counts["magic_table"] + counts["tool_inputs"] + counts["notebooks"] + counts["api_replies"] + counts["bundles"]
    print(f"fuzz: {fuzz_cases} fuzz cases ({counts['magic_lines']} %agent and {counts['magic_cells']} %%agent "
          f"argument strings, {counts['transcript_damage']} damaged transcripts), {tables} bad inputs from tables "
          f"({counts['magic_table']} magic argument strings, {counts['tool_inputs']} tool inputs, {counts['notebooks']} notebooks, {counts['api_replies']} API replies, "
          f"{counts['bundles']} bundles); failures: {len(failures)}; {time.monotonic() - t0:.1f}s", flush=True)
    for f in failures[:20]:
        print("  FAIL", f[:500])
    return {**counts, "fuzz_cases": fuzz_cases, "bad_inputs": tables, "failures": failures[:50], "lost": len(failures),
            "seconds": round(time.monotonic() - t0, 1)}


def _magic_case(failures: list[str], shell: Any, line: str, cell: str | None) -> None:
    from tests.reliability import fuzz

    try:
        fuzz.run_magic(shell, line, cell)
    except Exception as e:
        failures.append(f"{'%%' if cell is not None else '%'}agent {line!r}: {type(e).__name__}: {e}")


def _run_case(failures: list[str], label: str, case: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    try:
        case(path)
    except Exception as e:
        failures.append(f"{label}: {type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs of the crash suite (default 200)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="crash episodes run in parallel")
    p.add_argument("--fuzz", type=int, default=200, help="random magic strings, and damaged transcripts (each)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", choices=["crash", "concurrency", "fuzz"], action="append", help="run only these suites")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 30)
    suites = args.only or ["crash", "concurrency", "fuzz"]
    out: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory(prefix="agent-magic-reliability-") as d:
        tmp = Path(d)
        _isolate(tmp)
        if "crash" in suites:
            out["crash"] = crash_suite(tmp, args.kills, args.jobs, seed)
        if "concurrency" in suites:
            out["concurrency"] = concurrency_suite(tmp)
        if "fuzz" in suites:
            out["fuzz"] = fuzz_suite(tmp, args.fuzz, seed)
    lost = sum(s.get("lost", 0) for s in out.values() if isinstance(s, dict))
    rows = [
        ("kills survived", out.get("crash", {}).get("kills", "-")),
        ("rewinds checked after kills", out.get("crash", {}).get("rewinds_checked", "-")),
        ("concurrent processes", out.get("concurrency", {}).get("processes", "-")),
        ("fuzz cases run", out.get("fuzz", {}).get("fuzz_cases", "-")),
        ("bad inputs tried", out.get("fuzz", {}).get("bad_inputs", "-")),
        ("data lost", lost),
    ]
    print()
    print("| reliability | count |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    out["data_lost"] = lost
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
