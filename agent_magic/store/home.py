"""The store's home folder, private folders and files, ids and timestamps.

Files are created private to the user (directories 0700, files 0600).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def default_home() -> Path:
    """The session store directory: ``$AGENT_MAGIC_HOME`` or a per-user data directory."""
    env = os.environ.get("AGENT_MAGIC_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("agent-magic", appauthor=False))


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 for the directories this call creates."""
    if path.is_dir():
        return path
    parent = path.parent
    if parent != path and not parent.exists():
        make_private_dir(parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
    return path


def new_uuid() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_to_ms(value: Any) -> int | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
