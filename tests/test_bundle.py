"""Export a session and import it elsewhere: its checkpoints stay rewindable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

import agent_magic as am
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .conftest import result_of, run_query, tree_snapshot


def _move_to_fresh_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workspace: Path, bundle: Path) -> Path:
    monkeypatch.setenv("AGENT_MAGIC_HOME", str(tmp_path / "home2"))
    SessionStore.forget_instances()
    moved = tmp_path / "moved"
    shutil.copytree(workspace, moved)
    am.import_session(bundle, cwd=moved)
    return moved


def test_rewinds_done_before_export_can_be_undone_after_import(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.add(
        tool_use("Write", {"file_path": "report.md", "content": "v1\n"}),
        text("done"),
        tool_use("Bash", {"command": "mkdir out && echo x > out/y.txt && echo v2 > report.md"}),
        text("done"),
    )
    before = tree_snapshot(workspace)
    sid = result_of(run_query("first", cwd=workspace, permission_mode="bypassPermissions")).session_id
    after_first = tree_snapshot(workspace)
    result_of(run_query("second", resume=sid, permission_mode="bypassPermissions"))
    cps = am.list_checkpoints(sid)
    assert am.rewind_files(sid, cps[0].checkpoint_id).ok  # everything undone, in the original store
    assert tree_snapshot(workspace) == before
    bundle = am.export_session(sid, tmp_path / "s.zip")

    moved = _move_to_fresh_store(monkeypatch, tmp_path, workspace, bundle)
    assert [c.checkpoint_id for c in am.list_checkpoints(sid)] == [c.checkpoint_id for c in cps]
    # going forward again needs what the first rewind overwrote: it came with the bundle
    result = am.rewind_files(sid, cps[1].checkpoint_id)
    assert result.ok, (result.conflicts, result.unrestorable)
    assert tree_snapshot(moved) == after_first
    assert am.rewind_files(sid, cps[0].checkpoint_id).ok
    assert tree_snapshot(moved) == before
    fake_api.add(text("resumed here"))
    assert result_of(run_query("third", resume=sid)).subtype == "success"


def test_whole_notebook_fallback_works_after_import(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x = {i}") for i in range(5)]
    nbformat.write(nb, workspace / "nb.ipynb")
    original = [c.source for c in nbformat.read(workspace / "nb.ipynb", as_version=4).cells]
    cell_id = nbformat.read(workspace / "nb.ipynb", as_version=4).cells[2].id
    fake_api.add(
        tool_use("Read", {"file_path": "nb.ipynb"}),
        tool_use("NotebookEdit", {"notebook_path": "nb.ipynb", "cell_id": cell_id, "new_source": "x = 'agent'"}),
        text("done"),
    )
    sid = result_of(run_query("edit", cwd=workspace, permission_mode="acceptEdits")).session_id
    bundle = am.export_session(sid, tmp_path / "s.zip")
    moved = _move_to_fresh_store(monkeypatch, tmp_path, workspace, bundle)
    # an old front end saved the notebook with new cell ids: cells can't be matched by id any more
    raw = json.loads((moved / "nb.ipynb").read_text())
    for i, c in enumerate(raw["cells"]):
        c["id"] = f"regenerated-{i}"
    (moved / "nb.ipynb").write_text(json.dumps(raw, indent=1))
    result = am.rewind_files(sid, am.list_checkpoints(sid)[0].checkpoint_id)
    assert result.ok, (result.conflicts, result.unrestorable)
    assert any("whole notebook" in n for n in result.notes)
    assert [c.source for c in nbformat.read(moved / "nb.ipynb", as_version=4).cells] == original
