"""The quickstart notebook and `agent-magic demo`, end to end in real kernels."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from agent_magic.demo import quickstart_path
from agent_magic.notebook._display import TURN_MIME
from agent_magic.testing import FakeAnthropicServer
from agent_magic.testing.walkthrough import install_walkthrough

pytestmark = [pytest.mark.kernel]

ROOT = Path(__file__).resolve().parent.parent


def _execute(nb_path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(nb_path.parent)}}).execute(
        env={**os.environ, **env}
    )
    return nb


def _check_run(original: nbformat.NotebookNode, executed: nbformat.NotebookNode, on_disk: nbformat.NotebookNode) -> None:
    # every agent reply was scripted and shown
    turns = [o["data"][TURN_MIME] for c in executed.cells for o in c.get("outputs", []) if TURN_MIME in o.get("data", {})]
    assert [t["status"] for t in turns] == ["success", "success"]
    texts = [o["data"]["text/markdown"] for c in executed.cells for o in c.get("outputs", []) if TURN_MIME in o.get("data", {})]
    assert all("[scripted]" in t for t in texts)
    assert turns[1]["forked_from"] == turns[0]["session_id"]
    # the rewinds put the notebook's cells back exactly (ids and sources), cell by cell
    assert [(c.id, c.source) for c in on_disk.cells] == [(c.id, c.source) for c in original.cells]
    rewind_out = "".join(
        str(o.get("data", {}).get("text/markdown", "")) for c in executed.cells if "rewind --turn 1" in c.source for o in c.outputs
    )
    assert "cells" in rewind_out.lower()


def test_quickstart_runs_top_to_bottom(tmp_path: Path) -> None:
    work = tmp_path / "nb"
    work.mkdir()
    nb_path = work / "quickstart.ipynb"
    shutil.copy(quickstart_path(), nb_path)
    original = nbformat.read(nb_path, as_version=4)
    with FakeAnthropicServer() as server:
        install_walkthrough(server)
        env = {**server.env(), "AGENT_MAGIC_HOME": str(tmp_path / "home"), "JPY_SESSION_NAME": str(nb_path)}
        executed = _execute(nb_path, env)
    _check_run(original, executed, nbformat.read(nb_path, as_version=4))
    assert (work / "sales.csv").exists()


def test_example_notebook_is_the_packaged_one() -> None:
    assert quickstart_path().read_bytes() == (ROOT / "example_notebooks" / "quickstart.ipynb").read_bytes()


def test_agent_magic_demo_no_browser(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AGENT_MAGIC_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_magic.cli", "demo", "--no-browser", "--dir", str(demo_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    try:
        info: dict[str, str] = {}
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(info) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"(Folder|Sessions|Fake API|Open):\s+(\S+)", line)
            if m:
                info[m.group(1)] = m.group(2)
        assert set(info) == {"Folder", "Sessions", "Fake API", "Open"}, info
        # JupyterLab answers on the printed URL
        status_url = info["Open"].split("/lab/")[0] + "/api/status?token=" + info["Open"].split("token=")[1]
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(status_url, timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        nb_path = Path(info["Folder"]) / "quickstart.ipynb"
        original = nbformat.read(nb_path, as_version=4)
        env2 = {"ANTHROPIC_BASE_URL": info["Fake API"], "ANTHROPIC_API_KEY": "demo", "AGENT_MAGIC_HOME": info["Sessions"],
                "JPY_SESSION_NAME": str(nb_path)}
        executed = _execute(nb_path, env2)
        _check_run(original, executed, nbformat.read(nb_path, as_version=4))
        assert Path(info["Sessions"]).is_relative_to(demo_dir)  # never the person's real store
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # the fake API stopped with JupyterLab
    with pytest.raises(OSError):
        urllib.request.urlopen(info["Fake API"] + "/health", timeout=2)


def test_fake_server_as_a_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m agent_magic.testing` prints its URL; a real query then runs against it."""
    from .conftest import result_of, run_query

    proc = subprocess.Popen([sys.executable, "-m", "agent_magic.testing", "--script", "walkthrough"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        monkeypatch.setenv("AGENT_MAGIC_HOME", str(tmp_path / "home"))
        (tmp_path / "w").mkdir()
        res = result_of(run_query("something unscripted", cwd=tmp_path / "w"))
        assert res.subtype == "success" and "[scripted]" in (res.result or "")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
