"""The Jupyter server extension: agent sessions over REST, for JupyterLab's sessions sidebar.

The handlers read the session store directly (``$AGENT_MAGIC_HOME``, the
same store the server's kernels use, since they inherit its environment), so
the sidebar works with no kernel running, like the ``agent-magic`` command.
A notebook's sessions are those whose scope is its absolute path: the server's
root folder joined with the notebook's path, resolved, which is exactly what a
kernel started for it computes from ``JPY_SESSION_NAME``.

With a shared store (``c.AgentMagic.store = "s3://..."`` in
``jupyter_server_config.py``, ``--AgentMagic.store=URL``, default
``$AGENT_MAGIC_STORE``), the handlers also pull from it on demand, as the
session helpers and the ``agent-magic`` command do: listing brings the
sessions this server lacks, a session asked for by id is fetched, a rewind
fetches the backups it needs, a fork is pushed at once.

Every route lives under ``/agent-magic/api``, needs an authenticated user
(token or login, as every Jupyter API), is authorized as the ``contents``
resource (GET reads, the rest write) and is XSRF-checked like the rest of
Jupyter's API. Work that touches the store runs on one worker thread, off the
server's event loop.

``GET  config``
    ``{version, root_dir, store}``.
``GET  sessions?path=NB``
    The notebook's sessions: ``{scope, current, store, sessions: [...]}``, newest first.
    ``store`` is the shared store read (its password masked), or null.
``GET | PATCH {title} | DELETE  sessions/ID``
    One session; rename; delete.
``POST sessions/ID/fork {title?, path?}``
    A copy of the session (in the notebook's scope when ``path`` is given); ``{session_id}``.
``POST sessions/ID/resume {path}``
    Make it the session the notebook's next ``%%agent`` cell continues.
``GET  sessions/ID/checkpoints``
    The session's checkpoints, oldest first.
``POST sessions/ID/rewind {checkpoint_id, dry_run?, force?, conversation?, open?}``
    Rewind (or preview it). ``open`` maps the paths of notebooks open in the
    browser to their current content: those are rewound cell by cell *in the
    browser*, and the answer's ``live`` lists the edits the browser applies,
    the same edits a kernel sends over its comm.
``GET  sessions/ID/cell?checkpoint=CP&cell_id=C&path=NB``
    What the agent did to one cell in one turn: the cell before and after, and a diff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ApiPath, to_os_path, url_path_join
from tornado import web
from traitlets import Unicode, default
from traitlets.config import Configurable

from . import _api
from ._errors import (
    AgentMagicError,
    AmbiguousIdError,
    CheckpointNotFoundError,
    SessionLockedError,
    SessionNotFoundError,
)
from ._redact import redact_url
from ._version import __version__
from .tools.base import CellEdit

T = TypeVar("T")

#: Where the routes live, below the server's base URL.
API_PREFIX = "agent-magic/api"
_SESSION = r"(?P<session_id>[A-Za-z0-9_-]{1,128})"
_EXECUTOR_KEY = "agent_magic_executor"
_SHARED_KEY = "agent_magic_shared_store"
_ENV = "AGENT_MAGIC_STORE"


class AgentMagic(Configurable):
    """The server extension's settings (``c.AgentMagic.*`` in ``jupyter_server_config.py``)."""

    store = Unicode(
        help="Shared session store the sessions sidebar also reads: s3://bucket/prefix, postgresql://..., "
        "redis://..., file:///... (default: $AGENT_MAGIC_STORE; '': this server's sessions only).",
    ).tag(config=True)

    @default("store")
    def _default_store(self) -> str:
        return os.environ.get(_ENV, "")


class _SharedStore:
    """The shared store the handlers pull from (``AgentMagic.store``); every method runs on the worker thread.

    The session helpers already pull from ``$AGENT_MAGIC_STORE`` themselves, so
    the handlers add pulls only for a store the environment does not name.
    """

    def __init__(self, url: str | None, log: logging.Logger) -> None:
        self.url = url
        self.shown = redact_url(url) if url else None
        self.log = log

    def _extra(self) -> str | None:
        return self.url if self.url and self.url != os.environ.get(_ENV) else None

    def pull_new(self) -> None:
        """Bring the sessions this server lacks (their backups come when a rewind needs them)."""
        url = self._extra()
        if url is None:
            return
        from .store import StoreError
        from .store.sync import pull_blocking

        try:
            pull_blocking(_api._store(None), None, blobs=False, url=url)
        except StoreError as e:
            self.log.warning("agent-magic: listing only this server's sessions: %s", e)

    def find(self, session_id: str) -> None:
        """Fetch ``session_id`` (an id or unique prefix) if only the shared store has it."""
        url = self._extra()
        if url is None:
            return
        store = _api._store(None)
        try:
            store.resolve(session_id)
        except SessionNotFoundError:
            from .store.sync import pull_blocking

            pull_blocking(store, session_id, url=url)  # not there either: the helper's lookup says so

    def pull_backups(self, session_id: str) -> None:
        """Bring what a rewind of ``session_id`` may need that this server lacks (backups, newer records)."""
        url = self._extra()
        if url is None:
            return
        from .store import StoreError
        from .store.sync import pull_blocking

        store = _api._store(None)
        try:
            pull_blocking(store, store.resolve(session_id), url=url)
        except StoreError as e:
            self.log.warning("agent-magic: rewinding with this server's backups only: %s", e)

    def push(self, session_id: str) -> None:
        """Send a new session (a fork) to the shared store at once, so other hosts find it."""
        url = self._extra()
        if url is None:
            return
        from .store import StoreError
        from .store.sync import push_blocking

        try:
            push_blocking(_api._store(None), session_id, url=url)
        except StoreError as e:
            self.log.warning("agent-magic: the fork is on this server only until `agent-magic sync`: %s", e)


def _shared_store(setting: str, source: str, log: logging.Logger) -> _SharedStore:
    """The configured shared store, checked once: an unusable URL is one error line, then local sessions only."""
    if not setting:
        return _SharedStore(None, log)
    from .store import open_session_store

    try:
        open_session_store(setting)  # checks the scheme and the backend's extra; connects to nothing
    except (AgentMagicError, ValueError) as e:
        shown = redact_url(setting)
        log.error(
            "agent-magic: ignoring the shared session store %s (from %s), the sessions sidebar shows this "
            "server's sessions only: %s",
            shown, source, str(e).replace(setting, shown),
        )
        return _SharedStore(None, log)
    return _SharedStore(setting, log)


# --------------------------------------------------------------------------- helpers


class _BrowserNotebooks:
    """The NotebookBridge a rewind from the sidebar sees: notebooks open in the browser.

    Their current content came with the request; the edits the rewind makes to
    them are collected and sent back for the browser to apply to the open models.
    """

    def __init__(self, open_notebooks: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self._open = open_notebooks  # resolved absolute path -> (browser path, nbformat JSON)
        self.live: dict[str, list[dict[str, Any]]] = {}

    def _find(self, path: Path) -> tuple[str, dict[str, Any]] | None:
        return self._open.get(str(Path(path).resolve()))

    def is_open(self, path: Path) -> bool:
        return self._find(path) is not None

    def read(self, path: Path) -> dict[str, Any] | None:
        found = self._find(path)
        return json.loads(json.dumps(found[1])) if found is not None else None

    def apply(self, path: Path, edit: CellEdit) -> bool:
        found = self._find(path)
        if found is None:
            return False
        self.live.setdefault(found[0], []).append({"method": "apply", "edit": dataclasses.asdict(edit)})
        return True

    def replace_all(self, path: Path, nb: dict[str, Any]) -> bool:
        found = self._find(path)
        if found is None:
            return False
        self.live[found[0]] = [{"method": "replace_all", "notebook": nb}]
        return True


def _info_json(info: Any) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(info)
    out["title"] = info.title
    return out


def _source(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _cell_history(session_id: str, checkpoint_id: str, cell_id: str, notebook: Path) -> dict[str, Any]:
    """The agent's change to one cell in one turn: the cell before its first edit and after its last."""
    log = _api.checkpoint_log(session_id)
    try:
        cp = log.resolve(checkpoint_id)
        target = str(notebook)
        found = [
            r
            for r in log.read_records()
            if r.get("r") == "cells"
            and r.get("checkpoint") == cp
            and r.get("cell_id") == cell_id
            and str(log.abs(str(r.get("path"))).resolve()) == target
        ]
        if not found:
            raise CheckpointNotFoundError(f"The agent did not change cell {cell_id} in checkpoint {cp[:8]}.")

        def cell(digest: Any) -> dict[str, Any] | None:
            return json.loads(log.blobs.get(digest)) if isinstance(digest, str) and digest else None

        before, after = cell(found[0].get("before")), cell(found[-1].get("after"))
    finally:
        log.records.close()
    lines = difflib.unified_diff(
        _source(before).splitlines(keepends=True),
        _source(after).splitlines(keepends=True),
        f"cell {cell_id} (before the turn)",
        f"cell {cell_id} (after the turn)",
    )
    diff = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return {
        "checkpoint_id": cp,
        "cell_id": cell_id,
        "ops": [str(r.get("op")) for r in found],
        "before": before,
        "after": after,
        "diff": diff,
    }


# --------------------------------------------------------------------------- handlers


class _Handler(APIHandler):
    """JSON in and out; store errors become 4xx answers with a readable message."""

    auth_resource = "contents"

    @property
    def root_dir(self) -> Path:
        return Path(self.settings["kernel_manager"].root_dir).resolve()

    def notebook_path(self, api_path: str | None) -> tuple[str, Path]:
        """The notebook's API path and its absolute path (a kernel's scope for it)."""
        if not api_path:
            raise web.HTTPError(400, "The notebook's `path` is required.")
        api_path = api_path.strip("/")
        if ".." in api_path.split("/") or "\\" in api_path:
            raise web.HTTPError(400, f"Not a notebook path inside the server's root: {api_path!r}")
        try:
            os_path = Path(to_os_path(ApiPath(api_path), str(self.root_dir))).resolve()
        except Exception:
            raise web.HTTPError(400, f"Not a notebook path: {api_path!r}") from None
        return api_path, os_path

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "The request body is not JSON.") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "The request body must be a JSON object.")
        return data

    @property
    def shared(self) -> _SharedStore:
        store: _SharedStore = self.settings[_SHARED_KEY]
        return store

    async def run(self, fn: Callable[[], T]) -> T:
        """Run store work on the extension's worker thread; store errors become HTTP errors."""
        executor: ThreadPoolExecutor = self.settings[_EXECUTOR_KEY]
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except (SessionNotFoundError, CheckpointNotFoundError) as e:
            raise web.HTTPError(404, str(e)) from None
        except AmbiguousIdError as e:
            raise web.HTTPError(400, str(e)) from None
        except SessionLockedError as e:
            raise web.HTTPError(409, str(e)) from None
        except AgentMagicError as e:
            raise web.HTTPError(400, str(e)) from None

    def reply(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(obj, default=str))


class ConfigHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"version": __version__, "root_dir": str(self.root_dir), "store": self.shared.shown})


class SessionsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        _, scope_path = self.notebook_path(self.get_query_argument("path", None))
        scope = str(scope_path)

        def work() -> dict[str, Any]:
            self.shared.pull_new()
            rows = _api.list_sessions(scope=scope)
            return {
                "scope": scope,
                "current": _api.current_session(scope),
                "store": self.shared.shown,
                "sessions": [_info_json(i) for i in rows],
            }

        self.reply(await self.run(work))


class SessionHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            return _info_json(_api.get_session_info(session_id))

        self.reply(await self.run(work))

    @web.authenticated
    @authorized
    async def patch(self, session_id: str) -> None:
        title = self.body().get("title")
        if not isinstance(title, str) or not title.strip():
            raise web.HTTPError(400, "A non-empty `title` is required.")

        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            _api.rename_session(session_id, title.strip())
            return _info_json(_api.get_session_info(session_id))

        self.reply(await self.run(work))

    @web.authenticated
    @authorized
    async def delete(self, session_id: str) -> None:
        await self.run(lambda: _api.delete_session(session_id))
        self.set_status(204)
        self.finish()


class ForkHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, session_id: str) -> None:
        body = self.body()
        title = body.get("title") if isinstance(body.get("title"), str) else None
        scope = str(self.notebook_path(body["path"])[1]) if body.get("path") else None

        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            new_id = _api.fork_session(session_id, title=title, scope=scope)
            self.shared.push(new_id)
            return {"session_id": new_id, "session": _info_json(_api.get_session_info(new_id))}

        self.reply(await self.run(work), 201)


class ResumeHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, session_id: str) -> None:
        _, scope_path = self.notebook_path(self.body().get("path"))

        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            sid = _api.get_session_info(session_id).session_id
            _api.set_current_session(str(scope_path), sid)
            return {"scope": str(scope_path), "current": sid}

        self.reply(await self.run(work))


class CheckpointsHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        def work() -> list[dict[str, Any]]:
            self.shared.find(session_id)
            return [dataclasses.asdict(c) for c in _api.list_checkpoints(session_id)]

        self.reply({"checkpoints": await self.run(work)})


class RewindHandler(_Handler):
    @web.authenticated
    @authorized
    async def post(self, session_id: str) -> None:
        body = self.body()
        checkpoint_id = body.get("checkpoint_id")
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            raise web.HTTPError(400, "`checkpoint_id` is required.")
        opened: dict[str, tuple[str, dict[str, Any]]] = {}
        raw_open = body.get("open") or {}
        if not isinstance(raw_open, dict):
            raise web.HTTPError(400, "`open` must map notebook paths to their content.")
        for api_path, nb in raw_open.items():
            if isinstance(nb, dict) and isinstance(nb.get("cells"), list):
                rel, os_path = self.notebook_path(api_path)
                opened[str(os_path)] = (rel, nb)
        bridge = _BrowserNotebooks(opened)
        dry_run = bool(body.get("dry_run"))

        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            self.shared.pull_backups(session_id)
            result = _api.rewind(
                session_id,
                checkpoint_id,
                conversation=bool(body.get("conversation")),
                dry_run=dry_run,
                force=bool(body.get("force")),
                bridge=bridge,
            )
            out: dict[str, Any] = dataclasses.asdict(result)
            out["summary"] = result.summary()
            out["ok"] = result.ok
            out["live"] = [{"path": p, "ops": ops} for p, ops in bridge.live.items()]
            return out

        self.reply(await self.run(work))


class CellHandler(_Handler):
    @web.authenticated
    @authorized
    async def get(self, session_id: str) -> None:
        checkpoint_id = self.get_query_argument("checkpoint", "")
        cell_id = self.get_query_argument("cell_id", "")
        if not checkpoint_id or not cell_id:
            raise web.HTTPError(400, "`checkpoint` and `cell_id` are required.")
        _, notebook = self.notebook_path(self.get_query_argument("path", None))
        def work() -> dict[str, Any]:
            self.shared.find(session_id)
            return _cell_history(session_id, checkpoint_id, cell_id, notebook)

        self.reply(await self.run(work))


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the routes to the server (called by jupyter_server)."""
    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], API_PREFIX)
    web_app.settings.setdefault(_EXECUTOR_KEY, ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-magic"))
    configured = "AgentMagic" in serverapp.config and "store" in serverapp.config.AgentMagic
    source = "AgentMagic.store" if configured else f"${_ENV}"
    shared = _shared_store(AgentMagic(parent=serverapp).store, source, serverapp.log)
    web_app.settings[_SHARED_KEY] = shared
    routes: list[tuple[str, type[_Handler]]] = [
        ("config", ConfigHandler),
        ("sessions", SessionsHandler),
        (f"sessions/{_SESSION}", SessionHandler),
        (f"sessions/{_SESSION}/fork", ForkHandler),
        (f"sessions/{_SESSION}/resume", ResumeHandler),
        (f"sessions/{_SESSION}/checkpoints", CheckpointsHandler),
        (f"sessions/{_SESSION}/rewind", RewindHandler),
        (f"sessions/{_SESSION}/cell", CellHandler),
    ]
    web_app.add_handlers(".*$", [(url_path_join(base, path), handler) for path, handler in routes])
    serverapp.log.info(
        "agent-magic %s: session API at %s; shared store: %s", __version__, base, shared.shown or "none"
    )
