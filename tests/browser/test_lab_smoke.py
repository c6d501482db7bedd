"""JupyterLab loads the prebuilt agent-magic extension and runs a notebook cell."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import JupyterLab, PlaywrightResult

EXTENSION_NAME = "agent-magic-labextension"


@pytest.mark.browser
def test_lab_smoke(jupyterlab: JupyterLab, run_playwright: Callable[..., PlaywrightResult]) -> None:
    assert EXTENSION_NAME in jupyterlab.federated_extensions(), (
        f"{EXTENSION_NAME} is not installed in this Python environment's share/jupyter: "
        "run .ci/setup (or `pip install -e .` and build labextension/)"
    )

    result = run_playwright("lab_smoke.mjs").check()

    data = result.data
    assert data["panelText"] == "No sessions yet"
    assert data["tabTitle"] == "Agent sessions"
    assert data["output"] == "2"
    assert (jupyterlab.root_dir / data["notebookPath"]).is_file()
    assert Path(data["screenshot"]).is_file()
