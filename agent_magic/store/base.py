"""The interface every shared session store implements (issue 16).

A store holds, for each session, its transcript lines and any number of
sub-transcripts (checkpoint records, subagents), plus content-addressed blobs
(file and cell backups) and one writer lease per session. Transcripts follow
the Claude Agent SDK's ``SessionStore`` protocol exactly, so every backend here
passes the SDK's own conformance suite
(``claude_agent_sdk.testing.run_session_store_conformance``) and any object with
the SDK's methods can stand in for transcripts:

- ``append(key, entries)`` / ``load(key)`` (required); ``list_sessions(project_key)``,
  ``list_session_summaries(project_key)``, ``delete(key)``, ``list_subkeys(key)`` (optional in
  the SDK; every backend here has them).
  ``key`` is ``{"project_key", "session_id", "subpath"?}``. Entries are JSON objects,
  returned deep-equal and in append order; an entry's ``uuid`` is an idempotency key
  (appending the same uuid twice to one key stores it once); entries without one are
  never de-duplicated.
- Beyond the SDK: ``put_blob`` / ``get_blob`` / ``missing_blobs`` for content-addressed
  backups (the digest is the caller's; the store never re-hashes), and
  ``acquire_lease`` / ``renew_lease`` / ``release_lease``: one writer per session
  across hosts, with a way to take over a stale lease.

Every method is async; a backend's client is opened lazily and closed by ``aclose()``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, TypedDict

from .._errors import AgentMagicError


class _SessionKeyRequired(TypedDict):
    project_key: str
    session_id: str


class SessionKey(_SessionKeyRequired, total=False):
    """Which transcript: the SDK's ``SessionKey`` (``subpath`` names a sub-transcript)."""

    subpath: str


class SessionListEntry(TypedDict):
    """One session of :meth:`SessionStoreBackend.list_sessions` (the SDK's shape)."""

    session_id: str
    mtime: int  # epoch milliseconds, the store's own write time


class StoreError(AgentMagicError):
    """A shared store failed (network, credentials, a refused write); the message says what to do."""


class LeaseHeldError(StoreError):
    """Another host writes this session now.

    Attributes
    ----------
    holder
        Who holds the lease (``host:pid`` and a random suffix).
    age_s
        Seconds since the holder last renewed it.
    """

    def __init__(self, session_id: str, holder: str, age_s: float) -> None:
        self.session_id = session_id
        self.holder = holder
        self.age_s = age_s
        super().__init__(
            f"Session {session_id[:8]} is being written by {holder} (lease renewed {age_s:.0f} s ago). "
            "Wait for it to finish, fork the session, or take the lease over if that host is gone "
            "(`agent-magic sync --take-over`)."
        )


@dataclass
class Lease:
    """A held writer lease."""

    session_id: str
    holder: str
    acquired_ms: int
    ttl_s: float


def now_ms() -> int:
    return int(time.time() * 1000)


class SessionStoreBackend(ABC):
    """Base class of agent-magic's shared stores (see the module docstring for the contract)."""

    #: The URL scheme(s) this backend answers (``s3``, ``postgresql``, ``redis``, ``file``).
    schemes: tuple[str, ...] = ()

    # -- the SDK's SessionStore --------------------------------------------------
    @abstractmethod
    async def append(self, key: SessionKey, entries: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    async def load(self, key: SessionKey) -> list[dict[str, Any]] | None: ...

    @abstractmethod
    async def list_sessions(self, project_key: str) -> list[SessionListEntry]: ...

    @abstractmethod
    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        """Every session's summary (the SDK's ``SessionSummaryEntry``), kept up to date by ``append``.

        ``append`` folds what it writes into the session's summary with
        :func:`agent_magic.store.summary.fold_summary` (for the keys
        :func:`~agent_magic.store.summary.folds` accepts) and stamps ``mtime`` with
        the same write time ``list_sessions`` reports, so listing never reads a
        transcript. ``delete`` of a session removes its summary.
        """

    @abstractmethod
    async def delete(self, key: SessionKey) -> None: ...

    @abstractmethod
    async def list_subkeys(self, key: SessionKey) -> list[str]: ...

    # -- blobs -------------------------------------------------------------------
    @abstractmethod
    async def put_blob(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` (a no-op if it is there already)."""

    @abstractmethod
    async def get_blob(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``, or None."""

    async def missing_blobs(self, digests: list[str]) -> list[str]:
        """The digests the store does not have (backends override with one round trip)."""
        return [d for d in digests if await self.get_blob(d) is None]

    # -- the writer lease ----------------------------------------------------------
    @abstractmethod
    async def acquire_lease(self, session_id: str, holder: str, ttl_s: float, *, take_over: bool = False) -> Lease:
        """Hold the session's writer lease for ``ttl_s`` seconds.

        Re-acquiring one's own lease renews it. A lease its holder has not
        renewed for its ``ttl_s`` has expired and is free. ``take_over=True``
        takes a live one too: the person's explicit choice, when its host is gone
        without releasing it.

        Raises
        ------
        LeaseHeldError
            Another holder has it (and ``take_over`` is False).
        """

    async def renew_lease(self, lease: Lease) -> Lease:
        return await self.acquire_lease(lease.session_id, lease.holder, lease.ttl_s)

    @abstractmethod
    async def release_lease(self, session_id: str, holder: str) -> None:
        """Give the lease up (a no-op unless ``holder`` holds it)."""

    async def aclose(self) -> None:
        """Close the backend's client (it opens again on the next call)."""
        return None


def dedupe_by_uuid(existing_uuids: set[str], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries to store: those whose ``uuid`` is not stored yet (and not repeated in the batch)."""
    out = []
    for e in entries:
        uid = e.get("uuid") if isinstance(e, dict) else None
        if isinstance(uid, str) and uid:
            if uid in existing_uuids:
                continue
            existing_uuids.add(uid)
        out.append(e)
    return out
