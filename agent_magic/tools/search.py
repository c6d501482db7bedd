"""The search tools: ``Glob`` (files by name) and ``Grep`` (files by content).

``Grep`` runs ripgrep (``rg``) when it is on PATH and a pure-Python search
otherwise. Both backends select the same files and format results the same
way; only the regular-expression engine differs: ripgrep uses Rust's
``regex`` syntax, the fallback Python's :mod:`re` (no look-around in ripgrep;
``\\d``, ``\\w`` and case folding are Unicode-aware in both).

What both search, by design:

- every file under the search path, hidden files included, without reading
  ``.gitignore`` (the agent should find what is there, not what git tracks);
- except directories named ``.git``, ``.hg``, ``.svn``, ``node_modules`` and
  ``.ipynb_checkpoints`` below the search path, and symbolic links (not followed);
- files containing a NUL byte count as binary and are skipped;
- text is UTF-8 (a UTF-8 BOM is skipped; UTF-16 files with a BOM are decoded);
  invalid bytes never match anything but themselves.

``glob`` filters use ripgrep's ``--glob`` rules: a pattern without ``/``
matches file names at any depth, a pattern with ``/`` matches the path from
the search root, ``!`` excludes, and the last matching pattern wins. ``type``
names a file type from :data:`FILE_TYPES`; ``glob`` and ``type`` together must
both match. A file given as ``path`` is always searched.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import anyio
import anyio.abc
import anyio.to_thread

from .._errors import ToolError
from .base import Tool, ToolContext, ToolResult, optional_int, require_str

__all__ = ["FILE_TYPES", "SKIP_DIRS", "GlobTool", "GrepTool", "glob_to_regex"]

#: Directory names never entered below the search root (also files with these names).
SKIP_DIRS: frozenset[str] = frozenset({".git", ".hg", ".svn", "node_modules", ".ipynb_checkpoints"})

#: Grep's ``type`` values and the file-name globs they stand for (ripgrep's definitions).
FILE_TYPES: dict[str, tuple[str, ...]] = {
    "c": ("*.[chH]", "*.[chH].in", "*.cats"),
    "cpp": (
        "*.[ChH]",
        "*.[ChH].in",
        "*.[ch]pp",
        "*.[ch]pp.in",
        "*.[ch]xx",
        "*.[ch]xx.in",
        "*.cc",
        "*.cc.in",
        "*.hh",
        "*.hh.in",
        "*.inl",
    ),
    "csharp": ("*.cs",),
    "css": ("*.css", "*.scss"),
    "csv": ("*.csv",),
    "docker": ("*Dockerfile*",),
    "go": ("*.go",),
    "html": ("*.ejs", "*.htm", "*.html"),
    "java": ("*.java", "*.jsp", "*.jspx", "*.properties"),
    "js": ("*.js", "*.jsx", "*.vue"),
    "json": ("*.json", "composer.lock"),
    "jsonl": ("*.jsonl",),
    "julia": ("*.jl",),
    "jupyter": ("*.ipynb", "*.jpynb"),
    "kotlin": ("*.kt", "*.kts"),
    "lua": ("*.lua",),
    "make": (
        "*.mak",
        "*.mk",
        "[Gg][Nn][Uu]makefile",
        "[Gg][Nn][Uu]makefile.am",
        "[Gg][Nn][Uu]makefile.in",
        "[Mm]akefile",
        "[Mm]akefile.am",
        "[Mm]akefile.in",
    ),
    "markdown": ("*.markdown", "*.md", "*.mdown", "*.mkdn"),
    "md": ("*.markdown", "*.md", "*.mdown", "*.mkdn"),
    "php": ("*.php", "*.php3", "*.php4", "*.php5", "*.phtml"),
    "py": ("*.py", "*.pyi"),
    "r": ("*.R", "*.Rmd", "*.Rnw", "*.r"),
    "rst": ("*.rst",),
    "ruby": ("*.gemspec", "*.rb", "*.rbw", ".irbrc", "Gemfile", "Rakefile", "config.ru"),
    "rust": ("*.rs",),
    "scala": ("*.sbt", "*.scala"),
    "sh": (
        "*.bash",
        "*.bashrc",
        "*.csh",
        "*.ksh",
        "*.sh",
        "*.zsh",
        ".bash_profile",
        ".bashrc",
        ".profile",
        ".zshrc",
    ),
    "sql": ("*.psql", "*.sql"),
    "swift": ("*.swift",),
    "tex": ("*.bib", "*.cls", "*.dtx", "*.ins", "*.ltx", "*.sty", "*.tex"),
    "toml": ("*.toml", "Cargo.lock"),
    "ts": ("*.ts", "*.tsx", "*.mts", "*.cts"),
    "txt": ("*.txt",),
    "xml": (
        "*.dtd",
        "*.rng",
        "*.sch",
        "*.xhtml",
        "*.xjb",
        "*.xml",
        "*.xml.dist",
        "*.xsd",
        "*.xsl",
        "*.xslt",
    ),
    "yaml": ("*.yaml", "*.yml"),
}
FILE_TYPES["ipynb"] = FILE_TYPES["jupyter"]
FILE_TYPES["python"] = FILE_TYPES["py"]

#: Files Glob lists at most.
GLOB_MAX_RESULTS = 100
#: Characters of Grep output returned at most.
GREP_MAX_CHARS = 30_000
#: Characters shown of one matching line.
GREP_MAX_LINE_CHARS = 500
#: Lines (matches and context) Grep collects before it stops searching.
_MAX_RECORDS = 200_000
#: Bytes of ripgrep output read before it is stopped.
_MAX_RG_OUTPUT = 64 * 1024 * 1024

_T = TypeVar("_T")


async def _in_thread(func: Callable[[], _T]) -> _T:
    # A walk of a big tree must not block the event loop; an interrupt abandons it.
    return await anyio.to_thread.run_sync(func, abandon_on_cancel=True)


# --------------------------------------------------------------------------- globs


def glob_to_regex(pattern: str) -> str:
    """Translate a glob to a regular expression matching whole ``/``-separated paths.

    ``*`` and ``?`` do not cross ``/``; ``**`` as a whole path segment matches
    any number of segments (``a/**/b`` matches ``a/b``); ``[...]``/``[!...]``
    are character classes; ``{a,b}`` alternatives; ``\\`` escapes. Leading dots
    are matched by ``*`` like any other character.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if (
                pattern.startswith("**", i)
                and (i == 0 or pattern[i - 1] == "/")
                and (i + 2 == n or pattern[i + 2] == "/")
            ):
                if i + 2 == n:
                    out.append(".*")
                    i += 2
                else:
                    out.append("(?:[^/]*/)*")
                    i += 3
                continue
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end = _class_end(pattern, i)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"(?!/)[{'^' if negate else ''}{body}]")
                i = end
        elif c == "{":
            end, alternatives = _brace_alternatives(pattern, i)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append("(?:" + "|".join(glob_to_regex(a) for a in alternatives) + ")")
                i = end
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a leading ] is literal
    while j < len(pattern) and pattern[j] != "]":
        j += 1
    return j if j < len(pattern) else -1


def _brace_alternatives(pattern: str, start: int) -> tuple[int, list[str]]:
    depth = 0
    parts: list[str] = []
    current: list[str] = []
    j = start
    while j < len(pattern):
        c = pattern[j]
        if c == "\\" and j + 1 < len(pattern):
            current.append(pattern[j : j + 2])
            j += 2
            continue
        if c == "{":
            depth += 1
            if depth > 1:
                current.append(c)
        elif c == "}":
            depth -= 1
            if depth == 0:
                parts.append("".join(current))
                return j, parts
            current.append(c)
        elif c == "," and depth == 1:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        j += 1
    return -1, []


@dataclass(frozen=True)
class _GlobRule:
    """One ``--glob`` pattern, with ripgrep's (gitignore's) matching rules."""

    negate: bool
    regex: re.Pattern[str]
    dir_only: bool
    anchored: bool

    @classmethod
    def parse(cls, text: str) -> _GlobRule:
        negate = text.startswith("!")
        if negate:
            text = text[1:]
        dir_only = text.endswith("/")
        text = text.rstrip("/")
        anchored = "/" in text
        text = text.lstrip("/")
        if not text:
            raise ToolError("The glob filter contains an empty pattern.")
        return cls(negate, re.compile(glob_to_regex(text), re.DOTALL), dir_only, anchored)

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        target = rel if self.anchored else rel.rsplit("/", 1)[-1]
        return self.regex.fullmatch(target) is not None


def _split_globs(spec: str) -> list[str]:
    """Split Grep's ``glob`` on whitespace and on commas outside braces."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for c in spec:
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(depth - 1, 0)
        if (c.isspace() or (c == "," and depth == 0)) and depth == 0:
            if current:
                parts.append("".join(current))
                current = []
            continue
        current.append(c)
    if current:
        parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class _FileFilter:
    """Which files under the search root Grep searches (the same for both backends)."""

    rules: tuple[_GlobRule, ...] = ()
    type_name: str | None = None
    type_regexes: tuple[re.Pattern[str], ...] = ()
    user_globs: tuple[str, ...] = ()

    @property
    def has_whitelist(self) -> bool:
        return any(not r.negate for r in self.rules)

    def _last_match(self, rel: str, is_dir: bool) -> _GlobRule | None:
        found = None
        for rule in self.rules:
            if rule.matches(rel, is_dir):
                found = rule
        return found

    def enter_dir(self, rel: str) -> bool:
        if rel.rsplit("/", 1)[-1] in SKIP_DIRS:
            return False
        rule = self._last_match(rel, True)
        return rule is None or not rule.negate

    def select_file(self, rel: str) -> bool:
        if any(part in SKIP_DIRS for part in rel.split("/")):
            return False
        rule = self._last_match(rel, False)
        if rule is not None and rule.negate:
            return False
        if rule is None and self.has_whitelist:
            return False
        if self.type_regexes:
            name = rel.rsplit("/", 1)[-1]
            return any(r.fullmatch(name) for r in self.type_regexes)
        return True


def _make_filter(glob: str | None, type_name: str | None) -> _FileFilter:
    globs = tuple(_split_globs(glob)) if glob else ()
    rules = tuple(_GlobRule.parse(g) for g in globs)
    type_regexes: tuple[re.Pattern[str], ...] = ()
    if type_name is not None:
        key = type_name.lower()
        if key not in FILE_TYPES:
            known = ", ".join(sorted(FILE_TYPES))
            raise ToolError(
                f"Unknown file type {type_name!r}. Known types: {known}. Or use the glob parameter."
            )
        type_regexes = tuple(re.compile(glob_to_regex(g), re.DOTALL) for g in FILE_TYPES[key])
        type_name = key
    return _FileFilter(rules, type_name, type_regexes, globs)


def _walk_files(
    root: Path, enter_dir: Callable[[str], bool], select_file: Callable[[str], bool]
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Files under ``root`` as ``(relative posix path, entry)``, symlinks not followed, unreadable dirs skipped."""
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        dir_path, prefix = stack.pop()
        try:
            with os.scandir(dir_path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if enter_dir(rel):
                        subdirs.append((entry.path, rel + "/"))
                elif entry.is_file(follow_symlinks=False) and select_file(rel):
                    yield rel, entry
            except OSError:
                continue
        stack.extend(reversed(subdirs))


# --------------------------------------------------------------------------- Glob


def _split_literal_prefix(pattern: str) -> tuple[str, str]:
    """Split ``src/pkg/**/*.py`` into ``("src/pkg", "**/*.py")``: leading segments without glob syntax."""
    segments = pattern.split("/")
    literal: list[str] = []
    for i, seg in enumerate(segments[:-1]):
        if any(ch in seg for ch in "*?[{\\"):
            return "/".join(literal), "/".join(segments[i:])
        literal.append(seg)
    return "/".join(literal), segments[-1]


def _pattern_and_path(input: dict[str, Any], ctx: ToolContext) -> tuple[str, str | None, Path]:
    """The ``pattern`` and optional ``path`` inputs of Glob and Grep, checked; the folder to search."""
    pattern = require_str(input, "pattern")
    if "\x00" in pattern:
        raise ToolError("The pattern contains a NUL byte.")
    path_arg = input.get("path")
    if path_arg is not None and not isinstance(path_arg, str):
        raise ToolError("The parameter `path` must be a string.")
    return pattern, path_arg, (ctx.resolve(path_arg) if path_arg else ctx.cwd.resolve())


class GlobTool(Tool):
    """Find files by name pattern."""

    name = "Glob"
    kind = "read"
    description = (
        "- Fast file pattern matching tool that works with any codebase size\n"
        '- Supports glob patterns like "**/*.js" or "src/**/*.ts" (also `?`, `[abc]` and `{a,b}`)\n'
        "- Returns absolute paths of matching files sorted by modification time, newest first "
        f"(at most {GLOB_MAX_RESULTS})\n"
        "- A pattern without `/` matches only in the search directory itself; use `**/` to search subdirectories\n"
        "- Skips .git, node_modules and .ipynb_checkpoints directories\n"
        "- Use this tool when you need to find files by name patterns\n"
        "- You can call multiple tools in a single response. It is always better to speculatively perform "
        "multiple searches in parallel if they are potentially useful."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "The glob pattern to match files against"},
            "path": {
                "type": "string",
                "description": "The directory to search in. If not specified, the current working directory will "
                "be used. IMPORTANT: Omit this field to use the default directory. Must be a valid directory path "
                "if provided.",
            },
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        pattern, path_arg, base = _pattern_and_path(input, ctx)

        pattern = pattern.replace(os.sep, "/") if os.sep != "/" else pattern
        if pattern.startswith("/"):
            base = Path("/")
            pattern = pattern.lstrip("/")
        prefix, rest = _split_literal_prefix(pattern)
        if prefix:
            base = (base / prefix).resolve()
        if not base.is_dir():
            if path_arg and not ctx.resolve(path_arg).exists():
                raise ToolError(f"Directory does not exist: {ctx.resolve(path_arg)}")
            if path_arg and not ctx.resolve(path_arg).is_dir():
                raise ToolError(f"{ctx.resolve(path_arg)} is not a directory.")
            return ToolResult("No files found", summary="0 files", data={"num_files": 0})
        regex = re.compile(glob_to_regex(rest), re.DOTALL)
        max_depth = None if "**" in rest else rest.count("/") + 1

        def enter(rel: str) -> bool:
            if rel.rsplit("/", 1)[-1] in SKIP_DIRS:
                return False
            return max_depth is None or rel.count("/") + 1 < max_depth

        def find() -> list[tuple[float, str]]:
            found: list[tuple[float, str]] = []
            for rel, entry in _walk_files(
                base, enter, lambda rel: regex.fullmatch(rel) is not None
            ):
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                found.append((mtime, str(base / rel)))
            found.sort(key=lambda t: (-t[0], t[1]))
            return found

        found = await _in_thread(find)
        if not found:
            return ToolResult("No files found", summary="0 files", data={"num_files": 0})
        shown = [p for _, p in found[:GLOB_MAX_RESULTS]]
        text = "\n".join(shown)
        if len(found) > GLOB_MAX_RESULTS:
            text += (
                f"\n(Results are truncated: showing {GLOB_MAX_RESULTS} of {len(found)} files, newest first. "
                "Use a more specific path or pattern.)"
            )
        n = len(found)
        return ToolResult(text, summary=f"{n} file{'' if n == 1 else 's'}", data={"num_files": n})


# --------------------------------------------------------------------------- Grep: shared


OutputMode = Literal["content", "files_with_matches", "count"]


@dataclass
class _FileHits:
    """What one file contributed: matching lines (and context lines in content mode)."""

    path: str  # absolute
    matching: set[int] = field(default_factory=set)
    lines: dict[int, tuple[str, bool]] = field(
        default_factory=dict
    )  # line number -> (text, is_match)


@dataclass(frozen=True)
class _Query:
    pattern: str
    root: Path
    root_is_file: bool
    filter: _FileFilter
    mode: OutputMode
    ignore_case: bool
    multiline: bool
    before: int
    after: int


@dataclass
class _SearchResult:
    hits: list[_FileHits]
    stopped_early: bool = False


def _display_line(text: str) -> str:
    text = text.removesuffix("\r")
    if len(text) > GREP_MAX_LINE_CHARS:
        return text[:GREP_MAX_LINE_CHARS] + f"… [line truncated: {len(text)} characters]"
    return text


def _path_key(path: str) -> tuple[str, ...]:
    return Path(path).parts


def _format(
    result: _SearchResult, query: _Query, head_limit: int | None, line_numbers: bool
) -> ToolResult:
    hits = [h for h in result.hits if h.matching]
    notes: list[str] = []
    if query.mode == "files_with_matches":

        def mtime(h: _FileHits) -> float:
            try:
                return Path(h.path).stat().st_mtime
            except OSError:
                return 0.0

        hits.sort(key=lambda h: (-mtime(h), _path_key(h.path)))
        entries = [h.path for h in hits]
    else:
        hits.sort(key=lambda h: _path_key(h.path))
        entries = []
        if query.mode == "count":
            entries = [f"{h.path}:{len(h.matching)}" for h in hits]
        else:
            separate = query.before > 0 or query.after > 0
            for h in hits:
                prev: int | None = None
                for n in sorted(h.lines):
                    text, is_match = h.lines[n]
                    if separate and entries and (prev is None or n != prev + 1):
                        entries.append("--")
                    sep = ":" if is_match else "-"
                    number = f"{n}{sep}" if line_numbers else ""
                    entries.append(f"{h.path}{sep}{number}{_display_line(text)}")
                    prev = n

    total_matches = sum(len(h.matching) for h in hits)
    if not hits:
        text = "No files found" if query.mode == "files_with_matches" else "No matches found"
        if result.stopped_early:
            text += " (the search stopped early)"
        return ToolResult(text, summary="no matches", data={"num_files": 0, "num_matches": 0})

    if head_limit is not None and len(entries) > head_limit:
        notes.append(f"[head_limit: showing the first {head_limit} of {len(entries)} entries]")
        entries = entries[:head_limit]
    body_lines: list[str] = []
    size = 0
    for i, entry in enumerate(entries):
        size += len(entry) + 1
        if size > GREP_MAX_CHARS:
            notes.append(
                f"[output truncated: {len(entries) - i} more entries not shown; narrow the search "
                "(path, glob, type) or use head_limit]"
            )
            break
        body_lines.append(entry)
    if result.stopped_early:
        notes.append("[the search stopped early because there were too many results; narrow it]")

    n_files = len(hits)
    files_word = f"{n_files} file{'' if n_files == 1 else 's'}"
    if query.mode == "files_with_matches":
        text = f"Found {files_word}\n" + "\n".join(body_lines)
        summary = files_word
    elif query.mode == "count":
        text = (
            "\n".join(body_lines) + f"\n\nFound {total_matches} matching lines across {files_word}."
        )
        summary = f"{total_matches} matches in {files_word}"
    else:
        text = "\n".join(body_lines)
        summary = f"{total_matches} matching lines in {files_word}"
    if notes:
        text += "\n" + "\n".join(notes)
    data: dict[str, Any] = {"num_files": n_files}
    if query.mode != "files_with_matches":
        data["num_matches"] = total_matches
    return ToolResult(text, summary=summary, data=data)


def _open_text(path: str) -> Any:
    with open(path, "rb") as f:
        head = f.read(3)
    codec = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    return open(path, encoding=codec, errors="replace", newline="\n")


def _search_file_python(path: str, regex: re.Pattern[str], query: _Query) -> _FileHits | None:
    """Search one file with Python ``re``; None for no match, unreadable or binary files."""
    want_lines = query.mode == "content"
    stop_at_first = query.mode == "files_with_matches"
    hits = _FileHits(path)
    try:
        with _open_text(path) as f:
            if query.multiline:
                text = f.read()
                if "\x00" in text:
                    return None
                _multiline_hits(text, regex, query, hits, want_lines)
                return hits if hits.matching else None
            before: deque[tuple[int, str]] = deque(maxlen=query.before or 1)
            after_left = 0
            for lineno, line in enumerate(f, 1):
                if "\x00" in line:
                    return None
                text = line[:-1] if line.endswith("\n") else line
                if regex.search(text):
                    hits.matching.add(lineno)
                    if stop_at_first:
                        return hits
                    if want_lines:
                        if query.before:
                            for n, t in before:
                                hits.lines.setdefault(n, (t, False))
                        hits.lines[lineno] = (text, True)
                        after_left = query.after
                elif want_lines and after_left > 0:
                    hits.lines.setdefault(lineno, (text, False))
                    after_left -= 1
                if query.before:
                    before.append((lineno, text))
    except (OSError, UnicodeError):
        return None
    return hits if hits.matching else None


def _multiline_hits(
    text: str, regex: re.Pattern[str], query: _Query, hits: _FileHits, want_lines: bool
) -> None:
    starts = [0]
    starts.extend(m.end() for m in re.finditer("\n", text))
    lines = text.split("\n")
    n_lines = len(lines) - (1 if text.endswith("\n") or text == "" else 0)

    def line_of(pos: int) -> int:
        return bisect.bisect_right(starts, pos)

    for m in regex.finditer(text):
        s, e = m.span()
        if s == e:
            if s >= len(text) and (text == "" or text.endswith("\n")):
                continue  # the empty "line" after a final newline is not a line
            hits.matching.add(line_of(s))
        else:
            hits.matching.update(range(line_of(s), line_of(e - 1) + 1))
        if query.mode == "files_with_matches":
            return
    if want_lines:
        for n in sorted(hits.matching):
            hits.lines[n] = (lines[n - 1], True)
            for c in range(max(1, n - query.before), min(n_lines, n + query.after) + 1):
                if c not in hits.matching:
                    hits.lines.setdefault(c, (lines[c - 1], False))


def _search_python(query: _Query) -> _SearchResult:
    flags = (
        re.MULTILINE
        | (re.IGNORECASE if query.ignore_case else 0)
        | (re.DOTALL if query.multiline else 0)
    )
    try:
        regex = re.compile(query.pattern, flags)
    except re.error as e:
        raise ToolError(f"Invalid regular expression: {e}.") from None
    except (OverflowError, RecursionError):
        raise ToolError("The regular expression is too complex.") from None
    result = _SearchResult([])
    records = 0
    if query.root_is_file:
        files: Iterator[str] = iter([os.fspath(query.root)])
    else:
        files = (
            entry.path
            for _, entry in _walk_files(
                query.root, query.filter.enter_dir, query.filter.select_file
            )
        )
    for path in files:
        found = _search_file_python(path, regex, query)
        if found is None:
            continue
        result.hits.append(found)
        records += max(len(found.lines), len(found.matching))
        if records > _MAX_RECORDS:
            result.stopped_early = True
            break
    return result


# --------------------------------------------------------------------------- Grep: ripgrep


def _rg_text(obj: Mapping[str, Any] | None) -> str:
    if not obj:
        return ""
    if "text" in obj:
        return str(obj["text"])
    try:
        return base64.b64decode(obj.get("bytes", "")).decode("utf-8", "replace")
    except (ValueError, TypeError):
        return ""


def _rg_path(obj: Mapping[str, Any] | None) -> str:
    if not obj:
        return ""
    if "text" in obj:
        return str(obj["text"])
    try:
        return os.fsdecode(base64.b64decode(obj.get("bytes", "")))
    except (ValueError, TypeError):
        return ""


def _rg_args(rg: str, query: _Query) -> tuple[list[str], str]:
    args = [rg, "--no-config", "--hidden", "--no-ignore", "--no-messages", "--color", "never"]
    if query.ignore_case:
        args.append("-i")
    if query.multiline:
        args += ["-U", "--multiline-dotall"]
    if query.filter.type_name is not None:
        # Narrows what rg reads; the exact glob-and-type rule is applied to its results afterwards.
        for g in FILE_TYPES[query.filter.type_name]:
            args += ["--type-add", f"agentmagic:{g}"]
        args += ["--type", "agentmagic"]
    for g in query.filter.user_globs:
        args += ["--glob", g]
    for name in sorted(SKIP_DIRS):
        args += ["--glob", f"!{name}"]
    if query.mode == "files_with_matches":
        args += ["--files-with-matches", "--null"]
    else:
        args.append("--json")
        if query.mode == "content":
            args += ["-A", str(query.after), "-B", str(query.before)]
    if query.root_is_file:
        args += ["-e", query.pattern, "--", os.fspath(query.root)]
        return args, os.fspath(query.root.parent)
    args += ["-e", query.pattern, "--", "."]
    return args, os.fspath(query.root)


async def _search_rg(rg: str, query: _Query) -> _SearchResult:
    args, cwd = _rg_args(rg, query)
    out = bytearray()
    err = bytearray()
    stopped = False
    async with await anyio.open_process(args, cwd=cwd, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None and proc.stderr is not None

        async def drain_stderr(stream: anyio.abc.ByteReceiveStream) -> None:
            async for chunk in stream:
                if len(err) < 65536:
                    err.extend(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_stderr, proc.stderr)
            async for chunk in proc.stdout:
                out.extend(chunk)
                if len(out) > _MAX_RG_OUTPUT:
                    stopped = True
                    proc.kill()
                    break
        code = await proc.wait()
    if code == 2 and not stopped:
        message = err.decode("utf-8", "replace").strip()
        raise ToolError(f"ripgrep failed: {message[:1000] or 'exit status 2'}")
    root = Path(cwd)

    def absolute(p: str) -> str:
        p = p.removeprefix("./")
        return p if Path(p).is_absolute() else str(root / p)

    def selected(p: str) -> bool:
        if query.root_is_file:
            return True
        rel = os.path.relpath(p, root).replace(os.sep, "/")
        return query.filter.select_file(rel)

    result = _SearchResult([], stopped_early=stopped)
    if query.mode == "files_with_matches":
        for raw in bytes(out).split(b"\x00"):
            if raw:
                p = absolute(os.fsdecode(raw))
                if selected(p):
                    result.hits.append(_FileHits(p, matching={1}))
        return result

    by_path: dict[str, _FileHits] = {}
    for raw_line in bytes(out).splitlines():
        try:
            event = json.loads(raw_line)
        except ValueError:
            continue  # a line cut off when rg was stopped
        kind = event.get("type")
        if kind not in ("match", "context"):
            continue
        data = event.get("data") or {}
        p = absolute(_rg_path(data.get("path")))
        first = data.get("line_number")
        if not isinstance(first, int):
            continue
        hits = by_path.get(p)
        if hits is None:
            if not selected(p):
                continue
            hits = by_path[p] = _FileHits(p)
        text = _rg_text(data.get("lines"))
        parts = text.split("\n")
        if text.endswith("\n"):
            parts.pop()
        for k, line in enumerate(parts):
            n = first + k
            if kind == "match":
                hits.matching.add(n)
                hits.lines[n] = (line, True)
            else:
                hits.lines.setdefault(n, (line, False))
    result.hits = list(by_path.values())
    return result


# --------------------------------------------------------------------------- Grep: the tool

_ESCAPED_NEWLINE = re.compile(r"(?<!\\)(?:\\\\)*\\n")


def _bool(input: dict[str, Any], key: str, default: bool) -> bool:
    value = input.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ToolError(f"The parameter `{key}` must be true or false.")
    return value


def _looks_binary_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    return b"\x00" in head


class GrepTool(Tool):
    """Search file contents with a regular expression."""

    name = "Grep"
    kind = "read"
    description = (
        "A powerful search tool built on ripgrep\n\n"
        "Usage:\n"
        "- ALWAYS use Grep for search tasks. NEVER invoke `grep` or `rg` as a Bash command.\n"
        '- Supports full regex syntax (e.g., "log.*Error", "function\\s+\\w+")\n'
        '- Filter files with glob parameter (e.g., "*.js", "**/*.tsx") or type parameter (e.g., "js", "py", "rust")\n'
        '- Output modes: "content" shows matching lines, "files_with_matches" shows only file paths (default), '
        '"count" shows match counts\n'
        "- Pattern syntax: Uses ripgrep (not grep) - literal braces need escaping (use `interface\\{\\}` to find "
        "`interface{}` in Go code). When ripgrep is not installed, Python's `re` syntax is used.\n"
        "- Multiline matching: By default patterns match within single lines only. For cross-line patterns like "
        "`struct \\{[\\s\\S]*?field`, use `multiline: true`\n"
        "- Searches hidden files too, but not .git, node_modules or .ipynb_checkpoints; .gitignore is not applied; "
        "binary files are skipped."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "pattern": {
                "type": "string",
                "description": "The regular expression pattern to search for in file contents",
            },
            "path": {
                "type": "string",
                "description": "File or directory to search in (rg PATH). Defaults to current working directory.",
            },
            "glob": {
                "type": "string",
                "description": 'Glob pattern to filter files (e.g. "*.js", "*.{ts,tsx}") - maps to rg --glob',
            },
            "output_mode": {
                "type": "string",
                "enum": ["content", "files_with_matches", "count"],
                "description": 'Output mode: "content" shows matching lines (supports -A/-B/-C context, -n line '
                'numbers, head_limit), "files_with_matches" shows file paths (supports head_limit), "count" shows '
                'match counts (supports head_limit). Defaults to "files_with_matches".',
            },
            "-B": {
                "type": "integer",
                "description": 'Number of lines to show before each match (rg -B). Requires output_mode: "content", '
                "ignored otherwise.",
            },
            "-A": {
                "type": "integer",
                "description": 'Number of lines to show after each match (rg -A). Requires output_mode: "content", '
                "ignored otherwise.",
            },
            "-C": {
                "type": "integer",
                "description": "Number of lines to show before and after each match (rg -C). Requires output_mode: "
                '"content", ignored otherwise.',
            },
            "-n": {
                "type": "boolean",
                "description": 'Show line numbers in output (rg -n). Requires output_mode: "content", ignored '
                "otherwise. Defaults to true.",
            },
            "-i": {"type": "boolean", "description": "Case insensitive search (rg -i)"},
            "type": {
                "type": "string",
                "description": "File type to search (rg --type). Common types: py, js, ts, rust, go, java, md, json, "
                "jupyter, etc. More efficient than glob for standard file types.",
            },
            "head_limit": {
                "type": "integer",
                "description": 'Limit output to first N lines/entries, equivalent to "| head -N". Works across all '
                "output modes. Defaults to no limit (0).",
            },
            "multiline": {
                "type": "boolean",
                "description": "Enable multiline mode where . matches newlines and patterns can span lines "
                "(rg -U --multiline-dotall). Default: false.",
            },
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    def __init__(self, backend: Literal["auto", "rg", "python"] = "auto") -> None:
        self.backend = backend

    def _ripgrep(self) -> str | None:
        if self.backend == "python":
            return None
        rg = shutil.which("rg")
        if rg is None and self.backend == "rg":
            raise ToolError("ripgrep (rg) is not installed.")
        return rg

    async def run(self, input: dict[str, Any], ctx: ToolContext) -> ToolResult:
        pattern, _, root = _pattern_and_path(input, ctx)
        glob = input.get("glob")
        if glob is not None and (not isinstance(glob, str) or "\x00" in glob):
            raise ToolError("The parameter `glob` must be a string.")
        type_name = input.get("type")
        if type_name is not None and not isinstance(type_name, str):
            raise ToolError("The parameter `type` must be a string.")
        mode = input.get("output_mode") or "files_with_matches"
        if mode not in ("content", "files_with_matches", "count"):
            raise ToolError(
                f"output_mode must be content, files_with_matches or count; got {mode!r}."
            )
        ignore_case = _bool(input, "-i", False)
        multiline = _bool(input, "multiline", False)
        line_numbers = _bool(input, "-n", True)
        context = optional_int(input, "-C", minimum=0) or 0
        after = optional_int(input, "-A", minimum=0)
        before = optional_int(input, "-B", minimum=0)
        head_limit = optional_int(input, "head_limit", minimum=0) or None
        if mode != "content":
            after = before = context = 0
        if not multiline and ("\n" in pattern or _ESCAPED_NEWLINE.search(pattern)):
            raise ToolError(
                "The pattern matches a line break; set multiline to true to search across lines."
            )

        try:
            exists = root.exists()
            is_file = root.is_file()
            is_dir = root.is_dir()
        except OSError as e:
            raise ToolError(f"Cannot access {root}: {e.strerror or e}.") from None
        if not exists:
            raise ToolError(f"Path does not exist: {root}")
        if not is_file and not is_dir:
            raise ToolError(f"{root} is not a regular file or directory.")
        query = _Query(
            pattern=pattern,
            root=root,
            root_is_file=is_file,
            filter=_make_filter(glob or None, type_name or None),
            mode=cast(OutputMode, mode),
            ignore_case=ignore_case,
            multiline=multiline,
            before=before if before is not None else context,
            after=after if after is not None else context,
        )
        if is_file and _looks_binary_file(root):
            return ToolResult(f"No matches found ({root} is a binary file)", summary="binary file")

        rg = self._ripgrep()
        if rg is not None:
            result = await _search_rg(rg, query)
        else:
            result = await _in_thread(lambda: _search_python(query))
        tool_result = _format(result, query, head_limit, line_numbers)
        tool_result.data["backend"] = "rg" if rg is not None else "python"
        return tool_result
