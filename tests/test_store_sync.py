"""Sessions beyond one machine (issue 16): two hosts, two local stores, one shared store.

Host A works in a session; host B, which never saw it, resumes it by id,
continues the conversation, lists it and rewinds files and notebook cells to
A's checkpoints. One writer at a time across hosts; a failing shared store never
fails a turn and catches up later.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import nbformat
import pytest

import agent_magic as am
from agent_magic import AgentClient, AgentOptions, ResultMessage
from agent_magic.store import LeaseHeldError, open_session_store
from agent_magic.store.local import SessionStore
from agent_magic.store.sync import PROJECT_KEY
from agent_magic.testing import FakeAnthropicServer
from agent_magic.testing._replies import message, text, tool_block

from .conftest import tree_snapshot


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from .redis_server import RedisServer

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/setup does it)")
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from .pg_server import find_bindir, running_server

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl; .ci/setup installs Debian's postgresql)")
    with running_server(bindir) as server:
        yield server.url()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto", reason="moto (the test extra) runs the S3 API")
    from .s3_server import moto_s3

    with moto_s3() as server:
        server.create_bucket("sessions")
        yield server.endpoint_url


@pytest.fixture(params=["file", "redis", "postgresql", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared store's URL, one backend per run, empty for each test."""
    fresh = f"t{secrets.token_hex(4)}"
    if request.param == "file":
        return (tmp_path / "shared").as_uri()
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_url')}?prefix={fresh}:"
    if request.param == "postgresql":
        return f"{request.getfixturevalue('postgres_url')}?table_prefix={fresh}_"
    from .s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    return f"s3://sessions/{fresh}?endpoint_url={request.getfixturevalue('s3_endpoint')}&region={REGION}"


def _with_store(url: str, fn: Any) -> Any:
    """``await fn(store)`` on a store opened for ``url`` and closed again, in one event loop."""

    async def go() -> Any:
        store = open_session_store(url)
        try:
            return await fn(store)
        finally:
            await store.aclose()

    return anyio.run(go)


def _run(opts: AgentOptions, prompts: list[str]) -> tuple[str, list[ResultMessage]]:
    async def go() -> tuple[str, list[ResultMessage]]:
        out = []
        async with AgentClient(opts) as client:
            for p in prompts:
                await client.query(p)
                async for m in client.receive_response():
                    if isinstance(m, ResultMessage):
                        out.append(m)
            return str(client.session_id), out

    return anyio.run(go)


def _script(fake_api: FakeAnthropicServer) -> None:
    fake_api.on_prompt(
        "edit the notebook",
        message(tool_block("Read", {"file_path": "analysis.ipynb"})),
        message(
            tool_block("NotebookEdit", {"notebook_path": "analysis.ipynb", "cell_id": "c1", "new_source": "x = 2"}),
            tool_block("Write", {"file_path": "out.txt", "content": "from host A\n"}),
        ),
        text("edited"),
    )
    fake_api.on_prompt("add a file", message(tool_block("Write", {"file_path": "more.txt", "content": "more\n"})), text("added"))
    fake_api.on_prompt("continue on host B", text("continued"))


def test_a_session_started_on_one_host_resumes_and_rewinds_on_another(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", id="c1")]
    nbformat.write(nb, workspace / "analysis.ipynb")
    before = tree_snapshot(workspace)
    _script(fake_api)
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    opts = {"cwd": workspace, "permission_mode": "acceptEdits", "session_store": shared}

    sid, results = _run(AgentOptions(home=home_a, **opts), ["edit the notebook", "add a file"])
    assert [r.result for r in results] == ["edited", "added"]
    assert nbformat.read(workspace / "analysis.ipynb", as_version=4).cells[0].source == "x = 2"
    assert (workspace / "out.txt").exists() and (workspace / "more.txt").exists()
    assert not (home_b / "sessions" / sid).exists()

    # A pull brings every backup the records name, and counts each once.
    from agent_magic.store.sync import SessionSync

    async def pull_to_c() -> Any:
        remote = open_session_store(shared)
        try:
            return await SessionSync(SessionStore.at(tmp_path / "host-c"), remote).pull(sid)
        finally:
            await remote.aclose()

    pulled = anyio.run(pull_to_c)
    backups = sorted(p.name for p in (tmp_path / "host-c" / "blobs").rglob("*") if p.is_file())
    assert pulled.blobs == len(backups) >= 3

    # Host B has never seen the session: it comes from the shared store, whole.
    sid_b, more = _run(AgentOptions(home=home_b, resume=sid[:8], **opts), ["continue on host B"])
    assert sid_b == sid and more[0].result == "continued"
    prompts = [m["content"][0]["text"] for m in fake_api.message_requests[-1].body["messages"] if m["role"] == "user" and m["content"][0].get("type") == "text"]
    assert prompts == ["edit the notebook", "add a file", "continue on host B"]
    assert am.get_session_info(sid, home=home_b).num_turns == 3
    assert [s.session_id for s in am.list_sessions(home=home_b)] == [sid]

    # Host B rewinds to before host A's first turn: the backups came along.
    cps = am.list_checkpoints(sid, home=home_b)
    assert [c.turn for c in cps] == [1, 2, 3]
    am.rewind_files(sid, cps[0].checkpoint_id, home=home_b)
    assert tree_snapshot(workspace) == before

    # Host A sees what B added when it resumes.
    fake_api.on_prompt("back on host A", text("back"))
    _, last = _run(AgentOptions(home=home_a, resume=sid, **opts), ["back on host A"])
    assert last[0].result == "back" and am.get_session_info(sid, home=home_a).num_turns == 4

    lines = _with_store(shared, lambda r: r.load({"project_key": PROJECT_KEY, "session_id": sid}))
    local = SessionStore.at(home_a).read_entries(sid)
    assert len(lines) == len(local)  # every line once, however many pushes and pulls


def test_one_writer_at_a_time_across_hosts(fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str) -> None:
    fake_api.set_default(text("ok"))
    sid, _ = _run(AgentOptions(home=tmp_path / "a", cwd=workspace, session_store=shared), ["one"])
    _with_store(shared, lambda r: r.acquire_lease(sid, "other-host:42", 600))
    with pytest.raises(LeaseHeldError, match="other-host:42"):
        _run(AgentOptions(home=tmp_path / "b", cwd=workspace, resume=sid, session_store=shared), ["two"])

    async def take_and_release(r: Any) -> None:
        await r.acquire_lease(sid, "me:1", 600, take_over=True)
        await r.release_lease(sid, "me:1")

    _with_store(shared, take_and_release)
    _, res = _run(AgentOptions(home=tmp_path / "b", cwd=workspace, resume=sid, session_store=shared), ["two"])
    assert res[0].subtype == "success"


class _Flaky:
    """A shared store that is down until ``up`` is set (every call raises, as a lost network does)."""

    def __init__(self, url: str) -> None:
        self.inner = open_session_store(url)
        self.up = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*a: Any, **k: Any) -> Any:
            if not self.up:
                raise ConnectionError("the shared store is unreachable")
            return await attr(*a, **k)

        return call


def test_a_store_that_is_down_never_fails_a_turn(fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str) -> None:
    fake_api.set_default(text("ok"))
    flaky = _Flaky(shared)

    async def go() -> tuple[str, list[Any], int, list[Any]]:
        async with AgentClient(AgentOptions(home=tmp_path / "a", cwd=workspace, session_store=flaky)) as client:
            results = []
            for p in ("one", "two"):
                await client.query(p)
                results += [m async for m in client.receive_response() if isinstance(m, ResultMessage)]
            pending = client.sync_pending
            assert client.sync_error and "unreachable" in client.sync_error
            flaky.up = True
            left = await client.sync()
            assert left == 0 and client.sync_error is None
            sid = str(client.session_id)
        lines = await flaky.inner.load({"project_key": PROJECT_KEY, "session_id": sid})
        await flaky.inner.aclose()
        return sid, results, pending, lines

    sid, results, pending, lines = anyio.run(go)
    assert [r.subtype for r in results] == ["success", "success"] and pending > 0
    assert len(lines) == len(SessionStore.at(tmp_path / "a").read_entries(sid))


def test_any_object_with_the_sdks_methods_holds_transcripts(fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path) -> None:
    sdk = pytest.importorskip("claude_agent_sdk")
    memory = sdk.InMemorySessionStore()
    fake_api.set_default(text("ok"))
    sid, _ = _run(AgentOptions(home=tmp_path / "a", cwd=workspace, session_store=memory), ["one", "two"])
    lines = anyio.run(memory.load, {"project_key": PROJECT_KEY, "session_id": sid})
    assert [e["type"] for e in lines].count("result") == 2
    # Another host resumes it from there (transcripts only: checkpoints stay where they were made).
    _, res = _run(AgentOptions(home=tmp_path / "b", cwd=workspace, resume=sid, session_store=memory), ["three"])
    assert res[0].subtype == "success"
    sent = json.dumps(fake_api.message_requests[-1].body["messages"])
    assert '"one"' in sent and '"two"' in sent
    # A third home forks it: a new session with the whole history, the original unchanged.
    fork, res = _run(
        AgentOptions(home=tmp_path / "c", cwd=workspace, resume=sid, fork_session=True, session_store=memory), ["four"]
    )
    assert fork != sid and res[0].subtype == "success"
    sent = json.dumps(fake_api.message_requests[-1].body["messages"])
    assert all(f'"{p}"' in sent for p in ("one", "two", "three", "four"))
    assert am.get_session_info(fork, home=tmp_path / "c").parent_session_id == sid
    forked_lines = anyio.run(memory.load, {"project_key": PROJECT_KEY, "session_id": fork})
    assert forked_lines and forked_lines[-1]["type"] == "result"


def test_agent_magic_sync_pushes_and_pulls_by_hand(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_magic.cli import main

    fake_api.set_default(text("ok"))
    # A session made while the store was not configured: local only.
    sid, _ = _run(AgentOptions(home=tmp_path / "a", cwd=workspace), ["one"])
    assert main(["--home", str(tmp_path / "a"), "sync", "--store", shared]) == 0
    out = capsys.readouterr().out
    assert f"{sid[:8]}: pushed" in out and "1 session in sync" in out
    assert main(["--home", str(tmp_path / "b"), "sync", "--store", shared]) == 0
    assert f"{sid[:8]}: pulled" in capsys.readouterr().out
    assert am.get_session_info(sid, home=tmp_path / "b").num_turns == 1
    # Nothing new: nothing moves.
    assert main(["--home", str(tmp_path / "b"), "sync", "--store", shared]) == 0
    assert "pushed" not in capsys.readouterr().out
    # A lease left by a host that is gone.
    _with_store(shared, lambda r: r.acquire_lease(sid, "gone-host:9", 600))
    assert main(["--home", str(tmp_path / "b"), "sync", "--store", shared, "--take-over", sid[:8]]) == 0
    assert "took the writer lease over" in capsys.readouterr().out
    _, res = _run(AgentOptions(home=tmp_path / "b", cwd=workspace, resume=sid, session_store=shared), ["two"])
    assert res[0].subtype == "success"
    # Without a store the command says what to do.
    assert main(["--home", str(tmp_path / "b"), "sync"]) == 2
    assert "--store URL or set AGENT_MAGIC_STORE" in capsys.readouterr().err


def test_the_notebook_setting_reaches_the_shared_store(ip: Any, fake_api: FakeAnthropicServer, shared: str) -> None:
    fake_api.set_default(text("ok"))
    ip.run_line_magic("config", f"AgentMagics.store = {shared!r}")
    ip.run_cell_magic("agent", "", "hello")
    from agent_magic.notebook import state

    sid = state(ip)["magics"].last_result.session_id
    lines = _with_store(shared, lambda r: r.load({"project_key": PROJECT_KEY, "session_id": sid}))
    assert lines and lines[-1]["type"] == "result"


def test_the_session_helpers_find_sessions_made_on_another_host(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent_magic.cli import main

    fake_api.on_prompt("write b", message(tool_block("Write", {"file_path": "b.txt", "content": "new\n"})), text("done"))
    sid, _ = _run(AgentOptions(home=tmp_path / "a", cwd=workspace, permission_mode="acceptEdits", session_store=shared), ["write b"])
    assert (workspace / "b.txt").read_text() == "new\n"
    home_b = tmp_path / "b"
    # Host B, through the CLI's --store: listing shows it, checkpoints and rewind work.
    assert main(["--home", str(home_b), "--store", shared, "sessions"]) == 0
    assert sid[:8] in capsys.readouterr().out
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)
    cps = am.list_checkpoints(sid[:8], home=home_b)
    assert [c.turn for c in cps] == [1]
    am.rewind_files(sid, cps[0].checkpoint_id, home=home_b)
    assert not (workspace / "b.txt").exists()
    # A fork made on B is a session of its own there, and the shared store has it at once.
    fork = am.fork_session(sid, home=home_b)
    assert am.get_session_info(fork, home=home_b).parent_session_id == sid
    assert am.get_session_info(fork, home=tmp_path / "c").parent_session_id == sid  # a third host
    # The fork is by reference: one entry (its header) in the shared store, whatever the parent's length.
    assert len(_with_store(shared, lambda r: r.load({"project_key": PROJECT_KEY, "session_id": fork}))) == 1
    # The third host reads it through its parent, which came along.
    want = [m.uuid for m in am.get_session_messages(sid, home=home_b)]
    assert want and [m.uuid for m in am.get_session_messages(fork, home=tmp_path / "c")] == want
    assert [c.checkpoint_id for c in am.list_checkpoints(fork, home=tmp_path / "c")] == [cps[0].checkpoint_id]


@pytest.mark.parametrize("point", ["sync.blob:1", "sync.records:1", "sync.lines:1"])
def test_kill_9_during_a_sync_loses_nothing(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, point: str
) -> None:
    import os
    import subprocess
    import sys

    (workspace / "a.txt").write_text("original\n")
    fake_api.on_prompt(
        "change a",
        message(tool_block("Read", {"file_path": "a.txt"})),
        message(tool_block("Write", {"file_path": "a.txt", "content": "changed\n"})),
        text("done"),
    )
    home = tmp_path / "a"
    sid, _ = _run(AgentOptions(home=home, cwd=workspace, permission_mode="acceptEdits"), ["change a"])
    assert (workspace / "a.txt").read_text() == "changed\n"
    # `agent-magic sync` killed (SIGKILL) at the point, then run again.
    cmd = [sys.executable, "-m", "agent_magic.cli", "--home", str(home), "sync", "--store", shared]
    env = {**os.environ, "AGENT_MAGIC_CRASH_AT": point, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    env.pop("AGENT_MAGIC_CRASH_AT")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    # Every line and record once, the backups there: another host rewinds it.
    local = SessionStore.at(home)
    lines = _with_store(shared, lambda r: r.load({"project_key": PROJECT_KEY, "session_id": sid}))
    assert len(lines) == len(local.read_entries(sid))
    assert len({e["uuid"] for e in lines}) == len(lines)
    cps = am.list_checkpoints(sid, home=home)
    home_b = tmp_path / "b"
    assert subprocess.run([*cmd[:4], str(home_b), *cmd[5:]], env=env, capture_output=True, timeout=120).returncode == 0
    am.rewind_files(sid, cps[0].checkpoint_id, home=home_b)
    assert (workspace / "a.txt").read_text() == "original\n"


def test_a_notebook_says_what_is_not_synced(ip: Any, fake_api: FakeAnthropicServer, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: the store is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake_api.set_default(text("ok"))
    ip.run_line_magic("config", f"AgentMagics.store = 'redis://127.0.0.1:{port}/0'")
    ip.run_cell_magic("agent", "", "hello")  # the turn itself succeeds
    from agent_magic.notebook import state

    magics = state(ip)["magics"]
    assert magics.last_result.subtype == "success" and (magics.last_result.sync_pending or 0) > 0
    footer = magics.last_view.markdown()
    assert "not synced: " in footer and "agent-magic sync" in footer


HOST_B = r"""
import json, sys, anyio
import agent_magic as am
from agent_magic import AgentClient, AgentOptions, ResultMessage

home, sid, url, cwd = sys.argv[1:5]

async def main():
    out = {"listed": [s.session_id for s in am.list_sessions(home=home)]}
    async with AgentClient(AgentOptions(home=home, cwd=cwd, resume=sid, session_store=url)) as client:
        await client.query("continue on host B")
        out["result"] = [m.result async for m in client.receive_response() if isinstance(m, ResultMessage)][0]
    cps = am.list_checkpoints(sid, home=home)
    out["turns"] = [c.turn for c in cps]
    am.rewind_files(sid, cps[0].checkpoint_id, home=home)
    out["fork"] = am.fork_session(sid, home=home)
    print(json.dumps(out))

anyio.run(main)
"""


def test_two_processes_share_a_session(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", id="c1")]
    nbformat.write(nb, workspace / "analysis.ipynb")
    before = tree_snapshot(workspace)
    _script(fake_api)
    opts = {"cwd": workspace, "permission_mode": "acceptEdits", "session_store": shared}
    sid, _ = _run(AgentOptions(home=tmp_path / "a", **opts), ["edit the notebook"])
    assert nbformat.read(workspace / "analysis.ipynb", as_version=4).cells[0].source == "x = 2"
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)  # the session helpers read it, as the CLI's --store sets it
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", HOST_B, str(tmp_path / "b"), sid, shared, str(workspace)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["listed"] == [sid] and out["result"] == "continued" and out["turns"] == [1, 2]
    assert tree_snapshot(workspace) == before  # host B rewound host A's edits
    assert out["fork"] != sid
    # Host A sees host B's turn when it resumes.
    fake_api.on_prompt("back on host A", text("back"))
    _run(AgentOptions(home=tmp_path / "a", resume=sid, **opts), ["back on host A"])
    assert am.get_session_info(sid, home=tmp_path / "a").num_turns == 3


def test_sync_against_an_unreachable_s3_endpoint_exits_with_one_line(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("obstore")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    url = f"s3://bucket/p?endpoint_url=http://127.0.0.1:{port}&region=us-east-1"
    for _ in range(3):  # obstore's threads once aborted the interpreter's exit now and then (134)
        proc = subprocess.run(
            [sys.executable, "-m", "agent_magic.cli", "--home", str(tmp_path / "h"), "sync", "--store", url],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Cannot reach S3" in proc.stderr


@pytest.mark.parametrize("url", ["postgresql://ann:hunter2@127.0.0.1:1/db", "redis://:hunter2@127.0.0.1:1/0", "nosuch://ann:hunter2@host/x"])
def test_store_errors_never_show_the_password(tmp_path: Path, url: str) -> None:
    from agent_magic._errors import AgentMagicError
    from agent_magic.store.local import SessionStore
    from agent_magic.store.sync import pull_blocking

    with pytest.raises(AgentMagicError) as e:
        pull_blocking(SessionStore(tmp_path / "home"), url=url)
    msg = str(e.value)
    assert "hunter2" not in msg and "\n" not in msg
    assert "127.0.0.1:1" in msg or "host/x" in msg  # it still says which store


def test_each_step_reaches_the_shared_store_while_the_turn_runs(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str
) -> None:
    """Per step, not per turn: while a long Bash command runs, the store already has the prompt and the tool call."""
    fake_api.on_prompt("slow work", message(tool_block("Bash", {"command": "sleep 4"})), text("done"))
    seen: dict[str, Any] = {}

    async def go() -> None:
        remote = open_session_store(shared)
        try:
            async with AgentClient(AgentOptions(home=tmp_path / "a", cwd=workspace, permission_mode="bypassPermissions", session_store=shared)) as client:
                await client.query("slow work")
                async for m in client.receive_response():
                    if isinstance(m, am.AssistantMessage) and any(getattr(b, "name", None) == "Bash" for b in m.content):
                        # The Bash command is starting now: poll the store while it runs.
                        key = {"project_key": PROJECT_KEY, "session_id": str(client.session_id)}
                        with anyio.move_on_after(3.5):
                            while not any(e.get("type") == "assistant" for e in await remote.load(key) or []):  # noqa: ASYNC110 - polling what another host sees
                                await anyio.sleep(0.05)
                        entries = await remote.load(key) or []
                        seen["during"] = [e.get("type") for e in entries]
                    if isinstance(m, ResultMessage):
                        seen["result"] = m
                        seen["after"] = [e.get("type") for e in await remote.load(key) or []]
        finally:
            await remote.aclose()

    anyio.run(go)
    assert seen["result"].subtype == "success" and seen["result"].sync_pending == 0
    assert "assistant" in seen["during"] and "result" not in seen["during"], seen["during"]
    assert seen["after"][-1] == "result"


def test_a_fresh_host_lists_shared_sessions_from_summaries_without_downloading_them(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.set_default(text("ok"))
    home_a = tmp_path / "a"
    sid, _ = _run(AgentOptions(home=home_a, cwd=workspace, session_store=shared), ["first question", "second question"])
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)
    am.rename_session(sid, "the analysis", home=home_a)
    am.tag_session(sid, "keep", home=home_a)
    _run(AgentOptions(home=home_a, cwd=workspace, resume=sid, session_store=shared), ["third question"])  # pushes the title too
    fork = am.fork_session(sid, home=home_a)  # pushed at once: one header line
    want = {i.session_id: i for i in am.list_sessions(home=home_a)}
    # Host B has never seen them: listing reads the store's summaries only.
    home_b = tmp_path / "b"
    rows = {i.session_id: i for i in am.list_sessions(home=home_b)}
    assert set(rows) == {sid, fork}
    assert not (home_b / "sessions").exists() or not any((home_b / "sessions").iterdir())  # nothing downloaded
    for s in (sid, fork):
        got, exp = rows[s], want[s]
        assert (got.num_turns, got.first_prompt, got.title, got.cwd, got.scope, got.parent_session_id) == (
            exp.num_turns, exp.first_prompt, exp.title, exp.cwd, exp.scope, exp.parent_session_id,
        ), s
        assert got.total_cost_usd == pytest.approx(exp.total_cost_usd)
    assert rows[sid].num_turns == 3 and rows[sid].tag == "keep" and rows[sid].summary == "the analysis"
    assert rows[fork].label == want[fork].label and "the analysis" in str(rows[fork].label)
    assert [i.session_id for i in am.list_sessions(scope=str(workspace), limit=1, home=home_b)] == [want_first := am.list_sessions(home=home_a)[0].session_id]
    assert want_first in (sid, fork)
    # Using one pulls it (and, for the fork, its parent).
    assert am.get_session_info(fork, home=home_b).num_turns == 3
    assert [m.uuid for m in am.get_session_messages(fork, home=home_b)] == [m.uuid for m in am.get_session_messages(sid, home=home_a)]


def test_a_fork_pulled_onto_a_host_with_an_older_copy_of_its_parent_brings_the_parent_up_to_date(
    fake_api: FakeAnthropicServer, tmp_path: Path, workspace: Path, shared: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_api.set_default(text("ok"))
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    sid, _ = _run(AgentOptions(home=home_a, cwd=workspace, session_store=shared), ["one", "two"])
    monkeypatch.setenv("AGENT_MAGIC_STORE", shared)
    assert am.get_session_info(sid, home=home_b).num_turns == 2  # host B has the 2-turn copy
    _run(AgentOptions(home=home_a, cwd=workspace, resume=sid, session_store=shared), ["three"])
    fork = am.fork_session(sid, home=home_a)  # points at all 3 turns
    want = [m.uuid for m in am.get_session_messages(fork, home=home_a)]
    assert [m.uuid for m in am.get_session_messages(fork, home=home_b)] == want
    assert am.get_session_info(sid, home=home_b).num_turns == 3
