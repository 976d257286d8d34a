"""What ``docket status`` and ``docket show`` report, read straight from SQLite.

Only ``sqlite3`` and the store are imported here: ``status`` must answer in well under a
second on a home with 100,000 executions.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

from docket.store import Store

__all__ = ["status", "show", "stages", "attempts", "results", "metrics"]


def status(store: Store, limit: int = 20, state: str | None = None) -> dict[str, Any]:
    counts = {r["state"]: r["n"] for r in store.all(
        "SELECT state, count(*) AS n FROM requests GROUP BY state")}
    where, args = ("WHERE state=?", [state]) if state else ("", [])
    rows = store.all(
        f"SELECT r.name, r.capability, r.current_version AS version, r.state, r.updated, "
        f"r.source_removed, e.id AS execution, e.engine_state, e.reason "
        f"FROM (SELECT * FROM requests {where} ORDER BY updated DESC LIMIT ?) AS r "
        f"LEFT JOIN executions e "
        f"ON e.id = r.current_execution ORDER BY r.updated DESC", *args, limit)
    return {"counts": counts, "total": sum(counts.values()),
            "requests": [dict(r) for r in rows]}


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
    for row in store.all("SELECT data FROM events WHERE execution=? AND "
                         "type='policy.decided' ORDER BY id", execution):
        data = json.loads(row["data"])
        by_attempt.setdefault(int(data.get("attempt", 1)), []).append(
            {"node": data["node"], "action": data["action"], "rule": data["rule"],
             "reason": data["reason"], "adjustments": data.get("adjustments", {})})
    return [{"attempt": n, "failures": f,
             "outcome": "retried" if all(x["action"] != "fail" for x in f) else "failed"}
            for n, f in sorted(by_attempt.items())]


# execution columns stored as JSON text; reports give them as JSON values
_JSON_COLUMNS = {"parameters": "{}", "tags": "[]", "event_ids": "[]", "products": "[]",
                 "plots": "[]", "results": "null"}


def _decode_lists(item: dict[str, Any]) -> dict[str, Any]:
    for key, empty in _JSON_COLUMNS.items():
        if key in item:
            item[key] = json.loads(item[key] or empty)
    return item


def _held_executions(store: Store, name: str) -> set[int]:
    """Executions of a request whose last pause/resume event is a pause ('docket pause')."""
    rows = store.all("SELECT execution, type FROM events WHERE request=? AND type IN "
                     "('execution.held', 'execution.released') ORDER BY id", name)
    last = {r["execution"]: r["type"] for r in rows}
    return {e for e, t in last.items() if t == "execution.held"}


def show(store: Store, name: str, stage_specs: list[Any] | None = None,
         events: int = 30) -> dict[str, Any] | None:
    request = store.one("SELECT * FROM requests WHERE name=?", name)
    if request is None:
        return None
    versions = [dict(v) for v in store.all(
        "SELECT number, sha256, spec, source_file, actor, created FROM versions "
        "WHERE request=? ORDER BY number", name)]
    for v in versions:
        v["spec"] = json.loads(v["spec"])
    held = _held_executions(store, name)
    executions = []
    for e in store.all("SELECT * FROM executions WHERE request=? ORDER BY id", name):
        item = _decode_lists(dict(e))
        item["held"] = e["id"] in held and e["engine_state"] == "running"
        item["nodes"] = [dict(n) for n in store.all(
            "SELECT node, state, attempts, exit_code, signal, hold_code, hold_subcode, reason,"
            " host, started, finished FROM nodes WHERE execution=? ORDER BY node", e["id"])]
        if stage_specs is not None:
            item["stages"] = stages(stage_specs, item["nodes"], planned_nodes(e["directory"]))
        item["attempts"] = attempts(store, e["id"])
        executions.append(item)
    history = [dict(r) for r in store.all(
        "SELECT * FROM (SELECT id, time, type, version, execution, actor, data FROM events "
        "WHERE request=? ORDER BY id DESC LIMIT ?) ORDER BY id", name, events)]
    for h in history:
        h["data"] = json.loads(h["data"])
    return {"request": dict(request), "versions": versions, "executions": executions,
            "events": history}


def results(store: Store, capability: str | None = None, status: str | None = None,
            tag: str | None = None, since: str | None = None,
            limit: int = 100) -> dict[str, Any]:
    """Executions with their bookkeeping (CHIME's Work fields), newest first."""
    where, args = [], []
    for column, value in (("capability", capability), ("state", status)):
        if value:
            where.append(f"{column}=?")
            args.append(value)
    if tag:
        where.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value=?)")
        args.append(tag)
    if since:
        where.append("created >= ?")
        args.append(since)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = store.all(f"SELECT * FROM executions {clause} ORDER BY id DESC LIMIT ?", *args,
                     limit)
    out = []
    for row in rows:
        item = _decode_lists(dict(row))
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
    counts: dict[str, dict[str, int]] = {}
    for row in store.all("SELECT capability, state, count(*) AS n FROM executions "
                         "GROUP BY capability, state"):
        counts.setdefault(row["capability"], {})[row["state"]] = row["n"]
    timing: dict[str, dict[str, Any]] = {}
    for cap in counts:
        rows = store.all(
            "SELECT (julianday(started) - julianday(created)) * 86400 AS wait_s, "
            "(julianday(stopped) - julianday(started)) * 86400 AS run_s FROM executions "
            "WHERE capability=? AND started IS NOT NULL", cap)
        waits = [r["wait_s"] for r in rows if r["wait_s"] is not None]
        runs = [r["run_s"] for r in rows if r["run_s"] is not None]
        timing[cap] = {"queue_wait_s": {"p50": _percentile(waits, 0.5),
                                        "p95": _percentile(waits, 0.95)},
                       "run_time_s": {"p50": _percentile(runs, 0.5),
                                      "p95": _percentile(runs, 0.95)},
                       "executions_timed": len(runs)}
    failures: dict[str, int] = {}
    for row in store.all("SELECT reason FROM executions WHERE state='failed'"):
        cause = _cause(row["reason"] or "unknown")
        failures[cause] = failures.get(cause, 0) + 1
    return {"counts": counts, "timing": timing, "failures_by_cause": failures}


def _cause(reason: str) -> str:
    """A failure reason without the parts that differ run to run (node names, numbers)."""
    import re

    text = reason.split(";")[0]
    text = re.sub(r"^node \S+: ", "", text)
    return re.sub(r"\d+", "N", text)[:80]
