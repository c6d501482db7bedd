"""Notebooks: how Read renders them, and NotebookEdit on real nbformat files (and through a bridge)."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from agent_magic import ToolError
from agent_magic.tools import CellEdit, ToolContext, ToolResult
from agent_magic.tools.base import Tool
from agent_magic.tools.files import ReadTool
from agent_magic.tools.notebook import (
    NotebookEditTool,
    apply_cell_edit,
    cell_index_by_id,
    render_notebook,
)

CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


def png_b64(width: int, height: int) -> str:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\xff\xff\xff" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


PNG = png_b64(640, 480)
HTML = "<table><tr><td>1</td></tr></table>"


class FakeRecorder:
    """Keeps every cell-edit backup together with what the file held at that moment."""

    def __init__(self) -> None:
        self.cell_edits: list[dict[str, Any]] = []

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        raise AssertionError("NotebookEdit records cell edits, not whole-file changes")

    def before_cell_edit(
        self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes
    ) -> None:
        self.cell_edits.append(
            {
                "path": path,
                "old": notebook_bytes,
                "edit": edit,
                "new": new_notebook_bytes,
                "on_disk": path.read_bytes() if path.exists() else None,
            }
        )

    def before_command(self) -> object:
        raise AssertionError("no commands here")

    def after_command(self, token: object) -> list[str]:
        raise AssertionError("no commands here")


class FakeBridge:
    """A notebook 'open in JupyterLab': its own (unsaved) content, edits applied to it."""

    def __init__(self, path: Path, content: dict[str, Any], accept: bool = True) -> None:
        self.path = path
        self.content = content
        self.accept = accept
        self.applied: list[CellEdit] = []

    def is_open(self, path: Path) -> bool:
        return path == self.path

    def read(self, path: Path) -> dict[str, Any] | None:
        return copy.deepcopy(self.content)

    def apply(self, path: Path, edit: CellEdit) -> bool:
        self.applied.append(edit)
        return self.accept


def run(tool: Tool, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return anyio.run(tool.run, input, ctx)


def make_notebook() -> Any:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nb.cells = [
        new_markdown_cell(
            "# Title\n![dot](attachment:dot.png)",
            id="intro",
            attachments={"dot.png": {"image/png": PNG}},
        ),
        new_code_cell(
            "print('hi')\n1 + 1",
            id="calc",
            execution_count=1,
            metadata={"tags": ["keep"]},
            outputs=[
                new_output("stream", name="stdout", text="hi\n"),
                new_output("execute_result", data={"text/plain": "2"}, execution_count=1),
            ],
        ),
        new_code_cell(
            "plot()",
            id="plot",
            execution_count=2,
            outputs=[
                new_output(
                    "display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480>"}
                ),
                new_output("display_data", data={"text/html": HTML, "text/plain": "   a\n0  1"}),
            ],
        ),
        new_code_cell(
            "1/0",
            id="boom",
            execution_count=3,
            outputs=[
                new_output(
                    "error",
                    ename="ZeroDivisionError",
                    evalue="division by zero",
                    traceback=[
                        "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
                        "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
                        "Cell \x1b[0;32mIn[3], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m \x1b[38;5;241m1\x1b[39m\x1b[38;5;241m/\x1b[39m\x1b[38;5;241m0\x1b[39m\n",
                        "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
                    ],
                )
            ],
        ),
        new_raw_cell("raw text", id="rawc"),
    ]
    nbformat.validate(copy.deepcopy(nb))
    return nb


@pytest.fixture
def nb_path(tmp_path: Path) -> Path:
    path = tmp_path / "analysis.ipynb"
    nbformat.write(make_notebook(), path)
    return path


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(cwd=tmp_path, session_id="test", recorder=FakeRecorder())


def recorded(ctx: ToolContext) -> list[dict[str, Any]]:
    assert isinstance(ctx.recorder, FakeRecorder)
    return ctx.recorder.cell_edits


def load(path: Path) -> Any:
    """The notebook on disk, checked to be valid nbformat."""
    as_json = json.loads(path.read_text(encoding="utf-8"))
    nbformat.validate(copy.deepcopy(as_json))
    return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)


def edit(ctx: ToolContext, path: Path, **input: Any) -> ToolResult:
    return run(NotebookEditTool(), {"notebook_path": str(path), **input}, ctx)


def read(ctx: ToolContext, path: Path, **input: Any) -> str:
    res = run(ReadTool(), {"file_path": str(path), **input}, ctx)
    assert isinstance(res.content, str)
    return res.content


# --------------------------------------------------------------------------- rendering


def test_read_renders_cells_and_compact_outputs(ctx: ToolContext, nb_path: Path) -> None:
    text = read(ctx, nb_path)
    assert (
        text.splitlines()[0]
        == "Jupyter notebook: 5 cells, nbformat 4.5, kernel Python 3, language python."
    )
    assert (
        '<cell id="intro" cell_type="markdown">\n# Title\n![dot](attachment:dot.png)\n[attachments: dot.png (image/png)]\n</cell>'
        in text
    )
    assert (
        '<cell id="calc" cell_type="code" execution_count="1">\nprint(\'hi\')\n1 + 1\n'
        '<output type="stream" name="stdout">\nhi\n</output>\n'
        '<output type="execute_result">\n2\n</output>\n</cell>'
    ) in text
    assert "[image/png 640x480]" in text
    assert f"[text/html, {len(HTML)} chars]" in text and "   a\n0  1" in text
    assert "ZeroDivisionError: division by zero" in text and "----> 1 1/0" in text
    assert '<cell id="rawc" cell_type="raw">\nraw text\n</cell>' in text
    assert "\x1b" not in text and PNG[:40] not in text
    assert ctx.read_files[str(nb_path)] == nb_path.stat().st_mtime_ns


def test_read_pages_over_cells(ctx: ToolContext, nb_path: Path) -> None:
    text = read(ctx, nb_path, offset=2, limit=2)
    assert '<cell id="calc"' in text and '<cell id="plot"' in text
    assert '<cell id="intro"' not in text and '<cell id="boom"' not in text
    assert text.endswith("… 2 more cells; use offset=4 to read on.")
    assert "past its end" in read(ctx, nb_path, offset=9)


def test_render_caps_output_and_collapses_progress_bars() -> None:
    nb = make_notebook()
    nb.cells[1].outputs = [
        new_output("stream", name="stderr", text="10%\r50%\r100%\n"),
        new_output("stream", name="stdout", text="y" * 50 + "\n" + "z" * 100_000),
        new_output("execute_result", data={"text/plain": "row\n" * 10_000}, execution_count=1),
    ]
    text = render_notebook(nb)
    assert '<output type="stream" name="stderr">\n100%\n</output>' in text
    assert "y" * 50 + "\n" + "z" * 2000 + "… [line truncated]" in text and "z" * 2001 not in text
    assert "characters cut" in text and "row\n" * 800 not in text


def test_render_merges_consecutive_stream_outputs() -> None:
    nb = make_notebook()
    nb.cells[1].outputs = [
        new_output("stream", name="stdout", text="a\n"),
        new_output("stream", name="stdout", text="b\n"),
    ]
    assert '<output type="stream" name="stdout">\na\nb\n</output>' in render_notebook(nb)


def old_notebook(tmp_path: Path) -> Path:
    """An nbformat 4.4 notebook: cells without ids."""
    nb = make_notebook()
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    nbformat.validate(copy.deepcopy(nb))
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


def test_read_old_notebook_shows_position_ids(ctx: ToolContext, tmp_path: Path) -> None:
    text = read(ctx, old_notebook(tmp_path))
    assert "cell-0, cell-1" in text.splitlines()[0]
    assert [m for m in re.findall(r'<cell id="([^"]+)"', text)] == [f"cell-{i}" for i in range(5)]


def test_read_invalid_notebook_falls_back_to_text(ctx: ToolContext, tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [', encoding="utf-8")
    assert read(ctx, path) == '     1\t{"cells": ['


# --------------------------------------------------------------------------- NotebookEdit: files


def assert_untouched(before: Any, after: Any, pairs: list[tuple[int, int]]) -> None:
    for i, j in pairs:
        assert after.cells[j] == before.cells[i], (i, j)


def test_edit_requires_a_read_first(ctx: ToolContext, nb_path: Path) -> None:
    original = nb_path.read_bytes()
    with pytest.raises(ToolError, match="Read it first"):
        edit(ctx, nb_path, cell_id="calc", new_source="x = 1")
    assert nb_path.read_bytes() == original and recorded(ctx) == []


def test_replace_code_cell_clears_outputs_and_keeps_the_rest(
    ctx: ToolContext, nb_path: Path
) -> None:
    before = load(nb_path)
    original_bytes = nb_path.read_bytes()
    read(ctx, nb_path)
    res = edit(ctx, nb_path, cell_id="calc", new_source="print('bye')")
    after = load(nb_path)
    cell = after.cells[1]
    assert cell.id == "calc" and cell.source == "print('bye')" and cell.cell_type == "code"
    assert (
        cell.outputs == [] and cell.execution_count is None and cell.metadata == {"tags": ["keep"]}
    )
    assert_untouched(before, after, [(0, 0), (2, 2), (3, 3), (4, 4)])
    assert after.metadata == before.metadata
    (rec,) = recorded(ctx)
    assert rec["on_disk"] == original_bytes == rec["old"]  # backed up before the write
    assert rec["new"] == nb_path.read_bytes()
    e = rec["edit"]
    assert (e.op, e.cell_id, e.index, e.prev_cell_id) == ("replace", "calc", 1, "intro")
    assert e.before_cell == json.loads(json.dumps(before.cells[1]))
    assert e.after_cell == json.loads(json.dumps(cell))
    assert res.summary == "replaced cell calc"
    assert res.data["cell_id"] == "calc" and res.data["edit_mode"] == "replace"
    assert "-print('hi')" in res.data["diff"] and "+print('bye')" in res.data["diff"]
    # the tool refreshed read_files: a second edit needs no new Read
    edit(ctx, nb_path, cell_id="calc", new_source="print('again')")
    assert load(nb_path).cells[1].source == "print('again')"


def test_replace_with_other_type_converts_the_cell(ctx: ToolContext, nb_path: Path) -> None:
    before = load(nb_path)
    read(ctx, nb_path)
    edit(ctx, nb_path, cell_id="plot", new_source="Now *prose*.", cell_type="markdown")
    edit(ctx, nb_path, cell_id="intro", new_source="x = 1", cell_type="code")
    after = load(nb_path)
    md = after.cells[2]
    assert (
        md.cell_type == "markdown"
        and md.id == "plot"
        and "outputs" not in md
        and "execution_count" not in md
    )
    code = after.cells[0]
    assert (
        code.cell_type == "code"
        and code.id == "intro"
        and code.outputs == []
        and code.execution_count is None
    )
    assert "attachments" not in code
    assert_untouched(before, after, [(1, 1), (3, 3), (4, 4)])


def test_replace_markdown_keeps_attachments_and_raw_stays_raw(
    ctx: ToolContext, nb_path: Path
) -> None:
    before = load(nb_path)
    read(ctx, nb_path)
    edit(ctx, nb_path, cell_id="intro", new_source="# New title\n![dot](attachment:dot.png)")
    edit(ctx, nb_path, cell_id="rawc", new_source="other raw")
    after = load(nb_path)
    assert after.cells[0].attachments == before.cells[0].attachments
    assert after.cells[4].cell_type == "raw" and after.cells[4].source == "other raw"
    assert_untouched(before, after, [(1, 1), (2, 2), (3, 3)])


def test_replace_markdown_drops_the_attachments_its_source_no_longer_names(ctx: ToolContext, nb_path: Path) -> None:
    # JupyterLab drops them when it saves the cell; the file must end the same with or without it.
    before = load(nb_path)
    read(ctx, nb_path)
    edit(ctx, nb_path, cell_id="intro", new_source="# New title, no picture")
    after = load(nb_path)
    assert before.cells[0].attachments and "attachments" not in after.cells[0]
    assert_untouched(before, after, [(1, 1), (2, 2), (3, 3), (4, 4)])


def test_insert_after_a_cell_and_at_the_start(ctx: ToolContext, nb_path: Path) -> None:
    before = load(nb_path)
    read(ctx, nb_path)
    res = edit(
        ctx,
        nb_path,
        cell_id="plot",
        new_source="df.describe()",
        cell_type="code",
        edit_mode="insert",
    )
    after = load(nb_path)
    new = after.cells[3]
    assert new.source == "df.describe()" and new.cell_type == "code" and new.outputs == []
    assert CELL_ID.match(new.id) and new.id not in {c.id for c in before.cells}
    assert res.data["cell_id"] == new.id and res.data["index"] == 3
    (rec,) = recorded(ctx)
    e = rec["edit"]
    assert (e.op, e.before_cell, e.index, e.prev_cell_id) == ("insert", None, 3, "plot")
    assert e.after_cell == json.loads(json.dumps(new))
    assert_untouched(before, after, [(0, 0), (1, 1), (2, 2), (3, 4), (4, 5)])

    edit(ctx, nb_path, new_source="Intro text", cell_type="markdown", edit_mode="insert")
    first = load(nb_path).cells[0]
    assert (
        first.cell_type == "markdown" and first.source == "Intro text" and CELL_ID.match(first.id)
    )
    assert recorded(ctx)[1]["edit"].prev_cell_id is None and recorded(ctx)[1]["edit"].index == 0
    assert len({c.id for c in load(nb_path).cells}) == 7


def test_insert_requires_cell_type(ctx: ToolContext, nb_path: Path) -> None:
    read(ctx, nb_path)
    with pytest.raises(ToolError, match="cell_type"):
        edit(ctx, nb_path, cell_id="calc", new_source="x", edit_mode="insert")


def test_delete_cell(ctx: ToolContext, nb_path: Path) -> None:
    before = load(nb_path)
    read(ctx, nb_path)
    res = edit(ctx, nb_path, cell_id="boom", edit_mode="delete")  # new_source may be omitted
    after = load(nb_path)
    assert [c.id for c in after.cells] == ["intro", "calc", "plot", "rawc"]
    assert_untouched(before, after, [(0, 0), (1, 1), (2, 2), (4, 3)])
    e = recorded(ctx)[0]["edit"]
    assert (e.op, e.cell_id, e.index, e.prev_cell_id, e.after_cell) == (
        "delete",
        "boom",
        3,
        "plot",
        None,
    )
    assert e.before_cell == json.loads(json.dumps(before.cells[3]))
    assert res.summary == "deleted cell boom"


def test_edit_errors_leave_the_notebook_alone(
    ctx: ToolContext, nb_path: Path, tmp_path: Path
) -> None:
    read(ctx, nb_path)
    original = nb_path.read_bytes()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "bad.ipynb").write_text("not json")
    ctx.read_files[str(tmp_path / "bad.ipynb")] = (tmp_path / "bad.ipynb").stat().st_mtime_ns
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"notebook_path": str(nb_path), "cell_id": "nope", "new_source": "x"},
            "'nope' was not found",
        ),
        ({"notebook_path": str(nb_path), "new_source": "x"}, "cell_id is required"),
        (
            {
                "notebook_path": str(nb_path),
                "cell_id": "calc",
                "new_source": "x",
                "edit_mode": "move",
            },
            "edit_mode",
        ),
        (
            {
                "notebook_path": str(nb_path),
                "cell_id": "calc",
                "new_source": "x",
                "cell_type": "raw",
            },
            "cell_type",
        ),
        ({"notebook_path": str(nb_path), "cell_id": "calc"}, "new_source"),
        ({"notebook_path": str(nb_path), "cell_id": "calc", "new_source": ["x"]}, "new_source"),
        ({"notebook_path": str(nb_path), "cell_id": 3, "new_source": "x"}, "cell_id"),
        (
            {"notebook_path": str(tmp_path / "notes.txt"), "cell_id": "a", "new_source": "x"},
            "not a Jupyter notebook",
        ),
        (
            {"notebook_path": str(tmp_path / "missing.ipynb"), "cell_id": "a", "new_source": "x"},
            "does not exist",
        ),
        (
            {"notebook_path": str(tmp_path / "bad.ipynb"), "cell_id": "a", "new_source": "x"},
            "not a valid Jupyter notebook",
        ),
        ({"new_source": "x"}, "notebook_path"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            run(NotebookEditTool(), input, ctx)
    assert nb_path.read_bytes() == original and recorded(ctx) == []


def test_edit_refuses_notebook_changed_since_read(ctx: ToolContext, nb_path: Path) -> None:
    read(ctx, nb_path)
    nb = load(nb_path)
    nb.cells[0].source = "# Changed by a person"
    nbformat.write(nb, nb_path)
    os.utime(nb_path, ns=(nb_path.stat().st_atime_ns, nb_path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ToolError, match="modified since it was read"):
        edit(ctx, nb_path, cell_id="calc", new_source="x")
    assert load(nb_path).cells[0].source == "# Changed by a person"


def test_old_notebook_is_edited_by_position_without_adding_ids(
    ctx: ToolContext, tmp_path: Path
) -> None:
    path = old_notebook(tmp_path)
    before = load(path)
    read(ctx, path)
    edit(ctx, path, cell_id="cell-1", new_source="y = 2")
    edit(ctx, path, cell_id="cell-0", new_source="z = 3", cell_type="code", edit_mode="insert")
    res = edit(ctx, path, cell_id="cell-3", edit_mode="delete")  # 'plot' after the insert
    after = load(path)
    assert after.nbformat_minor == 4 and all("id" not in c for c in after.cells)
    assert [c.source for c in after.cells] == [
        before.cells[0].source,
        "z = 3",
        "y = 2",
        "1/0",
        "raw text",
    ]
    assert after.cells[2].outputs == [] and after.cells[2].execution_count is None
    assert_untouched(before, after, [(0, 0), (3, 3), (4, 4)])
    assert "shifted" in str(res.content)
    inserted = recorded(ctx)[1]["edit"]
    assert (
        inserted.cell_id == "cell-1"
        and inserted.prev_cell_id == "cell-0"
        and "id" not in inserted.after_cell
    )


def test_already_invalid_notebook_can_still_be_edited(ctx: ToolContext, tmp_path: Path) -> None:
    nb = json.loads(nbformat.writes(make_notebook()))
    nb["cells"][4]["id"] = "calc"  # a duplicate id: invalid before any edit
    path = tmp_path / "dup.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    read(ctx, path)
    res = edit(ctx, path, cell_id="plot", new_source="fixed")
    assert "already not valid" in str(res.content)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert [c["id"] for c in written["cells"]] == [
        "intro",
        "calc",
        "plot",
        "boom",
        "calc",
    ]  # ids never regenerated


# --------------------------------------------------------------------------- pure helpers


def test_apply_cell_edit_does_not_mutate_its_input() -> None:
    nb = make_notebook()
    snapshot = copy.deepcopy(nb)
    new_nb, e = apply_cell_edit(nb, "replace", "calc", "changed", None)
    assert nb == snapshot
    assert new_nb.cells[1].source == "changed" and e.index == 1
    new_nb, e = apply_cell_edit(nb, "delete", "intro", "", None)
    assert nb == snapshot and len(new_nb.cells) == 4 and e.prev_cell_id is None


def test_cell_index_by_id() -> None:
    nb = make_notebook()
    assert cell_index_by_id(nb, "plot") == 2
    assert cell_index_by_id(nb, "cell-2") is None  # real ids present: no positional addressing
    assert cell_index_by_id(nb, "missing") is None
    for cell in nb.cells:
        del cell["id"]
    assert cell_index_by_id(nb, "cell-2") == 2 and cell_index_by_id(nb, "cell-9") is None


# --------------------------------------------------------------------------- NotebookEdit: an open notebook


def test_open_notebook_is_edited_through_the_bridge(ctx: ToolContext, nb_path: Path) -> None:
    on_disk = nb_path.read_bytes()
    unsaved = json.loads(on_disk)
    unsaved["cells"][0]["source"] = "# Unsaved title"
    bridge = FakeBridge(nb_path, unsaved)
    ctx.notebook_bridge = bridge
    text = read(ctx, nb_path)
    assert "# Unsaved title" in text  # Read shows what the person sees
    res = edit(ctx, nb_path, cell_id="calc", new_source="print('live')")
    assert nb_path.read_bytes() == on_disk  # the file under the person is not touched
    (applied,) = bridge.applied
    assert applied.op == "replace" and applied.cell_id == "calc" and applied.after_cell is not None
    assert applied.after_cell["source"] == "print('live')" and applied.after_cell["outputs"] == []
    (rec,) = recorded(ctx)
    assert rec["edit"] == applied
    assert nbformat.reads(rec["old"].decode(), as_version=4).cells[0].source == "# Unsaved title"
    assert nbformat.reads(rec["new"].decode(), as_version=4).cells[1].source == "print('live')"
    assert res.data["applied_to"] == "editor"


def test_bridge_refusal_falls_back_to_the_file(ctx: ToolContext, nb_path: Path) -> None:
    bridge = FakeBridge(nb_path, json.loads(nb_path.read_bytes()), accept=False)
    ctx.notebook_bridge = bridge
    read(ctx, nb_path)
    res = edit(ctx, nb_path, cell_id="calc", new_source="print('file')")
    assert len(bridge.applied) == 1
    assert load(nb_path).cells[1].source == "print('file')"
    assert res.data["applied_to"] == "file"


def test_bridge_for_other_notebooks_is_not_used(
    ctx: ToolContext, nb_path: Path, tmp_path: Path
) -> None:
    bridge = FakeBridge(tmp_path / "other.ipynb", {})
    ctx.notebook_bridge = bridge
    read(ctx, nb_path)
    edit(ctx, nb_path, cell_id="calc", new_source="print('file')")
    assert bridge.applied == [] and load(nb_path).cells[1].source == "print('file')"
