"""Claude Code's side of each operation: the CLI bundled in ``claude-agent-sdk``, offline.

The CLI runs against the fake server with a temporary ``HOME`` and
``CLAUDE_CONFIG_DIR`` (never the real ``~/.claude``) and
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` (without it the CLI resolves
api.anthropic.com and probes ``HEAD /api/hello``). Every operation that needs
the CLI starts a fresh CLI process, as the SDK always does; the Python helpers
(``list_sessions``, ``fork_session``) read ``CLAUDE_CONFIG_DIR`` from
``os.environ``, set here for the duration of the call.

A layout is ``root/work`` (the project), ``root/home`` and ``root/cfg``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def available() -> bool:
    return importlib.util.find_spec("claude_agent_sdk") is not None


def versions() -> dict[str, str]:
    """Versions of the SDK and its bundled CLI, read without importing the SDK (a few seconds)."""
    out = {"claude_agent_sdk": importlib.metadata.version("claude-agent-sdk")}
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is not None and spec.origin:
        f = Path(spec.origin).parent / "_cli_version.py"
        m = re.search(r"__cli_version__\s*=\s*[\"']([^\"']+)", f.read_text()) if f.exists() else None
        if m:
            out["claude_code_cli"] = m.group(1)
    return out


def env(root: str, url: str) -> dict[str, str]:
    r = Path(root)
    return {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-bench-fake",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": str(r / "home"),
        "CLAUDE_CONFIG_DIR": str(r / "cfg"),
        # A Read of a 10 MB notebook is ~35k tokens; the default cap (25k) refuses it, and
        # NotebookEdit then refuses to edit an unread notebook.
        "CLAUDE_CODE_FILE_READ_MAX_OUTPUT_TOKENS": "1000000",
    }


def make_root(root: Path) -> None:
    for sub in ("work", "home", "cfg"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def options(root: str, url: str, **kw: Any) -> Any:
    from claude_agent_sdk import ClaudeAgentOptions

    return ClaudeAgentOptions(
        cwd=str(Path(root) / "work"),
        permission_mode="acceptEdits",
        enable_file_checkpointing=True,
        extra_args={"replay-user-messages": None},
        env=env(root, url),
        # NotebookEdit's result carries the whole notebook back (twice): 20 MB lines for a 10 MB notebook.
        max_buffer_size=512 * 1024 * 1024,
        **kw,
    )


@contextlib.contextmanager
def config_dir(root: str) -> Iterator[None]:
    old = os.environ.get("CLAUDE_CONFIG_DIR")
    os.environ["CLAUDE_CONFIG_DIR"] = str(Path(root) / "cfg")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CLAUDE_CONFIG_DIR", None)
        else:
            os.environ["CLAUDE_CONFIG_DIR"] = old


async def run_turns(
    root: str,
    url: str,
    prompts: list[str],
    *,
    resume: str | None = None,
    fork: bool = False,
    on_turn: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Send ``prompts`` one after another to one CLI process; return session, checkpoints and timings.

    ``on_turn(k)`` is called after the k-th prompt's result (in-process use only).
    """
    from claude_agent_sdk import ClaudeSDKClient, ResultMessage, UserMessage

    out: dict[str, Any] = {"checkpoints": [], "tool_errors": [], "errors": [], "turn_times": []}
    opts = options(root, url, resume=resume, fork_session=fork)
    out["t0"] = time.time()
    async with ClaudeSDKClient(opts) as client:
        for k, p in enumerate(prompts, 1):
            t_turn = time.perf_counter()
            await client.query(p)
            async for m in client.receive_response():
                if isinstance(m, UserMessage):
                    if isinstance(m.content, str) and m.uuid:
                        out["checkpoints"].append(m.uuid)
                    elif isinstance(m.content, list):
                        for b in m.content:
                            if getattr(b, "is_error", False):
                                out["tool_errors"].append(str(getattr(b, "content", ""))[:300])
                elif isinstance(m, ResultMessage):
                    out["session_id"] = m.session_id
                    if m.is_error:
                        out["errors"].append(f"{m.subtype}: {m.result}")
            out["turn_times"].append(time.perf_counter() - t_turn)
            out.setdefault("t_first_result", time.time())
            if on_turn is not None:
                on_turn(k)
    out["t_end"] = time.time()
    return out


async def query_once(root: str, url: str, prompt: str, *, resume: str | None = None, fork: bool = False) -> dict[str, Any]:
    """One prompt through ``query()`` (the CLI's one-shot mode); timings to the result."""
    from claude_agent_sdk import ResultMessage, query

    out: dict[str, Any] = {"errors": []}
    opts = options(root, url, resume=resume, fork_session=fork)
    out["t0"] = time.time()
    async for m in query(prompt=prompt, options=opts):
        if isinstance(m, ResultMessage):
            out["t_first_result"] = time.time()
            out["session_id"] = m.session_id
            if m.is_error:
                out["errors"].append(f"{m.subtype}: {m.result}")
    out["t_end"] = time.time()
    return out


async def rewind(root: str, url: str, session_id: str, checkpoint_id: str) -> dict[str, Any]:
    """Start a CLI on the session (no prompt) and ``rewind_files`` to a user message."""
    from claude_agent_sdk import ClaudeSDKClient

    out: dict[str, Any] = {}
    opts = options(root, url, resume=session_id)
    out["t0"] = time.time()
    async with ClaudeSDKClient(opts) as client:
        out["t_connected"] = time.time()
        try:
            await client.rewind_files(checkpoint_id)
        except Exception as e:  # the CLI's refusal is a result here
            out["error"] = str(e) or type(e).__name__
        out["t_rewound"] = time.time()
    out["t_end"] = time.time()
    return out


def fork_helper(root: str, session_id: str) -> dict[str, Any]:
    """The SDK's ``fork_session()`` (Python, no CLI)."""
    from claude_agent_sdk import fork_session

    with config_dir(root):
        t0 = time.time()
        res = fork_session(session_id, directory=str(Path(root) / "work"))
        return {"t0": t0, "t_end": time.time(), "session_id": res.session_id}


def list_all(root: str) -> dict[str, Any]:
    """The SDK's ``list_sessions(directory)`` (Python, no CLI)."""
    from claude_agent_sdk import list_sessions

    with config_dir(root):
        t0 = time.time()
        rows = list_sessions(directory=str(Path(root) / "work"))
        return {"t0": t0, "t_end": time.time(), "count": len(rows)}


def project_dir(root: str) -> Path:
    dirs = [p for p in (Path(root) / "cfg" / "projects").iterdir() if p.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"Expected one project folder under {root}/cfg/projects, found {len(dirs)}")
    return dirs[0]


def storage_bytes(root: str, session_id: str) -> dict[str, int]:
    """Bytes of the session's transcript (and any sidecar folder) and its file-history backups."""
    proj = project_dir(root)
    transcript = (proj / f"{session_id}.jsonl").stat().st_size
    side = proj / session_id
    if side.is_dir():
        transcript += sum(p.stat().st_size for p in side.rglob("*") if p.is_file())
    fh = Path(root) / "cfg" / "file-history" / session_id
    backups = sum(p.stat().st_size for p in fh.rglob("*") if p.is_file()) if fh.is_dir() else 0
    return {"transcript": transcript, "backups": backups}
