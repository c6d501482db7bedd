"""The file tools: ``Read``, ``Write`` and ``Edit``.

``Read`` pages through text files line by line (never loading more of a huge
file than it shows), renders notebooks cell by cell, and describes images and
other binary files instead of dumping them. ``Write`` and ``Edit`` refuse to
change an existing file the agent has not read in this session, or that
changed since it was read; they back the file up through the session's
:class:`~agent_magic.tools.ChangeRecorder` first, then replace it atomically
(a temporary file in the same folder and ``os.replace``), keeping its mode,
its encoding (UTF-8, or UTF-8/UTF-16 with a byte-order mark) and, for
``Edit``, its line endings.

The helpers :func:`atomic_write`, :func:`require_unchanged_since_read`,
:func:`unified_diff` and :func:`image_info` are shared with the notebook tool.
"""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio.to_thread

from .._errors import ToolError
from .._safefs import atomic_write
from .base import Tool, ToolContext, ToolResult, optional_int, require_str

__all__ = [
    "EditTool",
    "ReadTool",
    "WriteTool",
    "atomic_write",
    "image_info",
    "require_unchanged_since_read",
    "unified_diff",
]

#: Lines shown by one Read unless ``limit`` says otherwise.
DEFAULT_READ_LIMIT = 2000
#: Characters shown of one line; the rest is cut with a marker.
MAX_LINE_CHARS = 2000
#: Bytes sniffed at the start of a file to tell text from binary.
_SNIFF_BYTES = 8192
#: Bytes scanned after the shown lines to count the lines that remain.
_COUNT_LIMIT_CHARS = 256 * 1024 * 1024
#: Files above this size get no diff in ``data`` (difflib is slow on huge inputs).
_MAX_DIFF_LINES = 50_000

_T = TypeVar("_T")


async def _in_thread(func: Callable[[], _T]) -> _T:
    # Reads may scan a big file; keep the event loop free and let an interrupt
    # return at once (the abandoned thread only reads).
    return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)


# --------------------------------------------------------------------------- stat helpers


def _stat_existing(path: Path, *, what: str = "file") -> os.stat_result | None:
    """``os.stat(path)``, None if it does not exist; ToolError for directories and devices."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise ToolError(
            f"{path} cannot exist: a parent of it is a file, not a directory."
        ) from None
    except OSError as e:
        raise ToolError(f"Cannot access {path}: {e.strerror or e}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise ToolError(
            f"{path} is a directory, not a {what}. Use Glob or Bash (`ls`) to list a directory."
        )
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(
            f"{path} is not a regular file (it is a device, FIFO or socket); it cannot be used here."
        )
    return st


def require_unchanged_since_read(ctx: ToolContext, path: Path, st: os.stat_result) -> None:
    """Raise ToolError unless ``path`` was read in this session and has not changed since."""
    seen = ctx.read_files.get(str(path))
    if seen is None:
        raise ToolError(f"File has not been read yet. Read it first before writing to it: {path}")
    if seen != st.st_mtime_ns:
        raise ToolError(
            f"File has been modified since it was read, either by the user or by another program: {path}. "
            "Read it again before writing to it."
        )


def _record_read(ctx: ToolContext, path: Path, st: os.stat_result) -> None:
    ctx.read_files[str(path)] = st.st_mtime_ns


# --------------------------------------------------------------------------- encodings


@dataclass(frozen=True)
class _Encoding:
    """How a text file is stored: an optional byte-order mark and a codec."""

    bom: bytes
    codec: str

    @property
    def label(self) -> str:
        return {"utf-8": "UTF-8", "utf-16-le": "UTF-16 LE", "utf-16-be": "UTF-16 BE"}[
            self.codec
        ] + (" with BOM" if self.bom else "")


_UTF8 = _Encoding(b"", "utf-8")


def _encoding_from_bom(head: bytes) -> _Encoding | None:
    if head.startswith(codecs.BOM_UTF8):
        return _Encoding(codecs.BOM_UTF8, "utf-8")
    if head.startswith(codecs.BOM_UTF16_LE):
        return _Encoding(codecs.BOM_UTF16_LE, "utf-16-le")
    if head.startswith(codecs.BOM_UTF16_BE):
        return _Encoding(codecs.BOM_UTF16_BE, "utf-16-be")
    return None


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _looks_binary(head: bytes, at_eof: bool) -> bool:
    """True for data with NUL bytes or that is mostly not UTF-8 text."""
    if b"\x00" in head:
        return True
    if not head:
        return False
    decoded = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(head, final=at_eof)
    bad = len(_ESCAPED_BYTE.findall(decoded))
    controls = sum(1 for c in decoded if c < " " and c not in "\t\n\r\f\b\x1b\v")
    return (bad + controls) > 0.3 * max(len(decoded), 1)


def _sniff_encoding(head: bytes, at_eof: bool) -> _Encoding | None:
    """The encoding of a text file starting with ``head``; None when it is binary."""
    enc = _encoding_from_bom(head)
    if enc is not None:
        return enc
    return None if _looks_binary(head, at_eof) else _UTF8


def _decode_for_edit(raw: bytes, path: Path) -> tuple[str, _Encoding]:
    """Decode a whole file so that encoding it again gives back the same bytes."""
    enc = _sniff_encoding(raw[:_SNIFF_BYTES], len(raw) <= _SNIFF_BYTES)
    if enc is None:
        raise ToolError(f"{path} is a binary file; it cannot be edited as text.")
    try:
        # surrogateescape keeps undecodable bytes so that untouched parts round-trip exactly.
        return raw[len(enc.bom) :].decode(enc.codec, "surrogateescape"), enc
    except UnicodeDecodeError as e:
        raise ToolError(
            f"{path} is not valid {enc.label} text ({e.reason}); it cannot be edited as text."
        ) from None


def _encode(text: str, enc: _Encoding, path: Path) -> bytes:
    try:
        return enc.bom + text.encode(enc.codec, "surrogateescape")
    except UnicodeEncodeError as e:
        raise ToolError(
            f"The new text cannot be encoded as {enc.label} for {path} ({e.reason} at position {e.start})."
        ) from None


def _printable(text: str) -> str:
    """Text for display: bytes that were not valid in the file's encoding become U+FFFD."""
    return _ESCAPED_BYTE.sub("\ufffd", text)


# --------------------------------------------------------------------------- images and binary files

_IMAGE_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP"}


def image_info(data: bytes) -> tuple[str, int | None, int | None] | None:
    """Sniff an image: ``(mime_type, width, height)`` or None if ``data`` is not PNG/JPEG/GIF/WebP.

    ``data`` is the start of the file; width and height are None when the
    header needed for them is not in ``data``.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            if len(data) >= 24 and data[12:16] == b"IHDR":
                w, h = struct.unpack(">II", data[16:24])
                return "image/png", w, h
            return "image/png", None, None
        if data[:6] in (b"GIF87a", b"GIF89a"):
            if len(data) >= 10:
                w, h = struct.unpack("<HH", data[6:10])
                return "image/gif", w, h
            return "image/gif", None, None
        if data.startswith(b"\xff\xd8\xff"):
            return ("image/jpeg", *_jpeg_size(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return ("image/webp", *_webp_size(data))
    except struct.error:
        pass
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None, None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        i += 2 + seg_len
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None, None


_BINARY_KINDS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "PDF document"),
    (0, b"PK\x03\x04", "ZIP archive (or a format built on it: docx, xlsx, jar, whl, npz)"),
    (0, b"\x1f\x8b", "gzip-compressed data"),
    (0, b"BZh", "bzip2-compressed data"),
    (0, b"\xfd7zXZ\x00", "xz-compressed data"),
    (0, b"(\xb5/\xfd", "zstd-compressed data"),
    (0, b"7z\xbc\xaf\x27\x1c", "7-zip archive"),
    (257, b"ustar", "tar archive"),
    (0, b"\x7fELF", "ELF executable or library"),
    (0, b"SQLite format 3\x00", "SQLite database"),
    (0, b"\x89HDF\r\n\x1a\n", "HDF5 data"),
    (0, b"PAR1", "Parquet file"),
    (0, b"\x93NUMPY", "NumPy .npy array"),
    (0, b"\x00asm", "WebAssembly module"),
    (0, b"BM", "BMP image"),
    (0, b"II*\x00", "TIFF image"),
    (0, b"MM\x00*", "TIFF image"),
    (4, b"ftyp", "MP4/QuickTime media"),
    (0, b"ID3", "MP3 audio"),
    (0, b"OggS", "Ogg media"),
    (0, b"fLaC", "FLAC audio"),
)


def _binary_kind(head: bytes) -> str | None:
    for offset, magic, kind in _BINARY_KINDS:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "Python pickle"
    return None


# --------------------------------------------------------------------------- Read


def _numbered(lineno: int, text: str) -> str:
    return f"{lineno:>6}\t{text}"


def _cut_line(text: str, total_chars: int | None = None) -> str:
    total = total_chars if total_chars is not None else len(text)
    if total <= MAX_LINE_CHARS:
        return text
    return f"{text[:MAX_LINE_CHARS]}… [line truncated: {total} characters]"


def _count_remaining_lines(f: IO[str]) -> int | None:
    """Lines left in ``f`` (None when there is more than we are willing to scan)."""
    lines = 0
    last = ""
    scanned = 0
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        scanned += len(chunk)
        if scanned > _COUNT_LIMIT_CHARS:
            return None
        lines += chunk.count("\n")
        last = chunk[-1]
    if last and last != "\n":
        lines += 1
    return lines


@dataclass
class _TextPage:
    lines: list[str]
    total_before_end: int  # lines seen up to the end of the page (or the file)
    remaining: int | None  # lines after the page; None = unknown (a lot)
    more: bool
    replaced: bool


def _read_text_page(path: Path, enc: _Encoding, start: int, limit: int) -> _TextPage:
    """Lines ``start`` .. ``start+limit-1`` (1-based) of a text file, read as a stream."""
    # These codecs skip a byte-order mark themselves.
    read_codec = "utf-8-sig" if enc.codec == "utf-8" else "utf-16"
    shown: list[str] = []
    replaced = False
    lineno = 0
    remaining: int | None = 0
    more = False
    # newline="\n": split on LF only and hand back CR untouched, like `cat -n`.
    with open(path, encoding=read_codec, errors="surrogateescape", newline="\n") as f:
        while True:
            line = f.readline(MAX_LINE_CHARS + 1)
            if not line:
                break
            lineno += 1
            total_chars: int | None = None
            if not line.endswith("\n") and len(line) > MAX_LINE_CHARS:
                # An over-long line: skip its rest without holding it in memory.
                total_chars = len(line)
                while True:
                    rest = f.readline(1 << 16)
                    total_chars += len(rest)
                    if not rest or rest.endswith("\n"):
                        if rest.endswith("\n"):
                            total_chars -= 1
                        break
            if lineno < start:
                continue
            if lineno >= start + limit:
                more = True
                counted = _count_remaining_lines(f)
                remaining = None if counted is None else counted + 1
                lineno -= 1
                break
            text = line[:-1] if line.endswith("\n") else line
            if text.endswith("\r"):
                text = text[:-1]
            if _ESCAPED_BYTE.search(text):
                replaced = True
                text = _printable(text)
            shown.append(_numbered(lineno, _cut_line(text, total_chars)))
    return _TextPage(shown, lineno, remaining, more, replaced)


class ReadTool(Tool):
    """Read a file: numbered lines of text, a rendered notebook, or a description of a binary file."""

    name = "Read"
    kind = "read"
    description = (
        "Reads a file from the local filesystem. You can access any file directly by using this tool.\n"
        "Assume this tool is able to read all files on the machine. If the user provides a path to a file "
        "assume that path is valid. It is okay to read a file that does not exist; an error will be returned.\n\n"
        "Usage:\n"
        "- The file_path parameter should be an absolute path; a relative path is resolved against the "
        "working directory.\n"
        f"- By default, it reads up to {DEFAULT_READ_LIMIT} lines starting from the beginning of the file.\n"
        "- You can optionally specify a line offset and limit (especially handy for long files), but it's "
        "recommended to read the whole file by not providing these parameters.\n"
        f"- Any lines longer than {MAX_LINE_CHARS} characters will be truncated.\n"
        "- Results are returned using cat -n format, with line numbers starting at 1.\n"
        "- Jupyter notebooks (.ipynb files) are shown cell by cell, with each cell's id, type, source and a "
        "compact view of its outputs; offset and limit then count cells. Use the cell ids with NotebookEdit.\n"
        "- Images and other binary files are described (type, size, dimensions), not shown.\n"
        "- This tool can only read files, not directories. To list a directory, use Glob or the ls command via Bash.\n"
        "- You must Read a file before you can Write over it or Edit it, and again after it changes on disk.\n"
        "- You can call multiple tools in a single response. It is always better to speculatively read "
        "multiple potentially useful files in parallel."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The absolute path to the file to read"},
            "offset": {
                "type": "integer",
                "description": "The line number to start reading from (1-based; for notebooks, the cell number). "
                "Only provide if the file is too large to read at once",
            },
            "limit": {
                "type": "integer",
                "description": "The number of lines to read (for notebooks, cells). "
                "Only provide if the file is too large to read at once.",
            },
        },
        "required": ["file_path"],
        "additionalProperties": False,
    }

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path = ctx.resolve(require_str(input, "file_path"))
        offset = optional_int(input, "offset", minimum=0)
        limit = optional_int(input, "limit", minimum=1)
        start = max(offset or 1, 1)

        if (
            path.suffix.lower() == ".ipynb"
            and ctx.notebook_bridge is not None
            and ctx.notebook_bridge.is_open(path)
        ):
            # The open (maybe unsaved) notebook is what the person sees and what NotebookEdit changes.
            nb = ctx.notebook_bridge.read(path)
            if nb is not None:
                from .notebook import render_notebook

                st = _stat_existing(path, what="notebook")
                ctx.read_files[str(path)] = st.st_mtime_ns if st is not None else 0
                text = await _in_thread(lambda: render_notebook(nb, offset, limit))
                return ToolResult(
                    text,
                    summary=f"read notebook ({len(nb.get('cells') or [])} cells, open in the editor)",
                )

        st = _stat_existing(path)
        if st is None:
            raise ToolError(f"File does not exist: {path}. Current working directory: {ctx.cwd}")
        return await _in_thread(lambda: self._read(path, start, limit, ctx))

    def _read(self, path: Path, start: int, limit: int | None, ctx: ToolContext) -> ToolResult:
        try:
            with open(path, "rb") as fb:
                st = os.fstat(fb.fileno())
                head = fb.read(_SNIFF_BYTES)
                at_eof = len(head) < _SNIFF_BYTES
                info = image_info(head)
                if info is not None and info[0] == "image/jpeg" and info[1] is None and not at_eof:
                    # JPEG size markers can sit after large EXIF blocks.
                    info = image_info(head + fb.read(1 << 20))
        except OSError as e:
            raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
        _record_read(ctx, path, st)
        size = st.st_size

        if info is not None:
            mime, w, h = info
            dims = f"{w}x{h} pixels" if w is not None and h is not None else "dimensions unknown"
            return ToolResult(
                f"{path} is a {_IMAGE_NAMES[mime]} image ({mime}), {dims}, {size} bytes. "
                "The image itself is not shown.",
                summary=f"{_IMAGE_NAMES[mime]} image" + (f" {w}x{h}" if w is not None else ""),
                data={"mime_type": mime, "width": w, "height": h, "size": size},
            )
        if not head:
            return ToolResult(f"(The file {path} exists but is empty.)", summary="empty file")

        if path.suffix.lower() == ".ipynb":
            result = self._read_notebook(path, start if start > 1 else None, limit)
            if result is not None:
                return result

        enc = _sniff_encoding(head, at_eof)
        if enc is None:
            kind = _binary_kind(head)
            return ToolResult(
                f"{path} is a binary file ({kind + ', ' if kind else ''}{size} bytes); its contents are not shown. "
                "Use Bash (e.g. `file`, `xxd | head`) or Python to inspect it.",
                summary=f"binary file, {size} bytes",
                data={"binary": True, "size": size},
            )
        try:
            page = _read_text_page(path, enc, start, limit or DEFAULT_READ_LIMIT)
        except OSError as e:
            raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
        except UnicodeDecodeError as e:
            raise ToolError(f"{path} is not valid {enc.label} text ({e.reason}).") from None

        notes: list[str] = []
        if not page.lines and page.total_before_end == 0:
            return ToolResult(f"(The file {path} exists but is empty.)", summary="empty file")
        if not page.lines:
            text = (
                f"<The file has {page.total_before_end} lines; offset {start} is past its end. "
                "Read with a smaller offset.>"
            )
            return ToolResult(text, summary=f"offset past end ({page.total_before_end} lines)")
        if page.more:
            next_offset = page.total_before_end + 1
            if page.remaining is None:
                notes.append(f"… more lines remain; use offset={next_offset} to read on.")
            else:
                notes.append(f"… {page.remaining} more lines; use offset={next_offset} to read on.")
        if page.replaced:
            notes.append(
                f"(The file is not valid {enc.label}; undecodable bytes are shown as \ufffd.)"
            )
        elif enc is not _UTF8:
            notes.append(f"(The file is encoded as {enc.label}.)")
        body = "\n".join(page.lines)
        if notes:
            body += "\n\n" + "\n".join(notes)
        n = len(page.lines)
        if page.more or start > 1:
            summary = f"read lines {start}-{start + n - 1}"
        else:
            summary = f"read {n} line" + ("" if n == 1 else "s")
        return ToolResult(body, summary=summary, data={"start_line": start, "num_lines": n})

    def _read_notebook(
        self, path: Path, offset: int | None, limit: int | None
    ) -> ToolResult | None:
        from .notebook import NotebookFormatError, parse_notebook, render_notebook

        try:
            nb = parse_notebook(path.read_bytes())
        except NotebookFormatError:
            return None  # shown as plain text, with its JSON problems visible
        except OSError as e:
            raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
        n = len(nb.get("cells") or [])
        return ToolResult(render_notebook(nb, offset, limit), summary=f"read notebook ({n} cells)")


# --------------------------------------------------------------------------- diffs


def unified_diff(old: str, new: str, path: str, *, new_file: bool = False) -> str | None:
    """A unified diff of two texts (3 lines of context), or None when it would be too slow to compute.

    Common leading and trailing lines are trimmed before diffing, so a small
    edit in a big file stays cheap; hunk line numbers refer to the whole file.
    """
    a = _diff_lines(old)
    b = _diff_lines(new)
    prefix = 0
    while prefix < len(a) and prefix < len(b) and a[prefix] == b[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < len(a) - prefix and suffix < len(b) - prefix and a[-1 - suffix] == b[-1 - suffix]
    ):
        suffix += 1
    lo = max(prefix - 3, 0)
    keep_suffix = max(suffix - 3, 0)
    a_mid = a[lo : len(a) - keep_suffix]
    b_mid = b[lo : len(b) - keep_suffix]
    if len(a_mid) + len(b_mid) > _MAX_DIFF_LINES:
        return None
    lines = difflib.unified_diff(a_mid, b_mid, "/dev/null" if new_file else path, path, n=3)
    out: list[str] = []
    for line in lines:
        if line.startswith("@@"):
            line = _HUNK.sub(lambda m: _shift_hunk(m, lo), line)
        out.append(line if line.endswith("\n") else line + "\n")
    return "".join(out)


_HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def _shift_hunk(m: re.Match[str], offset: int) -> str:
    return f"@@ -{int(m[1]) + offset}{m[2] or ''} +{int(m[3]) + offset}{m[4] or ''} @@"


def _diff_lines(text: str) -> list[str]:
    lines = _printable(text).splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _diff_stats(diff: str | None) -> tuple[int, int]:
    if not diff:
        return 0, 0
    added = removed = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def _count_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


# --------------------------------------------------------------------------- Write


class WriteTool(Tool):
    """Create a file or replace its whole content."""

    name = "Write"
    kind = "edit"
    description = (
        "Writes a file to the local filesystem.\n\n"
        "Usage:\n"
        "- This tool will overwrite the existing file if there is one at the provided path.\n"
        "- If this is an existing file, you MUST use the Read tool first to read the file's contents. "
        "This tool will fail if you did not read the file first, or if it changed since you read it.\n"
        "- Missing parent directories are created.\n"
        "- ALWAYS prefer editing existing files with Edit. NEVER write new files unless explicitly required.\n"
        "- Use NotebookEdit, not Write, to change cells of a Jupyter notebook (.ipynb).\n"
        "- NEVER proactively create documentation files (*.md) or README files. "
        "Only create documentation files if explicitly requested by the user.\n"
        "- Only use emojis if the user explicitly requests it. Avoid writing emojis to files unless asked."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": {
                "type": "string",
                "description": "The absolute path to the file to write (must be absolute, not relative)",
            },
            "content": {"type": "string", "description": "The content to write to the file"},
        },
        "required": ["file_path", "content"],
        "additionalProperties": False,
    }

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path = ctx.resolve(require_str(input, "file_path"))
        content = require_str(input, "content", allow_empty=True)
        st = _stat_existing(path)
        old_text: str | None = None
        enc = _UTF8
        if st is not None:
            require_unchanged_since_read(ctx, path, st)
            try:
                old_raw = path.read_bytes()
            except OSError as e:
                raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
            try:
                old_text, enc = _decode_for_edit(old_raw, path)
            except ToolError:
                old_text = None  # binary: replaced wholesale, written as UTF-8
        new_bytes = _encode(content, enc, path)

        ctx.recorder.before_file_change(path, new_bytes, "Write")
        new_st = atomic_write(
            path,
            new_bytes,
            mode=stat.S_IMODE(st.st_mode) if st is not None else None,
            create_parents=True,
        )
        _record_read(ctx, path, new_st)

        lines = _count_lines(content)
        n_lines = f"{lines} line" + ("" if lines == 1 else "s")
        diff = unified_diff(old_text or "", content, str(path), new_file=st is None)
        if st is None:
            message = f"File created successfully at: {path} ({n_lines})"
            summary = f"created, {n_lines}"
        else:
            message = f"The file {path} has been overwritten ({n_lines})."
            added, removed = _diff_stats(diff)
            summary = f"wrote {n_lines} (+{added} -{removed})"
        return ToolResult(message, summary=summary, data={"diff": diff, "created": st is None})


# --------------------------------------------------------------------------- Edit


def _snippet(text: str, first_line: int, last_line: int, context: int = 4) -> str:
    lines = _printable(text).split("\n")
    lo = max(first_line - context, 1)
    hi = min(last_line + context, len(lines))
    return "\n".join(
        _numbered(i, _cut_line(lines[i - 1].removesuffix("\r"))) for i in range(lo, hi + 1)
    )


class EditTool(Tool):
    """Replace an exact string in a file."""

    name = "Edit"
    kind = "edit"
    description = (
        "Performs exact string replacements in files.\n\n"
        "Usage:\n"
        "- You must use your `Read` tool at least once in the conversation before editing. "
        "This tool will error if you attempt an edit without reading the file, or if the file changed since.\n"
        "- When editing text from Read tool output, ensure you preserve the exact indentation (tabs/spaces) "
        "as it appears AFTER the line number prefix. The line number prefix format is: spaces + line number + tab. "
        "Everything after that tab is the actual file content to match. Never include any part of the line "
        "number prefix in the old_string or new_string.\n"
        "- ALWAYS prefer editing existing files. NEVER write new files unless explicitly required.\n"
        "- The edit will FAIL if `old_string` is not unique in the file. Either provide a larger string with "
        "more surrounding context to make it unique or use `replace_all` to change every instance of `old_string`.\n"
        "- Use `replace_all` for replacing and renaming strings across the file, e.g. renaming a variable.\n"
        "- The file's encoding and line endings (LF or CRLF) are kept.\n"
        "- To change cells of a Jupyter notebook (.ipynb), use NotebookEdit instead."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "file_path": {
                "type": "string",
                "description": "The absolute path to the file to modify",
            },
            "old_string": {"type": "string", "description": "The text to replace"},
            "new_string": {
                "type": "string",
                "description": "The text to replace it with (must be different from old_string)",
            },
            "replace_all": {
                "type": "boolean",
                "default": False,
                "description": "Replace all occurrences of old_string (default false)",
            },
        },
        "required": ["file_path", "old_string", "new_string"],
        "additionalProperties": False,
    }

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        path = ctx.resolve(require_str(input, "file_path"))
        old = require_str(input, "old_string", allow_empty=True)
        new = require_str(input, "new_string", allow_empty=True)
        replace_all = input.get("replace_all", False)
        if replace_all is None:
            replace_all = False
        if not isinstance(replace_all, bool):
            raise ToolError("The parameter `replace_all` must be true or false.")
        if old == new:
            raise ToolError("No changes to make: old_string and new_string are exactly the same.")

        if path.suffix.lower() == ".ipynb":
            raise ToolError(f"{path} is a Jupyter notebook. Use NotebookEdit to change its cells.")
        st = _stat_existing(path)
        if st is None:
            raise ToolError(f"File does not exist: {path}. Use Write to create a new file.")
        require_unchanged_since_read(ctx, path, st)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ToolError(f"Cannot read {path}: {e.strerror or e}.") from None
        text, enc = _decode_for_edit(raw, path)

        if old == "":
            if text != "":
                raise ToolError(
                    "old_string is empty, but the file is not. Give the exact text to replace, "
                    "or use Write to replace the whole file."
                )
            count = 1
            new_text = new
            pos = 0
        else:
            count = text.count(old)
            if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
                # The model writes LF; the file uses CRLF. Match and write in the file's style.
                crlf_old = old.replace("\n", "\r\n")
                count = text.count(crlf_old)
                if count:
                    old, new = crlf_old, new.replace("\r\n", "\n").replace("\n", "\r\n")
            if count == 0:
                shown = old if len(old) <= 500 else old[:500] + "…"
                raise ToolError(
                    "String to replace not found in file. It must match exactly, including whitespace and "
                    f"indentation; Read the file again if unsure.\nString: {shown}"
                )
            if count > 1 and not replace_all:
                raise ToolError(
                    f"Found {count} matches of the string to replace, but replace_all is false. "
                    "To replace all occurrences, set replace_all to true. To replace only one occurrence, "
                    "provide more surrounding context to identify the instance uniquely."
                )
            pos = text.find(old)
            new_text = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        new_bytes = _encode(new_text, enc, path)

        ctx.recorder.before_file_change(path, new_bytes, "Edit")
        new_st = atomic_write(path, new_bytes, mode=stat.S_IMODE(st.st_mode))
        _record_read(ctx, path, new_st)

        diff = unified_diff(text, new_text, str(path))
        added, removed = _diff_stats(diff)
        first = new_text.count("\n", 0, pos) + 1
        last = first + new.count("\n")
        message = (
            f"The file {path} has been updated"
            + (f" ({count} occurrences replaced)" if count > 1 else "")
            + ". Here's the result of running `cat -n` on a snippet of the edited file:\n"
            + _snippet(new_text, first, last)
        )
        what = f"replaced {count} occurrences" if count > 1 else "edited"
        return ToolResult(
            message,
            summary=f"{what} (+{added} -{removed})",
            data={"diff": diff, "replacements": count},
        )
