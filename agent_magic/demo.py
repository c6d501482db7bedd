"""``agent-magic demo``: the whole experience without an API key.

Starts the scripted fake Messages API (every reply marked ``[scripted]``) and
JupyterLab on a copy of the quickstart notebook in a fresh folder, with its own
session store, so nothing touches the person's real sessions. The fake server
stops when JupyterLab exits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import webbrowser
from pathlib import Path

from .testing import FakeAnthropicServer
from .testing.walkthrough import install_walkthrough

NOTEBOOK = "quickstart.ipynb"


def quickstart_path() -> Path:
    """The quickstart notebook: shipped in the wheel, or the repository's copy in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / NOTEBOOK, here.parent / "example_notebooks" / NOTEBOOK):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("The quickstart notebook is missing from this installation; reinstall agent-magic.")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def lab_command(root: Path, port: int, token: str, *, open_browser: bool) -> list[str]:
    cmd = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.default_url=/lab/tree/{NOTEBOOK}",
        "--ServerApp.open_browser=False",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd


def run_demo(*, no_browser: bool = False, port: int = 0, directory: str | None = None, lab_args: list[str] | None = None) -> int:
    """Run the demo until JupyterLab exits (Ctrl-C). Returns JupyterLab's exit code."""
    base = Path(directory).expanduser().resolve() if directory else Path(tempfile.mkdtemp(prefix="agent-magic-demo-"))
    notebooks = base / "notebooks"
    home = base / "agent-magic-home"
    notebooks.mkdir(parents=True, exist_ok=True)
    target = notebooks / NOTEBOOK
    if not target.exists():
        shutil.copy(quickstart_path(), target)
    server = FakeAnthropicServer()
    install_walkthrough(server)
    server.start()
    port = port or _free_port()
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}"
    env = {
        **os.environ,
        **server.env(api_key="demo-key-not-real"),
        "AGENT_MAGIC_HOME": str(home),
    }
    env.pop("AGENT_MAGIC_PROVIDER", None)
    extra = [a for a in (lab_args or []) if a != "--"]
    print("agent-magic demo: every agent reply comes from a scripted fake API (no API key needed).", flush=True)
    print(f"Folder:   {notebooks}", flush=True)
    print(f"Sessions: {home}", flush=True)
    print(f"Fake API: {server.url}", flush=True)
    print(f"Open:     {url}", flush=True)
    print("Stop with Ctrl-C.", flush=True)
    try:
        proc = subprocess.Popen(lab_command(notebooks, port, token, open_browser=not no_browser) + extra, env=env, cwd=notebooks)
    except OSError as e:
        server.stop()
        print(f"agent-magic demo: could not start JupyterLab ({e}). Install it with `pip install jupyterlab`.", file=sys.stderr)
        return 1
    if not no_browser:
        _open_when_ready(url, port)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        server.stop()


def _open_when_ready(url: str, port: int) -> None:
    import threading
    import time

    def wait_and_open() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.3)
        webbrowser.open(url)

    threading.Thread(target=wait_and_open, daemon=True).start()
