"""Bad input, property-based and table-driven: every case works or fails clearly, and stored data stays intact.

The cases live in ``tests/reliability/fuzz.py`` (shared with ``bench/reliability.py``):
magic argument strings, damaged transcripts, bad tool inputs, bad notebooks, bad API
replies and bad export bundles.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_magic import _bundle, export_session
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer, text

from .reliability import fuzz

SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------
# %agent / %%agent arguments
# ---------------------------------------------------------------------------

_SAFE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", blacklist_characters="/~"), max_size=40
)


def _argument_lines(words: list[str]) -> st.SearchStrategy[str]:
    token = st.one_of(st.sampled_from(words), st.sampled_from(fuzz.VALUES), _SAFE_TEXT)
    return st.one_of(st.lists(token, max_size=6).map(" ".join), _SAFE_TEXT)


@pytest.fixture
def answering(fake_api: FakeAnthropicServer) -> FakeAnthropicServer:
    fake_api.set_default(text("ok"))
    return fake_api


@SETTINGS
@given(line=_argument_lines(fuzz.LINE_WORDS))
def test_line_magic_arguments_only_raise_usage_errors(ip: Any, answering: FakeAnthropicServer, line: str) -> None:
    fuzz.run_magic(ip, line)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=_argument_lines(fuzz.CELL_WORDS), body=st.sampled_from(["hello", "", "   \n", "{x} $y {{z}}", "é" * 50]))
def test_cell_magic_arguments_only_raise_usage_errors(ip: Any, answering: FakeAnthropicServer, line: str, body: str) -> None:
    fuzz.run_magic(ip, line, body)




@pytest.mark.parametrize("line", fuzz.NASTY_LINES)
def test_nasty_line_magic_arguments(ip: Any, answering: FakeAnthropicServer, line: str) -> None:
    fuzz.run_magic(ip, "sessions")  # works with no session yet
    assert fuzz.run_magic(ip, line) in ("ok", "usage")




@pytest.mark.parametrize("line", fuzz.NASTY_LINES_WITH_A_SESSION)
def test_nasty_line_magic_arguments_with_a_session(ip: Any, answering: FakeAnthropicServer, line: str) -> None:
    assert fuzz.run_magic(ip, "--permission-mode acceptEdits", "hello") == "ok"
    from agent_magic import list_checkpoints, list_sessions

    sid = list_sessions()[0].session_id
    cp = list_checkpoints(sid)[0].checkpoint_id
    assert fuzz.run_magic(ip, line.format(sid=sid, sid4=sid[:4], cp=cp[:8])) in ("ok", "usage")




@pytest.mark.parametrize("line", fuzz.NASTY_CELL_LINES)
def test_nasty_cell_magic_arguments(ip: Any, answering: FakeAnthropicServer, line: str) -> None:
    assert fuzz.run_magic(ip, line, "hello") in ("ok", "usage", "turn")


# ---------------------------------------------------------------------------
# Damaged transcripts
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One stored session (3 turns with Write, Read, NotebookEdit, Bash), its store and an export of it."""
    root = tmp_path_factory.mktemp("sample")
    home, cwd = root / "store", root / "project"
    cwd.mkdir()
    with FakeAnthropicServer() as server, server.environ():
        sid = fuzz.make_session(home, cwd, server)
        bundle = export_session(sid, root / "good.zip", home=home)
        SessionStore.forget_instances()
        yield {"home": home, "cwd": cwd, "sid": sid, "bundle": bundle, "server": server, "root": root}
    SessionStore.forget_instances()


_OPS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),
        st.sampled_from(["flip", "half", "garbage", "nul", "utf8", "blank", "dup"] + [f"weird:{k}" for k in range(len(fuzz.WEIRD_LINES))]),
    ),
    min_size=1, max_size=4,
)


def _transcript_lines(sample: dict[str, Any]) -> list[bytes]:
    return (sample["home"] / "sessions" / sample["sid"] / "transcript.jsonl").read_bytes().splitlines()


@SETTINGS
@given(ops=_OPS, cut=st.one_of(st.none(), st.integers(min_value=1, max_value=300)))
def test_damaged_transcripts_read_resume_and_lose_nothing_else(
    sample: dict[str, Any], tmp_path: Path, ops: list[tuple[int, str]], cut: int | None
) -> None:
    with sample["server"].environ():
        fuzz.check_corrupted_session(sample["home"], tmp_path, sample["sid"], sample["cwd"], sample["server"], ops, cut)


def test_a_duplicated_tool_call_line_still_resumes(sample: dict[str, Any], tmp_path: Path) -> None:
    line = next(i for i, b in enumerate(_transcript_lines(sample)) if b'"tool_use"' in b)
    with sample["server"].environ():
        fuzz.check_corrupted_session(sample["home"], tmp_path, sample["sid"], sample["cwd"], sample["server"], [(line, "dup")], None)


@pytest.mark.parametrize("blank", ["", " \n"])
def test_a_stored_blank_text_block_still_resumes(sample: dict[str, Any], tmp_path: Path, blank: str) -> None:
    import shutil

    home = tmp_path / "store"
    shutil.copytree(sample["home"], home)
    path = home / "sessions" / sample["sid"] / "transcript.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    i = next(k for k, b in enumerate(lines) if b'"tool_use"' in b and b'"assistant"' in b)
    entry = json.loads(lines[i])
    entry["message"]["content"].insert(0, {"type": "text", "text": blank})
    lines[i] = (json.dumps(entry) + "\n").encode()
    path.write_bytes(b"".join(lines))
    server = sample["server"]
    server.reset()
    server.add(text("Still here."))
    try:
        with server.environ():
            msgs = fuzz.query_once("after an old version's answer", resume=sample["sid"], home=home, cwd=sample["cwd"])
    finally:
        server.reset()
        SessionStore.forget_instances()
    assert msgs[-1].subtype == "success", msgs[-1]


@pytest.mark.parametrize("k", range(len(fuzz.WEIRD_LINES)))
def test_valid_json_of_the_wrong_shape_in_every_position(sample: dict[str, Any], tmp_path: Path, k: int) -> None:
    n = len((sample["home"] / "sessions" / sample["sid"] / "transcript.jsonl").read_bytes().splitlines())
    with sample["server"].environ():
        for line in range(0, n, 3):
            fuzz.check_corrupted_session(
                sample["home"], tmp_path, sample["sid"], sample["cwd"], sample["server"], [(line, f"weird:{k}")], None
            )


def test_a_torn_last_line_from_another_process_is_cut_before_appending(sample: dict[str, Any], tmp_path: Path) -> None:
    # The last line cut in half (a process died mid-write): the next turn cuts it, never glues to it.
    with sample["server"].environ():
        fuzz.check_corrupted_session(sample["home"], tmp_path, sample["sid"], sample["cwd"], sample["server"], [(10_000, "dup")], 25)


# ---------------------------------------------------------------------------
# Tools, notebooks, API replies, bundles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(fuzz.TOOL_CASES))
def test_bad_tool_input(name: str, tmp_path: Path) -> None:
    fuzz.TOOL_CASES[name](tmp_path)


@pytest.mark.parametrize("name", sorted(fuzz.NOTEBOOK_CASES))
def test_bad_notebook(name: str, tmp_path: Path) -> None:
    fuzz.NOTEBOOK_CASES[name](tmp_path)


@pytest.mark.parametrize("name", sorted(fuzz.API_CASES))
def test_bad_api_reply(name: str, sample: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "store"
    shutil.copytree(sample["home"], home)
    server = sample["server"]
    with server.environ():
        fuzz.check_api_case(name, home, sample["cwd"], server, sample["sid"])
    SessionStore.forget_instances()


@pytest.mark.parametrize("name", sorted(fuzz.BUNDLE_CASES))
def test_bad_bundle(name: str, sample: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "blob-zip-bomb":
        monkeypatch.setattr(_bundle, "MAX_ENTRY_BYTES", 16 << 20)
    msg = fuzz.check_bundle_case(name, sample["bundle"], sample["home"], tmp_path)
    assert msg
    if name in ("unknown-compression", "corrupt-compressed-data"):
        assert "cannot be read" in msg and "the bundle is damaged" in msg, msg


def test_the_good_bundle_imports(sample: dict[str, Any], tmp_path: Path) -> None:
    from agent_magic import import_session, list_checkpoints

    sid = import_session(sample["bundle"], home=tmp_path / "other", cwd=sample["cwd"])
    assert len(list_checkpoints(sid, home=tmp_path / "other")) == 3
    SessionStore.forget_instances()


def test_random_argument_lines_are_reproducible() -> None:
    rng = random.Random(5)
    lines = [fuzz.random_argument_line(rng, fuzz.LINE_WORDS) for _ in range(3)]
    rng = random.Random(5)
    assert lines == [fuzz.random_argument_line(rng, fuzz.LINE_WORDS) for _ in range(3)]
    assert all(set(line) <= set(string.printable) | {c for v in fuzz.VALUES for c in v} for line in lines)
