"""Node event logs in HTCondor's user-log format: what the local runner writes parses with
htcondor2.JobEventLog; hand-written pool logs (holds, evictions, releases; formats from
the HTCondor manual's event list) read through docket.engines.nodelog; and reading resumes
from a saved cursor without missing or repeating an event."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from dagkit import NULL, files, read_events, run_dag, write

from docket.engines.eventlog import EventLogWriter
from docket.engines.nodelog import read_node_events
from docket.quoting import quote_arguments

DATA = Path(__file__).parent / "data"


# what the writer writes -----------------------------------------------------------------


def test_every_event_the_runner_writes_parses_with_htcondor(tmp_path):
    log = tmp_path / "w.dag.nodes.log"
    writer = EventLogWriter(log)
    writer.submitted(7, 0, "fetch")
    writer.executing(7, 0)
    writer.terminated(7, 0, 3, None)
    writer.submitted(8, 1, "process 0")
    writer.terminated(8, 1, None, 9)
    writer.held(9, 0, "Transfer input files failure ... reading from file /d/ünï x.txt:\n"
                      "(errno 2) No such file or directory", 13, 2)
    writer.aborted(9, 0, "the local engine removes held jobs")
    writer.post_script(7, 0, "fetch", 1, None)
    writer.post_script(8, 1, "process 0", None, 15)
    writer.generic(8, 1, "container_image x.sif is not used\nhere")
    writer.close()

    events = read_events(log)
    assert [(n.name, c, p) for n, c, p, _ in events] == [
        ("SUBMIT", 7, 0), ("EXECUTE", 7, 0), ("JOB_TERMINATED", 7, 0), ("SUBMIT", 8, 1),
        ("JOB_TERMINATED", 8, 1), ("JOB_HELD", 9, 0), ("JOB_ABORTED", 9, 0),
        ("POST_SCRIPT_TERMINATED", 7, 0), ("POST_SCRIPT_TERMINATED", 8, 1),
        ("GENERIC", 8, 1)]
    # on disk, each event starts with HTCondor's three-digit code, as DAGMan writes it
    assert [line[:18] for line in log.read_text().splitlines() if line[:1].isdigit()] == [
        "000 (007.000.000) ", "001 (007.000.000) ", "005 (007.000.000) ",
        "000 (008.001.000) ", "005 (008.001.000) ", "012 (009.000.000) ",
        "009 (009.000.000) ", "016 (007.000.000) ", "016 (008.001.000) ",
        "008 (008.001.000) "]
    submit, execute, normal, _, by_signal, held, aborted, post, post_signal, note = (
        a for *_, a in events)
    assert note["Info"] == "container_image x.sif is not used here"
    assert submit["LogNotes"] == "DAG Node: fetch"
    assert submit["SubmitHost"].startswith("<127.0.0.1:")
    assert execute["ExecuteHost"].startswith("<127.0.0.1:")
    assert (normal["TerminatedNormally"], normal["ReturnValue"]) == (True, 3)
    assert (by_signal["TerminatedNormally"], by_signal["TerminatedBySignal"]) == (False, 9)
    # a reason is one line in the log: a newline inside it cannot start a new event
    assert held["HoldReason"] == ("Transfer input files failure ... reading from file "
                                  "/d/ünï x.txt: (errno 2) No such file or directory")
    assert (held["HoldReasonCode"], held["HoldReasonSubCode"]) == (13, 2)
    assert aborted["Reason"] == "the local engine removes held jobs"
    assert (post["DAGNodeName"], post["TerminatedNormally"], post["ReturnValue"]) == (
        "fetch", True, 1)
    assert (post_signal["DAGNodeName"], post_signal["TerminatedBySignal"]) == ("process 0",
                                                                               15)


def test_a_real_run_reads_back_through_the_monitor(tmp_path):
    def sub(name: str, *args: str, extra: str = "") -> None:
        write(tmp_path / name, f"executable = {NULL}\narguments = {quote_arguments(args)}\n"
                               f"should_transfer_files = YES\n{extra}queue\n")

    sub("ok.sub", "--write", "made.txt", extra="transfer_output_files = made.txt\n")
    sub("bad.sub", "--exit-code", "4")
    sub("killed.sub", "--signal", "KILL")
    sub("held.sub", extra="transfer_input_files = absent.txt\n")
    write(tmp_path / "post.sh", "#!/bin/sh\nexit 0\n").chmod(0o755)
    dag = write(tmp_path / "workflow.dag", "JOB ok ok.sub\nJOB bad bad.sub\n"
                                           "JOB killed killed.sub\nJOB held held.sub\n"
                                           "SCRIPT POST bad post.sh\n")
    out = run_dag(dag, 1)
    assert out.code == 1
    records, _ = read_node_events(dag, None)
    by_node: dict[str, list[tuple]] = {}
    for r in records:
        detail = {k: v for k, v in r.items() if k in ("exit_code", "signal", "hold_code",
                                                     "hold_subcode")}
        by_node.setdefault(r["node"], []).append((r["type"], detail))
    assert by_node["ok"] == [("node.submitted", {}), ("node.started", {}),
                             ("node.finished", {"exit_code": 0})]
    assert by_node["bad"] == [("node.submitted", {}), ("node.started", {}),
                              ("node.finished", {"exit_code": 4}),
                              ("node.post", {"exit_code": 0})]
    assert by_node["killed"][-1] == ("node.finished", {"signal": 9})
    assert by_node["held"] == [("node.submitted", {}),
                               ("node.held", {"hold_code": 13, "hold_subcode": 2}),
                               ("node.aborted", {})]
    held = next(r for r in records if r["type"] == "node.held")
    assert "absent.txt" in held["reason"]
    assert sorted(out.metrics["failed_nodes"]) == ["held", "killed"]


# hand-written pool logs -----------------------------------------------------------------


def pool_dag(tmp_path: Path, fixture: str) -> Path:
    dag = tmp_path / "workflow.dag"
    shutil.copy(DATA / fixture, files(dag)["nodes.log"])
    return dag


POOL_RECORDS = [
    ("node.submitted", "fetch", 4501, 0, {}),
    ("node.started", "fetch", 4501, 0, {"host": "ep042"}),
    ("node.held", "fetch", 4501, 0, {"hold_code": 34, "hold_subcode": 0,
                                     "reason": "gone over cgroup memory limit"}),
    ("node.released", "fetch", 4501, 0, {"reason": "via condor_release (by user da)"}),
    ("node.started", "fetch", 4501, 0, {"host": "ep017"}),
    ("node.evicted", "fetch", 4501, 0, {}),
    ("node.started", "fetch", 4501, 0, {"host": "ep099"}),
    ("node.finished", "fetch", 4501, 0, {"exit_code": 0}),
    ("node.submitted", "process_0", 4502, 0, {}),
    ("node.submitted", "process_0", 4502, 1, {}),
    ("node.held", "process_0", 4502, 0, {"hold_code": 13, "hold_subcode": 2,
                                         "reason": "/data/run7/inputs.txt"}),
    ("node.started", "process_0", 4502, 1, {"host": "ep042"}),
    ("node.finished", "process_0", 4502, 1, {"signal": 9}),
    ("node.aborted", "process_0", 4502, 0, {"reason": "PeriodicRemove"}),
    ("node.submitted", "deliver", 4503, 0, {}),
    ("node.started", "deliver", 4503, 0, {"host": "ep017"}),
    ("node.held", "deliver", 4503, 0, {"hold_code": 12, "hold_subcode": 2,
                                       "reason": "dir_6012/summary.txt"}),
    ("node.released", "deliver", 4503, 0, {"reason": "SYSTEM_PERIODIC_RELEASE"}),
    ("node.started", "deliver", 4503, 0, {"host": "ep099"}),
    ("node.finished", "deliver", 4503, 0, {"exit_code": 2}),
    ("node.post", "deliver", 4503, 0, {"exit_code": 1}),
]


def matches(record: dict, expected: tuple) -> bool:
    kind, node, cluster, proc, detail = expected
    if (record["type"], record["node"], record["cluster"], record["proc"]) != (
            kind, node, cluster, proc):
        return False
    for key, want in detail.items():
        got = record.get(key)
        if isinstance(want, str) and key in ("reason", "host"):
            if want not in (got or ""):
                return False
        elif got != want:
            return False
    return True


def test_a_pool_log_with_holds_evictions_and_releases_reads_through_the_monitor(tmp_path):
    records, cursor = read_node_events(pool_dag(tmp_path, "pool.nodes.log"), None)
    assert cursor is not None
    assert len(records) == len(POOL_RECORDS)  # file-transfer and image-size events skipped
    for record, expected in zip(records, POOL_RECORDS, strict=True):
        assert matches(record, expected), (record, expected)


def test_the_old_date_format_reads_too(tmp_path):
    records, _ = read_node_events(pool_dag(tmp_path, "legacy.nodes.log"), None)
    assert [(r["type"], r.get("hold_code"), r.get("exit_code")) for r in records] == [
        ("node.submitted", None, None), ("node.started", None, None),
        ("node.held", 34, None), ("node.released", None, None),
        ("node.started", None, None), ("node.finished", None, 1)]
    assert records[2]["reason"] == "Job has gone over memory limit of 8192 megabytes."


def test_the_fixture_events_parse_with_htcondor_directly():
    kinds = [n.name for n, *_ in read_events(DATA / "pool.nodes.log")]
    assert kinds.count("JOB_HELD") == 3 and kinds.count("JOB_RELEASED") == 2
    assert kinds.count("JOB_EVICTED") == 1
    assert "FILE_TRANSFER" in kinds and "IMAGE_SIZE" in kinds


# resuming from a saved cursor -------------------------------------------------------------


def _cut(text: bytes, where: str) -> int:
    ends = [i + 4 for i in range(len(text)) if text.startswith(b"...\n", i)]
    boundary = min(e for e in ends if e >= len(text) // 2)
    return {"middle of an event": len(text) // 2,
            "event boundary": boundary,
            "before the last newline": boundary - 1,
            "inside the next header": boundary + 2,
            "inside the first header": 3}[where]


# htcondor2.JobEventLog never reads past a log that ended 1-3 bytes into an event
# header, or between '...' and its newline: every later event would be lost, so
# docket.engines.nodelog reads the log only when it ends with a whole event.
@pytest.mark.parametrize("where", [
    "middle of an event", "event boundary",
    "before the last newline", "inside the next header", "inside the first header",
])
def test_reading_resumes_from_a_saved_cursor_without_missing_or_repeating(tmp_path, where):
    text = (DATA / "pool.nodes.log").read_bytes()
    cut = _cut(text, where)
    dag = tmp_path / "workflow.dag"
    log = files(dag)["nodes.log"]
    log.write_bytes(text[:cut])
    first, cursor = read_node_events(dag, None)
    with open(log, "ab") as fh:  # the engine appends the rest
        fh.write(text[cut:])
    second, cursor = read_node_events(dag, cursor)
    third, _ = read_node_events(dag, cursor)
    assert third == []
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    whole, _ = read_node_events(pool_dag(fresh, "pool.nodes.log"), None)
    assert len(whole) == len(POOL_RECORDS)
    assert first + second == whole


def test_reading_event_by_event_sees_each_exactly_once(tmp_path):
    text = (DATA / "pool.nodes.log").read_bytes()
    dag = tmp_path / "workflow.dag"
    log = files(dag)["nodes.log"]
    log.write_bytes(b"")
    seen: list[dict] = []
    cursor = None
    position = 0
    while position < len(text):
        step = text.index(b"...\n", position) + 4 if b"...\n" in text[position:] else len(
            text)
        with open(log, "ab") as fh:
            fh.write(text[position:step])
        position = step
        records, cursor = read_node_events(dag, cursor)
        seen += records
    assert [(r["type"], r["cluster"], r["proc"]) for r in seen] == [
        (k, c, p) for k, _, c, p, _ in POOL_RECORDS]


def test_the_cursor_of_a_log_with_nothing_new_stays_the_same_as_time_passes(tmp_path):
    # a changed cursor is saved (a durable commit): one that changed with the clock made
    # every idle pass of the watcher, and of tick --wait under a long CASA job, write
    dag = pool_dag(tmp_path, "pool.nodes.log")
    records, cursor = read_node_events(dag, None)
    assert len(records) == len(POOL_RECORDS)
    second = int(time.time())
    while int(time.time()) == second:  # into the next second of the wall clock
        time.sleep(0.05)
    again, same = read_node_events(dag, cursor)
    assert again == [] and same == cursor
    with open(files(dag)["nodes.log"], "ab") as fh:  # and it still moves on new events
        fh.write((DATA / "pool.nodes.log").read_bytes().split(b"...\n")[0] + b"...\n")
    newer, moved = read_node_events(dag, same)
    assert len(newer) == 1 and moved != same


def test_no_log_yet_means_no_events_and_the_cursor_is_kept(tmp_path):
    assert read_node_events(tmp_path / "workflow.dag", None) == ([], None)
    assert read_node_events(tmp_path / "workflow.dag", b"kept") == ([], b"kept")


def test_a_log_that_cannot_be_read_is_a_named_error_for_its_execution_only(tmp_path):
    """The saved read position names the log's path: with the processing directory moved
    away under a running watcher, reading fails with docket's own error (which the
    launcher reports for that execution alone, then goes on with the others), not the
    bindings' exception out of the whole pass."""
    from docket.engines.nodelog import NodeLogUnreadable

    first = tmp_path / "first"
    log = write(first / "w.dag.nodes.log", "")
    writer = EventLogWriter(log)
    writer.submitted(7, 0, "fetch")
    writer.close()
    events, cursor = read_node_events(first / "w.dag", None)
    assert [e["node"] for e in events] == ["fetch"]
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    with pytest.raises(NodeLogUnreadable, match=r"moved/w\.dag\.nodes\.log: cannot read the "
                                                r"node event log"):
        read_node_events(moved / "w.dag", cursor)
