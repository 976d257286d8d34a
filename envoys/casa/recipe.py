"""Recipes: a capability's CASA steps as data, the pipeline of a docket workflow.

A capability ships ``recipe.yaml.j2``; docket renders it with the request's parameters
into the processing directory as ``recipe.yaml``, and ``casa-envoy --recipe`` runs it::

    docket_recipe: 1
    name: quicklook
    program: casa                 # or vela (the request's `casa: vela`)
    vela: {fail: none, fail_at: null}
    ms: rawdata/demo-vlass/demo-vlass.ms   # copied fresh into working/ before the run
    steps:
      - task: tclean
        args: {vis: demo-vlass.ms, imagename: T1, imsize: [64, 64], cell: 8arcsec}
      - task: imstat
        args: {imagename: T1.image}
        save: T1.imstat.json      # the task's return value, as JSON, in working/
      - task: exportfits
        args: {imagename: T1.image, fitsimage: ../products/T1.fits}
    products: [products/T1.fits]  # must exist and be non-empty afterwards

Paths in ``args`` are CASA's: relative to ``working/``, CASA's current directory.
``ms``, ``products`` and ``clean`` are relative to the processing directory and may not
leave it. ``clean`` lists outputs removed before the run (``tclean`` would otherwise
continue from an earlier run's images); every task output vela knows of is removed too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import DocketError, Invalid, NotFound
from docket.fileio import safe_join
from docket.procdir import ProcessingDirectory
from docket.tools.casajob import FAIL_MODES, CasaTask

__all__ = ["RECIPE_FILE", "RECIPE_VERSION", "Recipe", "load_recipe"]

RECIPE_FILE = "recipe.yaml"
RECIPE_VERSION = 1
_TASK = re.compile(r"^[a-z][a-z0-9_]*$")
_FIX = "fix the capability's recipe.yaml.j2 (or the request's parameters) and resubmit"


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    program: str  # "casa" or "vela"
    steps: tuple[CasaTask, ...]
    products: tuple[Path, ...]  # absolute, inside the processing directory
    ms: Path | None = None  # absolute, inside the processing directory
    clean: tuple[Path, ...] = ()
    vela: dict[str, Any] = field(default_factory=lambda: {"fail": "none", "fail_at": None})
    post: dict[str, Any] = field(default_factory=dict)  # read by envoys.casa.postcasa
    text: str = ""  # the rendered recipe, for provenance


def _inside(directory: ProcessingDirectory, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        raise Invalid(f"recipe {where} must be a path relative to the processing directory, "
                      f"got {value!r}", _FIX)
    try:
        return safe_join(directory.root, value)
    except DocketError as exc:
        raise Invalid(f"recipe {where}: {exc.what}", _FIX) from exc


def load_recipe(path: Path, directory: ProcessingDirectory, *, check_ms: bool = True,
                part: str = "") -> Recipe:
    """Read and check a rendered recipe; every error names the field."""
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NotFound(f"recipe {path} does not exist",
                       "the capability must render recipe.yaml (recipe.yaml.j2)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"recipe {path} is not valid YAML: {exc}", _FIX) from None
    if not isinstance(data, dict):
        raise Invalid(f"recipe {path} must be a mapping", _FIX)
    if data.get("docket_recipe") != RECIPE_VERSION:
        raise Invalid(f"recipe {path}: docket_recipe must be {RECIPE_VERSION}", _FIX)
    parts = data.pop("parts", None) or {}
    if part:
        # a fanned-out piece: its own steps, the document's program and vela settings
        if not isinstance(parts, dict) or not isinstance(parts.get(part), dict):
            known = ", ".join(parts) if isinstance(parts, dict) else "none"
            raise Invalid(f"recipe {path} has no part {part!r} (parts: {known or 'none'})",
                          _FIX)
        data = {"docket_recipe": RECIPE_VERSION, "program": data.get("program", "casa"),
                "vela": data.get("vela"), **parts[part]}
        data.setdefault("name", part)
    unknown = set(data) - {"docket_recipe", "name", "program", "vela", "ms", "steps",
                           "products", "clean", "post"}
    if unknown:
        raise Invalid(f"recipe {path}: unknown field(s) {', '.join(sorted(unknown))}", _FIX)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise Invalid(f"recipe {path}: name must be a non-empty string", _FIX)
    program = data.get("program", "casa")
    if program not in ("casa", "vela"):
        raise Invalid(f"recipe {path}: program must be casa or vela, got {program!r}", _FIX)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise Invalid(f"recipe {path}: steps must be a non-empty list", _FIX)
    steps = []
    for i, step in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(step, dict) or set(step) - {"task", "args", "save"}:
            raise Invalid(f"recipe {where} must be a mapping of task, args and save", _FIX)
        task = step.get("task")
        if not isinstance(task, str) or not _TASK.match(task):
            raise Invalid(f"recipe {where}.task must be a casatasks name, got {task!r}", _FIX)
        args = step.get("args") or {}
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise Invalid(f"recipe {where}.args must be a mapping of argument name to "
                          f"value, got {args!r}", _FIX)
        save = step.get("save")
        if save is not None and (not isinstance(save, str) or "/" in save
                                 or save.startswith(".")):
            raise Invalid(f"recipe {where}.save must be a plain file name in working/, got "
                          f"{save!r}", _FIX)
        steps.append(CasaTask(task, args, save))
    vela = data.get("vela") or {}
    if not isinstance(vela, dict) or vela.get("fail", "none") not in FAIL_MODES:
        raise Invalid(f"recipe {path}: vela.fail must be one of {', '.join(FAIL_MODES)}", _FIX)
    fail_at = vela.get("fail_at") or None
    if fail_at is not None and fail_at not in {s.task for s in steps}:
        raise Invalid(f"recipe {path}: vela.fail_at {fail_at!r} is not one of the recipe's "
                      f"tasks ({', '.join(s.task for s in steps)})", _FIX)
    ms = None
    if data.get("ms") is not None:
        ms = _inside(directory, data["ms"], "ms")
        if check_ms and not ms.is_dir():
            raise NotFound(f"recipe ms {data['ms']} is not a Measurement Set in "
                           f"{directory.root}", "check that the data was fetched (the "
                           "gathering-data stage) and that the request's ms parameter "
                           "names it")
    products = tuple(_inside(directory, p, f"products[{i}]")
                     for i, p in enumerate(data.get("products") or []))
    clean = tuple(_inside(directory, p, f"clean[{i}]")
                  for i, p in enumerate(data.get("clean") or []))
    post = data.get("post") or {}
    if not isinstance(post, dict):
        raise Invalid(f"recipe {path}: post must be a mapping", _FIX)
    return Recipe(name, path, program, tuple(steps), products, ms, clean,
                  {"fail": vela.get("fail", "none"), "fail_at": fail_at}, post, text)
