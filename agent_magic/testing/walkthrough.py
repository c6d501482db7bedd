"""The scripted walkthrough behind ``agent-magic demo`` and ``example_notebooks/quickstart.ipynb``.

Every reply starts with ``[scripted]``: nothing here is a real model. Steps
that edit the notebook read what they need from the request itself (the
notebook path from the system prompt, cell ids from the agent's own ``Read``
result), so the script works statelessly, across kernel restarts. Answers
that report what was done are written from the tool results in the request,
so they say what actually happened.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ._replies import Reply, text, tool_use
from ._server import FakeAnthropicServer

MONTHLY_CELL = '''import csv
from collections import defaultdict
from datetime import datetime

def parse_date(value):
    """The date column mixes three formats; try each."""
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%b %d %Y"):
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            pass
    raise ValueError(f"unknown date format: {value!r}")

with open("sales.csv", newline="") as f:
    rows = list(csv.DictReader(f))
monthly = defaultdict(float)
for row in rows:
    monthly[parse_date(row["date"]).strftime("%Y-%m")] += float(row["revenue"])
for month, total in sorted(monthly.items()):
    print(month, f"{total:10,.2f}")'''

CHART_CELL = '''# Monthly revenue as a text bar chart (no plotting library needed)
import csv
from collections import Counter
from datetime import datetime

def parse_date(value):
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%b %d %Y"):
        try:
            return datetime.strptime(value.strip(), fmt)
        except ValueError:
            pass
    raise ValueError(value)

with open("sales.csv", newline="") as f:
    monthly = Counter()
    for row in csv.DictReader(f):
        monthly[parse_date(row["date"]).strftime("%Y-%m")] += float(row["revenue"])
top = max(monthly.values())
for month in sorted(monthly):
    bar = "█" * round(30 * monthly[month] / top)
    print(f"{month} {bar} {monthly[month]:,.0f}")'''

NOT_SCRIPTED = (
    "[scripted] This demo only knows the prompts in the quickstart notebook, so I can't answer this one. "
    "With an Anthropic API key in ANTHROPIC_API_KEY, and without `agent-magic demo`, any prompt works."
)


def _notebook_path(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, list):
        system = " ".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    m = re.search(r"working in the notebook (.+?\.ipynb)", str(system or ""))
    return m.group(1) if m else "quickstart.ipynb"


def _tool_results(body: dict[str, Any]) -> list[str]:
    """The texts of the request's tool results, newest first."""
    out = []
    for m in reversed(body.get("messages") or []):
        content = m.get("content")
        if m.get("role") != "user" or not isinstance(content, list):
            continue
        for b in reversed(content):
            if isinstance(b, dict) and b.get("type") == "tool_result":
                c = b.get("content")
                if isinstance(c, list):
                    out.append("\n".join(str(x.get("text", "")) for x in c if isinstance(x, dict)))
                else:
                    out.append(str(c or ""))
    return out


def _read_result(body: dict[str, Any]) -> str:
    """The newest notebook listing in the request (the agent's Read of the notebook)."""
    return next((r for r in _tool_results(body) if "<cell id=" in r), "")


def _cell_containing(listing: str, needle: str, *, prefix: str = "") -> str | None:
    """The id of the first ``<cell id="...">`` whose source (not its outputs) starts with ``prefix``
    and contains ``needle``. Outputs are left out: a session table or a checkpoint list in
    another cell's output quotes the prompt too."""
    for m in re.finditer(r'<cell id="([^"]+)"[^>]*>\n?(.*?)</cell>', listing, re.S):
        source = m.group(2).split("\n<output", 1)[0]
        if source.startswith(prefix) and needle in source:
            return m.group(1)
    return None


def _where_inserted(body: dict[str, Any]) -> str:
    """Where the NotebookEdit of this turn put the new cell, in words, from its tool result."""
    result = next((r for r in _tool_results(body) if r.startswith("Inserted a new")), "")
    m = re.search(r"Inserted a new \w+ cell \S+ (after cell (\S+)|at the start)", result)
    if m is None:
        return "I could not add the cell (see the tool result above)"
    prompt_cell = _cell_containing(_read_result(body), "fix the date column", prefix="%%agent")
    if m.group(2) is None:
        return "I added a cell at the top of the notebook"
    if m.group(2) == prompt_cell:
        return "I added a cell right below this one"
    return f"I added a cell after cell {m.group(2)}"


def _report_monthly_cell(body: dict[str, Any]) -> Reply:
    return text(
        "[scripted] The `date` column mixes three formats (`2024-01-15`, `15/02/2024`, `Mar 03 2024`). "
        f"{_where_inserted(body)}: it parses all three and sums revenue per month. Run it to see the totals.\n\n"
        "Every change I made is checkpointed: `%agent checkpoints` lists them, `%agent rewind` undoes them.",
        chunk_size=6,
        delay=0.01,
    )


def _report_chart(body: dict[str, Any]) -> Reply:
    replaced = any(r.startswith("Updated cell") for r in _tool_results(body)[:1])
    if not replaced:
        return text("[scripted] The cell was not replaced (see the tool result above); nothing changed.")
    return text(
        "[scripted] The monthly cell now draws a text bar chart. Cells belong to the notebook, not to a "
        "session: the original session's conversation is unchanged (`%agent sessions` lists it, "
        "`%agent resume` continues it), but the cell shows the chart whichever session you continue. "
        "To get the table back, rewind this change: `%agent rewind --turn 2`.",
        chunk_size=6,
        delay=0.01,
    )


def _tool_calls(body: dict[str, Any]) -> list[str]:
    """The tool calls of the conversation so far, as "Read sales.csv"."""
    calls = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if m.get("role") != "assistant" or not isinstance(content, list):
            continue
        for b in content:
            if isinstance(b, dict) and b.get("type") == "tool_use":
                inp = b.get("input") or {}
                what = Path(str(inp.get("file_path") or inp.get("notebook_path") or "")).name
                if b.get("name") == "NotebookEdit":
                    what = f"{inp.get('edit_mode') or 'replace'} a cell in {what}"
                calls.append(f"{b.get('name')} {what}".strip())
    return calls


def _report_changes(body: dict[str, Any]) -> Reply:
    calls = _tool_calls(body)
    if not calls:
        return text("[scripted] I have not used any tools in this session yet: nothing was changed.")
    edits = [c for c in calls if c.startswith(("NotebookEdit", "Edit", "Write"))]
    return text(
        f"[scripted] In this session I ran {len(calls)} tool call{'' if len(calls) == 1 else 's'}: {'; '.join(calls)}. "
        + (f"{len(edits)} of them changed something; nothing else was touched." if edits else "None of them changed anything.")
    )


def _read_notebook(body: dict[str, Any]) -> Reply:
    return tool_use(
        "Read",
        {"file_path": _notebook_path(body)},
        text="[scripted] Now the notebook, to see where the new cell should go.",
    )


def _insert_monthly_cell(body: dict[str, Any]) -> Reply:
    listing = _read_result(body)
    after = _cell_containing(listing, "fix the date column", prefix="%%agent")
    call: dict[str, Any] = {
        "notebook_path": _notebook_path(body),
        "new_source": MONTHLY_CELL,
        "cell_type": "code",
        "edit_mode": "insert",
    }
    if after:
        call["cell_id"] = after
    return tool_use(
        "NotebookEdit", call,
        text="[scripted] Adding a cell right after this one." if after else "[scripted] Adding a cell at the top of the notebook.",
    )


def _replace_with_chart(body: dict[str, Any]) -> Reply:
    listing = _read_result(body)
    target = _cell_containing(listing, "monthly = defaultdict(float)", prefix="import csv")
    if target is None:
        return text("[scripted] I could not find the monthly-revenue cell to replace; run the first %%agent cell again.")
    return tool_use(
        "NotebookEdit",
        {"notebook_path": _notebook_path(body), "cell_id": target, "new_source": CHART_CELL, "edit_mode": "replace"},
        text="[scripted] Replacing the table cell with a bar chart (checkpointed in this session, so it can be rewound).",
    )


def install_walkthrough(server: FakeAnthropicServer) -> FakeAnthropicServer:
    """Script ``server`` with the quickstart's prompts."""
    server.on_prompt(
        "fix the date column",
        tool_use("Read", {"file_path": "sales.csv"}, text="[scripted] Let me look at the data first."),
        _read_notebook,
        _insert_monthly_cell,
        _report_monthly_cell,
    )
    server.on_prompt(
        "different approach",
        _read_notebook,
        _replace_with_chart,
        _report_chart,
    )
    server.on_prompt("what did you change", _report_changes)
    server.set_default(text(NOT_SCRIPTED))
    return server


def sample_sales_csv(path: Path) -> None:
    """The messy sample data the quickstart starts from."""
    rows = [
        ("2024-01-15", "Widgets", "1200.50"),
        ("2024-01-28", "Gadgets", "830.00"),
        ("15/02/2024", "Widgets", "990.25"),
        ("27/02/2024", "Gizmos", "410.75"),
        ("Mar 03 2024", "Gadgets", "1500.00"),
        ("Mar 19 2024", "Widgets", "1120.40"),
    ]
    path.write_text("date,product,revenue\n" + "".join(f"{d},{p},{r}\n" for d, p, r in rows))
