"""The processing directory: what docket's core writes and every tool reads.

One execution's directory, as ``render_execution`` writes it::

    <dir>/metadata.json    {"docket": 1, "request": ..., "version": ..., "execution": ...,
                            "capability": ..., "parameters": {...}, "directory": "<abs>",
                            "output_dir": null, "created": "<ISO-8601>", ...}
    <dir>/request.yaml     the request document
    <dir>/rawdata/         input data (attachments, fetched products)
    <dir>/working/         what the jobs write on the way (a fanned-out part: working/<part>/)
    <dir>/products/        what the run delivers
    <dir>/.docket-active   kept by the watcher while the execution is active: the
                           annihilator never removes a tree that holds it
    <dir>/.docket-qa-failed  left by ``conveyor --qa-fail``: the annihilator's to remove

The standalone tools run on cluster nodes and carry this module in their PEX files, so
it imports nothing of the watcher's state or the engines. ``directory`` records where
the core created the run; a tool works where it is given the directory (a QA area, a
node's scratch directory), so the folder that holds ``metadata.json`` is the one used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound

__all__ = [
    "RAWDATA",
    "WORKING",
    "PRODUCTS",
    "PARTS",
    "METADATA_FILE",
    "REQUEST_FILE",
    "ACTIVE_MARKER",
    "QA_FAILED_MARKER",
    "METADATA_VERSION",
    "ProcessingDirectory",
    "Metadata",
    "create",
    "root_of",
    "read_metadata",
]

RAWDATA = "rawdata"
WORKING = "working"
PRODUCTS = "products"
PARTS = (RAWDATA, WORKING, PRODUCTS)
METADATA_FILE = "metadata.json"
REQUEST_FILE = "request.yaml"
ACTIVE_MARKER = ".docket-active"
QA_FAILED_MARKER = ".docket-qa-failed"
METADATA_VERSION = 1  # the "docket" field: what this module reads and the core writes

FIX_METADATA = "metadata.json is written by docket's core; restore it or rerun the request"

# Every field the tools rely on, with its type; a field that is present must have it.
_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "docket": (int, "an integer"),
    "request": (str, "a string"),
    "version": (int, "an integer"),
    "execution": (int, "an integer"),
    "capability": (str, "a string"),
    "parameters": (dict, "a mapping"),
    "directory": (str, "a string"),
    "output_dir": ((str, type(None)), "a path or null"),
    "created": ((str, type(None)), "an ISO-8601 string or null"),
}
# What names a run: every tool needs these.
_IDENTITY = ("docket", "request", "version", "execution")


@dataclass(frozen=True)
class ProcessingDirectory:
    """The paths of one processing directory (nothing is checked or created)."""

    root: Path
    part: str = ""  # one part of a fanned-out recipe works in working/<part>/

    @property
    def rawdata(self) -> Path:
        return self.root / RAWDATA

    @property
    def working(self) -> Path:
        return self.root / WORKING / self.part if self.part else self.root / WORKING

    @property
    def products(self) -> Path:
        return self.root / PRODUCTS

    @property
    def metadata_path(self) -> Path:
        return self.root / METADATA_FILE

    @property
    def request_path(self) -> Path:
        return self.root / REQUEST_FILE

    @property
    def active_marker(self) -> Path:
        return self.root / ACTIVE_MARKER

    @property
    def qa_failed_marker(self) -> Path:
        return self.root / QA_FAILED_MARKER

    def has_parts(self) -> bool:
        """True when any of rawdata/, working/, products/ is here (even a dangling link)."""
        return any((self.root / p).exists() or (self.root / p).is_symlink() for p in PARTS)

    def relative(self, path: Path) -> str:
        """``path`` relative to the processing directory when inside it (for reports)."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)


def create(root: Path) -> ProcessingDirectory:
    """Make ``root`` and its rawdata/, working/ and products/ (those that exist stay)."""
    root.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        (root / part).mkdir(exist_ok=True)
    return ProcessingDirectory(root)


def root_of(path: Path) -> Path:
    """The processing directory that ``path`` names: the directory or its metadata.json."""
    path = Path(path).absolute()
    return path.parent if path.name == METADATA_FILE else path


@dataclass(frozen=True)
class Metadata:
    """A checked ``metadata.json``; ``raw`` is all of it, as the core wrote it."""

    path: Path  # the file read; its folder is the processing directory
    request: str
    version: int
    execution: int
    raw: dict[str, Any]

    @property
    def directory(self) -> ProcessingDirectory:
        return ProcessingDirectory(self.path.absolute().parent)

    @property
    def label(self) -> str:
        """``<request>.v<version>.e<execution>``: one run's name outside the work area."""
        return f"{self.request}.v{self.version}.e{self.execution}"

    @property
    def capability(self) -> str:
        return str(self.raw.get("capability") or "")

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.raw.get("parameters") or {})


def _problem(path: Path, what: str) -> Invalid:
    return Invalid(f"{path}: {what}", FIX_METADATA)


def read_metadata(path: Path, require: tuple[str, ...] = ()) -> Metadata:
    """Read and check ``path`` (a ``metadata.json``): every error names the file and the
    field. The identity fields are always required, ``require`` names more."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist",
                       "give the metadata.json of a processing directory that docket "
                       "created") from None
    except IsADirectoryError:
        raise Invalid(f"{path} is a directory",
                      "give the metadata.json of a processing directory") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                      f"column {exc.colno}", FIX_METADATA) from exc
    if not isinstance(data, dict):
        raise Invalid(f"{path} must hold a JSON object", FIX_METADATA)
    for name in (*_IDENTITY, *require):
        if name not in data:
            raise _problem(path, f"field '{name}' is missing")
    for name, (kind, described) in _FIELDS.items():
        value = data.get(name)
        if name in data and (not isinstance(value, kind)
                             or (kind is int and isinstance(value, bool))):
            raise _problem(path, f"field '{name}' must be {described}, got {value!r}")
    if data["docket"] != METADATA_VERSION:
        raise Invalid(f"{path}: field 'docket' is {data['docket']!r}; this tool reads "
                      f"version {METADATA_VERSION}",
                      "use a tool as new as the docket that wrote it")
    request = data["request"]
    if (not request or request.startswith(".") or "/" in request
            or any(ord(c) < 32 or c == "\x7f" for c in request)):
        raise Invalid(f"{path}: request {request!r} cannot name a folder",
                      "use a name without '/', control characters or a leading dot")
    for name in ("version", "execution"):
        if data[name] < 1:
            raise _problem(path, f"field '{name}' must be a whole number >= 1, "
                                 f"got {data[name]!r}")
    if "capability" in data and not data["capability"]:
        raise _problem(path, "field 'capability' must not be empty")
    if "directory" in data and not Path(data["directory"]).is_absolute():
        raise _problem(path, f"field 'directory' must be an absolute path, got "
                             f"{data['directory']!r}")
    return Metadata(path=path, request=request, version=data["version"],
                    execution=data["execution"], raw=data)
