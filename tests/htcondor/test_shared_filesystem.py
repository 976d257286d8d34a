"""A site whose pool shares no filesystem with this machine (``shared_filesystem: false``):
node jobs run the tools' PEX files (HTCondor transfers a job's executable), and every file
a job reads or writes is in its transfer lists, with no absolute path into this machine.
The local site's setting reaches the local engine as ``shared_filesystem``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docket.capabilities import load_capability, resolve_parameters
from docket.dag import read_dag
from docket.home import resolve_home
from docket.render import DEFAULT_PEX_DIR, render_execution
from docket.submit import expand_submit
from docket.watcher import Watcher
from schemas.sites import Site
from tests.conftest import drop, request_doc
from tests.htcondor.condorkit import TEMPLATES, TOOLS

CASES = {"demo": {"targets": ["m31", "m51"], "sleep_s": 0.1},
         "null": {"sleep_s": 1, "fail_first": 1, "outputs": ["r.txt", "s.txt"]}}


def _render(name: str, directory: Path, shared: bool, pex_dir: Path | None = None) -> Path:
    capability = load_capability(TEMPLATES, name)
    parameters, problems = resolve_parameters(capability, CASES[name])
    assert not problems
    meta = {"name": "r1", "version": 1, "execution": 7, "number": 1, "capability": name,
            "priority": 0, "output_dir": None, "created": "2026-12-01T00:00:00.000000Z",
            "labels": {}}
    rendered = render_execution(capability, directory, request=meta, parameters=parameters,
                                document=json.dumps({"spec": {}}), tools_dir=TOOLS,
                                shared_filesystem=shared, pex_dir=pex_dir)
    return rendered.dag


def _procs(dag_path: Path) -> dict[str, list]:
    dag = read_dag(dag_path)
    return {name: expand_submit(dag_path.parent / node.submit_file, name, node.vars, 1)
            for name, node in dag.nodes.items()}


def _options(arguments: list[str], flag: str) -> list[str]:
    return [arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a == flag]


@pytest.mark.parametrize("name", sorted(CASES))
def test_without_a_shared_filesystem_jobs_carry_everything_they_use(tmp_path, name):
    dag = _render(name, tmp_path / "e1", shared=False, pex_dir=Path("/opt/docket/pex"))
    for node, procs in _procs(dag).items():
        for proc in procs:
            assert proc.executable == "/opt/docket/pex/null.pex", node
            assert proc.transfer_files, node
            inputs = {Path(i).name for i in proc.transfer_input_files}
            for read in _options(proc.arguments, "--read") + _options(proc.arguments,
                                                                      "--state-file"):
                assert not Path(read).is_absolute(), (node, read)
                assert read in inputs, (node, read)
            writes = _options(proc.arguments, "--write")
            if proc.transfer_output_files is not None:  # else every changed file returns
                assert set(writes) <= set(proc.transfer_output_files), node
            assert str(tmp_path) not in " ".join(proc.arguments), node  # no path into here
    # the state file a transferred job reads exists before its first run
    if name == "null":
        assert (tmp_path / "e1" / "null.runs").read_text() == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_with_a_shared_filesystem_jobs_run_the_venvs_tools(tmp_path, name):
    dag = _render(name, tmp_path / "e1", shared=True)
    for node, procs in _procs(dag).items():
        assert all(p.executable == str(TOOLS / "null") for p in procs), node
    if name == "null":
        (proc,) = _procs(dag)["run"]
        assert _options(proc.arguments, "--state-file") == [str(tmp_path / "e1" / "null.runs")]
        assert proc.transfer_input_files == []


def test_the_default_pex_dir_is_where_make_pex_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build", Path(__file__).resolve().parents[2] / "pex-build" / "build.py")
    assert spec and spec.loader
    source = Path(spec.origin).read_text()
    assert 'DIST = REPO / "dist"' in source
    assert Path(spec.origin).resolve().parents[1] / "dist" == DEFAULT_PEX_DIR


def test_the_site_setting_reaches_rendering_and_the_local_engine(tmp_path):
    root = tmp_path / "home"
    (root / "templates").mkdir(parents=True)
    (root / "sites.yaml").write_text(
        "sites:\n  - name: local\n    shared_filesystem: false\n"
        "  - name: pool\n    schedd: local\n    shared_filesystem: false\n"
        "    pex_dir: /opt/docket/pex\n")
    watcher = Watcher(resolve_home(root))
    try:
        watcher.load_sites()
        assert watcher.engines.for_site("local").shared_filesystem is False
        site = watcher.launcher._site("pool")
        assert (site.shared_filesystem, site.pex_dir) == (False, "/opt/docket/pex")
        (root / "sites.yaml").write_text("sites:\n  - name: pool\n    schedd: local\n")
        watcher.load_sites()
        assert watcher.engines.for_site("local").shared_filesystem is True
        assert watcher.launcher._site("pool").shared_filesystem is True
    finally:
        watcher.close()
    assert Site(name="x", schedd="local").shared_filesystem is True


@pytest.mark.slow
def test_null_fail_first_is_retried_to_success_on_a_strict_local_site(home, docket,
                                                                      monkeypatch, tmp_path):
    # the local engine in strict mode: each attempt runs null.pex in a sandbox that sees
    # only null.runs, transferred in; the run count gets back only because the job changed
    # it (no transfer_output_files), so each retry sees the count the last one left
    from tests.pex.conftest import load_build

    (built,) = load_build().build(["null"], log=lambda line: None)
    (home / "sites.yaml").write_text("sites:\n  - name: local\n    shared_filesystem: false\n"
                                     f"    pex_dir: {built.path.parent}\n")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # the PEX unpacks under ~/.pex
    drop(home, "flaky.yaml", request_doc("flaky", fail_first=2, retries=2))
    assert docket("tick", "--wait").code == 0
    shown = docket("show", "flaky", "--json").json()
    assert shown["request"]["state"] == "complete", shown
    (node,) = shown["executions"][0]["nodes"]
    assert (node["attempts"], node["state"]) == (3, "done")
    directory = Path(shown["executions"][0]["directory"])
    assert (directory / "null.runs").read_text().strip() == "3"
    (proc,) = expand_submit(directory / "null.sub", "run", {}, 1)
    assert proc.executable == str(built.path) and proc.transfer_input_files == ["null.runs"]
    assert "--state-file null.runs" in " ".join(proc.arguments)
    dagman_out = (directory / "workflow.dag.dagman.out").read_text()
    assert "retry 1 of 2" in dagman_out and "retry 2 of 2" in dagman_out
