"""The local session store: one append-only JSONL transcript per session, a SQLite index.

Layout under the store's home (``$AGENT_MAGIC_HOME``)::

    sessions/<id>/transcript.jsonl   header line, then user/assistant/result lines
    sessions/<id>/checkpoints.jsonl  checkpoint records (see agent_magic.checkpoints)
    sessions/<id>/meta.json          mutable metadata: title, tag
    sessions/<id>/.lock              held by the process running a turn
    blobs/ab/cdef...                 content-addressed, compressed backups
    index.sqlite3                    a cache for fast listing; rebuilt from the above

Transcript lines carry ``type``, ``uuid``, ``parent_uuid``, ``session_id``,
``timestamp`` and, for messages, ``message`` (Messages API JSON). Each line
holds only its own message, so a transcript grows linearly with the
conversation. The transcripts are the truth; the index can always be rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import (
    AmbiguousIdError,
    ConfigurationError,
    SessionExistsError,
    SessionLockedError,
    SessionNotFoundError,
)
from .._options import validate_session_id
from .._redact import redact
from . import forks
from .blobs import BlobStore
from .home import default_home, iso_now, iso_to_ms, make_private_dir, new_uuid, now_ms
from .index import SessionIndex
from .jsonl import (
    JsonlFile,
    TranscriptWarning,
    atomic_write_bytes,
    parse_lines,
    read_raw_lines,
    read_raw_lines_from_last,
)
from .summary import FIRST_PROMPT_CHARS
from .transcript import (
    _HEADER_STRINGS,
    BOUNDARY_MARKER,
    SessionInfo,
    SessionMessage,
    _opt_str,
    _summary,
    fork_label,
    is_boundary,
    is_boundary_line,
    is_prompt_entry,
    live_entries,
    prompt_text,
    session_messages,
)

TRANSCRIPT_FORMAT = 1
MIN_PREFIX = 4


FORK_REF = forks.REF_KEY


# ---------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------


class SessionStore:
    """Sessions on disk under ``home`` (``$AGENT_MAGIC_HOME`` by default).

    Parameters
    ----------
    home
        The store directory; created private to the user.
    """

    _instances: dict[Path, SessionStore] = {}
    _instances_lock = threading.Lock()

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home is not None else default_home().resolve()
        make_private_dir(self.home)
        self.sessions_root = make_private_dir(self.home / "sessions")
        self.blobs = BlobStore(self.home / "blobs")
        self.index = SessionIndex(self.home / "index.sqlite3", self)

    @classmethod
    def at(cls, home: str | os.PathLike[str] | None = None) -> SessionStore:
        """A shared store object per home directory (cheap to call repeatedly)."""
        path = Path(home).expanduser().resolve() if home is not None else default_home().resolve()
        with cls._instances_lock:
            store = cls._instances.get(path)
            if store is None:
                store = cls._instances[path] = cls(path)
            return store

    @classmethod
    def forget_instances(cls) -> None:
        with cls._instances_lock:
            for store in cls._instances.values():
                store.index.close()
            cls._instances.clear()

    # -- paths ----------------------------------------------------------
    def session_dir(self, session_id: str) -> Path:
        validate_session_id(session_id)
        return self.sessions_root / session_id

    def transcript_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "transcript.jsonl"

    def checkpoints_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "checkpoints.jsonl"

    def exists(self, session_id: str) -> bool:
        try:
            return self.transcript_path(session_id).exists()
        except Exception:
            return False

    def session_dirs(self) -> list[str]:
        try:
            return [e.name for e in os.scandir(self.sessions_root) if e.is_dir() and not e.name.startswith(".")]
        except FileNotFoundError:
            return []

    # -- ids --------------------------------------------------------------
    def resolve(self, id_or_prefix: str, *, scope: str | None = None) -> str:
        """Full session id for an id or a unique prefix (4+ characters).

        Raises
        ------
        SessionNotFoundError, AmbiguousIdError
        """
        if not isinstance(id_or_prefix, str) or not id_or_prefix:
            raise SessionNotFoundError(str(id_or_prefix))
        if self.exists(id_or_prefix):
            return id_or_prefix
        if len(id_or_prefix) < MIN_PREFIX:
            raise SessionNotFoundError(
                id_or_prefix,
                f"No session {id_or_prefix!r}; give at least {MIN_PREFIX} characters of its id.",
            )
        matches = self.index.ids_with_prefix(id_or_prefix)
        if scope is not None and len(matches) > 1:
            scoped = [m for m in matches if (i := self.index.get(m)) is not None and i.scope == scope]
            if len(scoped) == 1:
                return scoped[0]
        if not matches:
            raise SessionNotFoundError(id_or_prefix)
        if len(matches) > 1:
            raise AmbiguousIdError(id_or_prefix, matches, "session")
        return matches[0]

    # -- create -----------------------------------------------------------
    def create(
        self,
        *,
        cwd: str,
        scope: str,
        model: str | None,
        session_id: str | None = None,
        parent_session_id: str | None = None,
        forked_at: str | None = None,
        title: str | None = None,
        checkpoint_settings: dict[str, Any] | None = None,
        fork_of: dict[str, Any] | None = None,
        info: SessionInfo | None = None,
    ) -> str:
        """Create an empty session and return its id.

        ``checkpoint_settings`` (``ignore``, ``max_file_bytes``) is kept in the header so
        that rewinds from the CLI or the sidebar scan the workspace as the session did.
        ``fork_of`` points a fork at what it inherits (:mod:`agent_magic.store.forks`);
        ``info`` is then its index row, so that no inherited line is read.
        """
        sid = session_id or new_uuid()
        d = self.session_dir(sid)
        make_private_dir(self.sessions_root)
        exists_error = SessionExistsError(
            f"A session with id {sid!r} already exists. Resume it with resume={sid!r}, or choose another id."
        )
        if self.exists(sid):
            raise exists_error
        created = now_ms()
        header = {
            "type": "session",
            "format": TRANSCRIPT_FORMAT,
            "session_id": sid,
            "cwd": cwd,
            "scope": scope,
            "model": model,
            "timestamp": iso_now(),
            "parent_session_id": parent_session_id,
            "forked_at": forked_at,
        }
        if checkpoint_settings:
            header["checkpoint"] = checkpoint_settings
        if fork_of is not None:
            header[FORK_REF] = fork_of
        # The folder appears with its header in one rename: a crash never leaves a
        # session folder without a transcript (which would block its id forever).
        staging = self.sessions_root / f".new-{sid}-{new_uuid()[:8]}"
        staging.mkdir(mode=0o700)
        try:
            jf = JsonlFile(staging / "transcript.jsonl")
            jf.append(header)
            jf.close()
            if title:
                title = redact(title)
                atomic_write_bytes(staging / "meta.json", json.dumps({"title": title}).encode())
            try:
                # Replaces an empty folder (left by an older version's crash); fails on a real session.
                os.rename(staging, d)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise exists_error from None
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if info is not None:
            info.session_id, info.file_size = sid, self.transcript_size(sid)
            self.index.upsert(info)
            return sid
        self.index.upsert(
            SessionInfo(
                session_id=sid, summary=title or "(no prompt yet)", created_at=created, last_modified=created,
                num_turns=0, cwd=cwd, scope=scope, title=title, parent_session_id=parent_session_id,
                forked_at=forked_at, model=model, total_cost_usd=0.0, file_size=self.transcript_size(sid),
            )
        )
        return sid

    # -- reading ------------------------------------------------------------
    def read_entries(self, session_id: str) -> list[dict[str, Any]]:
        """The header and every line of the conversation (a fork's inherited lines first)."""
        path = self.transcript_path(session_id)
        return parse_lines(forks.conversation_lines(self, session_id), path)

    def read_records(self, session_id: str) -> list[dict[str, Any]]:
        """Every checkpoint record of the session (a fork's inherited ones first)."""
        return forks.records(self, session_id)

    def read_live_entries(self, session_id: str) -> list[dict[str, Any]]:
        """The header line and the entries from the last compaction boundary on.

        What a resumed session needs: the model sees nothing before the boundary,
        and the boundary line counts the turns before it. Reading stops at the
        boundary, so resuming a long session costs what resuming a short one does.
        """
        path = self.transcript_path(session_id)
        if not path.exists():
            raise SessionNotFoundError(session_id)
        first, lines = read_raw_lines_from_last(path, BOUNDARY_MARKER, is_boundary_line)
        if (lines and is_boundary_line(lines[0])) or forks.fork_ref(forks.header_of(first)) is None:
            return parse_lines([first, *lines] if first else lines, path)
        # A fork with no compaction of its own: the live part may begin in its parent.
        entries = self.read_entries(session_id)
        return entries[:1] + live_entries(entries[1:])

    def header(self, session_id: str) -> dict[str, Any]:
        path = self.transcript_path(session_id)
        try:
            with open(path, "rb") as f:
                first = f.readline()
        except FileNotFoundError:
            raise SessionNotFoundError(session_id) from None
        try:
            obj = json.loads(first)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or obj.get("type") != "session":
            # A transcript without a readable header: fall back to what the entries say.
            return {"type": "session", "session_id": session_id, "cwd": str(Path.cwd()), "scope": str(Path.cwd())}
        # A damaged header may hold anything: keep only string fields as strings.
        return {k: v for k, v in obj.items() if k not in _HEADER_STRINGS or isinstance(v, str)}

    def info(self, session_id: str) -> SessionInfo:
        info = self.index.get(session_id)
        if info is None:
            if not self.exists(session_id):
                raise SessionNotFoundError(session_id)
            scanned = self.scan_info(session_id)
            if scanned is None:
                raise SessionNotFoundError(session_id)
            self.index.upsert(scanned)
            info = scanned
        info.context_tokens, info.context_window = self._context_of(session_id, info.model)
        return info

    def _context_of(self, session_id: str, model: str | None) -> tuple[int | None, int | None]:
        """What the session's conversation holds (tokens) and the model's window, from the transcript's end."""
        from .._context import context_window_for

        path = self.transcript_path(session_id)
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - (256 << 10)))
                lines = f.read().splitlines()
        except OSError:
            return None, None
        for line in reversed(lines[1:] if size > (256 << 10) else lines):
            if b'"context_tokens"' not in line and b'"compact_boundary"' not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if e.get("type") == "result" and isinstance(e.get("context_tokens"), int):
                w = e.get("context_window")
                return e["context_tokens"], w if isinstance(w, int) else None
            if is_boundary(e) and isinstance(e.get("post_tokens"), int):
                tokens = e["post_tokens"]  # compacted by hand after its last turn
                break
        else:
            tokens = None
            ref = forks.fork_ref(forks.header_of(lines[0])) if lines and size <= (256 << 10) else None
            if ref is not None and "last_prompt" not in ref and self.exists(ref["session_id"]):
                return self._context_of(ref["session_id"], model)  # a fork with no turn of its own yet
        if model is None:
            return tokens, None
        try:
            return tokens, context_window_for(model)
        except ConfigurationError:
            return tokens, None

    def _read_meta(self, session_id: str) -> dict[str, Any]:
        try:
            with open(self.session_dir(session_id) / "meta.json", "rb") as f:
                obj = json.load(f)
            return obj if isinstance(obj, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def _write_meta(self, session_id: str, changes: dict[str, Any]) -> None:
        meta = self._read_meta(session_id)
        meta.update({k: redact(v) if isinstance(v, str) else v for k, v in changes.items()})
        atomic_write_bytes(self.session_dir(session_id) / "meta.json", json.dumps(meta).encode())

    def scan_info(self, session_id: str) -> SessionInfo | None:
        """Compute a session's info from its files (for index rebuilds)."""
        path = self.transcript_path(session_id)
        if not path.exists():
            return None
        import warnings


        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TranscriptWarning)
            try:
                entries = parse_lines(forks.conversation_lines(self, session_id), path)
            except SessionNotFoundError:  # a fork whose parent is not here (yet): list what it has
                entries = parse_lines(read_raw_lines(path), path)
        header = next((e for e in entries if e.get("type") == "session"), {})
        meta = self._read_meta(session_id)
        try:
            st = path.stat()
        except FileNotFoundError:  # deleted meanwhile
            return None
        first_prompt = None
        turns = 0
        cost = 0.0
        unknown = False
        last_ts = None
        forked_at = _opt_str(header.get("forked_at"))
        copied: int | None = 0 if forked_at is None else None  # prompts the fork copied from its parent
        for e in entries:
            if is_prompt_entry(e):
                turns += 1
                if first_prompt is None:
                    first_prompt = prompt_text(e.get("message"))
            if copied is None and forked_at is not None and e.get("uuid") == forked_at:
                copied = turns
            elif e.get("type") == "result":
                c = e.get("total_cost_usd")
                if e.get("cost_unknown"):
                    unknown = True
                elif isinstance(c, (int, float)):
                    cost += float(c)
            if isinstance(e.get("timestamp"), str):
                last_ts = e["timestamp"]
        created = iso_to_ms(header.get("timestamp")) or int(st.st_mtime * 1000)
        title = _opt_str(meta.get("title"))
        parent = _opt_str(header.get("parent_session_id"))
        label = None
        if parent is not None and (copied or not first_prompt):
            # (A fork that copied no turns and has a prompt of its own is named by that prompt.)
            label = fork_label(self._parent_name(parent, first_prompt if copied else None), copied or 0)
        return SessionInfo(
            session_id=session_id,
            summary=_summary(title, label, first_prompt),
            label=label,
            created_at=created,
            last_modified=iso_to_ms(last_ts) or int(st.st_mtime * 1000),
            num_turns=turns,
            cwd=_opt_str(header.get("cwd")) or "",
            scope=_opt_str(header.get("scope")) or _opt_str(header.get("cwd")) or "",
            title=title,
            first_prompt=first_prompt,
            parent_session_id=_opt_str(header.get("parent_session_id")),
            forked_at=_opt_str(header.get("forked_at")),
            tag=_opt_str(meta.get("tag")),
            model=_opt_str(header.get("model")),
            total_cost_usd=None if unknown else cost,
            cost_known=not unknown,
            file_size=st.st_size,
        )

    def _parent_name(self, parent: str, first_prompt: str | None) -> str:
        """A parent session's title, else its first prompt (a fork that copied turns has it too)."""
        title = _opt_str(self._read_meta(parent).get("title"))
        if title or first_prompt:
            return title or first_prompt or ""
        import warnings


        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TranscriptWarning)
                entries = self.read_entries(parent)
        except SessionNotFoundError:
            return ""
        first = next((e for e in entries if is_prompt_entry(e)), None)
        return prompt_text(first.get("message")) if first is not None else ""

    def messages(self, session_id: str, limit: int | None = None, offset: int = 0) -> list[SessionMessage]:
        """The whole history, compactions included: each is a ``system`` message holding its summary."""
        return session_messages(self.read_entries(session_id), session_id, limit=limit, offset=offset)

    # -- scope pointers ------------------------------------------------------
    def current(self, scope: str, *, fresh_means_none: bool = True) -> str | None:
        """The session a notebook/project continues by default: the explicit pointer, else the latest.

        After :meth:`clear_current` (``%agent new``) the answer is None until a new
        session is made current, unless ``fresh_means_none=False`` (the SDK's
        ``continue_conversation``: always the most recent).
        """
        sid = self.index.current(scope)
        if sid == "" and fresh_means_none:
            return None
        if sid and self.exists(sid):
            return sid
        return self.index.latest(scope)

    def set_current(self, scope: str, session_id: str) -> None:
        self.index.set_current(scope, session_id)

    def clear_current(self, scope: str) -> None:
        self.index.clear_current(scope)

    # -- mutations -------------------------------------------------------------
    def rename(self, session_id: str, title: str) -> None:
        title = redact(" ".join(str(title).split()))
        if not title:
            from .._errors import ConfigurationError

            raise ConfigurationError("A session title must not be empty.")
        self.info(session_id)
        self._write_meta(session_id, {"title": title})
        self.index.update(session_id, title=title)

    def tag(self, session_id: str, tag: str | None) -> None:
        tag = redact(tag) if isinstance(tag, str) else tag
        self.info(session_id)
        self._write_meta(session_id, {"tag": tag})
        self.index.update(session_id, tag=tag)

    def delete(self, session_id: str) -> None:
        """Delete a session; the forks that inherit from it are made whole first."""
        if not self.exists(session_id):
            raise SessionNotFoundError(session_id)
        for child in self.index.children(session_id):
            if self.exists(child) and forks.reads_from(self, child) == session_id:
                forks.materialize(self, child)
        d = self.session_dir(session_id)
        # Rename first so a half-deleted folder is never mistaken for a session.
        trash = self.sessions_root / f".deleted-{session_id}-{new_uuid()[:8]}"
        os.replace(d, trash)
        self.index.delete(session_id)
        shutil.rmtree(trash, ignore_errors=True)

    def fork(
        self,
        session_id: str,
        *,
        up_to_message_id: str | None = None,
        title: str | None = None,
        new_session_id: str | None = None,
        cwd: str | None = None,
        scope: str | None = None,
        empty: bool = False,
    ) -> str:
        """A new session that continues ``session_id``'s history (up to and including ``up_to_message_id``).

        ``empty=True`` inherits no messages at all (a fork before the first prompt).

        The fork is made by reference (:mod:`agent_magic.store.forks`): its
        transcript is one header line pointing into the parent's, whatever the
        parent's length, and the parent is only read. Message uuids are the
        parent's, so checkpoint ids taken before the fork are valid in the fork
        too, and the checkpoint records of the inherited turns are inherited.
        """
        header = self.header(session_id)
        ref: dict[str, Any] | None = None
        info: SessionInfo | None = None
        forked_at: str | None = None
        if empty:
            pass
        elif up_to_message_id is not None:
            found = forks.ref_up_to(self, session_id, up_to_message_id)
            if found is None:
                from .._errors import CheckpointNotFoundError

                raise CheckpointNotFoundError(
                    f"No message {up_to_message_id!r} in session {session_id}. List them with `agent-magic history {session_id[:8]}`."
                )
            ref, kept = found
            forked_at = up_to_message_id
            prompts = [e for e in kept if is_prompt_entry(e)]
            costs = [e.get("total_cost_usd") for e in kept if e.get("type") == "result"]
            ref["turns"] = len(prompts)
            ref["cost"] = sum(float(c) for c in costs if isinstance(c, (int, float)))
            if prompts:
                ref["first_prompt"] = prompt_text(prompts[0].get("message"))[:FIRST_PROMPT_CHARS]
        else:
            ref, forked_at = forks.whole_ref(self, session_id, header)
            if ref["lines"] == 0:
                ref = None  # nothing to inherit
            else:
                info = self._whole_fork_info(session_id, title, forked_at)
                # For listings from a shared store's summaries, which read no inherited line.
                ref["turns"] = info.num_turns
                ref["cost"] = info.total_cost_usd or 0.0
                if info.first_prompt:
                    ref["first_prompt"] = info.first_prompt[:FIRST_PROMPT_CHARS]
        new_id = self.create(
            cwd=cwd or _opt_str(header.get("cwd")) or "",
            scope=scope or _opt_str(header.get("scope")) or _opt_str(header.get("cwd")) or "",
            model=_opt_str(header.get("model")),
            session_id=new_session_id,
            parent_session_id=session_id,
            forked_at=forked_at,
            title=title,
            checkpoint_settings=header.get("checkpoint") if isinstance(header.get("checkpoint"), dict) else None,
            fork_of=ref,
            info=info,
        )
        if info is None:  # (a fork at a message, or of nothing: named "fork before turn 1 of …")
            scanned = self.scan_info(new_id)
            if scanned is not None:
                self.index.upsert(scanned)
        return new_id

    def _whole_fork_info(self, parent: str, title: str | None, forked_at: str | None) -> SessionInfo:
        """The index row of a fork of all of ``parent``, from the parent's row (no transcript is read)."""
        p = self.info(parent)
        label = fork_label(self._parent_name(parent, p.first_prompt), p.num_turns) if (p.num_turns or not p.first_prompt) else None
        now = now_ms()
        return SessionInfo(
            session_id="", summary=_summary(title, label, p.first_prompt), label=label, created_at=now,
            last_modified=p.last_modified, num_turns=p.num_turns, cwd=p.cwd, scope=p.scope, title=title,
            first_prompt=p.first_prompt, parent_session_id=parent, forked_at=forked_at, tag=None, model=p.model,
            total_cost_usd=p.total_cost_usd, cost_known=p.cost_known, file_size=0,
        )

    # -- locking ------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, session_id: str, timeout: float) -> Iterator[None]:
        """Hold the session's lock (one process runs a turn at a time).

        Raises
        ------
        SessionLockedError
            When another process holds it for longer than ``timeout`` seconds.
        """
        import filelock

        path = self.session_dir(session_id) / ".lock"
        lock = filelock.FileLock(str(path), timeout=timeout, mode=0o600)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise SessionLockedError(
                f"Session {session_id[:8]} is busy: another process is running a turn in it. "
                "Wait for it to finish, or fork it to work in parallel."
            ) from None
        try:
            yield
        finally:
            lock.release()

    def transcript_size(self, session_id: str) -> int:
        try:
            return self.transcript_path(session_id).stat().st_size
        except FileNotFoundError:
            return 0
