"""Subagent transcripts stored under their parent session (issue 17), and kernel tools kept in meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_magic import ConfigurationError, SessionNotFoundError
from agent_magic._api import get_kernel_tools, set_kernel_tools
from agent_magic.store.local import SessionStore


def _session(home: Path, cwd: Path) -> str:
    return SessionStore.at(home).create(cwd=str(cwd), scope=str(cwd), model="claude-test")


# -- kernel tools -------------------------------------------------------------------


def test_kernel_tools_round_trip_in_meta(home: Path, workspace: Path) -> None:
    sid = _session(home, workspace)
    assert get_kernel_tools(sid) == []
    set_kernel_tools(sid[:8], ["load_data", "plot_it", "load_data"])
    assert get_kernel_tools(sid[:8]) == ["load_data", "plot_it"]
    meta = json.loads((home / "sessions" / sid / "meta.json").read_bytes())
    assert meta["kernel_tools"] == ["load_data", "plot_it"]
    am_store = SessionStore.at(home)
    am_store.rename(sid, "kept title")  # other metadata writes keep the tools
    assert get_kernel_tools(sid) == ["load_data", "plot_it"]
    set_kernel_tools(sid, [])
    assert get_kernel_tools(sid) == []
    assert json.loads((home / "sessions" / sid / "meta.json").read_bytes())["title"] == "kept title"


@pytest.mark.parametrize("bad", [["1abc"], ["a-b"], ["class"], [""], ["ok", 3], "load_data"])
def test_kernel_tools_reject_non_identifiers(home: Path, workspace: Path, bad: object) -> None:
    sid = _session(home, workspace)
    set_kernel_tools(sid, ["keep"])
    with pytest.raises(ConfigurationError):
        set_kernel_tools(sid, bad)  # type: ignore[arg-type]
    assert get_kernel_tools(sid) == ["keep"]


def test_kernel_tools_unknown_session(home: Path) -> None:
    with pytest.raises(SessionNotFoundError):
        set_kernel_tools("ffffffff-0000", ["f"])
    with pytest.raises(SessionNotFoundError):
        get_kernel_tools("ffffffff-0000")
