"""Fixtures for real-browser tests: a JupyterLab server and a runner for Node scripts.

The browser side lives in Node (``lab.mjs`` and scripts importing it), driven by
playwright-core against Debian's Chromium; nothing here downloads a browser.
Python starts the server, runs a script with ``node`` and checks what it reports.

The server's kernels talk to a fake Messages API running in this process
(``lab_fake_api``; script it per test, after ``reset()``) and keep sessions
in a private store (``jupyterlab.agent_home``, their ``AGENT_MAGIC_HOME``).
``start_jupyterlab`` starts another server, with other environment variables.

Without Chromium or Node the tests are skipped, except under CI (``CI`` set),
where a missing tool is an install bug and fails them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent_magic.testing import FakeAnthropicServer

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

#: Marks a line of a script's stdout carrying its JSON result; see ``report`` in lab.mjs.
RESULT_PREFIX = "@@result "

LAB_START_TIMEOUT = 60.0
SCRIPT_TIMEOUT = 180.0


def _chromium_path() -> str | None:
    explicit = os.environ.get("AGENT_MAGIC_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing_tool(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it with .ci/setup)")
    pytest.skip(reason)


def _require_browser_tools() -> str:
    """Chromium's path, after checking Node too; skips (or fails under CI) without them."""
    path = _chromium_path()
    if path is None:
        _missing_tool("Chromium not found: `apt-get install chromium` or run .ci/setup")
    if shutil.which("node") is None or shutil.which("npm") is None:
        _missing_tool("Node.js (node and npm) not found: install Node 20+ or run .ci/setup")
    assert path is not None
    return path


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture, so a skipped test doesn't start JupyterLab first.
    if item.get_closest_marker("browser") is not None:
        _require_browser_tools()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium binary: ``$AGENT_MAGIC_CHROMIUM`` or ``chromium`` on PATH."""
    return _require_browser_tools()


@pytest.fixture(scope="session")
def node_modules(chromium_path: str) -> Path:
    """tests/browser/node_modules, installed with ``npm ci`` on first use."""
    npm = shutil.which("npm")
    assert npm is not None  # chromium_path checked
    modules = HERE / "node_modules"
    if not (modules / "playwright-core" / "package.json").is_file():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"npm ci in {HERE} failed:\n{proc.stdout}\n{proc.stderr}")
    return modules


@dataclass(frozen=True)
class JupyterLab:
    """A running JupyterLab server, as the ``jupyterlab`` fixture yields it."""

    url: str
    """Base URL without a trailing slash, e.g. ``http://127.0.0.1:41234``."""
    token: str
    root_dir: Path
    """The server's root: notebooks the browser opens by relative path live here."""
    log_path: Path
    agent_home: Path
    """The session store of the server and its kernels (their ``AGENT_MAGIC_HOME``)."""
    env: dict[str, str] = field(default_factory=dict)
    """The variables added to the server's environment (and so to its kernels')."""

    def api(self, path: str) -> Any:
        """GET a JSON endpoint of the server, e.g. ``api("/api/sessions")``."""
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def page_config(self) -> dict[str, Any]:
        """The page config JupyterLab embeds in ``/lab``: its settings and federated extensions."""
        request = urllib.request.Request(
            f"{self.url}/lab", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            html = response.read().decode()
        start = html.index('id="jupyter-config-data"')
        start = html.index(">", start) + 1
        end = html.index("</script>", start)
        config: dict[str, Any] = json.loads(html[start:end])
        return config

    def federated_extensions(self) -> list[str]:
        """Names of the prebuilt extensions the server hands to the browser."""
        return [ext["name"] for ext in self.page_config().get("federated_extensions", [])]


#: The developer's keys and stores never reach the server or its kernels.
_SECRET_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                "AGENT_MAGIC_MODEL", "AGENT_MAGIC_PROVIDER", "AGENT_MAGIC_HOME", "AGENT_MAGIC_PROMPT_CACHING",
                "OPENAI_API_KEY", "OPENAI_BASE_URL")


def _lab_env(home: Path) -> dict[str, str]:
    """The server's environment: user config, runtime and IPython dirs isolated under ``home``.

    JUPYTER_DATA_DIR is isolated too (user kernels and user-installed
    extensions stay out); the extension is found in ``sys.prefix``'s
    share/jupyter, where ``pip install`` and ``.ci/setup`` put it.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARS}
    for name, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ]:
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    # No "get notified about official Jupyter news?" toast over the screenshots.
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"})
    )
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("JUPYTER_PATH", None)
    env.pop("JUPYTER_TOKEN", None)
    return env


def _wait_for_server(proc: subprocess.Popen[bytes], runtime_dir: Path, token: str) -> str:
    """Return the server's base URL once ``/api/status`` answers."""
    deadline = time.monotonic() + LAB_START_TIMEOUT
    url: str | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode} while starting")
        if url is None:
            # Port 0 lets the OS choose; the server writes the one it got here.
            for info_file in runtime_dir.glob(f"jpserver-{proc.pid}.json"):
                try:
                    info = json.loads(info_file.read_text())
                except ValueError:
                    continue  # written but not yet complete
                url = f"http://127.0.0.1:{info['port']}"
        if url is not None:
            request = urllib.request.Request(
                f"{url}/api/status", headers={"Authorization": f"token {token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.2)
    raise RuntimeError(f"jupyter lab did not answer /api/status within {LAB_START_TIMEOUT:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rtc_installed() -> bool:
    """Whether jupyter-collaboration (real-time collaboration) is installed here."""
    import importlib.util

    return importlib.util.find_spec("jupyter_server_ydoc") is not None


@contextmanager
def start_jupyterlab(
    home: Path, env: Mapping[str, str] | None = None, log_name: str = "jupyterlab.log", *, rtc: bool = False
) -> Iterator[JupyterLab]:
    """Run a JupyterLab server on 127.0.0.1 with token auth, its files under ``home``.

    ``env`` is added to its environment (and its kernels'); unless ``env`` names
    one, ``AGENT_MAGIC_HOME`` is ``home/agent-home``. The log goes to
    ``test-artifacts/<log_name>``. With ``rtc`` the documents are held by the
    server (jupyter-collaboration); without it, an installed jupyter-collaboration
    is switched off, so the plain path is what is tested.
    """
    root_dir = home / "root"
    root_dir.mkdir(parents=True, exist_ok=True)
    full_env = _lab_env(home)
    added = {"AGENT_MAGIC_HOME": str(home / "agent-home"), **(env or {})}
    full_env.update(added)
    token = secrets.token_hex(24)
    args = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
        f"--IdentityProvider.token={token}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=None",
        # window.jupyterapp, so scripts can run commands instead of hunting menus.
        "--LabApp.expose_app_in_browser=True",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    if rtc:
        # Poll the disk often, so the server notices a file the agent wrote within the test's waits.
        args.append("--YDocExtension.file_poll_interval=0.5")
    elif rtc_installed():
        args.append("--YDocExtension.disable_rtc=True")

    ARTIFACTS_DIR.mkdir(exist_ok=True)
    log_path = ARTIFACTS_DIR / log_name
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=root_dir, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                url = _wait_for_server(proc, Path(full_env["JUPYTER_RUNTIME_DIR"]), token)
            except RuntimeError as exc:
                _stop(proc)
                log.flush()
                tail = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"{exc}\n--- {log_path} (tail) ---\n{tail}")
            yield JupyterLab(
                url=url,
                token=token,
                root_dir=root_dir,
                log_path=log_path,
                agent_home=Path(added["AGENT_MAGIC_HOME"]),
                env=added,
            )
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def lab_fake_api() -> Iterator[FakeAnthropicServer]:
    """The fake Messages API the session's JupyterLab kernels talk to; ``reset()`` it, then script it."""
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture(scope="session")
def jupyterlab(
    tmp_path_factory: pytest.TempPathFactory, lab_fake_api: FakeAnthropicServer
) -> Iterator[JupyterLab]:
    """A JupyterLab server on 127.0.0.1 with token auth, for the whole session.

    Its kernels use ``lab_fake_api`` as the Anthropic API and ``agent_home`` as
    their session store. Its log goes to ``test-artifacts/jupyterlab.log``.
    """
    env = {**lab_fake_api.env(), "AGENT_MAGIC_MAX_RETRIES": "1"}
    with start_jupyterlab(tmp_path_factory.mktemp("jupyterlab"), env) as lab:
        yield lab


@pytest.fixture(scope="session")
def jupyterlab_rtc(
    tmp_path_factory: pytest.TempPathFactory, lab_fake_api: FakeAnthropicServer
) -> Iterator[JupyterLab]:
    """Like ``jupyterlab``, with real-time collaboration on (jupyter-collaboration; required)."""
    if not rtc_installed():
        _missing_tool("jupyter-collaboration is not installed: pip install -e '.[test]'")
    env = {**lab_fake_api.env(), "AGENT_MAGIC_MAX_RETRIES": "1"}
    with start_jupyterlab(tmp_path_factory.mktemp("jupyterlab-rtc"), env, "jupyterlab-rtc.log", rtc=True) as lab:
        yield lab


def lab_env(lab: JupyterLab) -> dict[str, str]:
    """``run_playwright``'s ``env`` to drive another server than the session's ``jupyterlab``."""
    return {"LAB_URL": lab.url, "LAB_TOKEN": lab.token, "LAB_ROOT": str(lab.root_dir)}


@dataclass(frozen=True)
class PlaywrightResult:
    """What a Node script did: exit code, output, and the JSON it reported."""

    returncode: int
    stdout: str
    stderr: str
    data: Any
    """The value the script passed to ``report()``, or None if it reported nothing."""

    def check(self) -> PlaywrightResult:
        """Fail the test, with the script's output, unless it exited 0."""
        if self.returncode != 0:
            pytest.fail(
                f"playwright script exited with {self.returncode}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
            )
        return self


@pytest.fixture(scope="session")
def run_playwright(
    node_modules: Path, chromium_path: str, jupyterlab: JupyterLab
) -> Callable[..., PlaywrightResult]:
    """Run a Node script from tests/browser against the session's JupyterLab.

    Call it as ``run_playwright(script_path, env=None, timeout=...)``. The script
    gets LAB_URL, LAB_TOKEN, LAB_ROOT, ARTIFACTS_DIR and CHROMIUM_PATH in its
    environment (``env`` adds to or overrides them) and runs with tests/browser
    as its working directory. Returns a ``PlaywrightResult``; call ``.check()``
    to fail on a non-zero exit.
    """
    node = shutil.which("node")
    assert node is not None  # node_modules skipped the test otherwise

    def run(
        script_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        timeout: float = SCRIPT_TIMEOUT,
    ) -> PlaywrightResult:
        script = Path(script_path)
        if not script.is_absolute():
            script = HERE / script
        ARTIFACTS_DIR.mkdir(exist_ok=True)
        full_env = dict(os.environ)
        full_env.update(
            LAB_URL=jupyterlab.url,
            LAB_TOKEN=jupyterlab.token,
            LAB_ROOT=str(jupyterlab.root_dir),
            ARTIFACTS_DIR=str(ARTIFACTS_DIR),
            CHROMIUM_PATH=chromium_path,
        )
        full_env.update(env or {})
        # A session of its own, so a timeout kills Chromium along with node.
        proc = subprocess.Popen(
            [node, str(script)],
            cwd=HERE,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                f"{script.name} did not finish within {timeout:.0f}s\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            )
        data = None
        for line in stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                data = json.loads(line[len(RESULT_PREFIX) :])
        return PlaywrightResult(proc.returncode, stdout, stderr, data)

    return run
