"""The sidebar's rewind puts the kernel's variables back, in a real JupyterLab and kernel.

The server rewinds files and cells; the front end asks the notebook's kernel to preview
and restore the variables (``kernel_rewind`` as a user expression). A ``%%agent`` turn's
Python tool call (scripted through the fake Messages API) changes a list and a numpy
array and creates a variable; the sidebar's preview lists them, the rewind restores them
(the "check" cell prints what the kernel holds), and a busy kernel or one without
agent_magic is said in one line instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import nbformat
import pytest

from agent_magic.testing import text, tool_use

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

    from agent_magic.testing import FakeAnthropicServer

NB_NAME = "kernel-rewind.ipynb"
PROMPT = "Clean up the data in the kernel"
AGENT_CODE = "items.append(4)\narr[:3] = -1\nmade = {'by': 'the agent'}"
CHECK = "print('STATE', items, items is items_alias, arr[:4].tolist(), 'made' in globals())"


def write_notebook(path: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "%load_ext agent_magic\nimport numpy as np\nitems = [1, 2, 3]\nitems_alias = items\narr = np.arange(1000.0)",
            id="setup",
        ),
        nbformat.v4.new_code_cell(f"%%agent --permission-mode bypassPermissions\n{PROMPT}", id="ask"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(60)", id="sleep"),
        nbformat.v4.new_code_cell(CHECK, id="check"),
    ]
    nbformat.write(nb, path)


@pytest.mark.browser
@pytest.mark.slow
def test_sidebar_rewind_previews_and_restores_kernel_variables(
    jupyterlab: JupyterLab,
    lab_fake_api: FakeAnthropicServer,
    run_playwright: Callable[..., PlaywrightResult],
) -> None:
    write_notebook(str(jupyterlab.root_dir / NB_NAME))
    lab_fake_api.reset()
    lab_fake_api.on_prompt(PROMPT, tool_use("Python", {"code": AGENT_CODE, "description": "change the data"}), text("Done."))

    data = run_playwright("sidebar_kernel_rewind.mjs", env={"NB_PATH": NB_NAME}, timeout=400).check().data

    assert data["stateAfterTurn"] == "STATE [1, 2, 3, 4] True [-1.0, -1.0, -1.0, 3.0] True"
    # A running cell: the kernel is not asked to do anything, and the preview says why.
    assert data["busyPreview"].startswith("Kernel variables will not be rewound: the kernel stayed busy")

    # The preview lists each variable with its type and size (or why it goes).
    items = {i["name"]: (i["kind"], i["text"]) for i in data["previewItems"]}
    assert set(items) == {"items", "items_alias", "arr", "made"}, data["previewItems"]
    assert items["items"][0] == "restore" and items["items"][1].startswith("restore variable items (list, ")
    assert items["arr"][0] == "restore" and "(numpy.ndarray, 7.9 KB" in items["arr"][1]
    assert items["made"] == ("delete", "delete variable made (the undone code created it)")
    lines = [line.strip() for line in data["previewText"].splitlines() if line.strip()]
    assert lines[:2] == ["No files or cells to change.", "Kernel variables (4 to put back)"], lines

    # Confirmed: the kernel's variables are back, the alias kept, the new one gone.
    assert data["stateAfterRewind"] == "STATE [1, 2, 3] True [0.0, 1.0, 2.0, 3.0] False"
    assert "Kernel: 4 variables put back." in data["toastText"]
    assert {i["name"] for i in data["resultItems"] if i["kind"] in ("restore", "delete")} == set(items)

    # A new kernel without agent_magic: one line, nothing done.
    assert data["notLoadedPreview"] == (
        "Kernel variables will not be rewound: agent_magic is not loaded in this kernel (run `%load_ext agent_magic`)."
    )
