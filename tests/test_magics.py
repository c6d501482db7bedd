"""%agent / %%agent in an in-process IPython shell: options, subcommands, errors, prefixes, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import agent_magic as am
from agent_magic.notebook._magics import AgentTurnError
from agent_magic.testing import FakeAnthropicServer, error, text, tool_use


def cell(ip: InteractiveShell, line: str, body: str) -> BaseException | None:
    r = ip.run_cell(f"%%agent {line}\n{body}")
    return r.error_in_exec or r.error_before_exec


def line(ip: InteractiveShell, text_: str) -> BaseException | None:
    r = ip.run_cell(f"%agent {text_}")
    return r.error_in_exec or r.error_before_exec


def sent_prompts(server: FakeAnthropicServer, i: int = -1) -> list[str]:
    msgs = server.message_requests[i].body["messages"]
    return [b["text"] for m in msgs if m["role"] == "user" for b in m["content"] if b.get("type") == "text"]


def test_prompt_is_literal(ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]) -> None:
    ip.user_ns["x"] = "SHOULD-NOT-APPEAR"
    fake_api.add(text("ok"))
    body = 'Use {x} and $x and {"a": 1} and {{y}} literally'
    assert cell(ip, "", body) is None
    assert sent_prompts(fake_api) == [body]
    assert "SHOULD-NOT-APPEAR" not in json.dumps(fake_api.message_requests[0].body)


def test_cells_continue_the_notebook_session(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("one"), text("two"))
    assert cell(ip, "", "first") is None
    assert cell(ip, "", "second") is None
    assert sent_prompts(fake_api) == ["first", "second"]
    rows = am.list_sessions()
    assert len(rows) == 1 and rows[0].num_turns == 2


def test_new_and_resume_and_fork_options(ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(text("a"), text("b"), text("c"), text("d"), text("e"))
    assert cell(ip, "", "in first") is None
    first = am.list_sessions()[0].session_id
    assert cell(ip, "--new", "in second") is None
    second = next(i.session_id for i in am.list_sessions() if i.session_id != first)
    assert sent_prompts(fake_api) == ["in second"]
    # the new session is current now
    assert cell(ip, "", "second again") is None
    assert sent_prompts(fake_api) == ["in second", "second again"]
    # --resume by prefix continues the first and makes it current
    assert cell(ip, f"--resume {first[:6]}", "first again") is None
    assert sent_prompts(fake_api) == ["in first", "first again"]
    assert am.current_session(str(Path.cwd().resolve())) == first
    # --fork copies the current session; the original stays unchanged
    assert cell(ip, "--fork", "forked") is None
    assert sent_prompts(fake_api) == ["in first", "first again", "forked"]
    cur = am.current_session(str(Path.cwd().resolve()))
    assert cur not in (first, second)
    assert am.get_session_info(cur).parent_session_id == first
    assert am.get_session_info(first).num_turns == 2


def test_session_id_model_turns_budget_permission_allow(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "echo hi > hi.txt"}), text("done"))
    err = cell(ip, '--session-id my-run --model "claude-sonnet-5-5" --max-turns 5 --max-budget-usd 2 --allow "Bash(echo *)"', "say hi")
    assert err is None
    assert am.get_session_info("my-run").num_turns == 1
    assert fake_api.message_requests[0].body["model"] == "claude-sonnet-5-5"
    assert (workspace / "hi.txt").read_text() == "hi\n"  # allowed by the rule, no prompt needed
    fake_api.add(tool_use("Glob", {"pattern": "*"}), tool_use("Glob", {"pattern": "*"}))
    err = cell(ip, "--max-turns 1", "loop")
    assert isinstance(err, AgentTurnError) and err.subtype == "error_max_turns"


def test_permission_denied_without_frontend(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("Bash", {"command": "touch nope.txt"}), text("ok, not allowed"))
    assert cell(ip, "", "make a file") is None
    res = fake_api.message_requests[1].tool_results[0]
    assert res["is_error"] and "--permission-mode" in res["content"]
    assert not (workspace / "nope.txt").exists()


def test_permission_mode_option(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path) -> None:
    fake_api.add(tool_use("Write", {"file_path": "w.txt", "content": "x"}), text("ok"))
    assert cell(ip, "--permission-mode acceptEdits", "write") is None
    assert (workspace / "w.txt").exists()
    assert isinstance(cell(ip, "--permission-mode sometimes", "x"), UsageError)


def test_no_persist(ip: InteractiveShell, fake_api: FakeAnthropicServer, home: Path) -> None:
    fake_api.add(text("ephemeral"))
    assert cell(ip, "--no-persist", "hi") is None
    assert am.list_sessions() == []


def test_quiet_shows_only_answer(ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str], workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    fake_api.add(tool_use("Read", {"file_path": "f.txt"}), text("Final answer."))
    capsys.readouterr()
    assert cell(ip, "--quiet", "read it") is None
    out = capsys.readouterr().out
    assert "Read" not in out.split("--")[0] and "Final answer." in out


def test_with_variable(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    ip.user_ns["numbers"] = [1, 2, 3]
    fake_api.add(text("seen"))
    assert cell(ip, "--with numbers", "what is in numbers?") is None
    prompt = sent_prompts(fake_api)[0]
    assert prompt.startswith("what is in numbers?") and "numbers: list, len=3" in prompt and "[1, 2, 3]" in prompt
    assert isinstance(cell(ip, "--with missing", "x"), UsageError)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ("--max-turns many", "invalid int value"),
        ("--bogus", "unrecognized arguments"),
        ('--model "unclosed', "check the quotes"),
        ("--new --resume abcd", "--new starts a fresh session"),
        ("--resume zzzzzz", "No session 'zzzzzz'"),
        ("--fork", "no session to fork"),
    ],
)
def test_cell_usage_errors(ip: InteractiveShell, fake_api: FakeAnthropicServer, args: str, needle: str) -> None:
    err = cell(ip, args, "prompt")
    assert isinstance(err, UsageError), err
    assert needle in str(err)
    assert fake_api.requests == []


def test_empty_cell(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    err = cell(ip, "", "   \n")
    assert isinstance(err, UsageError) and "empty" in str(err)


def test_failing_turn_fails_the_cell(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(error(401, "authentication_error", "bad key"))
    err = cell(ip, "", "hi")
    assert isinstance(err, AgentTurnError) and "ANTHROPIC_API_KEY" in str(err)
    # Run All stops: later cells do not run in a run_cell chain after an error
    assert err._render_traceback_()[0].endswith(str(err))


def test_missing_key_is_a_usage_error(ip: InteractiveShell, fake_api: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    err = cell(ip, "", "hi")
    assert isinstance(err, UsageError) and "ANTHROPIC_API_KEY" in str(err)


def test_help(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert line(ip, "") is None
    out = capsys.readouterr().out
    assert "--resume ID" in out and "rewind" in out and "literally" in out
    ip.run_cell("%agent?")
    from agent_magic.notebook._magics import AgentMagics

    assert "--permission-mode" in (AgentMagics.agent.__doc__ or "")


def test_line_subcommands(ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str], workspace: Path, tmp_path: Path) -> None:
    fake_api.add(tool_use("Write", {"file_path": "a.txt", "content": "v1"}), text("one"), text("two"), text("three"))
    assert cell(ip, "--permission-mode acceptEdits", "write a") is None
    sid = am.list_sessions()[0].session_id
    cps = am.list_checkpoints(sid)
    assert len(cps) == 1 and cps[0].files == ["a.txt"]
    capsys.readouterr()
    for cmd in ("sessions", "sessions --all", f"info {sid[:5]}", "info", "history", f"history {sid[:6]}", "checkpoints", "model", "permissions"):
        assert line(ip, cmd) is None, cmd
    out = capsys.readouterr().out
    assert sid[:8] in out and "write a" in out and "a.txt" in out and "Permission mode: default" in out
    large = FakeAnthropicServer.models[1]  # a name no client release deprecates
    assert line(ip, f"model {large}") is None and line(ip, "permissions acceptEdits") is None
    assert cell(ip, "", "second") is None
    assert fake_api.message_requests[-1].body["model"] == large
    # rewind dry run then real rewind by checkpoint prefix
    assert "Which checkpoint?" in str(line(ip, "rewind"))
    assert "not both" in str(line(ip, "rewind abcd --turn 1"))
    assert "has no turn 9" in str(line(ip, "rewind --turn 9"))
    assert line(ip, "rewind --turn 1 --dry-run") is None
    assert line(ip, f"rewind {cps[0].checkpoint_id[:6]} --dry-run") is None
    assert (workspace / "a.txt").exists()
    assert line(ip, f"rewind {cps[0].checkpoint_id[:6]}") is None
    assert not (workspace / "a.txt").exists()
    # rename, export / import, fork --at, new, continue, delete
    assert line(ip, "rename My first session") is None
    assert am.get_session_info(sid).title == "My first session"
    bundle = tmp_path / "s.zip"
    assert line(ip, f"export {sid[:6]} {bundle}") is None and bundle.exists()
    assert line(ip, f"import {bundle} --as imported-1") is None
    assert am.current_session(str(workspace)) == "imported-1"
    assert line(ip, f"resume {sid[:6]}") is None
    assert line(ip, f"fork --at {cps[0].checkpoint_id[:8]}") is None
    fork_id = am.current_session(str(workspace))
    assert fork_id != sid and [m.type for m in am.get_session_messages(fork_id)] == ["user", "assistant", "user", "assistant"]
    assert line(ip, "new") is None
    assert cell(ip, "", "fresh") is None
    assert sent_prompts(fake_api) == ["fresh"]
    assert line(ip, "continue") is None
    assert line(ip, f"delete {fork_id[:8]}") is None
    with pytest.raises(am.SessionNotFoundError):
        am.get_session_info(fork_id)


@pytest.mark.parametrize(
    ("cmd", "needle"),
    [
        ("frobnicate", "invalid choice"),
        ("resume", "the following arguments are required: id"),
        ("resume abc", "No session 'abc'"),
        ("permissions sometimes", "invalid choice"),
        ("rewind", "no session yet"),
        ("info", "no session yet"),
        ("import /nonexistent.zip", "No bundle"),
        ("checkpoints zzzzzz", "No session 'zzzzzz'"),
    ],
)
def test_line_usage_errors(ip: InteractiveShell, cmd: str, needle: str) -> None:
    err = line(ip, cmd)
    assert isinstance(err, UsageError), err
    assert needle in str(err)
    assert "\n" not in str(err).split("\nusage:")[0]


def test_ambiguous_prefix(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("1"), text("2"))
    assert cell(ip, "--session-id abcd-1", "one") is None
    assert cell(ip, "--session-id abcd-2", "two") is None
    err = line(ip, "resume abcd")
    assert isinstance(err, UsageError) and "ambiguous" in str(err)
    assert line(ip, "resume abcd-1") is None


def test_reload_does_not_register_twice(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    from agent_magic.notebook import state

    n_before = len(ip.events.callbacks["pre_run_cell"])
    ip.run_line_magic("reload_ext", "agent_magic")
    ip.run_line_magic("load_ext", "agent_magic")
    assert len(ip.events.callbacks["pre_run_cell"]) == n_before
    magics = state(ip)["magics"]  # type: ignore[index]
    assert ip.magics_manager.magics["cell"]["agent"].__self__ is magics
    fake_api.add(text("still works"))
    assert cell(ip, "", "hi") is None
    ip.run_line_magic("unload_ext", "agent_magic")
    assert "agent" not in ip.magics_manager.magics["cell"] and "agent" not in ip.magics_manager.magics["line"]
    assert len(ip.events.callbacks["pre_run_cell"]) == n_before - 1
    assert state(ip) is None


def test_config_traits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path, workspace: Path, fake_api: FakeAnthropicServer) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.chdir(workspace)
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    small, large = FakeAnthropicServer.models[2], FakeAnthropicServer.models[1]
    cfg.AgentMagics.model = small
    cfg.AgentMagics.permission_mode = "acceptEdits"
    shell = InteractiveShell.instance(config=cfg)
    try:
        shell.run_line_magic("load_ext", "agent_magic")
        fake_api.add(tool_use("Write", {"file_path": "cfg.txt", "content": "c"}), text("ok"))
        r = shell.run_cell("%%agent\nwrite")
        assert r.error_in_exec is None
        assert fake_api.message_requests[0].body["model"] == small
        assert (workspace / "cfg.txt").exists()
        shell.run_line_magic("config", f"AgentMagics.model = '{large}'")
        fake_api.add(text("ok"))
        assert shell.run_cell("%%agent\nagain").error_in_exec is None
        assert fake_api.message_requests[-1].body["model"] == large
    finally:
        shell.run_line_magic("unload_ext", "agent_magic")
        InteractiveShell.clear_instance()


def test_notebook_scope_from_jupyter(ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_api.add(text("a"), text("b"), text("c"))
    monkeypatch.setenv("JPY_SESSION_NAME", str(workspace / "one.ipynb"))
    assert cell(ip, "", "in one") is None
    monkeypatch.setenv("JPY_SESSION_NAME", str(workspace / "two.ipynb"))
    assert cell(ip, "", "in two") is None
    assert sent_prompts(fake_api) == ["in two"]  # separate sessions for two notebooks in one folder
    ip.user_ns["__session__"] = str(workspace / "one.ipynb")
    assert cell(ip, "", "one again") is None
    assert sent_prompts(fake_api) == ["in one", "one again"]
    scopes = {i.scope for i in am.list_sessions()}
    assert scopes == {str(workspace / "one.ipynb"), str(workspace / "two.ipynb")}


def test_config_kernel_tools_applies_to_the_running_session(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    def offered() -> set[str]:
        return {t["name"] for t in fake_api.message_requests[-1].body["tools"]}

    fake_api.add(text("one"))
    assert cell(ip, "", "first") is None
    assert {"Python", "Variables"} <= offered()
    ip.run_line_magic("config", "AgentMagics.kernel_tools = False")
    fake_api.add(text("two"))
    assert cell(ip, "", "second") is None
    assert not {"Python", "Variables"} & offered()
    # the same session went on
    first, second = fake_api.message_requests[0], fake_api.message_requests[-1]
    assert len(second.body["messages"]) > len(first.body["messages"])
