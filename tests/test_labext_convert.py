"""The extension's nbformat <-> JupyterLab model conversion gives nbformat's own result.

`labextension/src/convert.ts` is the one place where cells from the kernel or
from checkpoint records (lists of lines, as on disk) enter JupyterLab's model.
Its compiled form runs here in node, on a notebook with every output type,
and must equal what `nbformat.reads` makes of the same file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.notebook_fixtures import write_every_output_notebook

ROOT = Path(__file__).resolve().parent.parent
CONVERT_JS = ROOT / "labextension" / "lib" / "convert.js"

_RUNNER = """
import { readFileSync } from 'node:fs';
const mod = await import(process.argv[2]);
const input = JSON.parse(readFileSync(0, 'utf8'));
const out = {
  notebook: mod.toModelNotebook(input),
  cells: input.cells.map(mod.toModelCell),
  outputs: input.cells.flatMap(c => (c.outputs ?? []).map(mod.toModelOutput)),
  fromModel: mod.fromModelJSON(mod.toModelNotebook(input)),
  untouched: input,
};
process.stdout.write(JSON.stringify(out));
"""


def _convert(tmp_path: Path, nb_json: dict[str, Any]) -> dict[str, Any]:
    if not CONVERT_JS.is_file():
        pytest.fail(f"{CONVERT_JS} is missing: build the extension with `bash .ci/setup`")
    node = shutil.which("node")
    assert node is not None, "node is required (bash .ci/setup checks for it)"
    module = tmp_path / "convert.mjs"  # the package is not "type": "module"; an .mjs copy loads as ESM
    module.write_bytes(CONVERT_JS.read_bytes())
    runner = tmp_path / "run.mjs"
    runner.write_text(_RUNNER)
    done = subprocess.run(
        [node, str(runner), module.as_uri()], input=json.dumps(nb_json), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def _plain(node: Any) -> Any:
    return json.loads(json.dumps(node))


def test_cells_from_disk_enter_the_model_as_nbformat_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "every.ipynb"
    write_every_output_notebook(path)
    on_disk = json.loads(path.read_text())
    # the file really has lists of lines where the bug lived
    streams = next(c for c in on_disk["cells"] if c["id"] == "streams")
    assert isinstance(streams["outputs"][0]["text"], list) and len(streams["outputs"][0]["text"]) == 3
    # transient fields nbformat drops on read
    on_disk["metadata"]["orig_nbformat"] = 3
    on_disk["cells"][1]["metadata"]["trusted"] = True

    expected = _plain(nbformat.reads(json.dumps(on_disk), as_version=4))
    got = _convert(tmp_path, on_disk)

    assert got["notebook"]["metadata"] == expected["metadata"]
    assert len(got["notebook"]["cells"]) == len(expected["cells"])
    for mine, theirs in zip(got["notebook"]["cells"], expected["cells"], strict=True):
        assert mine == theirs, mine["id"]
    assert got["cells"] == expected["cells"]
    assert got["outputs"] == [o for c in expected["cells"] for o in c.get("outputs", [])]
    # the stream that was corrupted: one string, newlines kept, no commas added
    assert got["notebook"]["cells"][1]["outputs"][0]["text"] == "2024-01   2,030.50\n2024-02   1,401.00\n2024-03   2,620.40\n"
    # JSON mime types stay objects; tracebacks stay lists
    result = next(c for c in got["notebook"]["cells"] if c["id"] == "result")
    assert result["outputs"][0]["data"]["application/json"]["note"] == "line one\nline two"
    error = next(c for c in got["notebook"]["cells"] if c["id"] == "error")
    assert isinstance(error["outputs"][0]["traceback"], list) and len(error["outputs"][0]["traceback"]) == 3
    # the conversion copies: its input is left as it was
    assert got["untouched"] == on_disk


def test_the_model_form_is_a_fixed_point(tmp_path: Path) -> None:
    """Reading the open model back (fromModelJSON) changes nothing, and writing it gives the file again."""
    path = tmp_path / "every.ipynb"
    write_every_output_notebook(path)
    in_memory = _plain(nbformat.read(str(path), as_version=4))
    got = _convert(tmp_path, in_memory)
    assert got["notebook"] == in_memory
    assert got["fromModel"] == in_memory
    again = tmp_path / "again.ipynb"
    nbformat.write(nbformat.from_dict(got["fromModel"]), str(again))
    assert again.read_bytes() == path.read_bytes()
