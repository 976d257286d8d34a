"""DAGs written the way DAGMan's manual describes them (tests/engine/data/), run by the
real local runner; each test checks an outcome DAGMan documents: where jobs run, what
scripts receive, the order of submission, the exit status, the node status file, the
rescue DAG, dagman.out's lines."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import classad2
import pytest
from dagkit import EventType, events_by_node, max_overlap, read_events, run_dag

from docket.dag import DagError, read_dag

DATA = Path(__file__).parent / "data"
SUBMITTED, EXECUTING, TERMINATED = (EventType.SUBMIT, EventType.EXECUTE,
                                    EventType.JOB_TERMINATED)


def case(name: str, tmp_path: Path) -> Path:
    """A fresh copy of tests/engine/data/<name> (runs write beside their DAG)."""
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def last_line(out: str) -> str:
    return out.rstrip("\n").splitlines()[-1]


# where jobs run ------------------------------------------------------------------------


def test_only_should_transfer_files_yes_is_sandboxed(tmp_path):
    d = case("sandbox", tmp_path)
    out = run_dag(d / "sandbox.dag")
    assert out.code == 0, out.dagman_out
    # scheduler universe and shared-filesystem vanilla jobs run in the real directory:
    # they see the PRE script's file and append to the same journal
    assert (d / "sched.where").read_text().strip() == str(d)
    assert (d / "shared.where").read_text().strip() == str(d)
    assert lines(d / "journal.txt") == ["sched", "written by the PRE script"]
    # should_transfer_files = YES: a scratch directory, only listed outputs come back
    boxed = (d / "boxed.where").read_text().strip()
    assert boxed != str(d) and not Path(boxed).exists()


def test_without_a_shared_filesystem_vanilla_jobs_are_sandboxed(tmp_path):
    d = case("sandbox", tmp_path)
    out = run_dag(d / "sandbox.dag", 2, "--no-shared-filesystem")
    # the vanilla job no longer sees the PRE script's file: strict mode shows a job
    # that would fail on a pool without a shared filesystem
    assert out.code == 1
    assert "shared" in out.metrics["failed_nodes"]
    assert (d / "sched.where").read_text().strip() == str(d)  # scheduler: still in place
    assert "written by the PRE script" not in (d / "journal.txt").read_text()
    assert (d / "shared.where").read_text().strip() != str(d)


def test_paths_are_read_from_the_dag_directory_or_dir(tmp_path):
    d = case("paths", tmp_path)
    out = run_dag(d / "paths.dag")
    assert out.code == 0, out.dagman_out
    # JOB A sub/a.sub: executable, output and log are relative to the DAG's directory
    assert (d / "a.out").read_text() == f"a ran in {d}\n"
    assert not (d / "sub" / "a.out").exists()
    assert [n for n, *_ in read_events(d / "a.log")] == [SUBMITTED, EXECUTING, TERMINATED]
    # DIR work: initialdir = data is work/data; the executable is relative to work
    assert (d / "work" / "data" / "b.out").read_text() == f"b ran in {d / 'work' / 'data'}\n"


def test_a_jobs_own_log_gets_its_events_and_empty_arguments_run(tmp_path):
    d = case("misc", tmp_path)
    out = run_dag(d / "userlog.dag")
    assert out.code == 0, out.dagman_out  # 'arguments =' runs /bin/sh with no arguments
    own = read_events(d / "logs" / "job.log")
    assert [n for n, *_ in own] == [SUBMITTED, EXECUTING, TERMINATED]
    assert own[-1][3]["ReturnValue"] == 0
    assert [n for n, _, _ in events_by_node(out.dag)["A"]] == [SUBMITTED, EXECUTING,
                                                                TERMINATED]


# scripts ---------------------------------------------------------------------------------


def test_script_words_pass_literally_macros_expand_and_defer_runs_again(tmp_path):
    d = case("scripts", tmp_path)
    out = run_dag(d / "scripts.dag")
    assert out.code == 0, out.dagman_out
    [pre] = [json.loads(x) for x in lines(d / "pre.json")]
    # no shell unquoting; a macro only as a whole word (case-blind); $RETURN is not a
    # PRE script macro and stays as written
    assert pre == ['"two', 'words"', "back\\slash", "'single'", "A", "A", "x$JOB", "$RETURN"]
    [post] = [json.loads(x) for x in lines(d / "post.json")]
    cluster = post[8].split(".")[0]
    assert post == ["A", "0", "2", "0", "0", "0", "0", f"{cluster}.0", cluster, "3", "0",
                    "2", "1", "True", "0"]
    assert (d / "deferred-once").exists()  # the POST script ran twice
    assert "Deferring POST script of node A for 1 seconds (exit value 7)" in out.dagman_out


# CONFIG knobs ---------------------------------------------------------------------------


def test_breadth_first_is_the_default_order(tmp_path):
    d = case("config", tmp_path)
    out = run_dag(d / "breadth.dag", 1)
    assert out.code == 0, out.dagman_out
    assert lines(d / "order.txt") == ["top1", "top2", "bottom1", "bottom2"]


def test_dagman_submit_depth_first_runs_a_child_right_after_its_parent(tmp_path):
    d = case("config", tmp_path)
    out = run_dag(d / "depth.dag", 4)  # DAGMAN_MAX_JOBS_SUBMITTED = 1 in depth.config
    assert out.code == 0, out.dagman_out
    order = lines(d / "order.txt")
    assert sorted(order) == ["bottom1", "bottom2", "top1", "top2"]
    assert order[1] == order[0].replace("top", "bottom")
    assert order[3] == order[2].replace("top", "bottom")


def test_config_knobs_append_vars_always_run_post_and_max_pre_scripts(tmp_path):
    d = case("config", tmp_path)
    out = run_dag(d / "knobs.dag", 4)
    assert out.code == 0, out.dagman_out
    # DAGMAN_DEFAULT_APPEND_VARS: the DAG's VARS win over the submit file's value
    assert (d / "vars.colour").read_text() == "from the DAG\n"
    # DAGMAN_ALWAYS_RUN_POST: the PRE script failed with 3, the job never ran ($RETURN
    # -1004) and the POST script's success made the node succeed
    assert (d / "post.args").read_text() == "-1004 3\n"
    assert not (d / "rescued.colour").exists()
    # DAGMAN_MAX_PRE_SCRIPTS = 1: never two PRE scripts at once
    spans: dict[str, list] = {}
    for line in lines(d / "pre.log"):
        word, name, stamp = line.split()
        spans.setdefault(name, []).append(int(stamp))
    assert max_overlap([(a, b) for a, b in spans.values()]) == 1


# what DAGMan writes ----------------------------------------------------------------------


def test_node_status_file_is_written_in_dagmans_classad_format(tmp_path):
    d = case("status", tmp_path)
    out = run_dag(d / "status.dag")
    assert out.code == 1
    ads = list(classad2.parseAds((d / "status.txt").read_text()))
    dag_ad, *node_ads, end = ads
    assert dag_ad["Type"] == "DagStatus" and dag_ad["DagStatus"] == 6
    assert (dag_ad["NodesTotal"], dag_ad["NodesDone"], dag_ad["NodesFailed"],
            dag_ad["NodesFutile"]) == (3, 1, 1, 1)
    by_name = {ad["Node"]: ad for ad in node_ads}
    assert {n: ad["NodeStatus"] for n, ad in by_name.items()} == {
        "good": 5, "bad": 6, "after": 7}
    assert by_name["bad"]["StatusDetails"].startswith("Job proc (")
    assert by_name["bad"]["StatusDetails"].endswith("failed with status 3")
    assert by_name["after"]["StatusDetails"] == "Had an ancestor node fail"
    assert end["Type"] == "StatusEnd" and end["NextUpdate"] == 0


def test_dagman_out_has_the_status_table_error_block_and_exit_line(tmp_path):
    d = case("status", tmp_path)
    out = run_dag(d / "status.dag")
    text = [line[18:] for line in out.dagman_out.splitlines()]  # drop the time stamps
    table = len(text) - 1 - text[::-1].index("Of 3 nodes total:")
    assert text[table - 1] == "DAG status: 2 (DAG_STATUS_NODE_FAILED)"
    assert text[table + 1].split() == ["Done", "Pre", "Queued", "Post", "Ready",
                                       "Un-Ready", "Failed", "Futile"]
    assert text[table + 3].split() == ["1", "0", "0", "0", "0", "0", "1", "1"]
    error = text.index("ERROR: the following job(s) failed:")
    assert text[error + 2] == "      Node Name: bad"
    assert text[error + 6] == "Node return val: 3"
    assert last_line(out.dagman_out).endswith("EXITING WITH STATUS 1")


def test_a_failed_dag_writes_a_rescue_dag_and_the_next_run_uses_it(tmp_path, monkeypatch):
    d = case("rescue", tmp_path)
    monkeypatch.setenv("ORDER_LOG", str(d / "order.txt"))
    first = run_dag(d / "rescue.dag")
    assert first.code == 1
    rescue = d / "rescue.dag.rescue001"
    text = rescue.read_text()
    assert "# Rescue DAG version: 2.0.1 (partial)" in text
    assert "#   b,<ENDLIST>" in text
    assert [x for x in text.splitlines() if x and not x.startswith("#")] == ["DONE a"]
    # a second runner without --rescue leaves a finished DAG alone ...
    assert run_dag(d / "rescue.dag").code == 1
    # ... with --rescue (condor_submit_dag's default) it runs from rescue001
    second = run_dag(d / "rescue.dag", 2, "--rescue")
    assert second.code == 0, second.dagman_out
    assert lines(d / "order.txt") == ["a", "b", "b", "c"]  # a did not run again
    assert "Running the rescue DAG rescue.dag.rescue001" in second.dagman_out
    assert (d / "rescue.dag.metrics.before-rescue001").exists()
    assert not (d / "rescue.dag.rescue002").exists()


def test_a_cycle_ends_with_dagmans_lines(tmp_path):
    d = case("misc", tmp_path)
    out = run_dag(d / "cycle.dag")
    assert out.code == 1
    said = [line[18:] for line in out.dagman_out.splitlines()]
    assert "ERROR: a cycle exists in the dag, please check input" in said
    assert last_line(out.dagman_out).endswith("EXITING WITH STATUS 1")


@pytest.mark.parametrize("name, message", [
    ("illegal.dag", "node name 'not+allowed' contains illegal character '+'"),
    ("reject.dag", "Exiting because of REJECT specification in"),
])
def test_dags_dagman_refuses_are_not_run(tmp_path, name, message):
    d = case("misc", tmp_path)
    out = run_dag(d / name)
    assert out.code == 1
    assert message in out.dagman_out
    assert not (d / f"{name}.nodes.log").read_text()  # nothing was submitted


# the language ----------------------------------------------------------------------------


def test_include_continuation_inline_descriptions_noop_done_and_the_logs(tmp_path):
    d = case("language", tmp_path)
    out = run_dag(d / "language.dag")
    assert out.code == 0, out.dagman_out
    order = lines(d / "order.txt")
    # $$([1 + 2]) needs no machine: evaluated; NOOP and DONE nodes do not run
    assert order[0] == "included hello 3"
    assert sorted(order[1:]) == ["described hello", "inline hello"]
    dag = read_dag(d / "language.dag")
    assert dag.nodes["included"].children == {"inline", "described"}
    state_log = lines(d / "language.jobstate.log")
    assert state_log[0].endswith("INTERNAL *** DAGMAN_STARTED 0.0 ***")
    assert state_log[-1].endswith("INTERNAL *** DAGMAN_FINISHED 0 ***")
    events = [line.split()[1:3] for line in state_log[1:-1]]
    assert ["inline", "SUBMIT"] in events and ["inline", "JOB_SUCCESS"] in events
    dot = (d / "language.dot").read_text()
    assert dot.startswith("digraph DAG {") and '"included" -> "inline";' in dot
    assert out.metrics["dagman_job_attrs"] == {"Owner_Note": '"made by the tests"'}


@pytest.mark.parametrize("dag_file, code, final_line", [
    ("final.dag", 0, "cleanup status=2 failed=1"),
    ("final-fails.dag", 1, "cleanup status=2 failed=1"),
])
def test_the_final_node_runs_last_and_decides_the_dags_exit(tmp_path, dag_file, code,
                                                            final_line):
    d = case("final", tmp_path)
    out = run_dag(d / dag_file)
    assert out.code == code, out.dagman_out
    assert out.metrics["exitcode"] == code
    order = lines(d / "order.txt")
    assert sorted(order[:2]) == ["bad", "good"] and order[2] == final_line
    # $DAG_STATUS 2 (a node failed) and $FAILED_COUNT 1 reach the FINAL node's scripts;
    # its POST script sees its job's $RETURN
    assert lines(d / "scripts.txt") == ["pre 2 1", f"post 2 1 {code}"]


def test_splices_nest_and_splice_level_edges_order_them(tmp_path, monkeypatch):
    d = case("splice", tmp_path)
    monkeypatch.setenv("ORDER_LOG", str(d / "order.txt"))
    dag = read_dag(d / "splice.dag")
    assert dag.nodes["left+deep+x"].parents == {"left+a"}
    assert dag.nodes["right+a"].parents == {"left+b"}
    assert dag.nodes["end"].parents == {"right+b"}
    out = run_dag(d / "splice.dag")
    assert out.code == 0, out.dagman_out
    ran = [line.split() for line in lines(d / "order.txt")]
    assert [name for name, _ in ran] == ["start", "left+a", "left+deep+x", "left+b",
                                         "right+a", "right+deep+x", "right+b", "end"]
    where = dict(ran)
    assert where["left+a"] == str(d / "inner")  # SPLICE ... DIR inner
    assert where["left+deep+x"] == str(d / "inner" / "deeper")  # nested DIR
    assert where["start"] == str(d)


def test_connect_joins_pin_out_to_pin_in(tmp_path):
    dag = read_dag(case("splice", tmp_path) / "pins.dag")
    assert dag.nodes["consumer+c1"].parents == {"producer+p1"}
    assert dag.nodes["consumer+c2"].parents == {"producer+p2"}


def test_a_subdag_runs_as_a_node_with_its_own_files_and_rescue(tmp_path, monkeypatch):
    d = case("subdag", tmp_path)
    monkeypatch.setenv("ORDER_LOG", str(d / "order.txt"))
    out = run_dag(d / "outer.dag", 2, timeout_s=90)
    assert out.code == 0, out.dagman_out
    inner = d / "inner"
    # the nested DAG failed once (flaky), wrote its rescue DAG, and the retry of the
    # SUBDAG node ran from it: x ran once, flaky twice
    assert lines(d / "order.txt") == ["before", "x", "flaky", "flaky", "after"]
    assert "DONE x" in (inner / "inner.dag.rescue001").read_text()
    assert json.loads((inner / "inner.dag.metrics").read_text())["status"] == "complete"
    assert "EXITING WITH STATUS 0" in last_line((inner / "inner.dag.dagman.out").read_text())


def test_a_splice_that_reads_a_missing_file_names_the_line(tmp_path):
    path = tmp_path / "w.dag"
    path.write_text("JOB A a.sub\nSPLICE S nowhere.dag DIR elsewhere\n")
    with pytest.raises(DagError, match=f"{path}:2: cannot read"):
        read_dag(path)


def test_the_one_place_a_jobs_command_line_is_built(tmp_path):
    from docket.engines.localdag import job_argv
    from docket.submit import expand_submit

    (tmp_path / "a.sub").write_text('executable = /bin/echo\narguments = "x y"\nqueue\n')
    [spec] = expand_submit(tmp_path / "a.sub", "A", {}, 1)
    assert job_argv(spec) == ["/bin/echo", "x", "y"]
    assert os.path.isabs(job_argv(spec)[0])


def test_a_removed_dag_still_runs_its_final_node_with_dag_status_4(tmp_path):
    import signal

    from dagkit import finish, start, wait_for

    (tmp_path / "long.sub").write_text('executable = /bin/sh\narguments = "-c \'touch '
                                       'started; sleep 30\'"\nqueue\n')
    (tmp_path / "f.sub").write_text('executable = /bin/sh\narguments = "-c \'echo '
                                    '$(DAG_STATUS) > final.txt\'"\nqueue\n')
    dag = tmp_path / "w.dag"
    dag.write_text("JOB L long.sub\nFINAL F f.sub\n")
    runner = start(dag)
    wait_for(lambda: (tmp_path / "started").exists(), what="the long job")
    os.kill(runner.pid, signal.SIGTERM)  # what cancelling a local DAG does
    out = finish(runner, dag)
    assert out.code == 2 and out.metrics["status"] == "removed"
    assert (tmp_path / "final.txt").read_text() == "4\n"  # DAG_STATUS_RM


def test_a_final_node_is_retried_like_any_other(tmp_path):
    (tmp_path / "f.sub").write_text('executable = /bin/sh\narguments = "-c \'echo x >> '
                                    'tries; test $(RETRY) = 1\'"\nqueue\n')
    (tmp_path / "a.sub").write_text("executable = /bin/true\nqueue\n")
    dag = tmp_path / "w.dag"
    dag.write_text("JOB A a.sub\nFINAL F f.sub\nRETRY F 2\n")
    out = run_dag(dag)
    assert out.code == 0, out.dagman_out
    assert lines(tmp_path / "tries") == ["x", "x"]  # failed once, then succeeded
