"""The process the crash harness kills: runs scripted turns of one session with the real loop.

:func:`run_segment` is the target of a ``multiprocessing`` child forked from a
forkserver that imported this module (and so agent-magic, anthropic and
httpx) once, so a child costs a fork instead of a Python start-up.

A segment resumes (or creates) the episode's session and runs its remaining
turns, one ``AgentClient`` for the whole segment, as a kernel would. Before
each turn it writes the workspace's tree to ``side/snap-<attempt>.json``
(atomically: the harness compares rewinds against it); after each turn it
appends the result to ``side/done.jsonl``. The harness SIGKILLs the child, or
the child kills itself at an armed crash point (``AGENT_MAGIC_CRASH_AT``,
see ``agent_magic.store.jsonl``).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import anyio

from agent_magic import AgentClient, AgentOptions, ResultMessage
from agent_magic.store import jsonl as _store
from agent_magic.store.local import SessionStore
from tests.conftest import tree_snapshot


def encode_tree(tree: dict[str, bytes | None]) -> dict[str, str | None]:
    return {k: None if v is None else base64.b64encode(v).decode() for k, v in tree.items()}


def decode_tree(tree: dict[str, str | None]) -> dict[str, bytes | None]:
    return {k: None if v is None else base64.b64decode(v) for k, v in tree.items()}


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def run_segment(cfg: dict[str, Any]) -> None:
    """Run the segment ``cfg`` describes; exit code 0 when every turn finished, 3 on an error."""
    side = Path(cfg["side"])
    seg = cfg["segment"]
    log_fd = os.open(side / f"worker-{seg}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 2)
    os.dup2(log_fd, 1)
    for var in ("AGENT_MAGIC_MODEL", "AGENT_MAGIC_PROVIDER", "ANTHROPIC_AUTH_TOKEN", "AGENT_MAGIC_CRASH_AT"):
        os.environ.pop(var, None)
    os.environ.update(
        ANTHROPIC_BASE_URL=cfg["base_url"],
        ANTHROPIC_API_KEY=cfg["api_key"],
        AGENT_MAGIC_HOME=cfg["home"],
        AGENT_MAGIC_MAX_RETRIES="2",
    )
    _store.arm_crash_point(cfg.get("crash_at"))
    code = 0
    try:
        anyio.run(_segment, cfg)
    except BaseException:
        (side / f"error-{seg}.txt").write_text(traceback.format_exc())
        code = 3
    finally:
        _write_json_atomic(side / f"hits-{seg}.json", {"hits": dict(_store._crash_hits)})
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        os._exit(code)


async def _segment(cfg: dict[str, Any]) -> None:
    ws = Path(cfg["ws"])
    side = Path(cfg["side"])
    sid = cfg["sid"]
    store = SessionStore.at(cfg["home"])
    where: dict[str, Any] = {"resume": sid} if store.exists(sid) else {"session_id": sid}
    options = AgentOptions(
        cwd=ws, home=cfg["home"], permission_mode="bypassPermissions", lock_timeout=60.0, **where
    )
    async with AgentClient(options) as client:
        for turn in cfg["turns"]:
            _write_json_atomic(
                side / f"snap-{turn['attempt']}.json",
                {"prompt": turn["prompt"], "tree": encode_tree(tree_snapshot(ws))},
            )
            await client.query(turn["prompt"])
            result: ResultMessage | None = None
            async for msg in client.receive_response():
                if isinstance(msg, ResultMessage):
                    result = msg
            assert result is not None
            line = json.dumps(
                {"attempt": turn["attempt"], "turn": turn["turn"], "prompt": turn["prompt"],
                 "checkpoint": result.checkpoint_id, "subtype": result.subtype}
            )
            _append_line(side / "done.jsonl", line)


def warm_up() -> None:
    """Run one turn (a notebook Read) against an in-memory API: what a child would import and
    build on its first turn (the HTTP stack, the TLS context, pydantic models, nbformat's
    validator) is done once, in the forkserver, before it forks. No thread is left behind."""
    import importlib
    import tempfile

    import anthropic

    from agent_magic import query
    from agent_magic.providers import anthropic as provider
    from agent_magic.testing import text, tool_use
    from agent_magic.testing._server import _AnthropicHandler

    from .crash import notebook_with_outputs

    lib = importlib.import_module(anthropic.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
    provider.shared_ssl_context()
    with tempfile.TemporaryDirectory() as tmp:
        nb = Path(tmp) / "nb.ipynb"
        nb.write_text(json.dumps(notebook_with_outputs()))
        replies = [tool_use("Read", {"file_path": str(nb)}), text("ok")]

        def handler(request: Any) -> Any:
            body = json.loads(request.content)
            reply = replies[min(len(body["messages"]) // 2, 1)]
            events = _AnthropicHandler._message_events(None, body, reply)  # type: ignore[arg-type]
            sse = "".join(f"event: {name}\ndata: {json.dumps(payload)}\n\n" for name, payload in events)
            return lib.Response(200, headers={"content-type": "text/event-stream"}, content=sse.encode())

        def client(anthropic_: Any) -> Any:
            return anthropic_.DefaultAsyncHttpxClient(transport=lib.MockTransport(handler))

        async def go() -> None:
            async for _ in query("warm up", options=AgentOptions(cwd=tmp, persist_session=False, permission_mode="bypassPermissions")):
                pass

        saved = provider._http_client, os.environ.get("ANTHROPIC_API_KEY")
        setattr(provider, "_http_client", client)  # noqa: B010  (the test seam, restored below)
        os.environ["ANTHROPIC_API_KEY"] = "sk-ant-warm-up-0000000000"
        try:
            anyio.run(go)
        finally:
            setattr(provider, "_http_client", saved[0])  # noqa: B010
            if saved[1] is None:
                os.environ.pop("ANTHROPIC_API_KEY", None)
            else:
                os.environ["ANTHROPIC_API_KEY"] = saved[1]
            SessionStore.forget_instances()
