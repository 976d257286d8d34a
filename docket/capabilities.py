"""Capabilities: a folder under ``templates/`` with ``capability.yaml`` and Jinja2 templates.

A DA adds a capability by adding a folder, with no code. Loading checks the definition,
its state machine and its templates, and every error names the file, the line and the
field.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from docket.documents import DocumentError, Problem, load_yaml
from docket.errors import Invalid
from docket.fileio import is_disk_error, relative_path_problem
from docket.quoting import quote
from docket.statemachine import Machine, MachineError
from schemas.capability import CapabilityDefinition, MachineSpec, ParameterSpec

__all__ = ["Capability", "CapabilityError", "load_capability", "list_capabilities",
           "load_machine", "resolve_parameters", "CapabilityCache"]

MACHINES_DIR = "_machines"


class CapabilityError(Exception):
    """A capability folder that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Capability:
    name: str
    folder: Path
    definition: CapabilityDefinition
    machine: Machine
    mtime_ns: int
    policy: Any = None  # the FailurePolicy its failures are judged by
    # where its templates are looked up, its own folder first, then what it extends
    folders: tuple[Path, ...] = ()

    @property
    def template_folders(self) -> tuple[Path, ...]:
        return self.folders or (self.folder,)


def _where(path: Path, marks: dict[tuple[Any, ...], tuple[int, int]], loc: tuple[Any, ...]) -> str:
    key = loc
    while key and key not in marks:
        key = key[:-1]
    line = marks.get(key, (None, None))[0]
    return f"{path}:{line}" if line else str(path)


def _read(path: Path) -> tuple[Any, dict[tuple[Any, ...], tuple[int, int]]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        if is_disk_error(exc):
            raise  # not the capability's fault, nor a request's: the pass stops, retried
        raise CapabilityError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return load_yaml(raw, what="file")
    except DocumentError as exc:
        first = exc.problems[0]
        where = f"{path}:{first.line}" if first.line else str(path)
        raise CapabilityError(f"{where}: {first.message}") from None


def load_machine(templates_dir: Path, spec: str | MachineSpec, owner: Path,
                 marks: dict[tuple[Any, ...], tuple[int, int]] | None = None) -> Machine:
    """A machine by name (``templates/_machines/<name>.yaml``) or inline in ``owner``."""
    if isinstance(spec, str):
        path = templates_dir / MACHINES_DIR / f"{spec}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (templates_dir / MACHINES_DIR).glob("*.yaml"))
            raise CapabilityError(f"{owner}: state_machine {spec!r} does not exist; "
                                  f"shipped machines: {', '.join(known) or 'none'}")
        data, mmarks = _read(path)
        try:
            mspec = MachineSpec.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            raise CapabilityError(f"{_where(path, mmarks, loc)}: "
                                  f"{'.'.join(map(str, loc))}: {err['msg']}") from None
        name, where_path, where_marks, prefix = spec, path, mmarks, ()
    else:
        mspec, name, where_path, where_marks = spec, "inline", owner, marks or {}
        prefix = ("state_machine",)
    try:
        return Machine.build(name, list(mspec.states), mspec.initial, list(mspec.final),
                             list(mspec.transitions),
                             known_capabilities=set(list_capabilities(templates_dir)))
    except MachineError as exc:
        loc = (*prefix, "transitions", exc.index) if exc.index is not None else prefix
        raise CapabilityError(f"{_where(where_path, where_marks, loc)}: {exc}") from None


def _extend(templates_dir: Path, name: str, data: dict[str, Any], path: Path,
            marks: dict[tuple[Any, ...], tuple[int, int]], seen: tuple[str, ...]
            ) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """``extends: base``: the base's settings with this file's on top (parameters merged by
    name), and the base's templates behind this folder's."""
    base_name = data["extends"]
    if base_name in (*seen, name):
        raise CapabilityError(f"{_where(path, marks, ('extends',))}: extends {base_name!r} "
                              f"makes a loop ({' -> '.join((*seen, name, base_name))})")
    if not isinstance(base_name, str) or not (templates_dir / base_name / "capability.yaml"
                                              ).is_file():
        known = ", ".join(list_capabilities(templates_dir)) or "none"
        raise CapabilityError(f"{_where(path, marks, ('extends',))}: extends {base_name!r}, "
                              f"which is not a capability; known capabilities: {known}")
    base = load_capability(templates_dir, base_name, _seen=(*seen, name))
    merged = base.definition.model_dump(exclude_unset=True, exclude={"name", "extends"})
    merged.update({k: v for k, v in data.items() if k != "parameters"})
    parameters = dict(merged.get("parameters") or {})
    parameters.update(data.get("parameters") or {})
    merged["parameters"] = parameters
    return merged, (templates_dir / name, *base.template_folders)


def load_capability(templates_dir: Path, name: str, _seen: tuple[str, ...] = ()) -> Capability:
    folder = templates_dir / name
    path = folder / "capability.yaml"
    if name.startswith(("_", ".")) or not path.is_file():
        known = ", ".join(c for c in list_capabilities(templates_dir))
        if not known:  # a new home: say where capabilities come from
            raise CapabilityError(
                f"unknown capability {name!r}: this home has no capabilities ({templates_dir}"
                f" {'holds none' if templates_dir.is_dir() else 'does not exist'}); set "
                "templates_dir in the home's docket.yaml (in a repository of requests: in "
                "its .docket.yaml) to a folder of capabilities, such as the docket "
                "repository's templates/, or add one there (docs/capabilities.md)")
        raise CapabilityError(_unknown(templates_dir, name))
    data, marks = _read(path)
    folders: tuple[Path, ...] = (folder,)
    if isinstance(data, dict) and data.get("extends") is not None:
        data, folders = _extend(templates_dir, name, data, path, marks, _seen)
    try:
        definition = CapabilityDefinition.model_validate(data)
    except ValidationError as exc:
        reasons = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            reasons.append(f"{_where(path, marks, loc)}: {'.'.join(map(str, loc))}: "
                           f"{err['msg']}")
        raise CapabilityError("; ".join(reasons)) from None
    if definition.name != name:
        raise CapabilityError(f"{_where(path, marks, ('name',))}: name {definition.name!r} "
                              f"must match the folder name {name!r}")
    machine = load_machine(templates_dir, definition.state_machine, path, marks)
    if definition.start_state is not None and definition.start_state not in machine.states:
        raise CapabilityError(f"{_where(path, marks, ('start_state',))}: start_state "
                              f"{definition.start_state!r} is not a state of machine "
                              f"{machine.name!r} ({', '.join(machine.states)})")
    if definition.requires_qa and not machine.has_event("qa-pass"):
        raise CapabilityError(f"{_where(path, marks, ('requires_qa',))}: requires_qa is true "
                              f"but machine {machine.name!r} has no qa-pass transition; use "
                              "single-qa or two-stage-qa")
    if not any((f / definition.workflow).is_file() for f in folders):
        raise CapabilityError(f"{_where(path, marks, ('workflow',))}: workflow template "
                              f"{definition.workflow!r} does not exist in {folder}")
    for pname, pspec in definition.parameters.items():
        if pspec.default is not None:
            try:
                _coerce(pname, pspec, pspec.default)
            except ValueError as exc:
                raise CapabilityError(f"{_where(path, marks, ('parameters', pname))}: "
                                      f"parameters.{pname}.default: {exc}") from None
    from docket.policy import PolicyError, load_policy

    try:
        policy = load_policy(templates_dir, definition.failure_policy)
    except PolicyError as exc:
        raise CapabilityError(f"{_where(path, marks, ('failure_policy',))}: {exc}") from None
    mtime = max(p.stat().st_mtime_ns for f in folders for p in f.iterdir())
    return Capability(name, folder, definition, machine, mtime, policy, folders)


def _unknown(templates_dir: Path, name: str) -> str:
    """An unknown capability's error: the nearest name a DA may have meant, and the ones
    they can request (``requestable``: no bases, nothing only docket submits)."""
    import difflib

    offered = _offered(templates_dir)
    near = difflib.get_close_matches(name, offered, n=1, cutoff=0.6)
    return (f"unknown capability {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
            + f"; capabilities to request: {', '.join(offered) or 'none'}")


def requestable(templates_dir: Path, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The capabilities a DA can request, and why each of the others cannot be: a base
    (``enabled: false``, for ``extends``), a built-in one only docket submits
    (``submitters: []``), or one that cannot be read."""
    open_, closed = [], {}
    for name in names:
        try:
            definition = load_capability(templates_dir, name).definition
        except CapabilityError as exc:
            closed[name] = f"cannot be read: {exc}"
            continue
        if not definition.enabled:
            closed[name] = "disabled"
        elif definition.submitters == []:
            closed[name] = "built in: made by docket from other documents"
        else:
            open_.append(name)
    return open_, closed


_OFFERED: dict[Path, tuple[tuple[Any, ...], list[str]]] = {}


def _offered(templates_dir: Path) -> list[str]:
    """``requestable``'s first list, worked out again only when a definition changes
    (~50 ms for the shipped ones: a spool full of misspelt requests must not pay it for
    every document)."""
    names = list_capabilities(templates_dir)
    try:
        stamp: tuple[Any, ...] | None = tuple(
            (n, (st := (templates_dir / n / "capability.yaml").stat()).st_mtime_ns,
             st.st_size, st.st_ino) for n in names)
    except OSError:  # one went away meanwhile: work it out, remember nothing
        stamp = None
    cached = _OFFERED.get(templates_dir)
    if cached is not None and stamp is not None and cached[0] == stamp:
        return cached[1]
    offered, _ = requestable(templates_dir, names)
    if stamp is not None:
        _OFFERED[templates_dir] = (stamp, offered)
    return offered


def list_capabilities(templates_dir: Path) -> list[str]:
    if not templates_dir.is_dir():
        return []
    return sorted(p.name for p in templates_dir.iterdir()
                  if not p.name.startswith(("_", ".")) and (p / "capability.yaml").is_file())


class CapabilityCache:
    """Loads each capability once, again only when a file in its folder changes."""

    # How long a capability is trusted before its folder is looked at again: an edit is
    # seen within this time, and intake does not stat the folder for every document.
    RECHECK_S = 1.0

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._cache: dict[str, tuple[Capability, float]] = {}

    def get(self, name: str) -> Capability:
        cached = self._cache.get(name)
        now = time.monotonic()
        if cached is not None:
            capability, checked = cached
            if now - checked < self.RECHECK_S:
                return capability
            try:
                mtime = max(e.stat().st_mtime_ns for f in capability.template_folders
                            for e in os.scandir(f))
            except (OSError, ValueError):
                mtime = -1
            if mtime == capability.mtime_ns:
                self._cache[name] = (capability, now)
                return capability
        capability = load_capability(self.templates_dir, name)
        self._cache[name] = (capability, now)
        return capability


def _submittable(text: str) -> None:
    """Refuse at intake what could not be written into a submit file later."""
    try:
        quote(text, "argument")
    except Invalid as exc:
        raise ValueError(exc.what) from None


def _path(value: str, prefix: str = "") -> None:
    """A path parameter names a file inside the processing directory: relative, without
    '..'. (Where a symlink there leads is checked by the job that writes it: the null
    tool refuses a path that leaves its working directory.)"""
    problem = relative_path_problem(value)
    if problem is not None:
        raise ValueError(f"{prefix}path {value!r} {problem}; give a path relative to the "
                         "processing directory, without '..'")


def _coerce(name: str, spec: ParameterSpec, value: Any) -> Any:
    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        if kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            raise ValueError(f"expected a whole number, got {value!r}")
        number = int(value) if kind == "int" else float(value)
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError(f"{number} is below the minimum {spec.minimum:g}")
        if spec.maximum is not None and number > spec.maximum:
            raise ValueError(f"{number} is above the maximum {spec.maximum:g}")
        value = number
    elif kind == "list":
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        for i, item in enumerate(value):
            if isinstance(item, list | dict):
                raise ValueError("list items must be plain values")
            _submittable(str(item))
            if len(str(item)) > spec.max_length:
                raise ValueError(f"a list item is longer than {spec.max_length} characters")
            if spec.items == "path":
                if not isinstance(item, str):
                    raise ValueError(f"item {i}: expected a path, got {item!r} (quote it)")
                _path(item, f"item {i}: ")
    else:
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {value!r} (quote it)")
        _submittable(value)
        if len(value) > spec.max_length:
            raise ValueError(f"is longer than {spec.max_length} characters")
        if kind == "path":
            _path(value)
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{value!r} is not one of {spec.choices}")
    return value


def resolve_parameters(capability: Capability, given: dict[str, Any]) -> tuple[
        dict[str, Any], list[Problem]]:
    """Given parameters checked against the definition, defaults filled in.

    Returns the resolved parameters and the problems, each with its field path.
    """
    problems: list[Problem] = []
    resolved: dict[str, Any] = {}
    specs = capability.definition.parameters
    for name in given:
        if name not in specs:
            known = ", ".join(sorted(specs)) or "none"
            problems.append(Problem(f"unknown parameter for capability {capability.name!r}; "
                                    f"known parameters: {known}",
                                    path=f"spec.parameters.{name}"))
    for name, spec in specs.items():
        if name in given:
            try:
                resolved[name] = _coerce(name, spec, given[name])
            except ValueError as exc:
                problems.append(Problem(str(exc), path=f"spec.parameters.{name}"))
        elif spec.required:
            problems.append(Problem("this parameter is required",
                                    path=f"spec.parameters.{name}"))
        else:
            resolved[name] = spec.default
    return resolved, problems
