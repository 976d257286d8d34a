"""The request parameters the CASA envoy reads, checked with errors that name the field.

See docs/tools/casa-envoy.md for the table of parameters. Parameters the envoy does not
know are left alone: a capability may carry parameters for its other stages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docket.errors import DocketError, Invalid, NotFound
from docket.fileio import inside, safe_join
from docket.procdir import PRODUCTS, RAWDATA, ProcessingDirectory
from docket.tools.casajob import FAIL_MODES

__all__ = ["MODES", "MODE_TASKS", "EnvoyParameters", "parse_parameters"]

MODES = ("calibration", "imaging", "restore", "restore-and-image")
# The CASA tasks each mode may call (setjy only when flux_calibrator is given).
MODE_TASKS: dict[str, tuple[str, ...]] = {
    "calibration": ("flagdata", "setjy", "gaincal", "applycal"),
    "imaging": ("tclean", "exportfits"),
    "restore": ("applycal", "split"),
    "restore-and-image": ("applycal", "tclean", "exportfits"),
}
_IMAGING_MODES = ("imaging", "restore-and-image")
_RESTORE_MODES = ("restore", "restore-and-image")


@dataclass(frozen=True)
class EnvoyParameters:
    ms: Path  # the input Measurement Set under rawdata/
    use_vela: bool = False
    vela_fail: str = "none"
    vela_fail_at: str | None = None
    field: str = ""
    spw: str = ""
    # calibration
    refant: str = ""
    solint: str = "int"
    calmode: str = "ap"
    caltable: str = ""
    flux_calibrator: str | None = None
    flux_standard: str = "Perley-Butler 2017"
    # restore
    caltables: tuple[Path, ...] = ()
    # imaging
    imagename: str = ""
    imsize: tuple[int, int] = (0, 0)
    cell: str = ""
    niter: int = 0
    specmode: str = "mfs"
    weighting: str = "natural"
    threshold: str = ""
    datacolumn: str = ""
    # ``field`` above is CASA's field selection, hence the qualified name here.
    task_args: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    expected_products: tuple[Path, ...] = ()

    @property
    def ms_stem(self) -> str:
        return self.ms.name[:-3] if self.ms.name.endswith(".ms") else self.ms.name


class _Reader:
    """Reads one parameter at a time; every error names where the parameter came from."""

    def __init__(self, params: dict[str, Any], sources: dict[str, str], mode: str,
                 directory: ProcessingDirectory) -> None:
        self.params = params
        self.sources = sources
        self.mode = mode
        self.directory = directory

    def where(self, key: str) -> str:
        return self.sources.get(key, f"request.yaml spec.parameters.{key}")

    def bad(self, key: str, what: str, hint: str | None = None) -> Invalid:
        return Invalid(f"{self.where(key)} {what}",
                       hint or "fix the parameter in request.yaml and resubmit the request")

    def missing(self, key: str, described: str) -> Invalid:
        return Invalid(f"request.yaml spec.parameters.{key} is missing: the {self.mode} run "
                       f"needs {described}",
                       f"add '{key}:' under spec.parameters in request.yaml")

    def string(self, key: str, default: str | None = None, *, required: str = "") -> str:
        value = self.params.get(key)
        if value is None:
            if required:
                raise self.missing(key, required)
            return default if default is not None else ""
        if not isinstance(value, str):
            raise self.bad(key, f"must be a string, got {value!r}")
        return value

    # A null value means "not given": docket's core writes null for optional parameters
    # that have no default.
    def boolean(self, key: str, default: bool) -> bool:
        value = self.params.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.bad(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.bad(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def name(self, key: str, default: str) -> str:
        """A plain file name for an output (no directories)."""
        value = self.string(key, default)
        if (not value or "/" in value or value.startswith(".")
                or any(ord(c) < 32 for c in value)):
            raise self.bad(key, f"must be a plain file name (no '/', not starting with "
                                f"'.'), got {value!r}")
        return value

    def path_under(self, key: str, value: Any, root: Path, label: str) -> Path:
        if not isinstance(value, str) or not value:
            raise self.bad(key, f"must be a path under {label}/, got {value!r}")
        if Path(value).is_absolute():
            path = Path(value)
            if not inside(path, root):
                raise self.bad(key, f"is {value!r}, which is not under {root}",
                               f"give a path relative to {label}/")
            return path
        try:
            return safe_join(root, value)
        except DocketError as exc:
            raise self.bad(key, f"is not a usable path under {label}/: {exc.what}",
                           exc.hint) from exc

    def rawdata_path(self, key: str, value: Any) -> Path:
        path = self.path_under(key, value, self.directory.rawdata, RAWDATA)
        if not path.exists():
            raise NotFound(f"{self.where(key)} names {self.directory.relative(path)}, which "
                           "does not exist",
                           "put the data under rawdata/ or fix the parameter")
        return path


def _imsize(reader: _Reader) -> tuple[int, int]:
    value = reader.params.get("imsize")
    if value is None:
        raise reader.missing("imsize", "the image size in pixels (imsize: 256 or [256, 256])")
    sizes = value if isinstance(value, list) else [value]
    if (len(sizes) not in (1, 2)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)):
        raise reader.bad("imsize", f"must be a positive integer or a pair of them, got "
                                   f"{value!r}")
    return (sizes[0], sizes[-1])


def _task_args(reader: _Reader, calls: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    value = reader.params.get("task_args")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reader.bad("task_args", f"must be a mapping of task name to arguments, got "
                                      f"{value!r}")
    for task, args in value.items():
        if task not in calls:
            raise reader.bad("task_args", f"names task {task!r}, which the {reader.mode} run "
                                          f"does not call (it calls {', '.join(calls)})")
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise reader.bad("task_args", f"entry {task!r} must be a mapping of argument "
                                          f"name to value, got {args!r}")
    return value


def parse_parameters(params: dict[str, Any], sources: dict[str, str], mode: str,
                     directory: ProcessingDirectory) -> EnvoyParameters:
    """Check the parameters the ``mode`` run needs; raise Invalid/NotFound naming the field."""
    if mode not in MODES:
        raise Invalid(f"unknown CASA envoy mode {mode!r}", f"use one of {', '.join(MODES)}")
    r = _Reader(params, sources, mode, directory)
    if params.get("ms") is None:
        raise r.missing("ms", "the input Measurement Set under rawdata/ (ms: my.ms)")
    ms = r.rawdata_path("ms", params["ms"])
    if not ms.is_dir():
        raise r.bad("ms", f"names {directory.relative(ms)}, which is not a Measurement Set "
                          "(a directory)")
    values: dict[str, Any] = {"ms": ms}
    values["use_vela"] = r.boolean("use_vela", False)
    values["vela_fail"] = r.string("vela_fail", "none")
    if values["vela_fail"] not in FAIL_MODES:
        raise r.bad("vela_fail", f"must be one of {', '.join(FAIL_MODES)}, got "
                                 f"{values['vela_fail']!r}")
    values["vela_fail_at"] = r.string("vela_fail_at") or None
    values["field"] = r.string("field", "")
    values["spw"] = r.string("spw", "")
    calls = MODE_TASKS[mode]
    if values["vela_fail_at"] is not None and values["vela_fail_at"] not in calls:
        raise r.bad("vela_fail_at", f"is {values['vela_fail_at']!r}, which the {mode} run "
                                    f"does not call (it calls {', '.join(calls)})")
    stem = ms.name[:-3] if ms.name.endswith(".ms") else ms.name
    if mode == "calibration":
        values["refant"] = r.string("refant", required="a reference antenna (refant: ea10)")
        values["solint"] = r.string("solint", "int")
        values["calmode"] = r.string("calmode", "ap")
        values["caltable"] = r.name("caltable", f"{stem}.G")
        values["flux_calibrator"] = r.string("flux_calibrator") or None
        values["flux_standard"] = r.string("flux_standard", "Perley-Butler 2017")
    if mode in _RESTORE_MODES:
        tables = params.get("caltables")
        if tables is None:
            raise r.missing("caltables", "the calibration tables to apply, under rawdata/ "
                                         "(caltables: [my.G])")
        if not isinstance(tables, list) or not tables:
            raise r.bad("caltables", f"must be a non-empty list of paths under rawdata/, got "
                                     f"{tables!r}")
        values["caltables"] = tuple(r.rawdata_path("caltables", t) for t in tables)
    if mode in _IMAGING_MODES:
        values["imagename"] = r.name("imagename", stem)
        values["imsize"] = _imsize(r)
        values["cell"] = r.string("cell", required="the pixel size (cell: '8arcsec')")
        values["niter"] = r.integer("niter", 0, 0)
        values["specmode"] = r.string("specmode", "mfs")
        values["weighting"] = r.string("weighting", "natural")
        values["threshold"] = r.string("threshold", "")
        values["datacolumn"] = r.string(
            "datacolumn", "corrected" if mode == "restore-and-image" else "data")
    values["task_args"] = _task_args(r, calls)
    extra = params.get("expected_products") or []
    if not isinstance(extra, list):
        raise r.bad("expected_products", f"must be a list of paths under products/, got "
                                         f"{extra!r}")
    values["expected_products"] = tuple(
        r.path_under("expected_products", p, directory.products, PRODUCTS) for p in extra)
    return EnvoyParameters(**values)
