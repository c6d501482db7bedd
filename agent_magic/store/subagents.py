"""Subagent transcripts, stored under the session that started them (issue 17).

A subagent's conversation is its own JSONL transcript, in the same line format
as a session's (:meth:`~agent_magic.store.transcript.SessionState.append`)::

    sessions/<session id>/subagents/agent-<agent id>.jsonl

Its first line is a header::

    {"type": "session", "session_id": <agent id>, "parent_session_id": <session id>,
     "agent_type": <subagent name>, "parent_tool_use_id": <the Agent tool_use id in the parent>,
     "description": <short task>, "cwd": ..., "model": ..., "timestamp": ..., "created_ns": ...}

``created_ns`` (nanoseconds since the epoch, written here) orders a session's
subagents by creation, on any host the transcripts are copied to. Agent ids are
letters, digits, ``_`` and ``-`` (1-128): they name files and shared-store subpaths
(``subagents/agent-<agent id>``), so nothing else may pass.

Deleting the session deletes its ``subagents`` folder with it; forks do not copy
subagent transcripts (a fork's conversation still holds the Agent tool results).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError, SessionExistsError, SessionNotFoundError
from .home import FILE_MODE, iso_now, make_private_dir
from .jsonl import JsonlFile, atomic_write_bytes, dumps_line, parse_lines, read_raw_lines
from .local import SessionStore
from .transcript import SessionMessage, session_messages

#: The folder of a session's subagent transcripts, and a transcript's name around its agent id.
SUBAGENTS_DIR = "subagents"
_PREFIX, _SUFFIX = "agent-", ".jsonl"
#: A subagent's shared-store subpath is this plus its agent id.
SUBPATH_PREFIX = f"{SUBAGENTS_DIR}/{_PREFIX}"
_AGENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def is_agent_id(agent_id: object) -> bool:
    """Whether ``agent_id`` can name a subagent transcript (letters, digits, ``_``, ``-``; 1-128)."""
    return isinstance(agent_id, str) and bool(_AGENT_ID_RE.match(agent_id))


def validate_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it can name a subagent transcript, else raise.

    Raises
    ------
    ConfigurationError
        Empty, too long, or holding anything but letters, digits, ``_`` and ``-``
        (a path separator or ``..`` would reach outside the session's folder).
    """
    if not is_agent_id(agent_id):
        raise ConfigurationError(
            f"Invalid subagent id {agent_id!r}: use 1-128 characters of letters, digits, '_' and '-'."
        )
    return agent_id


def subagents_dir(store: SessionStore, session_id: str) -> Path:
    """The folder holding ``session_id``'s subagent transcripts (it may not exist yet)."""
    return store.session_dir(session_id) / SUBAGENTS_DIR


def subagent_path(store: SessionStore, session_id: str, agent_id: str) -> Path:
    """Where the transcript of subagent ``agent_id`` of session ``session_id`` lives.

    Parameters
    ----------
    store
        The local session store.
    session_id
        The parent session's full id.
    agent_id
        The subagent's id.

    Returns
    -------
    Path
        ``<session folder>/subagents/agent-<agent_id>.jsonl``.

    Raises
    ------
    ConfigurationError
        ``agent_id`` or ``session_id`` is not a valid id.
    """
    return subagents_dir(store, session_id) / f"{_PREFIX}{validate_agent_id(agent_id)}{_SUFFIX}"


def subpath(agent_id: str) -> str:
    """The shared-store subpath of a subagent's transcript: ``subagents/agent-<agent_id>``."""
    return SUBPATH_PREFIX + validate_agent_id(agent_id)


def agent_id_of_subpath(sub: str) -> str | None:
    """The agent id a shared-store subpath names, or None if it is not a subagent transcript."""
    if not sub.startswith(SUBPATH_PREFIX):
        return None
    agent_id = sub[len(SUBPATH_PREFIX) :]
    return agent_id if is_agent_id(agent_id) else None


def agent_id_of_file(name: str) -> str | None:
    """The agent id of a file name ``agent-<id>.jsonl``, or None for any other name."""
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        return None
    agent_id = name[len(_PREFIX) : -len(_SUFFIX)]
    return agent_id if is_agent_id(agent_id) else None


def create_subagent_transcript(store: SessionStore, session_id: str, agent_id: str, header: dict[str, Any]) -> JsonlFile:
    """Create a subagent's transcript under its session, holding its header line.

    The runner then appends the subagent's lines through a
    :class:`~agent_magic.store.transcript.SessionState` built on the returned file.

    Parameters
    ----------
    store
        The local session store.
    session_id
        The parent session's full id; it must exist.
    agent_id
        The subagent's id (letters, digits, ``_``, ``-``), new in this session.
    header
        The header's fields (``agent_type``, ``parent_tool_use_id``, ``description``,
        ``cwd``, ``model``...). ``type``, ``session_id`` (``agent_id``) and
        ``parent_session_id`` (``session_id``) are set here, whatever ``header`` says;
        ``timestamp`` and ``created_ns`` are added unless given.

    Returns
    -------
    JsonlFile
        The transcript, open for appending (close it when the subagent ends).

    Raises
    ------
    SessionNotFoundError
        No session ``session_id`` in ``store``.
    SessionExistsError
        The session has a subagent ``agent_id`` already.
    ConfigurationError
        ``agent_id`` is not a valid id.
    """
    path = subagent_path(store, session_id, agent_id)
    if not store.exists(session_id):
        raise SessionNotFoundError(session_id)
    line = {
        **header,
        "type": "session",
        "session_id": agent_id,
        "parent_session_id": session_id,
    }
    line.setdefault("timestamp", iso_now())
    line.setdefault("created_ns", time.time_ns())
    make_private_dir(path.parent)
    try:
        # Exclusive: two subagents never share a file; the header is the file's first write.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        raise SessionExistsError(f"Session {session_id[:8]} has a subagent {agent_id!r} already.") from None
    try:
        data = dumps_line(line)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return JsonlFile(path)


def complete_lines(path: Path) -> list[bytes]:
    """The file's lines but a last one without its newline: a line still being written."""
    raw = read_raw_lines(path)
    if raw and not raw[-1].endswith(b"\n"):
        raw = raw[:-1]
    return raw


def read_subagent_header(store: SessionStore, session_id: str, agent_id: str) -> dict[str, Any] | None:
    """A subagent transcript's header line, or None if there is no such transcript (or no header)."""
    try:
        with open(subagent_path(store, session_id, agent_id), "rb") as f:
            first = f.readline()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not first.endswith(b"\n"):
        return None
    parsed = parse_lines([first], None)
    head = parsed[0] if parsed else None
    return head if head is not None and head.get("type") == "session" else None


def read_subagent_entries(store: SessionStore, session_id: str, agent_id: str) -> list[dict[str, Any]]:
    """Every line of a subagent's transcript, its header first; empty if there is none.

    A last line without its newline (the subagent is writing it) is left out; a
    damaged line elsewhere is skipped with a ``TranscriptWarning``, as for sessions.

    Raises
    ------
    ConfigurationError
        ``agent_id`` is not a valid id.
    """
    path = subagent_path(store, session_id, agent_id)
    return parse_lines(complete_lines(path), path)


def _order_key(header: dict[str, Any], agent_id: str) -> tuple[int, str]:
    created = header.get("created_ns")
    if not isinstance(created, int):
        from .home import iso_to_ms

        created = (iso_to_ms(header.get("timestamp")) or 0) * 1_000_000
    return created, agent_id


def list_subagents(store: SessionStore, session_id: str) -> list[str]:
    """The ids of ``session_id``'s subagents that have a transcript, oldest first.

    Parameters
    ----------
    store
        The local session store.
    session_id
        The parent session's full id.

    Returns
    -------
    list of str
        Agent ids in creation order (empty when the session has none or does not exist).
    """
    try:
        names = [e.name for e in os.scandir(subagents_dir(store, session_id)) if e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    found: list[tuple[tuple[int, str], str]] = []
    for name in names:
        agent_id = agent_id_of_file(name)
        if agent_id is None:
            continue
        header = read_subagent_header(store, session_id, agent_id)
        if header is not None:
            found.append((_order_key(header, agent_id), agent_id))
    return [agent_id for _, agent_id in sorted(found)]


def subagent_messages(
    store: SessionStore, session_id: str, agent_id: str, limit: int | None = None, offset: int = 0
) -> list[SessionMessage]:
    """A subagent's user and assistant messages, oldest first (as :meth:`SessionStore.messages`).

    Each message's ``session_id`` is the parent session's (the SDK's subagent
    messages carry the session they belong to), and ``parent_tool_use_id`` is
    the Agent ``tool_use`` id from the header.

    Returns
    -------
    list of SessionMessage
        Empty for an unknown (or invalid) agent id.
    """
    if not is_agent_id(agent_id):
        return []
    entries = read_subagent_entries(store, session_id, agent_id)
    if not entries or entries[0].get("type") != "session":
        return []
    tool_use_id = entries[0].get("parent_tool_use_id")
    return session_messages(
        entries[1:], session_id, limit=limit, offset=offset,
        parent_tool_use_id=tool_use_id if isinstance(tool_use_id, str) else None,
    )


def write_subagent_transcript(store: SessionStore, session_id: str, agent_id: str, data: bytes) -> None:
    """Replace (or create) a subagent's transcript with ``data``, whole lines (for pulls and imports)."""
    path = subagent_path(store, session_id, agent_id)
    make_private_dir(path.parent)
    atomic_write_bytes(path, data)
