"""The Redis backend of the shared session store, against a real ``redis-server`` the tests start.

The SDK's conformance suite, uuid idempotency and order across hosts, a session stored
before summaries existed, and the errors a person sees when the server or the password
is wrong. Blobs, the writer lease and session summaries, the same for every backend,
are tested in ``test_store_contract.py``.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("redis.asyncio")

from agent_magic.store import SessionKey, StoreError, open_session_store
from agent_magic.store.redis import RedisSessionStore
from agent_magic.store.summary import summary_info
from tests.redis_server import RedisServer, free_port
from tests.test_store_contract import header, turn


def _start(folder: Path, password: str | None = None) -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/setup does it)")
    return RedisServer(folder, password=password).start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _start(tmp_path_factory.mktemp("redis-auth"), password="s3cret-" + secrets.token_hex(6))
    yield server
    server.stop()


def _prefix() -> str:
    return f"test-{secrets.token_hex(6)}:"


class Stores:
    """Makes stores on one fresh key prefix (several "hosts" sharing a store) and closes them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = _prefix()
        self.made: list[RedisSessionStore] = []

    def __call__(self, prefix: str | None = None) -> RedisSessionStore:
        store = RedisSessionStore(self.url, prefix=prefix or self.prefix)
        self.made.append(store)
        return store

    def run(self, go: Callable[[], Awaitable[None]]) -> None:
        """Run ``go`` in a new event loop, then close every store made so far, in that loop."""

        async def main() -> None:
            try:
                await go()
            finally:
                for s in self.made:
                    await s.aclose()

        anyio.run(main)


@pytest.fixture
def stores(redis_server: RedisServer) -> Stores:
    return Stores(redis_server.url)


KEY: SessionKey = {"project_key": "/home/me/project", "session_id": "s1"}


def test_passes_the_agent_sdks_session_store_conformance_suite(stores: Stores) -> None:
    conformance = pytest.importorskip("claude_agent_sdk.testing").run_session_store_conformance
    # Each make_store() must be isolated: a fresh key prefix per call.
    stores.run(lambda: conformance(lambda: stores(_prefix())))


def test_open_by_url() -> None:
    store = open_session_store("redis://127.0.0.1:6390/0?prefix=team-a")
    assert type(store) is RedisSessionStore
    assert store.prefix == "team-a:"
    assert type(open_session_store("rediss://example.invalid:6380/1")) is RedisSessionStore
    assert open_session_store("redis://localhost").prefix == "agent-magic:"  # type: ignore[attr-defined]
    assert open_session_store("redis://localhost?prefix=").prefix == ""  # type: ignore[attr-defined]
    # The password stays out of what a person sees of the store.
    secret = open_session_store("redis://me:hunter2@db.example:6390/3?prefix=x:&socket_timeout=5")
    assert "hunter2" not in repr(secret) and "db.example:6390/3" in repr(secret)


def test_entries_round_trip_and_keys_do_not_collide(stores: Stores) -> None:
    store = stores()
    entry = {"type": "user", "uuid": "u1", "message": {"content": [{"text": "héllo ☃ \u0000 \"q\" 🙂"}]},
             "n": 1.5, "big": 2**60, "none": None, "list": [True, False, []]}

    async def go() -> None:
        await store.append(KEY, [entry])
        assert await store.load(KEY) == [entry]
        # Separators inside the parts of a key are quoted: these are four different transcripts.
        keys: list[SessionKey] = [
            {"project_key": "a:b", "session_id": "c"},
            {"project_key": "a", "session_id": "b:c"},
            {"project_key": "a", "session_id": "b", "subpath": "c"},
            {"project_key": "a", "session_id": "b:c", "subpath": "subagents/x:y"},
        ]
        for i, k in enumerate(keys):
            await store.append(k, [{"type": "x", "i": i}])
        for i, k in enumerate(keys):
            assert await store.load(k) == [{"type": "x", "i": i}]
        assert await store.list_subkeys({"project_key": "a", "session_id": "b:c"}) == ["subagents/x:y"]
        assert [s["session_id"] for s in await store.list_sessions("a")] == ["b:c"]
        with pytest.raises(TypeError):
            await store.append(KEY, ["not an object"])  # type: ignore[list-item]

    stores.run(go)


def test_uuids_are_idempotent_across_hosts(stores: Stores) -> None:
    host_a, host_b = stores(), stores()

    async def go() -> None:
        await host_a.append(KEY, [{"type": "user", "uuid": "a"}, {"type": "x"}])
        # A batch retried from another host (the first attempt landed, its answer was lost) is
        # stored once; lines without a uuid are never de-duplicated; a uuid repeated in one batch counts once.
        await host_b.append(KEY, [{"type": "user", "uuid": "a"}, {"type": "x"},
                                  {"type": "user", "uuid": "b"}, {"type": "user", "uuid": "b", "dup": 1}])
        expected = [{"type": "user", "uuid": "a"}, {"type": "x"}, {"type": "x"}, {"type": "user", "uuid": "b"}]
        assert await host_a.load(KEY) == expected
        assert await host_b.load(KEY) == expected
        # The same uuid under another key is another entry.
        sub: SessionKey = {**KEY, "subpath": "subagents/agent-1"}
        await host_b.append(sub, [{"type": "user", "uuid": "a"}])
        assert await host_a.load(sub) == [{"type": "user", "uuid": "a"}]

        # Both hosts race to append the same batches: each uuid lands exactly once.
        race: SessionKey = {**KEY, "session_id": "race"}
        batches = [[{"type": "user", "uuid": f"r{i}-{j}"} for j in range(5)] for i in range(40)]

        async def send(store: RedisSessionStore) -> None:
            for batch in batches:
                await store.append(race, batch)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, host_a)
            tg.start_soon(send, host_b)
        loaded = await host_a.load(race)
        assert loaded is not None
        assert [e["uuid"] for e in loaded] == [e["uuid"] for b in batches for e in b]

        # A deleted transcript forgets its uuids: appending them again stores them again.
        await host_a.delete(KEY)
        assert await host_b.load(sub) is None
        await host_b.append(KEY, [{"type": "user", "uuid": "a"}])
        assert await host_a.load(KEY) == [{"type": "user", "uuid": "a"}]

    stores.run(go)


def test_concurrent_appends_keep_each_writers_order(stores: Stores) -> None:
    one, two = stores(), stores()

    async def writer(store: RedisSessionStore, name: str) -> None:
        for i in range(100):
            entries: list[dict[str, Any]] = [{"type": "x", "w": name, "i": i, "k": k} for k in range(3)]
            if i % 2:
                entries[0]["uuid"] = f"{name}-{i}"
            await store.append(KEY, entries)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, one, "one")
            tg.start_soon(writer, two, "two")
        loaded = await one.load(KEY)
        assert loaded is not None and len(loaded) == 600
        for name in ("one", "two"):
            mine = [(e["i"], e["k"]) for e in loaded if e["w"] == name]
            assert mine == [(i, k) for i in range(100) for k in range(3)]
        # A batch is never split by another writer's entries.
        for start in range(0, 600, 3):
            assert len({(e["w"], e["i"]) for e in loaded[start:start + 3]}) == 1
        [listed] = await two.list_sessions(KEY["project_key"])
        assert listed["session_id"] == "s1" and listed["mtime"] > 1e12

    stores.run(go)


def test_a_session_stored_before_summaries_is_folded_whole_on_its_next_append(
    stores: Stores, redis_server: RedisServer
) -> None:
    import redis.asyncio

    store = stores()

    async def go() -> None:
        await store.append(KEY, [header("s1"), *turn("a", 0), *turn("a", 1)])
        await store.append({**KEY, "subpath": "meta"}, [{"type": "meta", "title": "Old"}])
        raw = redis.asyncio.Redis.from_url(redis_server.url)
        try:  # as an older agent-magic left it: no summaries
            await raw.delete(store.prefix + "summaries:" + "%2Fhome%2Fme%2Fproject")
        finally:
            await raw.aclose()
        assert await store.list_session_summaries(KEY["project_key"]) == []
        await store.append(KEY, turn("a", 1))  # stored already: still folds what is there
        [summary] = await store.list_session_summaries(KEY["project_key"])
        info = summary_info(summary)
        assert info is not None and (info.num_turns, info.title, info.first_prompt) == (2, "Old", "p a0")
        await store.append(KEY, turn("a", 2))
        [summary] = await store.list_session_summaries(KEY["project_key"])
        assert summary["data"]["am"]["turns"] == 3

    stores.run(go)


def test_a_store_reopens_after_aclose_and_in_a_new_event_loop(stores: Stores) -> None:
    store = stores()

    async def first() -> None:
        await store.append(KEY, [{"type": "x", "n": 1}])
        await store.aclose()
        await store.append(KEY, [{"type": "x", "n": 2}])

    async def second() -> None:
        assert await store.load(KEY) == [{"type": "x", "n": 1}, {"type": "x", "n": 2}]

    stores.run(first)
    stores.run(second)


def test_an_item_another_program_wrote_is_an_error(stores: Stores, redis_server: RedisServer) -> None:
    import redis.asyncio

    store = stores()

    async def go() -> None:
        await store.append(KEY, [{"type": "x"}])
        raw = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            [name] = await raw.keys(store.prefix + "transcript:*")
            await raw.rpush(name, b"not json")
        finally:
            await raw.aclose()
        with pytest.raises(StoreError, match="another program writes under this key prefix"):
            await store.load(KEY)

    stores.run(go)


def _assert_one_line_store_error(store: RedisSessionStore, needle: str, password: str | None = None) -> None:
    async def go() -> None:
        try:
            with pytest.raises(StoreError) as err:
                await store.load(KEY)
            message = str(err.value)
            assert "\n" not in message and needle in message, message
            if password:
                assert password not in message and password not in repr(store)
        finally:
            await store.aclose()

    anyio.run(go)


def test_a_wrong_password_says_what_to_check(redis_server_with_password: RedisServer) -> None:
    server = redis_server_with_password
    assert server.password
    wrong = server.password[::-1]
    _assert_one_line_store_error(
        RedisSessionStore.from_url(server.url.replace(server.password, wrong)), "Check the user name and password", wrong
    )
    _assert_one_line_store_error(
        RedisSessionStore.from_url(server.url.replace(f":{server.password}@", "")), "Check the user name and password"
    )
    good = RedisSessionStore.from_url(server.url + "?prefix=" + _prefix())

    async def go() -> None:
        try:
            await good.append(KEY, [{"type": "x"}])
            assert await good.load(KEY) == [{"type": "x"}]
        finally:
            await good.aclose()

    anyio.run(go)


def test_an_unreachable_server_says_what_to_check() -> None:
    password = "pw-" + secrets.token_hex(4)
    store = RedisSessionStore.from_url(f"redis://:{password}@127.0.0.1:{free_port()}/0")
    _assert_one_line_store_error(store, "Check that the server runs", password)
    assert "127.0.0.1" in repr(store)
