"""The runner's decisions as pure code (docket.engines.dagsched) and DAGMan's file
formats (docket.engines.dagman_files), checked without starting a process; and the
local engine's shared_filesystem option, run for real."""

from __future__ import annotations

import json
import time
from pathlib import Path

import classad2
import pytest

from docket.engines import dagman_files
from docket.engines.dagman_files import NodeState
from docket.engines.dagsched import ReadyQueue, StateCounts
from docket.engines.local import LocalEngine


def take_all(queue: ReadyQueue, refuse: set[str] = frozenset()) -> list[str]:
    return queue.take(lambda name: name not in refuse)


def test_priority_first_then_breadth_first_order():
    q = ReadyQueue()
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5)]:
        q.push(name, priority)
    assert take_all(q) == ["b", "d", "a", "c"]


def test_depth_first_puts_a_newly_ready_node_at_the_front():
    q = ReadyQueue(depth_first=True)
    for name in ("a", "b", "c"):
        q.push(name)
    assert q.take(lambda name: None if name != "c" else True) == ["c"]
    q.push("c-child")  # made ready by c: DAGMan prepends it
    assert take_all(q) == ["c-child", "b", "a"]


def test_a_throttled_node_keeps_its_place_and_none_stops_the_offer():
    q = ReadyQueue()
    for name in ("a", "b", "c"):
        q.push(name)
    assert take_all(q, refuse={"a"}) == ["b", "c"]
    assert len(q) == 1 and take_all(q) == ["a"]
    for name in ("x", "y"):
        q.push(name)
    assert q.take(lambda name: None) == [] and len(q) == 2


def test_state_counts_follow_moves_and_categories():
    counts = StateCounts()
    counts.move(None, "waiting", "cpu")
    counts.move(None, "waiting", None)
    counts.move("waiting", "pre", "cpu")
    assert (counts["waiting"], counts.active(), counts.in_category("cpu")) == (1, 1, 1)
    counts.move("pre", "running", "cpu")
    counts.move("running", "done", "cpu")
    assert (counts["done"], counts.active(), counts.in_category("cpu")) == (1, 0, 0)


STATES = [NodeState("a", 5), NodeState("b", 6, "Job proc (2.0.0) failed with status 3",
                                           return_value=3, submit_file="b.sub",
                                           job_id="(2.0.0)", children=("c",)),
          NodeState("c", 7, "Had an ancestor node fail", parents=("b",))]


def test_node_status_text_parses_as_classads():
    text = dagman_files.node_status_text(Path("/d/w.dag"), STATES, 2, 1_700_000_000.0, None)
    dag, a, b, c, end = classad2.parseAds(text)
    assert dag["DagFiles"] == ["/d/w.dag"] and dag["DagStatus"] == 6
    assert (dag["NodesDone"], dag["NodesFailed"], dag["NodesFutile"]) == (1, 1, 1)
    assert [ad["NodeStatus"] for ad in (a, b, c)] == [5, 6, 7]
    assert end["EndTime"] == 1_700_000_000 and end["NextUpdate"] == 0
    running = dagman_files.node_status_text(Path("/d/w.dag"), STATES, 0, 1.0, 61.0)
    assert next(iter(classad2.parseAds(running)))["DagStatus"] == 3


def test_rescue_text_lists_done_nodes_and_the_failed_ones():
    text = dagman_files.rescue_text(Path("/d/w.dag"), STATES, 0.0)
    assert "# Nodes that failed: 1\n#   b,<ENDLIST>\n" in text
    assert [line for line in text.splitlines() if not line.startswith("#") and line] == [
        "DONE a"]


def test_rescue_files_are_numbered_like_dagmans(tmp_path):
    dag = tmp_path / "w.dag"
    assert dagman_files.next_rescue(dag).name == "w.dag.rescue001"
    (tmp_path / "w.dag.rescue001").write_text("")
    (tmp_path / "w.dag.rescue002").write_text("")
    (tmp_path / "other.dag.rescue007").write_text("")
    assert [n for n, _ in dagman_files.rescue_files(dag)] == [1, 2]
    assert dagman_files.next_rescue(dag).name == "w.dag.rescue003"


def test_status_table_columns_line_up_like_dagmans():
    lines = dagman_files.counts_table([3, 0, 0, 0, 0, 0, 2, 1], 2)
    assert lines[:2] == ["DAG status: 2 (DAG_STATUS_NODE_FAILED)", "Of 6 nodes total:"]
    # the recorded DAGMan 23 line: "    3       0        0       0       0 ..."
    assert lines[4] == "    3       0        0       0       0          0        2        1"


def test_the_failed_block_names_each_failed_node():
    block = dagman_files.failed_block(STATES)
    assert block[0] == "ERROR: the following job(s) failed:"
    assert "      Node Name: b" in block and "Node return val: 3" in block
    assert "PARENTS:  WAITING: 0 CHILDREN: c" in block
    assert block[-1] == "---------------------------------------\t<END>"


@pytest.mark.parametrize("shared, sandboxed", [(True, False), (False, True)])
def test_the_engine_option_shared_filesystem(tmp_path, shared, sandboxed):
    (tmp_path / "a.sub").write_text('executable = /bin/sh\narguments = "-c \'pwd > where\'"\n'
                                    "queue\n")
    dag = tmp_path / "workflow.dag"
    dag.write_text("JOB A a.sub\n")
    engine = LocalEngine(max_jobs=1, shared_filesystem=shared)
    engine.submit(dag)
    deadline = time.monotonic() + 60
    while engine.result(dag) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.result(dag).exit_code == 0, json.dumps(engine.result(dag).as_dict())
    where = (tmp_path / "where").read_text().strip()
    assert (where != str(tmp_path)) is sandboxed
