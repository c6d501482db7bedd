"""What every shared-store backend promises about blobs and the writer lease (issue 16).

One set of tests, run against each backend (``file``, ``redis``, ``postgresql``, ``s3``)
on a real server the tests start, as ``test_store_sync.py`` does: content-addressed
blobs, one writer per session, and hosts racing for a lease. Each test gets a fresh
namespace (folder, key prefix, table prefix or object prefix) shared by the stores
it makes, each store standing for one host. What only one backend does (its URL, its
errors, its tables) is tested in its own ``test_store_<backend>.py``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from agent_magic.store import LeaseHeldError, SessionStoreBackend, open_session_store


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
