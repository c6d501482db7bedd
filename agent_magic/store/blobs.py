"""Content-addressed, compressed backups: ``blobs/ab/cdef...`` under the store's home."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

from .._errors import AgentMagicError
from .home import make_private_dir
from .jsonl import atomic_write_bytes, crash_point, want_fsync


class BlobStore:
    """Content-addressed, zlib-compressed blobs (sha256 of the raw content).

    The same content is stored once, whatever session or file it came from.
    With ``root=None`` blobs live in memory (no-persist sessions).
    """

    def __init__(self, root: Path | None, *, fallback: BlobStore | None = None) -> None:
        self.root = root
        self.fallback = fallback
        self._memory: dict[str, bytes] = {}
        self._fsync = want_fsync()
        self._known: set[str] = set()

    @staticmethod
    def hash(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _path(self, digest: str) -> Path:
        assert self.root is not None
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        """Store ``data`` (if new) and return its hash; durable before returning."""
        digest = self.hash(data)
        self.put_with_hash(digest, data)
        return digest

    def put_with_hash(self, digest: str, data: bytes) -> None:
        if self.root is None:
            self._memory.setdefault(digest, zlib.compress(data, 1))
            return
        if digest in self._known:
            return
        path = self._path(digest)
        if path.exists():
            self._known.add(digest)
            return
        make_private_dir(path.parent)
        level = 1 if len(data) > (4 << 20) else 6
        crash_point("blob")
        atomic_write_bytes(path, zlib.compress(data, level), fsync=self._fsync, crash_label="blob.tmp")
        self._known.add(digest)

    def put_compressed(self, digest: str, packed: bytes) -> None:
        """Store a blob already zlib-compressed (a verified bundle entry) as it is."""
        if self.root is None:
            self._memory.setdefault(digest, packed)
            return
        path = self._path(digest)
        if digest in self._known or path.exists():
            self._known.add(digest)
            return
        make_private_dir(path.parent)
        atomic_write_bytes(path, packed, fsync=self._fsync)
        self._known.add(digest)

    def has(self, digest: str) -> bool:
        if self.root is None:
            return digest in self._memory or (self.fallback is not None and self.fallback.has(digest))
        return digest in self._known or self._path(digest).exists()

    def get(self, digest: str) -> bytes:
        if self.root is None:
            try:
                return zlib.decompress(self._memory[digest])
            except KeyError:
                if self.fallback is not None:
                    return self.fallback.get(digest)
                raise BlobMissingError(digest) from None
        try:
            with open(self._path(digest), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise BlobMissingError(digest) from None
        data = zlib.decompress(raw)
        if self.hash(data) != digest:
            raise BlobMissingError(digest, corrupt=True)
        return data

    def stored_size(self, digest: str) -> int:
        if self.root is None:
            return len(self._memory.get(digest, b""))
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def iter_digests(self) -> Iterator[str]:
        if self.root is None:
            yield from self._memory
            return
        if not self.root.exists():
            return
        for sub in self.root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for f in sub.iterdir():
                    if not f.name.startswith("."):
                        yield sub.name + f.name


class BlobMissingError(AgentMagicError):
    """A backup the checkpoint log refers to is missing or corrupt."""

    def __init__(self, digest: str, corrupt: bool = False) -> None:
        self.digest = digest
        what = "is corrupt" if corrupt else "is missing"
        super().__init__(f"Backup {digest[:12]} {what} in the session store; that file cannot be restored.")
