"""Forks by reference: one header line whatever the parent's length, read through the parents.

A fork inherits its parent's history and checkpoint records by pointer
(``agent_magic.store.forks``). These tests check what a person sees: the
fork's messages, checkpoints and rewinds are those of a copy; the original is
byte-identical; deleting a parent or exporting a fork leaves the fork whole;
a crash while a fork is made whole loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agent_magic as am
from agent_magic import SessionNotFoundError
from agent_magic.store import forks
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, text

from .conftest import result_of, run_query, tree_snapshot
from .test_checkpoints import Session, four_turns, make_project


def own_file(home: Path, sid: str) -> Path:
    return home / "sessions" / sid / "transcript.jsonl"


def digest_of_folder(home: Path, sid: str) -> dict[str, str]:
    d = home / "sessions" / sid
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file() and p.name != ".lock"}


def chat(api: FakeAnthropicServer, n: int, *, words: int = 200, **options: object) -> str:
    """A session of ``n`` turns, each answer ``words`` words long."""
    sid = None
    for i in range(n):
        api.add(text(" ".join(f"answer{i}" for _ in range(words))))
        kw = dict(options) if sid is None else {"resume": sid}
        sid = result_of(run_query(f"question {i}", **kw)).session_id  # type: ignore[arg-type]
    assert sid is not None
    return sid


def project_session(api: FakeAnthropicServer, workspace: Path, n: int) -> Session:
    """A project and a session of its first ``n`` checkpointed turns (files, cells, Bash)."""
    make_project(workspace)
    session = Session(api, workspace)
    session.run(four_turns(workspace)[:n])
    assert session.session_id
    return session


def prompts(sid: str) -> list[str]:
    return [m.message["content"] if isinstance(m.message["content"], str) else m.message["content"][0]["text"]
            for m in am.get_session_messages(sid) if m.type == "user" and m.is_prompt]


def test_a_fork_is_one_line_whatever_the_parents_length(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    short = chat(fake_api, 2, cwd=workspace)
    long = chat(fake_api, 40, cwd=workspace)
    assert own_file(home, long).stat().st_size > 15 * own_file(home, short).stat().st_size
    before = digest_of_folder(home, long)
    sizes = {}
    for parent in (short, long):
        fork = am.fork_session(parent)
        raw = own_file(home, fork).read_bytes()
        assert raw.count(b"\n") == 1, raw  # the header, pointing into the parent
        sizes[parent] = len(raw)
        assert not (home / "sessions" / fork / "checkpoints.jsonl").exists()
        assert [m.uuid for m in am.get_session_messages(fork)] == [m.uuid for m in am.get_session_messages(parent)]
        info = am.get_session_info(fork)
        assert info.parent_session_id == parent and info.num_turns == am.get_session_info(parent).num_turns
        assert info.label and info.label.startswith("fork at turn")
    assert abs(sizes[long] - sizes[short]) < 64  # only the numbers in the pointer differ
    assert digest_of_folder(home, long) == before  # the original is byte-identical


def test_the_model_sees_the_inherited_history_and_the_parent_moves_on_alone(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    sid = chat(fake_api, 3, words=3, cwd=workspace)
    fork = am.fork_session(sid)
    fake_api.add(text("in the fork"))
    result_of(run_query("fork question", resume=fork))
    users = [m["content"][0]["text"] for m in fake_api.message_requests[-1].body["messages"] if m["role"] == "user"]
    assert users == ["question 0", "question 1", "question 2", "fork question"]
    # The parent goes on; the fork does not see what it says later.
    fake_api.add(text("parent again"))
    result_of(run_query("parent question", resume=sid))
    assert prompts(fork) == ["question 0", "question 1", "question 2", "fork question"]
    assert prompts(sid) == ["question 0", "question 1", "question 2", "parent question"]
    fake_api.add(text("fork again"))
    result_of(run_query("fork second", resume=fork))
    users = [m["content"][0]["text"] for m in fake_api.message_requests[-1].body["messages"] if m["role"] == "user"]
    assert users == ["question 0", "question 1", "question 2", "fork question", "fork second"]


def test_forks_of_forks_at_any_message(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    sid = chat(fake_api, 3, words=3, cwd=workspace)
    middle = am.fork_session(sid)
    fake_api.add(text("middle answer"))
    result_of(run_query("middle question", resume=middle))
    msgs = am.get_session_messages(middle)
    # A fork at a message the middle fork inherited (it lies in the grandparent's file) ...
    early = am.fork_session(middle, up_to_message_id=msgs[1].uuid)
    assert [m.uuid for m in am.get_session_messages(early)] == [m.uuid for m in msgs[:2]]
    # ... and at a message of the middle fork's own.
    late = am.fork_session(middle, up_to_message_id=msgs[-1].uuid)
    assert [m.uuid for m in am.get_session_messages(late)] == [m.uuid for m in msgs]
    assert own_file(home, early).read_bytes().count(b"\n") == 1 and own_file(home, late).read_bytes().count(b"\n") == 1
    fake_api.add(text("early answer"))
    result_of(run_query("early question", resume=early))
    users = [m["content"][0]["text"] for m in fake_api.message_requests[-1].body["messages"] if m["role"] == "user"]
    assert users == ["question 0", "early question"]
    assert am.get_session_info(early).num_turns == 2 and am.get_session_info(late).num_turns == 4


def test_checkpoints_are_inherited_and_rewind_in_the_fork(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    original = project_session(fake_api, workspace, 3)
    assert original.session_id
    turns = four_turns(workspace)
    msgs = am.get_session_messages(original.session_id)
    third_prompt = [i for i, m in enumerate(msgs) if m.type == "user" and m.is_prompt][2]
    # A fork up to turn 2's last message inherits the checkpoints of turns 1 and 2, not turn 3's.
    fork_id = am.fork_session(original.session_id, up_to_message_id=msgs[third_prompt - 1].uuid)
    assert [c.checkpoint_id for c in am.list_checkpoints(fork_id)] == original.checkpoints[:2]
    fork = Session(fake_api, workspace, resume=fork_id)
    fork.session_id = fork_id
    fork.run([turns[3]])
    assert [c.checkpoint_id for c in am.list_checkpoints(fork_id)] == original.checkpoints[:2] + fork.checkpoints
    notebook_now = (workspace / "analysis.ipynb").read_bytes()
    assert am.rewind_files(fork_id, original.checkpoints[1]).ok
    # Turn 3's notebook edit is not the fork's history: like a person's edit, it is left alone.
    want = {**original.snapshots[1], "analysis.ipynb": notebook_now}
    assert tree_snapshot(workspace) == want
    assert am.rewind_files(fork_id, original.checkpoints[0]).ok
    assert tree_snapshot(workspace) == {**original.snapshots[0], "analysis.ipynb": notebook_now}
    # The original's own checkpoints are untouched by the fork.
    assert [c.checkpoint_id for c in am.list_checkpoints(original.session_id)] == original.checkpoints


def test_deleting_a_parent_first_makes_its_forks_whole(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    root = project_session(fake_api, workspace, 2)
    assert root.session_id
    middle = am.fork_session(root.session_id)
    child = am.fork_session(middle)
    want_msgs = [m.uuid for m in am.get_session_messages(child)]
    want_cps = [c.checkpoint_id for c in am.list_checkpoints(child)]
    assert len(want_cps) == 2
    am.delete_session(root.session_id)
    # The middle fork pointed at the root: it is whole now; the child still reads through the middle.
    store = SessionStore(home)
    assert forks.reads_from(store, middle) is None and forks.reads_from(store, child) == middle
    am.delete_session(middle)
    assert forks.reads_from(store, child) is None
    assert [m.uuid for m in am.get_session_messages(child)] == want_msgs
    assert [c.checkpoint_id for c in am.list_checkpoints(child)] == want_cps
    assert am.rewind_files(child, want_cps[0]).ok
    assert tree_snapshot(workspace) == root.snapshots[0]


@pytest.mark.parametrize("n", [1, 2])
def test_a_crash_while_forks_are_made_whole_loses_nothing(fake_api: FakeAnthropicServer, home: Path, workspace: Path, n: int) -> None:
    root = project_session(fake_api, workspace, 2)
    assert root.session_id
    children = [am.fork_session(root.session_id) for _ in range(2)]
    fake_api.add(text("fork answer"))
    result_of(run_query("fork question", resume=children[0]))
    want = {c: ([m.uuid for m in am.get_session_messages(c)], [k.checkpoint_id for k in am.list_checkpoints(c)]) for c in children}
    code = f"from agent_magic.store.local import SessionStore; SessionStore({str(home)!r}).delete({root.session_id!r})"
    env = {**os.environ, "AGENT_MAGIC_CRASH_AT": f"fork.whole:{n}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    SessionStore.forget_instances()
    assert am.get_session_info(root.session_id)  # killed before the delete itself
    store = SessionStore(home)
    assert sum(forks.reads_from(store, c) is None for c in children) == n  # n forks were made whole
    for c in children:
        assert ([m.uuid for m in am.get_session_messages(c)], [k.checkpoint_id for k in am.list_checkpoints(c)]) == want[c]
    am.delete_session(root.session_id)  # the delete, again, to the end
    for c in children:
        assert forks.reads_from(store, c) is None
        assert ([m.uuid for m in am.get_session_messages(c)], [k.checkpoint_id for k in am.list_checkpoints(c)]) == want[c]
    assert am.rewind_files(children[0], want[children[0]][1][0]).ok
    assert tree_snapshot(workspace) == root.snapshots[0]


def test_an_exported_fork_carries_what_it_inherits(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    root = project_session(fake_api, workspace, 2)
    assert root.session_id
    fork = am.fork_session(root.session_id)
    bundle = am.export_session(fork, tmp_path)
    other = tmp_path / "other-home"
    new_id = am.import_session(bundle, home=other)
    assert forks.fork_ref(SessionStore(other).header(new_id)) is None
    assert [m.uuid for m in am.get_session_messages(new_id, home=other)] == [m.uuid for m in am.get_session_messages(fork)]
    assert [c.checkpoint_id for c in am.list_checkpoints(new_id, home=other)] == root.checkpoints
    assert am.rewind_files(new_id, root.checkpoints[0], home=other).ok
    assert tree_snapshot(workspace) == root.snapshots[0]


def test_a_fork_whose_parent_is_missing_says_how_to_fetch_it(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> None:
    sid = chat(fake_api, 2, words=3, cwd=workspace)
    fork = am.fork_session(sid)
    # Another host got the fork's folder but not its parent's.
    other = tmp_path / "other-home" / "sessions"
    other.mkdir(parents=True)
    (other / fork).mkdir()
    (other / fork / "transcript.jsonl").write_bytes(own_file(home, fork).read_bytes())
    with pytest.raises(SessionNotFoundError) as e:
        am.get_session_messages(fork, home=other.parent)
    msg = str(e.value)
    assert "\n" not in msg and sid[:8] in msg and "agent-magic sync" in msg
    # Listing still shows it (what its own file says).
    assert fork in [s.session_id for s in am.list_sessions(home=other.parent)]


def test_a_pointer_loop_written_by_hand_is_an_error_not_a_hang(home: Path, workspace: Path) -> None:
    store = SessionStore(home)
    a = store.create(cwd=str(workspace), scope=str(workspace), model=None)
    b = store.create(cwd=str(workspace), scope=str(workspace), model=None, fork_of={"session_id": a, "lines": 1})
    header = json.loads(own_file(home, a).read_bytes())
    header["fork_of"] = {"session_id": b, "lines": 1}
    own_file(home, a).write_text(json.dumps(header) + "\n")
    with pytest.raises(SessionNotFoundError, match="loop"):
        store.read_entries(b)


def test_a_fork_over_an_older_copy_of_its_parent_says_so(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    sid = chat(fake_api, 3, words=3, cwd=workspace)
    fork = am.fork_session(sid)
    # As if this host had the parent from before its third turn (another host made the fork).
    lines = own_file(home, sid).read_bytes().splitlines(keepends=True)
    own_file(home, sid).write_bytes(b"".join(lines[:-3]))
    with pytest.raises(SessionNotFoundError) as e:
        am.get_session_messages(fork)
    msg = str(e.value)
    assert "older" in msg and "agent-magic sync" in msg and "\n" not in msg
