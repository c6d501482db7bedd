"""The sidebar's way into a kernel's variables: ``kernel_rewind`` evaluated as a user expression.

The JupyterLab sidebar rewinds files and cells through the server, then sends the
notebook's kernel a silent execute request whose ``user_expressions`` call
``agent_magic.notebook._kernel_state.kernel_rewind`` (labextension/src/kernelvars.ts).
Here a second client of a real kernel sends that same request, as the browser does.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from agent_magic import _api
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .kernel_harness import Kernel

pytestmark = [pytest.mark.kernel]

SETUP = """
%load_ext agent_magic
import numpy as np
items = [1, 2, 3]
items_alias = items
arr = np.arange(100_000, dtype="float64")
arr_before = arr.copy()
"""

AGENT_CODE = """
items.append(4)
arr[:10] = -1
made = {"by": "the agent"}
"""


def expression(session_id: str, checkpoint_id: str, dry_run: bool) -> str:
    """What kernelvars.ts's ``rewindExpression`` builds (JSON strings are Python strings)."""
    args = f"{json.dumps(session_id)}, {json.dumps(checkpoint_id)}, {dry_run!r}"
    return (
        f"(lambda m: m.kernel_rewind({args}) if m is not None else None)"
        "(__import__('sys').modules.get('agent_magic.notebook._kernel_state'))"
    )


def test_the_expression_is_the_one_the_front_end_sends() -> None:
    """``expression`` stays what kernelvars.ts builds: its two literal parts around the arguments."""
    source = (Path(__file__).parents[1] / "labextension" / "src" / "kernelvars.ts").read_text()
    head = "(lambda m: m.kernel_rewind("
    tail = ") if m is not None else None)(__import__('sys').modules.get('agent_magic.notebook._kernel_state'))"
    assert expression("s", "c", True) == f'{head}"s", "c", True{tail}'
    assert f'"{head}"' in source and f'"{tail}"' in source


def evaluate(kernel: Kernel, expr: str) -> dict[str, Any]:
    """Evaluate ``expr`` as the browser does: a silent execute request from another client."""
    client = kernel.km.blocking_client()
    client.start_channels()
    try:
        reply = client.execute(
            "", silent=True, store_history=False, user_expressions={"rewind": expr}, allow_stdin=False,
            stop_on_error=False, reply=True, timeout=60,
        )
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    value: dict[str, Any] = reply["content"]["user_expressions"]["rewind"]
    return value


def answer(kernel: Kernel, session_id: str, checkpoint_id: str, dry_run: bool) -> Any:
    value = evaluate(kernel, expression(session_id, checkpoint_id, dry_run))
    assert value["status"] == "ok", value
    found = ast.literal_eval(value["data"]["text/plain"])
    return None if found is None else json.loads(found)




def _turn(kernel: Kernel, fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> tuple[str, str]:
    """One agent turn running AGENT_CODE; its session and checkpoint ids."""
    fake_api.add(tool_use("Python", {"code": AGENT_CODE, "description": "change the data"}), text("Done."))
    kernel.ok("%%agent --permission-mode bypassPermissions\nchange the data")
    scope = str((workspace / "analysis.ipynb").resolve())
    (info,) = _api.list_sessions(scope=scope, home=home)
    (cp,) = _api.list_checkpoints(info.session_id, home=home)
    return info.session_id, cp.checkpoint_id


def test_the_sidebars_request_previews_then_restores_the_variables(
    kernel: Kernel, fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    kernel.ok(SETUP)
    sid, cp = _turn(kernel, fake_api, home, workspace)
    kernel.ok("assert items == [1, 2, 3, 4] and arr[0] == -1 and made")

    preview = answer(kernel, sid, cp, True)
    assert preview["loaded"] is True and preview["dry_run"] is True
    planned = {v["name"]: (v["action"], v["type"]) for v in preview["variables"]}
    assert planned == {  # the alias too: it is the same list
        "items": ("restore", "list"), "items_alias": ("restore", "list"), "arr": ("restore", "numpy.ndarray"),
        "made": ("delete", None),
    }, planned
    assert preview["variables_not_restored"] == {} and preview["kernel_note"] is None
    kernel.ok("assert items == [1, 2, 3, 4] and arr[0] == -1 and made")  # a preview changes nothing

    done = answer(kernel, sid[:8], cp[:8], False)  # prefixes, as the other rewinds take
    assert done["dry_run"] is False and {v["name"] for v in done["variables"]} == set(planned)
    kernel.ok(
        "assert items == [1, 2, 3] and items is items_alias\n"
        "assert np.array_equal(arr, arr_before)\n"
        "assert 'made' not in globals()"
    )


def test_not_loaded_and_unknown_ids_are_notes_not_exceptions(
    kernel: Kernel, fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    # agent_magic never loaded: the expression leaves the kernel alone and answers None.
    assert answer(kernel, "0" * 36, "0" * 36, True) is None
    kernel.ok("import sys\nassert 'agent_magic.notebook._kernel_state' not in sys.modules")

    kernel.ok(SETUP)
    sid, cp = _turn(kernel, fake_api, home, workspace)
    missing = answer(kernel, sid, "ffffffff", True)
    assert missing["loaded"] is True and missing["variables"] == []
    assert missing["kernel_note"].startswith("No checkpoint 'ffffffff' in session"), missing

    # Loaded, then unloaded: called directly, it says so instead of raising.
    kernel.ok("%unload_ext agent_magic")
    unloaded = kernel.ok(
        "from agent_magic.notebook._kernel_state import kernel_rewind\n"
        f"print(kernel_rewind({sid!r}, {cp!r}, True))"
    ).text
    got = json.loads(unloaded)
    assert got["loaded"] is False and "not loaded" in got["kernel_note"] and got["variables"] == []
    kernel.ok("assert items == [1, 2, 3, 4]")
