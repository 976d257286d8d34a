"""Follow running workflows from the engines' own files and turn them into events.

The node job event log (HTCondor's user-log format, written by DAGMan or by the local
runner) is read incrementally with ``htcondor2.JobEventLog``; the read position is saved
in the same transaction as the events it produced, so a watcher restart resumes without
missing or repeating an event. The DAG's metrics file says when and how it ended.

Which DAG node a job belongs to is said by its submit event, in one of the forms DAGMan
writes (``dagman_submit.cpp``, ``write_user_log.cpp``):

- HTCondor 25 (seen on a 25.13.2 pool): a structured note,
  ``[ DAGNodeName = "fetch"; JobBatchName = "demo-example v1 e1" ]``, which the bindings
  give as the ClassAd ``StructuredNotes`` (and as text in ``LogNotes``);
- older DAGMan, NOOP nodes and the local engine: the line ``DAG Node: fetch`` (``LogNotes``);
- a POST script's event carries its node itself (``DAGNodeName``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from docket.engines.eventlog import event_types, node_log

__all__ = ["read_node_events", "node_of", "EVENT_NAMES", "NodeLogUnreadable"]

log = logging.getLogger("docket.engines.nodelog")

# htcondor2.JobEventType name -> docket event type
EVENT_NAMES = {"SUBMIT": "node.submitted", "EXECUTE": "node.started",
               "JOB_EVICTED": "node.evicted", "JOB_TERMINATED": "node.finished",
               "JOB_ABORTED": "node.aborted", "JOB_HELD": "node.held",
               "JOB_RELEASED": "node.released", "POST_SCRIPT_TERMINATED": "node.post"}
_DAG_NODE_LINE = "DAG Node:"


class NodeLogUnreadable(OSError):
    """One execution's node event log could not be read this pass (an I/O error, or a
    saved read position that no longer fits the log). Its events wait for the next pass;
    other executions are followed as usual."""


def _ends_with_whole_event(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < 4:
                return False
            fh.seek(size - 4)
            return fh.read(4) == b"...\n"
    except FileNotFoundError:
        return False


def _from_notes_text(notes: str) -> str | None:
    text = notes.strip()
    if text.startswith(_DAG_NODE_LINE):
        return text[len(_DAG_NODE_LINE):].strip() or None
    if text.startswith("["):
        import classad2

        try:
            value = classad2.parseOne(text).get("DAGNodeName")
        except Exception:  # notes that are not a ClassAd name no node
            return None
        return str(value) if value else None
    return None


def node_of(event: Any) -> str | None:
    """The DAG node an event names (see the module's docstring for the forms), or None."""
    structured = event.get("StructuredNotes")
    if structured is not None:
        with_name = structured.get("DAGNodeName")
        if with_name:
            return str(with_name)
    named = event.get("DAGNodeName")
    if named:
        return str(named)
    return _from_notes_text(str(event.get("LogNotes") or ""))


def read_node_events(dag: Path, cursor: bytes | None) -> tuple[list[dict[str, Any]],
                                                                 bytes | None]:
    """New node events since ``cursor``, and the cursor to save with them.

    The cursor moves past every event read, mapped or not: an event no node claims is
    logged once, never again on the next pass.
    """
    path = node_log(dag)
    if not _ends_with_whole_event(path):
        # JobEventLog loses every later event if it reads a log cut inside an event
        # (a writer mid-way): read only when the last event is complete
        return [], cursor
    event_types()  # first: it sets a harmless CONDOR_CONFIG when none is set
    import htcondor2

    try:
        return _read(htcondor2, path, cursor)
    except htcondor2.HTCondorException as exc:
        # the bindings say so for an I/O error under the log (or a log cut by a full disk)
        raise NodeLogUnreadable(f"{path}: cannot read the node event log: {exc}") from None


def _read(htcondor2: Any, path: Path, cursor: bytes | None
          ) -> tuple[list[dict[str, Any]], bytes | None]:
    types = htcondor2.JobEventType
    kinds = {types[name]: kind for name, kind in EVENT_NAMES.items()}
    state = json.loads(cursor) if cursor else {"jel": None, "clusters": {}}
    jel = (pickle.loads(base64.b64decode(state["jel"])) if state["jel"]
           else htcondor2.JobEventLog(str(path)))
    clusters: dict[str, str] = state["clusters"]
    out: list[dict[str, Any]] = []
    for event in jel.events(stop_after=0):
        kind = kinds.get(event.type)
        if kind is None:
            continue
        cluster, proc = event.cluster, event.proc
        named = node_of(event)
        if named is not None:
            clusters[str(cluster)] = named
        node = clusters.get(str(cluster))
        if node is None:
            log.warning("%s: %s event of job %s.%s names no DAG node; skipped", path,
                        event.type.name, cluster, proc)
            continue
        record: dict[str, Any] = {"type": kind, "node": node, "cluster": cluster, "proc": proc}
        if event.type == types.EXECUTE:
            record["host"] = event.get("ExecuteHost")
        elif event.type in (types.JOB_TERMINATED, types.POST_SCRIPT_TERMINATED):
            if event.get("TerminatedNormally", True):
                record["exit_code"] = event.get("ReturnValue")
            else:
                record["signal"] = event.get("TerminatedBySignal")
        elif event.type == types.JOB_HELD:
            record.update(hold_code=event.get("HoldReasonCode"),
                          hold_subcode=event.get("HoldReasonSubCode"),
                          reason=event.get("HoldReason"))
        else:  # evicted, aborted, released
            record["reason"] = event.get("Reason")
        out.append(record)
    # events() stamped the reader with this second (its wait deadline, which the next
    # events() call sets again): left in, an idle log's cursor would change every
    # second, and every pass of the watcher or of tick --wait would commit it durably
    jel._deadline = 0
    blob = json.dumps({"jel": base64.b64encode(pickle.dumps(jel)).decode(),
                       "clusters": clusters}).encode()
    jel.close()
    return out, blob
