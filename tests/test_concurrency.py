"""Concurrency: kernels, the CLI and processes sharing one store, one session, one transcript.

The process-level scenarios live in ``tests/reliability/concurrency.py`` (shared
with ``bench/reliability.py``); the kernel ones are here. Counts are printed
(``-s``) and written to ``test-artifacts/reliability-concurrency.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent_magic as am
from agent_magic.notebook._display import TURN_MIME
from agent_magic.store.jsonl import parse_lines, read_raw_lines
from agent_magic.testing import FakeAnthropicServer, text, tool_use

from .kernel_harness import Kernel, kernel_available
from .reliability.concurrency import (
    ConcurrencyReport,
    check_turns_whole,
    many_creators,
    readers_while_writing,
    writers_on_one_session,
)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
_TOTAL = ConcurrencyReport()

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and locks")


def _record(report: ConcurrencyReport) -> None:
    print("\n" + report.summary())
    _TOTAL.merge(report)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "reliability-concurrency.json").write_text(
        json.dumps({"summary": _TOTAL.summary(), "failures": _TOTAL.failures[:50]}, indent=1)
    )
    assert not report.failures, "\n".join(report.failures)


def test_a_busy_session_refuses_or_waits_never_interleaves(tmp_path: Path) -> None:
    report = writers_on_one_session(tmp_path)
    _record(report)
    assert report.locked_out == 1 and report.waited == 1


def test_reads_during_appends_see_whole_lines(tmp_path: Path) -> None:
    report = readers_while_writing(tmp_path)
    _record(report)
    assert report.reads > 10


def test_many_processes_create_sessions_in_one_store(tmp_path: Path) -> None:
    report = many_creators(tmp_path)
    _record(report)
    assert report.sessions_created == 60


# ---------------------------------------------------------------------------
# Real kernels and the CLI
# ---------------------------------------------------------------------------


@pytest.fixture
def notebook_env(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> dict[str, str]:
    return {
        **fake_api.env(), "AGENT_MAGIC_HOME": str(home), "AGENT_MAGIC_MAX_RETRIES": "1",
        "JPY_SESSION_NAME": str(workspace / "analysis.ipynb"),
    }


@pytest.fixture
def two_kernels(workspace: Path, notebook_env: dict[str, str]) -> Iterator[tuple[Kernel, Kernel]]:
    if not kernel_available():
        pytest.skip("ipykernel is not installed")
    kernels: list[Kernel] = []
    try:
        for _ in range(2):
            k = Kernel(workspace, notebook_env)
            kernels.append(k)
            k.ok("%load_ext agent_magic")
        yield kernels[0], kernels[1]
    finally:
        for k in kernels:
            k.close()


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_magic.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.kernel
@pytest.mark.slow
def test_two_kernels_and_the_cli_on_one_notebook(
    two_kernels: tuple[Kernel, Kernel], fake_api: FakeAnthropicServer, home: Path, workspace: Path,
    notebook_env: dict[str, str],
) -> None:
    import os

    k1, k2 = two_kernels
    env = {**os.environ, **notebook_env}
    fake_api.on_prompt("start", tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "v1\n"}), text("Started."))
    fake_api.on_prompt(
        "slow one",
        tool_use("Write", {"file_path": str(workspace / "a.txt"), "content": "v2\n"}, delay=0.01),
        text("Slow one finished. " * 20, chunk_size=4, delay=0.01),
    )
    fake_api.on_prompt("slow two", text("Slow two finished. " * 20, chunk_size=4, delay=0.01))
    t0 = time.monotonic()

    # Turn 1 in kernel 1: the notebook's session and its first checkpoint.
    first = k1.ok("%%agent --permission-mode acceptEdits\nstart", timeout=60)
    prov = first.bundles(TURN_MIME)[-1]
    sid, cp1 = prov["session_id"], prov["checkpoint_id"]
    assert (workspace / "a.txt").read_text() == "v1\n"

    # Both kernels run %%agent on the same notebook (same scope, same session) at once;
    # meanwhile the CLI lists the store, and asks to rewind to before turn 1.
    run1 = k1.start("%%agent --permission-mode acceptEdits\nslow one")
    run2 = k2.start("%%agent\nslow two")
    listings = 0
    rewind: list[subprocess.CompletedProcess[str]] = []
    started = threading.Event()

    def do_rewind() -> None:
        started.set()
        rewind.append(_cli("rewind", sid, cp1, env=env))

    deadline = time.monotonic() + 30
    while len(fake_api.message_requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    t = threading.Thread(target=do_rewind)
    t.start()
    started.wait()
    while not (run1.done.is_set() and run2.done.is_set()) and time.monotonic() < deadline + 60:
        listing = _cli("sessions", "--json", env=env)
        assert listing.returncode == 0, listing.stderr
        rows = json.loads(listing.stdout)
        assert [r["session_id"] for r in rows] == [sid]
        listings += 1
    assert run1.done.wait(90) and run2.done.wait(90)
    t.join(60)

    for run in (run1, run2):
        time.sleep(0.2)
        assert run.error is None, run.text
    # The rewind waited for the turns (or gave up cleanly); it never ran inside one.
    cli = rewind[0]
    assert cli.returncode in (0, 2), cli.stderr
    if cli.returncode == 2:
        assert "busy" in cli.stderr
    path = home / "sessions" / sid / "transcript.jsonl"
    entries = parse_lines(read_raw_lines(path), path)
    assert check_turns_whole(entries) == []
    assert next(e["message"]["content"] for e in entries if e.get("is_prompt")) == "start"
    assert len([e for e in entries if e.get("is_prompt")]) == 3
    records = parse_lines(read_raw_lines(path.with_name("checkpoints.jsonl")), None)
    kinds = [r["r"] for r in records]
    if cli.returncode == 0:
        # The rewind ran between or after the turns (whatever order the lock gave), never inside one.
        at = kinds.index("rewind")
        assert at == len(kinds) - 1 or kinds[at + 1] == "turn", kinds
        slow_one = next(i for i, r in enumerate(records) if r.get("prompt") == "slow one")
        if slow_one > at:  # slow one wrote a.txt anew after the rewind removed it
            assert (workspace / "a.txt").read_text() == "v2\n"
        else:
            assert not (workspace / "a.txt").exists()
    else:
        assert "rewind" not in kinds
    # The second turn to get the lock saw the first one's messages: its first request to the
    # model carries the other turn's prompt and finished answer.
    info = am.get_session_info(sid)
    assert info.num_turns == 3
    order = [e["message"]["content"] for e in entries if e.get("is_prompt")]
    assert order[0] == "start" and sorted(order[1:]) == ["slow one", "slow two"], order
    earlier, later = order[1], order[2]
    first_of_later = next(r for r in fake_api.message_requests if r.last_prompt == later)
    sent = json.dumps((first_of_later.body or {})["messages"])
    assert earlier in sent and f"{earlier.capitalize()} finished." in sent, sent[-400:]
    print(f"\nkernels+cli: 2 kernels, 3 turns, {listings} listings while writing, rewind exit {cli.returncode}, "
          f"{time.monotonic() - t0:.1f}s")
