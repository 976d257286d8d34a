"""Parameters that name files are paths, checked as paths: at intake, and by the job."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO, drop, request_doc

HEADER = "apiVersion: docket/v1\nkind: CapabilityRequest\n"


@pytest.mark.parametrize(("outputs", "reason"), [
    ("[/tmp/docket-escape-x]", "line 8, column 14 (spec.parameters.outputs): item 0: path "
     "'/tmp/docket-escape-x' is absolute; give a path relative to the processing "
     "directory, without '..'"),
    ("[ok.txt, ../../../../tmp/docket-escape-y]", "(spec.parameters.outputs): item 1: path "
     "'../../../../tmp/docket-escape-y' contains '..'"),
    ("[7]", "item 0: expected a path, got 7 (quote it)"),
])
def test_null_outputs_outside_the_processing_directory_are_rejected(home, docket, outputs,
                                                                    reason):
    drop(home, "escape.yaml", HEADER + "metadata: {name: escape}\nspec:\n  capability: "
         f"\"null\"\n  parameters:\n    message: hi\n    outputs: {outputs}\n")
    report = docket("tick", "--wait", "--json").json()
    assert report["rejected"] == 1 and report["accepted"] == 0
    assert reason in (home / "spool" / "rejected" / "escape.yaml.error").read_text()
    assert not Path("/tmp/docket-escape-x").exists()
    assert not Path("/tmp/docket-escape-y").exists()


def test_null_outputs_inside_are_written_there(home, docket):
    drop(home, "fine.yaml", request_doc("fine", outputs=["result.txt", "sub/deeper.txt"]))
    docket("tick", "--wait")
    shown = docket("show", "fine", "--json").json()
    assert shown["request"]["state"] == "complete"
    directory = Path(shown["executions"][0]["directory"])
    assert (directory / "result.txt").read_text() == "written by null: result.txt\n"


def test_a_path_parameter_of_a_capability(home, docket):
    folder = home / "templates" / "copier"
    shutil.copytree(home / "templates" / "null", folder)
    definition = yaml.safe_load((folder / "capability.yaml").read_text())
    definition["name"] = "copier"
    definition["parameters"]["target"] = {"type": "path", "default": "out.txt"}
    del definition["example"]
    (folder / "capability.yaml").write_text(yaml.safe_dump(definition))
    (folder / "example-request.yaml").unlink()
    for name, target in (("abs", "/etc/cron.d/x"), ("up", "a/../../b"), ("ok", "a/b.txt")):
        drop(home, f"{name}.yaml", request_doc(name, "copier", target=target))
    report = docket("tick", "--json").json()
    assert report["accepted"] == 1 and report["rejected"] == 2
    rejected = home / "spool" / "rejected"
    assert ("(spec.parameters.target): path '/etc/cron.d/x' is absolute"
            in (rejected / "abs.yaml.error").read_text())
    assert "path 'a/../../b' contains '..'" in (rejected / "up.yaml.error").read_text()


# Parameters that name something other than a file of the processing directory.
NOT_PROCESSING_PATHS = {("work-runner", "home"): "the docket home the runners serve"}


def test_every_shipped_parameter_that_names_a_file_is_a_path():
    for path in sorted((REPO / "templates").glob("*/capability.yaml")):
        definition = yaml.safe_load(path.read_text())
        for name, spec in (definition.get("parameters") or {}).items():
            if spec.get("type") not in (None, "string", "list", "path"):
                continue  # numbers and flags name no file, whatever their description says
            if (path.parent.name, name) in NOT_PROCESSING_PATHS:
                continue
            words = f"{name} {spec.get('description', '')}".lower()
            if any(w in words for w in ("file", "output", "path")):
                assert spec.get("type") == "path" or spec.get("items") == "path", (
                    f"{path}: parameter {name} names files but is not a path")


def _null(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "null"), *args], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.parametrize(("where", "message"), [
    ("/tmp/docket-null-escape", "path '/tmp/docket-null-escape' is absolute"),
    ("../docket-null-escape", "path '../docket-null-escape' contains '..'"),
    ("out/x.txt", "path 'out/x.txt' leads outside"),
])
def test_the_null_tool_refuses_to_write_outside_its_directory(tmp_path, where, message):
    job = tmp_path / "job"
    job.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (job / "out").symlink_to(outside)
    proc = _null("--write", "first.txt", "--write", where, cwd=job)
    assert proc.returncode == 8, proc.stderr
    assert proc.stderr.startswith(f"Error: {message}")
    assert proc.stderr.count("\n") == 1
    # nothing written: not the bad one, nor the good one before it
    assert not (job / "first.txt").exists()
    assert not list(outside.iterdir())
    assert not Path("/tmp/docket-null-escape").exists()
    assert not (tmp_path / "docket-null-escape").exists()
