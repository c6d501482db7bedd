"""The ACP agent: ACP sessions as :class:`agent_magic.AgentClient` sessions on our store.

One AgentClient per ACP session, owned by a task of the server's task group
(an AgentClient's task group must be entered and left by one task); prompts
run turns on it and stream its messages as ``session/update`` notifications.
The ACP session id is our session id, except after a conversation rewind,
which continues the ACP session in the fork (:meth:`MagicAgent.switch`).

The ``Python`` and ``Variables`` tools run in a notebook's kernel; this agent
has no kernel connection, so it offers the file, notebook-file, search and
shell tools only, and says so at the start of its first turn.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .. import _api
from .._client import AgentClient
from .._errors import AgentMagicError, ConfigurationError, MissingAPIKeyError, SessionNotFoundError
from .._messages import ResultMessage
from .._options import AgentOptions
from .._version import __version__
from ..store.home import new_uuid

try:
    import acp
    from acp import schema
except ImportError as e:  # pragma: no cover - said by serve()
    raise ConfigurationError(
        "`agent-magic acp` needs the Agent Client Protocol SDK: pip install 'agent-magic[acp]'."
    ) from e

from . import commands
from .permissions import MODE_IDS, mode_option, mode_state, permission_callback
from .updates import TurnUpdates, replay, text_chunk

log = logging.getLogger("agent_magic.acp")

McpServers: TypeAlias = "list[schema.HttpMcpServer | schema.SseMcpServer | schema.AcpMcpServer | schema.McpServerStdio] | None"
PromptBlock: TypeAlias = (
    "schema.TextContentBlock | schema.ImageContentBlock | schema.AudioContentBlock | schema.ResourceContentBlock"
    " | schema.EmbeddedResourceContentBlock"
)

KERNEL_NOTE = (
    "_agent-magic over ACP: files, notebooks (as files), search and shell tools; the Python and Variables "
    "kernel tools are not offered here (no kernel connection). Undo with /checkpoints and /rewind._\n\n"
)
#: Sessions per ``session/list`` page.
PAGE = 50


@dataclass
class Session:
    """One ACP session: its AgentClient and what the client was told."""

    acp_id: str
    client: AgentClient
    cwd: Path
    mode: str
    updates: TurnUpdates
    closed: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    noted: bool = False

    @property
    def store_id(self) -> str:
        """Our session id (fixed at session/new, so known before the first turn)."""
        sid = self.client.session_id or self.client.options.session_id or self.client.options.resume
        assert sid is not None
        return sid


def mcp_servers(servers: list[Any] | None) -> dict[str, Any]:
    """ACP's MCP server descriptions as ``AgentOptions.mcp_servers``."""
    out: dict[str, Any] = {}
    for s in servers or []:
        if isinstance(s, schema.McpServerStdio):
            out[s.name] = {"type": "stdio", "command": s.command, "args": list(s.args), "env": {e.name: e.value for e in s.env}}
        elif isinstance(s, (schema.HttpMcpServer, schema.SseMcpServer)):
            out[s.name] = {"type": s.type, "url": s.url, "headers": {h.name: h.value for h in s.headers}}
        else:
            log.warning("MCP server %r left out: its transport (%s) is not supported", getattr(s, "name", "?"), type(s).__name__)
    return out


def refused(message: str) -> Any:
    """An "invalid params" error whose message is ours (clients show the message, not the data)."""
    return acp.RequestError(-32602, message, {"message": message})


def prompt_content(blocks: list[Any]) -> str | list[dict[str, Any]]:
    """An ACP prompt as ours: text, images, and resources as text in ``<context>`` tags."""
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, schema.TextContentBlock):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, schema.ImageContentBlock):
            parts.append({"type": "image", "source": {"type": "base64", "media_type": b.mime_type, "data": b.data}})
        elif isinstance(b, schema.EmbeddedResourceContentBlock) and isinstance(b.resource, schema.TextResourceContents):
            parts.append({"type": "text", "text": f'<context uri="{b.resource.uri}">\n{b.resource.text}\n</context>'})
        elif isinstance(b, (schema.ResourceContentBlock, schema.EmbeddedResourceContentBlock)):
            uri = b.uri if isinstance(b, schema.ResourceContentBlock) else b.resource.uri
            parts.append({"type": "text", "text": f"@{uri}"})
    if all(p["type"] == "text" for p in parts):
        # Some clients put an empty preamble before the person's text (Jupyter AI's guidance).
        return "\n\n".join(p["text"] for p in parts).strip()
    return parts


def _folder(preferred: str | None, fallback: str | None) -> Path:
    """``preferred`` when it is a folder here, else ``fallback`` (resolved)."""
    if preferred and Path(preferred).is_dir():
        return Path(preferred).resolve()
    return Path(fallback or ".").resolve()


def _stop_reason(result: ResultMessage | None, model_stop: str | None) -> Any:
    if result is None or result.subtype == "interrupted":
        return "cancelled"
    if result.subtype == "error_max_turns":
        return "max_turn_requests"
    if model_stop in ("max_tokens", "refusal"):
        return model_stop
    return "end_turn"


def _usage(result: ResultMessage | None) -> schema.Usage | None:
    u = (result.usage if result is not None else None) or {}
    if u.get("input_tokens") is None:
        return None
    cached_read = int(u.get("cache_read_input_tokens") or 0)
    cached_write = int(u.get("cache_creation_input_tokens") or 0)
    inp = int(u.get("input_tokens") or 0) + cached_read + cached_write
    out = int(u.get("output_tokens") or 0)
    return schema.Usage(total_tokens=inp + out, input_tokens=inp, output_tokens=out,
                        cached_read_tokens=cached_read or None, cached_write_tokens=cached_write or None)


class MagicAgent:
    """The ACP ``Agent``: sessions, turns, modes, slash commands and extension methods.

    Parameters
    ----------
    tg
        The task group the sessions' AgentClients live in.
    home
        The session store (default ``$AGENT_MAGIC_HOME``).
    model, permission_mode
        Defaults for new sessions.
    """

    def __init__(self, tg: TaskGroup, *, home: str | None = None, model: str | None = None, permission_mode: str = "default") -> None:
        self.tg = tg
        self.home = home
        self.model = model
        self.permission_mode = permission_mode
        self.sessions: dict[str, Session] = {}
        self._conn: acp.Client | None = None

    def on_connect(self, conn: acp.Client) -> None:
        self._conn = conn

    # -- helpers ------------------------------------------------------------------------
    @property
    def conn(self) -> acp.Client:
        assert self._conn is not None, "not connected"
        return self._conn

    async def _send(self, session_id: str, update: Any) -> None:
        await self.conn.session_update(session_id=session_id, update=update)

    async def session_for(self, acp_id: str) -> Session:
        """The open session ``acp_id`` (opened from the store when this process has not yet)."""
        sess = self.sessions.get(acp_id)
        if sess is None:
            sess = await self._open(acp_id, None, None, resume=acp_id)
        return sess

    async def _open(
        self, acp_id: str, cwd: str | None, servers: list[Any] | None, *, resume: str | None,
        add_dirs: list[str] | None = None, mode: str | None = None,
    ) -> Session:
        stored_cwd = None
        if resume is not None:
            try:
                stored_cwd = _api.get_session_info(resume, home=self.home).cwd
            except SessionNotFoundError:
                raise acp.RequestError.resource_not_found(resume) from None
        # A stored session keeps its folder (a notebook's session works where the notebook is).
        use_cwd = _folder(stored_cwd, cwd) if stored_cwd or cwd else None
        mode = mode or self.permission_mode
        holder: dict[str, Session] = {}
        opts = AgentOptions(
            cwd=use_cwd,
            resume=resume,
            session_id=None if resume else acp_id,
            model=self.model,
            home=self.home,
            permission_mode=mode,  # type: ignore[arg-type]
            include_partial_messages=True,
            mcp_servers=mcp_servers(servers) or None,
            add_dirs=list(add_dirs or []),
            can_use_tool=permission_callback(
                self.conn.request_permission, lambda: holder["s"].acp_id, lambda: holder["s"].updates
            ),
        )
        try:
            sess: Session = await self.tg.start(self._own, acp_id, opts, mode)
        except MissingAPIKeyError as e:
            # The client shows the error's message: say what to set, not "Authentication required".
            raise acp.RequestError(-32000, str(e), {"message": str(e)}) from None
        except AgentMagicError as e:
            raise refused(str(e)) from None
        holder["s"] = sess
        self.sessions[acp_id] = sess
        return sess

    async def _own(self, acp_id: str, opts: AgentOptions, mode: str, *, task_status: TaskStatus[Session]) -> None:
        """Keep one AgentClient open until its session is closed (this task enters and leaves it)."""
        client = AgentClient(opts)
        await client.connect()
        sess: Session | None = None
        try:
            rt_cwd = _folder(str(opts.cwd) if opts.cwd is not None else None, os.getcwd())
            sess = Session(acp_id, client, rt_cwd, mode, TurnUpdates(rt_cwd))
            task_status.started(sess)
            await sess.closed.wait()
        finally:
            # Not inside a shielding scope: the client's task group must be this task's innermost scope.
            try:
                await client.disconnect()
            except Exception:
                log.exception("Closing session %s failed", acp_id)
            if sess is not None:
                sess.done.set()

    async def _close(self, sess: Session) -> None:
        if sess.client.running:
            await sess.client.interrupt()
            await sess.client.wait_turn()
        sess.closed.set()
        await sess.done.wait()

    async def switch(self, sess: Session, store_id: str) -> None:
        """Continue the ACP session ``sess`` in our session ``store_id`` (a conversation rewind's fork)."""
        await self._close(sess)
        new = await self._open(sess.acp_id, str(sess.cwd), None, resume=store_id, mode=sess.mode)
        new.noted = sess.noted
        self.sessions[sess.acp_id] = new

    def _get(self, acp_id: str) -> Session:
        sess = self.sessions.get(acp_id)
        if sess is None:
            raise refused(f"No open session {acp_id}: call session/load or session/resume first.")
        return sess

    def _advertise(self, acp_id: str) -> None:
        async def later() -> None:
            await anyio.sleep(0.01)  # after the response that names the session
            await self._send(acp_id, schema.AvailableCommandsUpdate(
                session_update="available_commands_update", available_commands=commands.available_commands()))

        self.tg.start_soon(later)

    # -- ACP: lifecycle -------------------------------------------------------------------
    async def initialize(
        self, protocol_version: int, client_capabilities: schema.ClientCapabilities | None = None,
        client_info: schema.Implementation | None = None, **kwargs: Any,
    ) -> schema.InitializeResponse:
        return schema.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=schema.AgentCapabilities(
                load_session=True,
                prompt_capabilities=schema.PromptCapabilities(image=True, audio=False, embedded_context=True),
                mcp_capabilities=schema.McpCapabilities(http=True, sse=True),
                session_capabilities=schema.SessionCapabilities(
                    list=schema.SessionListCapabilities(),
                    fork=schema.SessionForkCapabilities(),
                    resume=schema.SessionResumeCapabilities(),
                    close=schema.SessionCloseCapabilities(),
                ),
            ),
            agent_info=schema.Implementation(name="agent-magic", title="agent-magic", version=__version__),
            auth_methods=[],
        )

    async def authenticate(self, method_id: str, **kwargs: Any) -> schema.AuthenticateResponse | None:
        return schema.AuthenticateResponse()

    async def new_session(
        self, cwd: str, additional_directories: list[str] | None = None, mcp_servers: McpServers = None, **kwargs: Any
    ) -> schema.NewSessionResponse:
        acp_id = new_uuid()
        sess = await self._open(acp_id, cwd, mcp_servers, resume=None, add_dirs=additional_directories)
        self._advertise(acp_id)
        return schema.NewSessionResponse(session_id=acp_id, modes=mode_state(sess.mode), config_options=[mode_option(sess.mode)],
                                         field_meta=self._meta(sess))

    def _meta(self, sess: Session) -> dict[str, Any]:
        return {"agent-magic": {"sessionId": sess.store_id, "cwd": str(sess.cwd), "kernelTools": False,
                                "resume": f"%agent resume {sess.store_id[:8]}"}}

    async def load_session(
        self, cwd: str, session_id: str, mcp_servers: McpServers = None, additional_directories: list[str] | None = None, **kwargs: Any
    ) -> schema.LoadSessionResponse | None:
        old = self.sessions.pop(session_id, None)
        if old is not None:
            await self._close(old)
        sess = await self._open(session_id, cwd, mcp_servers, resume=session_id, add_dirs=additional_directories)
        rows = await anyio.to_thread.run_sync(lambda: _api.get_session_messages(sess.store_id, home=self.home))
        for update in replay(rows, sess.cwd):
            await self._send(session_id, update)
        self._advertise(session_id)
        return schema.LoadSessionResponse(modes=mode_state(sess.mode), config_options=[mode_option(sess.mode)], field_meta=self._meta(sess))

    async def resume_session(
        self, session_id: str, cwd: str, additional_directories: list[str] | None = None, mcp_servers: McpServers = None, **kwargs: Any
    ) -> schema.ResumeSessionResponse:
        sess = self.sessions.get(session_id) or await self._open(session_id, cwd, mcp_servers, resume=session_id, add_dirs=additional_directories)
        self._advertise(session_id)
        return schema.ResumeSessionResponse(modes=mode_state(sess.mode), config_options=[mode_option(sess.mode)], field_meta=self._meta(sess))

    async def fork_session(
        self, session_id: str, cwd: str, additional_directories: list[str] | None = None, mcp_servers: McpServers = None, **kwargs: Any
    ) -> schema.ForkSessionResponse:
        source = self.sessions[session_id].store_id if session_id in self.sessions else session_id
        try:
            new_id = await anyio.to_thread.run_sync(lambda: _api.fork_session(source, home=self.home))
        except SessionNotFoundError:
            raise refused(f"Session {session_id} has no turns to fork yet.") from None
        sess = await self._open(new_id, cwd, mcp_servers, resume=new_id, add_dirs=additional_directories)
        self._advertise(new_id)
        return schema.ForkSessionResponse(session_id=new_id, modes=mode_state(sess.mode), config_options=[mode_option(sess.mode)], field_meta=self._meta(sess))

    async def list_sessions(self, cwd: str | None = None, cursor: str | None = None, **kwargs: Any) -> schema.ListSessionsResponse:
        offset = int(cursor) if cursor and cursor.isdigit() else 0
        rows = await anyio.to_thread.run_sync(lambda: _api.list_sessions(cwd, limit=PAGE + 1, offset=offset, home=self.home))
        infos = [
            schema.SessionInfo(
                session_id=r.session_id, cwd=r.cwd, title=r.summary,
                updated_at=datetime.fromtimestamp(r.last_modified / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z"),
                field_meta={"agent-magic": {"scope": r.scope, "turns": r.num_turns, "costUsd": r.total_cost_usd,
                                            "forkOf": r.parent_session_id}},
            )
            for r in rows[:PAGE]
        ]
        return schema.ListSessionsResponse(sessions=infos, next_cursor=str(offset + PAGE) if len(rows) > PAGE else None)

    async def close_session(self, session_id: str, **kwargs: Any) -> schema.CloseSessionResponse | None:
        sess = self.sessions.pop(session_id, None)
        if sess is not None:
            await self._close(sess)
        return schema.CloseSessionResponse()

    async def close_all(self) -> None:
        """Close every session (the connection ended)."""
        for acp_id in list(self.sessions):
            sess = self.sessions.pop(acp_id)
            await self._close(sess)

    # -- ACP: modes -------------------------------------------------------------------------
    async def _set_mode(self, session_id: str, mode_id: str) -> Session:
        if mode_id not in MODE_IDS:
            raise refused(f"Unknown mode {mode_id!r}; one of {', '.join(MODE_IDS)}.")
        sess = self._get(session_id)
        await sess.client.set_permission_mode(mode_id)
        sess.mode = mode_id
        return sess

    async def set_session_mode(self, session_id: str, mode_id: str, **kwargs: Any) -> schema.SetSessionModeResponse | None:
        await self._set_mode(session_id, mode_id)
        await self._send(session_id, schema.CurrentModeUpdate(session_update="current_mode_update", current_mode_id=mode_id))
        return schema.SetSessionModeResponse()

    async def set_config_option(self, config_id: str, session_id: str, value: str | bool, **kwargs: Any) -> schema.SetSessionConfigOptionResponse | None:
        if config_id != "mode" or not isinstance(value, str):
            raise refused(f"Unknown config option {config_id!r}.")
        sess = await self._set_mode(session_id, value)
        return schema.SetSessionConfigOptionResponse(config_options=[mode_option(sess.mode)])

    # -- ACP: turns -------------------------------------------------------------------------
    async def prompt(self, session_id: str, prompt: list[PromptBlock], **kwargs: Any) -> schema.PromptResponse:
        sess = self._get(session_id)
        content = prompt_content(prompt)
        command = commands.parse_command(content) if isinstance(content, str) else None
        if command is not None:
            try:
                answer = await commands.run_command(self, sess, *command)
            except AgentMagicError as e:
                answer = f"**/{command[0]}:** {e}"
            await self._send(session_id, text_chunk(answer))
            return schema.PromptResponse(stop_reason="end_turn")
        sess = self._get(session_id)  # a command may have switched it
        if not sess.noted:
            sess.noted = True
            await self._send(session_id, text_chunk(KERNEL_NOTE))
        sess.updates.last_stop_reason = None
        try:
            await sess.client.query(content)
        except AgentMagicError as e:
            raise acp.RequestError.internal_error({"message": str(e)}) from None
        result: ResultMessage | None = None
        async for msg in sess.client.receive_response():
            for update in sess.updates.convert(msg):
                await self._send(session_id, update)
            if isinstance(msg, ResultMessage):
                result = msg
        meta = {"agent-magic": {"sessionId": sess.store_id, "checkpointId": result.checkpoint_id if result else None,
                                "costUsd": result.total_cost_usd if result else None,
                                "subtype": result.subtype if result else None}}
        return schema.PromptResponse(stop_reason=_stop_reason(result, sess.updates.last_stop_reason), usage=_usage(result), field_meta=meta)

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        sess = self.sessions.get(session_id)
        if sess is not None:
            await sess.client.interrupt()

    # -- extensions ---------------------------------------------------------------------------
    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await commands.ext_method(self, method, params)
        except KeyError:
            raise acp.RequestError.method_not_found(f"_{method}") from None
        except AgentMagicError as e:
            raise refused(str(e)) from None

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None


def serve(*, home: str | None = None, model: str | None = None, permission_mode: str = "default") -> int:
    """Run the agent on stdio until the client closes stdin; see :func:`agent_magic.acp.serve`."""
    logging.basicConfig(level=os.environ.get("AGENT_MAGIC_ACP_LOG", "WARNING").upper(), stream=sys.stderr,
                        format="agent-magic acp: %(levelname)s %(name)s: %(message)s")
    if permission_mode not in MODE_IDS:
        raise ConfigurationError(f"Unknown permission mode {permission_mode!r}; one of {', '.join(MODE_IDS)}.")
    # The protocol owns stdout: anything else printed (by us, a library, a child process) goes to stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    async def main() -> None:
        loop_stdout = sys.stdout
        sys.stdout = protocol_out  # stdio_streams reads it once, here
        try:
            reader, writer = await acp.stdio_streams()
        except ValueError:  # asyncio's pipe transports take pipes, sockets and terminals only
            raise ConfigurationError(
                "`agent-magic acp` talks ACP on stdin/stdout: an ACP client (Jupyter AI, Zed, a JetBrains IDE) starts it "
                "with pipes; its stdout here is a file."
            ) from None
        finally:
            sys.stdout = loop_stdout
        async with anyio.create_task_group() as tg:
            agent = MagicAgent(tg, home=home, model=model, permission_mode=permission_mode)
            try:
                await acp.run_agent(agent, writer, reader, use_unstable_protocol=True)
            finally:
                with anyio.CancelScope(shield=True):
                    await agent.close_all()
                tg.cancel_scope.cancel()

    anyio.run(main)
    return 0
