"""Drive a real IPython kernel like a front end: run cells, collect outputs, answer widgets.

The harness plays the browser's part for widgets: it records ``comm_open``
messages for ``jupyter.widget`` models and can send them custom messages, the
way anywidget's front end does when a button is clicked.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class CellRun:
    """Everything a cell produced."""

    msg_id: str
    outputs: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def text(self) -> str:
        parts = []
        for o in self.outputs:
            if o["msg_type"] == "stream":
                parts.append(o["content"]["text"])
            elif o["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                data = o["content"].get("data", {})
                parts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
            elif o["msg_type"] == "error":
                parts.append(f"{o['content']['ename']}: {o['content']['evalue']}")
        return "\n".join(parts)

    def bundles(self, mime: str) -> list[Any]:
        return [
            o["content"]["data"][mime]
            for o in self.outputs
            if o["msg_type"] in ("display_data", "update_display_data") and mime in o["content"].get("data", {})
        ]


class Kernel:
    """A python3 kernel in ``cwd`` with ``env`` added, driven from a reader thread."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=full_env)
        self._connect()

    def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.runs: dict[str, CellRun] = {}
        self.comms: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_iopub, daemon=True)
        self._reader.start()
        self._shell_reader = threading.Thread(target=self._read_shell, daemon=True)
        self._shell_reader.start()

    # -- reading ---------------------------------------------------------
    def _read_iopub(self) -> None:
        try:
            self._iopub_loop()
        finally:
            _close_thread_loop()

    def _read_shell(self) -> None:
        try:
            self._shell_loop()
        finally:
            _close_thread_loop()

    def _iopub_loop(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            except Exception:
                if self._stop.is_set():
                    return
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            mtype = msg["msg_type"]
            if mtype == "comm_open" and msg["content"].get("target_name") == "jupyter.widget":
                comm_id = msg["content"]["comm_id"]
                self.comms[comm_id] = dict(msg["content"]["data"].get("state", {}))
            elif mtype == "comm_msg":
                data = msg["content"].get("data", {})
                comm_id = msg["content"]["comm_id"]
                if data.get("method") == "update" and comm_id in self.comms:
                    self.comms[comm_id].update(data.get("state", {}))
            run = self.runs.get(parent) if parent else None
            if run is None:
                continue
            if mtype in ("stream", "display_data", "update_display_data", "execute_result", "error"):
                run.outputs.append({"msg_type": mtype, "content": msg["content"]})
                if mtype == "error":
                    run.error = msg["content"]
            elif mtype == "status" and msg["content"]["execution_state"] == "idle":
                run.finished = time.monotonic()
                run.done.set()

    def _shell_loop(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_shell_msg(timeout=0.1)
            except queue.Empty:
                continue
            except Exception:
                if self._stop.is_set():
                    return
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            run = self.runs.get(parent) if parent else None
            if run is not None and msg["msg_type"] == "execute_reply":
                run.status = msg["content"]["status"]

    # -- cells -------------------------------------------------------------
    def start(self, code: str, cell_id: str | None = None) -> CellRun:
        """Send a cell for execution without waiting."""
        msg = self.kc.session.msg(
            "execute_request",
            {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
            metadata={"cellId": cell_id or str(uuid.uuid4())},
        )
        run = CellRun(msg["header"]["msg_id"])
        self.runs[run.msg_id] = run
        self.kc.shell_channel.send(msg)
        return run

    def run(self, code: str, timeout: float = 60, cell_id: str | None = None) -> CellRun:
        run = self.start(code, cell_id)
        if not run.done.wait(timeout):
            raise TimeoutError(f"cell did not finish in {timeout}s: {code[:80]!r}\n{run.text}")
        # the execute_reply may trail the idle status slightly
        deadline = time.monotonic() + 5
        while run.status is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return run

    def ok(self, code: str, timeout: float = 60) -> CellRun:
        run = self.run(code, timeout)
        if run.error is not None or run.status != "ok":
            raise AssertionError(f"cell failed: {code[:80]!r}\n{run.text}\n{run.error}")
        return run

    # -- widgets -------------------------------------------------------------
    def find_widget(self, key: str, timeout: float = 30, exclude: set[str] | None = None) -> str:
        """The comm id of the newest widget whose state has ``key``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for comm_id in reversed(list(self.comms)):
                if key in self.comms[comm_id] and comm_id not in (exclude or set()):
                    return comm_id
            time.sleep(0.02)
        raise TimeoutError(f"no widget with {key!r} appeared")

    def send_custom(self, comm_id: str, content: dict[str, Any]) -> None:
        """What anywidget's ``model.send(content)`` does in the browser."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"method": "custom", "content": content}})
        self.kc.shell_channel.send(msg)

    # -- lifecycle -------------------------------------------------------------
    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def restart(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self._shell_reader.join(timeout=5)
        self.kc.stop_channels()
        self.km.restart_kernel(now=True)
        self._connect()

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        self._shell_reader.join(timeout=5)
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _close_thread_loop() -> None:
    """jupyter_client's sync calls make an event loop per thread; close ours when the thread ends."""
    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    if not loop.is_running():
        loop.close()


def kernel_available() -> bool:
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        return False
    return sys.platform != "win32"
