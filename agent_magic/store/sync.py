"""Local first, shared second: pushing sessions to a shared store and pulling them back.

Every write lands in the local store first (its crash safety is unchanged);
:meth:`SessionSync.push` then sends what the shared store does not have yet, in
an order that never leaves it inconsistent for a reader on another host:

1. the backups the new checkpoint records name (content-addressed blobs);
2. the new checkpoint records (sub-transcript ``checkpoints``);
3. the new lines of its subagents' transcripts (sub-transcripts ``subagents/agent-<id>``,
   :mod:`agent_magic.store.subagents`);
4. the new transcript lines (the main transcript), and the session's metadata.

How far each file was pushed is kept in ``sessions/<id>/sync.json`` (a subagent's
under its subpath), so a push
sends only new lines and a failed one is simply retried later. Every pushed
line carries a ``uuid`` (lines that have none get one naming their place), so a
retried batch whose first attempt landed is stored once.

:meth:`SessionSync.pull` brings a session the local store lacks (or a longer
version of one it has: another host continued it) into the local store, with
its checkpoint records, the backups they need and its subagents' transcripts, so
resume, fork, rewind and listing work on it as on any local session.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any

from .._errors import AgentMagicError
from .._redact import redact_url, without_url_secrets
from ..checkpoints.records import blobs_referenced
from . import forks, subagents
from .base import SessionKey, SessionStoreBackend
from .jsonl import atomic_write_bytes, crash_point, dumps_line, parse_lines, read_raw_lines
from .local import SessionStore
from .summary import display_names, summary_info
from .transcript import SessionInfo

#: All agent-magic sessions share one project key: a session id is found from any host.
PROJECT_KEY = "agent-magic"
RECORDS = "checkpoints"
META = "meta"
_SYNTHETIC = "am-line:"  # uuids given to lines that have none (stripped again on pull)


#: Seconds a writer lease lasts: a turn holds it from its start to its end (a host that died
#: mid-turn frees it after this long, or at once with ``agent-magic sync --take-over``).
LEASE_TTL_S = 600.0


def shared_store_sync(setting: Any, local: SessionStore | None) -> SessionSync | None:
    """The sync for ``AgentOptions.session_store`` (else ``$AGENT_MAGIC_STORE``), or None (local only)."""
    if local is None:
        return None
    value = setting if setting is not None else (os.environ.get("AGENT_MAGIC_STORE") or None)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        from . import open_session_store

        remote: Any = open_session_store(value)
    else:
        remote = value  # a store object: ours, or one with the Agent SDK's methods
    return SessionSync(local, remote)


def is_full_id(session_id: str) -> bool:
    """A whole session id (a uuid), which needs no listing of the store to be found."""
    import uuid

    try:
        return str(uuid.UUID(session_id)) == session_id.lower()
    except ValueError:
        return False


def holder_name() -> str:
    """Who writes, as a lease names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class SyncResult:
    """What one push or pull moved."""

    lines: int = 0
    records: int = 0
    blobs: int = 0
    subagent_lines: int = 0

    def __bool__(self) -> bool:
        return bool(self.lines or self.records or self.blobs or self.subagent_lines)


class SessionSync:
    """Moves sessions between the local store and a shared one."""

    def __init__(self, local: SessionStore, remote: SessionStoreBackend, project_key: str = PROJECT_KEY) -> None:
        self.local = local
        self.remote = remote
        self.project_key = project_key
        #: A store with only the Agent SDK's methods holds transcripts; checkpoints stay local.
        self.has_blobs = all(callable(getattr(remote, m, None)) for m in ("put_blob", "get_blob", "missing_blobs"))

    def key(self, session_id: str, subpath: str | None = None) -> SessionKey:
        k: SessionKey = {"project_key": self.project_key, "session_id": session_id}
        if subpath:
            k["subpath"] = subpath
        return k

    # -- state -------------------------------------------------------------------
    def _state_path(self, session_id: str) -> Any:
        return self.local.session_dir(session_id) / "sync.json"

    def state(self, session_id: str) -> dict[str, int]:
        """Lines of each file the shared store has, and (``*_at``) the byte offset where the rest begins.

        The offsets let a push read only what was appended since (``-1``: unknown, count again).
        """
        try:
            raw = json.loads(self._state_path(session_id).read_bytes())
        except (OSError, ValueError):
            raw = {}
        st = {k: int(raw.get(k, 0)) for k in ("transcript", "checkpoints")}
        st.update({k: int(raw.get(k, -1)) for k in ("transcript_at", "checkpoints_at")})
        # Subagent transcripts: ``subagents/agent-<id>`` (lines) and ``..._at`` (offset).
        for k, v in raw.items() if isinstance(raw, dict) else ():
            if isinstance(k, str) and k.startswith(subagents.SUBPATH_PREFIX) and isinstance(v, int):
                st[k] = v
        return st

    def _local_subagents(self, session_id: str) -> list[tuple[str, Any]]:
        """``(subpath, path)`` of every subagent transcript of the session on this host."""
        try:
            names = sorted(e.name for e in os.scandir(subagents.subagents_dir(self.local, session_id)) if e.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            agent_id = subagents.agent_id_of_file(name)
            if agent_id is not None:
                out.append((subagents.subpath(agent_id), subagents.subagent_path(self.local, session_id, agent_id)))
        return out

    def _save_state(self, session_id: str, state: dict[str, int]) -> None:
        atomic_write_bytes(self._state_path(session_id), json.dumps(state).encode())

    def pending(self, session_id: str) -> int:
        """Lines written locally and not yet in the shared store."""
        st = self.state(session_id)
        pending = len(_tail(self.local.transcript_path(session_id), st["transcript"], st["transcript_at"])[0])
        if self.has_blobs:
            pending += len(_tail(self.local.checkpoints_path(session_id), st["checkpoints"], st["checkpoints_at"])[0])
        for sub, path in self._local_subagents(session_id):
            pending += len(_tail(path, st.get(sub, 0), st.get(f"{sub}_at", -1))[0])
        return pending

    # -- push -----------------------------------------------------------------------
    async def push(self, session_id: str) -> SyncResult:
        """Send what the shared store lacks of ``session_id``: backups, records, lines, metadata."""
        out = SyncResult()
        st = self.state(session_id)
        if st["transcript"] == 0:
            # A fork's first push: the parent it points into must be there for other hosts too.
            ref = forks.fork_ref(self.local.header(session_id))
            if ref is not None and self.local.exists(ref["session_id"]) and self.pending(ref["session_id"]):
                await self.push(ref["session_id"])
        rec_tail, rec_end = _tail(self.local.checkpoints_path(session_id), st["checkpoints"], st["checkpoints_at"])
        new_records = _parsed(rec_tail)
        if new_records and self.has_blobs:
            digests = sorted(blobs_referenced(new_records, self.local.blobs))
            missing = await self.remote.missing_blobs(digests) if digests else []
            root = self.local.blobs.root
            for d in missing:
                assert root is not None
                await self.remote.put_blob(d, (root / d[:2] / d[2:]).read_bytes())  # stored compressed
                crash_point("sync.blob")
            out.blobs = len(missing)
            base = st["checkpoints"]
            await self.remote.append(
                self.key(session_id, RECORDS),
                [_with_uuid(r, session_id, "c", base + i) for i, r in enumerate(new_records)],
            )
            crash_point("sync.records")  # sent, not noted: the next push sends them again (same uuids)
            st["checkpoints"], st["checkpoints_at"] = base + len(rec_tail), rec_end
            out.records = len(new_records)
            self._save_state(session_id, st)
        # Subagents before the main lines: a host that reads the Agent tool's result finds its transcript.
        for sub, path in self._local_subagents(session_id):
            sub_tail, sub_end = _tail(path, st.get(sub, 0), st.get(f"{sub}_at", -1))
            sub_lines = _parsed(sub_tail)
            if not sub_lines:
                continue
            base = st.get(sub, 0)
            kind = "s" + sub[len(subagents.SUBPATH_PREFIX) :] + ":"
            await self.remote.append(
                self.key(session_id, sub), [_with_uuid(e, session_id, kind, base + i) for i, e in enumerate(sub_lines)]
            )
            crash_point("sync.subagent")
            st[sub], st[f"{sub}_at"] = base + len(sub_tail), sub_end
            out.subagent_lines += len(sub_lines)
            self._save_state(session_id, st)
        tail, end = _tail(self.local.transcript_path(session_id), st["transcript"], st["transcript_at"])
        new_lines = _parsed(tail)
        if new_lines:
            base = st["transcript"]
            await self.remote.append(
                self.key(session_id), [_with_uuid(e, session_id, "t", base + i) for i, e in enumerate(new_lines)]
            )
            crash_point("sync.lines")
            st["transcript"], st["transcript_at"] = base + len(tail), end
            out.lines = len(new_lines)
            self._save_state(session_id, st)
            meta = self.local.session_dir(session_id) / "meta.json"
            if meta.exists():
                with contextlib.suppress(OSError, ValueError):
                    await self.remote.append(self.key(session_id, META), [{"type": "meta", **json.loads(meta.read_bytes())}])
        return out

    # -- pull --------------------------------------------------------------------------
    async def pull(self, session_id: str, *, blobs: bool = True, _depth: int = 0) -> SyncResult | None:
        """Bring ``session_id`` from the shared store into the local one; None if the shared store lacks it.

        A local copy that is a prefix of the shared one is extended; one that has
        lines the shared store lacks is left alone (push it first). A fork's
        parents come too, when this host lacks them: the fork points into them.
        """
        remote_lines = await self.remote.load(self.key(session_id))
        if not remote_lines:
            return None
        ref = forks.fork_ref(remote_lines[0]) if isinstance(remote_lines[0], dict) else None
        if ref is not None and _depth < forks.MAX_DEPTH and forks.conversation_length(self.local, ref["session_id"]) < ref["lines"]:
            # The parent it points into is missing here, or an older copy of it.
            await self.pull(ref["session_id"], blobs=blobs, _depth=_depth + 1)
        remote_records = (await self.remote.load(self.key(session_id, RECORDS)) or []) if self.has_blobs else []
        out = SyncResult()
        local_t = _lines(self.local.transcript_path(session_id))
        local_c = _lines(self.local.checkpoints_path(session_id))
        if len(local_t) > len(remote_lines) or (self.has_blobs and len(local_c) > len(remote_records)):
            return out  # this host has more: it is the one to push
        # Backups first, so a record is never here without what it needs.
        records = [_without_uuid(r, session_id) for r in remote_records]
        if blobs:
            out.blobs += await self._fetch_all(_digests(records))
            # A notebook skeleton names its cells' backups inside it.
            cells: set[str] = set()
            for skeleton in _skeletons(records):
                if self.local.blobs.has(skeleton):
                    with contextlib.suppress(AgentMagicError, ValueError, KeyError, TypeError):
                        cells.update(json.loads(self.local.blobs.get(skeleton))["cells"])
            out.blobs += await self._fetch_all(cells)
        d_ = self.local.session_dir(session_id)
        d_.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.has_blobs and len(remote_records) > len(local_c):
            atomic_write_bytes(self.local.checkpoints_path(session_id), b"".join(dumps_line(r) for r in records))
            out.records = len(remote_records) - len(local_c)
        if len(remote_lines) > len(local_t):
            body = b"".join(dumps_line(_without_uuid(e, session_id)) for e in remote_lines)
            atomic_write_bytes(self.local.transcript_path(session_id), body)
            out.lines = len(remote_lines) - len(local_t)
        metas = await self.remote.load(self.key(session_id, META)) or []
        if metas:
            meta = {k: v for k, v in metas[-1].items() if k not in ("type", "uuid")}
            atomic_write_bytes(d_ / "meta.json", json.dumps(meta).encode())
        state: dict[str, int] = {"transcript": len(remote_lines), "checkpoints": len(remote_records) if self.has_blobs else 0}
        state.update(await self._pull_subagents(session_id, out))
        self._save_state(session_id, state)  # offsets: counted again at the next push
        info = self.local.scan_info(session_id)
        if info is not None:
            self.local.index.upsert(info)
        return out

    async def _pull_subagents(self, session_id: str, out: SyncResult) -> dict[str, int]:
        """Bring the session's subagent transcripts the shared store has longer; their line counts there."""
        list_subkeys = getattr(self.remote, "list_subkeys", None)
        if not callable(list_subkeys):
            return {}  # a store with only the SDK's required methods cannot list them
        counts: dict[str, int] = {}
        for sub in await list_subkeys(self.key(session_id)):
            agent_id = subagents.agent_id_of_subpath(sub) if isinstance(sub, str) else None
            if agent_id is None:
                continue
            remote_lines = await self.remote.load(self.key(session_id, sub)) or []
            path = subagents.subagent_path(self.local, session_id, agent_id)
            have = len(_lines(path))
            if len(remote_lines) > have:
                body = b"".join(dumps_line(_without_uuid(e, session_id)) for e in remote_lines)
                subagents.write_subagent_transcript(self.local, session_id, agent_id, body)
                out.subagent_lines += len(remote_lines) - have
            counts[sub] = len(remote_lines)
        return counts

    async def _fetch_all(self, digests: set[str]) -> int:
        """Fetch the backups this host lacks, 16 at a time; returns how many came."""
        import anyio

        todo = sorted(d for d in digests if isinstance(d, str) and not self.local.blobs.has(d))
        got = 0
        limit = anyio.Semaphore(16)

        async def one(d: str) -> None:
            nonlocal got
            async with limit:
                fetched = await self._fetch(d)  # (``got += await ...`` would read ``got`` before waiting)
            got += fetched

        async with anyio.create_task_group() as tg:
            for d in todo:
                tg.start_soon(one, d)
        return got

    async def _fetch(self, digest: str) -> int:
        if not isinstance(digest, str) or self.local.blobs.has(digest):
            return 0
        packed = await self.remote.get_blob(digest)
        if packed is None:
            return 0  # a rewind that needs it will say which backup is missing
        _check_blob(packed, digest)
        self.local.blobs.put_compressed(digest, packed)
        return 1

    async def remote_session_ids(self) -> list[str]:
        return [e["session_id"] for e in await self.remote.list_sessions(self.project_key)]

    async def remote_infos(self) -> list[SessionInfo]:
        """Every shared session's listing row, from the store's summaries (no transcript is read)."""
        summaries = await self.remote.list_session_summaries(self.project_key)
        names = display_names(summaries)
        return [info for s in summaries if (info := summary_info(s, names)) is not None]


def _lines(path: Any) -> list[bytes]:
    """The complete lines of a JSONL file (a torn last line, still being written, is left for later)."""
    raw = read_raw_lines(path)
    if raw and not raw[-1].endswith(b"\n"):
        raw = raw[:-1]
    return raw


def _tail(path: Any, n: int, at: int) -> tuple[list[bytes], int]:
    """The complete lines after the first ``n`` of a JSONL file, and the byte offset after them.

    ``at`` is where line ``n + 1`` begins, from the last push (-1 when unknown): then only
    the appended bytes are read. A file shorter than that, or ``at`` not just after a
    newline (the file was replaced, e.g. by a pull), is read whole and counted again.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return [], 0
    with f:
        size = f.seek(0, os.SEEK_END)
        ok = 0 <= at <= size
        if ok and at > 0:
            f.seek(at - 1)
            ok = f.read(1) == b"\n"
        if ok:
            f.seek(at)
            rest = f.read().splitlines(keepends=True)
        else:
            f.seek(0)
            lines = f.read().splitlines(keepends=True)
            at = sum(len(x) for x in lines[:n])
            rest = lines[n:]
    if rest and not rest[-1].endswith(b"\n"):
        rest = rest[:-1]  # a torn last line, still being written: the next push sends it
    return rest, at + sum(len(x) for x in rest)


def _parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    import warnings

    from .jsonl import TranscriptWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TranscriptWarning)
        return parse_lines(lines, None)


def _with_uuid(entry: dict[str, Any], session_id: str, kind: str, index: int) -> dict[str, Any]:
    if isinstance(entry.get("uuid"), str) and entry["uuid"]:
        return entry
    return {**entry, "uuid": f"{_SYNTHETIC}{session_id}:{kind}{index}"}


def _without_uuid(entry: dict[str, Any], session_id: str) -> dict[str, Any]:
    uid = entry.get("uuid")
    if isinstance(uid, str) and uid.startswith(f"{_SYNTHETIC}{session_id}:"):
        return {k: v for k, v in entry.items() if k != "uuid"}
    return entry


def _walk(value: Any, visit: Any) -> None:
    """Call ``visit`` on every dict and string inside ``value`` (records nest steps in lists)."""
    visit(value)
    if isinstance(value, dict):
        for x in value.values():
            _walk(x, visit)
    elif isinstance(value, list):
        for x in value:
            _walk(x, visit)


def _digests(records: list[dict[str, Any]]) -> set[str]:
    """Every 64-hex value a record names (backups; skeletons name their cells' blobs inside)."""
    out: set[str] = set()

    def visit(v: Any) -> None:
        if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
            out.add(v)

    _walk(records, visit)
    return out


def _skeletons(records: list[dict[str, Any]]) -> set[str]:
    """Backups that are notebook skeletons (``base_kind == "cells"``), anywhere in the records."""
    out: set[str] = set()

    def visit(v: Any) -> None:
        if isinstance(v, dict) and v.get("base_kind") == "cells" and isinstance(v.get("base"), str):
            out.add(v["base"])

    _walk(records, visit)
    return out


def _check_blob(packed: bytes, digest: str) -> None:
    import hashlib

    try:
        data = zlib.decompress(packed)
    except zlib.error:
        raise AgentMagicError(f"The shared store's backup {digest[:12]} is corrupt.") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise AgentMagicError(f"The shared store's backup {digest[:12]} does not match its hash.")


def _in_thread(setting: str, local: SessionStore, work: Any) -> Any:
    """Run ``await work(sync)`` in a thread of its own (a notebook's event loop may run in this one)."""
    import threading

    result: list[Any] = []
    errors: list[BaseException] = []

    async def go() -> None:
        sync = shared_store_sync(setting, local)
        assert sync is not None
        try:
            result.append(await work(sync))
        finally:
            await sync.remote.aclose()

    def run() -> None:
        import anyio

        try:
            anyio.run(go)
        except BaseException as e:  # reported by the caller's thread
            errors.append(e)

    t = threading.Thread(target=run, name="agent-magic-sync", daemon=True)
    t.start()
    t.join()
    if errors:
        from .base import StoreError

        e = errors[0]
        if isinstance(e, StoreError):
            raise StoreError(without_url_secrets(str(e), setting)) from None
        raise StoreError(
            f"The shared store {redact_url(setting)} could not be used "
            f"({type(e).__name__}: {without_url_secrets(str(e), setting)}). Check the store setting."
        ) from None
    return result[0] if result else None


def pull_blocking(local: SessionStore, id_or_prefix: str | None = None, *, blobs: bool = True, url: str | None = None) -> list[str]:
    """Pull one session (an id or unique prefix) or, with None, every session the local store lacks.

    For the synchronous session helpers. Uses ``$AGENT_MAGIC_STORE`` unless ``url``
    is given; returns the ids pulled (none without a shared store).
    """
    setting = url or os.environ.get("AGENT_MAGIC_STORE")
    if not setting:
        return []

    async def work(sync: SessionSync) -> list[str]:
        if id_or_prefix is not None and is_full_id(id_or_prefix):
            wanted = [id_or_prefix]  # no listing needed
        else:
            ids = await sync.remote_session_ids()
            if id_or_prefix is None:
                here = set(local.session_dirs())
                wanted = [i for i in ids if i not in here]
            else:
                wanted = [i for i in ids if i == id_or_prefix] or [
                    i for i in ids if len(id_or_prefix) >= 4 and i.startswith(id_or_prefix)
                ]
                if len(wanted) > 1:
                    wanted = []  # ambiguous: the local lookup says so
        out = []
        for sid in wanted:
            if await sync.pull(sid, blobs=blobs) is not None:
                out.append(sid)
        return out

    return list(_in_thread(setting, local, work) or [])


def list_blocking(local: SessionStore, *, url: str | None = None) -> list[SessionInfo] | None:
    """The shared store's listing rows from its summaries; None without a shared store."""
    setting = url or os.environ.get("AGENT_MAGIC_STORE")
    if not setting:
        return None

    async def work(sync: SessionSync) -> list[SessionInfo]:
        return await sync.remote_infos()

    result: list[SessionInfo] | None = _in_thread(setting, local, work)
    return result


def push_blocking(local: SessionStore, session_id: str, *, url: str | None = None) -> SyncResult | None:
    """Push one session now (a fork made by the session helpers); None without a shared store."""
    setting = url or os.environ.get("AGENT_MAGIC_STORE")
    if not setting:
        return None

    async def work(sync: SessionSync) -> SyncResult:
        return await sync.push(session_id)

    result: SyncResult | None = _in_thread(setting, local, work)
    return result
