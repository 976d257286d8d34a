"""Run any DAG file on this machine, as ``condor_submit_dag`` runs it on a pool, and
say beforehand what would not run here.

``run_dag_file`` starts the local runner (docket.engines.localdag) in the foreground
with DAGMan's files beside the DAG and returns DAGMan's exit status. Like
condor_submit_dag, a DAG whose last run failed runs again from its newest rescue DAG;
one that finished is run again from the start. ``check_dag_file`` reads the DAG, its
splices, sub-DAGs and submit files and lists what the local engine cannot do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docket.dag import SCHEDD_ONLY_COMMANDS, Dag, DagError, read_dag
from docket.engines.dagman_files import rescue_files
from docket.engines.localdag import dag_files, lock_is_held, stop_leftover_jobs
from docket.errors import DocketError, ExitCode, Invalid, NotFound
from docket.submit import check_submit, expand_submit

__all__ = ["DagCheck", "check_dag_file", "run_dag_file", "LOCAL_UNIVERSES"]

# universes the local engine runs; the others need a pool (or a VM, a grid, MPI)
LOCAL_UNIVERSES = frozenset({"vanilla", "scheduler", "local"})


class DagLocked(DocketError):
    exit_code = ExitCode.LOCKED
    code = "locked"


@dataclass
class DagCheck:
    """What ``docket dag check`` found: problems stop a run here, notes do not."""

    dag: str
    nodes: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def runs_locally(self) -> bool:
        return not self.problems


def _node_dir(dag: Dag, directory: str | None) -> Path:
    return dag.path.parent / directory if directory else dag.path.parent


def check_dag_file(path: Path, _seen: frozenset[Path] = frozenset()) -> DagCheck:
    """Read the DAG the way the runner will and list what would not run locally."""
    path = path.resolve()
    if not path.is_file():
        raise NotFound(f"{path}: no such DAG file", "give the path of a .dag file")
    result = DagCheck(str(path))
    try:
        dag = read_dag(path)
    except DagError as exc:
        result.problems.append(str(exc))
        return result
    result.nodes = len(dag.nodes)
    if dag.config_error:
        result.problems.append(dag.config_error)
    if dag.reject:
        result.problems.append(f"{dag.reject}: REJECT: DAGMan refuses to run this DAG")
    for where in dag.schedd_only:
        command = where.rsplit(": ", 1)[-1]
        if command in SCHEDD_ONLY_COMMANDS:
            result.notes.append(f"{where} needs a schedd: accepted and ignored here")
    if dag.job_attrs:
        result.notes.append("SET_JOB_ATTR sets attributes of the DAGMan job, which does "
                            "not exist here: recorded in the metrics only")
    for node in dag.nodes.values():
        if node.noop:
            continue
        where = node.where or str(path)
        folder = _node_dir(dag, node.directory)
        if node.subdag is not None:
            inner = folder / node.subdag
            if inner in _seen or inner == path:
                result.problems.append(f"{where}: SUBDAG {node.name} runs its own DAG")
                continue
            sub = check_dag_file(inner, _seen | {path})
            result.problems += [f"in SUBDAG {node.name}: {p}" for p in sub.problems]
            result.notes += [f"in SUBDAG {node.name}: {n}" for n in sub.notes]
            continue
        submit = folder / node.submit_file
        if node.inline_submit is None:
            if not submit.is_file():
                result.problems.append(f"{where}: node {node.name}: submit file {submit} "
                                       "does not exist")
                continue
            result.problems += [f"node {node.name}: {p}" for p in check_submit(submit)]
        try:
            procs = expand_submit(submit, node.name, node.vars, 1, 0, node.append_vars,
                                  cwd=folder, text=node.inline_submit)
        except (Invalid, OSError) as exc:
            result.problems.append(f"{where}: node {node.name}: {exc}")
            continue
        for spec in procs[:1]:
            if spec.universe not in LOCAL_UNIVERSES:
                result.problems.append(
                    f"{where}: node {node.name}: universe {spec.universe} does not run on "
                    f"the local engine (it runs {', '.join(sorted(LOCAL_UNIVERSES))})")
            if "$$(" in " ".join([spec.executable, *spec.arguments]):
                result.notes.append(f"node {node.name}: a $$(...) value needs the "
                                    "machine a pool matches: left as written here")
            if spec.container_image:
                result.notes.append(f"node {node.name}: container_image "
                                    f"{spec.container_image} is not used here")
    return result


def _prepare(dag: Path) -> bool:
    """Make a finished DAG runnable again; True when it runs from a rescue DAG."""
    files = dag_files(dag)
    if lock_is_held(files["lock"]):
        raise DagLocked(f"{dag.name} is running (its runner holds {files['lock'].name})",
                        "wait for it, or stop it with SIGTERM to the pid in the lock file")
    previous = None
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(files["metrics"].read_text())
    rescue = bool(rescue_files(dag)) and (previous is None or
                                          previous.get("status") != "complete")
    if previous is not None and not rescue:
        files["metrics"].unlink()
    # a runner that was killed may have left jobs running: stop them first
    stop_leftover_jobs(dag)
    # the rescue DAG (not the progress file) says what is done, as for DAGMan
    with contextlib.suppress(FileNotFoundError):
        files["progress"].unlink()
    return rescue


def run_dag_file(path: Path, max_jobs: int | None = None, *,
                 on_line: Callable[[str], None] | None = None,
                 shared_filesystem: bool = True, poll_s: float = 0.2) -> tuple[int, dict]:
    """Run the DAG to its end; return (DAGMan's exit status, the metrics).

    ``max_jobs`` limits nodes with jobs at once (condor_submit_dag -maxjobs);
    ``on_line`` receives each new dagman.out line as it is written (``--follow``).
    An interrupt removes the DAG as condor_rm would."""
    dag = path.resolve()
    if not dag.is_file():
        raise NotFound(f"{dag}: no such DAG file", "give the path of a .dag file")
    rescue = _prepare(dag)
    files = dag_files(dag)
    out_at = files["dagman.out"].stat().st_size if files["dagman.out"].exists() else 0
    argv = [sys.executable, "-m", "docket.engines.localdag", str(dag),
            "--max-jobs", str(os.cpu_count() or 1)]
    if max_jobs:
        argv += ["--max-submitted", str(max_jobs)]
    if rescue:
        argv.append("--rescue")
    if not shared_filesystem:
        argv.append("--no-shared-filesystem")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    child = subprocess.Popen(argv, cwd=dag.parent, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)

    def follow() -> None:
        nonlocal out_at
        if on_line is None or not files["dagman.out"].exists():
            return
        with open(files["dagman.out"]) as out:
            out.seek(out_at)
            while True:
                line = out.readline()
                if not line.endswith("\n"):
                    break  # a line still being written: read it next time
                on_line(line.rstrip("\n"))
                out_at = out.tell()

    try:
        while child.poll() is None:
            follow()
            time.sleep(poll_s)
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGTERM)  # the runner removes the DAG's jobs
        child.wait()
    follow()
    try:
        metrics = json.loads(files["metrics"].read_text())
    except (OSError, ValueError):
        metrics = {"status": "failed", "exitcode": child.returncode}
    return child.returncode, metrics
