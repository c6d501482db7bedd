"""The JupyterLab extension end to end: live agent edits, badges, rewinds, the sessions sidebar.

A notebook open in JupyterLab, with an unsaved edit in one cell, is edited by a
``%%agent`` turn (the fake Messages API in this process scripts it): the edit
reaches the open notebook live, with no "file changed on disk" dialog, the
person's unsaved edit survives, and saving works. ``%agent rewind`` and the
sidebar's rewind restore the cells live; the sidebar lists the session and a
fork; a kernel restart keeps the sidebar and the link comes back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest

from agent_magic import _api
from agent_magic.testing import text, tool_use, tool_uses

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

    from agent_magic.testing import FakeAnthropicServer

NB_NAME = "live-edit.ipynb"
PROMPT = "Improve the notebook"


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext agent_magic", id="load"),
        nbformat.v4.new_code_cell("x = 1", id="one"),
        nbformat.v4.new_code_cell("y = 2", id="two"),
        nbformat.v4.new_code_cell("z = 3", id="three"),
        nbformat.v4.new_code_cell(f"%%agent --permission-mode acceptEdits\n{PROMPT}", id="ask"),
        nbformat.v4.new_code_cell("", id="rewind"),
    ]
    nbformat.write(nb, path)


def sources(cells: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["id"], c["source"]) for c in cells]


@pytest.mark.browser
@pytest.mark.slow
def test_live_edits_badges_rewind_and_sidebar(
    jupyterlab: JupyterLab,
    lab_fake_api: FakeAnthropicServer,
    run_playwright: Callable[..., PlaywrightResult],
) -> None:
    nb_path = jupyterlab.root_dir / NB_NAME
    write_notebook(nb_path)
    target = str(nb_path.resolve())
    lab_fake_api.reset()
    lab_fake_api.on_prompt(
        PROMPT,
        tool_use("Read", {"file_path": target}),
        tool_uses([
            ("NotebookEdit", {"notebook_path": target, "cell_id": "two", "new_source": "w = x + y  # added by the agent",
                              "cell_type": "code", "edit_mode": "insert"}),
            ("NotebookEdit", {"notebook_path": target, "cell_id": "three", "new_source": "z = 30  # rewritten by the agent"}),
        ]),
        text("Done."),
    )

    data = run_playwright("labextension_live.mjs", env={"NB_PATH": NB_NAME}, timeout=400).check().data

    # The turn read the open notebook, unsaved edit included.
    read_result = lab_fake_api.message_requests[1].tool_results[0]["content"]
    assert "x = 100  # my unsaved edit" in read_result
    # Live edit: inserted after "two" with the kernel's id, "three" replaced and cleared,
    # the person's unsaved edit kept, no dialog, the notebook left unsaved.
    assert data["dirtyBeforeTurn"] is True
    after = data["afterTurn1"]
    got = sources(after)
    assert got[:3] == [("load", "%load_ext agent_magic"), ("one", "x = 100  # my unsaved edit"), ("two", "y = 2")]
    new_id, new_src = got[3]
    assert new_src == "w = x + y  # added by the agent" and new_id not in {"load", "one", "two", "three", "ask", "rewind"}
    assert got[4] == ("three", "z = 30  # rewritten by the agent")
    assert after[4]["outputs"] == 0 and after[4]["executionCount"] is None
    assert data["dialogsAfterTurn1"] == 0 and data["dirtyAfterTurn1"] is True
    (session,) = _api.list_sessions(scope=target, home=jupyterlab.agent_home)[-1:]
    sid = data["sessionIds"]["root"]
    cp1 = _api.list_checkpoints(sid, home=jupyterlab.agent_home)[0].checkpoint_id
    assert after[3]["provenance"] == {"session_id": sid, "turn": 1, "checkpoint_id": cp1, "op": "insert"}
    assert after[4]["provenance"] == {"session_id": sid, "turn": 1, "checkpoint_id": cp1, "op": "replace"}
    # Badges, with a tooltip and the cell's diff.
    assert data["badgesAfterTurn1"] == [f"agent · {sid[:8]} · turn 1"] * 2
    assert "Added by agent session" in data["badgeTitle"]
    assert "-z = 3" in data["cellHistory"] and "+z = 30  # rewritten by the agent" in data["cellHistory"]

    # Saving wrote what the person sees, without a dialog.
    assert data["dialogsAfterSave"] == 0
    saved = data["savedFile"]
    assert ["".join(c["source"]) for c in saved["cells"]][1:5] == [
        "x = 100  # my unsaved edit", "y = 2", "w = x + y  # added by the agent", "z = 30  # rewritten by the agent"]
    assert saved["cells"][3]["id"] == new_id and saved["cells"][3]["metadata"]["agent_magic"]["op"] == "insert"

    # %agent rewind restored cells 2-3 live, kept the person's edit, no dialog.
    expected = [("load", "%load_ext agent_magic"), ("one", "x = 100  # my unsaved edit"), ("two", "y = 2"), ("three", "z = 3")]
    assert sources(data["afterMagicRewind"])[:4] == expected
    assert len(data["afterMagicRewind"]) == 6
    assert data["dialogsAfterMagicRewind"] == 0 and data["badgesAfterMagicRewind"] == []

    # Turn 2, then the sidebar: the session and its fork, two checkpoints, a previewed rewind.
    assert len(data["afterTurn2"]) == 7
    fork = data["sessionIds"]["fork"]
    assert fork != sid and data["sessionIds"]["forkIsCurrent"]
    assert _api.get_session_info(fork, home=jupyterlab.agent_home).parent_session_id == sid
    assert "2 turns" in data["sidebarText"] and sid[:8] in data["sidebarText"] and fork[:8] in data["sidebarText"]
    assert data["checkpointCount"] == 2
    assert "z = 30  # rewritten by the agent" in data["previewText"] and "restore" in data["previewText"]
    assert sources(data["afterSidebarRewind"])[:4] == expected
    assert data["dialogsAfterSidebarRewind"] == 0 and data["badgesAfterSidebarRewind"] == []
    final = json.loads(nb_path.read_text())
    assert [c["id"] for c in final["cells"]] == ["load", "one", "two", "three", "ask", "rewind"]
    assert "".join(final["cells"][1]["source"]) == "x = 100  # my unsaved edit"

    # After a kernel restart: the link is gone, the sidebar still lists both sessions, %load_ext links again.
    assert data["linkAfterRestart"] == "none"
    assert data["sessionsAfterRestart"] == 2
    assert data["linkAfterReload"] == "connected"
    assert session.session_id in {sid, fork}
    for name in ("labextension-live-edit", "labextension-rewind-magic", "labextension-sidebar",
                 "labextension-rewind-preview", "labextension-rewind-sidebar"):
        assert (Path(jupyterlab.log_path).parent / f"{name}.png").is_file()
    print("timings (ms):", data["timings"])
