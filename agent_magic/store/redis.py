"""The Redis backend: a shared store in one Redis server (``redis://`` or ``rediss://``, extra ``redis``).

``redis://[user:password@]host[:port][/db][?prefix=team-a:]`` — every key starts
with the prefix (default ``agent-magic:``), so several stores can share one
database. Keys, with each project key, session id and subpath %-quoted so that
no ``:`` inside them can be mistaken for a separator::

    <prefix>transcript:<project>:<session>             list    main transcript, one JSON entry per item
    <prefix>transcript:<project>:<session>:<subpath>   list    a sub-transcript
    <prefix>uuids:<project>:<session>[:<subpath>]      set     the entry uuids stored in that transcript
    <prefix>subkeys:<project>:<session>                set     the session's subpaths
    <prefix>sessions:<project>                         zset    session id -> last main write, epoch ms
    <prefix>summaries:<project>                        hash    session id -> its summary, JSON
    <prefix>blob:<digest>                              string  content-addressed bytes
    <prefix>lease:<session>                            hash    the writer lease (holder, renewed_ms,
                                                               acquired_ms), expiring by PEXPIRE

Redis keeps no modification times, so appends record the server's clock in the
``sessions`` sorted set (as the Agent SDK's reference Redis adapter does). An
append to a sub-transcript (uuid check, RPUSH, uuid record, index update) and
taking the lease are Lua scripts, atomic for every client of the server. An
append that changes the session's summary (the main transcript, ``meta``) folds
in Python (:func:`~agent_magic.store.summary.fold_summary`), so it is an
optimistic transaction instead: WATCH the lists that feed the summary, read the
summary, the uuids already stored and the server's time in one script, then
MULTI/EXEC the entries, the index and the new summary together; a concurrent
append or delete of the session makes EXEC fail and the append runs again. The
summary's ``mtime`` is the time its ``sessions`` score gets. Deleting a session
watches its ``subkeys`` set so a sub-transcript created meanwhile is deleted too.
Times (``mtime``, lease ages) come from the server's clock, the one clock all hosts share.

It needs Redis 5 or later (or Valkey): one server, or a primary with replicas, not
Redis Cluster (the scripts and the delete touch keys of several hash slots).

The client is opened on first use and closed by :meth:`RedisSessionStore.aclose`;
it belongs to the event loop that opened it (a store used from a new loop opens a
new client).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.connection import parse_url
from redis.commands.core import AsyncScript

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

DEFAULT_PREFIX = "agent-magic:"

# Keep the client from waiting minutes on a host that drops packets; a URL's own
# ?socket_connect_timeout= / ?socket_timeout= wins (redis-py lets the query override these).
_CLIENT_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 10.0, "socket_timeout": 60.0}

# Lua's unpack() has a C-stack limit of a few thousand values.
_CHUNK = 1000

_NOW_MS = """
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
"""

# KEYS: the transcript list, its uuid set, the session index (sessions zset, or subkeys set)
# ARGV: the index member (session id or subpath), '1' for a sub-transcript, then (uuid or '', JSON) pairs.
# Checks first and writes after, so a failed RPUSH records no uuid (a retry stores the entries
# then); an entry without a uuid is always stored.
_APPEND = (
    _NOW_MS
    + f"""
local fresh, new_uuids, seen = {{}}, {{}}, {{}}
for i = 3, #ARGV, 2 do
  local uid = ARGV[i]
  if uid == '' then
    fresh[#fresh + 1] = ARGV[i + 1]
  elseif not seen[uid] and redis.call('SISMEMBER', KEYS[2], uid) == 0 then
    seen[uid] = true
    fresh[#fresh + 1] = ARGV[i + 1]
    new_uuids[#new_uuids + 1] = uid
  end
end
if #fresh == 0 then return 0 end
for i = 1, #fresh, {_CHUNK} do
  redis.call('RPUSH', KEYS[1], unpack(fresh, i, math.min(i + {_CHUNK - 1}, #fresh)))
end
for i = 1, #new_uuids, {_CHUNK} do
  redis.call('SADD', KEYS[2], unpack(new_uuids, i, math.min(i + {_CHUNK - 1}, #new_uuids)))
end
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[3], now, ARGV[1])
end
return #fresh
"""
)

# What a summary-changing append needs to know, read at once after WATCH.
# KEYS: the summaries hash, the transcript's uuid set, then the lists that feed the summary.
# ARGV: the session id, then the batch's uuids.
# Returns {now, the summary's JSON or '', how many entries those lists hold when there is
# no summary yet (else 0), {1 or 0 for each uuid: stored already}}.
_PEEK = (
    _NOW_MS
    + """
local prev = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local stored = 0
if prev == '' then
  for i = 3, #KEYS do stored = stored + redis.call('LLEN', KEYS[i]) end
end
local flags = {}
for i = 2, #ARGV do flags[#flags + 1] = redis.call('SISMEMBER', KEYS[2], ARGV[i]) end
return {now, prev, stored, flags}
"""
)

# KEYS: the lease. ARGV: holder, ttl in ms, '1' to take a live lease over.
# Returns {1, holder, acquired_ms} when taken or renewed, {0, holder, age_ms} when another holds it.
_ACQUIRE = (
    _NOW_MS
    + """
local cur = redis.call('HMGET', KEYS[1], 'holder', 'renewed_ms', 'acquired_ms')
local acquired = now
if cur[1] then
  if cur[1] == ARGV[1] then
    acquired = cur[3] or now
  elseif ARGV[3] ~= '1' then
    return {0, cur[1], tonumber(now) - (tonumber(cur[2]) or tonumber(now))}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'renewed_ms', now, 'acquired_ms', acquired)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[1], tonumber(acquired)}
"""
)

# KEYS: the lease. ARGV: holder. Deletes it only if that holder holds it.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_SCRIPTS = {"append": _APPEND, "peek": _PEEK, "acquire": _ACQUIRE, "release": _RELEASE}


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _check_digest(digest: str) -> str:
    # The same rule as the file backend, so a caller sees one behaviour whatever the store.
    if not digest.isalnum():
        raise ValueError(f"not a digest: {digest!r}")
    return digest


class RedisSessionStore(SessionStoreBackend):
    """A shared store in a Redis server (see the module docstring).

    Parameters
    ----------
    url
        The server, as redis-py's ``Redis.from_url`` takes it (``redis://`` or ``rediss://``
        for TLS; its query options, e.g. ``?socket_timeout=5``, are passed on).
    prefix
        Prepended to every key.

    Raises
    ------
    ConfigurationError
        The URL cannot be parsed.
    """

    schemes = ("redis", "rediss")

    def __init__(self, url: str = "redis://localhost:6379/0", *, prefix: str = DEFAULT_PREFIX) -> None:
        try:
            parse_url(url)
        except ValueError as e:
            raise ConfigurationError(f"Invalid Redis URL: {self._scrub(str(e), url)}") from None
        self._url = url
        self.prefix = prefix
        parsed = urllib.parse.urlparse(url)
        db = parsed.path.strip("/") or "0"
        # Where, for error messages: never the user name or password.
        self.location = f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}/{db}"
        self._redis: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_url(cls, url: str) -> RedisSessionStore:
        """A store for ``redis[s]://...[?prefix=...]`` (a prefix without a trailing ``:`` gets one)."""
        parsed = urllib.parse.urlparse(url)
        query = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        prefix = DEFAULT_PREFIX
        rest = []
        for name, value in query:
            if name == "prefix":
                prefix = value if not value or value.endswith(":") else value + ":"
            else:
                rest.append((name, value))
        server_url = urllib.parse.urlunparse(parsed._replace(query=urllib.parse.urlencode(rest)))
        return cls(server_url, prefix=prefix)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r}, prefix={self.prefix!r})"

    # -- the client ----------------------------------------------------------------
    def _client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._redis is None or self._loop is not loop:
            # A client's connections belong to the loop that opened them.
            self._redis = redis.asyncio.Redis.from_url(self._url, **_CLIENT_DEFAULTS)
            self._loop = loop
            # EVALSHA, loading the script on the server's first NOSCRIPT.
            self._scripts = {name: self._redis.register_script(src) for name, src in _SCRIPTS.items()}
        return self._redis

    def _script(self, name: str) -> AsyncScript:
        self._client()
        return self._scripts[name]

    async def aclose(self) -> None:
        client, self._redis, self._loop = self._redis, None, None
        if client is not None:
            await client.aclose()

    @staticmethod
    def _scrub(text: str, url: str) -> str:
        password = urllib.parse.urlparse(url).password
        if password:
            text = text.replace(password, "***").replace(urllib.parse.unquote(password), "***")
        return " ".join(text.split())

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Turn redis-py's errors into one-line :class:`StoreError` messages that say what to check."""
        try:
            yield
        except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                redis.exceptions.NoPermissionError,
                redis.exceptions.AuthenticationWrongNumberOfArgsError) as e:
            raise StoreError(
                f"Redis at {self.location} refused the credentials ({self._scrub(str(e), self._url)}). "
                "Check the user name and password in the session store URL "
                "(redis://user:password@host:port/db)."
            ) from e
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            raise StoreError(
                f"Cannot reach Redis at {self.location} ({self._scrub(str(e), self._url)}). "
                "Check that the server runs, the host and port in the session store URL, "
                "and rediss:// if it wants TLS."
            ) from e
        except redis.exceptions.ReadOnlyError as e:
            raise StoreError(
                f"Redis at {self.location} is a read-only replica. Point the session store URL at the primary."
            ) from e
        except redis.exceptions.OutOfMemoryError as e:
            raise StoreError(
                f"Redis at {self.location} is out of memory (maxmemory). "
                "Free space there or raise its maxmemory, then retry."
            ) from e
        except redis.exceptions.RedisError as e:
            raise StoreError(
                f"Redis at {self.location} failed: {self._scrub(str(e), self._url)}"
            ) from e

    # -- keys --------------------------------------------------------------------------
    def _session_part(self, key: SessionKey) -> str:
        return f"{_quote(key['project_key'])}:{_quote(key['session_id'])}"

    def _transcript_part(self, key: SessionKey) -> str:
        sub = key.get("subpath")
        return self._session_part(key) + (f":{_quote(sub)}" if sub else "")

    def _list_key(self, key: SessionKey) -> str:
        return f"{self.prefix}transcript:{self._transcript_part(key)}"

    def _uuids_key(self, key: SessionKey) -> str:
        return f"{self.prefix}uuids:{self._transcript_part(key)}"

    def _subkeys_key(self, key: SessionKey) -> str:
        return f"{self.prefix}subkeys:{self._session_part(key)}"

    def _sessions_key(self, project_key: str) -> str:
        return f"{self.prefix}sessions:{_quote(project_key)}"

    def _summaries_key(self, project_key: str) -> str:
        return f"{self.prefix}summaries:{_quote(project_key)}"

    def _blob_key(self, digest: str) -> str:
        return f"{self.prefix}blob:{_check_digest(digest)}"

    def _lease_key(self, session_id: str) -> str:
        return f"{self.prefix}lease:{_quote(session_id)}"

    # -- transcripts --------------------------------------------------------------------
    async def append(self, key: SessionKey, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        for e in entries:
            if not isinstance(e, dict):
                raise TypeError(f"a transcript entry is a JSON object, not {type(e).__name__}")
        if folds(dict(key)):
            await self._append_folding(key, entries)
            return
        sub = key.get("subpath")
        args: list[str] = [sub or key["session_id"], "1" if sub else "0"]
        for e in entries:
            uid = e.get("uuid")
            args.append(uid if isinstance(uid, str) else "")
            args.append(_dumps(e))
        index = self._subkeys_key(key) if sub else self._sessions_key(key["project_key"])
        async with self._errors():
            await self._script("append")(keys=[self._list_key(key), self._uuids_key(key), index], args=args)

    async def _append_folding(self, key: SessionKey, entries: list[dict[str, Any]]) -> None:
        """Append to a transcript that feeds the session's summary, and fold the summary, in one EXEC."""
        sub = key.get("subpath")
        session_id = key["session_id"]
        # The main transcript first: a backfill folds in that order (the header before the title).
        feeding: list[SessionKey] = [{"project_key": key["project_key"], "session_id": session_id}]
        feeding += [{**feeding[0], "subpath": s} for s in sorted(FOLDED_SUBPATHS)]
        lists = [self._list_key(k) for k in feeding]
        summaries = self._summaries_key(key["project_key"])
        uuids = list(dict.fromkeys(u for e in entries if isinstance(u := e.get("uuid"), str) and u))
        client = self._client()
        async with self._errors(), client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    # Every append that stores something, and every delete, changes one of these
                    # lists: if one does before EXEC, EXEC fails and this runs again.
                    await pipe.watch(*lists)
                    now, prev_json, stored, flags = await self._peek(
                        pipe, [summaries, self._uuids_key(key), *lists], [session_id, *uuids]
                    )
                    fresh = dedupe_by_uuid({u for u, f in zip(uuids, flags, strict=True) if f}, entries)
                    prev = self._parse_summary(prev_json, summaries) if prev_json else None
                    if prev is None and int(stored):
                        # The session predates summaries: fold all of it once.
                        summary = await self._refold(pipe, key, feeding, lists, fresh)
                    elif fresh:
                        summary = fold_summary(prev, dict(key), fresh)
                    else:
                        return  # nothing new: the transcript and its summary stand as they are
                    summary["mtime"] = max(int(now), int(prev.get("mtime") or 0) if prev else 0)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    if fresh:
                        pipe.rpush(self._list_key(key), *(_dumps(e) for e in fresh))
                        new_uuids = [u for e in fresh if isinstance(u := e.get("uuid"), str) and u]
                        if new_uuids:
                            pipe.sadd(self._uuids_key(key), *new_uuids)
                        if sub:
                            pipe.sadd(self._subkeys_key(key), sub)
                        else:
                            pipe.zadd(self._sessions_key(key["project_key"]), {session_id: int(now)})
                    pipe.hset(summaries, session_id, _dumps(summary))
                    await pipe.execute()
                    return
                except redis.exceptions.WatchError:
                    continue

    async def _peek(self, pipe: redis.asyncio.client.Pipeline, keys: list[str], args: list[str]) -> list[Any]:
        # Run on the watching connection, not queued: its answer decides what MULTI writes.
        script = self._script("peek")
        try:
            answer = await pipe.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await pipe.script_load(script.script)
            answer = await pipe.evalsha(script.sha, len(keys), *keys, *args)
        return cast("list[Any]", answer)

    async def _refold(
        self,
        pipe: redis.asyncio.client.Pipeline,
        key: SessionKey,
        feeding: list[SessionKey],
        lists: list[str],
        fresh: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The summary of everything the session's feeding transcripts hold, plus ``fresh``."""
        summary: dict[str, Any] | None = None
        for k, name in zip(feeding, lists, strict=True):
            raw = await pipe.lrange(name, 0, -1)
            stored = self._parse_items(name, raw)
            if k.get("subpath") == key.get("subpath"):
                stored += fresh
            if stored or summary is None:
                summary = fold_summary(summary, dict(k), stored)
        assert summary is not None
        return summary

    def _parse_summary(self, raw: bytes | str, name: str) -> dict[str, Any]:
        try:
            summary = json.loads(raw)
        except ValueError:
            summary = None
        if not isinstance(summary, dict) or not isinstance(summary.get("data"), dict):
            raise StoreError(
                f"A value of the Redis hash {name!r} at {self.location} is not a session summary: "
                "another program writes under this key prefix. Give agent-magic its own (?prefix=...)."
            )
        return summary

    async def load(self, key: SessionKey) -> list[dict[str, Any]] | None:
        name = self._list_key(key)
        async with self._errors():
            raw = await self._client().lrange(name, 0, -1)
        if not raw:
            return None
        return self._parse_items(name, raw)

    def _parse_items(self, name: str, raw: Sequence[bytes | str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, item in enumerate(raw):
            try:
                entry = json.loads(item)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                # Only this backend writes here; anything else means another program shares the prefix.
                raise StoreError(
                    f"Item {i} of the Redis list {name!r} at {self.location} is not a JSON object: "
                    "another program writes under this key prefix. Give agent-magic its own (?prefix=...)."
                )
            out.append(entry)
        return out

    async def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        async with self._errors():
            found = await self._client().zrange(self._sessions_key(project_key), 0, -1, withscores=True)
        pairs = cast("list[tuple[bytes, float]]", found)  # withscores: (member, score) pairs
        return [{"session_id": _text(member), "mtime": int(score)} for member, score in pairs]

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        name = self._summaries_key(project_key)
        async with self._errors():
            found = await self._client().hgetall(name)  # one reply, however many sessions
        return [self._parse_summary(value, name) for value in cast("dict[bytes, bytes]", found).values()]

    async def delete(self, key: SessionKey) -> None:
        client = self._client()
        sub = key.get("subpath")
        if sub:
            async with self._errors(), client.pipeline(transaction=True) as pipe:
                pipe.delete(self._list_key(key), self._uuids_key(key))
                pipe.srem(self._subkeys_key(key), sub)
                await pipe.execute()
            return
        subkeys = self._subkeys_key(key)

        async def remove(pipe: redis.asyncio.client.Pipeline) -> None:
            # Watched: a sub-transcript appended between reading the set and EXEC makes
            # the transaction fail and run again, so it is deleted too.
            subpaths = [_text(s) for s in await pipe.smembers(subkeys)]
            names = [self._list_key(key), self._uuids_key(key), subkeys]
            for s in subpaths:
                sub_key: SessionKey = {**key, "subpath": s}
                names += [self._list_key(sub_key), self._uuids_key(sub_key)]
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            pipe.delete(*names)
            pipe.zrem(self._sessions_key(key["project_key"]), key["session_id"])
            pipe.hdel(self._summaries_key(key["project_key"]), key["session_id"])

        async with self._errors():
            await client.transaction(remove, subkeys)

    async def list_subkeys(self, key: SessionKey) -> list[str]:
        async with self._errors():
            members = await self._client().smembers(self._subkeys_key(key))
        return sorted(_text(m) for m in members)

    # -- blobs ------------------------------------------------------------------------------
    async def put_blob(self, digest: str, data: bytes) -> None:
        name = self._blob_key(digest)
        async with self._errors():
            await self._client().set(name, data, nx=True)

    async def get_blob(self, digest: str) -> bytes | None:
        name = self._blob_key(digest)
        async with self._errors():
            value = await self._client().get(name)
        return value.encode() if isinstance(value, str) else value

    async def missing_blobs(self, digests: list[str]) -> list[str]:
        if not digests:
            return []
        names = [self._blob_key(d) for d in digests]
        async with self._errors(), self._client().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(name)
            found = await pipe.execute()
        return [d for d, n in zip(digests, found, strict=True) if not n]

    # -- the lease -----------------------------------------------------------------------------
    async def acquire_lease(self, session_id: str, holder: str, ttl_s: float, *, take_over: bool = False) -> Lease:
        ttl_ms = max(1, round(ttl_s * 1000))
        async with self._errors():
            ok, who, ms = await self._script("acquire")(
                keys=[self._lease_key(session_id)], args=[holder, ttl_ms, "1" if take_over else "0"]
            )
        if not ok:
            raise LeaseHeldError(session_id, _text(who), int(ms) / 1000)
        return Lease(session_id, holder, int(ms), ttl_s)

    async def release_lease(self, session_id: str, holder: str) -> None:
        async with self._errors():
            await self._script("release")(keys=[self._lease_key(session_id)], args=[holder])
