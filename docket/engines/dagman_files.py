"""The files DAGMan writes about a DAG, in DAGMan's own formats.

Pure functions from node states to text, so each format is tested without running
anything: the node status file (NODE_STATUS_FILE, ClassAds as dag.cpp's
``DumpNodeStatus`` writes them), the rescue DAG (``<dag>.rescue001``, DONE lines as
``Dag::Rescue`` writes a partial rescue), the dagman.out status table and the
"the following job(s) failed" block, the DOT file and the JOBSTATE_LOG lines. The
formats were checked against recorded DAGMan 23 output (lsst/ctrl_bps_htcondor's
tests/data) and HTCondor's src/condor_dagman sources.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NodeState", "STATUS_NAMES", "DAG_STATUS_NAMES", "node_status_text",
           "rescue_text", "rescue_files", "next_rescue", "status_table", "counts_table",
           "failed_block",
           "dot_text", "jobstate_line"]

# job.h's status_t, the numbers the node status file uses
STATUS_NAMES = {0: "STATUS_NOT_READY", 1: "STATUS_READY", 2: "STATUS_PRERUN",
                3: "STATUS_SUBMITTED", 4: "STATUS_POSTRUN", 5: "STATUS_DONE",
                6: "STATUS_ERROR", 7: "STATUS_FUTILE"}
# dag.h's DagStatus, the value of $DAG_STATUS
DAG_STATUS_NAMES = {0: "DAG_STATUS_OK", 1: "DAG_STATUS_ERROR", 2: "DAG_STATUS_NODE_FAILED",
                    3: "DAG_STATUS_ABORT", 4: "DAG_STATUS_RM", 5: "DAG_STATUS_CYCLE",
                    6: "DAG_STATUS_HALTED"}


@dataclass
class NodeState:
    """What the files need to know about one node."""

    name: str
    status: int  # a key of STATUS_NAMES
    details: str = ""
    retries: int = 0
    procs_queued: int = 0
    noop: bool = False
    submit_file: str = ""
    job_id: str = ""  # "(cluster.proc.0)" of its last job
    return_value: int = 0
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    node_id: int = 0
    post_script: str = ""


def _stamp(seconds: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(seconds))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _count(states: list[NodeState], status: int) -> int:
    return sum(1 for s in states if s.status == status)


def node_status_text(dag_file: Path, states: list[NodeState], dag_status: int,
                     now: float, next_update: float | None, succeeded: bool = False) -> str:
    """The NODE_STATUS_FILE: a DagStatus ad, one NodeStatus ad per node, a StatusEnd ad.

    The DAG's own status uses the node numbers: 3 while it runs (``next_update`` set),
    5 when it succeeded, 6 when it failed (the reason in the comment), as DAGMan
    writes them."""
    if next_update is not None:
        whole, comment = 3, "STATUS_SUBMITTED ()"
    elif succeeded:
        whole, comment = 5, "STATUS_DONE (success)"
    else:
        whole = 6
        comment = {2: "STATUS_ERROR (failed)", 3: "STATUS_ERROR (aborted)",
                   4: "STATUS_ERROR (removed)"}.get(dag_status, "STATUS_ERROR (failed)")
    lines = ["[", '  Type = "DagStatus";', "  DagFiles = {", f"    {_quote(str(dag_file))}",
             "  };", f'  Timestamp = {int(now)}; /* "{_stamp(now)}" */',
             f'  DagStatus = {whole}; /* "{comment}" */',
             f"  NodesTotal = {len(states)};",
             f"  NodesDone = {_count(states, 5)};", f"  NodesPre = {_count(states, 2)};",
             f"  NodesQueued = {_count(states, 3)};", f"  NodesPost = {_count(states, 4)};",
             f"  NodesReady = {_count(states, 1)};",
             f"  NodesUnready = {_count(states, 0)};",
             f"  NodesFutile = {_count(states, 7)};",
             f"  NodesFailed = {_count(states, 6)};",
             "  JobProcsHeld = 0;", "  JobProcsIdle = 0; /* includes held */", "]"]
    for state in states:
        lines += ["[", '  Type = "NodeStatus";', f"  Node = {_quote(state.name)};",
                  f'  NodeStatus = {state.status}; /* "{STATUS_NAMES[state.status]}" */',
                  f"  StatusDetails = {_quote(state.details)};",
                  f"  RetryCount = {state.retries};",
                  f"  JobProcsQueued = {state.procs_queued};", "  JobProcsHeld = 0;", "]"]
    if next_update is None:
        nxt = '0; /* "none" */'
    else:
        nxt = f'{int(next_update)}; /* "{_stamp(next_update)}" */'
    lines += ["[", '  Type = "StatusEnd";', f'  EndTime = {int(now)}; /* "{_stamp(now)}" */',
              f"  NextUpdate = {nxt}", "]"]
    return "\n".join(lines) + "\n"


def rescue_files(dag_path: Path) -> list[tuple[int, Path]]:
    """The DAG's rescue DAGs, oldest first: [(number, path)]."""
    pattern = re.compile(re.escape(dag_path.name) + r"\.rescue(\d{3,})$")
    found = []
    if dag_path.parent.is_dir():
        for path in dag_path.parent.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match[1]), path))
    return sorted(found)


def next_rescue(dag_path: Path) -> Path:
    found = rescue_files(dag_path)
    number = found[-1][0] + 1 if found else 1
    return dag_path.with_name(f"{dag_path.name}.rescue{number:03d}")


def rescue_text(dag_path: Path, states: list[NodeState], now: float) -> str:
    """A partial rescue DAG, as DAGMan 8+ writes it: read together with the original
    DAG file, its DONE lines mark the nodes that need not run again."""
    failed = [s.name for s in states if s.status == 6]
    done = [s.name for s in states if s.status == 5]
    stamp = time.strftime("%-m/%-d/%Y %H:%M:%S UTC", time.gmtime(now))
    lines = ["# Rescue DAG file, created after running",
             f"#   the {dag_path} DAG file", f"# Created {stamp}",
             "# Rescue DAG version: 2.0.1 (partial)", "#",
             f"# Total number of Nodes: {len(states)}",
             f"# Nodes premarked DONE: {len(done)}",
             f"# Nodes that failed: {len(failed)}",
             "#   " + "".join(f"{name}," for name in failed) + "<ENDLIST>", ""]
    lines += [f"DONE {name}" for name in done]
    return "\n".join(lines) + "\n"


def status_table(states: list[NodeState], dag_status: int) -> list[str]:
    """The lines DAGMan prints to dagman.out after each cycle that changed something."""
    return counts_table([_count(states, n) for n in (5, 2, 3, 4, 1, 0, 6, 7)], dag_status)


def counts_table(row: list[int], dag_status: int) -> list[str]:
    """The status table from its eight counts: Done, Pre, Queued, Post, Ready, Un-Ready,
    Failed, Futile (the runner keeps them as it goes, so a big DAG costs nothing)."""
    return [f"DAG status: {dag_status} ({DAG_STATUS_NAMES.get(dag_status, '')})",
            f"Of {sum(row)} nodes total:",
            " Done     Pre   Queued    Post   Ready   Un-Ready   Failed   Futile",
            "  ===     ===      ===     ===     ===        ===      ===      ===",
            "{:>5}{:>8}{:>9}{:>8}{:>8}{:>11}{:>9}{:>9}".format(*row),
            "0 job proc(s) currently held"]


def failed_block(states: list[NodeState]) -> list[str]:
    """dagman.out's "ERROR: the following job(s) failed:" block, one entry per node."""
    failed = [s for s in states if s.status == 6]
    if not failed:
        return []
    lines = ["ERROR: the following job(s) failed:"]
    for s in failed:
        lines += ["---------------------- Job ----------------------",
                  f"      Node Name: {s.name}",
                  f"           Noop: {'true' if s.noop else 'false'}",
                  f"         NodeID: {s.node_id}",
                  f"    Node Status: {STATUS_NAMES[s.status]:<16}",
                  f"Node return val: {s.return_value}",
                  f"          Error: {s.details}",
                  f"Job Submit File: {s.submit_file}"]
        if s.post_script:
            lines.append(f"    POST Script: {s.post_script}")
        if s.job_id:
            lines.append(f" HTCondor Job ID: {s.job_id}")
        lines.append(f"PARENTS: {' '.join(s.parents)} WAITING: 0 CHILDREN: "
                     f"{' '.join(s.children)}")
    lines.append("---------------------------------------\t<END>")
    return lines


_DOT_LETTER = {0: "I", 1: "I", 2: "R", 3: "R", 4: "R", 5: "D", 6: "E", 7: "F"}


def dot_text(states: list[NodeState], now: float) -> str:
    """The DOT file (``DOT file``): every node and edge, its state letter in the label."""
    lines = ["digraph DAG {", f'    label="DAGMan Job status at {_stamp(now)}";', ""]
    for s in states:
        lines.append(f'    "{s.name}" [shape=ellipse label="{s.name} '
                     f'({_DOT_LETTER[s.status]})"];')
    lines.append("")
    for s in states:
        for child in s.children:
            lines.append(f'    "{s.name}" -> "{child}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def jobstate_line(now: float, node: str, event: str, condor_id: str = "-",
                  sequence: int = 0) -> str:
    """One JOBSTATE_LOG line: time, node, event, job id or value, site, sequence."""
    return f"{int(now)} {node} {event} {condor_id} local - {sequence}\n"
