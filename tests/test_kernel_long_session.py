"""A notebook's session driven past its context window in real kernels (issue #15).

``%%agent`` cells run through nbclient against the fake Messages API with a
small window (enforced with the API's own 400). No cell fails, no request
passes the window, each compaction is one line in its cell, the session
continues across a kernel restart, and after many compactions a rewind to a
turn before the first one restores files and cells exactly while a fork at
that turn holds the whole history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

import agent_magic as am
from agent_magic.notebook._display import TURN_MIME
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer

from .conftest import tree_snapshot
from .test_long_sessions import _script, _workspace

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WINDOW = 20_000


def _notebook(sources: list[str]) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def _execute(nb: Any, workspace: Path, env: dict[str, str]) -> Any:
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(workspace)}}).execute(env=env)
    return nb


def _cell_text(cell: Any) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        else:
            data = o.get("data", {})
            parts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
    return "\n".join(parts)


def _turn(cell: Any) -> dict[str, Any]:
    return next(o["data"][TURN_MIME] for o in cell["outputs"] if TURN_MIME in o.get("data", {}))


def test_agent_cells_drive_one_session_past_three_windows(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    turns = 36
    _workspace(workspace, turns)
    _script(fake_api, turns)
    fake_api.context_window = WINDOW
    env = {
        **fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1",
        "AGENT_MAGIC_CONTEXT_WINDOW": str(WINDOW), "AGENT_MAGIC_COMPACTION": "client",
        "JPY_SESSION_NAME": str(workspace / "flow.ipynb"),
    }
    cell = "%%agent --permission-mode acceptEdits\nstep {i}: look at data{i}.csv"

    first = _execute(_notebook(["%load_ext agent_magic", cell.format(i=0)]), workspace, env)
    after_turn_1 = tree_snapshot(workspace)
    # Half the turns, then a new kernel (as after a restart) for the rest.
    half = turns // 2
    part1 = _execute(_notebook(["%load_ext agent_magic"] + [cell.format(i=i) for i in range(1, half)]), workspace, env)
    part2 = _execute(_notebook(["%load_ext agent_magic"] + [cell.format(i=i) for i in range(half, turns)]), workspace, env)
    cells = [first.cells[1], *part1.cells[1:], *part2.cells[1:]]

    provs = [_turn(c) for c in cells]
    sid = provs[0]["session_id"]
    assert {p["session_id"] for p in provs} == {sid}
    assert [p["status"] for p in provs] == ["success"] * turns
    assert [p["turn"] for p in provs] == list(range(1, turns + 1))
    assert [r.refused for r in fake_api.requests if r.refused] == []  # no request passed the window

    store = SessionStore.at(home)
    entries = store.read_entries(sid)
    boundaries = [e for e in entries if e.get("subtype") == "compact_boundary"]
    sent_chars = sum(len(json.dumps(e.get("message"))) for e in entries if e.get("type") in ("user", "assistant"))
    assert sent_chars / 4 > 3 * WINDOW and len(boundaries) >= 3
    # Each compaction is one line in the cell where it happened.
    lines = [line for c in cells for line in _cell_text(c).splitlines() if "Compacted the conversation" in line]
    assert len(lines) == len(boundaries)
    first_b = next(i for i, e in enumerate(entries) if e.get("subtype") == "compact_boundary")
    assert provs[1]["checkpoint_id"] in {e.get("uuid") for e in entries[:first_b]}

    # Rewind to turn 2 (before the first compaction): files and cells exactly as after turn 1.
    # Then fork at turn 2's start: the fork holds the whole history up to there.
    part3 = _execute(
        _notebook(["%load_ext agent_magic", "%agent rewind --turn 2", "%agent fork --turn 1"]), workspace, env
    )
    assert tree_snapshot(workspace) == after_turn_1
    nb = nbformat.read(workspace / "analysis.ipynb", as_version=4)
    assert [c.id for c in nb.cells] == ["c0", "c1", "c2"]
    assert "Forked" in _cell_text(part3.cells[2])
    fork = am.current_session(str(workspace / "flow.ipynb"), home=home)
    assert fork is not None and fork != sid
    forked = am.get_session_messages(fork, home=home)
    full = [m for m in am.get_session_messages(sid, home=home) if not m.is_compact_boundary]
    assert [m.uuid for m in forked] == [m.uuid for m in full[: len(forked)]]
    assert sum(m.is_prompt for m in forked) == 1 and not any(m.is_compact_boundary for m in forked)
