"""``annihilator``: remove what is old from the areas docket fills.

Each configured area (processing directories, spool archives, delivery areas) is a
root folder whose entries (the folders and files directly in it) are judged one by
one. An entry goes when the newest modification time anywhere in it is older than
the area's ``max_age_days``, or when it is a run that failed QA (``conveyor
--qa-fail`` leaves ``.docket-qa-failed``), unless it holds ``.docket-active``
anywhere: the watcher keeps that marker while the execution runs, so no database is
needed to know.

Safety rules, each with a test: nothing outside a configured root is ever removed;
symlinks are never followed (a link is removed, its target is not, and a target's
age does not count); an entry is first renamed to ``.docket-annihilating.<name>``,
checked again for the active marker, then removed, so a crash leaves a clearly
named leftover that the next run finishes.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.errors import Invalid, UsageError
from docket.procdir import ACTIVE_MARKER, QA_FAILED_MARKER

__all__ = [
    "Area",
    "Removal",
    "AreaReport",
    "Report",
    "DOOMED_PREFIX",
    "areas_from_config",
    "scan",
    "annihilate",
]

log = logging.getLogger("docket.tools.annihilator")

DOOMED_PREFIX = ".docket-annihilating."
_DAY_S = 86400.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Area:
    name: str
    root: Path
    max_age_days: float
    qa_failed_max_age_days: float = 0.0


@dataclass
class Removal:
    path: Path
    size_bytes: int
    newest_mtime: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size_bytes": self.size_bytes,
                "newest_mtime": datetime.fromtimestamp(self.newest_mtime, UTC)
                .isoformat(timespec="seconds"),
                "reason": self.reason}


@dataclass
class AreaReport:
    area: Area
    removed: list[Removal] = field(default_factory=list)
    kept_active: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(r.size_bytes for r in self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.area.name, "root": str(self.area.root),
                "max_age_days": self.area.max_age_days,
                "removed": [r.as_dict() for r in self.removed],
                "kept_active": [str(p) for p in self.kept_active],
                "errors": self.errors, "freed_bytes": self.freed_bytes}


@dataclass
class Report:
    dry_run: bool
    areas: list[AreaReport] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(a.freed_bytes for a in self.areas)

    @property
    def errors(self) -> list[str]:
        return [e for a in self.areas for e in a.errors]

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "freed_bytes": self.freed_bytes,
                "areas": [a.as_dict() for a in self.areas]}


def _number(value: Any, where: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{where} {value!r} is not a number of days", "give e.g. 30 or 0.5")
    try:
        days = float(value)
    except ValueError:
        raise Invalid(f"{where} {value!r} is not a number of days",
                      "give e.g. 30 or 0.5") from None
    if days != days or days < 0 or (positive and days == 0):
        raise Invalid(f"{where} must be {'above' if positive else 'at least'} 0",
                      "give e.g. 30 or 0.5")
    return days


def areas_from_config(config: dict[str, Any]) -> list[Area]:
    """The ``annihilator.areas`` list, checked: absolute roots, unique names, ages."""
    raw = config.get("areas")
    if not raw:
        raise Invalid("annihilator.areas is not set",
                      "list the areas in tools.yaml: areas: [{name, root, max_age_days}]")
    if not isinstance(raw, list):
        raise Invalid("annihilator.areas must be a list of {name, root, max_age_days}",
                      "fix tools.yaml")
    areas: list[Area] = []
    for index, item in enumerate(raw):
        where = f"annihilator.areas[{index}]"
        if not isinstance(item, dict):
            raise Invalid(f"{where} must be a mapping", "give name, root and max_age_days")
        for key in ("name", "root", "max_age_days"):
            if item.get(key) in (None, ""):
                raise Invalid(f"{where} has no {key!r}", "give name, root and max_age_days")
        name = str(item["name"])
        if any(a.name == name for a in areas):
            raise Invalid(f"{where}: area name {name!r} is used twice", "give unique names")
        root = Path(str(item["root"]))
        if not root.is_absolute() or ".." in root.parts or root == Path("/"):
            raise Invalid(f"{where}: root {str(root)!r} must be an absolute path below /, "
                          "without '..'", "give the full path of the area")
        areas.append(Area(
            name=name, root=root,
            max_age_days=_number(item["max_age_days"], f"{where}.max_age_days",
                                 positive=True),
            qa_failed_max_age_days=_number(item.get("qa_failed_max_age_days", 0),
                                           f"{where}.qa_failed_max_age_days",
                                           positive=False)))
    return areas


@dataclass
class _Tree:
    size_bytes: int = 0
    newest_mtime: float = 0.0
    active: bool = False


def _survey(path: Path) -> _Tree:
    """Size, newest mtime and active marker of a tree, without following any link."""
    tree = _Tree()
    st = path.lstat()
    tree.newest_mtime = st.st_mtime
    if not stat.S_ISDIR(st.st_mode):
        tree.size_bytes = st.st_size
        return tree
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                est = entry.stat(follow_symlinks=False)
                tree.newest_mtime = max(tree.newest_mtime, est.st_mtime)
                if entry.name == ACTIVE_MARKER:
                    tree.active = True
                if stat.S_ISDIR(est.st_mode):
                    stack.append(Path(entry.path))
                else:
                    tree.size_bytes += est.st_size
    return tree


def _has_active_marker(path: Path) -> bool:
    return any(ACTIVE_MARKER in files or ACTIVE_MARKER in dirs
               for _dir, dirs, files in os.walk(path, followlinks=False))


def _remove(path: Path, area_root: Path, errors: list[str]) -> str:
    """Remove ``path``, an entry directly in ``area_root``; never anything behind a link.

    Returns "removed", "active" (a run started meanwhile) or "failed".
    """
    if path.parent != area_root:  # the one gate every removal goes through
        raise AssertionError(f"refusing to remove {path}: not directly in {area_root}")
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return "removed"
    doomed = path
    if not path.name.startswith(DOOMED_PREFIX):
        doomed = area_root / f"{DOOMED_PREFIX}{path.name}"
        if doomed.exists() or doomed.is_symlink():
            errors.append(f"{path}: cannot rename it to {doomed.name}, which exists")
            return "failed"
        os.rename(path, doomed)
    # A run may have started between the survey and the rename.
    if _has_active_marker(doomed):
        if doomed != path:
            os.rename(doomed, path)
        return "active"
    failures: list[str] = []

    def note(_func: Any, failed: str, exc_info: Any) -> None:
        failures.append(f"{failed}: {exc_info[1]}")

    # rmtree unlinks symlinks and, on Linux, walks by file descriptor, so a link
    # swapped in during the walk cannot lead it outside the tree.
    shutil.rmtree(doomed, onerror=note)
    if failures:
        # One problem per entry: the first failure says why, the count how much is left.
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        errors.append(f"{doomed}: could not remove {failures[0]}{more}")
        return "failed"
    return "removed"


def scan(area: Area, *, now_s: float, dry_run: bool,
         progress: Progress | None = None) -> AreaReport:
    """Judge every entry directly in ``area.root`` and remove the old ones."""
    report = AreaReport(area)
    if not area.root.is_dir():
        report.errors.append(f"area {area.name}: root {area.root} is not a directory")
        return report
    # Resolved once, so a root given through a link (/data -> /lustre/data) works;
    # nothing below it is ever resolved or followed.
    root = area.root.resolve()
    limit_s = now_s - area.max_age_days * _DAY_S
    qa_limit_s = now_s - area.qa_failed_max_age_days * _DAY_S
    for name in sorted(os.listdir(root)):
        path = root / name
        try:
            tree = _survey(path)
        except FileNotFoundError:
            continue  # gone while we looked
        except OSError as exc:
            report.errors.append(f"{path}: cannot look inside: {exc}")
            continue
        reason = None
        marker = path / QA_FAILED_MARKER
        if name.startswith(DOOMED_PREFIX):
            reason = "unfinished removal"
        elif (not path.is_symlink() and marker.is_file() and not marker.is_symlink()
              and marker.lstat().st_mtime <= qa_limit_s):
            reason = "failed QA"
        elif tree.newest_mtime < limit_s:
            days = area.max_age_days
            reason = f"older than {days:g} day{'' if days == 1 else 's'}"
        if reason is None:
            continue
        if tree.active:
            report.kept_active.append(path)
            continue
        removal = Removal(path, tree.size_bytes, tree.newest_mtime, reason)
        if dry_run:
            report.removed.append(removal)
            continue
        try:
            outcome = _remove(path, root, report.errors)
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror or exc}")
            continue
        if outcome == "removed":
            report.removed.append(removal)
            log.info("removed %s (%d bytes, %s)", path, tree.size_bytes, reason)
            if progress:
                progress(f"removed {path}")
        elif outcome == "active":
            report.kept_active.append(path)
    return report


def annihilate(areas: list[Area], *, only: list[str] | None = None, dry_run: bool = False,
               now_s: float | None = None, progress: Progress | None = None) -> Report:
    """Judge and (unless ``dry_run``) remove old entries in each area."""
    chosen = areas
    if only:
        known = {a.name for a in areas}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise UsageError(f"no area named {', '.join(unknown)}",
                             f"configured areas: {', '.join(sorted(known))}")
        chosen = [a for a in areas if a.name in only]
    now = time.time() if now_s is None else now_s
    report = Report(dry_run)
    for area in chosen:
        report.areas.append(scan(area, now_s=now, dry_run=dry_run, progress=progress))
    return report
