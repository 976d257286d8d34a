"""Turn a run's products/ into a flat staging folder that ingest can store.

Rules (the same for every kind unless stated):

- regular files are staged as they are (hard-linked when possible, else copied);
- weblogs (``*weblog*.tgz`` / ``*weblog*.tar.gz``): only the latest is kept, by
  modification time, then by name; the others are reported as skipped;
- calibration: every calibration table (a directory named ``*.tbl``, ``*.tb`` or
  ``*.cal``, or any directory holding a CASA ``table.dat``) goes into one
  ``<request>.caltables.tgz``;
- any other directory becomes ``<dir>.tgz``;
- hidden entries (``.name``) are ignored; a symlink leading out of products/ is refused.

Tar files are reproducible (sorted entries, owner 0, source mtimes, gzip time 0), so
staging the same products twice gives the same bytes and ingest reports "unchanged".
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from docket.errors import Invalid
from docket.fileio import fsync_dir, inside

__all__ = ["KINDS", "WEBLOG_PATTERNS", "CALTABLE_SUFFIXES", "Staged", "is_caltable",
           "latest_weblog", "reproducible_tar", "stage_products"]

KINDS = ("calibration", "image", "observation")
WEBLOG_PATTERNS = ("*weblog*.tgz", "*weblog*.tar.gz")
CALTABLE_SUFFIXES = (".tbl", ".tb", ".cal")


@dataclass
class Staged:
    files: list[str] = field(default_factory=list)  # names in the staging folder
    skipped: list[str] = field(default_factory=list)  # names in products/ left out, and why
    tarred: dict[str, list[str]] = field(default_factory=dict)  # tar name -> directories


def is_caltable(path: Path) -> bool:
    return path.is_dir() and (path.name.endswith(CALTABLE_SUFFIXES)
                              or (path / "table.dat").is_file())


def is_weblog(path: Path) -> bool:
    return path.is_file() and any(fnmatch.fnmatch(path.name, p) for p in WEBLOG_PATTERNS)


def latest_weblog(paths: list[Path]) -> Path | None:
    weblogs = [p for p in paths if is_weblog(p)]
    return max(weblogs, key=lambda p: (p.stat().st_mtime, p.name)) if weblogs else None


def reproducible_tar(target: Path, directories: list[Path]) -> None:
    """Write a gzipped tar of ``directories`` (each under its own name) to ``target``."""
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for directory in sorted(directories, key=lambda p: p.name):
                for path in _walk_sorted(directory):
                    arcname = path.relative_to(directory.parent).as_posix()
                    info = tar.gettarinfo(str(path), arcname)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mtime = int(path.lstat().st_mtime)
                    if info.isreg():
                        with open(path, "rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)


def _walk_sorted(root: Path) -> list[Path]:
    out = [root]
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        base = Path(dirpath)
        out.extend(base / d for d in dirs)
        out.extend(base / f for f in sorted(files))
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_products(products: Path, staging: Path, kind: str, request: str) -> Staged:
    """Fill the (new, empty) ``staging`` folder from ``products``; see the module rules."""
    if kind not in KINDS:
        raise Invalid(f"unknown product kind {kind!r}", f"use one of {', '.join(KINDS)}")
    products = products.resolve()
    entries = sorted((p for p in products.iterdir() if not p.name.startswith(".")),
                     key=lambda p: p.name)
    for entry in entries:
        if entry.is_symlink() and not inside(entry, products):
            raise Invalid(f"{entry} is a symlink out of {products}",
                          "replace it with the product itself")
    staged = Staged()
    weblog = latest_weblog(entries)
    caltables = [e for e in entries if kind == "calibration" and is_caltable(e)]
    plan: dict[str, tuple[str, Path | list[Path]]] = {}

    def claim(name: str, how: str, what: Path | list[Path]) -> None:
        if name in plan:
            raise Invalid(f"two products would be staged as {name!r} in {products}",
                          "rename one of them")
        plan[name] = (how, what)

    if caltables:
        claim(f"{request}.caltables.tgz", "tar", caltables)
    for entry in entries:
        if entry in caltables:
            continue
        if is_weblog(entry) and entry != weblog:
            staged.skipped.append(f"{entry.name} (older weblog than {weblog.name})")  # type: ignore[union-attr]
        elif entry.is_dir():
            claim(f"{entry.name}.tgz", "tar", [entry])
        elif entry.is_file():
            claim(entry.name, "file", entry)
        else:
            staged.skipped.append(f"{entry.name} (not a file or directory)")
    if not plan:
        raise Invalid(f"{products} holds nothing to ingest",
                      "check that the run wrote its products")

    staging.mkdir(parents=True)
    try:
        for name, (how, what) in sorted(plan.items()):
            if how == "tar":
                dirs = what if isinstance(what, list) else [what]
                reproducible_tar(staging / name, dirs)
                staged.tarred[name] = [d.name for d in dirs]
            else:
                _link_or_copy(what, staging / name)  # type: ignore[arg-type]
            staged.files.append(name)
        fsync_dir(staging)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return staged
