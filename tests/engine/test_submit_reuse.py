"""Nodes that share a submit file with no macros reuse its reading (a wide DAG's speed),
yet each node still runs what its file and VARS say at the moment it is submitted."""

from __future__ import annotations

from pathlib import Path

from dagkit import run_dag, tool, write

from docket.submit import expand_submit


def test_a_pre_script_that_rewrites_a_shared_submit_file_is_seen(tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    tool(tmp_path, "say.sh", f'#!/bin/sh\necho "$@" >> {out}\n')
    write(tmp_path / "job.sub", "executable = say.sh\narguments = first\nqueue\n")
    # B's PRE script rewrites the file A already ran from (same size, so only the
    # content tells them apart)
    tool(tmp_path, "rewrite.sh", f"#!/bin/sh\nprintf 'executable = say.sh\\n"
                                 f"arguments = later\\nqueue\\n' > {tmp_path}/job.sub\n")
    dag = write(tmp_path / "d.dag", "JOB A job.sub\nJOB B job.sub\nSCRIPT PRE B rewrite.sh\n"
                                    "PARENT A CHILD B\n")
    outcome = run_dag(dag)
    assert outcome.code == 0, outcome.dagman_out
    assert out.read_text().split() == ["first", "later"]


def test_nodes_sharing_a_file_keep_their_own_vars_and_names(tmp_path: Path) -> None:
    sub = write(tmp_path / "job.sub", "executable = /bin/echo\narguments = x\nqueue 2\n")
    first = expand_submit(sub, "A", {"request_memory": "1GB"}, 1, cwd=tmp_path)
    again = expand_submit(sub, "B", {"request_memory": "1GB"}, 2, cwd=tmp_path)
    other = expand_submit(sub, "C", {"request_memory": "2GB"}, 3, cwd=tmp_path)
    assert [(p.node, p.proc) for p in again] == [("B", 0), ("B", 1)]
    assert [p.node for p in first] == ["A", "A"]
    assert again[0].request == {"request_memory": "1GB"}
    assert other[0].request == {"request_memory": "2GB"}
    assert again[0].executable == "/bin/echo" and again[0].arguments == ["x"]


def test_a_queue_from_file_is_read_again_for_every_node(tmp_path: Path) -> None:
    sub = write(tmp_path / "job.sub", "executable = /bin/echo\nqueue name from items.txt\n")
    write(tmp_path / "items.txt", "a\n")
    assert len(expand_submit(sub, "A", {}, 1, cwd=tmp_path)) == 1
    write(tmp_path / "items.txt", "a\nb\nc\n")
    assert len(expand_submit(sub, "B", {}, 2, cwd=tmp_path)) == 3
