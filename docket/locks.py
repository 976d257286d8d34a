"""One exclusive ``flock`` with a deadline: the lock every docket process takes.

``held(path, timeout_s, busy=..., fix=...)`` holds the lock on ``path`` for the block
and yields its descriptor (a run counter reads and rewrites the file through it).
``timeout_s`` is how long to wait for another holder: ``0`` tries once, ``None`` waits
for as long as it takes, anything else is a deadline in seconds after which
``LockTimeout`` (a ``Locked``: exit code 7) says ``busy`` and ``fix``.

flock belongs to the open file, so the kernel releases it when the holder exits or
dies: a crashed process never leaves a lock behind. A directory is locked through a
read-only descriptor of the directory itself (nothing is created in it). A lock file
someone else owns is opened read-only: flock works on any descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from docket.errors import DocketError, Locked

__all__ = ["LockTimeout", "held"]

# How often a waiter tries again: short against the seconds a holder keeps a lock.
_POLL_S = 0.05


class LockTimeout(Locked):
    """The lock's deadline passed while another process held it."""


def _open(path: Path, mode: int, write: bool) -> int:
    if path.is_dir():
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, mode)
    except PermissionError as exc:
        error = exc
    if not write:
        try:  # someone else's lock file: flock works on a read-only descriptor too
            return os.open(path, os.O_RDONLY)
        except OSError as exc:
            error = exc
    raise DocketError(f"cannot open the lock {path}: {error.strerror}",
                      f"ask the owner of {path.parent} for write access") from None


def _acquire(fd: int, path: Path, timeout_s: float | None, busy: str, fix: str) -> None:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
            return
        except OSError as exc:
            if deadline is None or exc.errno not in (errno.EAGAIN, errno.EACCES):
                # e.g. Lustre mounted without -o flock: refuse rather than run unlocked
                # and let two writers overwrite each other.
                raise DocketError(f"cannot lock {path}: {exc.strerror}",
                                  "put it on a filesystem with flock "
                                  "(Lustre: mount with -o flock)") from exc
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise LockTimeout(busy, fix) from None
            time.sleep(min(_POLL_S, left_s))


@contextlib.contextmanager
def held(path: Path, timeout_s: float | None, *, busy: str = "", fix: str = "",
         mode: int = 0o644, write: bool = False) -> Iterator[int]:
    """Hold the exclusive lock on ``path`` (a lock file, created with ``mode`` if
    missing, or a directory) for the block; yield its descriptor, read-write when
    ``write`` (the block writes the file through it), else read-write where allowed."""
    busy = busy or f"{path} is locked by another process"
    fix = fix or "try again when it is done"
    fd = _open(Path(path), mode, write)
    try:
        _acquire(fd, Path(path), timeout_s, busy, fix)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock
