"""Read, Write and Edit on real files: paging, binary detection, read-before-write, atomic writes, encodings."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import ToolError
from agent_magic.tools import CellEdit, ToolContext, ToolResult
from agent_magic.tools.base import Tool
from agent_magic.tools.files import EditTool, ReadTool, WriteTool, image_info, unified_diff


class FakeRecorder:
    """Records calls, and what the file held at the moment of the backup call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, bytes | None, bytes | None, str]] = []

    def before_file_change(self, path: Path, new_content: bytes | None, tool: str) -> None:
        on_disk = path.read_bytes() if path.exists() else None
        self.calls.append((path, on_disk, new_content, tool))

    def before_cell_edit(
        self, path: Path, notebook_bytes: bytes, edit: CellEdit, new_notebook_bytes: bytes
    ) -> None:
        raise AssertionError("file tools must not record cell edits")

    def before_command(self) -> object:
        raise AssertionError("file tools run no commands")

    def after_command(self, token: object) -> list[str]:
        raise AssertionError("file tools run no commands")


def run(tool: Tool, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return anyio.run(tool.run, input, ctx)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(cwd=tmp_path, session_id="test", recorder=FakeRecorder())


def recorder(ctx: ToolContext) -> FakeRecorder:
    assert isinstance(ctx.recorder, FakeRecorder)
    return ctx.recorder


def png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = (
        b"\xff\xc0"
        + struct.pack(">HBHHB", 17, 8, height, width, 3)
        + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


# --------------------------------------------------------------------------- Read: text


def test_read_numbers_lines_like_cat_n_and_records_mtime(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("import os\n\n    x = 1\n")
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert res.content == "     1\timport os\n     2\t\n     3\t    x = 1"
    assert res.summary == "read 3 lines" and not res.is_error
    assert ctx.read_files == {str(f): f.stat().st_mtime_ns}


def test_read_relative_path_resolves_against_cwd(ctx: ToolContext, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hi")
    res = run(ReadTool(), {"file_path": "sub/b.txt"}, ctx)
    assert res.content == "     1\thi"
    assert str(tmp_path / "sub" / "b.txt") in ctx.read_files


def test_read_offset_limit_and_remaining_note(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    f.write_text("".join(f"line {i}\n" for i in range(1, 101)))
    res = run(ReadTool(), {"file_path": str(f), "offset": 10, "limit": 5}, ctx)
    assert isinstance(res.content, str)
    lines = res.content.splitlines()
    assert lines[:5] == [f"{n:>6}\tline {n}" for n in range(10, 15)]
    assert "… 86 more lines; use offset=15" in res.content
    assert res.summary == "read lines 10-14"
    # the last page has no note
    res = run(ReadTool(), {"file_path": str(f), "offset": 96}, ctx)
    assert isinstance(res.content, str)
    assert res.content.splitlines()[-1] == "   100\tline 100" and "more lines" not in res.content


def test_read_default_limit_is_2000_lines(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "long.txt"
    f.write_text("x\n" * 2500)
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    assert res.content.count("\tx") == 2000
    assert "… 500 more lines; use offset=2001" in res.content


def test_read_counts_a_last_line_without_newline(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("a\nb\nc")
    res = run(ReadTool(), {"file_path": str(f), "limit": 1}, ctx)
    assert "… 2 more lines; use offset=2" in str(res.content)


def test_read_truncates_long_lines_with_marker(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "wide.txt"
    f.write_text("a" * 5000 + "\nshort\n")
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    first, second = res.content.splitlines()
    assert first.startswith("     1\t" + "a" * 2000 + "…") and "5000 characters" in first
    assert "a" * 2001 not in first
    assert second == "     2\tshort"


def test_read_crlf_lines_are_shown_without_cr(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "win.txt"
    f.write_bytes(b"one\r\ntwo\r\n")
    assert run(ReadTool(), {"file_path": str(f)}, ctx).content == "     1\tone\n     2\ttwo"


def test_read_offset_past_end_says_how_long_the_file_is(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("a\nb\n")
    res = run(ReadTool(), {"file_path": str(f), "offset": 10}, ctx)
    assert "2 lines" in str(res.content) and "offset 10" in str(res.content) and not res.is_error


def test_read_empty_file(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert "empty" in str(res.content) and res.summary == "empty file"
    assert str(f) in ctx.read_files


def test_read_invalid_utf8_in_text_is_replaced_and_noted(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 au lait\nsecond line\n".encode("latin-1"))
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    assert "     1\tcaf\ufffd au lait" in res.content
    assert "not valid UTF-8" in res.content


def test_read_utf16_with_bom(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "u16.txt"
    f.write_bytes("h\u00e9llo\nw\u00f6rld\n".encode("utf-16"))
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    assert res.content.startswith("     1\th\u00e9llo\n     2\tw\u00f6rld")
    assert "UTF-16" in res.content


def test_read_huge_single_line_streams_instead_of_loading(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "minified.js"
    with f.open("w") as fh:
        for _ in range(400):
            fh.write("x" * 50_000)  # one 20 MB line
        fh.write("\nend\n")
    tracemalloc.start()
    try:
        res = run(ReadTool(), {"file_path": str(f)}, ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak
    assert isinstance(res.content, str)
    assert "20000000 characters" in res.content and res.content.endswith("     2\tend")


def test_read_page_deep_in_a_large_file(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "many.txt"
    f.write_text("".join(f"{i}\n" for i in range(1, 200_001)))
    res = run(ReadTool(), {"file_path": str(f), "offset": 199_999, "limit": 5}, ctx)
    assert res.content == "199999\t199999\n200000\t200000"


# --------------------------------------------------------------------------- Read: binary, images, errors


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (png_bytes(64, 48), "image/png", (64, 48)),
        (jpeg_bytes(640, 480), "image/jpeg", (640, 480)),
        (b"GIF89a" + struct.pack("<HH", 10, 20) + b"\x00" * 20, "image/gif", (10, 20)),
        (
            b"RIFF"
            + struct.pack("<I", 30)
            + b"WEBPVP8X"
            + struct.pack("<I", 10)
            + b"\x00" * 4
            + (99).to_bytes(3, "little")
            + (49).to_bytes(3, "little"),
            "image/webp",
            (100, 50),
        ),
    ],
)
def test_read_describes_images(
    ctx: ToolContext, tmp_path: Path, data: bytes, mime: str, size: tuple[int, int]
) -> None:
    f = tmp_path / "picture.bin"  # sniffed by content, not by name
    f.write_bytes(data)
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    assert f"{size[0]}x{size[1]} pixels" in res.content and mime in res.content
    assert f"{len(data)} bytes" in res.content
    assert res.data["width"] == size[0] and res.data["height"] == size[1]
    assert image_info(data) == (mime, *size)


def test_read_describes_binary_files_without_dumping(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    payload = b"PK\x03\x04" + bytes(range(256)) * 4
    f.write_bytes(payload)
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert isinstance(res.content, str)
    assert (
        "binary file" in res.content
        and "ZIP" in res.content
        and f"{len(payload)} bytes" in res.content
    )
    assert "\x00" not in res.content and res.summary == f"binary file, {len(payload)} bytes"


def test_read_mostly_undecodable_file_is_binary(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "noise"
    f.write_bytes(bytes([0x80 + (i % 100) for i in range(4000)]))
    res = run(ReadTool(), {"file_path": str(f)}, ctx)
    assert "binary file" in str(res.content)


def test_read_errors(ctx: ToolContext, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "d").mkdir()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"file_path": str(tmp_path / "missing.txt")}, "does not exist"),
        ({"file_path": str(tmp_path / "d")}, "is a directory"),
        ({"file_path": "/dev/null"}, "not a regular file"),
        ({"file_path": str(fifo)}, "not a regular file"),
        ({"file_path": 42}, "file_path"),
        ({}, "file_path"),
        ({"file_path": "a\x00b"}, "NUL"),
        ({"file_path": str(tmp_path / "d" / "x"), "offset": "3"}, "offset"),
        ({"file_path": str(tmp_path / "d" / "x"), "limit": 0}, "limit"),
        ({"file_path": str(tmp_path / "d" / "x"), "offset": 1.5}, "offset"),
        ({"file_path": str(tmp_path / "d" / "x"), "limit": True}, "limit"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            run(ReadTool(), input, ctx)
    assert ctx.read_files == {}


_UNREADABLE = """
import os, tempfile
import anyio
from agent_magic import ToolError
from agent_magic.tools import ToolContext
from agent_magic.tools.files import ReadTool

d = tempfile.mkdtemp()
f = os.path.join(d, "secret.txt")
with open(f, "w") as out:
    out.write("x")
os.chmod(f, 0)
try:
    anyio.run(ReadTool().run, {"file_path": f}, ToolContext(cwd=d, session_id="t"))
except ToolError as e:
    print("ToolError:", e)
else:
    print("read it")
finally:
    os.chmod(f, 0o600)
    os.remove(f)
    os.rmdir(d)
"""


def test_read_unreadable_file_is_a_tool_error(ctx: ToolContext, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        f = tmp_path / "secret.txt"
        f.write_text("x")
        f.chmod(0)
        with pytest.raises(ToolError, match="Cannot read"):
            run(ReadTool(), {"file_path": str(f)}, ctx)
        return
    # Root reads files without read permission through its capabilities (CI runs as root):
    # the same Read runs in a child process that is root without CAP_DAC_OVERRIDE and
    # CAP_DAC_READ_SEARCH, so the file's mode applies to it. (Switching to "nobody" would
    # also lose a Python installed under /root.)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is needed to test an unreadable file as root")
        pytest.skip("running as root without setpriv: cannot drop the capabilities that bypass file modes")
    proc = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", _UNREADABLE],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ToolError: Cannot read"), proc.stdout


# --------------------------------------------------------------------------- Write


def test_write_creates_file_and_parents_and_records_first(ctx: ToolContext, tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "f.py"
    res = run(WriteTool(), {"file_path": str(target), "content": "print('hi')\n"}, ctx)
    assert target.read_text() == "print('hi')\n"
    assert recorder(ctx).calls == [(target, None, b"print('hi')\n", "Write")]
    assert ctx.read_files[str(target)] == target.stat().st_mtime_ns
    assert res.data["diff"] == f"--- /dev/null\n+++ {target}\n@@ -0,0 +1 @@\n+print('hi')\n"
    assert res.summary == "created, 1 line"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_refuses_existing_file_not_read(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "keep.txt"
    f.write_text("original")
    with pytest.raises(ToolError, match="has not been read yet"):
        run(WriteTool(), {"file_path": str(f), "content": "new"}, ctx)
    assert f.read_text() == "original" and recorder(ctx).calls == []


def test_write_refuses_file_changed_since_read(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "keep.txt"
    f.write_text("original")
    run(ReadTool(), {"file_path": str(f)}, ctx)
    f.write_text("changed by a person")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ToolError, match="modified since it was read"):
        run(WriteTool(), {"file_path": str(f), "content": "new"}, ctx)
    assert f.read_text() == "changed by a person" and recorder(ctx).calls == []


def test_write_overwrites_atomically_keeping_mode(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "run.sh"
    f.write_text("echo old\n")
    f.chmod(0o750)
    old_inode = f.stat().st_ino
    run(ReadTool(), {"file_path": str(f)}, ctx)
    res = run(WriteTool(), {"file_path": str(f), "content": "echo new\n"}, ctx)
    assert f.read_text() == "echo new\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o750
    assert f.stat().st_ino != old_inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh"]  # no temp file left
    assert recorder(ctx).calls == [(f, b"echo old\n", b"echo new\n", "Write")]
    assert "-echo old\n+echo new\n" in res.data["diff"]


def test_write_then_edit_needs_no_second_read(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    run(WriteTool(), {"file_path": str(f), "content": "alpha\nbeta\n"}, ctx)
    run(EditTool(), {"file_path": str(f), "old_string": "beta", "new_string": "gamma"}, ctx)
    assert f.read_text() == "alpha\ngamma\n"


def test_write_keeps_utf16_encoding_of_existing_file(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "u16.txt"
    f.write_bytes("old\n".encode("utf-16-be").join([b"\xfe\xff", b""]))
    run(ReadTool(), {"file_path": str(f)}, ctx)
    run(WriteTool(), {"file_path": str(f), "content": "n\u00e9w\n"}, ctx)
    assert f.read_bytes() == b"\xfe\xff" + "n\u00e9w\n".encode("utf-16-be")


def test_write_errors(ctx: ToolContext, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "afile").write_text("x")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"file_path": str(tmp_path / "d"), "content": "x"}, "is a directory"),
        ({"file_path": str(tmp_path / "f.txt"), "content": 3}, "content"),
        ({"file_path": str(tmp_path / "f.txt")}, "content"),
        ({"content": "x"}, "file_path"),
        (
            {"file_path": str(tmp_path / "f.txt"), "content": "bad \ud800 surrogate"},
            "cannot be encoded",
        ),
        ({"file_path": str(tmp_path / "afile" / "child.txt"), "content": "x"}, "parent"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            run(WriteTool(), input, ctx)
    assert not (tmp_path / "f.txt").exists()


# --------------------------------------------------------------------------- Edit


def read_then(ctx: ToolContext, path: Path) -> None:
    run(ReadTool(), {"file_path": str(path)}, ctx)


def test_edit_replaces_unique_string_with_backup_first(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")
    read_then(ctx, f)
    res = run(
        EditTool(), {"file_path": str(f), "old_string": "return 2", "new_string": "return 3"}, ctx
    )
    assert f.read_text() == "def f():\n    return 1\n\ndef g():\n    return 3\n"
    assert recorder(ctx).calls == [
        (f, b"def f():\n    return 1\n\ndef g():\n    return 2\n", f.read_bytes(), "Edit")
    ]
    assert res.data["diff"].splitlines()[2:] == [
        "@@ -2,4 +2,4 @@",
        "     return 1",
        " ",
        " def g():",
        "-    return 2",
        "+    return 3",
    ]
    assert "     5\t    return 3" in str(res.content)
    assert res.summary == "edited (+1 -1)"
    assert ctx.read_files[str(f)] == f.stat().st_mtime_ns


def test_edit_non_unique_needs_replace_all(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("x = 1\nx = 1\nx = 1\n")
    read_then(ctx, f)
    with pytest.raises(ToolError, match="Found 3 matches"):
        run(EditTool(), {"file_path": str(f), "old_string": "x = 1", "new_string": "x = 2"}, ctx)
    assert f.read_text() == "x = 1\nx = 1\nx = 1\n" and recorder(ctx).calls == []
    res = run(
        EditTool(),
        {"file_path": str(f), "old_string": "x = 1", "new_string": "x = 2", "replace_all": True},
        ctx,
    )
    assert f.read_text() == "x = 2\nx = 2\nx = 2\n"
    assert res.data["replacements"] == 3 and res.summary == "replaced 3 occurrences (+3 -3)"


def test_edit_refusals(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "m.txt"
    f.write_text("hello world\n")
    with pytest.raises(ToolError, match="has not been read yet"):
        run(EditTool(), {"file_path": str(f), "old_string": "hello", "new_string": "bye"}, ctx)
    read_then(ctx, f)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"file_path": str(f), "old_string": "absent", "new_string": "x"}, "not found"),
        ({"file_path": str(f), "old_string": "hello", "new_string": "hello"}, "exactly the same"),
        ({"file_path": str(f), "old_string": "", "new_string": "x"}, "old_string is empty"),
        (
            {"file_path": str(f), "old_string": "hello", "new_string": "x", "replace_all": "yes"},
            "replace_all",
        ),
        ({"file_path": str(f), "old_string": "hello"}, "new_string"),
        (
            {"file_path": str(tmp_path / "nope.txt"), "old_string": "a", "new_string": "b"},
            "does not exist",
        ),
        ({"file_path": str(tmp_path), "old_string": "a", "new_string": "b"}, "is a directory"),
        (
            {"file_path": str(tmp_path / "n.ipynb"), "old_string": "a", "new_string": "b"},
            "NotebookEdit",
        ),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            run(EditTool(), input, ctx)
    f.write_text("hello there\n")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ToolError, match="modified since it was read"):
        run(EditTool(), {"file_path": str(f), "old_string": "hello", "new_string": "bye"}, ctx)
    assert f.read_text() == "hello there\n" and recorder(ctx).calls == []


def test_edit_keeps_crlf_line_endings(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "win.txt"
    f.write_bytes(b"first\r\nsecond\r\nthird\r\n")
    read_then(ctx, f)
    run(
        EditTool(),
        {"file_path": str(f), "old_string": "first\nsecond", "new_string": "one\ntwo\nthree"},
        ctx,
    )
    assert f.read_bytes() == b"one\r\ntwo\r\nthree\r\nthird\r\n"


def test_edit_keeps_bom_and_undecodable_bytes_elsewhere(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "mixed.txt"
    original = b"\xef\xbb\xbfname = 'x'\nlegacy = '\xe9t\xe9'\n"
    f.write_bytes(original)
    read_then(ctx, f)
    run(EditTool(), {"file_path": str(f), "old_string": "'x'", "new_string": "'\u00fc'"}, ctx)
    assert f.read_bytes() == b"\xef\xbb\xbfname = '\xc3\xbc'\nlegacy = '\xe9t\xe9'\n"


def test_edit_keeps_mode_and_leaves_no_temp_files(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "tool.sh"
    f.write_text("echo a\n")
    f.chmod(0o700)
    read_then(ctx, f)
    run(EditTool(), {"file_path": str(f), "old_string": "a", "new_string": "b"}, ctx)
    assert stat.S_IMODE(f.stat().st_mode) == 0o700
    assert [p.name for p in tmp_path.iterdir()] == ["tool.sh"]


def test_edit_refuses_binary_files(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "blob.bin"
    f.write_bytes(b"abc\x00def")
    read_then(ctx, f)
    with pytest.raises(ToolError, match="binary"):
        run(EditTool(), {"file_path": str(f), "old_string": "abc", "new_string": "xyz"}, ctx)
    assert f.read_bytes() == b"abc\x00def"


def test_edit_of_empty_file_with_empty_old_string(ctx: ToolContext, tmp_path: Path) -> None:
    f = tmp_path / "empty.py"
    f.write_text("")
    read_then(ctx, f)
    run(EditTool(), {"file_path": str(f), "old_string": "", "new_string": "x = 1\n"}, ctx)
    assert f.read_text() == "x = 1\n"


def test_concurrent_reads_in_threads_do_not_interfere(tmp_path: Path) -> None:
    # Read offloads to worker threads; several at once must each see their own file.
    files = []
    for i in range(8):
        f = tmp_path / f"f{i}.txt"
        f.write_text(f"content {i}\n")
        files.append(f)
    ctx = ToolContext(cwd=tmp_path, session_id="t")
    results: dict[int, Any] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i, f in enumerate(files):

                async def one(i: int = i, f: Path = f) -> None:
                    results[i] = (await ReadTool().run({"file_path": str(f)}, ctx)).content

                tg.start_soon(one)

    anyio.run(main)
    assert results == {i: f"     1\tcontent {i}" for i in range(8)}


def test_unified_diff_line_numbers_in_big_file() -> None:
    old = "".join(f"{i}\n" for i in range(1, 1001))
    new = old.replace("500\n", "five hundred\n")
    diff = unified_diff(old, new, "f")
    assert diff is not None
    assert "@@ -497,7 +497,7 @@" in diff and "-500\n+five hundred\n" in diff
    no_newline = unified_diff("a", "b", "f")
    assert no_newline is not None and "\\ No newline at end of file" in no_newline
