"""Project memory: ``AGENTS.md`` / ``CLAUDE.md`` files loaded into the system prompt.

``setting_sources`` (the Agent SDK's name) says where from:

- ``"user"``: the user's config folder (``$AGENT_MAGIC_CONFIG_DIR``, else the per-user
  config directory, e.g. ``~/.config/agent-magic``);
- ``"project"``: the working directory and each of its parents, outermost first, so the
  nearest file has the last word;
- ``"local"``: ``CLAUDE.local.md`` in the same folders (a person's notes not meant for the repo).

A file is read again only when its size or mtime changes, so a notebook that edits its
``AGENTS.md`` between turns sends the new text with the next turn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Characters kept of one memory file; the rest is cut with a note (a runaway file must not fill the window).
MAX_MEMORY_CHARS = 40_000
PROJECT_FILES = ("AGENTS.md", "CLAUDE.md")
LOCAL_FILES = ("CLAUDE.local.md",)


@dataclass(frozen=True)
class MemoryFile:
    """One memory file as loaded: where it is, which source found it, its text (possibly cut)."""

    path: Path
    source: str
    text: str
    size: int
    mtime_ns: int


def user_config_dir() -> Path:
    """The folder user memory is read from."""
    env = os.environ.get("AGENT_MAGIC_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("agent-magic", appauthor=False))


def _folders(cwd: Path) -> list[Path]:
    """``cwd`` and its parents, outermost first."""
    cwd = cwd.resolve()
    return [*reversed(cwd.parents), cwd]


def _candidates(cwd: Path, sources: Sequence[str]) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    if "user" in sources:
        out += [(user_config_dir() / name, "user") for name in PROJECT_FILES]
    for folder in _folders(cwd):
        if "project" in sources:
            out += [(folder / name, "project") for name in PROJECT_FILES]
        if "local" in sources:
            out += [(folder / name, "local") for name in LOCAL_FILES]
    return out


def find_memory_files(cwd: Path, sources: Sequence[str]) -> list[MemoryFile]:
    """The memory files ``sources`` name for ``cwd``, in the order they go into the prompt.

    Parameters
    ----------
    cwd
        The agent's working directory.
    sources
        Any of ``"user"``, ``"project"``, ``"local"``.

    Returns
    -------
    list of MemoryFile
        Files that exist and could be read (an unreadable one is skipped); empty files are left out.
    """
    found: list[MemoryFile] = []
    seen: set[Path] = set()
    for path, source in _candidates(cwd, sources):
        try:
            real = path.resolve()
            if real in seen or not real.is_file():
                continue
            st = real.stat()
            raw = real.read_bytes()
        except OSError:
            continue
        seen.add(real)
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        if len(text) > MAX_MEMORY_CHARS:
            text = text[:MAX_MEMORY_CHARS] + f"\n[... {len(text) - MAX_MEMORY_CHARS} more characters of {path.name} not loaded ...]"
        found.append(MemoryFile(path=path, source=source, text=text, size=st.st_size, mtime_ns=st.st_mtime_ns))
    return found


def signature(cwd: Path, sources: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """What a reload would depend on: each candidate's (path, size, mtime); cheap stat calls only."""
    sig: list[tuple[str, int, int]] = []
    for path, _source in _candidates(cwd, sources):
        try:
            st = path.stat()
        except OSError:
            continue
        sig.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(sig)


def memory_prompt(files: Sequence[MemoryFile]) -> str:
    """The system prompt section that carries ``files`` (empty when there are none)."""
    if not files:
        return ""
    parts = [
        "The person keeps instructions for you in these memory files. Follow them; the later "
        "(closer to the working directory) file wins where they disagree."
    ]
    for f in files:
        parts.append(f'<memory source="{f.source}" path="{f.path}">\n{f.text}\n</memory>')
    return "\n\n".join(parts)
