"""The archive catalog that ``ingest`` writes and ``productfetcher`` reads.

An archive is a directory tree with one catalog file at its root::

    <archive_root>/catalog.json                 the catalog (replaced atomically)
    <archive_root>/.catalog.lock                flock'd by every writer
    <archive_root>/<type>/<name>/v<N>/<files>   one directory per product version

The catalog is JSON so that it can be read from a path or served over HTTP together
with the files (serve ``<archive_root>`` and point ``productfetcher.catalog`` at
``http://host/catalog.json``)::

    {"docket_catalog": 1, "archive": "docket", "updated": "...",
     "products": {"uid://docket/calibration/req1/v1": {
         "locator": ..., "archive": ..., "type": "calibration", "name": "req1",
         "version": 1, "path": "calibration/req1/v1", "ingested": "ISO-8601",
         "size_bytes": ..., "content_sha256": ..., "metadata": {...},
         "files": [{"path": "a.tgz", "size_bytes": 10, "sha256": "..."}]}}}

A product locator is ``uid://<archive>/<type>/<name>/v<N>``; without ``/v<N>`` it
means the latest version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import atomic_write
from docket.locks import held

__all__ = [
    "CATALOG_NAME",
    "LOCK_NAME",
    "CATALOG_SHAPE",
    "FileRecord",
    "ProductRecord",
    "Catalog",
    "Locator",
    "parse_locator",
    "check_component",
    "content_digest",
    "catalog_lock",
]

CATALOG_NAME = "catalog.json"
LOCK_NAME = ".catalog.lock"
CATALOG_SHAPE = 1

# One path component of the archive tree: no separators, no leading dot (hidden files
# and '..'), nothing a shell or a URL would need to quote.
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_LOCATOR = re.compile(r"^uid://(?P<archive>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)"
                      r"(?:/v(?P<version>[0-9]+))?/?$")


def check_component(value: str, what: str) -> str:
    """Return ``value`` if it can be one directory name of the archive, else raise."""
    if not isinstance(value, str) or not _COMPONENT.match(value):
        raise Invalid(f"{what} {value!r} is not allowed",
                      "use letters, digits and . _ + - (up to 200, not starting with . _ + -)")
    return value


@dataclass(frozen=True)
class Locator:
    """A parsed ``uid://`` locator; ``version`` is None for "the latest"."""

    archive: str
    type: str
    name: str
    version: int | None = None

    def __str__(self) -> str:
        base = f"uid://{self.archive}/{self.type}/{self.name}"
        return base if self.version is None else f"{base}/v{self.version}"


def parse_locator(text: str) -> Locator:
    match = _LOCATOR.match(text.strip())
    if not match:
        raise Invalid(f"locator {text!r} is not a product locator",
                      "write uid://<archive>/<type>/<name>[/v<N>]")
    archive, type_, name = match["archive"], match["type"], match["name"]
    for value, what in ((archive, "archive"), (type_, "product type"), (name, "product name")):
        check_component(value, what)
    version = int(match["version"]) if match["version"] is not None else None
    if version is not None and version < 1:
        raise Invalid(f"locator {text!r} has version 0", "versions start at v1")
    return Locator(archive, type_, name, version)


@dataclass(frozen=True)
class FileRecord:
    path: str
    size_bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "sha256": self.sha256}


def content_digest(files: Iterable[FileRecord]) -> str:
    """One sha256 over the (path, size, sha256) of every file: equal content, equal digest."""
    digest = hashlib.sha256()
    for record in sorted(files, key=lambda f: f.path):
        digest.update(f"{record.path}\0{record.size_bytes}\0{record.sha256}\n".encode())
    return digest.hexdigest()


@dataclass
class ProductRecord:
    archive: str
    type: str
    name: str
    version: int
    ingested: str
    files: list[FileRecord]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def locator(self) -> str:
        return str(Locator(self.archive, self.type, self.name, self.version))

    @property
    def path(self) -> str:
        """Directory of this version, relative to the archive root (and catalog URL)."""
        return f"{self.type}/{self.name}/v{self.version}"

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def content_sha256(self) -> str:
        return content_digest(self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "locator": self.locator, "archive": self.archive, "type": self.type,
            "name": self.name, "version": self.version, "path": self.path,
            "ingested": self.ingested, "size_bytes": self.size_bytes,
            "content_sha256": self.content_sha256, "metadata": self.metadata,
            "files": [f.to_json() for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ProductRecord:
        try:
            record = cls(
                archive=check_component(data["archive"], "archive"),
                type=check_component(data["type"], "product type"),
                name=check_component(data["name"], "product name"),
                version=int(data["version"]),
                ingested=str(data["ingested"]),
                files=[FileRecord(str(f["path"]), int(f["size_bytes"]), str(f["sha256"]))
                       for f in data["files"]],
                metadata=dict(data.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"catalog {where} has a malformed product entry ({exc!r})",
                          "restore the catalog from its last good copy") from exc
        for f in record.files:
            parts = Path(f.path).parts
            if f.path.startswith("/") or ".." in parts or not parts:
                raise Invalid(f"catalog {where}: product {record.locator} lists file "
                              f"{f.path!r} outside its directory",
                              "restore the catalog from its last good copy")
        return record


@dataclass
class Catalog:
    """Every product version in one archive, keyed by locator."""

    archive: str
    products: dict[str, ProductRecord] = field(default_factory=dict)
    updated: str | None = None

    # -- lookups ---------------------------------------------------------------------
    def versions(self, type_: str, name: str) -> list[ProductRecord]:
        found = [p for p in self.products.values() if p.type == type_ and p.name == name]
        return sorted(found, key=lambda p: p.version)

    def latest(self, type_: str, name: str) -> ProductRecord | None:
        versions = self.versions(type_, name)
        return versions[-1] if versions else None

    def resolve(self, locator: str | Locator, where: str) -> ProductRecord:
        """The product a locator names (the latest version when it names none)."""
        loc = locator if isinstance(locator, Locator) else parse_locator(locator)
        if loc.archive != self.archive:
            raise NotFound(f"locator {loc} names archive {loc.archive!r} but catalog "
                           f"{where} is archive {self.archive!r}",
                           "point productfetcher.catalog at that archive's catalog")
        versions = self.versions(loc.type, loc.name)
        if not versions:
            raise NotFound(f"no product {loc.type}/{loc.name} in catalog {where}",
                           "check the locator, or ingest the product first")
        if loc.version is None:
            return versions[-1]
        for record in versions:
            if record.version == loc.version:
                return record
        known = ", ".join(f"v{p.version}" for p in versions)
        raise NotFound(f"no version v{loc.version} of {loc.type}/{loc.name} in catalog {where}",
                       f"known versions: {known}")

    # -- serialisation ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "docket_catalog": CATALOG_SHAPE,
            "archive": self.archive,
            "updated": self.updated,
            "products": {loc: self.products[loc].to_json() for loc in sorted(self.products)},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def loads(cls, text: str | bytes, where: str) -> Catalog:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"catalog {where} is not valid JSON ({exc})",
                          "restore the catalog from its last good copy") from exc
        if not isinstance(data, dict) or data.get("docket_catalog") != CATALOG_SHAPE:
            raise Invalid(f"catalog {where} is not a docket archive catalog "
                          f"(want \"docket_catalog\": {CATALOG_SHAPE})",
                          "point the setting at the catalog.json that ingest writes")
        archive = check_component(data.get("archive", ""), "archive")
        products: dict[str, ProductRecord] = {}
        raw = data.get("products") or {}
        if not isinstance(raw, dict):
            raise Invalid(f"catalog {where}: 'products' must be a mapping",
                          "restore the catalog from its last good copy")
        for entry in raw.values():
            if not isinstance(entry, dict):
                raise Invalid(f"catalog {where} has a malformed product entry",
                              "restore the catalog from its last good copy")
            record = ProductRecord.from_json(entry, where)
            products[record.locator] = record
        return cls(archive=archive, products=products, updated=data.get("updated"))

    @classmethod
    def read(cls, root: Path, archive: str) -> Catalog:
        """The catalog under ``root``, or an empty one named ``archive`` if none yet."""
        path = root / CATALOG_NAME
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return cls(archive=check_component(archive, "archive"))
        return cls.loads(text, str(path))

    def write(self, root: Path, updated: str) -> None:
        """Replace the catalog under ``root`` (call only while holding ``catalog_lock``)."""
        self.updated = updated
        atomic_write(root / CATALOG_NAME, self.dumps())


@contextlib.contextmanager
def catalog_lock(root: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold the archive's writer lock (flock) for the duration of the block.

    flock is released by the kernel when the process dies, so a crashed ingest never
    leaves the archive locked.
    """
    with held(root / LOCK_NAME, timeout_s,
              busy=f"archive {root} is locked by another ingest (waited {timeout_s:g} s)",
              fix="wait for it to finish, or raise ingest.lock_timeout_s"):
        yield
