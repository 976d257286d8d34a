"""Expected outputs: what a stage (or a request) promises to leave in the processing directory.

A job that exits 0 without writing what it promised has failed; ``verify`` says which
names are missing or too small, and lists every product found with its size and sha256
(a directory product, such as a CASA image or measurement set, gets a digest of its whole
tree), so ``docket show`` can print products with their checksums.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from docket.errors import Invalid
from docket.fileio import inside, safe_join, sha256_file, tree_size

__all__ = ["verify", "tree_sha256", "missing_reason"]

log = logging.getLogger("docket.outputs")


def _spec(item: Any) -> tuple[str, int]:
    if isinstance(item, Mapping):
        return str(item["path"]), int(item.get("min_size_bytes") or 0)
    return str(item.path), int(getattr(item, "min_size_bytes", 0) or 0)


def tree_sha256(path: Path) -> str:
    """A digest of a directory: every file's relative path, size and sha256, in order.

    Symlinks count by their target text, not what they point to, so the digest never
    depends on files outside the tree.
    """
    digest = hashlib.sha256()
    entries = []
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            entries.append((full.relative_to(path).as_posix(), full))
    for rel, full in sorted(entries):
        if full.is_symlink():
            digest.update(f"L\0{rel}\0{os.readlink(full)}\n".encode())
        else:
            digest.update(f"F\0{rel}\0{full.stat().st_size}\0{sha256_file(full)}\n".encode())
    return digest.hexdigest()


def verify(directory: Path, specs: Iterable[Any]) -> tuple[bool, list[str],
                                                            list[dict[str, Any]]]:
    """Check ``specs`` (``{path, min_size_bytes}``, paths or globs relative to
    ``directory``) against what is there.

    Returns ``(ok, problems, products)``: ``problems`` names each missing or too-small
    output (``"a.fits: missing"``, ``"b.fits: 12 bytes, expected at least 1024"``);
    ``products`` is every output found, ``{path, size_bytes, sha256}`` (path relative to
    ``directory``), sorted by path and without duplicates.
    """
    problems: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    root = directory.resolve()
    for item in specs:
        pattern, min_size = _spec(item)
        try:
            safe_join(directory, pattern.replace("*", "x").replace("?", "x")
                      .replace("[", "x").replace("]", "x"))
        except Invalid as exc:
            problems.append(f"{pattern}: {exc.what}")
            continue
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, root_dir=directory, recursive=True))
            if not matches:
                problems.append(f"{pattern}: missing (nothing matches)")
                continue
        else:
            matches = [pattern]
        for rel in matches:
            path = directory / rel
            if not os.path.lexists(path):
                problems.append(f"{rel}: missing")
                continue
            if not inside(path, root):
                problems.append(f"{rel}: leads outside the processing directory")
                continue
            is_dir = path.is_dir()
            size = tree_size(path) if is_dir else path.stat().st_size
            if size < min_size:
                problems.append(f"{rel}: {size} bytes, expected at least {min_size}")
                continue
            key = Path(rel).as_posix()
            if key not in found:
                found[key] = {"path": key, "size_bytes": size,
                              "sha256": tree_sha256(path) if is_dir else sha256_file(path),
                              "type": "directory" if is_dir else "file"}
    products = [found[k] for k in sorted(found)]
    return not problems, problems, products


def missing_reason(problems: list[str], limit: int = 5) -> str:
    """The reason a node or execution fails when outputs are missing, naming them."""
    shown = "; ".join(problems[:limit])
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return f"declared outputs missing or too small: {shown}{more}"
