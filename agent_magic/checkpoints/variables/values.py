"""Per-value helpers: type names, size estimates, sampled fingerprints, what cannot be pickled,
and writing a restored value into the live object in place."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import types
from typing import Any

# Fingerprints hash whole buffers up to this size, and evenly spaced samples of larger ones.
SAMPLE_CHUNK = 16 << 10
SAMPLE_COUNT = 64
_NOT_PLAIN = (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType)
_REDUCERS = ("__reduce_ex__", "__reduce__", "__getstate__")
_THREAD_LOCKS = tuple({type(__import__("threading").Lock()), type(__import__("threading").RLock())})


def type_name(value: Any) -> str:
    t = type(value)
    mod = t.__module__ or ""
    if mod == "builtins":
        return t.__qualname__
    # Public spelling for the usual suspects (pandas.core.frame.DataFrame -> pandas.DataFrame).
    top = mod.split(".", 1)[0]
    if top in ("pandas", "numpy") and getattr(sys.modules.get(top), t.__name__, None) is t:
        return f"{top}.{t.__name__}"
    return f"{mod}.{t.__qualname__}"


def why_not_restorable(value: Any) -> str | None:
    """A one-line reason for values that are known not to survive pickling, else ``None``."""
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)):
        return f"a {type(value).__name__} cannot be copied (its position is lost); run the code that made it again"
    if isinstance(value, io.IOBase):
        return "an open file cannot be copied; open it again"
    if isinstance(value, socket.socket):
        return "a network socket cannot be copied; connect again"
    if isinstance(value, _THREAD_LOCKS):
        return "a lock cannot be copied"
    if isinstance(value, (types.FrameType, types.TracebackType)):
        return f"a {type(value).__name__} object cannot be copied"
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(value, (sqlite3.Connection, sqlite3.Cursor)):
        return "a database connection cannot be copied; connect again"
    return None


def _pandas_kind(value: Any) -> str | None:
    pd = sys.modules.get("pandas")
    if pd is None:
        return None
    if isinstance(value, pd.DataFrame):
        return "frame"
    if isinstance(value, pd.Series):
        return "series"
    if isinstance(value, pd.Index):
        return "index"
    return None


def _is_ndarray(value: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def estimate_size(value: Any, _depth: int = 0) -> int:
    """Approximate bytes a value holds (cheap: buffers counted by length, containers sampled)."""
    if _is_ndarray(value):
        n = int(value.nbytes)
        if value.dtype.hasobject and value.size:
            flat = value.reshape(-1) if value.flags.c_contiguous else value.ravel()
            step = max(1, flat.size // 32)
            picked = flat[::step][:32]
            n += int(sum(sys.getsizeof(x) for x in picked) * flat.size / max(len(picked), 1))
        return n
    kind = _pandas_kind(value)
    if kind == "frame":
        return int(value.memory_usage(index=True, deep=False).sum())
    if kind in ("series", "index"):
        return int(value.memory_usage(deep=False) if kind == "index" else value.memory_usage(index=True, deep=False))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return int(value.nbytes) if isinstance(value, memoryview) else len(value)
    size = sys.getsizeof(value, 64)
    if _depth < 2 and isinstance(value, (list, tuple, set, frozenset, dict)) and value:
        items = list(value.items()) if isinstance(value, dict) else None
        n = len(value)
        step = max(1, n // 32)
        if items is not None:
            sample: list[Any] = [v for kv in items[::step][:32] for v in kv]
            per = 2
        else:
            seq = value if isinstance(value, (list, tuple)) else list(value)
            sample = list(seq[::step][:32])
            per = 1
        total = sum(estimate_size(x, _depth + 1) for x in sample)
        size += int(total * n * per / max(len(sample), 1))
    return size


def _array_parts(value: Any) -> list[Any] | None:
    """The arrays holding a large value's data, without copying; ``None`` if we cannot see them."""
    if _is_ndarray(value):
        return [value]
    kind = _pandas_kind(value)
    if kind == "frame":
        parts: list[Any] = []
        for blk in value._mgr.blocks:
            parts.append(blk.mgr_locs.as_array)
            parts.extend(_extension_parts(blk.values))
        return parts + _index_parts(value.columns) + _index_parts(value.index)
    if kind == "series":
        return _extension_parts(value._values) + _index_parts(value.index)
    if kind == "index":
        return _index_parts(value)
    if isinstance(value, (bytes, bytearray)):
        return [value]
    return None


def _index_parts(index: Any) -> list[Any]:
    pd = sys.modules["pandas"]
    if isinstance(index, pd.RangeIndex):  # ``_values`` would build (and cache) the whole array
        return [f"range:{index.start}:{index.stop}:{index.step}"]
    return _extension_parts(index._values)


def _extension_parts(values: Any) -> list[Any]:
    if _is_ndarray(values):
        return [values]
    parts = [getattr(values, a) for a in ("_ndarray", "_data", "_mask", "_codes") if _is_ndarray(getattr(values, a, None))]
    cats = getattr(values, "categories", None)
    if cats is not None and hasattr(cats, "_values"):
        parts.extend(_extension_parts(cats._values))
    # Something else (Arrow-backed, sparse...): its length and type only.
    return parts or [f"{type(values).__qualname__}:{len(values)}"]


def fingerprint(value: Any, *, min_bytes: int = 1 << 20) -> str | None:
    """A cheap, sampled hash of a large value's buffers, or ``None`` for small or opaque values.

    Buffers up to ``SAMPLE_COUNT * SAMPLE_CHUNK`` (1 MB) are hashed whole; larger ones
    by ``SAMPLE_COUNT`` evenly spaced chunks plus shape and dtype, a few milliseconds
    whatever the size. It notices dropped or added columns, reshapes and writes to
    whole columns; a write to a few elements between samples can go unnoticed.
    """
    parts = _array_parts(value)
    if parts is None or estimate_size(value) < min_bytes:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(type_name(value).encode())
    for part in parts:
        if isinstance(part, str):
            h.update(part.encode())
        elif isinstance(part, (bytes, bytearray)):
            _hash_sampled(h, memoryview(part))
        else:
            _hash_array(h, part)
    return h.hexdigest()


def _hash_array(h: Any, a: Any) -> None:
    h.update(f"{a.dtype.str}{a.shape}".encode())
    if a.dtype.hasobject:
        flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel()
        step = max(1, flat.size // 256)
        for x in flat[::step][:256]:
            h.update(repr(x)[:200].encode("utf-8", "backslashreplace"))
        return
    if a.flags.c_contiguous or a.flags.f_contiguous:
        _hash_sampled(h, memoryview(a).cast("B") if a.size else memoryview(b""))
        return
    flat_idx = a.size
    step = max(1, flat_idx // (SAMPLE_COUNT * 64))
    h.update(a.flat[::step].tobytes())


def _hash_sampled(h: Any, mv: memoryview) -> None:
    n = mv.nbytes
    if n <= SAMPLE_COUNT * SAMPLE_CHUNK:
        h.update(mv)
        return
    span = (n - SAMPLE_CHUNK) // (SAMPLE_COUNT - 1)
    for i in range(SAMPLE_COUNT):
        start = i * span
        h.update(mv[start : start + SAMPLE_CHUNK])
    h.update(mv[n - SAMPLE_CHUNK :])


def _plain_instance(value: Any) -> bool:
    t = type(value)
    return (
        not isinstance(value, _NOT_PLAIN)
        and hasattr(value, "__dict__")
        and not hasattr(t, "__slots__")
        and all(getattr(t, m, None) is getattr(object, m, None) for m in _REDUCERS)
        and not hasattr(t, "__setstate__")
    )


def can_restore_in_place(current: Any, restored: Any) -> bool:
    """Whether ``restored``'s state can be written into ``current`` (same type, a kind we know how)."""
    t = type(current)
    if t is not type(restored) or current is restored:
        return False
    if t in (list, dict, set, bytearray):
        return True
    if _is_ndarray(current):
        return t is sys.modules["numpy"].ndarray and (
            current.shape == restored.shape and current.dtype == restored.dtype and bool(current.flags.writeable)
        )
    if _pandas_kind(current) in ("frame", "series"):
        return True
    return _plain_instance(current)


def restore_in_place(current: Any, restored: Any) -> None:
    """Write ``restored``'s state into ``current`` (see :func:`can_restore_in_place`)."""
    if isinstance(current, (list, bytearray)):
        current[:] = restored
    elif isinstance(current, (dict, set)):
        current.clear()
        current.update(restored)
    elif _is_ndarray(current):
        sys.modules["numpy"].copyto(current, restored, casting="no")
    elif _pandas_kind(current) is not None:
        # Exactly what unpickling does to a fresh object, done to the live one. The
        # manager is copied shallowly (copy-on-write tracked) so that ``restored``,
        # if still referenced somewhere, never shares a mutable manager with it.
        state = restored.__getstate__()
        state["_mgr"] = restored._mgr.copy(deep=False)
        current.__dict__.clear()
        current.__setstate__(state)
    else:
        current.__dict__.clear()
        current.__dict__.update(restored.__dict__)
