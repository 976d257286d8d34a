"""The ingest envoy: stage a processing directory's products and ingest them.

``run_envoy(dir, "calibration"|"image"|"observation")`` reads the run's metadata.json,
stages products/ into a staging folder (calibration tables tarred, only the latest
weblog kept), writes the manifest there, then calls ``docket.tools.ingest``.
"""

from envoys.ingest.envoy import EnvoyResult, build_manifest, run_envoy
from envoys.ingest.processing import read_processing_directory
from envoys.ingest.staging import KINDS, Staged, stage_products

__all__ = ["KINDS", "EnvoyResult", "Staged", "build_manifest",
           "read_processing_directory", "run_envoy", "stage_products"]
