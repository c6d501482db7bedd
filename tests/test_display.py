"""TurnView: what a %%agent cell shows, driven with real messages from a real turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_magic.notebook._display import TURN_MIME, TurnView, display_path
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .conftest import run_query


def test_display_path() -> None:
    assert display_path("/proj/data/sales.csv", "/proj") == "data/sales.csv"
    assert display_path("/elsewhere/x.csv", "/proj") == "/elsewhere/x.csv"
    assert display_path("relative.txt", "/proj") == "relative.txt"
    assert display_path("/proj/x", None) == "/proj/x"


def test_turn_view_renders_a_real_turn(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    (workspace / "data").mkdir()
    fake_api.add(
        tool_use("Write", {"file_path": str(workspace / "data" / "out.csv"), "content": "a,b\n"}, text="Writing it."),
        text("All **done**. " * 200, chunk_size=7),
    )
    msgs = run_query("write it", cwd=workspace, permission_mode="acceptEdits", include_partial_messages=True)
    published: list[tuple[dict[str, Any], bool]] = []
    view = TurnView(rich=True, publish=lambda bundle, first: published.append((bundle, first)), min_interval=10.0)
    for m in msgs:
        view.on_message(m)
        view.flush()
    view.flush(force=True)
    # one region: shown once, then only updated; the interval coalesced the many deltas
    assert [first for _, first in published].count(True) == 1
    assert len(published) < 10
    md = published[-1][0]["text/markdown"]
    assert "<b>Write</b> <code>data/out.csv</code>" in md and str(workspace) not in md.split("<sub>")[0]
    assert md.count("All **done**.") == 200
    prov = published[-1][0][TURN_MIME]
    assert prov["status"] == "success" and prov["checkpoint_id"] and prov["cwd"] == str(workspace)
    assert "resume with `%agent resume" in md


def test_tool_line_names_what_the_python_code_does() -> None:
    from agent_magic.notebook._display import _target

    code = "import pandas as pd\ndf = pd.read_csv('x.csv')"
    assert _target("Python", {"code": code, "description": "load the sales table"}) == "load the sales table"
    assert _target("Python", {"code": code}) == "import pandas as pd"  # no description: the code's first line
    assert _target("Bash", {"command": "rm -rf build", "description": "clean"}) == "rm -rf build"  # what runs, always
