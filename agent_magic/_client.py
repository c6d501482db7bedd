"""AgentClient and query(): the public way to run agent turns.

``AgentClient`` keeps one session open across several ``query`` calls (each
continues the same session); ``query()`` runs one prompt and yields its
messages. Both follow the Claude Agent SDK's shapes.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._compaction import compact_client, count_turns, seed_meter
from ._errors import AgentMagicError, ConfigurationError, SessionExistsError, SessionLockedError
from ._loop import Runtime, context_now, default_system_prompt, run_turn, subprocess_environment
from ._messages import Message, ResultMessage, SystemMessage
from ._options import AgentOptions
from ._permissions import parse_rules
from ._pricing import price_for
from ._redact import redact
from .checkpoints import CheckpointLog, RewindResult
from .providers import get_provider
from .store import forks
from .store.blobs import BlobStore
from .store.home import new_uuid, now_ms
from .store.jsonl import JsonlFile
from .store.local import SessionStore
from .store.pusher import StepPusher
from .store.sync import LEASE_TTL_S, SessionSync, holder_name, is_full_id, shared_store_sync
from .store.transcript import SessionState
from .tools import builtin_tools
from .tools.base import ChangeRecorder, NotebookBridge, NullRecorder, Tool

if TYPE_CHECKING:
    from ._memory import MemoryFile
    from .tools.mcp import McpServers


class AgentClient:
    """An agent session you can send several prompts to.

    Use it as an async context manager::

        async with AgentClient(AgentOptions(cwd="project")) as client:
            await client.query("Load sales.csv and fix the date column")
            async for message in client.receive_response():
                print(message)
            print(client.session_id)

    Parameters
    ----------
    options
        Settings; see :class:`AgentOptions`.
    notebook_bridge
        Optional front-end bridge (the JupyterLab extension) for live notebook edits.
    """

    def __init__(self, options: AgentOptions | None = None, *, notebook_bridge: NotebookBridge | None = None) -> None:
        self.options = options or AgentOptions()
        self.notebook_bridge = notebook_bridge
        self._tg: TaskGroup | None = None
        self._send: MemoryObjectSendStream[Message] | None = None
        self._recv: MemoryObjectReceiveStream[Message] | None = None
        self._rt: Runtime | None = None
        self._store: SessionStore | None = None
        self._session_id: str | None = None
        self._pending_new: dict[str, Any] | None = None
        self._turn_scope: anyio.CancelScope | None = None
        self._running = False
        self._turn_done = anyio.Event()
        self._result_sent = False
        self._lock: Any = None
        self._forked_from: str | None = None
        self._provider: Any = None
        self._resumed = False
        self.last_result: ResultMessage | None = None
        self._known_size = -1
        self._swept = False
        self._sync: SessionSync | None = None
        self._lease: Any = None
        #: Lines written here and not yet in the shared store (0 without one); what the last push said.
        self.sync_pending = 0
        self.sync_error: str | None = None
        self._mcp: McpServers | None = None
        #: The memory files in the system prompt now, and what they were read from (see _memory.signature).
        self.memory: list[MemoryFile] = []
        self._memory_sig: tuple[tuple[str, int, int], ...] | None = None

    # -- lifecycle -----------------------------------------------------------
    async def __aenter__(self) -> AgentClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open (or prepare) the session and check the provider's configuration."""
        if self._tg is not None:
            return
        opts = self.options
        provider = get_provider(opts.provider)
        provider.check()
        _check_engine(provider, opts)
        self._provider = provider
        if opts.max_budget_usd is not None and price_for(model := self._model_for(None), opts.prices) is None:
            raise ConfigurationError(
                f"max_budget_usd needs a price for the model {model!r}, which is unknown; "
                "add one with AgentOptions(prices=...) or AGENT_MAGIC_PRICES."
            )
        self._store = SessionStore.at(opts.home) if (opts.persist_session or opts.resume or opts.continue_conversation) else None
        self._sync = shared_store_sync(opts.session_store, self._store)
        if self._sync is not None and opts.resume:
            await self._pull(opts.resume)
        self._open_session(provider)
        send, recv = anyio.create_memory_object_stream[Message](max_buffer_size=math.inf)
        self._send, self._recv = send, recv
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

    async def disconnect(self) -> None:
        """Stop any running turn and close the client."""
        tg, self._tg = self._tg, None
        if tg is not None:
            if self._turn_scope is not None:
                self._turn_scope.cancel()
            if self._mcp is not None:
                with anyio.CancelScope(shield=True):
                    await self._mcp.aclose()  # its servers' tasks run in the task group
            await tg.__aexit__(None, None, None)
        if self._rt is not None:
            await self._rt.provider.aclose()
            self._rt.session.transcript.close()
            rec = self._rt.recorder
            if isinstance(rec, CheckpointLog):
                rec.records.close()
        if self._send is not None:
            self._send.close()
        if self._recv is not None:
            self._recv.close()
        if self._sync is not None:
            closer = getattr(self._sync.remote, "aclose", None)
            if callable(closer) and (self.options.session_store is None or isinstance(self.options.session_store, str)):
                # A store this client opened from a URL: its connections belong to this event loop.
                with contextlib.suppress(Exception):
                    await closer()
        self._release_lock()

    # -- session -----------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        """The session's id: known at once when resuming, after the first ``query`` otherwise."""
        return self._session_id

    @property
    def scope(self) -> str:
        return self.options.resolved_scope()

    def _model_for(self, session_model: str | None) -> str:
        o = self.options
        chosen = o.model or os.environ.get("AGENT_MAGIC_MODEL") or session_model
        # A provider may know its own default (or raise ConfigurationError: it has none).
        if chosen:
            return chosen
        default = self._provider.default_model() if self._provider is not None else None
        return default or o.resolved_model()

    def _open_session(self, provider: Any) -> None:
        opts = self.options
        store = self._store
        scope = opts.resolved_scope()
        sid: str | None = None
        if opts.resume:
            assert store is not None
            sid = store.resolve(opts.resume)
        elif opts.continue_conversation:
            assert store is not None
            sid = store.current(scope, fresh_means_none=False)
        if sid is not None:
            self._resumed = True
            if opts.fork_session:
                self._forked_from = sid
                if opts.persist_session:
                    assert store is not None
                    if opts.session_id and store.exists(opts.session_id):
                        raise SessionExistsError(f"A session with id {opts.session_id!r} already exists; choose another id for the fork.")
                    cwd = str(opts.resolved_cwd()) if opts.cwd is not None else None
                    sid = store.fork(sid, new_session_id=opts.session_id, scope=scope, cwd=cwd)
                    self._build_runtime(provider, sid, store.read_live_entries(sid), persist=True)
                else:
                    assert store is not None
                    entries = [dict(e) for e in store.read_live_entries(sid)]
                    new_id = opts.session_id or new_uuid()
                    if entries and entries[0].get("type") == "session":
                        entries[0]["session_id"] = new_id
                    self._build_runtime(provider, new_id, entries, persist=False, parent=sid)
            else:
                assert store is not None
                self._build_runtime(provider, sid, store.read_live_entries(sid), persist=opts.persist_session)
        else:
            if opts.session_id and store is not None and store.exists(opts.session_id):
                raise SessionExistsError(
                    f"A session with id {opts.session_id!r} already exists. Resume it with resume={opts.session_id!r}, or choose another id."
                )
            self._pending_new = {"provider": provider}

    def _create_new(self) -> None:
        assert self._pending_new is not None
        opts = self.options
        provider = self._pending_new["provider"]
        self._pending_new = None
        cwd = opts.resolved_cwd()
        if opts.persist_session:
            assert self._store is not None
            sid = self._store.create(
                cwd=str(cwd), scope=opts.resolved_scope(), model=self._model_for(None), session_id=opts.session_id,
                checkpoint_settings={"ignore": list(opts.checkpoint_ignore), "max_file_bytes": opts.checkpoint_max_file_bytes},
            )
            entries = self._store.read_entries(sid)
        else:
            sid = opts.session_id or new_uuid()
            entries = [{"type": "session", "session_id": sid, "cwd": str(cwd), "scope": opts.resolved_scope(), "model": self._model_for(None)}]
        self._build_runtime(provider, sid, entries, persist=opts.persist_session)

    def _build_runtime(
        self, provider: Any, sid: str, entries: list[dict[str, Any]], *, persist: bool, parent: str | None = None
    ) -> None:
        opts = self.options
        store = self._store
        header = next((e for e in entries if e.get("type") == "session"), {})
        stored_cwd = header.get("cwd") if isinstance(header.get("cwd"), str) else None
        cwd = opts.resolved_cwd() if opts.cwd is not None else Path(stored_cwd or os.getcwd())
        if not cwd.is_dir():
            raise ConfigurationError(
                f"The session's working directory {cwd} does not exist; pass cwd=... to resume it elsewhere."
            )
        stored_model = header.get("model")
        model = self._model_for(stored_model if isinstance(stored_model, str) else None)
        stored_scope = header.get("scope")
        scope = opts.scope or (stored_scope if isinstance(stored_scope, str) and stored_scope else str(cwd))
        if persist:
            assert store is not None
            transcript = JsonlFile(store.transcript_path(sid))
            records = JsonlFile(store.checkpoints_path(sid))
            blobs = store.blobs
        else:
            transcript = JsonlFile(None)
            records = JsonlFile(None)
            source = parent or (sid if store is not None and store.exists(sid) else None)
            if store is not None and source is not None:
                # Continue without writing: earlier checkpoints stay rewindable, new backups stay in memory.
                records.append_many(store.read_records(source))
            blobs = BlobStore(None, fallback=store.blobs) if store is not None else BlobStore(None)
        state = SessionState(
            session_id=sid,
            cwd=cwd,
            scope=scope,
            model=model,
            transcript=transcript,
            store=store if persist else None,
            entries=[e for e in entries if e.get("type") != "session"],
            parent_session_id=parent or (header.get("parent_session_id") if isinstance(header.get("parent_session_id"), str) else None),
        )
        state.num_turns = count_turns(state.entries)
        for e in reversed(state.entries):
            if e.get("type") in ("user", "assistant") and e.get("uuid"):
                state.last_uuid = e["uuid"]
                break
        tools = self._tools()
        recorder: ChangeRecorder
        if opts.enable_file_checkpointing:
            exclude = [store.home] if store is not None else []
            log = CheckpointLog(
                session_id=sid, cwd=cwd, records=records, blobs=blobs, ignore=opts.checkpoint_ignore,
                max_file_bytes=opts.checkpoint_max_file_bytes, exclude=exclude,
                inherited=(lambda: forks.inherited_records(store, sid)) if (persist and store is not None) else None,
            )
            if persist:
                log.recover()
            recorder = log
        else:
            recorder = NullRecorder()
        workspace = [cwd] + [Path(d).expanduser().resolve() for d in opts.add_dirs]
        system = self._system_prompt(cwd, scope, tools)
        deny = parse_rules(opts.disallowed_tools)
        self._rt = Runtime(
            options=opts,
            session=state,
            provider=provider,
            tools=offered(tools, deny),
            recorder=recorder,
            model=model,
            system_prompt=system,
            env=subprocess_environment(opts),
            workspace=workspace,
            allow_rules=parse_rules(opts.allowed_tools),
            deny_rules=deny,
            read_files=_files_read(state.entries, cwd),
            notebook_bridge=self.notebook_bridge,
            transcript_path=str(store.transcript_path(sid)) if (persist and store is not None) else "",
            on_index=self._on_index if persist else None,
        )
        seed_meter(self._rt)
        self._session_id = sid
        self._known_size = store.transcript_size(sid) if (persist and store is not None) else -1

    def _tools(self) -> list[Tool]:
        """Built-in tools, then ``extra_tools``, the ``Agent`` tool and MCP servers' tools (first name wins)."""
        opts = self.options
        tools = builtin_tools(opts.tools)
        if opts.agents:
            from ._subagents import AgentTool

            tools.append(AgentTool(opts.agents))
        names = {t.name for t in tools}
        for t in [*opts.extra_tools, *(self._mcp.tools() if self._mcp is not None else [])]:
            if t.name not in names:
                tools.append(t)
                names.add(t.name)
        return tools

    def _system_prompt(self, cwd: Path, scope: str, tools: list[Tool]) -> str:
        """The system prompt: the given or built-in one, then project memory, then ``append_system_prompt``."""
        from . import _memory

        opts = self.options
        sources = opts.setting_sources or []
        self._memory_sig = _memory.signature(cwd, sources)
        self.memory = _memory.find_memory_files(cwd, sources)
        parts = [opts.system_prompt if opts.system_prompt is not None else default_system_prompt(cwd, scope, tools)]
        parts.append(_memory.memory_prompt(self.memory))
        if opts.append_system_prompt:
            parts.append(opts.append_system_prompt)
        return "\n\n".join(p for p in parts if p)

    def set_extra_tools(self, tools: list[Tool]) -> None:
        """Replace the tools given beside the built-in ones (``extra_tools``) for the next turns.

        The notebook uses it when the person registers kernel functions (``%agent tool``).
        """
        self.options = self.options.copy(extra_tools=list(tools))
        if self._rt is not None:
            self._rt.options = self.options
            self._rt.tools = offered(self._tools(), self._rt.deny_rules)

    def mcp_status(self) -> list[dict[str, Any]]:
        """Each MCP server's name, type, state (pending, connected, failed, stopped), tools and error."""
        servers = self._mcp_servers()
        return servers.status() if servers is not None else []

    def _mcp_servers(self) -> McpServers | None:
        """The session's MCP servers (made, not started, the first time they are asked for; None: none configured)."""
        if self._mcp is None and self._tg is not None:
            configs = self._mcp_configs()
            if configs:
                from .tools.mcp import McpServers

                rt = self._rt
                cwd = rt.session.cwd if rt is not None else self.options.resolved_cwd()
                env = rt.env if rt is not None else subprocess_environment(self.options)
                self._mcp = McpServers(configs, cwd=cwd, env=env)
                self._mcp.bind(self._tg)
        return self._mcp

    def _mcp_configs(self) -> dict[str, Any]:
        """``mcp_servers`` (a dict or a JSON file), over the project's ``.mcp.json`` when ``project`` memory is on."""
        opts = self.options
        cwd = self._rt.session.cwd if self._rt is not None else opts.resolved_cwd()
        configs: dict[str, Any] = {}
        if "project" in (opts.setting_sources or []):
            from .tools.mcp import load_project_mcp_servers

            configs.update(load_project_mcp_servers(cwd))
        given = opts.mcp_servers
        if isinstance(given, (str, os.PathLike)):
            configs.update(_read_mcp_file(Path(given).expanduser()))
        elif given:
            configs.update(given)
        return configs

    async def _prepare_turn(self, rt: Runtime) -> list[str]:
        """Before a turn: reload changed memory files, start MCP servers, offer the current tools.

        Returns one-line notices (servers that failed to start) for the person.
        """
        from . import _memory

        notices: list[str] = []
        servers = self._mcp_servers()
        if servers is not None:
            notices = await servers.start()
        tools = self._tools()
        offer = offered(tools, rt.deny_rules)
        if list(offer) != list(rt.tools):
            rt.fixed_chars = None  # what every request carries changed: measure it again
        rt.tools = offer
        if _memory.signature(rt.session.cwd, self.options.setting_sources or []) != self._memory_sig:
            rt.system_prompt = self._system_prompt(rt.session.cwd, rt.session.scope, tools)
            rt.fixed_chars = None
        return notices

    def memory_files(self) -> list[dict[str, Any]]:
        """The memory files in the system prompt: path, source (project, user, local) and characters."""
        return [{"path": str(f.path), "source": f.source, "chars": len(f.text)} for f in self.memory]

    def _on_index(self, what: str, data: dict[str, Any]) -> None:
        store, rt = self._store, self._rt
        if store is None or rt is None:
            return
        sid = rt.session.session_id
        size = store.transcript_size(sid)
        if what == "turn":
            first = data.get("first_prompt")
            store.index.record_turn(
                sid, first_prompt=redact(first) if isinstance(first, str) else None, num_turns=data.get("num_turns"),
                modified_ms=now_ms(), file_size=size,
            )
        elif what == "result":
            store.index.record_cost(sid, data.get("cost"), modified_ms=now_ms(), file_size=size)

    # -- turns -----------------------------------------------------------------------
    async def query(self, prompt: str | list[dict[str, Any]]) -> None:
        """Start a turn with ``prompt``; read its messages with :meth:`receive_response`.

        Raises
        ------
        SessionLockedError
            Another process is running a turn in this session.
        """
        if self._tg is None:
            raise AgentMagicError("The client is not connected; use `async with AgentClient(...)`.")
        if self._running and self._result_sent:
            await self._turn_done.wait()  # its result was read; it is only tidying up (lease, pushes)
        if self._running:
            raise AgentMagicError("A turn is already running; read it to the end with receive_response() first.")
        if isinstance(prompt, str) and not prompt.strip():
            raise ConfigurationError("The prompt is empty.")
        if self._pending_new is not None:
            self._create_new()
        rt = self._rt
        assert rt is not None
        store = self._store
        if rt.session.store is not None and store is not None:
            await self._acquire_lock(store, rt.session.session_id)
            try:
                await self._acquire_lease(rt.session.session_id)
            except BaseException:
                self._release_lock()
                raise
            store.set_current(rt.session.scope, rt.session.session_id)
            self._refresh_from_disk(store)
            if not self._swept and isinstance(rt.recorder, CheckpointLog):
                # A process killed mid-write leaves a temp file beside its target; with the
                # lock held nobody else is writing for this session.
                rt.recorder.sweep_temp_files()
                self._swept = True
        self._running = True
        self._turn_done = anyio.Event()
        self._result_sent = False
        self._tg.start_soon(self._turn, prompt)

    async def _acquire_lock(self, store: SessionStore, sid: str) -> None:
        import filelock

        lock = filelock.FileLock(str(store.session_dir(sid) / ".lock"), timeout=self.options.lock_timeout, mode=0o600, thread_local=False)
        try:
            await anyio.to_thread.run_sync(lock.acquire)
        except filelock.Timeout:
            raise SessionLockedError(
                f"Session {sid[:8]} is busy: another process is running a turn in it. "
                "Wait for it to finish, or fork the session to work in parallel."
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _refresh_from_disk(self, store: SessionStore) -> None:
        """Another process may have appended turns since we loaded; pick them up."""
        rt = self._rt
        assert rt is not None
        # A process that died mid-line since we opened the files left a torn tail:
        # cut it, or our next line would be glued to it and lost.
        rt.session.transcript.repair_tail()
        if isinstance(rt.recorder, CheckpointLog):
            rt.recorder.records.repair_tail()
        path = store.transcript_path(rt.session.session_id)
        size = store.transcript_size(rt.session.session_id)
        if size == self._known_size:
            return  # nobody else wrote: no need to parse the whole transcript again
        self._known_size = size
        n_known = len(rt.session.entries) + 1
        entries = store.read_live_entries(rt.session.session_id)
        if len(entries) != n_known or entries[-1].get("uuid") != (rt.session.entries[-1].get("uuid") if rt.session.entries else None):
            st = rt.session
            st.entries = [e for e in entries if e.get("type") != "session"]
            st.num_turns = count_turns(st.entries)
            rt.context_version += 1
            seed_meter(rt)
            for e in reversed(st.entries):
                if e.get("type") in ("user", "assistant") and e.get("uuid"):
                    st.last_uuid = e["uuid"]
                    break
            rec = rt.recorder
            if isinstance(rec, CheckpointLog):
                rec._loaded_records = None
        _ = path

    async def _turn(self, prompt: str | list[dict[str, Any]]) -> None:
        rt = self._rt
        assert rt is not None and self._send is not None
        send = self._send

        async def emit(msg: Message) -> None:
            await send.send(msg)
            if isinstance(msg, ResultMessage):
                self._result_sent = True

        try:
            # Starting MCP servers can take a while: Stop works here too (nothing is sent then).
            notices: list[str] = []
            with anyio.CancelScope() as starting:
                self._set_scope(starting)
                notices = await self._prepare_turn(rt)
            self._set_scope(None)
            init = {
                "session_id": rt.session.session_id,
                "cwd": str(rt.session.cwd),
                "model": rt.model,
                "tools": list(rt.tools),
                "permission_mode": rt.permission_mode,
                "scope": rt.session.scope,
                "resumed": self._resumed,
                "forked_from": self._forked_from,
                "parent_session_id": rt.session.parent_session_id,
                "persist_session": rt.session.store is not None,
                "checkpointing": not isinstance(rt.recorder, NullRecorder),
                "provider": rt.provider.name,
                "turn": rt.session.num_turns + 1,
            }
            if self._mcp is not None:
                init["mcp_servers"] = [{"name": st["name"], "status": st["state"]} for st in self._mcp.status()]
            if self.memory:
                init["memory"] = [str(f.path) for f in self.memory]
            init["context_tokens"], init["context_window"] = context_now(rt)
            await emit(SystemMessage("init", init))
            for notice in notices:
                await emit(SystemMessage("warning", {"message": notice}))
            if starting.cancelled_caught:
                self.last_result = ResultMessage(
                    subtype="interrupted", session_id=rt.session.session_id, num_turns=0, duration_ms=0, is_error=True,
                    result="Interrupted while MCP servers were starting; the prompt was not sent.",
                )
                await emit(self.last_result)
                return
            if self._sync is not None and rt.session.store is not None:
                await self._turn_with_pushes(rt, prompt, emit, self._sync)
            else:
                self.last_result = await run_turn(rt, prompt, emit, self._set_scope)
            self._resumed = True
        finally:
            self._running = False
            if self._store is not None and rt.session.store is not None:
                self._known_size = self._store.transcript_size(rt.session.session_id)
                with anyio.CancelScope(shield=True):
                    await self._release_lease()
            self._release_lock()
            self._turn_done.set()

    # -- the shared store ------------------------------------------------------------
    async def _turn_with_pushes(self, rt: Runtime, prompt: str | list[dict[str, Any]], emit: Any, sync: SessionSync) -> None:
        """Run the turn while a background task pushes each step; the final push comes before the result."""
        sid = rt.session.session_id

        def note(error: str | None) -> None:
            self.sync_error = error

        pusher = StepPusher(sync, sid, note)

        async def before_result() -> int | None:
            await pusher.drain()
            return await self._push(sid)

        rt.after_step, rt.before_result = pusher.kick, before_result
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pusher.run)
                try:
                    self.last_result = await run_turn(rt, prompt, emit, self._set_scope)
                except Exception as e:  # raised as it is below, not wrapped in the task group's ExceptionGroup
                    failure = e
                finally:
                    tg.cancel_scope.cancel()  # the pusher, if the turn ended without a result
        finally:
            rt.after_step = rt.before_result = None
        if failure is not None:
            raise failure

    async def _pull(self, id_or_prefix: str) -> None:
        """Bring a session from the shared store (unknown here, or continued on another host)."""
        sync = self._sync
        assert sync is not None and self._store is not None
        sid = id_or_prefix
        if not self._store.exists(sid) and not is_full_id(sid):
            try:
                ids = await sync.remote_session_ids()
            except Exception as e:  # the network: resume what is here, or say it is not
                self.sync_error = f"The shared store could not be listed ({type(e).__name__}: {e})."
                return
            matches = [i for i in ids if i == id_or_prefix] or [i for i in ids if len(id_or_prefix) >= 4 and i.startswith(id_or_prefix)]
            if len(matches) != 1:
                return  # resolving it locally says it is unknown or ambiguous
            sid = matches[0]
        try:
            # With its backups (fetched 16 at a time): a rewind on this host may need them, and
            # the session helpers (agent_magic.rewind_files) may have no store to fetch them from.
            await sync.pull(sid)
        except Exception as e:
            self.sync_error = f"Pulling session {sid[:8]} from the shared store failed ({type(e).__name__}: {e})."

    async def _push(self, sid: str) -> int | None:
        """Push what the shared store lacks; returns the lines still pending (None: no shared store)."""
        sync = self._sync
        if sync is None:
            return None
        try:
            with anyio.fail_after(30):
                await sync.push(sid)
            self.sync_error = None
            self.sync_pending = 0  # it sent every complete line, and this turn holds the session
        except Exception as e:  # a failing store never fails a turn: the next push sends it
            self.sync_error = f"{type(e).__name__}: {e}"
            self.sync_pending = sync.pending(sid)
        return self.sync_pending

    async def _acquire_lease(self, sid: str) -> None:
        sync = self._sync
        if sync is None or not hasattr(sync.remote, "acquire_lease"):
            return
        from .store import LeaseHeldError

        try:
            self._lease = await sync.remote.acquire_lease(sid, holder_name(), LEASE_TTL_S)
        except LeaseHeldError:
            raise
        except Exception as e:  # unreachable: work locally, push later
            self.sync_error = f"{type(e).__name__}: {e}"
            self._lease = None

    async def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None and self._sync is not None:
            with contextlib.suppress(Exception):
                await self._sync.remote.release_lease(lease.session_id, lease.holder)

    async def sync(self) -> int:
        """Push this session's lines the shared store lacks now; returns how many are still pending."""
        if self._sync is not None and self._rt is not None and self._rt.session.store is not None:
            await self._push(self._rt.session.session_id)
        return self.sync_pending

    def _set_scope(self, scope: anyio.CancelScope | None) -> None:
        self._turn_scope = scope

    async def receive_messages(self) -> AsyncIterator[Message]:
        """Every message, as it comes, until the client is closed."""
        assert self._recv is not None
        async for msg in self._recv:
            yield msg

    async def receive_response(self) -> AsyncIterator[Message]:
        """Messages of the current turn, ending with (and including) its ResultMessage."""
        assert self._recv is not None
        async for msg in self._recv:
            yield msg
            if isinstance(msg, ResultMessage):
                return

    async def interrupt(self) -> None:
        """Stop the running turn; it ends with a ``interrupted`` ResultMessage."""
        if self._turn_scope is not None:
            self._turn_scope.cancel()

    async def wait_turn(self) -> None:
        """Wait until the running turn (if any) has finished."""
        if self._running:
            await self._turn_done.wait()

    @property
    def running(self) -> bool:
        return self._running

    # -- settings ----------------------------------------------------------------------
    def update_options(self, **changes: Any) -> None:
        """Change settings for the next turns: model, permission_mode, max_turns, max_budget_usd,
        allowed_tools, disallowed_tools, can_use_tool, hooks, max_tokens, append_system_prompt.

        Raises
        ------
        ConfigurationError
            For invalid values (the current settings stay).
        """
        allowed = {
            "model", "permission_mode", "max_turns", "max_budget_usd", "allowed_tools", "disallowed_tools",
            "can_use_tool", "hooks", "max_tokens", "prices", "include_partial_messages",
            "thinking", "effort", "compaction", "compact_threshold", "context_window", "output_format",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise ConfigurationError(f"These options cannot change on an open client: {', '.join(sorted(unknown))}.")
        if not changes:
            return
        new = self.options.copy(**changes)
        if self._provider is not None:
            _check_engine(self._provider, new)
        old = self.options
        rt = self._rt
        if rt is not None:
            self.options = new
            try:
                model = self._model_for(rt.session.model)
            finally:
                self.options = old
            if new.max_budget_usd is not None and price_for(model, new.prices) is None:
                raise ConfigurationError(
                    f"max_budget_usd needs a price for the model {model!r}, which is unknown; add one with prices=..."
                )
            rt.options = new
            rt.model = model
            rt.allow_rules = parse_rules(new.allowed_tools) + [r for r in rt.granted_rules if r not in parse_rules(new.allowed_tools)]
            rt.deny_rules = parse_rules(new.disallowed_tools)
        self.options = new

    async def set_permission_mode(self, mode: str) -> None:
        self.options = self.options.copy(permission_mode=mode)
        if self._rt is not None:
            self._rt.options = self.options

    async def set_model(self, model: str | None) -> None:
        self.options = self.options.copy(model=model)
        if self._rt is not None:
            self._rt.model = self._model_for(self._rt.session.model)
            self._rt.options = self.options

    # -- context ---------------------------------------------------------------------------
    async def compact(self, instructions: str | None = None) -> SystemMessage:
        """Compact the conversation now: summarise it with the session's model and continue from the summary.

        The transcript keeps every line; checkpoints before the compaction still
        rewind, and a fork up to a message before it has the whole history.

        Parameters
        ----------
        instructions
            What the summary should focus on (added to the summary request).

        Returns
        -------
        SystemMessage
            ``subtype="compact_boundary"``, ``data={"trigger": "manual", "pre_tokens", "post_tokens", "method"}``.

        Raises
        ------
        CompactionError
            Nothing to compact yet, or the model gave no summary.
        ProviderError
            The summary request failed.
        """
        if self._tg is None:
            raise AgentMagicError("The client is not connected; use `async with AgentClient(...)`.")
        if self._running:
            raise AgentMagicError("Wait for the running turn to finish (or interrupt it) before compacting.")
        from ._errors import CompactionError

        if getattr(self._provider, "run_turn_body", None) is not None:
            raise CompactionError(
                f"The {self._provider.name} engine compacts its conversation by itself near the window (each time is "
                "recorded in the session); compacting by hand works with the anthropic and openai providers."
            )
        if self._pending_new is not None:
            raise CompactionError("There is nothing to compact yet: the session has no turns.")
        rt = self._rt
        assert rt is not None
        store = self._store
        persistent = rt.session.store is not None and store is not None
        if persistent:
            assert store is not None
            await self._acquire_lock(store, rt.session.session_id)
        try:
            if persistent:
                assert store is not None
                self._refresh_from_disk(store)
            msg = await compact_client(rt, None, trigger="manual", instructions=instructions)
            cost = rt.session.entries[0].get("cost_usd") if rt.session.entries else None
            if self._store is not None and persistent:
                self._on_index("result", {"cost": cost if isinstance(cost, (int, float)) else None})
                self._known_size = self._store.transcript_size(rt.session.session_id)
            return msg
        finally:
            if persistent:
                self._release_lock()

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_log(self) -> CheckpointLog | None:
        rec = self._rt.recorder if self._rt is not None else None
        return rec if isinstance(rec, CheckpointLog) else None

    async def rewind_files(self, checkpoint_id: str, dry_run: bool = False, force: bool = False) -> RewindResult:
        """Put files and notebook cells back as they were just before ``checkpoint_id``.

        Raises
        ------
        CheckpointNotFoundError
            No such checkpoint in this session (or checkpointing was off).
        """
        if self._running:
            raise AgentMagicError("Wait for the running turn to finish (or interrupt it) before rewinding.")
        log = self.checkpoint_log
        if log is None:
            from ._errors import CheckpointError

            raise CheckpointError("File checkpointing is off for this client (enable_file_checkpointing=False).")
        store = self._store
        if self._rt is not None and self._rt.session.store is not None and store is not None:
            await self._acquire_lock(store, self._rt.session.session_id)
            try:
                if self._sync is not None:
                    with contextlib.suppress(Exception):  # without the store: this host's backups
                        await self._sync.pull(self._rt.session.session_id)
                log._loaded_records = None
                return log.rewind(checkpoint_id, dry_run=dry_run, force=force, bridge=self.notebook_bridge)
            finally:
                self._release_lock()
        return log.rewind(checkpoint_id, dry_run=dry_run, force=force, bridge=self.notebook_bridge)


def _check_engine(provider: Any, options: AgentOptions) -> None:
    """An engine runs its own loop (Claude Code): what our loop adds to a turn is not there."""
    if getattr(provider, "run_turn_body", None) is None:
        return
    missing = [name for name in ("agents", "output_format") if getattr(options, name)]
    if missing:
        raise ConfigurationError(
            f"{' and '.join(missing)} work with the anthropic and openai providers; the {provider.name} engine runs "
            "its own loop. Use provider='anthropic', or leave them unset."
        )


def offered(tools: list[Tool], deny: list[Any]) -> dict[str, Tool]:
    """The tools the model is offered: every one no deny rule removes whole (``Bash``, ``mcp__db``)."""
    return {t.name: t for t in tools if not any(r.content is None and r.names(t.name) for r in deny)}


def _read_mcp_file(path: Path) -> dict[str, Any]:
    """The servers of a JSON file holding ``{"mcpServers": {...}}`` (or the mapping itself)."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"mcp_servers: cannot read {path} ({type(e).__name__}: {e}).") from None
    servers = data.get("mcpServers", data) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigurationError(f'mcp_servers: {path} must hold {{"mcpServers": {{"name": {{...}}}}}}.')
    return servers


class _FilesRead(dict[str, int]):
    """Files the agent read (or wrote) earlier in the session, for tools that need a prior Read.

    A long session names hundreds of files; resolving and stat-ing them all on
    every resume is wasted work, so a path is resolved only when a tool asks
    about a file with the same name.
    """

    def __init__(self, raw_paths: list[str], cwd: Path) -> None:
        super().__init__()
        self._cwd = cwd
        self._pending: dict[str, list[str]] = {}
        for raw in raw_paths:  # os.path, not pathlib: hundreds of paths on every resume
            self._pending.setdefault(os.path.basename(raw.rstrip("/")), []).append(raw)  # noqa: PTH119

    def _load(self, key: object) -> None:
        if not self._pending or not isinstance(key, str):
            return
        for raw in self._pending.pop(os.path.basename(key.rstrip("/")), []):  # noqa: PTH119
            try:
                p = Path(raw).expanduser()
                p = (p if p.is_absolute() else self._cwd / p).resolve()
                super().setdefault(str(p), p.stat().st_mtime_ns)
            except (OSError, RuntimeError, ValueError):  # gone, a symlink loop, an unknown ~user
                continue

    def get(self, key: str, default: Any = None) -> Any:
        self._load(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._load(key)
        return super().__contains__(key)

    def __getitem__(self, key: str) -> int:
        self._load(key)
        return super().__getitem__(key)


def _files_read(entries: list[dict[str, Any]], cwd: Path) -> dict[str, int]:
    """Paths named by earlier Read/Write/Edit/NotebookEdit calls (resolved lazily)."""
    raw: list[str] = []
    for e in entries:
        if e.get("type") != "assistant":
            continue
        message = e.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        for b in content if isinstance(content, list) else []:
            if not isinstance(b, dict) or b.get("type") != "tool_use" or b.get("name") not in ("Read", "Write", "Edit", "NotebookEdit"):
                continue
            inp = b.get("input")
            if not isinstance(inp, dict):
                continue
            fp = inp.get("file_path") or inp.get("notebook_path")
            if isinstance(fp, str) and fp and "\x00" not in fp:
                raw.append(fp)
    return _FilesRead(raw, cwd)


async def query(prompt: str | list[dict[str, Any]], options: AgentOptions | None = None) -> AsyncIterator[Message]:
    """Run one prompt and yield its messages: init, the prompt, answers, tool results, the result.

    Examples
    --------
    >>> async for message in query("What files are here?", options=AgentOptions(cwd=".")):  # doctest: +SKIP
    ...     print(message)
    """
    async with AgentClient(options) as client:
        await client.query(prompt)
        async for msg in client.receive_response():
            yield msg
