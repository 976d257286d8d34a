"""docs/tasks.md and docs/work.md stay true: every example runs as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import drop, run_docket

DOCS = Path(__file__).resolve().parents[2] / "docs"


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def saved_as(text: str, name: str) -> str:
    match = re.search(rf"Save this\s+as `{re.escape(name)}`:\n\n```\w+\n(.*?)```", text, re.S)
    assert match, f"no block saved as {name}"
    return match.group(1)


def run_console(text: str, home: Path, block: int = 0) -> list[tuple[str, str]]:
    """Run one ```console block in ``home``: docket commands in-process, others in sh."""
    ran = []
    for line in blocks(text, "console")[block].splitlines():
        if not line.startswith("$ "):
            continue
        command = line[2:]
        argv = shlex.split(command)
        if argv[0] == "docket":
            result = run_docket(*argv[1:], "--home", str(home))
            assert result.code == 0, (command, result.err)
            ran.append((command, result.out))
        else:
            done = subprocess.run(command, shell=True, cwd=home, capture_output=True,
                                  text=True)
            assert done.returncode == 0, (command, done.stderr)
            ran.append((command, done.stdout))
    return ran


def _ids(text: str) -> str:
    return re.sub(r"task-[0-9a-f]{12}", "task-ID", text)


def test_the_task_workflow_session_runs_and_shows_what_the_doc_shows(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "tasks.md").read_text()
    monkeypatch.chdir(home)
    (home / "flow.json").write_text(saved_as(text, "flow.json"))
    ran = run_console(text, home)
    shown = dict(ran)["docket show flow"]
    example = next(b for b in blocks(text, "text") if "TASKFORCE" in b)
    for line in example.splitlines():
        if line.startswith(("  tf", "  TASKFORCE", "  input-queue", "  QUEUE")):
            assert _ids(line) in _ids(shown), line
    assert "    in: input-queue; out: middle-queue" in shown
    execution = run_docket("show", "flow", "--json", "--home", str(home)).json()[
        "executions"][0]
    outputs = Path(execution["directory"]) / "products" / "output-queue"
    assert (outputs / "e2.txt").read_text() == "EVENT 2\n"


def test_the_yaml_form_runs(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "tasks.md").read_text()
    document = next(b for b in blocks(text, "yaml") if "kind: TaskWorkflow" in b)
    events = home / "spool" / "attachments" / "events"
    events.mkdir(parents=True)
    (events / "e1.txt").write_text("one\n")
    drop(home, "flow-yaml.yaml", document)
    assert run_docket("tick", "--wait", "--home", str(home)).code == 0
    execution = run_docket("show", "flow-yaml", "--json", "--home", str(home)).json()[
        "executions"][0]
    assert execution["state"] == "complete", execution["reason"]


def test_the_error_example_is_what_docket_says(home: Path) -> None:
    text = (DOCS / "tasks.md").read_text()
    flow = saved_as(text, "flow.json").replace('"worker_memory": "512M"',
                                               '"worker_memry": "512M"', 1)
    (home / "flow.json").write_text(flow)
    result = run_docket("validate", str(home / "flow.json"), "--home", str(home))
    example = next(b for b in blocks(text, "text") if "unknown field" in b)
    assert result.code == 1
    assert result.out.replace(str(home) + "/", "") == example


def test_the_work_session_runs(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "work.md").read_text()
    monkeypatch.chdir(home)
    (home / "mean-1.yaml").write_text(saved_as(text, "mean-1.yaml"))
    (home / "mypipeline.py").write_text(saved_as(text, "mypipeline.py"))
    ran = dict(run_console(text, home, 0))
    listed = ran["docket work list --pipeline sample-pipeline --status success"]
    assert "sample-pipeline  success" in listed
    import json

    (work,) = json.loads(ran["docket work list --tag nightly --json"])["works"]
    assert work["results"] == {"mean": 2.0} and work["products"] == ["mean.txt"]
    assert (home / "mean.txt").read_text() == "2.0\n"
    # docket results answers for works as docket work list does
    assert "sample-pipeline  success" in ran["docket results --pipeline sample-pipeline "
                                             "--status success"]
    (found,) = json.loads(ran["docket results --works --group epoch-1 --event 9385707 "
                              "--json"])["works"]
    assert found["id"] == work["id"] and found["results"] == {"mean": 2.0}
    queries = dict(run_console(text, home, 2))
    # the work was created today, not last February, and is not chime's
    assert json.loads(queries["docket results --works --tag nightly --since 2026-02-01 "
                              "--until 2026-03-01 --json"])["works"] == []
    assert "sample-pipeline" not in queries["docket results --works --site chime --user "
                                            "shinybrar"]
    by_hand = dict(run_console(text, home, 1))
    taken = json.loads(by_hand["docket work withdraw sample-pipeline --json"])["work"]
    assert taken["status"] == "running"
    assert taken["id"] in by_hand["docket work list --status running"]
    match = re.search(r"`(docket work update ID [^`]+)`", text)
    assert match
    argv = shlex.split(match.group(1).replace("ID", taken["id"]))
    assert run_docket(*argv[1:], "--home", str(home)).code == 0


def test_the_runner_request_is_valid(home: Path) -> None:
    text = (DOCS / "work.md").read_text()
    document = next(b for b in blocks(text, "yaml") if "work-runner" in b)
    (home / "runners.yaml").write_text(document)
    result = run_docket("validate", str(home / "runners.yaml"), "--home", str(home))
    assert result.code == 0, result.out
    assert yaml.safe_load(document)["spec"]["parameters"]["n_runners"] == 8
