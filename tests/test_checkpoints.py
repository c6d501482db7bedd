"""Checkpoints and rewind of files and folders, driven through the real agent loop.

Every test runs real turns against the fake Messages API server: the tools
write the files, the checkpoint log records them, and the rewinds are checked
against snapshots of the whole directory tree taken before each turn.
Notebook cells, conflicts and the whole-notebook fallback are in
``test_checkpoints_notebook.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import agent_magic as am
from agent_magic import (
    AgentClient,
    AgentOptions,
    AmbiguousIdError,
    CheckpointError,
    CheckpointNotFoundError,
    ResultMessage,
    SessionNotFoundError,
    UserMessage,
)
from agent_magic.store.blobs import BlobStore
from agent_magic.testing import FakeAnthropicServer, Reply, text, tool_use, tool_uses

from .conftest import tree_snapshot

# A 1x1 PNG, as a notebook stores an image output (base64, one line).
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

Turn = tuple[str, list[Reply]]


def make_notebook(path: Path) -> None:
    """A notebook with outputs (stream, execute_result, image/png) and a markdown cell with an attachment."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [
        new_markdown_cell("# Analysis\n![logo](attachment:logo.png)", id="intro", attachments={"logo.png": {"image/png": PNG}}),
        new_code_cell(
            "import math\nprint(math.pi)",
            id="load",
            execution_count=1,
            outputs=[new_output("stream", name="stdout", text="3.141592653589793\n")],
        ),
        new_code_cell(
            "plot()",
            id="plot",
            execution_count=2,
            metadata={"tags": ["figure"]},
            outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480>"})],
        ),
        new_code_cell(
            "1 + 1",
            id="calc",
            execution_count=3,
            outputs=[new_output("execute_result", data={"text/plain": "2"}, execution_count=3)],
        ),
        new_markdown_cell("The end.", id="outro"),
    ]
    nbformat.write(nb, path)


def make_project(ws: Path) -> None:
    (ws / "main.py").write_text("x = 1\nprint(x)\n")
    (ws / "data.txt").write_text("alpha\nbeta\n")
    (ws / "lib").mkdir()
    (ws / "lib" / "util.py").write_text("def f():\n    return 1\n")
    make_notebook(ws / "analysis.ipynb")


def four_turns(ws: Path) -> list[Turn]:
    """(1) Write a new file in a new folder; (2) Edit; (3) NotebookEdit replace+insert+delete; (4) Bash."""
    nb = str(ws / "analysis.ipynb")
    return [
        ("create the package", [tool_use("Write", {"file_path": str(ws / "pkg" / "new.py"), "content": "print('new')\n"}), text("Created.")]),
        (
            "change x",
            [
                tool_use("Read", {"file_path": str(ws / "main.py")}),
                tool_use("Edit", {"file_path": str(ws / "main.py"), "old_string": "x = 1", "new_string": "x = 2"}),
                text("Changed."),
            ],
        ),
        (
            "rework the notebook",
            [
                tool_use("Read", {"file_path": nb}),
                tool_uses(
                    [
                        ("NotebookEdit", {"notebook_path": nb, "cell_id": "plot", "new_source": "plot(x, y)"}),
                        ("NotebookEdit", {"notebook_path": nb, "cell_id": "load", "new_source": "## Notes", "cell_type": "markdown", "edit_mode": "insert"}),
                        ("NotebookEdit", {"notebook_path": nb, "cell_id": "calc", "new_source": "", "edit_mode": "delete"}),
                    ]
                ),
                text("Reworked."),
            ],
        ),
        (
            "make output and fix data",
            [tool_use("Bash", {"command": "mkdir out && echo x > out/y.txt && sed -i 's/alpha/gamma/' data.txt"}), text("Done.")],
        ),
    ]


class Session:
    """Runs turns in one AgentClient and snapshots the tree before each."""

    def __init__(self, api: FakeAnthropicServer, ws: Path, **options: Any) -> None:
        self.api = api
        self.ws = ws
        options.setdefault("cwd", ws)
        options.setdefault("permission_mode", "bypassPermissions")
        self.options = AgentOptions(**options)
        self.snapshots: list[dict[str, bytes | None]] = []
        self.checkpoints: list[str] = []
        self.session_id: str | None = None
        self.client: AgentClient | None = None

    def run(self, turns: list[Turn], after: Callable[[AgentClient], Any] | None = None) -> Any:
        """Run ``turns`` (resuming the session if it ran before), then ``after(client)``."""
        options = self.options
        if self.session_id is not None and options.persist_session:
            options = options.copy(resume=self.session_id, fork_session=False)

        async def go() -> Any:
            async with AgentClient(options) as client:
                for prompt, replies in turns:
                    self.snapshots.append(tree_snapshot(self.ws))
                    self.checkpoints.append(await turn(self.api, client, prompt, replies))
                self.session_id = client.session_id
                if after is not None:
                    return await after(client)
            return None

        return anyio.run(go)


async def turn(api: FakeAnthropicServer, client: AgentClient, prompt: str, replies: list[Reply]) -> str:
    """Run one turn; fail on any tool error; return its checkpoint id."""
    api.add(*replies)
    await client.query(prompt)
    result: ResultMessage | None = None
    async for m in client.receive_response():
        if isinstance(m, UserMessage) and isinstance(m.content, list):
            for b in m.content:
                assert not getattr(b, "is_error", False), f"tool failed: {getattr(b, 'content', b)}"
        if isinstance(m, ResultMessage):
            result = m
    assert result is not None and result.subtype == "success", result
    assert result.checkpoint_id
    return result.checkpoint_id


def rewind(sid: str, cp: str, **kw: Any) -> am.RewindResult:
    return am.rewind_files(sid, cp, **kw)


# ---------------------------------------------------------------------------
# The four-turn session
# ---------------------------------------------------------------------------


@pytest.fixture
def four(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> Session:
    make_project(workspace)
    s = Session(fake_api, workspace)
    s.run(four_turns(workspace))
    final = tree_snapshot(workspace)
    # The turns did what they say.
    assert final["pkg/new.py"] == b"print('new')\n"
    assert final["main.py"] == b"x = 2\nprint(x)\n"
    assert final["out/y.txt"] == b"x\n" and final["data.txt"] == b"gamma\nbeta\n"
    cells = nbformat.reads(final["analysis.ipynb"].decode(), 4).cells  # type: ignore[union-attr]
    assert [c.get("id") for c in cells][:2] == ["intro", "load"] and "calc" not in [c.get("id") for c in cells]
    s.snapshots.append(final)
    return s


def test_rewind_each_checkpoint_newest_first(four: Session) -> None:
    sid = four.session_id
    assert sid
    for k in (3, 2, 1, 0):
        res = rewind(sid, four.checkpoints[k])
        assert res.ok, res
        assert tree_snapshot(four.ws) == four.snapshots[k], f"rewind to turn {k + 1}"
    # Nothing left to do: a second rewind to the first checkpoint changes nothing.
    again = rewind(sid, four.checkpoints[0])
    assert again.ok and again.changes == [] and tree_snapshot(four.ws) == four.snapshots[0]


def test_rewind_straight_to_the_first_checkpoint(four: Session) -> None:
    assert four.session_id
    res = rewind(four.session_id, four.checkpoints[0])
    assert res.ok, res
    assert tree_snapshot(four.ws) == four.snapshots[0]
    assert not (four.ws / "pkg").exists() and not (four.ws / "out").exists()
    assert sorted(res.dirs_removed) == ["out", "pkg"]
    actions = {c.path: c.action for c in res.changes}
    assert actions == {"pkg/new.py": "delete", "main.py": "restore", "analysis.ipynb": "cells", "out/y.txt": "delete", "data.txt": "restore"}
    nb_change = next(c for c in res.changes if c.path == "analysis.ipynb")
    by_action = {c.action: c.cell_id for c in nb_change.cells}
    assert len(nb_change.cells) == 3 and by_action["reinsert"] == "calc" and by_action["restore"] == "plot"
    assert by_action["remove"] not in ("intro", "load", "plot", "calc", "outro")  # the inserted cell
    assert ("analysis.ipynb", "plot") in res.restored_cells


def test_rewind_to_the_middle_then_undo_the_rewind(four: Session) -> None:
    """A rewind is itself a change: rewinding to a later checkpoint first undoes the rewind."""
    sid = four.session_id
    assert sid
    assert rewind(sid, four.checkpoints[0]).ok
    assert tree_snapshot(four.ws) == four.snapshots[0]
    # "Just before turn 4" is after turns 1-3 and the rewind above: undoing the rewind, then turn 4.
    res = rewind(sid, four.checkpoints[3])
    assert res.ok, res
    assert tree_snapshot(four.ws) == four.snapshots[3]
    res = rewind(sid, four.checkpoints[2])
    assert res.ok, res
    assert tree_snapshot(four.ws) == four.snapshots[2]


def test_rewind_keeps_what_it_overwrote(four: Session, home: Path) -> None:
    sid = four.session_id
    assert sid
    (four.ws / "main.py").write_text("x = 99  # mine\n")
    res = rewind(sid, four.checkpoints[1], force=True)
    assert res.ok and (four.ws / "main.py").read_text() == "x = 1\nprint(x)\n"
    rec = [json.loads(x) for x in (home / "sessions" / sid / "checkpoints.jsonl").read_bytes().splitlines()][-1]
    assert rec["r"] == "rewind" and rec["to"] == four.checkpoints[1] and rec["force"] is True
    saved = {s["path"]: s["before"] for s in rec["steps"] if s["kind"] == "file"}
    blobs = BlobStore(home / "blobs")
    assert blobs.get(saved["main.py"]) == b"x = 99  # mine\n"
    assert blobs.get(saved["data.txt"]) == b"gamma\nbeta\n"
    assert blobs.get(saved["out/y.txt"]) == b"x\n"
    # The cells it replaced are kept too, as blobs.
    cell_steps = [s for s in rec["steps"] if s["kind"] == "cell"]
    assert {s["cell_id"] for s in cell_steps} >= {"plot", "calc"}
    plot_now = next(s for s in cell_steps if s["cell_id"] == "plot" and s["op"] == "replace")
    assert json.loads(blobs.get(plot_now["before"]))["source"] == ["plot(x, y)"]


def test_dry_run_touches_nothing_and_shows_diffs(four: Session, home: Path) -> None:
    sid = four.session_id
    assert sid
    records = home / "sessions" / sid / "checkpoints.jsonl"
    before_records = records.read_bytes()
    n_blobs = len(list((home / "blobs").rglob("*")))
    res = rewind(sid, four.checkpoints[0], dry_run=True)
    assert tree_snapshot(four.ws) == four.snapshots[4]
    assert records.read_bytes() == before_records and len(list((home / "blobs").rglob("*"))) == n_blobs
    assert res.dry_run and res.ok
    by = {c.path: c for c in res.changes}
    assert "-x = 2\n+x = 1\n" in by["main.py"].diff
    assert "-gamma\n+alpha\n" in by["data.txt"].diff
    assert "-print('new')" in by["pkg/new.py"].diff and by["pkg/new.py"].action == "delete"
    nb = by["analysis.ipynb"]
    assert nb.action == "cells" and nb.diff == ""
    cells = {c.cell_id: c for c in nb.cells}
    assert "-plot(x, y)\n+plot()\n" in cells["plot"].diff and "No newline" not in cells["plot"].diff
    assert cells["calc"].action == "reinsert" and "+1 + 1" in cells["calc"].diff
    assert sorted(res.dirs_removed) == ["out", "pkg"]
    assert "Would change 5 paths" in res.summary()


def test_person_edits_are_conflicts_unless_forced(four: Session) -> None:
    sid = four.session_id
    assert sid
    (four.ws / "main.py").write_text("x = 3  # my fix\n")
    (four.ws / "out" / "mine.txt").write_text("keep me\n")
    res = rewind(sid, four.checkpoints[0])
    assert [(c.path, c.cell_id) for c in res.conflicts] == [("main.py", None)]
    assert "someone else" in res.conflicts[0].reason and not res.ok
    assert (four.ws / "main.py").read_text() == "x = 3  # my fix\n"
    # Everything else was rewound; the folder with the person's file stays.
    assert not (four.ws / "pkg").exists() and (four.ws / "data.txt").read_text() == "alpha\nbeta\n"
    assert (four.ws / "out" / "mine.txt").exists() and not (four.ws / "out" / "y.txt").exists()
    assert "out" not in res.dirs_removed and any("out" in n and "not empty" in n for n in res.notes)
    res = rewind(sid, four.checkpoints[0], force=True)
    assert res.ok and (four.ws / "main.py").read_text() == "x = 1\nprint(x)\n"


def test_a_deleted_file_is_a_conflict_and_force_brings_it_back(four: Session) -> None:
    assert four.session_id
    (four.ws / "main.py").unlink()
    res = rewind(four.session_id, four.checkpoints[1])
    assert [c.path for c in res.conflicts] == ["main.py"] and not (four.ws / "main.py").exists()
    res = rewind(four.session_id, four.checkpoints[1], force=True)
    assert res.ok and (four.ws / "main.py").read_text() == "x = 1\nprint(x)\n"
    assert next(c for c in res.changes if c.path == "main.py").action == "create"


# ---------------------------------------------------------------------------
# Bash: folders, deletions, modes, big files, ignored folders
# ---------------------------------------------------------------------------


def test_bash_deletions_and_folders_come_back(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "docs" / "api").mkdir(parents=True)
    (workspace / "docs" / "api" / "index.md").write_text("# API\n")
    (workspace / "docs" / "empty").mkdir()
    (workspace / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (workspace / "tool.sh").chmod(0o755)
    s = Session(fake_api, workspace)
    s.run(
        [
            ("clean up", [tool_use("Bash", {"command": "rm -r docs && chmod 600 tool.sh && mkdir -p a/b/c"}), text("ok")]),
            ("more", [tool_use("Bash", {"command": "echo 1 > a/b/c/f.txt && rmdir a/b/c && echo 2 > a/g.txt || true"}), text("ok")]),
        ]
    )
    assert not (workspace / "docs").exists() and (workspace / "a" / "b").is_dir()
    assert s.session_id
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok, res
    assert tree_snapshot(workspace) == s.snapshots[0]
    assert (workspace / "docs" / "empty").is_dir() and (workspace / "docs" / "api" / "index.md").read_text() == "# API\n"
    assert (workspace / "tool.sh").stat().st_mode & 0o777 == 0o755
    assert "docs/empty" in res.dirs_created and "a" in res.dirs_removed


def test_bash_changes_after_resume_keep_size_and_second(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    """A new process reuses the last scan; a file rewritten with the same size right after it is still seen."""
    s = Session(fake_api, workspace)
    s.run([("a", [tool_use("Bash", {"command": "echo aaaa > a.txt && echo 1 > keep.txt"}), text("ok")])])
    assert s.session_id and (home / "sessions" / s.session_id / "bash-manifest").exists()
    s.run([("b", [tool_use("Bash", {"command": "echo bbbb > a.txt"}), text("ok")])])  # resumed: a new log
    s.run([("c", [tool_use("Bash", {"command": "echo cccc > a.txt"}), text("ok")])])
    assert am.list_checkpoints(s.session_id)[2].files == ["a.txt"]
    for k in (2, 1, 0):
        assert am.rewind_files(s.session_id, s.checkpoints[k]).ok
        assert tree_snapshot(workspace) == s.snapshots[k]


def test_mode_of_edited_and_restored_files(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    script = workspace / "run.sh"
    script.write_text("echo one\n")
    script.chmod(0o750)
    s = Session(fake_api, workspace)
    s.run(
        [
            (
                "edit the script",
                [
                    tool_use("Read", {"file_path": str(script)}),
                    tool_use("Edit", {"file_path": str(script), "old_string": "one", "new_string": "two"}),
                    text("ok"),
                ],
            ),
            ("remove it", [tool_use("Bash", {"command": "rm run.sh"}), text("ok")]),
            ("new file", [tool_use("Write", {"file_path": str(workspace / "new.txt"), "content": "n\n"}), text("ok")]),
            ("nothing", [text("ok")]),
        ]
    )
    assert s.session_id
    new_mode = (workspace / "new.txt").stat().st_mode
    assert am.rewind_files(s.session_id, s.checkpoints[1]).ok
    assert script.read_text() == "echo two\n" and script.stat().st_mode & 0o777 == 0o750
    assert am.rewind_files(s.session_id, s.checkpoints[0]).ok
    assert script.read_text() == "echo one\n" and script.stat().st_mode & 0o777 == 0o750
    assert not (workspace / "new.txt").exists()
    # Undoing the rewinds (back to just before turn 4) recreates new.txt with its mode.
    assert am.rewind_files(s.session_id, s.checkpoints[3]).ok
    assert not script.exists() and (workspace / "new.txt").stat().st_mode == new_mode


def test_big_files_are_not_backed_up_but_created_ones_are_removed(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    (workspace / "big.bin").write_bytes(b"b" * 5000)
    (workspace / "small.txt").write_text("small\n")
    s = Session(fake_api, workspace, checkpoint_max_file_bytes=1000)
    s.run(
        [
            (
                "make data",
                [tool_use("Bash", {"command": "head -c 4000 /dev/zero > new.bin && echo more >> big.bin && echo s2 > small.txt"}), text("ok")],
            )
        ]
    )
    assert s.session_id
    dry = am.rewind_files(s.session_id, s.checkpoints[0], dry_run=True)
    assert dry.unrestorable == ["big.bin"]
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.unrestorable == ["big.bin"] and not res.ok
    assert not (workspace / "new.bin").exists(), "a big file the agent created is recognised by size and mtime"
    assert (workspace / "small.txt").read_text() == "small\n"
    # The big file is not in the blob store.
    sizes = [p.stat().st_size for p in (home / "blobs").rglob("*") if p.is_file()]
    assert max(sizes) < 1000


def test_big_file_changed_by_someone_else_is_a_conflict(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    s = Session(fake_api, workspace, checkpoint_max_file_bytes=100)
    s.run([("make data", [tool_use("Bash", {"command": "head -c 4000 /dev/zero > new.bin"}), text("ok")])])
    assert s.session_id
    time.sleep(0.01)
    with open(workspace / "new.bin", "ab") as f:
        f.write(b"mine")
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert [c.path for c in res.conflicts] == ["new.bin"] and (workspace / "new.bin").exists()


def test_bash_ignores_configured_folders_and_the_store(fake_api: FakeAnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "proj"
    ws.mkdir()
    store = ws / ".store"  # the session store inside the workspace is never tracked
    monkeypatch.setenv("AGENT_MAGIC_HOME", str(store))
    s = Session(fake_api, ws, checkpoint_ignore=(".git", "node_modules", "cache"))
    s.run(
        [
            (
                "build",
                [tool_use("Bash", {"command": "mkdir -p .git node_modules/x cache && echo 1 > .git/HEAD && echo 2 > node_modules/x/i.js && echo 3 > cache/c && echo 4 > kept.txt"}), text("ok")],
            )
        ]
    )
    assert s.session_id
    info = am.list_checkpoints(s.session_id)
    assert info[0].files == ["kept.txt"]
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok and not (ws / "kept.txt").exists() and (ws / ".git" / "HEAD").exists()


# ---------------------------------------------------------------------------
# No window: many turns, restarts, resume, forks
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_150_turns_then_back_to_the_first(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "log.txt").write_text("0\n")
    turns: list[Turn] = []
    for k in range(150):
        calls: list[Reply] = [tool_use("Write", {"file_path": str(workspace / f"f{k:03d}.txt"), "content": f"{k}\n"})]
        if k % 10 == 0:
            calls.append(tool_use("Bash", {"command": f"echo {k} >> log.txt"}))
        turns.append((f"turn {k}", [*calls, text("ok")]))
    s = Session(fake_api, workspace)
    s.run(turns)
    assert s.session_id and len(s.checkpoints) == 150
    assert len(am.list_checkpoints(s.session_id)) == 150
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok and len(res.changes) == 151
    assert tree_snapshot(workspace) == s.snapshots[0]


def test_rewind_in_a_fresh_process(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    """A subprocess runs the turns; this process, then the CLI in another, rewind."""
    make_project(workspace)
    snapshots = []
    for t in four_turns(workspace):
        fake_api.add(*t[1])
    script = tmp_path / "run_turns.py"
    script.write_text(
        "import sys, anyio\n"
        "from agent_magic import AgentClient, AgentOptions, ResultMessage\n"
        "prompts = sys.argv[2:]\n"
        "async def main():\n"
        "    async with AgentClient(AgentOptions(cwd=sys.argv[1], permission_mode='bypassPermissions')) as c:\n"
        "        for p in prompts:\n"
        "            input()\n"  # wait for the parent's snapshot
        "            await c.query(p)\n"
        "            async for m in c.receive_response():\n"
        "                if isinstance(m, ResultMessage):\n"
        "                    print(c.session_id, m.checkpoint_id, m.subtype, flush=True)\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, **fake_api.env()}
    cps = []
    sid = ""
    with subprocess.Popen(
        [sys.executable, str(script), str(workspace), *(p for p, _ in four_turns(workspace))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    ) as proc:
        assert proc.stdin and proc.stdout
        for _ in range(4):
            snapshots.append(tree_snapshot(workspace))
            proc.stdin.write("\n")
            proc.stdin.flush()
            sid, cp, subtype = proc.stdout.readline().split()
            assert subtype == "success"
            cps.append(cp)
        proc.stdin.close()
        assert proc.wait(30) == 0
    snapshots.append(tree_snapshot(workspace))

    res = am.rewind_files(sid, cps[2])
    assert res.ok and tree_snapshot(workspace) == snapshots[2]

    cli = [sys.executable, "-m", "agent_magic.cli"]
    out = subprocess.run([*cli, "checkpoints", sid[:8]], capture_output=True, text=True, env=env, check=True).stdout
    assert all(cp[:8] in out for cp in cps) and "rework the notebook" in out
    dry = subprocess.run([*cli, "rewind", sid[:8], cps[0][:8], "--dry-run", "--diff"], capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "-x = 2" in dry.stdout and "delete" in dry.stdout and tree_snapshot(workspace) == snapshots[2]
    done = subprocess.run([*cli, "rewind", sid[:8], cps[0][:8]], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree_snapshot(workspace) == snapshots[0]
    js = subprocess.run([*cli, "rewind", sid[:8], cps[3][:8], "--json"], capture_output=True, text=True, env=env)
    assert js.returncode == 0 and json.loads(js.stdout)["checkpoint_id"] == cps[3]
    assert tree_snapshot(workspace) == snapshots[3]


def test_a_bash_command_cut_off_by_a_crash_is_recovered(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    """The process dies during Bash: the change is found from the manifest written before it, and rewound."""
    (workspace / "keep.txt").write_text("original\n")
    for ignored in (".git/HEAD", "data/raw.csv"):  # skipped by the session's scans: never the agent's
        (workspace / ignored).parent.mkdir()
        (workspace / ignored).write_text("mine\n")
    before = tree_snapshot(workspace)
    fake_api.add(tool_use("Bash", {"command": "echo new > crash.txt && echo changed > keep.txt && mkdir made && kill -9 $PPID; sleep 5"}))
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys, anyio\n"
        "from agent_magic import AgentClient, AgentOptions\n"
        "async def main():\n"
        "    opts = AgentOptions(cwd=sys.argv[1], permission_mode='bypassPermissions', checkpoint_ignore=('.git', 'data'))\n"
        "    async with AgentClient(opts) as c:\n"
        "        await c.query('crash please')\n"
        "        async for m in c.receive_response():\n"
        "            pass\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, **fake_api.env()}
    proc = subprocess.run([sys.executable, str(script), str(workspace)], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -9
    (sid,) = [s.session_id for s in am.list_sessions()]
    (cp,) = am.list_checkpoints(sid)
    assert cp.files == []  # the Bash record was never written
    assert list((home / "sessions" / sid).glob("bash-*.manifest"))
    res = am.rewind_files(sid, cp.checkpoint_id)
    assert res.ok, res
    assert tree_snapshot(workspace) == before
    assert not list((home / "sessions" / sid).glob("bash-*.manifest"))
    assert set(am.list_checkpoints(sid)[0].files) == {"crash.txt", "keep.txt", "made"}


def test_store_inside_the_workspace(fake_api: FakeAnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "proj"
    ws.mkdir()
    make_project(ws)
    monkeypatch.setenv("AGENT_MAGIC_HOME", str(ws / ".agent-magic"))
    s = Session(fake_api, ws)
    s.run(four_turns(ws))
    assert s.session_id
    snap = [{k: v for k, v in t.items() if not k.startswith(".agent-magic")} for t in s.snapshots]
    for k in (3, 0):
        res = am.rewind_files(s.session_id, s.checkpoints[k])
        assert res.ok, res
        now = tree_snapshot(ws, ignore=(".agent-magic",))
        assert now == snap[k]


def test_rewind_after_resume(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    make_project(workspace)
    turns = four_turns(workspace)
    first = Session(fake_api, workspace)
    first.run(turns[:2])
    assert first.session_id
    second = Session(fake_api, workspace, resume=first.session_id)

    async def rewind_in_client(client: AgentClient) -> am.RewindResult:
        return await client.rewind_files(first.checkpoints[0])

    res = second.run(turns[2:], after=rewind_in_client)
    assert second.session_id == first.session_id
    assert res.ok, res
    assert tree_snapshot(workspace) == first.snapshots[0]


def test_fork_rewinds_to_a_checkpoint_before_the_fork(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    make_project(workspace)
    turns = four_turns(workspace)
    original = Session(fake_api, workspace)
    original.run(turns[:2])
    assert original.session_id
    fork = Session(fake_api, workspace, resume=original.session_id, fork_session=True)
    fork.run(turns[2:])
    assert fork.session_id and fork.session_id != original.session_id
    cps = [c.checkpoint_id for c in am.list_checkpoints(fork.session_id)]
    assert cps == original.checkpoints + fork.checkpoints
    res = am.rewind_files(fork.session_id, original.checkpoints[1])
    assert res.ok, res
    assert tree_snapshot(workspace) == original.snapshots[1]
    res = am.rewind_files(fork.session_id, original.checkpoints[0][:6])
    assert res.ok and tree_snapshot(workspace) == original.snapshots[0]


def test_conversation_rewind_forks_before_the_prompt(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    make_project(workspace)
    s = Session(fake_api, workspace)
    s.run(four_turns(workspace))
    sid = s.session_id
    assert sid
    transcript = home / "sessions" / sid / "transcript.jsonl"
    original = transcript.read_bytes()
    res = am.rewind(sid, s.checkpoints[2], conversation=True)
    assert res.ok and res.new_session_id and res.new_session_id != sid
    assert tree_snapshot(workspace) == s.snapshots[2]
    assert transcript.read_bytes() == original
    msgs = am.get_session_messages(res.new_session_id)
    prompts = [m.uuid for m in msgs if m.type == "user" and m.is_prompt]
    assert prompts == s.checkpoints[:2]
    assert msgs[-1].type == "assistant"  # ends with turn 2's answer, before turn 3's prompt
    assert am.current_session(str(workspace)) == res.new_session_id
    # The fork keeps the earlier checkpoints, rewindable.
    assert [c.checkpoint_id for c in am.list_checkpoints(res.new_session_id)] == s.checkpoints[:2]
    assert am.rewind_files(res.new_session_id, s.checkpoints[0]).ok
    assert tree_snapshot(workspace) == s.snapshots[0]


def test_conversation_rewind_to_the_first_prompt(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    make_project(workspace)
    s = Session(fake_api, workspace)
    s.run(four_turns(workspace)[:2])
    assert s.session_id
    res = am.rewind(s.session_id, s.checkpoints[0], conversation=True)
    assert res.new_session_id and am.get_session_messages(res.new_session_id) == []
    assert tree_snapshot(workspace) == s.snapshots[0]


def test_files_outside_cwd(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "shared"
    other.mkdir()
    (other / "cfg.toml").write_text("a = 1\n")
    s = Session(fake_api, workspace, permission_mode="acceptEdits", add_dirs=[other])
    s.run(
        [
            (
                "edit shared config",
                [
                    tool_use("Read", {"file_path": str(other / "cfg.toml")}),
                    tool_use("Edit", {"file_path": str(other / "cfg.toml"), "old_string": "a = 1", "new_string": "a = 2"}),
                    tool_use("Write", {"file_path": str(other / "new" / "x.txt"), "content": "x\n"}),
                    text("ok"),
                ],
            )
        ]
    )
    assert s.session_id
    assert am.list_checkpoints(s.session_id)[0].files == [str(other / "cfg.toml"), str(other / "new" / "x.txt")]
    before = tree_snapshot(other)
    dry = am.rewind_files(s.session_id, s.checkpoints[0], dry_run=True)
    assert tree_snapshot(other) == before and {c.path for c in dry.changes} == {str(other / "cfg.toml"), str(other / "new" / "x.txt")}
    res = am.rewind_files(s.session_id, s.checkpoints[0])
    assert res.ok and (other / "cfg.toml").read_text() == "a = 1\n" and not (other / "new").exists()


# ---------------------------------------------------------------------------
# Ids and errors
# ---------------------------------------------------------------------------


def test_checkpoint_ids_and_errors(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    turns: list[Turn] = [
        (f"t{k}", [tool_use("Write", {"file_path": str(workspace / f"{k}.txt"), "content": "x"}), text("ok")]) for k in range(20)
    ]
    s = Session(fake_api, workspace)
    s.run(turns)
    sid = s.session_id
    assert sid
    infos = am.list_checkpoints(sid)
    assert [i.checkpoint_id for i in infos] == s.checkpoints and [i.turn for i in infos] == list(range(1, 21))
    assert infos[3].prompt == "t3" and infos[3].files == ["3.txt"]
    # A unique prefix works; an unknown one says how to list them.
    assert am.rewind_files(sid, s.checkpoints[19][:10], dry_run=True).checkpoint_id == s.checkpoints[19]
    with pytest.raises(CheckpointNotFoundError, match=r"No checkpoint 'zzzz9999'.*agent-magic checkpoints"):
        am.rewind_files(sid, "zzzz9999")
    with pytest.raises(CheckpointNotFoundError, match="at least 4 characters"):
        am.rewind_files(sid, s.checkpoints[0][:2])
    with pytest.raises(SessionNotFoundError):
        am.rewind_files("no-such-session", s.checkpoints[0])


def test_ambiguous_prefix_is_a_clear_error(home: Path, workspace: Path) -> None:
    """Checkpoint ids are uuids: give two a common prefix by writing the log directly."""
    from agent_magic.store.local import SessionStore

    store = SessionStore.at(home)
    sid = store.create(cwd=str(workspace), scope=str(workspace), model="m")
    lines = [{"r": "turn", "checkpoint": cp, "turn": n, "prompt": "p", "ts": "2025-01-01T00:00:00Z"} for n, cp in enumerate(["abcd1111-x", "abcd2222-y"], 1)]
    store.checkpoints_path(sid).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(AmbiguousIdError, match=r"Checkpoint id prefix 'abcd' is ambiguous: it matches abcd1111-x, abcd2222-y"):
        am.rewind_files(sid, "abcd")
    assert am.rewind_files(sid, "abcd2", dry_run=True).checkpoint_id == "abcd2222-y"


def test_checkpointing_off_is_a_clear_error(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    s = Session(fake_api, workspace, enable_file_checkpointing=False)

    async def try_rewind(client: AgentClient) -> None:
        with pytest.raises(CheckpointError, match="checkpointing is off"):
            await client.rewind_files(s.checkpoints[0])

    s.run([("write", [tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "a"}), text("ok")])], after=try_rewind)
    assert s.session_id and (workspace / "a.txt").exists()
    assert am.list_checkpoints(s.session_id) == []
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoints .*checkpointing was off"):
        am.rewind_files(s.session_id, s.checkpoints[0])


def test_no_persist_session_rewinds_in_memory(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    make_project(workspace)
    s = Session(fake_api, workspace, persist_session=False)

    async def go(client: AgentClient) -> am.RewindResult:
        return await client.rewind_files(s.checkpoints[0])

    res = s.run(four_turns(workspace), after=go)
    assert res.ok and tree_snapshot(workspace) == s.snapshots[0]
    assert not (home / "blobs").exists() or not any((home / "blobs").iterdir())


def test_cell_diffs_have_no_end_of_file_marker() -> None:
    from agent_magic.checkpoints.diffs import src_diff, text_diff

    diff = src_diff("x = 1\ny = 2", "x = 1\ny = 3", "abc")
    assert "-y = 2\n" in diff and "+y = 3\n" in diff
    assert "No newline" not in diff
    # files keep git's marker: there a missing final newline is a real difference
    assert "No newline at end of file" in text_diff(b"a\nb", b"a\nc", "f.txt")
