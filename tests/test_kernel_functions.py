"""Kernel functions as tools and answers as values in real Jupyter kernels (``%agent tool``, ``%%agent --into``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_magic import _api
from agent_magic.notebook._display import TURN_MIME
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .kernel_harness import Kernel

pytestmark = [pytest.mark.kernel]

DEFINE_SALES = '''
from typing import Literal
import pandas as pd

sales = pd.DataFrame({"region": ["north", "south", "east"], "amount": [10.0, 40.0, 25.0], "units": [1, 9, 4]})

def top_regions(df: pd.DataFrame, n: int = 2, metric: Literal["amount", "units"] = "amount") -> list[str]:
    """The regions with the highest totals.

    Parameters
    ----------
    df : pd.DataFrame
        A table with a `region` column.
    n : int
        How many regions.
    metric : str
        The column to rank by.
    """
    return list(df.groupby("region")[metric].sum().sort_values(ascending=False).index[:n])
'''

DEFINE_KPIS = '''
def plot_kpis(year: int) -> str:
    """Plot the KPIs of a year."""
    return f"plotted {year}"
'''


@pytest.fixture
def kernel_env(fake_api: FakeAnthropicServer, home: Path, tmp_path: Path) -> dict[str, str]:
    return {
        **fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1",
        "AGENT_MAGIC_CONFIG_DIR": str(tmp_path / "user-config"),
    }


@pytest.fixture
def kernel(workspace: Path, kernel_env: dict[str, str]) -> Iterator[Kernel]:
    nb = workspace / "sales.ipynb"
    k = Kernel(workspace, {**kernel_env, "JPY_SESSION_NAME": str(nb)})
    try:
        yield k
    finally:
        k.close()


def offered(server: FakeAnthropicServer, i: int = -1) -> dict[str, dict[str, object]]:
    return {t["name"]: t for t in server.message_requests[i].body.get("tools", [])}


def test_registered_function_is_called_with_typed_arguments(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(tool_use("top_regions", {"df": "sales", "n": 1, "metric": "units"}), text("South sells the most units."))
    kernel.ok("%load_ext agent_magic\n" + DEFINE_SALES)
    out = kernel.ok("%agent tool top_regions").text
    assert "top_regions(df: pandas.DataFrame, n: int = 2, metric: Literal['amount', 'units'] = 'amount') -> list[str] is a tool" in out
    run = kernel.ok("%%agent\nwhich region sells the most units?")
    tool = offered(fake_api, 0)["top_regions"]
    assert str(tool["description"]).startswith("The regions with the highest totals.")
    assert tool["input_schema"] == {
        "type": "object",
        "properties": {
            "df": {"type": "string", "description": "name of a kernel variable holding a pandas DataFrame. A table with a `region` column."},
            "n": {"type": "integer", "description": "How many regions.", "default": 2},
            "metric": {"enum": ["amount", "units"], "type": "string", "description": "The column to rank by.", "default": "amount"},
        },
        "required": ["df"],
        "additionalProperties": False,
    }
    res = fake_api.message_requests[1].tool_results[0]
    assert not res.get("is_error") and res["content"] == "['south']"
    assert "South sells the most units." in run.text
    assert run.bundles(TURN_MIME)[-1]["status"] == "success"


def test_function_that_raises_is_a_tool_error_and_the_turn_goes_on(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(tool_use("top_regions", {"df": "sales", "metric": "units", "n": 2}), text("The column is missing; I will ask."))
    kernel.ok("%load_ext agent_magic\n" + DEFINE_SALES + "\nsales = sales.drop(columns=['units'])")
    kernel.ok("%agent tool top_regions")
    run = kernel.ok("%%agent\nrank by units")
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"]
    content = res["content"]
    assert content.startswith("Traceback (most recent call last):") and "KeyError" in content.splitlines()[-1]
    assert 'return list(df.groupby("region")[metric]' in content
    assert "_functions.py" not in content and "_kernel_tools.py" not in content
    assert run.bundles(TURN_MIME)[-1]["status"] == "success" and "I will ask." in run.text


def test_restart_reoffers_remembered_functions_and_names_the_missing(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("Noted."), text("Back again."), text("All there."))
    kernel.ok("%load_ext agent_magic\n" + DEFINE_SALES + DEFINE_KPIS)
    kernel.ok("%agent tool top_regions plot_kpis")
    first = kernel.ok("%%agent\nremember my tools")
    sid = first.bundles(TURN_MIME)[-1]["session_id"]
    assert _api.get_kernel_tools(sid) == ["top_regions", "plot_kpis"]
    assert {"top_regions", "plot_kpis"} <= set(offered(fake_api))

    kernel.restart()
    kernel.ok("%load_ext agent_magic\n" + DEFINE_SALES)  # plot_kpis's cell was not run again
    run = kernel.ok("%%agent\nare my tools back?")
    assert run.bundles(TURN_MIME)[-1]["session_id"] == sid
    note = "Kernel tools not defined yet: plot_kpis — run the cells that define them, or `%agent tool --remove NAME`."
    assert run.text.count("Kernel tools not defined yet") == 1 and note in run.text
    names = set(offered(fake_api))
    assert "top_regions" in names and "plot_kpis" not in names

    listing = kernel.ok("%agent tools").text
    assert "top_regions" in listing and "registered" in listing and "plot_kpis" in listing and "missing" in listing

    kernel.ok(DEFINE_KPIS)
    again = kernel.ok("%%agent\nand now?")
    assert "Kernel tools not defined yet" not in again.text
    assert {"top_regions", "plot_kpis"} <= set(offered(fake_api))
    assert _api.get_kernel_tools(sid) == ["top_regions", "plot_kpis"]


def test_a_running_function_stops_on_the_kernel_interrupt(kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("wait_for_data", {}), text("It was stopped."))
    kernel.ok(
        "%load_ext agent_magic\nimport pathlib, time\n"
        "def wait_for_data() -> str:\n"
        "    pathlib.Path('started').write_text('yes')\n"
        "    time.sleep(60)\n"
        "    return 'data'\n"
    )
    kernel.ok("%agent tool wait_for_data")
    run = kernel.start("%%agent\nwait for the data")
    deadline = time.monotonic() + 30
    while not (workspace / "started").exists():
        assert time.monotonic() < deadline, run.text
        time.sleep(0.05)
    kernel.interrupt()
    assert run.done.wait(30), run.text
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"] and "KeyboardInterrupt: wait_for_data was interrupted." in res["content"]
    assert "It was stopped." in run.text
    assert kernel.ok("print('still usable')").text.strip() == "still usable"


def test_into_stores_text_and_parsed_schema_answers(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(
        text("North and east trail south."),
        text('```json\n{"best": "south", "total": 40.0, "others": ["east", "north"]}\n```'),
    )
    kernel.ok(
        "%load_ext agent_magic\n"
        "schema = {'type': 'object', 'properties': {'best': {'type': 'string'}, 'total': {'type': 'number'},"
        " 'others': {'type': 'array', 'items': {'type': 'string'}}}, 'required': ['best', 'total']}\n"
        "answer = 'untouched'"
    )
    kernel.ok("%%agent --into summary\nsummarise the regions")
    assert kernel.ok("print(repr(summary))").text.strip() == "'North and east trail south.'"
    kernel.ok("%%agent --into answer --schema schema\nwhich region is best?")
    out = kernel.ok("print(type(answer).__name__, answer['best'], answer['total'], answer['others'])").text.strip()
    assert out == "dict south 40.0 ['east', 'north']"
