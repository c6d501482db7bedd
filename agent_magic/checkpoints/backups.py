"""Backups: bytes and files, and the content-addressed cell and notebook copies a rewind writes back.

What a rewind writes back comes from here: the blob store holds every version
the agent overwrote; a notebook kept for the whole-notebook fallback is a
*skeleton* plus one blob per cell, so a second copy only stores the cells that
differ; cells read back are cached by digest for one rewind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat as stat_mod
from pathlib import Path
from typing import Any

from .._errors import ToolError
from .._safefs import atomic_write
from ..store.blobs import BlobStore
from .cells import cell_bytes, dump_nb, load_nb

#: The tail of an atomic write's temp file name, ``.<name>.<8 hex>.tmp`` (see _safefs).
TEMP_TAIL = re.compile(r"[0-9a-f]{8}\.tmp")


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: str | Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_atomic(path: Path, data: bytes, mode: int | None) -> None:
    """Replace ``path`` by ``data`` via a temp file, never through a folder swapped for a symlink.

    A new file without ``mode`` gets the umask's default. Raises OSError (with the
    reason) when the path cannot be written safely.
    """
    try:
        atomic_write(path, data, mode=stat_mod.S_IMODE(mode) if mode is not None else None, create_parents=True, fsync=False)
    except ToolError as e:
        raise OSError(errno.EPERM, str(e)) from None


class Backups:
    """The content-addressed copies one session's checkpoints use, with a cell cache."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._cell_cache: dict[str, dict[str, Any]] = {}
        self._cell_digest: dict[int, str] = {}  # id() of a cached cell -> its blob

    def cell(self, digest: str | None) -> dict[str, Any] | None:
        if not digest:
            return None
        cell = self._cell_cache.get(digest)
        if cell is None:
            cell = json.loads(self.blobs.get(digest))
            self._cell_cache[digest] = cell
            self._cell_digest[id(cell)] = digest
        return cell  # shared: cells are never changed in place (see canon_cell)

    def put_cell(self, cell: dict[str, Any]) -> str:
        known = self._cell_digest.get(id(cell))
        return known if known is not None else self.blobs.put(cell_bytes(cell))

    def clear_cache(self) -> None:
        self._cell_cache.clear()
        self._cell_digest.clear()

    def put(self, data: bytes, digest: str | None) -> str:
        if digest is None:
            return self.blobs.put(data)
        self.blobs.put_with_hash(digest, data)
        return digest

    def store_base(self, data: bytes) -> dict[str, str]:
        """Keep a notebook for the whole-notebook fallback; returns the record's ``base*`` fields.

        A notebook written as nbformat writes it is kept as a skeleton (the notebook
        without its cells) plus one blob per cell: a later copy of the same notebook
        only stores the cells that differ. Any other notebook is kept whole, with the
        hash of its nbformat form (to recognise it when a rewind rebuilt it cell by cell).
        """
        nb = load_nb(data)
        canon = dump_nb(nb) if nb is not None else None
        if canon == data and nb is not None:
            cells = [self.blobs.put(cell_bytes(c)) for c in nb["cells"]]
            rest = {k: v for k, v in nb.items() if k != "cells"}
            skeleton = json.dumps({"nb": rest, "cells": cells}, sort_keys=True, separators=(",", ":")).encode()
            return {"base": self.blobs.put(skeleton), "base_kind": "cells"}
        out = {"base": self.blobs.put(data), "base_kind": "bytes"}
        if canon is not None:
            out["base_canon"] = hash_bytes(canon)
        return out

    def load_base(self, digest: str, kind: str) -> bytes:
        if kind != "cells":
            return self.blobs.get(digest)
        sk = json.loads(self.blobs.get(digest))
        nb = dict(sk["nb"])
        nb["cells"] = [self.cell(d) for d in sk["cells"]]
        return dump_nb(nb)

