"""CHIME-style work: deposit, `docket run`, leases, retries, queries, parallel runners."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import CURRENT_USER, drop, run_docket

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def work_doc(name: str, **spec: object) -> str:
    body = {"pipeline": "sample_pipeline", "site": "local", "user": CURRENT_USER, **spec}
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "Work",
                           "metadata": {"name": name}, "spec": body}, sort_keys=False)


def works(home: Path, *args: str) -> list[dict]:
    result = run_docket("work", "list", "--json", "--home", str(home), *args)
    assert result.code == 0, result.err
    return result.json()["works"]


def run_here(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docket run` as a user runs it: from the directory holding the pipeline module."""
    return subprocess.run([BIN / "docket", "run", *args, "--home", str(home)], cwd=HERE,
                          capture_output=True, text=True, timeout=120)


def test_work_dropped_in_the_spool_keeps_every_field(home: Path, docket) -> None:  # noqa: ANN001
    drop(home, "w1.yaml", work_doc(
        "w1", function="workfuncs.mean", parameters={"a": 1, "b": 2, "out": "x"},
        tags=["nightly"], event=[9385707], group="epoch-1", timeout=60, retries=1,
        priority=5, path=".", archive=False, config={"archive": {"results": True}},
        precursors=[{"pipeline": "upstream", "id": "abc"}], notify={"slack": {}}))
    ticked = docket("tick", "--json").json()
    assert ticked["applied"] == 1, ticked
    (work,) = works(home)
    assert work["pipeline"] == "sample-pipeline"  # CHIME's hyphen-case
    assert (work["status"], work["attempt"], work["priority"], work["retries"]) == (
        "queued", 0, 5, 1)
    assert work["precursors"] == [{"pipeline": "upstream", "id": "abc"}]
    assert work["config"] == {"archive": {"results": True}} and work["archive"] is False
    for key in ("pipeline", "parameters", "results", "path", "event", "tags", "group",
                "timeout", "retries", "priority", "products", "plots", "site", "user",
                "archive", "precursors", "config", "id", "creation", "start", "stop",
                "attempt", "status"):
        assert key in work, key


def test_a_bad_work_is_rejected_with_its_field(home: Path, docket) -> None:  # noqa: ANN001
    drop(home, "bad.yaml", work_doc("bad", priority=9, function="a.b", command=["x"]))
    docket("tick")
    error = (home / "spool" / "rejected" / "bad.yaml.error").read_text()
    assert "spec.priority" in error and "less than or equal to 5" in error


def test_run_deposits_results_products_and_plots_checksummed(home: Path, docket,  # noqa: ANN001
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / "w.json").write_text(json.dumps([
        {"pipeline": "sample-pipeline", "site": "local", "user": CURRENT_USER,
         "parameters": {"a": 1, "b": 4, "out": str(out)}, "tags": ["t"]},
        {"pipeline": "sample-pipeline", "site": "local", "user": CURRENT_USER,
         "parameters": {"a": 10, "b": 20, "out": str(out / "two")}, "priority": 5}]))
    assert docket("work", "deposit", str(tmp_path / "w.json")).code == 0
    ran = run_here(home, "sample-pipeline", "workfuncs.mean", "--until-empty", "--sleep-s",
                   "0.1", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["success"] == 2
    # the priority-5 work ran first
    assert ran.stderr.index("attempt 1: success") < ran.stderr.rindex("attempt 1: success")
    first, second = sorted(works(home, "--status", "success"), key=lambda w: w["stop"])
    assert first["results"] == {"mean": 15.0} and second["results"] == {"mean": 2.5}
    product = f"{out}/mean.txt"
    assert second["products"] == [product] and second["plots"] == [f"{out}/mean.png"]
    sums = second["docket"]["checksums"]
    assert sums[product]["sha256"] == hashlib.sha256(Path(product).read_bytes()).hexdigest()
    assert first["start"] <= first["stop"]


def test_failures_record_the_traceback_and_the_reason(home: Path, docket,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    for name, function, parameters in (("zero", "broken", {"x": 0}),
                                       ("nofile", "missing_product", {}),
                                       ("slow", "sleepy", {"seconds": 30})):
        drop(home, f"{name}.yaml", work_doc(name, pipeline=f"p-{name}", parameters=parameters,
                                            timeout=1, retries=0))
        docket("tick")
        ran = run_here(home, f"p-{name}", f"workfuncs.{function}", "--until-empty",
                       "--sleep-s", "0.1")
        assert ran.returncode == 0, ran.stderr
    zero, = works(home, "--pipeline", "p-zero")
    assert zero["status"] == "failure"
    assert "ZeroDivisionError: division by zero" in zero["docket"]["error"]
    assert "Traceback" in zero["docket"]["error"]
    nofile, = works(home, "--pipeline", "p-nofile")
    assert "product 'never-written.h5' does not exist" in nofile["docket"]["error"]
    slow, = works(home, "--pipeline", "p-slow")
    assert slow["status"] == "failure" and slow["docket"]["error"].startswith("timeout:")


def test_a_lease_that_outlives_its_timeout_goes_back_until_retries_are_used(
        home: Path, docket) -> None:  # noqa: ANN001
    drop(home, "lease.yaml", work_doc("lease", timeout=1, retries=1))
    docket("tick")
    taken = docket("work", "withdraw", "sample-pipeline", "--json").json()["work"]
    assert (taken["status"], taken["attempt"]) == ("running", 1)
    assert docket("work", "withdraw", "sample-pipeline", "--json").json()["work"] is None
    time.sleep(1.3)  # the lease runs out; nobody deposited
    again = docket("work", "withdraw", "sample-pipeline", "--json").json()["work"]
    assert (again["id"], again["attempt"]) == (taken["id"], 2)
    time.sleep(1.3)  # the retry's lease runs out too: no retries left
    assert docket("work", "withdraw", "sample-pipeline", "--json").json()["work"] is None
    shown = docket("work", "show", taken["id"], "--json").json()["work"]
    assert shown["status"] == "failure" and "no retries left" in shown["docket"]["error"]
    assert [a["status"] for a in shown["docket"]["attempts"]] == ["timeout", "timeout"]


def test_update_by_hand_and_query_by_every_field(home: Path, docket) -> None:  # noqa: ANN001
    drop(home, "a.yaml", work_doc("a", tags=["x"], group="g1", event=[1], site="chime"))
    drop(home, "b.yaml", work_doc("b", tags=["y"], group="g2", event=[2], user="someone",
                                  pipeline="other"))
    docket("tick")
    taken = docket("work", "withdraw", "sample-pipeline", "--json").json()["work"]
    updated = docket("work", "update", taken["id"], "--status", "success", "--results",
                     '{"snr": 12.5}', "--product", "spectra.h5", "--json")
    assert updated.code == 0, updated.err
    assert updated.json()["work"]["results"] == {"snr": 12.5}
    assert [w["id"] for w in works(home, "--status", "success")] == [taken["id"]]
    assert len(works(home, "--tag", "y")) == 1 and len(works(home, "--group", "g1")) == 1
    assert len(works(home, "--event", "2")) == 1 and len(works(home, "--site", "chime")) == 1
    assert len(works(home, "--user", "someone")) == 1
    assert len(works(home, "--pipeline", "other")) == 1
    assert len(works(home, "--since", "2000-01-01")) == 2
    assert works(home, "--until", "2000-01-01") == []
    bad = docket("work", "update", taken["id"], "--status", "finished")
    assert bad.code != 0 and "not one of" in bad.err
    human = docket("work", "list").out
    assert "PIPELINE" in human and "sample-pipeline" in human


@pytest.mark.slow
def test_four_runners_with_kills_do_each_of_1000_works_exactly_once(home: Path,
                                                                     tmp_path: Path) -> None:
    from docket.home import resolve_home
    from docket.store import Store
    from docket.work import deposit
    from schemas.work import Work

    count = 1000
    log = tmp_path / "calls.log"
    h = resolve_home(home)
    h.ensure()
    store = Store(h.database)
    deposit(store, [Work(pipeline="many", site="local", user=CURRENT_USER, timeout=3,
                         parameters={"n": i, "log": str(log), "pause_s": 0.005})
                    for i in range(count)])
    store.close()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([BIN / "docket", "run", "many", "workfuncs.record",
                                 "--until-empty", "--sleep-s", "0.2", "--quiet", "--home",
                                 str(home)], cwd=HERE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)

    runners = [start() for _ in range(4)]

    def lines() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    def holds_a_lease(pid: int) -> bool:
        conn = sqlite3.connect(h.database, timeout=60)
        try:
            return conn.execute("SELECT 1 FROM works WHERE status='running' AND runner LIKE ?",
                                (f"%:{pid}",)).fetchone() is not None
        finally:
            conn.close()

    killed = 0
    deadline = time.monotonic() + 300
    for threshold in (150, 400):  # kill two runners in the middle of a work
        while lines() < threshold:
            assert time.monotonic() < deadline, "runners made no progress"
            time.sleep(0.05)
        victim = runners.pop(0)
        while True:  # stopped, it cannot finish the work between the look and the kill
            os.kill(victim.pid, signal.SIGSTOP)
            if holds_a_lease(victim.pid):
                break
            os.kill(victim.pid, signal.SIGCONT)
            time.sleep(0.003)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        killed += 1
        runners.append(start())
    for runner in runners:
        _, err = runner.communicate(timeout=max(10, deadline - time.monotonic()))
        assert runner.returncode == 0, err.decode()
    conn = sqlite3.connect(h.database)
    try:
        statuses = dict(conn.execute("SELECT status, count(*) FROM works GROUP BY status"))
        successes = conn.execute("SELECT work, count(*) FROM work_attempts WHERE "
                                 "status='success' GROUP BY work").fetchall()
        numbers = sorted(json.loads(b)["results"]["n"] for (b,) in conn.execute(
            "SELECT body FROM works"))
        timeouts = conn.execute("SELECT count(*) FROM work_attempts WHERE "
                                "status='timeout'").fetchone()[0]
    finally:
        conn.close()
    assert statuses == {"success": count}
    assert len(successes) == count and all(n == 1 for _, n in successes)
    assert numbers == list(range(count))
    # each killed runner's work timed out and was done again by another runner
    assert timeouts == killed


def test_runners_started_as_jobs_by_a_capability_share_the_work(home: Path, docket  # noqa: ANN001
                                                                ) -> None:
    from tests.conftest import request_doc

    for i in range(20):
        drop(home, f"w{i}.yaml", work_doc(f"w{i}", pipeline="jobs",
                                          parameters={"n": i, "log": str(home / "calls.log"),
                                                      "pause_s": 0.05}))
    docket("tick")
    drop(home, "runners.yaml", request_doc("runners", capability="work-runner",
                                           pipeline="jobs", function="workfuncs.record",
                                           home=str(home), module_dir=str(HERE), n_runners=2,
                                           sleep_s=0.2))
    assert docket("tick", "--wait").code == 0
    execution = docket("show", "runners", "--json").json()["executions"][0]
    assert execution["state"] == "complete", execution["reason"]
    done = works(home, "--pipeline", "jobs", "--status", "success")
    assert sorted(w["results"]["n"] for w in done) == list(range(20))
    # two jobs ran a runner each; together they did each work once
    summaries = [(Path(execution["directory"]) / f"runner.{i}.out").read_text()
                 for i in range(2)]
    assert sum(int(text.split(": ")[1].split()[0]) for text in summaries) == 20


@pytest.mark.parametrize("command", ["work", "work deposit", "work withdraw", "work update",
                                     "work list", "work show", "run"])
def test_every_work_command_has_help_and_is_documented(command: str) -> None:
    from tests.conftest import REPO

    result = run_docket(*command.split(), "--help")
    assert result.code == 0 and "Usage: docket " + command in " ".join(result.out.split())
    assert f"docket {command}" in (REPO / "docs" / "work.md").read_text()


def test_a_chime_work_json_dropped_in_the_spool_is_deposited(home: Path, docket) -> None:  # noqa: ANN001
    drop(home, "chime-work.json", json.dumps({
        "pipeline": "sample-pipeline", "site": "chime", "user": "shinybrar",
        "function": "workflow.example.mean", "parameters": {"a": 1, "b": 2},
        "event": [9385707, 9385708], "tags": ["tag", "tagged"]}))
    assert docket("tick", "--json").json()["applied"] == 1
    (work,) = works(home, "--event", "9385708")
    assert (work["user"], work["site"], work["status"]) == ("shinybrar", "chime", "queued")
    drop(home, "typo.json", json.dumps({"pipeline": "p", "site": "s", "user": "u",
                                        "prioirty": 2}))
    docket("tick")
    error = (home / "spool" / "rejected" / "typo.json.error").read_text()
    assert "(/prioirty): unknown field" in error
