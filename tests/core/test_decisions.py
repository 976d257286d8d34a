"""Human decisions as documents: roles, QA, sealing, versions, timeouts, bookkeeping."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import CURRENT_USER, drop, request_doc


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Three real users: a DA, an AOD, and someone who is not an analyst."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to make test users")
    tag = secrets.token_hex(3)
    made = {}
    try:
        for role in ("da", "aod", "nobody"):
            name = f"dk{role}{tag}"
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            name], check=True, capture_output=True)
            made[role] = pwd.getpwnam(name)
        yield made
    finally:
        for entry in made.values():
            subprocess.run(["userdel", entry.pw_name], capture_output=True)


def drop_as(home: Path, user: pwd.struct_passwd, filename: str, document: dict) -> Path:
    """A document whose file belongs to ``user``: the actor is the file's owner."""
    text = yaml.safe_dump(document, sort_keys=False)
    incoming = home / "spool" / "incoming"
    tmp = incoming / f".{filename}.tmp"
    tmp.write_text(text)
    os.chown(tmp, user.pw_uid, user.pw_gid)
    target = incoming / filename
    tmp.rename(target)
    return target


def decision(name: str, request: str, what: str, reason: str, version: int | None = None
             ) -> dict:
    spec = {"request": request, "decision": what, "reason": reason}
    if version:
        spec["version"] = version
    return {"apiVersion": "docket/v1", "kind": "Decision", "metadata": {"name": name},
            "spec": spec}


def _qa_capability(home: Path, name: str, machine: str, extra: str = "") -> None:
    folder = home / "templates" / name
    shutil.copytree(home / "templates" / "null", folder)
    text = (folder / "capability.yaml").read_text().replace('name: "null"', f"name: {name}")
    text = text.replace("state_machine: simple", f"state_machine: {machine}\nrequires_qa: true"
                        + extra)
    (folder / "capability.yaml").write_text(text)
    (folder / "example-request.yaml").unlink()


def _analysts(home: Path, users: dict) -> None:
    (home / "analysts.yaml").write_text(
        "analysts:\n"
        f"  {CURRENT_USER}:\n    roles: [operator]\n"
        f"  {users['da'].pw_name}:\n    roles: [da]\n"
        f"  {users['aod'].pw_name}:\n    roles: [aod]\n")


def test_two_stage_qa_from_request_to_archive_ready_by_two_users(home, docket, users):
    _qa_capability(home, "survey", "two-stage-qa")
    _analysts(home, users)
    drop(home, "obs.yaml", request_doc("obs-1", "survey", message="field 1"))
    docket("tick")
    assert docket("show", "obs-1", "--json").json()["request"]["state"] == "awaiting-approval"

    # the DA may not approve: that needs the AOD role
    drop_as(home, users["da"], "approve-by-da.yaml",
            decision("approve-by-da", "obs-1", "approve", "looks fine"))
    docket("tick")
    error = (home / "spool" / "rejected" / "approve-by-da.yaml.error").read_text()
    assert (f"'approve' in state 'awaiting-approval' needs an analyst with the role 'aod'; "
            f"{users['da'].pw_name} has da") in error

    drop_as(home, users["aod"], "approve.yaml", decision("approve-1", "obs-1", "approve",
                                                          "scheduled block is good"))
    docket("tick", "--wait")
    assert docket("show", "obs-1", "--json").json()["request"]["state"] == "awaiting-qa"

    drop_as(home, users["da"], "qa.yaml", decision("qa-1", "obs-1", "qa-pass", "image ok"))
    docket("tick")
    assert docket("show", "obs-1", "--json").json()["request"]["state"] == "awaiting-aod"

    drop_as(home, users["aod"], "signoff.yaml", decision("signoff-1", "obs-1", "approve",
                                                          "archive it"))
    docket("tick")
    shown = docket("show", "obs-1", "--json").json()
    assert shown["request"]["state"] == "complete" and shown["request"]["sealed"] == 1
    history = docket("history", "obs-1", "--json").json()["events"]
    transitions = [(e["data"].get("event"), e["actor"]) for e in history
                   if e["type"] == "execution.transition"]
    assert ("approve", users["aod"].pw_name) in transitions
    assert ("qa-pass", users["da"].pw_name) in transitions
    refused = [e for e in history if e["type"] == "decision.refused"]
    assert refused and refused[0]["actor"] == users["da"].pw_name
    assert "needs an analyst with the role 'aod'" in refused[0]["data"]["reason"]
    decisions = sorted((home / "spool" / "accepted" / "_decisions").iterdir())
    assert [d.name for d in decisions] == ["approve-1.yaml", "qa-1.yaml", "signoff-1.yaml"]
    assert docket("rebuild-state", "--check").code == 0


def test_an_aod_rejection_at_the_end_goes_back_to_qa(home, docket, users):
    _qa_capability(home, "survey", "two-stage-qa")
    _analysts(home, users)
    drop(home, "obs.yaml", request_doc("obs-2", "survey"))
    docket("tick")
    drop_as(home, users["aod"], "a.yaml", decision("a2", "obs-2", "approve", "go"))
    docket("tick", "--wait")
    drop_as(home, users["da"], "q.yaml", decision("q2", "obs-2", "qa-pass", "ok"))
    docket("tick")
    drop_as(home, users["aod"], "r.yaml", decision("r2", "obs-2", "reject", "wrong flux scale"))
    docket("tick")
    assert docket("show", "obs-2", "--json").json()["request"]["state"] == "awaiting-qa"


def test_a_qa_decision_by_a_non_analyst_is_rejected_and_recorded(home, docket, users):
    _qa_capability(home, "survey", "single-qa")
    _analysts(home, users)
    drop(home, "r.yaml", request_doc("checked", "survey"))
    docket("tick", "--wait")
    drop_as(home, users["nobody"], "qa.yaml", decision("sneaky", "checked", "qa-pass", "me"))
    docket("tick")
    error = (home / "spool" / "rejected" / "qa.yaml.error").read_text()
    assert (f"'qa-pass' in state 'awaiting-qa' needs an analyst with the role 'da'; "
            f"{users['nobody'].pw_name} has no role") in error
    history = docket("history", "checked", "--json").json()["events"]
    assert any(e["type"] == "decision.refused" and e["actor"] == users["nobody"].pw_name
               for e in history)
    assert docket("show", "checked", "--json").json()["request"]["state"] == "awaiting-qa"


def test_a_stated_submitter_must_be_the_file_owner(home, docket, users):
    doc = yaml.safe_load(request_doc("claimed"))
    doc["metadata"]["submitter"] = users["da"].pw_name
    drop_as(home, users["nobody"], "claimed.yaml", doc)
    docket("tick")
    error = (home / "spool" / "rejected" / "claimed.yaml.error").read_text()
    assert (f"metadata.submitter '{users['da'].pw_name}' is not the owner of the file "
            f"('{users['nobody'].pw_name}')") in error


def test_a_capability_may_restrict_its_submitters(home, docket, users):
    _qa_capability(home, "restricted", "single-qa",
                   f"\nsubmitters: [{users['da'].pw_name}]")
    _analysts(home, users)
    drop_as(home, users["nobody"], "no.yaml", yaml.safe_load(request_doc("r1", "restricted")))
    drop_as(home, users["da"], "yes.yaml", yaml.safe_load(request_doc("r2", "restricted")))
    report = docket("tick", "--json").json()
    assert report["accepted"] == 1 and report["rejected"] == 1
    assert (f"{users['nobody'].pw_name} may not submit 'restricted' requests"
            in (home / "spool" / "rejected" / "no.yaml.error").read_text())


def test_only_one_version_passes_and_later_versions_are_refused(home, docket):
    _qa_capability(home, "survey", "single-qa")
    drop(home, "v1.yaml", request_doc("field-9", "survey", message="first try"))
    docket("tick", "--wait")
    drop(home, "v2.yaml", request_doc("field-9", "survey", message="second try"))
    docket("tick", "--wait")
    result = docket("qa", "pass", "field-9", "--version", "1", "--reason", "v1 is better")
    assert result.code == 0, result.err
    assert "qa-pass: field-9 v1 is now complete" in result.out
    shown = docket("show", "field-9", "--json").json()
    assert shown["request"]["state"] == "complete" and shown["request"]["passed_version"] == 1
    states = {e["version"]: e["state"] for e in shown["executions"]}
    assert states == {1: "complete", 2: "failed"}
    again = docket("qa", "pass", "field-9", "--version", "2", "--reason", "changed my mind")
    assert again.code == 1 and "is sealed (version 1 passed QA)" in again.err
    drop(home, "v3.yaml", request_doc("field-9", "survey", message="third try"))
    docket("tick")
    error = (home / "spool" / "rejected" / "v3.yaml.error").read_text()
    assert "request 'field-9' is sealed (version 1 passed QA); it takes no new versions" in error
    assert docket("rebuild-state", "--check").code == 0


def test_qa_fail_and_retry(home, docket):
    _qa_capability(home, "survey", "single-qa")
    drop(home, "r.yaml", request_doc("again", "survey"))
    docket("tick", "--wait")
    assert docket("qa", "retry", "again", "--reason", "rerun with the new flags").code == 0
    docket("tick", "--wait")
    shown = docket("show", "again", "--json").json()
    assert shown["request"]["state"] == "awaiting-qa"
    execution = shown["executions"][0]
    assert execution["attempt"] == 2 and execution["directory"].endswith("/again/v1/e1.2")
    assert (Path(execution["directory"]) / "null.runs").read_text().strip() == "1"
    assert docket("qa", "fail", "again", "--reason", "bad data").code == 0
    assert docket("show", "again", "--json").json()["request"]["state"] == "failed"


def test_single_version_only_and_resubmit(home, docket):
    folder = home / "templates" / "null" / "capability.yaml"
    folder.write_text(folder.read_text() + "single_version_only: true\n")
    drop(home, "a.yaml", request_doc("once", message="a"))
    docket("tick", "--wait")
    drop(home, "b.yaml", request_doc("once", message="b"))
    docket("tick")
    assert "allows one version per request" in (home / "spool/rejected/b.yaml.error"
                                                ).read_text()
    result = docket("resubmit", "once", "--reason", "node was flaky", "--json")
    assert result.code == 0 and result.json()["status"] == "applied"
    docket("tick", "--wait")
    shown = docket("show", "once", "--json").json()
    assert [(e["version"], e["number"], e["state"]) for e in shown["executions"]] == [
        (1, 1, "complete"), (1, 2, "complete")]
    assert shown["executions"][1]["directory"].endswith("/once/v1/e2")


def test_a_timeout_stops_and_fails_the_execution(home, docket):
    doc = yaml.safe_load(request_doc("slow", sleep_s=60))
    doc["spec"]["timeout_s"] = 1
    drop(home, "slow.yaml", yaml.safe_dump(doc))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "slow", "--json").json()
    execution = shown["executions"][0]
    assert shown["request"]["state"] == "failed"
    assert execution["reason"] == "timed out: ran longer than 1 s"
    assert execution["engine_state"] == "done"


def test_bookkeeping_of_every_execution(home, docket):
    folder = home / "templates" / "writer"
    folder.mkdir()
    (folder / "capability.yaml").write_text(
        "name: writer\nparameters:\n  value: {type: int, default: 42}\n")
    (folder / "workflow.dag.j2").write_text("JOB write write.sub\n")
    (folder / "make.sh.j2").write_text(
        "mkdir -p products\nprintf fits > products/image.fits\n"
        "printf png > products/image.png\n"
        "echo '{\"flux_mjy\": {{ parameters.value }}}' > results.json\n")
    (folder / "write.sub.j2").write_text(
        "executable = /bin/sh\narguments = make.sh\nshould_transfer_files = NO\nqueue\n")
    doc = yaml.safe_load(request_doc("booked", "writer"))
    doc["spec"].update(tags=["vlass", "epoch-4"], group="vlass-4.1", events=["frb-123"])
    drop(home, "b.yaml", yaml.safe_dump(doc))
    docket("tick", "--wait")
    found = docket("results", "--tag", "epoch-4", "--json").json()["executions"]
    assert len(found) == 1
    execution = found[0]
    assert execution["status"] == "complete" and execution["user"] == CURRENT_USER
    assert execution["tags"] == ["vlass", "epoch-4"] and execution["group"] == "vlass-4.1"
    assert execution["event_ids"] == ["frb-123"] and execution["attempt"] == 1
    assert execution["results"] == {"flux_mjy": 42}
    assert [p["path"] for p in execution["products"]] == ["products/image.fits"]
    assert [p["path"] for p in execution["plots"]] == ["products/image.png"]
    assert execution["products"][0] == {
        "path": "products/image.fits", "size_bytes": 4,
        "sha256": hashlib.sha256(b"fits").hexdigest()}
    assert execution["created"] and execution["started"] and execution["stopped"]
    assert docket("results", "--tag", "nothing", "--json").json()["executions"] == []
    metrics = docket("metrics", "--json").json()
    assert metrics["counts"]["writer"] == {"complete": 1}
    assert metrics["timing"]["writer"]["run_time_s"]["p50"] > 0
    assert docket("rebuild-state", "--check").code == 0


def test_mediate_is_for_operators_and_recorded(home, docket, users):
    drop(home, "a.yaml", request_doc("stuck"))
    docket("tick", "--wait")
    result = docket("mediate", "stuck", "--set-state", "failed", "--reason", "bad input")
    assert result.code == 0, result.err
    shown = docket("show", "stuck", "--json").json()
    assert shown["request"]["state"] == "failed"
    event = [e for e in docket("history", "stuck", "--json").json()["events"]
             if e["type"] == "execution.mediated"][0]
    assert event["data"] == {"from": "complete", "to": "failed", "reason": "bad input"}
    (home / "analysts.yaml").write_text(f"analysts:\n  {CURRENT_USER}:\n    roles: [da]\n")
    refused = docket("mediate", "stuck", "--set-state", "complete", "--reason", "x")
    assert refused.code == 2 and "only an analyst with the role 'operator'" in refused.err


def test_a_custom_machine_matches_event_fields_and_runs_a_follow_up(home, docket):
    folder = home / "templates" / "picky"
    shutil.copytree(home / "templates" / "null", folder)
    (folder / "example-request.yaml").unlink()
    text = (folder / "capability.yaml").read_text().replace('name: "null"', "name: picky")
    text = text.replace("state_machine: simple\n", """state_machine:
  states: [submitted, queued, executing, needs-data, complete, failed, cancelled]
  initial: submitted
  final: [complete, failed, cancelled]
  transitions:
    - "[submitted] -<accept>{enqueue}-> [queued]"
    - "[queued] -<start>{run}-> [executing]"
    - "[queued] -<cancel>-> [cancelled]"
    - "[executing] -<succeed>{run-workflow demo}-> [complete]"
    - "[executing] -<fail(exit_code=1)>-> [needs-data]"
    - "[executing] -<fail>-> [failed]"
    - "[needs-data] -<cancel>-> [cancelled]"
""")
    (folder / "capability.yaml").write_text(text)
    drop(home, "a.yaml", request_doc("missing-data", "picky", exit_code=1))
    drop(home, "b.yaml", request_doc("good-data", "picky"))
    docket("tick", "--wait")
    assert docket("show", "missing-data", "--json").json()["request"]["state"] == "needs-data"
    assert docket("show", "good-data", "--json").json()["request"]["state"] == "complete"
    follow = docket("show", "good-data-demo", "--json").json()
    assert follow["request"]["capability"] == "demo"
    assert follow["request"]["state"] == "complete"
    assert follow["versions"][0]["source_file"] == "run-workflow from execution 2"


def test_the_same_follow_up_is_a_duplicate_whether_docket_or_a_da_drops_it(home, docket):
    folder = home / "templates" / "chained"
    shutil.copytree(home / "templates" / "null", folder)
    (folder / "example-request.yaml").unlink()
    text = (folder / "capability.yaml").read_text().replace('name: "null"', "name: chained")
    text = text.replace("state_machine: simple\n", """state_machine:
  states: [submitted, queued, executing, complete, failed, cancelled]
  initial: submitted
  final: [complete, failed, cancelled]
  transitions:
    - "[submitted] -<accept>{enqueue}-> [queued]"
    - "[queued] -<start>{run}-> [executing]"
    - "[queued] -<cancel>-> [cancelled]"
    - "[executing] -<succeed>{run-workflow demo}-> [complete]"
    - "[executing] -<fail>-> [failed]"
""")
    (folder / "capability.yaml").write_text(text)
    drop(home, "a.yaml", request_doc("src", "chained"))
    docket("tick", "--wait")
    made = docket("show", "src-demo", "--json").json()
    assert [v["number"] for v in made["versions"]] == [1]

    # the follow-up made a second time (the source ran again) is the same version
    assert docket("resubmit", "src", "--reason", "again", "--wait").code == 0
    docket("tick", "--wait")
    assert len(docket("show", "src", "--json").json()["executions"]) == 2
    assert [v["number"] for v in docket("show", "src-demo", "--json").json()["versions"]] == [1]

    # and the document docket recorded for it, dropped in the spool, is a duplicate
    import sqlite3

    with contextlib.closing(sqlite3.connect(home / "state" / "docket.db")) as db:
        (document,) = db.execute("SELECT document FROM versions WHERE request='src-demo'"
                                 ).fetchone()
    assert "follow-up-of: src" in document
    drop(home, "again.yaml", document)
    tick = docket("tick", "--json").json()
    assert tick["duplicates"] == 1 and tick["accepted"] == 0
    assert "identical to src-demo version 1" in (
        home / "spool" / "rejected" / "again.yaml.error").read_text()


def test_an_unknown_follow_up_capability_is_an_error_at_load(home):
    from docket.capabilities import CapabilityError, load_capability

    path = home / "templates" / "null" / "capability.yaml"
    path.write_text(path.read_text().replace("state_machine: simple\n", """state_machine:
  states: [a, b]
  initial: a
  final: [b]
  transitions:
    - "[a] -<go>{run-workflow nowhere}-> [b]"
"""))
    with pytest.raises(CapabilityError, match="run-workflow names unknown capability 'nowhere'"):
        load_capability(home / "templates", "null")
