"""The S3 backend: a shared store in an S3 bucket or S3-compatible object storage (``s3://bucket/prefix``).

URL: ``s3://bucket/prefix?endpoint_url=https://minio.example:9000&region=eu-west-1``
(both parameters optional; without ``endpoint_url`` it is AWS S3). Credentials
come from where the client library (obstore) looks for them: ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, a web-identity token, or an
ECS / EC2 role; not profiles in ``~/.aws`` (export one with
``eval "$(aws configure export-credentials --format env)"``). Never put them in the URL.

Layout under the prefix::

    projects/<project key, %-quoted>/<session id>/main/<part>.jsonl           main transcript
    projects/<project key>/<session id>/main/<first>_<last>_<mtime>.merged.jsonl   parts merged into one
    projects/<project key>/<session id>/sub/<subpath parts>/<part>.jsonl      sub-transcripts (merged the same way)
    summaries/<project key>/<session id>.json                                 each session's summary
    summary-packs/<project key>.json                                          a copy of a project's summaries
    blobs/<digest>                                                            content-addressed bytes
    leases/<session id>.json                                                  the writer lease

Object storage cannot append, so (as in the Agent SDK's reference S3 adapter)
each ``append`` writes a new part, named ``<epoch ms, 13 digits>-<counter>-<random>.jsonl``,
and ``load`` lists a key's own parts, sorts them by name and concatenates them.
Within a process names only grow (the clock never runs backwards for them, a
counter orders appends in the same millisecond, and a ``load`` moves the clock
past every part it saw, so a host whose clock is behind still appends after
what it read); the random suffix keeps two hosts' names apart. An entry's
``uuid`` is dropped when this store object already wrote it to that key, and
``load`` keeps the first occurrence of each uuid (a retried put that had landed).

So that a long session stays a few objects (a ``load`` GETs each one), a
transcript folder holding more than 64 objects is merged into one: by a ``load``
that lists it so, or by an ``append`` (a store object counts the folder's
objects from its last listing plus its own appends since, and lists it again
past 64). The merged object is named ``<first>_<last>_<mtime>.merged.jsonl``
(the range of part names it holds, ``<first>`` to ``<last>`` without ``.jsonl``,
and the newest ``LastModified`` among them, which ``list_sessions`` reports for
it instead of its own). Its first line is
``{"merged": [[<part>, <lines>], ...]}``: every part it holds, in name order, those of merged objects it took in
included; then each part's lines in turn, without those ``load`` drops (repeated
uuids, lines that are not JSON objects). ``load`` reads each part name once,
from whichever listed object holds it (each copy gives the same entries), so
parts not yet deleted, an older merged object and two hosts' overlapping merges
are all harmless, and a part that landed inside a merged range after that
merge's listing (a writer whose clock is behind, or two puts in flight) keeps
its place: merging never changes what ``load`` returns (entries without a uuid
included). A merge is a create-only put (of two hosts merging the same objects
one writes and the other deletes nothing), then the delete of exactly what it
listed: nothing is deleted before an object holding it exists, so a listing
always finds every part somewhere (S3 lists consistently). A ``load`` that finds
an object gone since its listing lists again, unless a merged object it listed
holds that part. A merge rewrites the whole transcript; a store object keeps the
last merged object it read or wrote and the parts it wrote since, so a writer's
merge GETs only other hosts' new parts.

Each ``append`` to a main transcript (or to ``meta``) then folds what it stored
into the session's summary object (:func:`~agent_magic.store.summary.fold_summary`):
read it, fold, and put it back only if unchanged (``If-Match`` on its ETag,
create-only the first time), reading again when another writer was first, so
concurrent appenders lose no update. The summary is written after the part, so
its ``LastModified`` (the ``mtime`` listing reports: the clock ``list_sessions``
uses) is never before the transcript's; a summary older than the transcript means
an append whose summary update failed. The object also remembers (hashed) the
uuids of the entries that a second fold would count again (prompts, results with
a cost), the last 4096 of them, so a batch another store object had already
stored (the first copy wins on ``load``) is not counted twice, and the names of
the last parts folded, so a put that landed though its answer was lost is not
folded twice.

``list_session_summaries`` lists ``summaries/<project key>/`` (one request per
1000 sessions) and reads the summaries whose ETag differs from the project's
pack, a few at a time; when 64 or more were read (or have gone), it writes the
pack again (conditionally, once for concurrent listers). So listing 10,000
sessions is ten LIST pages, one GET of the pack and a GET per session changed
since the pack was written.

Blobs are written with a create-only conditional put (``If-None-Match: *``).
The lease is one JSON object replaced only by conditional puts: create-only
when absent, otherwise ``If-Match`` on the ETag just read, so of two hosts
racing exactly one wins. Releasing it writes a released lease the same way
(a plain ``DELETE`` could remove a lease another host had just taken over).
This needs a store that honours ``If-None-Match`` and ``If-Match`` on ``PutObject``
(AWS S3 since 2024, MinIO, Cloudflare R2, Ceph RGW).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import random
import re
import secrets
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

import anyio
import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from .._errors import ConfigurationError
from .base import (
    Lease,
    LeaseHeldError,
    SessionKey,
    SessionListEntry,
    SessionStoreBackend,
    StoreError,
    dedupe_by_uuid,
    now_ms,
)
from .summary import fold_summary, folds

if TYPE_CHECKING:
    from obstore import ObjectMeta, PutMode, UpdateVersion
    from obstore.store import ClientConfig, RetryConfig, S3Config

_SUFFIX = ".jsonl"
_MERGED_SUFFIX = ".merged.jsonl"
#: Parallel GETs / HEADs per call: a load reads up to _MERGE_AFTER small parts.
_CONCURRENCY = 16
#: A transcript folder with more objects than this is merged into one (by an append or a load).
_MERGE_AFTER = 64
#: Listings of one transcript in a load, when merges keep deleting what it listed.
_READ_ATTEMPTS = 8
#: Conditional puts lost to another host before the lease gives up (each loss re-reads it).
_LEASE_ATTEMPTS = 8
#: The same for a session's summary: every append to the session races for it.
_SUMMARY_ATTEMPTS = 32
#: Counted entries whose uuids a summary remembers (a retried batch is recent), and parts it names.
_COUNTED_KEPT = 4096
_PARTS_KEPT = 16
#: Summaries read one by one in a listing before it writes the project's pack again.
_REPACK_AFTER = 64
#: Fail within seconds, not the client library's default of retrying for 3 minutes.
_RETRIES = 3
_RETRY_TIMEOUT = timedelta(seconds=30)
_URL_PARAMS = ("endpoint_url", "region")

log = logging.getLogger("agent_magic")


def _quote(part: str) -> str:
    if not part:
        raise ValueError("an empty project key, session id or subpath part")
    quoted = urllib.parse.quote(part, safe="")
    # Object paths may not have "." or ".." segments.
    return "%2E" * len(part) if quoted in (".", "..") else quoted


class _PartNames:
    """Names of transcript parts: in this process, each sorts after every earlier one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = itertools.count()

    def next(self) -> str:
        with self._lock:
            self._last_ms = max(self._last_ms, now_ms())
            ms, n = self._last_ms, next(self._counter)
        return f"{ms:013d}-{n:010d}-{secrets.token_hex(4)}{_SUFFIX}"

    def seen(self, names: Sequence[str]) -> None:
        """Parts another host wrote: the next name here sorts after them, whatever our clock says."""
        stamps = [int(n[:13]) for n in names if n[:13].isdigit()]
        if stamps:
            with self._lock:
                self._last_ms = max(self._last_ms, max(stamps) + 1)


_names = _PartNames()


class _Refused(Exception):
    """A conditional put lost: the object exists, or changed since it was read."""


#: One part's lines: in its own object, or in a merged one (there without those ``load`` would drop).
_Segment = tuple[str, Sequence[bytes]]


@dataclasses.dataclass(frozen=True)
class _Piece:
    """One object of a transcript's folder, read: a part, or a merged object."""

    name: str
    #: The parts it holds, in name order: itself, or those a merged object's first line names.
    segments: Sequence[_Segment]
    #: Epoch ms: a part's LastModified; a merged object's, the newest of its parts'.
    mtime: int
    merged: bool
    e_tag: str = ""

    @property
    def parts(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.segments)


class _Transcript(NamedTuple):
    """A transcript folder as one read found it."""

    pieces: list[_Piece]  # every object listed (and not gone), read
    entries: list[dict[str, Any]]  # what load returns
    segments: list[_Segment]  # every part, in name order, with the lines of those entries


class S3SessionStore(SessionStoreBackend):
    """A shared store in an S3 bucket (see the module docstring).

    Parameters
    ----------
    bucket
        The bucket; it must exist.
    prefix
        Where in the bucket the store lives (``""`` for the bucket's root).
    endpoint_url
        An S3-compatible server (MinIO, R2, a test server); None for AWS S3
        (or the ``AWS_ENDPOINT_URL`` the environment names).
    region
        The bucket's region; None for ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` or ``us-east-1``.
    """

    schemes = ("s3",)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("The S3 session store needs a bucket: s3://bucket/prefix.")
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: S3Store | None = None
        # uuids this object wrote, per key's folder: a retried batch is not stored twice.
        self._written: dict[str, set[str]] = {}
        # A listing that may not write the pack (read-only credentials) stops trying.
        self._pack_refused = False
        # Objects in each transcript folder as far as this object knows (its last listing, plus
        # its appends since): an append lists the folder again, to merge it, past _MERGE_AFTER.
        self._objects: dict[str, int] = {}
        # Objects of each folder this object read or wrote, by path and ETag, that a merge need not GET
        # again: the last merged object, and the parts written since.
        self._known: dict[str, dict[tuple[str, str], _Piece]] = {}
        # A merge that failed (read-only credentials) is not tried again by this object.
        self._merge_refused = False

    @classmethod
    def from_url(cls, url: str) -> S3SessionStore:
        """A store for ``s3://bucket/prefix?endpoint_url=...&region=...``.

        Raises
        ------
        ConfigurationError
            No bucket, credentials in the URL, or a query parameter other than
            ``endpoint_url`` and ``region``.
        """
        parsed = urllib.parse.urlsplit(url)
        if "@" in parsed.netloc:
            raise ConfigurationError(
                "Credentials do not go in the S3 session store URL: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or use a role) and give s3://bucket/prefix."
            )
        params = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        unknown = sorted(set(params) - set(_URL_PARAMS))
        if unknown:
            raise ConfigurationError(
                f"Unknown parameter {unknown[0]!r} in the S3 session store URL: use "
                "s3://bucket/prefix?endpoint_url=...&region=... (credentials come from AWS_* variables)."
            )
        return cls(
            urllib.parse.unquote(parsed.netloc),
            urllib.parse.unquote(parsed.path),
            endpoint_url=params["endpoint_url"][-1] if params.get("endpoint_url") else None,
            region=params["region"][-1] if params.get("region") else None,
        )

    # -- the client and its errors ---------------------------------------------------
    def _store(self) -> S3Store:
        if self._client is None:
            config: S3Config = {}
            if self.endpoint_url:
                config["endpoint"] = self.endpoint_url
            if self.region:
                config["region"] = self.region
            client_options: ClientConfig = {}
            if self.endpoint_url and self.endpoint_url.lower().startswith("http://"):
                client_options["allow_http"] = True
            retry: RetryConfig = {"max_retries": _RETRIES, "retry_timeout": _RETRY_TIMEOUT}
            try:
                self._client = S3Store(
                    self.bucket, config=config, client_options=client_options, retry_config=retry
                )
            except (BaseError, ValueError) as e:
                raise StoreError(
                    f"Cannot configure the S3 session store for bucket {self.bucket!r}: "
                    f"{_scrub(_first_line(e))}. Check the store URL and the AWS_* variables."
                ) from e
        return self._client

    async def aclose(self) -> None:
        # obstore keeps no open connections a caller must close; the next call builds a new client.
        self._client = None

    def _where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _error(self, e: Exception, doing: str) -> StoreError:
        """One line for a person: what failed and what to check (never a secret)."""
        text = str(e)
        code = re.search(r"<Code>([^<]*)</Code>", text)
        code_s = code.group(1) if code else ""
        if code_s == "NoSuchBucket":
            return StoreError(
                f"The S3 bucket {self.bucket!r} does not exist ({self._where()}): create it, "
                "or fix the bucket in the session store URL."
            )
        if code_s in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            return StoreError(
                f"The S3 bucket {self.bucket!r} is in another region: add region=... to the session "
                "store URL or set AWS_REGION."
            )
        if isinstance(e, (UnauthenticatedError, PermissionDeniedError)) or code_s in (
            "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
            "InvalidToken", "TokenRefreshRequired",
        ):
            return StoreError(
                f"S3 refused access to {self._where()} while {doing}"
                + (f" ({code_s})" if code_s else "")
                + ": check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN "
                "(or the role) and the bucket's policy."
            )
        if re.search(r"/latest/api/token|/latest/meta-data|169\.254\.170\.2|AssumeRoleWithWebIdentity", text):
            # The client library found no key in the environment and its role lookups failed too.
            return StoreError(
                f"Found no usable AWS credentials for {self._where()}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or check the instance, container or web-identity role."
            )
        if not code_s and re.search(
            r"error sending request|connect|dns error|timed out|connection refused|connection reset",
            text,
            re.IGNORECASE,
        ):
            return StoreError(
                f"Cannot reach S3 ({self.endpoint_url or 'AWS'}) while {doing}: check endpoint_url and "
                "region in the session store URL, and the network."
            )
        message = re.search(r"<Message>([^<]*)</Message>", text)
        detail = f"{code_s}: {message.group(1)}" if code_s and message else _first_line(e)
        return StoreError(f"S3 failed while {doing} ({self._where()}): {_scrub(detail)}")

    # -- object helpers -------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) if self.prefix else "/".join(parts)

    def _session_dir(self, project_key: str, session_id: str) -> str:
        return self._path("projects", _quote(project_key), _quote(session_id))

    def _summary_path(self, project_key: str, session_id: str) -> str:
        return self._path("summaries", _quote(project_key), _quote(session_id) + ".json")

    def _pack_path(self, project_key: str) -> str:
        return self._path("summary-packs", _quote(project_key) + ".json")

    def _key_dir(self, key: SessionKey) -> str:
        folder = self._session_dir(key["project_key"], key["session_id"])
        sub = [p for p in (key.get("subpath") or "").split("/") if p]
        if sub:
            return "/".join([folder, "sub", *(_quote(p) for p in sub)])
        return folder + "/main"

    async def _list(self, prefix: str, doing: str) -> Sequence[ObjectMeta]:
        """Every object under ``prefix`` (recursively)."""
        try:
            return await obstore.list(self._store(), prefix + "/").collect_async()
        except BaseError as e:
            raise self._error(e, doing) from e

    async def _list_here(self, prefix: str, doing: str) -> Sequence[ObjectMeta]:
        """The objects directly in ``prefix`` (not in its sub-folders)."""
        try:
            result = await obstore.list_with_delimiter_async(self._store(), prefix + "/")
        except BaseError as e:
            raise self._error(e, doing) from e
        return result["objects"]

    async def _get(self, path: str, doing: str) -> tuple[bytes, ObjectMeta] | None:
        try:
            result = await obstore.get_async(self._store(), path)
            return bytes(await result.bytes_async()), result.meta
        except FileNotFoundError as e:
            if "NoSuchBucket" in str(e):
                raise self._error(e, doing) from e
            return None
        except BaseError as e:
            raise self._error(e, doing) from e

    async def _put(self, path: str, data: bytes, doing: str, mode: PutMode | None = None) -> str | None:
        """Put ``data``; the new object's ETag.

        Raises
        ------
        _Refused
            A conditional put whose condition did not hold (another writer was first).
        """
        try:
            result = await obstore.put_async(self._store(), path, data, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError) as e:
            raise _Refused from e
        except (BaseError, FileNotFoundError) as e:
            if "<Code>ConditionalRequestConflict</Code>" in str(e):
                raise _Refused from e  # AWS's 409: a concurrent conditional write to the same key
            raise self._error(e, doing) from e
        return result["e_tag"]

    async def _read_versioned(self, path: str, doing: str, needs: str) -> tuple[dict[str, Any], UpdateVersion] | None:
        """A JSON object (``{}`` if the object holds something else) and its version, for a conditional put."""
        got = await self._get(path, doing)
        if got is None:
            return None
        data, meta = got
        if not meta["e_tag"]:
            raise StoreError(
                f"The S3 store at {self._where()} returns no ETags, and {needs} needs "
                "conditional writes (If-Match): use AWS S3 or a store that supports them."
            )
        try:
            cur = json.loads(data)
        except ValueError:
            cur = None
        version: UpdateVersion = {"e_tag": meta["e_tag"]}
        if meta["version"]:
            version["version"] = meta["version"]
        return (cur if isinstance(cur, dict) else {}), version

    async def _delete(self, paths: list[str], doing: str) -> None:
        if not paths:
            return
        try:
            await obstore.delete_async(self._store(), paths)
        except FileNotFoundError:
            pass
        except BaseError as e:
            raise self._error(e, doing) from e

    # -- transcripts --------------------------------------------------------------------------
    async def append(self, key: SessionKey, entries: list[dict[str, Any]]) -> None:
        folder = self._key_dir(key)
        # A copy: the uuids count as written only once the put has succeeded.
        fresh = dedupe_by_uuid(set(self._written.get(folder, ())), entries)
        if len(fresh) < len(dedupe_by_uuid(set(), entries)) and not await self._list_here(folder, "checking a transcript"):
            # Uuids this object wrote, but the transcript is gone (another host deleted the
            # session): they are new again. One LIST, only when a batch is sent twice.
            self._written.pop(folder, None)
            fresh = dedupe_by_uuid(set(), entries)
        if not fresh:
            return
        data = b"".join(
            json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for e in fresh
        )
        part = _names.next()
        e_tag = await self._put(f"{folder}/{part}", data, "appending to a transcript")
        if e_tag:
            self._known.setdefault(folder, {})[(f"{folder}/{part}", e_tag)] = _piece(part, data, 0, e_tag)
        if folds(dict(key)):
            # After the part, so the summary's LastModified is never before the transcript's.
            await self._fold(key, part, fresh)
        # Only now: should the summary's update fail, a retried batch is folded (and its part put again).
        uuids = {e["uuid"] for e in fresh if isinstance(e.get("uuid"), str) and e["uuid"]}
        self._written.setdefault(folder, set()).update(uuids)
        self._objects[folder] = self._objects.get(folder, 0) + 1
        if self._objects[folder] > _MERGE_AFTER and not self._merge_refused:
            try:
                transcript = await self._read(folder, "merging a transcript's parts")
            except StoreError as e:
                self._stop_merging(e)
                return
            await self._merge_if_due(folder, transcript)

    async def _fold(self, key: SessionKey, part: str, fresh: list[dict[str, Any]]) -> None:
        """Fold ``fresh`` (stored as ``part``) into the session's summary object, by compare-and-swap."""
        path = self._summary_path(key["project_key"], key["session_id"])
        doing = "updating the session's summary"
        for attempt in range(_SUMMARY_ATTEMPTS):
            read = await self._read_versioned(path, doing, "the session summary")
            state, version = read if read is not None else (None, None)
            if state is not None and part in (state.get("parts") or ()):
                return  # our put landed, though its answer was lost
            body = json.dumps(_folded(state, key, part, fresh), ensure_ascii=False, separators=(",", ":"))
            try:
                await self._put(path, body.encode(), doing, mode="create" if version is None else version)
            except _Refused:
                # Another append was first: read its summary and fold into that; a random pause spreads racers out.
                await anyio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            return
        raise StoreError(
            f"Could not update the summary of session {key['session_id'][:8]}: other hosts kept changing it. "
            "Its transcript is stored; append again (the same uuids) to count it."
        )

    async def load(self, key: SessionKey) -> list[dict[str, Any]] | None:
        folder = self._key_dir(key)
        transcript = await self._read(folder, "reading a transcript")
        if transcript is None:
            return None
        _names.seen([max(piece.parts) for piece in transcript.pieces])
        await self._merge_if_due(folder, transcript)
        return transcript.entries

    async def _read(self, folder: str, doing: str) -> _Transcript | None:
        """Every object in a transcript's folder, read, and the entries ``load`` returns; None if there are none.

        Raises
        ------
        StoreError
            Merges kept deleting what this read listed, _READ_ATTEMPTS times.
        """
        read: dict[tuple[str, str], _Piece | None] = {}  # by path and ETag; None: gone since listed
        known = self._known.get(folder, {})
        for _ in range(_READ_ATTEMPTS):
            listed = [(m["path"], m["e_tag"] or "", _ms(m)) for m in await self._list_here(folder, doing)]
            if not listed:
                return None
            for path, e_tag, ms in listed:
                hit = known.get((path, e_tag))
                if hit is not None and read.get((path, e_tag)) is None:
                    # A part's mtime is its LastModified, which only a listing tells.
                    read[(path, e_tag)] = hit if hit.merged else dataclasses.replace(hit, mtime=ms)
            await self._read_pieces([o for o in listed if read.get(o[:2]) is None], read, doing)
            pieces = [read[(path, e_tag)] for path, e_tag, _ in listed]
            present = [piece for piece in pieces if piece is not None]
            held = frozenset().union(*(piece.parts for piece in present if piece.merged))
            gone = [path.rsplit("/", 1)[-1] for (path, _, _), piece in zip(listed, pieces, strict=True) if piece is None]
            # A part deleted since the listing is no loss if a merged object listed holds it; otherwise a merge
            # ran in between and wrote what we did not list: list again (what was read is kept).
            if present and all(name in held and not name.endswith(_MERGED_SUFFIX) for name in gone):
                return _transcript(present)
        raise StoreError(
            f"A transcript in {self._where()} kept changing while it was read (other hosts merging its parts): try again."
        )

    async def _read_pieces(
        self, objects: list[tuple[str, str, int]], into: dict[tuple[str, str], _Piece | None], doing: str
    ) -> None:
        """GET ``objects`` (path, ETag, LastModified ms), a few at a time."""

        async def fetch(i: int) -> None:
            path, e_tag, ms = objects[i]
            got = await self._get(path, doing)
            into[(path, e_tag)] = None if got is None else _piece(path.rsplit("/", 1)[-1], got[0], ms, e_tag)

        await _each(range(len(objects)), fetch)

    async def _merge_if_due(self, folder: str, transcript: _Transcript | None) -> None:
        """Merge what ``transcript`` read into one object if there are more than _MERGE_AFTER."""
        if transcript is None:
            self._objects[folder] = 0
            return
        self._objects[folder] = len(transcript.pieces)
        # Keep what was listed of what we knew, and the biggest merged object read.
        known = self._known.setdefault(folder, {})
        listed = {(f"{folder}/{p.name}", p.e_tag) for p in transcript.pieces}
        for gone in known.keys() - listed:
            del known[gone]
        biggest = max((p for p in transcript.pieces if p.merged), key=lambda p: len(p.parts), default=None)
        if biggest is not None and biggest.e_tag:
            known[(f"{folder}/{biggest.name}", biggest.e_tag)] = biggest
        if len(transcript.pieces) <= _MERGE_AFTER or self._merge_refused:
            return
        segments = transcript.segments
        mtime = max(piece.mtime for piece in transcript.pieces)
        name = f"{_stem(segments[0][0])}_{_stem(segments[-1][0])}_{mtime:013d}{_MERGED_SUFFIX}"
        head = [[part, len(lines)] for part, lines in segments]
        body = b"".join(
            line + b"\n"
            for line in (
                json.dumps({"merged": head}, ensure_ascii=False, separators=(",", ":")).encode(),
                *(line for _, lines in segments for line in lines),
            )
        )
        doing = "merging a transcript's parts"
        try:
            e_tag = await self._put(f"{folder}/{name}", body, doing, mode="create")
            # Only once the merged object is there: a reader that listed the parts finds them in it.
            await self._delete([f"{folder}/{p.name}" for p in transcript.pieces if p.name != name], doing)
        except _Refused:
            return  # another host merged the same objects just now; what it deletes, its object holds
        except StoreError as e:
            self._stop_merging(e)
            return
        self._objects[folder] = 1
        self._known[folder] = {}
        if e_tag:
            self._known[folder][(f"{folder}/{name}", e_tag)] = _Piece(name, segments, mtime, merged=True, e_tag=e_tag)

    def _stop_merging(self, e: StoreError) -> None:
        # Only an optimisation: every part stays readable without it (e.g. with read-only credentials).
        self._merge_refused = True
        log.warning("Stopped merging S3 transcript parts (%s); loads read each part.", e)

    async def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        base = self._path("projects", _quote(project_key))
        newest: dict[str, int] = {}
        for meta in await self._list(base, "listing sessions"):
            parts = meta["path"][len(base) + 1 :].split("/")
            if len(parts) == 3 and parts[1] == "main":
                sid = urllib.parse.unquote(parts[0])
                # A merged object's own LastModified is when it was merged, not when its parts were written.
                mtime = _merged_mtime(parts[2]) or _ms(meta)
                newest[sid] = max(newest.get(sid, 0), mtime)
        return [{"session_id": sid, "mtime": mtime} for sid, mtime in newest.items()]

    async def delete(self, key: SessionKey) -> None:
        doing = "deleting a transcript"
        if key.get("subpath"):
            folder = self._key_dir(key)
            # Only this subkey's parts: "a" must not take "a/b" with it.
            objects = await self._list_here(folder, doing)
            for known in (self._written, self._objects, self._known):
                known.pop(folder, None)
        else:
            folder = self._session_dir(key["project_key"], key["session_id"])
            objects = await self._list(folder, doing)
            self._written = {f: u for f, u in self._written.items() if not f.startswith(folder + "/")}
            self._objects = {f: n for f, n in self._objects.items() if not f.startswith(folder + "/")}
            self._known = {f: k for f, k in self._known.items() if not f.startswith(folder + "/")}
        paths = [m["path"] for m in objects]
        if not key.get("subpath"):
            paths.append(self._summary_path(key["project_key"], key["session_id"]))
        await self._delete(paths, doing)

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        doing = "listing session summaries"
        folder = self._path("summaries", _quote(project_key))
        listed: list[ObjectMeta] = []
        pack: list[tuple[dict[str, Any], UpdateVersion] | None] = [None]

        async def start(i: int) -> None:
            # The listing and the pack at once.
            if i == 0:
                listed.extend(await self._list(folder, doing))
            else:
                pack[0] = await self._read_versioned(self._pack_path(project_key), doing, "the summaries' pack")

        await _each(range(2), start)
        packed = (pack[0][0] if pack[0] is not None else {}).get("sessions")
        if not isinstance(packed, dict):
            packed = {}

        # session id -> (summary, its ETag, LastModified ms)
        found: dict[str, tuple[dict[str, Any], str, int]] = {}
        stale: list[tuple[str, ObjectMeta]] = []
        for meta in listed:
            name = meta["path"].rsplit("/", 1)[-1]
            if not name.endswith(".json"):
                continue
            sid = urllib.parse.unquote(name[: -len(".json")])
            hit = packed.get(sid)
            if isinstance(hit, dict) and meta["e_tag"] and hit.get("e_tag") == meta["e_tag"] and _is_summary(hit.get("summary")):
                found[sid] = (hit["summary"], meta["e_tag"], _ms(meta))
            else:
                stale.append((sid, meta))

        async def read(i: int) -> None:
            sid, listed_meta = stale[i]
            got = await self._get(listed_meta["path"], doing)
            if got is None:
                return  # deleted since the listing
            try:
                state = json.loads(got[0])
            except ValueError:
                return
            summary = state.get("summary") if isinstance(state, dict) else None
            if _is_summary(summary):
                found[sid] = (summary, got[1]["e_tag"] or "", max(_ms(listed_meta), _ms(got[1])))

        await _each(range(len(stale)), read)
        gone = sum(1 for sid in packed if sid not in found)
        if len(stale) + gone >= _REPACK_AFTER and not self._pack_refused:
            await self._repack(project_key, found, pack[0][1] if pack[0] is not None else None)
        # mtime: the summary object's LastModified, the clock list_sessions reports.
        return [{**summary, "mtime": ms} for summary, _, ms in found.values()]

    async def _repack(
        self, project_key: str, found: dict[str, tuple[dict[str, Any], str, int]], version: UpdateVersion | None
    ) -> None:
        """Write the project's pack: what a listing read, by ETag, so the next one reads only what changed."""
        sessions = {sid: {"e_tag": e_tag, "summary": summary} for sid, (summary, e_tag, _) in found.items() if e_tag}
        body = json.dumps({"sessions": sessions}, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            await self._put(
                self._pack_path(project_key), body, "packing session summaries", mode="create" if version is None else version
            )
        except _Refused:
            pass  # another listing packed them just now
        except StoreError as e:
            # Only a cache: listing works without it (each summary read one by one), e.g. with read-only credentials.
            self._pack_refused = True
            log.warning("Listing S3 session summaries without a pack (%s); each listing reads them one by one.", e)

    async def list_subkeys(self, key: SessionKey) -> list[str]:
        base = self._session_dir(key["project_key"], key["session_id"]) + "/sub"
        subkeys = {
            "/".join(urllib.parse.unquote(p) for p in m["path"][len(base) + 1 :].split("/")[:-1])
            for m in await self._list(base, "listing sub-transcripts")
        }
        return sorted(s for s in subkeys if s)

    # -- blobs ------------------------------------------------------------------------------
    def _blob_path(self, digest: str) -> str:
        if not digest.isalnum() or not digest.isascii():
            raise ValueError(f"not a digest: {digest!r}")
        return self._path("blobs", digest)

    async def put_blob(self, digest: str, data: bytes) -> None:
        try:
            await self._put(self._blob_path(digest), data, "storing a backup", mode="create")
        except _Refused:
            pass  # content-addressed: what is there is the same bytes

    async def get_blob(self, digest: str) -> bytes | None:
        got = await self._get(self._blob_path(digest), "reading a backup")
        return None if got is None else got[0]

    async def missing_blobs(self, digests: list[str]) -> list[str]:
        paths = [self._blob_path(d) for d in digests]
        present = [False] * len(digests)

        async def head(i: int) -> None:
            try:
                await obstore.head_async(self._store(), paths[i])
                present[i] = True
            except FileNotFoundError:
                pass  # (a HEAD has no body to say whether the bucket is missing; a put will)
            except BaseError as e:
                raise self._error(e, "checking backups") from e

        await _each(range(len(digests)), head)
        return [d for d, there in zip(digests, present, strict=True) if not there]

    # -- the lease --------------------------------------------------------------------------------
    def _lease_path(self, session_id: str) -> str:
        return self._path("leases", _quote(session_id) + ".json")

    async def _read_lease(self, path: str) -> tuple[dict[str, Any], UpdateVersion] | None:
        return await self._read_versioned(path, "reading the session's lease", "the session lease")

    async def acquire_lease(self, session_id: str, holder: str, ttl_s: float, *, take_over: bool = False) -> Lease:
        path = self._lease_path(session_id)
        doing = "taking the session's lease"
        for _ in range(_LEASE_ATTEMPTS):
            read = await self._read_lease(path)
            now = now_ms()
            cur, version = read if read is not None else ({}, None)
            cur_holder = str(cur.get("holder") or "")
            mine = cur_holder == holder
            if cur_holder and not mine and not take_over:
                age = max(0.0, (now - _int(cur.get("renewed_ms"))) / 1000)
                if age < _float(cur.get("ttl_s"), ttl_s):
                    raise LeaseHeldError(session_id, cur_holder, age)
            acquired = _int(cur.get("acquired_ms"), now) if mine else now
            body = json.dumps({"holder": holder, "renewed_ms": now, "acquired_ms": acquired, "ttl_s": ttl_s})
            try:
                # Conditional either way: if another host wrote it since we read it, we lose and look again.
                await self._put(path, body.encode(), doing, mode="create" if version is None else version)
            except _Refused:
                continue
            return Lease(session_id, holder, acquired, ttl_s)
        raise StoreError(
            f"Could not take the lease of session {session_id[:8]}: other hosts kept changing it. Try again."
        )

    async def release_lease(self, session_id: str, holder: str) -> None:
        path = self._lease_path(session_id)
        for _ in range(_LEASE_ATTEMPTS):
            read = await self._read_lease(path)
            if read is None or read[0].get("holder") != holder:
                return
            released = json.dumps({"holder": "", "renewed_ms": now_ms(), "released_by": holder})
            try:
                await self._put(path, released.encode(), "releasing the session's lease", mode=read[1])
            except _Refused:
                continue  # changed since we read it (renewed by us elsewhere, or taken over): look again
            return


async def _each(items: Iterable[int], fn: Callable[[int], Awaitable[None]]) -> None:
    """``fn(item)`` for every item, a few at a time; the first error stops the rest and is raised as is."""
    errors: list[Exception] = []
    limit = anyio.Semaphore(_CONCURRENCY)

    async def one(item: int) -> None:
        async with limit:
            try:
                await fn(item)
            except Exception as e:
                errors.append(e)
                tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(one, item)
    if errors:
        raise errors[0]


def _folded(state: dict[str, Any] | None, key: SessionKey, part: str, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary object after folding ``fresh`` (stored as ``part``) into ``state``."""
    state = state or {}
    prev = state.get("summary")
    counted = [t for t in state.get("counted") or () if isinstance(t, str)]
    seen = set(counted)
    summary = fold_summary(prev if _is_summary(prev) else None, dict(key), [])
    for e in fresh:
        tag = _uuid_tag(e)
        if tag is not None and tag in seen:
            continue  # stored (and counted) already by another store object: load keeps the first copy
        after = fold_summary(summary, dict(key), [e])
        # Remember only entries a second fold would count again (prompts, costs): headers,
        # titles and timestamps fold the same however often they come, and would bloat the object.
        if tag is not None and fold_summary(after, dict(key), [e]) != after:
            counted.append(tag)
            seen.add(tag)
        summary = after
    # A listing reports the object's LastModified instead; this is for a reader of the raw object.
    summary["mtime"] = now_ms()
    parts = [p for p in state.get("parts") or () if isinstance(p, str)]
    return {"summary": summary, "counted": counted[-_COUNTED_KEPT:], "parts": [*parts, part][-_PARTS_KEPT:]}


def _uuid_tag(entry: dict[str, Any]) -> str | None:
    """A short hash of the entry's uuid (12 hex digits: a collision within one session is negligible)."""
    uid = entry.get("uuid") if isinstance(entry, dict) else None
    if not isinstance(uid, str) or not uid:
        return None
    return hashlib.blake2b(uid.encode(), digest_size=6).hexdigest()


def _is_summary(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and isinstance(value.get("session_id"), str) and isinstance(value.get("data"), dict)


def _piece(name: str, body: bytes, last_modified_ms: int, e_tag: str = "") -> _Piece:
    lines = body.splitlines()
    if not name.endswith(_MERGED_SUFFIX) or not lines:
        return _Piece(name, [(name, lines)], last_modified_ms, merged=False, e_tag=e_tag)
    try:
        head = json.loads(lines[0])
    except ValueError:
        head = None
    listed = head.get("merged") if isinstance(head, dict) else None
    if not isinstance(listed, list) or not listed or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and p[0] and isinstance(p[1], int) for p in listed
    ):
        # Not what a merge writes: read its lines as one part's.
        return _Piece(name, [(name, lines[1:])], last_modified_ms, merged=False, e_tag=e_tag)
    segments: list[_Segment] = []
    at = 1
    for part, count in listed:
        segments.append((part, lines[at : at + max(count, 0)]))
        at += max(count, 0)
    mtime = _merged_mtime(name) or last_modified_ms
    return _Piece(name, segments, mtime, merged=True, e_tag=e_tag)


def _transcript(pieces: list[_Piece]) -> _Transcript:
    """What ``load`` returns from these objects: each part's entries once, parts in name order.

    A part held by several objects (merged objects, one that took in another, the part
    itself not yet deleted) is read once, from any: a merged object leaves out only lines
    ``load`` would drop, so each copy gives the same entries.
    """
    entries: list[dict[str, Any]] = []
    segments: list[_Segment] = []
    seen: set[str] = set()
    last = None
    for part, lines in sorted((segment for piece in pieces for segment in piece.segments), key=lambda s: s[0]):
        if part == last:
            continue
        last = part
        kept: list[bytes] = []
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            uid = obj.get("uuid")
            if isinstance(uid, str) and uid:
                if uid in seen:
                    continue  # a batch retried after its first put had landed: the first copy wins
                seen.add(uid)
            entries.append(obj)
            kept.append(line)
        segments.append((part, kept))
    return _Transcript(pieces, entries, segments)


def _stem(part: str) -> str:
    return part[: -len(_SUFFIX)] if part.endswith(_SUFFIX) else part


def _merged_mtime(name: str) -> int | None:
    """The mtime a merged object's name records (None for a part)."""
    if not name.endswith(_MERGED_SUFFIX):
        return None
    stamp = name[: -len(_MERGED_SUFFIX)].rsplit("_", 1)[-1]
    return int(stamp) if stamp.isdigit() else None


def _ms(meta: ObjectMeta) -> int:
    return int(meta["last_modified"].timestamp() * 1000)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:199] + "…"


def _scrub(text: str) -> str:
    """``text`` without the values of the AWS secret variables, should a server ever echo one."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return text
