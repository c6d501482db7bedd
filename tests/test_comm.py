"""The ``agent_magic`` comm in real kernels, with this test playing JupyterLab's part.

:class:`FrontEnd` speaks the front end's side of the protocol (see
``agent_magic/notebook/_comm.py`` and ``labextension/src/link.ts``) over the
kernel's shell and iopub channels, keeps its own "open" notebook (with unsaved
changes) and applies the kernel's cell edits to it as the extension does.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

import agent_magic as am
from agent_magic.testing import FakeAnthropicServer, text, tool_use, tool_uses

from .kernel_harness import Kernel

TARGET = "agent_magic"


def _join(src: Any) -> str:
    return "".join(src) if isinstance(src, list) else str(src or "")


def apply_edit(nb: dict[str, Any], edit: dict[str, Any]) -> bool:
    """What labextension/src/edits.ts does to an open notebook's model."""
    cells: list[dict[str, Any]] = nb["cells"]
    ids = [c.get("id") for c in cells]
    at = ids.index(edit["cell_id"]) if edit["cell_id"] in ids else -1
    after = copy.deepcopy(edit["after_cell"])
    if after is not None:
        after["source"] = _join(after.get("source"))
    if edit["op"] == "delete":
        if at >= 0:
            del cells[at]
        return True
    if edit["op"] == "insert":
        if at >= 0:
            return True
        prev = edit["prev_cell_id"]
        pos = 0 if prev is None else (ids.index(prev) + 1 if prev in ids else min(edit["index"], len(cells)))
        cells.insert(pos, after)
        return True
    if at < 0:
        return False
    cells[at] = after
    return True


class FrontEnd:
    """JupyterLab's end of the ``agent_magic`` comm, for one kernel.

    Parameters
    ----------
    kernel
        The kernel (its iopub messages are shared with the harness's reader).
    root
        The server root; notebooks are named relative to it.
    notebooks
        The open notebooks: relative path -> nbformat JSON (edited in place).
    subshell
        Send on a kernel subshell, as JupyterLab 4.6 does with ipykernel 7.
    answer
        Answer requests (False: a front end that has gone away without closing).
    """

    def __init__(self, kernel: Kernel, root: Path, notebooks: dict[str, dict[str, Any]], *,
                 subshell: bool = True, answer: bool = True, version: int = 1) -> None:
        self.kernel = kernel
        self.root = root
        self.notebooks = notebooks
        self.answer = answer
        self.version = version
        self.use_subshell = subshell
        self.subshell_id: str | None = None
        self.comm_id: str | None = None
        self.welcomes = 0
        self.welcome = threading.Event()
        self.closed = threading.Event()
        self.closes = 0  # counted: connect() clears ``closed`` when the kernel announces again
        self.errors: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.announcements = 0
        self.hook()

    # -- wiring ------------------------------------------------------------
    def hook(self) -> None:
        """Tee the harness's iopub reads to this front end (again after a kernel restart)."""
        kc = self.kernel.kc
        original = kc.get_iopub_msg

        def tee(*args: Any, **kwargs: Any) -> Any:
            msg = original(*args, **kwargs)
            self.on_iopub(msg)
            return msg

        kc.get_iopub_msg = tee  # type: ignore[method-assign]
        self.subshell_id = None
        if self.use_subshell:
            msg = kc.session.msg("create_subshell_request", {})
            kc.control_channel.send(msg)
            reply = kc.get_control_msg(timeout=10)
            self.subshell_id = reply["content"]["subshell_id"]

    def send(self, msg_type: str, content: dict[str, Any]) -> None:
        msg = self.kernel.kc.session.msg(msg_type, content)
        if self.subshell_id is not None:
            msg["header"]["subshell_id"] = self.subshell_id
        self.kernel.kc.shell_channel.send(msg)

    def open_paths(self) -> list[str]:
        return sorted(self.notebooks)

    def connect(self) -> None:
        self.comm_id = uuid.uuid4().hex
        self.welcome.clear()
        self.closed.clear()
        self.send("comm_open", {"comm_id": self.comm_id, "target_name": TARGET, "data": {
            "v": self.version, "type": "hello", "client": "test-page", "root": str(self.root), "open": self.open_paths()}})

    def say_open(self) -> None:
        assert self.comm_id is not None
        self.send("comm_msg", {"comm_id": self.comm_id, "data": {
            "v": 1, "type": "open", "root": str(self.root), "open": self.open_paths()}})

    # -- the kernel's messages (on the harness's reader thread) ------------------
    def on_iopub(self, msg: dict[str, Any]) -> None:
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "comm_open" and content.get("target_name") == TARGET:
            if content.get("data", {}).get("type") == "announce":
                self.announcements += 1
                self.connect()
        elif kind == "comm_close" and content.get("comm_id") == self.comm_id:
            self.comm_id = None
            self.closes += 1
            self.closed.set()
        elif kind == "comm_msg" and content.get("comm_id") == self.comm_id:
            data = content["data"]
            if data.get("type") == "welcome":
                self.welcomes += 1
                self.welcome.set()
            elif data.get("type") == "error":
                self.errors.append(data["error"])
            elif data.get("type") == "request":
                self.requests.append(data)
                if self.answer:
                    self.reply(data)

    def reply(self, req: dict[str, Any]) -> None:
        nb = self.notebooks.get(req["path"])
        if nb is None:
            out: dict[str, Any] = {"ok": False, "error": "not open"}
        elif req["method"] == "read":
            out = {"ok": True, "result": copy.deepcopy(nb)}
        elif req["method"] == "apply":
            ok = apply_edit(nb, req["edit"])
            out = {"ok": ok, "result": True} if ok else {"ok": False, "error": "no such cell"}
        elif req["method"] == "replace_all":
            nb["cells"] = copy.deepcopy(req["notebook"]["cells"])
            out = {"ok": True, "result": True}
        else:
            out = {"ok": False, "error": "unknown method"}
        assert self.comm_id is not None
        self.send("comm_msg", {"comm_id": self.comm_id, "data": {"v": 1, "type": "reply", "id": req["id"], **out}})


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def notebook(workspace: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext agent_magic", id="load"),
        nbformat.v4.new_code_cell("x = 1", id="one"),
        nbformat.v4.new_code_cell("y = 2", id="two"),
        nbformat.v4.new_code_cell("z = 3", id="three"),
    ]
    path = workspace / "live.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def kernel(fake_api: FakeAnthropicServer, home: Path, workspace: Path, notebook: Path) -> Iterator[Kernel]:
    env = {**fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1", "JPY_SESSION_NAME": str(notebook)}
    k = Kernel(workspace, env)
    try:
        yield k
    finally:
        k.close()


def unsaved(notebook: Path) -> dict[str, Any]:
    """The notebook as the person sees it: cell "one" edited, not saved."""
    nb: dict[str, Any] = json.loads(notebook.read_text())
    nb["cells"][1]["source"] = "x = 100  # my unsaved edit"
    return nb


def script_edit(fake_api: FakeAnthropicServer, notebook: Path, prompt: str = "improve") -> None:
    path = str(notebook)
    fake_api.on_prompt(
        prompt,
        tool_use("Read", {"file_path": path}),
        tool_uses([
            ("NotebookEdit", {"notebook_path": path, "cell_id": "two", "new_source": "w = x + y", "cell_type": "code", "edit_mode": "insert"}),
            ("NotebookEdit", {"notebook_path": path, "cell_id": "three", "new_source": "z = 30"}),
        ]),
        text("Done."),
    )


def load_and_link(kernel: Kernel, front: FrontEnd) -> None:
    kernel.ok("%load_ext agent_magic")
    assert front.welcome.wait(10), "the front end got no welcome"


def never_give_up_on_front_ends(kernel: Kernel) -> None:
    """Make the bridge wait an hour for a front end's answer.

    A cell that waited on a front end would then not finish (``kernel.ok`` gives up after
    60 s), so "did not wait" is checked without a clock.
    """
    kernel.ok("get_ipython()._agent_magic_state['comm'].bridge.timeout = 3600")


def agent_comms(kernel: Kernel) -> int:
    """How many comms with our target the kernel has (what a comm_info request lists)."""
    code = f"print(sum(c.target_name == {TARGET!r} for c in get_ipython().kernel.comm_manager.comms.values()))"
    return int(kernel.ok(code).text.strip())


def sources(nb: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["id"], _join(c["source"])) for c in nb["cells"]]


# --------------------------------------------------------------------------- tests


@pytest.mark.kernel
def test_agent_edits_the_open_notebook_live_and_rewinds_it_live(
    kernel: Kernel, fake_api: FakeAnthropicServer, notebook: Path, workspace: Path
) -> None:
    on_disk = notebook.read_bytes()
    model = unsaved(notebook)
    front = FrontEnd(kernel, workspace, {"live.ipynb": model})
    load_and_link(kernel, front)
    script_edit(fake_api, notebook)

    run = kernel.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)

    assert "Done." in run.text
    assert notebook.read_bytes() == on_disk  # the file under the person is untouched
    # Read saw the unsaved edit
    assert "x = 100  # my unsaved edit" in fake_api.message_requests[1].tool_results[0]["content"]
    results = fake_api.message_requests[2].tool_results
    assert all(not r.get("is_error") for r in results), results
    assert "not saved to disk yet" in results[0]["content"]
    got = sources(model)
    assert got[:3] == [("load", "%load_ext agent_magic"), ("one", "x = 100  # my unsaved edit"), ("two", "y = 2")]
    new_id, new_src = got[3]
    assert new_src == "w = x + y" and new_id not in {"load", "one", "two", "three"}
    assert got[4] == ("three", "z = 30")
    replaced = model["cells"][4]
    assert replaced["outputs"] == [] and replaced["execution_count"] is None
    sid = am.list_sessions()[0].session_id
    (cp,) = am.list_checkpoints(sid)
    for cell, op in ((model["cells"][3], "insert"), (replaced, "replace")):
        assert cell["metadata"]["agent_magic"] == {"session_id": sid, "turn": 1, "checkpoint_id": cp.checkpoint_id, "op": op}
    assert [r["method"] for r in front.requests] == ["read", "read", "apply", "read", "apply"]

    # %agent rewind runs synchronously on the main thread: the answers come on the subshell
    # (the cell finishes although the bridge would wait an hour for an unanswered request),
    # and the open notebook is what changed.
    never_give_up_on_front_ends(kernel)
    asked = len(front.requests)
    kernel.ok(f"%agent rewind {cp.checkpoint_id[:8]}")
    assert len(front.requests) > asked
    assert sources(model) == [("load", "%load_ext agent_magic"), ("one", "x = 100  # my unsaved edit"),
                              ("two", "y = 2"), ("three", "z = 3")]
    assert "agent_magic" not in model["cells"][3]["metadata"]
    assert notebook.read_bytes() == on_disk


@pytest.mark.kernel
def test_without_a_front_end_the_file_is_edited_at_once(
    kernel: Kernel, fake_api: FakeAnthropicServer, notebook: Path
) -> None:
    kernel.ok("%load_ext agent_magic")
    # No waiting on a front end that is not there: the bridge would wait an hour.
    never_give_up_on_front_ends(kernel)
    script_edit(fake_api, notebook)
    kernel.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
    assert len(fake_api.message_requests) == 3
    nb = json.loads(notebook.read_text())
    assert [_join(c["source"]) for c in nb["cells"]] == ["%load_ext agent_magic", "x = 1", "y = 2", "w = x + y", "z = 30"]
    assert nb["cells"][3]["metadata"]["agent_magic"]["op"] == "insert"  # provenance on the file path too
    assert nb["cells"][4]["metadata"]["agent_magic"]["op"] == "replace"


@pytest.mark.kernel
def test_a_silent_front_end_times_out_and_the_file_is_used(
    kernel: Kernel, fake_api: FakeAnthropicServer, notebook: Path, workspace: Path
) -> None:
    front = FrontEnd(kernel, workspace, {"live.ipynb": unsaved(notebook)}, answer=False)
    load_and_link(kernel, front)
    kernel.ok("get_ipython()._agent_magic_state['comm'].bridge.timeout = 0.5")
    script_edit(fake_api, notebook)
    kernel.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
    # One unanswered read, then the notebook counts as closed: the file was edited.
    assert [r["method"] for r in front.requests] == ["read"]
    nb = json.loads(notebook.read_text())
    assert [_join(c["source"]) for c in nb["cells"]][3:] == ["w = x + y", "z = 30"]
    # The front end says again what it has open: it is asked again.
    front.answer = True
    front.say_open()
    fake_api.on_prompt("read again", tool_use("Read", {"file_path": str(notebook)}), text("ok"))
    kernel.ok("%%agent\nread again")
    assert [r["method"] for r in front.requests] == ["read", "read"]
    assert "my unsaved edit" in fake_api.message_requests[-1].tool_results[0]["content"]


@pytest.mark.kernel
def test_other_notebooks_and_closed_ones_use_the_file(
    kernel: Kernel, fake_api: FakeAnthropicServer, notebook: Path, workspace: Path
) -> None:
    front = FrontEnd(kernel, workspace, {"elsewhere.ipynb": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
    load_and_link(kernel, front)
    script_edit(fake_api, notebook)
    kernel.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
    assert front.requests == []
    assert len(json.loads(notebook.read_text())["cells"]) == 5


@pytest.mark.kernel
def test_front_end_reconnects_after_restart_and_reload(
    kernel: Kernel, notebook: Path, workspace: Path
) -> None:
    front = FrontEnd(kernel, workspace, {"live.ipynb": unsaved(notebook)})
    load_and_link(kernel, front)
    # A page loaded later asks comm_info whether agent_magic is there: the presence
    # marker and this front end's comm are listed.
    assert agent_comms(kernel) == 2
    kernel.restart()
    front.hook()
    assert agent_comms(kernel) == 0
    load_and_link(kernel, front)
    assert front.announcements == 2 and front.welcomes == 2
    # %reload_ext closes the front end's comm, then announces again and the front end reconnects
    front.welcome.clear()
    closes = front.closes
    kernel.ok("%reload_ext agent_magic")
    assert front.welcome.wait(10)
    assert front.closes == closes + 1, "the reload did not close the old comm"
    assert (front.announcements, front.welcomes) == (3, 3)
    assert agent_comms(kernel) == 2
    kernel.ok("%unload_ext agent_magic")
    assert front.closed.wait(10)
    assert agent_comms(kernel) == 0


@pytest.mark.kernel
def test_other_protocol_versions_are_refused(kernel: Kernel, notebook: Path, workspace: Path) -> None:
    front = FrontEnd(kernel, workspace, {"live.ipynb": unsaved(notebook)}, version=2)
    kernel.ok("%load_ext agent_magic")
    assert front.closed.wait(10)
    assert front.errors and "unsupported" in front.errors[0]
    assert not front.welcome.is_set()


@pytest.mark.kernel
def test_sync_rewind_without_a_subshell_does_not_wait(
    kernel: Kernel, fake_api: FakeAnthropicServer, notebook: Path, workspace: Path
) -> None:
    """A front end sending on the main shell cannot answer a synchronous cell: the file is used at once."""
    model = unsaved(notebook)
    front = FrontEnd(kernel, workspace, {"live.ipynb": model}, subshell=False)
    load_and_link(kernel, front)
    script_edit(fake_api, notebook)
    kernel.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
    assert len(model["cells"]) == 5  # the async cell's requests were answered on the main shell
    cp = am.list_checkpoints(am.list_sessions()[0].session_id)[0].checkpoint_id
    requests = len(front.requests)
    never_give_up_on_front_ends(kernel)  # a wait on the front end would hang the cell
    kernel.ok(f"%agent rewind {cp[:8]}")
    assert len(front.requests) == requests  # nobody was asked
    assert [_join(c["source"]) for c in json.loads(notebook.read_text())["cells"]] == ["%load_ext agent_magic", "x = 1", "y = 2", "z = 3"]


# --------------------------------------------------------------------------- rewinding an open notebook


class RecordingBridge:
    """A front end in the test process: the open notebook, and what it accepts."""

    def __init__(self, path: Path, nb: dict[str, Any], *, accept: int = 99, replace_all: bool = True) -> None:
        self.path = path
        self.nb = nb
        self.accept = accept  # how many cell edits it takes before refusing
        self.calls: list[str] = []
        if replace_all:
            self.replace_all = self._replace_all

    def is_open(self, path: Path) -> bool:
        return path.resolve() == self.path.resolve()

    def read(self, path: Path) -> dict[str, Any]:
        return copy.deepcopy(self.nb)

    def apply(self, path: Path, edit: Any) -> bool:
        self.calls.append(f"apply {edit.op} {edit.cell_id}")
        if self.accept <= 0:
            return False
        self.accept -= 1
        return apply_edit(self.nb, {"op": edit.op, "cell_id": edit.cell_id, "after_cell": edit.after_cell,
                                    "index": edit.index, "prev_cell_id": edit.prev_cell_id})

    def _replace_all(self, path: Path, nb: dict[str, Any]) -> bool:
        self.calls.append("replace_all")
        self.nb["cells"] = copy.deepcopy(nb["cells"])
        return True


@pytest.fixture
def edited(fake_api: FakeAnthropicServer, home: Path, workspace: Path, notebook: Path) -> tuple[str, str, bytes]:
    """A session whose one turn edited the notebook file; (session, checkpoint, the file after)."""
    from .conftest import run_query

    script_edit(fake_api, notebook)
    msgs = run_query("improve the notebook", cwd=str(workspace), scope=str(notebook), permission_mode="acceptEdits")
    sid = msgs[-1].session_id
    assert isinstance(sid, str)
    return sid, am.list_checkpoints(sid)[0].checkpoint_id, notebook.read_bytes()


def open_copy(data: bytes) -> dict[str, Any]:
    nb: dict[str, Any] = json.loads(data)
    nb["cells"][1]["source"] = "x = 100  # unsaved"
    return nb


def test_rewind_of_an_open_notebook_goes_cell_by_cell(edited: tuple[str, str, bytes], notebook: Path) -> None:
    sid, cp, after = edited
    bridge = RecordingBridge(notebook, open_copy(after))
    result = am.rewind_files(sid, cp, bridge=bridge)
    assert result.ok and [c.action for c in result.changes] == ["cells"]
    assert [c.split()[1] for c in bridge.calls] == ["replace", "delete"]  # no replace_all, no file write
    assert sources(bridge.nb) == [("load", "%load_ext agent_magic"), ("one", "x = 100  # unsaved"),
                                  ("two", "y = 2"), ("three", "z = 3")]
    assert notebook.read_bytes() == after


def test_a_refused_cell_edit_falls_back_to_the_whole_notebook_then_the_file(
    edited: tuple[str, str, bytes], notebook: Path
) -> None:
    sid, cp, after = edited
    bridge = RecordingBridge(notebook, open_copy(after), accept=1)
    assert am.rewind_files(sid, cp, bridge=bridge).ok
    assert bridge.calls[-1] == "replace_all" and notebook.read_bytes() == after
    assert _join(bridge.nb["cells"][1]["source"]) == "x = 100  # unsaved"  # the rewind's target has it
    # A front end that takes nothing: the file is written.
    fresh = RecordingBridge(notebook, open_copy(after), accept=0, replace_all=False)
    am.rewind_files(sid, cp, bridge=fresh, force=True)
    assert notebook.read_bytes() != after
