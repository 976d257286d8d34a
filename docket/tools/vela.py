"""vela: a CASA stand-in that runs a CASA job in an instant.

vela reads the same job file as the script the CASA envoy runs under real CASA
(``casa-envoy-job.json``), writes a casa log in CASA's exact format and file name into
the working directory, and writes fake products where the real tasks would write
theirs. It can be told to fail in each of the ways real CASA fails:

``bad-argument``
    an argument is refused before anything about the task is logged: ``AssertionError``
    raised, exit status 1 (as CASA's parameter checking does).
``severe-raise``
    a SEVERE line is logged, then ``RuntimeError`` raised: exit status 1.
``severe-exit0``
    a SEVERE line is logged and the task returns normally: exit status 0 (as ``setjy``
    does with an unknown source).
``missing-product``
    everything looks fine, but the task's outputs are not written.

The exceptions are real ``AssertionError`` and ``RuntimeError``, on purpose: they are
what CASA raises, and the CLI lets them end the process with a traceback as CASA does.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.errors import Invalid
from docket.tools.casajob import FAIL_MODES, CasaJob, CasaTask
from docket.tools.casalog import format_entry, log_name

__all__ = ["CASA_VERSION", "TASK_OUTPUTS", "VelaResult", "run_vela", "outputs_of",
           "write_fits"]

log = logging.getLogger("docket.vela")

CASA_VERSION = "6.7.0.31"
# Where each task writes: argument name -> suffixes added to its value (tclean writes a
# family of images named after ``imagename``). Tasks not listed change ``vis`` in place.
TASK_OUTPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "tclean": {"imagename": (".image", ".model", ".psf", ".residual", ".pb", ".sumwt")},
    "exportfits": {"fitsimage": ("",)},
    "gaincal": {"caltable": ("",)},
    "bandpass": {"caltable": ("",)},
    "fluxscale": {"fluxtable": ("",)},
    "split": {"outputvis": ("",)},
    "mstransform": {"outputvis": ("",)},
    "immath": {"outfile": ("",)},
    "impbcor": {"outfile": ("",)},
}
# Arguments naming inputs that must exist before the task runs (CASA checks ``vis``
# while validating arguments, the others when the task runs).
_REQUIRED_PATH_ARGS = ("vis",)
_RUNTIME_PATH_ARGS = {"exportfits": "imagename"}
_LEAP_ORIGIN = ("MeasTable::dUTC(Double) (file /source/casa6/casatools/casacore/measures/"
                "Measures/MeasTable.cc, line 4290)")
_LEAP_MESSAGE = ("Leap second table TAI_UTC seems out-of-date.\n"
                 "Until the table is updated (see the CASA documentation or your system "
                 "admin),\ntimes and coordinates derived from UTC could be wrong by 1s or more.")
_RULE = "#" * 42


@dataclass
class VelaResult:
    log: Path
    tasks: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    severe: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"log": str(self.log), "tasks": self.tasks,
                "outputs": [str(p) for p in self.outputs], "severe": self.severe}


def outputs_of(task: CasaTask, cwd: Path) -> list[Path]:
    """Paths ``task`` writes, as real CASA names them."""
    paths = []
    for arg, suffixes in TASK_OUTPUTS.get(task.task, {}).items():
        value = task.args.get(arg)
        if isinstance(value, str) and value:
            paths.extend(cwd / f"{value}{suffix}" for suffix in suffixes)
    return paths


def write_fits(path: Path, size_px: int = 8) -> None:
    """A small, valid FITS image (float32, a point source in the middle)."""
    cards = [
        "SIMPLE  =                    T", "BITPIX  =                  -32",
        "NAXIS   =                    2", f"NAXIS1  = {size_px:>20}",
        f"NAXIS2  = {size_px:>20}", "BUNIT   = 'Jy/beam '",
        "ORIGIN  = 'vela (docket CASA stand-in)'", "END",
    ]
    header = "".join(card.ljust(80) for card in cards).encode("ascii")
    header += b" " * (-len(header) % 2880)
    pixels = [0.0] * (size_px * size_px)
    pixels[(size_px // 2) * size_px + size_px // 2] = 1.0
    data = struct.pack(f">{len(pixels)}f", *pixels)
    data += b"\0" * (-len(data) % 2880)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data)


def _write_output(path: Path, task: str) -> None:
    if path.suffix == ".fits":
        write_fits(path)
        return
    # CASA tables and images are directories; a fake one holds one non-empty file.
    path.mkdir(parents=True, exist_ok=True)
    (path / "table.dat").write_text(f"vela: fake output of {task}\n")


def _call_line(task: CasaTask) -> str:
    return f"{task.task}( {', '.join(f'{k}={v!r}' for k, v in task.args.items())} )"


def _pick_fail_at(job: CasaJob, fail: str, fail_at: str | None, cwd: Path) -> str | None:
    if fail == "none":
        return None
    if fail_at is not None:
        if fail_at not in {t.task for t in job.tasks}:
            raise Invalid(f"--fail-at {fail_at!r} is not one of the job's tasks "
                          f"({', '.join(t.task for t in job.tasks)})",
                          "name a task the job calls")
        return fail_at
    if fail == "missing-product":
        # The last task whose outputs the job expects as products.
        products = {str(Path(p)) for p in job.products}
        for task in reversed(job.tasks):
            if any(str(p) in products for p in outputs_of(task, cwd)):
                return task.task
        for task in reversed(job.tasks):
            if outputs_of(task, cwd):
                return task.task
    return job.tasks[0].task


def run_vela(job: CasaJob, cwd: Path, *, fail: str | None = None, fail_at: str | None = None,
             leap_second_warnings: bool = False,
             progress: Callable[[str], None] | None = None,
             clock: Callable[[], datetime] | None = None) -> VelaResult:
    """Run ``job`` the way CASA would, instantly, with the casa log written into ``cwd``.

    ``fail`` and ``fail_at`` override the job's ``vela`` section. Raises
    ``AssertionError`` (bad-argument) or ``RuntimeError`` (severe-raise) like CASA.
    """
    now = clock or (lambda: datetime.now(UTC))
    mode = fail if fail is not None else job.vela.get("fail", "none")
    if mode not in FAIL_MODES:
        raise Invalid(f"unknown vela failure mode {mode!r}",
                      f"use one of {', '.join(FAIL_MODES)}")
    target = _pick_fail_at(job, mode, fail_at if fail_at is not None
                           else job.vela.get("fail_at"), cwd)
    result = VelaResult(log=cwd / log_name(now()))
    with open(result.log, "a", encoding="utf-8") as fh:
        def post(priority: str, origin: str, message: str) -> None:
            fh.write(format_entry(priority, origin, message, now()))
            fh.flush()
            if priority == "SEVERE":
                result.severe += 1
                # CASA echoes SEVERE and WARN lines to stderr as well.
                sys.stderr.write(format_entry(priority, origin, message, now()))

        py = ".".join(str(n) for n in sys.version_info[:3])
        post("INFO", "::casa", f"Python version {py}")
        post("INFO", "::casa", f"CASA Version MODULAR {CASA_VERSION} (vela, a CASA stand-in)")
        (cwd / "casa-version.txt").write_text(f"{CASA_VERSION} (vela)\n")
        for index, task in enumerate(job.tasks, 1):
            name = task.task
            if progress:
                progress(f"[{index}/{len(job.tasks)}] {name}")
            for arg in _REQUIRED_PATH_ARGS:
                value = task.args.get(arg)
                if isinstance(value, str) and not (cwd / value).exists():
                    raise AssertionError(f"{{'{arg}': ['{value} does not exist']}}")
            if mode == "bad-argument" and name == target:
                arg = next(iter(task.args), "vis")
                raise AssertionError(f"{{'{arg}': ['unallowed value (vela was told to fail "
                                     f"{name} with a bad argument)']}}")
            spaces = " " * (18 - len(name))
            origin = f"{name}::::casa"
            started = now()
            post("INFO", origin, _RULE)
            post("INFO", origin, f"##### Begin Task: {name}{spaces} #####")
            post("INFO", origin, _call_line(task))
            result.tasks.append(name)
            try:
                if leap_second_warnings and index == 1:
                    post("SEVERE", _LEAP_ORIGIN, _LEAP_MESSAGE)
                runtime_arg = _RUNTIME_PATH_ARGS.get(name)
                missing_input = (runtime_arg is not None
                                 and isinstance(task.args.get(runtime_arg), str)
                                 and not (cwd / task.args[runtime_arg]).exists())
                if missing_input or (mode == "severe-raise" and name == target):
                    why = (f"{task.args[runtime_arg]} does not exist" if missing_input
                           else "vela was told to fail with SEVERE and an exception")
                    post("SEVERE", "", f"Exception Reported: {why}")
                    post("SEVERE", origin, f"Task {name} raised an exception of class "
                                           f"RuntimeError with the following message: {why}")
                    raise RuntimeError(why)
                if mode == "severe-exit0" and name == target:
                    post("SEVERE", f"{name}::vela",
                         "vela was told to log SEVERE and return normally")
                if not (mode == "missing-product" and name == target):
                    for path in outputs_of(task, cwd):
                        _write_output(path, name)
                        result.outputs.append(path)
                    if task.save:
                        (cwd / task.save).write_text(json.dumps(
                            {"vela": f"the return value of {name}, faked"}) + "\n")
                elif progress:
                    progress(f"vela: not writing the outputs of {name} (missing-product)")
            finally:
                post("INFO", origin, f"Task {name} complete. Start time: "
                                     f"{started:%Y-%m-%d %H:%M:%S.%f} End time: "
                                     f"{now():%Y-%m-%d %H:%M:%S.%f}")
                post("INFO", origin, f"##### End Task: {name}  {spaces} #####")
                post("INFO", origin, _RULE)
    log.debug("vela ran %d task(s), log %s", len(result.tasks), result.log)
    return result
