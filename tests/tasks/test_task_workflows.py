"""EWMS task workflows: the request as EWMS users write it, run on the local engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import drop
from tests.tasks.taskkit import EWMS_EXAMPLE, dumps, queue_rows, two_task_chain, write_events

BIN = Path(sys.executable).parent


def test_ewms_json_chain_runs_and_passes_outputs_on(home: Path, docket) -> None:  # noqa: ANN001
    write_events(home, 5)
    (home / "chain.json").write_text(dumps(two_task_chain()))
    submitted = docket("submit", str(home / "chain.json"))
    assert submitted.code == 0, submitted.err
    ticked = docket("tick", "--wait")
    assert ticked.code == 0, ticked.err
    shown = docket("show", "chain", "--json")
    execution = shown.json()["executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    products = Path(execution["directory"]) / "products" / "output-queue"
    outputs = sorted(p.name for p in products.iterdir())
    assert outputs == [f"e{i:03d}.txt" for i in range(5)]
    # the first task upper-cased each event, the second appended a line
    assert (products / "e003.txt").read_text() == "EVENT NUMBER 3\ndone\n"
    flow = execution["task_workflow"]
    assert [d["input_queue_aliases"] for d in flow["directives"]] == [["input-queue"],
                                                                      ["middle-queue"]]
    first, second = flow["taskforces"]
    assert (first["location"], first["workers"]["requested"], first["workers"]["done"]) == (
        "local", 2, 2)
    assert (first["events_in"], first["events_out"], second["events_in"]) == (5, 5, 5)
    assert flow["queues"]["middle-queue"]["done"] == 5
    human = docket("show", "chain").out
    assert "TASKFORCE" in human and "tf0-local" in human and "EVENTS IN" in human
    # worker_config became HTCondor submit commands
    directory = Path(execution["directory"])
    dag = (directory / "workflow.dag").read_text()
    assert 'memory_mb="512"' in dag and 'runtime_s="600"' in dag and 'job_priority="99"' in dag
    sub = (directory / "taskforce.sub").read_text()
    assert "allowed_job_duration = $(runtime_s)" in sub and "queue $(n_workers)" in sub
    assert len(list(directory.glob("tf0-local.*.out"))) == 2  # do_transfer_worker_stdouterr


def test_the_same_workflow_as_a_yaml_document(home: Path, docket) -> None:  # noqa: ANN001
    write_events(home, 2)
    doc = {"apiVersion": "docket/v1", "kind": "TaskWorkflow", "metadata": {"name": "yflow"},
           "spec": two_task_chain(workers=1)}
    drop(home, "yflow.yaml", yaml.safe_dump(doc))
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "yflow", "--json").json()["executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    assert execution["task_workflow"]["taskforces"][1]["events_in"] == 2


@pytest.mark.parametrize(("change", "expected"), [
    (lambda r: r["tasks"][0]["worker_config"].update(worker_memry="1G"),
     "(/tasks/0/worker_config/worker_memry): unknown field"),
    (lambda r: r["tasks"][0].pop("task_args"), "(/tasks/0/task_args): this field is required"),
    (lambda r: r["tasks"][0]["worker_config"].update(worker_disk="512 lots"),
     "'512 lots' is not a size"),
    (lambda r: r["tasks"][0]["worker_config"].update(worker_memory="2"),
     "write a number and a unit"),
    (lambda r: r.pop("public_queue_aliases"), "(/public_queue_aliases): this field is required"),
    (lambda r: r["tasks"][0].update(input_queue_aliases=["nowhere"]),
     "public queue 'input-queue' is no task's input or output queue"),
    (lambda r: r["tasks"].append({**r["tasks"][0], "input_queue_aliases": ["nowhere"],
                                  "output_queue_aliases": []}),
     "tasks[1]: input queue 'nowhere' is neither another task's output nor in "
     "public_queue_aliases"),
])
def test_bad_requests_get_located_errors(home: Path, docket, change, expected) -> None:  # noqa: ANN001
    request = json.loads(json.dumps(EWMS_EXAMPLE))
    change(request)
    (home / "bad.json").write_text(dumps(request))
    result = docket("validate", str(home / "bad.json"))
    assert result.code != 0
    assert expected in result.out + result.err


def test_an_unknown_field_names_its_line(home: Path, docket) -> None:  # noqa: ANN001
    request = json.loads(json.dumps(EWMS_EXAMPLE))
    request["tasks"][0]["n_wrokers"] = 3
    drop(home, "typo.json", dumps(request))
    docket("tick")
    error = (home / "spool" / "rejected" / "typo.json.error").read_text()
    line = next(i for i, text in enumerate(dumps(request).splitlines(), 1) if "n_wrokers" in text)
    assert f"line {line}" in error and "/tasks/0/n_wrokers" in error, error
    # one document's problem never affects another: a good one in the same pass runs
    assert not (home / "spool" / "incoming" / "typo.json").exists()


def test_a_cycle_is_refused(home: Path, docket) -> None:  # noqa: ANN001
    request = two_task_chain()
    request["tasks"][0]["input_queue_aliases"] = ["input-queue", "output-queue"]
    request["public_queue_aliases"] = ["input-queue"]
    (home / "cycle.json").write_text(dumps(request))
    result = docket("validate", str(home / "cycle.json"))
    assert "cannot have a cycle" in result.out + result.err


def test_cancel_stops_the_taskforces(home: Path, docket) -> None:  # noqa: ANN001
    write_events(home, 3)
    # room for all three workers at once: on a 2-core machine the default (one job a
    # core) can leave the second worker of the first taskforce waiting for a slot
    (home / "docket.yaml").write_text("local_max_jobs: 4\n")
    # each event takes far longer than the test: an event marked done can only come
    # from a worker that the cancel failed to stop
    request = two_task_chain(first_args="sh -c 'sleep 600; cp {{INFILE}} {{OUTFILE}}'")
    (home / "slow.json").write_text(dumps(request))
    docket("submit", str(home / "slow.json"))
    docket("tick")
    deadline = time.monotonic() + 120
    directory = None
    leased = 0
    while time.monotonic() < deadline:
        execution = docket("show", "slow", "--json").json()["executions"][0]
        directory = Path(execution["directory"] or ".")
        if (directory / "events.sqlite").exists():
            leased = len(queue_rows(directory, "SELECT 1 FROM events WHERE state='leased'"))
            if leased == 2:
                break  # both workers are in the middle of an event
        docket("tick")
        time.sleep(0.3)
    assert leased == 2, f"only {leased} of the 2 workers took an event within 120 s"
    assert docket("cancel", "slow").code == 0
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "slow", "--json").json()["executions"][0]
    assert execution["state"] == "cancelled" or execution["state"] == "failed", execution
    assert not queue_rows(directory, "SELECT 1 FROM events WHERE state='done'")
    workers = execution["task_workflow"]["taskforces"][0]["workers"]
    assert workers["running"] == 0 and workers["stopped"] == 2


def test_a_worker_killed_mid_event_loses_and_duplicates_nothing(home: Path, tmp_path: Path
                                                                 ) -> None:
    count = 6
    write_events(home, count)
    marks = tmp_path / "marks"
    marks.mkdir()
    # the first event to start makes its worker a victim: it writes its worker's pid
    # (the shell's parent) and waits to be killed; every later attempt just works
    args = (f"sh -c 'if mkdir {marks}/first 2>/dev/null; then echo $PPID > {marks}/victim; "
            "sleep 20; fi; tr a-z A-Z < {{INFILE}} > {{OUTFILE}}'")
    request = two_task_chain(first_args=args, workers=2, lease_s=2)
    (home / "killed.json").write_text(dumps(request))
    env = {**os.environ, "DOCKET_HOME": str(home)}
    subprocess.run([BIN / "docket", "submit", str(home / "killed.json")], env=env, check=True,
                   capture_output=True)
    watcher = subprocess.Popen([BIN / "docket", "tick", "--wait"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        victim = marks / "victim"
        deadline = time.monotonic() + 90
        while not (victim.exists() and victim.read_text().strip()):
            assert time.monotonic() < deadline, "no worker started the first event"
            time.sleep(0.1)
        os.kill(int(victim.read_text()), signal.SIGKILL)
        out, err = watcher.communicate(timeout=240)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, err
    from tests.conftest import run_docket

    execution = run_docket("show", "killed", "--json", "--home", str(home)).json()[
        "executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    directory = Path(execution["directory"])
    products = sorted((directory / "products" / "output-queue").iterdir())
    assert [p.name for p in products] == [f"e{i:03d}.txt" for i in range(count)]
    assert all(p.read_text().endswith("done\n") for p in products)
    # each input event done once; the killed attempt recorded as lost, then done again
    done = queue_rows(directory, "SELECT origin, count(*) AS n FROM events WHERE "
                                 "queue='middle-queue' GROUP BY origin")
    assert sorted((r["origin"], r["n"]) for r in done) == [(f"e{i:03d}.txt", 1)
                                                            for i in range(count)]
    lost = queue_rows(directory, "SELECT event, attempt FROM attempts WHERE outcome='lost'")
    assert lost, "the killed worker's attempt should be recorded as lost"
    retried = queue_rows(directory, "SELECT attempt, state FROM events WHERE id=?",
                         lost[0]["event"])
    assert retried[0]["state"] == "done" and retried[0]["attempt"] > lost[0]["attempt"]
    flow = execution["task_workflow"]
    assert flow["taskforces"][0]["lost"] >= 1
    assert sum(t["events_in"] for t in flow["taskforces"][:1]) == count


def test_init_runs_once_per_worker_and_its_failure_fails_the_worker(home: Path, docket,  # noqa: ANN001
                                                                     tmp_path: Path) -> None:
    write_events(home, 4)
    marks = tmp_path / "init.log"
    request = two_task_chain(workers=2)
    request["tasks"][0].update(init_args=f"sh -c 'echo $INIT_WHO >> {marks}'",
                               init_env={"INIT_WHO": "init"})
    request["tasks"][1].update(init_args="sh -c 'echo cannot set up >&2; exit 3'")
    (home / "init.json").write_text(dumps(request))
    docket("submit", str(home / "init.json"))
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "init", "--json").json()["executions"][0]
    assert marks.read_text() == "init\ninit\n"  # one line per worker of the first task
    assert execution["state"] == "failed"
    second = execution["task_workflow"]["taskforces"][1]
    assert second["worker_errors"] == ["init container failed: exit code 3: cannot set up"]
    assert second["events_in"] == 0


def test_a_direct_request_of_the_tasks_capability_is_refused(home: Path, docket) -> None:  # noqa: ANN001
    from tests.conftest import request_doc

    drop(home, "direct.yaml", request_doc("direct", capability="tasks", workflow="{}"))
    docket("tick")
    error = (home / "spool" / "rejected" / "direct.yaml.error").read_text()
    assert "may not submit 'tasks' requests (allowed: nobody)" in error


def test_a_missing_input_file_is_named_by_its_pointer(home: Path, docket) -> None:  # noqa: ANN001
    request = two_task_chain()
    request["inputs"] = {"input-queue": {"files": ["nowhere/e1.txt"]}}
    drop(home, "missing.json", dumps(request))
    docket("tick")
    error = (home / "spool" / "rejected" / "missing.json.error").read_text()
    assert "/inputs/input-queue/files/0: input file 'nowhere/e1.txt' does not exist" in error


def test_max_worker_runtime_holds_a_worker_that_runs_too_long(home: Path, docket) -> None:  # noqa: ANN001
    write_events(home, 1)
    request = two_task_chain(workers=1, first_args="sleep 60", lease_s=1)
    request["tasks"][0]["worker_config"]["max_worker_runtime"] = 2
    (home / "long.json").write_text(dumps(request))
    docket("submit", str(home / "long.json"))
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "long", "--json").json()["executions"][0]
    assert execution["state"] == "failed"
    node = next(n for n in execution["nodes"] if n["node"] == "tf0_local")
    assert node["attempts"] == 3  # RETRY 2
    assert node["hold_code"] == 46, node  # allowed_job_duration, as on a pool


def test_cluster_locations_that_are_sites_choose_where_it_runs(home: Path, docket) -> None:  # noqa: ANN001
    (home / "sites.yaml").write_text(
        "default: [local]\nsites:\n  - name: local\n  - name: osg\n    enabled: false\n"
        "    schedd: {collector: cm.example.org, name: ap1.example.org}\n")
    write_events(home, 1)
    both = two_task_chain(workers=1)
    for task in both["tasks"]:
        task["cluster_locations"] = ["osg", "local"]
    (home / "both.json").write_text(dumps(both))
    only = two_task_chain(workers=1)
    for task in only["tasks"]:
        task["cluster_locations"] = ["osg"]
    (home / "only.json").write_text(dumps(only))
    docket("submit", str(home / "both.json"), str(home / "only.json"))
    docket("tick", "--wait")  # returns with 'only' still waiting for its site
    ran = docket("show", "both", "--json").json()["executions"][0]
    assert ran["state"] == "complete" and ran["site"] == "local"
    # a taskforce per location, both labelled
    assert [t["location"] for t in ran["task_workflow"]["taskforces"]] == [
        "osg", "local", "osg", "local"]
    waiting = docket("show", "only", "--json").json()
    assert waiting["executions"][0]["engine_state"] == "none"
    assert any(e["type"] == "site.unavailable" and "osg" in e["data"]["reason"]
               for e in waiting["events"])


@pytest.mark.parametrize(("name", "raw"), [
    ("deep.json", b"[" * 100_000 + b"]" * 100_000),
    ("deep2.json", b'{"tasks": ' + b"[" * 900 + b"]" * 900 + b', "public_queue_aliases": []}'),
    ("dup.json", b'{"tasks": [], "tasks": [], "public_queue_aliases": []}'),
    ("binary.json", b"\xff\xfe\x00garbage"),
    ("list.json", b"[1, 2, 3]"),
    ("Bad Name!.json", json.dumps(EWMS_EXAMPLE).encode()),
])
def test_hostile_json_is_rejected_and_the_pass_goes_on(home: Path, docket, name: str,  # noqa: ANN001
                                                       raw: bytes) -> None:
    drop(home, name, raw)
    write_events(home, 1)
    drop(home, "good.json", dumps(two_task_chain(workers=1)))
    result = docket("tick", "--json")
    assert result.code == 0, result.err
    outcome = {d["file"]: d["status"] for d in result.json()["documents"]}
    assert outcome == {name: "rejected", "good.json": "accepted"}
    assert (home / "spool" / "rejected" / f"{name}.error").read_text().strip()


def test_a_task_that_feeds_another_gets_the_slot_first(home: Path, docket) -> None:  # noqa: ANN001
    """One job slot, and the task reading the other's output written first: its worker
    would take the only slot and wait for events that nobody can then make. The feeding
    task's taskforce has the higher DAG priority, so it runs first and the chain ends."""
    (home / "docket.yaml").write_text("local_max_jobs: 1\n")
    write_events(home, 2)
    request = two_task_chain(workers=1)
    request["tasks"].reverse()  # the consumer first, as nothing forbids
    (home / "reversed.json").write_text(dumps(request))
    assert docket("submit", str(home / "reversed.json")).code == 0
    try:
        ticked = subprocess.run([str(BIN / "docket"), "tick", "--wait", "--home", str(home)],
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        docket("cancel", "reversed")  # stop the stuck workers, then say so
        docket("tick")
        raise AssertionError("the chain did not end in 300 s: stuck workers?") from None
    assert ticked.returncode == 0, ticked.stderr
    execution = docket("show", "reversed", "--json").json()["executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    dag = (Path(execution["directory"]) / "workflow.dag").read_text()
    assert "PRIORITY tf1_local 1" in dag and "PRIORITY tf0_local 0" in dag
