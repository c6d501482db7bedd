"""The ``Bash`` tool, and the environment the agent's subprocesses get.

Each command runs as ``bash -c COMMAND`` in the session's working directory,
in a new session (so it and everything it starts form one process group),
with stdin from ``/dev/null`` and stdout and stderr combined. A timeout or an
interrupt (the surrounding anyio cancel scope being cancelled) ends the whole
group: SIGTERM, then SIGKILL half a second later.

:func:`subprocess_env` builds that environment: the parent's variables minus
anything that looks like a credential, unless the person opted in.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .._errors import ToolError
from .._redact import is_secret_name
from ..store.jsonl import crash_point
from .base import Tool, ToolContext, ToolResult, optional_int, require_str

__all__ = ["BashTool", "is_secret_name", "subprocess_env"]

DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
#: Characters of output returned; the middle of longer output is cut.
MAX_OUTPUT_CHARS = 30_000
#: Seconds between SIGTERM and SIGKILL.
KILL_GRACE_SECONDS = 0.5
#: Seconds output is still read after the shell exits while its background children hold the pipe.
_DRAIN_SECONDS = 0.2
#: Bytes kept from the start and from the end of the output while it streams in.
_KEEP_BYTES = 256 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))


def subprocess_env(
    base_env: Mapping[str, str], extra: Mapping[str, str], pass_secrets: bool
) -> dict[str, str]:
    """The environment for the agent's subprocesses.

    Parameters
    ----------
    base_env
        The inherited environment, usually ``os.environ``.
    extra
        Variables the person set explicitly (``AgentOptions.env``); always
        passed, and they override ``base_env``.
    pass_secrets
        Keep credential-like variables of ``base_env`` (see :func:`is_secret_name`);
        by default they are removed so that commands the model runs cannot read them.

    Returns
    -------
    dict
        A new dict; the arguments are not modified.
    """
    env = {k: v for k, v in base_env.items() if pass_secrets or not is_secret_name(k)}
    env.update(extra)
    return env


class _OutputBuffer:
    """Combined output, keeping the start and the end when there is a lot of it."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped_chars = 0
        self.dropped_lines = 0

    def feed(self, chunk: bytes) -> None:
        room = _KEEP_BYTES - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail += chunk
        if len(self.tail) > 2 * _KEEP_BYTES:
            cut = len(self.tail) - _KEEP_BYTES
            dropped = bytes(self.tail[:cut])
            # Characters of UTF-8 text = bytes that are not continuation bytes.
            self.dropped_chars += len(dropped.translate(None, _CONTINUATION_BYTES))
            self.dropped_lines += dropped.count(b"\n")
            del self.tail[:cut]

    def text(self) -> tuple[str, int, int]:
        """``(text, characters cut, lines cut)``, the text at most MAX_OUTPUT_CHARS long plus a marker."""
        half = MAX_OUTPUT_CHARS // 2
        if not self.dropped_chars:
            full = _ANSI.sub("", (self.head + self.tail).decode("utf-8", "replace"))
            if len(full) <= MAX_OUTPUT_CHARS:
                return full, 0, 0
            middle = full[half:-half]
            return _join_cut(full[:half], full[-half:], len(middle), middle.count("\n"))
        head = _ANSI.sub("", bytes(self.head).decode("utf-8", "replace"))
        tail = _ANSI.sub("", bytes(self.tail).decode("utf-8", "replace"))
        cut_chars = self.dropped_chars + max(len(head) - half, 0) + max(len(tail) - half, 0)
        cut_lines = self.dropped_lines + head[half:].count("\n") + tail[:-half].count("\n")
        return _join_cut(head[:half], tail[-half:], cut_chars, cut_lines)


def _join_cut(head: str, tail: str, chars: int, lines: int) -> tuple[str, int, int]:
    marker = f"\n\n… [{chars} characters ({lines} lines) cut from the middle of the output] …\n\n"
    return head + marker + tail, chars, lines


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


_PROC = Path("/proc")


def _group_alive(pgid: int) -> bool:
    """True while a process of the group is still running.

    Killed children that were orphaned stay zombies until init reaps them, and
    ``killpg(pgid, 0)`` still finds zombies; on Linux, /proc tells them apart.
    """
    if not _signal_group(pgid, 0):
        return False
    if not _PROC.is_dir():
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after "pid (comm) ": state ppid pgrp ...; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


async def _kill_group(proc: anyio.abc.Process, pgid: int) -> None:
    """SIGTERM the group, SIGKILL what is left after the grace period, reap the shell. Never raises."""
    with anyio.CancelScope(shield=True):
        if not _signal_group(pgid, signal.SIGTERM) and proc.returncode is not None:
            return
        with anyio.move_on_after(KILL_GRACE_SECONDS):
            await proc.wait()
            # Nothing signals when the last member of a group exits; poll for it.
            while _group_alive(pgid):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            return
        _signal_group(pgid, signal.SIGKILL)
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        with anyio.move_on_after(0.3):
            await proc.wait()


async def _pump(proc: anyio.abc.Process, buf: _OutputBuffer) -> None:
    """Read output until the shell has exited and the pipe is closed (or a short drain after exit)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    eof = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            try:
                async for chunk in stdout:
                    buf.feed(chunk)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            eof.set()

        tg.start_soon(read)
        await proc.wait()
        # Background children (`server &`) may keep the pipe open long after the shell is gone.
        with anyio.move_on_after(_DRAIN_SECONDS):
            await eof.wait()
        tg.cancel_scope.cancel()


class BashTool(Tool):
    """Run a shell command."""

    name = "Bash"
    kind = "execute"
    description = (
        "Executes a given bash command with an optional timeout, and returns its combined stdout and stderr "
        "and its exit code.\n\n"
        "Before executing the command, please follow these steps:\n"
        "1. Directory Verification: if the command will create new directories or files, first use `ls` to "
        "verify the parent directory exists and is the correct location.\n"
        "2. Command Execution: always quote file paths that contain spaces with double quotes "
        '(e.g., cd "path with spaces/file.txt").\n\n'
        "Usage notes:\n"
        "- The command argument is required.\n"
        f"- You can specify an optional timeout in milliseconds (up to {MAX_TIMEOUT_MS}ms / "
        f"{MAX_TIMEOUT_MS // 60000} minutes). If not specified, commands will timeout after "
        f"{DEFAULT_TIMEOUT_MS}ms ({DEFAULT_TIMEOUT_MS // 60000} minutes). On timeout the command and everything "
        "it started are killed.\n"
        "- It is very helpful if you write a clear, concise description of what this command does in 5-10 words.\n"
        f"- If the output exceeds {MAX_OUTPUT_CHARS} characters, the middle of it is cut; the start and the end "
        "are returned.\n"
        "- Each command runs in a fresh shell in the session's working directory: `cd` and variables do not carry "
        "over to the next command. Use absolute paths, or chain with `&&` (e.g. `cd sub && make`).\n"
        "- Commands get no input (stdin is /dev/null); avoid interactive programs and pagers. Credentials in "
        "environment variables (*_API_KEY, *_TOKEN, ...) are not passed through.\n"
        "- Avoid using Bash with the `find`, `grep`, `cat`, `head`, `tail`, `sed`, `awk`, or `echo` commands to "
        "read, search or edit files: use the Glob, Grep, Read, Edit and Write tools instead.\n"
        "- When issuing multiple commands, use ';' or '&&' to separate them. DO NOT use newlines (newlines are "
        "ok in quoted strings).\n"
        "- A command that starts a long-running background process (`server &`) returns when the shell exits; "
        "redirect the background process's output to a file."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to execute"},
            "timeout": {
                "type": "number",
                "description": f"Optional timeout in milliseconds (max {MAX_TIMEOUT_MS})",
            },
            "description": {
                "type": "string",
                "description": "Clear, concise description of what this command does in 5-10 words, in active voice.",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    def describe(self, input: dict[str, Any]) -> str:
        description = input.get("description")
        if isinstance(description, str) and description.strip():
            return f"{self.name}({description.strip()[:80]})"
        return super().describe(input)

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        command = require_str(input, "command")
        if "\x00" in command:
            raise ToolError("The command contains a NUL byte.")
        if command.strip() == "":
            raise ToolError("The command is empty.")
        timeout_ms = optional_int(input, "timeout", minimum=1)
        notes: list[str] = []
        if timeout_ms is None:
            timeout_ms = DEFAULT_TIMEOUT_MS
        elif timeout_ms > MAX_TIMEOUT_MS:
            notes.append(f"(The timeout was lowered to the maximum, {MAX_TIMEOUT_MS} ms.)")
            timeout_ms = MAX_TIMEOUT_MS
        description = input.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolError("The parameter `description` must be a string.")
        if not ctx.cwd.is_dir():
            raise ToolError(f"The working directory {ctx.cwd} does not exist.")
        # An empty context env means nobody built one: still never leak credentials.
        env = dict(ctx.env) if ctx.env else subprocess_env(os.environ, {}, pass_secrets=False)
        bash = shutil.which("bash", path=env.get("PATH")) or shutil.which("bash") or "/bin/bash"

        token = ctx.recorder.before_command()
        changed: list[str] = []
        try:
            exit_code, output, timed_out = await self._execute(
                bash, command, ctx, env, timeout_ms / 1000
            )
        finally:
            # Also after a timeout, a failure or an interrupt: a synchronous call, so
            # cancellation cannot cut it short.
            changed = ctx.recorder.after_command(token)

        text, cut_chars, _ = output
        n_lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        body = text.rstrip("\n") if text.strip() else "(no output)"
        parts = [body, *notes]
        data: dict[str, Any] = {"exit_code": exit_code, "timed_out": timed_out}
        if cut_chars:
            data["output_cut_chars"] = cut_chars
        if changed:
            data["changed_files"] = changed
        if timed_out:
            seconds = timeout_ms / 1000
            parts.append(
                f"Command timed out after {seconds:g} s; it and the processes it started were killed. "
                "Use a longer timeout (max 600000 ms) or make the command faster."
            )
            return ToolResult(
                "\n".join(parts), is_error=True, summary=f"timed out after {seconds:g}s", data=data
            )
        parts.append(f"Exit code: {exit_code}")
        return ToolResult("\n".join(parts), summary=f"exit {exit_code}, {n_lines} lines", data=data)

    async def _execute(
        self, bash: str, command: str, ctx: ToolContext, env: dict[str, str], limit_seconds: float
    ) -> tuple[int, tuple[str, int, int], bool]:
        buf = _OutputBuffer()
        try:
            proc = await anyio.open_process(
                [bash, "-c", command],
                cwd=ctx.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise ToolError(f"Could not start bash: {e.strerror or e}.") from None
        pgid = proc.pid  # start_new_session: the shell leads its own group
        crash_point("bash.spawned")
        timed_out = False
        try:
            with anyio.move_on_after(limit_seconds) as scope:
                await _pump(proc, buf)
            if scope.cancelled_caught:
                timed_out = True
                await _kill_group(proc, pgid)
        except BaseException:
            # Interrupted (cancelled) or failed: leave nothing running, then let it propagate.
            await _kill_group(proc, pgid)
            raise
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                # Closes the pipe (background children keep running) and the transport.
                await proc.aclose()
        returncode = proc.returncode
        if returncode is None:  # only if the shell survived SIGKILL's wait
            returncode = -signal.SIGKILL
        exit_code = returncode if returncode >= 0 else 128 - returncode
        return exit_code, buf.text(), timed_out
