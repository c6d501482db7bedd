"""Subagent transcripts stored under their parent session (issue 17), and kernel tools kept in meta.json."""

# ruff: noqa: F811  (the shared-store fixtures are imported, then named as test parameters)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agent_magic as am
from agent_magic import ConfigurationError, SessionExistsError, SessionNotFoundError
from agent_magic._api import (
    get_kernel_tools,
    get_subagent_messages,
    list_subagents,
    set_kernel_tools,
)
from agent_magic.store import subagents
from agent_magic.store.home import new_uuid
from agent_magic.store.local import SessionStore
from agent_magic.store.sync import PROJECT_KEY, SessionSync, push_blocking
from agent_magic.store.transcript import SessionMessage, SessionState

# The shared-store fixtures (real Redis, PostgreSQL and moto S3 servers on 127.0.0.1).
from .test_store_sync import _with_store, postgres_url, redis_url, s3_endpoint, shared  # noqa: F401


def _session(home: Path, cwd: Path) -> str:
    return SessionStore.at(home).create(cwd=str(cwd), scope=str(cwd), model="claude-test")


def _subagent(store: SessionStore, sid: str, agent_id: str, tool_use_id: str, turns: int, cwd: Path) -> SessionState:
    """What the runner does: the contract layout and header, then lines through a SessionState."""
    header = {
        "agent_type": "explorer", "parent_tool_use_id": tool_use_id, "description": f"task of {agent_id[:6]}",
        "cwd": str(cwd), "model": "claude-test",
    }
    jf = subagents.create_subagent_transcript(store, sid, agent_id, header)
    state = SessionState(session_id=agent_id, cwd=cwd, scope=str(cwd), model="claude-test", transcript=jf, store=store)
    _talk(state, agent_id, 0, turns)
    return state


def _talk(state: SessionState, agent_id: str, start: int, turns: int) -> None:
    for i in range(start, start + turns):
        state.append({"type": "user", "message": {"role": "user", "content": f"{agent_id[:6]} asks {i}"}})
        state.append({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": f"{agent_id[:6]} says {i}"}]}})
    state.append({"type": "result", "subtype": "success", "result": "done"})


def _texts(msgs: list[SessionMessage]) -> list[str]:
    out = []
    for m in msgs:
        c = m.message["content"]
        out.append(c if isinstance(c, str) else c[0]["text"])
    return out


@pytest.fixture
def two_subagents(home: Path, workspace: Path) -> tuple[str, str, str]:
    """A session with two subagents; the second id sorts before the first (order is by creation)."""
    store = SessionStore.at(home)
    sid = _session(home, workspace)
    first, second = "f" + new_uuid()[1:], "0" + new_uuid()[1:]
    _subagent(store, sid, first, "toolu_first", 2, workspace).transcript.close()
    _subagent(store, sid, second, "toolu_second", 3, workspace).transcript.close()
    return sid, first, second


# -- local layout and API ------------------------------------------------------------


def test_subagent_transcripts_use_the_contract_layout(home: Path, workspace: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, first, second = two_subagents
    folder = home / "sessions" / sid / "subagents"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"agent-{first}.jsonl", f"agent-{second}.jsonl"])
    rows = [json.loads(x) for x in (folder / f"agent-{first}.jsonl").read_bytes().splitlines()]
    head = rows[0]
    assert head["type"] == "session" and head["session_id"] == first and head["parent_session_id"] == sid
    assert head["agent_type"] == "explorer" and head["parent_tool_use_id"] == "toolu_first" and head["cwd"] == str(workspace)
    assert [r["type"] for r in rows[1:]] == ["user", "assistant", "user", "assistant", "result"]
    assert rows[2]["parent_uuid"] == rows[1]["uuid"]
    assert subagents.subagent_path(SessionStore.at(home), sid, first) == folder / f"agent-{first}.jsonl"
    assert subagents.read_subagent_entries(SessionStore.at(home), sid, first) == rows
    # The session's own transcript and listing are untouched by its subagents.
    assert [e["type"] for e in SessionStore.at(home).read_entries(sid)] == ["session"]


def test_list_and_read_subagents(home: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, first, second = two_subagents
    assert list_subagents(sid) == [first, second]  # creation order, not name order
    assert list_subagents(sid[:8]) == [first, second]  # a unique prefix resolves
    msgs = get_subagent_messages(sid[:8], second)
    assert [m.type for m in msgs] == ["user", "assistant"] * 3
    assert _texts(msgs) == [f"{second[:6]} {w} {i}" for i in range(3) for w in ("asks", "says")]
    assert all(m.session_id == sid for m in msgs)
    assert msgs[0].is_prompt and msgs[1].parent_uuid == msgs[0].uuid
    assert _texts(get_subagent_messages(sid, second, limit=2, offset=1)) == [f"{second[:6]} says 0", f"{second[:6]} asks 1"]
    assert get_subagent_messages(sid, second, offset=6) == []
    assert len(get_subagent_messages(sid, first)) == 4


def test_subagent_messages_carry_the_agent_tool_use_id(home: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, first, second = two_subagents
    assert {getattr(m, "parent_tool_use_id", None) for m in get_subagent_messages(sid, first)} == {"toolu_first"}
    assert {getattr(m, "parent_tool_use_id", None) for m in get_subagent_messages(sid, second)} == {"toolu_second"}
    assert {getattr(m, "parent_tool_use_id", None) for m in am.get_session_messages(sid)} <= {None}


def test_unknown_and_invalid_ids(home: Path, workspace: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, first, _ = two_subagents
    assert get_subagent_messages(sid, "0000-not-an-agent") == []
    for bad in ("../x", "..", "a/b", "", "agent.jsonl", "x" * 129, "a\\b"):
        assert get_subagent_messages(sid, bad) == []
        with pytest.raises(ConfigurationError):
            subagents.create_subagent_transcript(SessionStore.at(home), sid, bad, {})
    assert not (home / "sessions" / "x").exists() and not (home / "sessions" / sid / "x.jsonl").exists()
    with pytest.raises(SessionNotFoundError):
        list_subagents("ffffffff-0000")
    with pytest.raises(SessionNotFoundError):
        get_subagent_messages("ffffffff-0000", first)
    with pytest.raises(SessionNotFoundError):
        subagents.create_subagent_transcript(SessionStore.at(home), "ffffffff-0000", new_uuid(), {})
    with pytest.raises(SessionExistsError):
        subagents.create_subagent_transcript(SessionStore.at(home), sid, first, {})
    assert len(get_subagent_messages(sid, first)) == 4  # the refused create left it alone
    other = _session(home, workspace)
    assert list_subagents(other) == []


def test_a_torn_last_line_is_left_out(home: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, first, _ = two_subagents
    store = SessionStore.at(home)
    path = subagents.subagent_path(store, sid, first)
    n = len(subagents.read_subagent_entries(store, sid, first))
    with open(path, "ab") as f:
        f.write(b'{"type":"user","message":{"role":"user","con')  # a write in progress
    assert len(subagents.read_subagent_entries(store, sid, first)) == n
    assert len(get_subagent_messages(sid, first)) == 4
    assert first in list_subagents(sid)


def test_deleting_the_session_deletes_its_subagents(home: Path, two_subagents: tuple[str, str, str]) -> None:
    sid, _, _ = two_subagents
    am.delete_session(sid)
    assert not (home / "sessions" / sid).exists()
    with pytest.raises(SessionNotFoundError):
        list_subagents(sid)


# -- shared stores --------------------------------------------------------------------


def _remote_count(url: str, sid: str, agent_id: str) -> int:
    lines = _with_store(url, lambda r: r.load({"project_key": PROJECT_KEY, "session_id": sid, "subpath": f"subagents/agent-{agent_id}"}))
    return len(lines or [])


def test_subagents_travel_through_the_shared_store(
    home: Path, workspace: Path, tmp_path: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore.at(home)
    sid = _session(home, workspace)
    first, second = "f" + new_uuid()[1:], "0" + new_uuid()[1:]
    a = _subagent(store, sid, first, "toolu_first", 2, workspace)
    _subagent(store, sid, second, "toolu_second", 1, workspace).transcript.close()
    pushed = push_blocking(store, sid, url=shared)
    assert pushed is not None and pushed.subagent_lines == (1 + 5) + (1 + 3)
    subkeys = _with_store(shared, lambda r: r.list_subkeys({"project_key": PROJECT_KEY, "session_id": sid}))
    assert {f"subagents/agent-{first}", f"subagents/agent-{second}"} <= set(subkeys)
    assert (_remote_count(shared, sid, first), _remote_count(shared, sid, second)) == (6, 4)

    # An incremental push sends only what was appended since: four lines of the first subagent.
    _talk(a, first, 2, 1)
    a.transcript.close()
    sync_state = json.loads((home / "sessions" / sid / "sync.json").read_bytes())
    assert sync_state[f"subagents/agent-{first}"] == 6
    assert sync_state[f"subagents/agent-{first}_at"] < subagents.subagent_path(store, sid, first).stat().st_size
    with open(subagents.subagent_path(store, sid, first), "ab") as f:
        f.write(b'{"type":"user","mess')  # torn: not sent
    again = push_blocking(store, sid, url=shared)
    assert again is not None and (again.subagent_lines, again.lines) == (3, 0)
    assert (_remote_count(shared, sid, first), _remote_count(shared, sid, second)) == (9, 4)
    sync_state = json.loads((home / "sessions" / sid / "sync.json").read_bytes())
    assert sync_state[f"subagents/agent-{first}"] == 9
    nothing = push_blocking(store, sid, url=shared)
    assert nothing is not None and not nothing

    # A fresh host that never saw the session reads the same subagents, pulled on demand.
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)
    fresh = tmp_path / "fresh-host"
    assert not (fresh / "sessions" / sid).exists()
    assert get_subagent_messages(sid, first, home=fresh) == get_subagent_messages(sid, first, home=home)
    assert list_subagents(sid, home=fresh) == [first, second]
    assert get_subagent_messages(sid, second, home=fresh) == get_subagent_messages(sid, second, home=home)
    assert len(get_subagent_messages(sid, first, home=fresh)) == 6
    fresh_store = SessionStore.at(fresh)
    assert subagents.read_subagent_header(fresh_store, sid, first) == subagents.read_subagent_header(store, sid, first)
    # Pulled lines are not pushed back.
    assert SessionSync(fresh_store, None).pending(sid) == 0  # type: ignore[arg-type]

    # Deleting the session in the shared store takes its subagents along.
    key = {"project_key": PROJECT_KEY, "session_id": sid}
    _with_store(shared, lambda r: r.delete(key))
    assert _with_store(shared, lambda r: r.list_subkeys(key)) == []
    assert _remote_count(shared, sid, first) == 0


def test_a_pull_extends_a_subagent_another_host_continued(
    home: Path, workspace: Path, tmp_path: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SessionStore.at(home)
    sid = _session(home, workspace)
    agent = new_uuid()
    state = _subagent(store, sid, agent, "toolu_1", 1, workspace)
    push_blocking(store, sid, url=shared)
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)
    other = tmp_path / "host-b"
    assert len(get_subagent_messages(sid, agent, home=other)) == 2  # pulled whole
    _talk(state, agent, 1, 2)  # host A goes on, and pushes
    state.transcript.close()
    later = "1" + new_uuid()[1:]
    _subagent(store, sid, later, "toolu_2", 1, workspace).transcript.close()
    push_blocking(store, sid, url=shared)

    async def pull(remote: Any) -> Any:
        return await SessionSync(SessionStore.at(other), remote).pull(sid)

    result = _with_store(shared, pull)
    assert result is not None and result.subagent_lines == (2 * 2 + 1) + (1 + 2 + 1)
    assert get_subagent_messages(sid, agent, home=other) == get_subagent_messages(sid, agent, home=home)
    assert list_subagents(sid, home=other) == [agent, later]


# -- bundles --------------------------------------------------------------------------


def test_bundles_carry_subagents(
    home: Path, workspace: Path, tmp_path: Path, two_subagents: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sid, first, second = two_subagents
    set_kernel_tools(sid, ["load_data"])
    before = {a: get_subagent_messages(sid, a) for a in (first, second)}
    bundle = am.export_session(sid, tmp_path / "s.zip")

    monkeypatch.setenv("AGENT_MAGIC_HOME", str(tmp_path / "home2"))
    SessionStore.forget_instances()
    assert am.import_session(bundle) == sid
    assert list_subagents(sid) == [first, second]
    assert {a: get_subagent_messages(sid, a) for a in (first, second)} == before
    assert get_kernel_tools(sid) == ["load_data"]

    copy = am.import_session(bundle, new_session_id="copy-of-it", cwd=tmp_path)
    assert list_subagents(copy) == [first, second]
    head = subagents.read_subagent_header(SessionStore.at(), copy, first)
    assert head is not None and head["parent_session_id"] == "copy-of-it" and head["cwd"] == str(tmp_path.resolve())
    assert _texts(get_subagent_messages(copy, second)) == _texts(before[second])


def test_bundle_import_refuses_bad_subagent_entries(home: Path, tmp_path: Path, two_subagents: tuple[str, str, str]) -> None:
    import zipfile

    sid, _, _ = two_subagents
    bundle = am.export_session(sid, tmp_path / "s.zip")
    for name, data in [("subagents/agent-../../evil.jsonl", b"{}\n"), (f"subagents/agent-{new_uuid()}.jsonl", b'{"type":"user"}\n')]:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(bad, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, src.read(info))
            dst.writestr(name, data)
        with pytest.raises(am.BundleError):
            am.import_session(bad, new_session_id="never")
        assert not (home / "sessions" / "never").exists()


# -- kernel tools -------------------------------------------------------------------


def test_kernel_tools_round_trip_in_meta(home: Path, workspace: Path) -> None:
    sid = _session(home, workspace)
    assert get_kernel_tools(sid) == []
    set_kernel_tools(sid[:8], ["load_data", "plot_it", "load_data"])
    assert get_kernel_tools(sid[:8]) == ["load_data", "plot_it"]
    meta = json.loads((home / "sessions" / sid / "meta.json").read_bytes())
    assert meta["kernel_tools"] == ["load_data", "plot_it"]
    am_store = SessionStore.at(home)
    am_store.rename(sid, "kept title")  # other metadata writes keep the tools
    assert get_kernel_tools(sid) == ["load_data", "plot_it"]
    set_kernel_tools(sid, [])
    assert get_kernel_tools(sid) == []
    assert json.loads((home / "sessions" / sid / "meta.json").read_bytes())["title"] == "kept title"


@pytest.mark.parametrize("bad", [["1abc"], ["a-b"], ["class"], [""], ["ok", 3], "load_data"])
def test_kernel_tools_reject_non_identifiers(home: Path, workspace: Path, bad: object) -> None:
    sid = _session(home, workspace)
    set_kernel_tools(sid, ["keep"])
    with pytest.raises(ConfigurationError):
        set_kernel_tools(sid, bad)  # type: ignore[arg-type]
    assert get_kernel_tools(sid) == ["keep"]


def test_kernel_tools_unknown_session(home: Path) -> None:
    with pytest.raises(SessionNotFoundError):
        set_kernel_tools("ffffffff-0000", ["f"])
    with pytest.raises(SessionNotFoundError):
        get_kernel_tools("ffffffff-0000")
