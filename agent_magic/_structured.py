"""Structured answers: ``output_format={"type": "json_schema", "schema": ...}`` (the Agent SDK's option).

The turn's prompt is followed by an instruction naming the schema; the final answer is
parsed as JSON (bare, or in a fenced block) and validated with ``jsonschema``. An answer
that does not validate is sent back with the validator's complaint, at most
:data:`MAX_RETRIES` times, before the turn ends ``error_max_structured_output_retries``.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: How many times the model is asked again for an answer that does not validate.
MAX_RETRIES = 2
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.S)


def instructions(schema: dict[str, Any]) -> str:
    """The text sent after the prompt: what the final answer must be."""
    return (
        "When you have finished, give your final answer as a single JSON value that validates against "
        "this JSON schema, and nothing else (no prose around it; a ```json fenced block is fine):\n"
        f"{json.dumps(schema, indent=1, ensure_ascii=False)}"
    )


def _candidates(text: str) -> list[str]:
    text = text.strip()
    out = [text]
    out += [m.group(1) for m in _FENCE.finditer(text)]
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            out.append(text[i : j + 1])
    return out


def parse(text: str, schema: dict[str, Any]) -> tuple[bool, Any, str]:
    """Parse and validate ``text``; returns (valid, value, what is wrong for the model)."""
    import jsonschema

    value: Any = None
    parsed = False
    for candidate in _candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        parsed = True
        break
    if not parsed:
        return False, None, "The answer is not JSON."
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return True, value, ""
    where = "/".join(str(p) for p in error.absolute_path)
    return False, value, f"{error.message}" + (f" (at {where})" if where else "")


def retry_prompt(problem: str) -> str:
    """The message that asks the model again."""
    return (
        f"Your final answer does not match the required JSON schema: {problem}. "
        "Answer again with only a JSON value that validates against the schema."
    )
