"""The CASA envoy's entry point: set up, pick the launcher for the mode, launch, audit.

    run_envoy("imaging", Path("/lustre/docket/runs/req-1-v1-e1"))

returns the verdict as a dict (the report also written to
working/casa-envoy-report.json). Setup problems raise DocketError before anything runs.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docket.errors import Invalid
from envoys.casa.auditor import ALLOWED_SEVERE, REPORT_FILE, judge, new_log_entries, write_report
from envoys.casa.foundation import prepare
from envoys.casa.launchers import (
    LAUNCHERS,
    STDERR_FILE,
    STDOUT_FILE,
    Launcher,
    RecipeLauncher,
)
from envoys.casa.parameters import MODES, parse_parameters
from envoys.casa.recipe import RECIPE_FILE, load_recipe

__all__ = ["MODES", "REPORT_VERSION", "pick_launcher", "run_envoy"]

log = logging.getLogger("docket.envoys.casa")

REPORT_VERSION = 1


def pick_launcher(mode: str) -> type[Launcher]:
    try:
        return LAUNCHERS[mode]
    except KeyError:
        raise Invalid(f"unknown CASA envoy mode {mode!r}",
                      f"use one of {', '.join('--' + m for m in MODES)}") from None


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _count_run(working: Path) -> int:
    """This run's number in the processing directory (1 for the first), for provenance."""
    counter = working / "casa-envoy.runs"
    try:
        runs = int(counter.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        runs = 0
    counter.write_text(f"{runs + 1}\n")
    return runs + 1


def run_envoy(mode: str, path: Path, settings: dict[str, Any] | None = None,
              progress: Callable[[str], None] | None = None,
              recipe_path: Path | None = None, part: str = "") -> dict[str, Any]:
    """Run CASA (or vela) for the processing directory at ``path``; return the report.

    ``mode`` "recipe" runs the rendered recipe (``recipe_path``, default
    ``recipe.yaml`` in the processing directory) instead of one of the fixed modes;
    ``part`` one part of it (a fanned-out piece, working in ``working/<part>/``).
    """
    say = progress or (lambda _line: None)
    launcher_cls = pick_launcher(mode) if mode != "recipe" else None
    foundation = prepare(path, part if launcher_cls is None else "")
    directory = foundation.directory
    report_path = directory.working / REPORT_FILE
    # A report left by an earlier run must not be mistaken for this run's.
    report_path.unlink(missing_ok=True)
    if foundation.relocated_from is not None:
        say(f"processing directory moved from {foundation.relocated_from}; "
            f"{len(foundation.path_corrections)} path(s) in the parameters corrected")
    launcher: Launcher
    recipe = None
    if launcher_cls is None:
        recipe = load_recipe(recipe_path or directory.root / RECIPE_FILE, directory,
                             part=part)
        launcher = RecipeLauncher(foundation, recipe, settings)
    else:
        params = parse_parameters(foundation.parameters, foundation.parameter_sources, mode,
                                  directory)
        launcher = launcher_cls(foundation, params, settings)
    attempt = _count_run(directory.working)
    result = launcher.launch(say)

    say("post-CASA checks: exit status, casa log, products")
    logs = new_log_entries(directory.working, result.logs_before)
    stderr = directory.working / STDERR_FILE
    detail = result.start_error or (_last_line(stderr) if result.exit_status else "")
    verdict = judge(result.exit_status, {directory.relative(p): e for p, e in logs.items()},
                    launcher.expected_products(), allow=ALLOWED_SEVERE,
                    failure_detail=detail, timed_out=result.timed_out,
                    product_root=directory.root)
    metadata = foundation.metadata
    report: dict[str, Any] = {
        "docket": REPORT_VERSION,
        "tool": "casa-envoy",
        "mode": mode,
        "recipe": ({"name": recipe.name, "path": directory.relative(recipe.path)}
                   if recipe is not None else None),
        "program": result.program,
        **verdict.to_dict(),
        "allow_list": [rule.name for rule in ALLOWED_SEVERE],
        "request": metadata["request"],
        "version": metadata["version"],
        "execution": metadata["execution"],
        "capability": metadata["capability"],
        "directory": str(directory.root),
        "relocated_from": str(foundation.relocated_from) if foundation.relocated_from
        else None,
        "path_corrections": foundation.path_corrections,
        "command": result.command,
        "host": socket.gethostname(),
        "attempt": attempt,
        "exit_status": result.exit_status,
        "timed_out": result.timed_out,
        "started": result.started.isoformat(),
        "finished": result.finished.isoformat(),
        "duration_s": result.duration_s,
        "logs": [directory.relative(p) for p in logs],
        "stdout": directory.relative(directory.working / STDOUT_FILE),
        "stderr": directory.relative(stderr),
        "report": directory.relative(report_path),
    }
    write_report(report_path, report)
    say(f"verdict: {verdict.verdict}")
    return report
