"""``docket dag run`` and ``docket dag check``: the entry function called with argv on
real DAG files (tests/engine/data), and one run of the installed ``docket`` script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from cli.dag import main

DATA = Path(__file__).parent / "data"
DOCKET = Path(sys.executable).parent / "docket"


def case(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def test_dag_run_exits_with_dagmans_status_and_continues_from_the_rescue_dag(
        tmp_path, monkeypatch, capsys):
    d = case("rescue", tmp_path)
    monkeypatch.setenv("ORDER_LOG", str(d / "order.txt"))
    assert main(["run", str(d / "rescue.dag")]) == 1
    out = capsys.readouterr().out
    assert "failed, exit status 1; 1 of 3 nodes done" in out
    assert "node b: job exited with 1" in out
    assert "rescue DAG: rescue.dag.rescue001" in out
    assert (d / "rescue.dag.dagman.out").exists() and (d / "rescue.dag.nodes.log").exists()
    # run again: like condor_submit_dag, from the rescue DAG
    assert main(["run", str(d / "rescue.dag"), "--follow", "--json"]) == 0
    out = capsys.readouterr().out
    assert "Running the rescue DAG rescue.dag.rescue001" in out  # --follow: dagman.out
    payload = json.loads(out[out.index("{\n"):])
    assert payload["exit_status"] == 0 and payload["metrics"]["status"] == "complete"
    assert (d / "order.txt").read_text().split() == ["a", "b", "b", "c"]
    # a DAG that finished runs again from the start
    assert main(["run", str(d / "rescue.dag")]) == 0
    assert (d / "order.txt").read_text().split() == ["a", "b", "b", "c", "a", "b", "c"]


def test_dag_run_max_jobs_limits_nodes_at_once(tmp_path, capsys):
    d = case("config", tmp_path)
    assert main(["run", str(d / "breadth.dag"), "--max-jobs", "1"]) == 0
    assert (d / "order.txt").read_text().split() == ["top1", "top2", "bottom1", "bottom2"]


def test_dag_check_names_what_would_not_run_here(tmp_path, capsys):
    d = case("check", tmp_path)
    assert main(["check", str(d / "check.dag"), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["runs_locally"] is False and found["nodes"] == 3
    problems = "\n".join(found["problems"])
    assert "node virtual: universe vm does not run on the local engine" in problems
    assert f"node lost: submit file {d / 'missing.sub'} does not exist" in problems
    assert "fine" not in problems
    assert any("SERVICE needs a schedd" in n for n in found["notes"])
    assert main(["check", str(d / "check.dag")]) == 1
    assert "would NOT run on the local engine" in capsys.readouterr().out


def test_dag_check_passes_a_dag_the_local_engine_runs(tmp_path, capsys):
    d = case("splice", tmp_path)
    assert main(["check", str(d / "splice.dag")]) == 0
    assert capsys.readouterr().out.startswith(f"{d / 'splice.dag'}: 8 nodes; runs on")


def test_a_missing_dag_file_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nowhere.dag")]) == 3
    assert "no such DAG file" in capsys.readouterr().err


def test_the_installed_script_runs_a_dag(tmp_path):
    d = case("final", tmp_path)
    done = subprocess.run([str(DOCKET), "dag", "run", "final-fails.dag"], cwd=d,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "final-fails.dag: failed, exit status 1" in done.stdout


def test_the_dag_check_example_in_the_docs_is_real_output(tmp_path, capsys):
    import re

    d = case("check", tmp_path)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "htcondor.md").read_text()
    example = re.search(r"```console\n\$ docket dag check check.dag\n(.*?)```", doc,
                        re.DOTALL)[1]
    assert main(["check", str(d / "check.dag")]) == 1
    real = capsys.readouterr().out.replace(f"{d}/", "")
    assert real == example


def test_running_a_finished_dag_again_runs_its_subdag_again(tmp_path, monkeypatch,
                                                              capsys):
    d = case("subdag", tmp_path)
    monkeypatch.setenv("ORDER_LOG", str(d / "order.txt"))
    assert main(["run", str(d / "outer.dag")]) == 0
    assert main(["run", str(d / "outer.dag")]) == 0
    assert (d / "order.txt").read_text().split() == [
        "before", "x", "flaky", "flaky", "after", "before", "x", "flaky", "after"]
