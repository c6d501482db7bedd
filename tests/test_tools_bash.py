"""Bash with real subprocesses: output, exit codes, limits, timeouts, interrupts, the subprocess environment."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import ToolError
from agent_magic.tools import CellEdit, ToolContext, ToolResult
from agent_magic.tools.bash import MAX_OUTPUT_CHARS, BashTool, is_secret_name, subprocess_env


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        raise AssertionError("Bash backs up through before/after_command")

    def before_cell_edit(
        self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes
    ) -> None:
        raise AssertionError("Bash backs up through before/after_command")

    def before_command(self) -> object:
        self.events.append("before")
        return "token-1"

    def after_command(self, token: object) -> list[str]:
        assert token == "token-1"
        self.events.append("after")
        return ["changed.txt"]


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    env = subprocess_env(os.environ, {"GREETING": "hello there"}, pass_secrets=False)
    return ToolContext(cwd=tmp_path, session_id="test", env=env, recorder=FakeRecorder())


def events(ctx: ToolContext) -> list[str]:
    assert isinstance(ctx.recorder, FakeRecorder)
    return ctx.recorder.events


def bash(ctx: ToolContext, **input: Any) -> ToolResult:
    return anyio.run(BashTool().run, input, ctx)


def live_members(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies waiting to be reaped don't count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_group_gone(pgid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_output_and_exit_code(ctx: ToolContext) -> None:
    res = bash(ctx, command="echo out; echo err >&2; exit 3", description="print twice")
    assert res.content == "out\nerr\nExit code: 3"
    assert res.data["exit_code"] == 3 and res.data["timed_out"] is False and not res.is_error
    assert res.summary == "exit 3, 2 lines"
    assert events(ctx) == ["before", "after"]


def test_changed_files_are_what_the_command_changed(tmp_path: Path) -> None:
    # A real checkpoint log scans the workspace around the command: the result names exactly
    # the files the command created, changed and deleted, and nothing it only read.
    from agent_magic.checkpoints import CheckpointLog
    from agent_magic.store.blobs import BlobStore
    from agent_magic.store.jsonl import JsonlFile

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "kept.txt").write_text("same\n")
    (ws / "edited.txt").write_text("v1\n")
    (ws / "gone.txt").write_text("bye\n")
    log = CheckpointLog(session_id="s", cwd=ws, records=JsonlFile(tmp_path / "checkpoints.jsonl"), blobs=BlobStore(tmp_path / "blobs"))
    log.begin_turn("cp-1", 1, "change some files")
    ctx = ToolContext(cwd=ws, session_id="s", env=subprocess_env(os.environ, {}, pass_secrets=False), recorder=log)
    res = bash(ctx, command="cat kept.txt; echo v2 > edited.txt; rm gone.txt; mkdir -p new; echo x > new/made.txt")
    assert res.content == "same\nExit code: 0" and not res.is_error
    assert sorted(res.data["changed_files"]) == ["edited.txt", "gone.txt", "new/made.txt"]
    assert sorted(log.end_turn()["files"]) == ["edited.txt", "gone.txt", "new/made.txt"]


def test_runs_in_cwd_with_the_context_env(ctx: ToolContext, tmp_path: Path) -> None:
    # cat reads stdin, which is /dev/null: it returns at once
    res = bash(ctx, command='pwd; echo "$GREETING"; cat; echo done')
    assert res.content == f"{tmp_path}\nhello there\ndone\nExit code: 0"


def test_no_output(ctx: ToolContext) -> None:
    res = bash(ctx, command="true")
    assert res.content == "(no output)\nExit code: 0" and res.summary == "exit 0, 0 lines"


def test_killed_by_signal_reports_128_plus_n(ctx: ToolContext) -> None:
    res = bash(ctx, command="kill -TERM $$")
    assert res.data["exit_code"] == 128 + signal.SIGTERM


def test_long_output_keeps_head_and_tail(ctx: ToolContext) -> None:
    res = bash(ctx, command="for i in $(seq 1 20000); do echo line$i; done")
    assert isinstance(res.content, str)
    assert res.content.startswith("line1\nline2\n") and res.content.endswith(
        "line20000\nExit code: 0"
    )
    assert len(res.content) < MAX_OUTPUT_CHARS + 200
    total = sum(len(f"line{i}\n") for i in range(1, 20001))
    cut = res.data["output_cut_chars"]
    assert cut == total - MAX_OUTPUT_CHARS
    assert f"[{cut} characters (" in res.content


def test_huge_output_is_bounded_and_counted(ctx: ToolContext) -> None:
    res = bash(ctx, command="head -c 20000000 /dev/zero | tr '\\0' 'a'; echo; echo THE_END")
    assert isinstance(res.content, str)
    assert res.content.startswith("a" * 100) and res.content.endswith("THE_END\nExit code: 0")
    assert len(res.content) < MAX_OUTPUT_CHARS + 200
    assert res.data["output_cut_chars"] == 20_000_000 + 9 - MAX_OUTPUT_CHARS


def test_ansi_codes_are_stripped(ctx: ToolContext) -> None:
    res = bash(ctx, command="printf '\\033[31mred\\033[0m\\n'")
    assert res.content == "red\nExit code: 0"


@needs_proc
def test_timeout_kills_the_process_group(ctx: ToolContext, tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    start = time.monotonic()
    res = bash(
        ctx, command=f"echo started; echo $$ > {pidfile}; sleep 30 & sleep 30; wait", timeout=500
    )
    elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed  # generous: without the kill the command runs for 30 s
    assert res.is_error and res.data["timed_out"] is True
    assert "started" in str(res.content) and "timed out after 0.5 s" in str(res.content)
    pgid = int(pidfile.read_text())
    assert live_members(pgid) == []
    assert wait_group_gone(pgid)
    assert events(ctx) == ["before", "after"]


@needs_proc
def test_cancellation_kills_group_and_propagates(ctx: ToolContext, tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"
    outcome: dict[str, Any] = {}

    async def main() -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_soon() -> None:
                    await anyio.sleep(0.3)
                    scope.cancel()

                tg.start_soon(cancel_soon)
                outcome["result"] = await BashTool().run(
                    {"command": f"echo $$ > {pidfile}; sleep 30 & sleep 30; wait"}, ctx
                )
        outcome["cancelled"] = scope.cancelled_caught

    start = time.monotonic()
    anyio.run(main)
    elapsed = time.monotonic() - start
    assert outcome == {"cancelled": True}  # no result: the cancellation propagated out of run()
    assert elapsed < 10, elapsed  # generous: without the kill the command runs for 30 s
    pgid = int(pidfile.read_text())
    assert live_members(pgid) == []
    assert wait_group_gone(pgid)
    assert events(ctx) == ["before", "after"]


@needs_proc
def test_cancellation_sigkills_what_ignores_sigterm(ctx: ToolContext, tmp_path: Path) -> None:
    pidfile = tmp_path / "pgid"

    async def main() -> None:
        with anyio.move_on_after(0.3):
            await BashTool().run(
                {"command": f"trap '' TERM; echo $$ > {pidfile}; sleep 30; sleep 30"}, ctx
            )

    # An interrupt's bound, generous: the command alone would run for a minute.
    start = time.monotonic()
    anyio.run(main)
    assert time.monotonic() - start < 10
    pgid = int(pidfile.read_text())
    assert live_members(pgid) == []


def test_background_child_holding_the_pipe_does_not_block(ctx: ToolContext, tmp_path: Path) -> None:
    # The child holds the output pipe for five minutes; waiting for it would run into the
    # command's 20 s timeout (no clock needed). bench/ measures how soon the result comes.
    pidfile = tmp_path / "bg.pid"
    try:
        res = bash(ctx, command=f"sleep 300 & echo $! > {pidfile}; echo launched", timeout=20_000)
        assert res.content == "launched\nExit code: 0"
        assert res.data["timed_out"] is False and res.data["exit_code"] == 0
    finally:
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_bad_input_is_a_tool_error_and_runs_nothing(ctx: ToolContext) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "command"),
        ({"command": 3}, "command"),
        ({"command": "   "}, "empty"),
        ({"command": "echo \x00"}, "NUL"),
        ({"command": "ls", "timeout": "soon"}, "timeout"),
        ({"command": "ls", "timeout": 0}, "timeout"),
        ({"command": "ls", "description": 5}, "description"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            bash(ctx, **input)
    assert events(ctx) == []


def test_timeout_above_maximum_is_lowered(ctx: ToolContext) -> None:
    res = bash(ctx, command="echo ok", timeout=10_000_000)
    assert "lowered to the maximum" in str(res.content) and res.data["exit_code"] == 0


def test_missing_cwd_is_a_tool_error(tmp_path: Path) -> None:
    ctx = ToolContext(cwd=tmp_path / "gone", session_id="t")
    with pytest.raises(ToolError, match="does not exist"):
        bash(ctx, command="ls")


def test_describe_uses_the_description() -> None:
    assert (
        BashTool().describe({"command": "ls -la", "description": "List files"})
        == "Bash(List files)"
    )
    assert BashTool().describe({"command": "ls -la"}) == "Bash(ls -la)"


# --------------------------------------------------------------------------- environment


def test_subprocess_env_drops_secrets() -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "OPENAI_API_KEY": "sk-1",
        "ANTHROPIC_API_KEY": "sk-2",
        "ANTHROPIC_AUTH_KEY_FILE": "x",
        "GITHUB_TOKEN": "t",
        "HF_TOKEN": "t",
        "AWS_SECRET_ACCESS_KEY": "s",
        "CLIENT_SECRET": "s",
        "DB_PASSWORD": "p",
        "TOKENIZERS_PARALLELISM": "false",
        "KEYBOARD": "us",
        "ANTHROPIC_MODEL": "claude",
    }
    env = subprocess_env(base, {}, pass_secrets=False)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "TOKENIZERS_PARALLELISM": "false",
        "KEYBOARD": "us",
        "ANTHROPIC_MODEL": "claude",
    }
    assert subprocess_env(base, {}, pass_secrets=True) == base
    assert "OPENAI_API_KEY" in base  # not modified


def test_subprocess_env_extra_is_explicit_and_wins() -> None:
    env = subprocess_env(
        {"PATH": "/a", "X": "1"}, {"X": "2", "MY_TOKEN": "given on purpose"}, pass_secrets=False
    )
    assert env == {"PATH": "/a", "X": "2", "MY_TOKEN": "given on purpose"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [("OPENAI_API_KEY", True), ("openai_api_key", True), ("APIKEY", True), ("SLACK_BOT_TOKEN", True),
     ("SECRET_KEY", True), ("MY_SECRET_VALUE", True), ("ANTHROPIC_API_KEY", True), ("GPG_PRIVATE_KEY", True),
     ("PATH", False), ("TOKENIZERS_PARALLELISM", False), ("PYTHONPATH", False), ("KEY_REPEAT", False),
     ("ANTHROPIC_BASE_URL", False)],
)  # fmt: skip
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_empty_context_env_still_hides_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_SERVICE_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("VISIBLE_SETTING", "yes")
    ctx = ToolContext(cwd=tmp_path, session_id="t")
    res = bash(ctx, command='echo "[$SOME_SERVICE_API_KEY] [$VISIBLE_SETTING]"')
    assert res.content == "[] [yes]\nExit code: 0"
