"""Saved views of agent-magic's widgets in JupyterLab (``labextension/src/fallback.ts``).

Where a widget's model is gone (the notebook reopened after its kernel shut
down, or opened with no kernel), our widgets show the summary saved in their
output instead of "Error displaying widget: model not found"; other widgets
keep JupyterLab's message, and live widgets render as before. The kernels talk
to the fake Messages API in this process (``lab_fake_api``). Screenshots go to
``test-artifacts/widget-fallback*.png``.
"""

# nbformat is untyped.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest

from agent_magic.testing import FakeAnthropicServer, text

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: The marker the kernel side is to add to our widgets' outputs (see fallback.ts).
WIDGET_MARKER = "application/vnd.agent-magic.widget+json"
NOT_LIVE = "Widget not live (saved view)"
MODEL_NOT_FOUND = "Error displaying widget: model not found"

# Two widget views with no model behind them: ours by the marker alone (its HTML has no
# agent-magic class), and a foreign one with a text/html of its own.
_VIEW = {"model_id": "f" * 32, "version_major": 2, "version_minor": 1}
MADE_UP_VIEWS = f"""\
from IPython.display import display
view = {_VIEW!r}
display({{{WIDGET_VIEW!r}: view, {WIDGET_MARKER!r}: {{"widget": "SessionBar"}},
         "text/plain": "ours, plain", "text/html": "<p>ours, <b>marked</b></p>"}}, raw=True)
display({{{WIDGET_VIEW!r}: view, "text/plain": "foreign, plain", "text/html": "<p>foreign summary</p>"}}, raw=True)
"""

CELLS = [
    "%load_ext agent_magic",
    "%%agent\nsay hello",
    MADE_UP_VIEWS,
    'import ipywidgets\nipywidgets.IntSlider(3, description="foreign")',
]


@pytest.mark.browser
@pytest.mark.slow
def test_saved_widgets_show_their_summary(
    jupyterlab: JupyterLab, lab_fake_api: FakeAnthropicServer, run_playwright: Callable[..., PlaywrightResult]
) -> None:
    work = jupyterlab.root_dir / "fallback"
    work.mkdir()
    nb_path = work / "fallback.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbformat.write(nb, nb_path)
    lab_fake_api.reset()
    lab_fake_api.on_prompt("say hello", text("Hello."))

    d = run_playwright("widget_fallback.mjs", env={"NOTEBOOK": "fallback/fallback.ipynb"}, timeout=300).check().data
    sid = d["sessionId"][:8]
    summary = f"agent-magic session {sid} · turn 1"
    resume = f"%agent resume {sid}"

    # live: the bar is a widget; ours without a model shows its summary at once, the foreign
    # view and the ipywidgets slider are JupyterLab's business
    assert sid in d["liveBar"] and d["live"]["1"]["fallbacks"] == 0
    assert not any(MODEL_NOT_FOUND in t or NOT_LIVE in t for t in d["live"]["1"]["texts"])
    ours, foreign = d["live"]["2"]["texts"]
    assert d["live"]["2"]["fallbacks"] == 1
    assert "ours, marked" in ours and NOT_LIVE in ours and MODEL_NOT_FOUND not in ours
    assert foreign == MODEL_NOT_FOUND
    assert d["live"]["3"]["fallbacks"] == 0 and "foreign" in d["live"]["3"]["texts"][0]

    # what was saved: the bar's view with its summary (marked today by its class)
    saved = nbformat.read(nb_path, as_version=4)
    bar_outputs = [o for o in saved.cells[1].outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(bar_outputs) == 1 and "am-fallback" in bar_outputs[0]["data"]["text/html"]

    # reopened with a new kernel: the summaries of ours, JupyterLab's message for the others
    reopened = d["reopened"]
    bar_text = next(t for t in reopened["1"]["texts"] if NOT_LIVE in t)
    assert summary in bar_text and resume in bar_text
    assert reopened["1"]["fallbacks"] == 1 and not any(MODEL_NOT_FOUND in t for t in reopened["1"]["texts"])
    assert reopened["2"]["texts"][0].startswith("ours, marked") and reopened["2"]["texts"][1] == MODEL_NOT_FOUND
    assert reopened["3"] == {"texts": [MODEL_NOT_FOUND], "fallbacks": 0}

    # running the turn again: a live bar, no summary
    assert d["rerun"]["fallbacks"] == 0
    assert not any(NOT_LIVE in t or MODEL_NOT_FOUND in t for t in d["rerun"]["texts"])

    # opened with no kernel: the widget renderer waits forever (its "Loading widget..." on the
    # others shows the copy kept its trust); ours show their summary instead
    no_kernel = d["noKernel"]
    assert not d["noKernelSession"]
    assert any(summary in t and NOT_LIVE in t for t in no_kernel["1"]["texts"])
    assert no_kernel["2"]["texts"][0].startswith("ours, marked") and no_kernel["2"]["texts"][1] == "Loading widget..."
    assert no_kernel["3"] == {"texts": ["Loading widget..."], "fallbacks": 0}

    for shot in ("reopenedShot", "darkShot", "noKernelShot"):
        assert Path(d[shot]).is_file()
