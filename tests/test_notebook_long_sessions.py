"""Long sessions in a notebook (#15): ``%agent compact``, compaction lines, "% of context",
thinking blocks collapsed, ``--effort`` and ``AgentMagics.effort`` / ``thinking``.

Driven like a person drives them: ``%%agent`` cells and ``%agent`` lines in an in-process
shell (the plain view, as a terminal shows it) against the fake Messages API over real
HTTP; the rich view (what JupyterLab shows) with :class:`TurnView` fed a real turn's messages.
"""

# IPython's run_cell and find_line_magic are untyped.
# mypy: disable-error-code="no-untyped-call,no-any-return"
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import agent_magic as am
from agent_magic._messages import ResultMessage, SystemMessage
from agent_magic.notebook import state
from agent_magic.notebook._display import TURN_MIME, TurnView, context_share
from agent_magic.notebook._magics import HELP
from agent_magic.testing import FakeAnthropicServer, text, thinking_block, tool_use
from agent_magic.testing._replies import message, text_block

from .conftest import run_query
from .test_magics import cell, line

THOUGHT = "The user wants a plot. " * 13 + "I should read the file first."  # 13*5 + 6 = 71 words
THOUGHT_WORDS = len(THOUGHT.split())


def magics_of(ip: InteractiveShell) -> Any:
    st = state(ip)
    assert st is not None
    return st["magics"]


def prompts(server: FakeAnthropicServer, i: int = -1) -> list[str]:
    body = server.message_requests[i].body
    assert body is not None
    return [b["text"] for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "text"]


def rich_view(messages: list[Any]) -> tuple[TurnView, list[dict[str, Any]]]:
    """What JupyterLab shows of ``messages``: every bundle the region published."""
    published: list[dict[str, Any]] = []
    view = TurnView(rich=True, publish=lambda bundle, first: published.append(bundle), min_interval=0.0)
    for m in messages:
        view.on_message(m)
        view.flush(force=True)
    return view, published


# -- %agent compact ----------------------------------------------------------------------


def test_compact_prints_one_line_and_the_next_cell_continues(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "sales.csv").write_text("month,revenue\n" + "2024-01,100\n" * 400)
    fake_api.add(tool_use("Read", {"file_path": str(workspace / "sales.csv")}), text("Read it: 400 rows."))
    fake_api.add(text("Monthly revenue is flat."))
    assert cell(ip, "", "load sales.csv") is None
    assert cell(ip, "", "summarise the revenue") is None
    sid = am.list_sessions()[0].session_id
    before = len(fake_api.message_requests)
    capsys.readouterr()

    assert line(ip, "compact keep the user's file names") is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    m = re.fullmatch(r"Compacted the conversation: ([\d,]+) → ([\d,]+) tokens(?: \((\d+)% of context\))?\. "
                     r"Earlier turns stay rewindable\.", out[0])
    assert m is not None, out[0]
    pre, post = int(m[1].replace(",", "")), int(m[2].replace(",", ""))
    assert 0 < post < pre
    info = am.get_session_info(sid)
    assert info.context_window and m[3] == str(context_share(post, info.context_window)).split("%")[0]
    # the summary request carried the instructions literally (an apostrophe is no shell quote)
    asked = fake_api.message_requests[before:]
    assert len(asked) == 1 and "keep the user's file names" in str(asked[0].body)

    fake_api.add(text("Still here."))
    assert cell(ip, "", "what did we load?") is None
    assert am.list_sessions()[0].session_id == sid and am.get_session_info(sid).num_turns == 3
    sent = fake_api.message_requests[-1].body
    assert sent is not None
    # the next turn starts from the summary, not from the whole conversation again
    assert "400 rows" not in str(sent["messages"]) and "what did we load?" in prompts(fake_api)
    earlier = fake_api.message_requests[before - 1].body
    assert earlier is not None and len(str(sent["messages"])) < len(str(earlier["messages"]))


def test_earlier_turns_stay_rewindable_after_compact(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.add(tool_use("Write", {"file_path": str(workspace / "plot.py"), "content": "plot()\n"}), text("Wrote it. " * 40))
    fake_api.add(text("Looks fine. " * 40))
    assert cell(ip, "--permission-mode acceptEdits", "write plot.py") is None
    assert cell(ip, "", "check it") is None
    assert line(ip, "compact") is None
    assert (workspace / "plot.py").exists()
    capsys.readouterr()
    assert line(ip, "rewind --turn 1") is None
    assert not (workspace / "plot.py").exists(), capsys.readouterr().out
    # and a fork at turn 1 has the conversation as it was then, before any summary
    assert line(ip, "fork --turn 1") is None
    fake_api.add(text("forked"))
    assert cell(ip, "", "from the fork") is None
    assert prompts(fake_api) == ["write plot.py", "from the fork"]


def test_compact_quoted_instructions_lose_their_quotes(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("one " * 50), text("two " * 50))
    assert cell(ip, "", "first") is None
    assert cell(ip, "", "second") is None
    before = len(fake_api.message_requests)
    assert line(ip, 'compact "focus on the plots"') is None
    body = str(fake_api.message_requests[before].body)
    assert "focus on the plots" in body and '"focus on the plots"' not in body


def test_compact_after_a_kernel_restart_opens_the_session(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.add(text("one " * 80), text("two " * 80))
    assert cell(ip, "", "first") is None
    assert cell(ip, "", "second") is None
    sid = am.list_sessions()[0].session_id
    magics_of(ip).runner.close_all()  # what a restart leaves: the store, no open client
    capsys.readouterr()
    assert line(ip, "compact") is None
    assert capsys.readouterr().out.startswith("Compacted the conversation: ")
    fake_api.add(text("three"))
    assert cell(ip, "", "third") is None
    assert am.get_session_info(sid).num_turns == 3 and len(am.list_sessions()) == 1


def test_compact_without_a_session_says_what_to_run(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    err = line(ip, "compact")
    assert isinstance(err, UsageError) and "%%agent" in str(err) and "\n" not in str(err)
    assert not fake_api.message_requests


def test_compact_errors_are_one_usage_line(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("hello"))
    assert cell(ip, "", "hi") is None
    fake_api.summary_text = ""  # the model answers the summary request with nothing
    err = line(ip, "compact")
    assert type(err) is UsageError, err
    assert "no summary" in str(err) and "`%agent compact`" in str(err) and "\n" not in str(err)
    # the session is untouched and goes on
    fake_api.summary_text = None
    fake_api.add(text("still here"))
    assert cell(ip, "", "again") is None
    assert prompts(fake_api) == ["hi", "again"]


def test_help_lists_compact_and_effort(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert "compact" in HELP and "--effort" in HELP and "AgentMagics" in HELP
    assert line(ip, "help") is None
    out = capsys.readouterr().out
    assert "compact" in out and "--effort LEVEL" in out
    doc = ip.find_line_magic("agent").__doc__  # what `%agent?` shows
    assert "compact" in doc and "--effort" in doc
    capsys.readouterr()
    assert line(ip, "compact --help") is None  # help, not a compaction told "--help"
    assert "compact" in capsys.readouterr().out


# -- compaction inside a turn ----------------------------------------------------------------


def _boundary(trigger: str = "auto") -> SystemMessage:
    return SystemMessage("compact_boundary", {"trigger": trigger, "pre_tokens": 182_340, "post_tokens": 9_120, "method": "client"})


def test_a_compaction_is_one_quiet_line_in_both_views(
    fake_api: FakeAnthropicServer, home: Path, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.add(text("Done."))
    msgs = run_query("go", cwd=workspace, include_partial_messages=True)
    # a compaction the loop reported mid-turn, and a clearing of old tool results
    msgs.insert(2, SystemMessage("compacting", {"trigger": "auto"}))
    msgs.insert(3, _boundary())
    msgs.insert(4, SystemMessage("context_cleared", {"tool_results": 3, "tokens_saved": 40_000}))
    want = "Compacted the conversation (auto): 182,340 → 9,120 tokens."

    # While the summary is written the cell says so; the boundary line then takes its place.
    during, _ = rich_view(msgs[:3])
    assert "Compacting the conversation…" in during.markdown()

    _, published = rich_view(msgs)
    md = published[-1]["text/markdown"]
    assert md.count("Compacted the conversation") == 1 and f"<sub>{want}</sub>" in md
    assert "Compacting" not in md
    assert "tool result" not in md.lower()  # clearing is routine: not shown
    assert published[-1]["text/plain"].count(want) == 1

    capsys.readouterr()
    plain = TurnView(rich=False)
    for m in msgs:
        plain.on_message(m)
    printed = capsys.readouterr().out.splitlines()
    assert printed.count(want) == 1 and sum("Compacted" in p for p in printed) == 1

    quiet = TurnView(rich=True, quiet=True)
    for m in msgs:
        quiet.on_message(m)
    assert "Compacted" not in quiet.markdown()  # --quiet: only the answer


def test_an_auto_compaction_during_a_cell_is_one_line(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, workspace: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AGENT_MAGIC_CONTEXT_WINDOW", "12000")
    monkeypatch.setenv("AGENT_MAGIC_COMPACTION", "client")
    for i in range(4):
        fake_api.add(text(f"answer {i}: " + "lorem ipsum dolor sit amet " * 300))
    for i in range(4):
        capsys.readouterr()
        assert cell(ip, "", f"question {i}") is None
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("Compacted the conversation")]
    assert len(lines) == 1, out
    assert re.fullmatch(r"Compacted the conversation \(auto\): [\d,]+ → [\d,]+ tokens\.", lines[0])


def test_a_server_side_compaction_during_a_cell_is_one_line(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The API compacts past its trigger (80% of the window; the API's least is 50,000 tokens),
    # and reports it after the answer that carried it has streamed.
    monkeypatch.setenv("AGENT_MAGIC_CONTEXT_WINDOW", "64000")
    monkeypatch.setenv("AGENT_MAGIC_COMPACTION", "server")
    for i in range(5):
        fake_api.add(text(f"answer {i}: " + "lorem ipsum dolor sit amet " * 2000))
    out = []
    for i in range(5):
        assert cell(ip, "", f"question {i}") is None
        out += capsys.readouterr().out.splitlines()
    assert [bool(r.compaction) for r in fake_api.message_requests] == [False] * 4 + [True]
    lines = [x for x in out if "Compacted the conversation" in x]
    assert len(lines) == 1 and re.fullmatch(r"Compacted the conversation \(auto\): [\d,]+ → [\d,]+ tokens\.", lines[0]), lines
    assert not any("compaction" in x for x in out)  # the API's block itself is not shown
    rich = magics_of(ip).last_view.markdown()
    assert rich.count("Compacted the conversation (auto)") == 1 and rich.index("Compacted") < rich.index("answer 4:")


# -- % of context -------------------------------------------------------------------------


def test_context_share() -> None:
    assert context_share(9_120, 200_000) == "5% of context"
    assert context_share(1, 200_000) == "1% of context"  # something in context is never "0%"
    assert context_share(0, 200_000) == "0% of context"
    assert context_share(5, 1000) == "1% of context" and context_share(25, 1000) == "3% of context"  # half up
    assert context_share(None, 200_000) is None and context_share(9_120, None) is None and context_share(9_120, 0) is None


def test_closing_line_shows_the_share_of_context(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.add(text("Hello there."))
    assert cell(ip, "", "hi") is None
    result = magics_of(ip).last_result
    assert isinstance(result, ResultMessage) and result.context_tokens and result.context_window
    share = context_share(result.context_tokens, result.context_window)
    footer = [x for x in capsys.readouterr().out.splitlines() if x.startswith("-- session")]
    assert len(footer) == 1 and f" · {share} · " in footer[0], footer
    # the rich view's closing line, and the provenance a saved notebook keeps
    view = magics_of(ip).last_view
    assert f" · {share} · " in view.markdown().split("<sub>")[-1]
    assert view.bundle()[TURN_MIME]["context_tokens"] == result.context_tokens


def test_closing_line_omits_an_unknown_share() -> None:
    view = TurnView(rich=False)
    view.on_message(SystemMessage("init", {"session_id": "s" * 36, "turn": 1}))
    view.finish(ResultMessage("success", "s" * 36, 1, 10, False, total_cost_usd=0.01, usage={"input_tokens": 5, "output_tokens": 2}))
    assert "context" not in view.footer and "5 in / 2 out tokens" in view.footer


def test_info_shows_the_context(ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(text("Hello there."))
    assert cell(ip, "", "hi") is None
    info = am.get_session_info(am.list_sessions()[0].session_id)
    capsys.readouterr()
    assert line(ip, "info") is None
    out = capsys.readouterr().out
    row = next(x for x in out.splitlines() if x.lstrip(" *").startswith("context"))
    assert info.context_tokens and info.context_window
    want = f"{info.context_tokens:,} of {info.context_window:,} tokens ({context_share(info.context_tokens, info.context_window)})"
    assert want in row


def test_the_session_bar_shows_the_share_of_context(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    from agent_magic.notebook import widgets

    fake_api.add(text("Hello there."))
    assert cell(ip, "", "hi") is None
    magics = magics_of(ip)
    bar = widgets.session_bar(magics, magics.last_result, magics.last_view.provenance, widgets.turn_controls(magics))
    result = magics.last_result
    assert (bar.context_tokens, bar.context_window) == (result.context_tokens, result.context_window)
    share = context_share(bar.context_tokens, bar.context_window)
    assert share and share in bar.fallback_text()
    js = Path(widgets.__file__).with_name("static").joinpath("bar.js").read_text()
    assert 'model.get("context_tokens")' in js and "of context" in js


# -- thinking ----------------------------------------------------------------------------


def test_thinking_is_collapsed_in_the_notebook(fake_api: FakeAnthropicServer, home: Path, workspace: Path) -> None:
    fake_api.add(message(thinking_block(THOUGHT), text_block("Here is the plot.")))
    msgs = run_query("plot it", cwd=workspace, include_partial_messages=True)
    _, published = rich_view(msgs)
    md = published[-1]["text/markdown"]
    summary = f"Thinking ({THOUGHT_WORDS} words)"
    assert re.search(rf"<details class='am-thinking'><summary[^>]*><i>{re.escape(summary)}</i></summary>\n\n"
                     rf"> {re.escape(THOUGHT)}\n\n</details>", md), md  # quoted: it reads apart from the answer
    assert md.count(THOUGHT) == 1 and md.index("</details>") < md.index("Here is the plot.")
    # while it streamed, a collapsed "Thinking…" line grew; the complete message replaced it
    assert any("<i>Thinking… (" in b["text/markdown"] for b in published[:-1])
    plain = published[-1]["text/plain"]
    assert f"[{summary}]" in plain and THOUGHT not in plain


def test_thinking_is_one_marker_line_in_a_terminal(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.add(message(thinking_block(THOUGHT), text_block("Here is the plot.")))
    assert cell(ip, "", "plot it") is None
    out = capsys.readouterr().out
    assert out.count(f"[Thinking ({THOUGHT_WORDS} words)]") == 1 and "I should read the file" not in out
    assert out.index("[Thinking") < out.index("Here is the plot.")
    # and the thinking goes back to the API with its signature (the fake refuses it otherwise)
    fake_api.add(text("again"))
    assert cell(ip, "", "more") is None
    assert not any(r.refused for r in fake_api.message_requests)


def test_thinking_that_did_not_stream_is_one_marker_too(capsys: pytest.CaptureFixture[str]) -> None:
    from agent_magic._messages import AssistantMessage, TextBlock, ThinkingBlock

    view = TurnView(rich=False)
    view.on_message(AssistantMessage([ThinkingBlock("one two three", "sig"), TextBlock("The answer.")], "m"))
    assert capsys.readouterr().out == "[Thinking (3 words)]\nThe answer.\n"


def test_thinking_cut_off_by_an_interrupt_keeps_its_count(capsys: pytest.CaptureFixture[str]) -> None:
    from agent_magic._messages import StreamEvent

    def delta(s: str) -> StreamEvent:
        return StreamEvent("u", "s", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": s}})

    for rich in (True, False):
        view = TurnView(rich=rich)
        view.on_message(delta("first I "))
        view.on_message(delta("should look"))
        assert "Thinking… (4 words)" in view.markdown()
        view.finish(ResultMessage("interrupted", "s" * 36, 1, 10, True))
        assert "<i>Thinking (4 words)</i>" in view.markdown() and "[Thinking (4 words)]" in view.plain()
    assert capsys.readouterr().out.count("[Thinking (4 words)]") == 1  # the terminal's, once


def test_a_closing_tag_in_the_thinking_cannot_end_the_details() -> None:
    from agent_magic._messages import AssistantMessage, ThinkingBlock

    view = TurnView(rich=True)
    view.on_message(AssistantMessage([ThinkingBlock("what does </details> do? </SUMMARY>", "sig")], "m"))
    md = view.markdown()
    assert md.count("</details>") == 1 and md.count("</summary>") == 1 and "&lt;/details&gt;" not in md


# -- effort and thinking settings ---------------------------------------------------------------


def _effort(server: FakeAnthropicServer, i: int = -1) -> Any:
    body = server.message_requests[i].body
    assert body is not None
    return (body.get("output_config") or {}).get("effort")


def test_effort_flag_and_config_reach_the_request(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("a"), text("b"), text("c"), text("d"))
    assert cell(ip, "--effort high", "first") is None
    assert _effort(fake_api) == "high"
    assert cell(ip, "", "second") is None
    assert _effort(fake_api) is None  # --effort is for its cell only
    ip.run_line_magic("config", 'AgentMagics.effort = "low"')
    assert cell(ip, "", "third") is None
    assert _effort(fake_api) == "low"
    assert cell(ip, "--effort max", "fourth") is None
    assert _effort(fake_api) == "max"
    # one session throughout: %config applied to the open session
    assert len({am.get_session_info(s.session_id).session_id for s in am.list_sessions()}) == 1
    assert prompts(fake_api) == ["first", "second", "third", "fourth"]


def test_thinking_config_reaches_the_request(ip: InteractiveShell, fake_api: FakeAnthropicServer) -> None:
    fake_api.add(text("a"), text("b"), text("c"))
    ip.run_line_magic("config", 'AgentMagics.thinking = "8000"')
    assert cell(ip, "", "first") is None
    body = fake_api.message_requests[-1].body
    assert body is not None and body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    ip.run_line_magic("config", 'AgentMagics.thinking = "disabled"')
    assert cell(ip, "", "second") is None
    body = fake_api.message_requests[-1].body
    assert body is not None and body.get("thinking", {"type": "disabled"}) == {"type": "disabled"}
    ip.run_line_magic("config", 'AgentMagics.thinking = "adaptive"')
    assert cell(ip, "", "third") is None
    body = fake_api.message_requests[-1].body
    assert body is not None and body["thinking"] == {"type": "adaptive"}


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [
        ("", "--effort extreme", "invalid choice: 'extreme'"),
        ("", "--effort", "expected one argument"),
        ('AgentMagics.effort = "turbo"', "", "Unknown effort 'turbo'"),
        ('AgentMagics.thinking = "lots"', "", "AgentMagics.thinking is 'lots'"),
        ('AgentMagics.thinking = "100"', "", "at least 1024"),
    ],
)
def test_setting_errors_are_usage_errors(
    ip: InteractiveShell, fake_api: FakeAnthropicServer, setup: str, args: str, needle: str
) -> None:
    if setup:
        ip.run_line_magic("config", setup)
    err = cell(ip, args, "hello")
    assert type(err) is UsageError and needle in str(err), err
    assert not fake_api.message_requests
