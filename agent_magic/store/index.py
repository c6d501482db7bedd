"""The SQLite index of sessions: a cache for fast listing, rebuilt from the transcripts."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .home import now_ms
from .transcript import SessionInfo, _summary

if TYPE_CHECKING:
    from .local import SessionStore

INDEX_SCHEMA = 3  # 3: the label column (forks say what they forked and where)


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
