"""The CASA envoy's foundation: the processing directory, its documents, CASA's environment.

The processing directory is ``docket.procdir``'s contract; the envoy needs its
``metadata.json`` with ``capability``, ``parameters`` and ``directory`` (``NEEDS``).

The run may happen somewhere else than ``metadata.json``'s ``directory`` (a cluster
node's scratch directory): paths in the parameters that start with the recorded
directory are corrected to the directory the envoy runs in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import atomic_write
from docket.procdir import ProcessingDirectory, read_metadata, root_of

__all__ = [
    "NEEDS",
    "SITE_DIR",
    "Foundation",
    "locate",
    "load_request",
    "merge_parameters",
    "correct_paths",
    "find_measures",
    "casa_environment",
    "prepare",
]

log = logging.getLogger("docket.envoys.casa")

# The fields of metadata.json the envoy reads, beyond those that name the run.
NEEDS = ("capability", "parameters", "directory")
SITE_DIR = "casa-site"
# casaconfig treats a measurespath as (unmaintained, legacy) casarundata, and says so at
# INFO, only when all of these directories exist; otherwise it logs SEVERE lines on
# every run, which would make every good run look failed.
_CASARUNDATA_DIRS = ("alma", "catalogs", "demo", "ephemerides", "geodetic", "gui", "nrao")
_FIX_REQUEST = "fix request.yaml (it is the request document docket's core copied here)"


@dataclass
class Foundation:
    """Everything the launchers need, checked."""

    directory: ProcessingDirectory
    metadata: dict[str, Any]
    request: dict[str, Any]
    parameters: dict[str, Any]
    parameter_sources: dict[str, str]  # parameter -> where it was read ("request.yaml ...")
    relocated_from: Path | None = None
    path_corrections: list[dict[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def locate(path: Path) -> ProcessingDirectory:
    """The processing directory at ``path`` (the directory, or its metadata.json)."""
    root = root_of(path)
    if not root.is_dir():
        raise NotFound(f"processing directory {root} does not exist",
                       "give the processing directory or its metadata.json")
    directory = ProcessingDirectory(root)
    for required in (directory.metadata_path, directory.request_path):
        if not required.is_file():
            raise NotFound(f"{required} does not exist",
                           "give a processing directory written by docket's core")
    if not directory.rawdata.is_dir():
        raise NotFound(f"{directory.rawdata} does not exist or is not a directory",
                       "the processing directory needs rawdata/ holding the input data")
    for sub in (directory.working, directory.products):
        if sub.exists() and not sub.is_dir():
            raise Invalid(f"{sub} exists but is not a directory",
                          f"move it aside; the envoy needs {sub.name}/ as a directory")
        sub.mkdir(parents=True, exist_ok=True)
    return directory


def load_request(path: Path) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise Invalid(f"{path.name} is not valid YAML{where}: {exc.problem}",
                      _FIX_REQUEST) from exc
    except yaml.YAMLError as exc:
        raise Invalid(f"{path.name} is not valid YAML: {exc}", _FIX_REQUEST) from exc
    if not isinstance(data, dict):
        raise Invalid(f"{path.name} must be a mapping with apiVersion, kind, metadata, spec",
                      _FIX_REQUEST)

    def need(value: Any, field_path: str, kind: type, described: str) -> Any:
        if value is None:
            raise Invalid(f"{path.name}: field '{field_path}' is missing", _FIX_REQUEST)
        if not isinstance(value, kind):
            raise Invalid(f"{path.name}: field '{field_path}' must be {described}, got "
                          f"{value!r}", _FIX_REQUEST)
        return value

    if need(data.get("apiVersion"), "apiVersion", str, "a string") != "docket/v1":
        raise Invalid(f"{path.name}: field 'apiVersion' must be 'docket/v1', got "
                      f"{data['apiVersion']!r}", _FIX_REQUEST)
    if need(data.get("kind"), "kind", str, "a string") != "CapabilityRequest":
        raise Invalid(f"{path.name}: field 'kind' must be 'CapabilityRequest', got "
                      f"{data['kind']!r}", _FIX_REQUEST)
    metadata = need(data.get("metadata"), "metadata", dict, "a mapping")
    need(metadata.get("name"), "metadata.name", str, "a string")
    spec = need(data.get("spec"), "spec", dict, "a mapping")
    need(spec.get("capability"), "spec.capability", str, "a string")
    if spec.get("parameters") is None:
        spec["parameters"] = {}
    need(spec["parameters"], "spec.parameters", dict, "a mapping")
    return data


def merge_parameters(metadata: dict[str, Any],
                     request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The run's parameters: request.yaml's, plus what metadata.json adds.

    metadata.json may add parameters (defaults the core filled in) but may not contradict
    the request document: a parameter with two different values is refused.
    """
    if metadata["request"] != request["metadata"]["name"]:
        raise Invalid(f"metadata.json field 'request' is {metadata['request']!r} but "
                      f"request.yaml metadata.name is {request['metadata']['name']!r}",
                      "the two files belong to different requests; restore the right one")
    if metadata["capability"] != request["spec"]["capability"]:
        raise Invalid(f"metadata.json field 'capability' is {metadata['capability']!r} but "
                      f"request.yaml spec.capability is {request['spec']['capability']!r}",
                      "the two files belong to different requests; restore the right one")
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in request["spec"]["parameters"].items():
        merged[key] = value
        sources[key] = f"request.yaml spec.parameters.{key}"
    for key, value in metadata["parameters"].items():
        if key in merged and merged[key] != value:
            raise Invalid(f"parameter '{key}' differs: request.yaml spec.parameters.{key} is "
                          f"{merged[key]!r}, metadata.json parameters.{key} is {value!r}",
                          "make the two agree (metadata.json is written from the request)")
        if key not in merged:
            merged[key] = value
            sources[key] = f"metadata.json parameters.{key}"
    return merged, sources


def correct_paths(value: Any, recorded: Path, actual: Path, where: str,
                  corrections: list[dict[str, str]]) -> Any:
    """``value`` with every string under ``recorded`` moved under ``actual`` (recursively)."""
    if isinstance(value, str):
        prefix = str(recorded).rstrip("/")
        if value == prefix or value.startswith(prefix + "/"):
            fixed = str(actual) + value[len(prefix):]
            corrections.append({"parameter": where, "from": value, "to": fixed})
            return fixed
        return value
    if isinstance(value, list):
        return [correct_paths(v, recorded, actual, f"{where}[{i}]", corrections)
                for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: correct_paths(v, recorded, actual, f"{where}.{k}", corrections)
                for k, v in value.items()}
    return value


def _looks_like_casarundata(path: Path) -> bool:
    return (path / "readme.txt").is_file() or all(
        (path / d).is_dir() for d in _CASARUNDATA_DIRS)


def find_measures(python: str, configured: str | None = None) -> Path:
    """The measures data directory CASA should use (holds geodetic/ and ephemerides/).

    ``configured`` (the ``measures_path`` setting) wins; otherwise python-casacore's
    bundled data, found for the interpreter that will run CASA.
    """
    if configured:
        path = Path(configured).expanduser()
        hint = "set measures_path (DOCKET_CASA_ENVOY_MEASURES_PATH) to a directory " \
               "holding geodetic/ and ephemerides/"
        if not path.is_dir():
            raise NotFound(f"measures data directory {path} does not exist", hint)
        if not (path / "geodetic").is_dir():
            raise Invalid(f"measures data directory {path} has no geodetic/ directory", hint)
        return path.absolute()
    if Path(python).absolute() == Path(sys.executable).absolute():
        spec = importlib.util.find_spec("casacore")
        found = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations \
            else ""
    else:
        probe = ("import importlib.util as u; s = u.find_spec('casacore'); "
                 "print(s.submodule_search_locations[0] if s else '')")
        try:
            found = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                   timeout=60, check=False).stdout.strip()
        except OSError as exc:
            raise NotFound(f"cannot run the CASA interpreter {python}: {exc}",
                           "set python (DOCKET_CASA_ENVOY_PYTHON) to a python with "
                           "casatasks installed") from exc
    data = Path(found) / "data" if found else None
    if data is None or not (data / "geodetic").is_dir():
        raise NotFound(f"no measures data for CASA: python-casacore is not installed for "
                       f"{python} and measures_path is not set",
                       "install python-casacore==3.8.1 beside casatasks, or set "
                       "measures_path (DOCKET_CASA_ENVOY_MEASURES_PATH)")
    return data


def casa_environment(working: Path, measures: Path,
                     base_env: dict[str, str] | None = None) -> dict[str, str]:
    """Write CASA's site config under ``working/casa-site/``; return the child's environment.

    No data downloads, local measures data, a cache directory of its own, and one
    OpenMP thread unless the caller set OMP_NUM_THREADS (CASA runs 1.5x slower on two
    shared cores with more).
    """
    site = working / SITE_DIR
    data = site / "data"
    cache = site / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if _looks_like_casarundata(measures):
        measurespath = measures
    else:
        if data.is_symlink() or data.is_file():
            data.unlink()
        elif data.is_dir():
            shutil.rmtree(data)
        data.mkdir()
        for name in _CASARUNDATA_DIRS:
            source = measures / name
            if source.is_dir():
                (data / name).symlink_to(source)
            else:
                (data / name).mkdir()
        measurespath = data
    config = site / "casasiteconfig.py"
    atomic_write(config, (
        "# Written by casa-envoy: local measures data, no downloads.\n"
        f"measurespath = {str(measurespath)!r}\n"
        f"datapath = [{str(measurespath)!r}]\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        f"cachedir = {str(cache)!r}\n"
    ), durable=False)
    env = dict(os.environ if base_env is None else base_env)
    env["CASASITECONFIG"] = str(config)
    env.setdefault("OMP_NUM_THREADS", "1")
    if not env.get("HOME"):
        # CASA crashes (SIGSEGV) without HOME, and pool jobs often have none
        env["HOME"] = str(site)
    return env


def prepare(path: Path, part: str = "") -> Foundation:
    """Check the processing directory and its documents; correct paths after a move."""
    directory = locate(path)
    if part:
        import dataclasses

        directory = dataclasses.replace(directory, part=part)
        directory.working.mkdir(parents=True, exist_ok=True)
    metadata = read_metadata(directory.metadata_path, NEEDS).raw
    request = load_request(directory.request_path)
    parameters, sources = merge_parameters(metadata, request)
    foundation = Foundation(directory, metadata, request, parameters, sources)
    recorded = Path(metadata["directory"])
    if os.path.normpath(recorded) != os.path.normpath(directory.root) and not (
            recorded.exists() and recorded.resolve() == directory.root.resolve()):
        foundation.relocated_from = recorded
        foundation.parameters = {
            key: correct_paths(value, recorded, directory.root, key,
                               foundation.path_corrections)
            for key, value in parameters.items()}
        log.info("processing directory moved from %s to %s", recorded, directory.root)
    return foundation
