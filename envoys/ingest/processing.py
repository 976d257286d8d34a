"""The processing directory that docket writes, as the ingest envoy reads it.

Contract::

    <dir>/metadata.json   {"docket": 1, "request": "name", "version": 1, "execution": 1,
                           "capability": "...", "parameters": {...}, "directory": "<abs>",
                           "output_dir": null, "created": "ISO-8601"}
    <dir>/rawdata/  <dir>/working/  <dir>/products/

``directory`` is where docket created the run; the run may since have moved (QA area,
a node's scratch directory), so the directory actually given is the one used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.tools.archive import check_component

__all__ = ["ProcessingDirectory", "read_processing_directory"]


@dataclass(frozen=True)
class ProcessingDirectory:
    path: Path
    request: str
    version: int
    execution: int
    capability: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def products(self) -> Path:
        return self.path / "products"

    @property
    def working(self) -> Path:
        return self.path / "working"

    @property
    def label(self) -> str:
        return f"{self.request}.v{self.version}.e{self.execution}"


def read_processing_directory(path: Path) -> ProcessingDirectory:
    """Check ``path`` against the contract; every error says which field or folder."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise NotFound(f"processing directory {path} does not exist",
                       "give the run's directory (the one holding metadata.json)")
    meta_path = path / "metadata.json"
    try:
        data = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise NotFound(f"{meta_path} does not exist",
                       "give a processing directory that docket created") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"{meta_path} is not valid JSON ({exc})",
                      "restore metadata.json as docket wrote it") from exc
    if not isinstance(data, dict):
        raise Invalid(f"{meta_path} is not a JSON object", "restore metadata.json")
    if data.get("docket") != 1:
        raise Invalid(f"{meta_path}: \"docket\" is {data.get('docket')!r}, expected 1",
                      "this envoy reads metadata.json written by docket 1")
    missing = [k for k in ("request", "version", "execution", "capability") if k not in data]
    if missing:
        raise Invalid(f"{meta_path} lacks {', '.join(missing)}",
                      "restore metadata.json as docket wrote it")
    request = check_component(data["request"], f"{meta_path}: request")
    for key in ("version", "execution"):
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise Invalid(f"{meta_path}: {key} is {value!r}, expected a whole number >= 1",
                          "restore metadata.json as docket wrote it")
    capability = data["capability"]
    if not isinstance(capability, str) or not capability:
        raise Invalid(f"{meta_path}: capability must be a non-empty string",
                      "restore metadata.json as docket wrote it")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise Invalid(f"{meta_path}: parameters must be an object", "restore metadata.json")
    run = ProcessingDirectory(path, request, data["version"], data["execution"], capability,
                              parameters)
    if not run.products.is_dir():
        raise NotFound(f"{run.products} does not exist",
                       "the run wrote no products; check its logs before ingesting")
    return run
