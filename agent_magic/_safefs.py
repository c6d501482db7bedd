"""Writing files without following symlinks an attacker (or an accident) swapped in.

Every path here is absolute and resolved already: it is the path a permission check
approved. Folders are opened one component at a time with ``O_DIRECTORY|O_NOFOLLOW``
and files created, renamed and removed relative to the open folder, so a folder
replaced by a symbolic link after the check makes the operation fail instead of
reaching outside the workspace. Used by the agent's tools and by rewinds.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from ._errors import ToolError
from .store.jsonl import crash_point


def atomic_write(
    path: Path, data: bytes, *, mode: int | None = None, create_parents: bool = False, fsync: bool = True
) -> os.stat_result:
    """Replace ``path`` with ``data`` atomically and return the new file's stat.

    The data goes to a temporary file in the same folder, is flushed to disk
    and then renamed over ``path``, so readers see the old or the new file,
    never half of one. ``mode`` (permission bits) is applied when given; a new
    file gets the default mode the umask allows. ``create_parents`` creates
    missing folders.

    ``path`` must be resolved already (no symlinks, no ``..``), as
    :meth:`ToolContext.resolve` returns it: it is the path the permission
    check approved. The folder is opened one component at a time without
    following symlinks, and the file is created and renamed relative to that
    open folder, so a symlink swapped into the path after the check (to point
    the write elsewhere) makes the write fail instead of following it.

    Raises
    ------
    ToolError
        The file could not be written (permissions, disk full, a symlink in the path, ...).
    """
    if not _NOFOLLOW_SUPPORTED:
        return _atomic_write_by_path(path, data, mode=mode, create_parents=create_parents, fsync=fsync)
    dir_fd = open_dir_nofollow(path.parent, create=create_parents)
    name = path.name
    tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                raise ToolError(
                    f"Refusing to write {path}: it became a symbolic link after it was checked."
                )
        except FileNotFoundError:
            pass
        try:
            # O_EXCL with 0o666 lets the kernel apply the umask, as for a normal new file.
            fd = os.open(tmp, _TMP_FLAGS, 0o666, dir_fd=dir_fd)
        except OSError as e:
            raise ToolError(f"Cannot write {path}: {e.strerror or e}.") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
                if fsync:
                    os.fsync(f.fileno())
            crash_point("file.tmp")
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            crash_point("file.replaced")
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as e:
            _unlink_at(tmp, dir_fd)
            raise ToolError(f"Cannot write {path}: {e.strerror or e}.") from None
        except BaseException:
            _unlink_at(tmp, dir_fd)
            raise
    finally:
        os.close(dir_fd)


_NOFOLLOW_SUPPORTED = (
    hasattr(os, "O_NOFOLLOW")
    and hasattr(os, "O_DIRECTORY")
    and os.open in os.supports_dir_fd
    and os.rename in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_dir_nofollow(directory: Path, *, create: bool) -> int:
    """Open an absolute, resolved ``directory`` one component at a time, never following a symlink.

    Missing folders are created when ``create`` is true. Returns a directory fd.
    """
    parts = directory.parts
    fd = os.open(parts[0], _DIR_FLAGS)
    try:
        for i, part in enumerate(parts[1:], start=1):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ToolError(f"Cannot write into {directory}: the folder does not exist.") from None
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise ToolError(
                        f"Cannot create the folder {Path(*parts[: i + 1])}: {e.strerror or e}."
                    ) from None
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except ToolError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        where = Path(*parts[: i + 1])
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise ToolError(
                f"Refusing to write into {directory}: {where} is not a folder any more "
                "(a symbolic link or file was put in its place after the path was checked)."
            ) from None
        raise ToolError(f"Cannot open the folder {where}: {e.strerror or e}.") from None
    return fd


def _unlink_at(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _atomic_write_by_path(
    path: Path, data: bytes, *, mode: int | None, create_parents: bool, fsync: bool = True
) -> os.stat_result:
    """:func:`atomic_write` where the OS lacks ``O_NOFOLLOW``/``dir_fd`` (Windows)."""
    if create_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ToolError(f"Cannot create the folder {path.parent}: {e.strerror or e}.") from None
    if path.parent.resolve() != path.parent:
        raise ToolError(f"Refusing to write {path}: a folder in its path became a link after it was checked.")
    tmp = path.with_name(f".{path.name[:100]}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise ToolError(f"Cannot write {path}: {e.strerror or e}.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        if mode is not None:
            tmp.chmod(mode)
        crash_point("file.tmp")
        tmp.replace(path)
        crash_point("file.replaced")
        return path.stat()
    except OSError as e:
        _unlink_quietly(tmp)
        raise ToolError(f"Cannot write {path}: {e.strerror or e}.") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass



def make_dirs_nofollow(directory: Path) -> None:
    """``mkdir -p`` for a resolved path, never through a symlink."""
    if not _NOFOLLOW_SUPPORTED:
        directory.mkdir(parents=True, exist_ok=True)
        return
    os.close(open_dir_nofollow(directory, create=True))


def unlink_nofollow(path: Path) -> None:
    """Remove the file ``path`` (missing is fine); its folders are not followed through symlinks."""
    if not _NOFOLLOW_SUPPORTED:
        path.unlink(missing_ok=True)
        return
    try:
        dir_fd = open_dir_nofollow(path.parent, create=False)
    except ToolError:
        if not path.parent.exists():
            return
        raise
    try:
        os.unlink(path.name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)


def rmdir_nofollow(path: Path) -> None:
    """Remove the empty folder ``path`` (OSError if it is not empty)."""
    if not _NOFOLLOW_SUPPORTED:
        path.rmdir()
        return
    dir_fd = open_dir_nofollow(path.parent, create=False)
    try:
        os.rmdir(path.name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
