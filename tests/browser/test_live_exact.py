"""Live edits and rewinds in the open notebook give exactly the nbformat path's notebook.

A notebook with every output type (multi-line streams, execute_result and
display_data with text/plain, text/html, image/png, JSON, an error with a
multi-line traceback, a markdown cell with an attachment, a raw cell) is open
in JupyterLab. Three agent turns replace, insert and delete cells live; each is
rewound by another route (``%agent rewind``, the checkpoint slider, the
sidebar). After each rewind the saved file must equal, cell by cell, what the
same turn and rewind give through nbformat on a file nobody has open; the page
must render the restored outputs; and applying the rewind again changes nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from conftest import lab_env

import agent_magic as am
from agent_magic.testing import FakeAnthropicServer, text, tool_use, tool_uses
from tests.notebook_fixtures import every_output_cells
from tests.test_checkpoints import Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

NB_NAME = "every-output.ipynb"
PROMPT = "Tidy every kind of cell"
FIXTURE_IDS = [c.id for c in every_output_cells()]


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext agent_magic", id="load"),
        *every_output_cells(),
        nbformat.v4.new_code_cell(f"%%agent --permission-mode acceptEdits\n{PROMPT}", id="ask"),
        nbformat.v4.new_code_cell("", id="rewind"),
    ]
    nbformat.write(nb, path)


def agent_edits(nb: str) -> list[tuple[str, dict[str, Any]]]:
    """Replace five cells (code and markdown), insert one, delete the raw cell."""

    def edit(cell_id: str, source: str, **kw: Any) -> tuple[str, dict[str, Any]]:
        return ("NotebookEdit", {"notebook_path": nb, "cell_id": cell_id, "new_source": source, **kw})

    return [
        edit("streams", "print('cleaned')\nprint('twice')"),
        edit("result", "df.describe()"),
        edit("display", "plot(df)\nplt.show()"),
        edit("error", "1 / 1"),
        edit("md-attach", "# Report (agent)\n\nNo logo.", cell_type="markdown"),
        edit("no-output", "y = 2  # agent", cell_type="code", edit_mode="insert"),
        edit("raw", "", edit_mode="delete"),
    ]


def comparable(nb_json: dict[str, Any], ids: list[str], *, provenance: bool = True) -> list[dict[str, Any]]:
    """The cells with these ids as nbformat reads them; agent provenance and new ids dropped."""
    nb = nbformat.reads(json.dumps(nb_json), as_version=4)
    out = []
    for cell in nb.cells:
        if cell.get("id") not in ids and "agent_magic" not in cell.metadata:
            continue
        c = json.loads(json.dumps(cell))
        if c.get("metadata", {}).pop("agent_magic", None) is not None and c["id"] not in ids:
            c["id"] = "<new>"
        if not provenance:
            c.get("metadata", {}).pop("agent_magic", None)
        out.append(c)
    return out


def nbformat_path_result(fake: FakeAnthropicServer, workspace: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same turn and rewind on a file nobody has open: (after the turn, after the rewind)."""
    path = workspace / NB_NAME
    write_notebook(path)
    session = Session(fake, workspace, permission_mode="acceptEdits")
    session.run([(PROMPT, [tool_use("Read", {"file_path": str(path)}), tool_uses(agent_edits(str(path))), text("Done.")])])
    after_turn = json.loads(path.read_text())
    assert session.session_id is not None
    result = am.rewind_files(session.session_id, session.checkpoints[0])
    assert result.ok and not result.conflicts, result
    return after_turn, json.loads(path.read_text())


def check_run(data: dict[str, Any], expected_turn: dict[str, Any], expected_rewind: dict[str, Any], routes: list[str]) -> None:
    # The live edit gives the nbformat path's notebook (provenance differs: other session).
    assert comparable(data["afterTurn1Saved"], FIXTURE_IDS, provenance=False) == comparable(
        expected_turn, FIXTURE_IDS, provenance=False
    )
    want = comparable(expected_rewind, FIXTURE_IDS)
    assert [c["id"] for c in want] == FIXTURE_IDS
    for route in routes:
        saved = comparable(data[f"{route}Saved"], FIXTURE_IDS)
        for mine, theirs in zip(saved, want, strict=True):
            assert mine == theirs, f"{route}: cell {theirs['id']}"
        # The model (what the page holds) is the same notebook as the file.
        assert comparable(data[route]["json"], FIXTURE_IDS) == want, route
        # What the page renders: every restored output, the stream's lines intact, no commas added.
        rendered = data[route]["rendered"]
        assert rendered["streams"]["outputs"] == 2, (route, rendered["streams"])
        assert "2024-01   2,030.50\n2024-02   1,401.00\n2024-03   2,620.40" in rendered["streams"]["text"], route
        assert not re.search(r"^,", rendered["streams"]["text"], re.M), route
        assert rendered["streams"]["text"].count("2024-02") == 1, route
        assert "warn\nagain" in rendered["streams"]["text"], route
        assert rendered["result"]["outputs"] == 1 and "<table>" not in rendered["result"]["text"], route
        assert rendered["display"]["images"] >= 1, route
        assert "ZeroDivisionError" in rendered["error"]["text"], route
        assert rendered["md-attach"]["images"] == 1, route
        # A second application finds nothing to change, and no dialog appeared.
        again = data[f"{route}Again"]
        assert again["status"] == 200 and again["changes"] == [] and again["live"] == [], (route, again)
        assert data[f"{route}Dialogs"] == 0, route


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("collaboration", [False, True], ids=["plain", "rtc"])
def test_live_rewinds_equal_the_nbformat_path(
    collaboration: bool,
    request: pytest.FixtureRequest,
    lab_fake_api: FakeAnthropicServer,
    run_playwright: Callable[..., PlaywrightResult],
    fake_api: FakeAnthropicServer,
    home: Path,
    workspace: Path,
) -> None:
    """Plain JupyterLab, and with the document held by the server (jupyter-collaboration)."""
    lab: JupyterLab = request.getfixturevalue("jupyterlab_rtc" if collaboration else "jupyterlab")
    expected_turn, expected_rewind = nbformat_path_result(fake_api, workspace)

    nb_path = lab.root_dir / NB_NAME
    write_notebook(nb_path)
    lab_fake_api.reset()
    target = str(nb_path.resolve())
    lab_fake_api.on_prompt(PROMPT, tool_use("Read", {"file_path": target}), tool_uses(agent_edits(target)), text("Done."))

    name = "live-exact-rtc" if collaboration else "live-exact"
    env = {**lab_env(lab), "NB_PATH": NB_NAME, "SHOT_PREFIX": name}
    data = run_playwright("live_exact.mjs", env=env, timeout=500).check().data
    (Path(lab.log_path).parent / f"{name}.json").write_text(json.dumps(data, indent=1))

    # Opening the file shows what nbformat reads (the starting point is right).
    assert comparable(data["opened"]["json"], FIXTURE_IDS) == comparable(json.loads(nb_path.read_text()), FIXTURE_IDS)
    check_run(data, expected_turn, expected_rewind, ["magic", "slider", "sidebar"])
    assert "streams" in data["sliderPreview"]
    assert data["sidebarDialogFocus"] == "Cancel", data["sidebarDialogFocus"]
    # What ends on disk (with RTC: the server's own save) is the same notebook.
    final = nbformat.read(nb_path, as_version=4)
    assert [c.id for c in final.cells] == ["load", *FIXTURE_IDS, "ask", "rewind"]
    assert comparable(json.loads(nb_path.read_text()), FIXTURE_IDS) == comparable(expected_rewind, FIXTURE_IDS)


@pytest.mark.browser
@pytest.mark.slow
def test_an_agent_edit_on_disk_survives_the_collaborative_save(
    jupyterlab_rtc: JupyterLab,
    run_playwright: Callable[..., PlaywrightResult],
    fake_api: FakeAnthropicServer,
    home: Path,
) -> None:
    """An agent with no live link (another process, no extension) edits the file of a notebook open with RTC."""
    nb_path = jupyterlab_rtc.root_dir / "rtc-disk.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", id="one"),
        nbformat.v4.new_code_cell("y = 2", id="two"),
        nbformat.v4.new_code_cell("z = 3", id="three"),
    ]
    nbformat.write(nb, nb_path)
    marker = jupyterlab_rtc.root_dir / "opened.marker"
    marker.unlink(missing_ok=True)
    agent_text = "y = 20  # written by the agent on disk"
    failures: list[BaseException] = []

    def agent() -> None:
        try:
            deadline = time.monotonic() + 120
            while not marker.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the page never opened the notebook")
                time.sleep(0.1)
            session = Session(fake_api, jupyterlab_rtc.root_dir, permission_mode="acceptEdits")
            edit = ("NotebookEdit", {"notebook_path": str(nb_path), "cell_id": "two", "new_source": agent_text})
            session.run([("edit two", [tool_use("Read", {"file_path": str(nb_path)}), tool_uses([edit]), text("Done.")])])
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    worker = threading.Thread(target=agent)
    worker.start()
    try:
        env = {**lab_env(jupyterlab_rtc), "NB_PATH": nb_path.name, "AGENT_TEXT": agent_text}
        data = run_playwright("rtc_disk_edit.mjs", env=env, timeout=300).check().data
    finally:
        worker.join(timeout=120)
        print("on disk after the agent:", nbformat.read(nb_path, as_version=4).cells)
    assert not failures, failures
    assert data["agentEditSeen"], data
    if data["dialog"] is not None:
        # JupyterLab (not agent-magic) may ask "File Changed"; even "Overwrite" keeps the agent's edit.
        print("JupyterLab asked on save:", data["dialog"].splitlines()[0])
    for key in ("saved", "savedLater"):
        cells = {c["id"]: "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in data[key]["cells"]}
        assert cells["two"] == agent_text, (key, cells)
        assert cells["three"] == "z = 300  # edited after the agent", (key, cells)
    on_disk = {c.id: c.source for c in nbformat.read(nb_path, as_version=4).cells}
    assert on_disk["two"] == agent_text and on_disk["three"] == "z = 300  # edited after the agent"
    print("person's unsaved edit before the agent's:", data["modelOne"])
