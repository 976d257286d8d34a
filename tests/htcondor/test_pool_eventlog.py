"""The hand-written node log (HTCondor's event formats: holds 34/13/12, a release, an
eviction, an abort, a signal) parses with htcondor2.JobEventLog itself, and docket's monitor
reads it incrementally across a restart without missing or repeating an event."""

from __future__ import annotations

from pathlib import Path

import htcondor2

from docket.engines.nodelog import read_node_events
from tests.htcondor.condorkit import DATA

LOG = DATA / "holds.nodes.log"
EventType = htcondor2.JobEventType


def test_the_fixture_is_read_by_the_bindings_as_written():
    jel = htcondor2.JobEventLog(str(LOG))
    try:
        events = [(e.type, e.cluster, dict(e.items())) for e in jel.events(0)]
    finally:
        jel.close()
    types = [t.name for t, _, _ in events]
    assert types == ["SUBMIT", "EXECUTE", "JOB_HELD", "JOB_RELEASED", "EXECUTE",
                     "JOB_TERMINATED", "SUBMIT", "SUBMIT", "SUBMIT", "EXECUTE", "EXECUTE",
                     "EXECUTE", "JOB_HELD", "JOB_EVICTED", "JOB_TERMINATED", "EXECUTE",
                     "JOB_ABORTED", "JOB_TERMINATED", "SUBMIT", "EXECUTE", "JOB_HELD"]
    # the codes at the start of each event, as the file has them
    assert [int(t) for t, _, _ in events] == [int(line[:3]) for line in
                                              LOG.read_text().splitlines()
                                              if line[:3].isdigit() and line[3:4] == " "]
    held = [(c, a["HoldReasonCode"], a["HoldReasonSubCode"]) for t, c, a in events
            if t == EventType.JOB_HELD]
    assert held == [(100, 13, 2), (101, 34, 0), (104, 12, 2)]
    signal = next(a for t, c, a in events if t == EventType.JOB_TERMINATED and c == 102)
    assert (signal["TerminatedNormally"], signal["TerminatedBySignal"]) == (False, 9)
    exit1 = next(a for t, c, a in events if t == EventType.JOB_TERMINATED and c == 103)
    assert (exit1["TerminatedNormally"], exit1["ReturnValue"]) == (True, 1)
    aborted = next(a for t, c, a in events if t == EventType.JOB_ABORTED)
    assert aborted["Reason"] == "via condor_rm (by user alice)"


def test_reading_resumes_after_a_restart_without_repeats(tmp_path):
    lines = LOG.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if line.startswith("004 "))
    dag = tmp_path / "workflow.dag"
    log = Path(f"{dag}.nodes.log")
    log.write_text("".join(lines[:cut]))
    first, cursor = read_node_events(dag, None)
    with open(log, "a") as fh:
        fh.write("".join(lines[cut:]))
    second, _ = read_node_events(dag, cursor)  # a new watcher, the saved cursor
    everything, _ = read_node_events(dag, None)
    assert first + second == everything
    assert [e["type"] for e in second][:3] == ["node.evicted", "node.finished",
                                               "node.started"]


def test_every_form_that_names_a_dag_node():
    import classad2

    from docket.engines.nodelog import node_of

    structured = classad2.parseOne('[ DAGNodeName = "fetch"; JobBatchName = "d v1 e1" ]')
    forms = [
        ({"StructuredNotes": structured, "LogNotes": "ignored"}, "fetch"),  # HTCondor 25
        ({"LogNotes": '[ DAGNodeName = "process_0"; JobBatchName = "d v1 e1" ]'},
         "process_0"),  # the same note, as text only
        ({"LogNotes": "DAG Node: deliver"}, "deliver"),  # older DAGMan, NOOP nodes, local
        ({"DAGNodeName": "post_only"}, "post_only"),  # a POST script's event
        ({"LogNotes": "submitted by hand"}, None),
        ({"LogNotes": "[ not a classad"}, None),
        ({}, None),
    ]
    assert [node_of(event) for event, _ in forms] == [name for _, name in forms]
