"""Attachments: the files a request names in ``spec.files``, checked and copied.

An attachment is a regular file, or a directory holding only regular files and
directories: never a device, a socket, a FIFO or a symlink (a device is read without
end, a symlink could lead anywhere once copied). Intake checks this; the copy checks
it again on what it actually opens, since the file may be replaced after intake.

Copying into an execution's ``rawdata/`` is bounded in time: each call copies until
``budget_s`` is spent and reports whether it finished, so one request with 20,000
files or a 50 GB measurement set never holds the watcher (and every other document)
for the length of its copy. Work done is never redone: a file whose copy has the
source's size and modification time is complete; a partial one sits under a hidden
name (never its final one) and is continued from where it stopped. Copies, not hard
links: jobs such as CASA write into their inputs, which must not change the original.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path

__all__ = ["AttachmentError", "check_attachment", "copy_attachments"]

_FICLONE = 0x40049409  # Linux ioctl: a copy-on-write clone (btrfs, XFS), instant
_CHUNK = 64 << 20
_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symlink"}


class AttachmentError(Exception):
    """An attachment that is not regular files; the message names the entry."""


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _entries(root: Path) -> list[tuple[Path, os.stat_result]]:
    """Every entry under directory ``root`` (depth first), each checked to be a regular
    file or a directory."""
    found = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                path = Path(entry.path)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)
                elif not stat.S_ISREG(st.st_mode):
                    raise AttachmentError(f"{path.relative_to(root.parent)} is "
                                          f"{_kind(st.st_mode)}; attachments hold regular "
                                          "files only")
                found.append((path, st))
    return found


def check_attachment(path: Path) -> None:
    """Raise ``AttachmentError`` unless ``path`` is a regular file or a directory of them.

    ``path`` itself may be a symlink within the attachments root (the caller checked
    where it leads); nothing inside a directory may be one.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise AttachmentError(f"{path.name} cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            _entries(path)
        except OSError as exc:
            raise AttachmentError(f"{path.name}: cannot read {exc.filename}: "
                                  f"{exc.strerror}") from None
    elif not stat.S_ISREG(st.st_mode):
        raise AttachmentError(f"{path.name} is {_kind(st.st_mode)}; an attachment is a "
                              "regular file or a directory of regular files")


def _complete(target: Path, st: os.stat_result) -> bool:
    try:
        done = target.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (stat.S_ISREG(done.st_mode) and done.st_size == st.st_size
            and done.st_mtime_ns == st.st_mtime_ns)


def _copy_range(src: int, dst: int, count: int, offset: int) -> int:
    try:
        return os.copy_file_range(src, dst, count, offset, offset)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    data = os.pread(src, min(count, 1 << 20), offset)  # a filesystem without it
    return os.pwrite(dst, data, offset) if data else 0


def _copy_file(source: Path, target: Path, deadline: float) -> bool:
    """Copy one regular file (or go on with its partial copy); False when out of time."""
    partial = target.with_name(f".{target.name}.copying")
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):  # replaced since it was checked
            raise AttachmentError(f"{source.name} is {_kind(st.st_mode)}; attachments hold "
                                  "regular files only")
        dst = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            offset = os.fstat(dst).st_size
            if offset > st.st_size:
                os.ftruncate(dst, 0)
                offset = 0
            if offset == 0 and st.st_size:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(dst, _FICLONE, src)
                    offset = st.st_size
            while offset < st.st_size:
                if time.monotonic() > deadline:
                    return False
                sent = _copy_range(src, dst, min(_CHUNK, st.st_size - offset), offset)
                if sent == 0:
                    break  # the source shrank: the size check below restarts it
                offset += sent
            os.fchmod(dst, stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
        after = os.fstat(src)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            partial.unlink()  # changed while copied: start again next time
            return False
    finally:
        os.close(src)
    os.replace(partial, target)
    return True


def copy_attachments(sources: list[Path], rawdata: Path, budget_s: float | None = None
                     ) -> bool:
    """Copy each attachment into ``rawdata`` by its name; True when all are complete.

    With ``budget_s``, stop once that much time is spent (finish later by calling again).
    Raises ``AttachmentError`` for what is not regular files, ``OSError`` for the disk.
    """
    deadline = time.monotonic() + budget_s if budget_s is not None else float("inf")
    rawdata.mkdir(parents=True, exist_ok=True)
    copied = 0
    for source in sources:
        top = source.resolve()  # a top-level symlink was checked to stay inside the root
        st = top.stat()
        if stat.S_ISDIR(st.st_mode):
            files = [(top, st), *_entries(top)]
        elif stat.S_ISREG(st.st_mode):
            files = [(top, st)]
        else:
            raise AttachmentError(f"{source.name} is {_kind(st.st_mode)}; an attachment is "
                                  "a regular file or a directory of regular files")
        for path, st in files:
            target = rawdata / source.name / path.relative_to(top) if path != top else (
                rawdata / source.name)
            if stat.S_ISDIR(st.st_mode):
                target.mkdir(parents=True, exist_ok=True)
                continue
            if _complete(target, st):
                continue
            # the first file of a call always gets going, so every call makes progress
            if copied and time.monotonic() > deadline:
                return False
            copied += 1
            try:
                if not _copy_file(path, target, deadline if copied > 1 else
                                  max(deadline, time.monotonic() + 0.01)):
                    return False
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise AttachmentError(f"{path.name} is a symlink; attachments hold "
                                          "regular files only") from None
                raise
    return True
