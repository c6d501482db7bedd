"""Imported by the crash harness's forkserver only: warm it up once before it forks workers."""

from __future__ import annotations

import logging
import traceback

from .worker import warm_up

# Workers log to their own files; the SDK's "ANTHROPIC_API_KEY takes precedence" notice is noise there.
logging.getLogger("anthropic").setLevel(logging.ERROR)

try:
    warm_up()
except Exception:  # a cold worker is slower, not wrong
    traceback.print_exc()
