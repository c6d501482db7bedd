"""Rewinding kernel state in real kernels: the agent's code changes the person's variables; a rewind puts them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .kernel_harness import Kernel

pytestmark = [pytest.mark.kernel]

#: About 100 MB: four float64 columns of 3.3 million rows.
SETUP = """
%load_ext agent_magic
import numpy as np, pandas as pd, warnings
warnings.simplefilter("ignore")  # pandas 4 deprecates inplace=; the agent's code uses it anyway
rng = np.random.default_rng(0)
n = 3_300_000
df = pd.DataFrame({"a": np.arange(n, dtype="float64"), "b": rng.random(n), "c": rng.random(n), "d": rng.random(n)})
df_alias = df
df_before = df.copy(deep=True)
arr = np.arange(1_000_000, dtype="float64")
arr_before = arr.copy()
items = [1, 2, 3]
items_alias = items
label = "before"
"""

AGENT_CODE = """
df.drop(columns=["b"], inplace=True)
df["a"] = df["a"] * 2
arr[:1000] = -1
items.append(4)
label = "after"
created = {"made": "by the agent"}
gen = (i * i for i in range(10))
"""

CHECK = """
assert df.equals(df_before), "df"
assert df is df_alias, "df identity"
assert np.array_equal(arr, arr_before), "arr"
assert items == [1, 2, 3] and items is items_alias, "items"
assert label == "before", label
assert "created" not in globals() and "gen" not in globals(), "created names"
print("RESTORED")
"""




def _agent_turn(kernel: Kernel, fake_api: FakeAnthropicServer, code: str, prompt: str) -> str:
    fake_api.add(tool_use("Python", {"code": code, "description": "change the data"}), text("Done."))
    run = kernel.ok(f"%%agent --permission-mode bypassPermissions\n{prompt}")
    return run.text


def test_rewind_restores_the_variables_the_agents_code_changed(kernel: Kernel, fake_api: FakeAnthropicServer, home: Path) -> None:
    kernel.ok(SETUP, timeout=120)
    _agent_turn(kernel, fake_api, AGENT_CODE, "clean the data")
    # The agent was told what a rewind cannot keep: the generator it made.
    sent = json.dumps(fake_api.message_requests[1].tool_results[0])
    assert "gen (a generator cannot be copied" in sent
    kernel.ok("assert 'b' not in df.columns and items == [1, 2, 3, 4] and label == 'after' and arr[0] == -1")

    preview = kernel.ok("%agent rewind --turn 1 --dry-run").text
    assert "restore variable df (pandas.DataFrame" in preview and "in place" in preview
    assert "restore variable arr (numpy.ndarray" in preview and "restore variable label" in preview
    assert "delete variable created" in preview and "delete variable gen" in preview
    assert "not restorable (variable): gen: a generator cannot be copied" in preview
    kernel.ok("assert 'b' not in df.columns")  # a dry run changes nothing

    done = kernel.ok("%agent rewind --turn 1").text
    assert "Put back" in done or "put back" in done
    assert "RESTORED" in kernel.ok(CHECK).text
    usage = kernel.ok("%agent kernel-checkpoints").text
    assert "Kernel variable snapshots" in usage and "1 snapshot" in usage


def test_two_turns_rewound_at_once_and_no_kernel_leaves_variables(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    kernel.ok("%load_ext agent_magic\nimport numpy as np\nx = np.zeros(10)\ny = [1]\nz = 'z'")
    _agent_turn(kernel, fake_api, "x += 1\ny.append(2)", "first")
    _agent_turn(kernel, fake_api, "x *= 5\ny.append(3)\nz = 'changed'", "second")
    kernel.ok("assert x[0] == 5 and y == [1, 2, 3] and z == 'changed'")
    out = kernel.ok("%agent rewind --turn 2 --no-kernel").text
    assert "Kernel variables were left as they are" in out
    kernel.ok("assert x[0] == 5 and z == 'changed'")
    kernel.ok("%agent rewind --turn 1")  # both turns: each name back to before its first change
    kernel.ok("assert x[0] == 0 and y == [1] and z == 'z'")


def test_snapshots_off_and_a_restart_are_said_not_hidden(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    kernel.ok("%load_ext agent_magic\nv = [1]")
    _agent_turn(kernel, fake_api, "v.append(2)", "first")
    kernel.restart()
    kernel.ok("%load_ext agent_magic\nv = [1, 2]")
    out = kernel.ok("%agent rewind --turn 1").text
    assert "taken before the kernel restarted" in out
    kernel.ok("assert v == [1, 2]")  # never applied to the new kernel's variables
    kernel.ok("%config AgentMagics.kernel_snapshots = False")
    _agent_turn(kernel, fake_api, "v.append(3)", "second")
    kernel.ok("%agent rewind --turn 2")
    kernel.ok("assert v == [1, 2, 3]")


def test_the_slider_previews_and_rewinds_variables(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    import time

    kernel.ok("%load_ext agent_magic\nimport numpy as np\nm = np.ones(1000)\nnotes = ['a']\nw = 1")
    _agent_turn(kernel, fake_api, "m[:] = 7\nnotes.append('b')\nfresh = 3", "first")
    _agent_turn(kernel, fake_api, "w = 2\ngen = (i for i in range(5))\nnext(gen)", "second")
    kernel.ok("%agent checkpoints")
    comm = kernel.find_widget("position")
    kernel.send_custom(comm, {"type": "select", "position": 0})  # before turn 1: both turns undone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (kernel.comms[comm].get("preview") or {}).get("variables"):
        time.sleep(0.05)
    preview = kernel.comms[comm]["preview"]
    planned = {v["name"]: v["action"] for v in preview["variables"]}
    assert planned == {"m": "restore", "notes": "restore", "fresh": "delete", "w": "restore", "gen": "delete"}, planned
    assert [v["name"] for v in preview["variables_not_restored"]] == ["gen"]
    kernel.ok("assert m[0] == 7 and w == 2")  # a preview changes nothing
    kernel.send_custom(comm, {"type": "rewind"})
    kernel.send_custom(comm, {"type": "confirm"})
    while time.monotonic() < deadline and not (kernel.comms[comm].get("result") or {}).get("variables"):
        time.sleep(0.05)
    assert {v["name"] for v in kernel.comms[comm]["result"]["variables"]} == set(planned)
    kernel.ok("assert (m == 1).all() and notes == ['a'] and w == 1\nassert 'fresh' not in globals() and 'gen' not in globals()")


def test_a_cell_whose_variables_came_back_is_not_marked_stale(kernel: Kernel, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    import nbformat

    nb_path = workspace / "analysis.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.id = "load"
    nb.cells = [cell]
    nbformat.write(nb, str(nb_path))
    kernel.ok("%load_ext agent_magic")
    kernel.run("x = 1", cell_id="load")

    def turn(prompt: str) -> None:
        fake_api.add(
            tool_use("Read", {"file_path": str(nb_path)}),
            tool_use("NotebookEdit", {"notebook_path": str(nb_path), "cell_id": "load", "new_source": "x = 2"}),
            tool_use("Python", {"code": "x = 2", "description": "use the new value"}),
            text("x is 2 now."),
        )
        kernel.ok(f"%%agent --permission-mode bypassPermissions\n{prompt}")
        kernel.run("x = 2", cell_id="load")  # the person runs the edited cell

    turn("make x two")
    out = kernel.ok("%agent rewind --turn 1").text
    assert "restore variable x" in out and "Re-run" not in out, out  # x is back: the cell's state matches its code
    kernel.ok("assert x == 1")
    turn("make x two again")
    out = kernel.ok("%agent rewind --turn 2 --no-kernel").text
    assert "Re-run" in out and "load" in out, out  # x stays 2 while the cell says 1


def test_a_rewind_without_the_kernel_says_variables_are_not_part_of_it(
    kernel: Kernel, fake_api: FakeAnthropicServer, home: Path
) -> None:
    import subprocess
    import sys

    kernel.ok("%load_ext agent_magic\nv = [1]")
    _agent_turn(kernel, fake_api, "v.append(2)", "first")
    sid, cp = kernel.ok(
        "from agent_magic import list_checkpoints, list_sessions\n"
        "sid = list_sessions()[0].session_id\nprint(sid, list_checkpoints(sid)[0].checkpoint_id)"
    ).text.split()
    cli = subprocess.run(
        [sys.executable, "-m", "agent_magic.cli", "rewind", sid, cp],
        capture_output=True, text=True, env={**__import__("os").environ, "AGENT_MAGIC_HOME": str(home)}, timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "Kernel variables are not part of this rewind" in cli.stdout
    kernel.ok("assert v == [1, 2]")


def test_a_kernel_function_called_as_a_tool_is_undone_too(kernel: Kernel, fake_api: FakeAnthropicServer) -> None:
    kernel.ok(
        "%load_ext agent_magic\nimport pandas as pd\n"
        "sales = pd.DataFrame({'amount': [1.0, 2.0, 3.0]})\ncalls = 0\n"
        "def scale(df: pd.DataFrame, k: float) -> int:\n"
        "    '''Multiply the amounts in place.'''\n"
        "    global calls\n"
        "    calls += 1\n"
        "    df['amount'] *= k\n"
        "    return calls\n"
    )
    kernel.ok("%agent tool scale")
    fake_api.add(tool_use("scale", {"df": "sales", "k": 10}), text("Scaled."))
    kernel.ok("%%agent --permission-mode bypassPermissions\nscale the sales by ten")
    kernel.ok("assert list(sales['amount']) == [10.0, 20.0, 30.0] and calls == 1")
    out = kernel.ok("%agent rewind --turn 1").text
    assert "restore variable sales" in out and "restore variable calls" in out, out
    kernel.ok("assert list(sales['amount']) == [1.0, 2.0, 3.0] and calls == 0")
