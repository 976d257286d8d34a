"""``conveyor``: move a run into the QA area and back, leaving links behind.

While a run waits for QA its ``rawdata/``, ``working/`` and ``products/`` live in
``<qa_area>/<request>.v<version>.e<execution>/`` and the processing directory keeps
symlinks to them, so the DA finds the run in the QA area and every path the watcher
knows still works.

Every move is crash-safe: a folder under its final name is always complete. Copies
between file systems go to ``.<part>.partial`` and are renamed when done; a source
that is no longer needed is renamed to a dot-name before it is removed. Running the
same command again after an interruption looks at what is on disk and finishes the
job; it never removes the only complete copy of anything.

Names on disk, for part ``x`` of processing directory ``D`` and QA folder ``Q``:

==================  ===============================================================
``D/x``, ``Q/x``    complete (a real folder in one place, a link to it in ``D``)
``*/.x.partial``    an unfinished copy: removed and redone
``*/.x.discard``    a redundant copy being removed: removal is finished
``D/.x.moved``      the source of a finished cross-device copy into ``Q``
``D/.x.copied``     a complete copy back from ``Q``, about to become ``D/x``
==================  ===============================================================
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import atomic_write, fsync_dir
from docket.locks import held
from docket.procdir import METADATA_FILE, PARTS, PRODUCTS, Metadata

__all__ = [
    "IMAGE_PARTS",
    "ConveyorResult",
    "qa_area_from_config",
    "to_qa",
    "from_qa",
    "qa_fail",
]

log = logging.getLogger("docket.tools.conveyor")

IMAGE_PARTS = (PRODUCTS,)
# What conveyor itself puts in a QA folder, beside the moved parts.
_QA_META = METADATA_FILE
_QA_BACKLINK = "processing"

Progress = Callable[[str], None]


@dataclass
class ConveyorResult:
    """What one conveyor command did; ``as_dict`` is the ``--json`` record."""

    action: str
    directory: Path
    qa_dir: Path
    parts: dict[str, str] = field(default_factory=dict)
    qa_dir_removed: bool = False
    qa_dir_left: list[str] = field(default_factory=list)
    qa_failed_marker: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "directory": str(self.directory),
            "qa_dir": str(self.qa_dir),
            "parts": self.parts,
            "qa_dir_removed": self.qa_dir_removed,
            "qa_dir_left": self.qa_dir_left,
            "qa_failed_marker": str(self.qa_failed_marker) if self.qa_failed_marker else None,
        }


def qa_area_from_config(config: dict[str, Any]) -> Path:
    value = config.get("qa_area")
    if not value:
        raise Invalid("conveyor.qa_area is not set",
                      "set it in tools.yaml or DOCKET_CONVEYOR_QA_AREA")
    area = Path(str(value))
    if not area.is_dir():
        raise NotFound(f"QA area {area} does not exist", "create it or fix conveyor.qa_area")
    return area.absolute()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One conveyor at a time per processing directory (flock on the folder itself)."""
    with held(directory, 0, busy=f"another conveyor is working on {directory}",
              fix="wait for it to finish, then run this again"):
        yield


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _discard(path: Path) -> None:
    """Remove a redundant complete copy: first off its final name, then for good."""
    if not _exists(path):
        return
    trash = path.with_name(f".{path.name}.discard")
    _remove(trash)
    os.rename(path, trash)
    fsync_dir(path.parent)
    _remove(trash)


def _copy_file_durably(src: str, dst: str) -> str:
    shutil.copy2(src, dst)
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
    return dst


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, _files in os.walk(top):
        fsync_dir(Path(dirpath))


def _move_dir(src: Path, dst: Path, progress: Progress | None) -> bool:
    """Move ``src`` to ``dst`` so that ``dst`` is complete whenever it exists.

    Returns True when ``src`` is gone (a rename), False when it was copied and is
    still there for the caller to retire.
    """
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        fsync_dir(src.parent)
        fsync_dir(dst.parent)
        return True
    partial = dst.with_name(f".{dst.name}.partial")
    _remove(partial)
    if progress:
        progress(f"copying {src} to {dst} (another file system)")
    shutil.copytree(src, partial, symlinks=True, copy_function=_copy_file_durably)
    _fsync_tree(partial)
    os.rename(partial, dst)
    fsync_dir(dst.parent)
    return False


def _link(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.link")
    _remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _check_link(link: Path, target: Path) -> None:
    pointed = Path(os.readlink(link))
    if not pointed.is_absolute():
        pointed = link.parent / pointed
    if (os.path.normpath(pointed) != os.path.normpath(target)
            and os.path.realpath(pointed) != os.path.realpath(target)):
        raise Invalid(f"{link} is a symlink to {pointed}, not to {target}",
                      "move the folder back by hand, or fix conveyor.qa_area")


def _tidy(d: Path, q: Path, part: str) -> None:
    """Finish what an interruption left: drop unfinished and redundant copies."""
    for side in (d, q):
        for leftover in (f".{part}.partial", f".{part}.discard", f".{part}.link"):
            _remove(side / leftover)
    moved, copied, real = d / f".{part}.moved", d / f".{part}.copied", d / part
    if _exists(moved):
        if _exists(q / part) or _exists(copied) or _is_real_dir(real):
            _remove(moved)
        else:
            # The only copy left: put it back rather than lose it.
            if real.is_symlink():
                real.unlink()
            os.rename(moved, real)
            fsync_dir(d)


def _part_to_qa(d: Path, q: Path, part: str, progress: Progress | None) -> str:
    _tidy(d, q, part)
    here, there, copied = d / part, q / part, d / f".{part}.copied"
    if here.is_symlink():
        _check_link(here, there)
        if _exists(there):
            return "already"
        if not _exists(copied):
            raise NotFound(f"{here} points to {there}, which does not exist",
                           "find the folder and move it back to the QA area")
        here.unlink()
    if not _exists(here):
        if _exists(copied):
            os.rename(copied, here)
            fsync_dir(d)
        elif _exists(there):
            _link(here, there)
            return "moved"
        else:
            return "absent"
    if not _is_real_dir(here):
        raise Invalid(f"{here} is not a folder", "move it aside, then run conveyor again")
    if not _exists(there):
        gone = _move_dir(here, there, progress)
        if not gone:
            os.rename(here, d / f".{part}.moved")
            fsync_dir(d)
    else:
        # Both complete (an interrupted move); the processing side makes way.
        os.rename(here, d / f".{part}.moved")
        fsync_dir(d)
    _link(here, there)
    _remove(d / f".{part}.moved")
    return "moved"


def _part_from_qa(d: Path, q: Path, part: str, progress: Progress | None) -> str:
    _tidy(d, q, part)
    here, there, copied = d / part, q / part, d / f".{part}.copied"
    if _is_real_dir(here):
        if _exists(copied):
            _remove(copied)
        if _exists(there):
            _discard(there)
            return "retrieved"
        return "already"
    if here.is_symlink():
        _check_link(here, there)
        if not _exists(copied) and not _exists(there):
            raise NotFound(f"{here} points to {there}, which does not exist",
                           "find the folder and put it back in the QA area")
    if not _exists(copied):
        if not _exists(there):
            return "absent"
        if not _is_real_dir(there):
            raise Invalid(f"{there} is not a folder", "move it aside, then run conveyor again")
        _move_dir(there, copied, progress)
    if here.is_symlink():
        here.unlink()
    elif _exists(here):
        raise Invalid(f"{here} is in the way", "move it aside, then run conveyor again")
    os.rename(copied, here)
    fsync_dir(d)
    _discard(there)
    return "retrieved"


def _open_qa_dir(meta: Metadata, qa_area: Path) -> Path:
    q = qa_area / meta.label
    q.mkdir(exist_ok=True)
    atomic_write(q / _QA_META, json.dumps(meta.raw, indent=2, sort_keys=True) + "\n")
    backlink = q / _QA_BACKLINK
    if not backlink.is_symlink() or Path(os.readlink(backlink)) != meta.directory.root:
        _link(backlink, meta.directory.root)
    return q


def _close_qa_dir(q: Path, result: ConveyorResult) -> None:
    """Remove the QA folder when nothing but conveyor's own files is left in it."""
    if not q.is_dir():
        result.qa_dir_removed = True
        return
    others = sorted(name for name in os.listdir(q) if name not in (_QA_META, _QA_BACKLINK))
    if others:
        result.qa_dir_left = others
        log.warning("QA folder %s still holds %s; left in place", q, ", ".join(others))
        return
    for name in (_QA_META, _QA_BACKLINK):
        _remove(q / name)
    q.rmdir()
    fsync_dir(q.parent)
    result.qa_dir_removed = True


def _check_not_failed(meta: Metadata) -> None:
    marker = meta.directory.qa_failed_marker
    if _exists(marker):
        raise Invalid(f"{meta.directory.root} failed QA ({marker} exists)",
                      "a failed run waits for the annihilator; start a new execution instead")


def to_qa(meta: Metadata, qa_area: Path, parts: tuple[str, ...] = PARTS,
          progress: Progress | None = None) -> ConveyorResult:
    """``--deliver`` / ``--deliver-img``: move ``parts`` into the QA area, leave links."""
    d = meta.directory.root
    with _locked(d):
        _check_not_failed(meta)
        q = qa_area / meta.label
        if not any(_exists(where / name) for p in parts for where, name in (
                (d, p), (q, p), (d, f".{p}.copied"), (d, f".{p}.moved"))):
            raise NotFound(f"{d} has none of {', '.join(p + '/' for p in parts)}",
                           "give the metadata.json of a processing directory")
        q = _open_qa_dir(meta, qa_area)
        result = ConveyorResult("deliver", d, q)
        for part in parts:
            result.parts[part] = _part_to_qa(d, q, part, progress)
    return result


def from_qa(meta: Metadata, qa_area: Path, parts: tuple[str, ...] = PARTS,
            progress: Progress | None = None) -> ConveyorResult:
    """``--retrieve`` / ``--retrieve-img``: move ``parts`` back, remove the links."""
    d = meta.directory.root
    with _locked(d):
        q = qa_area / meta.label
        result = ConveyorResult("retrieve", d, q)
        for part in parts:
            result.parts[part] = _part_from_qa(d, q, part, progress)
        _close_qa_dir(q, result)
    return result


def qa_fail(meta: Metadata, qa_area: Path,
            progress: Progress | None = None) -> ConveyorResult:
    """``--qa-fail``: bring everything back and mark the run for the annihilator."""
    d = meta.directory.root
    with _locked(d):
        q = qa_area / meta.label
        result = ConveyorResult("qa-fail", d, q)
        for part in PARTS:
            result.parts[part] = _part_from_qa(d, q, part, progress)
        marker = meta.directory.qa_failed_marker
        if not _exists(marker):  # a second --qa-fail keeps the first date
            atomic_write(marker, json.dumps({
                "request": meta.request, "version": meta.version,
                "execution": meta.execution,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }, sort_keys=True) + "\n")
        result.qa_failed_marker = marker
        _close_qa_dir(q, result)
    return result
