"""Answers as values: ``%%agent --into NAME [--schema SPEC]``.

SPEC names a kernel variable holding a JSON-schema dict or a pydantic model class, or a JSON
file holding a schema; the turn runs with ``output_format`` and the validated
``ResultMessage.structured_output`` (a model instance for a pydantic class) becomes the value.
Without ``--schema`` the answer's text is the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from .._errors import AgentMagicError
from .._messages import ResultMessage
from ._function_schema import is_pydantic, type_name


class AnswerError(AgentMagicError):
    """A turn's answer cannot be stored with ``--into`` (no structured output, or the model class refused it)."""


# ---------------------------------------------------------------------------
# Answers as values (%%agent --into NAME [--schema SPEC])
# ---------------------------------------------------------------------------


@dataclass
class AnswerFormat:
    """How a ``%%agent --into`` turn's answer becomes a value.

    Attributes
    ----------
    schema
        The JSON schema the answer must fit (None: the answer's text is the value).
    model
        A pydantic model class that validates the structured output into an instance, or None.
    """

    schema: dict[str, Any] | None = None
    model: Any = None

    @property
    def output_format(self) -> dict[str, Any] | None:
        """``AgentOptions.output_format`` for the turn."""
        return None if self.schema is None else {"type": "json_schema", "schema": self.schema}


def answer_format(spec: str | None, ns: Mapping[str, Any], cwd: Path) -> AnswerFormat:
    """Resolve ``--schema SPEC``: a kernel variable holding a JSON-schema dict or a pydantic model
    class, or the path of a JSON file holding a schema.

    Raises
    ------
    UsageError
        When SPEC is none of these, or the file is not a JSON object.
    """
    if spec is None:
        return AnswerFormat()
    if spec.isidentifier() and spec in ns:
        value = ns[spec]
        if isinstance(value, dict):
            return AnswerFormat(dict(value))
        if is_pydantic(value):
            return AnswerFormat(dict(value.model_json_schema()), value)
        raise UsageError(f"--schema {spec}: the variable holds {type_name(value)}; give a JSON-schema dict, a pydantic model class, or a .json file.")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if not path.is_file():
        raise UsageError(f"--schema {spec}: no kernel variable or JSON file by that name; define a schema dict (or pydantic model) first.")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"--schema {spec}: cannot read it as JSON ({e}); fix the file or give a schema dict.") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {spec}: the file holds a JSON {type(schema).__name__}, not a schema object.")
    return AnswerFormat(schema)


def answer_value(fmt: AnswerFormat, result: ResultMessage) -> Any:
    """The value ``--into`` stores for a successful turn's result.

    Raises
    ------
    AnswerError
        With a schema: no structured output, or the pydantic model refused it.
    """
    if fmt.schema is None:
        return result.result or ""
    data = getattr(result, "structured_output", None)
    if data is None:
        raise AnswerError("The answer has no structured output fitting the schema")
    if fmt.model is not None:
        try:
            return fmt.model.model_validate(data)
        except Exception as e:  # pydantic's ValidationError
            raise AnswerError(f"{fmt.model.__name__} refused the answer: {' '.join(str(e).splitlines()[:3])}") from None
    return data
