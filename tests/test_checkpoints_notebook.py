"""Checkpoints of notebook cells: cell-level restore, conflicts per cell, the whole-notebook fallback, storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import agent_magic as am
from agent_magic.store.blobs import BlobStore
from agent_magic.testing import FakeAnthropicServer, Reply, text, tool_use, tool_uses

from .conftest import tree_snapshot
from .test_checkpoints import PNG, Session, Turn, make_notebook


def cells_of(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_bytes())["cells"]  # type: ignore[no-any-return]


def by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {c.get("id"): c for c in cells_of(path)}


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


def edit(nb: Path, cell_id: str | None, new_source: str, **kw: Any) -> tuple[str, dict[str, Any]]:
    return ("NotebookEdit", {"notebook_path": str(nb), "cell_id": cell_id, "new_source": new_source, **kw})


def edits_turn(prompt: str, nb: Path, *calls: tuple[str, dict[str, Any]], read: bool = True) -> Turn:
    replies: list[Reply] = [tool_use("Read", {"file_path": str(nb)})] if read else []
    replies += [tool_uses(list(calls)), text("Done.")]
    return (prompt, replies)


def blob_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def nb(workspace: Path) -> Path:
    path = workspace / "analysis.ipynb"
    make_notebook(path)
    return path


def test_outputs_metadata_attachments_and_positions_come_back(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    s = Session(fake_api, workspace)
    s.run(
        [
            edits_turn(
                "rewrite",
                nb,
                edit(nb, "intro", "# Report", cell_type="markdown"),
                edit(nb, "plot", "", edit_mode="delete"),
                edit(nb, "load", "x = 1", cell_type="code"),
                edit(nb, None, "# top", cell_type="markdown", edit_mode="insert"),
                edit(nb, "outro", "print('bye')", cell_type="code", edit_mode="insert"),
            ),
            edits_turn("convert", nb, edit(nb, "calc", "1 + 1 is two", cell_type="markdown"), read=False),
        ]
    )
    assert s.session_id
    after = by_id(nb)
    assert "plot" not in after and after["load"]["outputs"] == [] and after["calc"]["cell_type"] == "markdown"
    res = am.rewind_files(s.session_id, s.checkpoints[1])
    assert res.ok and tree_snapshot(workspace) == s.snapshots[1]
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok and tree_snapshot(workspace) == s.snapshots[0]
    cells = by_id(nb)
    assert cells["plot"]["outputs"][0]["data"]["image/png"] == PNG and cells["plot"]["metadata"] == {"tags": ["figure"]}
    assert cells["intro"]["attachments"] == {"logo.png": {"image/png": PNG}}
    assert [c["id"] for c in cells_of(nb)] == ["intro", "load", "plot", "calc", "outro"]
    change = res.changes[0]
    assert change.action == "cells" and {c.action for c in change.cells} == {"restore", "reinsert", "remove"}


def test_one_cell_edited_again_and_again(fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path) -> None:
    s = Session(fake_api, workspace)
    s.run(
        [
            edits_turn("1", nb, edit(nb, "plot", "v1"), edit(nb, "plot", "v2"), edit(nb, "calc", "c1")),
            edits_turn("2", nb, edit(nb, "plot", "v3"), edit(nb, "load", "new", cell_type="code", edit_mode="insert"), read=False),
            edits_turn("3", nb, edit(nb, "plot", "v4"), edit(nb, "calc", "c2"), edit(nb, "plot", "v5"), read=False),
        ]
    )
    assert s.session_id
    dry = am.rewind_files(s.session_id, s.checkpoints[0], dry_run=True)
    plot = next(c for c in dry.changes[0].cells if c.cell_id == "plot")
    assert "-v5\n" in plot.diff.replace("\\ No newline at end of file\n", "") and "+plot()" in plot.diff
    assert am.rewind_files(s.session_id, s.checkpoints[0]).ok
    assert tree_snapshot(workspace) == s.snapshots[0]
    for k in (2, 1):  # undo the rewind, then step back again
        assert am.rewind_files(s.session_id, s.checkpoints[k]).ok
        assert tree_snapshot(workspace) == s.snapshots[k]


def test_person_edits_a_cell_the_agent_changed_and_one_it_did_not(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    s = Session(fake_api, workspace)
    s.run(
        [
            edits_turn("two edits", nb, edit(nb, "load", "import numpy"), edit(nb, "plot", "plot(2)")),
            edits_turn("one more", nb, edit(nb, "calc", "2 + 2"), read=False),
        ]
    )
    assert s.session_id
    # The person edits "load" (changed by the agent) and "outro" (never touched), and runs
    # "calc" (new outputs are not an edit), in their editor.
    doc = nbformat.read(nb, 4)
    for c in doc.cells:
        if c.id == "load":
            c.source = "import numpy as np  # mine"
        elif c.id == "outro":
            c.source = "The end, by me."
        elif c.id == "calc":
            c.execution_count = 9
            c.outputs = [new_output("execute_result", data={"text/plain": "4"}, execution_count=9)]
    nbformat.write(doc, nb)

    dry = am.rewind_files(s.session_id, s.checkpoints[0], dry_run=True)
    assert [(c.path, c.cell_id) for c in dry.conflicts] == [("analysis.ipynb", "load")]
    assert "edited by someone else" in dry.conflicts[0].reason
    assert sorted(c.cell_id for c in dry.changes[0].cells) == ["calc", "plot"]

    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert [c.cell_id for c in res.conflicts] == ["load"] and not res.ok
    cells = by_id(nb)
    assert source(cells["load"]) == "import numpy as np  # mine"  # conflict: left alone
    assert source(cells["outro"]) == "The end, by me."  # untouched by the agent: survives
    assert source(cells["plot"]) == "plot()" and cells["plot"]["outputs"][0]["data"]["image/png"] == PNG
    assert source(cells["calc"]) == "1 + 1" and cells["calc"]["outputs"][0]["data"]["text/plain"] == ["2"]

    res = am.rewind_files(s.session_id, s.checkpoints[0], force=True)
    assert res.ok
    cells = by_id(nb)
    assert source(cells["load"]) == "import math\nprint(math.pi)" and source(cells["outro"]) == "The end, by me."


def test_cells_deleted_or_readded_by_the_person(fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path) -> None:
    s = Session(fake_api, workspace)
    s.run([edits_turn("edit", nb, edit(nb, "load", "x"), edit(nb, "calc", "new", cell_type="code", edit_mode="insert"))])
    assert s.session_id
    doc = json.loads(nb.read_bytes())
    new_id = next(c["id"] for c in doc["cells"] if source(c) == "new")
    doc["cells"] = [c for c in doc["cells"] if c["id"] not in ("load", new_id)]
    nb.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    # The inserted cell is gone already (fine); the replaced one was deleted by the person (conflict).
    assert [(c.cell_id, c.reason) for c in res.conflicts] == [("load", "the cell was deleted by someone else")]
    res = am.rewind_files(s.session_id, s.checkpoints[0], force=True)
    assert res.ok and [c["id"] for c in cells_of(nb)] == ["intro", "load", "plot", "calc", "outro"]
    assert tree_snapshot(workspace) == s.snapshots[0]


def test_deleted_notebook_is_a_conflict_and_force_restores_it(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    s = Session(fake_api, workspace)
    s.run([edits_turn("edit", nb, edit(nb, "load", "a = 1"), edit(nb, "calc", "", edit_mode="delete"))])
    assert s.session_id
    nb.unlink()
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert [c.reason for c in res.conflicts] == ["the notebook was deleted by someone else after the agent's last change"]
    assert not nb.exists()
    res = am.rewind_files(s.session_id, s.checkpoints[0], force=True)
    assert res.ok and res.changes[0].action == "create" and "deleted" in (res.changes[0].note or "")
    assert tree_snapshot(workspace) == s.snapshots[0]


def two_turns_then_new_ids(api: FakeAnthropicServer, workspace: Path, nb: Path, extra_source: str | None = None) -> Session:
    """Two turns of cell edits, then an editor regenerates every cell id (and maybe edits a cell)."""
    s = Session(api, workspace)
    s.run(
        [
            edits_turn("one", nb, edit(nb, "load", "a = 1")),
            edits_turn("two", nb, edit(nb, "plot", "b = 2"), edit(nb, "calc", "", edit_mode="delete"), read=False),
        ]
    )
    doc = json.loads(nb.read_bytes())
    for n, c in enumerate(doc["cells"]):
        c["id"] = f"fresh-{n}"
        c.get("metadata", {})["collapsed"] = False
    if extra_source is not None:
        doc["cells"][0]["source"] = extra_source
    nb.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return s


def test_regenerated_ids_fall_back_to_the_whole_notebook(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    s = two_turns_then_new_ids(fake_api, workspace, nb)
    assert s.session_id
    res = am.rewind_files(s.session_id, s.checkpoints[1], dry_run=True)
    assert res.ok and res.changes[0].action == "whole-notebook" and "restored the whole notebook" in (res.changes[0].note or "")
    assert any("could not be matched" in n for n in res.notes)
    res = am.rewind_files(s.session_id, s.checkpoints[1])
    assert res.ok and tree_snapshot(workspace) == s.snapshots[1]
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok and tree_snapshot(workspace) == s.snapshots[0]


def test_regenerated_ids_and_other_changes_are_a_conflict(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    s = two_turns_then_new_ids(fake_api, workspace, nb, extra_source="# my own title")
    assert s.session_id
    mine = nb.read_bytes()
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert [c.path for c in res.conflicts] == ["analysis.ipynb"] and "use force" in res.conflicts[0].reason
    assert nb.read_bytes() == mine
    res = am.rewind_files(s.session_id, s.checkpoints[0], force=True)
    assert res.ok and tree_snapshot(workspace) == s.snapshots[0]


def test_fallback_includes_the_persons_edits_between_turns(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path
) -> None:
    """A person's change between two agent turns is in the copy the fallback restores for the second."""
    s = Session(fake_api, workspace)
    s.run([edits_turn("one", nb, edit(nb, "load", "a = 1"))])
    doc = nbformat.read(nb, 4)
    doc.cells[-1].source = "Edited by the person between turns."
    nbformat.write(doc, nb)
    s.run([edits_turn("two", nb, edit(nb, "plot", "b = 2"))])
    assert s.session_id
    sid = s.session_id
    records = [json.loads(x) for x in (home / "sessions" / sid / "checkpoints.jsonl").read_bytes().splitlines()]
    bases = [r for r in records if r.get("r") == "cells" and r.get("base")]
    assert len(bases) == 2 and all(r["base_kind"] == "cells" for r in bases)
    doc = json.loads(nb.read_bytes())
    for n, c in enumerate(doc["cells"]):
        c["id"] = f"fresh-{n}"
    nb.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    # s.snapshots[1] was taken by the second run (its first snapshot): with the person's edit.
    res = am.rewind_files(sid, s.checkpoints[1])
    assert res.ok and res.changes[0].action == "whole-notebook"
    assert tree_snapshot(workspace) == s.snapshots[1]
    assert "Edited by the person" in nb.read_text()


def test_notebook_without_cell_ids(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    """nbformat 4.4 notebooks have no ids: cells are addressed as cell-N by position."""
    path = workspace / "old.ipynb"
    doc = new_notebook()
    doc.nbformat_minor = 4
    doc.cells = [new_code_cell("a = 1"), new_markdown_cell("text"), new_code_cell("b = 2", outputs=[new_output("stream", text="x\n")])]
    for c in doc.cells:
        del c["id"]
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    s = Session(fake_api, workspace)
    s.run(
        [
            edits_turn("edit", path, edit(path, "cell-2", "b = 3")),
            edits_turn("insert", path, edit(path, "cell-0", "new", cell_type="code", edit_mode="insert"), read=False),
            edits_turn("delete", path, edit(path, "cell-2", "", edit_mode="delete"), read=False),
        ]
    )
    assert s.session_id
    for k in (2, 1, 0):
        res = am.rewind_files(s.session_id, s.checkpoints[k])
        assert res.ok, res
        assert tree_snapshot(workspace) == s.snapshots[k]


def test_a_notebook_not_written_by_nbformat_comes_back_byte_for_byte(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    path = workspace / "vscode.ipynb"
    doc = json.loads(nbformat.writes(new_notebook(cells=[new_code_cell("x = 1", id="c1"), new_code_cell("y = 2", id="c2")])))
    path.write_text(json.dumps(doc, indent=2))  # 2-space indent, keys unsorted, no trailing newline
    original = path.read_bytes()
    s = Session(fake_api, workspace)
    s.run([edits_turn("edit", path, edit(path, "c1", "x = 10")), edits_turn("more", path, edit(path, "c2", "y = 20"), read=False)])
    assert s.session_id
    records = [json.loads(x) for x in (home / "sessions" / s.session_id / "checkpoints.jsonl").read_bytes().splitlines()]
    assert [r.get("base_kind") for r in records if r.get("base")] == ["bytes"]  # not canonical: kept whole
    assert am.rewind_files(s.session_id, s.checkpoints[0]).ok
    assert path.read_bytes() == original


def test_notebook_created_by_write_then_edited_then_changed_by_bash(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    path = workspace / "new.ipynb"
    content = json.dumps(
        {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "1", "outputs": [], "execution_count": None}],
         "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    )
    s = Session(fake_api, workspace)
    s.run(
        [
            ("create", [tool_use("Write", {"file_path": str(path), "content": content}), text("ok")]),
            edits_turn("edit", path, edit(path, "a", "2"), edit(path, "a", "3", cell_type="code", edit_mode="insert")),
            ("bash", [tool_use("Bash", {"command": "sed -i 's/\"2\"/\"22\"/' new.ipynb"}), text("ok")]),
            edits_turn("edit again", path, edit(path, "a", "4")),
        ]
    )
    assert s.session_id
    assert source(by_id(path)["a"]) == "4"
    # Bash's scan did not keep a whole copy of the notebook the cell edits left: it is rebuilt.
    edited = s.snapshots[2]["new.ipynb"]
    assert isinstance(edited, bytes) and not BlobStore(home / "blobs").has(BlobStore.hash(edited))
    for k in (3, 2, 1, 0):
        res = am.rewind_files(s.session_id, s.checkpoints[k])
        assert res.ok, res
        assert tree_snapshot(workspace) == s.snapshots[k], k
    assert not path.exists()


def test_storage_grows_with_the_cells_changed(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    path = workspace / "big.ipynb"
    import base64
    import random

    rng = random.Random(1)
    doc = new_notebook()
    doc.cells = [
        new_code_cell(
            f"plot({k})",
            id=f"c{k}",
            outputs=[new_output("display_data", data={"image/png": base64.b64encode(rng.randbytes(30_000)).decode()})],
        )
        for k in range(40)
    ]
    nbformat.write(doc, path)
    size = path.stat().st_size
    s = Session(fake_api, workspace)
    s.run([edits_turn("first", path, edit(path, "c1", "a"))])
    first = blob_bytes(home)
    assert size * 0.6 < first < size * 1.1, (first, size)  # one copy of the notebook (as cells), once
    s.run([edits_turn(f"edit {k}", path, edit(path, f"c{k}", f"edited {k}"), read=False) for k in range(2, 12)])
    per_edit = (blob_bytes(home) - first) / 10
    assert per_edit < 60_000, per_edit  # about one cell (40 kB of base64 PNG), not the notebook
    # A new session on the same notebook stores no second copy: its cells are already there.
    s2 = Session(fake_api, workspace)
    before = blob_bytes(home)
    s2.run([edits_turn("again", path, edit(path, "c20", "x"))])
    assert blob_bytes(home) - before < 60_000
    assert s2.session_id
    res = am.rewind_files(s2.session_id, s2.checkpoints[0])
    assert res.ok and tree_snapshot(workspace) == s2.snapshots[0]


def test_blobs_are_compressed_and_shared(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    content = "same line of text\n" * 2000
    (workspace / "a.txt").write_text(content)
    (workspace / "b.txt").write_text(content)
    s = Session(fake_api, workspace)
    s.run(
        [
            (
                "overwrite both",
                [
                    tool_use("Read", {"file_path": str(workspace / "a.txt")}),
                    tool_use("Read", {"file_path": str(workspace / "b.txt")}),
                    tool_uses([("Write", {"file_path": str(workspace / n), "content": "short\n"}) for n in ("a.txt", "b.txt")]),
                    text("ok"),
                ],
            )
        ]
    )
    blobs = BlobStore(home / "blobs")
    digests = list(blobs.iter_digests())
    assert len(digests) == 2  # the old content once, the new once
    assert sum(blobs.stored_size(d) for d in digests) < len(content) / 20


def test_blobs_referenced_are_all_a_rewind_needs(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, nb: Path, tmp_path: Path
) -> None:
    """An exported session carries ``blobs_referenced``: with only those, every rewind still works."""
    from agent_magic.checkpoints import CheckpointLog, blobs_referenced
    from agent_magic.store.jsonl import JsonlFile

    (workspace / "untouched.txt").write_text("Bash's scan keeps it; no rewind needs it\n")
    s = Session(fake_api, workspace)
    s.run(
        [
            edits_turn("cells", nb, edit(nb, "load", "a = 1"), edit(nb, "plot", "", edit_mode="delete")),
            ("bash", [tool_use("Bash", {"command": "echo x > made.txt && sed -i 's/a = 1/a = 2/' analysis.ipynb"}), text("ok")]),
            ("write", [tool_use("Write", {"file_path": str(workspace / "w.txt"), "content": "w\n"}), text("ok")]),
        ]
    )
    assert s.session_id
    assert am.rewind_files(s.session_id, s.checkpoints[2]).ok  # a rewind record, with its own blobs
    doc = json.loads(nb.read_bytes())
    for n, c in enumerate(doc["cells"]):
        c["id"] = f"fresh-{n}"  # only the whole-notebook fallback (the skeleton's cells) can rewind this
    nb.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")

    records_path = home / "sessions" / s.session_id / "checkpoints.jsonl"
    records = [json.loads(x) for x in records_path.read_bytes().splitlines()]
    full = BlobStore(home / "blobs")
    needed = blobs_referenced(records, full)
    slim = BlobStore(tmp_path / "slim")
    for d in needed:
        slim.put(full.get(d))
    assert len(needed) < len(list(full.iter_digests()))  # Bash's scan kept more than a rewind needs
    copy = tmp_path / "records.jsonl"
    copy.write_bytes(records_path.read_bytes())
    log = CheckpointLog(session_id=s.session_id, cwd=workspace, records=JsonlFile(copy), blobs=slim)
    res = log.rewind(s.checkpoints[1], force=True)
    assert res.ok, res
    assert tree_snapshot(workspace) == s.snapshots[1]
    res = log.rewind(s.checkpoints[0])
    log.records.close()
    assert res.ok, res
    assert tree_snapshot(workspace) == s.snapshots[0]
