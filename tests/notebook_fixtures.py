"""Notebooks that hold every kind of cell content nbformat knows, for exactness tests.

Written with ``nbformat.write``, so multi-line strings are lists of lines on
disk, as in every real notebook and in agent_magic's checkpoint records.
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
from nbformat import v4

# A 1x1 PNG: real image bytes, base64 as nbformat keeps them (with a line break, as some writers do).
_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2b5b3"
        "d10000000049454e44ae426082"
    )
).decode()
PNG_B64 = _PNG[:40] + "\n" + _PNG[40:]


def every_output_cells() -> list[nbformat.NotebookNode]:
    """Cells with fixed ids covering every output type, metadata and attachments."""
    md = v4.new_markdown_cell(
        "# Report\n\nThe logo:\n\n![logo](attachment:logo.png)\n",
        id="md-attach",
        attachments={"logo.png": {"image/png": PNG_B64}},
        metadata={"tags": ["intro"]},
    )
    streams = v4.new_code_cell(
        "for m in months:\n    print(m)\nimport sys; print('warn\\nagain', file=sys.stderr)",
        id="streams",
        execution_count=3,
        # (no legacy "collapsed": JupyterLab adds jupyter.outputs_hidden beside it on every save)
        metadata={"tags": ["data"], "scrolled": True},
        outputs=[
            v4.new_output("stream", name="stdout", text="2024-01   2,030.50\n2024-02   1,401.00\n2024-03   2,620.40\n"),
            v4.new_output("stream", name="stderr", text="warn\nagain\n"),
        ],
    )
    result = v4.new_code_cell(
        "df.head()",
        id="result",
        execution_count=4,
        outputs=[
            v4.new_output(
                "execute_result",
                execution_count=4,
                data={
                    "text/plain": "   a  b\n0  1  2\n1  3  4",
                    "text/html": "<table>\n<tr><td>1</td><td>2</td></tr>\n<tr><td>3</td><td>4</td></tr>\n</table>",
                    "application/json": {"a": [1, 3], "b": [2, 4], "note": "line one\nline two"},
                },
                metadata={"isolated": False},
            )
        ],
    )
    display = v4.new_code_cell(
        "display(fig)",
        id="display",
        execution_count=5,
        outputs=[
            v4.new_output(
                "display_data",
                data={"image/png": PNG_B64, "text/plain": "<Figure size 640x480\nwith 1 Axes>"},
                metadata={"image/png": {"width": 1, "height": 1}},
            ),
            v4.new_output("display_data", data={"application/vnd.custom+json": {"k": ["x\n", "y"]}}),
        ],
    )
    error = v4.new_code_cell(
        "1/0",
        id="error",
        execution_count=6,
        outputs=[
            v4.new_output(
                "error",
                ename="ZeroDivisionError",
                evalue="division by zero",
                traceback=[
                    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
                    "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)\nCell \x1b[0;32mIn[6], line 1\x1b[0m\n----> 1 1/0",
                    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
                ],
            )
        ],
    )
    empty = v4.new_code_cell("x = 1", id="no-output", execution_count=None)
    raw = v4.new_raw_cell("raw\ntext\n", id="raw", metadata={"format": "text/x-rst"})
    return [md, streams, result, display, error, empty, raw]


def every_output_notebook() -> nbformat.NotebookNode:
    nb = v4.new_notebook(cells=every_output_cells())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def write_every_output_notebook(path: Path) -> nbformat.NotebookNode:
    nb = every_output_notebook()
    nbformat.write(nb, str(path))
    return nb
