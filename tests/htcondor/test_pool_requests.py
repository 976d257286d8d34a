"""What the pool tests submit (test_pool_workflows.py), checked here without a pool: the
same requests render to submit files that htcondor2.Submit parses and docket's checks
pass, to a DAG that DAGMan's submit description is built from exactly as the HTCondor
engine submits it, with every value one literal argument; and since a pool job gets none
of the submitter's environment, each job is given what its tool needs to find the home."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import htcondor2
import pytest

from docket.dag import read_dag
from docket.engines.htcondor import HTCondorEngine
from docket.submit import expand_submit
from tests.htcondor.condorkit import TOOLS, check_rendered, outside_tmp, render, stub_dagman
from tests.htcondor.poolkit import VELA

HOME = Path("/srv/docket home/it's here")  # a path a shell or a submit file could split
MODULES = Path("/srv/pipe lines")
REQUESTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("calibration", VELA, "deliveries/cal-1"),
    ("seci_split_measurement_sets", {**VELA, "pieces": ["J1331+3030", "T1"]}, None),
    ("quicklook", {**VELA, "field": "T1"}, None),
    ("work-runner", {"pipeline": "jobs", "function": "workfuncs.record", "home": str(HOME),
                     "module_dir": str(MODULES), "n_runners": 2, "sleep_s": 0.5}, None),
]
IDS = [name for name, _, _ in REQUESTS]


def _procs(directory: Path) -> dict[str, list]:
    dag = read_dag(directory / "workflow.dag")
    return {name: expand_submit(directory / n.submit_file, name, n.vars, 7,
                                append_vars=n.append_vars)
            for name, n in dag.nodes.items()}


@pytest.mark.parametrize(("name", "given", "output_dir"), REQUESTS, ids=IDS)
def test_the_pool_requests_render_to_what_htcondor_accepts(name, given, output_dir):
    with outside_tmp() as scratch:
        rendered, _ = render(name, scratch / "e1", given, request="pool-1",
                             output_dir=output_dir and str(scratch / output_dir),
                             home=HOME)
        check_rendered(rendered.directory)
        engine = HTCondorEngine(dagman_path=str(stub_dagman(scratch)))
        description = engine.describe(rendered.dag)  # what submit() queues
        assert description["executable"] == str(scratch / "condor_dagman")
        # the ClassAd string a crash-recovery query (DocketDag == "...") matches
        assert description["My.DocketDag"] == f'"{rendered.dag}"'
        assert description["My.JobBatchName"] == '"pool-1 v1 e1"'  # as condor_q lists it
        assert description["initialdir"] == str(rendered.directory)
        text = rendered.dag.read_text()
        assert "NODE_STATUS_FILE workflow.dag.status 30 ALWAYS-UPDATE" in text
        for node, procs in _procs(rendered.directory).items():
            for proc in procs:
                executable = Path(proc.executable)
                # a tool of this venv, by its absolute path: the pool shares the filesystem
                assert executable.parent == TOOLS and executable.is_file(), (node, executable)
                assert proc.getenv is False, node  # the pool would not pass it anyway


@pytest.mark.parametrize(("name", "given", "output_dir"), REQUESTS[:3], ids=IDS[:3])
def test_every_vlass_job_is_told_where_the_home_is(name, given, output_dir):
    """tools.yaml (archive, QA area) is found through DOCKET_HOME: the only way a pool job
    learns it, since DOCKET_TOOLS_CONFIG stays in the submitter's environment."""
    with outside_tmp() as scratch:
        rendered, _ = render(name, scratch / "e1", given, output_dir=output_dir, home=HOME)
        for node, procs in _procs(rendered.directory).items():
            assert all(p.environment.get("DOCKET_HOME") == str(HOME) for p in procs), node


def test_the_runners_get_the_home_and_the_module_dir_as_one_argument_each():
    with outside_tmp() as scratch:
        rendered, _ = render("work-runner", scratch / "e1", REQUESTS[3][1], home=HOME)
        (runners,) = _procs(rendered.directory).values()
        assert len(runners) == 2  # queue n_runners
        for proc in runners:
            assert proc.arguments == ["run", "jobs", "workfuncs.record", "--until-empty",
                                      "--sleep-s", "0.5", "--home", str(HOME)]
            assert proc.environment["PYTHONPATH"] == str(MODULES)
            assert proc.transfer_files is False  # runners work in the shared home
        description = htcondor2.Submit((rendered.directory / "runner.sub").read_text())
        assert description["output"] == "runner.$(Process).out"


def test_the_split_is_one_job_per_piece_after_the_split():
    with outside_tmp() as scratch:
        rendered, _ = render("seci_split_measurement_sets", scratch / "e1", REQUESTS[1][1])
        dag = read_dag(rendered.dag)
        pieces = sorted(n for n in dag.nodes if n.startswith("casa_"))
        assert pieces == ["casa_0", "casa_1"], sorted(dag.nodes)
        for piece in pieces:  # each after the split, and post after all of them
            assert "casa" in dag.nodes[piece].parents
            assert piece in dag.nodes["post"].parents
