"""``docket resubmit --rescue``: a failed execution's new run continues from its rescue
DAG, so the nodes it finished do not run again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from docket.dag import read_dag
from tests.conftest import drop, request_doc


def _executions(home: Path) -> list[tuple[int, str, str, int | None]]:
    conn = sqlite3.connect(f"file:{home / 'state' / 'docket.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, directory, engine_state, exit_code FROM executions "
                            "ORDER BY id").fetchall()
    finally:
        conn.close()


def _ran(directory: Path) -> set[str]:
    """Nodes whose jobs were submitted in this directory's run."""
    log = (directory / "workflow.dag.nodes.log").read_text()
    return {line.split(":", 1)[1].strip() for line in log.splitlines()
            if line.strip().startswith("DAG Node:")}


def test_resubmit_rescue_runs_only_what_the_failed_run_did_not_finish(home, docket):
    drop(home, "sky.yaml", request_doc("sky", capability="demo", targets=["a", "b", "c"],
                                       fail_item="b", sleep_s=0))
    assert docket("tick", "--wait").code == 0
    [(first, first_dir, state, code)] = _executions(home)
    first_dir = Path(first_dir)
    assert (state, code) == ("done", 1)
    rescue = first_dir / "workflow.dag.rescue001"
    nodes = set(read_dag(first_dir / "workflow.dag").nodes)
    assert _ran(first_dir) == nodes - {"deliver"}  # deliver never ran: process_1 failed
    assert sorted(line for line in rescue.read_text().splitlines()
                  if line.startswith("DONE")) == ["DONE fetch", "DONE process_0",
                                                  "DONE process_2"]

    result = docket("resubmit", "sky", "--reason", "continue after the fix", "--rescue",
                    "--json")
    assert result.code == 0, result.err
    assert "continuing execution" in result.json()["outcome"]
    assert docket("tick", "--wait").code == 0
    second, second_dir, state, code = _executions(home)[-1]
    second_dir = Path(second_dir)
    assert second != first and second_dir != first_dir
    # only the failed node ran again (and failed again: same parameters); what the
    # first run finished was copied, not rerun
    assert _ran(second_dir) == {"process_1"}
    assert (second_dir / "processed-process_0.txt").exists()
    assert "Running the rescue DAG workflow.dag.rescue001" in (
        second_dir / "workflow.dag.dagman.out").read_text()


def test_resubmit_rescue_needs_a_failed_run(home, docket):
    drop(home, "ok.yaml", request_doc("ok", sleep_s=0))
    assert docket("tick", "--wait").code == 0
    result = docket("resubmit", "ok", "--reason", "again", "--rescue")
    assert result.code != 0
    assert "has no rescue DAG" in result.err
