"""The DAG parser: what it reads, and errors that name the file and line (the checks
htcondor2 does not make: undefined nodes, duplicate names, cycles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docket.dag import DagError, Script, parse_dag, read_dag
from docket.quoting import quote
from docket.submit import expand_submit

FULL = """\
# a comment, then a blank line

JOB  fetch fetch.sub
job  process_0 process.sub DIR work
JOB\tprocess_1\tprocess.sub
JOB deliver deliver.sub NOOP
VARS process_0 item="a b" code="0"
VARS process_1 APPEND item="c"
VARS ALL_NODES site="local"
RETRY fetch 2
RETRY process_0 3 UNLESS-EXIT 42
SCRIPT PRE fetch check.sh $JOB
SCRIPT DEFER 4 60 POST deliver post.sh $RETURN "two words"
SCRIPT HOLD fetch notify.sh
PRE_SKIP fetch 9
ABORT-DAG-ON process_0 3 RETURN 1
ABORT-DAG-ON process_1 4
PRIORITY deliver 10
CATEGORY process_0 cpu
CATEGORY process_1 cpu
MAXJOBS cpu 1
Parent fetch child process_0 process_1
PARENT process_0 process_1 CHILD deliver
CONFIG dagman.config
NODE_STATUS_FILE status.txt 30
"""


def test_a_dag_using_every_supported_command_parses(tmp_path):
    dag = parse_dag(FULL, tmp_path / "w.dag")
    assert list(dag.nodes) == ["fetch", "process_0", "process_1", "deliver"]
    fetch, p0, p1, deliver = dag.nodes.values()
    assert p0.directory == "work" and deliver.noop
    assert p0.vars == {"item": "a b", "code": "0", "site": "local"}
    assert p1.vars == {"item": "c", "site": "local"} and p1.append_vars == {"item"}
    assert (fetch.retry, fetch.retry_unless_exit) == (2, None)
    assert (p0.retry, p0.retry_unless_exit) == (3, 42)
    assert fetch.pre == Script("check.sh", ["$JOB"])
    # DAGMan passes SCRIPT words through as written (no shell quoting)
    assert deliver.post == Script("post.sh", ["$RETURN", '"two', 'words"'], (4, 60.0))
    assert fetch.pre_skip == 9
    assert p0.abort_on == (3, 1) and p1.abort_on == (4, None)
    assert deliver.priority == 10
    assert (p0.category, p1.category, dag.maxjobs) == ("cpu", "cpu", {"cpu": 1})
    assert fetch.children == {"process_0", "process_1"}
    assert deliver.parents == {"process_0", "process_1"}
    assert dag.node_status_file == "status.txt"
    assert dag.topological() == ["fetch", "process_0", "process_1", "deliver"]


@pytest.mark.parametrize("written, value", [
    (r'"plain"', "plain"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"C:\\dir\\file"', "C:\\dir\\file"),
    (r'"C:\temp"', "C:\\temp"),  # a backslash before anything else stays
    (r'"ends with \\"', "ends with \\"),
    ('"  spaces  and\ttabs "', "  spaces  and\ttabs "),
    (r'"$(JOB)-$(RETRY) $HOME ünï ✓"', "$(JOB)-$(RETRY) $HOME ünï ✓"),
    (r'"it\'s"', "it\\'s"),
    (r'""', ""),
])
def test_vars_values_unescape_like_dagman(tmp_path, written, value):
    dag = parse_dag(f"JOB A a.sub\nVARS A x={written} y=\"2\"\n", tmp_path / "w.dag")
    assert dag.nodes["A"].vars == {"x": value, "y": "2"}


HOSTILE = ["plain", 'say "hi"', "back\\slash", "trailing\\", '\\"', "two  spaces",
           "  padded  ", "$(Process) $HOME", "100% ünïcødé ✓", "'single'", "tab\there",
           "a,b;c", "--flag=x y", "#not-a-comment", "queue"]


@pytest.mark.parametrize("value", HOSTILE)
def test_dagvar_values_reach_the_submit_description_unchanged(tmp_path, value):
    # templates write VARS with quote(v, "dag") for submit values and
    # quote(v, "dag-argument") for a value used as one argument
    write = (tmp_path / "a.sub").write_text
    write('executable = /bin/true\noutput = $(plain)\narguments = "--x $(arg)"\nqueue\n')
    dag = parse_dag(f"JOB A a.sub\nVARS A plain={quote(value, 'dag')} "
                    f"arg={quote(value, 'dag-argument')}\n", tmp_path / "w.dag")
    node = dag.nodes["A"]
    [proc] = expand_submit(tmp_path / "a.sub", "A", node.vars, 1, 0, node.append_vars)
    assert proc.output == value
    assert proc.arguments == ["--x", value]


def test_the_last_vars_definition_wins(tmp_path):
    dag = parse_dag('JOB A a.sub\nVARS A x="1"\nVARS A x="2"\n', tmp_path / "w.dag")
    assert dag.nodes["A"].vars == {"x": "2"}


def test_a_rescue_dag_done_line_marks_the_node_done(tmp_path):
    dag = parse_dag("JOB A a.sub\nJOB B b.sub\nDONE A\n", tmp_path / "w.dag")
    assert dag.nodes["A"].done and not dag.nodes["B"].done


ERRORS = [
    ("JOB A a.sub\nPARENT A CHILD B\n", 2, "node 'B' is not defined by a JOB line"),
    ("JOB A a.sub\nPARENT ghost CHILD A\n", 2, "node 'ghost' is not defined by a JOB line"),
    ("JOB A a.sub\nJOB B b.sub\nPARENT ALL_NODES CHILD B\n", 3,
     "node 'ALL_NODES' is not defined by a JOB line"),
    ("JOB A a.sub\nJOB B b.sub\nJOB A c.sub\n", 3, "node 'A' is defined twice"),
    ("JOB A a.sub\nJOB B b.sub\nJOB C c.sub\nPARENT A CHILD B\nPARENT B CHILD C\n"
     "PARENT C CHILD A\n", 4, "the DAG has a cycle: A -> B -> C -> A"),
    ("JOB A a.sub\nPARENT A CHILD A\n", 2, "the DAG has a cycle: A -> A"),
    ("JOB A a.sub\nFROBNICATE A\n", 2, "unknown DAG command 'FROBNICATE'"),
    ("JOB A a.sub\nVARS A x=unquoted\n", 2, "VARS must be name=\"value\" pairs"),
    ('JOB A a.sub\nVARS A x="unterminated\n', 2, "VARS must be name=\"value\" pairs"),
    ('JOB A a.sub\nVARS A "x"="1"\n', 2, "VARS must be name=\"value\" pairs"),
    ("JOB A a.sub\nVARS A\n", 2, "VARS needs at least one name=\"value\""),
    ('JOB A a.sub\nVARS A queue_x="1"\n', 2, "may not begin with 'queue'"),
    ('JOB A a.sub\nVARS B x="1"\n', 2, "node 'B' is not defined by a JOB line"),
    ("JOB A a.sub\nRETRY A many\n", 2, "the RETRY count must be an integer, not 'many'"),
    ("JOB A a.sub\nRETRY A 2 UNLESS-EXIT\n", 2, "RETRY options are 'UNLESS-EXIT value'"),
    ("JOB A a.sub\nSCRIPT MIDDLE A x.sh\n", 2, "SCRIPT needs PRE, POST or HOLD"),
    ("JOB A a.sub\nABORT-DAG-ON A\n", 2, "ABORT-DAG-ON needs a node, an exit value"),
    ("JOB A a.sub\nABORT-DAG-ON A 1 RETURN x\n", 2, "the RETURN value must be an integer"),
    ("JOB A a.sub\nPRIORITY A high\n", 2, "PRIORITY must be an integer, not 'high'"),
    ("JOB A a.sub\nCATEGORY A\n", 2, "CATEGORY needs a node and a category name"),
    ("JOB A a.sub\nMAXJOBS cpu lots\n", 2, "MAXJOBS needs a category and a number"),
    ("JOB A\n", 1, "JOB needs a node name and a submit file"),
    ("JOB A a.sub RETRYME\n", 1, "unknown JOB option 'RETRYME'"),
    ("JOB A {\n", 1, "the inline submit description has no closing '}' line"),
    ("JOB ALL_NODES a.sub\n", 1, "'ALL_NODES' is a reserved word"),
    ("JOB a+b a.sub\n", 1, "node name 'a+b' contains illegal character '+'"),
    ("JOB A a.sub\nPARENT A B\n", 2, "PARENT needs CHILD"),
    ("JOB A a.sub\nPARENT A CHILD\n", 2, "needs nodes on both sides"),
    ("JOB A a.sub\nSUBDAG B b.dag\n", 2, "SUBDAG needs EXTERNAL"),
    ("JOB A a.sub\nFINAL F f.sub\nPARENT A CHILD F\n", 3,
     "a FINAL node cannot have parents or children"),
    ("JOB A a.sub\nSPLICE S missing.dag\n", 2, "cannot read"),
    ("JOB A a.sub\nINCLUDE workflow.dag\n", 2, "includes itself"),
]


@pytest.mark.parametrize("text, line, message", ERRORS)
def test_errors_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "workflow.dag"
    path.write_text(text)
    with pytest.raises(DagError) as caught:
        read_dag(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


def test_an_empty_dag_is_refused(tmp_path):
    with pytest.raises(DagError, match="the DAG has no JOB lines"):
        parse_dag("# nothing\n", Path("empty.dag"))


def test_a_binary_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "junk.dag"
    path.write_bytes(b"JOB A a.sub\n\xff\xfe\x00")
    with pytest.raises(DagError, match=f"{path}: not a text file"):
        read_dag(path)


def test_all_nodes_leaves_out_the_final_node_and_status_file_options_parse(tmp_path):
    dag = parse_dag("JOB A a.sub\nJOB B b.sub\nFINAL F f.sub\nRETRY ALL_NODES 3\n"
                    "NODE_STATUS_FILE s.txt 5 ALWAYS-UPDATE\n", tmp_path / "w.dag")
    assert [n.retry for n in dag.nodes.values()] == [3, 3, 0]
    assert dag.final == "F" and dag.nodes["F"].final
    assert (dag.node_status_file, dag.node_status_interval_s, dag.node_status_always) == (
        "s.txt", 5.0, True)


def test_default_append_vars_from_the_config_file(tmp_path):
    (tmp_path / "c.config").write_text("# knobs\nDAGMAN_DEFAULT_APPEND_VARS = true\n")
    dag = parse_dag('CONFIG c.config\nJOB A a.sub\nVARS A x="1"\nVARS A PREPEND y="2"\n',
                    tmp_path / "w.dag")
    assert dag.nodes["A"].append_vars == {"x"}
    assert dag.flag("DAGMAN_DEFAULT_APPEND_VARS") and dag.config_error is None
