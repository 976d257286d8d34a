"""ingest: put a directory of products into the archive, as a manifest says.

The manifest (YAML or JSON; ``manifest.yaml``/``.yml``/``.json`` in the source
directory unless given) lists products::

    docket_manifest: 1
    products:
      - name: req1                 # directory-safe name; versions are per (type, name)
        type: calibration          # product type, e.g. calibration, image, observation
        files:                     # paths relative to the source directory
          - req1.caltables.tgz
          - path: weblog.tgz
            sha256: 3f1c...        # optional: checked before anything is stored
          - images/                # a directory stands for every file below it
        metadata: {request: req1}  # optional, copied into the catalog entry

Every product is hashed, then copied into ``<archive>/.incoming/`` (hashing the copy
again so that what is stored is what was read), and only then, under the archive's
flock, renamed to ``<type>/<name>/v<N>`` and added to ``catalog.json`` in one atomic
replace. A manifest is all-or-nothing: a bad file anywhere stores nothing. A product
whose content equals its latest version is reported ``unchanged`` and stores nothing;
different content under the same (type, name) becomes version N+1.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.errors import ChecksumMismatch, Invalid, NotFound
from docket.fileio import fsync_dir, inside, safe_join
from docket.tools.archive import (
    Catalog,
    FileRecord,
    ProductRecord,
    catalog_lock,
    check_component,
    content_digest,
)

__all__ = [
    "MANIFEST_NAMES",
    "MANIFEST_SHAPE",
    "ManifestFile",
    "ManifestProduct",
    "Manifest",
    "ProductOutcome",
    "IngestResult",
    "find_manifest",
    "load_manifest",
    "write_manifest",
    "IngestSettings",
    "load_settings",
    "ingest",
]

log = logging.getLogger("docket.tools.ingest")

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json")
MANIFEST_SHAPE = 1
INCOMING = ".incoming"
_CHUNK = 1 << 20

# (path being copied, bytes done so far in this ingest, bytes in total)
Progress = Callable[[str, int, int], None]


# -- settings -------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestSettings:
    """Where the archive is: ``ingest.archive_root`` (required), ``ingest.archive`` (the
    archive's name in locators, default ``docket``), ``ingest.lock_timeout_s``."""

    archive_root: Path
    archive_name: str | None = None
    lock_timeout_s: float = 60.0


def load_settings(config: Path | None = None, *,
                  archive_root: Path | None = None) -> IngestSettings:
    """Flag, then ``DOCKET_INGEST_*``, then the ``ingest`` section of the tools config."""
    from docket.errors import UsageError
    from docket.tools.config import load_tool_config

    raw = load_tool_config("ingest", config, {"archive_root": archive_root})
    root = raw.get("archive_root")
    if not root:
        raise UsageError("no archive root is configured",
                         "pass --archive-root DIR, or set ingest.archive_root in tools.yaml "
                         "(or DOCKET_INGEST_ARCHIVE_ROOT)")
    try:
        timeout = float(raw.get("lock_timeout_s", 60.0))
    except (TypeError, ValueError) as exc:
        raise Invalid(f"ingest.lock_timeout_s {raw.get('lock_timeout_s')!r} is not a number",
                      "give seconds, e.g. 60") from exc
    name = raw.get("archive")
    return IngestSettings(Path(root).expanduser(),
                          check_component(str(name), "ingest.archive") if name else None,
                          timeout)


# -- the manifest ---------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestFile:
    path: str
    sha256: str | None = None
    size_bytes: int | None = None


@dataclass
class ManifestProduct:
    name: str
    type: str
    files: list[ManifestFile]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        files: list[Any] = []
        for f in self.files:
            if f.sha256 is None and f.size_bytes is None:
                files.append(f.path)
            else:
                entry: dict[str, Any] = {"path": f.path}
                if f.size_bytes is not None:
                    entry["size_bytes"] = f.size_bytes
                if f.sha256 is not None:
                    entry["sha256"] = f.sha256
                files.append(entry)
        out: dict[str, Any] = {"name": self.name, "type": self.type, "files": files}
        if self.metadata:
            out["metadata"] = self.metadata
        return out


@dataclass
class Manifest:
    products: list[ManifestProduct]

    def to_json(self) -> dict[str, Any]:
        return {"docket_manifest": MANIFEST_SHAPE,
                "products": [p.to_json() for p in self.products]}


def find_manifest(source_dir: Path, explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not explicit.is_file():
            raise NotFound(f"manifest {explicit} does not exist", "check the --manifest path")
        return explicit
    for name in MANIFEST_NAMES:
        if (source_dir / name).is_file():
            return source_dir / name
    raise NotFound(f"no manifest in {source_dir} (looked for {', '.join(MANIFEST_NAMES)})",
                   "write one (see docs/tools/ingest.md) or pass --manifest FILE")


def _parse_file(entry: Any, where: str) -> ManifestFile:
    if isinstance(entry, str):
        return ManifestFile(entry)
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        unknown = set(entry) - {"path", "sha256", "size_bytes"}
        if unknown:
            raise Invalid(f"{where}: unknown file key(s) {sorted(unknown)}",
                          "a file entry has only path, sha256 and size_bytes")
        sha = entry.get("sha256")
        size = entry.get("size_bytes")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise Invalid(f"{where}: sha256 of {entry['path']!r} is not 64 hex digits",
                          "give the full lower-case sha256, or leave it out")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise Invalid(f"{where}: size_bytes of {entry['path']!r} is not a whole number",
                          "give the size in bytes, or leave it out")
        return ManifestFile(entry["path"], sha.lower() if sha else None, size)
    raise Invalid(f"{where}: a file entry must be a path or a mapping with 'path'",
                  "write - some/file or - {path: some/file, sha256: ...}")


def load_manifest(path: Path) -> Manifest:
    """Read and check a manifest; every error names the product or field at fault."""
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError) as exc:
        raise NotFound(f"cannot read manifest {path}: {exc}", "check the path") from exc
    except yaml.YAMLError as exc:
        raise Invalid(f"manifest {path} is not valid YAML/JSON: {exc}",
                      "fix the syntax") from exc
    if not isinstance(data, dict) or not isinstance(data.get("products"), list):
        raise Invalid(f"manifest {path} has no 'products' list",
                      "write products: [{name: ..., type: ..., files: [...]}]")
    shape = data.get("docket_manifest", MANIFEST_SHAPE)
    if shape != MANIFEST_SHAPE:
        raise Invalid(f"manifest {path} has docket_manifest: {shape!r}",
                      f"this ingest reads docket_manifest: {MANIFEST_SHAPE}")
    products: list[ManifestProduct] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(data["products"]):
        where = f"manifest {path}: products[{index}]"
        if not isinstance(raw, dict):
            raise Invalid(f"{where} is not a mapping", "write {name: ..., type: ..., files: [...]}")
        unknown = set(raw) - {"name", "type", "files", "metadata"}
        if unknown:
            raise Invalid(f"{where}: unknown key(s) {sorted(unknown)}",
                          "a product has only name, type, files and metadata")
        name = check_component(raw.get("name"), f"{where}: name")
        type_ = check_component(raw.get("type"), f"{where}: type")
        files_raw = raw.get("files")
        if not isinstance(files_raw, list) or not files_raw:
            raise Invalid(f"{where} ({name}) lists no files", "give at least one file")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise Invalid(f"{where}: metadata must be a mapping", "write metadata: {key: value}")
        if (type_, name) in seen:
            raise Invalid(f"{where}: product {type_}/{name} appears twice",
                          "list each product once, with all of its files")
        seen.add((type_, name))
        products.append(ManifestProduct(
            name, type_, [_parse_file(f, f"{where} ({name})") for f in files_raw], metadata))
    if not products:
        raise Invalid(f"manifest {path} lists no products", "add at least one product")
    return Manifest(products)


def write_manifest(path: Path, manifest: Manifest) -> None:
    import json

    from docket.fileio import atomic_write

    atomic_write(path, json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")


# -- results --------------------------------------------------------------------------
@dataclass
class ProductOutcome:
    name: str
    type: str
    version: int
    locator: str
    status: str  # "ingested" or "unchanged"
    files: int
    size_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class IngestResult:
    archive: str
    archive_root: str
    catalog: str
    manifest: str
    products: list[ProductOutcome]

    def to_json(self) -> dict[str, Any]:
        return {"archive": self.archive, "archive_root": self.archive_root,
                "catalog": self.catalog, "manifest": self.manifest,
                "products": [p.to_json() for p in self.products]}


# -- ingesting ------------------------------------------------------------------------
@dataclass
class _Source:
    relative: str
    path: Path
    size_bytes: int
    sha256: str


def _expand(source_dir: Path, product: ManifestProduct) -> list[tuple[str, Path, ManifestFile]]:
    """Every regular file a product names, as (path in the archive, path on disk, entry)."""
    out: list[tuple[str, Path, ManifestFile]] = []
    for entry in product.files:
        path = safe_join(source_dir, entry.path.rstrip("/") or entry.path)
        if path.is_dir():
            if entry.sha256 is not None or entry.size_bytes is not None:
                raise Invalid(f"product {product.name}: {entry.path!r} is a directory but has "
                              "a sha256/size_bytes", "give checksums for files only")
            found = False
            for dirpath, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    file_path = Path(dirpath) / name
                    if not inside(file_path, source_dir):
                        raise Invalid(f"product {product.name}: {file_path} is a symlink "
                                      f"out of {source_dir}", "copy the file in instead")
                    if not file_path.is_file():
                        continue
                    out.append((file_path.relative_to(source_dir).as_posix(), file_path,
                                ManifestFile(file_path.relative_to(source_dir).as_posix())))
                    found = True
            if not found:
                raise Invalid(f"product {product.name}: directory {entry.path!r} has no files",
                              "remove it from the manifest or put the products in it")
        elif path.is_file():
            out.append((Path(entry.path).as_posix(), path, entry))
        else:
            raise NotFound(f"product {product.name}: {entry.path!r} is not in {source_dir}",
                           "fix the manifest or put the file there")
    seen: set[str] = set()
    for relative, _path, _entry in out:
        if relative in seen:
            raise Invalid(f"product {product.name} lists {relative!r} twice",
                          "list each file (or its directory) once")
        seen.add(relative)
    return out


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _copy_hashing(src: Path, dst: Path, on_bytes: Callable[[int], None]) -> str:
    """Copy ``src`` to ``dst`` (fsynced, read-only) and return the sha256 of what was read."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(src, "rb") as inp, open(dst, "xb") as out:
        while chunk := inp.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            on_bytes(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(src, dst)
    os.chmod(dst, 0o444)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        fsync_dir(Path(dirpath))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ingest(source_dir: Path, archive_root: Path, *, manifest_path: Path | None = None,
           archive_name: str | None = None, lock_timeout_s: float = 60.0,
           progress: Progress | None = None) -> IngestResult:
    """Ingest the products a manifest lists from ``source_dir`` into ``archive_root``."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise NotFound(f"source directory {source_dir} does not exist",
                       "give the directory that holds the products")
    source_dir = source_dir.resolve()
    archive_root = Path(archive_root).absolute()
    manifest_file = find_manifest(source_dir, manifest_path)
    manifest = load_manifest(manifest_file)

    existing = Catalog.read(archive_root, archive_name or "docket")
    if archive_name and existing.archive != archive_name:
        raise Invalid(f"archive {archive_root} is named {existing.archive!r}, "
                      f"not {archive_name!r}",
                      "fix ingest.archive in the tools config, or use another archive_root")
    archive = existing.archive

    # 1. Hash every source file; check sizes and checksums the manifest gives.
    planned: list[tuple[ManifestProduct, list[_Source]]] = []
    for product in manifest.products:
        sources: list[_Source] = []
        for relative, path, entry in _expand(source_dir, product):
            size, sha = _hash(path)
            if entry.size_bytes is not None and entry.size_bytes != size:
                raise ChecksumMismatch(
                    f"product {product.name}: {relative} is {size} bytes, the manifest "
                    f"says {entry.size_bytes}", "re-stage the product or fix the manifest")
            if entry.sha256 is not None and entry.sha256 != sha:
                raise ChecksumMismatch(
                    f"product {product.name}: {relative} has sha256 {sha}, the manifest "
                    f"says {entry.sha256}", "re-stage the product or fix the manifest")
            sources.append(_Source(relative, path, size, sha))
        planned.append((product, sources))

    # 2. Copy what is new into .incoming (outside the lock: copies can be long).
    incoming = archive_root / INCOMING
    staged: dict[int, Path] = {}
    total = sum(s.size_bytes for product, sources in planned for s in sources
                if not _unchanged(existing, product, sources))
    done = 0

    def on_bytes(n: int, relative: str) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(relative, done, total)

    outcomes: list[ProductOutcome] = []
    try:
        for index, (product, sources) in enumerate(planned):
            if _unchanged(existing, product, sources):
                continue
            stage = incoming / f"{product.type}-{product.name}-{uuid.uuid4().hex}"
            stage.mkdir(parents=True)
            staged[index] = stage
            for source in sources:
                sha = _copy_hashing(source.path, stage / source.relative,
                                    lambda n, r=source.relative: on_bytes(n, r))
                if sha != source.sha256:
                    raise Invalid(f"product {product.name}: {source.relative} changed while "
                                  "it was being ingested", "wait until it is complete, retry")
            _fsync_tree(stage)

        # 3. Under the lock: decide versions against the current catalog, rename, record.
        with catalog_lock(archive_root, lock_timeout_s):
            catalog = Catalog.read(archive_root, archive)
            now = _now()
            decisions: list[tuple[int, ProductRecord | None, ProductOutcome]] = []
            for index, (product, sources) in enumerate(planned):
                records = [FileRecord(s.relative, s.size_bytes, s.sha256) for s in sources]
                latest = catalog.latest(product.type, product.name)
                size = sum(s.size_bytes for s in sources)
                if latest is not None and latest.content_sha256 == content_digest(records):
                    log.info("%s unchanged (same content as %s)", product.name, latest.locator)
                    decisions.append((index, None, ProductOutcome(
                        product.name, product.type, latest.version, latest.locator,
                        "unchanged", len(records), size)))
                    continue
                if index not in staged:  # another ingest changed the catalog since step 2
                    raise Invalid(f"product {product.type}/{product.name} changed in the "
                                  "archive while this ingest was running", "run ingest again")
                record = ProductRecord(archive, product.type, product.name,
                                       (latest.version + 1) if latest else 1, now, records,
                                       dict(product.metadata))
                decisions.append((index, record, ProductOutcome(
                    product.name, product.type, record.version, record.locator, "ingested",
                    len(records), size)))
            changed = False
            for index, record, outcome in decisions:
                outcomes.append(outcome)
                if record is None:
                    continue
                target = archive_root / record.path
                if target.exists():
                    # Left by an ingest that died between its rename and its catalog write:
                    # not in the catalog, so nobody can fetch it. Keep it aside, never reuse it.
                    aside = incoming / (f"orphan-{record.type}-{record.name}-v{record.version}"
                                        f"-{int(time.time())}")
                    log.warning("moving uncatalogued %s aside to %s", target, aside)
                    os.replace(target, aside)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged.pop(index), target)
                fsync_dir(target.parent)
                catalog.products[record.locator] = record
                changed = True
            if changed:
                catalog.write(archive_root, now)
    finally:
        for stage in staged.values():
            with contextlib.suppress(OSError):
                _remove_tree(stage)

    return IngestResult(archive, str(archive_root), str(archive_root / "catalog.json"),
                        str(manifest_file), outcomes)


def _unchanged(catalog: Catalog, product: ManifestProduct, sources: list[_Source]) -> bool:
    latest = catalog.latest(product.type, product.name)
    if latest is None:
        return False
    records = [FileRecord(s.relative, s.size_bytes, s.sha256) for s in sources]
    return latest.content_sha256 == content_digest(records)


def _remove_tree(path: Path) -> None:
    # Files in the archive are read-only; unlinking needs only the directory's permission.
    shutil.rmtree(path)
