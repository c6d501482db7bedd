"""What a first hour with the widgets showed (issue 14, section 4), checked without a browser.

Sessions are made by real turns against the fake Messages API (``%%agent``
cells in an in-process shell); widgets get the messages anywidget's
``model.send`` and ``model.save_changes`` would deliver. What only a browser
can show (layout, icons, the status bar) is in tests/browser/test_ux_browser.py.
"""

# nbformat and IPython's run_cell are untyped.
# mypy: disable-error-code="no-untyped-call"
# The fixtures are test_widgets.py's, imported: pytest's parameters naming them read as redefinitions.
# ruff: noqa: F811
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import agent_magic as am
from agent_magic._permissions import PermissionResultDeny
from agent_magic.notebook import state, widgets
from agent_magic.notebook._views import sessions_table
from agent_magic.notebook.widgets import CheckpointSlider, SessionBar
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, text, tool_use

# The front end's messages and the fixtures (a shell with the extension, its magics, the
# notebook's scope) are test_widgets.py's own: imported, so pytest finds the fixtures here too.
from .test_widgets import click, front_end_sets, ip, magics, scope  # noqa: F401


def agent(ip: InteractiveShell, body: str, line: str = "") -> None:
    r = ip.run_cell(f"%%agent {line}\n{body}")
    assert r.error_in_exec is None and r.error_before_exec is None, r.error_in_exec or r.error_before_exec


def bar_after(ip: InteractiveShell, magics: Any, body: str, line: str = "") -> SessionBar:
    """Run a real turn, then build its bar the way ``%%agent`` does in a kernel."""
    agent(ip, body, line)
    bar = widgets.turn_controls(magics)
    assert magics.last_view is not None
    return widgets.session_bar(magics, magics.last_result, magics.last_view.provenance, bar)


# -- 1. sessions tell apart at a glance ------------------------------------------------


def test_forks_say_what_they_forked_and_where(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("1"), text("2"), text("3"), text("fresh"))
    first = bar_after(ip, magics, "Load sales.csv, fix the date column and plot monthly totals")
    second = bar_after(ip, magics, "now by region")
    original = first.session_id

    click(first, {"type": "fork"})  # fork at turn 1
    at_one = am.current_session(scope)
    click(second, {"type": "fork"})  # fork at turn 2
    at_two = am.current_session(scope)
    assert first.error == "" and second.error == ""
    agent(ip, "plot it as bars instead")  # continues the fork at turn 2
    bar_after(ip, magics, "Something else entirely", "--new")

    click(second, {"type": "refresh"})  # what the Resume picker shows
    titles = {r["id"]: r["title"] for r in second.sessions}
    assert titles[original] == "Load sales.csv, fix the date column and plot monthly totals"
    assert titles[at_one] == "fork at turn 1 of “Load sales.csv, fix the date column…”"
    assert titles[at_two] == "fork at turn 2 of “Load sales.csv, fix the date column…”"
    new = next(sid for sid in titles if sid not in (original, at_one, at_two))
    assert titles[new] == "Something else entirely"  # a new session: its own first prompt
    assert len(set(titles.values())) == 4

    # the same names in %agent sessions (table and browser) and in the sidebar's API (SessionInfo.summary)
    infos = am.list_sessions(scope=scope)
    table = repr(sessions_table(infos, current=None, scope=scope))
    assert "fork at turn 2 of “Load sales.csv, fix the date column…”" in table
    browser = widgets.session_browser(infos, current=None, scope=scope, magics=magics)
    assert browser is not None
    assert {r["id"]: r["title"] for r in browser.rows} == titles
    assert am.get_session_info(at_two).summary == titles[at_two]

    # a title given by the person wins over the fork's name
    am.rename_session(at_two, "bars")
    click(second, {"type": "refresh"})
    assert {r["id"]: r["title"] for r in second.sessions}[at_two] == "bars"

    # resuming names the session by the same name, with a proper plural
    click(first, {"type": "resume", "session_id": at_one})
    assert first.notice == f"Resumed {at_one[:8]} (fork at turn 1 of “Load sales.csv, fix the date column…”), 1 turn: the next %%agent cell continues it."


def test_a_rewound_conversation_is_named_as_a_fork(
    ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, workspace: Path, scope: str, home: Path
) -> None:
    fake_api.add(tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "a\n"}), text("wrote"), text("two"))
    agent(ip, "write a.txt", "--permission-mode acceptEdits")
    agent(ip, "second turn")
    sid = am.current_session(scope)
    assert sid is not None
    w = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
    assert isinstance(w, CheckpointSlider)
    click(w, {"type": "select", "position": 0})
    front_end_sets(w, conversation=True)
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    forked = w.result["new_session_id"]
    assert am.get_session_info(forked).summary == "fork before turn 1 of “write a.txt”"
    # its first turn makes it a session of its own: named by its own first prompt
    fake_api.add(text("fresh start"))
    agent(ip, "start over: read b.txt instead")
    assert am.current_session(scope) == forked
    assert am.get_session_info(forked).summary == "start over: read b.txt instead"
    SessionStore.forget_instances()
    conn = sqlite3.connect(home / "index.sqlite3", isolation_level=None)
    conn.execute("PRAGMA user_version=0")  # rebuilt from the transcripts: the same names
    conn.close()
    assert am.get_session_info(forked).summary == "start over: read b.txt instead"


def test_an_older_index_gains_fork_names_and_keeps_current_sessions(
    ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, home: Path, scope: str
) -> None:
    fake_api.add(text("1"))
    bar = bar_after(ip, magics, "original prompt")
    click(bar, {"type": "fork"})
    fork = am.current_session(scope)
    SessionStore.forget_instances()
    conn = sqlite3.connect(home / "index.sqlite3", isolation_level=None)
    conn.execute("ALTER TABLE sessions DROP COLUMN label")  # as version 2 made it
    conn.execute("PRAGMA user_version=2")
    conn.close()
    assert am.get_session_info(fork).summary == "fork at turn 1 of “original prompt”"  # type: ignore[arg-type]
    assert am.current_session(scope) == fork  # migrated in place: the notebook's pointer is kept


# -- 6. an interruption is said once; expired prompts collapse -------------------------


def test_stop_is_said_once(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer) -> None:
    # The model's answer waits until Stop is clicked: a real turn is running in this kernel
    # (the cell runs in a thread, as a kernel's shell keeps serving comm messages meanwhile).
    asked, answer = threading.Event(), threading.Event()

    def slow_answer(body: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        answer.wait(60)
        return text("too late")

    fake_api.add(slow_answer)
    bar = widgets.turn_controls(magics)
    outcome: list[Any] = []
    cell = threading.Thread(target=lambda: outcome.append(ip.run_cell("%%agent\ntake your time")), name="running-cell")
    cell.start()
    try:
        assert asked.wait(30), "the turn never asked the model"
        click(bar, {"type": "stop"})  # what the bar's Stop button sends
        assert bar.status == "Stopping…"
    finally:
        cell.join(60)
        answer.set()
    assert outcome, "the cell did not finish"
    err = outcome[0].error_in_exec
    assert err is not None and type(err).__name__ == "AgentTurnError"
    widgets.session_bar(magics, magics.last_result, magics.last_view.provenance, bar)

    said = [err._render_traceback_()[0], magics.last_view.markdown(), bar.status]
    explained = [s for s in said if "session is intact" in s]
    assert explained == [said[0]]  # the cell's line explains, once
    assert "AgentTurnError" not in said[0] and said[0].startswith("Interrupted")
    assert "Interrupted" not in said[1]  # the answer has no note of its own
    assert bar.outcome == "interrupted" and bar.status == "Stopped"


def test_an_expired_approval_collapses(magics: Any, workspace: Path) -> None:
    replies: list[Any] = []
    payload = {"tool_name": "Bash", "tool_input": {"command": "make"}, "context": None}
    w = widgets.approval(magics, payload, replies.append, timeout=30)
    click(w, {"type": "rendered"})
    magics._expire_prompts()  # the turn ended before a decision
    assert w.expired and w.decision == "expired"
    assert len(replies) == 1 and isinstance(replies[0], PermissionResultDeny)
    data, _ = w._repr_mimebundle_()
    assert data["text/plain"] == "agent-magic approval expired (the turn ended before a decision): Allow Bash?"
    click(w, {"type": "decision", "decision": "approve"})  # a late click does nothing
    assert w.decision == "expired" and len(replies) == 1
    decided = widgets.approval(magics, payload, replies.append, timeout=30)
    click(decided, {"type": "decision", "decision": "approve"})
    magics._expire_prompts()
    assert not decided.expired and decided.decision == "approve"


# -- 7. wording -------------------------------------------------------------------------


def test_rewind_summaries_use_proper_plurals(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, workspace: Path, scope: str) -> None:
    fake_api.add(tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "a\n"}), text("wrote"))
    agent(ip, "write a.txt", "--permission-mode acceptEdits")
    sid = am.current_session(scope)
    assert sid is not None
    w = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
    assert isinstance(w, CheckpointSlider)
    click(w, {"type": "select", "position": 0})
    assert w.preview["summary"] == "Would change 1 path."
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert w.result["summary"] == "Changed 1 path."
    click(w, {"type": "select", "position": 0})
    assert w.preview["summary"] == "Nothing to change."  # applied already: nothing left to do


def test_insert_approvals_name_the_anchor(magics: Any, workspace: Path) -> None:
    nb = str(workspace / "nb.ipynb")
    cases = {
        "insert": ({"notebook_path": nb, "cell_id": "df6cbb50", "edit_mode": "insert", "new_source": "x"}, "insert a cell after df6cbb50 in nb.ipynb:"),
        "at start": ({"notebook_path": nb, "edit_mode": "insert", "new_source": "x"}, "insert a cell at the start in nb.ipynb:"),
        "replace": ({"notebook_path": nb, "cell_id": "df6cbb50", "new_source": "x"}, "replace cell df6cbb50 in nb.ipynb:"),
        "delete": ({"notebook_path": nb, "cell_id": "df6cbb50", "edit_mode": "delete", "new_source": ""}, "delete cell df6cbb50 in nb.ipynb:"),
    }
    for tool_input, first_line in cases.values():
        w = widgets.approval(magics, {"tool_name": "NotebookEdit", "tool_input": tool_input, "context": None}, lambda _r: None, timeout=30)
        assert w.preview.splitlines()[0] == first_line


def test_unknown_checkpoint_points_to_the_magic(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("1"))
    agent(ip, "one")
    for line in ("rewind zzzz1234", "fork --at zzzz1234"):
        err = ip.run_cell(f"%agent {line}").error_in_exec
        assert err is not None and type(err).__name__ == "UsageError"
        assert "`%agent checkpoints`" in str(err) and "agent-magic checkpoints" not in str(err)


def test_resume_says_turns_properly(ip: InteractiveShell, fake_api: FakeAnthropicServer, scope: str, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(text("1"))
    agent(ip, "one")
    sid = am.current_session(scope)
    assert sid is not None
    capsys.readouterr()
    ip.run_line_magic("agent", f"resume {sid[:8]}")
    assert "(1 turn)" in capsys.readouterr().out


# -- 2. widgets follow their session, or say they are stale --------------------------------


@pytest.fixture
def notebook_turns(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, scope: str) -> tuple[str, Path]:
    """Turn 1 writes notes.txt; turn 2 inserts a cell after 'calc' in report.ipynb."""
    import nbformat

    report = workspace / "report.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("total = 1", id="calc")]
    nbformat.write(nb, report)
    fake_api.add(
        tool_use("Write", {"file_path": str(workspace / "notes.txt"), "content": "v1\n"}), text("wrote"),
        tool_use("Read", {"file_path": str(report)}),
        tool_use("NotebookEdit", {"notebook_path": str(report), "cell_id": "calc", "edit_mode": "insert", "cell_type": "code", "new_source": "chart()"}),
        text("added a cell"),
    )
    agent(ip, "write notes", "--permission-mode acceptEdits")
    agent(ip, "add a chart cell", "--permission-mode acceptEdits")
    sid = am.current_session(scope)
    assert sid is not None
    return sid, report


def _cell_actions(w: CheckpointSlider) -> list[tuple[str, str]]:
    return [(c["cell_id"], c["action"]) for ch in w.preview.get("changes", []) for c in ch["cells"]]


def test_slider_follows_new_turns(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, notebook_turns: tuple[str, Path]) -> None:
    import nbformat

    sid, report = notebook_turns
    w = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
    assert isinstance(w, CheckpointSlider)
    click(w, {"type": "select", "position": 1})  # before turn 2: the added cell would be removed
    added = [cid for cid, action in _cell_actions(w) if action == "remove"]
    assert len(added) == 1 and w.selected is not None and w.selected["turn"] == 2
    turn_two = w.selected["id"]

    # the person deletes that cell; the agent runs another turn: the slider catches up
    nb = nbformat.read(report, as_version=4)
    nb.cells = [c for c in nb.cells if c.id != added[0]]
    nbformat.write(nb, report)
    fake_api.add(text("three"))
    bar_after(ip, magics, "third turn")
    assert [c["turn"] for c in w.checkpoints] == [1, 2, 3]
    assert w.selected is not None and w.selected["id"] == turn_two  # still on the same turn
    assert added[0] not in [cid for cid, _ in _cell_actions(w)]  # no offer to remove a cell that is gone
    assert w.stale == "" and w.error == ""


def test_slider_checks_before_acting(magics: Any, notebook_turns: tuple[str, Path], fake_api: FakeAnthropicServer) -> None:
    sid, _report = notebook_turns
    w = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
    assert isinstance(w, CheckpointSlider)
    click(w, {"type": "select", "position": 1})
    # a turn ran somewhere this slider does not hear about (another kernel, the CLI)
    import asyncio

    async def elsewhere() -> None:
        async with am.AgentClient(am.AgentOptions(resume=sid, cwd=str(_report.parent))) as client:
            await client.query("from the terminal")
            async for _ in client.receive_response():
                pass

    fake_api.add(text("done"))
    asyncio.run(elsewhere())
    click(w, {"type": "rewind"})  # the first click catches up: same turn selected, preview recomputed
    assert [c["turn"] for c in w.checkpoints] == [1, 2, 3] and w.selected is not None and w.selected["turn"] == 2
    assert w.confirming and w.error == ""

    am.delete_session(sid)
    click(w, {"type": "confirm"})
    assert w.stale == f"No session {sid[:8]} any more (it was deleted): there is nothing left to rewind."
    assert w.error == w.stale and not w.confirming and w.preview == {}


def test_bar_of_a_deleted_session_is_stale(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("1"))
    bar = bar_after(ip, magics, "one")
    am.delete_session(bar.session_id)
    click(bar, {"type": "refresh"})  # opening the Resume picker
    assert bar.stale == f"Session {bar.session_id[:8]} was deleted: Fork is off."
    click(bar, {"type": "fork"})
    assert bar.error != "" and bar.notice == ""


def test_session_table_follows_new_turns(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("1"), text("2"))
    bar_after(ip, magics, "one")
    browser = widgets.session_browser(am.list_sessions(scope=scope), current=am.current_session(scope), scope=scope, magics=magics)
    assert browser is not None and [r["turns"] for r in browser.rows] == [1]
    bar_after(ip, magics, "two", "--new")
    assert sorted(r["turns"] for r in browser.rows) == [1, 1] and browser.current == am.current_session(scope)


# -- 3. cells to re-run are linked (and marked by the extension) ----------------------------


@pytest.fixture
def stale_load_cell(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, scope: str) -> str:
    """The agent rewrote this notebook's 'load' cell and the person ran it: a rewind makes it stale."""
    import nbformat

    nb_path = workspace / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Sales", id="head"), nbformat.v4.new_code_cell("y = 1", id="load")]
    nbformat.write(nb, nb_path)
    fake_api.on_prompt(
        "edit",
        tool_use("Read", {"file_path": str(nb_path)}),
        tool_use("NotebookEdit", {"notebook_path": str(nb_path), "cell_id": "load", "new_source": "y = 2"}),
        text("edited"),
    )
    agent(ip, "edit the load cell", "--permission-mode acceptEdits")
    assert ip.run_cell("y = 2", cell_id="load").success  # the person runs the agent's version
    sid = am.current_session(scope)
    assert sid is not None
    return sid


def test_slider_links_the_cells_to_rerun(ip: InteractiveShell, magics: Any, stale_load_cell: str) -> None:
    w = widgets.checkpoint_slider(magics, stale_load_cell, am.list_checkpoints(stale_load_cell))
    assert isinstance(w, CheckpointSlider)
    click(w, {"type": "select", "position": 0})
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert w.result["stale_cells"] == [
        {
            "cell_id": "load",
            "path": "analysis.ipynb",
            "href": "analysis.ipynb#cell-id=load",  # JupyterLab opens the notebook at the cell
            "index": 1,
            "label": "cell 2",
            "since": ip.execution_count,  # a run from now on clears the extension's marker
        }
    ]
    assert "Re-run these cells" in w.fallback_text() and "cell 2 (load)" in w.fallback_text()


def test_rewind_magic_links_the_cells_to_rerun(ip: InteractiveShell, stale_load_cell: str) -> None:
    from IPython.utils.capture import capture_output

    with capture_output() as shown:
        ip.run_line_magic("agent", "rewind --turn 1")
    md = shown.outputs[-1].data["text/markdown"]
    assert "**Re-run 1 cell:** the kernel ran it after that turn" in md
    assert (
        f'<a href="analysis.ipynb#cell-id=load" class="am-stale-cell" data-am-stale-cell="load" '
        f'data-am-stale-href="analysis.ipynb#cell-id=load" data-am-stale-since="{ip.execution_count}" data-am-stale-path="analysis.ipynb" data-am-stale-index="1" '
        f'title="Go to cell 2 (load)">cell 2</a>'
    ) in md


# -- 9. the demo's scripted answers say what happened --------------------------------------

QUICKSTART_PROMPT = "Load sales.csv, fix the date column and add a cell that computes monthly revenue."


def _answer(ip: InteractiveShell) -> str:
    st = state(ip)
    assert st is not None and st["magics"].last_result is not None
    return str(st["magics"].last_result.result)


@pytest.mark.parametrize("prompt_cell_saved", [True, False])
def test_walkthrough_says_where_the_cell_went(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, prompt_cell_saved: bool
) -> None:
    import nbformat

    from agent_magic.testing.walkthrough import install_walkthrough, sample_sales_csv

    install_walkthrough(fake_api)
    sample_sales_csv(workspace / "sales.csv")
    nb_path = workspace / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Sales", id="head"), nbformat.v4.new_code_cell("x = 1", id="setup")]
    if prompt_cell_saved:
        nb.cells.append(nbformat.v4.new_code_cell(f"%%agent --permission-mode acceptEdits\n{QUICKSTART_PROMPT}", id="ask"))
    nb.cells += [nbformat.v4.new_markdown_cell(f"Notes {i}", id=f"note{i}") for i in range(3)]
    nbformat.write(nb, nb_path)

    agent(ip, QUICKSTART_PROMPT, "--permission-mode acceptEdits")
    ids = [c.id for c in nbformat.read(nb_path, as_version=4).cells]
    new = next(i for i in ids if i not in {"head", "setup", "ask", "note0", "note1", "note2"})
    if prompt_cell_saved:
        assert ids.index(new) == ids.index("ask") + 1
        assert "I added a cell right below this one" in _answer(ip)
    else:  # no prompt cell to anchor to: the cell went to the top, and the answer says so
        assert ids.index(new) == 0
        assert "I added a cell at the top of the notebook" in _answer(ip)


def test_walkthrough_fork_does_not_promise_the_table_back(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    import nbformat

    from agent_magic.testing.walkthrough import install_walkthrough, sample_sales_csv

    install_walkthrough(fake_api)
    sample_sales_csv(workspace / "sales.csv")
    nb_path = workspace / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"%%agent --permission-mode acceptEdits\n{QUICKSTART_PROMPT}", id="ask")]
    nbformat.write(nb, nb_path)
    agent(ip, QUICKSTART_PROMPT, "--permission-mode acceptEdits")
    ip.run_line_magic("agent", "fork")
    agent(ip, "Try a different approach: show monthly revenue as a bar chart instead of a table.", "--permission-mode acceptEdits")
    answer = _answer(ip)
    assert "still has the table" not in answer
    assert "Cells belong to the notebook" in answer and "`%agent rewind --turn 2`" in answer
    cells = nbformat.read(nb_path, as_version=4).cells
    assert "bar chart" in cells[1].source  # what the answer says: the notebook shows the chart...
    ip.run_line_magic("agent", "resume " + str(am.list_sessions()[-1].session_id))  # ...whichever session is continued
    assert "bar chart" in nbformat.read(nb_path, as_version=4).cells[1].source
    agent(ip, "what did you change?")
    assert "NotebookEdit insert a cell in analysis.ipynb" in _answer(ip)


# -- 8. no emoji in tool lines; their diffs coloured as the slider's ---------------------------


def test_tool_lines_have_no_emoji_and_coloured_diffs(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    from agent_magic._messages import AssistantMessage, ToolUseBlock
    from agent_magic.notebook._display import TurnView

    view = TurnView(rich=True)
    view.on_message(AssistantMessage(content=[ToolUseBlock("t1", "Bash", {"command": "make"})], model="m"))
    running = view.markdown()
    assert "⏳" not in running
    assert "<span class='am-tool-running' role='img' aria-label='running'></span> **Bash** `make` — *running…*" in running

    (workspace / "a.txt").write_text("old\n")
    fake_api.add(
        tool_use("Read", {"file_path": str(workspace / "a.txt")}),
        tool_use("Edit", {"file_path": str(workspace / "a.txt"), "old_string": "old", "new_string": "new"}),
        text("edited"),
    )
    agent(ip, "edit a.txt", "--permission-mode acceptEdits")
    assert magics.last_view is not None
    md = magics.last_view.markdown()
    assert "⏳" not in md and "```diff" not in md
    assert "<summary>✓ <b>Edit</b>" in md
    # the same classes as the slider's diff view, with inline colours (they survive nbconvert)
    assert "<span class='am-diff-del' style='display:block;background:color-mix(in srgb, var(--jp-error-color1, #d32f2f) 14%, transparent)'>-old\n</span>" in md
    assert "<span class='am-diff-add' style='display:block;background:color-mix(in srgb, var(--jp-success-color1, #388e3c) 16%, transparent)'>+new\n</span>" in md

    # %agent history marks tool calls in words too (the wrench emoji had no glyph either)
    from agent_magic.notebook._views import history_view

    sid = magics.last_view.provenance["session_id"]
    history = history_view(am.get_session_messages(sid), sid)._repr_markdown_()
    assert "> *tool* `Edit " in history and "🔧" not in history


def test_widget_modules_have_no_emoji() -> None:
    from agent_magic.notebook.widgets._base import STATIC

    emoji = ("⏳", "⌛", "⚠", "✓", "✗", "▾", "▼", "▲", "↳", "🔧")
    for path in STATIC.glob("*.js"):
        found = [e for e in emoji if e in path.read_text(encoding="utf-8")]
        assert not found, f"{path.name} draws {found}: use icon() (inline SVG) instead"


# -- 4. the kernel says busy while an %%agent cell runs ----------------------------------------


@pytest.mark.kernel
def test_kernel_stays_busy_while_the_agent_works(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    """ipykernel 7.4 answers control requests (and comms on subshells) while an async cell awaits,
    each followed by an ``idle`` status: JupyterLab showed "Idle" for the rest of the turn.
    After each such idle the kernel now says ``busy`` again for the running cell."""
    import os

    from jupyter_client.manager import KernelManager

    asked, answer = threading.Event(), threading.Event()

    def slow_answer(body: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        answer.wait(60)
        return text("done")

    fake_api.add(slow_answer)
    env = {**os.environ, **fake_api.env(), "AGENT_MAGIC_HOME": str(home), "JPY_SESSION_NAME": str(workspace / "analysis.ipynb")}
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(workspace), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive("%load_ext agent_magic", timeout=60)
        cell = kc.execute("%%agent\ntake your time")
        assert asked.wait(60), "the turn never asked the model"
        # what JupyterLab sends while the cell runs (for its comms over subshells)
        request = kc.session.msg("create_subshell_request", {})
        kc.control_channel.send(request)
        kc.get_control_msg(timeout=30)
        answer.set()
        statuses = []
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["msg_type"] != "status":
                continue
            parent = msg["parent_header"].get("msg_id")
            statuses.append((msg["content"]["execution_state"], "cell" if parent == cell else "subshell" if parent == request["header"]["msg_id"] else "other"))
            if statuses[-1] == ("idle", "cell"):
                break
    finally:
        answer.set()
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    i = statuses.index(("idle", "subshell"))
    assert statuses[i + 1] == ("busy", "cell"), statuses  # busy again at once
