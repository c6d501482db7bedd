"""Export a session to one portable file, and import it elsewhere with its checkpoints.

A bundle is a zip file::

    manifest.json         format, session id, what is inside
    transcript.jsonl      the session's transcript
    checkpoints.jsonl     its checkpoint records
    meta.json             title, tag, kernel tools
    subagents/agent-<id>.jsonl   its subagents' transcripts
    blobs/<sha256>        every backup the records refer to (zlib, as stored)

Import never trusts the file: entry names must be exactly of this shape (no
absolute paths, ``..``, links or other files), sizes are capped (declared and
actual, so a zip bomb stops at the cap), every blob is decompressed and checked
against its hash before anything is written, checkpoint records may only name
paths inside the session's project directory (a rewind of an imported session
must not write anywhere else), and nothing is written outside the store. A
session id that already exists is an error unless a new id is asked for. A
failed import leaves the store as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ._errors import BundleError, SessionExistsError
from ._options import validate_session_id
from .checkpoints import blobs_referenced
from .store import forks, subagents
from .store.home import FILE_MODE, iso_now, make_private_dir, new_uuid
from .store.jsonl import atomic_write_bytes, dumps_line, parse_lines
from .store.local import SessionStore

BUNDLE_FORMAT = 1
MAX_ENTRY_BYTES = 1 << 30  # 1 GiB per file, uncompressed
MAX_TOTAL_BYTES = 4 << 30
MAX_ENTRIES = 200_000
_BLOB_NAME = re.compile(r"^blobs/([0-9a-f]{64})$")
_SUBAGENT_NAME = re.compile(r"^subagents/agent-([A-Za-z0-9_-]{1,128})\.jsonl$")
_FIXED = {"manifest.json", "transcript.jsonl", "checkpoints.jsonl", "meta.json"}


def export_session(session_id: str, path: str | os.PathLike[str], *, home: str | os.PathLike[str] | None = None) -> Path:
    """Write ``session_id`` (transcript, checkpoints and their backups) to one file at ``path``.

    Returns
    -------
    Path
        The bundle written (private to the user, like the store).

    Raises
    ------
    BundleError
        ``path`` cannot be written (a missing folder, no permission, a NUL byte).
    """
    store = SessionStore.at(home)
    sid = store.resolve(session_id)
    d = store.session_dir(sid)
    if "\x00" in os.fspath(path):
        raise BundleError(f"Cannot export to {os.fspath(path)!r}: the path contains a NUL byte.")
    out = Path(path).expanduser()
    if out.is_dir():
        out = out / f"{sid}.agent-session.zip"
    if not out.parent.is_dir():
        raise BundleError(f"Cannot export to {out}: the folder {out.parent} does not exist.")
    # A fork goes whole: the bundle carries what it inherits from its parents.
    transcript, records_raw = forks.whole_bytes(store, sid)
    records = parse_lines(records_raw.splitlines(keepends=True), None)
    blobs = blobs_referenced(records, store.blobs)
    manifest = {
        "format": BUNDLE_FORMAT,
        "session_id": sid,
        "exported_at": iso_now(),
        "blobs": len(blobs),
        "info": {k: v for k, v in vars(store.info(sid)).items()},
    }
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        # The bundle holds the conversation and backups: private to the user, like the store.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
            z.writestr("transcript.jsonl", transcript)
            if records_raw:
                z.writestr("checkpoints.jsonl", records_raw)
            if (d / "meta.json").exists():
                z.write(d / "meta.json", "meta.json")
            for agent_id in subagents.list_subagents(store, sid):
                path = subagents.subagent_path(store, sid, agent_id)
                # Whole lines only: a subagent still writing its last line is exported without it.
                z.writestr(f"subagents/agent-{agent_id}.jsonl", b"".join(subagents.complete_lines(path)))
            assert store.blobs.root is not None
            for digest in sorted(blobs):
                # Already compressed: store without deflating again.
                z.write(store.blobs.root / digest[:2] / digest[2:], f"blobs/{digest}", compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"Cannot export to {out}: {e.strerror or e}.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def import_session(
    path: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
    new_session_id: str | None = None,
    scope: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Import a bundle made by :func:`export_session`; returns the session id.

    Parameters
    ----------
    new_session_id
        Import under this id instead of the original one (needed when the
        original id exists in this store already).
    scope, cwd
        Re-home the session: the notebook/project it belongs to here, and the
        directory its tools and checkpoints refer to.

    Raises
    ------
    BundleError
        The file is not a valid bundle, or is unsafe.
    SessionExistsError
        The session id exists already.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise BundleError(f"No bundle at {src}. Export one with `%agent export ID PATH`.")
    try:
        z = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        raise BundleError(f"{src} is not a session bundle ({e}).") from None
    store = SessionStore.at(home)
    with z:
        infos = z.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BundleError(f"{src} has {len(infos)} entries, more than a bundle can hold.")
        total = 0
        names: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name in names:
                raise BundleError(f"{src} lists {name!r} twice.")
            if name not in _FIXED and not _BLOB_NAME.match(name) and not _SUBAGENT_NAME.match(name):
                raise BundleError(f"{src} has an unexpected entry {name!r}; refusing to import it.")
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode not in (0o100000,):
                raise BundleError(f"{src} has a link or special file {name!r}; refusing to import it.")
            if info.file_size > MAX_ENTRY_BYTES:
                raise BundleError(f"{src}: entry {name!r} is too large ({info.file_size} bytes).")
            total += info.file_size
            if total > MAX_TOTAL_BYTES:
                raise BundleError(f"{src} is too large to import ({total} bytes uncompressed).")
            names[name] = info
        for required in ("manifest.json", "transcript.jsonl"):
            if required not in names:
                raise BundleError(f"{src} has no {required}; it is not a session bundle.")

        def read(name: str) -> bytes:
            try:
                with z.open(names[name]) as f:
                    data = f.read(MAX_ENTRY_BYTES + 1)
            # What zipfile raises for a damaged or foreign entry: BadZipFile (CRC, header),
            # zlib.error/EOFError (deflate stream), NotImplementedError (compression method),
            # RuntimeError (encrypted).
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError) as e:
                raise BundleError(f"{src}: entry {name!r} cannot be read ({type(e).__name__}: {e}); the bundle is damaged.") from None
            if len(data) > MAX_ENTRY_BYTES:
                raise BundleError(f"{src}: entry {name!r} is larger than it claims.")
            return data

        try:
            manifest = json.loads(read("manifest.json"))
        except ValueError:
            raise BundleError(f"{src}: manifest.json is not JSON.") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{src}: unsupported bundle format {manifest.get('format') if isinstance(manifest, dict) else None!r}.")
        old_id = str(manifest.get("session_id") or "")
        try:
            validate_session_id(old_id)
        except Exception:
            raise BundleError(f"{src}: invalid session id in manifest.") from None
        sid = validate_session_id(new_session_id) if new_session_id else old_id
        if store.exists(sid):
            raise SessionExistsError(
                f"Session {sid[:8]} already exists in this store; import it under another id with new_session_id=... (`--as ID`)."
            )

        transcript = read("transcript.jsonl")
        entries = parse_lines(transcript.splitlines(keepends=True), None)
        if not entries or entries[0].get("type") != "session":
            raise BundleError(f"{src}: the transcript has no session header.")
        records_raw = read("checkpoints.jsonl") if "checkpoints.jsonl" in names else b""
        meta_raw = read("meta.json") if "meta.json" in names else b""
        if meta_raw:
            try:
                meta = json.loads(meta_raw)
            except ValueError:
                raise BundleError(f"{src}: meta.json is not JSON.") from None
            if not isinstance(meta, dict):
                raise BundleError(f"{src}: meta.json is not an object.")
            kept = {k: meta[k] for k in ("title", "tag") if isinstance(meta.get(k), str)}
            tools = meta.get("kernel_tools")
            if isinstance(tools, list) and all(isinstance(t, str) and t.isidentifier() for t in tools):
                kept["kernel_tools"] = tools
            meta_raw = json.dumps(kept).encode()

        agents: list[tuple[str, list[dict[str, Any]]]] = []
        for name in sorted(names):
            if (m := _SUBAGENT_NAME.match(name)) is None:
                continue
            agent_lines = parse_lines(read(name).splitlines(keepends=True), None)
            if not agent_lines or agent_lines[0].get("type") != "session":
                raise BundleError(f"{src}: the subagent transcript {name!r} has no header.")
            head = dict(agent_lines[0], session_id=m.group(1), parent_session_id=sid)
            if cwd is not None:
                head["cwd"] = str(Path(cwd).expanduser().resolve())
            agents.append((m.group(1), [head, *agent_lines[1:]]))

        if records_raw:
            recs = parse_lines(records_raw.splitlines(keepends=True), None)
            for r in recs:
                _check_record_paths(r, src)
        else:
            recs = []

        # Verify every blob before anything is written (a damaged bundle leaves the store as it
        # was), then store them; each is checked again as it is stored, in case the file changed.
        blob_names = [(name, m.group(1)) for name in names if (m := _BLOB_NAME.match(name))]
        for name, digest in blob_names:
            _verify_blob(read(name), digest, src)
        for name, digest in blob_names:
            if not store.blobs.has(digest):
                packed = read(name)
                _verify_blob(packed, digest, src)
                store.blobs.put_compressed(digest, packed)

        # Rewrite ids and re-home, then publish the session folder atomically.
        header = dict(entries[0])
        header["session_id"] = sid
        if cwd is not None:
            header["cwd"] = str(Path(cwd).expanduser().resolve())
        if scope is not None:
            header["scope"] = scope
        header["imported_at"] = iso_now()
        lines = [header] + [dict(e, session_id=sid) for e in entries[1:]]
        staging = store.sessions_root / f".import-{sid}-{new_uuid()[:8]}"
        make_private_dir(staging)
        try:
            atomic_write_bytes(staging / "transcript.jsonl", b"".join(dumps_line(e) for e in lines))
            if recs:
                atomic_write_bytes(staging / "checkpoints.jsonl", b"".join(dumps_line(r) for r in recs))
            if meta_raw:
                atomic_write_bytes(staging / "meta.json", meta_raw)
            if agents:
                folder = make_private_dir(staging / subagents.SUBAGENTS_DIR)
                for agent_id, agent_lines in agents:
                    atomic_write_bytes(folder / f"agent-{agent_id}.jsonl", b"".join(dumps_line(e) for e in agent_lines))
            try:
                os.rename(staging, store.session_dir(sid))
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise SessionExistsError(f"Session {sid[:8]} already exists in this store.") from None
                raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    scanned = store.scan_info(sid)
    if scanned is not None:
        store.index.upsert(scanned)
    return sid


def _verify_blob(packed: bytes, digest: str, src: Path) -> None:
    """Decompress ``packed`` in bounded pieces, checking its size cap and its hash."""
    d = zlib.decompressobj()
    h = hashlib.sha256()
    size = 0
    chunk = packed
    try:
        while True:
            out = d.decompress(chunk, 1 << 20)
            size += len(out)
            if size > MAX_ENTRY_BYTES:
                raise BundleError(f"{src}: backup {digest[:12]} is too large.")
            h.update(out)
            chunk = d.unconsumed_tail
            if not chunk:
                break
        rest = d.flush()
    except zlib.error:
        raise BundleError(f"{src}: backup {digest[:12]} is corrupt.") from None
    size += len(rest)
    if size > MAX_ENTRY_BYTES:
        raise BundleError(f"{src}: backup {digest[:12]} is too large.")
    h.update(rest)
    if not d.eof or d.unused_data:
        raise BundleError(f"{src}: backup {digest[:12]} is corrupt.")
    if h.hexdigest() != digest:
        raise BundleError(f"{src}: backup {digest[:12]} does not match its hash; the bundle is damaged.")


def _record_paths(r: dict[str, Any]) -> list[Any]:
    """Every path a checkpoint record names (what a rewind could write)."""
    out: list[Any] = []
    if "path" in r:
        out.append(r["path"])
    for key in ("dirs", "dirs_created", "dirs_deleted", "untracked"):
        v = r.get(key)
        if isinstance(v, list):
            out.extend(v)
        elif v is not None:
            out.append(v)
    for key in ("changes", "steps"):
        v = r.get(key)
        if isinstance(v, list):
            out.extend(c.get("path") if isinstance(c, dict) else c for c in v)
        elif v is not None:
            out.append(v)
    return out


def _check_record_paths(r: dict[str, Any], src: Path) -> None:
    for p in _record_paths(r):
        if not isinstance(p, str) or not p or "\x00" in p:
            raise BundleError(f"{src}: a checkpoint record has an invalid path {p!r}; refusing to import it.")
        parts = p.replace("\\", "/").split("/")
        if p.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", p) or ".." in parts:
            raise BundleError(
                f"{src}: a checkpoint record names {p!r}, outside the session's project directory; "
                "refusing to import it (rewinding it could write there)."
            )
