"""The capabilities that landed after the first pool runs, on a real HTCondor pool (marked
``condor``; where no pool runs they skip and say why, see conftest.py): the VLASS set
with vela standing in for CASA, EWMS-style task workflows, and CHIME-style work done by
runners that are pool jobs. Each checks what the local-engine test of the same capability
checks (tests/workflows, tests/tasks), through this machine's schedd; every job submitted
from the home is removed at the end (``poolkit.pool_home_at``).

On a pool, a job gets no environment from the submitter: the tools find the home's
tools.yaml (archive, QA area) through the ``DOCKET_HOME`` the templates give each job, so
the archive and the QA area live inside the home, where the (shared) filesystem has them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_docket
from tests.htcondor.poolkit import (
    VELA,
    WAIT_S,
    bindings,
    directory,
    docket,
    ended,
    execution,
    home_clusters,
    pool_home_at,
    submit,
    until,
)
from tests.tasks.taskkit import dumps, queue_rows, two_task_chain, write_events
from tests.workflows.conftest import (
    SPLIT_OF_TWO,
    fake_archive_at,
    fetch_back,
    split_outputs,
    tools_config,
)

pytestmark = pytest.mark.condor

WORKFUNCS = Path(__file__).resolve().parents[1] / "tasks"  # workfuncs.record


@pytest.fixture
def vela_home() -> Iterator[Path]:
    """A pool home with the demo-vlass stand-in in its own archive, and a QA area."""
    with pool_home_at() as home:
        tools_config(home, fake_archive_at(home / "archive-source"))
        yield home


def _on_the_pool(run: dict) -> None:
    assert run["engine"] == "htcondor" and run["engine_id"].startswith("condor:local:"), run


def _queued(home: Path) -> list:
    """Jobs of this home still in the schedd's queue (DAGMan jobs and their node jobs)."""
    clusters = home_clusters(home)
    if not clusters:
        return []
    _, schedd = bindings()
    return schedd.query(constraint=" || ".join(f"ClusterId == {c} || DAGManJobId == {c}"
                                               for c in sorted(clusters)),
                        projection=["ClusterId"])


def _results(home: Path, name: str) -> dict:
    """The execution's results, as ``docket results`` gives them."""
    return next(r for r in docket(home, "results")["executions"]
                if r["request"] == name)["results"]


# the VLASS set, with vela ------------------------------------------------------------


def test_calibration_waits_for_qa_then_a_pass_ingests_and_delivers(vela_home, tmp_path):
    submit(vela_home, "cal-1", "calibration", output_dir="deliveries/cal-1", **VELA)
    until(vela_home, ended(vela_home, "cal-1"))
    run = execution(vela_home, "cal-1")
    assert run["state"] == "awaiting-qa", run["reason"]
    _on_the_pool(run)
    assert [(s["description"], s["state"]) for s in run["stages"]] == [
        ("gathering data", "done"), ("running CASA", "done"), ("post-CASA work", "done")]
    qa_dir = vela_home / "qa" / "cal-1.v1.e1"
    # what the pool job wrote came back, and went into the QA area, linked from the run
    assert (Path(run["directory"]) / "products").is_symlink()
    assert (qa_dir / "products" / "cal-1.caltables.tgz").is_file()
    assert not (vela_home / "work" / "deliveries" / "cal-1").exists()  # not before QA

    result = run_docket("qa", "pass", "cal-1", "--reason", "solutions look fine",
                        "--home", str(vela_home))
    assert result.code == 0, result.err
    until(vela_home, lambda: execution(vela_home, "cal-1")["state"] != "awaiting-qa")
    run = execution(vela_home, "cal-1")
    assert run["state"] == "complete", run["reason"]
    assert not qa_dir.exists()
    locator = _results(vela_home, "cal-1")["archive_locator"]
    assert locator == "uid://docket/calibration/cal-1/v1"
    fetched = fetch_back(locator, tmp_path / "fetched", vela_home / "tools.yaml")
    assert (fetched / "cal-1" / "cal-1.caltables.tgz").is_file()
    delivered = vela_home / "work" / "deliveries" / "cal-1"
    assert (delivered / "cal-1.caltables.tgz").is_file()
    assert (delivered / "SHA256SUMS").is_file()
    assert not (delivered / "workflow.dag").exists()
    lineage = docket(vela_home, "show", "cal-1", "--provenance")["executions"][0]
    assert lineage["provenance"]["casa"]["program"] == "vela"
    assert lineage["provenance"]["inputs"][0]["locator"] == VELA["locator"]


def test_split_fans_out_one_pool_job_per_piece(vela_home):
    submit(vela_home, "split-1", "seci_split_measurement_sets", pieces=["J1331+3030", "T1"],
           **VELA)
    until(vela_home, ended(vela_home, "split-1"))
    run = execution(vela_home, "split-1")
    assert run["state"] == "complete", run["reason"]
    _on_the_pool(run)
    stages = {s["description"]: (s["state"], s["done"], s["nodes"]) for s in run["stages"]}
    assert stages["running CASA"] == ("done", 3, 3)  # the split and one node per piece
    assert split_outputs(Path(run["directory"])) == SPLIT_OF_TWO
    # each node a pool job of its own, each run once
    table = docket(vela_home, "inspect", "split-1")["nodes"]
    assert all(n["attempts"] == 1 and n["exit_code"] == 0 for n in table), table
    assert len({n["cluster"] for n in table}) == len(table)
    human = run_docket("show", "split-1", "--home", str(vela_home)).out
    assert "stage running-casa (running CASA): done (3/3 nodes)" in human


def test_quicklook_records_its_automatic_qa_from_pool_jobs(vela_home):
    submit(vela_home, "ql-1", "quicklook", field="T1", **VELA)
    until(vela_home, ended(vela_home, "ql-1"))
    run = execution(vela_home, "ql-1")
    assert run["state"] == "complete", run["reason"]
    _on_the_pool(run)
    assert (Path(run["directory"]) / "products" / "quicklook.fits").is_file()
    assert _results(vela_home, "ql-1")["qa"]["automatic"]["verdict"] in ("pass", "fail")


# EWMS-style task workflows -----------------------------------------------------------


def _on_this_pool(request: dict) -> dict:
    """The tests/tasks request, its taskforces placed at the site 'pool' (this schedd)."""
    for task in request["tasks"]:
        task["cluster_locations"] = ["pool"]
    return request


def _submit_flow(home: Path, name: str, request: dict) -> None:
    (home / f"{name}.json").write_text(dumps(request))
    result = run_docket("submit", str(home / f"{name}.json"), "--home", str(home))
    assert result.code == 0, result.err


def test_a_two_task_chain_passes_every_event_through_pool_workers():
    with pool_home_at() as home:
        write_events(home, 5)
        _submit_flow(home, "chain", _on_this_pool(two_task_chain()))
        until(home, ended(home, "chain"))
        run = execution(home, "chain")
        assert run["state"] == "complete", run["reason"]
        _on_the_pool(run)
        products = Path(run["directory"]) / "products" / "output-queue"
        assert sorted(p.name for p in products.iterdir()) == [f"e{i:03d}.txt"
                                                              for i in range(5)]
        assert (products / "e003.txt").read_text() == "EVENT NUMBER 3\ndone\n"
        first, second = run["task_workflow"]["taskforces"]
        assert (first["location"], first["workers"]["requested"],
                first["workers"]["done"]) == ("pool", 2, 2)
        assert (first["events_in"], first["events_out"], second["events_in"]) == (5, 5, 5)
        # each worker a job of the taskforce's cluster
        assert len(list(Path(run["directory"]).glob("tf0-pool.*.out"))) == 2


def test_cancel_stops_the_pool_workers_mid_event():
    with pool_home_at() as home:
        write_events(home, 3)
        _submit_flow(home, "slow", _on_this_pool(two_task_chain(
            first_args="sh -c 'sleep 300; cp {{INFILE}} {{OUTFILE}}'")))

        def both_leased() -> bool:
            folder = Path(execution(home, "slow")["directory"] or ".")
            return (folder / "events.sqlite").exists() and len(queue_rows(
                folder, "SELECT 1 FROM events WHERE state='leased'")) == 2

        until(home, both_leased)
        folder = directory(home, "slow")
        result = run_docket("cancel", "slow", "--home", str(home))
        assert result.code == 0, result.err
        until(home, ended(home, "slow"))

        def workers() -> dict:
            return execution(home, "slow")["task_workflow"]["taskforces"][0]["workers"]

        until(home, lambda: workers()["running"] == 0)  # their removal seen in the log
        run = execution(home, "slow")
        assert run["state"] in ("cancelled", "failed"), run  # as on the local engine
        assert not queue_rows(folder, "SELECT 1 FROM events WHERE state='done'")
        assert workers()["stopped"] == 2
        deadline = time.monotonic() + WAIT_S
        while _queued(home):  # the schedd removes DAGMan's node jobs with it
            assert time.monotonic() < deadline, "workers left in the queue after cancel"
            time.sleep(2)


def test_a_task_whose_init_fails_fails_the_workflow_with_the_workers_error():
    with pool_home_at() as home:
        write_events(home, 4)
        request = _on_this_pool(two_task_chain(workers=2))
        request["tasks"][1].update(init_args="sh -c 'echo cannot set up >&2; exit 3'")
        _submit_flow(home, "init", request)
        until(home, ended(home, "init"))
        run = execution(home, "init")
        assert run["state"] == "failed"
        _on_the_pool(run)
        second = run["task_workflow"]["taskforces"][1]
        assert second["worker_errors"] == ["init container failed: exit code 3: cannot set up"]
        assert second["events_in"] == 0
        node = next(n for n in run["nodes"] if n["node"] == "tf1_pool")
        assert node["attempts"] == 3  # RETRY 2, each a new pool job


# CHIME-style work, done by runners that are pool jobs --------------------------------


def _work(name: str, n: int, log: Path) -> str:
    from tests.conftest import CURRENT_USER

    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "Work", "metadata": {"name": name},
                           "spec": {"pipeline": "jobs", "site": "local", "user": CURRENT_USER,
                                    "function": "workfuncs.record",
                                    "parameters": {"n": n, "log": str(log), "pause_s": 0.05}}})


def test_runners_as_pool_jobs_do_each_work_once():
    with pool_home_at() as home:
        for i in range(20):
            (home / "spool" / "incoming" / f"w{i}.yaml").write_text(
                _work(f"w{i}", i, home / "calls.log"))
        run_docket("tick", "--home", str(home))
        submit(home, "runners", "work-runner", pipeline="jobs", function="workfuncs.record",
               home=str(home), module_dir=str(WORKFUNCS), n_runners=2, sleep_s=0.5)
        until(home, ended(home, "runners"))
        run = execution(home, "runners")
        assert run["state"] == "complete", run["reason"]
        _on_the_pool(run)
        done = run_docket("work", "list", "--json", "--pipeline", "jobs", "--status",
                          "success", "--home", str(home)).json()["works"]
        assert sorted(w["results"]["n"] for w in done) == list(range(20))
        calls = (home / "calls.log").read_text().split("\n")[:-1]
        assert sorted(int(line.split()[0]) for line in calls) == list(range(20))  # once each
        summaries = [(Path(run["directory"]) / f"runner.{i}.out").read_text()
                     for i in range(2)]
        assert sum(int(text.split(": ")[1].split()[0]) for text in summaries) == 20
