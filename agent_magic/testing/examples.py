"""Scripted replies for the example notebooks in ``example_notebooks/``.

- ``clean_csv.ipynb``: clean a messy CSV with pandas; the agent inserts cells and
  runs their code; ``%agent rewind --turn N`` takes the cells out again.
- ``fork_compare_models.ipynb``: one model in the notebook's session, another
  in a fork, then back to the original with ``%agent resume``.
- ``inspect_dataframe.ipynb``: ``%%agent --with df``; the agent looks at the
  DataFrame with its ``Variables`` and ``Python`` tools.

Every reply starts with ``[scripted]``: nothing here is a real model. The tool
calls are the ones a model would send, with the inputs the tools define. Steps
read what they need from the request (the notebook path from the system prompt,
cell ids from the agent's own ``Read`` and ``NotebookEdit`` results), and the
closing answers quote what the tools returned, so they never claim more than
the tools did. Run a server with these scripts, e.g. to try the notebooks
without an API key::

    python -m agent_magic.testing.examples --port 8765
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._replies import Reply, text, tool_use
from ._server import FakeAnthropicServer, last_prompt

__all__ = [
    "CLEAN_CELL",
    "CLEAN_CHECK_CODE",
    "CLEAN_NOTE",
    "IMPLAUSIBLE_CODE",
    "INSPECT_RAW_CODE",
    "KNN_CELL",
    "LOOK_AT_TRAIN_CODE",
    "MISSING_CODE",
    "NOT_SCRIPTED",
    "POLY_CELL",
    "PROMPT_CLEAN",
    "PROMPT_FORK",
    "PROMPT_INSPECT",
    "PROMPT_KEEP",
    "PROMPT_MODEL",
    "PROMPT_REVENUE",
    "REVENUE_CELL",
    "ToolCall",
    "cell_containing",
    "content_text",
    "install_examples",
    "main",
    "notebook_path",
    "turn_calls",
]

# --------------------------------------------------------------------------- what the prompts say
# Each rule matches a phrase of its notebook's prompt (case-insensitive); keep them distinct.

#: clean_csv.ipynb, first %%agent cell.
PROMPT_CLEAN = "Clean orders.csv with pandas"
#: clean_csv.ipynb, second %%agent cell.
PROMPT_REVENUE = "revenue per region and month"
#: fork_compare_models.ipynb, the original session.
PROMPT_MODEL = "Beat the linear baseline"
#: fork_compare_models.ipynb, the fork.
PROMPT_FORK = "k-nearest neighbours"
#: fork_compare_models.ipynb, back in the original session.
PROMPT_KEEP = "Which model would you keep"
#: inspect_dataframe.ipynb.
PROMPT_INSPECT = "Look at df"

NOT_SCRIPTED = (
    "[scripted] This fake API only knows the prompts of the example notebooks, so I can't answer this one. "
    "With an Anthropic API key in ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL unset), any prompt works."
)

# --------------------------------------------------------------------------- cells and code the agent writes

INSPECT_RAW_CODE = """print(raw.dtypes.to_string())
print()
for column in raw.columns[1:]:
    print(f"{column!r}: {raw[column].tolist()}")
print()
print("repeated rows:", raw.duplicated().sum())"""

CLEAN_NOTE = """**Cleaning `orders.csv`** (what was wrong, and what `clean_orders()` below does)

- Column names had stray spaces and mixed case (`" Order Date "`): now `order_id`, `order_date`, `customer`, `region`, `amount`.
- `order_date` mixed three formats: `2024-01-05`, `27/01/2024` (day first) and `Jan 09 2024`. All are parsed to dates.
- `amount` was text (`$1,200.50`, `2,310.00`): the `$` and thousands separators are removed. `n/a`, `-` and blanks become missing values (NaN), not zeros.
- `customer` and `region` had stray spaces and mixed case (`north`, `SOUTH`, ` east `): trimmed, regions in title case.
- One order was exported twice: exact duplicate rows are dropped."""

CLEAN_CELL = '''import pandas as pd


def clean_orders(path):
    """Load the raw orders export and fix its known problems."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=["", "-", "n/a"])
    df.columns = df.columns.str.strip().str.lower().str.replace(" ", "_")
    df["customer"] = df["customer"].str.strip()
    df["region"] = df["region"].str.strip().str.title()
    # Three date formats; the slashed ones are day first (27/01/2024)
    dates = pd.to_datetime(df["order_date"], format="%Y-%m-%d", errors="coerce")
    for fmt in ("%d/%m/%Y", "%b %d %Y"):
        dates = dates.fillna(pd.to_datetime(df["order_date"], format=fmt, errors="coerce"))
    df["order_date"] = dates
    # "$1,200.50" -> 1200.5; n/a, "-" and blanks stay missing
    df["amount"] = pd.to_numeric(df["amount"].str.replace(r"[$,\\s]", "", regex=True))
    df["order_id"] = df["order_id"].astype(int)
    return df.drop_duplicates().reset_index(drop=True)


orders = clean_orders("orders.csv")
orders'''

CLEAN_CHECK_CODE = """print(orders.dtypes.to_string())
print()
print(f"{len(raw)} rows in, {len(orders)} out; {orders['amount'].isna().sum()} orders have no amount")
print("regions:", ", ".join(sorted(orders["region"].unique())))
print("dates:", orders["order_date"].min().date(), "to", orders["order_date"].max().date())"""

REVENUE_CELL = """# Revenue per region and month (orders without an amount are left out of the sums)
revenue = (
    orders.groupby(["region", orders["order_date"].dt.to_period("M")])["amount"]
    .sum()
    .unstack(fill_value=0)
)
revenue"""

LOOK_AT_TRAIN_CODE = """print(train.describe().round(2).to_string())
print()
print(f"linear baseline, test RMSE: {baseline_rmse:.2f} kWh")"""

POLY_CELL = """# Degree 2 in temperature: energy use is high when it is cold (heating) and when it is hot (cooling)
coef = np.polyfit(train["temp_c"], train["energy_kwh"], deg=2)
poly_rmse = rmse(test["energy_kwh"], np.polyval(coef, test["temp_c"]))
print(f"polynomial (degree 2), test RMSE: {poly_rmse:.2f} kWh (linear baseline: {baseline_rmse:.2f} kWh)")"""

KNN_CELL = """# k-nearest neighbours: predict the mean energy use of the k training days closest in temperature
def knn_predict(x_train, y_train, x, k=15):
    distances = np.abs(np.asarray(x)[:, None] - np.asarray(x_train)[None, :])
    nearest = np.argsort(distances, axis=1)[:, :k]
    return np.asarray(y_train)[nearest].mean(axis=1)


knn_rmse = rmse(test["energy_kwh"], knn_predict(train["temp_c"], train["energy_kwh"], test["temp_c"]))
print(f"k-nearest neighbours (k=15), test RMSE: {knn_rmse:.2f} kWh (linear baseline: {baseline_rmse:.2f} kWh)")"""

MISSING_CODE = """print(df.isna().sum().to_string())
print()
print(df.describe().round(1).to_string())"""

IMPLAUSIBLE_CODE = """implausible = (df["temperature_c"] < -50) | (df["temperature_c"] > 60)
print(f"{implausible.sum()} implausible temperatures, by sensor:")
print(df.loc[implausible, "sensor"].value_counts().to_string())
print()
print(df.loc[implausible].to_string())"""


# --------------------------------------------------------------------------- reading the request


@dataclass
class ToolCall:
    """One tool call of the current turn and what it returned."""

    name: str
    input: dict[str, Any]
    result: str
    is_error: bool


def content_text(content: Any) -> str:
    """The text of a message's or tool result's content (a string, or a list of blocks)."""
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return str(content or "")


def _is_prompt(m: dict[str, Any]) -> bool:
    """A user message with text of its own (not only tool results), as the server counts prompts."""
    content = m.get("content")
    if m.get("role") != "user":
        return False
    return isinstance(content, str) or (
        isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "text" for b in content)
    )


def notebook_path(body: dict[str, Any]) -> str | None:
    """The notebook the person works in, as the system prompt names it."""
    system = body.get("system")
    if isinstance(system, list):
        system = " ".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    m = re.search(r"working in the notebook (.+?\.ipynb)", str(system or ""))
    return m.group(1) if m else None


def turn_calls(body: dict[str, Any]) -> list[ToolCall]:
    """The tool calls since the last prompt, in order, each with its result."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    start = 0
    for i in range(len(messages) - 1, -1, -1):
        if _is_prompt(messages[i]):
            start = i
            break
    calls: dict[str, ToolCall] = {}
    for m in messages[start:]:
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for b in content:
            if not isinstance(b, dict):
                continue
            if m.get("role") == "assistant" and b.get("type") == "tool_use":
                calls[str(b.get("id"))] = ToolCall(str(b.get("name")), dict(b.get("input") or {}), "", False)
            elif m.get("role") == "user" and b.get("type") == "tool_result":
                call = calls.get(str(b.get("tool_use_id")))
                if call is not None:
                    call.result = content_text(b.get("content"))
                    call.is_error = bool(b.get("is_error"))
    return list(calls.values())


def cell_containing(listing: str, needle: str) -> str | None:
    """The id of the first ``<cell id="...">`` of a ``Read`` listing whose text contains ``needle``."""
    for m in re.finditer(r'<cell id="([^"]+)"[^>]*>(.*?)</cell>', listing, re.S):
        if needle.lower() in m.group(2).lower():
            return m.group(1)
    return None


def _inserted_id(result: str) -> str | None:
    m = re.search(r"Inserted a new \w+ cell (\S+) ", result)
    return m.group(1) if m else None


def _fenced(output: str) -> str:
    return "```\n" + output.strip("\n") + "\n```"


def _failed(calls: list[ToolCall], inserts: int = 0) -> Reply | None:
    """An honest closing answer when a tool call of this turn failed (or fewer than ``inserts``
    cells were inserted), else None."""
    bad = [c for c in calls if c.is_error]
    if not bad:
        if _inserted(calls) < inserts:
            return text("[scripted] My cell inserts did not all go through, so I stopped here.")
        return None
    first = bad[0]
    return text(
        f"[scripted] My {first.name} call failed, so I stopped here. It returned:\n\n{_fenced(first.result[:2000])}"
    )


# --------------------------------------------------------------------------- reusable steps

Step = Callable[[dict[str, Any]], Reply]


def _read_notebook(say: str) -> Step:
    def step(body: dict[str, Any]) -> Reply:
        path = notebook_path(body)
        if path is None:
            return text("[scripted] I don't know which notebook you are working in (the session has no notebook scope), so I did not edit it.")
        return tool_use("Read", {"file_path": path}, text=say)

    return step


def _insert_after_prompt(needle: str, source: str, cell_type: str, say: str) -> Step:
    """Insert a cell right after the person's prompt cell, found in this turn's Read of the notebook."""

    def step(body: dict[str, Any]) -> Reply:
        path = notebook_path(body)
        reads = [c for c in turn_calls(body) if c.name == "Read" and c.input.get("file_path") == path and not c.is_error]
        anchor = cell_containing(reads[-1].result, needle) if reads else None
        if path is None or anchor is None:
            return text(f"[scripted] I could not find the cell with your prompt ({needle!r}) in the notebook, so I did not edit it.")
        return tool_use(
            "NotebookEdit",
            {"notebook_path": path, "cell_id": anchor, "new_source": source, "cell_type": cell_type, "edit_mode": "insert"},
            text=say,
        )

    return step


def _insert_after_last_insert(source: str, cell_type: str, say: str) -> Step:
    """Insert a cell right after the cell this turn's previous NotebookEdit inserted."""

    def step(body: dict[str, Any]) -> Reply:
        path = notebook_path(body)
        edits = [c for c in turn_calls(body) if c.name == "NotebookEdit" and not c.is_error]
        anchor = _inserted_id(edits[-1].result) if edits else None
        if path is None or anchor is None:
            return text("[scripted] My previous cell insert did not go through, so I stopped here.")
        return tool_use(
            "NotebookEdit",
            {"notebook_path": path, "cell_id": anchor, "new_source": source, "cell_type": cell_type, "edit_mode": "insert"},
            text=say,
        )

    return step


def _python(code: str, description: str, say: str) -> Reply:
    return tool_use("Python", {"code": code, "description": description}, text=say)


def _python_outputs(calls: list[ToolCall]) -> list[str]:
    return [c.result for c in calls if c.name == "Python" and not c.is_error]


def _inserted(calls: list[ToolCall]) -> int:
    return sum(1 for c in calls if c.name == "NotebookEdit" and not c.is_error and _inserted_id(c.result))


# --------------------------------------------------------------------------- clean_csv.ipynb


def _clean_answer(body: dict[str, Any]) -> Reply:
    calls = turn_calls(body)
    failed = _failed(calls, inserts=2)
    if failed is not None:
        return failed
    outputs = _python_outputs(calls)
    return text(
        "[scripted] I looked at `raw`, then inserted two cells below your prompt: a note on what was wrong "
        "and `clean_orders()`, which fixes it. I ran that code in your kernel, so `orders` now holds the clean data. "
        f"My check printed:\n\n{_fenced(outputs[-1] if outputs else '(nothing)')}\n\n"
        "Every change I made to the notebook is checkpointed: `%agent checkpoints` lists them, `%agent rewind` undoes them.",
        chunk_size=12,
        delay=0.005,
    )


def _revenue_answer(body: dict[str, Any]) -> Reply:
    calls = turn_calls(body)
    failed = _failed(calls, inserts=1)
    if failed is not None:
        return failed
    outputs = _python_outputs(calls)
    return text(
        f"[scripted] I inserted a cell below your prompt that sums `amount` per region and month, "
        f"and ran it in your kernel (`revenue`):\n\n{_fenced(outputs[-1] if outputs else '(nothing)')}\n\n"
        "Orders without an amount are not in the sums.",
        chunk_size=12,
        delay=0.005,
    )


def _install_clean_csv(server: FakeAnthropicServer) -> None:
    server.on_prompt(
        PROMPT_CLEAN,
        _python(INSPECT_RAW_CODE, "Look at the raw orders", "[scripted] First a look at `raw`, the DataFrame you loaded."),
        _read_notebook("[scripted] Now the notebook, to find your prompt cell."),
        _insert_after_prompt(PROMPT_CLEAN, CLEAN_NOTE, "markdown", "[scripted] A note on what is wrong with the data, below your prompt."),
        _insert_after_last_insert(CLEAN_CELL, "code", "[scripted] And the cleaning code below the note."),
        _python(CLEAN_CELL + "\n\n" + CLEAN_CHECK_CODE, "Run the cleaning cell and check the result",
                "[scripted] Running the new cell's code in your kernel, with a check."),
        _clean_answer,
    )
    server.on_prompt(
        PROMPT_REVENUE,
        _read_notebook("[scripted] Reading the notebook again, to find this prompt's cell."),
        _insert_after_prompt(PROMPT_REVENUE, REVENUE_CELL, "code", "[scripted] Adding the summary below your prompt."),
        _python(REVENUE_CELL, "Revenue per region and month", "[scripted] Running it in your kernel."),
        _revenue_answer,
    )


# --------------------------------------------------------------------------- fork_compare_models.ipynb


def _model_answer(what: str) -> Step:
    def step(body: dict[str, Any]) -> Reply:
        calls = turn_calls(body)
        failed = _failed(calls, inserts=1)
        if failed is not None:
            return failed
        outputs = _python_outputs(calls)
        return text(
            f"[scripted] I inserted a cell below your prompt with {what}, and ran it in your kernel:"
            f"\n\n{_fenced(outputs[-1] if outputs else '(nothing)')}",
            chunk_size=12,
            delay=0.005,
        )

    return step


def _keep_answer(body: dict[str, Any]) -> Reply:
    """Answers from the conversation the request carries: in the original session, the fork's turn is not in it."""
    scores: list[str] = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list) or m.get("role") != "user":
            continue
        for b in content:
            if isinstance(b, dict) and b.get("type") == "tool_result" and not b.get("is_error"):
                scores += re.findall(r"^.*test RMSE: [0-9.]+ kWh.*$", content_text(b.get("content")), re.M)
    models = [s for s in scores if not s.startswith("linear baseline")]
    if not models:
        return text("[scripted] I haven't fitted a model in this conversation, so I have nothing to compare yet.")
    best = min(models, key=lambda s: float(re.findall(r"test RMSE: ([0-9.]+)", s)[0]))
    listed = "\n".join(f"- {s}" for s in models)
    count = "one model" if len(models) == 1 else f"{len(models)} models"
    return text(
        f"[scripted] In this conversation I fitted {count}; the scores, as my Python code printed them:\n\n{listed}\n\n"
        f"I would keep the one with the lowest test RMSE: {best.split(',')[0]}. Other approaches you tried in a fork "
        "are in that fork's conversation, not in this one.",
        chunk_size=12,
        delay=0.005,
    )


def _install_fork_compare_models(server: FakeAnthropicServer) -> None:
    server.on_prompt(
        PROMPT_MODEL,
        _python(LOOK_AT_TRAIN_CODE, "Summarise the training data", "[scripted] First a look at the training data and the baseline."),
        _read_notebook("[scripted] A straight line can't follow a curve; a polynomial of degree 2 can. Reading the notebook to place the cell."),
        _insert_after_prompt(PROMPT_MODEL, POLY_CELL, "code", "[scripted] Adding the polynomial model below your prompt."),
        _python(POLY_CELL, "Fit and score the polynomial model", "[scripted] Fitting and scoring it in your kernel."),
        _model_answer("a polynomial model of degree 2"),
    )
    server.on_prompt(
        PROMPT_FORK,
        _read_notebook("[scripted] Reading the notebook to place the new cell."),
        _insert_after_prompt(PROMPT_FORK, KNN_CELL, "code", "[scripted] Adding k-nearest neighbours below your prompt."),
        _python(KNN_CELL, "Fit and score k-nearest neighbours", "[scripted] Fitting and scoring it in your kernel."),
        _model_answer("k-nearest neighbours (k=15)"),
    )
    server.on_prompt(PROMPT_KEEP, _keep_answer)


# --------------------------------------------------------------------------- inspect_dataframe.ipynb


def _list_variables(body: dict[str, Any]) -> Reply:
    described = "<kernel_variables>" in last_prompt(body)
    say = (
        "[scripted] Your prompt came with a description of `df` (type, shape, dtypes, first rows). "
        "First, what else is in your kernel."
        if described
        else "[scripted] First, what is in your kernel."
    )
    return tool_use("Variables", {}, text=say)


def _inspect_answer(body: dict[str, Any]) -> Reply:
    calls = turn_calls(body)
    failed = _failed(calls)
    if failed is not None:
        return failed
    outputs = _python_outputs(calls)
    if len(outputs) < 2:
        return text("[scripted] I didn't get to run my checks, so I have nothing to report.")
    missing = re.findall(r"^(\w+)\s+([1-9]\d*)$", outputs[0].split("\n\n")[0], re.M)
    m = re.search(r"^(\d+) implausible temperatures", outputs[1], re.M)
    findings = []
    if missing:
        findings.append(
            ", ".join(f"`{col}` has {count} missing value{'' if count == '1' else 's'}" for col, count in missing)
            + "; the other columns have none."
        )
    else:
        findings.append("No column has missing values.")
    if m and int(m.group(1)):
        findings.append(
            f"{m.group(1)} temperatures are below -50 °C or above 60 °C (listed below): not plausible air "
            "temperatures, most likely a placeholder for failed readings. Replace them with NaN before you "
            "average or plot."
        )
    elif m:
        findings.append("No temperature is below -50 °C or above 60 °C.")
    return text(
        "[scripted] " + " ".join(findings) + " I did not change `df`; my code defined one variable in your kernel, "
        "`implausible` (a mask of those rows).\n\n"
        f"What my code printed:\n\n{_fenced(outputs[0])}\n\n{_fenced(outputs[1])}",
        chunk_size=12,
        delay=0.005,
    )


def _install_inspect_dataframe(server: FakeAnthropicServer) -> None:
    server.on_prompt(
        PROMPT_INSPECT,
        _list_variables,
        _python(MISSING_CODE, "Missing values and summary statistics", "[scripted] Missing values and summary statistics:"),
        _python(IMPLAUSIBLE_CODE, "Find implausible temperatures", "[scripted] Are all temperatures plausible?"),
        _inspect_answer,
    )


# --------------------------------------------------------------------------- the script


def install_examples(server: FakeAnthropicServer, *, default: bool = True) -> FakeAnthropicServer:
    """Script ``server`` with the prompts of the three example notebooks; returns it.

    Parameters
    ----------
    server
        The fake API to script. Its rules match by phrase, first match wins; the
        phrases here appear in no prompt of the quickstart, so the walkthrough's
        script can be installed on the same server.
    default
        Also answer unscripted prompts with :data:`NOT_SCRIPTED` (False keeps the
        server's own default, e.g. the walkthrough's).
    """
    _install_clean_csv(server)
    _install_fork_compare_models(server)
    _install_inspect_dataframe(server)
    if default:
        server.set_default(text(NOT_SCRIPTED))
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve the example notebooks' scripted replies until interrupted; prints the URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m agent_magic.testing.examples",
        description="A fake Messages API with the example notebooks' scripted replies. Start Jupyter with "
        "ANTHROPIC_BASE_URL set to the URL this prints and ANTHROPIC_API_KEY set to any value.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    args = parser.parse_args(argv)
    with install_examples(FakeAnthropicServer(port=args.port)) as server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
