"""What every shared-store backend promises about blobs, the writer lease and session summaries.

One set of tests, run against each backend (``file``, ``redis``, ``postgresql``, ``s3``)
on a real server the tests start, as ``test_store_sync.py`` does: content-addressed
blobs, one writer per session, hosts racing for a lease, and the summary each append
keeps of its session (``list_session_summaries``). Each test gets a fresh namespace
(folder, key prefix, table prefix or object prefix) shared by the stores it makes,
each store standing for one host. What only one backend does (its URL, its errors,
its tables) is tested in its own ``test_store_<backend>.py``, with :func:`header` and
:func:`turn` from here for the entries.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic.store import LeaseHeldError, SessionKey, SessionStoreBackend, open_session_store
from agent_magic.store.summary import summary_info


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("redis.asyncio", reason="the redis extra is not installed")
    from .redis_server import RedisServer

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except FileNotFoundError:
        pytest.skip(
            "redis-server is not installed (apt-get install redis-server; .ci/setup does it)"
        )
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from .pg_server import find_bindir, running_server

    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/pg_ctl; .ci/setup installs Debian's postgresql)"
        )
    with running_server(bindir) as server:
        yield server.url()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="moto (the test extra) runs the S3 API")
    pytest.importorskip("obstore", reason="the s3 extra is not installed")
    from .s3_server import moto_s3

    with moto_s3() as server:
        server.create_bucket("sessions")
        yield server.endpoint_url


class Hosts:
    """Makes stores on one backend and one fresh namespace (several hosts sharing a store).

    Each call is another host; :meth:`run` runs a test's body in a new event loop and
    closes every store made so far in that loop (their clients belong to it).
    """

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.made: list[SessionStoreBackend] = []

    def __call__(self) -> SessionStoreBackend:
        store = open_session_store(self.url)
        self.made.append(store)
        return store

    def run(self, go: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await go()
            finally:
                for store in self.made:
                    await store.aclose()

        anyio.run(main)


@pytest.fixture(params=["file", "redis", "postgresql", "s3"])
def hosts(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hosts:
    """Stores of one backend per run, on a namespace no other test uses."""
    fresh = f"t{secrets.token_hex(4)}"
    if request.param == "file":
        return Hosts(request.param, (tmp_path / "shared").as_uri())
    if request.param == "redis":
        return Hosts(request.param, f"{request.getfixturevalue('redis_url')}?prefix={fresh}:")
    if request.param == "postgresql":
        return Hosts(
            request.param, f"{request.getfixturevalue('postgres_url')}?table_prefix={fresh}_"
        )
    from .s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

    endpoint = request.getfixturevalue("s3_endpoint")
    # moto's dummy credentials, and nothing of the developer's AWS setup.
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    return Hosts(request.param, f"s3://sessions/{fresh}?endpoint_url={endpoint}&region={REGION}")


# -- blobs ---------------------------------------------------------------------------------


def test_blobs_are_content_addressed(hosts: Hosts) -> None:
    store, other_host = hosts(), hosts()
    data = bytes(range(256)) * 10  # every byte value, NUL included
    big = secrets.token_bytes(1 << 20)

    async def go() -> None:
        assert await store.get_blob("ab12") is None
        await store.put_blob("ab12", data)
        await store.put_blob("ab12", data)  # there already: fine
        await other_host.put_blob("ab12", data)
        assert await other_host.get_blob("ab12") == data
        # The digest is the caller's and the store never re-hashes: bytes that do not
        # match it are stored as given, and a digest already there keeps what it has.
        await other_host.put_blob("ab12", b"something else")
        assert await store.get_blob("ab12") == data
        await store.put_blob("e3b0", b"")
        assert await store.get_blob("e3b0") == b""  # empty, not missing
        await store.put_blob("f00d", big)
        assert await other_host.get_blob("f00d") == big
        # Only the absent digests, in the order asked, repeats included.
        asked = ["cd34", "ab12", "e3b0", "ef56", "f00d", "cd34"]
        assert await other_host.missing_blobs(asked) == ["cd34", "ef56", "cd34"]
        assert await other_host.missing_blobs([]) == []
        many = [f"{i:04x}" for i in range(40)]
        await store.put_blob(many[7], b"7")
        assert await other_host.missing_blobs(many) == many[:7] + many[8:]

    hosts.run(go)


def test_a_digest_that_is_not_one_is_refused(hosts: Hosts) -> None:
    store = hosts()
    # A path out of the store, a key separator, SQL, nothing.
    not_digests = ["../etc", "a/b", "x:y", "x' OR '1", ""]

    async def go() -> None:
        for bad in not_digests:
            with pytest.raises(ValueError, match="not a digest"):
                await store.get_blob(bad)
            with pytest.raises(ValueError, match="not a digest"):
                await store.put_blob(bad, b"x")
            with pytest.raises(ValueError, match="not a digest"):
                await store.missing_blobs(["ab12", bad])

    hosts.run(go)


# -- the writer lease ----------------------------------------------------------------------


def test_one_writer_per_session(hosts: Hosts) -> None:
    a, b = hosts(), hosts()

    async def go() -> None:
        lease = await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        assert (lease.session_id, lease.holder, lease.ttl_s) == ("sess-1", "host-a:1", 30)
        assert lease.acquired_ms > 1e12
        await anyio.sleep(0.3)
        renewed = await a.renew_lease(lease)
        assert renewed.holder == "host-a:1"
        assert renewed.acquired_ms == lease.acquired_ms  # renewing keeps when it was first taken

        with pytest.raises(LeaseHeldError) as err:
            await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        assert err.value.session_id == "sess-1" and err.value.holder == "host-a:1"
        assert 0 <= err.value.age_s < 0.25  # counted from the renewal, not the first acquisition
        message = str(err.value)
        assert "host-a:1" in message and "--take-over" in message
        assert f"renewed {err.value.age_s:.0f} s ago" in message
        await anyio.sleep(0.3)
        with pytest.raises(LeaseHeldError) as err:
            await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        assert 0.25 <= err.value.age_s < 5

        # Another session's lease is another lease.
        await b.acquire_lease("sess-2", "host-b:2", ttl_s=30)

        # A host that is gone: the person takes the lease over, and it starts anew.
        taken = await b.acquire_lease("sess-1", "host-b:2", ttl_s=30, take_over=True)
        assert taken.holder == "host-b:2" and taken.acquired_ms > lease.acquired_ms
        with pytest.raises(LeaseHeldError) as err:
            await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        assert err.value.holder == "host-b:2"
        await a.release_lease("sess-1", "host-a:1")  # not a's: nothing happens
        with pytest.raises(LeaseHeldError):
            await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        await a.release_lease("never-taken", "host-a:1")  # nothing to release: nothing happens

        await b.release_lease("sess-1", "host-b:2")
        await b.release_lease("sess-1", "host-b:2")  # released already: nothing happens
        await a.acquire_lease("sess-1", "host-a:1", ttl_s=0.2)
        with pytest.raises(LeaseHeldError):
            await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        # An expired lease is free (for the file and S3 stores by the hosts' clocks,
        # for Redis and PostgreSQL by the server's).
        await anyio.sleep(0.5)
        await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        with pytest.raises(LeaseHeldError):
            await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)

        # None of that touched the other session's lease.
        with pytest.raises(LeaseHeldError) as err:
            await a.acquire_lease("sess-2", "host-a:1", ttl_s=30)
        assert err.value.holder == "host-b:2"
        await a.acquire_lease("sess-3", "host-a:1", ttl_s=30)

    hosts.run(go)


@pytest.mark.parametrize("start", ["absent", "released", "expired"])
def test_the_lease_goes_to_exactly_one_of_many_racing_hosts(hosts: Hosts, start: str) -> None:
    racers = [hosts() for _ in range(8)]
    won: list[str] = []
    refused: list[str] = []

    async def acquire(i: int, session: str) -> None:
        try:
            lease = await racers[i].acquire_lease(session, f"host-{i}", ttl_s=30)
            won.append(lease.holder)
        except LeaseHeldError as e:
            refused.append(e.holder)

    async def go() -> None:
        # Connect (and create PostgreSQL's tables) first, so the acquisitions overlap.
        for racer in racers:
            await racer.list_sessions("warm-up")
        for round_ in range(8):
            session = f"race-{round_}"
            if start == "released":
                await racers[0].acquire_lease(session, "setup", ttl_s=30)
                await racers[0].release_lease(session, "setup")
            elif start == "expired":
                await racers[0].acquire_lease(session, "setup", ttl_s=0.05)
                await anyio.sleep(0.1)
            won.clear()
            refused.clear()
            async with anyio.create_task_group() as tg:
                for i in range(len(racers)):
                    tg.start_soon(acquire, i, session)
            assert len(won) == 1, (round_, won)
            assert refused == won * (len(racers) - 1), (round_, refused)

    hosts.run(go)


@pytest.mark.parametrize("hosts", ["redis", "postgresql"], indirect=True)
def test_a_lease_is_timed_by_the_servers_clock(
    hosts: Hosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis and PostgreSQL time leases on the server: a host's own clock cannot expire a live one."""
    a, b = hosts(), hosts()
    real_time = time.time

    async def go() -> None:
        await b.list_sessions("warm-up")  # connected before its clock goes wrong
        await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real_time() + 3600)
            with pytest.raises(LeaseHeldError) as err:
                await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
            assert err.value.holder == "host-a:1" and 0 <= err.value.age_s < 5
        await a.acquire_lease("sess-1", "host-a:1", ttl_s=0.2)
        await anyio.sleep(0.5)
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real_time() - 3600)
            # Expired, whatever b's clock says.
            taken = await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        assert taken.holder == "host-b:2"

    hosts.run(go)


# -- session summaries -----------------------------------------------------------------------

HEADER_TIME = "2026-12-05T00:00:00.000Z"
HEADER_MS = 1796428800000  # HEADER_TIME in epoch milliseconds
PROJECT = "/home/me/project"
KEY: SessionKey = {"project_key": PROJECT, "session_id": "s1"}


def header(session_id: str) -> dict[str, Any]:
    """A session's first line: what its summary takes the cwd, model and creation time from."""
    return {
        "type": "session",
        "session_id": session_id,
        "cwd": "/w",
        "scope": "/w",
        "model": "m",
        "timestamp": HEADER_TIME,
    }


def turn(host: str, i: int) -> list[dict[str, Any]]:
    """One batch: the prompt ``p <host><i>`` and its answer, with uuids (stored once if re-sent)."""
    ts = f"2026-12-05T00:{i // 60:02d}:{i % 60:02d}.000Z"
    prompt = {"role": "user", "content": f"p {host}{i}"}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}
    q = {"type": "user", "is_prompt": True, "message": prompt, "uuid": f"{host}-{i}-q"}
    a = {"type": "assistant", "message": answer, "uuid": f"{host}-{i}-a"}
    return [{**q, "timestamp": ts}, {**a, "timestamp": ts}]


def test_summaries_count_each_stored_prompt_once_across_hosts(hosts: Hosts) -> None:
    one, two, reader = hosts(), hosts(), hosts()
    turns, renames = 20, 10  # per racing host: enough to interleave, little enough to stay quick
    # Redis, PostgreSQL and the file store fold under the transcript's lock (or in its
    # transaction), in the order load returns the entries, and stamp the summary with the
    # time list_sessions reports. S3 folds by compare-and-swap after putting the part (two
    # racing hosts may fold in another order than load's) and reports the summary object's
    # LastModified, never before the part's.
    s3 = hosts.backend == "s3"

    async def send(store: SessionStoreBackend, host: str) -> None:
        for i in range(turns):
            await store.append(KEY, turn(host, i))

    async def rename(store: SessionStoreBackend) -> None:
        for i in range(renames):
            await store.append({**KEY, "subpath": "meta"}, [{"type": "meta", "title": f"T{i}"}])

    async def both(*, renaming: bool = False) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, one, "a")
            tg.start_soon(send, two, "b")
            if renaming:
                tg.start_soon(rename, reader)

    async def go() -> None:
        await one.append(KEY, [header("s1")])
        # A third host renames the session meanwhile: its appends fold into the same summary.
        await both(renaming=True)
        [summary] = await reader.list_session_summaries(PROJECT)
        assert summary["session_id"] == "s1" and summary["data"]["am"]["turns"] == 2 * turns
        assert summary["data"]["am"]["title"] == f"T{renames - 1}"
        # Never older than the session's listed write time (newer when a rename came last) ...
        [listed] = await reader.list_sessions(PROJECT)
        assert summary["mtime"] >= listed["mtime"] > 1e12
        # ... and stamped with that very time by an append to the main transcript.
        await one.append(KEY, turn("a", turns))
        [summary] = await reader.list_session_summaries(PROJECT)
        [listed] = await reader.list_sessions(PROJECT)
        assert summary["mtime"] >= listed["mtime"]
        if not s3:
            assert summary["mtime"] == listed["mtime"]
        loaded = await reader.load(KEY)
        assert loaded is not None and len(loaded) == 1 + 2 * (2 * turns + 1)
        info = summary_info(summary)
        assert info is not None and (info.session_id, info.num_turns) == ("s1", 2 * turns + 1)
        assert (info.cwd, info.scope, info.model) == ("/w", "/w", "m")
        assert info.created_at == HEADER_MS  # the header's timestamp
        first = next(e for e in loaded if e.get("is_prompt"))  # whichever host landed first
        if s3:
            assert info.first_prompt in ("p a0", "p b0")
        else:
            assert info.first_prompt == first["message"]["content"]

        # Every batch sent again (the answers were lost), by the hosts that sent them and by one
        # that starts afresh (nothing cached of what the others wrote), a batch of it twice:
        # nothing counts twice (S3 stores the fresh host's batch again; load keeps first copies).
        await both()
        fresh = hosts()
        await fresh.append(KEY, [e for h in "ab" for i in range(turns) for e in turn(h, i)])
        await fresh.append(KEY, turn("b", 7))
        assert await reader.load(KEY) == loaded
        [again] = await reader.list_session_summaries(PROJECT)
        assert again["data"] == summary["data"]
        # PostgreSQL stamps the transcript though nothing was new, and S3 puts the fresh host's
        # part and the summary again: the write time moves on. Redis and files write nothing.
        [listed] = await reader.list_sessions(PROJECT)
        assert again["mtime"] >= listed["mtime"] and again["mtime"] >= summary["mtime"]
        if not s3:
            assert again["mtime"] == listed["mtime"]
        if hosts.backend in ("file", "redis"):
            assert again == summary  # nothing stored, nothing written

    hosts.run(go)


def test_a_summary_folds_the_main_transcript_and_meta_only(hosts: Hosts) -> None:
    one, two = hosts(), hosts()

    async def go() -> None:
        await one.append(KEY, [header("s1"), *turn("a", 0)])
        [before] = await two.list_session_summaries(PROJECT)
        # The meta sub-transcript (title, tag) folds in, under the SDK's field names too ...
        named = {"type": "meta", "title": "Named", "tag": "t"}
        await two.append({**KEY, "subpath": "meta"}, [named])
        # ... a subagent's prompts and checkpoint records do not.
        await two.append({**KEY, "subpath": "subagents/agent-1"}, turn("sub", 0))
        await two.append({**KEY, "subpath": "checkpoints"}, [{"type": "x", "uuid": "c1"}])
        [titled] = await one.list_session_summaries(PROJECT)
        assert titled["data"]["custom_title"] == titled["data"]["am"]["title"] == "Named"
        assert titled["data"]["tag"] == "t"
        info = summary_info(titled)
        assert info is not None and (info.title, info.tag) == ("Named", "t")
        assert (info.num_turns, info.first_prompt) == (1, "p a0")
        assert titled["mtime"] >= before["mtime"]
        # Deleting a sub-transcript is not deleting the session.
        await one.delete({**KEY, "subpath": "meta"})
        await one.delete({**KEY, "subpath": "subagents/agent-1"})
        [kept] = await two.list_session_summaries(PROJECT)
        assert kept["session_id"] == "s1" and kept["data"]["am"]["turns"] == 1

    hosts.run(go)


def test_summaries_are_listed_per_project_and_go_with_their_session(hosts: Hosts) -> None:
    one, two = hosts(), hosts()
    other: SessionKey = {"project_key": "/elsewhere", "session_id": "s2"}

    async def ids(store: SessionStoreBackend, project_key: str) -> list[str]:
        return sorted(s["session_id"] for s in await store.list_session_summaries(project_key))

    async def go() -> None:
        assert await one.list_session_summaries(PROJECT) == []
        await one.append(KEY, [header("s1"), *turn("a", 0), *turn("a", 1)])
        await one.append({**KEY, "session_id": "s3"}, [header("s3")])
        await one.append(other, [header("s2")])
        assert await ids(two, PROJECT) == ["s1", "s3"]
        assert await ids(two, "/elsewhere") == ["s2"]
        assert await ids(two, "/home/me") == [] and await ids(two, "never-written") == []
        # Delete removes the session's summary, and no other.
        await two.delete(KEY)
        assert await ids(one, PROJECT) == ["s3"]
        assert await ids(one, "/elsewhere") == ["s2"]
        # Appending again after a delete starts a new summary.
        await two.append(KEY, [header("s1"), *turn("c", 0)])
        [again] = [s for s in await one.list_session_summaries(PROJECT) if s["session_id"] == "s1"]
        info = summary_info(again)
        assert info is not None and (info.num_turns, info.first_prompt) == (1, "p c0")

    hosts.run(go)


@pytest.mark.parametrize(
    "hosts",
    [
        "file",
        "redis",
        "postgresql",
        "s3",
    ],
    indirect=True,
)
def test_a_deleted_session_forgets_its_uuids(hosts: Hosts) -> None:
    writer, deleter = hosts(), hosts()
    batch = [header("s1"), *turn("a", 0), *turn("a", 1)]

    async def go() -> None:
        await writer.append(KEY, batch)
        await deleter.delete(KEY)
        assert await writer.load(KEY) is None
        # The host that wrote them sends them again (pushing the session whole): stored and
        # counted again, in a new summary.
        await writer.append(KEY, batch)
        assert await deleter.load(KEY) == batch
        [summary] = await deleter.list_session_summaries(PROJECT)
        assert summary["data"]["am"]["turns"] == 2

    hosts.run(go)
