"""The snapshot store: pickle streams and content-addressed buffers on disk, snapshot, restore and cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ...store.home import make_private_dir
from .names import TouchedNames, is_ignored
from .pickling import (
    BufferSink,
    SnapshotPickler,
    SnapshotUnpickler,
    StreamWriter,
    VariableFailed,
    buffer_digest,
    gb,
    one_line,
    pickle_reason,
)
from .records import (
    DiskUsage,
    RestorePlan,
    RestoreResult,
    SnapshotDataError,
    SnapshotKeyError,
    SnapshotRecord,
    VariableRecord,
)
from .rewind import apply_restore, plan_restore
from .values import (
    _is_ndarray,
    _pandas_kind,
    estimate_size,
    fingerprint,
    type_name,
    why_not_restorable,
)

GB = 1 << 30
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_IO_CHUNK = 64 << 20


class VariableSnapshots:
    """Snapshots of kernel variables under ``root``; restores them into the same namespace.

    Layout: ``buffers/ab/cdef...`` (out-of-band buffers, named by content, each stored
    once across snapshots), ``snapshots/<key>.pickle`` (one pickle stream per snapshot:
    the values, pickled together so shared references stay shared) and
    ``snapshots/<key>.json`` (its :class:`SnapshotRecord`). Files are written to a
    temporary name and renamed; they are not fsynced (a snapshot is only useful to
    the live kernel, which a machine crash ends too).

    Functions and classes defined in the notebook cannot be pickled by name; they are
    kept by reference in this object (they are small), so a rewind brings back the
    very function the undone code replaced. Such snapshots restore those values
    only in the process that took them.

    Parameters
    ----------
    root
        Folder of the store (created when first written).
    max_variable_bytes
        Values larger than this are not stored (recorded as not restorable).
    max_snapshot_bytes
        Once one snapshot holds this much, further values are not stored.
    inline_bytes
        Buffers smaller than this stay in the pickle stream instead of their own file.
    watch_limit
        At most this many large values not named by the code are fingerprinted per
        snapshot, for the plan's warnings.
    fingerprint_min_bytes
        Values smaller than this are not fingerprinted.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_variable_bytes: int = 2 * GB,
        max_snapshot_bytes: int = 4 * GB,
        inline_bytes: int = 64 << 10,
        watch_limit: int = 64,
        fingerprint_min_bytes: int = 1 << 20,
    ) -> None:
        self.root = Path(root)
        self.max_variable_bytes = max_variable_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self.inline_bytes = inline_bytes
        self.watch_limit = watch_limit
        self.fingerprint_min_bytes = fingerprint_min_bytes
        self._kept: dict[str, dict[str, Any]] = {}
        self._known: dict[str, int] = {}

    # -- paths -------------------------------------------------------------

    def _buffer_path(self, digest: str) -> Path:
        return self.root / "buffers" / digest[:2] / digest[2:]

    def _snapshot_path(self, key: str, suffix: str) -> Path:
        if not _KEY_RE.match(key):
            raise SnapshotKeyError(f"Snapshot key {key!r} is not valid: use 1-128 letters, digits, '.', '_' or '-'.")
        return self.root / "snapshots" / f"{key}{suffix}"

    # -- snapshot ----------------------------------------------------------

    def snapshot(self, namespace: Mapping[str, Any], names: Iterable[str] | TouchedNames, *, key: str) -> SnapshotRecord:
        """Store the current values of ``names`` from ``namespace`` under ``key``.

        Parameters
        ----------
        namespace
            The kernel's namespace (``user_ns``); not modified.
        names
            The names the next execution can change, usually :func:`names_touched`'s result.
            Names not in ``namespace`` are recorded as absent.
        key
            The snapshot's key (1-128 of ``[A-Za-z0-9._-]``); an existing snapshot with
            the same key is replaced.

        Returns
        -------
        SnapshotRecord
            What was stored, what was absent, and what could not be stored and why.

        Raises
        ------
        SnapshotKeyError
            ``key`` is not valid.
        OSError
            The store cannot be written (disk full...).
        """
        t0 = time.perf_counter()
        stream_path = self._snapshot_path(key, ".pickle")
        wanted = sorted({n for n in names if not is_ignored(n)})
        variables: dict[str, VariableRecord] = {}
        primaries: dict[int, str] = {}
        aliases: dict[str, str] = {}
        candidates: list[tuple[int, str, Any]] = []
        for name in wanted:
            if name not in namespace:
                variables[name] = VariableRecord("absent")
                continue
            value = namespace[name]
            if id(value) in primaries:
                aliases[name] = primaries[id(value)]
                continue
            primaries[id(value)] = name
            tname = type_name(value)
            reason = why_not_restorable(value)
            est = estimate_size(value)
            if reason is None and est > self.max_variable_bytes:
                reason = f"about {gb(est)}, larger than the per-variable cap of {gb(self.max_variable_bytes)}"
            if reason is not None:
                variables[name] = VariableRecord("not_restorable", tname, est, id(value), reason=reason)
                continue
            candidates.append((est, name, value))
        candidates.sort(key=lambda c: (c[0], c[1]))

        failed: dict[str, str] = {}
        while True:
            todo = [(n, v) for _, n, v in candidates if n not in failed]
            try:
                stream, sink, per_var, kept = self._write_stream(stream_path, todo)
                break
            except VariableFailed as e:
                failed[e.name] = e.reason
        for est, name, value in candidates:
            tname = type_name(value)
            if name in failed:
                variables[name] = VariableRecord("not_restorable", tname, est, id(value), reason=failed[name])
                continue
            size, in_memory = per_var[name]
            fp = fingerprint(value, min_bytes=self.fingerprint_min_bytes)
            variables[name] = VariableRecord("stored", tname, size, id(value), fp, in_memory=in_memory)
        for name, primary in aliases.items():
            p = variables[primary]
            variables[name] = VariableRecord(p.state, p.type, p.size, p.id, p.fingerprint, p.reason, primary if p.state == "stored" else None, p.in_memory)

        watched = self._watch(namespace, set(wanted))
        order = [n for n, _ in todo]
        record = SnapshotRecord(
            key=key,
            created_ms=time.time_ns() // 1_000_000,
            variables=dict(sorted(variables.items())),
            order=order,
            stream=stream,
            buffers=list(sink.buffers),
            watched=watched,
            seconds=round(time.perf_counter() - t0, 4),
        )
        if kept:
            self._kept[key] = kept
        else:
            self._kept.pop(key, None)
        _atomic_write(self._snapshot_path(key, ".json"), json.dumps(record.to_dict()).encode())
        return record

    def _write_stream(
        self, path: Path, todo: list[tuple[str, Any]]
    ) -> tuple[dict[str, Any] | None, BufferSink, dict[str, tuple[int, bool]], dict[str, Any]]:
        sink = BufferSink(self._put_buffer, max_variable_bytes=self.max_variable_bytes, max_snapshot_bytes=self.max_snapshot_bytes, inline_bytes=self.inline_bytes)
        kept: dict[str, Any] = {}
        per_var: dict[str, tuple[int, bool]] = {}
        if not todo:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None, sink, per_var, kept
        make_private_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                writer = StreamWriter(f, sink)
                pickler = SnapshotPickler(writer, sink, kept)
                for name, value in todo:
                    sink.start(name)
                    pickler.used_kept = False
                    try:
                        pickler.dump(value)
                    except VariableFailed:
                        raise
                    except Exception as e:  # anything pickle can raise, from any __reduce__ (RecursionError too)
                        raise VariableFailed(name, pickle_reason(e)) from None
                    per_var[name] = (sink.var_bytes, pickler.used_kept)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return {"digest": writer.hash.hexdigest(), "size": writer.size}, sink, per_var, kept

    def _put_buffer(self, mv: memoryview) -> str:
        digest = buffer_digest(mv)
        n = mv.nbytes
        if self._known.get(digest) == n:
            return digest
        path = self._buffer_path(digest)
        try:
            if path.stat().st_size == n:
                self._known[digest] = n
                return digest
        except FileNotFoundError:
            pass
        make_private_dir(path.parent)
        tmp = path.with_name(f".{path.name[:16]}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb", buffering=0) as f:
                for i in range(0, n, _IO_CHUNK):
                    chunk = mv[i : i + _IO_CHUNK]
                    done = 0
                    while done < chunk.nbytes:
                        done += f.write(chunk[done:]) or 0
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._known[digest] = n
        return digest

    def _watch(self, namespace: Mapping[str, Any], named: set[str]) -> dict[str, tuple[int, str]]:
        big: list[tuple[int, str, Any]] = []
        for name, value in list(namespace.items()):
            if name in named or is_ignored(name) or not (_is_ndarray(value) or _pandas_kind(value)):
                continue
            est = estimate_size(value)
            if est >= self.fingerprint_min_bytes:
                big.append((est, name, value))
        big.sort(key=lambda b: (-b[0], b[1]))
        watched = {}
        for _, name, value in big[: self.watch_limit]:
            fp = fingerprint(value, min_bytes=0)
            if fp is not None:
                watched[name] = (id(value), fp)
        return dict(sorted(watched.items()))

    # -- reading -----------------------------------------------------------

    def record(self, key: str) -> SnapshotRecord:
        """The :class:`SnapshotRecord` stored under ``key``.

        Raises
        ------
        SnapshotKeyError
            No snapshot with that key.
        """
        try:
            data = json.loads(self._snapshot_path(key, ".json").read_bytes())
        except FileNotFoundError:
            raise SnapshotKeyError(f"No variable snapshot {key!r} in {self.root}.") from None
        return SnapshotRecord.from_dict(data)

    def keys(self) -> list[str]:
        """Keys of the stored snapshots, sorted."""
        folder = self.root / "snapshots"
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json") and not p.name.startswith("."))

    def _read_buffer(self, digest: str, n: int) -> bytearray:
        path = self._buffer_path(digest)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size != n:
                    raise SnapshotDataError(
                        f"Snapshot buffer {digest[:12]} is torn ({size} of {n} bytes); "
                        "the variables it holds cannot be restored."
                    )
                buf = bytearray(n)
                mv = memoryview(buf)
                done = 0
                while done < n:
                    got = f.readinto(mv[done : done + _IO_CHUNK])
                    if not got:
                        raise SnapshotDataError(f"Snapshot buffer {digest[:12]} ended early; the variables it holds cannot be restored.")
                    done += got
        except FileNotFoundError:
            raise SnapshotDataError(
                f"Snapshot buffer {digest[:12]} is missing from {self.root / 'buffers'}; "
                "the variables it holds cannot be restored."
            ) from None
        if buffer_digest(mv) != digest:
            raise SnapshotDataError(f"Snapshot buffer {digest[:12]} is corrupt; the variables it holds cannot be restored.")
        return buf

    def _load(self, record: SnapshotRecord) -> dict[str, Any]:
        """Every stored value of ``record``, verified first: a problem raises before anything is returned."""
        if record.stream is None:
            return {}
        path = self._snapshot_path(record.key, ".pickle")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotDataError(f"Snapshot {record.key} has no pickle stream in {path.parent}; its variables cannot be restored.") from None
        if len(data) != record.stream["size"] or hashlib.sha256(data).hexdigest() != record.stream["digest"]:
            raise SnapshotDataError(f"Snapshot {record.key}'s pickle stream is torn or corrupt; its variables cannot be restored.")
        buffers: list[bytearray] = []
        first: dict[str, bytearray] = {}
        for digest, n in record.buffers:
            # Equal buffers get their own memory: two equal arrays must not become one.
            buffers.append(bytearray(first[digest]) if digest in first else self._read_buffer(digest, n))
            first.setdefault(digest, buffers[-1])
        del first
        unpickler = SnapshotUnpickler(io.BytesIO(data), buffers, self._kept.get(record.key))
        try:
            return {name: unpickler.load() for name in record.order}
        except SnapshotDataError:
            raise
        except Exception as e:
            raise SnapshotDataError(
                f"Snapshot {record.key} cannot be unpickled ({type(e).__name__}: {one_line(str(e))}); "
                "its variables cannot be restored."
            ) from e

    # -- restore -----------------------------------------------------------

    # -- restore -----------------------------------------------------------

    def plan_restore(self, namespace: Mapping[str, Any], records: list[SnapshotRecord]) -> RestorePlan:
        """Plan rewinding ``namespace`` to before the first of ``records``.

            Parameters
            ----------
            namespace
                The kernel's namespace now; not modified.
            records
                The snapshots of the executions being undone, oldest first.

            Returns
            -------
            RestorePlan
                Each name with its earliest record: restored (that record stored it),
                deleted (it was absent) or skipped (not restorable, with the reason). And
                warnings: a large value one of the snapshots watched (not named by that
                execution) whose fingerprint changed before any undone execution named
                it, or by now if none did, was changed through a module global, a
                closure, or outside the agent, and that change is not undone. Missing
                snapshot files are warned about too (the restore would fail).
            """
        return plan_restore(namespace, records, kept_keys=self._kept.keys(), missing_files=self._missing_files)

    def restore(self, namespace: MutableMapping[str, Any], plan: RestorePlan) -> RestoreResult:
        """Carry out ``plan`` in ``namespace`` itself (no namespace swap).

            Every snapshot the plan needs is read and verified (sizes, hashes) and
            unpickled first; only then is the namespace changed, so a missing or corrupt
            file changes nothing. A value whose current object is the very object
            snapshotted (same ``id`` and type) is written in place when its type allows
            (list, dict, set, bytearray, numpy array of the same shape and dtype, pandas
            DataFrame and Series, plain instances), so other references to it see the
            restored value; otherwise the name is bound to the restored object. Names
            that were one object when snapshotted are one object again. Names the undone
            code created are deleted.

            Parameters
            ----------
            namespace
                The kernel's namespace (``user_ns``), changed in place.
            plan
                From :meth:`plan_restore`.

            Returns
            -------
            RestoreResult

            Raises
            ------
            SnapshotDataError
                A snapshot file is missing, torn or corrupt, or cannot be unpickled;
                the namespace was not changed.
            """
        return apply_restore(namespace, plan, self._load, time.perf_counter())

    def _missing_files(self, rec: SnapshotRecord) -> str | None:
        if rec.stream is not None:
            try:
                if self._snapshot_path(rec.key, ".pickle").stat().st_size != rec.stream["size"]:
                    return "its pickle stream is torn"
            except FileNotFoundError:
                return "its pickle stream is missing"
        for digest, n in rec.buffers:
            try:
                size = self._buffer_path(digest).stat().st_size
            except FileNotFoundError:
                return f"buffer {digest[:12]} is missing"
            if size != n:
                return f"buffer {digest[:12]} is torn"
        return None

    # -- cleanup -----------------------------------------------------------

    def delete(self, key: str) -> int:
        """Remove snapshot ``key`` and the buffers no other snapshot uses; return bytes freed."""
        freed = 0
        for suffix in (".json", ".pickle"):
            path = self._snapshot_path(key, suffix)
            with contextlib.suppress(FileNotFoundError):
                freed += path.stat().st_size
                path.unlink()
        self._kept.pop(key, None)
        return freed + self._sweep_buffers()

    def gc(self, keep_keys: Iterable[str]) -> int:
        """Remove every snapshot not in ``keep_keys`` and the buffers left unused; return bytes freed."""
        keep = set(keep_keys)
        freed = 0
        for key in self.keys():
            if key not in keep:
                freed += self.delete(key)
        folder = self.root / "snapshots"
        if folder.is_dir():  # streams without a manifest: a snapshot interrupted before its record
            for p in folder.iterdir():
                if p.name.endswith(".pickle") and p.name[: -len(".pickle")] not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        freed += p.stat().st_size
                        p.unlink()
        return freed + self._sweep_buffers()

    def _sweep_buffers(self) -> int:
        referenced: set[str] = set()
        for key in self.keys():
            with contextlib.suppress(SnapshotKeyError, ValueError, KeyError):
                referenced.update(d for d, _ in self.record(key).buffers)
        freed = 0
        for path, digest in self._buffer_files():
            if digest not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    freed += path.stat().st_size
                    path.unlink()
                self._known.pop(digest, None)
        return freed

    def _buffer_files(self) -> list[tuple[Path, str]]:
        folder = self.root / "buffers"
        if not folder.is_dir():
            return []
        out: list[tuple[Path, str]] = []
        for sub in folder.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                out.extend((f, sub.name + f.name) for f in sub.iterdir())
        return out

    def disk_usage(self) -> DiskUsage:
        """How many snapshots and buffer files the store holds, and their bytes."""
        files = self._buffer_files()
        buffer_bytes = 0
        for path, _ in files:
            with contextlib.suppress(FileNotFoundError):
                buffer_bytes += path.stat().st_size
        keys = self.keys()
        stream_bytes = 0
        for key in keys:
            for suffix in (".json", ".pickle"):
                with contextlib.suppress(FileNotFoundError):
                    stream_bytes += self._snapshot_path(key, suffix).stat().st_size
        return DiskUsage(len(keys), len(files), buffer_bytes, stream_bytes)


def _atomic_write(path: Path, data: bytes) -> None:
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

