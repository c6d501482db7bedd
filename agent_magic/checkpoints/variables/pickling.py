"""Pickling for snapshots: protocol 5 with out-of-band buffers written straight to content-addressed files.

Values are pickled by one :class:`SnapshotPickler`, one ``dump`` per variable
(the memo is kept across dumps, so objects shared between variables are pickled
once and come back shared; one dump each tells what each variable costs).
Modules pickle as their import; functions and classes defined in the notebook
(which pickle cannot find by name) are kept in memory and pickled as a token.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FunctionType, ModuleType
from typing import Any

from .records import SnapshotDataError

GB = 1 << 30
_HASH_CHUNK = 16 << 20
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    # One pool for the process: hashlib releases the GIL, so chunks hash on all cores.
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="agent-magic-hash")
    return _pool


def _sha256(chunk: memoryview) -> bytes:
    return hashlib.sha256(chunk).digest()


def buffer_digest(mv: memoryview) -> str:
    """Content address of a buffer: sha256 over the sha256 of each 16 MB chunk (hashed in parallel)."""
    n = mv.nbytes
    chunks = [mv[i : i + _HASH_CHUNK] for i in range(0, n, _HASH_CHUNK)] or [mv]
    digests = [_sha256(chunks[0])] if len(chunks) == 1 else list(_executor().map(_sha256, chunks))
    h = hashlib.sha256(b"agent-magic-buffer-1\0" + n.to_bytes(8, "little"))
    for d in digests:
        h.update(d)
    return h.hexdigest()


def _kept_ref(token: str) -> Any:
    """Stands in a pickle for a function or class kept in memory; resolved by :class:`SnapshotUnpickler`."""
    raise SnapshotDataError("A snapshot refers to an object kept in memory; load it through VariableSnapshots.")


class Lost:
    def __repr__(self) -> str:
        return "<object kept in memory by an earlier kernel session>"


class VariableFailed(Exception):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(reason)


class StreamWriter:
    """The file a pickle stream goes to: hashes and counts as it writes, enforces the caps on in-band bytes."""

    def __init__(self, f: io.BufferedWriter, sink: BufferSink) -> None:
        self._f = f
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self._sink.charge(n)
        self.hash.update(data)
        self._f.write(data)
        self.size += n
        return n


class BufferSink:
    """``buffer_callback``: each large buffer goes straight to its content-addressed file."""

    def __init__(self, put: Callable[[memoryview], str], *, max_variable_bytes: int, max_snapshot_bytes: int, inline_bytes: int) -> None:
        self._put = put
        self.max_variable_bytes = max_variable_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self.inline_bytes = inline_bytes
        self.buffers: list[tuple[str, int]] = []
        self.total = 0
        self.var_bytes = 0
        self.var_buffers: list[str] = []
        self.name = ""

    def start(self, name: str) -> None:
        self.name = name
        self.var_bytes = 0
        self.var_buffers = []

    def charge(self, n: int) -> None:
        if self.var_bytes + n > self.max_variable_bytes:
            raise VariableFailed(self.name, f"larger than the per-variable cap of {gb(self.max_variable_bytes)}")
        if self.total + n > self.max_snapshot_bytes:
            raise VariableFailed(self.name, f"over the per-snapshot cap of {gb(self.max_snapshot_bytes)} with the other variables")
        self.var_bytes += n
        self.total += n

    def __call__(self, pb: pickle.PickleBuffer) -> bool:
        mv = pb.raw()
        n = mv.nbytes
        if n < self.inline_bytes:
            return True  # small: in-band, no file
        self.charge(n)
        digest = self._put(mv)
        self.buffers.append((digest, n))
        self.var_buffers.append(digest)
        return False


def _by_value(obj: Any) -> bool:
    """Functions and classes pickle by name; those defined in the notebook (or locally) cannot be found that way."""
    qual = getattr(obj, "__qualname__", "") or ""
    return getattr(obj, "__module__", None) in ("__main__", None) or "<" in qual


class SnapshotPickler(pickle.Pickler):
    def __init__(self, file: StreamWriter, sink: BufferSink, kept: dict[str, Any]) -> None:
        super().__init__(file, protocol=5, buffer_callback=sink)
        self._kept = kept
        self.used_kept = False

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ModuleType):
            if sys.modules.get(obj.__name__) is obj:
                return importlib.import_module, (obj.__name__,)
            return self._keep(obj)
        if isinstance(obj, (FunctionType, type)) and _by_value(obj):
            return self._keep(obj)
        return NotImplemented

    def _keep(self, obj: Any) -> Any:
        token = str(id(obj))
        self._kept[token] = obj
        self.used_kept = True
        return _kept_ref, (token,)


class SnapshotUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, buffers: list[bytearray], kept: dict[str, Any] | None) -> None:
        super().__init__(file, buffers=buffers)
        self._kept = kept

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_kept_ref":
            return self._resolve
        return super().find_class(module, name)

    def _resolve(self, token: str) -> Any:
        if self._kept is None or token not in self._kept:
            return Lost()
        return self._kept[token]


def pickle_reason(e: BaseException) -> str:
    return f"cannot be pickled ({type(e).__name__}: {one_line(str(e))})"


def one_line(text: str, limit: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / (1 << 20):.0f} MB"
