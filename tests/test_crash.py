"""Crash consistency: SIGKILL a process running agent turns anywhere; nothing stored is lost.

The harness is ``tests/reliability/crash.py`` (its docstring lists the checks).
``test_random_kills`` is the campaign: ``AGENT_MAGIC_CRASH_KILLS`` kills (default
200, about a minute and a half on two cores), its counts printed (``-s``) and
written to ``test-artifacts/reliability-crash.json``. The long run::

    AGENT_MAGIC_CRASH_KILLS=5000 python -m pytest tests/test_crash.py -s -k random

The other tests kill at each crash point deterministically.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_magic.testing import FakeAnthropicServer

from .conftest import result_of, run_query
from .reliability.crash import PHASES, CrashReport, run_campaign, run_plans

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not Path("/proc").is_dir(), reason="SIGKILL and /proc (Linux)"
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _fail_on(report: CrashReport) -> None:
    assert not report.failures, "\n".join(report.failures[:20])


@pytest.mark.slow
def test_random_kills(tmp_path: Path) -> None:
    report = run_campaign(tmp_path)
    print("\n" + report.summary())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "reliability-crash.json").write_text(json.dumps(report.to_json(), indent=1))
    _fail_on(report)
    wanted = int(os.environ.get("AGENT_MAGIC_CRASH_KILLS", "200"))
    assert report.kills >= wanted
    for phase in ("stream", "tool", "backup", "transcript"):
        assert report.by_phase[phase] > 0, phase
    assert report.rewinds_checked > report.kills
    assert report.resumes >= report.kills  # every kill was followed by a worker resuming the session


# Each crash point, in a turn that reaches it: (plan, script).
POINTS = [
    ("stream.event:5", ["write", "edit"]),
    ("timed-stream", ["write", "edit"]),
    ("tool.start:2", ["write", "edit"]),
    ("file.tmp:1", ["write", "edit"]),
    ("file.tmp:2", ["write", "edit"]),
    ("file.replaced:1", ["edit", "write"]),
    ("file.tmp:1", ["notebook", "mixed"]),
    ("file.replaced:2", ["notebook", "mixed"]),
    ("bash.spawned:1", ["bash", "bash"]),
    ("bash.spawned:1", ["mixed", "bash"]),
    ("blob:1", ["write", "notebook"]),
    ("blob.tmp:2", ["notebook", "write"]),
    ("append:checkpoints:2", ["write", "bash"]),
    ("torn:checkpoints:3", ["notebook", "edit"]),
    ("append:transcript:3", ["edit", "write"]),
    ("torn:transcript:1", ["write", "edit"]),
    ("torn:transcript:4", ["mixed", "edit"]),
]


@pytest.mark.parametrize(("plan", "script"), POINTS, ids=[f"{p}-{'+'.join(s)}" for p, s in POINTS])
def test_kill_at(plan: str, script: list[str], tmp_path: Path) -> None:
    # A turn is killed at the point, the session resumes and finishes the script; the checks
    # run after the kill and at the end, and the turn after the kill was killed too for good
    # measure at the same point.
    report = run_plans(tmp_path, script, [plan, plan])
    _fail_on(report)
    label = plan.rsplit(":", 1)[0] if ":" in plan else plan
    assert report.by_label[label] >= 1, f"the worker never reached {plan}"
    assert report.turns_completed == len(script)
    assert label in {lbl for labels in PHASES.values() for lbl in labels}


def test_two_turns_of_notebook_edits_killed_between_record_and_write_rewind_cleanly(tmp_path: Path) -> None:
    # The second turn dies after the NotebookEdit of its first cell was recorded, before the write
    # (file.tmp); the third turn then edits the same cell. Rewinds after the third are exact.
    # file.tmp:4 is the second turn's first NotebookEdit (the first turn writes three times).
    report = run_plans(tmp_path, ["notebook", "notebook", "notebook"], ["file.tmp:4"])
    _fail_on(report)
    assert report.kills == 1


def test_rewind_after_a_notebook_edit_killed_before_its_write(tmp_path: Path) -> None:
    """Killed between a NotebookEdit's record and its write: the untouched cell is no conflict."""
    report = run_plans(tmp_path, ["notebook", "notebook"], ["file.tmp:4"])
    _fail_on(report)
    # The kill happened (an unreachable point would leave nothing to check), where planned.
    assert report.kills == 1
    assert report.by_label["file.tmp"] == 1
    assert report.turns_completed == 2
    assert report.rewind_conflicts == 0


def test_crash_point_kills_on_the_nth_hit_only() -> None:
    code = (
        "from agent_magic.store.jsonl import crash_point\n"
        "crash_point('x'); crash_point('y'); print('alive', flush=True); crash_point('x')\n"
        "print('not reached')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "AGENT_MAGIC_CRASH_AT": "x:2"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == -9
    assert proc.stdout == "alive\n"


def test_crash_points_are_inert_when_unset() -> None:
    from agent_magic.store import jsonl as _store

    assert _store._crash_at is None
    _store.crash_point("append:transcript")  # returns at once
    assert _store._crash_hits == {}


def test_the_next_turn_sweeps_temp_files_a_killed_write_left(tmp_path: Path) -> None:
    """Killed between writing a Write's temp file and renaming it: the resumed session removes it."""
    report = run_plans(tmp_path, ["write", "write", "write"], ["file.tmp:1"])
    _fail_on(report)
    assert report.leftovers >= 1, "the kill should have left a temp file to sweep"
    left = [p for p in (tmp_path / "ep0" / "ws").rglob("*.tmp")]
    assert left == []


def test_sweep_removes_only_temp_files_of_the_last_turn(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    from agent_magic.testing import text, tool_use

    (workspace / "other.txt").write_text("x\n")
    fake_api.add(tool_use("Write", {"file_path": str(workspace / "notes.txt"), "content": "a\n"}), text("ok"))
    res = result_of(run_query("write notes", cwd=str(workspace), permission_mode="acceptEdits"))
    stray = workspace / ".notes.txt.0123abcd.tmp"
    keep = [workspace / ".notes.txt.backup.tmp", workspace / ".other.txt.0123abcd.tmp", workspace / ".notes.txt.0123ABCD.tmp"]
    for p in [stray, *keep]:
        p.write_text("partial")
    fake_api.add(text("again"))
    result_of(run_query("hello", cwd=str(workspace), resume=res.session_id))
    assert not stray.exists()
    assert all(p.exists() for p in keep)
    assert (workspace / "notes.txt").read_text() == "a\n"
