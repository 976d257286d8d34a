"""Follow running workflows from the engines' own files and turn them into events.

The node job event log (HTCondor's user-log format, written by DAGMan or by the local
runner) is read incrementally with ``htcondor2.JobEventLog``; the read position is saved
in the same transaction as the events it produced, so a watcher restart resumes without
missing or repeating an event. The DAG's metrics file says when and how it ended.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

from docket.engines.base import node_log

__all__ = ["read_node_events", "EVENT_NAMES"]

log = logging.getLogger("docket.monitor")

# HTCondor event type number -> docket event type
EVENT_NAMES = {0: "node.submitted", 1: "node.started", 4: "node.evicted", 5: "node.finished",
               9: "node.aborted", 12: "node.held", 13: "node.released", 16: "node.post"}


def _htcondor():  # noqa: ANN202
    os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
    import htcondor2

    return htcondor2


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


def read_node_events(dag: Path, cursor: bytes | None) -> tuple[list[dict[str, Any]],
                                                                 bytes | None]:
    """New node events since ``cursor``, and the cursor to save with them."""
    path = node_log(dag)
    if not _ends_with_whole_event(path):
        # JobEventLog loses every later event if it reads a log cut inside an event
        # (a writer mid-way): read only when the last event is complete
        return [], cursor
    htcondor2 = _htcondor()
    state = json.loads(cursor) if cursor else {"jel": None, "clusters": {}}
    jel = (pickle.loads(base64.b64decode(state["jel"])) if state["jel"]
           else htcondor2.JobEventLog(str(path)))
    clusters: dict[str, str] = state["clusters"]
    out: list[dict[str, Any]] = []
    for event in jel.events(stop_after=0):
        number = int(event.type)
        kind = EVENT_NAMES.get(number)
        if kind is None:
            continue
        cluster, proc = event.cluster, event.proc
        notes = event.get("LogNotes") or ""
        if notes.startswith("DAG Node:"):
            clusters[str(cluster)] = notes.split(":", 1)[1].strip()
        node = clusters.get(str(cluster))
        if node is None:
            log.warning("%s: event %s for cluster %s with no DAG node", path, number, cluster)
            continue
        record: dict[str, Any] = {"type": kind, "node": node, "cluster": cluster, "proc": proc}
        if number == 1:
            record["host"] = event.get("ExecuteHost")
        elif number in (5, 16):
            if event.get("TerminatedNormally", True):
                record["exit_code"] = event.get("ReturnValue")
            else:
                record["signal"] = event.get("TerminatedBySignal")
        elif number == 12:
            record.update(hold_code=event.get("HoldReasonCode"),
                          hold_subcode=event.get("HoldReasonSubCode"),
                          reason=event.get("HoldReason"))
        elif number in (4, 9, 13):
            record["reason"] = event.get("Reason")
        out.append(record)
    blob = json.dumps({"jel": base64.b64encode(pickle.dumps(jel)).decode(),
                       "clusters": clusters}).encode()
    jel.close()
    return out, blob
