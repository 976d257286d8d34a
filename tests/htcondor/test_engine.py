"""The HTCondor engine without a pool: /tmp refusal, DAGMan's submit description through the
real bindings (with a stand-in condor_dagman), clear errors without a schedd, and the DAG's
state read from DAGMan's own files (hand-written in DAGMan's formats). The tests marked
``condor`` run the null capability on a real pool."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from docket.dag import read_dag
from docket.engines.htcondor import (
    HTCondorEngine,
    check_processing_dir,
    dagman_out_exit,
    dagman_out_failures,
    engine_id,
    parse_engine_id,
    parse_node_status,
    with_node_status_file,
)
from docket.errors import ExternalFailure, Invalid
from schemas.sites import Site
from tests.htcondor.condorkit import DATA, outside_tmp, removing_jobs, render, stub_dagman

DAGMAN = DATA / "dagman"


def test_processing_directories_under_tmp_are_refused(tmp_path):
    assert "is under /tmp" in check_processing_dir(Path("/tmp/work/e1"))
    assert check_processing_dir(Path("/tmp")) is not None
    assert check_processing_dir(Path("/tmpfs/work")) is None
    assert check_processing_dir(Path("/var/tmp/work")) is None
    with outside_tmp() as scratch:
        (scratch / "link").symlink_to(tmp_path)
        assert check_processing_dir(scratch / "link") is not None  # /tmp behind a link
        assert check_processing_dir(scratch) is None


def test_submit_refuses_tmp_before_touching_anything(tmp_path):
    rendered, _ = render("null", tmp_path / "e1", {"sleep_s": 0.1})
    before = sorted(p.name for p in rendered.directory.iterdir())
    engine = HTCondorEngine(dagman_path=str(stub_dagman(tmp_path)))
    with pytest.raises(Invalid) as caught:
        engine.submit(rendered.dag)
    assert str(caught.value) == (
        f"the processing directory {rendered.directory} is under /tmp: stock DAGMan refuses "
        "a node log there (\"default node log file ... is in /tmp\", fatal under "
        "DAGMAN_USE_STRICT) — set work_dir in docket.yaml to a directory outside /tmp that "
        "the schedd's host sees")
    assert sorted(p.name for p in rendered.directory.iterdir()) == before
    assert not engine.started(rendered.dag)


def test_dagman_description_from_the_real_bindings():
    with outside_tmp() as scratch:
        rendered, _ = render("demo", scratch / "e1", {"targets": ["a", "b"]},
                             request="demo-run")
        site = Site(name="chtc", schedd="local", dagman_options={"MaxJobs": 7},
                    submit_attributes={"accounting_group": "group_vlass",
                                       "requirements": "(OpSysMajorVer == 9)"})
        engine = HTCondorEngine(site, dagman_path=str(stub_dagman(scratch)))
        description = engine.describe(rendered.dag)
        again = engine.describe(rendered.dag)  # a second try rewrites DAGMan's files
        assert str(description) == str(again)
        directory = rendered.directory
        assert description["universe"] == "scheduler"
        assert description["initialdir"] == str(directory)
        assert description["My.DocketDag"] == f'"{rendered.dag}"'
        assert description["My.JobBatchName"] == '"demo-run v1 e1"'
        assert description["accounting_group"] == "group_vlass"
        assert "-MaxJobs 7" in description["arguments"]
        assert f"-Dag {rendered.dag}" in description["arguments"]
        assert (directory / "workflow.dag.condor.sub").is_file()
        dag_text = rendered.dag.read_text()
        assert dag_text.count("NODE_STATUS_FILE workflow.dag.status 30 ALWAYS-UPDATE") == 1
        # the local engine still reads the DAG
        assert read_dag(rendered.dag).node_status_file == "workflow.dag.status"
        assert not engine.started(rendered.dag)  # described, never submitted


def test_without_a_schedd_submit_says_so_and_records_nothing():
    with outside_tmp() as scratch:
        rendered, _ = render("null", scratch / "e1", {"sleep_s": 0.1})
        engine = HTCondorEngine(dagman_path=str(stub_dagman(scratch)))
        with pytest.raises(ExternalFailure) as caught:
            engine.submit(rendered.dag)
        assert str(caught.value).startswith(
            "cannot reach this machine's schedd: Unable to locate local daemon")
        assert not engine.started(rendered.dag)
        remote = HTCondorEngine(Site(name="pool", schedd={"collector": "127.0.0.1:9",
                                                          "name": "ap1.example.org"}),
                                dagman_path=str(stub_dagman(scratch)))
        with pytest.raises(ExternalFailure) as caught:
            remote.submit(rendered.dag)
        assert "cannot reach schedd ap1.example.org via collector 127.0.0.1:9" in str(
            caught.value)


def test_engine_ids():
    assert engine_id("ap40.uw.osg-htc.org", 2041) == "condor:ap40.uw.osg-htc.org:2041"
    assert parse_engine_id("condor:ap40.uw.osg-htc.org:2041") == ("ap40.uw.osg-htc.org", 2041)
    assert parse_engine_id("condor:schedd@host:9618:7") == ("schedd@host:9618", 7)
    with pytest.raises(Invalid):
        parse_engine_id("local:1234")


def test_node_status_line_is_added_once():
    once = with_node_status_file("JOB a a.sub\n", "w.dag.status")
    assert once.endswith("NODE_STATUS_FILE w.dag.status 30 ALWAYS-UPDATE\n")
    assert with_node_status_file(once, "w.dag.status") == once
    assert with_node_status_file("JOB a a.sub\nnode_status_file mine.txt\n", "x") == \
        "JOB a a.sub\nnode_status_file mine.txt\n"


def test_dagman_files_are_read_for_failed_nodes():
    status = parse_node_status((DAGMAN / "failed.status").read_text())
    assert {n: s["status"] for n, s in status.items()} == {
        "fetch": "done", "process_0": "error", "process_1": "error", "process_2": "done",
        "deliver": "futile"}
    assert parse_node_status("[ Type = \"NodeStatus\"; Node = ") == {}  # caught mid-write
    out = (DAGMAN / "failed.dagman.out").read_text()
    assert dagman_out_failures(out) == {
        "process_0": "Job proc (101.0.0) failed with status -1002",
        "process_1": "Job proc (102.0.0) failed with signal 9"}
    assert dagman_out_exit(out) == (1, None)
    assert dagman_out_exit((DAGMAN / "tmp.dagman.out").read_text()) == (
        1, "ERROR: Warning is fatal error because of DAGMAN_USE_STRICT setting")


def _dag_dir(root: Path, *, cluster: int | None = 2041, state: str = "submitted",
             **files: str) -> Path:
    """A processing directory as DAGMan would leave it: fixture name per DAGMan file."""
    root.mkdir(parents=True, exist_ok=True)
    dag = root / "workflow.dag"
    dag.write_text("JOB fetch fetch.sub\n")
    (root / "workflow.dag.condor.json").write_text(json.dumps(
        {"state": state, "cluster": cluster, "schedd": "local", "site": "pool"}))
    for suffix, fixture in files.items():
        shutil.copy(DAGMAN / fixture, root / f"workflow.dag.{suffix.replace('_', '.')}")
    return dag


@pytest.mark.parametrize(("files", "alive", "result"), [
    ({"dagman_log": "running.dagman.log"}, True, None),
    ({"dagman_log": "held.dagman.log"}, True, None),
    ({"dagman_log": "released.dagman.log"}, True, None),
    ({}, True, None),  # queued: DAGMan has not written its log yet
    ({"dagman_log": "failed.dagman.log", "metrics": "failed.metrics", "status": "failed.status"},
     False, {"status": "failed", "exitcode": 1, "dag_status": "node failed",
             "failed_nodes": {"process_0": "Job proc (101.0.0) failed with status -1002",
                              "process_1": "Job proc (102.0.0) failed with signal 9"}}),
    ({"metrics": "failed.metrics", "dagman_out": "failed.dagman.out"},
     False, {"status": "failed", "exitcode": 1,
             "failed_nodes": {"process_0": "Job proc (101.0.0) failed with status -1002",
                              "process_1": "Job proc (102.0.0) failed with signal 9"}}),
    ({"metrics": "complete.metrics"}, False,
     {"status": "complete", "exitcode": 0, "failed_nodes": {}, "jobs_succeeded": 5}),
    ({"metrics": "removed.metrics"}, False, {"status": "removed", "exitcode": 2}),
    ({"dagman_log": "removed.dagman.log"}, False,
     {"status": "removed", "exitcode": 2,
      "reason": "the DAGMan job was removed: via condor_rm (by user alice)"}),
    ({"dagman_log": "failed.dagman.log", "dagman_out": "tmp.dagman.out"}, False,
     {"status": "failed", "exitcode": 1,
      "reason": "DAGMan exited with status 1 without writing workflow.dag.metrics: ERROR: "
                "Warning is fatal error because of DAGMAN_USE_STRICT setting; see "
                "workflow.dag.dagman.out"}),
])
def test_alive_and_result_come_from_dagmans_files(tmp_path, files, alive, result):
    dag = _dag_dir(tmp_path / "e1", **files)
    engine = HTCondorEngine()
    assert engine.started(dag)
    assert engine.alive(dag) is alive
    got = engine.result(dag)
    if result is None:
        assert got is None
    else:
        assert {k: got.get(k) for k in result} == result
        assert got["engine"] == "htcondor"


def test_held_dagman_job_state_keeps_the_reason(tmp_path):
    dag = _dag_dir(tmp_path / "e1", dagman_log="held.dagman.log")
    assert HTCondorEngine().job_state(dag) == {"state": "held", "exit_code": None,
                                               "reason": "paused by docket"}
    other = _dag_dir(tmp_path / "e2", cluster=999, dagman_log="held.dagman.log")
    assert HTCondorEngine().job_state(other)["state"] == "unknown"  # another cluster's log


def test_cancel_before_any_schedd_took_it(tmp_path, caplog):
    dag = _dag_dir(tmp_path / "e1", cluster=None, state="submitting")
    engine = HTCondorEngine()
    with caplog.at_level(logging.WARNING, logger="docket.engines.htcondor"):
        assert engine.alive(dag) is True  # cannot ask the schedd: never guess "dead"
        engine.cancel(dag)  # cannot reach it either: logged, asked again next pass
    assert "cannot tell whether DAGMan runs" in caplog.text
    assert "could not remove the DAGMan job" in caplog.text
    assert engine.result(dag) is None


def test_cancel_of_a_finished_dag_is_a_no_op(tmp_path):
    dag = _dag_dir(tmp_path / "e1", metrics="complete.metrics")
    HTCondorEngine().cancel(dag)  # no schedd needed: DAGMan already ended
    assert json.loads((dag.parent / "workflow.dag.condor.json").read_text())["state"] == \
        "submitted"


# a real pool ---------------------------------------------------------------------------

# marked condor: skipped, saying why, where no pool runs (conftest.py)


@pytest.mark.condor
def test_null_runs_on_the_local_pool():
    with outside_tmp() as scratch:
        rendered, _ = render("null", scratch / "e1", {"sleep_s": 1, "outputs": ["r.txt"]})
        engine = HTCondorEngine()
        with removing_jobs(engine, rendered.dag):
            ident = engine.submit(rendered.dag)
            assert ident.startswith("condor:local:")
            deadline = time.monotonic() + 600
            while engine.result(rendered.dag) is None:
                assert time.monotonic() < deadline, "the DAG did not finish in 10 minutes"
                time.sleep(2)
            result = engine.result(rendered.dag)
            assert result["status"] == "complete", result
            assert (rendered.directory / "r.txt").is_file()


@pytest.mark.condor
def test_cancel_removes_dagman_on_the_local_pool():
    with outside_tmp() as scratch:
        rendered, _ = render("null", scratch / "e1", {"sleep_s": 300})
        engine = HTCondorEngine()
        with removing_jobs(engine, rendered.dag):
            engine.submit(rendered.dag)
            engine.cancel(rendered.dag)
            deadline = time.monotonic() + 300
            while engine.result(rendered.dag) is None:
                assert time.monotonic() < deadline
                time.sleep(2)
            assert engine.result(rendered.dag)["status"] == "removed"


def test_unmarked_tests_cannot_reach_a_configured_pool(tmp_path, monkeypatch):
    import htcondor2

    from tests.htcondor.condorkit import no_pool_reachable

    config = tmp_path / "condor_config"
    config.write_text("DOCKET_PROBE = a live pool\nSCHEDD_HOST = 127.0.0.1\n")
    monkeypatch.setenv("CONDOR_CONFIG", str(config))
    monkeypatch.setenv("_CONDOR_SCHEDD_NAME", "live-schedd")
    htcondor2.reload_config()
    try:
        assert htcondor2.param.get("DOCKET_PROBE") == "a live pool"
        with no_pool_reachable():
            assert htcondor2.param.get("DOCKET_PROBE") is None
            assert "_CONDOR_SCHEDD_NAME" not in __import__("os").environ
            with pytest.raises(ExternalFailure, match="Unable to locate local daemon"):
                HTCondorEngine().schedd()
        assert htcondor2.param.get("DOCKET_PROBE") == "a live pool"  # put back
    finally:
        monkeypatch.undo()
        htcondor2.reload_config()


# pause and resume: DAGMan's halt file --------------------------------------------------


class _Schedd:
    """Takes submissions and actions and remembers them (no schedd runs here)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def submit(self, description):  # noqa: ANN001, ANN201
        self.calls.append(("submit", str(description["My.JobBatchName"])))
        return type("Result", (), {"cluster": lambda self: 2077})()

    def act(self, action, spec, reason=None):  # noqa: ANN001, ANN201
        self.calls.append((action.name, spec, reason))
        return {"TotalSuccess": 1}


def _submitted_and_paused(scratch: Path, request: str = "run-1"
                          ) -> tuple[Path, HTCondorEngine, _Schedd]:
    """A null DAG submitted to a stand-in schedd, then paused by docket."""
    rendered, _ = render("null", scratch / "e1", {"sleep_s": 1}, request=request)
    schedd = _Schedd()
    engine = HTCondorEngine(dagman_path=str(stub_dagman(scratch)), schedd=schedd)
    engine.submit(rendered.dag)
    engine.hold(rendered.dag)
    return rendered.dag, engine, schedd


def test_pause_writes_the_halt_file_and_resume_removes_it(tmp_path):
    dag = _dag_dir(tmp_path / "e1", dagman_log="running.dagman.log")
    schedd = _Schedd()
    engine = HTCondorEngine(schedd=schedd)
    engine.hold(dag, "paused by a user")
    halt = dag.with_name("workflow.dag.halt")
    assert halt.read_text() == "paused by a user\n"
    assert engine.alive(dag) and engine.result(dag) is None
    engine.release(dag)
    assert not halt.exists()
    assert schedd.calls == []  # no hold, no release: nothing waits out a cool-down


def test_a_dag_that_halted_while_paused_waits_and_resume_runs_its_rescue_dag():
    with outside_tmp() as scratch:
        dag, engine, schedd = _submitted_and_paused(scratch, "paused-1")
        # DAGMan finished the running jobs, wrote a rescue DAG and exited halted (status 6)
        metrics = {"DagStatus": 6, "exitcode": 1, "dagman_id": "2077", "jobs": 1}
        dag.with_name("workflow.dag.metrics").write_text(json.dumps(metrics))
        assert engine.alive(dag) is True
        assert engine.result(dag) is None  # paused, not ended
        engine.release(dag)
        assert not dag.with_name("workflow.dag.halt").exists()
        assert json.loads(dag.with_name("workflow.dag.metrics.halted").read_text()) == metrics
        assert [c[0] for c in schedd.calls] == ["submit", "submit"]
        assert engine.alive(dag) and engine.result(dag) is None  # running again


def test_cancel_while_paused_and_halted_ends_it_as_removed(tmp_path):
    dag = _dag_dir(tmp_path / "e1")
    engine = HTCondorEngine(schedd=_Schedd())
    engine.hold(dag)
    dag.with_name("workflow.dag.metrics").write_text(json.dumps({"DagStatus": 6,
                                                                 "exitcode": 1}))
    engine.cancel(dag)
    assert engine.alive(dag) is False
    assert engine.result(dag) == {"engine": "htcondor", "exitcode": 2, "status": "removed",
                                  "failed_nodes": {}, "reason": "cancelled while paused"}


def test_resume_releases_a_dagman_job_held_by_hand(tmp_path):
    dag = _dag_dir(tmp_path / "e1", dagman_log="held.dagman.log")
    schedd = _Schedd()
    HTCondorEngine(schedd=schedd).release(dag)
    assert schedd.calls == [("Release", "2041", None)]


def test_a_resume_the_schedd_refuses_leaves_the_dag_paused():
    with outside_tmp() as scratch:
        dag, engine, schedd = _submitted_and_paused(scratch)
        dag.with_name("workflow.dag.metrics").write_text(json.dumps({"DagStatus": 6,
                                                                     "exitcode": 1}))

        def refuse(description):  # noqa: ANN001, ANN202
            raise RuntimeError("Failed to connect to schedd")

        schedd.submit = refuse
        with pytest.raises(ExternalFailure, match="the schedd refused the DAGMan job"):
            engine.release(dag)
        # Submit.from_dag removed the halt file, as condor_submit_dag does; it is back
        assert dag.with_name("workflow.dag.halt").read_text() == "paused by docket\n"
        assert engine.alive(dag) is True and engine.result(dag) is None  # still paused


def test_a_resume_as_dagman_exits_halted_is_resubmitted_not_failed():
    """DAGMan reads the halt file at the start of a cycle and exits halted later in that
    cycle (dagman_main.cpp, condor_event_timer): a resume in between must not fail it."""
    with outside_tmp() as scratch:
        dag, engine, schedd = _submitted_and_paused(scratch, "race-1")
        engine.release(dag)  # DAGMan still running: only the halt file goes
        assert not dag.with_name("workflow.dag.halt").exists()
        # ... but it had already decided: a rescue DAG, metrics with DAG status 6
        metrics = {"DagStatus": 6, "exitcode": 1, "dagman_id": "2077"}
        dag.with_name("workflow.dag.metrics").write_text(json.dumps(metrics))
        # not an ending, and not alive: the watcher resumes it (launch.follow)
        assert engine.result(dag) is None
        assert engine.alive(dag) is False
        assert engine.resume(dag) == "condor:local:2077"
        assert json.loads(dag.with_name("workflow.dag.metrics.halted").read_text()) == metrics
        assert engine.alive(dag) and engine.result(dag) is None  # running again
        assert [c[0] for c in schedd.calls] == ["submit", "submit"]


def test_a_dag_halted_by_hand_still_fails_with_its_status(tmp_path):
    """Halted without docket's pause (a halt file or `htcondor dag halt` by hand): the
    execution ends, and says why."""
    dag = _dag_dir(tmp_path / "e1")
    dag.with_name("workflow.dag.metrics").write_text(json.dumps({"DagStatus": 6,
                                                                 "exitcode": 1}))
    engine = HTCondorEngine(schedd=_Schedd())
    assert engine.alive(dag) is False
    result = engine.result(dag)
    assert (result["status"], result["dag_status"]) == ("failed", "halted")
    assert result["reason"] == "DAGMan ended with exit code 1 (DAG status: halted)"


def test_a_dag_with_a_final_node_is_paused_by_holding_its_dagman_job(tmp_path):
    """A halted DAG runs its FINAL node before it exits (main_shutdown_rescue): pausing
    one that way would run it early, so its DAGMan job is held and released instead."""
    dag = _dag_dir(tmp_path / "e1", dagman_log="running.dagman.log")
    dag.write_text("JOB fetch fetch.sub\nFINAL tidy tidy.sub\n")
    schedd = _Schedd()
    engine = HTCondorEngine(schedd=schedd)
    engine.hold(dag, "paused by a user")
    assert not dag.with_name("workflow.dag.halt").exists()
    assert engine.alive(dag) and engine.result(dag) is None
    engine.release(dag)  # the held event may not be in the DAGMan log yet
    assert schedd.calls == [("Hold", "2041", "paused by a user"), ("Release", "2041", None)]
    engine.release(dag)  # once released, a second resume does not act again
    assert len(schedd.calls) == 2
