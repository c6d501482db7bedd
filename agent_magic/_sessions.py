"""The session store: one append-only JSONL transcript per session, a SQLite index.

Layout under the store's home (``$AGENT_MAGIC_HOME``)::

    sessions/<id>/transcript.jsonl   header line, then user/assistant/result lines
    sessions/<id>/checkpoints.jsonl  checkpoint records (see _checkpoints.py)
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
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._context import clear_results
from ._errors import (
    AmbiguousIdError,
    ConfigurationError,
    SessionExistsError,
    SessionLockedError,
    SessionNotFoundError,
)
from ._options import validate_session_id
from ._store import (
    BlobStore,
    JsonlFile,
    atomic_write_bytes,
    default_home,
    iso_now,
    iso_to_ms,
    make_private_dir,
    new_uuid,
    no_gc,
    now_ms,
    parse_lines,
    read_raw_lines,
    read_raw_lines_from_last,
    redact,
)
from .store import forks

TRANSCRIPT_FORMAT = 1
INDEX_SCHEMA = 3  # 3: the label column (forks say what they forked and where)
MIN_PREFIX = 4

_INTERRUPTED_TOOL_TEXT = "The tool call did not finish (the turn was interrupted or the process stopped)."


@dataclass
class SessionInfo:
    """Metadata of one stored session (what :func:`list_sessions` returns)."""

    session_id: str
    summary: str
    created_at: int
    last_modified: int
    num_turns: int
    cwd: str
    scope: str
    title: str | None = None
    first_prompt: str | None = None
    parent_session_id: str | None = None
    forked_at: str | None = None
    tag: str | None = None
    model: str | None = None
    total_cost_usd: float | None = None
    cost_known: bool = True
    file_size: int = 0
    label: str | None = None
    """A fork's name until it is given a title: "fork at turn 2 of “<title>”"."""
    context_tokens: int | None = None
    """Tokens the conversation carries into its next request (after its last turn); set by :func:`get_session_info`."""
    context_window: int | None = None
    """The model's context window in tokens; set by :func:`get_session_info`."""

    @property
    def custom_title(self) -> str | None:
        """The Agent SDK's name for :attr:`title`."""
        return self.title


@dataclass
class SessionMessage:
    """A user or assistant message read back from a transcript."""

    type: str
    uuid: str
    session_id: str
    message: dict[str, Any]
    timestamp: str | None = None
    parent_uuid: str | None = None
    is_prompt: bool = False

    @property
    def is_compact_boundary(self) -> bool:
        """True for the ``system`` message that marks a compaction (``message["content"]`` is its summary)."""
        return self.type == "system" and self.message.get("subtype") == "compact_boundary"


_HEADER_STRINGS = frozenset({"cwd", "scope", "model", "parent_session_id", "forked_at", "session_id", "timestamp"})


FORK_REF = forks.REF_KEY
_header_of = forks._header_of


def _opt_str(value: Any) -> str | None:
    """A string field of a stored line, or None when it is missing or damaged (not a string)."""
    return value if isinstance(value, str) else None


def _preview(text: str, n: int = 200) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _summary(title: str | None, label: str | None, first_prompt: str | None) -> str:
    """What lists show for a session: its title, else a fork's label, else its first prompt.

    Forks copy their parent's first prompt, so without the label a notebook's
    sessions and their forks all read the same.
    """
    return title or label or (first_prompt and _preview(first_prompt, 120)) or "(no prompt yet)"


def fork_label(parent_name: str, turns: int) -> str:
    """ "fork at turn 2 of “Load sales.csv, fix…”" (``turns``: the prompts the fork copied).

    Where comes first: lists cut long names at the end, and the parent is usually shown too.
    """
    one = " ".join(parent_name.split())
    if len(one) > 40:  # cut at a word, so the name reads as words
        cut = one[:39]
        one = (cut[: cut.rindex(" ")] if " " in cut else cut).rstrip(" ,;:") + "…"
    name = one or "another session"
    return f"fork at turn {turns} of “{name}”" if turns else f"fork before turn 1 of “{name}”"


def prompt_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def is_prompt_entry(entry: dict[str, Any]) -> bool:
    """True for a transcript line holding a person's prompt (a turn's start)."""
    if entry.get("type") != "user" or entry.get("carried"):
        return False
    if "is_prompt" in entry:
        return bool(entry["is_prompt"])
    message = entry.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return True
    return isinstance(content, list) and not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


# ---------------------------------------------------------------------------
# Building the API conversation from transcript entries
# ---------------------------------------------------------------------------


#: Bytes every compaction boundary line holds (the tail reader looks for them).
BOUNDARY_MARKER = b'"compact_boundary"'


def is_boundary(entry: dict[str, Any]) -> bool:
    """True for a transcript line that marks a compaction (its summary inside)."""
    return entry.get("type") == "system" and entry.get("subtype") == "compact_boundary"


def is_boundary_line(line: bytes) -> bool:
    if BOUNDARY_MARKER not in line:
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and is_boundary(obj)


def last_boundary(entries: list[dict[str, Any]]) -> int | None:
    """The index of the last compaction boundary in ``entries``, if any."""
    for i in range(len(entries) - 1, -1, -1):
        if is_boundary(entries[i]):
            return i
    return None


def live_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries the model still sees: from the last compaction boundary on (all if none)."""
    b = last_boundary(entries)
    return entries if b is None else entries[b:]


SUMMARY_INTRO = (
    "This session continues an earlier conversation that was compacted to fit the model's context. "
    "Summary of the earlier part:"
)
SUMMARY_OUTRO = (
    "Files, notebook cells and kernel variables are as the earlier part left them; read them again "
    "when you need their current content."
)
SUMMARY_ACK = "Understood. I have the summary of the earlier conversation and will continue from it."


def summary_messages(summary: str) -> list[dict[str, Any]]:
    """What a client-side compaction's summary becomes in the conversation sent to the model."""
    text = f"{SUMMARY_INTRO}\n\n{summary.strip()}\n\n{SUMMARY_OUTRO}"
    return [
        {"role": "user", "content": [{"type": "text", "text": text}]},
        {"role": "assistant", "content": [{"type": "text", "text": SUMMARY_ACK}]},
    ]


def build_api_messages(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Messages API ``messages`` list for a transcript.

    From the last compaction boundary on: a client-side compaction's summary
    comes first (then the lines carried over after it), a server-side one's
    ``compaction`` block starts the conversation as the API expects. Tool results
    a ``context_edit`` line cleared are sent as one-line stubs.

    - prompts of turns that failed before the model said anything are dropped
      (the person will send them again);
    - consecutive messages of the same role are merged;
    - a tool call without a result (interrupted, crashed) gets an error result,
      so the conversation is always valid to send;
    - what the API refuses but a damaged or older transcript may hold is left out:
      a line written twice (same uuid), a repeated tool call id, blank text blocks.
    """
    head: list[dict[str, Any]] = []
    b = last_boundary(entries)
    if b is not None:
        boundary = entries[b]
        entries = entries[b + 1 :]
        summary = boundary.get("summary")
        if boundary.get("method") != "server" and isinstance(summary, str) and summary.strip():
            head = summary_messages(summary)
    cleared: set[str] = set()
    for e in entries:
        if e.get("type") == "context_edit" and isinstance(e.get("cleared"), list):
            cleared.update(str(t) for t in e["cleared"])
    failed_prompts = {
        e["checkpoint"]
        for e in entries
        if e.get("type") == "result" and e.get("no_response") and isinstance(e.get("checkpoint"), str)
    }
    msgs: list[dict[str, Any]] = list(head)
    seen: set[str] = set()
    tool_ids: set[str] = set()
    for e in entries:
        t = e.get("type")
        if t not in ("user", "assistant"):
            continue
        if e.get("synthetic"):
            continue
        uid = e.get("uuid")
        if isinstance(uid, str):
            if uid in seen:
                continue  # the same line twice (a torn append written again)
            seen.add(uid)
        if t == "user" and isinstance(e.get("uuid"), str) and e["uuid"] in failed_prompts:
            continue
        m = e.get("message")
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if t == "assistant":
            if not isinstance(content, list) or not content:
                continue
            blocks = [b for b in content if _valid_block(b)]
            # A tool call id the API has seen already cannot be sent again.
            blocks = [b for b in blocks if b.get("type") != "tool_use" or b["id"] not in tool_ids]
            tool_ids.update(b["id"] for b in blocks if b.get("type") == "tool_use")
            if not blocks:
                continue
            msgs.append({"role": "assistant", "content": blocks})
        else:
            if isinstance(content, str):
                blocks = [{"type": "text", "text": content}]
            elif isinstance(content, list):
                blocks = [b for b in content if _valid_block(b)]
            else:
                continue
            if not blocks:
                continue
            msgs.append({"role": "user", "content": blocks})
    return clear_results(_repair_conversation(msgs), cleared)


def _valid_block(b: Any) -> bool:
    """Whether a stored content block has the shape the API needs (a damaged line may not)."""
    if not isinstance(b, dict):
        return False
    t = b.get("type")
    if t == "text":
        text = b.get("text")
        return isinstance(text, str) and bool(text.strip())  # the API refuses blank text blocks
    if t == "tool_use":
        return isinstance(b.get("id"), str) and isinstance(b.get("name"), str) and isinstance(b.get("input"), dict)
    if t == "tool_result":
        return isinstance(b.get("tool_use_id"), str) and isinstance(b.get("content", ""), (str, list))
    return t in _API_BLOCK_TYPES  # a type damaged on disk would make the API refuse the whole request


#: The content block types the Messages API accepts back in a conversation.
_API_BLOCK_TYPES = frozenset({
    "image", "document", "search_result", "thinking", "redacted_thinking", "server_tool_use",
    "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result", "compaction",
})


def _repair_conversation(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in msgs:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": list(out[-1]["content"]) + list(m["content"])}
        else:
            out.append({"role": m["role"], "content": list(m["content"])})
    # Every tool_use needs a tool_result in the next user message, and tool_results
    # must answer a tool_use of the previous assistant message.
    fixed: list[dict[str, Any]] = []
    i = 0
    while i < len(out):
        m = out[i]
        if m["role"] == "assistant":
            fixed.append(m)
            ids = [b.get("id") for b in m["content"] if b.get("type") == "tool_use"]
            nxt = out[i + 1] if i + 1 < len(out) and out[i + 1]["role"] == "user" else None
            if ids:
                have = set()
                rest: list[dict[str, Any]] = []
                results: list[dict[str, Any]] = []
                if nxt is not None:
                    for b in nxt["content"]:
                        if b.get("type") == "tool_result" and b.get("tool_use_id") in ids and b.get("tool_use_id") not in have:
                            have.add(b.get("tool_use_id"))
                            results.append(b)
                        elif b.get("type") != "tool_result":
                            rest.append(b)
                for tid in ids:
                    if tid not in have:
                        results.append(
                            {"type": "tool_result", "tool_use_id": tid, "content": _INTERRUPTED_TOOL_TEXT, "is_error": True}
                        )
                order = {tid: k for k, tid in enumerate(ids)}
                results.sort(key=lambda b: order.get(b.get("tool_use_id"), 0))
                fixed.append({"role": "user", "content": results + rest})
                i += 2 if nxt is not None else 1
                continue
            i += 1
            continue
        # user message: drop orphan tool_results (their tool_use is gone)
        prev_ids: set[Any] = set()
        if fixed and fixed[-1]["role"] == "assistant":
            prev_ids = {b.get("id") for b in fixed[-1]["content"] if b.get("type") == "tool_use"}
        content = [b for b in m["content"] if b.get("type") != "tool_result" or b.get("tool_use_id") in prev_ids]
        if content:
            if fixed and fixed[-1]["role"] == "user":
                fixed[-1] = {"role": "user", "content": fixed[-1]["content"] + content}
            else:
                fixed.append({"role": "user", "content": content})
        i += 1
    # Dropping orphan results can leave two messages of one role in a row: merge them (an
    # assistant message without tool calls only ever merges into the one after it).
    merged: list[dict[str, Any]] = []
    for m in fixed:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + m["content"]}
        else:
            merged.append(m)
    fixed = merged
    # Start with a user message, and one that answers no tool call: a damaged or lost line
    # can leave an assistant message first, or results whose tool_use is gone.
    while fixed:
        if fixed[0]["role"] != "user":
            first_block = fixed[0]["content"][0] if fixed[0]["content"] else {}
            if first_block.get("type") == "compaction":
                break  # a server-side compaction starts the conversation, as the API expects
            fixed.pop(0)
            continue
        content = [b for b in fixed[0]["content"] if b.get("type") != "tool_result"]
        if content:
            fixed[0] = {"role": "user", "content": content}
            break
        fixed.pop(0)
    return fixed


# ---------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------

_COLUMNS = (
    "session_id, scope, cwd, title, first_prompt, created_ms, modified_ms, num_turns, "
    "cost_usd, cost_unknown, parent_id, forked_at, tag, model, file_size, label"
)


class SessionIndex:
    """SQLite index of sessions; a cache rebuilt from transcripts when missing or stale."""

    def __init__(self, path: Path, store: SessionStore) -> None:
        self.path = path
        self._store = store
        self._local = threading.local()
        self._checked = False

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open_current()
        if conn is None:
            # Missing, empty, damaged or from another version: one process (re)builds it
            # while the others wait, so none reads a half-made index or deletes a new one.
            import filelock

            with filelock.FileLock(str(self.path) + ".lock", timeout=120, mode=0o600):
                conn = self._open_current() or self._migrate()
                if conn is None:
                    conn = self._recreate()
        self._local.conn = conn
        return conn

    def _open_versioned(self, want: int) -> sqlite3.Connection | None:
        """A connection to the index if it exists and its schema version is ``want`` (set last)."""
        if not self.path.exists():
            return None
        try:
            conn = self._open()
        except sqlite3.DatabaseError:
            return None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError:
            version = None
        if version != want:
            conn.close()
            return None
        return conn

    def _open_current(self) -> sqlite3.Connection | None:
        """A connection to the index if it exists and is complete."""
        return self._open_versioned(INDEX_SCHEMA)

    def _migrate(self) -> sqlite3.Connection | None:
        """Bring a version 2 index to 3 in place (keeping notebooks' current sessions); None: rebuild it."""
        conn = self._open_versioned(2)
        if conn is None:
            return None
        try:
            conn.execute("ALTER TABLE sessions ADD COLUMN label TEXT")
            forks = [r[0] for r in conn.execute("SELECT session_id FROM sessions WHERE parent_id IS NOT NULL")]
            for sid in forks:
                info = self._store.scan_info(sid)
                if info is not None and info.label:
                    conn.execute("UPDATE sessions SET label=? WHERE session_id=?", (info.label, sid))
            conn.execute(f"PRAGMA user_version={INDEX_SCHEMA}")
            return conn
        except sqlite3.DatabaseError:
            conn.close()
            return None

    def _recreate(self) -> sqlite3.Connection:
        """Build the index from the transcripts; the caller holds the creation lock."""
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(self.path) + suffix)
        conn = self._open()
        self._create(conn)
        self._local.conn = conn
        try:
            self.rebuild()
        except BaseException:
            self._local.conn = None
            conn.close()
            raise
        conn.execute(f"PRAGMA user_version={INDEX_SCHEMA}")
        return conn

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        # The index is a small cache: keep its write-ahead log small too (SQLite's default lets
        # it reach 4 MB and never shrinks it).
        conn.execute("PRAGMA wal_autocheckpoint=256")
        conn.execute("PRAGMA journal_size_limit=1048576")
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS sessions(
                session_id TEXT PRIMARY KEY, scope TEXT NOT NULL, cwd TEXT NOT NULL,
                title TEXT, first_prompt TEXT, created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
                num_turns INTEGER NOT NULL DEFAULT 0, cost_usd REAL, cost_unknown INTEGER NOT NULL DEFAULT 0,
                parent_id TEXT, forked_at TEXT, tag TEXT, model TEXT, file_size INTEGER NOT NULL DEFAULT 0,
                label TEXT);
            CREATE INDEX IF NOT EXISTS sessions_scope ON sessions(scope, modified_ms);
            CREATE INDEX IF NOT EXISTS sessions_modified ON sessions(modified_ms);
            CREATE TABLE IF NOT EXISTS current(scope TEXT PRIMARY KEY, session_id TEXT NOT NULL, updated_ms INTEGER NOT NULL);
            """
        )

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- writes --------------------------------------------------------
    def upsert(self, info: SessionInfo) -> None:
        with self._tx() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO sessions({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    info.session_id, info.scope, info.cwd, info.title, info.first_prompt, info.created_at,
                    info.last_modified, info.num_turns, info.total_cost_usd, 0 if info.cost_known else 1,
                    info.parent_session_id, info.forked_at, info.tag, info.model, info.file_size, info.label,
                ),
            )

    def update(self, session_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as conn:
            conn.execute(f"UPDATE sessions SET {cols} WHERE session_id=?", (*fields.values(), session_id))

    def record_turn(
        self, session_id: str, *, first_prompt: str | None, modified_ms: int, file_size: int, num_turns: int | None = None
    ) -> None:
        """A turn started; ``num_turns`` is the session's count including it (else the row's count + 1)."""
        with self._tx() as conn:
            # A fork that copied no turns is named by its own first prompt once it has one
            # (its label said what it forked only until then; see scan_info).
            conn.execute(
                "UPDATE sessions SET num_turns=COALESCE(?, num_turns+1), modified_ms=?, file_size=?, "
                "label=CASE WHEN first_prompt IS NULL AND ? IS NOT NULL THEN NULL ELSE label END, "
                "first_prompt=COALESCE(first_prompt, ?) WHERE session_id=?",
                (num_turns, modified_ms, file_size, first_prompt, first_prompt, session_id),
            )

    def record_cost(self, session_id: str, cost: float | None, *, modified_ms: int, file_size: int) -> None:
        with self._tx() as conn:
            if cost is None:
                conn.execute(
                    "UPDATE sessions SET cost_unknown=1, modified_ms=?, file_size=? WHERE session_id=?",
                    (modified_ms, file_size, session_id),
                )
            else:
                conn.execute(
                    "UPDATE sessions SET cost_usd=COALESCE(cost_usd,0)+?, modified_ms=?, file_size=? WHERE session_id=?",
                    (cost, modified_ms, file_size, session_id),
                )

    def delete(self, session_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM sessions WHERE session_id=?", (session_id,))
            conn.execute("DELETE FROM current WHERE session_id=?", (session_id,))

    def set_current(self, scope: str, session_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO current(scope, session_id, updated_ms) VALUES (?,?,?)",
                (scope, session_id, now_ms()),
            )

    def clear_current(self, scope: str) -> None:
        """Record that ``scope``'s next turn starts a new session (an empty pointer)."""
        self.set_current(scope, "")

    # -- reads ---------------------------------------------------------
    @staticmethod
    def _row_to_info(row: tuple[Any, ...]) -> SessionInfo:
        (sid, scope, cwd, title, first_prompt, created, modified, turns, cost, unknown, parent, forked_at, tag, model, size,
         label) = row
        return SessionInfo(
            session_id=sid, summary=_summary(title, label, first_prompt), created_at=created, last_modified=modified,
            num_turns=turns, cwd=cwd, scope=scope, title=title, first_prompt=first_prompt, parent_session_id=parent,
            forked_at=forked_at, tag=tag, model=model,
            total_cost_usd=None if unknown else (cost if cost is not None else 0.0),
            cost_known=not unknown, file_size=size, label=label,
        )

    def get(self, session_id: str) -> SessionInfo | None:
        self.ensure_fresh()
        row = self._connect().execute(f"SELECT {_COLUMNS} FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return self._row_to_info(row) if row else None

    def select(self, scope: str | None = None, limit: int | None = None, offset: int = 0) -> list[SessionInfo]:
        self.ensure_fresh()
        sql = f"SELECT {_COLUMNS} FROM sessions"
        args: list[Any] = []
        if scope is not None:
            sql += " WHERE scope=?"
            args.append(scope)
        sql += " ORDER BY modified_ms DESC, session_id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        elif offset:
            sql += " LIMIT -1 OFFSET ?"
            args.append(int(offset))
        return [self._row_to_info(r) for r in self._connect().execute(sql, args).fetchall()]

    def children(self, session_id: str) -> list[str]:
        rows = self._connect().execute("SELECT session_id FROM sessions WHERE parent_id=?", (session_id,)).fetchall()
        return [r[0] for r in rows]

    def ids_with_prefix(self, prefix: str) -> list[str]:
        self.ensure_fresh()
        esc = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._connect().execute(
            "SELECT session_id FROM sessions WHERE session_id LIKE ? ESCAPE '\\' LIMIT 50", (esc + "%",)
        ).fetchall()
        return [r[0] for r in rows if r[0].startswith(prefix)]

    def current(self, scope: str) -> str | None:
        row = self._connect().execute("SELECT session_id FROM current WHERE scope=?", (scope,)).fetchone()
        return row[0] if row else None

    def latest(self, scope: str) -> str | None:
        row = self._connect().execute(
            "SELECT session_id FROM sessions WHERE scope=? ORDER BY modified_ms DESC LIMIT 1", (scope,)
        ).fetchone()
        return row[0] if row else None

    def count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM sessions").fetchone()[0])

    # -- consistency -----------------------------------------------------
    def ensure_fresh(self) -> None:
        """Once per process: reconcile the index with the session folders on disk."""
        if self._checked:
            return
        self._checked = True
        conn = self._connect()
        # The index first, then the disk: a session another process creates in between is
        # then on disk but not yet read from the index (added, harmlessly), never the reverse
        # (which would delete its row).
        sizes = {r[0]: r[1] for r in conn.execute("SELECT session_id, file_size FROM sessions").fetchall()}
        on_disk = set(self._store.session_dirs())
        indexed = set(sizes)
        missing = on_disk - indexed
        gone = indexed - on_disk
        for sid in gone:
            self.delete(sid)
        for sid in missing:
            info = self._store.scan_info(sid)
            if info is not None:
                self.upsert(info)
        for sid in on_disk & indexed:
            if self._store.transcript_size(sid) != sizes[sid]:
                self._rescan_idle(sid)

    def _rescan_idle(self, session_id: str) -> None:
        """Rescan a row that disagrees with its transcript (a process died between the two).

        Only when no turn runs in the session: a running turn updates its row itself,
        and a scan taken mid-turn would be counted twice.
        """
        import filelock

        lock = filelock.FileLock(str(self._store.session_dir(session_id) / ".lock"), timeout=0, mode=0o600, thread_local=False)
        try:
            lock.acquire()
        except (filelock.Timeout, OSError):
            return
        try:
            info = self._store.scan_info(session_id)
            if info is not None:
                self.upsert(info)
        finally:
            lock.release()

    def rebuild(self) -> None:
        """Rebuild every row from the transcripts (after the index was lost or corrupted)."""
        conn = self._connect()
        conn.execute("DELETE FROM sessions")
        for sid in self._store.session_dirs():
            info = self._store.scan_info(sid)
            if info is not None:
                self.upsert(info)
        self._checked = True


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
        if (lines and is_boundary_line(lines[0])) or forks.fork_ref(_header_of(first)) is None:
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
        from ._context import context_window_for

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
            ref = forks.fork_ref(_header_of(lines[0])) if lines and size <= (256 << 10) else None
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

        from ._store import TranscriptWarning

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

        from ._store import TranscriptWarning

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
        out: list[SessionMessage] = []
        for e in self.read_entries(session_id):
            if is_boundary(e):
                data: dict[str, Any] = {k: e.get(k) for k in ("trigger", "pre_tokens", "post_tokens", "method") if k in e}
                out.append(
                    SessionMessage(
                        type="system", uuid=str(e.get("uuid")), session_id=session_id,
                        message={"role": "system", "subtype": "compact_boundary", "content": e.get("summary") or "", **data},
                        timestamp=e.get("timestamp"), parent_uuid=e.get("parent_uuid"),
                    )
                )
                continue
            if e.get("carried"):
                continue  # a copy of a line shown already, carried over a compaction
            if e.get("type") in ("user", "assistant") and isinstance(e.get("message"), dict) and not e.get("synthetic"):
                out.append(
                    SessionMessage(
                        type=e["type"], uuid=str(e.get("uuid")), session_id=session_id, message=e["message"],
                        timestamp=e.get("timestamp"), parent_uuid=e.get("parent_uuid"), is_prompt=is_prompt_entry(e),
                    )
                )
        out = out[offset:]
        return out[:limit] if limit is not None else out

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
            from ._errors import ConfigurationError

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
                from ._errors import CheckpointNotFoundError

                raise CheckpointNotFoundError(
                    f"No message {up_to_message_id!r} in session {session_id}. List them with `agent-magic history {session_id[:8]}`."
                )
            ref, _kept = found
            forked_at = up_to_message_id
        else:
            ref, forked_at = forks.whole_ref(self, session_id, header)
            if ref["lines"] == 0:
                ref = None  # nothing to inherit
            else:
                info = self._whole_fork_info(session_id, title, forked_at)
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
        if info is None and ref is not None:
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


@dataclass
class SessionState:
    """A session loaded for running turns (persistent or in memory)."""

    session_id: str
    cwd: Path
    scope: str
    model: str | None
    transcript: JsonlFile
    store: SessionStore | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    parent_session_id: str | None = None
    num_turns: int = 0
    last_uuid: str | None = None
    total_cost_usd: float | None = 0.0

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one line to the transcript (durable in the OS before returning)."""
        entry.setdefault("uuid", new_uuid())
        entry.setdefault("parent_uuid", self.last_uuid)
        # The session is the folder (and the header line); lines do not repeat its id.
        entry.pop("session_id", None)
        entry.setdefault("timestamp", iso_now())
        self.transcript.append(entry)
        self.entries.append(entry)
        if entry.get("type") in ("user", "assistant"):
            self.last_uuid = entry["uuid"]
        return entry

    def api_messages(self) -> list[dict[str, Any]]:
        with no_gc():  # thousands of fresh dicts, none cyclic: see _store.no_gc
            return build_api_messages(self.entries)

    def cleared_ids(self) -> set[str]:
        """Tool results cleared from what is sent since the last compaction."""
        return {
            str(t)
            for e in live_entries(self.entries)
            if e.get("type") == "context_edit" and isinstance(e.get("cleared"), list)
            for t in e["cleared"]
        }

    def prompts(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if is_prompt_entry(e)]
