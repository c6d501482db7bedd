"""Shared fixtures: a fake Messages API server, a private session store, a workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_magic import AgentOptions, Message, ResultMessage, query
from agent_magic.store.local import SessionStore
from agent_magic.testing import FakeAnthropicServer

_SECRET_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_PROFILE",
                "AGENT_MAGIC_MODEL", "AGENT_MAGIC_PROVIDER", "AGENT_MAGIC_HOME", "AGENT_MAGIC_PROMPT_CACHING", "AGENT_MAGIC_STORE",
                "OPENAI_API_KEY", "OPENAI_BASE_URL")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test sees the developer's keys, store or Anthropic profiles."""
    for var in _SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path_factory.mktemp("anthropic-config")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(cfg))
    monkeypatch.setenv("AGENT_MAGIC_MAX_RETRIES", "2")
    # The person's own memory files (AGENTS.md in their config folder) stay out of every test's prompt.
    monkeypatch.setenv("AGENT_MAGIC_CONFIG_DIR", str(tmp_path_factory.mktemp("agent-magic-config")))
    yield
    SessionStore.forget_instances()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private session store for this test (``AGENT_MAGIC_HOME``)."""
    h = tmp_path / "store"
    monkeypatch.setenv("AGENT_MAGIC_HOME", str(h))
    return h


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty project directory the agent works in."""
    w = tmp_path / "project"
    w.mkdir()
    return w


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropicServer]:
    """A fake Messages API on 127.0.0.1 with ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY pointing at it."""
    with FakeAnthropicServer() as server:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        yield server


def run_query(prompt: str, **options: Any) -> list[Message]:
    """Run one query to the end and return every message."""

    async def go() -> list[Message]:
        out: list[Message] = []
        async for m in query(prompt, options=AgentOptions(**options)):
            out.append(m)
        return out

    return anyio.run(go)


def result_of(messages: list[Message]) -> ResultMessage:
    last = messages[-1]
    assert isinstance(last, ResultMessage), f"last message is {type(last).__name__}"
    return last


def tree_snapshot(root: Path, ignore: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every file (content) and folder (None) under root, by relative path."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ignore)
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir != ".":
            out[rel_dir + "/"] = None
        for f in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, f))
            out[rel] = Path(dirpath, f).read_bytes()
    return out


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path, workspace: Path) -> Iterator[Any]:
    """A fresh IPython shell with the extension loaded, cwd in the workspace, history in memory.

    No notebook is named (``JPY_SESSION_NAME`` unset): sessions are scoped to the workspace.
    """
    from .reliability.fuzz import magic_shell

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    with magic_shell(workspace) as shell:
        yield shell


@pytest.fixture
def kernel(fake_api: FakeAnthropicServer, home: Path, workspace: Path, tmp_path: Path) -> Iterator[Any]:
    """A real kernel for the notebook ``workspace/analysis.ipynb``, on the fake API, with a private store and config.

    Test modules that need another kernel define their own ``kernel`` fixture, which wins.
    """
    from .kernel_harness import Kernel

    env = {
        **fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1",
        "AGENT_MAGIC_CONFIG_DIR": str(tmp_path / "user-config"), "JPY_SESSION_NAME": str(workspace / "analysis.ipynb"),
    }
    k = Kernel(workspace, env)
    try:
        yield k
    finally:
        k.close()
