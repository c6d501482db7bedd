"""Extending the agent from a notebook: kernel functions as tools, answers as values, MCP and memory listings.

In-process IPython shells (the ``ip`` fixture) against the fake Messages API over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import agent_magic as am
from agent_magic import _api
from agent_magic.notebook._function_schema import BadArgument, parse_docstring
from agent_magic.notebook._functions import function_spec
from agent_magic.notebook._magics import AgentTurnError
from agent_magic.testing import FakeAnthropicServer, text, tool_use

FUNCTIONS = '''
import json
import pathlib
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Optional

import numpy as np
import pandas as pd


def load_sales(path: str, region: Optional[str] = None, limit: int = 100) -> pd.DataFrame:
    """Load the monthly sales table.

    Reads the CSV export of the shop.

    Parameters
    ----------
    path : str
        CSV file to read.
    region : str, optional
        Only rows of this region.
    limit : int
        At most this many rows.

    Returns
    -------
    pd.DataFrame
    """
    df = pd.read_csv(path)
    if region is not None:
        df = df[df["region"] == region]
    return df.head(limit)


def summarize(df: pd.DataFrame, columns: list[str], how: Literal["mean", "sum"] = "mean") -> dict[str, float]:
    """Summarise columns of a table.

    Args:
        df: The table to summarise.
        columns: Columns to aggregate,
            in this order.
        how: The aggregation.
    """
    agg = df[columns].sum() if how == "sum" else df[columns].mean()
    return {c: float(agg[c]) for c in columns}


class Unit(Enum):
    EUR = "eur"
    USD = "usd"


@dataclass
class Window:
    start: str
    months: int = 3


def forecast(series: np.ndarray, window: Window, unit: Unit = Unit.EUR, scale: float = 1.0,
             shape: tuple[int, int] = (1, 2), labels: dict[str, int] | None = None) -> str:
    return f"{len(series)} {window.start} {window.months} {unit.value} {scale} {shape} {labels}"


def report(title, *, verbose: bool = False):
    print("building", title)
    return None


def write_note(text: str) -> str:
    """Write a note to note.txt."""
    pathlib.Path("note.txt").write_text(text)
    return "saved"


def broken(n: int) -> int:
    """Always fails."""
    return helper(n)


def helper(n):
    raise ValueError(f"bad n: {n}")


sales = pd.DataFrame({"region": ["north", "south", "north"], "amount": [10.0, 20.0, 30.0], "units": [1, 2, 3]})
numbers = [1, 2, 3]
'''


@pytest.fixture
def nb(ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """The shell with realistic notebook functions defined (in ``__main__``, as a notebook's are)."""
    monkeypatch.setenv("AGENT_MAGIC_CONFIG_DIR", str(tmp_path / "user-config"))  # no user memory from this machine
    assert ip.run_cell(FUNCTIONS).error_in_exec is None
    yield ip


def line(ip: InteractiveShell, text_: str) -> BaseException | None:
    r = ip.run_cell(f"%agent {text_}")
    return r.error_in_exec or r.error_before_exec


def cell(ip: InteractiveShell, line_: str, body: str) -> BaseException | None:
    r = ip.run_cell(f"%%agent {line_}\n{body}")
    return r.error_in_exec or r.error_before_exec


def tool_spec(server: FakeAnthropicServer, name: str, i: int = 0) -> dict[str, Any]:
    tools = {t["name"]: t for t in server.message_requests[i].body.get("tools", [])}
    assert name in tools, sorted(tools)
    return tools[name]


# -- schemas -----------------------------------------------------------------------


def test_docstring_sections_numpydoc_and_google() -> None:
    text_, params = parse_docstring(
        """Fit the model.

        Longer words.

        Parameters
        ----------
        x, y : array
            The data,
            on two lines.
        *args
            Ignored.

        Returns
        -------
        float
        """
    )
    assert params == {"x": "The data, on two lines.", "y": "The data, on two lines.", "args": "Ignored."}
    assert "Longer words." in text_ and "Returns" in text_ and "Parameters" not in text_
    text_, params = parse_docstring("Do it.\n\nArgs:\n    a (int): First.\n    b: Second,\n        continued.\n\nReturns:\n    Nothing.\n")
    assert params == {"a": "First.", "b": "Second, continued."}
    assert text_.startswith("Do it.") and "Returns:" in text_ and "Args" not in text_


def test_schemas_from_hints_and_docstrings(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("ok"))
    assert line(nb, "tool load_sales summarize forecast report") is None
    assert cell(nb, "", "what tools do you have?") is None

    load = tool_spec(fake_api, "load_sales")
    assert load["description"].startswith("Load the monthly sales table.\n\nReads the CSV export of the shop.")
    assert "load_sales(path: str, region: Optional[str] = None, limit: int = 100)" in load["description"]
    schema = load["input_schema"]
    assert schema["required"] == ["path"] and schema["additionalProperties"] is False
    assert schema["properties"]["path"] == {"type": "string", "description": "CSV file to read."}
    assert schema["properties"]["region"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}], "description": "Only rows of this region.", "default": None,
    }
    assert schema["properties"]["limit"] == {"type": "integer", "description": "At most this many rows.", "default": 100}

    summ = tool_spec(fake_api, "summarize")
    props = summ["input_schema"]["properties"]
    assert props["df"] == {"type": "string", "description": "name of a kernel variable holding a pandas DataFrame. The table to summarise."}
    assert props["columns"] == {"type": "array", "items": {"type": "string"}, "description": "Columns to aggregate, in this order."}
    assert props["how"] == {"enum": ["mean", "sum"], "type": "string", "description": "The aggregation.", "default": "mean"}
    assert summ["input_schema"]["required"] == ["df", "columns"]
    assert "pass the NAME of a kernel variable" in summ["description"] and "`df`" in summ["description"]

    props = tool_spec(fake_api, "forecast")["input_schema"]["properties"]
    assert props["series"]["description"] == "name of a kernel variable holding a numpy array"
    assert props["window"] == {
        "type": "object", "properties": {"start": {"type": "string"}, "months": {"type": "integer"}},
        "required": ["start"], "additionalProperties": False,
    }
    assert props["unit"] == {"enum": ["eur", "usd"], "type": "string", "default": "eur"}
    assert props["scale"] == {"type": "number", "default": 1.0}
    assert props["shape"] == {
        "type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "minItems": 2, "maxItems": 2, "default": [1, 2],
    }
    assert props["labels"]["anyOf"] == [{"type": "object", "additionalProperties": {"type": "integer"}}, {"type": "null"}]

    rep = tool_spec(fake_api, "report")["input_schema"]
    assert rep["properties"] == {"title": {}, "verbose": {"type": "boolean", "default": False}} and rep["required"] == ["title"]
    assert tool_spec(fake_api, "report")["description"].startswith("The notebook function `report`.")


def test_pydantic_typeddict_and_numpy_scalar_parameters(nb: InteractiveShell) -> None:
    nb.run_cell(
        "import pydantic\nfrom typing import TypedDict\n"
        "class Point(pydantic.BaseModel):\n    x: int\n    y: int = 0\n"
        "class Options(TypedDict):\n    color: str\n"
        "def plot(p: Point, opts: Options, bins: np.int64, /, alpha: np.float32 | None = None) -> None:\n    pass\n"
    )
    spec = function_spec("plot", nb.user_ns["plot"])
    props = spec.input_schema["properties"]
    assert props["p"]["type"] == "object" and props["p"]["required"] == ["x"]
    assert props["opts"] == {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"], "additionalProperties": False}
    assert props["bins"] == {"type": "integer"} and props["alpha"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    args, kwargs = spec.bind({"p": {"x": 3}, "opts": {"color": "red"}, "bins": 4, "alpha": 0.5}, nb.user_ns)
    assert args[0] == nb.user_ns["Point"](x=3, y=0) and args[1] == {"color": "red"}
    assert type(args[2]).__name__ == "int64" and args[2] == 4 and kwargs == {"alpha": 0.5}
    with pytest.raises(BadArgument, match="`p` does not fit Point"):
        spec.bind({"p": {"x": "three"}, "opts": {"color": "red"}, "bins": 4}, nb.user_ns)
    with pytest.raises(BadArgument, match="`opts` needs the field `color`"):
        spec.bind({"p": {"x": 1}, "opts": {}, "bins": 4}, nb.user_ns)


# -- registering -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("tool Read", "built-in tool"),
        ("tool Python", "built-in tool"),
        ("tool 2x", "not a function name"),
        ("tool not_defined_anywhere", "run the cell that defines it"),
        ("tool numbers", "list, not a function"),
        ("tool Unit", "a class, not a function"),
        ("tool fetch_async", "async function"),
        ("tool", "`%agent tool NAME"),
        ("tool --remove load_sales", "not a kernel tool here"),
    ],
)
def test_tool_mistakes_are_one_line_usage_errors(nb: InteractiveShell, command: str, words: str) -> None:
    nb.run_cell("def Read(x: int) -> int:\n    return x\ndef Python():\n    pass\nasync def fetch_async():\n    pass\n")
    err = line(nb, command)
    assert isinstance(err, UsageError), err
    assert words in str(err) and "\n" not in str(err)


def test_tools_listing_and_remove(nb: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert line(nb, "tool load_sales summarize") is None
    out = capsys.readouterr().out
    assert "load_sales(path: str, region: Optional[str] = None, limit: int = 100) -> pandas.DataFrame is a tool" in out
    nb.run_cell("del summarize")
    assert line(nb, "tools") is None
    out = capsys.readouterr().out
    assert "load_sales" in out and "Load the monthly sales table." in out and "registered" in out
    assert "summarize" in out and "missing" in out
    assert "Kernel tools not defined yet: summarize — run the cells that define them, or `%agent tool --remove NAME`." in out
    assert line(nb, "tool --remove summarize") is None
    assert line(nb, "tools") is None
    out = capsys.readouterr().out
    assert "summarize" not in out.split("is no longer offered")[-1]


# -- calls ---------------------------------------------------------------------------------------


def test_registered_function_is_called_without_asking(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(
        tool_use("summarize", {"df": "sales", "columns": ["amount", "units"], "how": "sum"}),
        tool_use("report", {"title": "Q3"}),
        text("Totals computed."),
    )
    assert line(nb, "tool summarize report") is None
    # default permission mode, no front end to ask: only the registration allows these calls
    assert cell(nb, "", "total the sales") is None
    res = fake_api.message_requests[1].tool_results[0]
    assert not res.get("is_error") and res["content"] == "{'amount': 60.0, 'units': 6.0}"
    res = fake_api.message_requests[2].tool_results[0]
    assert not res.get("is_error") and res["content"] == "Printed:\nbuilding Q3\n\nReturned:\n(returned None)"


def test_dataframe_return_and_bad_arguments(nb: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    nb.user_ns["sales"].to_csv(workspace / "sales.csv", index=False)
    fake_api.add(
        tool_use("load_sales", {"path": "sales.csv", "region": "north", "limit": "5"}),
        tool_use("load_sales", {"path": "sales.csv", "limit": "many"}),
        tool_use("summarize", {"df": "numbers", "columns": ["amount"]}),
        tool_use("summarize", {"df": "nothing_here", "columns": ["amount"]}),
        tool_use("load_sales", {"path": "sales.csv", "colour": "red"}),
        tool_use("load_sales", {}),
        text("done"),
    )
    assert line(nb, "tool load_sales summarize") is None
    assert cell(nb, "", "load it") is None
    results = [fake_api.message_requests[i].tool_results[0] for i in range(1, 7)]
    assert not results[0].get("is_error")
    assert results[0]["content"].startswith("DataFrame, 2 rows, 3 columns:\n") and "30.0" in results[0]["content"] and "20.0" not in results[0]["content"]
    assert results[1]["is_error"] and "`limit` must be an integer" in results[1]["content"]
    assert results[2]["is_error"] and "`df`: the kernel variable `numbers` holds list, not a pandas DataFrame" in results[2]["content"]
    assert results[3]["is_error"] and "no kernel variable `nothing_here`" in results[3]["content"]
    assert results[4]["is_error"] and "Unknown parameter `colour`" in results[4]["content"]
    assert results[5]["is_error"] and "Missing required parameter `path`" in results[5]["content"]


def test_exception_is_a_tool_error_with_the_functions_traceback(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(tool_use("broken", {"n": 7}), text("It failed."))
    assert line(nb, "tool broken") is None
    assert cell(nb, "", "try it") is None
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"]
    content = res["content"]
    assert content.startswith("Traceback (most recent call last):") and content.rstrip().endswith("ValueError: bad n: 7")
    assert "return helper(n)" in content and 'raise ValueError(f"bad n: {n}")' in content
    assert "_functions.py" not in content


def test_deny_rules_and_plan_mode_still_apply(nb: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("write_note", {"text": "hi"}), text("Denied, fine."), tool_use("write_note", {"text": "hi"}), text("Planning only."))
    assert line(nb, "tool write_note") is None
    assert cell(nb, "--deny write_note", "write a note") is None
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"] and "write_note" in res["content"] and not (workspace / "note.txt").exists()
    assert cell(nb, "--permission-mode plan", "plan a note") is None
    res = fake_api.message_requests[3].tool_results[0]
    assert res["is_error"] and "plan mode" in res["content"] and not (workspace / "note.txt").exists()


def test_files_a_function_writes_are_checkpointed(nb: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("write_note", {"text": "hello"}), text("Saved."))
    assert line(nb, "tool write_note") is None
    assert cell(nb, "", "write a note") is None
    assert (workspace / "note.txt").read_text() == "hello"
    assert line(nb, "rewind --turn 1") is None
    assert not (workspace / "note.txt").exists()


def test_registration_is_remembered_with_the_session(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("one"), text("two"))
    assert line(nb, "tool load_sales") is None  # before the notebook has a session
    assert cell(nb, "", "first") is None
    sid = am.list_sessions()[0].session_id
    assert _api.get_kernel_tools(sid) == ["load_sales"]
    assert line(nb, "tool summarize") is None  # the session exists: saved at once
    assert _api.get_kernel_tools(sid) == ["load_sales", "summarize"]
    assert line(nb, "tool --remove load_sales") is None
    assert _api.get_kernel_tools(sid) == ["summarize"]
    assert cell(nb, "", "second") is None
    names = {t["name"] for t in fake_api.message_requests[-1].body["tools"]}
    assert "summarize" in names and "load_sales" not in names


# -- answers as values ---------------------------------------------------------------------------


def test_into_stores_the_answer_text(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("The north sells most."))
    assert cell(nb, "--into finding", "who sells most?") is None
    assert nb.user_ns["finding"] == "The north sells most."
    assert "output_format" not in json.dumps(fake_api.message_requests[0].body)


def test_into_with_schema_dict_pydantic_and_file(nb: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    nb.run_cell(
        "import pydantic\n"
        "schema = {'type': 'object', 'properties': {'region': {'type': 'string'}, 'total': {'type': 'number'}}, 'required': ['region', 'total']}\n"
        "class Best(pydantic.BaseModel):\n    region: str\n    total: float\n"
    )
    (workspace / "best.json").write_text(json.dumps(nb.user_ns["schema"]))
    fake_api.add(
        text('{"region": "north", "total": 40}'),
        text('Here it is:\n```json\n{"region": "south", "total": 20.5}\n```'),
        text('{"region": "east", "total": 1}'),
        text("plain words"),
    )
    assert cell(nb, "--into best --schema schema", "which region sells most?") is None
    assert nb.user_ns["best"] == {"region": "north", "total": 40}
    assert "validates against this JSON schema" in json.dumps(fake_api.message_requests[0].body)
    assert cell(nb, "--into model --schema Best", "and the least?") is None
    assert nb.user_ns["model"] == nb.user_ns["Best"](region="south", total=20.5)
    assert cell(nb, "--into from_file --schema best.json", "and east?") is None
    assert nb.user_ns["from_file"] == {"region": "east", "total": 1}
    # a turn without --schema asks for no format again
    assert cell(nb, "--into words", "say it plainly") is None
    assert nb.user_ns["words"] == "plain words"
    assert "validates against this JSON schema" not in fake_api.message_requests[-1].body["messages"][-1]["content"][-1]["text"]


def test_failed_structured_answer_leaves_the_variable(nb: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    nb.user_ns["schema"] = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    nb.user_ns["best"] = "before"
    fake_api.add(text("no json"), text("still none"), text("nope"))
    err = cell(nb, "--into best --schema schema", "count")
    assert isinstance(err, AgentTurnError) and err.subtype == "error_max_structured_output_retries"
    assert nb.user_ns["best"] == "before"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ("--into 1x", "not a Python variable name"),
        ("--into class", "not a Python variable name"),
        ("--schema schema", "--schema needs --into NAME"),
        ("--into x --schema nowhere", "no kernel variable or JSON file"),
        ("--into x --schema numbers", "the variable holds list"),
    ],
)
def test_into_and_schema_mistakes(nb: InteractiveShell, fake_api: FakeAnthropicServer, options: str, words: str) -> None:
    nb.user_ns["schema"] = {"type": "object"}
    err = cell(nb, options, "anything")
    assert isinstance(err, UsageError) and words in str(err) and "\n" not in str(err)
    assert fake_api.message_requests == []


# -- MCP and memory ------------------------------------------------------------------------------


def test_mcp_without_servers_says_how_to_add_one(nb: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert line(nb, "mcp") is None
    out = capsys.readouterr().out
    assert "No MCP servers configured" in out and "AgentMagics.mcp_servers" in out and ".mcp.json" in out


def test_mcp_lists_configured_servers(nb: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]) -> None:
    nb.run_cell("%config AgentMagics.mcp_servers = {'warehouse': {'type': 'http', 'url': 'http://127.0.0.1:9/mcp'}}")
    assert line(nb, "mcp") is None
    out = capsys.readouterr().out
    assert "warehouse" in out and "http" in out


def test_memory_lists_loaded_files(nb: InteractiveShell, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workspace / "AGENTS.md").write_text("Use pandas. Plot with matplotlib.\n")
    assert line(nb, "memory") is None
    out = capsys.readouterr().out
    assert str(workspace / "AGENTS.md") in out and "project" in out and "34 bytes" in out
    nb.run_cell("%config AgentMagics.setting_sources = []")
    assert line(nb, "memory") is None
    out = capsys.readouterr().out
    assert "Project memory is off" in out and "AGENTS.md" not in out


def test_memory_reaches_the_system_prompt_and_can_be_turned_off(nb: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    (workspace / "AGENTS.md").write_text("Always answer in French.\n")
    fake_api.add(text("oui"), text("yes"))
    assert cell(nb, "", "hi") is None
    assert "Always answer in French." in json.dumps(fake_api.message_requests[0].body["system"])
    nb.run_cell("%config AgentMagics.setting_sources = []")
    assert cell(nb, "", "again") is None
    assert "Always answer in French." not in json.dumps(fake_api.message_requests[-1].body["system"])
