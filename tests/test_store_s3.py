"""The S3 backend of the shared session store, against a real S3 API (moto's server mode).

The SDK's conformance suite, two hosts appending to one transcript, a batch
another store object stored already (put again, counted once), a transcript's
parts merged into one object (each entry read once by readers and writers racing
the merges), listing summaries through a project's pack, and the one-line errors
for an unreachable endpoint, a missing bucket and refused credentials. Blobs, the writer lease (including racing
acquirers, decided by the server's conditional puts) and session summaries (racing
appenders included), the same for every backend, are tested in
``test_store_contract.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("obstore")

from agent_magic._errors import ConfigurationError
from agent_magic.store import SessionKey, StoreError, open_session_store
from agent_magic.store import s3 as s3_backend
from agent_magic.store.s3 import S3SessionStore

from .s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3, closed_port, moto_s3
from .test_store_contract import header, turn

BUCKET = "agent-magic-tests"


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoS3]:
    with moto_s3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dummy credentials moto takes, and nothing of the developer's AWS setup."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)


def make_store(s3: MotoS3, prefix: str | None = None) -> S3SessionStore:
    """A store in its own prefix (a fresh one unless ``prefix`` names a shared one)."""
    return S3SessionStore(BUCKET, prefix or f"t-{uuid.uuid4().hex}", endpoint_url=s3.endpoint_url, region=REGION)


def run(fn: Any) -> None:
    anyio.run(fn)


def test_passes_the_agent_sdks_session_store_conformance_suite(s3: MotoS3) -> None:
    conformance = pytest.importorskip("claude_agent_sdk.testing").run_session_store_conformance
    made: list[S3SessionStore] = []

    def fresh() -> S3SessionStore:
        made.append(make_store(s3))
        return made[-1]

    run(lambda: conformance(fresh))
    # Each contract had its own prefix, so nothing leaked between them.
    assert len({s.prefix for s in made}) == len(made) >= 10


def test_open_by_url(s3: MotoS3) -> None:
    store = open_session_store(f"s3://{BUCKET}/team/sessions/?endpoint_url={s3.endpoint_url}&region=eu-west-1")
    assert isinstance(store, S3SessionStore)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == (
        BUCKET, "team/sessions", s3.endpoint_url, "eu-west-1",
    )
    bare = open_session_store("s3://bucket-only")
    assert isinstance(bare, S3SessionStore) and (bare.prefix, bare.endpoint_url, bare.region) == ("", None, None)
    with pytest.raises(ConfigurationError, match="Unknown parameter 'secret'"):
        open_session_store("s3://b/p?secret=x")
    with pytest.raises(ConfigurationError, match="Credentials do not go in") as err:
        open_session_store("s3://AKIAEXAMPLE:hunter2secret@bucket/p")
    assert "hunter2secret" not in str(err.value)
    with pytest.raises(ConfigurationError, match="needs a bucket"):
        open_session_store("s3:///p")


def test_a_store_opened_by_url_reads_and_writes(s3: MotoS3) -> None:
    prefix = f"url-{uuid.uuid4().hex}"
    store = open_session_store(f"s3://{BUCKET}/{prefix}?endpoint_url={s3.endpoint_url}&region={REGION}")
    key: SessionKey = {"project_key": "/home/me/my project", "session_id": "s1"}

    async def go() -> None:
        await store.append(key, [{"type": "user", "n": 1}])
        assert await store.load(key) == [{"type": "user", "n": 1}]
        await store.aclose()
        assert await store.load(key) == [{"type": "user", "n": 1}]  # a new client after aclose
        # The layout the module docstring promises.
        names = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])
        assert len(names) == 2
        assert names[0].startswith(f"{prefix}/projects/%2Fhome%2Fme%2Fmy%20project/s1/main/")
        assert names[1] == f"{prefix}/summaries/%2Fhome%2Fme%2Fmy%20project/s1.json"

    run(go)


def test_two_hosts_append_to_one_transcript(s3: MotoS3) -> None:
    prefix = f"hosts-{uuid.uuid4().hex}"
    a, b = make_store(s3, prefix), make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "shared"}

    async def writer(store: S3SessionStore, name: str) -> None:
        for i in range(6):
            batch = [{"type": "user", "uuid": f"{name}-{i}", "from": name, "i": i}, {"type": "note", "from": name, "i": i}]
            await store.append(key, batch)
            if i == 2:
                # A retried batch (the first put landed, its answer was lost): not written again.
                await store.append(key, batch[:1])
            await anyio.lowlevel.checkpoint()

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, a, "a")
            tg.start_soon(writer, b, "b")
        # The other host writes a uuid host a wrote already: the first copy wins on load.
        await b.append(key, [{"type": "user", "uuid": "a-0", "from": "b", "i": 99}])

        lines = await make_store(s3, prefix).load(key)
        assert lines is not None
        for name in ("a", "b"):
            mine = [(e["type"], e["i"]) for e in lines if e["from"] == name]
            # All of each writer's lines, in its order; the duplicate uuid and the retried batch left out.
            assert mine == [(t, i) for i in range(6) for t in ("user", "note")]
        uuids = [e["uuid"] for e in lines if "uuid" in e]
        assert len(uuids) == len(set(uuids)) == 12
        assert len(lines) == 24
        assert await a.load(key) == lines == await b.load(key)
        # One object per append that had something new: the retried batches were never sent.
        listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/projects/proj/shared/main/")
        assert listed["KeyCount"] == 6 + 6 + 1

    run(go)


def test_a_batch_another_store_object_stored_is_put_again_but_loaded_and_counted_once(s3: MotoS3) -> None:
    """S3 cannot check a batch's uuids before putting it: only the store object that wrote them knows.

    A batch sent again by another store object is put again; load keeps the first copy,
    and the summary object, which remembers hashes of the uuids it counted, does not count
    it. (That no backend stores or counts a re-sent batch twice is in the contract tests.)
    """
    prefix = f"summary-resend-{uuid.uuid4().hex}"
    a = make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    batches = [turn("a", n) for n in range(3)]

    def parts() -> int:
        return int(s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/projects/proj/s/main/")["KeyCount"])

    async def go() -> None:
        await a.append(key, [header("s"), *batches[0]])
        for batch in batches[1:]:
            await a.append(key, batch)
        await a.append(key, batches[1])  # this store object wrote it: not sent at all
        assert parts() == 3
        loaded = await a.load(key)
        [summary] = await a.list_session_summaries("proj")
        c = make_store(s3, prefix)
        await c.append(key, [e for batch in batches for e in batch])
        await c.append(key, batches[2])  # c wrote it now: not sent
        assert parts() == 4
        assert await c.load(key) == loaded
        [again] = await c.list_session_summaries("proj")
        assert again["data"] == summary["data"] and again["data"]["am"]["turns"] == 3
        assert again["mtime"] >= summary["mtime"]
        # Only the prompts are remembered (an answer folds the same however often it comes), hashed.
        raw = s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/summaries/proj/s.json")["Body"].read()
        counted = json.loads(raw)["counted"]
        assert len(counted) == 3 and all(len(tag) == 12 for tag in counted)
        assert b"a-0-q" not in raw

    run(go)


def _objects(s3: MotoS3, prefix: str, folder: str = "projects/proj/s/main") -> list[str]:
    """The names of the objects in a transcript's folder."""
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{folder}/")
    return sorted(o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", ()))


def _batch(n: int, tag: str = "") -> list[dict[str, Any]]:
    """A small batch: an entry with a uuid, and one without (never de-duplicated) every other time."""
    batch: list[dict[str, Any]] = [{"type": "user", "uuid": f"{tag}u{n}", "n": n, "from": tag}]
    if n % 2:
        batch.append({"type": "progress", "n": n, "from": tag})
    return batch


def test_many_appends_are_merged_and_load_returns_each_entry_once(s3: MotoS3) -> None:
    prefix = f"merge-{uuid.uuid4().hex}"
    store = make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    expected = [e for n in range(200) for e in _batch(n)]
    most = 0

    async def go() -> None:
        nonlocal most
        for n in range(200):
            await store.append(key, _batch(n))
            most = max(most, len(_objects(s3, prefix)))
        assert await store.load(key) == expected
        assert await make_store(s3, prefix).load(key) == expected
        names = _objects(s3, prefix)
        assert most <= s3_backend._MERGE_AFTER + 1 and len(names) <= s3_backend._MERGE_AFTER + 1
        # One merged object, named by the range of parts it holds, and the parts appended since.
        [merged] = [n for n in names if n.endswith(".merged.jsonl")]
        first, last, mtime = merged[: -len(".merged.jsonl")].split("_")
        assert first < last and len(mtime) == 13
        body = s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/projects/proj/s/main/{merged}")["Body"].read()
        head = json.loads(body.splitlines()[0])["merged"]
        assert [p for p, _ in head] == sorted(p for p, _ in head) and head[0][0] == f"{first}.jsonl"
        assert len(head) == 200 - (len(names) - 1)  # every part appended, except those since
        assert all(n > f"{last}.jsonl" for n in names if n != merged)

    run(go)


def test_merging_keeps_list_sessions_mtime(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"merge-mtime-{uuid.uuid4().hex}"
    store = make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    folder = store._key_dir(key)
    gets: list[str] = []
    real_get = store._get

    async def counting_get(path: str, doing: str) -> Any:
        gets.append(path)
        return await real_get(path, doing)

    monkeypatch.setattr(store, "_get", counting_get)

    async def merge_after_a_second(merge: Any) -> None:
        [before] = await store.list_sessions("proj")
        await anyio.sleep(1.1)  # S3's LastModified has seconds: a merged object's own would be later
        monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
        await merge()
        monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 64)
        assert len(_objects(s3, prefix)) == 1
        assert await store.list_sessions("proj") == [before]
        [summary] = await store.list_session_summaries("proj")
        assert summary["mtime"] >= before["mtime"]

    async def go() -> None:
        for n in range(6):
            await store.append(key, _batch(n))
        # Merged by another host's load.
        await merge_after_a_second(lambda: make_store(s3, prefix).load(key))
        for n in range(6, 11):
            await store.append(key, _batch(n))
        # Merged by the writer, which GETs only the other host's merged object: the parts it wrote it knows.
        gets.clear()
        await merge_after_a_second(lambda: _merge(store, folder))
        [got] = [g for g in gets if "/projects/" in g]
        assert got.endswith(".merged.jsonl")
        expected = [e for n in range(11) for e in _batch(n)]
        assert await store.load(key) == expected == await make_store(s3, prefix).load(key)

    run(go)


async def _merge(store: S3SessionStore, folder: str) -> None:
    await store._merge_if_due(folder, await store._read(folder, "merging"))


def test_a_reader_racing_a_merge_reads_each_entry_once(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"merge-race-{uuid.uuid4().hex}"
    writer, merger, reader = (make_store(s3, prefix) for _ in range(3))
    writer._merge_refused = reader._merge_refused = True  # only the merger merges
    monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    expected: list[dict[str, Any]] = []
    lists: list[list[str]] = []
    real_list, real_delete = reader._list_here, merger._delete

    async def append(n: int, to: SessionKey = key) -> None:
        await writer.append(to, _batch(n))
        if to == key:
            expected.extend(_batch(n))

    async def listed_then(during: Any) -> Any:
        """The reader's load, with ``during()`` run between its first listing and its GETs."""

        async def list_here(folder: str, doing: str) -> Any:
            listed = await real_list(folder, doing)
            lists.append(sorted(m["path"].rsplit("/", 1)[-1] for m in listed))
            if len(lists) == 1:
                await during()
            return listed

        lists.clear()
        monkeypatch.setattr(reader, "_list_here", list_here)
        try:
            return await reader.load(key)
        finally:
            monkeypatch.setattr(reader, "_list_here", real_list)

    async def go() -> None:
        for n in range(10):
            await append(n)
        # It listed ten parts, merged and deleted before its GETs: it lists again and reads the merged object.
        assert await listed_then(lambda: merger.load(key)) == expected
        assert len(lists) == 2 and len(lists[0]) == 10 and [n[-13:] for n in lists[1]] == [".merged.jsonl"]

        # It lists the merged object and the parts it holds (merged, not deleted yet), and GETs them all.
        for n in range(10, 16):
            await append(n)

        async def delete_after_a_load(paths: list[str], doing: str) -> None:
            assert await reader.load(key) == expected
            await real_delete(paths, doing)

        monkeypatch.setattr(merger, "_delete", delete_after_a_load)
        assert await merger.load(key) == expected

        # It lists the parts and the merged object holding them, and GETs after the parts are deleted:
        # the merged object it listed holds them, so it need not list again.
        other: SessionKey = {"project_key": "proj", "session_id": "other"}
        for n in range(6):
            await append(n, other)
        put, listing, deleted = anyio.Event(), anyio.Event(), anyio.Event()

        async def delete_once_listed(paths: list[str], doing: str) -> None:
            put.set()  # the merged object is there; its parts are not deleted yet
            await listing.wait()
            await real_delete(paths, doing)
            deleted.set()

        async def list_then_wait(folder: str, doing: str) -> Any:
            listed = await real_list(folder, doing)
            lists.append(sorted(m["path"].rsplit("/", 1)[-1] for m in listed))
            listing.set()
            await deleted.wait()
            return listed

        monkeypatch.setattr(merger, "_delete", delete_once_listed)
        monkeypatch.setattr(reader, "_list_here", list_then_wait)
        lists.clear()
        got: list[Any] = []

        async def read_other() -> None:
            await put.wait()
            got.append(await reader.load(other))

        async with anyio.create_task_group() as tg:
            tg.start_soon(merger.load, other)
            tg.start_soon(read_other)
        assert got == [[e for n in range(6) for e in _batch(n)]]
        assert len(lists) == 1 and len(lists[0]) == 7
        monkeypatch.setattr(reader, "_list_here", real_list)
        monkeypatch.setattr(merger, "_delete", real_delete)

        # It lists a merged object that is merged again (and deleted) before its GET: it lists again.
        for n in range(16, 22):
            await append(n)
        assert await listed_then(lambda: merger.load(key)) == expected
        assert len(lists) == 2 and len(lists[0]) == 7 and len(lists[1]) == 1 and lists[0][0] != lists[1][0]

    run(go)


def test_readers_and_mergers_in_a_loop_never_see_a_duplicate_or_a_gap(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 3)
    prefix = f"merge-loop-{uuid.uuid4().hex}"
    writer, merger, reader = (make_store(s3, prefix) for _ in range(3))
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    expected = [e for n in range(60) for e in _batch(n)]
    loads: list[list[dict[str, Any]]] = []
    done = anyio.Event()

    async def write() -> None:
        for n in range(60):
            await writer.append(key, _batch(n))  # merges every few appends
        done.set()

    async def load_in_a_loop(store: S3SessionStore) -> None:
        while not done.is_set():
            loads.append(await store.load(key) or [])  # merges too, past 3 objects

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            tg.start_soon(load_in_a_loop, merger)
            tg.start_soon(load_in_a_loop, reader)
        assert len(loads) > 10
        for got in loads:
            # The writer appends one batch at a time: any read sees the first so many, each once.
            assert got == expected[: len(got)]
        assert await make_store(s3, prefix).load(key) == expected

    run(go)


def test_two_hosts_appending_and_merging_lose_nothing(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
    prefix = f"merge-hosts-{uuid.uuid4().hex}"
    a, b = make_store(s3, prefix), make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}

    async def write(store: S3SessionStore, tag: str) -> None:
        for n in range(40):
            await store.append(key, _batch(n, tag))
            if n % 7 == 0:
                await store.load(key)
            await anyio.lowlevel.checkpoint()

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, a, "a")
            tg.start_soon(write, b, "b")
        lines = await make_store(s3, prefix).load(key)
        assert lines is not None
        for tag in ("a", "b"):
            # All of each host's entries, once each, in its order.
            assert [e for e in lines if e["from"] == tag] == [e for n in range(40) for e in _batch(n, tag)]
        assert len(lines) == 2 * 60
        assert await a.load(key) == lines == await b.load(key)
        assert len(_objects(s3, prefix)) <= 2 * 4

    run(go)


def test_two_hosts_merging_the_same_parts_write_one_object(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"merge-same-{uuid.uuid4().hex}"
    a, b = make_store(s3, prefix), make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    folder = a._key_dir(key)
    expected = [e for n in range(8) for e in _batch(n)]

    async def go() -> None:
        for n in range(8):
            await a.append(key, _batch(n))
        monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
        read_a, read_b = await a._read(folder, "test"), await b._read(folder, "test")
        await a._merge_if_due(folder, read_a)
        await b._merge_if_due(folder, read_b)  # the create-only put is refused: b deletes nothing
        [merged] = _objects(s3, prefix)
        assert merged.endswith(".merged.jsonl")
        assert await make_store(s3, prefix).load(key) == expected

    run(go)


def test_a_part_landing_inside_a_merged_range_keeps_its_place(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that lands after a merge listed the folder, named before the merge's last part."""
    monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
    prefix = f"merge-late-{uuid.uuid4().hex}"
    store = make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}

    async def go() -> None:
        for n in range(5):
            await store.append(key, _batch(n))  # the fifth merges
        [merged] = _objects(s3, prefix)
        parts = [p for p, _ in json.loads(
            s3.client().get_object(Bucket=BUCKET, Key=f"{prefix}/projects/proj/s/main/{merged}")["Body"].read().splitlines()[0]
        )["merged"]]
        late = parts[2][:-len(".jsonl")] + "x.jsonl"  # sorts between the third and the fourth part
        s3.client().put_object(
            Bucket=BUCKET, Key=f"{prefix}/projects/proj/s/main/{late}", Body=b'{"type":"late","n":-1}\n{"type":"user","uuid":"u1"}\n'
        )
        expected = [*_batch(0), *_batch(1), *_batch(2), {"type": "late", "n": -1}, *_batch(3), *_batch(4)]
        assert await make_store(s3, prefix).load(key) == expected
        for n in range(5, 9):
            await store.append(key, _batch(n))  # merged again, the late part with the rest
        expected += [e for n in range(5, 9) for e in _batch(n)]
        assert len(_objects(s3, prefix)) == 1
        assert await make_store(s3, prefix).load(key) == expected

    run(go)


def test_a_store_that_may_not_merge_still_loads(s3: MotoS3, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(s3_backend, "_MERGE_AFTER", 4)
    store = make_store(s3)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    real_put = store._put

    async def refusing_put(path: str, data: bytes, doing: str, mode: Any = None) -> str | None:
        if path.endswith(".merged.jsonl"):
            raise StoreError("S3 refused access (AccessDenied)")
        return await real_put(path, data, doing, mode)

    monkeypatch.setattr(store, "_put", refusing_put)

    async def go() -> None:
        for n in range(12):
            await store.append(key, _batch(n))
        assert await store.load(key) == [e for n in range(12) for e in _batch(n)]
        assert len(_objects(s3, store.prefix)) == 12

    run(go)
    # Said once, not at every append or load.
    assert [r.getMessage() for r in caplog.records if "merging" in r.getMessage()] == [
        "Stopped merging S3 transcript parts (S3 refused access (AccessDenied)); loads read each part."
    ]


def test_summaries_come_from_a_pack_and_follow_appends_and_deletes(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"summary-pack-{uuid.uuid4().hex}"
    store = make_store(s3, prefix)
    sids = [f"s{i:03d}" for i in range(70)]
    gets: list[str] = []
    real_get = store._get

    async def counting_get(path: str, doing: str) -> Any:
        gets.append(path)
        return await real_get(path, doing)

    monkeypatch.setattr(store, "_get", counting_get)

    async def turns(project_key: str) -> dict[str, int]:
        return {s["session_id"]: s["data"]["am"]["turns"] for s in await store.list_session_summaries(project_key)}

    async def go() -> None:
        await _each_session(store, sids)
        await store.append({"project_key": "other", "session_id": "elsewhere"}, [header("elsewhere")])
        assert await store.list_session_summaries("never-written") == []
        gets.clear()
        assert await turns("proj") == dict.fromkeys(sids, 1)
        assert len(gets) == 1 + 70  # no pack yet, then every summary; then the pack is written
        pack = f"{prefix}/summary-packs/proj.json"
        s3.client().head_object(Bucket=BUCKET, Key=pack)

        await store.append({"project_key": "proj", "session_id": "s003"}, turn("s003", 1))
        await store.append({"project_key": "proj", "session_id": "s004", "subpath": "meta"}, [{"type": "meta", "title": "T"}])
        await store.append({"project_key": "proj", "session_id": "s005", "subpath": "checkpoints"}, [{"type": "x"}])
        await store.delete({"project_key": "proj", "session_id": "s006"})
        await store.delete({"project_key": "proj", "session_id": "s007", "subpath": "meta"})  # not the session
        gets.clear()
        listed = await store.list_session_summaries("proj")
        # The pack, and only the two summaries that changed since it was written.
        assert sorted(gets) == sorted([pack, *(f"{prefix}/summaries/proj/{s}.json" for s in ("s003", "s004"))])
        by_id = {s["session_id"]: s for s in listed}
        assert sorted(by_id) == [s for s in sids if s != "s006"]
        assert by_id["s003"]["data"]["am"]["turns"] == 2
        assert by_id["s004"]["data"]["custom_title"] == by_id["s004"]["data"]["am"]["title"] == "T"
        mtimes = {e["session_id"]: e["mtime"] for e in await store.list_sessions("proj")}
        assert all(by_id[s]["mtime"] >= mtimes[s] for s in by_id)
        assert [s["session_id"] for s in await store.list_session_summaries("other")] == ["elsewhere"]

    run(go)


async def _each_session(store: S3SessionStore, sids: list[str]) -> None:
    async def one(sid: str) -> None:
        await store.append({"project_key": "proj", "session_id": sid}, [header(sid), *turn(sid, 0)])

    async with anyio.create_task_group() as tg:
        for sid in sids:
            tg.start_soon(one, sid)


def test_a_listing_that_may_not_write_the_pack_still_lists(s3: MotoS3, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(s3)
    sids = [f"s{i:03d}" for i in range(64)]
    real_put = store._put

    async def refusing_put(path: str, data: bytes, doing: str, mode: Any = None) -> None:
        if "/summary-packs/" in path:
            raise StoreError("S3 refused access (AccessDenied)")
        await real_put(path, data, doing, mode)

    monkeypatch.setattr(store, "_put", refusing_put)

    async def go() -> None:
        await _each_session(store, sids)
        for _ in range(2):
            assert sorted(s["session_id"] for s in await store.list_session_summaries("proj")) == sids

    run(go)
    # Said once, not at every listing.
    assert [r.getMessage() for r in caplog.records if "without a pack" in r.getMessage()] == [
        "Listing S3 session summaries without a pack (S3 refused access (AccessDenied)); each listing reads them one by one."
    ]


def test_a_host_whose_clock_is_behind_appends_after_what_it_read(s3: MotoS3) -> None:
    prefix = f"clock-{uuid.uuid4().hex}"
    store = make_store(s3, prefix)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}
    # A part another host wrote a minute "ahead" of this one's clock.
    ahead = int(time.time() * 1000) + 60_000
    s3.client().put_object(
        Bucket=BUCKET,
        Key=f"{prefix}/projects/proj/s/main/{ahead:013d}-0000000000-ffffffff.jsonl",
        Body=b'{"type":"user","n":1}\n',
    )

    async def go() -> None:
        assert await store.load(key) == [{"type": "user", "n": 1}]
        await store.append(key, [{"type": "user", "n": 2}])
        assert await make_store(s3, prefix).load(key) == [{"type": "user", "n": 1}, {"type": "user", "n": 2}]

    run(go)


def test_load_skips_lines_that_are_not_json_objects(s3: MotoS3) -> None:
    prefix = f"junk-{uuid.uuid4().hex}"
    s3.client().put_object(
        Bucket=BUCKET,
        Key=f"{prefix}/projects/proj/s/main/0000000000001-0000000000-00000000.jsonl",
        Body=b'{"type":"user","n":1}\n[1,2]\nnot json\n{"type":"user","n":2',
    )
    run(lambda: _expect(make_store(s3, prefix).load({"project_key": "proj", "session_id": "s"}), [{"type": "user", "n": 1}]))


async def _expect(awaitable: Any, value: Any) -> None:
    assert await awaitable == value


def test_an_unreachable_endpoint_is_one_line(s3: MotoS3) -> None:
    store = open_session_store(f"s3://{BUCKET}/p?endpoint_url=http://127.0.0.1:{closed_port()}")
    key: SessionKey = {"project_key": "proj", "session_id": "s"}

    async def go() -> None:
        calls = (
            lambda: store.load(key), lambda: store.append(key, [{"type": "x"}]),
            lambda: store.get_blob("ab"), lambda: store.missing_blobs(["ab"]),
        )
        for call in calls:
            with pytest.raises(StoreError) as err:
                await call()
            message = str(err.value)
            assert "\n" not in message and "Cannot reach S3 (http://127.0.0.1:" in message and "endpoint_url" in message

    started = time.monotonic()
    run(go)
    assert time.monotonic() - started < 60  # a few quick retries, not the library's three minutes


def test_a_missing_bucket_is_one_line(s3: MotoS3) -> None:
    store = S3SessionStore("no-such-bucket-here", "p", endpoint_url=s3.endpoint_url, region=REGION)
    key: SessionKey = {"project_key": "proj", "session_id": "s"}

    async def go() -> None:
        calls = (
            lambda: store.load(key), lambda: store.append(key, [{"type": "x"}]), lambda: store.list_sessions("proj"),
            lambda: store.list_session_summaries("proj"),
            lambda: store.list_subkeys(key), lambda: store.delete(key), lambda: store.get_blob("ab"),
            lambda: store.put_blob("ab", b"x"), lambda: store.acquire_lease("s", "me", 30),
        )
        for call in calls:
            with pytest.raises(StoreError) as err:
                await call()
            assert str(err.value) == (
                f"The S3 bucket 'no-such-bucket-here' does not exist (s3://no-such-bucket-here at {s3.endpoint_url}): "
                "create it, or fix the bucket in the session store URL."
            )

    run(go)


def test_refused_credentials_are_one_line_without_the_secret(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    # moto checks signatures against its IAM users only when told to: none exist, so every key is refused.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    store = make_store(s3)

    async def go() -> None:
        calls = (
            lambda: store.load({"project_key": "p", "session_id": "s"}),
            lambda: store.put_blob("ab", b"x"), lambda: store.get_blob("ab"),
        )
        for call in calls:
            with pytest.raises(StoreError) as err:
                await call()
            message = str(err.value)
            assert "\n" not in message and "refused access" in message and "AWS_SECRET_ACCESS_KEY" in message
            assert SECRET_ACCESS_KEY not in message and ACCESS_KEY_ID not in message

    run(go)


def test_no_credentials_at_all_is_one_line(s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # Where the client library looks last (an EC2 instance's metadata service): nothing there.
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    store = make_store(s3)

    async def go() -> None:
        with pytest.raises(StoreError) as err:
            await store.load({"project_key": "p", "session_id": "s"})
        message = str(err.value)
        assert "\n" not in message and message.startswith("Found no usable AWS credentials") and "AWS_ACCESS_KEY_ID" in message

    run(go)


def test_sessions_and_subkeys_with_awkward_names(s3: MotoS3) -> None:
    store = make_store(s3)
    names = ["..", ".", "a b", "ü/x", "100%", "s?x=1&y"]
    n = itertools.count()

    async def go() -> None:
        for name in names:
            await store.append({"project_key": "/p/..", "session_id": name}, [{"type": "x", "n": next(n)}])
            await store.append({"project_key": "/p/..", "session_id": name, "subpath": f"subagents/{name}"}, [{"type": "x"}])
        listed = await store.list_sessions("/p/..")
        assert sorted(s["session_id"] for s in listed) == sorted(names)
        assert all(s["mtime"] > 1e12 for s in listed)
        for i, name in enumerate(names):
            assert await store.load({"project_key": "/p/..", "session_id": name}) == [{"type": "x", "n": i}]
            assert await store.list_subkeys({"project_key": "/p/..", "session_id": name}) == [f"subagents/{name}"]
        # A subkey's delete leaves its own subkeys; a session's delete takes everything of it.
        key: SessionKey = {"project_key": "q", "session_id": "s"}
        await store.append({**key, "subpath": "a"}, [{"type": "x"}])
        await store.append({**key, "subpath": "a/b"}, [{"type": "y"}])
        assert await store.load({**key, "subpath": "a"}) == [{"type": "x"}]  # not a/b's lines
        assert await store.load({**key, "subpath": "a/b"}) == [{"type": "y"}]
        assert await store.load(key) is None
        await store.delete({**key, "subpath": "a"})
        assert await store.list_subkeys(key) == ["a/b"]
        await store.delete(key)
        assert await store.list_subkeys(key) == [] and await store.list_sessions("q") == []
        with pytest.raises(ValueError):
            await store.append({"project_key": "q", "session_id": ""}, [{"type": "x"}])

    run(go)
