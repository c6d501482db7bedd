"""Security: secrets stay out of everything stored and shown, the store is private, paths are checked
as resolved, and a symlink swapped in after the check is not written through."""

from __future__ import annotations

import json
import logging
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import agent_magic as am
from agent_magic import ToolError
from agent_magic.notebook._display import TurnView
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, text, tool_use, tool_uses
from agent_magic.tools import builtin_tools
from agent_magic.tools.base import CellEdit, NullRecorder, Tool, ToolContext, ToolResult

from .conftest import result_of, run_query
from .reliability.crash import notebook_with_outputs

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-REALLYSECRET-0123456789abcdef",
    "MY_SERVICE_TOKEN": "tok_live_5f2c9a8e7d6b4a3c",
    "OPENAI_API_KEY": "sk-proj-openai-secret-998877",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "DB_PASSWORD": "correct-horse-battery-staple",
    "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwx",
}


@pytest.fixture
def secrets_env(fake_api: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    return SECRETS


def _leaks(data: str | bytes) -> list[str]:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return [name for name, value in SECRETS.items() if value in data]


class _Boom(Tool):
    """A tool that fails with a secret in its error (as a library might)."""

    name = "Boom"
    description = "Fails."
    input_schema = {"type": "object", "properties": {}}

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise RuntimeError(f"connection to db failed with password {os.environ['DB_PASSWORD']}")


def _script_leaky_model(server: FakeAnthropicServer, workspace: Path) -> None:
    """A model that says the secrets, runs `env`, reads a .env file and makes a tool fail with one."""
    say = " ".join(SECRETS.values())
    server.add(
        tool_uses(
            [("Bash", {"command": "env; echo token=$MY_SERVICE_TOKEN key=$ANTHROPIC_API_KEY"}),
             ("Read", {"file_path": str(workspace / ".env")}),
             ("Boom", {})],
            text=f"Let me check the keys: {say}",
        ),
        tool_use("Write", {"file_path": str(workspace / "notes.md"), "content": "No secrets here.\n"}),
        text(f"The keys are {say}. Done."),
    )


def test_secrets_stay_out_of_transcripts_outputs_exports_and_logs(
    secrets_env: dict[str, str], fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (workspace / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    _script_leaky_model(fake_api, workspace)
    bundles: list[dict[str, Any]] = []
    view = TurnView(rich=True, publish=lambda b, first: bundles.append(b), min_interval=0)
    # agent-magic's own log at DEBUG; libraries at INFO (the anthropic SDK dumps whole requests
    # at DEBUG, which a person turns on on purpose).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="agent_magic")
    msgs = run_query("check the configuration", cwd=workspace, permission_mode="bypassPermissions",
                     include_partial_messages=True, extra_tools=[_Boom()])
    for m in msgs:
        view.on_message(m)
        view.flush(force=True)
    res = result_of(msgs)
    assert res.subtype == "success"

    # Bash never saw them; the model did (it read .env), the stored and shown text does not.
    bash_out = fake_api.message_requests[1].tool_results[0]["content"]
    assert _leaks(bash_out) == [] and "MY_SERVICE_TOKEN" not in bash_out
    for path in (home / "sessions" / res.session_id).iterdir():
        if path.is_file():
            assert _leaks(path.read_bytes()) == [], path.name
    assert "[REDACTED:MY_SERVICE_TOKEN]" in (home / "sessions" / res.session_id / "transcript.jsonl").read_text()
    assert bundles and all(_leaks(json.dumps(b)) == [] for b in bundles)
    assert "Boom failed unexpectedly" in caplog.text  # the traceback was logged...
    assert _leaks(caplog.text) == []  # ...without the password it quoted
    for stored in am.get_session_messages(res.session_id):
        assert _leaks(json.dumps(stored.message)) == []

    out = am.export_session(res.session_id, tmp_path / "export.zip")
    with zipfile.ZipFile(out) as z:
        for info in z.infolist():
            data = z.read(info)
            if info.filename.startswith("blobs/"):
                import zlib

                data = zlib.decompress(data)
            assert _leaks(data) == [], info.filename
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_secrets_stay_out_of_a_cell_and_its_printed_output(
    secrets_env: dict[str, str], fake_api: FakeAnthropicServer, home: Path, workspace: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from .reliability.fuzz import magic_shell

    (workspace / ".env").write_text(f"TOKEN={SECRETS['MY_SERVICE_TOKEN']}\n")
    fake_api.add(tool_use("Read", {"file_path": str(workspace / ".env")}), text(f"It is {SECRETS['MY_SERVICE_TOKEN']}."))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    with magic_shell(workspace) as ip:
        ip.run_cell_magic("agent", "", "what is the token?")
    out = capsys.readouterr()
    assert "[REDACTED:MY_SERVICE_TOKEN]" in out.out
    assert _leaks(out.out + out.err) == []


@pytest.mark.parametrize("allowed", [False, True])
def test_bash_gets_secrets_only_when_allowed(
    secrets_env: dict[str, str], fake_api: FakeAnthropicServer, home: Path, workspace: Path, allowed: bool
) -> None:
    fake_api.add(tool_use("Bash", {"command": "env"}), text("ok"))
    run_query("show env", cwd=workspace, permission_mode="bypassPermissions", pass_secrets_to_subprocesses=allowed,
              env={"EXTRA_TOKEN": "explicitly-passed-1234"})
    out = str(fake_api.message_requests[1].tool_results[0]["content"])
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "EXTRA_TOKEN" in names  # what the person set explicitly always passes
    for name in SECRETS:
        assert (name in names) == allowed, name


def test_every_file_and_folder_of_the_store_is_private(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    old_umask = os.umask(0o022)
    try:
        (workspace / "nb.ipynb").write_text(json.dumps(notebook_with_outputs()))
        fake_api.add(
            tool_use("Write", {"file_path": str(workspace / "src" / "a.py"), "content": "x = 1\n"}),
            tool_use("Read", {"file_path": str(workspace / "nb.ipynb")}),
            tool_use("NotebookEdit", {"notebook_path": str(workspace / "nb.ipynb"), "cell_id": "c1", "new_source": "y = 2"}),
            tool_use("Bash", {"command": "mkdir -p out && printf 1 > out/r.txt"}),
            text("done"),
        )
        res = result_of(run_query("work", cwd=workspace, permission_mode="bypassPermissions"))
        sid = res.session_id
        am.rename_session(sid, "Private work")
        am.tag_session(sid, "keep")
        fork = am.fork_session(sid)
        am.rewind_files(sid, str(res.checkpoint_id))
        bundle = am.export_session(sid, tmp_path / "b.zip")
        am.import_session(bundle, new_session_id="imported")
        am.list_sessions()
        am.delete_session(fork)
        SessionStore.forget_instances()
        am.list_sessions()  # a fresh index connection: -wal and -shm exist now
    finally:
        os.umask(old_umask)
    seen = {"dirs": 0, "files": 0, "sqlite": 0, "blobs": 0, "locks": 0}
    for root, dirs, files in os.walk(home):
        for d in dirs:
            mode = stat.S_IMODE(os.lstat(Path(root, d)).st_mode)
            assert mode == 0o700, f"{Path(root, d)} is {oct(mode)}"
            seen["dirs"] += 1
        for f in files:
            p = Path(root, f)
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            assert mode == 0o600, f"{p} is {oct(mode)}"
            seen["files"] += 1
            seen["sqlite"] += f.startswith("index.sqlite3")
            seen["blobs"] += "blobs" in p.parts
            seen["locks"] += f == ".lock"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert seen["sqlite"] >= 2 and seen["blobs"] >= 3 and seen["locks"] >= 1, seen


# ---------------------------------------------------------------------------
# Paths: resolved before the check; a swap after the check is refused
# ---------------------------------------------------------------------------


def test_permission_checks_resolve_symlinks_and_dotdot(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside)
    (workspace / "sub").mkdir()
    fake_api.add(
        tool_use("Write", {"file_path": str(workspace / "link" / "a.txt"), "content": "x"}),
        tool_use("Write", {"file_path": str(workspace / "sub" / ".." / ".." / "outside" / "b.txt"), "content": "x"}),
        tool_use("Edit", {"file_path": "link/c.txt", "old_string": "a", "new_string": "b"}),
        text("done"),
    )
    run_query("write outside", cwd=workspace, permission_mode="acceptEdits")
    results = [r.tool_results[0] for r in fake_api.message_requests[1:]]
    assert all(r.get("is_error") for r in results)
    assert all("outside the workspace" in str(r["content"]) or "not granted" in str(r["content"]) for r in results)
    assert list(outside.iterdir()) == []


class _Swap(NullRecorder):
    """A recorder that, once the tool has checked and backed up, swaps a path for a symlink."""

    def __init__(self, victim: Path, target: Path) -> None:
        self.victim, self.target = victim, target

    def _swap(self) -> None:
        if self.victim.is_dir() and not self.victim.is_symlink():
            self.victim.rename(self.victim.with_name(self.victim.name + ".moved"))
        elif self.victim.exists():
            self.victim.unlink()
        self.victim.symlink_to(self.target)

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        self._swap()

    def before_cell_edit(self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes) -> None:
        self._swap()


@pytest.fixture
def swap_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "sub").mkdir(parents=True)
    outside.mkdir()
    yield ws, outside


def _tool(name: str) -> Tool:
    return next(t for t in builtin_tools(None) if t.name == name)


def _swap_run(tool: str, inp: dict[str, Any], ws: Path, recorder: _Swap, read: Path | None = None) -> ToolError:
    ctx = ToolContext(cwd=ws, session_id="toctou", recorder=recorder)
    if read is not None:
        ctx.read_files[str(read)] = read.stat().st_mtime_ns
    with pytest.raises(ToolError) as e:
        anyio.run(_tool(tool).run, inp, ctx)
    return e.value


def test_write_refuses_a_parent_folder_swapped_for_a_symlink(swap_dirs: tuple[Path, Path]) -> None:
    ws, outside = swap_dirs
    err = _swap_run("Write", {"file_path": str(ws / "sub" / "new.txt"), "content": "pwned"}, ws, _Swap(ws / "sub", outside))
    assert "symbolic link" in str(err) or "not a folder" in str(err)
    assert list(outside.iterdir()) == []


def test_write_refuses_a_missing_parent_created_as_a_symlink(swap_dirs: tuple[Path, Path]) -> None:
    ws, outside = swap_dirs
    # The folder did not exist at the check (Write creates it); an attacker makes it a symlink first.
    err = _swap_run("Write", {"file_path": str(ws / "made" / "deep" / "f.txt"), "content": "pwned"}, ws,
                    _Swap(ws / "made", outside))
    assert str(err)
    assert list(outside.iterdir()) == []


def test_write_refuses_a_file_swapped_for_a_symlink(swap_dirs: tuple[Path, Path]) -> None:
    ws, outside = swap_dirs
    target = outside / "victim.txt"
    target.write_text("precious")
    f = ws / "sub" / "f.txt"
    f.write_text("mine")
    err = _swap_run("Write", {"file_path": str(f), "content": "pwned"}, ws, _Swap(f, target), read=f)
    assert "symbolic link" in str(err)
    assert target.read_text() == "precious"


def test_edit_refuses_a_swap(swap_dirs: tuple[Path, Path]) -> None:
    ws, outside = swap_dirs
    f = ws / "sub" / "f.txt"
    f.write_text("hello")
    (outside / "f.txt").write_text("hello")
    _swap_run("Edit", {"file_path": str(f), "old_string": "hello", "new_string": "pwned"}, ws, _Swap(ws / "sub", outside), read=f)
    assert (outside / "f.txt").read_text() == "hello"


def test_notebook_edit_refuses_a_swap(swap_dirs: tuple[Path, Path]) -> None:
    ws, outside = swap_dirs
    nb = ws / "sub" / "nb.ipynb"
    nb.write_text(json.dumps(notebook_with_outputs()))
    (outside / "nb.ipynb").write_text("{}")
    _swap_run("NotebookEdit", {"notebook_path": str(nb), "cell_id": "c1", "new_source": "pwned"}, ws,
              _Swap(ws / "sub", outside), read=nb)
    assert (outside / "nb.ipynb").read_text() == "{}"


def test_writes_without_a_swap_still_work(swap_dirs: tuple[Path, Path]) -> None:
    ws, _ = swap_dirs
    ctx = ToolContext(cwd=ws, session_id="ok")
    anyio.run(_tool("Write").run, {"file_path": str(ws / "a" / "b" / "c.txt"), "content": "fine"}, ctx)
    assert (ws / "a" / "b" / "c.txt").read_text() == "fine"
    anyio.run(_tool("Edit").run, {"file_path": str(ws / "a" / "b" / "c.txt"), "old_string": "fine", "new_string": "good"}, ctx)
    assert (ws / "a" / "b" / "c.txt").read_text() == "good"


def test_rewind_does_not_write_through_a_folder_swapped_for_a_symlink(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "sub").mkdir()
    (workspace / "sub" / "f.txt").write_text("original\n")
    fake_api.add(
        tool_use("Read", {"file_path": str(workspace / "sub" / "f.txt")}),
        tool_use("Write", {"file_path": str(workspace / "sub" / "f.txt"), "content": "changed\n"}),
        text("done"),
    )
    res = result_of(run_query("change it", cwd=workspace, permission_mode="acceptEdits"))
    (workspace / "sub").rename(workspace / "sub.moved")
    (workspace / "sub").symlink_to(outside)
    am.rewind_files(res.session_id, str(res.checkpoint_id), force=True)
    assert list(outside.iterdir()) == []


def test_a_key_in_a_prompt_or_title_is_redacted_wherever_it_is_stored(
    secrets_env: dict[str, str], fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    fake_api.add(text("ok"))
    res = result_of(run_query(f"my key is {SECRETS['ANTHROPIC_API_KEY']}", cwd=workspace))
    am.rename_session(res.session_id, f"key {SECRETS['HF_TOKEN']}")
    am.tag_session(res.session_id, SECRETS["DB_PASSWORD"])
    assert SECRETS["HF_TOKEN"] not in am.get_session_info(res.session_id).summary
    SessionStore.forget_instances()
    for root, _dirs, files in os.walk(home):
        for f in files:
            assert _leaks(Path(root, f).read_bytes()) == [], f
