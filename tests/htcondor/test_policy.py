"""The failure policy: the default table, each action, loading errors, and failures taken
from both engines' real files (HTCondor: hand-written event logs with holds; local engine:
the real runner with exit codes, signals and log patterns)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import htcondor2
import pytest

from docket.dag import read_dag
from docket.engines.nodelog import read_node_events
from docket.errors import Invalid
from docket.policy import (
    Decision,
    Failure,
    PolicyError,
    apply_adjustments,
    attempts_by_rule,
    decide,
    failure_from_node,
    host_name,
    load_policy,
    merge_adjustments,
    read_adjustments,
    size_to_mb,
)
from docket.submit import expand_submit
from schemas.policy import FailurePolicy
from tests.htcondor.condorkit import DATA, REPO, TEMPLATES, render, replay

DEFAULT = load_policy(TEMPLATES)


def test_the_default_policy_is_the_documented_table():
    rows = [(r.match.model_dump(exclude_none=True), r.action, r.limit) for r in DEFAULT.rules]
    assert rows == [({"hold_code": 34}, "retry-with-more-memory", 3),
                    ({"hold_code": [12, 13]}, "retry", 3),
                    ({"signal": 9}, "retry", 1),
                    ({"exit_code": [1, 2]}, "fail", 1),
                    ({"hold_code": 3, "hold_subcode": 34}, "retry-with-more-memory", 3),
                    ({"hold_code": 1}, "fail", 1)]
    memory = DEFAULT.rules[0]
    assert (memory.factor, memory.cap_mb) == (2, 65536)
    transfer = DEFAULT.rules[1]
    assert (transfer.backoff_s, transfer.growth) == (60, 2)


# (failure, retries already granted per rule, action, rule, delay, adjustments, reason part)
CASES = [
    (Failure("p", hold_code=34, hold_subcode=0, request_memory_mb=64), {},
     "retry-with-more-memory", 1, 0, {"request_memory_mb": 128},
     "request_memory 64 MB -> 128 MB"),
    (Failure("p", hold_code=34, request_memory_mb=40000), {1: 2},
     "retry-with-more-memory", 1, 0, {"request_memory_mb": 65536}, "retry 3 of 3"),
    (Failure("p", hold_code=34, request_memory_mb=65536), {},
     "fail", 1, 0, {}, "already 65536 MB, at its cap of 65536 MB"),
    (Failure("p", hold_code=34, request_memory_mb=64), {1: 3},
     "fail", 1, 0, {}, "has used its 3 retries"),
    (Failure("p", hold_code=34), {},
     "retry-with-more-memory", 1, 0, {"request_memory_mb": 65536}, "unknown -> 65536 MB"),
    (Failure("p", hold_code=13, hold_subcode=2), {},
     "retry", 2, 60, {}, "retry 1 of 3"),
    (Failure("p", hold_code=12, hold_subcode=2), {2: 1},
     "retry", 2, 120, {}, "retry 2 of 3"),
    (Failure("p", hold_code=12), {2: 2}, "retry", 2, 240, {}, "retry 3 of 3"),
    (Failure("p", hold_code=12), {2: 3}, "fail", 2, 0, {}, "has used its 3 retries"),
    (Failure("p", signal=9), {}, "retry", 3, 0, {}, "retry 1 of 1"),
    (Failure("p", signal=9), {3: 1}, "fail", 3, 0, {}, "has used its 1 retry"),
    (Failure("p", signal=9), {1: 3, 2: 3}, "retry", 3, 0, {}, "retry 1 of 1"),
    (Failure("p", exit_code=1), {}, "fail", 4, 0, {}, "exit_code 1,2 -> fail"),
    (Failure("p", exit_code=2), {}, "fail", 4, 0, {}, "exit_code 1,2 -> fail"),
    (Failure("p", exit_code=3), {}, "fail", None, 0, {}, "no rule"),
    (Failure("p", signal=11), {}, "fail", None, 0, {}, "no rule"),
    (Failure("p", hold_code=26), {}, "fail", None, 0, {}, "no rule"),
    # a pool without cgroups: periodic_hold on MemoryUsage, code 3 subcode 34
    (Failure("p", hold_code=3, hold_subcode=34, request_memory_mb=64), {},
     "retry-with-more-memory", 5, 0, {"request_memory_mb": 128},
     "request_memory 64 MB -> 128 MB"),
    (Failure("p", hold_code=3, hold_subcode=0), {}, "fail", None, 0, {}, "no rule"),
    (Failure("p", hold_code=1, hold_subcode=0), {}, "fail", 6, 0, {}, "hold_code 1 -> fail"),
]


@pytest.mark.parametrize(("failure", "attempts", "action", "rule", "delay", "adjust", "why"),
                         CASES)
def test_default_policy_decisions(failure, attempts, action, rule, delay, adjust, why):
    decision = decide(failure, DEFAULT, attempts)
    assert (decision.action, decision.rule_index, decision.delay_s, decision.adjustments) == (
        action, rule, delay, adjust)
    assert why in decision.reason or why in decision.rule_text


CUSTOM = FailurePolicy.model_validate({"rules": [
    {"match": {"node": "process_*", "log": {"file": "{node}.err", "pattern": "MemoryError"}},
     "action": "retry-with-more-memory", "factor": 1.5, "cap_mb": 1000, "limit": 2},
    {"match": {"reason": "connection (refused|reset)"}, "action": "avoid-host", "limit": 2},
    {"match": {"exit_code": 75}, "action": "avoid-host"},
    {"match": {"signal": [9, 15]}, "action": "retry", "backoff_s": 10, "growth": 3,
     "max_backoff_s": 50, "limit": 5},
    {"match": {}, "action": "fail", "note": "everything else"},
]})


@pytest.mark.parametrize(("failure", "attempts", "action", "rule", "delay", "adjust"), [
    (Failure("process_1", exit_code=1, request_memory_mb=100,
             logs={"{node}.err": "Traceback\nMemoryError\n"}), {}, "retry-with-more-memory", 1,
     0, {"request_memory_mb": 150}),
    (Failure("fetch", exit_code=1, logs={"{node}.err": "MemoryError"}), {}, "fail", 5, 0, {}),
    (Failure("process_1", exit_code=1, logs={}), {}, "fail", 5, 0, {}),
    (Failure("x", exit_code=1, reason="connection refused by archive",
             host="<10.0.0.7:9618?addrs=10.0.0.7-9618&alias=node7.example.org&noUDP>"), {},
     "avoid-host", 2, 0, {"avoid_hosts": ["node7.example.org"]}),
    (Failure("x", exit_code=75, host="slot1_3@node9"), {}, "avoid-host", 3, 0,
     {"avoid_hosts": ["node9"]}),
    (Failure("x", exit_code=75), {}, "avoid-host", 3, 0, {}),
    (Failure("x", signal=15), {4: 1}, "retry", 4, 30, {}),
    (Failure("x", signal=15), {4: 3}, "retry", 4, 50, {}),
    (Failure("x", exit_code=0, reason="declared outputs missing or too small: a.fits: "
                                      "missing"), {}, "fail", 5, 0, {}),
])
def test_each_action_of_a_custom_table(failure, attempts, action, rule, delay, adjust):
    decision = decide(failure, CUSTOM, attempts)
    assert (decision.action, decision.rule_index, decision.delay_s, decision.adjustments) == (
        action, rule, delay, adjust)
    assert decision.rule_text.startswith(f"#{rule} ")


def test_rule_text_reads_as_the_row():
    texts = [decide(f, DEFAULT).rule_text for f in (
        Failure("p", hold_code=34), Failure("p", hold_code=13), Failure("p", signal=9),
        Failure("p", exit_code=1))]
    assert texts == [
        "#1 hold_code 34 -> retry-with-more-memory (limit 3, x2 up to 65536 MB)",
        "#2 hold_code 12,13 -> retry (limit 3, backoff 60s x2)",
        "#3 signal 9 -> retry (limit 1)",
        "#4 exit_code 1,2 -> fail"]
    assert decide(Failure("p", exit_code=3), DEFAULT).rule_text == "no rule matched"


def test_attempts_are_counted_per_rule_and_node():
    history = [
        {"node": "a", **Decision("retry", 2, "t").as_dict()},
        {"node": "a", **Decision("retry", 2, "t").as_dict()},
        {"node": "a", **Decision("retry-with-more-memory", 1, "t").as_dict()},
        {"node": "b", **Decision("retry", 2, "t").as_dict()},
        {"node": "a", **Decision("fail", 4, "t").as_dict()},
    ]
    assert attempts_by_rule(history, "a") == {2: 2, 1: 1}
    assert attempts_by_rule(history, "c") == {}


@pytest.mark.parametrize(("text", "message"), [
    ("rules:\n  - match: {hold_code: 34}\n    action: retry-with-more-memory\n",
     "default.yaml:2: rules.0: retry-with-more-memory needs cap_mb"),
    ("rules:\n  - match: {exit_code: 1}\n    action: explode\n",
     "default.yaml:3: rules.0.action: Input should be 'retry'"),
    ("rules:\n  - match: {reason: '(unclosed'}\n    action: fail\n",
     "default.yaml:2: rules.0.match.reason: not a valid regular expression"),
    ("rules:\n  - match: {log: {file: ../etc/passwd, pattern: x}}\n    action: fail\n",
     "rules.0.match.log.file: '../etc/passwd' must be relative"),
    ("rules:\n  - match: {signal: 9}\n    action: retry\n    factor: 2\n",
     "factor and cap_mb belong to retry-with-more-memory, not retry"),
    ("rules:\n  - match: {signal: 9}\n    action: retry\n    limit: -1\n",
     "default.yaml:4: rules.0.limit: Input should be greater than or equal to 0"),
    ("rules: [\n", "default.yaml:2: invalid YAML"),
])
def test_policy_file_errors_name_file_line_and_field(tmp_path, text, message):
    (tmp_path / "_policies").mkdir()
    (tmp_path / "_policies" / "default.yaml").write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert message in str(caught.value)


def test_an_unknown_policy_lists_the_shipped_ones():
    with pytest.raises(PolicyError) as caught:
        load_policy(TEMPLATES, "nope")
    assert "failure policy 'nope' does not exist" in str(caught.value)
    assert "shipped policies: default" in str(caught.value)


def test_sizes_and_hosts():
    assert [size_to_mb(v) for v in ("64MB", "64", "2GB", "2 GiB", "1.5G", "512K", "1T",
                                     "ifthenelse(x, 1, 2)", None)] == [
        64, 64, 2048, 2048, 1536, 1, 1048576, None, None]
    assert host_name("<10.0.0.7:9618?addrs=10.0.0.7-9618&alias=node7.example.org&noUDP>") \
        == "node7.example.org"
    assert host_name("<10.0.0.7:9618?addrs=10.0.0.7-9618>") == "10.0.0.7"
    assert host_name("slot1_2@node9") == "node9"
    assert host_name(None) is None


# HTCondor: the hand-written node log with holds, evictions and a signal ------------------


def test_holds_in_an_htcondor_node_log_become_decisions(tmp_path):
    rendered, _ = render("demo", tmp_path / "e1", {"targets": ["a", "b", "c"]})
    directory = rendered.directory
    shutil.copy(DATA / "holds.nodes.log", directory / "workflow.dag.nodes.log")
    events, cursor = read_node_events(rendered.dag, None)
    assert cursor is not None
    store = replay(tmp_path / "docket.db", events)
    rows = {r["node"]: r for r in store.all("SELECT * FROM nodes WHERE execution=1")}
    assert {n: r["state"] for n, r in rows.items()} == {
        "fetch": "done", "process_0": "failed", "process_1": "failed",
        "process_2": "failed", "deliver": "held"}
    assert (rows["fetch"]["attempts"], rows["process_1"]["attempts"]) == (1, 1)
    decisions = {}
    for node in ("process_0", "process_1", "process_2", "deliver"):
        failure = failure_from_node(rows[node], directory, DEFAULT)
        decisions[node] = decide(failure, DEFAULT)
    memory = decisions["process_0"]
    assert (memory.action, memory.rule_index, memory.adjustments) == (
        "retry-with-more-memory", 1, {"request_memory_mb": 128})
    assert "request_memory 64 MB -> 128 MB" in memory.reason
    assert (decisions["process_1"].action, decisions["process_1"].rule_index) == ("retry", 3)
    assert (decisions["process_2"].action, decisions["process_2"].rule_index) == ("fail", 4)
    held = decisions["deliver"]
    assert (held.action, held.rule_index, held.delay_s) == ("retry", 2, 60)
    # the next attempt asks for the memory the policy decided, on process_0 only
    adjustments = merge_adjustments({}, "process_0", memory)
    apply_adjustments(directory, adjustments)
    dag = read_dag(rendered.dag)
    assert dag.nodes["process_0"].submit_file == "process.process_0.adjusted.sub"
    assert dag.nodes["process_1"].submit_file == "process.sub"
    copy = htcondor2.Submit((directory / "process.process_0.adjusted.sub").read_text())
    assert copy["request_memory"] == "128"
    assert htcondor2.Submit((directory / "process.sub").read_text())["request_memory"] == \
        "64MB"
    # a second out-of-memory hold doubles again, from what the copy asks for now
    again = decide(failure_from_node(rows["process_0"], directory, DEFAULT), DEFAULT, {1: 1})
    assert again.adjustments == {"request_memory_mb": 256}
    store.close()


def test_a_hold_code_from_an_earlier_attempt_does_not_decide(tmp_path):
    rendered, _ = render("demo", tmp_path / "e1", {"targets": ["a"]})
    events = [
        {"type": "node.submitted", "node": "process_0", "cluster": 5, "proc": 0},
        {"type": "node.held", "node": "process_0", "cluster": 5, "proc": 0, "hold_code": 34,
         "hold_subcode": 0, "reason": "memory"},
        {"type": "node.aborted", "node": "process_0", "cluster": 5, "proc": 0,
         "reason": "via condor_rm"},
        {"type": "node.submitted", "node": "process_0", "cluster": 6, "proc": 0},
        {"type": "node.finished", "node": "process_0", "cluster": 6, "proc": 0,
         "exit_code": 1},
    ]
    store = replay(tmp_path / "docket.db", events)
    row = store.one("SELECT * FROM nodes WHERE node='process_0'")
    failure = failure_from_node(row, rendered.directory, DEFAULT)
    assert (failure.exit_code, failure.hold_code) == (1, None)
    assert decide(failure, DEFAULT).rule_index == 4
    store.close()


# the local engine: real runs of the real runner ---------------------------------------

JOBS = {
    "exits1": "#!/bin/sh\necho 'cannot read input' >&2\nexit 1\n",
    "killed": "#!/bin/sh\necho started\nkill -9 $$\n",
    "oom": "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
           "echo 'MemoryError' >&2\nexit 3\n",
    "weird": "#!/bin/sh\nexit 4\n",
}


def _local_run(directory: Path) -> Path:
    directory.mkdir(parents=True)
    lines = []
    for name, script in JOBS.items():
        job = directory / f"{name}.sh"
        job.write_text(script)
        job.chmod(0o755)
        (directory / f"{name}.sub").write_text(
            f"executable = {job}\noutput = {name}.out\nerror = {name}.err\n"
            "should_transfer_files = NO\nrequest_memory = 100MB\nqueue\n")
        lines.append(f"JOB {name} {name}.sub\n")
    (directory / "needs_input.sub").write_text(
        f"executable = {directory / 'weird.sh'}\nshould_transfer_files = YES\n"
        "transfer_input_files = not-there.txt\nrequest_memory = 100MB\nqueue\n")
    lines.append("JOB needs_input needs_input.sub\n")
    dag = directory / "workflow.dag"
    dag.write_text("".join(lines))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "docket.engines.localdag", str(dag),
                           "--max-jobs", "2"], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=60)
    assert (directory / "workflow.dag.metrics").is_file(), done.stderr
    return dag


LOCAL_POLICY = FailurePolicy.model_validate({"rules": [
    *[r.model_dump(exclude_none=True) for r in DEFAULT.rules],
    {"match": {"log": {"file": "{node}.err", "pattern": "^MemoryError$"}},
     "action": "retry-with-more-memory", "factor": 2, "cap_mb": 1024},
]})


def test_local_engine_failures_become_the_same_decisions(tmp_path):
    dag = _local_run(tmp_path / "e1")
    events, _ = read_node_events(dag, None)
    store = replay(tmp_path / "docket.db", events)
    rows = {r["node"]: r for r in store.all("SELECT * FROM nodes WHERE execution=1")}
    assert {n: r["state"] for n, r in rows.items()} == {
        "exits1": "failed", "killed": "failed", "oom": "failed", "weird": "failed",
        "needs_input": "failed"}
    decided = {}
    for node, row in rows.items():
        failure = failure_from_node(row, dag.parent, LOCAL_POLICY)
        decided[node] = decide(failure, LOCAL_POLICY)
    summary = {n: (d.action, d.rule_index, d.adjustments) for n, d in decided.items()}
    assert summary == {
        "exits1": ("fail", 4, {}),
        "killed": ("retry", 3, {}),
        "oom": ("retry-with-more-memory", 7, {"request_memory_mb": 200}),
        "weird": ("fail", None, {}),
        "needs_input": ("retry", 2, {}),
    }
    assert rows["needs_input"]["hold_code"] == 13
    # the adjusted files are what the local runner reads next time
    apply_adjustments(dag.parent, merge_adjustments({}, "oom", decided["oom"]))
    node = read_dag(dag).nodes["oom"]
    assert node.submit_file == "oom.oom.adjusted.sub"
    procs = expand_submit(dag.parent / node.submit_file, "oom", node.vars, 1)
    assert procs[0].request["request_memory"] == "200"
    store.close()


# adjustments ------------------------------------------------------------------------


def test_adjustments_accumulate_apply_idempotently_and_can_be_undone(tmp_path):
    directory = tmp_path / "e1"
    (directory / "sub").mkdir(parents=True)
    (directory / "workflow.dag").write_text(
        "# a comment\nJOB a shared.sub\nJOB b shared.sub\njob  c  inner.sub  DIR sub\n"
        "PARENT a CHILD b c\n")
    (directory / "shared.sub").write_text("executable = /bin/true\nrequest_memory = 1GB\n"
                                          "requirements = (Arch == \"X86_64\")\nqueue\n")
    (directory / "sub" / "inner.sub").write_text("executable = /bin/true\nqueue 3\n")
    state = merge_adjustments({}, "a", Decision("retry-with-more-memory", 1, "t",
                                                adjustments={"request_memory_mb": 2048}))
    state = merge_adjustments(state, "a", Decision("avoid-host", 2, "t",
                                                   adjustments={"avoid_hosts": ["n1"]}))
    state = merge_adjustments(state, "a", Decision("avoid-host", 2, "t",
                                                   adjustments={"avoid_hosts": ["n1", "n2"]}))
    state = merge_adjustments(state, "c", Decision("avoid-host", 2, "t",
                                                   adjustments={"avoid_hosts": ["n3"]}))
    assert state == {"nodes": {"a": {"request_memory_mb": 2048, "avoid_hosts": ["n1", "n2"]},
                               "c": {"avoid_hosts": ["n3"]}}}
    apply_adjustments(directory, state)
    first = {p.relative_to(directory): p.read_text() for p in directory.rglob("*")
             if p.is_file()}
    apply_adjustments(directory, state)
    second = {p.relative_to(directory): p.read_text() for p in directory.rglob("*")
              if p.is_file()}
    assert first == second
    dag_text = (directory / "workflow.dag").read_text()
    assert "JOB a shared.a.adjusted.sub\nJOB b shared.sub\n" in dag_text
    assert "job  c  inner.c.adjusted.sub  DIR sub\n" in dag_text
    copy = htcondor2.Submit((directory / "shared.a.adjusted.sub").read_text())
    assert copy["request_memory"] == "2048"
    assert copy["requirements"] == ('((Arch == "X86_64")) && (TARGET.Machine =!= "n1") && '
                                    '(TARGET.Machine =!= "n2")')
    inner = htcondor2.Submit((directory / "sub" / "inner.c.adjusted.sub").read_text())
    assert inner["requirements"] == '(TARGET.Machine =!= "n3")'
    assert read_adjustments(directory)["nodes"]["a"]["original_submit"] == "shared.sub"
    # dropping a node's adjustments points it back at the shared file
    apply_adjustments(directory, {"nodes": {"c": state["nodes"]["c"]}})
    assert "JOB a shared.sub\n" in (directory / "workflow.dag").read_text()
    with pytest.raises(Invalid, match="no JOB line for node 'zz'"):
        apply_adjustments(directory, {"nodes": {"zz": {"avoid_hosts": ["h"]}}})
