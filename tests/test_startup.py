"""Start-up work done ahead of the first turn: the client warm-up and pausing the collector."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from agent_magic import AgentClient, AgentOptions, ResultMessage
from agent_magic.store.jsonl import no_gc, parse_lines
from agent_magic.testing import FakeAnthropicServer, text


@pytest.fixture
def gc_restored() -> object:
    was = gc.isenabled()
    yield None
    gc.enable() if was else gc.disable()


def test_no_gc_nests_and_restores(gc_restored: object) -> None:
    gc.enable()
    with no_gc():
        assert not gc.isenabled()
        with no_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "the inner block must not re-enable the collector early"
    assert gc.isenabled()


def test_no_gc_leaves_a_disabled_collector_disabled(gc_restored: object) -> None:
    gc.disable()
    with no_gc():
        pass
    assert not gc.isenabled()


def test_no_gc_restores_after_an_error(gc_restored: object) -> None:
    gc.enable()
    with pytest.raises(ValueError), no_gc():
        raise ValueError("boom")
    assert gc.isenabled()


def test_no_gc_from_two_threads_ends_enabled(gc_restored: object) -> None:
    gc.enable()
    barrier = threading.Barrier(2)
    inside: list[bool] = []

    def work() -> None:
        for _ in range(200):
            with no_gc():
                inside.append(gc.isenabled())
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside and not any(inside)
    assert gc.isenabled()


def test_parsing_a_torn_line_still_warns_with_the_collector_back_on(gc_restored: object, tmp_path: Path) -> None:
    gc.enable()
    path = tmp_path / "t.jsonl"
    with pytest.warns(Warning, match="torn last line"):
        out = parse_lines([b'{"a": 1}\n', b'{"b": '], path)
    assert out == [{"a": 1}] and gc.isenabled()


def test_warm_up_sends_nothing_and_the_next_turn_works(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path
) -> None:
    """The warm-up streams from memory: the configured API never sees it, and a real turn follows."""
    code = (
        "from agent_magic.providers.anthropic import warm_up\n"
        "import sys\n"
        "warm_up(); warm_up()\n"
        "print('modules', 'anthropic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "modules True" in out.stdout
    assert fake_api.requests == []

    fake_api.add(text("hello after warm-up"))

    async def go() -> ResultMessage:
        from agent_magic.providers.anthropic import warm_up

        warm_up()  # also fine inside a process that then runs turns on its own loop
        async with AgentClient(AgentOptions(cwd=str(workspace))) as client:
            await client.query("hi")
            msgs = [m async for m in client.receive_response()]
        res = msgs[-1]
        assert isinstance(res, ResultMessage)
        return res

    res = anyio.run(go)
    assert res.subtype == "success" and res.result == "hello after warm-up"
    assert len(fake_api.message_requests) == 1


def test_warm_up_needs_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ANTHROPIC_")}
    env["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens; the warm-up must not try
    code = "from agent_magic.providers.anthropic import warm_up; warm_up(); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
