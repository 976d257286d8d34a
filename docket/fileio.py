"""Small, careful file operations shared by the engine and the standalone tools.

Every write that another process may read goes through a temporary name, an fsync and
a rename, so a reader sees the old content or the new, never half of it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from docket.errors import Invalid

__all__ = [
    "atomic_write",
    "atomic_copy",
    "fsync_dir",
    "sha256_file",
    "sha256_bytes",
    "inside",
    "safe_join",
    "tree_size",
    "is_disk_error",
    "relative_path_problem",
]

_CHUNK = 1 << 20

# A full disk, an exhausted quota, an I/O error: the machine's trouble, not the input's.
# What meets one is left to be done again once the disk is back, never failed or
# rejected for it.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def is_disk_error(exc: BaseException) -> bool:
    """True for an ``OSError`` or SQLite error that says the disk is full or failing."""
    import sqlite3

    if isinstance(exc, OSError):
        return exc.errno in DISK_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (10, 13):  # SQLITE_IOERR*, SQLITE_FULL
            return True
        return any(word in str(exc) for word in ("disk I/O error", "database or disk is full"))
    return False


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temp_beside(path: Path, mode: int | None) -> Iterator[tuple[int, Path]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        yield fd, tmp_path
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = 0o644,
                 durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename.

    ``durable`` adds the fsyncs that make the write survive a power cut; turn it off
    only for files that can be re-derived.
    """
    payload = data.encode() if isinstance(data, str) else data
    with _temp_beside(path, mode) as (fd, tmp):
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path, *, durable: bool = True) -> None:
    """Copy ``src`` to ``dst`` so that ``dst`` appears complete or not at all."""
    with _temp_beside(dst, None) as (fd, tmp):
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    if durable:
        fsync_dir(dst.parent)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inside(path: Path, root: Path) -> bool:
    """True when ``path``, with every symlink resolved, lies within ``root``.

    A symlink loop (or a path that cannot be resolved) lies within nothing.
    """
    try:
        return _within(path.resolve(), root)
    except (RuntimeError, OSError):  # RuntimeError: Python < 3.13's ELOOP
        return False


def _within(resolved: Path, root: Path) -> bool:
    """``inside`` for a path already resolved (each resolve is an lstat per component)."""
    try:
        resolved.relative_to(root.resolve())
    except (ValueError, RuntimeError, OSError):
        return False
    return True


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def relative_path_problem(relative: str) -> str | None:
    """What makes ``relative`` no plain relative path (checked without any filesystem):
    empty, control characters, absolute, or a ``..`` component. None when it is fine."""
    # a search and a split, not a loop over characters and a Path: this runs for every
    # path parameter of every document taken in
    if not relative or _CONTROL.search(relative):
        return "is empty or has control characters"
    if relative.startswith("/"):
        return "is absolute"
    if ".." in relative.split("/"):  # the components Path(relative).parts would give
        return "contains '..'"
    return None


def safe_join(root: Path, relative: str) -> Path:
    """Join a user-supplied relative path to ``root``, refusing any way out of it.

    Refuses absolute paths, ``..`` components, NUL and control characters, and
    symlinks (anywhere along the path) that resolve outside ``root``.
    """
    problem = relative_path_problem(relative)
    if problem is not None:
        hint = {"is absolute": f"give a path relative to {root}",
                "contains '..'": f"give a path inside {root} without '..'"}
        raise Invalid(f"path {relative!r} {problem}",
                      hint.get(problem, "use a plain relative path"))
    joined = root / relative
    try:
        resolved = joined.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13's ELOOP
        raise Invalid(f"path {relative!r} cannot be resolved (a symlink loop?): {exc}",
                      "replace the symlink with the file itself") from None
    # resolved once, not again by ``inside`` (productfetcher joins every file of a product)
    if not _within(resolved, root):
        raise Invalid(f"path {relative!r} leads outside {root} through a symlink",
                      "replace the symlink with the file itself")
    return joined


def tree_size(path: Path) -> int:
    """Bytes used by the files under ``path`` (symlinks counted as links, not targets)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
