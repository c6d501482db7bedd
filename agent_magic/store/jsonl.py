"""Append-only JSONL files, atomic writes, and crash points.

Everything here is small and synchronous. Files are created private to the
user (directories 0700, files 0600). JSONL appends are one ``os.write`` of a
whole line on an ``O_APPEND`` descriptor; readers skip a torn last line.

Crash points (tests only): with ``AGENT_MAGIC_CRASH_AT=<label>:<n>`` set, the
process SIGKILLs itself the n-th time it passes :func:`crash_point` ``label``
(``*`` counts every crash point). The crash-consistency suite
(``tests/reliability/crash.py``) uses them to land kills precisely:

``append:<file>`` / ``torn:<file>``
    before a JSONL line is written (``transcript``, ``checkpoints``); ``torn``
    writes the first half of the line, then dies (a torn write).
``blob`` / ``blob.tmp``
    before a new backup blob is written; after its temp file is written, before the rename.
``tool.start``, ``file.tmp``, ``file.replaced``, ``bash.spawned``
    before a tool runs; Write/Edit/NotebookEdit between temp file and rename, and
    just after the rename; a Bash command just started.
``stream.event``
    each server-sent event of a model response.
``fork.whole``
    after a fork is made whole (its side file written), before its parent is deleted.

Unset, a crash point is a function call that returns at once.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._redact import redact
from .home import FILE_MODE


class TranscriptWarning(UserWarning):
    """A transcript line could not be read (torn by a crash, or corrupted) and was skipped."""


def dumps_line(obj: Any) -> bytes:
    """One JSONL line; compact, UTF-8, secrets redacted, lone surrogates escaped so it always encodes."""
    text = redact(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    return (text + "\n").encode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------
# Crash points (see the module docstring)
# ---------------------------------------------------------------------------


def _parse_crash_spec(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    label, sep, n = spec.rpartition(":")
    if not sep or not label or not n.isdigit() or int(n) < 1:
        raise ValueError(f"AGENT_MAGIC_CRASH_AT={spec!r}: expected <label>:<n> with n >= 1.")
    return label, int(n)


_crash_at: tuple[str, int] | None = _parse_crash_spec(os.environ.get("AGENT_MAGIC_CRASH_AT"))
_crash_hits: dict[str, int] = {}


def arm_crash_point(spec: str | None) -> None:
    """Arm (``"<label>:<n>"``) or disarm (``None``) the crash point of this process; resets the counts.

    For test workers forked after import, where ``AGENT_MAGIC_CRASH_AT`` was read already.
    """
    global _crash_at
    _crash_at = _parse_crash_spec(spec)
    _crash_hits.clear()


def crash_point(label: str, before_death: Any = None) -> None:
    """SIGKILL this process here if the armed crash point says so (tests only; see the module docstring).

    ``before_death``, a callable, runs just before the kill (to leave a torn write behind).
    """
    if _crash_at is None:
        return
    want, n = _crash_at
    if want not in (label, "*"):
        return
    hits = _crash_hits[want] = _crash_hits.get(want, 0) + 1
    if hits == n:
        if before_death is not None:
            before_death()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int = FILE_MODE, fsync: bool = False, crash_label: str | None = None
) -> None:
    """Write ``data`` to a temp file next to ``path`` and replace ``path`` with it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if crash_label is not None:
            crash_point(crash_label)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def want_fsync() -> bool:
    """True when ``AGENT_MAGIC_FSYNC=1``: fsync backups and transcript lines (survives power loss)."""
    return os.environ.get("AGENT_MAGIC_FSYNC", "") not in ("", "0", "false", "no")


class JsonlFile:
    """An append-only JSONL file, or an in-memory list when ``path`` is None.

    ``append`` writes each line with a single ``os.write`` on an ``O_APPEND``
    descriptor, so the line is in the OS before ``append`` returns (a SIGKILL
    after that loses nothing). Before the first append, a torn last line left
    by a crash is cut off (it was never acknowledged).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: list[bytes] = []
        self._fd: int | None = None
        self._fsync = want_fsync()

    @property
    def persistent(self) -> bool:
        return self.path is not None

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                self._repair_tail(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def repair_tail(self) -> None:
        """Cut a torn last line another process left since this file was opened.

        Call it after taking the session's lock: a line appended behind a torn
        tail would be glued to it and lost.
        """
        if self._fd is not None:
            self._repair_tail(self._fd)

    def _repair_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0:
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            back = min(size, 1 << 20)
            f.seek(size - back)
            tail = f.read(back)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut == -1 and back < size:
            # A single line longer than 1 MiB without an end: find its start the slow way.
            with open(self.path, "rb") as f:
                data = f.read()
            keep = data.rfind(b"\n") + 1
        else:
            keep = size - back + cut + 1
        os.ftruncate(fd, keep)

    def append(self, obj: Any) -> None:
        """Append one line (durable in the OS before returning)."""
        self._write([dumps_line(obj)])

    def append_many(self, objs: list[Any]) -> None:
        """Append several lines with one write."""
        if objs:
            self._write([dumps_line(o) for o in objs])

    def _write(self, lines: list[bytes]) -> None:
        if self.path is None:
            self._memory.extend(lines)
            return
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        fd = self._open()
        if _crash_at is not None:
            self._crash_points(fd, data)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if self._fsync:
            os.fsync(fd)

    def _crash_points(self, fd: int, data: bytes) -> None:
        assert self.path is not None
        name = self.path.stem
        crash_point(f"append:{name}")
        crash_point(f"torn:{name}", lambda: os.write(fd, data[: max(1, len(data) // 2)]))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def raw_lines(self) -> list[bytes]:
        if self.path is None:
            return list(self._memory)
        return read_raw_lines(self.path)

    def read(self) -> list[dict[str, Any]]:
        return parse_lines(self.raw_lines(), self.path)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def read_raw_lines(path: Path) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data.splitlines(keepends=True)


def read_raw_lines_from_last(path: Path, marker: bytes, is_start: Any, chunk: int = 1 << 20) -> tuple[bytes, list[bytes]]:
    """The file's first line, and its lines from the last one ``is_start`` accepts (all lines if none).

    Reads backwards in chunks, looking for ``marker`` (bytes every such line
    holds); ``is_start(line)`` confirms a candidate, since a quoted string in
    another line may hold the marker too. The work grows with the length of the
    tail, not of the file: a long session resumes from its last compaction as
    fast as a short one.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return b"", []
    with f:
        first = f.readline()
        head_end = len(first)
        pos = f.seek(0, os.SEEK_END)  # ``tail`` holds the bytes [pos, end of file)
        tail = b""
        search_end = pos  # candidates must end before this (absolute offset)

        def read_more() -> bool:
            nonlocal pos, tail
            if pos <= head_end:
                return False
            start = max(head_end, pos - chunk)
            f.seek(start)
            tail = f.read(pos - start) + tail
            pos = start
            return True

        while True:
            k = tail.rfind(marker, 0, search_end - pos)
            if k < 0:
                if not read_more():
                    break
                continue
            nl = tail.rfind(b"\n", 0, k)
            if nl < 0 and read_more():
                continue  # the candidate's line begins before what was read
            line_start = nl + 1
            line_end = tail.find(b"\n", k)
            line = tail[line_start : line_end + 1 if line_end >= 0 else len(tail)]
            if is_start(line):
                return first, tail[line_start:].splitlines(keepends=True)
            search_end = pos + line_start
    return first, tail.splitlines(keepends=True)


def preload() -> None:
    """Import what opening a session needs (orjson, filelock) ahead of time; for warm-up threads."""
    import filelock  # noqa: F401

    _fast_loads()


def _fast_loads() -> Any:
    """orjson's ``loads`` (5-10x faster on long transcripts), else the standard library's."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - a declared dependency
        return json.loads
    return orjson.loads


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_was_enabled = False


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic data (parsed JSON).

    Parsing a long transcript allocates tens of thousands of dicts and lists, which
    sets off full collections of everything the process holds (100-180 ms with the API
    client imported) although none of it can be cyclic garbage. Mercurial's ``nogc``
    does the same. Nestable and thread-safe; the previous state is restored.
    """
    global _gc_depth, _gc_was_enabled
    with _gc_lock:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


def parse_lines(lines: list[bytes], path: Path | None) -> list[dict[str, Any]]:
    """Parse JSONL lines; skip (with a TranscriptWarning) a torn last line or corrupted lines."""
    with no_gc():
        out, bad = _parse(lines, path)
    if bad:
        warnings.warn(
            f"Skipped {bad} unreadable line(s) in {path or 'transcript'}.",
            TranscriptWarning,
            stacklevel=3,
        )
    return out


def _parse(lines: list[bytes], path: Path | None) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    loads = _fast_loads()
    bad = 0
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            try:
                obj = loads(line)
            except ValueError:
                # orjson refuses what dumps_line may write: lone surrogates (undecodable file
                # names), NaN. The standard library reads them; only then is the line bad.
                obj = json.loads(line)
        except ValueError:
            bad += 1
            if i == last and not line.endswith(b"\n"):
                warnings.warn(
                    f"Skipped a torn last line in {path or 'transcript'} (an interrupted write).",
                    TranscriptWarning,
                    stacklevel=4,
                )
                bad -= 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad += 1
    return out, bad
