"""``python -m bench``: run the workloads on both systems, print a table, write JSON."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
