"""The file backend: a shared store in a folder (``file:///path``), e.g. on a network file system.

Layout under the root::

    projects/<project key, %-quoted>/<session id>.jsonl            main transcript
    projects/<project key>/<session id>/<subpath>.jsonl            sub-transcripts
    summaries/<project key>/<session id>.json                      each session's summary
    blobs/ab/cdef...                                               content-addressed bytes
    leases/<session id>.json                                       the writer lease

Appends are one ``write`` of whole lines to a file opened with ``O_APPEND``;
a torn last line (a writer killed mid-write) is skipped on load. Blobs and
leases are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import filelock

from .base import (
    Lease,
    LeaseHeldError,
    SessionKey,
    SessionListEntry,
    SessionStoreBackend,
    dedupe_by_uuid,
    now_ms,
)
from .jsonl import atomic_write_bytes
from .summary import fold_summary, folds

_SUFFIX = ".jsonl"


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="") or "%00"


class FileSessionStore(SessionStoreBackend):
    """A shared store in a folder (see the module docstring)."""

    schemes = ("file",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._uuids: dict[Path, tuple[int, set[str]]] = {}  # file -> (its size then, its uuids)

    @classmethod
    def from_url(cls, url: str) -> FileSessionStore:
        parsed = urllib.parse.urlparse(url)
        return cls(urllib.parse.unquote(parsed.path))

    # -- paths ------------------------------------------------------------------
    def _session_dir(self, project_key: str, session_id: str) -> Path:
        return self.root / "projects" / _quote(project_key) / _quote(session_id)

    def _path(self, key: SessionKey) -> Path:
        sub = key.get("subpath")
        if sub:
            parts = [_quote(p) for p in sub.split("/") if p]
            return self._session_dir(key["project_key"], key["session_id"]).joinpath(*parts).with_suffix(_SUFFIX)
        return self.root / "projects" / _quote(key["project_key"]) / (_quote(key["session_id"]) + _SUFFIX)

    # -- transcripts --------------------------------------------------------------
    async def append(self, key: SessionKey, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        await asyncio.to_thread(self._append, key, self._path(key), entries)

    def _append(self, key: SessionKey, path: Path, entries: list[dict[str, Any]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time per file (hosts too, through the OS lock): the uuid check,
        # the write and the summary's read-fold-replace are one step.
        with filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=60, mode=0o600):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                size = 0
            cached = self._uuids.get(path)
            if cached is None or cached[0] != size:  # another host wrote since: read its uuids too
                known = {e["uuid"] for e in self._read(path) or [] if isinstance(e.get("uuid"), str)}
            else:
                known = cached[1]
            fresh = dedupe_by_uuid(known, entries)
            if not fresh:
                self._uuids[path] = (size, known)
                return
            data = b"".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for e in fresh)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            st = path.stat()
            self._uuids[path] = (st.st_size, known)
            if folds(dict(key)):
                self._fold(key, fresh, int(st.st_mtime * 1000))

    def _summary_path(self, project_key: str, session_id: str) -> Path:
        return self.root / "summaries" / _quote(project_key) / (_quote(session_id) + ".json")

    def _fold(self, key: SessionKey, fresh: list[dict[str, Any]], written_ms: int) -> None:
        path = self._summary_path(key["project_key"], key["session_id"])
        with filelock.FileLock(str(path.with_name(path.name + ".lock")), timeout=60, mode=0o600):
            prev = _read_json(path)
            summary = fold_summary(prev, dict(key), fresh)
            # The write time list_sessions reports (the transcript's mtime), never going back.
            summary["mtime"] = max(written_ms, int(prev.get("mtime", 0)) if prev else 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(summary, ensure_ascii=False).encode())

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        folder = self.root / "summaries" / _quote(project_key)

        def scan() -> list[dict[str, Any]]:
            try:
                names = [p for p in folder.iterdir() if p.name.endswith(".json")]
            except FileNotFoundError:
                return []
            return [s for p in names if (s := _read_json(p)) is not None]

        return await asyncio.to_thread(scan)

    async def load(self, key: SessionKey) -> list[dict[str, Any]] | None:
        return await asyncio.to_thread(self._read, self._path(key))

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        out = []
        for line in raw.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if isinstance(obj, dict):
                out.append(obj)
        return out

    async def list_sessions(self, project_key: str) -> list[SessionListEntry]:
        folder = self.root / "projects" / _quote(project_key)

        def scan() -> list[SessionListEntry]:
            try:
                names = list(folder.iterdir())
            except FileNotFoundError:
                return []
            return [
                {"session_id": urllib.parse.unquote(p.name[: -len(_SUFFIX)]), "mtime": int(p.stat().st_mtime * 1000)}
                for p in names
                if p.is_file() and p.name.endswith(_SUFFIX)
            ]

        return await asyncio.to_thread(scan)

    async def delete(self, key: SessionKey) -> None:
        path = self._path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".lock").unlink(missing_ok=True)
            self._uuids.pop(path, None)
            if not key.get("subpath"):
                folder = self._session_dir(key["project_key"], key["session_id"])
                shutil.rmtree(folder, ignore_errors=True)
                summary = self._summary_path(key["project_key"], key["session_id"])
                summary.unlink(missing_ok=True)
                summary.with_name(summary.name + ".lock").unlink(missing_ok=True)
                self._uuids = {p: u for p, u in self._uuids.items() if folder not in p.parents}

        await asyncio.to_thread(remove)

    async def list_subkeys(self, key: SessionKey) -> list[str]:
        folder = self._session_dir(key["project_key"], key["session_id"])

        def scan() -> list[str]:
            if not folder.is_dir():
                return []
            return sorted(
                "/".join(urllib.parse.unquote(part) for part in p.relative_to(folder).with_suffix("").parts)
                for p in folder.rglob("*" + _SUFFIX)
                if p.is_file()
            )

        return await asyncio.to_thread(scan)

    # -- blobs ------------------------------------------------------------------------
    def _blob_path(self, digest: str) -> Path:
        if not digest.isalnum():
            raise ValueError(f"not a digest: {digest!r}")
        return self.root / "blobs" / digest[:2] / digest[2:]

    async def put_blob(self, digest: str, data: bytes) -> None:
        path = self._blob_path(digest)
        await asyncio.to_thread(self._write_new, path, data)

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get_blob(self, digest: str) -> bytes | None:
        path = self._blob_path(digest)

        def read() -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def missing_blobs(self, digests: list[str]) -> list[str]:
        return await asyncio.to_thread(lambda: [d for d in digests if not self._blob_path(d).exists()])

    # -- the lease -----------------------------------------------------------------------
    async def acquire_lease(self, session_id: str, holder: str, ttl_s: float, *, take_over: bool = False) -> Lease:
        path = self.root / "leases" / (_quote(session_id) + ".json")

        def acquire() -> Lease:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Read, judge and replace under one lock: hosts racing for an expired lease
            # would each see it free and each write their own.
            with _lease_lock(path):
                return decide()

        def decide() -> Lease:
            now = now_ms()
            try:
                cur = json.loads(path.read_bytes())
            except (FileNotFoundError, ValueError):
                cur = None
            if isinstance(cur, dict) and cur.get("holder") != holder and not take_over:
                age = max(0.0, (now - int(cur.get("renewed_ms", 0))) / 1000)  # clocks differ between hosts
                if age < float(cur.get("ttl_s", ttl_s)):
                    raise LeaseHeldError(session_id, str(cur.get("holder")), age)
            lease = {"holder": holder, "renewed_ms": now, "ttl_s": ttl_s,
                     "acquired_ms": cur.get("acquired_ms", now) if isinstance(cur, dict) and cur.get("holder") == holder else now}
            if cur is None:
                # The first holder creates the file exclusively: two hosts racing, one wins.
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    return decide()
                with os.fdopen(fd, "w") as f:
                    json.dump(lease, f)
            else:
                tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
                tmp.write_text(json.dumps(lease))
                os.replace(tmp, path)
            return Lease(session_id, holder, int(lease["acquired_ms"]), ttl_s)

        return await asyncio.to_thread(acquire)

    async def release_lease(self, session_id: str, holder: str) -> None:
        path = self.root / "leases" / (_quote(session_id) + ".json")

        def release() -> None:
            if not path.exists():
                return
            with _lease_lock(path):
                try:
                    cur = json.loads(path.read_bytes())
                except (FileNotFoundError, ValueError):
                    return
                if isinstance(cur, dict) and cur.get("holder") == holder:
                    path.unlink(missing_ok=True)

        await asyncio.to_thread(release)


def _lease_lock(path: Path) -> filelock.BaseFileLock:
    """The lock that makes a lease's read and replace one step (an OS file lock beside the lease)."""
    return filelock.FileLock(str(path.with_name(f".{path.name}.lock")), timeout=30, mode=0o600)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
