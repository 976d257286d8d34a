"""``rebuild-state --from-archive``: a lost database is rebuilt from the archive and the
processing directories, and says what it could not recover."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import yaml

from tests.conftest import drop, request_doc

_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def _doc(name: str, **parameters: object) -> str:
    return yaml.safe_dump({"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                           "metadata": {"name": name},
                           "spec": {"capability": "null", "parameters": parameters,
                                    "tags": ["epoch-1"]}}, sort_keys=False)


def _lose_database(home: Path) -> None:
    for path in (home / "state").glob("docket.db*"):
        path.unlink()


def _masked(text: str) -> str:
    return _TIME.sub("<time>", text)


def _status_rows(text: str) -> list[str]:
    head, _, rows = text.partition("\n\n")
    return [head, *sorted(_masked(rows).splitlines())]


def test_a_lost_database_is_rebuilt_from_the_files(home, docket):
    drop(home, "ok.yaml", _doc("fine", outputs=["result.txt"]))
    drop(home, "bad.yaml", _doc("broken", exit_code=3))
    drop(home, "demo.yaml", request_doc("fan-out", "demo", targets=["m31", "m51"]))
    assert docket("tick", "--wait").code == 0
    drop(home, "ok2.yaml", _doc("fine", outputs=["result.txt"], message="second"))
    assert docket("tick", "--wait").code == 0
    names = ["fine", "broken", "fan-out"]
    before = {n: docket("show", n, "--events", "0").out for n in names}
    before_json = {n: docket("show", n, "--json").json() for n in names}
    status = docket("status").out
    results = docket("results", "--json").json()["executions"]

    _lose_database(home)
    assert docket("status").code == 3
    rebuilt = docket("rebuild-state", "--from-archive")
    assert rebuilt.code == 0, rebuilt.err
    assert rebuilt.out.startswith(
        f"rebuilt {home / 'state' / 'docket.db'} from the archive and the processing "
        "directories: 3 requests, 4 versions, 4 executions (4 ended, 0 running or "
        "interrupted, 0 waiting)\nnot recovered:\n")
    assert "what the failure policy decided about failed attempts" in rebuilt.out

    assert _status_rows(docket("status").out) == _status_rows(status)
    for name in names:
        after = docket("show", name, "--events", "0").out
        expected = before[name]
        if name == "broken":  # the policy's verdict on the attempt is not in the files
            line = ("  attempt 1 failed: node run → fail (no rule of the failure policy "
                    "matched this failure)\n")
            assert line in expected
            expected = expected.replace(line, "")
        assert _masked(after) == _masked(expected), name
        shown = docket("show", name, "--json").json()
        for old, new in zip(before_json[name]["versions"], shown["versions"], strict=True):
            assert (new["number"], new["sha256"], new["spec"], new["actor"],
                    new["source_file"]) == (old["number"], old["sha256"], old["spec"],
                                            old["actor"], old["source_file"])
    again = docket("results", "--json").json()["executions"]
    keys = ("id", "request", "version", "status", "tags", "parameters", "products",
            "exit_code", "user", "attempt")
    assert [{k: e[k] for k in keys} for e in again] == [{k: e[k] for k in keys}
                                                        for e in results]
    # the rebuilt database is a real event log: replaying it gives the same state
    check = docket("rebuild-state", "--check")
    assert check.code == 0 and "state matches" in check.out
    # and the home goes on: the same content again is a duplicate, a change a new version
    drop(home, "ok3.yaml", _doc("fine", outputs=["result.txt"], message="second"))
    ticked = docket("tick", "--wait", "--json").json()
    assert ticked["duplicates"] == 1 and ticked["accepted"] == 0


def test_a_running_workflow_is_followed_after_the_rebuild_not_run_twice(home, docket):
    drop(home, "long.yaml", request_doc("long-run", sleep_s=4))
    db = home / "state" / "docket.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        docket("tick")
        with sqlite3.connect(db) as conn:
            if conn.execute("SELECT count(*) FROM nodes WHERE state='running'").fetchone()[0]:
                break
        time.sleep(0.05)
    state = docket("show", "long-run", "--json").json()["request"]["state"]
    _lose_database(home)
    rebuilt = docket("rebuild-state", "--from-archive", "--json").json()
    assert (rebuilt["executions"], rebuilt["running"], rebuilt["ended"]) == (1, 1, 0)
    shown = docket("show", "long-run", "--json").json()
    assert shown["request"]["state"] == state
    assert shown["executions"][0]["engine_state"] == "running"
    assert [n["state"] for n in shown["executions"][0]["nodes"]] == ["running"]
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "long-run", "--json", "--events", "100").json()
    assert shown["request"]["state"] == "complete"
    assert [n["attempts"] for n in shown["executions"][0]["nodes"]] == [1]
    directory = Path(shown["executions"][0]["directory"])
    assert (directory / "null.runs").read_text().strip() == "1"


def test_a_version_that_never_ran_waits_again_and_the_gaps_are_named(home, docket):
    cap = home / "templates" / "null" / "capability.yaml"
    cap.write_text(cap.read_text().replace("max_jobs: 4", "max_jobs: 0"))
    drop(home, "queued.yaml", request_doc("queued"))
    assert docket("tick").code == 0
    _lose_database(home)
    rebuilt = docket("rebuild-state", "--from-archive")
    assert rebuilt.code == 0, rebuilt.err
    assert "1 executions (0 ended, 0 running or interrupted, 1 waiting)" in rebuilt.out
    assert "who submitted 1 version(s) and from which file: nothing on disk says" in rebuilt.out
    assert "1 version(s) never started and wait in their queue again" in rebuilt.out
    queues = {q["capability"]: q for q in docket("queue", "list", "--json").json()["queues"]}
    assert queues["null"]["waiting"] == 1


def test_an_existing_database_is_never_replaced(home, docket):
    drop(home, "one.yaml", request_doc("one"))
    assert docket("tick", "--wait").code == 0
    db = home / "state" / "docket.db"
    before = db.read_bytes()
    refused = docket("rebuild-state", "--from-archive")
    assert refused.code == 8 and "only rebuilds a lost database" in refused.err
    assert db.read_bytes() == before


def test_archived_decisions_are_applied_again(home, docket, tmp_path):
    drop(home, "s.yaml", request_doc("to-seal"))
    assert docket("tick", "--wait").code == 0
    assert docket("seal", "to-seal", "--reason", "final answer").code == 0
    assert docket("queue", "disable", "demo", "--reason", "maintenance").code == 0
    _lose_database(home)
    rebuilt = docket("rebuild-state", "--from-archive")
    assert rebuilt.code == 0, rebuilt.err
    assert "the authors of the 2 archived decision(s): not on disk" in rebuilt.out
    assert docket("show", "to-seal", "--json").json()["request"]["sealed"] == 1
    changed = tmp_path / "v2.yaml"
    changed.write_text(request_doc("to-seal", message="again"))
    refused = docket("submit", str(changed))
    assert refused.code == 8 and "is sealed" in refused.err
    queues = {q["capability"]: q for q in docket("queue", "list", "--json").json()["queues"]}
    assert queues["demo"]["enabled"] is False and queues["null"]["enabled"] is True


def test_a_directory_the_request_named_is_found_too(home, docket):
    drop(home, "named.yaml", yaml.safe_dump({
        "apiVersion": "docket/v1", "kind": "CapabilityRequest", "metadata": {"name": "named"},
        "spec": {"capability": "null", "parameters": {}, "output_dir": "delivered/run-1"}}))
    assert docket("tick", "--wait").code == 0
    before = docket("show", "named", "--events", "0").out
    # the processing directory stays in the work area; output_dir receives the products
    assert f"directory: {home / 'work' / 'named' / 'v1' / 'e1'}" in before
    _lose_database(home)
    rebuilt = docket("rebuild-state", "--from-archive", "--json").json()
    assert (rebuilt["executions"], rebuilt["ended"], rebuilt["waiting"]) == (1, 1, 0)
    assert _masked(docket("show", "named", "--events", "0").out) == _masked(before)


def test_decisions_before_and_after_a_run_are_replayed_in_order(home, docket):
    cap = home / "templates" / "null" / "capability.yaml"
    cap.write_text(cap.read_text().replace("state_machine: simple",
                                           "state_machine: two-stage-qa"))
    drop(home, "qa.yaml", request_doc("checked"))
    assert docket("tick").code == 0
    assert docket("approve", "checked", "--reason", "go ahead").code == 0  # before it runs
    assert docket("tick", "--wait").code == 0
    assert docket("qa", "pass", "checked", "--reason", "looks right").code == 0
    assert docket("approve", "checked", "--reason", "signed off").code == 0
    before = docket("show", "checked", "--events", "0").out
    assert "checked: null request, version 1, complete" in before
    _lose_database(home)
    rebuilt = docket("rebuild-state", "--from-archive")
    assert rebuilt.code == 0, rebuilt.err
    assert "could not be applied again" not in rebuilt.out
    assert _masked(docket("show", "checked", "--events", "0").out) == _masked(before)
    assert docket("show", "checked", "--json").json()["request"]["sealed"] == 1
