"""%%agent in real Jupyter kernels: sessions across restarts, interrupts, clicks while busy, nbclient runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

import agent_magic as am
from agent_magic.notebook._display import TURN_MIME
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .kernel_harness import Kernel

pytestmark = [pytest.mark.kernel]


@pytest.fixture
def kernel_env(fake_api: FakeAnthropicServer, home: Path) -> dict[str, str]:
    return {**fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1"}


@pytest.fixture
def kernel(workspace: Path, kernel_env: dict[str, str]) -> Iterator[Kernel]:
    nb = workspace / "analysis.ipynb"
    k = Kernel(workspace, {**kernel_env, "JPY_SESSION_NAME": str(nb)})
    try:
        yield k
    finally:
        k.close()


def transcript_types(home: Path, sid: str) -> list[str]:
    path = home / "sessions" / sid / "transcript.jsonl"
    return [json.loads(line)["type"] for line in path.read_bytes().splitlines()]


def assert_consistent(home: Path, sid: str) -> None:
    """Every line parses, every tool_use has a result, the last line is a result."""
    path = home / "sessions" / sid / "transcript.jsonl"
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    uses = [b["id"] for r in rows if r["type"] == "assistant" for b in r["message"]["content"] if b["type"] == "tool_use"]
    results = [
        b["tool_use_id"]
        for r in rows
        if r["type"] == "user" and isinstance(r["message"]["content"], list)
        for b in r["message"]["content"]
        if b.get("type") == "tool_result"
    ]
    assert sorted(uses) == sorted(results)
    assert rows[-1]["type"] == "result"


def test_turns_survive_a_kernel_restart(kernel: Kernel, fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(text("First answer."), text("Second answer."), text("Third answer."))
    kernel.ok("%load_ext agent_magic")
    r1 = kernel.ok("%%agent\nfirst")
    r2 = kernel.ok("%%agent\nsecond")
    prov = r2.bundles(TURN_MIME)[-1]
    sid = prov["session_id"]
    assert prov["status"] == "success" and prov["turn"] == 2 and prov["checkpoint_id"]
    assert "Second answer." in r2.text and "First answer." in r1.text
    kernel.restart()
    kernel.ok("%load_ext agent_magic")
    r3 = kernel.ok("%%agent\nthird")
    assert r3.bundles(TURN_MIME)[-1]["session_id"] == sid
    assert r3.bundles(TURN_MIME)[-1]["turn"] == 3
    msgs = fake_api.message_requests[-1].body["messages"]
    assert [m["content"][0]["text"] for m in msgs if m["role"] == "user"] == ["first", "second", "third"]
    assert am.get_session_info(sid).scope == str(workspace / "analysis.ipynb")


def test_streaming_updates_one_region(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("word " * 400, chunk_size=8, delay=0.002))
    kernel.ok("%load_ext agent_magic")
    run = kernel.ok("%%agent\nwrite a lot")
    displays = [o for o in run.outputs if o["msg_type"] == "display_data" and TURN_MIME in o["content"]["data"]]
    updates = [o for o in run.outputs if o["msg_type"] == "update_display_data" and TURN_MIME in o["content"]["data"]]
    assert len(displays) == 1  # one region...
    assert len(updates) >= 2  # ...updated in place while it streamed
    ids = {o["content"]["transient"]["display_id"] for o in displays + updates}
    assert len(ids) == 1
    final = updates[-1]["content"]["data"]["text/markdown"]
    assert final.count("word") == 400


def test_interrupt_during_long_bash_ends_cell_quickly(kernel: Kernel, fake_api: FakeAnthropicServer, home: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "sleep 30"}), text("never reached"))
    kernel.ok("%load_ext agent_magic")
    run = kernel.start("%%agent --permission-mode bypassPermissions\nsleep for a while")
    fake_api.wait_for_requests(1, timeout=30)
    time.sleep(1.0)  # the tool is running now
    t0 = time.monotonic()
    kernel.interrupt()
    assert run.done.wait(10)
    assert run.finished is not None and run.finished - t0 < 2.0
    assert run.error is not None and "Interrupted" in run.error["evalue"]
    sid = am.list_sessions()[0].session_id
    assert_consistent(home, sid)
    rows = [json.loads(line) for line in (home / "sessions" / sid / "transcript.jsonl").read_bytes().splitlines()]
    assert rows[-1]["subtype"] == "interrupted"
    # resumable at once
    fake_api.reset()
    fake_api.add(text("back"))
    r = kernel.ok("%%agent\nare you there?")
    assert "back" in r.text


def test_stop_button_click_is_processed_while_busy(kernel: Kernel, fake_api: FakeAnthropicServer, home: Path) -> None:
    fake_api.add(text("slow " * 300, chunk_size=4, delay=0.02))  # ~6 s of streaming
    kernel.ok("%load_ext agent_magic")
    run = kernel.start("%%agent\ntake your time")
    comm = kernel.find_widget("running")
    fake_api.wait_for_requests(1, timeout=30)
    time.sleep(0.5)
    t0 = time.monotonic()
    kernel.send_custom(comm, {"type": "stop"})
    assert run.done.wait(10)
    assert run.finished is not None and run.finished - t0 < 2.0
    assert run.error is not None and "Interrupted" in run.error["evalue"]
    sid = am.list_sessions()[0].session_id
    assert_consistent(home, sid)
    assert kernel.comms[comm]["running"] is False


def test_approval_clicked_while_busy(kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "echo approved > ok.txt"}), text("done"))
    kernel.ok("%load_ext agent_magic")
    run = kernel.start("%%agent\nwrite ok.txt with bash")
    comm = kernel.find_widget("always_rule")
    kernel.send_custom(comm, {"type": "rendered"})
    kernel.send_custom(comm, {"type": "decision", "decision": "approve"})
    assert run.done.wait(30)
    assert run.error is None, run.text
    assert (workspace / "ok.txt").read_text() == "approved\n"
    assert kernel.comms[comm]["decision"] == "approve"


def test_headless_approval_is_denied_with_advice(kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "touch nope.txt"}), text("understood"))
    kernel.ok("%load_ext agent_magic\n%config AgentMagics.approval_timeout = 0.5")
    run = kernel.ok("%%agent\ntry bash")
    assert not (workspace / "nope.txt").exists()
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"] and "--permission-mode" in res["content"] and "headless" in res["content"]
    assert "understood" in run.text


def test_python_tool_sees_kernel_variables(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(
        tool_use("Variables", {}),
        tool_use("Python", {"code": "total = sum(numbers)\ntotal * 2"}),
        text("The total doubled is 12."),
    )
    kernel.ok("%load_ext agent_magic\nnumbers = [1, 2, 3]")
    kernel.ok("%%agent --allow Python\nwhat is twice the total?")
    variables = fake_api.message_requests[1].tool_results[0]["content"]
    assert "numbers: list, len=3" in variables
    assert fake_api.message_requests[2].tool_results[0]["content"].strip() == "12"
    assert kernel.ok("print(total)").text.strip() == "6"


def test_files_the_python_tool_writes_are_rewound(kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    (workspace / "keep.csv").write_text("a,b\n1,2\n")
    code = "import pathlib\npathlib.Path('saved.csv').write_text('x\\n1\\n')\npathlib.Path('keep.csv').write_text('changed\\n')"
    fake_api.add(tool_use("Python", {"code": code, "description": "save a csv"}), text("Saved."))
    kernel.ok("%load_ext agent_magic")
    kernel.ok("%%agent --allow Python\nsave the table")
    assert (workspace / "saved.csv").read_text() == "x\n1\n" and (workspace / "keep.csv").read_text() == "changed\n"
    out = kernel.ok("%agent rewind --turn 1").text
    assert not (workspace / "saved.csv").exists(), out
    assert (workspace / "keep.csv").read_text() == "a,b\n1,2\n", out


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def test_nbclient_flow_fork_rewind_export_import(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, kernel_env: dict[str, str], tmp_path: Path
) -> None:
    from nbclient import NotebookClient

    other = workspace / "other.ipynb"
    target = nbformat.v4.new_notebook()
    target.cells = [nbformat.v4.new_markdown_cell("# Report"), nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(target, other)
    original = nbformat.read(other, as_version=4)
    cell_id = original.cells[1].id

    fake_api.on_prompt("one", text("one done"))
    fake_api.on_prompt("two", text("two done"))
    fake_api.on_prompt("three", text("three done"))
    fake_api.on_prompt("in the fork", text("fork done"))
    fake_api.on_prompt(
        "edit other",
        tool_use("Read", {"file_path": str(other)}),
        tool_use("NotebookEdit", {"notebook_path": str(other), "cell_id": cell_id, "new_source": "x = 2"}),
        text("edited"),
    )
    fake_api.on_prompt("after import", text("resumed elsewhere"))
    nb_path = workspace / "flow.ipynb"
    env = {**kernel_env, "JPY_SESSION_NAME": str(nb_path)}

    part1 = _notebook(["%load_ext agent_magic", "%%agent\none", "%%agent\ntwo"])
    NotebookClient(part1, kernel_name="python3", resources={"metadata": {"path": str(workspace)}}).execute(env=env)
    sid = part1.cells[2].outputs[0]["data"][TURN_MIME]["session_id"]

    # a new kernel for the same notebook (what a restart or reopening gives) continues the session
    part2 = _notebook([
        "%load_ext agent_magic",
        "%%agent\nthree",
        "%agent fork",
        "%%agent\nin the fork",
        "%%agent --permission-mode acceptEdits\nedit other notebook",
    ])
    NotebookClient(part2, kernel_name="python3", resources={"metadata": {"path": str(workspace)}}).execute(env=env)
    assert part2.cells[1].outputs[0]["data"][TURN_MIME]["session_id"] == sid
    fork_id = part2.cells[3].outputs[0]["data"][TURN_MIME]["session_id"]
    assert fork_id != sid and am.get_session_info(fork_id).parent_session_id == sid
    edit_prov = part2.cells[4].outputs[0]["data"][TURN_MIME]
    assert nbformat.read(other, as_version=4).cells[1].source == "x = 2"

    bundle = tmp_path / "fork.zip"
    part3 = _notebook([
        "%load_ext agent_magic",
        f"%agent rewind {edit_prov['checkpoint_id'][:8]}",
        f"%agent export {fork_id[:8]} {bundle}",
    ])
    NotebookClient(part3, kernel_name="python3", resources={"metadata": {"path": str(workspace)}}).execute(env=env)
    restored = nbformat.read(other, as_version=4)
    assert [c.source for c in restored.cells] == [c.source for c in original.cells]
    assert restored.cells[1].id == cell_id

    # import into a fresh store elsewhere and resume there
    home2 = tmp_path / "home2"
    env2 = {**env, "AGENT_MAGIC_HOME": str(home2)}
    part4 = _notebook(["%load_ext agent_magic", f"%agent import {bundle}", "%%agent\nafter import"])
    NotebookClient(part4, kernel_name="python3", resources={"metadata": {"path": str(workspace)}}).execute(env=env2)
    assert part4.cells[2].outputs[0]["data"][TURN_MIME]["session_id"] == fork_id
    msgs = fake_api.message_requests[-1].body["messages"]
    prompts = [b["text"] for m in msgs if m["role"] == "user" for b in m["content"] if b.get("type") == "text"]
    assert prompts[-2:] == ["edit other notebook", "after import"]
