"""The ingest envoy: stage a run's products, write the manifest, then call ingest.

Settings (tools config; flags win, then ``DOCKET_INGEST_ENVOY_*``, then the file):

- ``ingest-envoy.staging_root``: where staging folders go (default
  ``<run>/working/ingest-staging``); each run stages into
  ``<staging_root>/<request>.v<version>.e<execution>.<kind>``, emptied first;
- the archive comes from the ``ingest`` section (``ingest.archive_root``, ...).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docket.procdir import Metadata
from docket.tools import ingest as ingest_lib
from docket.tools.config import load_tool_config
from envoys.ingest.processing import read_processing_directory
from envoys.ingest.staging import KINDS, Staged, stage_products

__all__ = ["EnvoyResult", "build_manifest", "run_envoy"]

log = logging.getLogger("docket.envoys.ingest")


@dataclass
class EnvoyResult:
    kind: str
    directory: str
    staging: str
    manifest: str
    staged: Staged
    staging_kept: bool
    ingest: ingest_lib.IngestResult

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "directory": self.directory, "staging": self.staging,
                "staging_kept": self.staging_kept, "manifest": self.manifest,
                "staged": self.staged.files, "skipped": self.staged.skipped,
                "tarred": self.staged.tarred, **self.ingest.to_json()}


def build_manifest(run: Metadata, kind: str, staged: Staged,
                   staging: Path) -> ingest_lib.Manifest:
    """One product named after the request; ingest versions it by content."""
    from docket.fileio import sha256_file

    files = [ingest_lib.ManifestFile(name, sha256_file(staging / name),
                                     (staging / name).stat().st_size)
             for name in staged.files]
    metadata = {"request": run.request, "request_version": run.version,
                "execution": run.execution, "capability": run.capability,
                "kind": kind}
    return ingest_lib.Manifest([ingest_lib.ManifestProduct(run.request, kind, files,
                                                           metadata)])


def run_envoy(directory: Path, kind: str, *, config: Path | None = None,
              archive_root: Path | None = None, staging_root: Path | None = None,
              keep_staging: bool = False,
              progress: ingest_lib.Progress | None = None) -> EnvoyResult:
    """Stage ``directory``'s products as ``kind``, write the manifest, ingest them.

    The staging folder is removed after a successful ingest unless ``keep_staging``;
    after a failure it stays, manifest included, for a person to look at.
    """
    from docket.errors import Invalid

    if kind not in KINDS:
        raise Invalid(f"unknown product kind {kind!r}", f"use one of {', '.join(KINDS)}")
    ingest_settings = ingest_lib.load_settings(config, archive_root=archive_root)
    run = read_processing_directory(directory)
    envoy_settings = load_tool_config("ingest-envoy", config, {"staging_root": staging_root})
    root = Path(envoy_settings.get("staging_root") or run.directory.working / "ingest-staging")
    staging = root.absolute() / f"{run.label}.{kind}"
    if staging.exists():
        log.info("emptying the staging folder %s left by an earlier attempt", staging)
        shutil.rmtree(staging)

    staged = stage_products(run.directory.products, staging, kind, run.request)
    manifest_path = staging / "manifest.json"
    ingest_lib.write_manifest(manifest_path, build_manifest(run, kind, staged, staging))
    result = ingest_lib.ingest(staging, ingest_settings.archive_root,
                               manifest_path=manifest_path,
                               archive_name=ingest_settings.archive_name,
                               lock_timeout_s=ingest_settings.lock_timeout_s,
                               progress=progress)
    if not keep_staging:
        shutil.rmtree(staging)
    return EnvoyResult(kind, str(run.directory.root), str(staging), str(manifest_path), staged,
                       keep_staging, result)
