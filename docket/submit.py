"""Read a submit description the way condor_submit would, into one spec per job proc.

Parsing and macro expansion are done by the ``htcondor2`` bindings themselves, so the
local engine sees the same values a pool would. The bindings accept much that
condor_submit later refuses, so ``check_submit`` adds docket's own checks.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from docket.errors import Invalid
from docket.quoting import split_arguments

__all__ = ["ProcSpec", "expand_submit", "check_submit", "sandboxed", "SUPPORTED_COMMANDS"]

# Submit commands the local engine honours; anything else is passed to HTCondor only.
SUPPORTED_COMMANDS = {
    "executable", "arguments", "environment", "initialdir", "transfer_input_files",
    "transfer_output_files", "output", "error", "log", "should_transfer_files",
    "when_to_transfer_output", "transfer_executable", "request_cpus", "request_memory",
    "request_disk", "universe", "getenv", "container_image", "concurrency_limits",
    "allowed_execute_duration", "allowed_job_duration",
}
# Accepted and passed to HTCondor, but meaningless on one machine: the local engine
# ignores them (requirements, rank, accounting, +attributes, ...).


@dataclass
class ProcSpec:
    node: str
    proc: int
    executable: str
    arguments: list[str]
    environment: dict[str, str]
    initialdir: Path
    transfer_input_files: list[str]
    transfer_output_files: list[str] | None
    output: str | None
    error: str | None
    transfer_files: bool
    container_image: str | None = None
    request: dict[str, str] = field(default_factory=dict)
    # getenv: True (all of the submitter's environment), False, or names/globs to copy
    getenv: bool | list[str] = False
    # (seconds, hold code): allowed_execute_duration holds with 47, allowed_job_duration 46
    max_runtime: tuple[float, int] | None = None
    # concurrency_limits: name -> weight
    limits: dict[str, float] = field(default_factory=dict)
    universe: str = "vanilla"
    # the job's own user log (``log =``), absolute; events go there as well as the DAG's
    log: str | None = None


def _import_htcondor():  # noqa: ANN202 - module object
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import htcondor2

    return htcondor2


def _file_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _output_list(value: str) -> list[str] | None:
    """transfer_output_files: None when not given (HTCondor then returns every new or
    changed top-level file), [] for the empty string "" (nothing comes back)."""
    if not value.strip():
        return None
    return [] if value.strip() == '""' else _file_list(value)


def _environment(value: str) -> dict[str, str]:
    env: dict[str, str] = {}
    value = value.strip()
    items = split_arguments(value) if value.startswith('"') else value.split(";")
    for item in items:
        if "=" in item:
            key, _, val = item.partition("=")
            env[key.strip()] = val
    return env


def _max_runtime(execute: str, job: str) -> tuple[float, int] | None:
    """The shorter of HTCondor's two runtime limits, with the hold code each gives."""
    found = []
    for value, code in ((execute, 47), (job, 46)):
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds > 0:
            found.append((seconds, code))
    return min(found) if found else None


def _limits(value: str) -> dict[str, float]:
    """``concurrency_limits = a, b:2.5`` -> {"a": 1.0, "b": 2.5} (names are case-blind)."""
    out: dict[str, float] = {}
    for item in _file_list(value):
        name, _, weight = item.partition(":")
        try:
            out[name.strip().lower()] = float(weight) if weight else 1.0
        except ValueError:
            out[name.strip().lower()] = 1.0
    return out


def _getenv(value: str) -> bool | list[str]:
    value = value.strip()
    if value.lower() in ("", "false", "no", "0"):
        return False
    if value.lower() in ("true", "yes", "1"):
        return True
    return [v for v in re.split(r"[\s,]+", value) if v]


_QUEUE_COUNT = re.compile(r"^\s*(\d+)\b")
# 'queue' or 'queue N': procs that depend on nothing outside the description itself
_PLAIN_QUEUE = re.compile(r"^\d*$")
# Specs of descriptions in which no macro is expanded: the same for every node that
# uses the file with the same VARS, so a wide DAG reads the bindings once, not per node.
_CONSTANT_SPECS: dict[tuple[object, ...], list[ProcSpec]] = {}
_CONSTANT_SPECS_MAX = 256
# $$([expression]): evaluated by the schedd at match time; constant ones need no schedd
_MATCH_EXPR = re.compile(r"\$\$\(\[(.*?)\]\)")


@functools.lru_cache(maxsize=64)
def _own_keys(text: str) -> frozenset[str]:
    """The commands a submit description sets itself (one parse per distinct file)."""
    return frozenset(k.lower() for k in _import_htcondor().Submit(text))


def _evaluate_constants(value: str) -> str:
    """Replace each ``$$([expr])`` that needs no machine ad by its value; leave the
    rest (a reference to the machine's attributes cannot be known here)."""
    if "$$([" not in value:
        return value
    import classad2

    def one(match: re.Match[str]) -> str:
        try:
            result = classad2.ExprTree(match[1]).eval()
        except Exception:  # an expression the ClassAd parser refuses stays as written
            return match[0]
        if isinstance(result, classad2.Value):  # Undefined or Error: needs a machine
            return match[0]
        if isinstance(result, bool):
            return "true" if result else "false"
        return str(result)

    return _MATCH_EXPR.sub(one, value)


def sandboxed(universe: str, should_transfer: str, shared_filesystem: bool) -> bool:
    """Whether HTCondor would run the job in a scratch directory with its files copied.

    Scheduler and local universe jobs run on the access point in their initial
    directory. A vanilla job is sandboxed when it says ``should_transfer_files = YES``;
    with NO it runs in place, and with IF_NEEDED (or nothing) it runs in place on a
    shared filesystem and is sandboxed without one."""
    if universe in ("scheduler", "local"):
        return False
    should = should_transfer.strip().upper()
    if should == "YES":
        return True
    if should == "NO":
        return False
    return not shared_filesystem


def expand_submit(path: Path, node: str, vars: dict[str, str], cluster: int,
                  retry: int = 0, append_vars: set[str] | frozenset[str] = frozenset(),
                  *, cwd: Path | None = None, text: str | None = None,
                  shared_filesystem: bool = True) -> list[ProcSpec]:
    """One ``ProcSpec`` per proc that ``queue`` makes, with DAG VARS applied.

    VARS are prepended to the description (DAGMan's default, so a submit file can test
    them with ``if defined``), except names in ``append_vars`` (``VARS node APPEND``),
    which are set after it and override the file's own definitions.

    ``cwd`` is where condor_submit runs: DAGMan runs it in the DAG's directory (or the
    node's DIR), so relative paths in the file (initialdir, the executable, a queue
    ``from`` file) are read from there, not from the submit file's own directory; it
    defaults to the submit file's directory. ``text`` is an inline description
    (``JOB name { ... }``) used instead of reading ``path``. With
    ``shared_filesystem=False`` every vanilla job is sandboxed, as if it said
    ``should_transfer_files = YES``.
    """
    htcondor2 = _import_htcondor()
    cwd = cwd if cwd is not None else path.parent
    if text is None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise Invalid(f"{path}: cannot read the submit file: {exc}") from None
    # With no '$' in the description or its VARS, nothing per node (JOB, Cluster,
    # Process, RETRY, $ENV, $$([...])) can reach a value: the specs are those of any
    # earlier node with the same text and VARS (the text is read again every time, so a
    # PRE script that rewrites the file is seen)
    constant_key: tuple[object, ...] | None = None
    if "$" not in text and not any("$" in value for value in vars.values()):
        constant_key = (str(path), text, tuple(vars.items()), frozenset(append_vars),
                        str(cwd), shared_filesystem)
        known = _CONSTANT_SPECS.get(constant_key)
        if known is not None:
            return [dataclasses.replace(spec, node=node) for spec in known]
    try:
        own_keys = _own_keys(text)
        prepended = "".join(f"{key} = {value}\n" for key, value in vars.items()
                            if key not in append_vars)
        text = prepended + text
        description = htcondor2.Submit(text)
    except Exception as exc:  # the bindings raise bare exceptions on syntax errors
        raise Invalid(f"{path}: not a valid submit description: {exc}") from None
    qargs = (description.getQArgs() or "").strip()
    # 'queue $(n)': condor_submit expands macros (a DAG's VARS too) in the queue line
    qargs = re.sub(r"\$\((\w+)\)", lambda m: description.expand(m[1])
                   if m[1] in description else m[0], qargs)
    here = os.getcwd()
    try:
        os.chdir(cwd)  # 'queue x from file' reads relative to where condor_submit runs
        items = description.itemdata()
        rows = list(items) if items is not None else None
    except Exception as exc:
        raise Invalid(f"{path}: cannot read the queue statement {qargs!r}: {exc}") from None
    finally:
        os.chdir(here)
    # 'queue N', and 'queue N var from ...' (each item N times; the bindings drop the N)
    count_match = _QUEUE_COUNT.match(qargs)
    count = int(count_match[1]) if count_match else 1
    if rows is None:
        rows = [{}]
    plan = [(index, step, row) for index, row in enumerate(rows) for step in range(count)]
    procs = []
    for proc, (index, step, row) in enumerate(plan):
        # one proc: the description already parsed serves (a parse is most of the cost)
        one = description if len(plan) == 1 else htcondor2.Submit(text)
        # the prepended line lets 'if defined' see a VARS value; setting it again keeps
        # it exact (a submit line trims surrounding spaces) unless the file defines it
        for key, value in vars.items():
            if key in append_vars or key.lower() not in own_keys:
                one[key] = value
        for key, value in row.items():
            one[key] = value
        for key, value in {"JOB": node, "RETRY": str(retry), "Cluster": str(cluster),
                           "ClusterId": str(cluster), "Process": str(proc),
                           "ProcId": str(proc), "Step": str(step), "ItemIndex": str(index),
                           "Row": str(index), "Node": str(proc)}.items():
            one[key] = value

        def get(key: str, default: str = "", one=one) -> str:
            if key not in one:
                return default
            try:
                return _evaluate_constants(one.expand(key))
            except KeyError:  # the bindings' answer for a value that expands to nothing
                return ""

        initialdir = Path(get("initialdir") or cwd)
        if not initialdir.is_absolute():
            initialdir = cwd / initialdir
        # condor_submit reads a relative executable from where it runs (the node's
        # directory), not from initialdir
        executable = get("executable")
        if executable and not os.path.isabs(executable):
            executable = str(cwd / executable)
        outputs = get("transfer_output_files")
        universe = get("universe", "vanilla").lower()
        log = get("log") or None
        if log and not os.path.isabs(log):
            log = str(initialdir / log)
        procs.append(ProcSpec(
            node=node, proc=proc,
            executable=executable,
            arguments=split_arguments(get("arguments")),
            environment=_environment(get("environment")),
            initialdir=initialdir,
            transfer_input_files=_file_list(get("transfer_input_files")),
            transfer_output_files=_output_list(outputs),
            output=get("output") or None,
            error=get("error") or None,
            transfer_files=sandboxed(universe, get("should_transfer_files"),
                                      shared_filesystem),
            universe=universe,
            log=log,
            container_image=get("container_image") or None,
            max_runtime=_max_runtime(get("allowed_execute_duration"),
                                     get("allowed_job_duration")),
            limits=_limits(get("concurrency_limits")),
            request={k: get(k) for k in ("request_cpus", "request_memory", "request_disk")
                     if k in one},
            getenv=_getenv(get("getenv")),
        ))
    # 'queue x from file' and 'queue matching' read the filesystem: never reused
    if constant_key is not None and _PLAIN_QUEUE.match(qargs):
        if len(_CONSTANT_SPECS) >= _CONSTANT_SPECS_MAX:
            _CONSTANT_SPECS.clear()
        _CONSTANT_SPECS[constant_key] = procs
        return [dataclasses.replace(spec) for spec in procs]
    return procs


_SIZE = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B?)?$", re.IGNORECASE)


def check_submit(path: Path) -> list[str]:
    """Problems condor_submit would report that the bindings let through."""
    problems = []
    text = path.read_text()
    htcondor2 = _import_htcondor()
    try:
        description = htcondor2.Submit(text)
    except Exception as exc:
        return [f"{path}: not a valid submit description: {exc}"]
    keys = {k.lower() for k in description}
    if "executable" not in keys:
        problems.append(f"{path}: no executable")
    if not any(line.strip().lower().startswith("queue") for line in text.splitlines()):
        problems.append(f"{path}: no queue statement")
    for key in ("request_cpus", "request_memory", "request_disk"):
        if key in keys:
            value = description[key].strip()
            if not (_SIZE.match(value) or "(" in value or "$" in value):
                problems.append(f"{path}: {key} = {value!r} is not a size")
    for key in ("arguments", "environment"):
        if key in keys:
            value = description[key].strip()
            if value.count('"') % 2:
                problems.append(f"{path}: {key} has an unbalanced double quote")
    return problems
