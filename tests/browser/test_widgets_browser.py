"""agent-magic's widgets in JupyterLab: approval, session bar (Fork, Resume), checkpoint slider
(preview, confirmed rewind with the conversation), session tree, and a reopened notebook.

The kernels talk to the fake Messages API in this process (``lab_fake_api``);
what the browser did is checked on disk and in the session store afterwards.
Screenshots go to ``test-artifacts/widgets-*.png``.
"""

# nbformat is untyped.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

import agent_magic as am
from agent_magic.store.transcript import prompt_text
from agent_magic.testing import FakeAnthropicServer, text, tool_use

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

CELLS = [
    "%load_ext agent_magic",
    "%%agent\nturn one: write notes.txt",
    "%%agent --permission-mode acceptEdits\nturn two: update notes.txt and the report notebook",
    "%%agent --permission-mode acceptEdits\nturn three: add extra.txt",
    "%agent checkpoints",
    "%%agent --new\nanother session: say hello",
    "%agent sessions",
]


def _prompts(sid: str, home: Path) -> list[str]:
    return [prompt_text(m.message) for m in am.get_session_messages(sid, home=home) if m.is_prompt]


@pytest.mark.browser
@pytest.mark.slow
def test_widgets_in_jupyterlab(
    jupyterlab: JupyterLab, lab_fake_api: FakeAnthropicServer, run_playwright: Callable[..., PlaywrightResult]
) -> None:
    work = jupyterlab.root_dir / "widgets"
    work.mkdir()
    flow = work / "flow.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbformat.write(nb, flow)
    report = work / "report.ipynb"
    rnb = nbformat.v4.new_notebook()
    rnb.cells = [nbformat.v4.new_markdown_cell("# Report", id="title"), nbformat.v4.new_code_cell("total = 1", id="calc")]
    nbformat.write(rnb, report)
    notes, extra = work / "notes.txt", work / "extra.txt"

    api = lab_fake_api
    api.reset()
    api.on_prompt("turn one", tool_use("Write", {"file_path": str(notes), "content": "version 1\n"}), text("Wrote notes.txt."))
    api.on_prompt(
        "turn two",
        tool_use("Edit", {"file_path": str(notes), "old_string": "version 1", "new_string": "version 2"}),
        tool_use("Read", {"file_path": str(report)}),
        tool_use("NotebookEdit", {"notebook_path": str(report), "cell_id": "calc", "new_source": "total = 2"}),
        text("Updated both."),
    )
    api.on_prompt("turn three", tool_use("Write", {"file_path": str(extra), "content": "extra\n"}), text("Added extra.txt."))
    api.on_prompt("another session", text("Hello."))

    result = run_playwright("widgets_flow.mjs", env={"NOTEBOOK": "widgets/flow.ipynb"}, timeout=300).check()
    d = result.data
    home = jupyterlab.agent_home

    # approval: the diff of the write, then the decision
    assert "Allow Write(" in d["approvalText"] and "+version 1" in d["approvalText"]
    assert "Approved." in d["approvalAfter"]

    # the bars: one session, turn N of 3, tokens and cost
    original = d["barSessionIds"][0]
    assert d["barSessionIds"] == [original] * 3
    assert [t.split(" turn ")[1][:6] for t in d["barTexts"]] == ["1 of 3", "2 of 3", "3 of 3"]
    assert all(original[:8] in t and re.search(r"\d in( \([\d,]+ cached\))? / \d", t) and "$" in t for t in d["barTexts"])
    # Turns 2 and 3 read the conversation before them from the prompt cache.
    assert all(re.search(r" in \([\d,]+ cached\) / ", t) for t in d["barTexts"][1:]), d["barTexts"]

    # Fork at turn 2: a new session with the conversation up to the end of turn 2
    assert d["forkNotice"].startswith(f"Forked {original[:8]} at turn 2 into ")
    fork = d["forkNotice"].split(" into ")[1][:8]
    fork_id = am.get_session_info(fork, home=home).session_id
    assert _prompts(fork_id, home) == ["turn one: write notes.txt", "turn two: update notes.txt and the report notebook"]
    assert am.get_session_info(fork_id, home=home).parent_session_id == original

    # the slider over the fork's turns, its preview, the confirmation and the rewind
    assert d["ticks"] == ["1", "2", "now"]
    assert d["cardNow"].startswith("Now.")
    assert d["cardWhileDragging"].startswith("Turn 2")  # the card follows the thumb before the kernel answers
    assert d["card"].startswith("Turn 2") and "notes.txt, report.ipynb (1 cell)" in d["card"]
    assert "Rewinding to before turn 2: Would change 2 paths, 1 cell." in d["preview"]
    assert "restore notes.txt" in d["preview"] and "calc" in d["preview"] and "-total = 2" in d["preview"]
    assert d["previewDiffLines"]["add"] >= 2 and d["previewDiffLines"]["del"] >= 2
    assert d["question"].startswith("Confirm rewind to before turn 2?") and "conversation is forked" in d["question"]
    assert "Rewound to before turn 2: Changed 2 paths, 1 cell." in d["result"]
    assert "continues the new session" in d["result"]

    # on disk: turn 2's changes are undone; turn 3 is not in the fork's history, so extra.txt stays
    assert notes.read_text() == "version 1\n"
    assert [c.source for c in nbformat.read(report, as_version=4).cells] == ["# Report", "total = 1"]
    assert extra.read_text() == "extra\n"
    assert [c.source for c in nbformat.read(flow, as_version=4).cells] == CELLS

    # the session tree: original -> fork -> the conversation's fork, indented; the new session a root
    scope = str(flow.resolve())
    rewound = next(i.session_id for i in am.list_sessions(home=home) if i.parent_session_id == fork_id)
    other = next(i.session_id for i in am.list_sessions(scope=scope, home=home) if i.first_prompt == "another session: say hello")
    assert _prompts(rewound, home) == ["turn one: write notes.txt"]
    assert {r["id"]: r["depth"] for r in d["tree"]} == {original: 0, fork_id: 1, rewound: 2, other: 0}
    assert [r["id"] for r in d["tree"]] == [other, original, fork_id, rewound]  # last active first
    assert "current" in d["tree"][0]["text"]
    # fewest turns first: the 1-turn root, then the 3-turn root with its forks under it
    assert [r["id"] for r in d["treeByTurns"]] == [other, original, fork_id, rewound]
    assert d["sortMark"] == {"text": "Turns", "up": True}

    # Resume from the bar's picker: the original is current again
    assert len(d["menu"]) == 4 and any("current" in m for m in d["menu"])
    assert d["resumeNotice"].startswith(f"Resumed {original[:8]} (turn one: write notes.txt), 3 turns")
    assert d["menuHidden"]
    assert am.current_session(scope, home=home) == original

    # reopened without the kernel's widget models: what the saved outputs show
    saved = nbformat.read(flow, as_version=4)
    bar_plain = [o["data"]["text/plain"] for o in saved.cells[3].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert bar_plain and f"agent-magic session {original[:8]} · turn 3 · checkpoint" in bar_plain[0]
    assert "text/html" in saved.cells[4].outputs[0]["data"]
    # our labextension shows each widget's saved summary where the model is gone (see
    # test_widget_fallback.py); the turn's markdown footer above them stays readable too
    assert saved.cells[3].outputs[-1]["data"]["application/vnd.agent-magic.widget+json"]["widget"]
    reopened_turn = d["reopened"][0]
    assert any(f"session {original[:8]} · turn 1 · checkpoint" in t and f"%agent resume {original[:8]}" in t for t in reopened_turn)
    for shot in ("approvalShot", "barShot", "previewShot", "sessionsShot", "reopenedShot", "darkBarShot"):
        assert Path(d[shot]).is_file()
    print("reopened outputs:", d["reopened"])
