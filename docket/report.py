"""What ``docket status`` and ``docket show`` report, read from the store's queries.

Only ``sqlite3`` and the store are imported here: ``status`` must answer in well under a
second on a home with 100,000 executions.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from docket.records import EngineState
from docket.store import Store

__all__ = ["status", "show", "stages", "attempts", "results", "metrics"]


def status(store: Store, limit: int = 20, state: str | None = None) -> dict[str, Any]:
    counts = store.request_counts()
    return {"counts": counts, "total": sum(counts.values()),
            "requests": store.status_rows(limit, state)}


def planned_nodes(directory: str | Path | None) -> list[str]:
    """The node names of an execution's rendered DAG ([] when it cannot be read).

    A stage is done only when every node of it in the DAG is: a node that has not been
    submitted yet (a throttle, or a slow engine) has no events, and without the DAG a stage
    whose first node finished would read as done while the rest had not started.
    """
    if not directory:
        return []
    from docket.dag import DagError, read_dag
    from docket.render import WORKFLOW_FILE

    try:
        return list(read_dag(Path(directory) / WORKFLOW_FILE).nodes)
    except (DagError, OSError):
        return []


def stages(stage_specs: list[Any], nodes: list[dict[str, Any]],
           planned: list[str] | None = None) -> list[dict[str, Any]]:
    """Each stage's state from its nodes: waiting, running, done or failed.

    ``planned``: every node name of the DAG (``planned_nodes``); those without a record yet
    count as waiting.
    """
    seen = {n["node"] for n in nodes}
    nodes = [*nodes, *({"node": name, "state": "waiting"} for name in planned or ()
                       if name not in seen)]
    out = []
    for spec in stage_specs:
        mine = [n for n in nodes if any(fnmatch.fnmatchcase(n["node"], pat)
                                        for pat in spec.nodes)]
        states = {n["state"] for n in mine}
        if mine and states == {"done"}:
            state = "done"
        elif "failed" in states:
            state = "failed"
        elif states & {"running", "idle", "held", "done"}:
            state = "running"
        else:
            state = "waiting"
        out.append({"stage": spec.name, "description": spec.description, "state": state,
                    "nodes": len(mine), "done": sum(1 for n in mine if n["state"] == "done")})
    return out


def attempts(store: Store, execution: int) -> list[dict[str, Any]]:
    """Each failed attempt of an execution: its node failures and what the policy did."""
    by_attempt: dict[int, list[dict[str, Any]]] = {}
    for data in store.events_of(execution, "policy.decided"):
        by_attempt.setdefault(int(data.get("attempt", 1)), []).append(
            {"node": data["node"], "action": data["action"], "rule": data["rule"],
             "reason": data["reason"], "adjustments": data.get("adjustments", {})})
    return [{"attempt": n, "failures": f,
             "outcome": "retried" if all(x["action"] != "fail" for x in f) else "failed"}
            for n, f in sorted(by_attempt.items())]


def _held_executions(store: Store, name: str) -> set[int]:
    """Executions of a request whose last pause/resume event is a pause ('docket pause')."""
    last = {e["execution"]: e["type"] for e in store.events(
        request=name, types=("execution.held", "execution.released"))}
    return {e for e, t in last.items() if t == "execution.held"}


def show(store: Store, name: str, stage_specs: list[Any] | None = None,
         events: int = 30) -> dict[str, Any] | None:
    request = store.request_row(name)
    if request is None:
        return None
    held = _held_executions(store, name)
    executions = []
    for item in store.execution_rows(request=name):
        item["held"] = item["id"] in held and item["engine_state"] == EngineState.RUNNING
        item["nodes"] = store.node_rows(item["id"])
        if stage_specs is not None:
            item["stages"] = stages(stage_specs, item["nodes"],
                                    planned_nodes(item["directory"]))
        item["attempts"] = attempts(store, item["id"])
        executions.append(item)
    return {"request": request, "versions": store.version_rows(name),
            "executions": executions, "events": store.history(name, last=events)}


def results(store: Store, capability: str | None = None, status: str | None = None,
            tag: str | None = None, since: str | None = None,
            limit: int = 100) -> dict[str, Any]:
    """Executions with their bookkeeping (CHIME's Work fields), newest first."""
    out = []
    for item in store.execution_rows(capability=capability, state=status, tag=tag,
                                     since=since, newest_first=True, limit=limit):
        item["group"] = item.pop("grp")
        item["status"] = item["state"]
        out.append(item)
    return {"executions": out}


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def metrics(store: Store) -> dict[str, Any]:
    """Counts per capability and state, queue wait and run time percentiles, failures."""
    counts = store.execution_counts()
    timing: dict[str, dict[str, Any]] = {}
    for cap in counts:
        times = store.run_times(cap)
        waits = [wait for wait, _ in times if wait is not None]
        runs = [run for _, run in times if run is not None]
        timing[cap] = {"queue_wait_s": {"p50": _percentile(waits, 0.5),
                                        "p95": _percentile(waits, 0.95)},
                       "run_time_s": {"p50": _percentile(runs, 0.5),
                                      "p95": _percentile(runs, 0.95)},
                       "executions_timed": len(runs)}
    failures: dict[str, int] = {}
    for reason in store.failure_reasons():
        cause = _cause(reason or "unknown")
        failures[cause] = failures.get(cause, 0) + 1
    return {"counts": counts, "timing": timing, "failures_by_cause": failures}


def _cause(reason: str) -> str:
    """A failure reason without the parts that differ run to run (node names, numbers)."""
    import re

    text = reason.split(";")[0]
    text = re.sub(r"^node \S+: ", "", text)
    return re.sub(r"\d+", "N", text)[:80]
