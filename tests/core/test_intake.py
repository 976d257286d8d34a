"""Intake: every document is accepted or set aside with a reason; nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, drop, request_doc

HEADER = "apiVersion: docket/v1\nkind: CapabilityRequest\n"

BOMB = (HEADER + "metadata: {name: bomb}\nspec:\n  capability: \"null\"\n  parameters:\n"
        "    message: x\n" + "".join(
            f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9 if i else ["1"] * 9) + "]\n"
            for i in range(9)))

HOSTILE = {
    "invalid-yaml": (HEADER + "metadata: {name: a\nspec: {}\n",
                     "line 4, column 5: invalid YAML: while parsing a flow mapping"),
    "wrong-api": ("apiVersion: docket/v0\nkind: CapabilityRequest\nmetadata: {name: a}\n"
                  "spec: {capability: demo}\n",
                  "line 1, column 13 (apiVersion): apiVersion 'docket/v0' is not supported"),
    "no-api": ("kind: CapabilityRequest\nmetadata: {name: a}\nspec: {capability: demo}\n",
               "apiVersion is missing"),
    "unknown-kind": ("apiVersion: docket/v1\nkind: Pod\nmetadata: {name: a}\nspec: {}\n",
                     "line 2, column 7 (kind): unknown kind 'Pod'; known kinds: Cancel, "
                     "CapabilityRequest, Decision, QueueChange, Resubmit, Seal"),
    "no-kind": ("apiVersion: docket/v1\nmetadata: {name: a}\nspec: {}\n",
                "kind is missing"),
    "missing-spec": (HEADER + "metadata: {name: a}\n", "(spec): this field is required"),
    "missing-capability": (HEADER + "metadata: {name: a}\nspec:\n  parameters: {}\n",
                           "(spec.capability): this field is required"),
    "bad-name": (HEADER + "metadata: {name: Bad Name}\nspec: {capability: demo}\n",
                 "line 3, column 18 (metadata.name): 'Bad Name' is not a valid name"),
    "null-capability": (HEADER + "metadata: {name: a}\nspec: {capability: null}\n",
                        "a capability named null must be quoted"),
    "unknown-capability": (HEADER + "metadata: {name: a}\nspec: {capability: nope}\n",
                           "(spec.capability): unknown capability 'nope'; capabilities "
                           "to request: calibration, demo, image_caching, null, quicklook, "
                           "se_calibration"),
    # a typo is answered with the name meant; bases and built-in ones are not offered
    "misspelt-capability": (HEADER + "metadata: {name: a}\nspec: {capability: quicklok}\n",
                            "unknown capability 'quicklok' (did you mean 'quicklook'?); "
                            "capabilities to request: calibration, demo, image_caching, "
                            "null, quicklook, se_calibration, se_coarse_cube_imaging, "
                            "se_continuum_imaging, seci_split_measurement_sets, work-runner\n"),
    "unknown-field": (HEADER + "metadata: {name: a}\nspec: {capability: demo, colour: red}\n",
                      "(spec.colour): unknown field (check the spelling)"),
    "unknown-parameter": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                          "  parameters: {colour: red}\n",
                          "line 6, column 24 (spec.parameters.colour): unknown parameter "
                          "for capability 'demo'"),
    "wrong-type": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                   "  parameters: {sleep_s: soon}\n",
                   "(spec.parameters.sleep_s): expected a number, got 'soon'"),
    "duplicate-key": (HEADER + "metadata: {name: a}\nmetadata: {name: b}\nspec: {}\n",
                      "line 4, column 1: duplicate key 'metadata' (first on line 3)"),
    "alias-bomb": (BOMB, "expands to more than 100000 YAML nodes"),
    "two-documents": (HEADER + "metadata: {name: a}\nspec: {capability: demo}\n---\na: 1\n",
                      "holds 2 YAML documents"),
    "not-a-mapping": ("- just\n- a list\n", "the document must be a mapping"),
    "binary": (bytes(range(256)) * 4, "is not UTF-8 text"),
    "nul-byte": (HEADER + "metadata: {name: a}\x00\n", "contains a NUL byte"),
    "empty": ("", "the document is empty"),
    "whitespace": ("  \n\n", "the document is empty"),
    "too-big": (HEADER + "metadata: {name: a}\nspec: {capability: demo}\n# "
                + "x" * 1_100_000 + "\n", "over the limit of 1048576 bytes"),
    "dotdot-file": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                    "  files: [../../etc/passwd]\n",
                    "(spec.files[0]): path '../../etc/passwd' contains '..'"),
    "absolute-file": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                      "  files: [/etc/passwd]\n",
                      "(spec.files[0]): path '/etc/passwd' is absolute"),
    "missing-file": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                     "  files: [nothing.ms]\n",
                     "(spec.files[0]): file 'nothing.ms' does not exist"),
    "newline-parameter": (HEADER + "metadata: {name: a}\nspec:\n  capability: \"null\"\n"
                          "  parameters: {message: \"hi\\nqueue 1000\"}\n",
                          "(spec.parameters.message): value 'hi\\nqueue 1000' contains the "
                          "control character U+000A"),
    "cr-parameter": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                     "  parameters: {targets: [\"a\\rexecutable = /bin/evil\"]}\n",
                     "contains the control character U+000D"),
    "double-dollar": (HEADER + "metadata: {name: a}\nspec:\n  capability: \"null\"\n"
                      "  parameters: {message: \"cost $$(Cpus)\"}\n",
                      "(spec.parameters.message): value 'cost $$(Cpus)' contains '$$', which "
                      "HTCondor would expand"),
    "outside-output-dir": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                           "  output_dir: /etc/cron.d\n",
                           "(spec.output_dir): output_dir '/etc/cron.d' is outside the "
                           "allowed roots"),
    "dotdot-output-dir": (HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                          "  output_dir: ../../x\n", "contains '..'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_documents_are_rejected_with_a_reason(home, docket, case):
    text, reason = HOSTILE[case]
    drop(home, f"{case}.yaml", text)
    result = docket("tick", "--json")
    assert result.code == 0, result.err
    report = result.json()
    assert report["rejected"] == 1 and report["accepted"] == 0
    rejected = home / "spool" / "rejected" / f"{case}.yaml"
    assert rejected.exists(), "the document is kept, not deleted"
    error = (home / "spool" / "rejected" / f"{case}.yaml.error").read_text()
    assert reason in error
    assert not list((home / "spool" / "incoming").iterdir())
    # the same verdict offline, without a database
    (home / "state" / "docket.db").rename(home / "state" / "moved.db")
    offline = docket("validate", str(rejected))
    assert offline.code == 1 and reason in offline.out
    assert not (home / "state" / "docket.db").exists()


def test_a_docket_document_written_as_json_is_taken_like_its_yaml(home, docket, tmp_path):
    # JSON is YAML: a script that writes its requests with json.dumps gets the same
    # intake, named by metadata.name (not by the file, as an EWMS request is)
    document = {"apiVersion": "docket/v1", "kind": "CapabilityRequest",
                "metadata": {"name": "from-script"},
                "spec": {"capability": "null", "parameters": {"message": "hi"}}}
    drop(home, "batch-0001.json", json.dumps(document))
    broken = dict(document, metadata={"name": "broken"}, spec={"capability": "nope"})
    drop(home, "batch-0002.json", json.dumps(broken, indent=1))
    report = docket("tick", "--json").json()
    outcome = {d["file"]: (d["status"], d.get("request")) for d in report["documents"]}
    assert outcome["batch-0001.json"] == ("accepted", "from-script")
    assert outcome["batch-0002.json"][0] == "rejected"
    error = (home / "spool" / "rejected" / "batch-0002.json.error").read_text()
    assert "line 8, column 17" in error and "unknown capability 'nope'" in error, error
    path = tmp_path / "check.json"
    path.write_text(json.dumps(document))
    checked = docket("validate", str(path), "--json").json()
    assert checked["valid"] and checked["documents"][0]["kind"] == "CapabilityRequest"


def test_symlinked_attachment_leading_outside_is_rejected(home, docket, tmp_path):
    attachments = home / "spool" / "attachments"
    attachments.mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (attachments / "escape").symlink_to(tmp_path / "secret")
    (attachments / "good.txt").write_text("data")
    drop(home, "a.yaml", HEADER + "metadata: {name: a}\nspec:\n  capability: demo\n"
                                  "  files: [good.txt, escape]\n")
    docket("tick")
    error = (home / "spool" / "rejected" / "a.yaml.error").read_text()
    assert "(spec.files[1]): path 'escape' leads outside" in error
    assert "files[0]" not in error


def test_attached_files_are_copied_into_rawdata(home, docket):
    attachments = home / "spool" / "attachments"
    attachments.mkdir(parents=True)
    (attachments / "obs.txt").write_text("observation")
    drop(home, "a.yaml", HEADER + "metadata: {name: with-file}\nspec:\n  capability: \"null\""
                                  "\n  files: [obs.txt]\n")
    docket("tick", "--wait")
    directory = Path(docket("show", "with-file", "--json").json()["executions"][0]["directory"])
    assert (directory / "rawdata" / "obs.txt").read_text() == "observation"


def test_other_files_in_the_spool(home, docket):
    incoming = home / "spool" / "incoming"
    for name in (".hidden.yaml", "draft.yaml.tmp", "draft.yaml~", "#draft.yaml#",
                 "upload.part"):
        (incoming / name).write_text("not read")
    (incoming / "notes.txt").write_text(request_doc("a"))
    (incoming / "folder").mkdir()
    report = docket("tick", "--json").json()
    assert report["rejected"] == 1
    assert "must end in .yaml or .yml" in (home / "spool/rejected/notes.txt.error").read_text()
    left = sorted(p.name for p in incoming.iterdir())
    assert left == ["#draft.yaml#", ".hidden.yaml", "draft.yaml.tmp", "draft.yaml~", "folder",
                    "upload.part"]


def test_a_file_still_being_written_is_not_read(home, docket):
    text = request_doc("slow-copy", message="complete")
    path = home / "spool" / "incoming" / "slow.yaml"
    with open(path, "w") as writer:  # like `cp`: written in place, in pieces
        writer.write(text[: len(text) // 2])
        writer.flush()
        report = docket("tick", "--json").json()
        assert report["accepted"] == report["rejected"] == 0
        assert report["waiting_files"] == ["slow.yaml"]
        writer.write(text[len(text) // 2:])
    report = docket("tick", "--json").json()
    assert report["accepted"] == 1
    shown = docket("show", "slow-copy", "--json").json()
    assert shown["versions"][0]["spec"]["parameters"]["message"] == "complete"


def test_same_content_twice_is_one_request(home, docket):
    drop(home, "one.yaml", request_doc("twice", message="same"))
    docket("tick")
    drop(home, "again.yaml", "# a comment changes nothing\n" + request_doc("twice",
                                                                           message="same"))
    report = docket("tick", "--json").json()
    assert report["duplicates"] == 1 and report["accepted"] == 0
    error = (home / "spool" / "rejected" / "again.yaml.error").read_text()
    assert "duplicate: identical to twice version 1" in error
    shown = docket("show", "twice", "--json").json()
    assert len(shown["versions"]) == 1 and len(shown["executions"]) == 1
    assert any(e["type"] == "document.duplicate" for e in shown["events"])


def test_a_changed_spec_is_the_next_version_and_supersedes_a_queued_one(home, docket):
    docket("tick")  # creates the database
    assert docket("queue", "pause", "null").code == 0
    drop(home, "v1.yaml", request_doc("evolving", message="first"))
    docket("tick")
    drop(home, "v2.yaml", request_doc("evolving", message="second"))
    docket("tick")
    shown = docket("show", "evolving", "--json").json()
    assert [v["number"] for v in shown["versions"]] == [1, 2]
    states = {e["version"]: e["state"] for e in shown["executions"]}
    assert states == {1: "cancelled", 2: "queued"}
    assert shown["executions"][0]["reason"] == "superseded by version 2"
    assert (home / "spool" / "accepted" / "evolving" / "v2.yaml").exists()
    docket("queue", "resume", "null")
    docket("tick", "--wait")
    shown = docket("show", "evolving", "--json").json()
    assert shown["request"]["state"] == "complete" and shown["request"]["current_version"] == 2
    assert len([e for e in shown["executions"] if e["engine_state"] == "done"]) == 1


def test_a_request_cannot_change_its_capability(home, docket):
    drop(home, "a.yaml", request_doc("fixed", "null"))
    docket("tick")
    drop(home, "b.yaml", request_doc("fixed", "demo"))
    docket("tick")
    error = (home / "spool" / "rejected" / "b.yaml.error").read_text()
    assert "request 'fixed' is a 'null' request; a new version cannot change it to 'demo'" \
        in error


def test_a_second_intake_fails_naming_the_holder(home, docket):
    docket("tick")
    watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        lock = home / "state" / "intake.lock"
        while time.monotonic() < deadline:
            if lock.exists() and f'"pid": {watch.pid},' in lock.read_text():
                break
            time.sleep(0.05)
        result = docket("tick")
        assert result.code == 7
        assert result.err.startswith("Error: the intake of this home is held by 'docket "
                                     f"watch' (pid {watch.pid} on ")
        assert result.err.count("\n") == 1
    finally:
        watch.terminate()
        watch.wait(timeout=20)


def test_the_watcher_survives_hostile_input(home, docket):
    docket("tick")
    watch = subprocess.Popen([str(BIN / "docket"), "watch", "--home", str(home)],
                             stderr=subprocess.DEVNULL)
    try:
        for case, (text, _reason) in sorted(HOSTILE.items()):
            drop(home, f"{case}.yaml", text)
        drop(home, "good.yaml", request_doc("good-after-bad"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (home / "spool" / "accepted" / "good-after-bad" / "v1.yaml").exists() and len(
                    list((home / "spool" / "rejected").glob("*.error"))) == len(HOSTILE):
                break
            time.sleep(0.1)
        assert watch.poll() is None, "the watcher died"
        assert len(list((home / "spool" / "rejected").glob("*.error"))) == len(HOSTILE)
        assert (home / "spool" / "accepted" / "good-after-bad" / "v1.yaml").exists()
    finally:
        watch.terminate()
        assert watch.wait(timeout=20) == 0


def test_submit_refuses_an_invalid_document_and_spools_nothing(home, docket, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEADER + "metadata: {name: a}\nspec: {capability: nope}\n")
    result = docket("submit", str(bad))
    assert result.code == 8
    assert result.err.startswith(f"Error: {bad} is not a valid request: line 4, column 20 "
                                 "(spec.capability): unknown capability 'nope'")
    assert not list((home / "spool" / "incoming").iterdir())


def test_submit_writes_atomically_under_a_free_name(home, docket, tmp_path):
    doc = tmp_path / "req.yaml"
    doc.write_text(request_doc("a"))
    first = docket("submit", str(doc), "--json").json()["submitted"][0]["spooled"]
    second = docket("submit", str(doc), "--json").json()["submitted"][0]["spooled"]
    assert Path(first).name == "req.yaml" and Path(second).name == "req-2.yaml"
    assert [p.name for p in (home / "spool" / "incoming").iterdir() if
            p.name.startswith(".")] == []


def test_validate_as_a_pre_commit_hook(home, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(request_doc("ok", "demo", targets=["x"]))
    env = {**os.environ, "DOCKET_HOME": str(home)}
    ok = subprocess.run([str(BIN / "docket"), "validate", str(good), "--json"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    out = subprocess.run([str(BIN / "docket"), "validate", str(good), str(bad)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert f"{bad}: invalid\n  - line 2, column 1: invalid YAML" in out.stdout
    hooks = (Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml").read_text()
    assert "docket validate" in hooks


def test_status_before_anything_ran(home, docket):
    result = docket("status")
    assert result.code == 3
    assert result.err == (f"Error: no docket database at {home / 'state' / 'docket.db'} — run "
                          "'docket tick' or 'docket watch' in this home first\n")


def test_python_can_run_the_cli_module():
    out = subprocess.run([sys.executable, "-m", "cli.docket", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "rebuild-state" in out.stdout


def test_an_accepted_execution_is_the_row_its_created_event_makes(home, docket):
    """Intake builds a new execution's record from its event instead of reading the row
    back; both must say the same, every field, or the rules act on a wrong record."""
    from docket.records import Execution
    from docket.store import Store

    docket("tick")
    assert docket("queue", "pause", "null").code == 0
    doc = yaml.safe_load(request_doc("from-event", priority=2, message="m"))
    doc["spec"].update(tags=["epoch-3", "rerun"], group="VLASS3.1", events=["FRB-1"],
                       timeout_s=90.5)
    drop(home, "one.yaml", yaml.safe_dump(doc))
    assert docket("tick", "--json").json()["accepted"] == 1
    store = Store.open_readonly(home / "state" / "docket.db")
    events = {r["type"]: r for r in store.conn.execute(
        "SELECT * FROM events WHERE type IN ('execution.created', 'execution.transition')")}
    created = events["execution.created"]
    event = {k: created[k] for k in ("request", "version", "execution", "actor", "time")}
    event["data"] = json.loads(created["data"])
    built = Execution.from_created(event)
    read = store.execution(created["execution"])
    store.close()
    assert read is not None and read.state == "queued" and read.group == "VLASS3.1"
    # built before the machine's first step, which moved the row on from that state
    assert built.state == json.loads(events["execution.transition"]["data"])["from"]
    assert {**built.as_dict(), "state": read.state} == read.as_dict()


def test_two_hard_links_to_one_file_are_one_version(home, docket):
    """The same file under two names (a hard link: one identity) in one pass is one
    accepted version, both names taken out of the spool; no duplicate event."""
    first = drop(home, "a.yaml", request_doc("linked", message="once"))
    os.link(first, first.with_name("b.yaml"))
    report = docket("tick", "--json").json()
    assert report["accepted"] == 2 and report["duplicates"] == 0
    assert {d["file"]: d["version"] for d in report["documents"]} == {"a.yaml": 1, "b.yaml": 1}
    assert not list((home / "spool" / "incoming").iterdir())
    shown = docket("show", "linked", "--json").json()
    assert len(shown["versions"]) == 1 and len(shown["executions"]) == 1
    assert not any(e["type"] == "document.duplicate" for e in shown["events"])
