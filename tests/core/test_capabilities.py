"""Capability folders and state machines are checked at load, naming file, line and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from docket.capabilities import CapabilityError, load_capability
from tests.conftest import REPO, drop, request_doc


def _write_capability(templates: Path, name: str, yaml_text: str,
                      dag: str | None = "JOB a a.sub\n") -> None:
    folder = templates / name
    folder.mkdir(parents=True)
    (folder / "capability.yaml").write_text(yaml_text)
    if dag is not None:
        (folder / "workflow.dag.j2").write_text(dag)
        (folder / "a.sub.j2").write_text("executable = /bin/true\nqueue\n")


def test_the_shipped_capabilities_load():
    for name in ("null", "demo"):
        capability = load_capability(REPO / "templates", name)
        assert capability.machine.initial == "submitted"


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nparameters:\n  n: {type: number}\n",
     "capability.yaml:3: parameters.n.type: Input should be"),
    ("name: other\n", "capability.yaml:1: name 'other' must match the folder name 'x'"),
    ("name: x\nqueue:\n  max_jobs: -1\n",
     "capability.yaml:3: queue.max_jobs: Input should be greater than or equal to 0"),
    ("name: x\nparameters:\n  n: {type: int, default: soon}\n",
     "capability.yaml:3: parameters.n.default: expected a number, got 'soon'"),
    ("name: x\nstate_machine: nope\n", "state_machine 'nope' does not exist; shipped "
                                        "machines: simple"),
    ("name: x\nworkflow: missing.dag.j2\n",
     "capability.yaml:2: workflow template 'missing.dag.j2' does not exist"),
    ("name: x\nstate_machine:\n  states: [a, b, c]\n  initial: a\n  final: [b]\n"
     "  transitions:\n    - \"[a] -<go>-> [b]\"\n",
     "states c cannot be reached from 'a'"),
    ("name: x\nstate_machine:\n  states: [a, b, c]\n  initial: a\n  final: [c]\n"
     "  transitions:\n    - \"[a] -<go>-> [b]\"\n    - \"[a] -<end>-> [c]\"\n",
     "state 'b' has no way out and is not final"),
    ("name: x\nstate_machine:\n  states: [a, b]\n  initial: a\n  final: [b]\n"
     "  transitions:\n    - \"[a] -<go>-> [b]\"\n    - \"[a] -<go2>{explode}-> [b]\"\n",
     "capability.yaml:8: transition [a] -<go2>{explode}-> [b] names unknown action 'explode'"),
    ("name: x\nstate_machine:\n  states: [a, b]\n  initial: a\n  final: [b]\n"
     "  transitions:\n    - \"[a] -<go>-> [z]\"\n",
     "capability.yaml:7: transition [a] -<go>-> [z] names unknown state 'z'"),
    ("name: x\nstate_machine:\n  states: [a, b]\n  initial: a\n  final: [b]\n"
     "  transitions:\n    - \"a goes to b\"\n",
     "capability.yaml:7: transition 'a goes to b' is not of the form"),
    ("name: x\nname: y\n", "capability.yaml:2: duplicate key 'name' (first on line 1)"),
])
def test_broken_definitions_name_file_line_and_field(tmp_path, text, message):
    templates = tmp_path / "templates"
    (templates / "_machines").mkdir(parents=True)
    (templates / "_machines" / "simple.yaml").write_text(
        (REPO / "templates" / "_machines" / "simple.yaml").read_text())
    _write_capability(templates, "x", text)
    with pytest.raises(CapabilityError) as caught:
        load_capability(templates, "x")
    assert message in str(caught.value)
    assert str(templates / "x") in str(caught.value) or "machines" in str(caught.value)


def test_a_broken_capability_rejects_its_requests_with_the_reason(home, docket):
    (home / "templates" / "null" / "capability.yaml").write_text("name: \"null\"\nqueue: 3\n")
    drop(home, "a.yaml", request_doc("a"))
    docket("tick")
    error = (home / "spool" / "rejected" / "a.yaml.error").read_text()
    assert "capability.yaml:2: queue: Input should be a valid dictionary" in error


def test_a_template_error_fails_the_execution_not_the_watcher(home, docket):
    (home / "templates" / "null" / "null.sub.j2").write_text(
        "executable = {{ tool('null') }}\narguments = {{ parameters.no_such }}\nqueue\n")
    drop(home, "a.yaml", request_doc("broken-template"))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "broken-template", "--json").json()
    assert shown["request"]["state"] == "failed"
    reason = shown["executions"][0]["reason"]
    assert "could not start:" in reason and "null.sub.j2:2: UndefinedError" in reason
    assert "'no_such'" in reason


def test_an_event_a_state_does_not_accept_is_refused_and_recorded(home, docket):
    drop(home, "a.yaml", request_doc("done-already"))
    docket("tick", "--wait")
    result = docket("cancel", "done-already", "--json")
    assert result.code == 0 and result.json()["cancelled"] == []
    # feeding the machine directly: a completed execution refuses 'start'
    from docket.capabilities import CapabilityCache
    from docket.rules import Rules
    from docket.store import Store

    store = Store(home / "state" / "docket.db")
    rules = Rules(store, CapabilityCache(home / "templates"), home / "work")
    (row,) = store.executions()  # the typed record the rules take
    assert rules.feed(row, "start") is False
    refused = store.one("SELECT data FROM events WHERE type='event.refused'")
    assert json.loads(refused["data"])["reason"] == (
        "state 'complete' does not accept 'start'; it accepts nothing (final state)")
    store.close()


def test_schema_files_are_up_to_date():
    out = subprocess.run([sys.executable, "-m", "schemas", "--check"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr + " — run 'make schemas' and commit the result"


def test_schema_files_accept_the_shipped_examples():
    import jsonschema  # noqa: F401 - only when installed
    import yaml

    schema = json.loads((REPO / "schemas" / "CapabilityRequest.schema.json").read_text())
    for name in ("null", "demo"):
        document = yaml.safe_load((REPO / "templates" / name / "example-request.yaml")
                                  .read_text())
        jsonschema.validate(document, schema)
