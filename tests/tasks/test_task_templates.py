"""The built-in `tasks` capability's templates: valid for a pool, values kept literal."""

from __future__ import annotations

import json
from pathlib import Path

import htcondor2
import pytest

from docket.capabilities import load_capability
from docket.dag import read_dag
from docket.render import render_execution
from docket.submit import check_submit, expand_submit
from docket.tasks import plan
from schemas.tasks import TaskWorkflowSpec
from tests.htcondor.condorkit import stub_dagman
from tests.tasks.taskkit import EWMS_EXAMPLE, two_task_chain

REPO = Path(__file__).resolve().parents[2]
HOSTILE = ['say "hi"', "it's", "$HOME", "$(JOB)", "$(DOLLAR", "100%", "back\\slash",
           "semi;colon", "queue", "# not a comment", "Ωμέγα ✓", "{{ not jinja }}"]


def _render(tmp_path: Path, request: dict) -> Path:
    workflow, problems = plan(TaskWorkflowSpec.model_validate(request), tmp_path)
    capability = load_capability(REPO / "templates", "tasks")
    meta = {"name": "flow", "version": 1, "execution": 1, "number": 1, "capability": "tasks",
            "priority": 0, "output_dir": None, "created": None, "labels": {}}
    rendered = render_execution(capability, tmp_path / "e1", request=meta,
                                parameters={"workflow": workflow}, document="{}",
                                tools_dir=REPO / ".venv" / "bin")
    return rendered.dag


def test_the_rendered_dag_passes_from_dag_and_every_check(tmp_path: Path) -> None:
    dag = _render(tmp_path, EWMS_EXAMPLE)
    for node in read_dag(dag).nodes.values():
        assert check_submit(dag.parent / node.submit_file) == []
    description = htcondor2.Submit.from_dag(str(dag), {"DagmanPath": str(stub_dagman(
        tmp_path))})
    assert description["executable"].endswith("condor_dagman")
    force = read_dag(dag).nodes["tf0_osg"]
    procs = expand_submit(dag.parent / "taskforce.sub", "tf0_osg", force.vars, 7)
    assert len(procs) == 1000  # n_workers
    assert procs[0].request == {"request_cpus": "1", "request_memory": "512",
                                "request_disk": "524288"}
    assert procs[0].max_runtime == (600.0, 46)
    assert procs[3].output == "tf0-osg.7.3.out"
    assert procs[3].arguments[-4:] == ["--taskforce", "tf0-osg", "--worker", "7.3"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_task_values_stay_literal(tmp_path: Path, value: str) -> None:
    request = two_task_chain()
    first = request["tasks"][0]
    first["task_args"] = f"echo {json.dumps(value)} {{{{INFILE}}}}"
    first["task_env"] = {"WHAT": value}
    first["worker_config"]["condor_requirements"] = f'(Name =!= {json.dumps(value)})'
    dag = _render(tmp_path, request)
    written = json.loads((dag.parent / "workflow.json").read_text())
    assert written["directives"][0]["task_env"] == {"WHAT": value}
    assert written["directives"][0]["task_args"] == first["task_args"]
    force = read_dag(dag).nodes["tf0_local"]
    (proc, *_) = expand_submit(dag.parent / "taskforce.sub", "tf0_local", force.vars, 3)
    description = htcondor2.Submit((dag.parent / "taskforce.sub").read_text())
    assert check_submit(dag.parent / "taskforce.sub") == []
    assert description.getQArgs() == "$(n_workers)"
    assert proc.arguments[0] == "work" and len(proc.arguments) == 6


def test_a_newline_in_condor_requirements_is_refused() -> None:
    request = json.loads(json.dumps(EWMS_EXAMPLE))
    request["tasks"][0]["worker_config"]["condor_requirements"] = "True\nqueue 100"
    with pytest.raises(ValueError, match="control character"):
        TaskWorkflowSpec.model_validate(request)
