"""The engine contract: the same behaviour checks against every registered engine that can
run here (the local one always; the HTCondor one is marked ``condor`` and needs a pool),
and the registry that maps a site's engine name to its class.

Each check runs a real DAG of small shell jobs through ``docket.engines.base.Engine`` only:
submit, status, read_events, cancel, hold/release, and what happens to a held node job.
"""

from __future__ import annotations

import inspect
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docket.engines.base import DagResult, DagState, DagStatus, Engine, RunStatus, Unsupported
from docket.engines.htcondor import HTCondorEngine
from docket.engines.local import LocalEngine
from docket.engines.registry import ENGINES, Engines, build_engine, engine_class
from docket.errors import Invalid
from schemas.sites import Site, SitesFile

needs_pool = pytest.mark.skipif(shutil.which("condor_submit_dag") is None,
                                reason="condor_submit_dag is not on PATH: no HTCondor pool "
                                       "on this machine")

# every registered engine, with what it needs to run here
ENGINE_CASES = [pytest.param("local", id="local"),
                pytest.param("htcondor", id="htcondor", marks=[pytest.mark.condor, needs_pool])]

# job.sh SLEEP_S EXIT [GATE]: waits for the file GATE (when given), sleeps, exits EXIT
JOB_SH = """#!/bin/sh
if [ -n "$3" ]; then
  n=0
  while [ ! -e "$3" ] && [ $n -lt 6000 ]; do sleep 0.1; n=$((n+1)); done
fi
sleep "$1"
exit "$2"
"""


@dataclass
class Case:
    """One engine under test, the directory its DAGs go in, and how long it may take
    (a pool's DAGMan scans its logs every few seconds; the local runner at once)."""

    engine: Engine
    root: Path
    timeout_s: float
    poll_s: float
    settle_s: float  # how long "nothing new started" is watched for


@pytest.fixture(params=ENGINE_CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "local":
        yield Case(build_engine("local", None), tmp_path, 60, 0.05, 1.5)
        return
    from tests.htcondor.condorkit import dagman_clusters, outside_tmp, remove_jobs

    with outside_tmp() as scratch:
        engine = build_engine("pool", Site(name="pool", schedd="local"))
        assert isinstance(engine, HTCondorEngine)
        try:
            yield Case(engine, scratch, 600, 2.0, 20.0)
        finally:
            remove_jobs(engine.schedd(), dagman_clusters(scratch))


def write_dag(root: Path, jobs: dict[str, str], edges: str = "",
              extra: dict[str, dict[str, str]] | None = None) -> Path:
    """A DAG of ``job.sh`` nodes: node -> its arguments; ``extra`` adds submit lines."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "job.sh"
    script.write_text(JOB_SH)
    script.chmod(0o755)
    lines = []
    for node, arguments in jobs.items():
        (root / f"{node}.sub").write_text(
            f"executable = {script}\narguments = \"{arguments}\"\n"
            f"output = {node}.out\nerror = {node}.err\n"
            + "".join(f"{k} = {v}\n" for k, v in (extra or {}).get(node, {}).items())
            + "queue\n")
        lines.append(f"JOB {node} {node}.sub\n")
    dag = root / "workflow.dag"
    dag.write_text("".join(lines) + edges)
    return dag


class Follower:
    """Reads a DAG's node events through the engine, as the watcher does."""

    def __init__(self, case: Case, dag: Path) -> None:
        self.case, self.dag = case, dag
        self.cursor: bytes | None = None
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        new, self.cursor = self.case.engine.read_events(self.dag, self.cursor)
        self.events += new
        return new

    def kinds(self, node: str) -> list[str]:
        return [e["type"] for e in self.events if e["node"] == node]

    def wait_for(self, what: str, seen: Any) -> None:
        deadline = time.monotonic() + self.case.timeout_s
        while not seen():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(self.case.poll_s)
            self.read()

    def until_ended(self) -> DagResult:
        self.wait_for("the DAG to end", lambda: self.case.engine.status(self.dag).state
                      == DagState.ENDED)
        self.read()
        result = self.case.engine.result(self.dag)
        assert result is not None
        return result


# the behaviour every engine shares ------------------------------------------------------


def test_a_dag_runs_to_the_end_and_its_events_say_what_ran(case):
    engine = case.engine
    dag = write_dag(case.root / "e1", {"A": "0 0", "B": "0 0"}, "PARENT A CHILD B\n")
    assert not engine.started(dag)
    engine_id = engine.submit(dag)
    assert isinstance(engine_id, str) and engine_id
    assert engine.started(dag)
    follower = Follower(case, dag)
    result = follower.until_ended()
    assert (result.engine, result.status, result.exit_code, result.ok) == (
        engine.name, RunStatus.COMPLETE, 0, True)
    assert dict(result.failed_nodes) == {}
    assert engine.status(dag) == DagStatus(DagState.ENDED, result)
    # the runner exits once it has written its result (it may still be doing so now)
    follower.wait_for("the runner to exit", lambda: engine.alive(dag) is False)
    assert engine.status(dag) == DagStatus(DagState.ENDED, result)  # ended stays ended
    for node in ("A", "B"):
        assert follower.kinds(node) == ["node.submitted", "node.started", "node.finished"]
    finished_a = next(i for i, e in enumerate(follower.events)
                      if e["node"] == "A" and e["type"] == "node.finished")
    submitted_b = next(i for i, e in enumerate(follower.events)
                       if e["node"] == "B" and e["type"] == "node.submitted")
    assert finished_a < submitted_b  # PARENT A CHILD B
    assert all(e["exit_code"] == 0 for e in follower.events if e["type"] == "node.finished")
    assert follower.read() == []  # the cursor moved past everything: nothing twice


def test_a_failing_node_fails_the_dag_and_is_named(case):
    dag = write_dag(case.root / "e1", {"A": "0 3", "B": "0 0"}, "PARENT A CHILD B\n")
    case.engine.submit(dag)
    follower = Follower(case, dag)
    result = follower.until_ended()
    assert result.status == RunStatus.FAILED and result.exit_code not in (0, None)
    assert list(result.failed_nodes) == ["A"]
    assert [e["exit_code"] for e in follower.events if e["type"] == "node.finished"] == [3]
    assert follower.kinds("B") == []  # its parent failed: it never ran


def test_cancel_removes_a_running_dag_and_is_idempotent(case):
    engine = case.engine
    dag = write_dag(case.root / "e1", {"A": "300 0"})
    engine.submit(dag)
    follower = Follower(case, dag)
    follower.wait_for("A to start", lambda: "node.started" in follower.kinds("A"))
    assert engine.status(dag) == DagStatus(DagState.RUNNING)
    assert engine.alive(dag) is True
    engine.cancel(dag)
    result = follower.until_ended()
    assert result.status == RunStatus.REMOVED and result.exit_code != 0
    assert "node.finished" not in follower.kinds("A")  # stopped, not run to its end
    engine.cancel(dag)  # again: nothing to do, nothing changes
    assert engine.result(dag) == result


def test_hold_starts_no_new_job_and_release_lets_the_dag_finish(case):
    engine = case.engine
    gate = case.root / "e1" / "go"
    dag = write_dag(case.root / "e1", {"A": f"0 0 {gate}", "B": "0 0"}, "PARENT A CHILD B\n")
    engine.submit(dag)
    follower = Follower(case, dag)
    follower.wait_for("A to start", lambda: "node.started" in follower.kinds("A"))
    engine.hold(dag, "paused by the contract test")
    gate.touch()  # A ends only now, after the hold: B is ready while the DAG is held
    follower.wait_for("A to end", lambda: "node.finished" in follower.kinds("A"))
    time.sleep(case.settle_s)
    follower.read()
    assert follower.kinds("B") == []
    assert engine.status(dag) == DagStatus(DagState.RUNNING)  # paused, neither ended nor lost
    engine.release(dag)
    result = follower.until_ended()
    assert result.status == RunStatus.COMPLETE
    assert follower.kinds("B") == ["node.submitted", "node.started", "node.finished"]


def test_a_held_node_job_ends_as_a_failed_node(case):
    """A job held for a missing input file: the local engine removes it itself; on a pool
    it waits until ``remove_node_job`` (what the watcher's failure policy calls)."""
    engine = case.engine
    dag = write_dag(case.root / "e1", {"A": "0 0"},
                    extra={"A": {"should_transfer_files": "YES",
                                 "when_to_transfer_output": "ON_EXIT",
                                 "transfer_input_files": "no-such-input.txt"}})
    engine.submit(dag)
    follower = Follower(case, dag)
    follower.wait_for("A to be held", lambda: "node.held" in follower.kinds("A"))
    held = next(e for e in follower.events if e["type"] == "node.held")
    assert held["hold_code"] == 13  # HTCondor's TransferInputError
    if engine.removes_held_jobs:
        with pytest.raises(Unsupported):
            engine.remove_node_job(dag, held["cluster"])
    else:
        engine.remove_node_job(dag, held["cluster"], reason="removed by the contract test")
    result = follower.until_ended()
    assert result.status == RunStatus.FAILED and list(result.failed_nodes) == ["A"]
    assert follower.kinds("A")[-1] == "node.aborted"


def test_a_dag_whose_runner_died_is_lost_and_resume_finishes_it(tmp_path):
    """Local only: its runner is a process here that the test can kill (a pool's DAGMan
    is the schedd's, and a removed DAGMan ends as removed, not lost)."""
    import os
    import signal

    from docket.engines.localdag import dag_files

    engine = build_engine("local", None)
    gate = tmp_path / "e1" / "go"
    dag = write_dag(tmp_path / "e1", {"A": f"0 0 {gate}"})
    engine.submit(dag)
    case = Case(engine, tmp_path, 60, 0.05, 1.5)
    follower = Follower(case, dag)
    follower.wait_for("A to start", lambda: "node.started" in follower.kinds("A"))
    runner = int(dag_files(dag)["lock"].read_text().split()[0])
    os.kill(runner, signal.SIGKILL)
    follower.wait_for("the runner to be gone", lambda: engine.status(dag).state
                      == DagState.LOST)
    assert engine.result(dag) is None and engine.started(dag)
    gate.touch()
    engine.resume(dag)
    assert follower.until_ended().status == RunStatus.COMPLETE


# the registry -----------------------------------------------------------------------------


def test_every_registered_engine_implements_the_whole_contract():
    assert {p.values[0] for p in ENGINE_CASES} == set(ENGINES)  # each one is checked above
    for name, cls in ENGINES.items():
        assert issubclass(cls, Engine) and not inspect.isabstract(cls), name
        assert cls.name == name
        assert engine_class(name) is cls
    assert (ENGINES["local"], ENGINES["htcondor"]) == (LocalEngine, HTCondorEngine)


def test_an_unknown_engine_name_says_which_are_known():
    with pytest.raises(Invalid) as caught:
        engine_class("slurm")
    assert str(caught.value) == "unknown engine 'slurm' — known engines: htcondor, local"


def test_a_sites_engine_is_built_from_its_settings_and_again_when_they_change():
    engines = Engines()
    local = engines.for_site(None)
    assert isinstance(local, LocalEngine) and local.shared_filesystem is True
    assert engines.for_site("local") is local
    pool = Site(name="pool", schedd="local", dagman_options={"MaxJobs": 4})
    engines.use_sites(SitesFile(sites=[Site(name="local", shared_filesystem=False), pool]))
    strict = engines.for_site("local")
    assert strict is not local and strict.shared_filesystem is False
    condor = engines.for_site("pool")
    assert isinstance(condor, HTCondorEngine)
    assert (condor.site, condor.dagman_options) == (pool, {"MaxJobs": 4})
    assert engines.for_site("pool") is condor  # unchanged settings: the same engine
    engines.use_sites(SitesFile(sites=[Site(name="pool", schedd="local")]))
    assert engines.for_site("pool") is not condor
    # a site taken out of sites.yaml: its engine still follows what runs there
    gone = engines.for_site("retired")
    assert isinstance(gone, HTCondorEngine) and gone.site is None


def test_results_read_from_any_metrics_file_are_the_same_record():
    result = DagResult.from_metrics({"engine": "local", "status": "failed", "exitcode": 1,
                                     "failed_nodes": {"A": "exited with 3"}, "jobs": 2},
                                    "local")
    assert result == DagResult("local", RunStatus.FAILED, 1, {"A": "exited with 3"},
                               details={"jobs": 2})
    assert DagResult.from_metrics(result.as_dict(), "local") == result
    # a status docket does not know reads as failed
    odd = DagResult.from_metrics({"status": "exploded", "exitcode": 1}, "local")
    assert (odd.status, odd.engine) == (RunStatus.FAILED, "local")
    # an old metrics file without a status: its exit code says
    assert DagResult.from_metrics({"exitcode": 0}, "local").status == RunStatus.COMPLETE
