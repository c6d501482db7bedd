"""Bad input: what the fuzz and table-driven tests try, shared with ``bench/reliability.py``.

Every case either works or fails with a clear, expected error, and leaves
stored data intact. The pieces:

- magic argument strings (:data:`LINE_WORDS`, :data:`CELL_WORDS`, :data:`VALUES`,
  :func:`random_argument_line`) and :func:`run_magic`, which allows only
  ``UsageError`` (and ``AgentTurnError`` for a turn that failed);
- transcript corruption (:func:`corrupt`, :func:`check_corrupted_session`):
  damaged lines are skipped with a ``TranscriptWarning``, every other line is
  read, the session resumes with a valid conversation, and nothing else is lost;
- tables of bad tool inputs, bad notebooks, bad API replies and bad bundles
  (:data:`TOOL_CASES`, :data:`NOTEBOOK_CASES`, :data:`API_CASES`, :data:`BUNDLE_CASES`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from agent_magic import (
    AgentClient,
    AgentOptions,
    BundleError,
    ResultMessage,
    SessionExistsError,
    ToolError,
)
from agent_magic.store.jsonl import TranscriptWarning, parse_lines, read_raw_lines
from agent_magic.store.local import SessionStore
from agent_magic.testing import (
    FakeAnthropicServer,
    error,
    raw,
    raw_tool_block,
    stream_error,
    text,
    tool_use,
    truncated,
)
from agent_magic.testing import message as message_reply
from agent_magic.testing._validate import check_messages_request
from agent_magic.tools.base import ToolContext

from ..conftest import tree_snapshot
from .crash import notebook_with_outputs

# ---------------------------------------------------------------------------
# Magic arguments
# ---------------------------------------------------------------------------

LINE_WORDS = [
    "sessions", "resume", "continue", "new", "fork", "history", "info", "checkpoints", "rewind", "model",
    "permissions", "export", "import", "rename", "delete", "stop", "help", "--all", "--at", "--turn", "--dry-run",
    "--force", "--conversation", "--session", "--as", "-h", "--help", "--bogus", "-x",
]
CELL_WORDS = [
    "--new", "--resume", "--fork", "--session-id", "--model", "--max-turns", "--max-budget-usd", "--permission-mode",
    "--allow", "--deny", "--with", "--no-persist", "--quiet", "-h", "--help", "--bogus",
]
#: Values with quotes, escapes, numbers argparse chokes on, unicode; no "/" or "~": paths stay in the cwd.
VALUES = [
    "0", "-1", "3", "1e309", "nan", "inf", "-inf", "abc", "''", '""', "'unbalanced", '"x', "\\", "$x", "{x}", "{{x}}",
    "éè", "\u202e", "\x00", "x" * 300, "acceptEdits", "bypassPermissions", "plan", "Bash(*)", "'a b'", "--",
    "=", "--max-turns=2", "cell-1", "0000", "....", "..", ".", "*", "x.zip", "\t", "\u3000",
]


#: Table-driven argument strings: %agent with no session, with one (``{sid}``, ``{sid4}``, ``{cp}``
#: filled in), and %%agent options.
NASTY_LINES = [
    "'unbalanced", '"also', "rewind --turn x", "rewind --turn 99", "rewind --turn -1", "rewind abcd --turn 1",
    "resume \x00\x00\x00\x00", "resume ....", "resume ../..", "fork --at zzzz", "history ''", "info \u202e\u202e\u202e\u202e",
    "export abcd", "export abcd out.zip", "import missing.zip", "import .", "import ''", "rename", "rename '   '",
    "delete", "delete ''", "permissions explode", "model", "model '' ''", "checkpoints --bogus", "sessions --all --all",
    "--", "-", "help me", "%agent", "new extra", "stop now", "\\", "$x", "{x}",
]

NASTY_LINES_WITH_A_SESSION = [
    "export {sid} \x00", "export {sid} ''", "export {sid} .", "export {sid} missing-folder/x.zip", "import \x00",
    "fork {sid} --at \x00\x00\x00\x00", "fork {sid} --turn 0", "fork {sid} --turn 99", "rewind --turn 1 --session {sid}",
    "rewind --turn 1 --dry-run", "rewind {cp} --force", "rewind {cp} --conversation", "rename --session {sid} \x00",
    "rename --session {sid} '\u202e'", "resume {sid4}", "history {sid4}", "info {sid}", "checkpoints {sid}",
    "delete {sid4}", "sessions --all",
]

NASTY_CELL_LINES = [
    "--max-turns 0", "--max-turns -3", "--max-turns x", "--max-budget-usd -1", "--max-budget-usd nan",
    "--max-budget-usd inf", "--permission-mode sudo", "--session-id ../x", "--session-id ''", "--resume",
    "--resume 00000000", "--new --resume abcd", "--fork", "--with nothing_here", "--model ''", "'unbalanced",
    "--allow", "--deny 'Bash('", "--quiet --quiet", "extra positional",
]


def random_argument_line(rng: random.Random, words: list[str]) -> str:
    """A random argument string made of ``words`` and :data:`VALUES`."""
    n = rng.randint(0, 6)
    return " ".join(rng.choice(words if rng.random() < 0.5 else VALUES) for _ in range(n))


def run_magic(shell: Any, line: str, cell: str | None = None) -> str:
    """Run ``%agent line`` (or ``%%agent line`` with ``cell``); only a UsageError may come out.

    Returns ``"ok"``, ``"usage"`` (a UsageError) or ``"turn"`` (a %%agent turn that failed,
    shown as one line). Any other exception propagates: it is a bug.
    """
    from IPython.core.error import UsageError

    from agent_magic.notebook._magics import AgentTurnError

    try:
        if cell is None:
            shell.run_line_magic("agent", line)
        else:
            shell.run_cell_magic("agent", line, cell)
    except UsageError as e:
        assert str(e).strip() or line.strip() in ("-h", "--help"), f"an empty UsageError for {line!r}"
        return "usage"
    except AgentTurnError:
        if cell is None:
            raise
        return "turn"
    return "ok"


@contextmanager
def magic_shell(workdir: Path) -> Iterator[Any]:
    """An in-process IPython shell with the extension loaded, its cwd ``workdir`` (as the tests' ``ip``)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from agent_magic.notebook import state

    old_cwd = Path.cwd()
    os.chdir(workdir)
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=cfg)
    shell.run_line_magic("load_ext", "agent_magic")
    try:
        yield shell
    finally:
        if state(shell) is not None:
            shell.run_line_magic("unload_ext", "agent_magic")
        InteractiveShell.clear_instance()
        os.chdir(old_cwd)


# ---------------------------------------------------------------------------
# Sessions to damage
# ---------------------------------------------------------------------------


def query_once(prompt: str, **options: Any) -> list[Any]:
    async def go() -> list[Any]:
        out = []
        async with AgentClient(AgentOptions(**options)) as client:
            await client.query(prompt)
            async for m in client.receive_response():
                out.append(m)
        return out

    return anyio.run(go)


def make_session(home: Path, cwd: Path, server: FakeAnthropicServer) -> str:
    """A session of three turns: Write and Read, a notebook edit, Bash."""
    (cwd / "nb.ipynb").write_text(json.dumps(notebook_with_outputs()))
    server.add(
        tool_use("Write", {"file_path": str(cwd / "a.txt"), "content": "one\ntwo\n"}),
        tool_use("Read", {"file_path": str(cwd / "a.txt")}),
        text("Wrote a.txt."),
    )
    first = query_once("write a file", cwd=cwd, home=home, permission_mode="bypassPermissions")
    sid = first[-1].session_id
    server.add(
        tool_use("Read", {"file_path": str(cwd / "nb.ipynb")}),
        tool_use("NotebookEdit", {"notebook_path": str(cwd / "nb.ipynb"), "cell_id": "c1", "new_source": "x = 1"}),
        text("Edited the notebook."),
    )
    query_once("edit the notebook", resume=sid, home=home, permission_mode="bypassPermissions")
    server.add(tool_use("Bash", {"command": "printf b > b.txt"}), text("Ran a command."))
    query_once("run a command", resume=sid, home=home, permission_mode="bypassPermissions")
    return str(sid)


#: Lines that are valid JSON objects of the wrong shape (the reader must not crash on them).
WEIRD_LINES: list[Any] = [
    {"type": "user", "message": [1, 2]},
    {"type": "user", "message": "text"},
    {"type": "user", "uuid": {"a": 1}, "message": {"content": [{"type": "tool_result"}]}},
    {"type": "assistant", "message": {"content": "not a list"}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": 5, "name": None, "input": [1]}]}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t", "name": "Write", "input": [1]}]}},
    {"type": "assistant", "message": {"content": [{"type": "text"}]}},
    {"type": "result", "checkpoint": [1], "no_response": True, "total_cost_usd": "1"},
    {"type": "result", "checkpoint": None, "cost_unknown": 1},
    {"type": "session", "cwd": 5, "scope": [], "timestamp": 7, "model": {"x": 1}, "parent_session_id": 3},
    {"type": "user", "is_prompt": True, "timestamp": 12, "message": {"content": None}},
    {"type": 7},
    {},
    {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": 5}, "x", None]}},
    {"type": "user", "is_prompt": False, "message": {"content": [{"type": "tool_result", "tool_use_id": "nope", "content": {}}]}},
]


def corrupt(lines: list[bytes], ops: list[tuple[int, str]], cut: int | None = None) -> tuple[bytes, list[int]]:
    """Damage ``lines``: ``ops`` are (line index, kind); ``cut`` truncates the file that many bytes from its end.

    Kinds: ``flip`` (a byte changed), ``half`` (cut mid-line), ``garbage`` (a line of junk inserted
    before), ``nul``, ``utf8`` (invalid UTF-8), ``weird:<k>`` (a valid JSON object of the wrong
    shape replaces it), ``blank``, ``dup`` (the line twice).
    Returns the new bytes and the indices of the lines left untouched.
    """
    out: list[bytes] = []
    touched: set[int] = set()
    by_line: dict[int, list[str]] = {}
    for i, kind in ops:
        by_line.setdefault(i % len(lines), []).append(kind)
    for i, line in enumerate(lines):
        kinds = by_line.get(i, [])
        body = line.rstrip(b"\n")
        for kind in kinds:
            if kind == "garbage":
                out.append(b"\x00\xffgarbage{{{\n")
                continue
            touched.add(i)
            if kind == "flip" and body:
                k = (len(body) * 7) // 13
                body = body[:k] + bytes([body[k] ^ 0x5A]) + body[k + 1 :]
            elif kind == "half":
                body = body[: len(body) // 2]
            elif kind == "nul":
                body = body[:5] + b"\x00" + body[5:]
            elif kind == "utf8":
                body = body[:3] + b"\xc3\x28\xff" + body[3:]
            elif kind.startswith("weird:"):
                body = json.dumps(WEIRD_LINES[int(kind[6:]) % len(WEIRD_LINES)]).encode()
            elif kind == "blank":
                body = b"   "
            elif kind == "dup":
                out.append(body + b"\n")
        out.append(body + b"\n")
    data = b"".join(out)
    if cut:
        last_len = len(data) - (data[:-1].rfind(b"\n") + 1)  # the last line as damaged, with its newline
        cut = min(cut, last_len - 1)
        if cut > 0:
            data = data[:-cut]
            touched.add(len(lines) - 1)
    untouched = [i for i in range(len(lines)) if i not in touched]
    return data, untouched


def random_ops(rng: random.Random, n_lines: int) -> tuple[list[tuple[int, str]], int | None]:
    kinds = ["flip", "half", "garbage", "nul", "utf8", "blank", "dup"] + [f"weird:{k}" for k in range(len(WEIRD_LINES))]
    ops = [(rng.randrange(n_lines), rng.choice(kinds)) for _ in range(rng.randint(1, 4))]
    cut = rng.randint(1, 200) if rng.random() < 0.3 else None
    return ops, cut


def check_corrupted_session(
    pristine_home: Path, work: Path, sid: str, cwd: Path, server: FakeAnthropicServer,
    ops: list[tuple[int, str]], cut: int | None,
) -> int:
    """Damage a copy of a session's transcript; check reads, listing, resume and that nothing else is lost.

    Returns the number of lines the reader skipped. Raises AssertionError on a problem.
    """
    from agent_magic import get_session_info, get_session_messages, list_checkpoints, list_sessions

    home = work / "store"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(pristine_home, home)
    path = home / "sessions" / sid / "transcript.jsonl"
    original = path.read_bytes().splitlines(keepends=True)
    data, untouched = corrupt(original, ops, cut)
    path.write_bytes(data)
    os.chmod(path, 0o600)
    SessionStore.forget_instances()
    skipped = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = SessionStore.at(home)
        entries = store.read_entries(sid)
        list_sessions(home=home)
        get_session_info(sid, home=home)
        get_session_messages(sid, home=home)
        list_checkpoints(sid, home=home)
        want = [json.loads(original[i]) for i in untouched]
        it = iter(entries)
        assert all(any(w == e for e in it) for w in want), "an untouched line was not read back"
        n_before = len(server.message_requests)
        server.add(text("Still here."))
        msgs = query_once("after the damage", resume=sid, home=home, cwd=cwd, permission_mode="bypassPermissions")
        result = msgs[-1]
        assert isinstance(result, ResultMessage) and result.subtype == "success", result
        # The fake server refuses what the API refuses (testing/_validate.py): the success
        # above means the repaired conversation was valid; say why if it was not.
        sent = server.message_requests[n_before]
        body = sent.body or {}
        betas = [b.strip() for b in sent.headers.get("anthropic-beta", "").split(",") if b.strip()]
        problem = check_messages_request(body, betas)
        assert problem is None, f"the resumed conversation is invalid: {problem}"
    for w in caught:
        assert issubclass(w.category, TranscriptWarning), f"unexpected warning {w.category.__name__}: {w.message}"
        skipped += 1
    after = path.read_bytes().splitlines(keepends=True)
    it2 = iter(after)
    assert all(any(original[i] == line for line in it2) for i in untouched), "an untouched line was lost on resume"
    SessionStore.forget_instances()
    return skipped


# ---------------------------------------------------------------------------
# Bad tool inputs
# ---------------------------------------------------------------------------


def _run_tool(tool: Any, inp: dict[str, Any], ctx: ToolContext) -> Any:
    return anyio.run(tool.run, inp, ctx)


def _expect_error(tool: Any, inp: dict[str, Any], ctx: ToolContext, *needles: str) -> str:
    try:
        _run_tool(tool, inp, ctx)
    except ToolError as e:
        msg = str(e)
        assert msg and all(n.lower() in msg.lower() for n in needles), f"unclear error: {msg!r}"
        return msg
    raise AssertionError(f"{tool.name} {inp} did not fail")


def _ctx(tmp: Path) -> ToolContext:
    return ToolContext(cwd=tmp, session_id="bad-input")


def _tools() -> dict[str, Any]:
    from agent_magic.tools import builtin_tools

    return {t.name: t for t in builtin_tools(None)}


def tool_nul_path(tmp: Path) -> None:
    t = _tools()
    for name, key in (("Read", "file_path"), ("Write", "file_path"), ("Edit", "file_path"), ("NotebookEdit", "notebook_path")):
        inp = {key: str(tmp / "a\x00b.txt"), "content": "x", "old_string": "a", "new_string": "b", "new_source": "x"}
        _expect_error(t[name], inp, _ctx(tmp), "NUL")
    _expect_error(t["Bash"], {"command": "echo a\x00b"}, _ctx(tmp), "NUL")


def tool_nul_content(tmp: Path) -> None:
    t = _tools()
    res = _run_tool(t["Write"], {"file_path": str(tmp / "n.txt"), "content": "a\x00b"}, _ctx(tmp))
    assert not res.is_error and (tmp / "n.txt").read_bytes() == b"a\x00b"
    # A NUL makes the file binary: Read says so (and its size) instead of returning the bytes.
    res = _run_tool(t["Read"], {"file_path": str(tmp / "n.txt")}, _ctx(tmp))
    assert not res.is_error and "is a binary file (3 bytes)" in str(res.content), res.content
    assert res.data == {"binary": True, "size": 3}


def tool_nul_in_search(tmp: Path) -> None:
    # A NUL cannot be in a path or a pattern the OS or ripgrep takes: each search refuses it by name.
    t = _tools()
    for name, inp, what in (("Glob", {"pattern": "*\x00*"}, "pattern"), ("Grep", {"pattern": "a", "path": str(tmp / "x\x00y")}, "path"),
                            ("Grep", {"pattern": "a\x00"}, "pattern")):
        _expect_error(t[name], inp, _ctx(tmp), f"The {what} contains a NUL byte")


def tool_invalid_utf8(tmp: Path) -> None:
    t = _tools()
    p = tmp / "latin1.txt"
    p.write_bytes(b"caf\xe9 ol\xe9\nsecond line \xff\xfe\n")
    ctx = _ctx(tmp)
    res = _run_tool(t["Read"], {"file_path": str(p)}, ctx)
    assert "second line" in str(res.content)
    try:
        res = _run_tool(t["Edit"], {"file_path": str(p), "old_string": "second", "new_string": "2nd"}, ctx)
    except ToolError as e:
        assert "UTF-8" in str(e) or "encod" in str(e).lower() or "binary" in str(e).lower(), str(e)
        assert p.read_bytes() == b"caf\xe9 ol\xe9\nsecond line \xff\xfe\n"
    else:
        assert b"2nd line" in p.read_bytes() and p.read_bytes().startswith(b"caf\xe9")


def tool_huge_file(tmp: Path) -> None:
    """Read pages a 100 MB file without loading it (peak memory well under its size)."""
    import tracemalloc

    p = tmp / "huge.txt"
    line = b"y" * 99 + b"\n"
    with open(p, "wb") as f:
        chunk = line * 10_000
        for _ in range(100):
            f.write(chunk)
    t = _tools()
    tracemalloc.start()
    try:
        res = _run_tool(t["Read"], {"file_path": str(p)}, _ctx(tmp))
        peak = tracemalloc.get_traced_memory()[1]
        res2 = _run_tool(t["Read"], {"file_path": str(p), "offset": 999_999, "limit": 10}, _ctx(tmp))
    finally:
        tracemalloc.stop()
        p.unlink()
    assert peak < 40 * 1024 * 1024, f"Read took {peak / 1e6:.0f} MB for a 100 MB file"
    assert "offset=2001" in str(res.content) and len(str(res.content)) < 400_000
    assert "999999" in str(res2.content) and "1000000" in str(res2.content)


def tool_devices_and_dirs(tmp: Path) -> None:
    t = _tools()
    ctx = _ctx(tmp)
    for dev in ("/dev/zero", "/dev/urandom", "/dev/null"):
        if not Path(dev).exists():
            continue
        _expect_error(t["Read"], {"file_path": dev}, ctx, "not a regular file")
        _expect_error(t["Write"], {"file_path": dev, "content": "x"}, ctx, "not a regular file")
        _expect_error(t["Edit"], {"file_path": dev, "old_string": "a", "new_string": "b"}, ctx, "not a regular file")
    (tmp / "folder").mkdir(exist_ok=True)
    (tmp / "folder.ipynb").mkdir(exist_ok=True)
    _expect_error(t["Read"], {"file_path": str(tmp / "folder")}, ctx, "directory")
    _expect_error(t["Write"], {"file_path": str(tmp / "folder"), "content": "x"}, ctx, "directory")
    _expect_error(t["Edit"], {"file_path": str(tmp / "folder"), "old_string": "a", "new_string": "b"}, ctx, "directory")
    _expect_error(t["NotebookEdit"], {"notebook_path": str(tmp / "folder.ipynb"), "new_source": "x", "cell_id": "a"}, ctx)
    (tmp / "plain.txt").write_text("x")
    _expect_error(t["Write"], {"file_path": str(tmp / "plain.txt" / "under-a-file.txt"), "content": "x"}, ctx, "parent")


def tool_wrong_types(tmp: Path) -> None:
    t = _tools()
    ctx = _ctx(tmp)
    for name, inp in (
        ("Read", {"file_path": 5}), ("Read", {"file_path": str(tmp / "a"), "offset": "x"}),
        ("Read", {"file_path": str(tmp / "a"), "limit": -3}), ("Write", {"file_path": str(tmp / "w"), "content": None}),
        ("Edit", {"file_path": str(tmp / "w"), "old_string": 1, "new_string": 2}), ("Bash", {"command": ""}),
        ("Bash", {"command": "true", "timeout": "soon"}), ("NotebookEdit", {"notebook_path": str(tmp / "x.txt"), "new_source": "x"}),
        ("NotebookEdit", {"notebook_path": str(tmp / "x.ipynb"), "new_source": "x", "edit_mode": "explode"}),
    ):
        _expect_error(t[name], inp, ctx)


TOOL_CASES: dict[str, Callable[[Path], None]] = {
    "nul-in-paths-and-commands": tool_nul_path,
    "nul-in-content": tool_nul_content,
    "nul-in-search": tool_nul_in_search,
    "invalid-utf8-file": tool_invalid_utf8,
    "100mb-file": tool_huge_file,
    "devices-and-directories": tool_devices_and_dirs,
    "wrong-types": tool_wrong_types,
}


# ---------------------------------------------------------------------------
# Bad notebooks
# ---------------------------------------------------------------------------


def _read_then_edit(tmp: Path, nb_bytes: bytes, edit: dict[str, Any]) -> tuple[Any, Any, bytes]:
    """Read the notebook, then NotebookEdit it; returns (read result, edit result or ToolError, bytes after)."""
    t = _tools()
    p = tmp / "bad.ipynb"
    p.write_bytes(nb_bytes)
    ctx = _ctx(tmp)
    try:
        read: Any = _run_tool(t["Read"], {"file_path": str(p)}, ctx)
    except ToolError as e:
        assert str(e)
        read = e
        ctx.read_files[str(p)] = p.stat().st_mtime_ns  # let NotebookEdit look at it anyway
    try:
        edited: Any = _run_tool(t["NotebookEdit"], {"notebook_path": str(p), **edit}, ctx)
    except ToolError as e:
        edited = e
    return read, edited, p.read_bytes()


def nb_invalid_json(tmp: Path) -> None:
    data = b'{"cells": [ {"cell_type": "code", "source": "x"'
    read, edited, after = _read_then_edit(tmp, data, {"cell_id": "cell-0", "new_source": "y"})
    assert "cells" in str(read.content)  # shown as text
    assert isinstance(edited, ToolError) and "not a valid Jupyter notebook" in str(edited)
    assert after == data


def nb_v3(tmp: Path) -> None:
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": "1 + 1", "language": "python", "outputs": [
            {"output_type": "pyout", "prompt_number": 1, "text": "2", "metadata": {}}], "prompt_number": 1, "metadata": {}},
        {"cell_type": "markdown", "source": "# Title", "metadata": {}}]}]}
    read, edited, after = _read_then_edit(tmp, json.dumps(v3).encode(), {"cell_id": "cell-1", "new_source": "# New"})
    assert "1 + 1" in str(read.content) and "cell-1" in str(read.content)
    if isinstance(edited, ToolError):
        assert str(edited) and after == json.dumps(v3).encode()
    else:
        nb = json.loads(after)
        assert nb["nbformat"] == 4 and "".join(nb["cells"][1]["source"]) == "# New"
        assert "".join(nb["cells"][0]["source"]) == "1 + 1" and nb["cells"][0]["outputs"]


def nb_missing_ids(tmp: Path) -> None:
    nb = notebook_with_outputs()
    nb["nbformat_minor"] = 4
    for c in nb["cells"]:
        del c["id"]
    read, edited, after = _read_then_edit(tmp, json.dumps(nb).encode(), {"cell_id": "cell-2", "new_source": "plot(2)"})
    assert "cell-2" in str(read.content)
    assert not isinstance(edited, ToolError), edited
    out = json.loads(after)
    assert "".join(out["cells"][2]["source"]) == "plot(2)" and all("id" not in c for c in out["cells"])
    assert out["cells"][1]["outputs"]  # untouched cells keep their outputs


def nb_ids_missing_in_v45(tmp: Path) -> None:
    nb = notebook_with_outputs()
    del nb["cells"][1]["id"]
    _read, edited, after = _read_then_edit(tmp, json.dumps(nb).encode(), {"cell_id": "c2", "new_source": "z"})
    if isinstance(edited, ToolError):
        assert str(edited)
    else:
        assert "".join(json.loads(after)["cells"][2]["source"]) == "z"


def nb_huge_outputs(tmp: Path) -> None:
    nb = notebook_with_outputs()
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "line of output\n" * 600_000}]
    nb["cells"][2]["outputs"][0]["data"]["image/png"] = "iVBORw0KGgo" + "A" * 5_000_000
    data = json.dumps(nb).encode()
    read, edited, after = _read_then_edit(tmp, data, {"cell_id": "c0", "new_source": "# Retitled"})
    assert len(str(read.content)) < 200_000 and "characters cut" in str(read.content)
    assert not isinstance(edited, ToolError), edited
    out = json.loads(after)
    assert "".join(out["cells"][0]["source"]) == "# Retitled"
    assert "".join(out["cells"][1]["outputs"][0]["text"]) == "line of output\n" * 600_000


def nb_wrong_shapes(tmp: Path) -> None:
    for bad in (b"", b"[]", b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}',
                b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1, 2]}', b"\xff\xfe\x00",
                b'{"nbformat": 99, "cells": []}'):
        _read, edited, after = _read_then_edit(tmp, bad, {"cell_id": "c1", "new_source": "x"})
        assert isinstance(edited, ToolError) and str(edited), bad
        assert after == bad


def nb_duplicate_ids(tmp: Path) -> None:
    nb = notebook_with_outputs()
    nb["cells"][2]["id"] = "c1"
    _read, edited, after = _read_then_edit(tmp, json.dumps(nb).encode(), {"cell_id": "c3", "new_source": "2/1"})
    if isinstance(edited, ToolError):
        assert str(edited)
    else:
        out = json.loads(after)
        assert [c.get("id") for c in out["cells"]] == ["c0", "c1", "c1", "c3"]


NOTEBOOK_CASES: dict[str, Callable[[Path], None]] = {
    "invalid-json": nb_invalid_json,
    "nbformat-v3": nb_v3,
    "v4.4-without-ids": nb_missing_ids,
    "v4.5-with-a-missing-id": nb_ids_missing_in_v45,
    "huge-outputs": nb_huge_outputs,
    "wrong-shapes": nb_wrong_shapes,
    "duplicate-ids": nb_duplicate_ids,
}


# ---------------------------------------------------------------------------
# Bad API replies
# ---------------------------------------------------------------------------

_SSE_START = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
    '"model":"x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
)

#: name -> (replies, what the result must be: "error" with these words, or "success")
API_CASES: dict[str, tuple[list[Any], str, tuple[str, ...]]] = {
    "sse-not-json": ([raw("event: message_start\ndata: {not json\n\n")], "error", ()),
    "sse-garbage-bytes": ([raw("\x00\x01\x02 garbage \xff\n\n")], "error", ()),
    "sse-unknown-events-only": ([raw("event: surprise\ndata: {}\n\n")], "error", ()),
    "sse-block-without-start": ([raw(_SSE_START + 'event: content_block_delta\ndata: {"type":"content_block_delta","index":3,'
                                     '"delta":{"type":"text_delta","text":"x"}}\n\n')], "error", ()),
    "html-instead-of-sse": ([raw("<html>502 Bad Gateway</html>", content_type="text/html")], "error", ()),
    "empty-body": ([raw("")], "error", ()),
    "truncated-stream": ([truncated(after=3)] * 3, "error", ("broke off",)),
    "stream-error-event": ([stream_error("overloaded_error", "Overloaded", after=3)] * 3, "error", ("overloaded",)),
    "overloaded-529": ([error(529, "overloaded_error", "Overloaded")] * 3, "error", ("overloaded",)),
    "rate-limited-429": ([error(429, "rate_limit_error", "Slow down")] * 3, "error", ("rate",)),
    "bad-request-400": ([error(400, "invalid_request_error", "messages: bad")], "error", ("refused",)),
    "invalid-tool-json": ([message_reply(raw_tool_block("Write", '{"file_path": "x.txt", "content": '), stop_reason="tool_use"),
                           text("I will fix my arguments.")], "success", ()),
    "unknown-tool": ([tool_use("Teleport", {"to": "mars"}), text("No such tool.")], "success", ()),
    "tool-input-not-object": ([message_reply(raw_tool_block("Read", "[1, 2, 3]"), stop_reason="tool_use"),
                               text("Fixed.")], "success", ()),
}


def check_api_case(name: str, home: Path, cwd: Path, server: FakeAnthropicServer, sid: str) -> None:
    """Run a turn in ``sid`` with the case's replies: a clear result, the stored data intact."""
    replies, want, needles = API_CASES[name]
    transcript = home / "sessions" / sid / "transcript.jsonl"
    before = transcript.read_bytes()
    blobs_before = tree_snapshot(home / "blobs")
    server.reset()
    server.add(*replies)
    msgs = query_once(f"case {name}", resume=sid, home=home, cwd=cwd, permission_mode="bypassPermissions")
    result = msgs[-1]
    assert isinstance(result, ResultMessage), result
    if want == "success":
        assert result.subtype == "success", result
    else:
        assert result.is_error and result.result, result
        line = result.result
        assert "\n" not in line and "Traceback" not in line and len(line) < 600, line
        assert all(n in line.lower() for n in needles), line
    after = transcript.read_bytes()
    assert after.startswith(before), "earlier transcript lines changed"
    assert parse_lines(read_raw_lines(transcript), transcript), "the transcript does not read"
    now = tree_snapshot(home / "blobs")
    assert all(now.get(k) == v for k, v in blobs_before.items()), "a backup changed"


# ---------------------------------------------------------------------------
# Bad bundles
# ---------------------------------------------------------------------------


def _entries(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(path: Path, entries: dict[str, bytes], extra: Callable[[zipfile.ZipFile], None] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if extra is not None:
            extra(z)
    return path


def _blob_name(entries: dict[str, bytes]) -> str:
    return next(n for n in entries if n.startswith("blobs/"))


def _with_records(entries: dict[str, bytes], mutate: Callable[[list[dict[str, Any]]], None]) -> dict[str, bytes]:
    recs = [json.loads(x) for x in entries["checkpoints.jsonl"].splitlines() if x.strip()]
    mutate(recs)
    return {**entries, "checkpoints.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in recs)}


def _symlink(z: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("meta.json")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, "/etc/passwd")


def _first_file_record(recs: list[dict[str, Any]], path: str) -> None:
    next(r for r in recs if r.get("r") == "file")["path"] = path


def _bash_change(recs: list[dict[str, Any]], path: str) -> None:
    next(r for r in recs if r.get("r") == "bash")["changes"][0]["path"] = path


def _bomb_blob(entries: dict[str, bytes]) -> dict[str, bytes]:
    import hashlib

    data = b"\x00" * (64 << 20)  # 64 MiB of zeros: 64 KiB compressed
    digest = hashlib.sha256(data).hexdigest()
    return {**entries, f"blobs/{digest}": zlib.compress(data, 9)}


#: name -> how to make the bad bundle from the entries of a good one (and the expected error class).
BUNDLE_CASES: dict[str, tuple[Callable[[Path, dict[str, bytes]], Path], type[Exception]]] = {
    "path-traversal-entry": (lambda p, e: _write_zip(p, {**e, "../../evil.txt": b"x"}), BundleError),
    "absolute-entry": (lambda p, e: _write_zip(p, {**e, "/tmp/evil.txt": b"x"}), BundleError),
    "blob-traversal-entry": (lambda p, e: _write_zip(p, {**e, "blobs/../../evil": b"x"}), BundleError),
    "symlink-entry": (lambda p, e: _write_zip(p, {k: v for k, v in e.items() if k != "meta.json"}, _symlink), BundleError),
    "unexpected-entry": (lambda p, e: _write_zip(p, {**e, "sessions/x/transcript.jsonl": b"{}"}), BundleError),
    "blob-hash-mismatch": (lambda p, e: _write_zip(p, {**e, _blob_name(e): zlib.compress(b"tampered")}), BundleError),
    "blob-not-zlib": (lambda p, e: _write_zip(p, {**e, _blob_name(e): b"not zlib at all"}), BundleError),
    "blob-zip-bomb": (lambda p, e: _write_zip(p, _bomb_blob(e)), BundleError),
    "record-path-traversal": (lambda p, e: _write_zip(p, _with_records(e, lambda r: _first_file_record(r, "../../.bashrc"))), BundleError),
    "record-absolute-path": (lambda p, e: _write_zip(p, _with_records(e, lambda r: _first_file_record(r, "/etc/cron.d/x"))), BundleError),
    "bash-record-outside": (lambda p, e: _write_zip(p, _with_records(e, lambda r: _bash_change(r, "../outside.txt"))), BundleError),
    "manifest-not-json": (lambda p, e: _write_zip(p, {**e, "manifest.json": b"{nope"}), BundleError),
    "manifest-bad-id": (lambda p, e: _write_zip(p, {**e, "manifest.json": json.dumps({"format": 1, "session_id": "../x"}).encode()}), BundleError),
    "no-transcript": (lambda p, e: _write_zip(p, {k: v for k, v in e.items() if k != "transcript.jsonl"}), BundleError),
    "transcript-without-header": (lambda p, e: _write_zip(p, {**e, "transcript.jsonl": b'{"type":"user"}\n'}), BundleError),
    "not-a-zip": (lambda p, e: (p.write_bytes(b"PK\x03\x04 not really a zip"), p)[1], BundleError),
    "empty-file": (lambda p, e: (p.write_bytes(b""), p)[1], BundleError),
    "already-imported": (lambda p, e: _write_zip(p, e), SessionExistsError),
}


def _patch_central_entry(path: Path, entries: dict[str, bytes], name: bytes, patch: Callable[[bytearray, int], None]) -> Path:
    """Write the zip, then ``patch(data, offset)`` the central-directory record of entry ``name``."""
    _write_zip(path, entries)
    data = bytearray(path.read_bytes())
    pos = 0
    while True:
        cd = data.find(b"PK\x01\x02", pos)
        if cd < 0:
            break
        n = int.from_bytes(data[cd + 28 : cd + 30], "little")
        if bytes(data[cd + 46 : cd + 46 + n]) == name:
            patch(data, cd)
        pos = cd + 4
    path.write_bytes(bytes(data))
    return path


def _set_field(offset: int, value: int, size: int) -> Callable[[bytearray, int], None]:
    def patch(data: bytearray, cd: int) -> None:
        data[cd + offset : cd + offset + size] = value.to_bytes(size, "little")

    return patch


def _declared_size_bomb(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip whose central directory claims a 2 GiB transcript (rejected before reading it)."""
    return _patch_central_entry(path, entries, b"transcript.jsonl", _set_field(24, 2**31, 4))


def _lying_size(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip whose central directory under-states the transcript's size (its CRC check fails)."""
    return _patch_central_entry(path, entries, b"transcript.jsonl", _set_field(24, 10, 4))


def _unknown_compression(path: Path, entries: dict[str, bytes]) -> Path:
    """The manifest stored with a compression method zipfile does not know (NotImplementedError)."""
    return _patch_central_entry(path, entries, b"manifest.json", _set_field(10, 99, 2))


def _corrupt_deflate(path: Path, entries: dict[str, bytes]) -> Path:
    """The transcript's compressed bytes damaged in the middle (zlib error or CRC mismatch)."""
    _write_zip(path, entries)
    data = bytearray(path.read_bytes())
    name = b"transcript.jsonl"
    lh = data.find(b"PK\x03\x04")
    while lh >= 0:
        n = int.from_bytes(data[lh + 26 : lh + 28], "little")
        extra = int.from_bytes(data[lh + 28 : lh + 30], "little")
        if bytes(data[lh + 30 : lh + 30 + n]) == name:
            size = int.from_bytes(data[lh + 18 : lh + 22], "little")
            start = lh + 30 + n + extra
            for i in range(start + size // 3, start + size // 3 + 8):
                data[i] ^= 0xFF
            break
        lh = data.find(b"PK\x03\x04", lh + 4)
    path.write_bytes(bytes(data))
    return path


BUNDLE_CASES["declared-2gib-entry"] = (_declared_size_bomb, BundleError)
BUNDLE_CASES["lying-entry-size"] = (_lying_size, BundleError)
BUNDLE_CASES["unknown-compression"] = (_unknown_compression, BundleError)
BUNDLE_CASES["corrupt-compressed-data"] = (_corrupt_deflate, BundleError)


def check_bundle_case(name: str, good: Path, home: Path, work: Path) -> str:
    """Import the bad bundle ``name`` into ``home``: the expected error, one clear line, the store unchanged."""
    from agent_magic import import_session

    make, expected = BUNDLE_CASES[name]
    bad = make(work / f"{name}.zip", _entries(good))
    before = tree_snapshot(home)
    as_id = None if name == "already-imported" else "imported-copy"
    try:
        import_session(bad, home=home, new_session_id=as_id)
    except expected as e:
        msg = str(e)
    else:
        raise AssertionError(f"{name}: the bad bundle was imported")
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    assert tree_snapshot(home) == before, f"{name}: the store changed"
    outside = [p for p in (work.parent / "evil.txt", work / "evil.txt", Path("/tmp/evil.txt")) if p.exists()]
    assert not outside, f"{name}: wrote {outside}"
    return msg
