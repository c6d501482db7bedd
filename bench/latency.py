"""Latencies the tests no longer bound: how soon things that must not wait come back.

The test suite checks these behaviours without clocks (a command that would
hang past its timeout, a bridge that would wait an hour); the times themselves
are measured here, on real subprocesses, a real kernel and the fake Messages
API, and printed as a table (median, max over ``--runs``)::

    python bench/latency.py [--runs 5] [--only bash,interrupt,kernel] [--json PATH]

- ``bash-background-child``: Bash ``sleep 30 & echo launched`` (the child keeps
  the output pipe open) until its result;
- ``bash-cancel``: a command that ignores SIGTERM, cancelled: from the cancel
  until ``run()`` returns (SIGTERM, grace, SIGKILL of the group);
- ``bash-timeout``: ``timeout=500`` ms on a 30 s command: from the timeout
  until the result;
- ``interrupt-mid-stream`` / ``interrupt-during-bash``: ``AgentClient.interrupt()``
  until the turn's ``ResultMessage``, during a slow answer and during a 30 s Bash;
- ``kernel-edits-no-front-end``: ``%%agent`` in a kernel with no front end,
  two cell edits: from the model request carrying the edits' results back to
  the one before it (the edits' own time, no waiting on a front end);
- ``kernel-rewind-via-front-end`` / ``kernel-rewind-no-subshell``: ``%agent
  rewind`` of those edits with a front end answering on its subshell, and with
  one that cannot answer a synchronous cell (the file is used at once).
"""

# nbformat is untyped.
# mypy: disable-error-code="no-untyped-call"
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- Bash ---------------------------------------------------------------------------


def _bash_ctx(tmp: Path) -> Any:
    from agent_magic.tools import ToolContext
    from agent_magic.tools.bash import subprocess_env

    return ToolContext(cwd=tmp, session_id="bench", env=subprocess_env(os.environ, {}, pass_secrets=False))


def bash_background_child(tmp: Path) -> float:
    import anyio

    from agent_magic.tools.bash import BashTool

    start = time.monotonic()
    res = anyio.run(BashTool().run, {"command": "sleep 30 & echo launched"}, _bash_ctx(tmp))
    took = time.monotonic() - start
    assert res.content == "launched\nExit code: 0", res.content
    return took


def bash_cancel(tmp: Path) -> float:
    import anyio

    from agent_magic.tools.bash import BashTool

    cancelled_at = 0.0

    async def main() -> None:
        nonlocal cancelled_at
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_soon() -> None:
                    nonlocal cancelled_at
                    await anyio.sleep(0.3)
                    cancelled_at = time.monotonic()
                    scope.cancel()

                tg.start_soon(cancel_soon)
                await BashTool().run({"command": "trap '' TERM; sleep 30; sleep 30"}, _bash_ctx(tmp))

    anyio.run(main)
    return time.monotonic() - cancelled_at


def bash_timeout(tmp: Path) -> float:
    import anyio

    from agent_magic.tools.bash import BashTool

    start = time.monotonic()
    res = anyio.run(BashTool().run, {"command": "sleep 30 & sleep 30; wait", "timeout": 500}, _bash_ctx(tmp))
    assert res.data["timed_out"] is True
    return time.monotonic() - start - 0.5


# -- interrupts ------------------------------------------------------------------------


def _interrupt(tmp: Path, reply: Any, after: Callable[[int, Any], bool], **options: Any) -> float:
    import anyio

    from agent_magic import AgentClient, AgentOptions, ResultMessage
    from agent_magic.testing import FakeAnthropicServer, text

    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    with FakeAnthropicServer() as server, server.environ():
        server.add(reply, text("never"))

        async def go() -> float:
            async with AgentClient(AgentOptions(cwd=ws, **options)) as client:
                await client.query("go")
                asked = 0.0
                n = 0
                async for m in client.receive_response():
                    n += 1
                    if not asked and after(n, m):
                        asked = time.monotonic()
                        await client.interrupt()
                    if isinstance(m, ResultMessage):
                        assert m.subtype == "interrupted", m
                        return time.monotonic() - asked
            raise AssertionError("no result")

        return anyio.run(go)


def interrupt_mid_stream(tmp: Path) -> float:
    from agent_magic.testing import text

    return _interrupt(tmp, text("partial " * 2000, chunk_size=5, delay=0.01), lambda n, m: n == 30, include_partial_messages=True)


def interrupt_during_bash(tmp: Path) -> float:
    from agent_magic import AssistantMessage
    from agent_magic.testing import tool_use

    def started(n: int, m: Any) -> bool:
        if isinstance(m, AssistantMessage):
            time.sleep(0.5)  # the command is running by now
            return True
        return False

    return _interrupt(tmp, tool_use("Bash", {"command": "sleep 30.321"}), started, permission_mode="bypassPermissions")


# -- a kernel ----------------------------------------------------------------------------


def kernel_suite(tmp: Path, runs: int) -> dict[str, list[float]]:
    """Edits without a front end, then rewinds through one (tests/test_comm.py's harness)."""
    from agent_magic.testing import FakeAnthropicServer
    from tests.kernel_harness import Kernel
    from tests.test_comm import FrontEnd, load_and_link, script_edit, unsaved

    out: dict[str, list[float]] = {"kernel-edits-no-front-end": [], "kernel-rewind-via-front-end": [], "kernel-rewind-no-subshell": []}
    for i in range(runs):
        import nbformat

        ws = tmp / f"kernel{i}"
        ws.mkdir()
        notebook = ws / "live.ipynb"
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(s, id=c) for c, s in
                    (("load", "%load_ext agent_magic"), ("one", "x = 1"), ("two", "y = 2"), ("three", "z = 3"))]
        nbformat.write(nb, notebook)
        with FakeAnthropicServer() as server:
            env = {**server.env(), "AGENT_MAGIC_HOME": str(ws / "home"), "AGENT_MAGIC_MAX_RETRIES": "1",
                   "JPY_SESSION_NAME": str(notebook)}
            # No front end: the edits go to the file.
            k = Kernel(ws, env)
            try:
                k.ok("%load_ext agent_magic")
                script_edit(server, notebook)
                k.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
                sent = server.message_requests
                out["kernel-edits-no-front-end"].append(sent[2].time - sent[1].time)
            finally:
                k.close()
            for subshell, key in ((True, "kernel-rewind-via-front-end"), (False, "kernel-rewind-no-subshell")):
                nbformat.write(nb, notebook)
                server.reset()
                k = Kernel(ws, {**env, "AGENT_MAGIC_HOME": str(ws / f"home-{key}")})
                try:
                    front = FrontEnd(k, ws, {"live.ipynb": unsaved(notebook)}, subshell=subshell)
                    load_and_link(k, front)
                    script_edit(server, notebook)
                    k.ok("%%agent --permission-mode acceptEdits\nimprove the notebook", timeout=60)
                    cp = json.loads(k.ok("import agent_magic as am, json; print(json.dumps("
                                         "am.list_checkpoints(am.list_sessions()[0].session_id)[0].checkpoint_id))").text)
                    start = time.monotonic()
                    k.ok(f"%agent rewind {cp[:8]}")
                    out[key].append(time.monotonic() - start)
                finally:
                    k.close()
    return out


# -- the table ------------------------------------------------------------------------------

BASH: dict[str, Callable[[Path], float]] = {
    "bash-background-child": bash_background_child,
    "bash-cancel": bash_cancel,
    "bash-timeout": bash_timeout,
}
INTERRUPT: dict[str, Callable[[Path], float]] = {
    "interrupt-mid-stream": interrupt_mid_stream,
    "interrupt-during-bash": interrupt_during_bash,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="bash,interrupt,kernel", help="comma-separated: bash, interrupt, kernel")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    groups = set(args.only.split(","))
    import logging

    logging.getLogger("anthropic").setLevel(logging.ERROR)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="agent-magic-latency-") as d:
        tmp = Path(d)
        os.environ["AGENT_MAGIC_HOME"] = str(tmp / "home")
        for group, cases in (("bash", BASH), ("interrupt", INTERRUPT)):
            if group not in groups:
                continue
            for name, fn in cases.items():
                results[name] = []
                for i in range(args.runs):
                    run_dir = tmp / f"{name}-{i}"
                    run_dir.mkdir()
                    results[name].append(fn(run_dir))
        if "kernel" in groups:
            results.update(kernel_suite(tmp, args.runs))
    width = max(len(n) for n in results) if results else 10
    print(f"{'measurement':<{width}}  {'median s':>9}  {'max s':>7}  runs")
    for name, values in results.items():
        print(f"{name:<{width}}  {statistics.median(values):>9.3f}  {max(values):>7.3f}  {len(values)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "seconds": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
