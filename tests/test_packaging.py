"""`pip install .` from a clean checkout builds the JupyterLab extension into the wheel.

The wheel is built the way pip builds it for a user (isolated build environment,
the extension's production build run by the build hook), from a copy holding only
the files a clone would have. It is then installed into a fresh virtual
environment, where `jupyter labextension list` must show the extension enabled
and the server extension must be on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def test_installed_wheel_shows_the_extension_enabled(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # Jupyter itself comes from the test environment; the package comes only from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", str(wheel)],
                   check=True, timeout=600)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(py), "-c", "import agent_magic; print(agent_magic.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(venv)), where

    listing = subprocess.run([str(py), "-m", "jupyterlab.labextensions", "list"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    text = listing.stdout + listing.stderr
    venv_dir = str(venv / "share" / "jupyter" / "labextensions")
    assert venv_dir in text, text
    section = text.split(venv_dir, 1)[1].split("\n\n", 1)[0]
    assert EXT in section and "enabled" in section and "OK" in section, text

    servers = subprocess.run([str(py), "-m", "jupyter_server.extension.serverextension", "list"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    out = servers.stdout + servers.stderr
    assert any("agent_magic" in line and "OK" in line for line in out.splitlines()), out
