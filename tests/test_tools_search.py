"""Glob and Grep on a real tree; Grep's ripgrep and pure-Python backends must agree."""

from __future__ import annotations

import codecs
import os
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import ToolError
from agent_magic.tools import ToolContext, ToolResult
from agent_magic.tools.base import Tool
from agent_magic.tools.search import GlobTool, GrepTool, glob_to_regex

HAS_RG = shutil.which("rg") is not None
BACKENDS = [
    "python",
    pytest.param(
        "rg", marks=pytest.mark.skipif(not HAS_RG, reason="ripgrep (rg) is not installed")
    ),
]

FILES: dict[str, bytes] = {
    "a.py": b"import os\ndef foo():\n    return 'Foo'\n",
    "b.txt": b"foo bar\nbaz\nFOO\n",
    "src/main.py": b"class Foo:\n    pass\n\nfoo = Foo()\n",
    "src/util.js": b"function foo() {}\n",
    "src/deep/x.py": b"# foo\nprint('foo')\n",
    "src/deep/y.pyi": b"def foo() -> None: ...\n",
    "docs/readme.md": b"Foo docs\n",
    "build/gen.py": b"foo = 'generated'\n",
    ".hidden/h.py": b"foo hidden\n",
    ".env.py": b"foo dotfile\n",
    ".git/config": b"foo in git\n",
    "node_modules/pkg/index.js": b"foo\n",
    ".ipynb_checkpoints/nb-checkpoint.ipynb": b'{"foo": 1}\n',
    "bin.dat": b"foo\x00bar\n",
    "crlf.txt": b"foo\r\nbar\r\n",
    "bom.txt": codecs.BOM_UTF8 + b"foo bom\n",
    "u16.txt": "foo utf16\nsecond\n".encode("utf-16"),
    "ctx.txt": b"".join(
        (b"foo %d\n" if i in (5, 15, 16) else b"line %d\n") % i for i in range(1, 21)
    ),
    "multi.txt": b"start\nfoo\nbar\nend\nfoo bar\n",
    "unicode.txt": "Gr\u00fc\u00dfe foo\n\u00f1and\u00fa\n".encode(),
    "space dir/f.py": b"foo\n",
    "nb.ipynb": b'{"cells": [{"source": "foo = 1"}]}\n',
    "noeol.txt": b"foo",
    "empty.txt": b"",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for i, (rel, data) in enumerate(sorted(FILES.items())):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (1_700_000_000 + i * 10, 1_700_000_000 + i * 10))  # distinct, known mtimes
    (root / "link.py").symlink_to(root / "a.py")
    (root / "linkdir").symlink_to(root / "src", target_is_directory=True)
    return root


def run(tool: Tool, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return anyio.run(tool.run, input, ctx)


def grep(root: Path, backend: str, **input: Any) -> ToolResult:
    return run(GrepTool(backend=backend), input, ToolContext(cwd=root, session_id="t"))  # type: ignore[arg-type]


def lines(res: ToolResult) -> list[str]:
    assert isinstance(res.content, str)
    return res.content.splitlines()


# --------------------------------------------------------------------------- Grep: both backends agree

QUERIES: list[dict[str, Any]] = [
    {"pattern": "foo"},
    {"pattern": "foo", "-i": True},
    {"pattern": "foo", "output_mode": "content"},
    {"pattern": "foo", "output_mode": "content", "-n": False},
    {"pattern": "foo", "output_mode": "count", "-i": True},
    {"pattern": "foo \\d+", "output_mode": "content", "-C": 1, "path": "ctx.txt"},
    {"pattern": "foo", "output_mode": "content", "-A": 2, "-B": 1, "glob": "ctx.txt"},
    {"pattern": "foo", "output_mode": "content", "-C": 3, "-A": 0, "glob": "ctx.txt"},
    {"pattern": "foo", "glob": "*.py"},
    {"pattern": "foo", "glob": "src/*.py"},
    {"pattern": "foo", "glob": "src/**"},
    {"pattern": "foo", "glob": "*.{js,md}", "-i": True},
    {"pattern": "foo", "glob": "!*.txt"},
    {"pattern": "foo", "glob": "*.py !build"},
    {"pattern": "foo", "glob": "!src *.py"},
    {"pattern": "foo", "glob": "deep/*.py"},
    {"pattern": "foo", "type": "py"},
    {"pattern": "foo", "type": "py", "glob": "x*"},
    {"pattern": "foo", "type": "jupyter"},
    {"pattern": "foo$", "output_mode": "content"},
    {"pattern": "^foo", "output_mode": "content"},
    {"pattern": "Gr\u00fc\u00dfe|\u00f1", "output_mode": "content"},
    {"pattern": "\\w+ utf16", "output_mode": "content"},
    {"pattern": "foo\\nbar", "multiline": True, "output_mode": "content"},
    {"pattern": "o\\n", "multiline": True, "output_mode": "count"},
    {"pattern": "start.*end", "multiline": True, "output_mode": "content", "-C": 1},
    {"pattern": "x*", "multiline": True, "output_mode": "count", "path": "multi.txt"},
    {"pattern": "x*", "output_mode": "count", "glob": "*.txt"},
    {"pattern": "foo", "output_mode": "content", "head_limit": 3},
    {"pattern": "foo", "head_limit": 2},
    {"pattern": "foo", "path": "src"},
    {"pattern": "foo", "path": "node_modules"},
    {"pattern": "foo", "path": "src/deep/x.py", "output_mode": "content"},
    {"pattern": "foo", "path": "a.py", "glob": "*.js"},
    {"pattern": "nomatch_anywhere"},
    {"pattern": "[Ff]oo\\(\\)", "output_mode": "content"},
]


@pytest.mark.skipif(
    not HAS_RG, reason="ripgrep (rg) is not installed; only the Python backend can run"
)
@pytest.mark.parametrize("query", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_ripgrep_and_python_backends_agree(tree: Path, query: dict[str, Any]) -> None:
    by_rg = grep(tree, "rg", **query)
    by_python = grep(tree, "python", **query)
    assert by_rg.data.pop("backend") == "rg" and by_python.data.pop("backend") == "python"
    assert by_python.content == by_rg.content
    assert (by_python.summary, by_python.data, by_python.is_error) == (
        by_rg.summary,
        by_rg.data,
        by_rg.is_error,
    )


# --------------------------------------------------------------------------- Grep: expected results (each backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_files_with_matches_newest_first_and_skips(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo")
    expected = [
        "unicode.txt", "u16.txt", "src/util.js", "src/main.py", "src/deep/y.pyi", "src/deep/x.py",
        "space dir/f.py", "noeol.txt", "nb.ipynb", "multi.txt", "ctx.txt", "crlf.txt", "build/gen.py",
        "bom.txt", "b.txt", "a.py", ".hidden/h.py", ".env.py",
    ]  # fmt: skip
    assert lines(res) == [f"Found {len(expected)} files"] + [str(tree / p) for p in expected]
    assert res.summary == f"{len(expected)} files"


@pytest.mark.parametrize("backend", BACKENDS)
def test_content_mode_format(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo", output_mode="content", glob="a.py", **{"-i": True})
    assert lines(res) == [f"{tree}/a.py:2:def foo():", f"{tree}/a.py:3:    return 'Foo'"]
    res = grep(
        tree, backend, pattern="foo 1", output_mode="content", path="ctx.txt", **{"-B": 1, "-A": 1}
    )
    assert lines(res) == [
        f"{tree}/ctx.txt-14-line 14",
        f"{tree}/ctx.txt:15:foo 15",
        f"{tree}/ctx.txt:16:foo 16",
        f"{tree}/ctx.txt-17-line 17",
    ]
    res = grep(tree, backend, pattern="foo", output_mode="content", path="ctx.txt", **{"-C": 1})
    assert "--" in lines(res) and lines(res).count("--") == 1
    assert res.summary == "3 matching lines in 1 file"


@pytest.mark.parametrize("backend", BACKENDS)
def test_count_mode(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo", output_mode="count", glob="*.txt", **{"-i": True})
    assert lines(res)[:2] == [f"{tree}/b.txt:2", f"{tree}/bom.txt:1"]
    assert lines(res)[-1] == "Found 12 matching lines across 8 files."  # ctx.txt has 3, multi.txt 2
    assert f"{tree}/ctx.txt:3" in lines(res) and f"{tree}/multi.txt:2" in lines(res)
    assert res.data["num_matches"] == 12 and res.data["num_files"] == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiline_spans_lines(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo\\nbar", multiline=True, output_mode="content")
    # crlf.txt has "foo\r\nbar": the CR is part of the line, so it does not match
    assert lines(res) == [f"{tree}/multi.txt:2:foo", f"{tree}/multi.txt:3:bar"]
    res = grep(tree, backend, pattern="start.*end", multiline=True, output_mode="count")
    assert lines(res)[0] == f"{tree}/multi.txt:4"


@pytest.mark.parametrize("backend", BACKENDS)
def test_glob_and_type_must_both_match(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo", type="py", glob="src/**")
    assert sorted(lines(res)[1:]) == sorted(
        str(tree / p) for p in ("src/main.py", "src/deep/x.py", "src/deep/y.pyi")
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_grep_errors(tree: Path, backend: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pattern": "(unclosed"}, "regular expression|regex"),
        ({"pattern": "a\\nb"}, "multiline"),
        ({"pattern": "foo", "type": "cobol"}, "Unknown file type"),
        ({"pattern": "foo", "path": "missing"}, "does not exist"),
        ({"pattern": "foo", "output_mode": "lines"}, "output_mode"),
        ({"pattern": "foo", "-A": -1}, "-A"),
        ({"pattern": "foo", "-i": "yes"}, "-i"),
        ({"pattern": ""}, "pattern"),
        ({"pattern": 5}, "pattern"),
        ({"pattern": "a\x00"}, "NUL"),
        ({"pattern": "foo", "glob": 3}, "glob"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            grep(tree, backend, **input)


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_binary_file_is_not_searched(tree: Path, backend: str) -> None:
    res = grep(tree, backend, pattern="foo", path="bin.dat")
    assert "binary" in str(res.content) and str(tree) not in str(res.content).replace(
        str(tree / "bin.dat"), ""
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_grep_output_is_capped(tmp_path: Path, backend: str) -> None:
    (tmp_path / "big.txt").write_text("match this line please\n" * 5000)
    res = grep(tmp_path, backend, pattern="match", output_mode="content")
    assert isinstance(res.content, str)
    assert len(res.content) < 31_000 and "output truncated" in res.content
    assert res.data["num_matches"] == 5000


def test_rg_backend_without_rg_is_a_tool_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tree))
    with pytest.raises(ToolError, match="not installed"):
        grep(tree, "rg", pattern="foo")
    assert grep(tree, "auto", pattern="foo").data["backend"] == "python"


# --------------------------------------------------------------------------- Glob


def glob(root: Path, **input: Any) -> ToolResult:
    return run(GlobTool(), input, ToolContext(cwd=root, session_id="t"))


def test_glob_recursive_newest_first_absolute(tree: Path) -> None:
    res = glob(tree, pattern="**/*.py")
    assert lines(res) == [
        str(tree / p)
        for p in (
            "src/main.py",
            "src/deep/x.py",
            "space dir/f.py",
            "build/gen.py",
            "a.py",
            ".hidden/h.py",
            ".env.py",
        )
    ]
    assert res.summary == "7 files"


def test_glob_without_slash_is_top_level_only(tree: Path) -> None:
    assert lines(glob(tree, pattern="*.py")) == [str(tree / "a.py"), str(tree / ".env.py")]
    assert lines(glob(tree, pattern="src/*.{py,js}")) == [
        str(tree / "src/util.js"),
        str(tree / "src/main.py"),
    ]
    assert lines(glob(tree, pattern="*/deep/?.py")) == [str(tree / "src/deep/x.py")]


def test_glob_path_and_absolute_patterns(tree: Path) -> None:
    assert lines(glob(tree, pattern="*.py", path="src/deep")) == [str(tree / "src/deep/x.py")]
    assert lines(glob(tree, pattern=f"{tree}/src/**/*.pyi")) == [str(tree / "src/deep/y.pyi")]
    assert lines(glob(tree / "src", pattern="../b.*")) == [str(tree / "b.txt")]


def test_glob_skips_vcs_dependency_and_checkpoint_dirs(tree: Path) -> None:
    found = lines(glob(tree, pattern="**/*"))
    assert not any(
        part in f for f in found for part in ("/.git/", "/node_modules/", "/.ipynb_checkpoints/")
    )
    assert str(tree / ".hidden/h.py") in found and str(tree / "link.py") not in found
    # asked for explicitly, a skipped directory is searched
    assert lines(glob(tree / "node_modules", pattern="**/*.js")) == [
        str(tree / "node_modules/pkg/index.js")
    ]


def test_glob_caps_results(tmp_path: Path) -> None:
    for i in range(150):
        (tmp_path / f"f{i:03}.txt").write_text("x")
        os.utime(tmp_path / f"f{i:03}.txt", (1_700_000_000 + i, 1_700_000_000 + i))
    res = glob(tmp_path, pattern="*.txt")
    out = lines(res)
    assert out[0] == str(tmp_path / "f149.txt") and len(out) == 101
    assert "showing 100 of 150" in out[-1] and res.data["num_files"] == 150


def test_glob_no_match_and_errors(tree: Path) -> None:
    assert glob(tree, pattern="**/*.rs").content == "No files found"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pattern": "*.py", "path": "missing"}, "does not exist"),
        ({"pattern": "*.py", "path": "a.py"}, "not a directory"),
        ({"pattern": ""}, "pattern"),
        ({"pattern": 1}, "pattern"),
        ({"pattern": "*.py", "path": 3}, "path"),
    ]
    for input, fragment in cases:
        with pytest.raises(ToolError, match=fragment):
            glob(tree, **input)


@pytest.mark.parametrize(
    ("pattern", "matches", "rejects"),
    [
        ("*.py", ["a.py", ".a.py"], ["a/b.py", "a.pyc"]),
        ("**/*.py", ["a.py", "x/y/z.py"], ["x/y/z.pyc"]),
        ("src/**", ["src/a", "src/a/b"], ["src", "lib/a"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab"]),
        ("?.txt", ["a.txt"], ["ab.txt", "/.txt"]),
        ("[!a]*.md", ["b.md"], ["a.md"]),
        ("[a-c]x", ["bx"], ["dx"]),
        ("*.{ts,tsx}", ["a.ts", "a.tsx"], ["a.t"]),
        ("{src,lib}/*.py", ["src/a.py", "lib/b.py"], ["doc/a.py"]),
        ("a\\*b", ["a*b"], ["axb"]),
        ("x**y", ["xy", "xaby"], ["xa/by"]),
    ],
)
def test_glob_to_regex(pattern: str, matches: list[str], rejects: list[str]) -> None:
    regex = re.compile(glob_to_regex(pattern), re.DOTALL)
    for m in matches:
        assert regex.fullmatch(m), (pattern, m)
    for r in rejects:
        assert not regex.fullmatch(r), (pattern, r)
