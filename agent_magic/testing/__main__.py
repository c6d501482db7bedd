"""``python -m agent_magic.testing``: run the fake Messages API server until interrupted.

Prints its URL on the first line (``--port 0``, the default, picks a free port), so a test
in another process or language can read it and point ``ANTHROPIC_BASE_URL`` there.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import main


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent_magic.testing", description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--script", choices=["walkthrough", "none"], default="none",
                   help="'walkthrough': the quickstart notebook's scripted replies")
    args = p.parse_args(argv)
    return main(["serve-fake-api", "--port", str(args.port), "--script", args.script])


if __name__ == "__main__":
    sys.exit(run())
