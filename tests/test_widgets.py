"""Widgets without a browser: every action driven by the message the front end sends.

Sessions are made by real turns against the fake Messages API (``%%agent``
cells in an in-process shell); widgets get the messages anywidget's
``model.send`` and ``model.save_changes`` would deliver. The last test does
the same through a real kernel's comms.
"""

# nbformat and IPython's run_cell are untyped.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output

import agent_magic as am
from agent_magic._permissions import PermissionResultAllow, PermissionResultDeny
from agent_magic.notebook import state, widgets
from agent_magic.notebook._display import TURN_MIME
from agent_magic.notebook.widgets import CheckpointSlider, SessionBar, SessionBrowser
from agent_magic.store.transcript import prompt_text
from agent_magic.testing import FakeAnthropicServer, text, tool_use

# -- the front end's messages ------------------------------------------------------


def click(w: Any, content: dict[str, Any]) -> None:
    """What ``model.send(content)`` in the widget's ES module delivers to the kernel."""
    w._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def front_end_sets(w: Any, **state_: Any) -> None:
    """What ``model.set(...); model.save_changes()`` delivers."""
    w._handle_msg({"content": {"data": {"method": "update", "state": state_}}, "buffers": []})


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path, workspace: Path, fake_api: FakeAnthropicServer) -> Iterator[InteractiveShell]:
    """The shared shell (see conftest), in a notebook named analysis.ipynb."""
    from .reliability.fuzz import magic_shell

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(workspace / "analysis.ipynb"))
    with magic_shell(workspace) as shell:
        yield shell


@pytest.fixture
def magics(ip: InteractiveShell) -> Any:
    st = state(ip)
    assert st is not None
    return st["magics"]


@pytest.fixture
def scope(workspace: Path) -> str:
    return str(workspace / "analysis.ipynb")


def agent(ip: InteractiveShell, body: str, line: str = "", cell_id: str | None = None) -> None:
    r = ip.run_cell(f"%%agent {line}\n{body}", cell_id=cell_id)
    assert r.error_in_exec is None and r.error_before_exec is None, r.error_in_exec or r.error_before_exec


def bar_after(ip: InteractiveShell, magics: Any, body: str, line: str = "") -> SessionBar:
    """Run a real turn, then build its bar the way ``%%agent`` does in a kernel."""
    agent(ip, body, line)
    bar = widgets.turn_controls(magics)
    assert bar.running
    assert magics.last_view is not None
    return widgets.session_bar(magics, magics.last_result, magics.last_view.provenance, bar)


def prompts(server: FakeAnthropicServer, i: int = -1) -> list[str]:
    body = server.message_requests[i].body
    assert body is not None
    msgs = body["messages"]
    return [b["text"] for m in msgs if m["role"] == "user" for b in m["content"] if b.get("type") == "text"]


def session_prompts(sid: str) -> list[str]:
    return [prompt_text(m.message) for m in am.get_session_messages(sid) if m.is_prompt]


# -- session bar ---------------------------------------------------------------------


def test_bar_shows_the_turn_and_its_fallbacks(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("one done"), text("two done"))
    first = bar_after(ip, magics, "one")
    sid = first.session_id
    assert (first.running, first.outcome, first.turn, first.turns) == (False, "success", 1, 1)
    assert first.checkpoint_id == am.list_checkpoints(sid)[0].checkpoint_id
    assert first.input_tokens and first.output_tokens and first.cost_usd is not None and first.cost_usd > 0
    assert first.current_session == sid and first.saved

    second = bar_after(ip, magics, "two")
    assert (second.turn, second.turns) == (2, 2)
    assert first.turns == 2  # "turn 1 of 2" now

    data, _ = second._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    plain = data["text/plain"]
    assert f"session {sid[:8]}" in plain and "turn 2 ·" in plain and f"checkpoint {second.checkpoint_id[:8]}" in plain
    assert f"%agent resume {sid[:8]}" in plain and f"%agent fork {sid[:8]} --turn 2" in plain
    assert sid[:8] in data["text/html"] and "<script" not in data["text/html"]


def test_bar_fallback_is_rewritten_when_the_turn_ends(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("one done"))
    agent(ip, "one")
    with capture_output() as shown:
        bar = widgets.turn_controls(magics)
        assert magics.last_view is not None
        widgets.session_bar(magics, magics.last_result, magics.last_view.provenance, bar)
    first, update = shown.outputs
    assert "turn running" in first.data["text/plain"]
    assert update.update and update.transient == first.transient and "turn 1 ·" in update.data["text/plain"]


def test_fork_here_keeps_the_conversation_up_to_this_turn(
    ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str
) -> None:
    fake_api.add(text("a"), text("b"), text("c"), text("in the fork"))
    bar_after(ip, magics, "one")
    two = bar_after(ip, magics, "two")
    three = bar_after(ip, magics, "three")
    sid = two.session_id
    original_bytes = json.dumps([m.message for m in am.get_session_messages(sid)])

    click(two, {"type": "fork"})
    assert two.error == ""
    fork = am.current_session(scope)
    assert fork is not None and fork != sid
    assert session_prompts(fork) == ["one", "two"]
    assert am.get_session_info(fork).parent_session_id == sid
    assert two.notice.startswith(f"Forked {sid[:8]} at turn 2 into {fork[:8]}: the next %%agent cell continues the fork")
    assert three.current_session == fork  # every bar knows which session is current
    assert json.dumps([m.message for m in am.get_session_messages(sid)]) == original_bytes

    agent(ip, "after the fork")
    assert prompts(fake_api) == ["one", "two", "after the fork"]
    assert session_prompts(sid) == ["one", "two", "three"]

    # forking at the last turn keeps everything
    click(three, {"type": "fork"})
    assert session_prompts(am.current_session(scope) or "") == ["one", "two", "three"]


def test_actions_refused_while_a_turn_runs(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("a"))
    bar = bar_after(ip, magics, "one")
    sid = bar.session_id
    # The second turn's model answer waits until the clicks below are done: a real turn is
    # running in this kernel the whole time (the cell runs in a thread, as a kernel's shell
    # keeps serving comm messages while a turn runs).
    asked, answer = threading.Event(), threading.Event()

    def slow_answer(body: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        answer.wait(60)
        return text("b")

    fake_api.add(slow_answer)
    outcome: list[Any] = []
    cell = threading.Thread(target=lambda: outcome.append(ip.run_cell("%%agent\ntwo")), name="running-cell")
    cell.start()
    try:
        assert asked.wait(30), "the second turn never asked the model"
        assert magics.runner.active is not None and cell.is_alive()
        click(bar, {"type": "fork"})
        assert "A turn is running in this notebook" in bar.error and "then fork" in bar.error
        assert [i.session_id for i in am.list_sessions()] == [sid]
        slider = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
        assert slider is not None
        click(slider, {"type": "select", "position": 0})
        click(slider, {"type": "rewind"})
        assert "A turn is running" in slider.error and not slider.confirming
        browser = widgets.session_browser(am.list_sessions(scope=scope), current=sid, scope=scope, magics=magics)
        assert browser is not None
        click(browser, {"type": "fork", "session_id": sid})
        assert "A turn is running" in browser.error
        assert len(am.list_sessions()) == 1
        # resuming does not touch the running turn: allowed
        click(bar, {"type": "resume", "session_id": sid})
        assert bar.error == "" and bar.notice.startswith(f"Resumed {sid[:8]}")
        assert cell.is_alive(), "the turn ended before the clicks: they did not test the guard"
    finally:
        answer.set()
        cell.join(60)
    assert not cell.is_alive()
    assert outcome and outcome[0].error_in_exec is None, outcome
    assert session_prompts(sid) == ["one", "two"]
    # The turn over, the same click forks.
    click(bar, {"type": "fork"})
    assert bar.error == "" and len(am.list_sessions()) == 2


def test_fork_of_an_unsaved_turn_is_refused(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("a"))
    bar = bar_after(ip, magics, "one", "--no-persist")
    assert not bar.saved and bar.checkpoint_id == ""
    click(bar, {"type": "fork"})
    assert "not saved" in bar.error
    assert am.list_sessions() == []


def test_resume_picker(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("a"), text("b"), text("c"))
    first = bar_after(ip, magics, "first session")
    second = bar_after(ip, magics, "second session", "--new")
    assert am.current_session(scope) == second.session_id

    click(second, {"type": "refresh"})  # the picker opens
    rows = {r["id"]: r for r in second.sessions}
    assert set(rows) == {first.session_id, second.session_id}
    row = rows[first.session_id]
    assert (row["title"], row["turns"], row["current"]) == ("first session", 1, False)
    assert row["cost"] > 0 and row["last_active"] > 0
    assert rows[second.session_id]["current"]

    click(second, {"type": "resume", "session_id": first.session_id})
    assert second.error == ""
    assert am.current_session(scope) == first.session_id
    assert second.notice == f"Resumed {first.session_id[:8]} (first session), 1 turn: the next %%agent cell continues it."
    assert first.current_session == first.session_id == second.current_session
    agent(ip, "back to the first")
    assert prompts(fake_api) == ["first session", "back to the first"]

    click(second, {"type": "resume", "session_id": "ffffffff-0000"})
    assert "No session 'ffffffff-0000'" in second.error
    assert am.current_session(scope) == first.session_id


def test_stop(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("a"))
    done = bar_after(ip, magics, "one")
    click(done, {"type": "stop"})  # not running: nothing happens
    assert not done.running and done.error == ""
    stuck = widgets.turn_controls(magics)
    # no turn is active in the runner (its cell failed before the result): Stop just ends the bar
    click(stuck, {"type": "stop"})
    assert not stuck.running and "not running" in stuck.status
    # a bar whose turn never reached its result stops offering Stop when the next turn starts
    orphan = widgets.turn_controls(magics)
    widgets.turn_controls(magics)
    assert not orphan.running and "without a result" in orphan.status


# -- checkpoint slider ---------------------------------------------------------------


@pytest.fixture
def three_turns(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, scope: str) -> tuple[str, Path, Path]:
    """Turn 1 writes notes.txt, turn 2 edits it and a notebook cell, turn 3 writes extra.txt."""
    notes = workspace / "notes.txt"
    report = workspace / "report.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", id="calc")]
    nbformat.write(nb, report)
    fake_api.on_prompt("one", tool_use("Write", {"file_path": str(notes), "content": "v1\n"}), text("ok"))
    fake_api.on_prompt(
        "two",
        tool_use("Edit", {"file_path": str(notes), "old_string": "v1", "new_string": "v2"}),
        tool_use("Read", {"file_path": str(report)}),
        tool_use("NotebookEdit", {"notebook_path": str(report), "cell_id": "calc", "new_source": "x = 2"}),
        text("ok"),
    )
    fake_api.on_prompt("three", tool_use("Write", {"file_path": str(workspace / "extra.txt"), "content": "e\n"}), text("ok"))
    for body in ("one", "two", "three"):
        agent(ip, body, "--permission-mode acceptEdits")
    sid = am.current_session(scope)
    assert sid is not None
    return sid, notes, report


def new_slider(magics: Any, sid: str) -> CheckpointSlider:
    w = widgets.checkpoint_slider(magics, sid, am.list_checkpoints(sid))
    assert w is not None
    return w


def test_slider_labels_and_preview(magics: Any, three_turns: tuple[str, Path, Path], workspace: Path) -> None:
    sid, _notes, _report = three_turns
    w = new_slider(magics, sid)
    assert [c["turn"] for c in w.checkpoints] == [1, 2, 3]
    assert w.checkpoints[1]["prompt"] == "two" and w.checkpoints[1]["files"] == ["notes.txt", "report.ipynb"]
    assert w.checkpoints[1]["cells"] == ["report.ipynb#calc"] and w.checkpoints[1]["time"]
    assert w.position == 3 and w.preview == {}  # "now"

    click(w, {"type": "select", "position": 1})
    p = w.preview
    assert (w.position, p["turn"], p["checkpoint_id"]) == (1, 2, w.checkpoints[1]["id"])
    assert p["summary"] == "Would change 3 paths, 1 cell."
    by_path = {c["path"]: c for c in p["changes"]}
    assert by_path["notes.txt"]["action"] == "restore" and "-v2\n+v1" in by_path["notes.txt"]["diff"]
    assert by_path["extra.txt"]["action"] == "delete"
    cell = by_path["report.ipynb"]["cells"][0]
    assert cell["cell_id"] == "calc" and "-x = 2" in cell["diff"] and "+x = 1" in cell["diff"]
    assert p["conflicts"] == []
    # a preview changes nothing
    assert (workspace / "extra.txt").exists()

    click(w, {"type": "select", "position": 3})
    assert w.preview == {}
    click(w, {"type": "select", "position": 99})
    assert w.position == 3


def test_rewind_asks_once_then_restores(ip: InteractiveShell, magics: Any, three_turns: tuple[str, Path, Path], workspace: Path, scope: str) -> None:
    sid, notes, report = three_turns
    w = new_slider(magics, sid)
    click(w, {"type": "confirm"})  # no Rewind click yet
    assert "Click Rewind first" in w.error
    click(w, {"type": "rewind"})  # at "now"
    assert "Move the slider" in w.error and not w.confirming

    click(w, {"type": "select", "position": 1})
    click(w, {"type": "rewind"})
    assert w.confirming and w.error == ""
    assert notes.read_text() == "v2\n"  # nothing happens before the confirmation
    click(w, {"type": "cancel"})
    assert not w.confirming
    click(w, {"type": "confirm"})
    assert "Click Rewind first" in w.error and notes.read_text() == "v2\n"

    click(w, {"type": "rewind"})
    with capture_output() as shown:
        display(w)  # what %agent checkpoints does
        click(w, {"type": "confirm"})
    assert w.error == "" and not w.confirming and not w.busy
    assert notes.read_text() == "v1\n"
    assert not (workspace / "extra.txt").exists()
    assert nbformat.read(report, as_version=4).cells[0].source == "x = 1"
    r = w.result
    assert r["turn"] == 2 and r["summary"] == "Changed 3 paths, 1 cell." and r["new_session_id"] == ""
    assert {c["path"] for c in r["changes"]} == {"notes.txt", "report.ipynb", "extra.txt"}
    assert w.notice.startswith("Rewound to before turn 2: Changed 3 paths")
    assert w.preview == {}
    assert am.current_session(scope) == sid  # files only: the conversation is untouched
    # the saved notebook keeps what the rewind did
    assert "Last rewind:" in w.fallback_text() and "restore: notes.txt" in w.fallback_text()
    shown_first, update = shown.outputs
    assert "Last rewind" not in shown_first.data["text/plain"]
    assert update.update and update.transient == shown_first.transient and update.data["text/plain"] == w.fallback_text()


def test_rewind_with_the_conversation(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, three_turns: tuple[str, Path, Path], scope: str) -> None:
    sid, notes, _report = three_turns
    w = new_slider(magics, sid)
    click(w, {"type": "select", "position": 1})
    front_end_sets(w, conversation=True)
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    new = w.result["new_session_id"]
    assert new and am.current_session(scope) == new
    assert session_prompts(new) == ["one"]
    assert "the next %%agent cell continues" in w.notice and new[:8] in w.notice
    assert notes.read_text() == "v1\n"
    fake_api.on_prompt("again", text("from turn one"))
    agent(ip, "again")
    assert prompts(fake_api) == ["one", "again"]


def test_rewind_conflict_then_force(magics: Any, three_turns: tuple[str, Path, Path], workspace: Path) -> None:
    sid, notes, _report = three_turns
    notes.write_text("mine\n")  # someone else changed it after the agent
    w = new_slider(magics, sid)
    click(w, {"type": "select", "position": 1})
    assert w.preview["conflicts"] == [{"path": "notes.txt", "cell_id": "", "reason": "changed by someone else after the agent's last change"}]
    assert "notes.txt" not in {c["path"] for c in w.preview["changes"]}

    front_end_sets(w, force=True)  # the preview is recomputed with force
    assert w.preview["forced"]
    forced = {c["path"]: c for c in w.preview["changes"]}["notes.txt"]
    assert forced["forced"] and "-mine\n+v1" in forced["diff"]
    assert w.preview["conflicts"][0]["path"] == "notes.txt"

    front_end_sets(w, force=False)
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert notes.read_text() == "mine\n"  # left alone
    assert w.result["conflicts"][0]["path"] == "notes.txt"
    assert not (workspace / "extra.txt").exists()

    front_end_sets(w, force=True)
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert notes.read_text() == "v1\n" and w.result["conflicts"] == []


def test_rewind_flags_stale_cells(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, workspace: Path, scope: str) -> None:
    nb_path = workspace / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("y = 1", id="load")]
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
    w = new_slider(magics, sid)
    click(w, {"type": "select", "position": 0})
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert nbformat.read(nb_path, as_version=4).cells[0].source == "y = 1"
    assert w.result["stale"] == [{"cell_id": "load", "path": "analysis.ipynb"}]
    assert "Re-run these cells" in w.fallback_text() and "load" in w.fallback_text()


def test_slider_of_a_deleted_session_shows_the_error(magics: Any, three_turns: tuple[str, Path, Path]) -> None:
    sid, notes, _ = three_turns
    w = new_slider(magics, sid)
    am.delete_session(sid)
    click(w, {"type": "select", "position": 0})
    assert "No session" in w.error and w.preview == {} and not w.busy
    click(w, {"type": "rewind"})
    click(w, {"type": "confirm"})
    assert "No session" in w.error and not w.confirming
    assert notes.read_text() == "v2\n"


def test_slider_fallbacks(magics: Any, three_turns: tuple[str, Path, Path]) -> None:
    sid, _, _ = three_turns
    w = new_slider(magics, sid)
    data, _ = w._repr_mimebundle_()
    assert f"Checkpoints of {sid[:8]}" in data["text/plain"] and "%agent rewind --turn N" in data["text/plain"]
    assert "<table" in data["text/html"] and "two" in data["text/html"]
    # no checkpoints: the static table explains
    assert widgets.checkpoint_slider(magics, sid, []) is None


# -- session browser -------------------------------------------------------------------


def test_session_browser_tree_resume_fork(ip: InteractiveShell, magics: Any, fake_api: FakeAnthropicServer, scope: str) -> None:
    fake_api.add(text("a"), text("b"), text("c"))
    agent(ip, "root session")
    root = am.current_session(scope)
    agent(ip, "other session", "--new")
    other = am.current_session(scope)
    assert root and other
    ip.run_line_magic("agent", "fork")
    child = am.current_session(scope)
    assert child and child not in (root, other)
    ip.run_line_magic("agent", f"resume {other[:8]}")

    w = widgets.session_browser(am.list_sessions(scope=scope), current=other, scope=scope)  # finds the shell's magics
    assert isinstance(w, SessionBrowser)
    rows = {r["id"]: r for r in w.rows}
    assert rows[child]["parent"] == other and rows[root]["parent"] == ""
    assert rows[other]["current"] and rows[root]["title"] == "root session" and rows[root]["turns"] == 1

    click(w, {"type": "resume", "session_id": root})
    assert w.error == "" and am.current_session(scope) == root and w.current == root
    assert w.notice == f"Resumed {root[:8]} (root session): the next %%agent cell continues it."

    click(w, {"type": "fork", "session_id": root})
    fork = am.current_session(scope)
    assert fork and fork not in (root, other, child)
    assert {r["id"]: r["parent"] for r in w.rows}[fork] == root
    assert w.current == fork and w.notice.startswith(f"Forked {root[:8]} into {fork[:8]}")
    agent(ip, "continue the fork")
    assert prompts(fake_api) == ["root session", "continue the fork"]

    click(w, {"type": "fork", "session_id": "0000dead"})
    assert "No session '0000dead'" in w.error
    front_end_sets(w, sort_key="turns", sort_desc=False)
    assert (w.sort_key, w.sort_desc) == ("turns", False)
    front_end_sets(w, sort_key="nonsense")
    assert w.sort_key == "last_active"

    data, _ = w._repr_mimebundle_()
    assert "Sessions of this notebook" in data["text/plain"] and root[:8] in data["text/plain"]
    assert "<table" in data["text/html"]


# -- approval prompts ---------------------------------------------------------------------


def _payload(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"tool_name": tool, "tool_input": tool_input, "context": None}


@pytest.mark.parametrize(
    ("decision", "expected"),
    [("approve", PermissionResultAllow), ("always", PermissionResultAllow), ("deny", PermissionResultDeny)],
)
def test_approval_decisions(magics: Any, workspace: Path, decision: str, expected: type) -> None:
    replies: list[Any] = []
    w = widgets.approval(magics, _payload("Bash", {"command": "rm -rf build"}), replies.append, timeout=30)
    assert w in magics.open_prompts and w.preview == "rm -rf build" and w.always_rule == "Bash"
    click(w, {"type": "rendered"})
    assert w.rendered and replies == []
    click(w, {"type": "decision", "decision": decision})
    click(w, {"type": "decision", "decision": "deny"})  # a second click is ignored
    assert len(replies) == 1 and isinstance(replies[0], expected)
    assert w.decision == decision
    if decision == "always":
        assert isinstance(replies[0], PermissionResultAllow) and replies[0].updated_permissions
        assert replies[0].updated_permissions[0].rules == ["Bash"]
        assert "always allowed from now on: Bash" in w.status
    assert w.status in w.fallback_text()


def test_approval_preview_and_fallback(magics: Any, workspace: Path) -> None:
    (workspace / "a.py").write_text("x = 1\n")
    replies: list[Any] = []
    w = widgets.approval(magics, _payload("Edit", {"file_path": "a.py", "old_string": "x = 1", "new_string": "x = 2"}), replies.append, timeout=30)
    assert w.preview_kind == "diff" and "-x = 1" in w.preview and "+x = 2" in w.preview
    data, _ = w._repr_mimebundle_()
    assert data["text/plain"].startswith("agent-magic approval: Allow Edit?") and "Waiting for a decision." in data["text/plain"]
    assert "+x = 2" in data["text/html"]
    click(w, {"type": "decision", "decision": "bogus"})
    assert replies == [] and w.decision == ""


def test_headless_approval_is_denied(magics: Any) -> None:
    import threading

    got = threading.Event()
    replies: list[Any] = []

    def reply(r: Any) -> None:
        replies.append(r)
        got.set()

    widgets.approval(magics, _payload("Bash", {"command": "ls"}), reply, timeout=0.05)
    assert got.wait(5)
    assert isinstance(replies[0], PermissionResultDeny) and "headless" in replies[0].message


# -- in a real kernel, through comms -------------------------------------------------------


@pytest.mark.kernel
def test_bar_and_slider_through_a_kernel(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    from .kernel_harness import Kernel

    nb = workspace / "analysis.ipynb"
    notes = workspace / "notes.txt"
    fake_api.on_prompt("one", tool_use("Write", {"file_path": str(notes), "content": "v1\n"}), text("one done"))
    fake_api.on_prompt("two", tool_use("Write", {"file_path": str(notes), "content": "v2\n"}), text("two done"))
    env = {**fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1", "JPY_SESSION_NAME": str(nb)}
    k = Kernel(workspace, env)
    try:
        k.ok("%load_ext agent_magic")
        k.ok("%%agent --permission-mode acceptEdits\none")
        bar1 = k.find_widget("checkpoint_id")
        r2 = k.ok("%%agent --permission-mode acceptEdits\ntwo")
        sid = r2.bundles(TURN_MIME)[-1]["session_id"]
        bar2 = k.find_widget("checkpoint_id", exclude={bar1})
        assert k.comms[bar1]["turns"] == 2 and k.comms[bar2]["turn"] == 2
        # the saved output of the bar is readable without the widget
        plain = [b for b in r2.bundles("text/plain") if "agent-magic session" in str(b)]
        assert plain and "turn 2 ·" in plain[-1]

        k.send_custom(bar1, {"type": "fork"})
        _wait(lambda: bool(k.comms[bar1].get("notice")))
        fork = am.current_session(str(nb))
        assert fork and fork != sid and session_prompts(fork) == ["one"]

        k.ok("%agent checkpoints " + sid[:8])
        slider = k.find_widget("checkpoints")
        k.send_custom(slider, {"type": "select", "position": 1})
        _wait(lambda: bool(k.comms[slider].get("preview")))
        assert "-v2\n+v1" in k.comms[slider]["preview"]["changes"][0]["diff"]
        k.send_custom(slider, {"type": "rewind"})
        _wait(lambda: k.comms[slider].get("confirming") is True)
        k.send_custom(slider, {"type": "confirm"})
        _wait(lambda: bool(k.comms[slider].get("result")))
        assert notes.read_text() == "v1\n"
    finally:
        k.close()


def _wait(cond: Any, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the widget did not change in time")
        time.sleep(0.02)
