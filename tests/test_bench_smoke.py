"""Smoke test of the benchmark harness: ``python -m bench --scale tiny --runs 1`` reports every workload.

No timing is asserted; only that both systems (Claude Code when
``claude-agent-sdk`` is installed) ran every workload without an error and the
table and the JSON were written.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_bench_reports_every_workload(tmp_path: Path) -> None:
    from bench._workloads import WORKLOADS

    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "tiny", "--runs", "1", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())

    assert doc["scale"] == "tiny"
    assert doc["runs"] == 1
    assert {"cpu", "cores", "python", "agent_magic"} <= set(doc["machine"])
    assert doc["date"]
    assert {r["workload"] for r in doc["results"]} == set(WORKLOADS)

    cc_installed = importlib.util.find_spec("claude_agent_sdk") is not None
    assert ("claude_code" in doc["systems"]) == cc_installed
    table = proc.stdout
    assert "agent-magic" in table and "Claude Code" in table
    for row in doc["results"]:
        assert row["label"] in table, row["label"]
        ours, theirs = row["cells"]["agent_magic"], row["cells"]["claude_code"]
        assert not ours.startswith("error"), (row["label"], ours)
        assert not theirs.startswith("error"), (row["label"], theirs)
        if row["workload"] == "magic":
            continue
        assert row["agent_magic"]["median"] is not None, (row["label"], ours)
        if cc_installed:
            assert row["claude_code"]["median"] is not None, (row["label"], theirs)
        else:
            assert theirs == "not installed"


def test_extend_bench_reports_every_part(tmp_path: Path) -> None:
    """``bench/extend.py`` runs against real MCP servers and the fake API, and writes every figure."""
    out = tmp_path / "extend.json"
    proc = subprocess.run(
        [sys.executable, "bench/extend.py", "--calls", "3", "--runs", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert set(doc["per_call"]) == {"builtin", "sdk", "stdio", "http"}
    assert all(row["ms_per_call"] > 0 for row in doc["per_call"].values())
    assert {"stdio_start_ms", "http_start_ms", "stdio_close_ms"} == set(doc["server_start"])
    assert doc["subagent"]["subagent_turn_ms"] > 0 and doc["memory_structured"]["memory_files"] == 2
    assert "ms/call" in proc.stdout
