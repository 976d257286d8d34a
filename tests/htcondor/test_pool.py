"""On a real HTCondor pool (marked ``condor``; where no pool runs, as here, they skip and
say what is missing and how to run them, see conftest.py): docket's watcher runs the
shipped capabilities through this machine's schedd, and what a DA sees is checked. Every
test removes every job it submitted, whatever happened (``poolkit.pool_home_at``).

Written against HTCondor 25.13.2 as recorded in ../shared/pool-recordings/ (the same runs
drive test_recordings.py here); the capabilities that landed later are in
test_pool_workflows.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, run_docket
from tests.htcondor.poolkit import (
    bindings,
    directory,
    docket,
    home_clusters,
    node_cluster,
    nodes,
    pool_home_at,
    state,
    submit,
    until,
)

pytestmark = pytest.mark.condor  # skipped, saying why, where no pool runs (conftest.py)


@pytest.fixture
def pool_home():  # noqa: ANN201
    with pool_home_at() as home:
        yield home


def test_demo_nodes_and_stages(pool_home):
    submit(pool_home, "demo-1", "demo", targets=["m31", "m33", "m51"])
    until(pool_home, lambda: state(pool_home, "demo-1") in ("complete", "failed"))
    assert state(pool_home, "demo-1") == "complete"
    table = {n: (r["state"], r["attempts"], r["exit_code"])
             for n, r in nodes(pool_home, "demo-1").items()}
    assert table == {n: ("done", 1, 0) for n in ("fetch", "process_0", "process_1",
                                                 "process_2", "deliver")}
    human = run_docket("show", "demo-1", "--home", str(pool_home)).out
    assert "  stage process (processing each item): done (3/3 nodes)" in human


def test_a_dag_retry_reruns_the_node(pool_home):
    submit(pool_home, "retry-1", "null", fail_first=1, retries=1, sleep_s=1)
    until(pool_home, lambda: state(pool_home, "retry-1") in ("complete", "failed"))
    assert state(pool_home, "retry-1") == "complete"
    assert nodes(pool_home, "retry-1")["run"]["attempts"] == 2


def _kill_on_the_execute_side(state_file: Path) -> None:
    """SIGKILL the null job whose --state-file is ``state_file`` (a personal pool runs it
    on this machine), as a node going away would."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(state_file).encode() in command:
            os.kill(int(proc.name), signal.SIGKILL)
            return
    raise AssertionError(f"no job with --state-file {state_file} runs here")


def test_a_job_killed_by_signal_9_is_retried_by_the_policy(pool_home):
    submit(pool_home, "kill-1", "null", sleep_s=60, outputs=["r.txt"])
    node_cluster(pool_home, "kill-1", "run", ("running",))
    _kill_on_the_execute_side(directory(pool_home, "kill-1") / "null.runs")
    until(pool_home, lambda: state(pool_home, "kill-1") in ("complete", "failed"))
    assert state(pool_home, "kill-1") == "complete"
    history = docket(pool_home, "history", "kill-1")["events"]
    decided = [e["data"] for e in history if e["type"] == "policy.decided"]
    assert [(d["action"], d["rule_index"]) for d in decided] == [("retry", 3)]
    assert nodes(pool_home, "kill-1")["run"]["attempts"] == 2


def test_a_memory_hold_is_retried_with_more_memory(pool_home):
    submit(pool_home, "hog-1", "memhog", mb=200, request_mb=64, sleep_s=20)
    until(pool_home, lambda: state(pool_home, "hog-1") in ("complete", "failed"))
    assert state(pool_home, "hog-1") == "complete"
    history = docket(pool_home, "history", "hog-1")["events"]
    held = [e["data"] for e in history if e["type"] == "node.held"]
    # 3/34 from periodic_hold where there are no cgroups (as recorded), 34 with them
    assert held[0]["hold_code"] == 34 or (held[0]["hold_code"], held[0]["hold_subcode"]) == (
        3, 34)
    decided = [e["data"] for e in history if e["type"] == "policy.decided"]
    assert decided[0]["adjustments"] == {"request_memory_mb": 256}
    adjusted = directory(pool_home, "hog-1") / "hog.run.adjusted.sub"
    assert "request_memory = 256" in adjusted.read_text()


def test_a_user_hold_fails_the_execution_with_its_code(pool_home):
    submit(pool_home, "held-1", "null", sleep_s=300)
    cluster = node_cluster(pool_home, "held-1", "run", ("running", "idle"))
    htcondor2, schedd = bindings()
    schedd.act(htcondor2.JobAction.Hold, str(cluster), "held by the test")
    until(pool_home, lambda: state(pool_home, "held-1") in ("complete", "failed"))
    assert state(pool_home, "held-1") == "failed"
    run = nodes(pool_home, "held-1")["run"]
    assert (run["hold_code"], run["hold_subcode"]) == (1, 0)
    out = run_docket("inspect", "held-1", "--home", str(pool_home)).out
    assert "node run: held, then removed (code 1/0)" in out
    assert "(rule #6 hold_code 1 -> fail)" in out


def test_cancel_removes_the_dag(pool_home):
    submit(pool_home, "cancel-1", "null", sleep_s=300)
    node_cluster(pool_home, "cancel-1", "run", ("running", "idle"))
    assert run_docket("cancel", "cancel-1", "--home", str(pool_home)).code == 0
    until(pool_home, lambda: docket(pool_home, "show", "cancel-1")["executions"][0][
        "engine_state"] == "done")
    assert state(pool_home, "cancel-1") == "cancelled"
    _, schedd = bindings()
    clusters = home_clusters(pool_home)
    assert not schedd.query(constraint=" || ".join(
        f"ClusterId == {c} || DAGManJobId == {c}" for c in clusters), projection=["ClusterId"])


def test_pause_and_resume_never_hold_the_dagman_job(pool_home):
    submit(pool_home, "pause-1", "demo", targets=["m31", "m33"], sleep_s=5)
    node_cluster(pool_home, "pause-1", "fetch", ("running", "idle", "done"))
    assert run_docket("pause", "pause-1", "--home", str(pool_home)).code == 0
    for _ in range(5):  # a while paused
        run_docket("tick", "--home", str(pool_home))
        time.sleep(2)
    assert run_docket("resume", "pause-1", "--home", str(pool_home)).code == 0
    until(pool_home, lambda: state(pool_home, "pause-1") in ("complete", "failed"))
    assert state(pool_home, "pause-1") == "complete"
    # the cool-down (SCHEDULER_UNIVERSE_COOL_DOWN_DURATION) follows a release of a held
    # DAGMan job; the halt file never holds it
    from docket.engines.htcondor import htc_read_events

    htcondor2, _ = bindings()
    log = directory(pool_home, "pause-1") / "workflow.dag.dagman.log"
    assert all(e["type"] != htcondor2.JobEventType.JOB_HELD for e in htc_read_events(log))
    # DAGMan saw docket's file (dag.cpp, SubmitReadyNodes, checks it every cycle)
    out = (directory(pool_home, "pause-1") / "workflow.dag.dagman.out").read_text()
    assert "DAG is halted because halt file " in out and "workflow.dag.halt exists" in out


def test_a_dag_that_halts_while_paused_runs_only_what_is_left_on_resume(pool_home):
    submit(pool_home, "halt-1", "demo", targets=["m31", "m33"], sleep_s=5)
    node_cluster(pool_home, "halt-1", "fetch", ("running", "idle"))
    assert run_docket("pause", "halt-1", "--home", str(pool_home)).code == 0
    folder = directory(pool_home, "halt-1")
    metrics = folder / "workflow.dag.metrics"
    # the running job finishes; DAGMan writes a rescue DAG and exits halted
    until(pool_home, metrics.exists)
    assert json.loads(metrics.read_text())["DagStatus"] == 6
    assert (folder / "workflow.dag.rescue001").is_file()
    assert "Exiting because DAG is halted and no jobs or scripts are running" in (
        folder / "workflow.dag.dagman.out").read_text()
    for _ in range(3):  # the watcher leaves a paused DAG that ended halted alone
        run_docket("tick", "--home", str(pool_home))
        time.sleep(2)
    shown = docket(pool_home, "show", "halt-1")["executions"][0]
    assert (shown["engine_state"], shown["held"]) == ("running", True)
    assert nodes(pool_home, "halt-1").get("deliver", {}).get("cluster") is None
    assert len(home_clusters(pool_home)) == 1
    assert run_docket("resume", "halt-1", "--home", str(pool_home)).code == 0
    until(pool_home, lambda: state(pool_home, "halt-1") in ("complete", "failed"))
    assert state(pool_home, "halt-1") == "complete"
    # a second DAGMan job ran the rescue DAG: nothing done before ran again
    assert len(home_clusters(pool_home)) == 2
    table = nodes(pool_home, "halt-1")
    assert {n: (r["state"], r["attempts"]) for n, r in table.items()} == {
        n: ("done", 1) for n in ("fetch", "process_0", "process_1", "deliver")}


def test_a_restarted_watcher_re_attaches_to_its_dag(pool_home):
    submit(pool_home, "attach-1", "null", sleep_s=30, outputs=["r.txt"])
    watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(pool_home)],
                             stderr=subprocess.DEVNULL)
    try:
        until(pool_home, lambda: bool(home_clusters(pool_home)), ticking=False)
        watch.send_signal(signal.SIGKILL)
        watch.wait()
        watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(pool_home)],
                                 stderr=subprocess.DEVNULL)
        until(pool_home, lambda: state(pool_home, "attach-1") in ("complete", "failed"),
              ticking=False)
    finally:
        watch.terminate()
        watch.wait(timeout=30)
    assert state(pool_home, "attach-1") == "complete"
    assert len(home_clusters(pool_home)) == 1  # one DAGMan job in all


def test_declared_outputs_are_checked_and_hashed(pool_home):
    import hashlib

    submit(pool_home, "out-1", "null", declared=[{"path": "r.txt", "min_size_bytes": 1}],
           sleep_s=1, outputs=["r.txt"])
    submit(pool_home, "out-2", "null", declared=[{"path": "never.txt"}], sleep_s=1)
    until(pool_home, lambda: {state(pool_home, "out-1"), state(pool_home, "out-2")} <= {
        "complete", "failed"})
    assert state(pool_home, "out-1") == "complete"
    made = directory(pool_home, "out-1") / "r.txt"
    products = docket(pool_home, "show", "out-1")["executions"][0]["products"]
    assert [(p["path"], p["size_bytes"], p["sha256"]) for p in products] == [
        ("r.txt", made.stat().st_size, hashlib.sha256(made.read_bytes()).hexdigest())]
    assert state(pool_home, "out-2") == "failed"
    assert "never.txt: missing" in docket(pool_home, "show", "out-2")["executions"][0][
        "reason"]


def test_inspect_of_a_failed_run(pool_home):
    submit(pool_home, "bad-1", "demo", targets=["m31", "m33"], fail_item="m33")
    until(pool_home, lambda: state(pool_home, "bad-1") in ("complete", "failed"))
    assert state(pool_home, "bad-1") == "failed"
    out = run_docket("inspect", "bad-1", "--home", str(pool_home)).out
    assert "node process_1: exited with 1" in out
    assert "failure policy (decided): fail (rule #4 exit_code 1,2 -> fail)" in out
    assert "    | processed item m33" in out
    assert "condor_history" in out and "condor_q" not in out
