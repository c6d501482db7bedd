"""``agent-magic demo``: the whole experience without an API key.

Starts the scripted fake Messages API (every reply marked ``[scripted]``) and
JupyterLab on a copy of the quickstart notebook in a fresh folder, with its own
session store, so nothing touches the person's real sessions. The fake server
stops when JupyterLab exits.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import webbrowser
from pathlib import Path

from .testing import FakeAnthropicServer
from .testing.examples import install_examples
from .testing.walkthrough import install_walkthrough

NOTEBOOK = "quickstart.ipynb"


#: The example notebooks the demo copies beside the quickstart (scripted in testing/examples.py).
EXAMPLES = ("clean_csv.ipynb", "fork_compare_models.ipynb", "inspect_dataframe.ipynb")


def example_path(name: str) -> Path:
    """An example notebook: shipped in the wheel, or the repository's copy in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo" / name, here.parent / "example_notebooks" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"The example notebook {name} is missing from this installation; reinstall agent-magic.")


def quickstart_path() -> Path:
    """The quickstart notebook: shipped in the wheel, or the repository's copy in a checkout."""
    return example_path(NOTEBOOK)


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


#: What the demo needs beyond the core, and the command that installs it.
_NEEDS = (("jupyterlab", "JupyterLab"), ("ipykernel", "a Python kernel (ipykernel)"))

#: JupyterLab settings for the demo only: no "get notified about news?" toast, no update checks.
_DEMO_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"checkForUpdates": False, "fetchNews": "false"},
}

READY_TIMEOUT = 120.0


def missing_requirement() -> str | None:
    """One line naming what the demo lacks and the command that fixes it, or None."""
    import importlib.util

    for module, what in _NEEDS:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install counts as missing
            found = False
        if not found:
            return f"agent-magic demo needs {what}, which is not installed here. Run `{sys.executable} -m pip install agent-magic` (it brings {module}) and try again."
    return None


def _copy_for_this_kernel(src: Path, dest: Path) -> None:
    """Copy a notebook with this machine's kernel metadata, so opening it leaves it saved.

    JupyterLab rewrites ``kernelspec`` and ``language_info`` with what the
    kernel reports when it starts, which marks a notebook carrying other values
    as unsaved before the person has touched it.
    """
    import nbformat

    nb = nbformat.read(str(src), as_version=4)  # type: ignore[no-untyped-call]
    try:
        from ipykernel.ipkernel import IPythonKernel
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": spec.display_name, "language": spec.language}
        nb.metadata["language_info"] = dict(IPythonKernel.language_info)
    except Exception:  # no such kernel here: keep the notebook's own metadata
        shutil.copy(src, dest)
        return
    tmp = dest.with_suffix(".ipynb.tmp")
    nbformat.write(nb, str(tmp))  # type: ignore[no-untyped-call]
    os.replace(tmp, dest)


def _write_settings(settings_dir: Path) -> None:
    import json

    for rel, values in _DEMO_SETTINGS.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(json.dumps(values))


def _wait_until_up(proc: subprocess.Popen[bytes], port: int, token: str, timeout: float = READY_TIMEOUT) -> bool:
    """Whether JupyterLab answers ``/api/status`` before ``timeout`` (False if it exited)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/api/status"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(req, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()  # JupyterLab shuts its kernels down on SIGTERM
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_demo(*, no_browser: bool = False, port: int = 0, directory: str | None = None, lab_args: list[str] | None = None) -> int:
    """Run the demo until JupyterLab exits (Ctrl-C or SIGTERM). Returns JupyterLab's exit code.

    A temporary folder it made is removed on every exit; a ``directory`` given
    by the person is kept.
    """
    problem = missing_requirement()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    temporary = directory is None
    base = Path(directory).expanduser().resolve() if directory else Path(tempfile.mkdtemp(prefix="agent-magic-demo-"))
    server = FakeAnthropicServer()
    proc: subprocess.Popen[bytes] | None = None
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally below, like Ctrl-C

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:
        pass  # not the main thread: the caller handles signals
    try:
        notebooks = base / "notebooks"
        home = base / "agent-magic-home"
        notebooks.mkdir(parents=True, exist_ok=True)
        for name in (NOTEBOOK, *EXAMPLES):
            target = notebooks / name
            if not target.exists():
                _copy_for_this_kernel(example_path(name), target)
        settings = base / "lab-settings"
        _write_settings(settings)
        install_walkthrough(server)
        install_examples(server, default=False)
        server.start()
        port = port or _free_port()
        token = secrets.token_hex(16)
        url = f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}"
        env = {
            **os.environ,
            **server.env(api_key="demo-key-not-real"),
            "AGENT_MAGIC_HOME": str(home),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "lab-workspaces"),
        }
        env.pop("AGENT_MAGIC_PROVIDER", None)
        extra = [a for a in (lab_args or []) if a != "--"]
        print("agent-magic demo: every agent reply comes from a scripted fake API (no API key needed).", flush=True)
        print(f"Folder:   {notebooks}", flush=True)
        print(f"Sessions: {home}", flush=True)
        print(f"Fake API: {server.url}", flush=True)
        print("Starting JupyterLab…", flush=True)
        try:
            proc = subprocess.Popen(lab_command(notebooks, port, token, open_browser=False) + extra, env=env, cwd=notebooks)
        except OSError as e:
            print(f"agent-magic demo: could not start JupyterLab ({e}). Run `{sys.executable} -m pip install agent-magic` and try again.", file=sys.stderr)
            return 1
        if not _wait_until_up(proc, port, token):
            code = _stop(proc)
            print(
                f"agent-magic demo: JupyterLab did not start (exit code {code}); its messages are above. "
                f"Check that `{sys.executable} -m jupyterlab --version` works.",
                file=sys.stderr,
            )
            return code or 1
        print(f"Open:     {url}", flush=True)
        print("Stop with Ctrl-C.", flush=True)
        if not no_browser:
            webbrowser.open(url)
        return proc.wait()
    except KeyboardInterrupt:
        return _stop(proc) if proc is not None else 130
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc)
        server.stop()
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous_term)
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
