"""The PostgreSQL backend of the shared session store, against a real server the tests start.

The server (``tests/pg_server.py``) runs once per test session in a temp folder; each
test uses its own table prefix, so tests never see each other's rows. Blobs, the
writer lease (timed by the server's clock) and session summaries, the same for every
backend, are tested in ``test_store_contract.py``; here, what only PostgreSQL's
tables do to summaries: JSONB's limits, and a table missing from an older version.
"""

from __future__ import annotations

import math
import secrets
import traceback
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("psycopg", reason="the postgres extra is not installed")

import psycopg

from agent_magic._errors import ConfigurationError
from agent_magic.store import SessionKey, StoreError, open_session_store
from agent_magic.store.postgres import PostgresSessionStore
from agent_magic.store.summary import summary_info

from .pg_server import PostgresServer, find_bindir, free_port, running_server
from .test_store_contract import header, turn


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl; .ci/setup installs Debian's postgresql)")
    with running_server(bindir) as server:
        yield server


def _prefix() -> str:
    return f"t{secrets.token_hex(4)}_"


def _store(pg: PostgresServer, prefix: str | None = None) -> PostgresSessionStore:
    return PostgresSessionStore(pg.url(), table_prefix=prefix or _prefix())


async def _sql(pg: PostgresServer, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``query`` on a connection of its own (as an administrator would)."""
    async with await psycopg.AsyncConnection.connect(pg.url(), autocommit=True) as conn:
        cur = await conn.execute(query, params or None)
        return await cur.fetchall() if cur.description else []


def test_passes_the_agent_sdks_session_store_conformance_suite(pg: PostgresServer) -> None:
    conformance = pytest.importorskip("claude_agent_sdk.testing").run_session_store_conformance
    stores: list[PostgresSessionStore] = []

    def make_store() -> PostgresSessionStore:
        stores.append(_store(pg))
        return stores[-1]

    async def go() -> None:
        try:
            await conformance(make_store)
        finally:
            for s in stores:
                await s.aclose()

    anyio.run(go)
    assert len(stores) > 10  # one fresh store per contract


def test_open_by_url(pg: PostgresServer) -> None:
    store = open_session_store(pg.url(query="sslmode=disable&table_prefix=by_url_"))
    assert isinstance(store, PostgresSessionStore) and store.table_prefix == "by_url_"
    assert "table_prefix" not in store.conninfo and "sslmode=disable" in store.conninfo
    assert pg.password not in repr(store)
    other = open_session_store(pg.url().replace("postgresql://", "postgres://"))
    assert isinstance(other, PostgresSessionStore) and other.table_prefix == "agent_magic_"
    key: SessionKey = {"project_key": "p", "session_id": "s"}

    async def go() -> None:
        try:
            await store.append(key, [{"type": "x"}])
            assert await store.load(key) == [{"type": "x"}]
            assert await _sql(pg, "SELECT count(*) FROM by_url_entries") == [(1,)]
        finally:
            await store.aclose()

    anyio.run(go)
    with pytest.raises(ConfigurationError, match="table_prefix"):
        open_session_store(pg.url(query="table_prefix=x;drop"))


def test_uuids_are_idempotent_across_hosts(pg: PostgresServer) -> None:
    prefix = _prefix()
    a, b = _store(pg, prefix), _store(pg, prefix)
    key: SessionKey = {"project_key": "/home/me/project", "session_id": "s1"}

    async def go() -> None:
        try:
            await a.append(key, [{"type": "user", "uuid": "u1"}, {"type": "x"}])
            # Host b retries the batch host a wrote (its answer was lost), with one more line:
            # u1 is stored once, a line without a uuid is never de-duplicated, and a uuid
            # repeated inside one batch is stored once too.
            await b.append(key, [{"type": "user", "uuid": "u1"}, {"type": "x"}, {"type": "a", "uuid": "u2"},
                                 {"type": "b", "uuid": "u2"}, {"type": "y", "uuid": ""}, {"type": "y", "uuid": ""}])
            want = [{"type": "user", "uuid": "u1"}, {"type": "x"}, {"type": "x"}, {"type": "a", "uuid": "u2"},
                    {"type": "y", "uuid": ""}, {"type": "y", "uuid": ""}]
            assert await a.load(key) == want
            assert await b.load(key) == want
            # The uuid is a key per transcript: a sub-transcript stores the same uuid again.
            sub: SessionKey = {**key, "subpath": "subagents/agent-1"}
            await a.append(sub, [{"type": "user", "uuid": "u1"}])
            assert await b.load(sub) == [{"type": "user", "uuid": "u1"}]
            assert await a.load(key) == want
        finally:
            await a.aclose()
            await b.aclose()

    anyio.run(go)


def test_concurrent_appends_keep_each_writers_order(pg: PostgresServer) -> None:
    prefix = _prefix()
    a, b, reader = _store(pg, prefix), _store(pg, prefix), _store(pg, prefix)
    key: SessionKey = {"project_key": "p", "session_id": "busy"}
    snapshots: list[list[dict[str, Any]]] = []

    async def write(store: PostgresSessionStore, name: str) -> None:
        for i in range(25):
            await store.append(key, [{"type": "x", "w": name, "i": i, "j": j} for j in range(3)])

    async def read(stop: anyio.Event) -> None:
        while not stop.is_set():
            snapshots.append(await reader.load(key) or [])  # each load waits on the server

    async def go() -> None:
        try:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, stop)
                async with anyio.create_task_group() as writers:
                    # two hosts, and two tasks sharing one store (one connection)
                    writers.start_soon(write, a, "a1")
                    writers.start_soon(write, a, "a2")
                    writers.start_soon(write, b, "b1")
                    writers.start_soon(write, b, "b2")
                stop.set()
            final = await reader.load(key)
        finally:
            for s in (a, b, reader):
                await s.aclose()
        assert final is not None and len(final) == 4 * 25 * 3
        for name in ("a1", "a2", "b1", "b2"):
            mine = [(e["i"], e["j"]) for e in final if e["w"] == name]
            assert mine == [(i, j) for i in range(25) for j in range(3)]
        for n in range(0, len(final), 3):  # a batch is never interleaved with another
            batch = final[n:n + 3]
            assert [e["j"] for e in batch] == [0, 1, 2] and len({(e["w"], e["i"]) for e in batch}) == 1
        # Readers only ever saw a prefix of the final order: no batch shows up before an earlier one.
        assert len(snapshots) > 1
        for snap in snapshots:
            assert snap == final[:len(snap)]

    anyio.run(go)


def test_entries_round_trip_deep_equal(pg: PostgresServer) -> None:
    store = _store(pg)
    key: SessionKey = {"project_key": "p", "session_id": "odd"}
    entries: list[dict[str, Any]] = [
        {"type": "user", "uuid": "1", "message": {"content": [{"type": "text", "text": "héllo 日本 🎉 \\ \" \t\n"}]}},
        {"type": "tool_result", "uuid": "2", "content": "binary\x00output", "nested": {"\x00key": [1, None, True]}},
        {"type": "x", "uuid": "3", "floats": [0.1, -0.0, 1e-7, 1.5e300, 1e16, 123456789.125], "big": 2**70},
        {"type": "x", "uuid": "4", "inf": math.inf, "neg": -math.inf},
        {"type": "x", "text": "1e+5 is a number written in a string", "empty": {}, "list": []},
        {"z": 1, "a": 2, "type": "x", "m": {"b": [], "a": ""}},
    ]

    async def go() -> None:
        try:
            await store.append(key, entries)
            loaded = await store.load(key)
            assert loaded == entries
            assert loaded is not None and type(loaded[2]["floats"][3]) is float and type(loaded[2]["floats"][4]) is float
            # Ordinary entries are JSONB (queryable in the database); the rest kept as JSON text.
            rows = await _sql(pg, f"SELECT entry IS NOT NULL FROM {store.table_prefix}entries ORDER BY seq")
            assert [r[0] for r in rows] == [True, False, False, False, False, True]
        finally:
            await store.aclose()

    anyio.run(go)


def test_list_sessions_mtime_is_the_servers_write_time(pg: PostgresServer) -> None:
    store = _store(pg)
    now_sql = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"

    async def go() -> None:
        try:
            before = (await _sql(pg, now_sql))[0][0]
            await store.append({"project_key": "p", "session_id": "s1"}, [{"type": "x"}])
            await store.append({"project_key": "p", "session_id": "s1", "subpath": "subagents/a"}, [{"type": "x"}])
            after = (await _sql(pg, now_sql))[0][0]
            (listed,) = await store.list_sessions("p")
            assert listed["session_id"] == "s1" and before <= listed["mtime"] <= after
            await store.append({"project_key": "p", "session_id": "s1"}, [{"type": "x"}])
            (again,) = await store.list_sessions("p")
            assert again["mtime"] >= listed["mtime"]
            assert await store.list_subkeys({"project_key": "p", "session_id": "s1"}) == ["subagents/a"]
        finally:
            await store.aclose()

    anyio.run(go)


def test_connection_failures_are_one_line_and_never_show_the_password(pg: PostgresServer) -> None:
    wrong = "wrong-" + secrets.token_hex(6)
    cases = [
        (pg.url(password=wrong), wrong, "password"),
        (pg.url(port=free_port()), pg.password, "host and port"),
        (pg.url(dbname="no_such_db"), pg.password, "database name"),
    ]
    key: SessionKey = {"project_key": "p", "session_id": "s"}
    for url, secret, hint in cases:
        store = open_session_store(url)
        with pytest.raises(StoreError) as err:
            anyio.run(store.load, key)
        msg = str(err.value)
        assert hint in msg and "\n" not in msg and msg.startswith("Cannot connect to the PostgreSQL session store")
        assert secret not in "".join(traceback.format_exception(err.value))


def test_a_user_without_create_gets_one_line_then_uses_tables_made_for_it(pg: PostgresServer) -> None:
    role, password, prefix = f"r{secrets.token_hex(4)}", secrets.token_hex(8), _prefix()
    url = pg.url().replace(f"postgres:{pg.password}@", f"{role}:{password}@")

    async def go() -> None:
        await _sql(pg, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        limited = PostgresSessionStore(url, table_prefix=prefix)
        try:
            # PostgreSQL 15 no longer lets every user create tables in the public schema.
            with pytest.raises(StoreError, match=f"Check that {role} may create") as err:
                await limited.list_sessions("p")
            assert "\n" not in str(err.value) and password not in str(err.value)
            admin = _store(pg, prefix)
            await admin.list_sessions("p")  # the tables, made by someone who may
            await admin.aclose()
            for table in ("transcripts", "entries", "summaries", "blobs", "leases"):
                await _sql(pg, f"GRANT SELECT, INSERT, UPDATE, DELETE ON {prefix}{table} TO {role}")
            await limited.append({"project_key": "p", "session_id": "s"}, [{"type": "x", "uuid": "1"}])
            assert await limited.load({"project_key": "p", "session_id": "s"}) == [{"type": "x", "uuid": "1"}]
            assert [s["session_id"] for s in await limited.list_session_summaries("p")] == ["s"]
        finally:
            await limited.aclose()

    anyio.run(go)


def test_tables_made_for_an_older_version_name_the_table_to_add(pg: PostgresServer) -> None:
    role, password, prefix = f"r{secrets.token_hex(4)}", secrets.token_hex(8), _prefix()
    url = pg.url().replace(f"postgres:{pg.password}@", f"{role}:{password}@")
    key: SessionKey = {"project_key": "p", "session_id": "s"}

    async def go() -> None:
        await _sql(pg, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin = _store(pg, prefix)
        await admin.append(key, [header("s"), *turn("a", 0)])
        await admin.aclose()
        # As a DBA set up an agent-magic that had no summaries table.
        await _sql(pg, f"DROP TABLE {prefix}summaries")
        for table in ("transcripts", "entries", "blobs", "leases"):
            await _sql(pg, f"GRANT SELECT, INSERT, UPDATE, DELETE ON {prefix}{table} TO {role}")
        limited = PostgresSessionStore(url, table_prefix=prefix)
        try:
            with pytest.raises(StoreError) as err:
                await limited.load(key)
            message = str(err.value)
            assert f"has no table {prefix}summaries and {role} may not create it" in message
            assert "\n" not in message and password not in message
            # Opening the store once as a user who may adds the table; then grant it.
            admin = _store(pg, prefix)
            await admin.list_sessions("p")
            await admin.aclose()
            await _sql(pg, f"GRANT SELECT, INSERT, UPDATE, DELETE ON {prefix}summaries TO {role}")
            await limited.append(key, turn("a", 1))
            # The session written before the table existed is folded whole on its next append.
            [summary] = await limited.list_session_summaries("p")
            info = summary_info(summary)
            assert info is not None and (info.num_turns, info.first_prompt) == (2, "p a0")
        finally:
            await limited.aclose()

    anyio.run(go)


def test_summaries_keep_what_jsonb_cannot_hold(pg: PostgresServer) -> None:
    store = _store(pg)
    key: SessionKey = {"project_key": "p", "session_id": "s1"}
    prompt = {"type": "user", "is_prompt": True, "uuid": "q", "timestamp": "2026-12-05T00:00:01.000Z",
              "message": {"role": "user", "content": "nul\x00 and 1e+300"}}

    async def go() -> None:
        try:
            await store.append(key, [header("s1"), prompt])
            [summary] = await store.list_session_summaries("p")
            assert summary["data"]["am"]["first_prompt"] == "nul\x00 and 1e+300"
            await store.append(key, [{"type": "result", "uuid": "r", "total_cost_usd": math.nan}])
            [summary] = await store.list_session_summaries("p")
            assert math.isnan(summary["data"]["am"]["cost"]) and summary["data"]["am"]["turns"] == 1
        finally:
            await store.aclose()

    anyio.run(go)


def test_a_dropped_connection_is_replaced(pg: PostgresServer) -> None:
    store = _store(pg)
    key: SessionKey = {"project_key": "p", "session_id": "s"}

    async def drop() -> None:
        await _sql(pg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'agent-magic' AND pid <> pg_backend_pid()")

    async def go() -> None:
        try:
            await store.append(key, [{"type": "x", "uuid": "1"}])
            await drop()
            # Safe to retry (everything has a uuid, or nothing is written): it just works.
            await store.append(key, [{"type": "x", "uuid": "2"}])
            await drop()
            assert await store.load(key) == [{"type": "x", "uuid": "1"}, {"type": "x", "uuid": "2"}]
            await drop()
            # An entry without a uuid could be stored twice by a blind retry: the caller hears of it.
            with pytest.raises(StoreError, match="the next call reconnects") as err:
                await store.append(key, [{"type": "x"}])
            assert "\n" not in str(err.value)
            await store.append(key, [{"type": "x"}])
            assert await store.load(key) == [{"type": "x", "uuid": "1"}, {"type": "x", "uuid": "2"}, {"type": "x"}]
            # aclose() closes; the next call opens a new connection.
            await store.aclose()
            assert await store.list_sessions("p") != []
        finally:
            await store.aclose()

    anyio.run(go)


def test_stores_creating_the_tables_at_once_do_not_collide(pg: PostgresServer) -> None:
    prefix = _prefix()
    stores = [_store(pg, prefix) for _ in range(6)]

    async def go() -> None:
        try:
            async with anyio.create_task_group() as tg:
                for s in stores:
                    tg.start_soon(s.list_sessions, "p")
        finally:
            for s in stores:
                await s.aclose()

    anyio.run(go)


def test_a_store_serves_one_event_loop_after_another(pg: PostgresServer) -> None:
    """As in a notebook whose cells each run their store calls in a new event loop."""
    store = _store(pg)
    key: SessionKey = {"project_key": "p", "session_id": "s"}

    async def busy(n: int) -> None:
        async with anyio.create_task_group() as tg:  # calls waiting on one another's turn
            tg.start_soon(store.append, key, [{"type": "x", "uuid": f"{n}a"}])
            tg.start_soon(store.append, key, [{"type": "x", "uuid": f"{n}b"}])

    try:
        anyio.run(busy, 1)
        anyio.run(busy, 2)
        loaded = anyio.run(store.load, key)
        assert loaded is not None and sorted(e["uuid"] for e in loaded) == ["1a", "1b", "2a", "2b"]
    finally:
        anyio.run(store.aclose)
