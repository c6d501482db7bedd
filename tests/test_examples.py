"""The example notebooks, top to bottom in real kernels against the scripted fake API.

Each notebook runs through nbclient as committed. nbclient holds no JupyterLab
extension, so the agent's NotebookEdits and the rewinds change the file on
disk; the test reads that file after every code cell and checks, cell by cell,
what each turn inserted and what each rewind put back. Transcripts are read
from the session store, and the fake server's recorded requests show what the
model was sent.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

import agent_magic
from agent_magic.notebook._display import TURN_MIME
from agent_magic.notebook._kernel_tools import describe_value, run_code
from agent_magic.testing import FakeAnthropicServer, RecordedRequest
from agent_magic.testing import examples as ex

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_notebooks"
NAMES = ["clean_csv.ipynb", "fork_compare_models.ipynb", "inspect_dataframe.ipynb"]
CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
#: The phrase each scripted rule matches, and the notebook whose prompt it is.
PROMPTS = {
    ex.PROMPT_CLEAN: "clean_csv.ipynb",
    ex.PROMPT_REVENUE: "clean_csv.ipynb",
    ex.PROMPT_MODEL: "fork_compare_models.ipynb",
    ex.PROMPT_FORK: "fork_compare_models.ipynb",
    ex.PROMPT_KEEP: "fork_compare_models.ipynb",
    ex.PROMPT_INSPECT: "inspect_dataframe.ipynb",
}

Cell = dict[str, Any]
# Neither ships type hints; through Any, mypy --strict needs no ignores here.
_nbf: Any = nbformat
_jsonschema: Any = importlib.import_module("jsonschema")


def _cells(path: Path) -> list[Cell]:
    """A notebook file's cells as stored (plain JSON, never repaired by nbformat), sources joined."""
    cells: list[Cell] = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for c in cells:
        if isinstance(c.get("source"), list):
            c["source"] = "".join(c["source"])
    return cells


def _output_text(cell: Any) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            parts.append(o["text"])
        elif o["output_type"] == "error":
            parts.append(f"{o['ename']}: {o['evalue']}")
        else:
            data = o.get("data", {})
            parts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
    return "\n".join(parts)


@dataclass
class Run:
    """One notebook executed top to bottom, and what it left behind."""

    path: Path
    home: Path
    original: list[Cell]
    executed: Any
    requests: list[RecordedRequest]
    #: The notebook file's cells right after each code cell ran, by cell index.
    disk: dict[int, list[Cell]] = field(default_factory=dict)
    #: Whatever the test's own hook recorded after each code cell, by cell index.
    seen: dict[int, Any] = field(default_factory=dict)

    def index(self, source: str) -> int:
        """Index of the one committed cell whose source is ``source``, else the one that starts with it."""
        found = [i for i, c in enumerate(self.original) if c["source"] == source]
        found = found or [i for i, c in enumerate(self.original) if c["source"].startswith(source)]
        assert len(found) == 1, (source, found)
        return found[0]

    def turns(self) -> list[dict[str, Any]]:
        """The closing provenance of every %%agent cell, in order."""
        out = []
        for c in self.executed.cells:
            bundles = [o["data"][TURN_MIME] for o in c.get("outputs", []) if TURN_MIME in o.get("data", {})]
            if bundles:
                out.append(bundles[-1])
        return out

    def text(self, index: int) -> str:
        return _output_text(self.executed.cells[index])

    def messages(self, session_id: str) -> list[Any]:
        return agent_magic.get_session_messages(session_id, home=self.home)


def _run(name: str, tmp_path: Path, after_cell: Callable[[Run, int], Any] | None = None) -> Run:
    from nbclient import NotebookClient

    work = tmp_path / "nb"
    work.mkdir()
    path = work / name
    shutil.copy(EXAMPLES / name, path)
    home = tmp_path / "home"
    nb = _nbf.read(path, as_version=4)
    run = Run(path, home, _cells(path), nb, [])

    def on_cell_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        run.disk[cell_index] = _cells(path)
        if after_cell is not None:
            run.seen[cell_index] = after_cell(run, cell_index)

    with FakeAnthropicServer() as server:
        ex.install_examples(server)
        env = {**os.environ, **server.env(), "AGENT_MAGIC_HOME": str(home), "JPY_SESSION_NAME": str(path)}
        client = NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(work)}},
                                on_cell_executed=on_cell_executed)
        client.execute(env=env)
        run.requests = server.message_requests
    _check_common(run)
    return run


def _check_common(run: Run) -> None:
    """What holds for every example: turns succeed, replies are scripted and truthful, tool calls are real."""
    turns = run.turns()
    assert turns and [t["status"] for t in turns] == ["success"] * len(turns)
    schemas = {t["name"]: t["input_schema"] for r in run.requests for t in (r.body or {}).get("tools", [])}
    for info in agent_magic.list_sessions(home=run.home):
        messages = run.messages(info.session_id)
        results: dict[str, dict[str, Any]] = {}
        for m in messages:
            for b in m.message.get("content") if isinstance(m.message.get("content"), list) else []:
                if b.get("type") == "tool_result":
                    results[b["tool_use_id"]] = b
        for m in messages:
            if m.type != "assistant":
                continue
            for b in m.message["content"]:
                if b["type"] == "text":
                    assert b["text"].startswith("[scripted]"), b["text"]
                    # a closing answer quotes tool output: every block it shows came back from a tool
                    for quoted in re.findall(r"```\n(.*?)\n```", b["text"], re.S):
                        assert any(quoted.strip("\n") in ex.content_text(r.get("content")) for r in results.values()), quoted
                elif b["type"] == "tool_use":
                    _jsonschema.validate(b["input"], schemas[b["name"]])
                    assert not results[b["id"]].get("is_error"), results[b["id"]]
    # every state of the notebook file was a valid nbformat 4.5 notebook
    for cells in run.disk.values():
        nb = json.loads(run.path.read_text(encoding="utf-8"))
        nb["cells"] = copy.deepcopy(cells)
        _nbf.validate(_nbf.from_dict(nb))
        ids = [c["id"] for c in cells]
        assert len(set(ids)) == len(ids) and all(CELL_ID.match(i) for i in ids)


def _before(run: Run, index: int) -> list[Cell]:
    """The file as it was before cell ``index`` ran (after the last code cell before it)."""
    return run.disk[max(i for i in run.disk if i < index)]


def _position(cells: list[Cell], cell_id: str) -> int:
    return next(i for i, c in enumerate(cells) if c["id"] == cell_id)


def _check_inserted(cell: Cell, *, cell_type: str, source: str, turn: dict[str, Any], existing: list[Cell]) -> None:
    assert cell["cell_type"] == cell_type
    assert cell["source"] == source
    assert CELL_ID.match(cell["id"]) and cell["id"] not in {c["id"] for c in existing}
    if cell_type == "code":
        assert cell["outputs"] == [] and cell["execution_count"] is None
    prov = cell["metadata"]["agent_magic"]
    assert prov["session_id"] == turn["session_id"]
    assert prov["checkpoint_id"] == turn["checkpoint_id"]
    assert prov["turn"] == turn["turn"]
    assert prov["op"] == "insert"


def _prompts(messages: list[Any]) -> list[str]:
    return [ex.content_text(m.message.get("content")) for m in messages if m.is_prompt]


# --------------------------------------------------------------------------- the notebooks as committed


@pytest.mark.parametrize("name", NAMES)
def test_example_notebook_is_clean_and_valid(name: str) -> None:
    raw = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    assert (raw["nbformat"], raw["nbformat_minor"]) == (4, 5)
    checked = copy.deepcopy(raw)
    _nbf.validate(_nbf.from_dict(checked))
    assert checked == raw  # validate() had nothing to repair
    ids = [c["id"] for c in raw["cells"]]
    assert len(set(ids)) == len(ids) and all(CELL_ID.match(i) for i in ids)
    for c in raw["cells"]:
        assert c["metadata"] == {}
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    # the scripted replies anchor their cells at the first cell holding the prompt's phrase: the %%agent cell
    cells = _cells(EXAMPLES / name)
    for phrase, owner in PROMPTS.items():
        holders = [c["source"] for c in cells if phrase.lower() in c["source"].lower()]
        if owner == name:
            assert holders and holders[0].startswith("%%agent"), (phrase, holders)
            assert sum(h.startswith("%%agent") for h in holders) == 1, (phrase, holders)
        else:
            assert holders == [], (phrase, holders)
    # nor in the quickstart's, so one server can play both scripts (as `agent-magic demo` could)
    quickstart = [c["source"].lower() for c in _cells(EXAMPLES / "quickstart.ipynb")]
    assert not [p for p in PROMPTS if any(p.lower() in s for s in quickstart)]


def test_examples_server_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m agent_magic.testing.examples` prints its URL and answers with the examples' script."""
    from .conftest import result_of, run_query

    proc = subprocess.Popen([sys.executable, "-m", "agent_magic.testing.examples"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("AGENT_MAGIC_HOME", str(tmp_path / "home"))
        (tmp_path / "w").mkdir()
        res = result_of(run_query("something no example asks", cwd=tmp_path / "w"))
        assert res.subtype == "success" and res.result == ex.NOT_SCRIPTED
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- clean_csv.ipynb


@pytest.mark.kernel
def test_clean_csv(tmp_path: Path) -> None:
    run = _run("clean_csv.ipynb", tmp_path)
    orig = run.original
    p1 = run.index("%%agent --permission-mode acceptEdits --allow Python\nClean orders.csv")
    p2 = run.index("%%agent --permission-mode acceptEdits --allow Python\nNow add")
    r2 = run.index("%agent rewind --turn 2")
    dry = run.index("%agent rewind --turn 1 --dry-run")
    r1 = run.index("%agent rewind --turn 1")
    t1, t2 = run.turns()
    assert t1["session_id"] == t2["session_id"] and (t1["turn"], t2["turn"]) == (1, 2)

    # turn 1: a note and the cleaning code, right below the prompt; every other cell exactly as committed
    assert _before(run, p1) == orig
    after1 = run.disk[p1]
    assert len(after1) == len(orig) + 2
    note, code = after1[p1 + 1], after1[p1 + 2]
    assert after1[: p1 + 1] + after1[p1 + 3 :] == orig
    _check_inserted(note, cell_type="markdown", source=ex.CLEAN_NOTE, turn=t1, existing=orig)
    _check_inserted(code, cell_type="code", source=ex.CLEAN_CELL, turn=t1, existing=orig)
    # ... and the code ran in the kernel: the person's next cells see the clean `orders`
    dtypes = run.text(run.index("orders.dtypes"))
    assert re.search(r"order_date\s+datetime64", dtypes) and re.search(r"amount\s+float64", dtypes)
    assert "10 rows in, 9 out; 3 orders have no amount" in run.text(p1)

    # turn 2: one cell below the second prompt, nothing else touched
    assert _before(run, p2) == after1
    after2 = run.disk[p2]
    at = _position(after2, orig[p2]["id"]) + 1
    revenue = after2[at]
    assert after2[:at] + after2[at + 1 :] == after1
    _check_inserted(revenue, cell_type="code", source=ex.REVENUE_CELL, turn=t2, existing=after1)

    # rewinding before turn 2 removes just its cell; the dry run changes nothing; before turn 1, all is as committed
    assert run.disk[r2] == after1
    assert revenue["id"] in run.text(r2) and note["id"] not in run.text(r2)
    assert run.disk[dry] == after1
    assert note["id"] in run.text(dry) and code["id"] in run.text(dry)
    assert run.disk[r1] == orig
    assert run.path.read_bytes() == (EXAMPLES / "clean_csv.ipynb").read_bytes()
    # ... and the kernel: the variables the agent's code created are gone again
    assert run.text(run.index('[name for name in ("orders", "revenue")')).strip() == "[]"


# --------------------------------------------------------------------------- fork_compare_models.ipynb


@pytest.mark.kernel
def test_fork_compare_models(tmp_path: Path) -> None:
    def transcripts(run: Run, index: int) -> dict[str, list[tuple[str, str]]]:
        return {
            s.session_id: [(m.uuid, json.dumps(m.message, sort_keys=True)) for m in run.messages(s.session_id)]
            for s in agent_magic.list_sessions(home=run.home)
        }

    run = _run("fork_compare_models.ipynb", tmp_path, after_cell=transcripts)
    orig = run.original
    a1 = run.index("%%agent --permission-mode acceptEdits --allow Python\nBeat the linear baseline")
    fork = run.index("%agent fork")
    b1 = run.index("%%agent --permission-mode acceptEdits --allow Python\nNow try k-nearest")
    a2 = run.index("%%agent\nWhich model would you keep?")
    ta1, tb, ta2 = run.turns()
    original, forked = ta1["session_id"], tb["session_id"]
    assert forked != original and tb["forked_from"] == original
    assert ta2["session_id"] == original and ta2["forked_from"] is None
    infos = {s.session_id: s for s in agent_magic.list_sessions(home=run.home)}
    assert set(infos) == {original, forked} and infos[forked].parent_session_id == original
    assert original[:8] in run.text(run.index('get_ipython().run_line_magic("agent", f"resume {original}")'))

    # the fork's turn left the original's transcript exactly as it was
    after_a1 = run.seen[a1][original]
    assert run.seen[fork][original] == after_a1 and run.seen[b1][original] == after_a1
    assert [m for _, m in run.seen[b1][forked][: len(after_a1)]] == [m for _, m in after_a1]  # a copy of it
    # back in the original, the new turn continues it; the fork's work is not in it
    final = run.seen[a2][original]
    assert final[: len(after_a1)] == after_a1
    assert _prompts(run.messages(original)) == [orig[a1]["source"].split("\n", 1)[1], orig[a2]["source"].split("\n", 1)[1]]
    assert _prompts(run.messages(forked)) == [orig[a1]["source"].split("\n", 1)[1], orig[b1]["source"].split("\n", 1)[1]]
    # (the original's Read of the notebook saw the fork's prompt cell, not yet the cell the fork inserted)
    fork_work = ("knn_predict", "neighbours (k=15), test RMSE")
    assert all(w in json.dumps(run.seen[b1][forked]) for w in fork_work)
    assert not any(w in json.dumps(final) for w in fork_work)
    # ... and the model was sent the original's conversation only
    [keep] = [r for r in run.requests if r.last_prompt.startswith("Which model would you keep?")]
    sent = json.dumps(keep.body)
    assert "polynomial (degree 2), test RMSE" in sent and not any(w in sent for w in fork_work)
    answer = run.text(a2)
    assert "polynomial (degree 2), test RMSE" in answer and "neighbours (k=15), test RMSE" not in answer

    # both sessions inserted their cell into the one notebook, each marked with its session
    end = run.disk[max(run.disk)]
    at_a = _position(end, orig[a1]["id"]) + 1
    at_b = _position(end, orig[b1]["id"]) + 1
    _check_inserted(end[at_a], cell_type="code", source=ex.POLY_CELL, turn=ta1, existing=orig)
    _check_inserted(end[at_b], cell_type="code", source=ex.KNN_CELL, turn=tb, existing=orig)
    assert [c for i, c in enumerate(end) if i not in (at_a, at_b)] == orig
    # and both scores are in the kernel to compare
    scores = run.text(run.index("pd.Series("))
    assert re.search(r"polynomial \(original session\)\s+4\.\d\d", scores)
    assert re.search(r"k-nearest neighbours \(fork\)\s+4\.\d\d", scores)


# --------------------------------------------------------------------------- inspect_dataframe.ipynb


@pytest.mark.kernel
def test_inspect_dataframe(tmp_path: Path) -> None:
    run = _run("inspect_dataframe.ipynb", tmp_path)
    ask = run.index("%%agent --with df --allow Python")
    (turn,) = run.turns()

    # the same DataFrame, built here from the notebook's own cell
    ns: dict[str, Any] = {}
    exec(run.original[run.index("import numpy as np")]["source"], ns)
    df = ns["df"]

    # --with df: the description reached the model as part of the prompt, in every request of the turn
    body = run.original[ask]["source"].split("\n", 1)[1]
    turn_requests = [r for r in run.requests if r.last_prompt.startswith(body)]
    assert len(turn_requests) == 4 and all(describe_value("df", df) in r.last_prompt for r in turn_requests)

    # the tools looked at the kernel's df: their results are what the same calls give here
    messages = run.messages(turn["session_id"])
    results = [ex.content_text(b.get("content")) for m in messages if isinstance(m.message.get("content"), list)
               for b in m.message["content"] if b.get("type") == "tool_result"]
    variables, missing, implausible = results
    assert describe_value("df", df, rows=3) in variables
    assert missing == run_code(ex.MISSING_CODE, {"df": df.copy()})[0]
    assert implausible == run_code(ex.IMPLAUSIBLE_CODE, {"df": df.copy()})[0]

    # the answer says what they found
    answer = run.text(ask)
    bad = (df["temperature_c"] < -50) | (df["temperature_c"] > 60)
    assert f"`humidity_pct` has {int(df['humidity_pct'].isna().sum())} missing values" in answer
    assert f"{int(bad.sum())} temperatures are below -50" in answer

    # the agent left df as it was: the person's fix sees the original data
    df["temperature_c"] = df["temperature_c"].mask(bad)
    assert run.text(run.index('df["temperature_c"] = df["temperature_c"].mask(')) == str(df.describe().round(1))
    # and changed no file
    assert run.path.read_bytes() == (EXAMPLES / "inspect_dataframe.ipynb").read_bytes()
