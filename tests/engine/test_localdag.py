"""The local DAG runner, run for real: ``python -m docket.engines.localdag DAG`` in its own
session, real processes for the jobs, and only what a user would see checked: files the
jobs wrote, the metrics JSON, dagman.out and the node event log read with htcondor2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dagkit import (
    ARGV_PY,
    JOB_SH,
    NULL,
    EventType,
    events_by_node,
    files,
    finish,
    intervals,
    max_overlap,
    pid_alive,
    read_events,
    run_dag,
    start,
    tool,
    wait_for,
    write,
)

from docket.quoting import quote_arguments, quote_environment

HELD, ABORTED, EXECUTING, SUBMITTED, TERMINATED, POST = (
    EventType.JOB_HELD, EventType.JOB_ABORTED, EventType.EXECUTE, EventType.SUBMIT,
    EventType.JOB_TERMINATED, EventType.POST_SCRIPT_TERMINATED)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    """A processing directory with job.sh and job.sub (VARS: sleep, code)."""
    tool(tmp_path, "job.sh", JOB_SH)
    write(tmp_path / "job.sub", f"""\
if !defined sleep
  sleep = 0
endif
if !defined code
  code = 0
endif
executable = job.sh
arguments = "$(JOB) $(sleep) {tmp_path / 'runs.log'} $(code)"
should_transfer_files = NO
queue
""")
    return tmp_path


def dag(directory: Path, text: str, name: str = "w.dag") -> Path:
    return write(directory / name, text)


def sh_sub(path: Path, script: str, extra: str = "", queue: str = "queue") -> Path:
    """A submit file running ``/bin/sh -c SCRIPT`` (new-syntax arguments: no ' in it)."""
    return write(path, f"executable = /bin/sh\narguments = \"-c '{script}'\"\n"
                       f"should_transfer_files = NO\n{extra}{queue}\n")


def starts(flow: Path) -> list[str]:
    """Job names in the order they started."""
    path = flow / "runs.log"
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines()
            if line.startswith("start ")]


# order, VARS ---------------------------------------------------------------------------


def test_a_child_never_starts_before_its_parents_finish(flow):
    d = dag(flow, """\
JOB A job.sub
JOB B job.sub
JOB C job.sub
JOB D job.sub
VARS A sleep="0.3"
VARS B sleep="0.1"
VARS C sleep="0.6"
PARENT A CHILD B C
PARENT B C CHILD D
""")
    out = run_dag(d, 4)
    assert out.code == 0, out.dagman_out
    assert out.metrics["status"] == "complete"
    assert out.metrics["jobs_succeeded"] == 4
    spans = intervals(flow / "runs.log")
    assert sorted(spans) == ["A", "B", "C", "D"]
    for parent, child in [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")]:
        assert spans[child][0][0] >= spans[parent][0][1], f"{child} started before {parent}"
    # B and C were both free to run once A ended: they overlapped
    assert max_overlap([spans["B"][0], spans["C"][0]]) == 2
    for node in "ABCD":
        assert f"node {node}: done (attempt 1)" in out.dagman_out


def test_vars_reach_the_job_with_quotes_and_backslashes(tmp_path):
    tool(tmp_path, "argv.py", ARGV_PY)
    write(tmp_path / "a.sub", """\
executable = argv.py
arguments = "$(out) '$(who)' '$(path)' $(JOB)-$(RETRY)"
should_transfer_files = NO
queue
""")
    # DAG level: \\" is a quote, \\\\ a backslash, any other backslash stays as written;
    # the job's arguments are new syntax, so a quote that must reach the job is doubled
    d = dag(tmp_path, r'''JOB A a.sub
VARS A out="args.json" who="say \"\"hi\"\" to Lance\\ Armstrong"
VARS A path="C:\temp\\new dir"
''')
    out = run_dag(d)
    assert out.code == 0, out.dagman_out
    seen = json.loads((tmp_path / "args.json").read_text())
    assert seen["argv"] == ['say "hi" to Lance\\ Armstrong', "C:\\temp\\new dir", "A-0"]


def test_arguments_round_trip_hostile_values(tmp_path):
    tool(tmp_path, "argv.py", ARGV_PY)
    values = ["two words", "it's", 'say "hi"', "$HOME", "$(Process)", "100%", "ünïcødé ✓",
              "", "back\\slash", "'", '"', "tab\there", "--flag=a b", "*"]
    write(tmp_path / "a.sub", f"""\
executable = argv.py
arguments = {quote_arguments(["args.json", *values])}
should_transfer_files = NO
queue
""")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert json.loads((tmp_path / "args.json").read_text())["argv"] == values


def test_environment_initialdir_output_and_error(tmp_path):
    tool(tmp_path, "argv.py", ARGV_PY)
    (tmp_path / "run1").mkdir()
    env = {"GREETING": "hello world", "QUOTED": 'say "hi" it\'s', "DOLLAR": "$HOME",
           "UNI": "ünï"}
    write(tmp_path / "a.sub", f"""\
executable = /bin/sh
arguments = "-c 'echo to-stdout; echo to-stderr >&2; {tmp_path / 'argv.py'} env.json'"
environment = {quote_environment(env)}
initialdir = run1
output = a.out
error = a.err
should_transfer_files = NO
queue
""")
    write(tmp_path / "b.sub", """\
executable = /bin/sh
arguments = "-c 'echo one; echo two >&2; echo three'"
output = both.txt
error = both.txt
should_transfer_files = NO
queue
""")
    out = run_dag(dag(tmp_path, "JOB A a.sub\nJOB B b.sub\n"))
    assert out.code == 0, out.dagman_out
    assert (tmp_path / "run1" / "a.out").read_text() == "to-stdout\n"
    assert (tmp_path / "run1" / "a.err").read_text() == "to-stderr\n"
    seen = json.loads((tmp_path / "run1" / "env.json").read_text())
    assert seen["cwd"] == str(tmp_path / "run1")
    for key, value in env.items():
        assert seen["env"][key] == value
    assert seen["env"]["_CONDOR_JOB_IWD"] == str(tmp_path / "run1")
    # the same file for output and error keeps every line of both
    assert (tmp_path / "both.txt").read_text().splitlines() == ["one", "two", "three"]


def test_getenv_copies_the_submitters_environment_only_when_asked(tmp_path, monkeypatch):
    tool(tmp_path, "argv.py", ARGV_PY)
    monkeypatch.setenv("DOCKET_TEST_SECRET", "s3")
    monkeypatch.setenv("DOCKET_TEST_OTHER", "o")
    for name, getenv in [("none", "false"), ("all", "true"), ("some", "DOCKET_TEST_S*")]:
        write(tmp_path / f"{name}.sub", f"""\
executable = argv.py
arguments = {name}.json
getenv = {getenv}
should_transfer_files = NO
queue
""")
    out = run_dag(dag(tmp_path, "JOB none none.sub\nJOB all all.sub\nJOB some some.sub\n"))
    assert out.code == 0, out.dagman_out
    env = {n: json.loads((tmp_path / f"{n}.json").read_text())["env"]
           for n in ("none", "all", "some")}
    assert "DOCKET_TEST_SECRET" not in env["none"]
    assert env["all"]["DOCKET_TEST_OTHER"] == "o"
    assert env["some"]["DOCKET_TEST_SECRET"] == "s3"
    assert "DOCKET_TEST_OTHER" not in env["some"]


# RETRY, scripts ------------------------------------------------------------------------


def null_sub(directory: Path, name: str, *args: str) -> None:
    write(directory / name, f"""\
executable = {NULL}
arguments = {quote_arguments(list(args))}
should_transfer_files = NO
queue
""")


def runs(path: Path) -> int:
    return int(path.read_text()) if path.exists() else 0


def test_retry_recovers_a_node_that_fails_twice(tmp_path):
    null_sub(tmp_path, "a.sub", "--fail-first", "2", "--state-file", str(tmp_path / "a.runs"),
             "--fail-exit-code", "4")
    out = run_dag(dag(tmp_path, "JOB A a.sub\nRETRY A 2\n"))
    assert out.code == 0, out.dagman_out
    assert runs(tmp_path / "a.runs") == 3
    assert "node A: failed (job exited with 4); retry 1 of 2" in out.dagman_out
    assert "node A: failed (job exited with 4); retry 2 of 2" in out.dagman_out
    assert "node A: done (attempt 3)" in out.dagman_out
    terminated = [a["ReturnValue"] for n, _, a in events_by_node(out.dag)["A"]
                  if n == TERMINATED]
    assert terminated == [4, 4, 0]


def test_retry_gives_up_after_n_retries(tmp_path):
    null_sub(tmp_path, "a.sub", "--fail-first", "9", "--state-file", str(tmp_path / "a.runs"))
    out = run_dag(dag(tmp_path, "JOB A a.sub\nJOB B a.sub\nRETRY A 1\nPARENT A CHILD B\n"))
    assert out.code == 1
    assert out.metrics["status"] == "failed"
    assert out.metrics["failed_nodes"] == {"A": "job exited with 1"}
    assert out.metrics["not_run"] == ["B"]
    assert runs(tmp_path / "a.runs") == 2


def test_retry_unless_exit_stops_retrying_on_that_value(tmp_path):
    null_sub(tmp_path, "a.sub", "--fail-first", "9", "--state-file", str(tmp_path / "a.runs"),
             "--fail-exit-code", "3")
    out = run_dag(dag(tmp_path, "JOB A a.sub\nRETRY A 5 UNLESS-EXIT 3\n"))
    assert out.code == 1
    assert runs(tmp_path / "a.runs") == 1
    assert "RETRY UNLESS-EXIT matched, no retry" in out.dagman_out


def test_a_failing_pre_script_fails_the_node_without_running_its_job_and_is_retried(
        flow):
    tool(flow, "pre.sh", f'#!/bin/sh\necho "$@" >> {flow / "pre.calls"}\nexit 1\n')
    d = dag(flow, "JOB A job.sub\nSCRIPT PRE A pre.sh $JOB $RETRY $MAX_RETRIES\n"
                  "RETRY A 2\n")
    out = run_dag(d)
    assert out.code == 1
    assert (flow / "pre.calls").read_text().splitlines() == ["A 0 2", "A 1 2", "A 2 2"]
    assert starts(flow) == []  # the job never ran
    assert out.metrics["failed_nodes"] == {"A": "PRE script exited with 1"}
    assert not files(d)["nodes.log"].exists() or "A" not in events_by_node(d)


def test_a_pre_script_that_succeeds_runs_before_the_job(flow):
    tool(flow, "pre.sh", f'#!/bin/sh\necho "pre $1" >> {flow / "runs.log"}\n')
    out = run_dag(dag(flow, "JOB A job.sub\nSCRIPT PRE A pre.sh $JOB\n"))
    assert out.code == 0, out.dagman_out
    assert (flow / "runs.log").read_text().splitlines()[0] == "pre A"
    assert starts(flow) == ["A"]


def test_pre_skip_marks_the_node_done_without_its_job(flow):
    tool(flow, "pre.sh", "#!/bin/sh\nexit 7\n")
    out = run_dag(dag(flow, "JOB A job.sub\nSCRIPT PRE A pre.sh\nPRE_SKIP A 7\n"))
    assert out.code == 0, out.dagman_out
    assert starts(flow) == []
    assert "PRE_SKIP" in out.dagman_out


def test_the_post_script_decides_the_node_and_gets_return_and_job(flow):
    calls = flow / "post.calls"
    tool(flow, "post.sh", f'#!/bin/sh\necho "$@" >> {calls}\nexit "$5"\n')
    d = dag(flow, """\
JOB rescued job.sub
VARS rescued code="3"
SCRIPT POST rescued post.sh $JOB $RETURN ret=$RETURN $JOBID 0
JOB spoiled job.sub
SCRIPT POST spoiled post.sh $JOB $RETURN x $PRE_SCRIPT_RETURN 2
""")
    out = run_dag(d)
    assert out.code == 1
    lines = sorted(calls.read_text().splitlines())
    # a macro is replaced only when it is a whole argument, as DAGMan does
    assert lines[0].startswith("rescued 3 ret=$RETURN ") and lines[0].endswith(" 0")
    assert lines[1] == "spoiled 0 x -1 2"
    assert out.metrics["failed_nodes"] == {"spoiled": "POST script exited with 2"}
    events = events_by_node(d)
    post = [a for n, _, a in events["rescued"] if n == POST]
    assert len(post) == 1 and post[0]["ReturnValue"] == 0
    assert post[0]["DAGNodeName"] == "rescued"
    assert [a["ReturnValue"] for n, _, a in events["spoiled"] if n == POST] == [2]


def test_a_job_killed_by_a_signal_gives_return_minus_signal_to_post(tmp_path):
    null_sub(tmp_path, "a.sub", "--signal", "KILL")
    tool(tmp_path, "post.sh", f'#!/bin/sh\necho "$1" > {tmp_path / "ret"}\nexit 1\n')
    out = run_dag(dag(tmp_path, "JOB A a.sub\nSCRIPT POST A post.sh $RETURN\n"))
    assert out.code == 1
    assert (tmp_path / "ret").read_text().strip() == "-9"
    ended = [a for n, _, a in events_by_node(out.dag)["A"] if n == TERMINATED]
    assert ended[0]["TerminatedNormally"] is False
    assert ended[0]["TerminatedBySignal"] == 9


# ABORT-DAG-ON ------------------------------------------------------------------------


@pytest.mark.parametrize("abort_line, exitcode", [
    ("ABORT-DAG-ON A 3 RETURN 7", 7),
    ("ABORT-DAG-ON A 3", 3),
    ("ABORT-DAG-ON A 3 RETURN 0", 0),
])
def test_abort_dag_on_stops_running_jobs(flow, abort_line, exitcode):
    d = dag(flow, f"""\
JOB A job.sub
VARS A code="3" sleep="0.2"
JOB long job.sub
VARS long sleep="30"
JOB after job.sub
PARENT A CHILD after
RETRY A 4
{abort_line}
""")
    out = run_dag(d, 3)
    assert out.code == exitcode
    assert out.metrics["status"] == "aborted"
    assert out.metrics["exitcode"] == exitcode
    assert out.metrics["aborted_by"] == "A"
    assert out.metrics["not_run"] == ["after"]
    assert out.metrics["removed_nodes"] == ["long"]
    spans = intervals(flow / "runs.log")
    assert len(spans["A"]) == 1  # an abort overrides RETRY
    assert spans["long"][0][1] is None  # stopped before it could finish
    assert "after" not in spans
    long_events = [n for n, _, _ in events_by_node(d)["long"]]
    assert long_events == [SUBMITTED, EXECUTING, ABORTED]
    assert "matches ABORT-DAG-ON" in out.dagman_out


def test_abort_dag_on_a_post_script_value(flow):
    tool(flow, "post.sh", "#!/bin/sh\nexit 5\n")
    d = dag(flow, "JOB A job.sub\nSCRIPT POST A post.sh\nABORT-DAG-ON A 5 RETURN 9\n"
                  "JOB B job.sub\nPARENT A CHILD B\n")
    out = run_dag(d)
    assert (out.code, out.metrics["status"]) == (9, "aborted")
    assert starts(flow) == ["A"]


# throttles ---------------------------------------------------------------------------


def test_priority_decides_the_order_when_one_job_runs_at_a_time(flow):
    d = dag(flow, """\
JOB low job.sub
JOB high job.sub
JOB middle job.sub
JOB plain job.sub
PRIORITY low -5
PRIORITY high 10
PRIORITY middle 3
""")
    out = run_dag(d, 1)
    assert out.code == 0, out.dagman_out
    assert starts(flow) == ["high", "middle", "plain", "low"]


def test_category_maxjobs_is_never_exceeded(flow):
    lines = []
    for i in range(6):
        lines += [f"JOB io{i} job.sub", f'VARS io{i} sleep="0.3"', f"CATEGORY io{i} io"]
    lines += ["JOB free0 job.sub", 'VARS free0 sleep="0.3"', "MAXJOBS io 2"]
    out = run_dag(dag(flow, "\n".join(lines) + "\n"), 6)
    assert out.code == 0, out.dagman_out
    spans = intervals(flow / "runs.log")
    io = [spans[f"io{i}"][0] for i in range(6)]
    assert max_overlap(io) == 2
    # the category limit does not hold back other nodes
    assert max_overlap(io + spans["free0"]) == 3


def test_max_jobs_limits_processes_including_a_fan_out(flow):
    write(flow / "fan.sub", f"""\
executable = job.sh
arguments = "fan$(Process) 0.2 {flow / 'runs.log'}"
should_transfer_files = NO
queue 4
""")
    lines = [f'JOB n{i} job.sub\nVARS n{i} sleep="0.2"' for i in range(3)]
    out = run_dag(dag(flow, "\n".join(lines) + "\nJOB fan fan.sub\n"), 2)
    assert out.code == 0, out.dagman_out
    spans = intervals(flow / "runs.log")
    assert len(spans) == 7
    assert max_overlap([s for runs in spans.values() for s in runs]) == 2


# queue fan-out -------------------------------------------------------------------------


def test_queue_forms_fan_out_with_process_and_item(tmp_path):
    write(tmp_path / "items.txt", "alpha\nbeta gamma\n")
    (tmp_path / "out").mkdir()
    sh_sub(tmp_path / "count.sub", "echo $(Process) > out/count.$(Process)", queue="queue 3")
    sh_sub(tmp_path / "file.sub", 'echo $(Process) > ""out/file.$(item)""',
           queue="queue item from items.txt")
    sh_sub(tmp_path / "list.sub", "echo $(Process) > out/list.$(item)",
           queue="queue item from (\n  red\n  green\n)")
    sh_sub(tmp_path / "oneline.sub", 'echo $(Process) > ""out/one.$(item)""',
           queue="queue item from (a b)")
    sh_sub(tmp_path / "steps.sub", "echo $(Process) > out/step.$(item).$(Step)",
           queue="queue 2 item in (x y)")
    d = dag(tmp_path, "JOB count count.sub\nJOB file file.sub\nJOB list list.sub\n"
                      "JOB oneline oneline.sub\nJOB steps steps.sub\n")
    out = run_dag(d, 4)
    assert out.code == 0, out.dagman_out

    def made(pattern: str) -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in (tmp_path / "out").glob(pattern)}

    assert made("count.*") == {"count.0": "0", "count.1": "1", "count.2": "2"}
    assert made("file.*") == {"file.alpha": "0", "file.beta gamma": "1"}
    assert made("list.*") == {"list.red": "0", "list.green": "1"}
    # as condor_submit reads it: each line of a 'from' list is one item
    assert made("one.*") == {"one.a b": "0"}
    assert made("step.*") == {"step.x.0": "0", "step.x.1": "1", "step.y.0": "2",
                              "step.y.1": "3"}
    procs = {n: sorted(p for k, p, _ in ev if k == SUBMITTED)
             for n, ev in events_by_node(d).items()}
    assert procs == {"count": [0, 1, 2], "file": [0, 1], "list": [0, 1], "oneline": [0],
                     "steps": [0, 1, 2, 3]}


def test_one_failing_proc_removes_the_rest_of_its_node(tmp_path):
    write(tmp_path / "fan.sub", """\
executable = /bin/sh
arguments = "-c 'if [ $(Process) = 0 ]; then exit 6; fi; sleep 30'"
should_transfer_files = NO
queue 3
""")
    out = run_dag(dag(tmp_path, "JOB fan fan.sub\n"), 3)
    assert out.code == 1
    assert out.metrics["failed_nodes"] == {"fan": "job exited with 6 (job 1.0)"}
    kinds = {p: [n for n, q, _ in events_by_node(out.dag)["fan"] if q == p]
             for p in range(3)}
    assert kinds[0] == [SUBMITTED, EXECUTING, TERMINATED]
    assert kinds[1][-1] == ABORTED and kinds[2][-1] == ABORTED


# file transfer -------------------------------------------------------------------------


def test_inputs_are_copied_to_a_scratch_dir_and_outputs_come_back(tmp_path):
    data = tmp_path / "data"
    write(data / "in.txt", "input\n")
    write(data / "calib" / "table.dat", "t\n")
    sh_sub(tmp_path / "a.sub", "pwd > where.txt; ls -R . > listing.txt; "
                               "cat in.txt calib/table.dat > out.txt; echo junk > junk.txt",
           "initialdir = data\nshould_transfer_files = YES\nwhen_to_transfer_output = ON_EXIT\n"
           "transfer_input_files = in.txt, calib\n"
           "transfer_output_files = out.txt, where.txt, listing.txt\n")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert (data / "out.txt").read_text() == "input\nt\n"
    scratch = Path((data / "where.txt").read_text().strip())
    assert scratch != data and not scratch.exists()  # a per-job dir, cleaned up after
    # nor is the sandboxes' parent left in the directory once the DAG has ended
    assert not (data.parent / ".scratch").exists() and not (data / ".scratch").exists()
    assert "in.txt" in (data / "listing.txt").read_text()
    assert not (data / "junk.txt").exists()  # not listed, not transferred


def test_without_an_output_list_new_and_changed_top_level_files_come_back(tmp_path):
    # HTCondor (condor_submit, transfer_output_files): without the list, every file the
    # job created or modified at the top of its sandbox returns; subdirectories do not
    run = tmp_path / "run"
    write(run / "state.txt", "run 1\n")
    write(tmp_path / "calib" / "calib.dat", "calibration\n")  # read from elsewhere
    write(run / "tables" / "t.dat", "t\n")
    script = ("echo made > made.txt; mkdir sub; echo no > sub/deep.txt; "
              "echo run 2 > state.txt; echo no > tables/new.dat; ls > seen.txt")
    write(run / "a.sub", f"""\
executable = /bin/sh
arguments = "-c '{script}'"
should_transfer_files = YES
transfer_input_files = state.txt, {tmp_path / "calib" / "calib.dat"}, tables
queue
""")
    out = run_dag(dag(run, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert (run / "made.txt").read_text() == "made\n"
    # a transferred-in file the job changed comes back changed
    assert (run / "state.txt").read_text() == "run 2\n"
    # one the job only read was in its sandbox, but does not come back
    assert "calib.dat" in (run / "seen.txt").read_text().split()
    assert not (run / "calib.dat").exists()
    # nothing below the top level: a new subdirectory, or a transferred-in one
    assert not (run / "sub").exists()
    assert not (run / "tables" / "new.dat").exists()


def test_an_input_changed_to_the_same_size_still_comes_back(tmp_path):
    write(tmp_path / "flag.txt", "A\n")
    os.utime(tmp_path / "flag.txt", ns=(10**18, 10**18))  # written long ago
    write(tmp_path / "a.sub", """\
executable = /bin/sh
arguments = "-c 'echo B > flag.txt'"
should_transfer_files = YES
transfer_input_files = flag.txt
queue
""")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert (tmp_path / "flag.txt").read_text() == "B\n"


def test_listed_outputs_come_back_changed_or_not_and_d_slash_is_the_contents(tmp_path):
    run = tmp_path / "run"
    write(tmp_path / "calib" / "kept.txt", "input\n")
    write(run / "a.sub", f"""\
executable = /bin/sh
arguments = "-c 'mkdir -p out/deep; echo p > out/p.txt; echo q > out/deep/q.txt'"
should_transfer_files = YES
transfer_input_files = {tmp_path / "calib" / "kept.txt"}
transfer_output_files = kept.txt, out/
queue
""")
    out = run_dag(dag(run, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    # listed: it comes back although the job never changed it
    assert (run / "kept.txt").read_text() == "input\n"
    # 'out/': what is in out, not out itself
    assert (run / "p.txt").read_text() == "p\n"
    assert (run / "deep" / "q.txt").read_text() == "q\n"
    assert not (run / "out").exists()


def test_outputs_join_what_is_there_and_a_listed_symlink_brings_what_it_points_to(tmp_path):
    # outputs leave the sandbox by rename (an MS is hundreds of files), with copy's
    # result: a directory joins the one already there (its other files stay, a file of
    # the same name is replaced), a new directory arrives whole with its symlinks as
    # symlinks, and a listed symlink brings the file it names, not a link into the
    # sandbox that is removed next
    run = tmp_path / "run"
    write(run / "products" / "earlier.fits", "earlier\n")
    write(run / "products" / "image.fits", "old\n")
    script = ("mkdir -p products working/ms/table; echo new > products/image.fits; "
              "echo t > working/ms/table/t.f0; ln -s table/t.f0 working/ms/link; "
              "echo summary > real.txt; ln -s real.txt summary.txt; pwd > where.txt")
    write(run / "a.sub", f"""\
executable = /bin/sh
arguments = "-c '{script}'"
should_transfer_files = YES
transfer_output_files = products, working, summary.txt, where.txt
queue
""")
    out = run_dag(dag(run, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert (run / "products" / "earlier.fits").read_text() == "earlier\n"
    assert (run / "products" / "image.fits").read_text() == "new\n"
    assert (run / "working" / "ms" / "table" / "t.f0").read_text() == "t\n"
    assert os.readlink(run / "working" / "ms" / "link") == "table/t.f0"
    assert (run / "working" / "ms" / "link").read_text() == "t\n"
    assert not (run / "summary.txt").is_symlink()
    assert (run / "summary.txt").read_text() == "summary\n"
    assert not Path((run / "where.txt").read_text().strip()).exists()


def test_an_empty_output_list_brings_nothing_back(tmp_path):
    write(tmp_path / "a.sub", """\
executable = /bin/sh
arguments = "-c 'echo made > made.txt'"
should_transfer_files = YES
transfer_output_files = ""
queue
""")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 0, out.dagman_out
    assert not (tmp_path / "made.txt").exists()


def test_a_missing_input_holds_the_job_with_code_13_and_fails_the_node(tmp_path):
    write(tmp_path / "a.sub", f"""\
executable = /bin/sh
arguments = "-c 'touch {tmp_path / 'ran'}'"
should_transfer_files = YES
transfer_input_files = present.txt, missing-input.txt
queue
""")
    write(tmp_path / "present.txt", "")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 1
    assert not (tmp_path / "ran").exists()
    reason = out.metrics["failed_nodes"]["A"]
    assert reason.startswith("held: Transfer input files failure")
    assert str(tmp_path / "missing-input.txt") in reason
    events = events_by_node(out.dag)["A"]
    assert [n for n, _, _ in events] == [SUBMITTED, HELD, ABORTED]
    held = events[1][2]
    assert (held["HoldReasonCode"], held["HoldReasonSubCode"]) == (13, 2)
    assert "missing-input.txt" in held["HoldReason"]


def test_a_missing_listed_output_fails_the_node_naming_the_file(tmp_path):
    write(tmp_path / "a.sub", """\
executable = /bin/sh
arguments = "-c 'echo one > one.txt'"
should_transfer_files = YES
transfer_output_files = one.txt, never-written.fits
queue
""")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 1
    reason = out.metrics["failed_nodes"]["A"]
    assert "Transfer output files failure" in reason and "never-written.fits" in reason
    events = events_by_node(out.dag)["A"]
    assert [n for n, _, _ in events] == [SUBMITTED, EXECUTING, HELD, ABORTED]
    assert (events[2][2]["HoldReasonCode"], events[2][2]["HoldReasonSubCode"]) == (12, 2)


def test_an_executable_that_cannot_run_is_held_with_code_6(tmp_path):
    write(tmp_path / "not-executable.sh", "#!/bin/sh\n")
    write(tmp_path / "a.sub", "executable = not-executable.sh\nqueue\n")
    out = run_dag(dag(tmp_path, "JOB A a.sub\n"))
    assert out.code == 1
    assert "Permission denied" in out.metrics["failed_nodes"]["A"]
    held = [a for n, _, a in events_by_node(out.dag)["A"] if n == HELD]
    assert (held[0]["HoldReasonCode"], held[0]["HoldReasonSubCode"]) == (6, 13)


def test_a_broken_submit_file_fails_its_node_not_the_runner(flow):
    write(flow / "bad.sub", "executable = /bin/true\nqueue item from no-such-list.txt\n")
    out = run_dag(dag(flow, "JOB bad bad.sub\nJOB good job.sub\n"))
    assert out.code == 1
    assert out.metrics["failed_nodes"]["bad"].startswith("submit failed:")
    assert "no-such-list.txt" in out.metrics["failed_nodes"]["bad"]
    assert starts(flow) == ["good"]


def test_a_dag_that_does_not_parse_ends_failed_with_the_line(tmp_path):
    d = dag(tmp_path, "JOB A a.sub\nPARENT A CHILD ghost\n")
    out = run_dag(d)
    assert out.code == 1
    assert out.metrics["status"] == "failed"
    assert out.metrics["reason"] == (f"cannot read the DAG: {d}:2: node 'ghost' is not "
                                     "defined by a JOB line")


# recovery, locking, cancel -------------------------------------------------------------


def test_sigkill_mid_dag_then_restart_never_reruns_done_nodes(flow):
    # B's first run (cluster 2) would sleep long: it is the job left behind when the
    # runner is killed; the restarted runner must stop it and run B again
    log = flow / "runs.log"
    sh_sub(flow / "b.sub", f"echo start B $$ >> {log}; if [ $(Cluster) = 2 ]; then sleep 30; fi;"
                           f" echo end B >> {log}")
    d = dag(flow, "JOB A job.sub\nJOB B b.sub\nJOB C job.sub\nJOB D job.sub\n"
                  "PARENT A CHILD B\nPARENT B CHILD C\nPARENT C CHILD D\n")
    first = start(d, 2)
    wait_for(lambda: "B" in starts(flow), what="B to start")
    assert "DONE A" in files(d)["progress"].read_text()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    orphan = int((flow / "runs.log").read_text().split("start B ")[1].split()[0])
    assert pid_alive(orphan)  # the killed runner's job outlived it, as on a pool

    out = run_dag(d, 2)
    assert out.code == 0, out.dagman_out
    assert starts(flow) == ["A", "B", "B", "C", "D"]
    assert not pid_alive(orphan)
    assert "left running by an earlier runner" in out.dagman_out
    # the stopped job's cluster ends with an aborted event; B's re-run is a new cluster
    b_events = events_by_node(d)["B"]
    assert [n for n, _, _ in b_events] == [SUBMITTED, EXECUTING, ABORTED,
                                           SUBMITTED, EXECUTING, TERMINATED]
    clusters = [c for n, c, _, a in read_events(files(d)["nodes.log"]) if n == SUBMITTED]
    assert clusters == sorted(set(clusters))  # no cluster number is reused


def test_a_finished_dag_is_not_run_again(flow):
    d = dag(flow, "JOB A job.sub\n")
    assert run_dag(d).code == 0
    again = run_dag(d)
    assert again.code == 0
    assert starts(flow) == ["A"]
    assert "already finished" in again.dagman_out


def test_a_second_runner_exits_at_once_while_the_first_holds_the_lock(flow):
    sh_sub(flow / "wait.sub", f"echo start W >> {flow / 'runs.log'}; "
                              f"while [ -e {flow / 'hold'} ]; do sleep 0.05; done")
    write(flow / "hold", "")
    d = dag(flow, "JOB W wait.sub\n")
    first = start(d, 2)
    wait_for(lambda: starts(flow) == ["W"], what="the first runner's job")
    second = run_dag(d, 2, timeout_s=10)
    assert second.code == 7
    assert "another runner holds w.dag.lock" in second.stderr
    assert not files(d)["metrics"].exists()
    (flow / "hold").unlink()
    out = finish(first, d)
    assert out.code == 0
    assert starts(flow) == ["W"]


def test_sigterm_removes_the_dag_and_stops_whole_process_groups(tmp_path):
    # each job starts a grandchild in its own process group's background and waits
    write(tmp_path / "long.sub", f"""\
executable = /bin/sh
arguments = "-c 'sleep 30 & echo $$ $! >> {tmp_path / 'pids'}; wait'"
should_transfer_files = NO
queue
""")
    tool(tmp_path, "post.sh", f"#!/bin/sh\ntouch {tmp_path / 'post-ran'}\n")
    d = dag(tmp_path, "JOB A long.sub\nJOB B long.sub\nJOB C long.sub\n"
                      "SCRIPT POST A post.sh\nPARENT A B CHILD C\n")
    child = start(d, 2)
    wait_for(lambda: (tmp_path / "pids").exists()
             and len((tmp_path / "pids").read_text().splitlines()) == 2, what="two jobs")
    child.terminate()
    out = finish(child, d, timeout_s=15)
    assert out.code == 2
    assert out.metrics["status"] == "removed"
    assert out.metrics["exitcode"] == 2
    assert out.metrics["removed_nodes"] == ["A", "B"]
    assert out.metrics["not_run"] == ["C"]
    assert out.metrics["failed_nodes"] == {}
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout_s=5,
             what="every job process, grandchildren included, to be gone")
    assert not (tmp_path / "post-ran").exists()
    for node in ("A", "B"):
        events = events_by_node(d)[node]
        assert [n for n, _, _ in events] == [SUBMITTED, EXECUTING, ABORTED]
        assert "cancelled" in events[-1][2]["Reason"]


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    sh_sub(tmp_path / "stubborn.sub",
           f"trap : TERM; echo $$ > {tmp_path / 'pid'}; while true; do sleep 0.1; done")
    d = dag(tmp_path, "JOB S stubborn.sub\n")
    child = start(d, 1, "--kill-grace-s", "0.5")
    wait_for(lambda: (tmp_path / "pid").exists(), what="the job")
    child.send_signal(signal.SIGTERM)
    out = finish(child, d, timeout_s=15)
    assert (out.code, out.metrics["status"]) == (2, "removed")
    assert not pid_alive(int((tmp_path / "pid").read_text()))


def test_noop_nodes_and_done_nodes_do_not_run_their_jobs(flow):
    d = dag(flow, "JOB A job.sub NOOP\nJOB B job.sub DONE\nJOB C job.sub\n"
                  "PARENT A B CHILD C\n")
    out = run_dag(d)
    assert out.code == 0, out.dagman_out
    assert starts(flow) == ["C"]


def test_the_runner_is_fast_enough_for_wide_dags(flow):
    # 60 independent /bin/true nodes: a regression guard on per-node overhead that
    # counts work, not seconds (every node done, each exactly once)
    write(flow / "true.sub", "executable = /bin/true\nshould_transfer_files = NO\nqueue\n")
    d = dag(flow, "".join(f"JOB t{i} true.sub\n" for i in range(60)))
    began = time.monotonic()
    out = run_dag(d, 4)
    assert out.code == 0
    assert out.metrics["jobs_succeeded"] == 60
    assert len([n for n, *_ in read_events(files(d)["nodes.log"]) if n == TERMINATED]) == 60
    assert time.monotonic() - began < 30


def test_vars_are_prepended_unless_append_is_asked_for(tmp_path):
    # DAGMan's default (DAGMAN_DEFAULT_APPEND_VARS = False): a VARS value is defined
    # before the submit file is read, so 'if defined' sees it and the file's own
    # definition wins; APPEND sets it afterwards, overriding the file
    write(tmp_path / "a.sub", """\
if defined var1
  greeting = prepended-$(var1)
else
  greeting = not-prepended
endif
var2 = C
executable = /bin/sh
arguments = "-c 'echo $(greeting) $(var2) > $(JOB).txt'"
should_transfer_files = NO
queue
""")
    d = dag(tmp_path, 'JOB P a.sub\nVARS P var1="A" var2="B"\n'
                      'JOB Q a.sub\nVARS Q APPEND var1="A" var2="B"\n')
    out = run_dag(d)
    assert out.code == 0, out.dagman_out
    assert (tmp_path / "P.txt").read_text() == "prepended-A C\n"
    assert (tmp_path / "Q.txt").read_text() == "not-prepended B\n"


def test_a_node_whose_submit_fails_at_once_is_still_retried(tmp_path):
    # a node failing synchronously (its submit file is missing) goes back through RETRY;
    # its POST script sees $RETURN -1001, DAGMan's value for a failed submit
    late = tmp_path / "late.sub"
    write(tmp_path / "post.sh", f"""#!/bin/sh
echo "$1" >> {tmp_path / 'returns'}
printf 'executable = /bin/true\\nqueue\\n' > {late}
[ "$1" = 0 ]
""").chmod(0o755)
    d = dag(tmp_path, "JOB late late.sub\nRETRY late 1\nSCRIPT POST late post.sh $RETURN\n")
    out = run_dag(d)
    assert out.code == 0, out.dagman_out
    assert (tmp_path / "returns").read_text().split() == ["-1001", "0"]
    d2 = dag(tmp_path, "JOB late2 missing.sub\nJOB after late.sub\nRETRY late2 2\n"
                       "PARENT late2 CHILD after\n", name="w2.dag")
    out = run_dag(d2)
    assert out.code == 1
    assert out.dagman_out.count("node late2: failed (submit failed:") == 3
    assert "missing.sub" in out.metrics["failed_nodes"]["late2"]
    assert out.metrics["not_run"] == ["after"]


def test_queue_zero_makes_a_node_with_no_jobs_that_succeeds(flow):
    write(flow / "none.sub", "executable = /bin/false\nqueue 0\n")
    out = run_dag(dag(flow, "JOB none none.sub\nJOB A job.sub\nPARENT none CHILD A\n"))
    assert out.code == 0, out.dagman_out
    assert starts(flow) == ["A"]


def test_dagman_out_ends_like_dagmans(flow):
    out = run_dag(dag(flow, "JOB A job.sub\n"))
    last = out.dagman_out.splitlines()[-1]
    assert last.endswith("EXITING WITH STATUS 0")
    assert "(condor_DAGMAN)" in last


def test_a_held_job_is_retried_by_retry(tmp_path):
    # the hold happens while the job is being started (no process yet): the node must
    # still go back through RETRY
    write(tmp_path / "a.sub", "executable = /bin/true\nshould_transfer_files = YES\n"
                              "transfer_input_files = never-there.txt\nqueue\n")
    out = run_dag(dag(tmp_path, "JOB A a.sub\nRETRY A 2\n"))
    assert out.code == 1
    held = [a for n, _, a in events_by_node(out.dag)["A"] if n == HELD]
    assert [h["HoldReasonCode"] for h in held] == [13, 13, 13]
    assert "retry 2 of 2" in out.dagman_out


def test_a_container_image_never_runs_outside_the_image(flow, monkeypatch):
    # no container runtime on PATH: the job is held (and removed) with a reason naming
    # what to install; it does not run on this machine instead (tests/tasks/ runs one)
    empty = flow / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    write(flow / "c.sub", f"""\
universe = container
container_image = docker://python:3.11-slim
executable = job.sh
arguments = "C 0 {flow / 'runs.log'}"
should_transfer_files = NO
queue
""")
    out = run_dag(dag(flow, "JOB C c.sub\n"))
    assert out.code == 1
    assert starts(flow) == []
    held = [a for n, _, a in events_by_node(out.dag)["C"] if n == HELD]
    assert "no container runtime is installed" in held[0]["HoldReason"]
    assert "install podman" in held[0]["HoldReason"]


def test_jobs_of_a_killed_runner_can_be_stopped_without_running_the_dag(tmp_path):
    from docket.engines.localdag import stop_leftover_jobs

    sh_sub(tmp_path / "long.sub", f"echo $$ > {tmp_path / 'pid'}; sleep 30")
    d = dag(tmp_path, "JOB L long.sub\n")
    runner = start(d, 1)
    wait_for(lambda: (tmp_path / "pid").exists(), what="the job")
    assert stop_leftover_jobs(d) == []  # a live runner's jobs are never touched
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    job = int((tmp_path / "pid").read_text())
    assert pid_alive(job)
    assert stop_leftover_jobs(d) == [job]
    wait_for(lambda: not pid_alive(job), timeout_s=5, what="the job to die")
    assert [n for n, _, _ in events_by_node(d)["L"]] == [SUBMITTED, EXECUTING, ABORTED]
    assert stop_leftover_jobs(d) == []  # once only


def test_a_leftover_job_is_told_from_a_process_that_reused_its_pid(tmp_path):
    # the runner records the range of boot-clock ticks a job started in (read around
    # the spawn); a live process whose start time lies outside it is not the job
    from docket.engines.localdag import spawn, stop_leftover_jobs

    d = dag(tmp_path, "JOB L long.sub\n")
    progress = d.with_name(d.name + ".progress")
    job = spawn(["/bin/sleep", "30"], tmp_path, {})
    other = spawn(["/bin/sleep", "30"], tmp_path, {})
    low, _, high = other.started.partition(":")
    try:
        progress.write_text(f"START {job.pid} {job.started} {os.getpid()}.1 1 0\n"
                            f"START {other.pid} {int(low) - 500}:{int(low) - 400} "
                            f"{os.getpid()}.2 2 0\n")
        assert stop_leftover_jobs(d) == [job.pid]
        assert job.wait() == -signal.SIGKILL
        assert pid_alive(other.pid)
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


def test_abort_dag_on_a_pre_script_value_stops_before_the_job(flow):
    tool(flow, "pre.sh", "#!/bin/sh\nexit 4\n")
    d = dag(flow, "JOB A job.sub\nSCRIPT PRE A pre.sh\nRETRY A 3\nABORT-DAG-ON A 4\n")
    out = run_dag(d)
    assert (out.code, out.metrics["status"]) == (4, "aborted")
    assert out.metrics["failed_nodes"] == {"A": "PRE script exited with 4"}
    assert starts(flow) == []


def test_a_job_started_just_before_the_runner_died_is_still_found_and_stopped(flow):
    # the dead runner wrote STARTING (and put the marker in the job's environment)
    # but was killed before it recorded the pid: its successor finds the job by the
    # marker and stops it before running the node again
    d = dag(flow, "JOB A job.sub\n")
    orphan = subprocess.Popen(["/bin/sleep", "60"], start_new_session=True,
                              env={**os.environ, "_DOCKET_LOCAL_JOB": "4242.1"})
    try:
        files(d)["progress"].write_text("CLUSTER 1\nSTARTING 4242.1 1 0\n")
        out = run_dag(d, 2)
        assert out.code == 0, out.dagman_out
        assert orphan.wait(10) == -signal.SIGKILL
        assert f"stopped process group {orphan.pid}" in out.dagman_out
        assert starts(flow) == ["A"]
        assert [n for n, c, _, _ in read_events(files(d)["nodes.log"]) if c == 1] == [ABORTED]
    finally:
        if orphan.poll() is None:
            orphan.kill()
