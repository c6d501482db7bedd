"""The file backend of the shared session store: the SDK's conformance suite, its URL and uuid idempotency.

Blobs and the writer lease, the same for every backend, are tested in ``test_store_contract.py``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest

from agent_magic._errors import ConfigurationError
from agent_magic.store import open_session_store
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


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(ConfigurationError, match="file:///path, s3://bucket/prefix"):
        open_session_store("ftp://x/y")
