"""The file backend of the shared session store: the SDK's conformance suite, blobs and the writer lease."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest

from agent_magic._errors import ConfigurationError
from agent_magic.store import LeaseHeldError, open_session_store
from agent_magic.store.files import FileSessionStore


def test_passes_the_agent_sdks_session_store_conformance_suite(tmp_path: Path) -> None:
    conformance = pytest.importorskip("claude_agent_sdk.testing").run_session_store_conformance
    n = itertools.count()
    anyio.run(lambda: conformance(lambda: FileSessionStore(tmp_path / f"store{next(n)}")))


def test_open_by_url_and_uuids_are_idempotent(tmp_path: Path) -> None:
    store = open_session_store((tmp_path / "shared store").as_uri())
    assert isinstance(store, FileSessionStore) and store.root == tmp_path / "shared store"
    key = {"project_key": "/home/me/project", "session_id": "s1"}

    async def go() -> None:
        await store.append(key, [{"type": "user", "uuid": "a"}, {"type": "x"}])
        # A retried batch (the first attempt landed, its answer was lost) is stored once;
        # lines without a uuid are never de-duplicated.
        await store.append(key, [{"type": "user", "uuid": "a"}, {"type": "x"}, {"type": "user", "uuid": "b"}])
        assert await store.load(key) == [{"type": "user", "uuid": "a"}, {"type": "x"}, {"type": "x"}, {"type": "user", "uuid": "b"}]
        # Another process sees the same lines (nothing is cached that it could not see).
        other = FileSessionStore(store.root)
        assert await other.load(key) == await store.load(key)

    anyio.run(go)


def test_blobs_are_content_addressed(tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path)

    async def go() -> None:
        assert await store.get_blob("ab12") is None
        await store.put_blob("ab12", b"\x00data")
        await store.put_blob("ab12", b"\x00data")
        assert await store.get_blob("ab12") == b"\x00data"
        assert await store.missing_blobs(["ab12", "cd34"]) == ["cd34"]
        with pytest.raises(ValueError):
            await store.get_blob("../etc")

    anyio.run(go)


def test_one_writer_per_session(tmp_path: Path) -> None:
    a, b = FileSessionStore(tmp_path), FileSessionStore(tmp_path)

    async def go() -> None:
        lease = await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        await a.renew_lease(lease)
        with pytest.raises(LeaseHeldError) as err:
            await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)
        assert err.value.holder == "host-a:1" and err.value.age_s < 5
        assert "host-a:1" in str(err.value) and "--take-over" in str(err.value)
        # A host that is gone: the person takes the lease over.
        await b.acquire_lease("sess-1", "host-b:2", ttl_s=30, take_over=True)
        with pytest.raises(LeaseHeldError):
            await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        await a.release_lease("sess-1", "host-a:1")  # not a's: nothing happens
        with pytest.raises(LeaseHeldError):
            await a.acquire_lease("sess-1", "host-a:1", ttl_s=30)
        await b.release_lease("sess-1", "host-b:2")
        await a.acquire_lease("sess-1", "host-a:1", ttl_s=0.05)
        # An expired lease is free.
        await anyio.sleep(0.1)
        await b.acquire_lease("sess-1", "host-b:2", ttl_s=30)

    anyio.run(go)


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(ConfigurationError, match="file:///path, s3://bucket/prefix"):
        open_session_store("ftp://x/y")
