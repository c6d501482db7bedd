"""Claude Code as an engine: its agent loop runs the turn, agent-magic keeps the session.

``AGENT_MAGIC_PROVIDER=claude-code`` (``pip install agent-magic[claude-code]``)
runs every turn inside Claude Code through ``claude_agent_sdk.ClaudeSDKClient``,
one Claude Code session per agent-magic session, kept open for the life of the
client. What stays agent-magic's:

- **the transcript**: every assistant message and tool result is mirrored into
  the session's JSONL in the shape the built-in loop writes; a line
  ``{"type": "engine", "engine": "claude-code", "engine_session_id": ...}``
  records which Claude Code session holds the conversation, and is read back
  to ``resume`` it (or ``fork_session`` it, for a fork of ours);
- **checkpoints**: ``PreToolUse`` hooks back up files before Write and Edit,
  notebook cells before NotebookEdit, and the workspace before Bash
  (``PostToolUse`` finishes Bash's record and checks that the file Claude Code
  wrote is the one recorded, recording a correction when it is not), so
  ``rewind_files`` works cell by cell as with the built-in loop. Claude Code's
  own file checkpointing stays off;
- **permissions**: the ``PreToolUse`` hook applies agent-magic's modes and
  rules (``allowed_tools``, ``disallowed_tools``, workspace); a call they do not
  allow goes to Claude Code's ``can_use_tool``, which denies it with the rule's
  reason or asks ``AgentOptions.can_use_tool``;
- **kernel tools**: extra tools (``Python``, ``Variables``) are offered through
  an in-process MCP server (``mcp__agent_magic__Python``), named back in the
  transcript.

Claude Code uses the person's own login (or ``ANTHROPIC_API_KEY``), its own
model default and its ``claude_code`` system prompt with agent-magic's notes
appended. Settings files (``~/.claude/settings.json``, ``.claude/``, ``CLAUDE.md``)
are not loaded, so agent-magic's permission rules are the only ones, and
prompts are delivered verbatim (no slash commands or ``@file`` expansion).

``AGENT_MAGIC_CLAUDE_CODE_CLI`` names a ``claude`` executable to use instead of
the one bundled with ``claude-agent-sdk`` (or found on ``PATH``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import claude_agent_sdk as sdk

from .._compaction import record_engine_compaction
from .._errors import ConfigurationError, MissingAPIKeyError, ProviderError, ToolError
from .._hooks import run_hooks
from .._loop import _ask, hook_base, permission_for, prompt_submit_hook, report_hook
from .._messages import (
    AssistantMessage,
    Message,
    StreamEvent,
    SystemMessage,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    block_from_dict,
)
from .._permissions import PermissionResultAllow as OurAllow
from .._permissions import PermissionResultDeny as OurDeny
from .._pricing import cost_usd, price_for
from ..store.home import new_uuid
from ..store.transcript import is_prompt_entry, prompt_text
from ..tools import BUILTIN_TOOL_NAMES
from ..tools.base import CellEdit, Tool, ToolContext, ToolResult
from .base import EventCallback, ModelRequest, ModelResponse, PartialResponse, Provider

log = logging.getLogger("agent_magic")

Emit = Callable[[Message], Awaitable[None]]

ENGINE = "claude-code"
_SERVER = "agent_magic"
_MCP_PREFIX = f"mcp__{_SERVER}__"
#: A person may take a while to approve a call; Claude Code's default hook timeout is 60 s.
_HOOK_TIMEOUT = 24 * 3600.0
#: NotebookEdit results carry the whole notebook twice; the SDK's default line buffer is 1 MB.
_MAX_BUFFER = 512 * 1024 * 1024
_DRAIN_SECONDS = 15.0
_EARLIER_CHARS = 40_000

_NO_CLI = (
    "Claude Code was not found: install the claude-code extra (`pip install agent-magic[claude-code]`, "
    "which bundles it) or Claude Code itself, or set AGENT_MAGIC_CLAUDE_CODE_CLI to its path."
)
_NO_LOGIN = (
    "Claude Code is not logged in: run `claude` in a terminal and sign in with /login, "
    "or set ANTHROPIC_API_KEY."
)
_CREDENTIAL_VARS = (
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY",
)


# --------------------------------------------------------------------------- setup checks


def cli_path() -> str | None:
    """The Claude Code executable the engine runs, or None when there is none.

    Raises
    ------
    ConfigurationError
        ``AGENT_MAGIC_CLAUDE_CODE_CLI`` names something that is not an executable file.
    """
    chosen = os.environ.get("AGENT_MAGIC_CLAUDE_CODE_CLI")
    if chosen:
        p = Path(chosen).expanduser()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise ConfigurationError(f"AGENT_MAGIC_CLAUDE_CODE_CLI={chosen!r} is not an executable file.")
        return str(p)
    bundled = Path(sdk.__file__).parent / "_bundled" / ("claude.exe" if sys.platform == "win32" else "claude")
    if bundled.is_file():
        return str(bundled)
    return shutil.which("claude")


def _may_be_logged_in() -> bool:
    """False only when Claude Code certainly has no credentials (it checks the rest itself)."""
    if any(os.environ.get(k) for k in _CREDENTIAL_VARS):
        return True
    if sys.platform == "darwin":
        return True  # the login lives in the keychain
    home = Path.home()
    config = Path(os.environ.get("CLAUDE_CONFIG_DIR") or home / ".claude")
    return any(p.exists() for p in (config / ".credentials.json", config / ".claude.json", home / ".claude.json"))


# --------------------------------------------------------------------------- conversions


def our_tool_name(name: str) -> str:
    """The agent-magic name of a Claude Code tool (``mcp__agent_magic__Python`` -> ``Python``)."""
    return name[len(_MCP_PREFIX):] if name.startswith(_MCP_PREFIX) else name


def _block_json(block: Any) -> dict[str, Any] | None:
    if isinstance(block, sdk.TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, sdk.ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if isinstance(block, sdk.ToolUseBlock):
        inp = block.input if isinstance(block.input, dict) else {}
        return {"type": "tool_use", "id": block.id, "name": our_tool_name(block.name), "input": inp}
    if isinstance(block, sdk.ToolResultBlock):
        return ToolResultBlock(block.tool_use_id, block.content, block.is_error).to_dict()
    return None  # server tools (web search) are Claude Code's business


def _usage_ints(usage: dict[str, Any] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = (usage or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = int(value)
    return out


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _mcp_content(result: ToolResult) -> list[dict[str, Any]]:
    """A ToolResult's content as MCP content blocks (text and images)."""
    if isinstance(result.content, str):
        return [{"type": "text", "text": result.content}]
    out: list[dict[str, Any]] = []
    for b in result.content:
        if b.get("type") == "text":
            out.append({"type": "text", "text": str(b.get("text", ""))})
        elif b.get("type") == "image" and isinstance(b.get("source"), dict):
            src = b["source"]
            out.append({"type": "image", "data": src.get("data", ""), "mimeType": src.get("media_type", "image/png")})
    return out or [{"type": "text", "text": ""}]


def _earlier_conversation(entries: list[dict[str, Any]]) -> str:
    """The session's earlier turns as text, for a Claude Code session that never saw them."""
    lines: list[str] = []
    for e in entries:
        m = e.get("message")
        if not isinstance(m, dict):
            continue
        if is_prompt_entry(e):
            lines.append(f"User: {prompt_text(m)}")
        elif e.get("type") == "assistant" and isinstance(m.get("content"), list):
            for b in m["content"]:
                if not isinstance(b, dict):
                    continue
                if b.get("type") == "text" and b.get("text"):
                    lines.append(f"Assistant: {b['text']}")
                elif b.get("type") == "tool_use":
                    lines.append(f"Assistant called {b.get('name')}({_one_line(json.dumps(b.get('input')), 200)})")
    text = "\n".join(lines)
    return text if len(text) <= _EARLIER_CHARS else "…\n" + text[-_EARLIER_CHARS:]


def _cc_notebook_bytes(nb: Any, trailing_newline: bool) -> bytes:
    """A notebook as Claude Code's NotebookEdit writes it (keys in file order, one-space indent)."""
    text = json.dumps(nb, indent=1, ensure_ascii=False)
    return (text + ("\n" if trailing_newline else "")).encode("utf-8")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None


def _predict_edit(old: bytes | None, inp: dict[str, Any]) -> bytes | None:
    """What Edit will write: exact for the common case; PostToolUse corrects the rest."""
    old_s, new_s = inp.get("old_string"), inp.get("new_string")
    if not isinstance(old_s, str) or not isinstance(new_s, str):
        return old
    if old is None:
        return new_s.encode("utf-8") if old_s == "" else None
    try:
        text = old.decode("utf-8")
    except UnicodeDecodeError:
        return old
    if old_s == "":
        return new_s.encode("utf-8") if text == "" else old
    crlf = "\r\n" in text
    if crlf:  # Claude Code edits the text with LF line ends and writes the file's own back
        text, old_s, new_s = (s.replace("\r\n", "\n") for s in (text, old_s, new_s))
    if old_s not in text:
        return old
    out = text.replace(old_s, new_s) if inp.get("replace_all") else text.replace(old_s, new_s, 1)
    return (out.replace("\n", "\r\n") if crlf else out).encode("utf-8")


# --------------------------------------------------------------------------- per-turn state


@dataclass
class _Pending:
    """A backup taken before a tool ran, checked (or finished) once it has."""

    kind: str  # "file" | "cell" | "insert" | "bash"
    tool: str
    path: Path | None = None
    old: bytes | None = None
    predicted: bytes | None = None
    edit: CellEdit | None = None
    token: object = None


@dataclass
class _Verdict:
    """What the PreToolUse hook decided, for can_use_tool to act on."""

    behavior: str  # "deny" | "ask"
    reason: str
    blocked_path: str | None = None
    tool: Tool | None = None
    message: str = ""  # what the model is told when denied


@dataclass
class _ActiveTurn:
    rt: Any
    turn: Any
    emit: Emit
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    buffer: list[dict[str, Any]] = field(default_factory=list)
    buffer_id: str | None = None
    buffer_model: str = ""
    buffer_usage: dict[str, Any] | None = None
    buffer_engine_uuid: str | None = None
    buffer_stop: str | None = None
    seen: dict[str, anyio.Event] = field(default_factory=dict)
    verdicts: dict[str, _Verdict] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    pending: dict[str, _Pending] = field(default_factory=dict)
    diffs: dict[str, str | None] = field(default_factory=dict)
    mcp_ids: dict[str, collections.deque[str]] = field(default_factory=dict)
    api_error: tuple[str, str] | None = None
    interrupting: bool = False

    def seen_event(self, tool_use_id: str) -> anyio.Event:
        ev = self.seen.get(tool_use_id)
        if ev is None:
            ev = self.seen[tool_use_id] = anyio.Event()
        return ev


# --------------------------------------------------------------------------- the engine


class ClaudeCodeEngine(Provider):
    """Runs agent-magic turns inside Claude Code (see the module docstring)."""

    name = ENGINE

    def __init__(self) -> None:
        self._client: Any = None
        self._connected_key: tuple[Any, ...] | None = None
        self._engine_sid: str | None = None
        self._model_sent: str | None = None
        self._cost_seen = 0.0
        self._api_ms_seen = 0
        self._active: _ActiveTurn | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._rt: Any = None

    # -- Provider ------------------------------------------------------------------
    def default_model(self) -> str | None:
        return None

    def check(self) -> None:
        if cli_path() is None:
            raise ConfigurationError(_NO_CLI)
        if not _may_be_logged_in():
            raise MissingAPIKeyError(_NO_LOGIN)

    async def stream(self, request: ModelRequest, on_event: EventCallback | None, partial: PartialResponse) -> ModelResponse:
        raise ConfigurationError("The claude-code engine runs whole turns (run_turn_body); it does not stream single requests.")

    async def aclose(self) -> None:
        await self._disconnect()

    # -- connection ----------------------------------------------------------------
    def _explicit_model(self, rt: Any) -> str | None:
        if rt.options.model or os.environ.get("AGENT_MAGIC_MODEL"):
            return str(rt.model)
        return None

    def _connect_key(self, rt: Any) -> tuple[Any, ...]:
        o = rt.options
        return (
            o.include_partial_messages, o.max_turns, o.max_budget_usd, o.system_prompt, o.append_system_prompt,
            tuple(rt.tools), tuple(str(p) for p in rt.workspace), tuple(sorted(o.env.items())),
        )

    def _system_prompt(self, rt: Any) -> Any:
        notes = [
            "You are working with a data scientist in Jupyter through agent-magic. Every change you make to "
            "files and notebook cells is checkpointed, so the person can rewind it."
        ]
        scope = str(rt.session.scope)
        if scope.endswith(".ipynb"):
            notes.append(f"The person is working in the notebook {scope}.")
        if "Python" in rt.tools:
            notes.append(
                f"You run inside the person's live Jupyter kernel: use {_MCP_PREFIX}Python to inspect their "
                f"variables (DataFrames, models) before changing anything"
                + (f", and {_MCP_PREFIX}Variables to list them." if "Variables" in rt.tools else ".")
            )
        notes.append("Edit notebooks cell by cell with NotebookEdit, addressing cells by the ids Read shows.")
        o = rt.options
        if o.append_system_prompt:
            notes.append(o.append_system_prompt)
        if o.system_prompt is not None:
            return o.system_prompt + ("\n\n" + o.append_system_prompt if o.append_system_prompt else "")
        return {"type": "preset", "preset": "claude_code", "append": "\n".join(notes)}

    def _mcp_servers(self, rt: Any) -> dict[str, Any]:
        extra = [t for t in rt.tools.values() if t.name not in BUILTIN_TOOL_NAMES]
        if not extra:
            return {}
        wrapped = [sdk.tool(t.name, t.description, t.input_schema)(self._mcp_handler(t)) for t in extra]
        return {_SERVER: sdk.create_sdk_mcp_server(_SERVER, tools=wrapped)}

    def _options(self, rt: Any, resume: str | None, fork: bool) -> Any:
        o = rt.options
        model = self._explicit_model(rt)
        self._model_sent = model
        hooks: dict[Any, Any] = {
            "PreToolUse": [sdk.HookMatcher(hooks=[self._pre_tool_use], timeout=_HOOK_TIMEOUT)],
            "PostToolUse": [sdk.HookMatcher(hooks=[self._post_tool_use], timeout=_HOOK_TIMEOUT)],
            "PostToolUseFailure": [sdk.HookMatcher(hooks=[self._post_tool_use], timeout=_HOOK_TIMEOUT)],
        }
        return sdk.ClaudeAgentOptions(
            tools=[n for n in rt.tools if n in BUILTIN_TOOL_NAMES],
            system_prompt=self._system_prompt(rt),
            mcp_servers=self._mcp_servers(rt),
            strict_mcp_config=True,
            permission_mode="default",
            resume=resume,
            fork_session=fork and resume is not None,
            max_turns=o.max_turns,
            max_budget_usd=o.max_budget_usd,
            model=model,
            cwd=str(rt.session.cwd),
            cli_path=cli_path(),
            add_dirs=[str(p) for p in rt.workspace[1:]],
            env=dict(o.env),
            max_buffer_size=_MAX_BUFFER,
            stderr=self._stderr.append,
            can_use_tool=self._can_use_tool,
            hooks=hooks,
            include_partial_messages=o.include_partial_messages,
            setting_sources=[],
            verbatim_prompts=True,
            enable_file_checkpointing=False,
            client_app="agent-magic",
        )

    def _engine_entry(self, rt: Any) -> dict[str, Any] | None:
        for e in reversed(rt.session.entries):
            # A compaction's boundary starts a resumed session's lines: it names the engine's session too.
            if e.get("type") in ("engine", "system") and e.get("engine") == ENGINE and isinstance(e.get("engine_session_id"), str):
                found: dict[str, Any] = e
                return found
        return None

    async def _ensure_connected(self, rt: Any, emit: Emit) -> str | None:
        """Connect (or reconnect after a settings change); returns earlier turns to replay as text, if any."""
        key = self._connect_key(rt)
        if self._client is not None and key == self._connected_key:
            model = self._explicit_model(rt)
            if model != self._model_sent and model is not None:
                await self._client.set_model(model)
                self._model_sent = model
            return None
        await self._disconnect()
        resume: str | None = self._engine_sid
        fork = False
        if resume is None:
            entry = self._engine_entry(rt)
            if entry is not None:
                resume = str(entry["engine_session_id"])
                # Our fork still names its parent's Claude Code session: fork that one too.
                fork = entry.get("for_session") != rt.session.session_id
                if not fork:
                    self._engine_sid = resume
        try:
            await self._connect(rt, resume, fork)
        except ProviderError as e:
            if resume is None or "No conversation found" not in str(e):
                raise
            await emit(SystemMessage("warning", {"message": (
                f"Claude Code no longer has its copy of this conversation ({resume[:8]}); "
                "starting a new Claude Code session with the earlier turns as context."
            )}))
            self._engine_sid = None
            await self._connect(rt, None, False)
            resume = None
        self._connected_key = key
        prior = rt.session.entries[:-1]
        if resume is None and any(is_prompt_entry(e) for e in prior):
            return _earlier_conversation(prior)
        return None

    async def _connect(self, rt: Any, resume: str | None, fork: bool) -> None:
        self._rt = rt
        self._stderr.clear()
        client = sdk.ClaudeSDKClient(self._options(rt, resume, fork))
        try:
            await client.connect()
        except Exception as e:
            raise self._sdk_error(e, "start") from None
        self._client = client
        self._cost_seen = 0.0  # Claude Code reports running totals per process
        self._api_ms_seen = 0

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._connected_key = None
        if client is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await client.disconnect()

    def _sdk_error(self, e: BaseException, doing: str) -> ConfigurationError | ProviderError:
        if isinstance(e, sdk.CLINotFoundError):
            return ConfigurationError(_NO_CLI)
        text = _one_line(str(e) or type(e).__name__)
        if "No conversation found" in text:
            return ProviderError(f"Claude Code could not resume its session: {text}", kind="bad_request")
        tail = _one_line(self._stderr[-1]) if self._stderr else ""
        detail = text + (f"; {tail}" if tail and tail not in text else "")
        verb = "could not start" if doing == "start" else "stopped unexpectedly"
        return ProviderError(f"Claude Code {verb} ({detail}). Run it again; the session is intact.", kind="connection")

    # -- the turn ------------------------------------------------------------------------
    async def run_turn_body(self, rt: Any, turn: Any, emit: Emit) -> None:
        """Send the turn's prompt to Claude Code; mirror, checkpoint and permission its work."""
        prompt_msg = rt.session.entries[-1]["message"]
        extra = await prompt_submit_hook(rt, turn, emit)
        if extra is None:
            return

        earlier = await self._ensure_connected(rt, emit)
        content = prompt_msg.get("content")
        blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        if earlier:
            blocks.insert(0, {"type": "text", "text": f"<earlier-conversation>\n{earlier}\n</earlier-conversation>"})
        blocks.extend({"type": "text", "text": t} for t in extra)

        a = _ActiveTurn(rt=rt, turn=turn, emit=emit)
        self._active = a
        client = self._client
        try:
            if len(blocks) == 1 and blocks[0].get("type") == "text":
                await client.query(blocks[0]["text"])
            else:
                await client.query(_one_message(blocks))
            async with contextlib.aclosing(client.receive_response()) as messages:
                async for msg in messages:
                    await self._on_message(a, msg)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._interrupt_and_drain(a, client)
            raise
        except (sdk.ClaudeSDKError, OSError) as e:
            await self._disconnect()
            raise self._sdk_error(e, "run") from None
        finally:
            with anyio.CancelScope(shield=True):
                await self._flush(a)
                for tool_use_id in list(a.pending):
                    self._verify(a, tool_use_id, None)
            self._active = None
        if a.interrupting:
            turn.interrupt_requested = True

    async def _interrupt_and_drain(self, a: _ActiveTurn, client: Any) -> None:
        """Stop Claude Code and mirror what it sends until its result, so the transcript stays whole."""
        a.interrupting = True
        with anyio.move_on_after(_DRAIN_SECONDS) as scope:
            try:
                await client.interrupt()
                async with contextlib.aclosing(client.receive_response()) as messages:
                    async for msg in messages:
                        await self._on_message(a, msg)
            except Exception as e:  # a dead CLI: run_turn still records the interrupt
                log.warning("Claude Code did not stop cleanly: %s", e)
                await self._disconnect()
        if scope.cancelled_caught:
            await self._disconnect()  # it did not answer: start a fresh process next turn

    async def _on_message(self, a: _ActiveTurn, msg: Any) -> None:
        rt = a.rt
        if isinstance(msg, sdk.StreamEvent):
            if rt.options.include_partial_messages and msg.parent_tool_use_id is None:
                await a.emit(StreamEvent(uuid=new_uuid(), session_id=rt.session.session_id, event=msg.event))
            return
        if isinstance(msg, sdk.SystemMessage):
            if msg.subtype == "init":
                self._on_init(rt, msg.data)
            elif msg.subtype == "compact_boundary":
                await self._flush(a)
                await a.emit(record_engine_compaction(rt, a.turn, msg.data, ENGINE, self._engine_sid))
            return
        if isinstance(msg, sdk.AssistantMessage):
            if msg.parent_tool_use_id is not None:
                return  # a subagent's step: not part of this conversation
            if msg.error is not None or msg.model == "<synthetic>":
                text = "".join(b.text for b in msg.content if isinstance(b, sdk.TextBlock))
                a.api_error = (str(msg.error or "unknown"), text)
                return
            await self._buffer(a, msg)
            return
        if isinstance(msg, sdk.UserMessage):
            if msg.parent_tool_use_id is not None or isinstance(msg.content, str):
                return
            results = [b for b in msg.content if isinstance(b, sdk.ToolResultBlock)]
            if results:
                await self._flush(a)
                for b in results:
                    await self._mirror_result(a, b, msg)
            return
        if isinstance(msg, sdk.ResultMessage):
            await self._flush(a)
            self._on_result(a, msg)
            return
        # rate-limit events, conversation resets: nothing to mirror

    def _on_init(self, rt: Any, data: dict[str, Any]) -> None:
        sid = data.get("session_id")
        if isinstance(sid, str) and sid and sid != self._engine_sid:
            self._engine_sid = sid
            rt.session.append(
                {"type": "engine", "engine": ENGINE, "engine_session_id": sid, "for_session": rt.session.session_id,
                 "engine_version": data.get("claude_code_version")}
            )
        model = data.get("model")
        if isinstance(model, str) and model and self._explicit_model(rt) is None:
            rt.model = model

    # -- mirroring --------------------------------------------------------------------------
    async def _buffer(self, a: _ActiveTurn, msg: Any) -> None:
        """Claude Code sends one message per content block: gather a response's blocks into one line."""
        mid = msg.message_id or msg.uuid
        if a.buffer and mid != a.buffer_id:
            await self._flush(a)
        new_ids: list[str] = []
        async with a.lock:
            a.buffer_id = mid
            a.buffer_model = msg.model
            a.buffer_usage = msg.usage
            a.buffer_engine_uuid = msg.uuid
            a.buffer_stop = msg.stop_reason
            for b in msg.content:
                d = _block_json(b)
                if d is None:
                    continue
                a.buffer.append(d)
                if d["type"] == "tool_use":
                    new_ids.append(d["id"])
        for tid in new_ids:
            a.seen_event(tid).set()

    async def _flush(self, a: _ActiveTurn) -> None:
        async with a.lock:
            if not a.buffer:
                return
            rt, turn = a.rt, a.turn
            content, a.buffer = a.buffer, []
            entry: dict[str, Any] = {
                "type": "assistant",
                "message": {"role": "assistant", "content": content, "model": a.buffer_model,
                            "stop_reason": a.buffer_stop, "usage": a.buffer_usage},
                "engine_uuid": a.buffer_engine_uuid,
            }
            if a.interrupting:
                entry["interrupted"] = True
            stored = rt.session.append(entry)
            turn.api_calls += 1
            turn.had_response = True
            blocks = [block_from_dict(b) for b in content]
            amsg = AssistantMessage(
                content=blocks, model=a.buffer_model, usage=a.buffer_usage, uuid=stored["uuid"],
                stop_reason=a.buffer_stop, session_id=rt.session.session_id,
            )
            if amsg.text:
                turn.last_text = amsg.text
            turn.pending_tools.extend(amsg.tool_uses)
            await a.emit(amsg)

    async def _mirror_result(self, a: _ActiveTurn, b: Any, msg: Any) -> None:
        rt, turn = a.rt, a.turn
        tid = b.tool_use_id
        if tid in turn.done_tools:
            return
        self._verify(a, tid, None)
        tu = next((t for t in turn.pending_tools if t.id == tid), None)
        name = tu.name if tu is not None else "tool"
        block = ToolResultBlock(tid, b.content, True if b.is_error else None)
        meta = _result_meta(name, msg.tool_use_result, bool(b.is_error), block.text, a.diffs.pop(tid, None))
        entry = {"type": "user", "is_prompt": False, "message": {"role": "user", "content": [block.to_dict()]},
                 "tool_use_result": meta, "engine_uuid": msg.uuid}
        stored = rt.session.append(entry)
        turn.done_tools.add(tid)
        await a.emit(UserMessage(content=[block], uuid=stored["uuid"], session_id=rt.session.session_id, tool_use_result=meta))

    def _on_result(self, a: _ActiveTurn, msg: Any) -> None:
        rt, turn = a.rt, a.turn
        turn.pending_tools = [t for t in turn.pending_tools if t.id not in turn.done_tools]
        usage = _usage_ints(msg.usage)
        turn.usage = usage
        api_ms = int(msg.duration_api_ms or 0)
        turn.api_ms = max(api_ms - self._api_ms_seen, 0)
        self._api_ms_seen = api_ms
        price = price_for(rt.model, rt.options.prices)
        total = msg.total_cost_usd if isinstance(msg.total_cost_usd, (int, float)) else None
        if price is not None:
            turn.cost = cost_usd(usage, price)
        elif total is not None:
            turn.cost = max(float(total) - self._cost_seen, 0.0)
        else:
            turn.cost = None
        if total is not None:
            self._cost_seen = float(total)
        if a.interrupting:
            return  # run_turn records the interrupt
        if a.api_error is not None or (msg.is_error and msg.subtype == "success"):
            raise _api_error(a.api_error, msg)
        if msg.subtype == "success":
            turn.result_text = msg.result if msg.result is not None else turn.last_text
            return
        turn.subtype = msg.subtype if msg.subtype in ("error_max_turns", "error_max_budget_usd") else "error_during_execution"
        o = rt.options
        if turn.subtype == "error_max_turns":
            turn.result_text = f"Stopped after {turn.api_calls} model responses (max_turns={o.max_turns})."
        elif turn.subtype == "error_max_budget_usd":
            turn.result_text = f"Stopped: this query reached max_budget_usd=${o.max_budget_usd:g}."
        else:
            errs = [e for e in (msg.errors or []) if isinstance(e, str)]
            turn.result_text = _one_line("; ".join(errs) or msg.result or "Claude Code stopped with an error.")
            turn.errors.extend(errs or [turn.result_text])

    # -- permissions and checkpoints -------------------------------------------------------------
    def _ctx(self, rt: Any, tool_use_id: str) -> ToolContext:
        return ToolContext(
            cwd=rt.session.cwd, session_id=rt.session.session_id, tool_use_id=tool_use_id, env=rt.env,
            recorder=rt.recorder, read_files=rt.read_files, notebook_bridge=rt.notebook_bridge, add_dirs=rt.workspace[1:],
        )

    async def _pre_tool_use(self, input: Any, tool_use_id: str | None, context: Any) -> Any:
        a = self._active
        if a is None or tool_use_id is None:
            return {}
        rt = a.rt
        # The person should see the call before any question about it.
        with anyio.move_on_after(10):
            await a.seen_event(tool_use_id).wait()
        await self._flush(a)
        name = our_tool_name(str(input.get("tool_name") or ""))
        tool_input = dict(input.get("tool_input") or {})
        tool = rt.tools.get(name)

        def refuse(message: str) -> dict[str, Any]:
            # A hook's own "deny" reaches the model as "PreToolUse hook error: ...": going through
            # can_use_tool instead, it reads exactly as agent-magic's loop words it.
            a.verdicts[tool_use_id] = _Verdict("deny", message, message=message)
            return _pre_output("ask", message)

        if tool is None:
            return refuse(f"There is no tool named {name!r} in this session.")
        pre = await run_hooks(
            rt.options.hooks, "PreToolUse",
            hook_base(rt, "PreToolUse") | {"tool_name": name, "tool_input": tool_input, "tool_use_id": tool_use_id},
            tool_use_id=tool_use_id, target=name,
        )
        await report_hook(pre, a.emit)
        changed = pre.updated_input is not None
        if pre.updated_input is not None:
            tool_input = pre.updated_input
        if pre.decision in ("deny", "block"):
            return refuse(f"Blocked by a hook: {pre.reason or 'no reason given'}")
        ctx = self._ctx(rt, tool_use_id)
        behavior, d = permission_for(rt, name, tool, tool_input, ctx, pre.decision)
        stop = {"continue_": False, "stopReason": pre.stop_reason or "a hook stopped the turn"} if pre.stop else {}
        if behavior != "allow":
            # Claude Code asks can_use_tool next, which denies with this reason or asks the person.
            a.verdicts[tool_use_id] = _Verdict(behavior, d.reason, d.blocked_path, tool, f"Permission denied: {d.reason}.")
            return _pre_output("ask", d.reason, tool_input if changed else None) | stop
        problem = self._backup(a, tool_use_id, name, tool_input)
        if problem:
            return refuse(problem) | stop
        a.approved.add(tool_use_id)
        return _pre_output("allow", d.reason, tool_input if changed else None) | stop

    async def _can_use_tool(self, tool_name: str, tool_input: dict[str, Any], context: Any) -> Any:
        a = self._active
        tool_use_id = getattr(context, "tool_use_id", None) or ""
        if a is None:
            return sdk.PermissionResultDeny(message="No agent-magic turn is running.")
        if tool_use_id in a.approved:
            return sdk.PermissionResultAllow()
        verdict = a.verdicts.pop(tool_use_id, None)
        name = our_tool_name(tool_name)
        if verdict is None:
            return sdk.PermissionResultDeny(message=f"Permission denied: {name} was not checked by agent-magic.")
        if verdict.behavior == "deny" or verdict.tool is None:
            return sdk.PermissionResultDeny(message=verdict.message or f"Permission denied: {verdict.reason}.")
        rt = a.rt
        tu = ToolUseBlock(tool_use_id, name, tool_input)
        answer = await _ask(rt, verdict.tool, tu, tool_input, verdict.reason, verdict.blocked_path)
        if isinstance(answer, OurDeny):
            if answer.interrupt:
                a.interrupting = True
            return sdk.PermissionResultDeny(
                message=answer.message or f"The person denied permission to use {name}.", interrupt=answer.interrupt
            )
        assert isinstance(answer, OurAllow)
        final = answer.updated_input if answer.updated_input is not None else tool_input
        rt.apply_permission_updates(answer.updated_permissions)
        problem = self._backup(a, tool_use_id, name, final)
        if problem:
            return sdk.PermissionResultDeny(message=problem)
        a.approved.add(tool_use_id)
        return sdk.PermissionResultAllow(updated_input=answer.updated_input)

    async def _post_tool_use(self, input: Any, tool_use_id: str | None, context: Any) -> Any:
        a = self._active
        if a is None or tool_use_id is None:
            return {}
        self._verify(a, tool_use_id, input.get("tool_response"))
        if input.get("hook_event_name") != "PostToolUse" or not a.rt.options.hooks:
            return {}
        rt = a.rt
        name = our_tool_name(str(input.get("tool_name") or ""))
        post = await run_hooks(
            rt.options.hooks, "PostToolUse",
            hook_base(rt, "PostToolUse") | {"tool_name": name, "tool_input": input.get("tool_input") or {},
                                            "tool_use_id": tool_use_id, "tool_response": input.get("tool_response")},
            tool_use_id=tool_use_id, target=name,
        )
        await report_hook(post, a.emit)
        extra = list(post.additional_context) + ([post.reason] if post.decision == "block" and post.reason else [])
        out: dict[str, Any] = {}
        if extra:
            out["hookSpecificOutput"] = {"hookEventName": "PostToolUse", "additionalContext": "\n".join(extra)}
        if post.stop:
            out.update({"continue_": False, "stopReason": post.stop_reason or "a hook stopped the turn"})
        return out

    def _backup(self, a: _ActiveTurn, tool_use_id: str, name: str, inp: dict[str, Any]) -> str | None:
        """Back up what the call will change; returns why it cannot be, or None."""
        rt = a.rt
        rec = rt.recorder
        ctx = self._ctx(rt, tool_use_id)
        try:
            if name == "Bash":
                a.pending[tool_use_id] = _Pending("bash", name, token=rec.before_command())
            elif name in ("Write", "Edit"):
                path = ctx.resolve(str(inp.get("file_path") or ""))
                old = _read(path)
                if name == "Write":
                    content = inp.get("content")
                    predicted = content.encode("utf-8") if isinstance(content, str) else old
                else:
                    predicted = _predict_edit(old, inp)
                rec.before_file_change(path, predicted, name)
                a.pending[tool_use_id] = _Pending("file", name, path=path, old=old, predicted=predicted)
            elif name == "NotebookEdit":
                self._backup_notebook(a, tool_use_id, ctx, inp)
            elif name not in BUILTIN_TOOL_NAMES:
                a.mcp_ids.setdefault(name, collections.deque()).append(tool_use_id)
        except ToolError:
            return None  # Claude Code refuses the same bad path itself
        except Exception as e:
            log.error("agent-magic could not back up before %s: %s", name, e)
            return f"Not run: agent-magic could not checkpoint this change ({type(e).__name__}: {_one_line(str(e), 200)})."
        return None

    def _backup_notebook(self, a: _ActiveTurn, tool_use_id: str, ctx: ToolContext, inp: dict[str, Any]) -> None:
        from ..tools.notebook import apply_cell_edit, parse_notebook

        rec = a.rt.recorder
        path = ctx.resolve(str(inp.get("notebook_path") or ""))
        old = _read(path)
        if old is None:
            return  # Claude Code refuses a missing notebook
        mode = str(inp.get("edit_mode") or "replace")
        cell_id = inp.get("cell_id") or None
        if mode == "insert":
            # Claude Code picks the new cell's id: the insert is recorded once it exists.
            a.pending[tool_use_id] = _Pending("insert", "NotebookEdit", path=path, old=old)
            return
        try:
            nb = parse_notebook(old)
            new_source = inp.get("new_source")
            new_nb, edit = apply_cell_edit(
                nb, mode, cell_id if isinstance(cell_id, str) else None,
                new_source if isinstance(new_source, str) else "", inp.get("cell_type") or None,
            )
        except ToolError:
            # Not a cell edit agent-magic can follow: back up the whole file.
            rec.before_file_change(path, old, "NotebookEdit")
            a.pending[tool_use_id] = _Pending("file", "NotebookEdit", path=path, old=old, predicted=old)
            return
        predicted = _cc_notebook_bytes(new_nb, old.endswith(b"\n"))
        rec.before_cell_edit(path, old, edit, predicted)
        a.pending[tool_use_id] = _Pending("cell", "NotebookEdit", path=path, old=old, predicted=predicted, edit=edit)

    def _verify(self, a: _ActiveTurn, tool_use_id: str, response: Any) -> None:
        """After a call: finish its record, or record a correction where reality differs from the prediction."""
        p = a.pending.pop(tool_use_id, None)
        if p is None:
            return
        rec = a.rt.recorder
        try:
            if p.kind == "bash":
                rec.after_command(p.token)
                return
            assert p.path is not None
            actual = _read(p.path)
            if p.kind in ("file", "cell"):
                a.diffs[tool_use_id] = _diff(p.old, actual, p.path) if p.tool != "NotebookEdit" else None
            if actual == p.predicted:
                return
            if p.kind == "file":
                # A later record whose "after" is what is really there: rewind checks the newest.
                rec.before_file_change(p.path, actual, p.tool)
            elif p.kind == "cell":
                self._correct_cell(rec, p, actual)
            elif p.kind == "insert" and actual is not None and actual != p.old:
                self._record_insert(rec, p, actual, response)
        except Exception as e:
            log.error("agent-magic could not finish the checkpoint of %s: %s", p.tool, e)

    @staticmethod
    def _correct_cell(rec: Any, p: _Pending, actual: bytes | None) -> None:
        from ..tools.notebook import cell_display_id, cell_index_by_id, parse_notebook

        assert p.edit is not None and p.path is not None
        if actual is None:
            rec.before_file_change(p.path, None, p.tool)
            return
        try:
            nb = parse_notebook(actual)
        except ToolError:
            rec.before_file_change(p.path, actual, p.tool)
            return
        cells = nb["cells"]
        idx = cell_index_by_id(nb, p.edit.cell_id)
        want = p.edit.after_cell
        if idx is None:
            if p.edit.op == "delete":
                return  # deleted as recorded; only the formatting differs
            rec.before_file_change(p.path, actual, p.tool)
            return
        cell = json.loads(json.dumps(cells[idx]))
        if want is not None and _cell_key(cell) == _cell_key(want):
            return  # the cell is as recorded; only the formatting differs
        prev = cell_display_id(cells[idx - 1], idx - 1) if idx > 0 else None
        cid = cell_display_id(cell, idx)
        # A no-op edit whose "after" is the cell as it really is now.
        rec.before_cell_edit(p.path, actual, CellEdit("replace", cid, cell, cell, idx, prev), actual)

    @staticmethod
    def _record_insert(rec: Any, p: _Pending, actual: bytes, response: Any) -> None:
        from ..tools.notebook import cell_display_id, cell_index_by_id, parse_notebook

        assert p.path is not None and p.old is not None
        old_nb = parse_notebook(p.old)
        nb = parse_notebook(actual)
        cells = nb["cells"]
        idx: int | None = None
        cid = response.get("cell_id") if isinstance(response, dict) else None
        if isinstance(cid, str) and cid:
            idx = cell_index_by_id(nb, cid)
        if idx is None:
            before = {cell_display_id(c, i) for i, c in enumerate(old_nb["cells"])}
            new = [i for i, c in enumerate(cells) if cell_display_id(c, i) not in before]
            idx = new[0] if len(new) == 1 else None
        if idx is None:
            log.warning("agent-magic could not find the cell Claude Code inserted into %s; it is not checkpointed.", p.path)
            return
        cell = json.loads(json.dumps(cells[idx]))
        prev = cell_display_id(cells[idx - 1], idx - 1) if idx > 0 else None
        rec.before_cell_edit(p.path, p.old, CellEdit("insert", cell_display_id(cell, idx), None, cell, idx, prev), actual)

    # -- kernel tools over MCP ------------------------------------------------------------------------
    def _mcp_handler(self, tool: Tool) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        async def handler(args: dict[str, Any]) -> dict[str, Any]:
            a = self._active
            rt = a.rt if a is not None else self._rt
            queue = a.mcp_ids.get(tool.name) if a is not None else None
            tool_use_id = queue.popleft() if queue else ""
            try:
                result = await tool.run(dict(args), self._ctx(rt, tool_use_id))
            except ToolError as e:
                result = ToolResult(str(e), is_error=True)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as e:
                log.error("Tool %s failed unexpectedly: %s", tool.name, e)
                result = ToolResult(f"{tool.name} failed unexpectedly: {type(e).__name__}: {e}", is_error=True)
            out: dict[str, Any] = {"content": _mcp_content(result)}
            if result.is_error:
                out["is_error"] = True
            return out

        return handler


# --------------------------------------------------------------------------- helpers


def _one_message(blocks: list[dict[str, Any]]) -> Any:
    async def gen() -> Any:
        yield {"type": "user", "message": {"role": "user", "content": blocks}, "parent_tool_use_id": None}

    return gen()


def _pre_output(decision: str, reason: str, updated_input: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"hookEventName": "PreToolUse", "permissionDecision": decision, "permissionDecisionReason": reason}
    if updated_input is not None:
        out["updatedInput"] = updated_input
    return {"hookSpecificOutput": out}


def _cell_key(cell: dict[str, Any]) -> tuple[str, str]:
    src = cell.get("source", "")
    return (str(cell.get("cell_type")), "".join(src) if isinstance(src, list) else str(src))


def _diff(old: bytes | None, new: bytes | None, path: Path) -> str | None:
    from ..tools.files import unified_diff

    try:
        a = (old or b"").decode("utf-8")
        b = (new or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None
    return unified_diff(a, b, str(path), new_file=old is None)


def _result_meta(name: str, cc: Any, is_error: bool, text: str, diff: str | None) -> dict[str, Any]:
    """The ``tool_use_result`` of a mirrored tool result: what displays show next to the call."""
    r = cc if isinstance(cc, dict) else {}
    data: dict[str, Any] = {}
    summary: str | None
    if is_error:
        summary = _one_line(text.strip().splitlines()[0] if text.strip() else "error", 200)
    elif name in ("Write", "Edit"):
        target = Path(str(r.get("filePath") or "")).name
        created = r.get("type") == "create"
        summary = f"{'created' if created else 'wrote' if name == 'Write' else 'edited'} {target}".strip()
        data = {"diff": diff, "created": created}
    elif name == "NotebookEdit":
        mode, cid = str(r.get("edit_mode") or "replace"), str(r.get("cell_id") or "")
        summary = {"insert": f"inserted {r.get('cell_type') or 'code'} cell {cid[:12]}", "delete": f"deleted cell {cid[:12]}"}.get(
            mode, f"replaced cell {cid[:12]}"
        )
        data = {"cell_id": cid, "edit_mode": mode, "cell_type": r.get("cell_type")}
    elif name == "Bash":
        out = str(r.get("stdout") or "")
        n = out.count("\n") + (1 if out and not out.endswith("\n") else 0)
        summary = f"{n} lines of output" if n else "no output"
    elif name == "Read":
        f: dict[str, Any] = r["file"] if isinstance(r.get("file"), dict) else {}
        cells = f.get("cells")
        summary = f"read {len(cells)} cells" if isinstance(cells, list) else f"read {f.get('numLines', 0)} lines"
    elif name in ("Glob", "Grep"):
        summary = f"{r.get('numFiles', 0)} files"
    else:
        summary = _one_line(text.strip().splitlines()[0], 120) if text.strip() else None
    return {"tool_name": name, "is_error": is_error, "summary": summary, "data": data}


def _api_error(err: tuple[str, str] | None, msg: Any) -> ConfigurationError | ProviderError:
    kind, text = err if err is not None else ("unknown", str(msg.result or ""))
    status = msg.api_error_status if isinstance(msg.api_error_status, int) else None
    detail = _one_line(text or (msg.result or "") or kind, 200)
    if kind == "authentication_failed" and "not logged in" in detail.lower():
        return MissingAPIKeyError(_NO_LOGIN)
    if kind == "authentication_failed" or status in (401, 403):
        return ProviderError(
            f"Claude Code's credentials were rejected ({detail}). Sign in again with `claude` and /login, or check ANTHROPIC_API_KEY.",
            status=status, kind="auth",
        )
    if kind == "rate_limit" or status == 429:
        return ProviderError(f"Rate limited ({detail}) after Claude Code's retries. Wait a minute and run it again.", status=status, kind="rate_limit")
    if kind == "billing_error":
        return ProviderError(f"The account cannot pay for this request ({detail}). Check your plan or credits.", status=status, kind="auth")
    if kind == "server_error" or (status is not None and status >= 500):
        return ProviderError(f"The API had a server error ({detail}) after Claude Code's retries. Try again in a little while.", status=status, kind="server")
    return ProviderError(f"The API refused the request ({detail}).", status=status, kind="bad_request")
