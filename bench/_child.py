"""Run one operation in a fresh process.

Cold: ``python -m bench._child`` with a JSON spec on stdin, nothing imported
first; the result is printed as one line ``BENCH-RESULT {json}``.

Warm (a fresh process with the library already loaded): forked from a
``multiprocessing`` fork server that imported the libraries once and never
runs an operation itself, so every operation starts from the state of a
process that has just imported them (:func:`run_warm`).

The spec is ``{"system": "ours" | "claude_code", "op": name, "kwargs": {...},
"warm": bool, "env": {...}}``.
"""

from __future__ import annotations

import time

T_START = time.time()

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

RESULT_PREFIX = "BENCH-RESULT "


#: Imported once by the fork server: what a query and the session helpers need.
WARM_MODULES = [
    "anthropic",
    "agent_magic",
    "agent_magic._api",
    "agent_magic._client",
    "agent_magic.providers.anthropic",
    "agent_magic.tools.files",
    "agent_magic.tools.notebook",
    "agent_magic.tools.bash",
    "agent_magic.tools.search",
    "bench._ours",
]

_context: Any = None


def run_warm(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``spec`` in a process forked from the warm fork server; return its result."""
    import multiprocessing

    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(WARM_MODULES)
    recv, send = _context.Pipe(duplex=False)
    proc = _context.Process(target=_forked, args=(spec, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            proc.kill()
            raise TimeoutError(f"{spec['system']}/{spec['op']} took more than {timeout:.0f} s")
        out: dict[str, Any] = recv.recv()
    except EOFError:
        raise RuntimeError(f"{spec['system']}/{spec['op']} died (exit code {proc.exitcode})") from None
    finally:
        proc.join(10)
    return out


def _forked(spec: dict[str, Any], conn: Any) -> None:
    try:
        out = _run(spec)
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    conn.send(out)
    conn.close()


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs = spec.get("kwargs") or {}
    os.environ.update(spec.get("env") or {})
    # The bench points ANTHROPIC_CONFIG_DIR at an empty guard folder, which makes the
    # anthropic client log "ANTHROPIC_API_KEY ... takes precedence" once per process.
    import logging

    logging.getLogger("anthropic.lib.credentials").setLevel(logging.ERROR)
    if spec["system"] == "ours":
        from . import _ours

        if spec.get("warm"):
            _ours.warm_imports(spec["op"])
        t_ready = time.time()
        op: Any = _ours.OPS[spec["op"]]
        out: dict[str, Any] = op(**kwargs)
    else:
        if spec.get("warm"):
            import claude_agent_sdk  # noqa: F401
        t_ready = time.time()
        from . import _claude_code

        fn = getattr(_claude_code, spec["op"])
        out = asyncio.run(fn(**kwargs)) if asyncio.iscoroutinefunction(fn) else fn(**kwargs)
    out["t_process_start"] = T_START
    out["t_ready"] = t_ready
    return out


def main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        out = _run(spec)
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
