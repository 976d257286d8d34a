"""Every submit file a shipped template can produce parses with htcondor2.Submit, passes
docket's own checks, and keeps hostile parameter values as one literal argument each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import htcondor2
import pytest

from docket.capabilities import load_capability, resolve_parameters
from docket.dag import read_dag
from docket.policy import apply_adjustments
from docket.quoting import quote
from docket.sites import apply_site
from docket.submit import expand_submit
from schemas.sites import Site
from tests.htcondor.condorkit import SHIPPED, TEMPLATES, check_rendered, render, stub_dagman

HOSTILE = [
    'say "hi"', "it's", "$HOME", "$(JOB)", "$(DOLLAR", "100%", "a  b\tc", "back\\slash",
    "semi;colon", "queue", "=", "# not a comment", "Ωμέγα ✓ 観測", "'", '"', "",
    "x" * 200, "-dash", "a,b", "{{ not jinja }}", "]] [[",
]


def _hostile_parameters(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, parameters) for each string/list parameter and each hostile value that
    intake accepts for it."""
    capability = load_capability(TEMPLATES, name)
    cases = []
    for pname, spec in capability.definition.parameters.items():
        if spec.type not in ("string", "list") or spec.choices:
            continue
        for i, value in enumerate(HOSTILE):
            given = {pname: [value, value + "2"] if spec.type == "list" else value}
            if spec.type == "list" and not value:
                continue
            _, problems = resolve_parameters(capability, given)
            if problems:  # refused at intake: never reaches a template
                continue
            cases.append((f"{name}-{pname}-{i}", given))
    return cases


EXAMPLES = [(name, load_capability(TEMPLATES, name).definition.example or {})
            for name in SHIPPED]
def _case(name: str, label: str, given: dict[str, Any]) -> Any:
    return pytest.param(name, label, given, id=label)


HOSTILE_CASES = [_case(name, label, given) for name in SHIPPED
                 for label, given in _hostile_parameters(name)]


def _argv(directory: Path) -> dict[str, list[list[str]]]:
    """Each node's argv per proc, expanded as HTCondor would (VARS, $(JOB), $(DOLLAR))."""
    dag = read_dag(directory / "workflow.dag")
    return {name: [p.arguments for p in expand_submit(directory / n.submit_file, name,
                                                      n.vars, 7, append_vars=n.append_vars)]
            for name, n in dag.nodes.items()}


def test_every_shipped_capability_is_covered():
    assert {"null", "demo"} <= set(SHIPPED)
    assert all(example for _, example in EXAMPLES), "every capability needs an example"


@pytest.mark.parametrize(("name", "example"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_parameters_render_to_valid_submit_files(tmp_path, name, example):
    rendered, _ = render(name, tmp_path / "e1", example)
    check_rendered(rendered.directory)


@pytest.mark.parametrize(("name", "label", "given"), HOSTILE_CASES)
def test_hostile_values_stay_one_literal_argument(tmp_path, name, label, given):
    rendered, parameters = render(name, tmp_path / "e1", given)
    check_rendered(rendered.directory)
    argv = _argv(rendered.directory)
    (pname, value), = given.items()
    values = value if isinstance(value, list) else [value]
    everything = [arg for procs in argv.values() for args in procs for arg in args]
    for v in values:
        if name == "demo" and pname == "targets":
            # targets reach the job through DAG VARS: 'processed item <target>'
            assert f"processed item {v}" in everything, (v, everything)
        elif name == "demo" and pname == "fail_item":
            continue  # only compared in the DAG template, never written as text
        elif name == "null" and pname == "outputs":
            assert v in everything
        else:
            assert v in everything, (v, everything)


def test_refused_values_never_reach_a_template():
    capability = load_capability(TEMPLATES, "null")
    for bad in ("a\nqueue 100", "cr\rlf", "$$(OpSys)", "$(DOLLAR)", "nul\x00"):
        _, problems = resolve_parameters(capability, {"message": bad})
        assert problems, bad


@pytest.mark.parametrize("name", SHIPPED)
def test_site_attributes_and_policy_adjustments_keep_files_valid(tmp_path, name):
    rendered, _ = render(name, tmp_path / "e1", dict(EXAMPLES)[name])
    site = Site(name="chtc", schedd="local", submit_attributes={
        "requirements": '(OpSysMajorVer == 9) && (TARGET.HasCVMFS =?= true)',
        "accounting_group": "group_vlass.$weird",
        "+DESIRED_Sites": '"CHTC,Nebraska"', "My.DocketSite": '"chtc"'})
    changed = apply_site(rendered.directory, site)
    assert changed
    apply_site(rendered.directory, site)  # again: the block is replaced, not repeated
    dag = read_dag(rendered.directory / "workflow.dag")
    node = sorted(dag.nodes)[-1]
    apply_adjustments(rendered.directory, {"nodes": {node: {
        "request_memory_mb": 4096, "avoid_hosts": ["node7.example.org", 'we"ird']}}})
    submits = check_rendered(rendered.directory)
    for path in submits:
        text = path.read_text()
        assert text.count("# docket:site begin") == 1
        description = htcondor2.Submit(text)
        assert "(OpSysMajorVer == 9)" in description["requirements"]
        assert description["accounting_group"] == quote("group_vlass.$weird", "submit")
        assert description["MY.DESIRED_Sites"] == '"CHTC,Nebraska"'
    adjusted = read_dag(rendered.directory / "workflow.dag").nodes[node].submit_file
    assert adjusted.endswith(f".{node}.adjusted.sub")
    description = htcondor2.Submit((rendered.directory / adjusted).read_text())
    assert description["request_memory"] == "4096"
    assert 'TARGET.Machine =!= "node7.example.org"' in description["requirements"]
    assert 'TARGET.Machine =!= "we\\"ird"' in description["requirements"]


@pytest.mark.parametrize("name", SHIPPED)
def test_rendered_dags_pass_from_dag(tmp_path, name):
    rendered, _ = render(name, tmp_path / "e1", dict(EXAMPLES)[name])
    dagman = stub_dagman(tmp_path)
    description = htcondor2.Submit.from_dag(str(rendered.dag), {"DagmanPath": str(dagman)})
    assert description["executable"] == str(dagman)
    assert (rendered.directory / "workflow.dag.condor.sub").is_file()
