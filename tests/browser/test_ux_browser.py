"""A first hour's rough edges (issue 14, section 4), checked in JupyterLab and Chromium.

The kernels talk to the fake Messages API in this process (``lab_fake_api``).
``ux_flow.mjs`` drives the notebook as a person would and reports what the
page showed; screenshots of the session bar, the checkpoint slider, the
sessions sidebar and the approval prompt, in the light and dark themes, go to
``test-artifacts/ux-*.png``.
"""

# nbformat is untyped.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

from agent_magic.testing import FakeAnthropicServer, text, tool_use

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

T1 = "turn one: Load sales.csv, fix the date column and write the notes for the monthly revenue report"
CELLS = [
    ("setup", "%load_ext agent_magic"),
    ("load", "x = 1"),
    ("t1", f"%%agent\n{T1}"),
    ("t2", "%%agent --permission-mode acceptEdits\nturn two: edit notes.txt and rewrite the load cell"),
    ("cps", "%agent checkpoints"),
    ("t3", "%%agent --fork\nturn three: a question in a fork"),
    ("t4", "%%agent\nturn four: clean the build folder"),
    ("t5", "%%agent --permission-mode acceptEdits\nturn five: rewrite the load cell again"),
    ("rw", "%agent rewind --turn 5"),
]


@pytest.mark.browser
@pytest.mark.slow
def test_first_hour_in_jupyterlab(
    jupyterlab: JupyterLab, lab_fake_api: FakeAnthropicServer, run_playwright: Callable[..., PlaywrightResult]
) -> None:
    work = jupyterlab.root_dir / "ux"
    work.mkdir()
    flow = work / "flow.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, id=cid) for cid, src in CELLS]
    nbformat.write(nb, flow)
    notes = work / "notes.txt"

    api = lab_fake_api
    api.reset()
    api.on_prompt("turn one", tool_use("Write", {"file_path": str(notes), "content": "version 1\n"}), text("Wrote notes.txt."))
    api.on_prompt(
        "turn two",
        tool_use("Read", {"file_path": str(notes)}),
        tool_use("Edit", {"file_path": str(notes), "old_string": "version 1", "new_string": "version 2"}),
        tool_use("Read", {"file_path": str(flow)}),
        tool_use("NotebookEdit", {"notebook_path": str(flow), "cell_id": "load", "new_source": "x = 2"}),
        text("Updated both."),
    )
    api.on_prompt("turn three", text("A forked answer."))
    api.on_prompt("turn four", tool_use("Bash", {"command": "rm -rf build"}), text("Could not clean."))
    api.on_prompt(
        "turn five",
        tool_use("Read", {"file_path": str(flow)}),
        tool_use("NotebookEdit", {"notebook_path": str(flow), "cell_id": "load", "new_source": "x = 5"}),
        text("Rewrote it."),
    )

    d = run_playwright("ux_flow.mjs", env={"NOTEBOOK": "ux/flow.ipynb"}, timeout=420).check().data

    # 4. the status bar says Busy while a turn runs (here: waiting on its approval prompt)
    assert d["statusWhileRunning"].endswith("Busy"), d["statusWhileRunning"]
    assert d["statusWhileRunningDark"].endswith("Busy")
    assert d["statusAfter"].endswith("Idle")

    # 8. no emoji: the running tool line has a CSS spinner; the tool-line diff is coloured
    assert d["runningMark"]["width"] == "10px" and d["runningMark"]["animation"] != "none"
    assert "running…" in d["runningMark"]["text"] and "⏳" not in d["runningMark"]["text"]
    assert not d["hourglass"]
    for kind in ("add", "del"):
        assert d["toolDiff"][kind] not in (None, "rgba(0, 0, 0, 0)", "transparent"), d["toolDiff"]
    assert "+version 2" in d["toolDiff"]["text"]

    # 5. the badge's dialog focuses Close: Enter leaves the cell alone
    assert d["dialogFocus"] == "Close" and d["dialogButtons"][-1] in ("Restore cell", "Remove cell")
    assert d["loadAfterEnter"] == "x = 2"

    # 7. wording: the button and its confirmation agree; proper plurals
    assert d["rewindLabel"] == "Rewind to before turn 2…"
    assert d["question"].startswith("Confirm rewind to before turn 2?")
    assert "Would change 2 paths, 1 cell." in d["preview"] and "Changed 2 paths, 1 cell." in d["result"]
    assert "(s)" not in d["sliderText"]

    # 3. the cell to re-run: a link that selects it, a mark on the cell until it runs again
    assert "Re-run 1 cell" in d["result"] and "cell 2" in d["result"]
    assert d["marker"] == "re-run"
    assert d["activeAfterLink"] == "load"
    assert d["activeAfterFallbackLink"] == "load"  # what the widget does without the extension
    assert d["markerAfterRun"] == 0
    # the same from `%agent rewind`: a link in its Markdown output, the mark, cleared by a run
    assert "Re-run 1 cell: the kernel ran it after that turn" in d["magicRewind"]
    assert d["magicMarker"] == "re-run" and d["activeAfterMagicLink"] == "load" and d["magicMarkerAfterRun"] == 0

    # 6. the session bar stays on one line, Resume included, also in a narrow window
    for layout in (d["barWide"], d["barNarrow"]):
        assert layout["lines"] == 1, layout
        assert layout["resumeHeight"] == layout["forkHeight"] and layout["resumeRight"] <= layout["rowRight"] + 0.5

    # 6. after Stop the interruption is said once (the cell's line), the unanswered prompt collapsed
    stopped = d["stopped"]
    assert stopped["text"].count("session is intact") == 1, stopped["text"]
    assert "AgentTurnError" not in stopped["text"] and stopped["errorName"].startswith("Interrupted: the session is intact")
    assert stopped["barStatus"] == "Stopped"
    assert stopped["expired"] == "Expired (the turn ended before a decision): Allow Bash(rm -rf build)?"
    assert not stopped["buttonsShown"]

    # 1. sessions tell apart: the fork says what it forked and where; the pill is whole
    assert T1 in d["sidebarTitles"]  # the original: its first prompt
    forks = [t for t in d["sidebarTitles"] if t.startswith("fork at turn 2 of “turn one: Load sales.csv")]
    assert forks, d["sidebarTitles"]
    assert d["pill"]["text"] == "current" and d["pill"]["inside"] and d["pill"]["fullWidth"], d["pill"]

    # 2. after a kernel restart the widgets say they are stale and offer nothing
    assert d["staleSlider"].startswith("The kernel restarted since this was shown") and "%agent checkpoints" in d["staleSlider"]
    assert d["staleRewindDisabled"] and d["staleRangeDisabled"] and d["staleForkDisabled"]
    assert "The kernel restarted" in d["staleBar"]

    # screenshots of the bar, slider, sidebar and approval prompt, light and dark
    for key in ("barShotLight", "barShotDark", "sliderShotLight", "sliderShotDark", "sidebarShotLight", "sidebarShotDark",
                "approvalShotLight", "approvalShotDark"):
        assert Path(d[key]).is_file() and Path(d[key]).stat().st_size > 1000, key
