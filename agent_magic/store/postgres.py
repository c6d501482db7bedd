"""The PostgreSQL backend: a shared store in five tables (``postgresql://user@host/db``; extra ``postgres``).

URL: any libpq URL (``postgresql://`` or ``postgres://``; ``sslmode=``, ``options=`` and
the other libpq parameters pass through), plus ``table_prefix=`` (default ``agent_magic_``)
naming the tables, so several stores can share a database. The tables are created on
first use when missing (the user then needs ``CREATE`` on the schema; a DBA may create
them beforehand instead)::

    <prefix>transcripts  one row per (project_key, session_id, subpath); subpath '' is the
                         main transcript; mtime is the server's time of the last append
    <prefix>entries      the lines, in append order (an identity column), JSONB; a uuid is
                         unique per transcript (a partial unique index), so retries store once
    <prefix>summaries    one row per session: its summary (``list_session_summaries``), JSON
    <prefix>blobs        content-addressed bytes (digest -> bytea)
    <prefix>leases       one writer per session; granted and checked by the server's clock

An append upserts the transcript row first, which locks it until commit, so concurrent
appends to one transcript commit one after another and their identity values follow
commit order (a reader never sees a later batch before an earlier one). An append to a
transcript that feeds the session's summary (the main one, ``meta``) then, in the same
transaction, locks the session's summary row, folds the entries it actually stored into
it (:func:`~agent_magic.store.summary.fold_summary`) and writes it back stamped with the
transcript's new mtime, so the summary never misses or double-counts a batch, whichever
host appends. A session written before summaries existed gets its summary folded from
all its entries on its next append. Deleting a main transcript cascades to its
sub-transcripts and removes its summary.

JSONB cannot hold everything JSON can: a NUL character in a string is refused, NaN and
Infinity are not JSON, and numbers written with a positive exponent (``1e+300``) come back
as integers. Such entries are kept as their UTF-8 JSON text in a ``bytea`` column instead,
so every entry loads back deep-equal. Summaries are kept as ``json`` (the text verbatim),
or as ``bytea`` text when they hold NaN or Infinity.

One connection per store object, opened on first use and shared by its calls in turn;
a connection the server dropped (idle timeout, restart) is replaced and the call
retried once, unless retrying could store an entry twice.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from .._errors import ConfigurationError
from .base import (
    Lease,
    LeaseHeldError,
    SessionKey,
    SessionListEntry,
    SessionStoreBackend,
    StoreError,
    dedupe_by_uuid,
)
from .summary import FOLDED_SUBPATHS, fold_summary, folds

_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[TupleRow]

DEFAULT_TABLE_PREFIX = "agent_magic_"
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_TABLES = ("transcripts", "entries", "summaries", "blobs", "leases")
# Text JSONB would refuse (a NUL in a string) or change (a positive exponent: 1e+300 comes
# back as an integer). False positives (the same text inside a string) only cost JSONB.
_NOT_FOR_JSONB = re.compile(r"\\u0000|[0-9][eE]\+")
_CONNECT_TIMEOUT_S = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {transcripts} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_key text NOT NULL,
    session_id text NOT NULL,
    subpath text NOT NULL DEFAULT '',
    mtime timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_key, session_id, subpath)
);
CREATE TABLE IF NOT EXISTS {entries} (
    transcript_id bigint NOT NULL REFERENCES {transcripts} (id) ON DELETE CASCADE,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    uuid text,
    entry jsonb,
    entry_json bytea,
    PRIMARY KEY (transcript_id, seq),
    CHECK ((entry IS NULL) <> (entry_json IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS {entries_uuid} ON {entries} (transcript_id, uuid) WHERE uuid IS NOT NULL;
CREATE TABLE IF NOT EXISTS {summaries} (
    project_key text NOT NULL,
    session_id text NOT NULL,
    mtime bigint NOT NULL DEFAULT 0,
    data json,
    data_json bytea,
    PRIMARY KEY (project_key, session_id)
);
CREATE TABLE IF NOT EXISTS {blobs} (
    digest text PRIMARY KEY,
    data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS {leases} (
    session_id text PRIMARY KEY,
    holder text NOT NULL,
    acquired timestamptz NOT NULL,
    renewed timestamptz NOT NULL,
    ttl_s double precision NOT NULL
);
"""

# Returns the transcript's new mtime (epoch ms, as list_sessions reports it) and the uuids
# actually inserted. clock_timestamp(), not now(): taken once the row is locked, so a
# transcript's mtime follows commit order even when transactions began in another order.
_APPEND = """
WITH t AS (
    INSERT INTO {transcripts} (project_key, session_id, subpath, mtime) VALUES (%s, %s, %s, clock_timestamp())
    ON CONFLICT (project_key, session_id, subpath) DO UPDATE SET mtime = clock_timestamp()
    RETURNING id, mtime
), ins AS (
    INSERT INTO {entries} (transcript_id, uuid, entry, entry_json)
    SELECT t.id, e.uuid, e.entry::jsonb, e.entry_json
    FROM t, unnest(%s::text[], %s::text[], %s::bytea[]) WITH ORDINALITY AS e (uuid, entry, entry_json, n)
    ORDER BY e.n
    ON CONFLICT (transcript_id, uuid) WHERE uuid IS NOT NULL DO NOTHING
    RETURNING uuid
)
SELECT (extract(epoch FROM t.mtime) * 1000)::bigint,
       ARRAY(SELECT uuid FROM ins WHERE uuid IS NOT NULL)
FROM t
"""

# Creates the session's summary row if missing and locks it until commit (the no-op update
# takes the lock and returns the row as it stands); data and data_json are NULL in a new row.
_LOCK_SUMMARY = """
INSERT INTO {summaries} AS s (project_key, session_id) VALUES (%s, %s)
ON CONFLICT (project_key, session_id) DO UPDATE SET mtime = s.mtime
RETURNING s.mtime, s.data, s.data_json
"""

_LOAD = """
SELECT e.entry, e.entry_json FROM {transcripts} t JOIN {entries} e ON e.transcript_id = t.id
WHERE t.project_key = %s AND t.session_id = %s AND t.subpath = %s
ORDER BY e.seq
"""

# Granted when free, one's own (a renewal), expired by the holder's own ttl, or taken over;
# otherwise no row comes back and the holder is read in the same transaction.
_ACQUIRE = """
INSERT INTO {leases} AS l (session_id, holder, acquired, renewed, ttl_s)
VALUES (%(session_id)s, %(holder)s, now(), now(), %(ttl_s)s)
ON CONFLICT (session_id) DO UPDATE SET
    holder = excluded.holder,
    acquired = CASE WHEN l.holder = excluded.holder THEN l.acquired ELSE excluded.acquired END,
    renewed = excluded.renewed,
    ttl_s = excluded.ttl_s
WHERE l.holder = excluded.holder OR %(take_over)s
    OR l.renewed + make_interval(secs => l.ttl_s) < now()
RETURNING (extract(epoch FROM acquired) * 1000)::bigint
"""

_HOLDER = """
SELECT holder, extract(epoch FROM now() - renewed)::float8 FROM {leases} WHERE session_id = %s
"""


def _subpath(key: SessionKey) -> str:
    return key.get("subpath") or ""


def _check_digest(digest: str) -> str:
    if not digest.isalnum():
        raise ValueError(f"not a digest: {digest!r}")
    return digest


def _summary_columns(data: dict[str, Any]) -> tuple[str | None, bytes | None]:
    """``data`` as the ``json`` column takes it, or as the text for ``data_json`` (NaN, Infinity)."""
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False), None
    except ValueError:
        return None, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())


class PostgresSessionStore(SessionStoreBackend):
    """A shared store in a PostgreSQL database (see the module docstring).

    Parameters
    ----------
    conninfo
        A libpq URL or ``key=value`` string.
    table_prefix
        Prefix of the five table names (letters, digits and ``_``, at most 40).

    Raises
    ------
    ConfigurationError
        ``conninfo`` cannot be parsed, or ``table_prefix`` is not a plain identifier.
    """

    schemes = ("postgresql", "postgres")

    def __init__(self, conninfo: str, *, table_prefix: str = DEFAULT_TABLE_PREFIX) -> None:
        if not _PREFIX_RE.fullmatch(table_prefix):
            raise ConfigurationError(
                f"Invalid table_prefix {table_prefix!r} for the PostgreSQL session store: "
                "use up to 40 letters, digits and underscores, not starting with a digit."
            )
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise ConfigurationError(
                "Cannot parse the PostgreSQL session store URL: use postgresql://user:password@host:port/dbname."
            ) from None
        self.conninfo = conninfo
        self.table_prefix = table_prefix
        self._password = str(params.get("password") or "")
        self._target = "{}@{}:{}/{}".format(
            params.get("user") or "(default user)",
            params.get("host") or "(local socket)",
            params.get("port") or 5432,
            params.get("dbname") or "(default database)",
        )
        self._user = str(params.get("user") or "the connecting user")
        # Defaults the URL can override: fail in seconds, not the OS's minutes, when a network
        # path dies under an idle notebook (keepalives, tcp_user_timeout; ignored on unix sockets).
        defaults = {"connect_timeout": _CONNECT_TIMEOUT_S, "application_name": "agent-magic",
                    "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                    "tcp_user_timeout": 60_000}
        self._connect_kwargs: dict[str, Any] = {k: v for k, v in defaults.items() if k not in params}
        names = {t: sql.Identifier(table_prefix + t) for t in _TABLES}
        names["entries_uuid"] = sql.Identifier(table_prefix + "entries_uuid")

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**names)  # constant SQL; only identifiers are inserted

        self._sql_schema = q(_SCHEMA)
        self._sql_append = q(_APPEND)
        self._sql_load = q(_LOAD)
        self._sql_lock_summary = q(_LOCK_SUMMARY)
        self._sql_write_summary = q(
            "UPDATE {summaries} SET mtime = %s, data = %s::json, data_json = %s "
            "WHERE project_key = %s AND session_id = %s"
        )
        self._sql_summaries = q(
            "SELECT session_id, mtime, data, data_json FROM {summaries} "
            "WHERE project_key = %s AND (data IS NOT NULL OR data_json IS NOT NULL)"
        )
        self._sql_delete_summary = q("DELETE FROM {summaries} WHERE project_key = %s AND session_id = %s")
        self._sql_list_sessions = q(
            "SELECT session_id, (extract(epoch FROM mtime) * 1000)::bigint FROM {transcripts} "
            "WHERE project_key = %s AND subpath = ''"
        )
        self._sql_delete_session = q("DELETE FROM {transcripts} WHERE project_key = %s AND session_id = %s")
        self._sql_delete_sub = q(
            "DELETE FROM {transcripts} WHERE project_key = %s AND session_id = %s AND subpath = %s"
        )
        self._sql_subkeys = q(
            "SELECT subpath FROM {transcripts} WHERE project_key = %s AND session_id = %s AND subpath <> '' "
            "ORDER BY subpath"
        )
        self._sql_put_blob = q("INSERT INTO {blobs} (digest, data) VALUES (%s, %s) ON CONFLICT (digest) DO NOTHING")
        self._sql_get_blob = q("SELECT data FROM {blobs} WHERE digest = %s")
        self._sql_have_blobs = q("SELECT digest FROM {blobs} WHERE digest = ANY(%s)")
        self._sql_acquire = q(_ACQUIRE)
        self._sql_holder = q(_HOLDER)
        self._sql_release = q("DELETE FROM {leases} WHERE session_id = %s AND holder = %s")
        self._conn: _Conn | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_changed = False
        self._schema_ready = False

    @classmethod
    def from_url(cls, url: str) -> PostgresSessionStore:
        """The store for a ``postgresql://`` URL; ``table_prefix=`` is taken out of its query."""
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        prefixes = [v for k, v in query if k == "table_prefix"]
        if not prefixes:
            return cls(url)
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "table_prefix"])
        return cls(urllib.parse.urlunsplit(parts._replace(query=rest)), table_prefix=prefixes[-1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target!r}, table_prefix={self.table_prefix!r})"

    # -- the connection ------------------------------------------------------------
    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            # A lock and a connection serve one event loop; a store used from another (a
            # notebook running each cell's calls in a new loop) gets its own and reconnects.
            self._lock, self._loop, self._loop_changed = asyncio.Lock(), loop, self._lock is not None
        return self._lock

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken and not self._loop_changed:
            return conn
        self._loop_changed = False
        self._conn = None
        if conn is not None:
            await conn.close()
        try:
            # No server-side prepared statements: they break behind pgbouncer's transaction pooling.
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, prepare_threshold=None, **self._connect_kwargs
            )
        except psycopg.Error as e:
            # from None: nothing of the attempt (its parameters) rides along in a traceback.
            raise StoreError(self._connect_message(e)) from None
        try:
            if not self._schema_ready:
                await self._ensure_schema(conn)
                self._schema_ready = True
        except psycopg.Error as e:
            await conn.close()
            raise StoreError(self._error_message(e)) from e
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _ensure_schema(self, conn: _Conn) -> None:
        names = [self.table_prefix + t for t in _TABLES]
        cur = await conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind IN ('r', 'p') "
            "AND pg_table_is_visible(oid)",
            [names],
        )
        found = {r[0] for r in await cur.fetchall()}
        missing = [n for n in names if n not in found]
        if not missing:
            return  # no DDL at all: a user without CREATE on the schema can use tables a DBA made
        try:
            async with conn.transaction():
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog: take turns.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", ["agent-magic store " + self.table_prefix]
                )
                await conn.execute(self._sql_schema)
        except psycopg.errors.InsufficientPrivilege as e:
            if not found:
                raise  # none there yet: the general message (may create, or have them created)
            # Tables a DBA made for an older agent-magic, which had fewer: say which one is new.
            tables = " and ".join(missing)
            raise StoreError(
                f"The PostgreSQL session store {self._target} has no table {tables} and {self._user} may not "
                f"create it: have it created by a user who may (opening the store once as that user does it), "
                f"then grant {self._user} SELECT, INSERT, UPDATE, DELETE on it."
            ) from e

    async def _run(self, op: Callable[[_Conn], Awaitable[_T]], *, retry: bool = True) -> _T:
        async with self._guard():
            for attempt in range(2):
                conn = await self._connection()
                try:
                    return await op(conn)
                except psycopg.OperationalError as e:
                    if conn.broken and retry and attempt == 0:
                        continue  # the server dropped the connection (idle timeout, restart): once more
                    raise StoreError(self._error_message(e)) from e
                except psycopg.Error as e:
                    raise StoreError(self._error_message(e)) from e
            raise AssertionError("unreachable")

    def _scrub(self, text: str) -> str:
        text = _one_line(text)
        return text.replace(self._password, "***") if self._password else text

    def _connect_message(self, e: psycopg.Error) -> str:
        text = str(e)
        # libpq: 'connection failed: connection to server at "h", port 5432 failed: FATAL:  why\n\thint'
        first = text.splitlines()[0] if text.strip() else type(e).__name__
        reason = self._scrub(re.sub(r"^(FATAL|ERROR):\s*", "", first.rsplit(" failed: ", 1)[-1]))
        low = text.lower()
        if "password" in low or "authentication" in low or ("role" in low and "does not exist" in low):
            hint = "Check the user name and password in the store URL (or PGPASSWORD, ~/.pgpass)."
        elif "database" in low and "does not exist" in low:
            hint = "Check the database name in the store URL, or create the database (`createdb`)."
        elif "ssl" in low or "certificate" in low:
            hint = "Check sslmode and the certificates in the store URL."
        else:
            hint = "Check the host and port in the store URL and that the server is running and reachable."
        return f"Cannot connect to the PostgreSQL session store {self._target}: {reason}. {hint}"

    def _error_message(self, e: psycopg.Error) -> str:
        reason = self._scrub(str(e).splitlines()[0] if str(e) else type(e).__name__)
        if isinstance(e, psycopg.errors.InsufficientPrivilege):
            hint = (f" Check that {self._user} may create and write the tables {self.table_prefix}* "
                    "(or have them created beforehand).")
        elif isinstance(e, psycopg.OperationalError):
            hint = " Check that the server is up and reachable; the next call reconnects."
        else:
            hint = ""
        return f"The PostgreSQL session store {self._target} failed: {reason}.{hint}"

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    # -- transcripts ------------------------------------------------------------------
    async def append(self, key: SessionKey, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        fresh = dedupe_by_uuid(set(), entries)
        uuids: list[str | None] = []
        as_jsonb: list[str | None] = []
        as_bytes: list[bytes | None] = []
        for e in fresh:
            uid = e.get("uuid")
            uuids.append(uid if isinstance(uid, str) and uid else None)
            try:
                text = json.dumps(e, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                keep_text = _NOT_FOR_JSONB.search(text) is not None
            except ValueError:  # NaN or Infinity
                text, keep_text = json.dumps(e, ensure_ascii=False, separators=(",", ":")), True
            as_jsonb.append(None if keep_text else text)
            as_bytes.append(text.encode() if keep_text else None)
        params = (key["project_key"], key["session_id"], _subpath(key), uuids, as_jsonb, as_bytes)

        async def op(conn: _Conn) -> None:
            if not folds(dict(key)):
                await conn.execute(self._sql_append, params)
                return
            async with conn.transaction():
                cur = await conn.execute(self._sql_append, params)
                row = await cur.fetchone()
                assert row is not None  # the upsert always returns the transcript's row
                mtime, inserted = int(row[0]), set(row[1])
                # Only what this call stored: a batch sent again (its answer was lost) folds nothing.
                stored = [e for e, u in zip(fresh, uuids, strict=True) if u is None or u in inserted]
                await self._fold(conn, key, stored, mtime)

        # A retry after a lost answer stores entries without a uuid twice: then the caller decides.
        await self._run(op, retry=all(u is not None for u in uuids))

    async def _fold(self, conn: _Conn, key: SessionKey, stored: list[dict[str, Any]], mtime: int) -> None:
        """Fold ``stored`` into the session's summary (inside the append's transaction)."""
        session = (key["project_key"], key["session_id"])
        row = await (await conn.execute(self._sql_lock_summary, session)).fetchone()
        assert row is not None
        prev_mtime, data, data_json = row
        if data is None and data_json is None:
            # No summary yet: a new session, or one written before summaries existed. Fold
            # everything its feeding transcripts hold (this call's entries included), main first.
            summary: dict[str, Any] | None = None
            for sub in ["", *sorted(FOLDED_SUBPATHS)]:
                cur = await conn.execute(self._sql_load, (*session, sub))
                entries = [e if raw is None else json.loads(raw) for e, raw in await cur.fetchall()]
                sub_key = {"project_key": session[0], "session_id": session[1], **({"subpath": sub} if sub else {})}
                if entries or summary is None:
                    summary = fold_summary(summary, sub_key, entries)
            assert summary is not None
        else:
            prev = {"session_id": session[1], "mtime": prev_mtime,
                    "data": data if data_json is None else json.loads(data_json)}
            summary = fold_summary(prev, dict(key), stored)
        # The transcript's mtime (what list_sessions reports for a main append); never back in
        # time, so the summary is never older than the session's listed mtime.
        new_mtime = max(mtime, int(prev_mtime))
        as_json, as_bytes = _summary_columns(summary["data"])
        await conn.execute(self._sql_write_summary, (new_mtime, as_json, as_bytes, *session))

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        async def op(conn: _Conn) -> list[tuple[str, int, Any, bytes | None]]:
            cur = await conn.execute(self._sql_summaries, [project_key])
            return await cur.fetchall()

        return [
            {"session_id": sid, "mtime": int(mtime), "data": data if raw is None else json.loads(raw)}
            for sid, mtime, data, raw in await self._run(op)
        ]

    async def load(self, key: SessionKey) -> list[dict[str, Any]] | None:
        params = (key["project_key"], key["session_id"], _subpath(key))

        async def op(conn: _Conn) -> list[tuple[Any, bytes | None]]:
            cur = await conn.execute(self._sql_load, params)
            return await cur.fetchall()

        rows = await self._run(op)
        if not rows:
            return None  # a transcript row exists only with its first entries
        return [entry if raw is None else json.loads(raw) for entry, raw in rows]

    async def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        async def op(conn: _Conn) -> list[tuple[str, int]]:
            cur = await conn.execute(self._sql_list_sessions, [project_key])
            return await cur.fetchall()

        return [{"session_id": sid, "mtime": int(mtime)} for sid, mtime in await self._run(op)]

    async def delete(self, key: SessionKey) -> None:
        sub = _subpath(key)

        async def op(conn: _Conn) -> None:
            if sub:
                await conn.execute(self._sql_delete_sub, (key["project_key"], key["session_id"], sub))
                return
            async with conn.transaction():
                # The main transcript takes its sub-transcripts along, then its summary: in the order
                # an append locks them (transcript row, then summary row), so the two never deadlock.
                await conn.execute(self._sql_delete_session, (key["project_key"], key["session_id"]))
                await conn.execute(self._sql_delete_summary, (key["project_key"], key["session_id"]))

        await self._run(op)

    async def list_subkeys(self, key: SessionKey) -> list[str]:
        async def op(conn: _Conn) -> list[str]:
            cur = await conn.execute(self._sql_subkeys, (key["project_key"], key["session_id"]))
            return [r[0] for r in await cur.fetchall()]

        return await self._run(op)

    # -- blobs --------------------------------------------------------------------------
    async def put_blob(self, digest: str, data: bytes) -> None:
        params = (_check_digest(digest), bytes(data))

        async def op(conn: _Conn) -> None:
            await conn.execute(self._sql_put_blob, params)

        await self._run(op)

    async def get_blob(self, digest: str) -> bytes | None:
        _check_digest(digest)

        async def op(conn: _Conn) -> bytes | None:
            cur = await conn.execute(self._sql_get_blob, [digest])
            row = await cur.fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(op)

    async def missing_blobs(self, digests: list[str]) -> list[str]:
        for d in digests:
            _check_digest(d)
        if not digests:
            return []

        async def op(conn: _Conn) -> set[str]:
            cur = await conn.execute(self._sql_have_blobs, [list(digests)])
            return {r[0] for r in await cur.fetchall()}

        have = await self._run(op)
        return [d for d in digests if d not in have]

    # -- the lease --------------------------------------------------------------------------
    async def acquire_lease(self, session_id: str, holder: str, ttl_s: float, *, take_over: bool = False) -> Lease:
        params = {"session_id": session_id, "holder": holder, "ttl_s": float(ttl_s), "take_over": take_over}

        async def op(conn: _Conn) -> int | tuple[str, float]:
            async with conn.transaction():
                row = await (await conn.execute(self._sql_acquire, params)).fetchone()
                if row is not None:
                    return int(row[0])
                # ON CONFLICT locked the row: it still stands as it was when refused.
                held = await (await conn.execute(self._sql_holder, [session_id])).fetchone()
                assert held is not None
                return str(held[0]), float(held[1])

        got = await self._run(op)
        if isinstance(got, tuple):
            raise LeaseHeldError(session_id, got[0], max(got[1], 0.0))
        return Lease(session_id, holder, got, ttl_s)

    async def release_lease(self, session_id: str, holder: str) -> None:
        async def op(conn: _Conn) -> None:
            await conn.execute(self._sql_release, (session_id, holder))

        await self._run(op)
