"""Shared session stores (issue #16): resume on a fresh host, listing, and forks, per backend.

Each backend's server is started here as the tests start it (``tests/pg_server.py``,
``tests/redis_server.py``, ``tests/s3_server.py``: PostgreSQL, Redis and moto's S3 on
127.0.0.1; the file backend is a folder), with a fresh key prefix per store::

    python bench/shared_stores.py [--backends file,redis,postgresql,s3] [--turns 50,500]
                                  [--sessions 10000] [--runs 3] [--no-claude-code] [--json PATH]

Per backend it prints one table:

1. **Resume on a fresh host.** One session of N turns is driven on host A (its own
   ``AGENT_MAGIC_HOME``) with ``session_store=URL``; each turn Writes a new small file and
   answers, so every turn has a checkpoint record and one backup. The client pushes each
   step in the background and once more before the result (``SessionSync.push``): the
   pushes per turn, their total time, and the last one (the one a turn waits for) are timed. Then, on host B (a new empty home per
   run): ``SessionSync.pull`` alone (median of ``--runs``; what it moved: lines, records,
   backups, store calls, bytes read; on S3 the objects under the session), and
   ``AgentClient(AgentOptions(resume=sid, session_store=URL))`` from connect to the fake
   server receiving the new prompt's first request (its recorded ``.time``), split into
   the store listing and the pull the client does first. Each resume is a real turn and is
   pushed, so run r resumes N + r turns.
2. **list_sessions over --sessions sessions** in the store itself: the N=min(--turns)
   session plus one-entry sessions appended by concurrent workers (each its own store
   object) up to --sessions, each a header and one prompt as agent-magic writes them;
   building is timed, then ``await store.list_sessions(...)`` (median of --runs, after one
   untimed call that connects), then ``agent_magic.list_sessions()`` on a fresh host (a new
   empty home per run, ``AGENT_MAGIC_STORE`` set): it reads the store's session summaries,
   checked to list every session with its turns and to download none. Then the small
   session is resumed again on fresh hosts, now among that many sessions.
3. **Fork of the N=max(--turns) session**: agent-magic's ``fork_session`` makes the fork by
   reference (time, bytes of the new session folder, checked to read as its parent does);
   whether the fork is in the shared store afterwards, and what pushing it costs. With claude-agent-sdk installed, Claude Code's
   CLI builds an equivalent session (same prompts, same fake) once; its ``fork_session``
   helper (local) is timed beside it, and per backend the SDK's ``import_session_to_store``
   and ``fork_session_via_store`` on the same store.

Every run is checked (no error result or tool error, the resumed request carries every
earlier prompt, line/record/backup counts match between host A, the store and host B, the
listing returns every session); a failed check becomes the table cell instead of a number.
No timing is asserted. Progress is printed every ~10 % of long loops.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BACKENDS = ("file", "redis", "postgresql", "s3")
#: Concurrent writers (each its own store object: connection, client) when building many sessions.
WORKERS = {"file": 4, "redis": 16, "postgresql": 8, "s3": 16}
BUCKET = "sessions"


# -- small helpers ---------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


class Progress:
    """Prints ``done/total`` about every 10 % of a long loop."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self.step = max(1, total // 10)
        self.t0 = time.perf_counter()

    def tick(self, n: int = 1) -> None:
        before = self.done // self.step
        self.done += n
        if self.done // self.step != before or self.done == self.total:
            log(f"    {self.what}: {self.done:,}/{self.total:,}  {time.perf_counter() - self.t0:6.1f} s")


class Failed(Exception):
    """A check failed: the message goes into the table instead of a number."""


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:,.1f} ms" if s < 1 else f"{s:,.2f} s"


def _fmt_b(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:,.2f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _median_range(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{_fmt_s(statistics.median(xs))} ({_fmt_s(min(xs))}-{_fmt_s(max(xs))})"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


@contextlib.contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def attempt(cell: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a failure is recorded as ``cell[name] = "fails: ..."`` (or ``error: ...``) and returns None."""
    try:
        return fn()
    except Failed as e:
        cell[name] = f"fails: {e}"
    except Exception as e:  # the table says what broke; the run goes on with the next measurement
        cell[name] = f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return None


# -- the servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def backend_server(name: str, tmp: Path) -> Iterator[tuple[Callable[[], str], str]]:
    """Start ``name``'s server as the tests do; yield (a function giving a fresh store URL, a description)."""
    def tag() -> str:
        return f"b{secrets.token_hex(4)}"

    if name == "file":
        yield (lambda: (tmp / f"shared-{tag()}").as_uri()), f"a folder on the local disk ({tmp})"
    elif name == "redis":
        from tests.redis_server import RedisServer

        server = RedisServer(tmp / "redis").start()
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
        try:
            yield (lambda: f"{server.url}?prefix={tag()}:"), f"redis-server {next((v for v in version if v.startswith('v=')), '?')[2:]} on 127.0.0.1, no persistence"
        finally:
            server.stop()
    elif name == "postgresql":
        from tests.pg_server import find_bindir, running_server

        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl)")
        with running_server(bindir) as server:
            yield (lambda: f"{server.url()}?table_prefix={tag()}_"), f"PostgreSQL {bindir.parent.name} on 127.0.0.1, fsync=off"
    elif name == "s3":
        import moto

        from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, moto_s3

        with env_vars(AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY), moto_s3() as server:
            server.create_bucket(BUCKET)
            yield ((lambda: f"s3://{BUCKET}/{tag()}?endpoint_url={server.endpoint_url}&region={REGION}"),
                   f"moto {moto.__version__} S3 server (threaded, in this process) on 127.0.0.1")
    else:
        raise ValueError(name)


# -- instrumentation -----------------------------------------------------------------------

#: (what, seconds, result) for every SessionSync.push / pull / remote_session_ids call in this process.
SYNC_CALLS: list[tuple[str, float, Any]] = []


def instrument_sync() -> None:
    """Time SessionSync's calls where the client makes them (inside a turn, on connect)."""
    from agent_magic.store.sync import SessionSync

    def timed(name: str, fn: Any) -> Any:
        async def wrapper(self: Any, *a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = await fn(self, *a, **k)
            except BaseException as e:
                SYNC_CALLS.append((name, time.perf_counter() - t0, e))
                raise
            SYNC_CALLS.append((name, time.perf_counter() - t0, out))
            return out

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    for name in ("push", "pull", "remote_session_ids"):
        fn = getattr(SessionSync, name)
        if not hasattr(fn, "__wrapped__"):
            setattr(SessionSync, name, timed(name, fn))


def instrument_lease(cls: type) -> None:
    """Time a backend class's lease calls (a turn takes the lease at its start and gives it up at its end)."""
    for name in ("acquire_lease", "release_lease"):
        fn = getattr(cls, name)
        if hasattr(fn, "__wrapped__"):
            continue

        async def wrapper(self: Any, *a: Any, __fn: Any = fn, __name: str = name, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await __fn(self, *a, **k)
            finally:
                SYNC_CALLS.append((__name, time.perf_counter() - t0, None))

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        setattr(cls, name, wrapper)


class Counting:
    """A store proxy counting calls, entries and bytes (used in untimed runs only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.entries_read = self.entries_written = 0
        self.bytes_read = self.bytes_written = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        async def call(*a: Any, **k: Any) -> Any:
            out = await attr(*a, **k)
            self.calls[name] += 1
            if name == "load" and out:
                self.entries_read += len(out)
                self.bytes_read += sum(len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) + 1 for e in out)
            elif name == "get_blob" and out is not None:
                self.bytes_read += len(out)
            elif name == "append":
                entries = a[1] if len(a) > 1 else k.get("entries", [])
                self.entries_written += len(entries)
                self.bytes_written += sum(len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) + 1 for e in entries)
            elif name == "put_blob":
                self.bytes_written += len(a[1] if len(a) > 1 else k.get("data", b""))
            return out

        return call


def calls_text(c: Counting) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(c.calls.items()))


# -- the workload ---------------------------------------------------------------------------


def write_prompt(work: Path, k: int) -> str:
    """Turn k: Write ``f000k.txt`` (a new small file: one checkpoint record and one backup), then answer."""
    from bench._script import prompt

    name = f"f{k:04d}.txt"
    return prompt("Write", {"file_path": str(work / name), "content": f"file {k}\n"}, note=f"Turn {k}: write {name}.")


def answer_prompt(note: str) -> str:
    from bench._script import prompt

    return prompt(None, note=note)


def count_prompts(body: dict[str, Any]) -> int:
    """User messages that are a bench prompt (text carrying ``bench-call:``)."""
    from bench._script import MARK

    n = 0
    for m in body.get("messages") or []:
        content = m.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if m.get("role") == "user" and any(isinstance(b, dict) and b.get("type") == "text" and MARK in str(b.get("text")) for b in blocks):
            n += 1
    return n


def _opts(work: Path, home: Path, url: str, **kw: Any) -> Any:
    from agent_magic import AgentOptions

    return AgentOptions(cwd=work, home=home, permission_mode="acceptEdits", session_store=url, **kw)


def _key(sid: str, sub: str | None = None) -> dict[str, str]:
    from agent_magic.store.sync import PROJECT_KEY

    k = {"project_key": PROJECT_KEY, "session_id": sid}
    if sub:
        k["subpath"] = sub
    return k


async def build_session(url: str, work: Path, home: Path, n: int, server: Any) -> dict[str, Any]:
    """Drive ``n`` Write turns on host A with the shared store set; time each turn's push."""
    from agent_magic import AgentClient, ResultMessage, UserMessage

    out: dict[str, Any] = {"errors": [], "turn_s": [], "push_s": [], "push_moved": [], "lease_s": [], "pending_max": 0}
    prog = Progress(f"host A, {n} turns", n)
    t_start = time.perf_counter()
    async with AgentClient(_opts(work, home, url)) as client:
        for k in range(1, n + 1):
            SYNC_CALLS.clear()
            t0 = time.perf_counter()
            await client.query(write_prompt(work, k))
            result = None
            async for m in client.receive_response():
                if isinstance(m, UserMessage) and isinstance(m.content, list):
                    for b in m.content:
                        if getattr(b, "is_error", False):
                            out["errors"].append(f"turn {k}: tool error {str(getattr(b, 'content', ''))[:150]}")
                elif isinstance(m, ResultMessage):
                    result = m
            out["turn_s"].append(time.perf_counter() - t0)
            out["lease_s"].append(sum(c[1] for c in SYNC_CALLS if c[0] in ("acquire_lease", "release_lease")))
            # Per step in the background while the turn runs, then one last push awaited before the result.
            pushes = [c for c in SYNC_CALLS if c[0] == "push"]
            if not pushes or any(isinstance(p[2], BaseException) for p in pushes):
                out["errors"].append(f"turn {k}: {len(pushes)} pushes {[str(p[2])[:100] for p in pushes]}")
            else:
                out["push_s"].append(pushes[-1][1])  # the one on the turn's path
                out.setdefault("push_total_s", []).append(sum(p[1] for p in pushes))
                out.setdefault("pushes", []).append(len(pushes))
                moved = [p[2] for p in pushes]
                out["push_moved"].append((sum(r.lines for r in moved), sum(r.records for r in moved), sum(r.blobs for r in moved)))
            if result is None or result.is_error or result.result != "done":
                out["errors"].append(f"turn {k}: {None if result is None else (result.subtype, (result.result or '')[:150])}")
            else:
                out["session_id"] = result.session_id
            if client.sync_error:
                out["errors"].append(f"turn {k}: sync_error {client.sync_error[:150]}")
            out["pending_max"] = max(out["pending_max"], client.sync_pending)
            server.clear_requests()
            prog.tick()
    out["seconds"] = time.perf_counter() - t_start
    return out


async def store_counts(url: str, sid: str) -> dict[str, Any]:
    """What the shared store holds of ``sid``: lines, records, whether every backup is there; S3: objects."""
    from agent_magic.store import open_session_store
    from agent_magic.store.sync import RECORDS, _digests

    store = open_session_store(url)
    try:
        lines = await store.load(_key(sid)) or []
        records = await store.load(_key(sid, RECORDS)) or []
        digests = sorted(_digests(records))
        missing = await store.missing_blobs(digests) if digests else []
        out: dict[str, Any] = {"lines": len(lines), "records": len(records), "blobs": len(digests), "blobs_missing": len(missing)}
        if url.startswith("s3://"):
            metas = await store._list(store._session_dir(_key(sid)["project_key"], sid), "bench")  # type: ignore[attr-defined]
            kinds: collections.Counter[str] = collections.Counter()
            for m in metas:
                rel = m["path"].split(f"/{sid}/", 1)[-1]
                kinds["main" if rel.startswith("main/") else rel.split("/")[1] if rel.startswith("sub/") else "other"] += 1
            out["s3_objects"] = dict(kinds)
            out["s3_object_bytes"] = sum(int(m["size"]) for m in metas)
        return out
    finally:
        await store.aclose()


async def pull_once(url: str, home: Path, sid: str, counting: bool = False, blobs: bool = True) -> dict[str, Any]:
    """``SessionSync.pull`` into an empty home (the store opened fresh: its connection is inside the time)."""
    from agent_magic.store import open_session_store
    from agent_magic.store.local import SessionStore
    from agent_magic.store.sync import SessionSync

    local = SessionStore.at(home)
    inner = open_session_store(url)
    remote: Any = Counting(inner) if counting else inner
    sync = SessionSync(local, remote)
    gc.collect()
    try:
        t0 = time.perf_counter()
        res = await sync.pull(sid, blobs=blobs)
        dt = time.perf_counter() - t0
    finally:
        await inner.aclose()
    if res is None:
        raise Failed("the store has no such session")
    d = local.session_dir(sid)
    out = {"seconds": dt, "lines": res.lines, "records": res.records, "blobs": res.blobs,
           "local_bytes": folder_bytes(d) + folder_bytes(local.blobs.root or Path("/nonexistent"))}
    if counting:
        out.update({"calls": calls_text(remote), "bytes_read": remote.bytes_read, "entries_read": remote.entries_read})
    return out


async def resume_once(url: str, work: Path, home: Path, sid: str, note: str, server: Any) -> dict[str, Any]:
    """Resume on a host that never saw ``sid``: connect to the fake's first request of the new prompt."""
    from agent_magic import AgentClient, ResultMessage

    server.clear_requests()
    gc.collect()
    SYNC_CALLS.clear()
    t0 = time.time()
    client = AgentClient(_opts(work, home, url, resume=sid))
    result = None
    async with client:
        await client.query(answer_prompt(note))
        async for m in client.receive_response():
            if isinstance(m, ResultMessage):
                result = m
        sync_error = client.sync_error
        got_sid = client.session_id
    reqs = server.message_requests
    server.clear_requests()
    calls = list(SYNC_CALLS)
    if not reqs:
        raise Failed(f"no request reached the fake (sync_error {sync_error!r})")
    first = min(reqs, key=lambda r: r.time)
    if result is None or result.is_error or result.result != "done":
        raise Failed(f"result {None if result is None else (result.subtype, result.result)}")
    if sync_error:
        raise Failed(f"sync_error {sync_error}")
    if got_sid != sid:
        raise Failed(f"resumed {got_sid}, not {sid}")
    body = first.body or {}
    return {
        "seconds": first.time - t0,
        "list_s": sum(c[1] for c in calls if c[0] == "remote_session_ids"),
        "pull_s": sum(c[1] for c in calls if c[0] == "pull"),
        "prompts": count_prompts(body),
        "messages": len(body.get("messages") or []),
        "request_bytes": int(first.headers.get("content-length") or 0),
        "first_prompt_carried": "Turn 1: write f0001.txt." in json.dumps(body.get("messages") or []),
    }


async def time_listing(url: str, runs: int, expect: int) -> dict[str, Any]:
    from agent_magic.store import open_session_store
    from agent_magic.store.sync import PROJECT_KEY

    store = open_session_store(url)
    try:
        t0 = time.perf_counter()
        rows = await store.list_sessions(PROJECT_KEY)
        first = time.perf_counter() - t0
        times = []
        for _ in range(runs):
            gc.collect()
            t0 = time.perf_counter()
            rows = await store.list_sessions(PROJECT_KEY)
            times.append(time.perf_counter() - t0)
    finally:
        await store.aclose()
    if len(rows) != expect or len({r["session_id"] for r in rows}) != expect:
        raise Failed(f"listed {len(rows)} sessions, expected {expect}")
    return {"first_s": first, "times_s": times, "count": len(rows)}


def time_helper_listing(url: str, runs: int, expect: int, base: Path) -> dict[str, Any]:
    """``agent_magic.list_sessions()`` on a fresh host (a new empty home per run) with ``AGENT_MAGIC_STORE=url``.

    It reads the store's summaries: checked that every session is listed with its turns and
    that nothing was downloaded into the new home.
    """
    from agent_magic import list_sessions

    times = []
    for r in range(runs):
        home = base / f"list-host-{r}"
        gc.collect()
        with env_vars(AGENT_MAGIC_STORE=url):
            t0 = time.perf_counter()
            rows = list_sessions(home=home)
            times.append(time.perf_counter() - t0)
        if len(rows) != expect or any(i.num_turns < 1 for i in rows):
            raise Failed(f"list_sessions() gave {len(rows)} rows (expected {expect}), turns {sorted({i.num_turns for i in rows})[:5]}")
        downloaded = [p for p in (home / "sessions").glob("*")] if (home / "sessions").exists() else []
        if downloaded:
            raise Failed(f"list_sessions() downloaded {len(downloaded)} sessions")
    return {"times_s": times, "count": expect}


async def build_many(url: str, count: int, workers: int) -> dict[str, Any]:
    """Append one small entry to each of ``count`` new session keys, ``workers`` store objects at a time."""
    import anyio

    from agent_magic.store import open_session_store

    stores = [open_session_store(url) for _ in range(workers)]
    prog = Progress(f"{count:,} one-entry sessions, {workers} workers", count)
    t0 = time.perf_counter()

    async def worker(w: int) -> None:
        for i in range(w, count, workers):
            sid = str(uuid.uuid4())
            # A session as agent-magic writes one: its header, then one prompt.
            header = {"type": "session", "format": 1, "session_id": sid, "cwd": "/work", "scope": "/work/nb.ipynb",
                      "model": "claude-sonnet-4-5", "timestamp": "2026-12-04T00:00:00.000Z", "uuid": f"h-{sid}"}
            entry = {"type": "user", "is_prompt": True, "uuid": str(uuid.uuid4()), "timestamp": "2026-12-04T00:00:00.000Z",
                     "message": {"role": "user", "content": f"session {i}"}}
            await stores[w].append(_key(sid), [header, entry])
            prog.tick()

    try:
        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(worker, w)
    finally:
        for s in stores:
            await s.aclose()
    return {"seconds": time.perf_counter() - t0, "sessions": count, "workers": workers}


# -- Claude Code beside the fork -----------------------------------------------------------------


def build_claude_code(tmp: Path, url: str, n: int) -> dict[str, Any]:
    """One CLI process drives the same ``n`` Write turns on the same fake."""
    import anyio

    from bench import _claude_code as cc

    root = tmp / "claude-code"
    cc.make_root(root)
    prog = Progress(f"Claude Code, {n} turns", n)
    prompts = [write_prompt(root / "work", k) for k in range(1, n + 1)]
    t0 = time.perf_counter()
    out = anyio.run(lambda: cc.run_turns(str(root), url, prompts, on_turn=lambda k: prog.tick()))
    problems = list(out["errors"]) + [f"tool error: {t}" for t in out["tool_errors"]]
    files = sum(1 for _ in (root / "work").glob("f[0-9][0-9][0-9][0-9].txt"))
    if len(out["checkpoints"]) != n or files != n:
        problems.append(f"{len(out['checkpoints'])} checkpoints and {files} files, expected {n}")
    sid = out.get("session_id")
    transcript = cc.project_dir(str(root)) / f"{sid}.jsonl" if sid else None
    return {
        "root": root, "session_id": sid, "errors": problems, "seconds": time.perf_counter() - t0,
        "transcript_bytes": transcript.stat().st_size if transcript else None,
        "transcript_lines": len(transcript.read_bytes().splitlines()) if transcript else None,
        "file_history_bytes": folder_bytes(root / "cfg" / "file-history" / str(sid)),
    }


def claude_code_fork_local(cc_session: dict[str, Any], runs: int) -> dict[str, Any]:
    from bench import _claude_code as cc

    root, sid = cc_session["root"], cc_session["session_id"]
    proj = cc.project_dir(str(root))
    times, sizes, lines = [], [], []
    for _ in range(runs):
        gc.collect()
        r = cc.fork_helper(str(root), sid)
        times.append(r["t_end"] - r["t0"])
        new = proj / f"{r['session_id']}.jsonl"
        if r["session_id"] == sid or not new.exists():
            raise Failed(f"fork_session gave {r['session_id']} (no new transcript)")
        sizes.append(new.stat().st_size)
        lines.append(len(new.read_bytes().splitlines()))
        fh = root / "cfg" / "file-history" / r["session_id"]
        if fh.exists():
            sizes[-1] += folder_bytes(fh)
    return {"times_s": times, "new_bytes": sizes[-1], "new_lines": lines[-1]}


async def claude_code_fork_in_store(url: str, cc_session: dict[str, Any], runs: int) -> dict[str, Any]:
    """The SDK's own path: import the CLI's session into the store, then ``fork_session_via_store``."""
    from claude_agent_sdk import fork_session_via_store, import_session_to_store
    from claude_agent_sdk._internal.sessions import project_key_for_directory

    from agent_magic.store import open_session_store
    from bench import _claude_code as cc

    root, sid = cc_session["root"], cc_session["session_id"]
    work = str(root / "work")
    pk = project_key_for_directory(work)
    store = open_session_store(url)
    try:
        with cc.config_dir(str(root)):
            t0 = time.perf_counter()
            await import_session_to_store(sid, store, directory=work)
            import_s = time.perf_counter() - t0
        src = await store.load({"project_key": pk, "session_id": sid}) or []
        if len(src) != cc_session["transcript_lines"]:
            raise Failed(f"imported {len(src)} entries of {cc_session['transcript_lines']} lines")
        times, n_new = [], 0
        for _ in range(runs):
            gc.collect()
            t0 = time.perf_counter()
            res = await fork_session_via_store(store, sid, directory=work)
            times.append(time.perf_counter() - t0)
            new = await store.load({"project_key": pk, "session_id": res.session_id}) or []
            if res.session_id == sid or not new:
                raise Failed(f"fork_session_via_store gave {res.session_id} with {len(new)} entries")
            n_new = len(new)
        new_bytes = sum(len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) + 1 for e in new)
    finally:
        await store.aclose()
    return {"import_s": round(import_s, 4), "source_entries": len(src), "times_s": [round(x, 5) for x in times],
            "new_entries": n_new, "new_bytes": new_bytes}


# -- one backend ----------------------------------------------------------------------------------


def run_backend(name: str, args: argparse.Namespace, tmp: Path, server: Any, cc_session: dict[str, Any] | None) -> dict[str, Any]:
    import anyio

    from agent_magic import fork_session, get_session_info, list_checkpoints
    from agent_magic.store.local import SessionStore

    res: dict[str, Any] = {"backend": name, "sessions": {}, "errors": []}
    t_backend = time.perf_counter()
    base = tmp / name
    base.mkdir()
    with backend_server(name, base) as (new_url, description):
        res["server"] = description
        log(f"\n== {name}: {description}")
        anyio.run(warm_backend, new_url())
        built: dict[int, dict[str, Any]] = {}
        resumes_done: dict[int, int] = {}

        # 1. resume on a fresh host ---------------------------------------------------------
        for n in args.turns:
            cell: dict[str, Any] = {"turns": n}
            res["sessions"][str(n)] = cell
            url = new_url()
            work, home_a = base / f"n{n}" / "work", base / f"n{n}" / "host-a"
            work.mkdir(parents=True)
            log(f"  N={n}: building on host A ...")
            b = attempt(cell, "build", lambda url=url, work=work, home_a=home_a, n=n: anyio.run(build_session, url, work, home_a, n, server))
            if b is None:
                continue
            sid = b.get("session_id")
            local = SessionStore.at(home_a)
            cell["build_s"] = round(b["seconds"], 2)
            cell["turn_s_mean"] = round(statistics.fmean(b["turn_s"]), 5)
            cell["turn_s_max"] = round(max(b["turn_s"]), 4)
            ps = b["push_s"]
            tenth = max(1, len(ps) // 10)
            if ps:
                cell["push_s_mean"] = round(statistics.fmean(ps), 5)
                cell["push_s_median"] = round(statistics.median(ps), 5)
                cell["push_s_max"] = round(max(ps), 4)
                cell["push_s_mean_first_10pct"] = round(statistics.fmean(ps[:tenth]), 5)
                cell["push_s_mean_last_10pct"] = round(statistics.fmean(ps[-tenth:]), 5)
                cell["pushes_per_turn_mean"] = round(statistics.fmean(b["pushes"]), 2)
                cell["push_total_s_mean"] = round(statistics.fmean(b["push_total_s"]), 5)
                cell["push_moved_per_turn"] = collections.Counter(f"{a} lines, {r} records, {bl} blobs" for a, r, bl in b["push_moved"]).most_common(3)
            cell["lease_s_mean"] = round(statistics.fmean(b["lease_s"]), 5)
            cell["lease_s_max"] = round(max(b["lease_s"]), 4)
            cell["sync_pending_max"] = b["pending_max"]
            if b["errors"] or sid is None:
                cell["build"] = "fails: " + "; ".join(b["errors"][:3])
                continue
            local_lines = len(local.read_entries(sid))
            local_records = len([x for x in local.checkpoints_path(sid).read_bytes().splitlines() if x.strip()])
            files = sum(1 for _ in work.glob("f[0-9][0-9][0-9][0-9].txt"))
            cell["local"] = {"lines": local_lines, "records": local_records, "session_dir_bytes": folder_bytes(local.session_dir(sid)),
                             "blob_bytes": folder_bytes(local.blobs.root or Path("/nonexistent"))}
            sc = attempt(cell, "store", lambda url=url, sid=sid: anyio.run(store_counts, url, sid))
            if sc is not None:
                cell["store"] = sc
                if (sc["lines"], sc["records"], sc["blobs_missing"]) != (local_lines, local_records, 0) or files != n or sc["blobs"] < n:
                    cell["build"] = f"fails: store has {sc['lines']} lines, {sc['records']} records, {sc['blobs_missing']} of {sc['blobs']} backups missing; host A {local_lines} lines, {local_records} records, {files} files"
                    continue
            built[n] = {"url": url, "sid": sid, "work": work, "home_a": home_a}
            resumes_done[n] = 0
            cell["build"] = "ok"

            # The pull alone, then what it moved (one more, untimed, through a counting proxy).
            pulls = []
            for r in range(args.runs):
                p = attempt(cell, "pull", lambda url=url, sid=sid, r=r, n=n: anyio.run(pull_once, url, base / f"n{n}" / f"pull-{r}", sid))
                if p is None:
                    break
                if (p["lines"], p["records"]) != (local_lines, local_records) or p["blobs"] < n:
                    cell["pull"] = f"fails: pulled {p['lines']} lines, {p['records']} records, {p['blobs']} backups (host A: {local_lines}, {local_records}, >= {n})"
                    break
                pulls.append(p)
            else:
                cell["pull_s"] = [round(p["seconds"], 5) for p in pulls]
                cell["pull_moved"] = {k: pulls[-1][k] for k in ("lines", "records", "blobs", "local_bytes")}
                c = attempt(cell, "pull_calls", lambda url=url, sid=sid, n=n: anyio.run(pull_once, url, base / f"n{n}" / "pull-counted", sid, True))
                if c is not None:
                    cell["pull_calls"] = c["calls"]
                    cell["pull_bytes_read"] = c["bytes_read"]
                # The same without backups (blobs=False): what a resume needs; a rewind fetches backups itself.
                lean = []
                for r in range(args.runs):
                    p = attempt(cell, "pull_no_blobs", lambda url=url, sid=sid, r=r, n=n: anyio.run(
                        pull_once, url, base / f"n{n}" / f"lean-{r}", sid, False, False))
                    if p is None:
                        break
                    if (p["lines"], p["records"], p["blobs"]) != (local_lines, local_records, 0):
                        cell["pull_no_blobs"] = f"fails: pulled {p['lines']} lines, {p['records']} records, {p['blobs']} backups"
                        break
                    lean.append(p["seconds"])
                    shutil.rmtree(base / f"n{n}" / f"lean-{r}", ignore_errors=True)
                else:
                    cell["pull_no_blobs_s"] = [round(x, 5) for x in lean]
            for r in range(args.runs + 1):
                shutil.rmtree(base / f"n{n}" / f"pull-{r}", ignore_errors=True)
            shutil.rmtree(base / f"n{n}" / "pull-counted", ignore_errors=True)

            # A single session in the store: listing it.
            lst = attempt(cell, "list_one", lambda url=url: anyio.run(time_listing, url, args.runs, 1))
            if lst is not None:
                cell["list_one_s"] = [round(x, 5) for x in lst["times_s"]]

            # Resume on host B, a new empty home per run.
            cell["resume"] = resume_runs(args, cell, "resume", built[n], n, resumes_done, server, base / f"n{n}", name="b")

        # 3. fork of the longest session -------------------------------------------------------
        n_fork = max(args.turns)
        fork: dict[str, Any] = {"turns": n_fork}
        res["fork"] = fork
        if n_fork in built:
            f = built[n_fork]
            sid, home_a = f["sid"], f["home_a"]
            local = SessionStore.at(home_a)
            parent_bytes = folder_bytes(local.session_dir(sid))
            fork["parent_dir_bytes"] = parent_bytes
            times, pushes = [], []

            def fork_runs() -> None:
                for _ in range(args.runs):
                    gc.collect()
                    with env_vars(AGENT_MAGIC_STORE=None):
                        t0 = time.perf_counter()
                        new = fork_session(sid, home=home_a)
                        times.append(time.perf_counter() - t0)
                    info = get_session_info(new, home=home_a)
                    cps = list_checkpoints(new, home=home_a)
                    if new == sid or info.parent_session_id != sid or info.num_turns != n_fork or len(cps) != n_fork:
                        raise Failed(f"fork {new[:8]}: parent {info.parent_session_id}, {info.num_turns} turns, {len(cps)} checkpoints")
                    # By reference: the fork reads as its parent does, from its own one-line file.
                    read_back = [e.get("uuid") for e in local.read_entries(new)[1:]]
                    if read_back != [e.get("uuid") for e in local.read_entries(sid)[1:]]:
                        raise Failed(f"fork {new[:8]} reads {len(read_back)} lines, not its parent's")
                    fork["new_dir_bytes"] = folder_bytes(local.session_dir(new))
                    fork["new_lines"] = local.transcript_path(new).read_bytes().count(b"\n")
                    fork["reads_lines"] = len(read_back)
                    fork["in_store_after_fork"] = anyio.run(_in_store, f["url"], new)
                    pushes.append(anyio.run(_push_fork, f["url"], home_a, new))
                    if pushes[-1]["lines"] != fork["new_lines"] or pushes[-1]["blobs"] != 0 or pushes[-1]["records"] != 0:
                        raise Failed(f"pushing the fork moved {pushes[-1]}")

            attempt(fork, "fork_session", fork_runs)
            if times and "fork_session" not in fork:
                fork["fork_session_s"] = [round(x, 5) for x in times]
                fork["push_s"] = [round(p["seconds"], 5) for p in pushes]
                fork["push_moved"] = {k: pushes[-1][k] for k in ("lines", "records", "blobs", "calls", "entries_written", "bytes_written")}
        else:
            fork["fork_session"] = f"fails: no {n_fork}-turn session was built"
        if cc_session is not None and not cc_session.get("errors"):
            ccf = attempt(fork, "claude_code_store", lambda: anyio.run(claude_code_fork_in_store, new_url(), cc_session, args.runs))
            if ccf is not None:
                fork["claude_code_store"] = ccf

        # 2. list_sessions over many sessions (in the smallest session's store) -----------------
        n_small = min(args.turns)
        many: dict[str, Any] = {"sessions": args.sessions}
        res["list_many"] = many
        if n_small in built:
            f = built[n_small]
            workers = WORKERS[name]
            log(f"  building {args.sessions - 1:,} more sessions beside the {n_small}-turn one ({workers} workers) ...")
            bm = attempt(many, "build", lambda: anyio.run(build_many, f["url"], args.sessions - 1, workers))
            if bm is not None:
                many["build_s"] = round(bm["seconds"], 2)
                many["workers"] = workers
                lst = attempt(many, "list", lambda: anyio.run(time_listing, f["url"], args.runs, args.sessions))
                if lst is not None:
                    many["list_first_s"] = round(lst["first_s"], 5)
                    many["list_s"] = [round(x, 5) for x in lst["times_s"]]
                helper = attempt(many, "helper_list", lambda: time_helper_listing(f["url"], args.runs, args.sessions, base / "many"))
                if helper is not None:
                    many["helper_list_s"] = [round(x, 5) for x in helper["times_s"]]
                many["resume"] = resume_runs(args, many, "resume", f, n_small, resumes_done, server, base / "many", name="c")
        else:
            many["build"] = f"fails: no {n_small}-turn session was built"
    res["seconds"] = round(time.perf_counter() - t_backend, 1)
    return res


async def warm_backend(url: str) -> None:
    """Import the backend's client library and connect once (untimed), in a throwaway prefix."""
    from agent_magic.store import open_session_store
    from agent_magic.store.sync import PROJECT_KEY

    store = open_session_store(url)
    instrument_lease(type(store))
    try:
        await store.list_sessions(PROJECT_KEY)
    finally:
        await store.aclose()


async def _in_store(url: str, sid: str) -> bool:
    from agent_magic.store import open_session_store

    store = open_session_store(url)
    try:
        return bool(await store.load(_key(sid)))
    finally:
        await store.aclose()


async def _push_fork(url: str, home: Path, sid: str) -> dict[str, Any]:
    """What it costs to bring a fork made by ``fork_session`` into the shared store (``SessionSync.push``)."""
    from agent_magic.store import open_session_store
    from agent_magic.store.local import SessionStore
    from agent_magic.store.sync import SessionSync

    inner = open_session_store(url)
    remote = Counting(inner)
    sync = SessionSync(SessionStore.at(home), remote)
    try:
        t0 = time.perf_counter()
        r = await sync.push(sid)
        dt = time.perf_counter() - t0
    finally:
        await inner.aclose()
    return {"seconds": dt, "lines": r.lines, "records": r.records, "blobs": r.blobs, "calls": calls_text(remote),
            "entries_written": remote.entries_written, "bytes_written": remote.bytes_written}


def resume_runs(args: argparse.Namespace, cell: dict[str, Any], key: str, f: dict[str, Any], n: int,
                done: dict[int, int], server: Any, folder: Path, name: str) -> dict[str, Any] | str:
    """``--runs`` resumes of the n-turn session on fresh hosts; each adds its turn to the session."""
    import anyio

    runs = []
    for r in range(args.runs):
        home_b = folder / f"host-{name}{r}"
        expect = n + done[n] + 1  # host A's turns, the earlier resumes' turns, this one
        out = attempt(cell, key, lambda home_b=home_b, r=r: anyio.run(resume_once, f["url"], f["work"], home_b, f["sid"], f"[resume {name}{r}] Where were we?", server))
        if out is None:
            return str(cell.pop(key))
        done[n] += 1
        if out["prompts"] != expect or not out["first_prompt_carried"] or out["messages"] < 4 * n + 1:
            return f"fails: the resumed request carries {out['prompts']} prompts ({out['messages']} messages), expected {expect}"
        runs.append(out)
        shutil.rmtree(home_b, ignore_errors=True)
    return {
        "seconds": [round(x["seconds"], 5) for x in runs],
        "list_s": [round(x["list_s"], 5) for x in runs],
        "pull_s": [round(x["pull_s"], 5) for x in runs],
        "prompts": [x["prompts"] for x in runs],
        "messages": [x["messages"] for x in runs],
        "request_bytes": [x["request_bytes"] for x in runs],
    }


# -- printing ----------------------------------------------------------------------------------------


def _cell(value: Any, fmt: Callable[[Any], str]) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    try:
        return fmt(value)
    except (KeyError, TypeError, ValueError, statistics.StatisticsError) as e:
        return f"error: {type(e).__name__}"


def print_backend(res: dict[str, Any], args: argparse.Namespace) -> None:
    cols = [res["sessions"].get(str(n), {}) for n in args.turns]

    def err(c: dict[str, Any], *keys: str) -> str | None:
        for k in keys:
            v = c.get(k)
            if isinstance(v, str) and v.startswith(("fails:", "error:")):
                return v
        return None

    def row(label: str, fn: Callable[[dict[str, Any]], str], *keys: str) -> tuple[str, list[str]]:
        out = []
        for c in cols:
            e = err(c, "build", *keys)
            out.append(e if e else _cell(c, fn))
        return label, out

    def resume_cell(r: Any) -> str:
        if isinstance(r, str) or r is None:
            return r or "-"
        return _median_range(r["seconds"])

    rows = [
        row("host A: build (turn mean / max)", lambda c: f"{c['build_s']:.1f} s ({_fmt_s(c['turn_s_mean'])} / {_fmt_s(c['turn_s_max'])})"),
        row("pushes per turn (per step + final)", lambda c: f"{c['pushes_per_turn_mean']}; all pushes {_fmt_s(c['push_total_s_mean'])} a turn"),
        row("final push (awaited): mean / max", lambda c: f"{_fmt_s(c['push_s_mean'])} / {_fmt_s(c['push_s_max'])}"),
        row("final push: first / last 10% of turns", lambda c: f"{_fmt_s(c['push_s_mean_first_10pct'])} / {_fmt_s(c['push_s_mean_last_10pct'])}"),
        row("lease take + give up per turn: mean / max", lambda c: f"{_fmt_s(c['lease_s_mean'])} / {_fmt_s(c['lease_s_max'])}"),
        row("in the store: lines / records / backups", lambda c: f"{c['store']['lines']:,} / {c['store']['records']:,} / {c['store']['blobs']:,}"),
        row("S3 objects under the session (main / checkpoints)", lambda c: " / ".join(f"{c['store']['s3_objects'].get(k, 0):,}" for k in ("main", "checkpoints")) if "s3_objects" in c["store"] else "-"),
        row("pull alone, fresh host (median, min-max)", lambda c: _median_range(c["pull_s"]), "pull"),
        row("pull without backups (blobs=False)", lambda c: _median_range(c["pull_no_blobs_s"]), "pull", "pull_no_blobs"),
        row("pull moved: lines / records / backups", lambda c: f"{c['pull_moved']['lines']:,} / {c['pull_moved']['records']:,} / {c['pull_moved']['blobs']:,}", "pull"),
        row("pull: bytes read / written locally", lambda c: f"{_fmt_b(c['pull_bytes_read'])} / {_fmt_b(c['pull_moved']['local_bytes'])}", "pull", "pull_calls"),
        row("pull: store calls", lambda c: c["pull_calls"], "pull", "pull_calls"),
        row("resume, fresh host -> first request", lambda c: resume_cell(c.get("resume"))),
        row("  of which: list_sessions / pull", lambda c: f"{_fmt_s(statistics.median(c['resume']['list_s']))} / {_fmt_s(statistics.median(c['resume']['pull_s']))}" if isinstance(c.get("resume"), dict) else "-"),
        row("  resumed request: prompts / messages / bytes", lambda c: f"{c['resume']['prompts'][0]:,} / {c['resume']['messages'][0]:,} / {_fmt_b(c['resume']['request_bytes'][0])}" if isinstance(c.get("resume"), dict) else "-"),
        row("list_sessions, this store (1 session)", lambda c: _median_range(c["list_one_s"]), "list_one"),
    ]
    width = max(len(r[0]) for r in rows)
    colw = max(20, *(len(v) for _, vs in rows for v in vs))
    log(f"\n{res['backend']}: {res.get('server', '')}  ({res.get('seconds', '?')} s)")
    log(f"  {'':<{width}}  " + "  ".join(f"{f'{n} turns':<{colw}}" for n in args.turns))
    for label, vals in rows:
        log(f"  {label:<{width}}  " + "  ".join(f"{v:<{colw}}" for v in vals))

    many = res.get("list_many", {})
    log(f"  list_sessions over {args.sessions:,} sessions:")
    if isinstance(many.get("build"), str):
        log(f"    {many['build']}")
    else:
        log(f"    building {args.sessions - 1:,} one-entry sessions: {many.get('build_s', '?')} s ({many.get('workers')} workers)")
        listing = many["list"] if isinstance(many.get("list"), str) else (
            f"{_median_range(many.get('list_s', []))}; first call (connects) {_fmt_s(many.get('list_first_s'))}")
        log(f"    list_sessions: {listing}")
        if many.get("helper_list_s"):
            log(f"    agent_magic.list_sessions() on a fresh host (summaries; nothing downloaded): {_median_range(many['helper_list_s'])}")
        elif isinstance(many.get("helper_list"), str):
            log(f"    agent_magic.list_sessions() on a fresh host: {many['helper_list']}")
        r = many.get("resume")
        if isinstance(r, dict):
            log(f"    resume of the {min(args.turns)}-turn session among them -> first request: {_median_range(r['seconds'])}; "
                f"of which list_sessions {_fmt_s(statistics.median(r['list_s']))}, pull {_fmt_s(statistics.median(r['pull_s']))}")
        else:
            log(f"    resume among them: {r}")
    fork = res.get("fork", {})
    log(f"  fork of the {fork.get('turns')}-turn session:")
    if isinstance(fork.get("fork_session"), str):
        log(f"    {fork['fork_session']}")
    else:
        log(f"    fork_session(), by reference: {_median_range(fork.get('fork_session_s', []))}; new folder {_fmt_b(fork.get('new_dir_bytes'))} "
            f"({fork.get('new_lines', 0):,} line, reading as {fork.get('reads_lines', 0):,}; parent's {_fmt_b(fork.get('parent_dir_bytes'))}); "
            f"in the shared store afterwards: {fork.get('in_store_after_fork')}")
        pm = fork.get("push_moved", {})
        log(f"    SessionSync.push of the fork: {_median_range(fork.get('push_s', []))}; {pm.get('lines', 0):,} lines, {pm.get('records', 0):,} records, "
            f"{pm.get('blobs', 0)} backups, {_fmt_b(pm.get('bytes_written'))} written; calls: {pm.get('calls')}")
    ccs = fork.get("claude_code_store")
    if isinstance(ccs, dict):
        log(f"    Claude Code (SDK) in this store: import_session_to_store {_fmt_s(ccs['import_s'])} ({ccs['source_entries']:,} entries); "
            f"fork_session_via_store {_median_range(ccs['times_s'])}, {ccs['new_entries']:,} entries, {_fmt_b(ccs['new_bytes'])} appended")
    elif ccs:
        log(f"    Claude Code (SDK) in this store: {ccs}")


# -- main -----------------------------------------------------------------------------------------------


def warm_up(tmp: Path, server: Any) -> None:
    """One untimed turn with a file store: imports, the client's first use, the session store."""
    import anyio

    work = tmp / "warm" / "work"
    work.mkdir(parents=True)
    b = anyio.run(build_session, (tmp / "warm" / "shared").as_uri(), work, tmp / "warm" / "home", 2, server)
    if b["errors"]:
        raise SystemExit(f"warm-up failed: {b['errors'][:3]}")
    shutil.rmtree(tmp / "warm", ignore_errors=True)
    gc.collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: file, redis, postgresql, s3")
    parser.add_argument("--turns", default="50,500", help="comma-separated session lengths (the longest is forked)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions in the store for list_sessions")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--no-claude-code", action="store_true", help="skip Claude Code's fork beside agent-magic's")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "shared_stores.json")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := [b for b in backends if b not in BACKENDS]:
        parser.error(f"unknown backend {unknown[0]!r}: use {', '.join(BACKENDS)}")
    try:
        args.turns = sorted({int(t) for t in args.turns.split(",") if t.strip()})
    except ValueError:
        parser.error(f"--turns {args.turns!r} is not a list of numbers")
    if not args.turns or min(args.turns) < 1 or args.sessions < 2 or args.runs < 1:
        parser.error("--turns, --sessions (>= 2) and --runs need positive values")

    from agent_magic import __version__
    from agent_magic.testing import FakeAnthropicServer
    from bench import _claude_code as cc
    from bench._script import respond

    instrument_sync()
    t_total = time.perf_counter()
    results: dict[str, Any] = {}
    cc_out: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="shared-stores-") as tmp_s, FakeAnthropicServer() as server, \
            env_vars(**server.env(), AGENT_MAGIC_STORE=None, AGENT_MAGIC_HOME=str(Path(tmp_s) / "default-home")):
        tmp = Path(tmp_s)
        server.set_default(respond)
        warm_up(tmp, server)
        cc_session = None
        if not args.no_claude_code and cc.available():
            n = max(args.turns)
            log(f"Claude Code: building an equivalent {n}-turn session (one CLI process) ...")
            cc_session = build_claude_code(tmp, server.url, n)
            server.clear_requests()
            cc_out = {"turns": n, "build_s": round(cc_session["seconds"], 1), "errors": cc_session["errors"][:5],
                      "transcript_bytes": cc_session["transcript_bytes"], "transcript_lines": cc_session["transcript_lines"],
                      "file_history_bytes": cc_session["file_history_bytes"], "versions": cc.versions()}
            if not cc_session["errors"]:
                local = attempt(cc_out, "fork_local", lambda: claude_code_fork_local(cc_session, args.runs))
                if local is not None:
                    cc_out["fork_local"] = {"times_s": [round(x, 5) for x in local["times_s"]], "new_bytes": local["new_bytes"], "new_lines": local["new_lines"]}
            log(f"  built in {cc_out['build_s']} s: transcript {_fmt_b(cc_out['transcript_bytes'])}, file-history {_fmt_b(cc_out['file_history_bytes'])}"
                + (f"; checks FAILED: {cc_out['errors'][:2]}" if cc_out["errors"] else ""))
        elif not args.no_claude_code:
            cc_out = {"skipped": "claude-agent-sdk is not installed"}
        for name in backends:
            try:
                results[name] = run_backend(name, args, tmp, server, cc_session)
            except Exception as e:  # a server that does not start: say so in its table
                results[name] = {"backend": name, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "sessions": {}}
                log(f"\n{name}: error: {results[name]['error']}")
                continue
            print_backend(results[name], args)
        if cc_out and "fork_local" in cc_out:
            fl = cc_out["fork_local"]
            if isinstance(fl, dict):
                log(f"\nClaude Code {cc_out['versions'].get('claude_code_cli', '?')}, {cc_out['turns']}-turn session (transcript {_fmt_b(cc_out['transcript_bytes'])}, "
                    f"{cc_out['transcript_lines']:,} lines; file-history {_fmt_b(cc_out['file_history_bytes'])}): fork_session() helper "
                    f"{_median_range(fl['times_s'])}, new transcript {_fmt_b(fl['new_bytes'])} ({fl['new_lines']:,} lines; no file-history)")
            else:
                log(f"\nClaude Code fork_session(): {fl}")
        side_by_side(results, cc_out)
    total = time.perf_counter() - t_total
    log(f"\ntotal {total:.0f} s")

    ok = all("error" not in r and _all_ok(r) for r in results.values()) and not (cc_out or {}).get("errors")
    if args.json:
        data = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "agent_magic": __version__,
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            },
            "args": {"backends": backends, "turns": args.turns, "sessions": args.sessions, "runs": args.runs},
            "total_seconds": round(total, 1),
            "ok": ok,
            "backends": results,
            "claude_code": cc_out,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0 if ok else 1


def side_by_side(results: dict[str, Any], cc_out: dict[str, Any] | None) -> None:
    """The fork of the longest session, agent-magic beside Claude Code: time (median) and bytes written."""
    cc_local = (cc_out or {}).get("fork_local")
    log("\nFork of the longest session, side by side (median time; bytes the fork wrote):")
    for name, r in results.items():
        fork = r.get("fork", {})
        if not fork.get("fork_session_s"):
            continue
        ours = statistics.median(fork["fork_session_s"])
        push = statistics.median(fork["push_s"])
        line = f"  {name:<10} agent-magic fork {_fmt_s(ours)}, {_fmt_b(fork.get('new_dir_bytes'))}; + push {_fmt_s(push)}"
        if isinstance(cc_local, dict):
            theirs = statistics.median(cc_local["times_s"])
            line += f" | Claude Code local fork {_fmt_s(theirs)}, {_fmt_b(cc_local['new_bytes'])}: {theirs / ours:,.0f}x the time"
        ccs = fork.get("claude_code_store")
        if isinstance(ccs, dict):
            via = statistics.median(ccs["times_s"])
            line += f" | fork_session_via_store {_fmt_s(via)}, {_fmt_b(ccs['new_bytes'])}: {via / (ours + push):,.0f}x fork + push"
        log(line)
        fork["vs_claude_code"] = {
            "local_x": round(statistics.median(cc_local["times_s"]) / ours, 1) if isinstance(cc_local, dict) else None,
            "store_x": round(statistics.median(ccs["times_s"]) / (ours + push), 1) if isinstance(ccs, dict) else None,
        }


def _all_ok(r: dict[str, Any]) -> bool:
    """No cell of a backend's result is a failure text."""
    def walk(v: Any) -> bool:
        if isinstance(v, str):
            return not v.startswith(("fails:", "error:"))
        if isinstance(v, dict):
            return all(walk(x) for x in v.values())
        if isinstance(v, list):
            return all(walk(x) for x in v)
        return True

    return walk(r)


if __name__ == "__main__":
    sys.exit(main())
