"""`pip install .` from a clean checkout builds the JupyterLab extension into the wheel.

The wheel is built the way pip builds it for a user (isolated build environment,
the extension's production build run by the build hook), from a copy holding only
the files a clone would have. It is then installed into a fresh virtual
environment, where `jupyter labextension list` must show the extension enabled
and the server extension must be on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = "agent-magic-labextension"


def _clean_copy(dest: Path) -> None:
    """Copy the files a clone of this checkout would have (tracked, and new files not ignored)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file() or src.is_symlink():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    if shutil.which("node") is None:
        pytest.skip("needs Node.js to build the extension (.ci/setup checks for it)")
    base = tmp_path_factory.mktemp("packaging")
    src = base / "clone"
    _clean_copy(src)
    assert not (src / "agent_magic" / "labextension").exists(), "the built extension must not be committed"
    out = base / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HATCH_JUPYTER_BUILDER_SKIP")}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=1500, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("agent_magic-*.whl")
    return whl


def test_wheel_carries_the_prebuilt_extension(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    ext = f"{data}/data/share/jupyter/labextensions/{EXT}"
    assert f"{ext}/package.json" in names
    assert f"{ext}/install.json" in names
    assert any(n.startswith(f"{ext}/static/remoteEntry.") and n.endswith(".js") for n in names), "no remoteEntry in the wheel"
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/agent_magic.json" in names
    assert "agent_magic/_demo/quickstart.ipynb" in names
    assert any(n.startswith("agent_magic/notebook/widgets/static/") and n.endswith(".js") for n in names)
    assert not any("node_modules" in n for n in names)


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with nothing but the wheel and what it depends on.

    Its dependencies come from the package index, pinned by .ci/constraints.txt
    (the versions the rest of the suite runs with), as `pip install agent-magic`
    would install them; nothing is borrowed from the test environment.
    """
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-c", str(ROOT / ".ci" / "constraints.txt"), str(wheel)],
        capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return venv


def _venv_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AGENT_MAGIC_", "JUPYTER", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def test_installed_wheel_shows_the_extension_enabled(venv: Path, tmp_path: Path) -> None:
    py = venv / "bin" / "python"
    env = _venv_env(venv)
    where = subprocess.run([str(py), "-c", "import agent_magic; print(agent_magic.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(venv)), where
    # `jupyter labextension list` is there: pip install agent-magic brought JupyterLab
    listing = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    text = listing.stdout + listing.stderr
    venv_dir = str(venv / "share" / "jupyter" / "labextensions")
    assert venv_dir in text, text
    section = text.split(venv_dir, 1)[1].split("\n\n", 1)[0]
    assert EXT in section and "enabled" in section and "OK" in section, text

    servers = subprocess.run([str(venv / "bin" / "jupyter"), "server", "extension", "list"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = servers.stdout + servers.stderr
    assert any("agent_magic" in line and "OK" in line for line in out.splitlines()), out


@pytest.mark.browser
@pytest.mark.slow
def test_pip_install_then_agent_magic_demo(venv: Path, tmp_path: Path) -> None:
    """The README's user quick start on a fresh venv: the demo starts, the page runs the first %%agent cell."""
    from tests.browser.conftest import HERE as BROWSER_DIR
    from tests.browser.conftest import _require_browser_tools

    chromium = _require_browser_tools()
    demo_dir = tmp_path / "demo"
    env = _venv_env(venv)
    env["HOME"] = str(tmp_path / "home")  # the person's own Jupyter config stays out
    proc = subprocess.Popen(
        # (window.jupyterapp for the script; the rest is the demo as a person starts it)
        [str(venv / "bin" / "agent-magic"), "demo", "--no-browser", "--dir", str(demo_dir),
         "--", "--LabApp.expose_app_in_browser=True"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 180
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Open:"):
                url = line.split(None, 1)[1].strip()
        assert url is not None, "".join(lines)
        # The URL is printed once JupyterLab answers, not before.
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
            assert r.status == 200
        node = shutil.which("node")
        assert node is not None
        run = subprocess.run(
            [node, str(BROWSER_DIR / "demo_first_cell.mjs")], cwd=BROWSER_DIR, capture_output=True, text=True,
            timeout=300, env={**os.environ, "LAB_URL": base, "LAB_TOKEN": token, "CHROMIUM_PATH": chromium,
                              "ARTIFACTS_DIR": str(ROOT / "test-artifacts")},
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        data = json.loads(next(x for x in run.stdout.splitlines() if x.startswith("@@result "))[len("@@result "):])
        assert data["dirtyAfterOpen"] is False, data
        assert "[scripted]" in data["answer"], data
        assert data["newsToast"] is False, data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, "".join(lines)


def test_demo_says_what_is_missing_and_cleans_up(tmp_path: Path) -> None:
    """Without JupyterLab the demo says, in one line, what to run; on SIGTERM its temp folder goes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AGENT_MAGIC_"))}
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # A meta path finder that hides jupyterlab, as on a machine without it.
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'jupyterlab' or name.startswith('jupyterlab.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "agent_magic.cli", "demo", "--no-browser"],
        capture_output=True, text=True, timeout=120, env={**env, "PYTHONPATH": str(blocker), "TMPDIR": str(tmp_path)},
    )
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "JupyterLab" in err[0] and "pip install agent-magic" in err[0], done.stderr
    assert not list(tmp_path.glob("agent-magic-demo-*")), "left its temporary folder behind"

    # Started for real, stopped with SIGTERM: JupyterLab stops and the temporary folder is removed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_magic.cli", "demo", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**env, "TMPDIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("Open:"):
                break
        assert list(tmp_path.glob("agent-magic-demo-*")), "no temporary folder while running"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert not list(tmp_path.glob("agent-magic-demo-*")), "left its temporary folder behind after SIGTERM"
