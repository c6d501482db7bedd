"""agent-magic's side of each operation, through its public API only.

Every function returns plain JSON-able data with wall-clock marks
(``time.time()``) so the parent process can line them up with the fake
server's request times; each can run in the bench process or in a fresh one
(:mod:`bench._child`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio


def version() -> str:
    import agent_magic

    return str(agent_magic.__version__)


def warm_imports(op: str) -> None:
    """Import what ``op`` needs, so its clock starts with the library loaded (not for cold starts).

    For turns that is the provider, the tools, the ``anthropic`` package (imported
    lazily on the first request, about 1 s here), its HTTP transport and response
    models: the state of a notebook kernel after ``%load_ext agent_magic``. The session helpers need
    only ``agent_magic`` and the helper itself.
    """
    import agent_magic

    if op != "run_turns":
        getattr(agent_magic, {"fork_helper": "fork_session", "rewind": "rewind_files", "list_all": "list_sessions"}[op])
        return
    import anthropic  # noqa: F401

    from agent_magic import _client  # noqa: F401
    from agent_magic.providers import get_provider
    from agent_magic.tools import builtin_tools

    builtin_tools(None)
    get_provider(None)
    _ = agent_magic.AgentClient
    # The API client imports its HTTP transport on first use, reads the CA bundle and builds
    # its response models on the first stream; %load_ext does this in a notebook's background
    # thread (offline, agent_magic.providers.anthropic.warm_up). Do it here too.
    import gc

    import anyio._backends._asyncio  # noqa: F401  (the kernel's loop thread has it running)

    from agent_magic.providers.anthropic import warm_up
    from agent_magic.store.jsonl import preload

    preload()
    warm_up()
    gc.collect()  # as the warm-up thread does last


def run_turns(
    home: str,
    cwd: str,
    prompts: list[str],
    *,
    resume: str | None = None,
    fork: bool = False,
    on_turn: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Send ``prompts`` one after another in one client; return the session, checkpoints and timings.

    ``on_turn(k)`` is called after the k-th prompt's result (in-process use only).
    """
    from agent_magic import AgentClient, AgentOptions, ResultMessage, UserMessage

    out: dict[str, Any] = {"checkpoints": [], "tool_errors": [], "errors": [], "turn_times": []}

    async def go() -> None:
        opts = AgentOptions(cwd=cwd, permission_mode="acceptEdits", home=home, resume=resume, fork_session=fork)
        out["t0"] = time.time()
        async with AgentClient(opts) as client:
            for k, p in enumerate(prompts, 1):
                t_turn = time.perf_counter()
                await client.query(p)
                async for m in client.receive_response():
                    if isinstance(m, UserMessage):
                        if m.is_prompt:
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

    anyio.run(go)
    return out


def fork_helper(home: str, session_id: str) -> dict[str, Any]:
    """``fork_session()`` with no prompt: copy the session."""
    from agent_magic import fork_session

    t0 = time.time()
    new = fork_session(session_id, home=home)
    return {"t0": t0, "t_end": time.time(), "session_id": new}


def rewind(home: str, session_id: str, checkpoint_id: str) -> dict[str, Any]:
    """``rewind_files()`` with no agent running."""
    from agent_magic import rewind_files

    t0 = time.time()
    try:
        result = rewind_files(session_id, checkpoint_id, home=home)
    except Exception as e:  # reported in the table, not raised
        return {"t0": t0, "t_end": time.time(), "error": f"{type(e).__name__}: {e}"}
    return {
        "t0": t0,
        "t_end": time.time(),
        "changes": len(result.changes),
        "conflicts": len(result.conflicts),
    }


def list_all(home: str, directory: str) -> dict[str, Any]:
    """``list_sessions(directory)``."""
    from agent_magic import list_sessions

    t0 = time.time()
    rows = list_sessions(directory, home=home)
    return {"t0": t0, "t_end": time.time(), "count": len(rows)}


def storage_bytes(home: str, session_id: str) -> dict[str, int]:
    """Bytes of the session's transcript, checkpoint records and backups (the store's blobs)."""
    h = Path(home)
    sdir = h / "sessions" / session_id
    transcript = sum(p.stat().st_size for p in sdir.glob("*.jsonl") if p.name != "checkpoints.jsonl")
    records = sum(p.stat().st_size for p in sdir.glob("checkpoints.jsonl"))
    blobs = sum(p.stat().st_size for p in (h / "blobs").rglob("*") if p.is_file())
    index = sum(p.stat().st_size for p in h.glob("index.sqlite3*"))
    return {"transcript": transcript, "checkpoint_records": records, "backups": blobs, "index": index}


def session_dirs(home: str) -> list[Path]:
    return [p for p in (Path(home) / "sessions").iterdir() if p.is_dir()]


OPS = {
    "run_turns": run_turns,
    "fork_helper": fork_helper,
    "rewind": rewind,
    "list_all": list_all,
}
