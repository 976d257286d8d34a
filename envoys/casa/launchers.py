"""Launchers: one per kind of CASA run. Each turns the checked parameters into a CASA job
(the task calls and the products they must leave) and runs it as a child process.

Every run works on a fresh copy of the input Measurement Set in working/, so rawdata/
is never changed and a rerun starts from the same data. The child runs with working/
as its current directory, so the casa log lands there; its stdout and stderr go to
working/casa-envoy.stdout and working/casa-envoy.stderr.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from docket.errors import Invalid
from docket.fileio import atomic_write
from docket.tools.casajob import JOB_FILE, CasaJob, CasaTask, write_job
from docket.tools.casalog import find_logs
from docket.tools.vela import outputs_of
from envoys.casa.foundation import Foundation, casa_environment, find_measures
from envoys.casa.parameters import EnvoyParameters
from envoys.casa.recipe import Recipe

__all__ = [
    "SCRIPT_FILE",
    "STDOUT_FILE",
    "STDERR_FILE",
    "LaunchResult",
    "Launcher",
    "CalibrationLauncher",
    "ImagingLauncher",
    "RestoreLauncher",
    "RestoreAndImageLauncher",
    "RecipeLauncher",
    "LAUNCHERS",
]

log = logging.getLogger("docket.envoys.casa.launchers")

SCRIPT_FILE = "casa-envoy-script.py"
STDOUT_FILE = "casa-envoy.stdout"
STDERR_FILE = "casa-envoy.stderr"
# tclean writes these beside imagename; they are removed before a rerun, because tclean
# would otherwise continue from the previous run's images.
_TCLEAN_SUFFIXES = (".image", ".model", ".psf", ".residual", ".pb", ".sumwt", ".mask")
_KILL_GRACE_S = 10.0

Progress = Callable[[str], None]


@dataclass
class LaunchResult:
    program: str  # "casa" or "vela"
    command: list[str]
    started: datetime
    finished: datetime
    exit_status: int | None  # None: the process could not be started
    timed_out: bool = False
    start_error: str = ""
    logs_before: dict[Path, int] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return round((self.finished - self.started).total_seconds(), 3)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


class Launcher:
    """Builds and runs one kind of CASA job; subclasses say which tasks and products."""

    mode: ClassVar[str]

    def __init__(self, foundation: Foundation, params: EnvoyParameters,
                 settings: dict[str, Any] | None = None) -> None:
        self.foundation = foundation
        self.params = params
        self.settings = settings or {}
        self.directory = foundation.directory
        self.working_ms = self.directory.working / params.ms.name

    # -- what to run ---------------------------------------------------------------
    def tasks(self) -> list[CasaTask]:
        raise NotImplementedError

    def products(self) -> list[Path]:
        """Products the run must leave, besides the request's expected_products."""
        raise NotImplementedError

    def outputs(self) -> list[Path]:
        """Everything the tasks write; removed before the run so a rerun starts clean."""
        return self.products()

    def expected_products(self) -> list[Path]:
        seen: list[Path] = []
        for path in [*self.products(), *self.params.expected_products]:
            if path not in seen:
                seen.append(path)
        return seen

    def _task(self, name: str, args: dict[str, Any]) -> CasaTask:
        # A DA's task_args override the envoy's arguments: CASA checks them.
        merged = dict(args)
        merged.update(self.params.task_args.get(name, {}))
        return CasaTask(name, merged)

    def _selection(self) -> dict[str, str]:
        return {"field": self.params.field, "spw": self.params.spw}

    def job(self) -> CasaJob:
        return CasaJob(
            mode=self.mode,
            tasks=tuple(self.tasks()),
            products=tuple(str(p) for p in self.expected_products()),
            vela={"fail": self.params.vela_fail, "fail_at": self.params.vela_fail_at},
        )

    # -- how to run it -------------------------------------------------------------
    @property
    def program(self) -> str:
        return "vela" if self.params.use_vela else "casa"

    def python(self) -> str:
        return str(self.settings.get("python") or sys.executable)

    def vela_command(self) -> list[str]:
        configured = self.settings.get("vela")
        if configured:
            return shlex.split(str(configured))
        beside = Path(sys.executable).parent / "vela"
        if beside.is_file() and os.access(beside, os.X_OK):
            return [str(beside)]
        found = shutil.which("vela")
        if found:
            return [found]
        return [sys.executable, "-m", "cli.vela"]

    def environment(self) -> dict[str, str]:
        if self.params.use_vela:
            return dict(os.environ)
        measures = find_measures(self.python(), self.settings.get("measures_path"))
        return casa_environment(self.directory.working, measures)

    def timeout_s(self) -> float | None:
        value = self.settings.get("timeout_s")
        if value in (None, ""):
            return None
        try:
            timeout = float(value)
        except (TypeError, ValueError) as exc:
            raise Invalid(f"casa-envoy setting timeout_s must be a number of seconds, got "
                          f"{value!r}", "fix tools.yaml or DOCKET_CASA_ENVOY_TIMEOUT_S") from exc
        return timeout if timeout > 0 else None

    def stage(self, progress: Progress) -> Path:
        """Gather the data: a fresh working copy of the MS, stale outputs removed, the job."""
        working = self.directory.working
        progress(f"gathering data: copying {self.directory.relative(self.params.ms)} to "
                 f"{self.directory.relative(self.working_ms)}")
        _remove(self.working_ms)
        shutil.copytree(self.params.ms, self.working_ms, symlinks=False)
        for path in [*self.outputs(), *self.params.expected_products]:
            _remove(path)
        job_path = working / JOB_FILE
        write_job(self.job(), job_path)
        return job_path

    def command(self, job_path: Path) -> list[str]:
        if self.params.use_vela:
            return [*self.vela_command(), str(job_path)]
        script = self.directory.working / SCRIPT_FILE
        text = importlib.resources.files("envoys.casa").joinpath("casa_script.py").read_text()
        atomic_write(script, text, durable=False)
        return [self.python(), str(script), str(job_path), "--noconfig"]

    def launch(self, progress: Progress | None = None) -> LaunchResult:
        say = progress or (lambda _line: None)
        env = self.environment()
        job_path = self.stage(say)
        command = self.command(job_path)
        working = self.directory.working
        timeout = self.timeout_s()
        logs_before = find_logs(working)
        names = ", ".join(t.task for t in self.tasks())
        say(f"running {'vela' if self.params.use_vela else 'CASA'} ({self.mode}: {names})")
        log.info("running %s in %s", shlex.join(command), working)
        started = datetime.now(UTC)
        with open(working / STDOUT_FILE, "wb") as out, open(working / STDERR_FILE, "wb") as err:
            try:
                proc = subprocess.Popen(command, cwd=working, env=env, stdout=out, stderr=err,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                return LaunchResult(self.program, command, started, datetime.now(UTC), None,
                                    start_error=str(exc), logs_before=logs_before)
            timed_out = False
            try:
                status = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                status = self._stop(proc)
        return LaunchResult(self.program, command, started, datetime.now(UTC), status,
                            timed_out=timed_out, logs_before=logs_before)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> int:
        # CASA may have children of its own: stop the whole session it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()


def _calibration_tasks(launcher: Launcher, caltable: Path) -> list[CasaTask]:
    p = launcher.params
    vis = str(launcher.working_ms)
    tasks = [launcher._task("flagdata", {"vis": vis, "mode": "manual", "autocorr": True,
                                         "flagbackup": False})]
    if p.flux_calibrator:
        tasks.append(launcher._task("setjy", {"vis": vis, "field": p.flux_calibrator,
                                              "standard": p.flux_standard}))
    tasks.append(launcher._task("gaincal", {"vis": vis, "caltable": str(caltable),
                                            **launcher._selection(), "refant": p.refant,
                                            "solint": p.solint, "calmode": p.calmode}))
    tasks.append(launcher._task("applycal", {"vis": vis, **launcher._selection(),
                                             "gaintable": [str(caltable)]}))
    return tasks


def _applycal_task(launcher: Launcher) -> CasaTask:
    return launcher._task("applycal", {
        "vis": str(launcher.working_ms), **launcher._selection(),
        "gaintable": [str(t) for t in launcher.params.caltables]})


def _image_base(launcher: Launcher) -> Path:
    return launcher.directory.working / launcher.params.imagename


def _fits_product(launcher: Launcher) -> Path:
    return launcher.directory.products / f"{launcher.params.imagename}.fits"


def _imaging_tasks(launcher: Launcher) -> list[CasaTask]:
    p = launcher.params
    tclean: dict[str, Any] = {
        "vis": str(launcher.working_ms), **launcher._selection(),
        "imagename": str(_image_base(launcher)), "imsize": list(p.imsize), "cell": p.cell,
        "specmode": p.specmode, "weighting": p.weighting, "niter": p.niter,
        "datacolumn": p.datacolumn,
    }
    if p.threshold:
        tclean["threshold"] = p.threshold
    return [
        launcher._task("tclean", tclean),
        launcher._task("exportfits", {"imagename": f"{_image_base(launcher)}.image",
                                      "fitsimage": str(_fits_product(launcher)),
                                      "overwrite": True}),
    ]


def _imaging_outputs(launcher: Launcher) -> list[Path]:
    base = _image_base(launcher)
    return [base.with_name(base.name + s) for s in _TCLEAN_SUFFIXES]


class CalibrationLauncher(Launcher):
    """flagdata (autocorrelations), setjy (if flux_calibrator), gaincal, applycal."""

    mode = "calibration"

    def caltable(self) -> Path:
        return self.directory.products / self.params.caltable

    def tasks(self) -> list[CasaTask]:
        return _calibration_tasks(self, self.caltable())

    def products(self) -> list[Path]:
        return [self.caltable()]


class ImagingLauncher(Launcher):
    """tclean to working/<imagename>.*, exportfits to products/<imagename>.fits."""

    mode = "imaging"

    def tasks(self) -> list[CasaTask]:
        return _imaging_tasks(self)

    def products(self) -> list[Path]:
        return [_fits_product(self)]

    def outputs(self) -> list[Path]:
        return [*_imaging_outputs(self), *self.products()]


class RestoreLauncher(Launcher):
    """applycal of the request's caltables, split of the corrected data into products/."""

    mode = "restore"

    def calibrated_ms(self) -> Path:
        return self.directory.products / f"{self.params.ms_stem}.calibrated.ms"

    def tasks(self) -> list[CasaTask]:
        return [_applycal_task(self),
                self._task("split", {"vis": str(self.working_ms), **self._selection(),
                                     "outputvis": str(self.calibrated_ms()),
                                     "datacolumn": "corrected"})]

    def products(self) -> list[Path]:
        return [self.calibrated_ms()]


class RestoreAndImageLauncher(Launcher):
    """applycal of the request's caltables, then tclean and exportfits of the result."""

    mode = "restore-and-image"

    def tasks(self) -> list[CasaTask]:
        return [_applycal_task(self), *_imaging_tasks(self)]

    def products(self) -> list[Path]:
        return [_fits_product(self)]

    def outputs(self) -> list[Path]:
        return [*_imaging_outputs(self), *self.products()]


class RecipeLauncher(Launcher):
    """The steps of a capability's recipe (envoys.casa.recipe), as the recipe says."""

    mode = "recipe"

    def __init__(self, foundation: Foundation, recipe: Recipe,
                 settings: dict[str, Any] | None = None) -> None:
        params = EnvoyParameters(ms=recipe.ms or foundation.directory.working,
                                 use_vela=recipe.program == "vela",
                                 vela_fail=recipe.vela["fail"],
                                 vela_fail_at=recipe.vela["fail_at"])
        super().__init__(foundation, params, settings)
        self.recipe = recipe

    def tasks(self) -> list[CasaTask]:
        return list(self.recipe.steps)

    def products(self) -> list[Path]:
        return list(self.recipe.products)

    def outputs(self) -> list[Path]:
        working = self.directory.working
        made = [p for task in self.recipe.steps for p in outputs_of(task, working)]
        made += [working / t.save for t in self.recipe.steps if t.save]
        return [*self.recipe.clean, *made, *self.products()]

    def job(self) -> CasaJob:
        return CasaJob(mode=f"recipe:{self.recipe.name}", tasks=tuple(self.tasks()),
                       products=tuple(str(p) for p in self.expected_products()),
                       vela=dict(self.recipe.vela))

    def stage(self, progress: Progress) -> Path:
        for product in self.recipe.products:  # CASA writes into existing folders only
            product.parent.mkdir(parents=True, exist_ok=True)
        if self.recipe.ms is not None:
            return super().stage(progress)
        for path in self.outputs():
            _remove(path)
        job_path = self.directory.working / JOB_FILE
        write_job(self.job(), job_path)
        return job_path


LAUNCHERS: dict[str, type[Launcher]] = {
    cls.mode: cls for cls in (CalibrationLauncher, ImagingLauncher, RestoreLauncher,
                              RestoreAndImageLauncher)
}
