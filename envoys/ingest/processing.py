"""The processing directory as the ingest envoy reads it (``docket.procdir``'s contract).

The envoy also needs ``capability`` (it goes into the archive's metadata) and a request
name that can be one directory name of the archive. ``directory`` in metadata.json is
where docket created the run; the run may since have moved (QA area, a node's scratch
directory), so the directory actually given is the one used.
"""

from __future__ import annotations

from pathlib import Path

from docket.errors import NotFound
from docket.procdir import METADATA_FILE, Metadata, read_metadata
from docket.tools.archive import check_component

__all__ = ["read_processing_directory"]


def read_processing_directory(path: Path) -> Metadata:
    """Check ``path`` against the contract; every error says which field or folder."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise NotFound(f"processing directory {path} does not exist",
                       "give the run's directory (the one holding metadata.json)")
    run = read_metadata(path / METADATA_FILE, require=("capability",))
    check_component(run.request, f"{run.path}: request")
    if not run.directory.products.is_dir():
        raise NotFound(f"{run.directory.products} does not exist",
                       "the run wrote no products; check its logs before ingesting")
    return run
