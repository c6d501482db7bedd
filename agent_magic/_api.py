"""Module-level session helpers: list, inspect, fork, rename, tag, delete, checkpoints, rewind.

They work on the store under ``home`` (default ``$AGENT_MAGIC_HOME``) and need
no running agent, kernel or API key: the ``agent-magic`` command line tool is
built on them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError
from .checkpoints import CheckpointInfo, CheckpointLog, RewindResult
from .store import forks
from .store.jsonl import JsonlFile
from .store.local import SessionStore
from .store.transcript import SessionInfo, SessionMessage

log = logging.getLogger("agent_magic")

Home = str | os.PathLike[str] | None


def _resolve(store: SessionStore, session_id: str) -> str:
    """A session's full id; one only the shared store has (``$AGENT_MAGIC_STORE``) is pulled first."""
    from ._errors import SessionNotFoundError

    try:
        return store.resolve(session_id)
    except SessionNotFoundError:
        from .store.sync import pull_blocking

        if not pull_blocking(store, session_id):
            raise
        return store.resolve(session_id)


def _pull_backups(store: SessionStore, sid: str) -> None:
    """With a shared store, bring what a rewind may need that this host lacks (backups, newer records)."""
    if not os.environ.get("AGENT_MAGIC_STORE"):
        return
    from .store import StoreError
    from .store.sync import pull_blocking

    try:
        pull_blocking(store, sid)
    except StoreError as e:
        log.warning("Rewinding with this host's backups only: %s", e)


def _store(home: Home) -> SessionStore:
    return SessionStore.at(home)


def list_sessions(
    directory: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
    *,
    scope: str | None = None,
    home: Home = None,
) -> list[SessionInfo]:
    """Sessions, most recently active first.

    Parameters
    ----------
    directory
        Only sessions of this project directory (their cwd or scope is it).
    limit, offset
        Pagination.
    scope
        Only sessions of exactly this scope (a notebook path or directory).
    home
        The session store (default ``$AGENT_MAGIC_HOME``).
    """
    store = _store(home)
    shared = _shared_rows(store) if os.environ.get("AGENT_MAGIC_STORE") else None
    if shared is None:
        if scope is not None:
            return store.index.select(scope=scope, limit=limit, offset=offset)
        if directory is None:
            return store.index.select(limit=limit, offset=offset)
    rows = store.index.select()
    if shared:
        # Sessions made or continued on other hosts, from the store's summaries: nothing is
        # downloaded until a session is used (its info, a resume, a rewind pull it then).
        by_id = {r.session_id: r for r in rows}
        for info in shared:
            here = by_id.get(info.session_id)
            if here is None or info.last_modified > here.last_modified:
                by_id[info.session_id] = info
        rows = sorted(by_id.values(), key=lambda r: r.last_modified, reverse=True)
    if scope is not None:
        rows = [i for i in rows if i.scope == scope]
    elif directory is not None:
        d = str(Path(directory).expanduser().resolve())
        rows = [i for i in rows if i.cwd == d or i.scope == d]
    rows = rows[offset:]
    return rows[:limit] if limit is not None else rows


def _shared_rows(store: SessionStore) -> list[SessionInfo] | None:
    """The shared store's sessions as listing rows, from its summaries (None when it cannot be reached)."""
    from .store import StoreError
    from .store.sync import list_blocking

    try:
        return list_blocking(store)
    except StoreError as e:
        log.warning("Listing only this host's sessions: %s", e)
        return None


def get_session_info(session_id: str, *, home: Home = None) -> SessionInfo:
    """Metadata of one session (id or unique prefix).

    Raises
    ------
    SessionNotFoundError
    """
    store = _store(home)
    return store.info(_resolve(store, session_id))


def get_session_messages(
    session_id: str, limit: int | None = None, offset: int = 0, *, home: Home = None
) -> list[SessionMessage]:
    """The user and assistant messages of a session, oldest first."""
    store = _store(home)
    return store.messages(_resolve(store, session_id), limit=limit, offset=offset)


def list_subagents(session_id: str, *, home: Home = None) -> list[str]:
    """The ids of a session's subagents, in the order they were started.

    Parameters
    ----------
    session_id
        A session id or a unique prefix of one.
    home
        The session store (default ``$AGENT_MAGIC_HOME``).

    Returns
    -------
    list of str
        Agent ids (for :func:`get_subagent_messages`); empty when the session started none.

    Raises
    ------
    SessionNotFoundError
        No such session here or in the shared store.
    """
    from .store import subagents

    store = _store(home)
    return subagents.list_subagents(store, _resolve(store, session_id))


def get_subagent_messages(
    session_id: str, agent_id: str, *, home: Home = None, limit: int | None = None, offset: int = 0
) -> list[SessionMessage]:
    """The user and assistant messages of one of a session's subagents, oldest first.

    Parameters
    ----------
    session_id
        The parent session's id or a unique prefix of one.
    agent_id
        The subagent's id, as :func:`list_subagents` gives it.
    home
        The session store (default ``$AGENT_MAGIC_HOME``).
    limit, offset
        Pagination.

    Returns
    -------
    list of SessionMessage
        Each with the parent session's ``session_id``; empty for an unknown ``agent_id``.

    Raises
    ------
    SessionNotFoundError
        No such session here or in the shared store.
    """
    from .store import subagents

    store = _store(home)
    sid = _resolve(store, session_id)
    return subagents.subagent_messages(store, sid, agent_id, limit=limit, offset=offset)


def fork_session(
    session_id: str,
    up_to_message_id: str | None = None,
    title: str | None = None,
    *,
    new_session_id: str | None = None,
    scope: str | None = None,
    home: Home = None,
) -> str:
    """Copy a session (up to and including ``up_to_message_id``) into a new one; return its id.

    The original is left byte-identical. Checkpoints of the copied turns stay
    rewindable in the fork.
    """
    store = _store(home)
    sid = _resolve(store, session_id)
    up_to = _resolve_message(store, sid, up_to_message_id) if up_to_message_id else None
    new_id = store.fork(sid, up_to_message_id=up_to, title=title, new_session_id=new_session_id, scope=scope)
    if os.environ.get("AGENT_MAGIC_STORE"):
        # Other hosts find the fork at once (its header: it points into its parent's history).
        from .store import StoreError
        from .store.sync import push_blocking

        try:
            push_blocking(store, new_id)
        except StoreError as e:
            log.warning("The fork is on this host only until `agent-magic sync`: %s", e)
    return new_id


def _resolve_message(store: SessionStore, sid: str, mid: str) -> str:
    ids = [str(e.get("uuid")) for e in store.read_entries(sid) if e.get("uuid")]
    if mid in ids:
        return mid
    matches = [i for i in ids if len(mid) >= 4 and i.startswith(mid)]
    if len(matches) == 1:
        return matches[0]
    from ._errors import AmbiguousIdError, CheckpointNotFoundError

    if len(matches) > 1:
        raise AmbiguousIdError(mid, matches, "message")
    raise CheckpointNotFoundError(f"No message {mid!r} in session {sid[:8]}.")


def rename_session(session_id: str, title: str, *, home: Home = None) -> None:
    """Give a session a title (shown instead of its first prompt)."""
    store = _store(home)
    store.rename(_resolve(store, session_id), title)


def tag_session(session_id: str, tag: str | None, *, home: Home = None) -> None:
    """Tag a session; ``None`` clears the tag."""
    store = _store(home)
    store.tag(_resolve(store, session_id), tag)


def delete_session(session_id: str, *, home: Home = None) -> None:
    """Delete a session's transcript and checkpoint records (shared backups stay until pruned)."""
    store = _store(home)
    store.delete(store.resolve(session_id))


def current_session(scope: str, *, home: Home = None) -> str | None:
    """The session a notebook (or project directory) continues by default, if any."""
    return _store(home).current(scope)


def set_current_session(scope: str, session_id: str | None, *, home: Home = None) -> None:
    """Make ``session_id`` the one ``scope`` continues (``None``: start fresh next time)."""
    store = _store(home)
    if session_id is None:
        store.clear_current(scope)
    else:
        store.set_current(scope, _resolve(store, session_id))


def checkpoint_log(session_id: str, *, home: Home = None, cwd: str | os.PathLike[str] | None = None) -> CheckpointLog:
    """The checkpoint log of a stored session (for listing and rewinding)."""
    store = _store(home)
    sid = _resolve(store, session_id)
    header = store.header(sid)
    root = Path(cwd).resolve() if cwd is not None else Path(header.get("cwd") or os.getcwd())
    raw_settings = header.get("checkpoint")
    settings: dict[str, Any] = raw_settings if isinstance(raw_settings, dict) else {}
    extra: dict[str, Any] = {}
    if isinstance(settings.get("ignore"), list) and all(isinstance(x, str) for x in settings["ignore"]):
        extra["ignore"] = settings["ignore"]
    if isinstance(settings.get("max_file_bytes"), int) and settings["max_file_bytes"] > 0:
        extra["max_file_bytes"] = settings["max_file_bytes"]
    return CheckpointLog(
        session_id=sid,
        cwd=root,
        records=JsonlFile(store.checkpoints_path(sid)),
        blobs=store.blobs,
        exclude=[store.home],
        inherited=lambda: forks.inherited_records(store, sid),
        **extra,
    )


def list_checkpoints(session_id: str, *, home: Home = None) -> list[CheckpointInfo]:
    """The session's checkpoints, oldest first: turn number, time, prompt, files and cells changed."""
    log = checkpoint_log(session_id, home=home)
    try:
        return log.checkpoints()
    finally:
        log.records.close()


def rewind_files(
    session_id: str,
    checkpoint_id: str,
    dry_run: bool = False,
    force: bool = False,
    *,
    home: Home = None,
    bridge: Any = None,
) -> RewindResult:
    """Put the workspace back as it was just before ``checkpoint_id``; works with no kernel running.

    Files created since are deleted, changed files restored, deleted files and
    folders brought back, folders the agent created removed if empty, notebook
    cells restored one by one. Paths and cells changed by someone else since the
    agent are conflicts: left alone and reported, unless ``force``.

    Raises
    ------
    SessionNotFoundError, CheckpointNotFoundError, SessionLockedError
    """
    store = _store(home)
    sid = _resolve(store, session_id)
    _pull_backups(store, sid)
    log = checkpoint_log(sid, home=home)
    try:
        if dry_run:
            return log.rewind(checkpoint_id, dry_run=True, force=force, bridge=bridge)
        with store.lock(sid, timeout=10.0):
            log.recover()
            log.sweep_temp_files()
            return log.rewind(checkpoint_id, dry_run=False, force=force, bridge=bridge)
    finally:
        log.records.close()


#: Restores (or previews) the kernel's variables for a rewind: set by the notebook layer when
#: the extension is loaded in a kernel (see notebook/_kernel_state.py); None elsewhere (the CLI,
#: the Jupyter server), where variables are not part of a rewind.
KernelRewinder = Callable[[str, list[dict[str, Any]], RewindResult, bool], None]
_kernel_rewinder: KernelRewinder | None = None


def set_kernel_rewinder(rewinder: KernelRewinder | None) -> None:
    """Register (None: remove) what puts this process's kernel variables back on a rewind."""
    global _kernel_rewinder
    _kernel_rewinder = rewinder


def rewind(
    session_id: str,
    checkpoint_id: str,
    *,
    conversation: bool = False,
    dry_run: bool = False,
    force: bool = False,
    kernel: bool = True,
    home: Home = None,
    bridge: Any = None,
) -> RewindResult:
    """Rewind files and notebook cells, the kernel's variables, and with ``conversation=True`` the conversation.

    The conversation is rewound by forking the session just before the
    checkpoint's prompt (the original stays intact); the new session's id is
    in ``result.new_session_id`` and it becomes its scope's current session.

    Parameters
    ----------
    kernel
        Also put back the variables the agent's code changed in this kernel (called from a
        notebook with agent-magic loaded; elsewhere ``result.kernel_note`` says they were not
        part of the rewind). ``False`` leaves variables alone.
    """
    store = _store(home)
    sid = _resolve(store, session_id)
    result = rewind_files(sid, checkpoint_id, dry_run=dry_run, force=force, home=home, bridge=bridge)
    _rewind_kernel(sid, result, dry_run=dry_run, kernel=kernel, home=home)
    if conversation and not dry_run:
        cp = result.checkpoint_id
        entries = store.read_entries(sid)
        body = [e for e in entries if e.get("type") != "session"]
        idx = next((i for i, e in enumerate(body) if e.get("uuid") == cp), None)
        if idx is None:
            raise ConfigurationError(f"Checkpoint {cp[:8]} is not a message of session {sid[:8]}.")
        before = next((e.get("uuid") for e in reversed(body[:idx]) if e.get("uuid")), None)
        info = store.info(sid)
        if before is None:
            new_id = store.fork(sid, up_to_message_id=None, title=None, empty=True)
        else:
            new_id = store.fork(sid, up_to_message_id=before)
        store.set_current(info.scope, new_id)
        result.new_session_id = new_id
    return result


def variable_snapshot_keys(session_id: str, *, home: Home = None) -> list[str]:
    """The kernel-variable snapshots only this session's checkpoints use (none when forks of it exist,
    which may rewind through them)."""
    store = _store(home)
    sid = _resolve(store, session_id)
    if any(store.exists(child) for child in store.index.children(sid)):
        return []
    log = checkpoint_log(sid, home=home)
    try:
        return [str(r["key"]) for r in log.read_records() if r.get("r") == "variables" and r.get("key")]
    finally:
        log.records.close()


def _rewind_kernel(sid: str, result: RewindResult, *, dry_run: bool, kernel: bool, home: Home) -> None:
    """The kernel-variable part of a rewind (its snapshots are in the checkpoint records)."""
    log = checkpoint_log(sid, home=home)
    try:
        records = log.variable_records(result.checkpoint_id)
    finally:
        log.records.close()
    if not records:
        return
    if not kernel:
        result.kernel_note = "Kernel variables were left as they are (kernel=False)."
    elif _kernel_rewinder is None:
        result.kernel_note = (
            "Kernel variables are not part of this rewind: no kernel of that notebook runs here. "
            "Rewind from the notebook (`%agent rewind`) to put them back too."
        )
    else:
        _kernel_rewinder(sid, records, result, dry_run)


def set_kernel_tools(session_id: str, names: list[str], *, home: Home = None) -> None:
    """Remember the kernel tools a session uses (by function name), in its ``meta.json``.

    Parameters
    ----------
    session_id
        A session id or a unique prefix of one.
    names
        Names of Python functions in the kernel; duplicates are dropped, order kept.
        An empty list forgets them.
    home
        The session store (default ``$AGENT_MAGIC_HOME``).

    Raises
    ------
    SessionNotFoundError
        No such session here or in the shared store.
    ConfigurationError
        A name is not a Python identifier (or is a keyword).
    """
    import keyword

    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ConfigurationError("Kernel tool names must be a list of Python identifiers.")
    kept: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigurationError(f"Kernel tool name {name!r} is not a Python identifier.")
        if name not in kept:
            kept.append(name)
    store = _store(home)
    sid = _resolve(store, session_id)
    store._write_meta(sid, {"kernel_tools": kept})


def get_kernel_tools(session_id: str, *, home: Home = None) -> list[str]:
    """The kernel tools remembered with a session (see :func:`set_kernel_tools`).

    Parameters
    ----------
    session_id
        A session id or a unique prefix of one.
    home
        The session store (default ``$AGENT_MAGIC_HOME``).

    Returns
    -------
    list of str
        Function names, in the order they were set; empty when none were.

    Raises
    ------
    SessionNotFoundError
        No such session here or in the shared store.
    """
    store = _store(home)
    sid = _resolve(store, session_id)
    raw = store._read_meta(sid).get("kernel_tools")
    if not isinstance(raw, list):
        return []
    return [n for n in raw if isinstance(n, str) and n.isidentifier()]
