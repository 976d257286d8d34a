"""Helpers for the HTCondor-side tests: render shipped templates, stand in for
condor_dagman, replay node events into a real store, keep unmarked tests away from any
live pool, remove every job a pool test submitted, and say why the pool tests cannot run
here (``pool_missing``)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
import htcondor2  # noqa: E402 - after CONDOR_CONFIG, as the code under test does

from docket.capabilities import load_capability, resolve_parameters  # noqa: E402
from docket.render import Rendered, render_execution  # noqa: E402
from docket.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# the tools of the Python running the tests (its venv's bin), wherever that venv is
TOOLS = Path(sys.executable).parent
DATA = Path(__file__).resolve().parent / "data"
TEMPLATES = REPO / "templates"
# 'tasks' takes no parameters from people: docket makes its plan from a task workflow
# document (its templates are checked in tests/tasks/test_task_templates.py)
SHIPPED = sorted(p.name for p in TEMPLATES.iterdir()
                 if (p / "capability.yaml").is_file() and not p.name.startswith(("_", "."))
                 and p.name != "tasks")


def stub_dagman(directory: Path) -> Path:
    """An executable named condor_dagman: from_dag only needs one to exist."""
    path = directory / "condor_dagman"
    path.write_text("#!/bin/sh\necho 'a stand-in for condor_dagman' >&2\nexit 1\n")
    path.chmod(0o755)
    return path


def render(name: str, directory: Path, given: dict[str, Any], request: str = "run-1",
           output_dir: str | None = None, home: Path | None = None
           ) -> tuple[Rendered, dict[str, Any]]:
    """Render shipped capability ``name`` with ``given`` parameters, as the launcher does."""
    capability = load_capability(TEMPLATES, name)
    parameters, problems = resolve_parameters(capability, given)
    assert not problems, [str(p) for p in problems]
    meta = {"name": request, "version": 1, "execution": 1, "number": 1,
            "capability": name, "priority": 0, "output_dir": output_dir,
            "created": "2025-03-01T10:00:00.000000Z", "labels": {}}
    document = json.dumps({"metadata": {"name": request}, "spec": {"parameters": given}})
    rendered = render_execution(capability, directory, request=meta, parameters=parameters,
                                document=document, tools_dir=TOOLS, home_dir=home)
    return rendered, parameters


def check_rendered(directory: Path) -> list[Path]:
    """Every node's submit file parses with htcondor2.Submit and passes docket's checks;
    the submit files, sorted."""
    from docket.dag import read_dag
    from docket.submit import check_submit

    dag = read_dag(directory / "workflow.dag")
    submits = sorted({directory / n.submit_file for n in dag.nodes.values()})
    assert submits
    for path in submits:
        description = htcondor2.Submit(path.read_text())  # raises on what it refuses
        assert "executable" in description
        assert check_submit(path) == [], path
    return submits


def replay(database: Path, events: list[dict[str, Any]], execution: int = 1,
           request: str = "run-1") -> Store:
    """Record node events through the real store (its reducer fills the nodes table)."""
    store = Store(database)
    with store.transaction():
        for event in events:
            event = dict(event)
            kind = event.pop("type")
            store.record(kind, request=request, version=1, execution=execution, **event)
    return store


@contextmanager
def outside_tmp() -> Iterator[Path]:
    """A scratch directory not under /tmp (stock DAGMan refuses node logs there)."""
    path = Path(tempfile.mkdtemp(prefix="docket-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _condor_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k == "CONDOR_CONFIG" or k.startswith("_CONDOR_")}


@contextmanager
def no_pool_reachable() -> Iterator[None]:
    """HTCondor configured with nothing: a test inside cannot reach any schedd, even where
    CONDOR_CONFIG (or _CONDOR_*) points at a live pool. The configuration before is put
    back (and re-read by the bindings) afterwards."""
    saved = _condor_environment()
    for key in saved:
        del os.environ[key]
    os.environ["CONDOR_CONFIG"] = "/dev/null"
    htcondor2.reload_config()
    try:
        yield
    finally:
        for key in _condor_environment():
            del os.environ[key]
        os.environ.update(saved)
        htcondor2.reload_config()


def remove_jobs(schedd: Any, clusters: set[int], wait_s: float = 120) -> None:
    """Remove the DAGMan jobs ``clusters`` and their node jobs; wait until none is queued."""
    if not clusters:
        return
    constraint = " || ".join(f"ClusterId == {n} || DAGManJobId == {n}"
                             for n in sorted(clusters))
    schedd.act(htcondor2.JobAction.Remove, constraint, "docket test clean-up")
    deadline = time.monotonic() + wait_s
    while schedd.query(constraint=constraint, projection=["ClusterId"]):
        if time.monotonic() > deadline:
            break
        time.sleep(2)


def dagman_clusters(root: Path) -> set[int]:
    """Every DAGMan job submitted for the DAGs under ``root`` (their logs and records)."""
    from docket.engines.htcondor import htc_read_events

    clusters: set[int] = set()
    for log in root.glob("**/*.dag.dagman.log"):
        clusters |= {e["cluster"] for e in htc_read_events(log)}
    for record in root.glob("**/*.dag.condor.json"):
        cluster = json.loads(record.read_text()).get("cluster")
        if cluster is not None:
            clusters.add(int(cluster))
    return clusters


@contextmanager
def removing_jobs(engine: Any, dag: Path) -> Iterator[None]:
    """Around a pool test: every DAGMan job submitted for ``dag`` (and so its node jobs)
    is removed from the queue at the end, whatever happened."""
    try:
        yield
    finally:
        remove_jobs(engine.schedd(), dagman_clusters(dag.parent))


HOW_TO_RUN = ("run them on a pool's access point (a personal pool will do: the 'minicondor' "
              "package, or 'condor_master' with a one-host configuration) as a user the "
              "schedd accepts jobs from: 'pytest -m condor tests/htcondor'; they put their "
              "processing directories under /var/tmp (stock DAGMan refuses node logs in "
              "/tmp), and DOCKET_POOL_TIMEOUT_S (default 600) bounds each wait")


@functools.cache
def pool_missing() -> str | None:
    """Why the pool tests cannot run on this machine, or None when a schedd answers."""
    if shutil.which("condor_submit_dag") is None:
        return f"no HTCondor pool here: condor_submit_dag is not on PATH; {HOW_TO_RUN}"
    try:
        htcondor2.Schedd().query(constraint="false", projection=["ClusterId"], limit=1)
    except Exception as exc:  # HTCondorIOError / HTCondorLocateError, by version
        return (f"condor_submit_dag is on PATH but this machine's schedd does not answer "
                f"({exc}); start HTCondor (condor_master) or set CONDOR_CONFIG, then "
                f"{HOW_TO_RUN}")
    return None
