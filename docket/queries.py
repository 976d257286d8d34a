"""The read-only queries of the views: status, show, results, metrics, inspect, follow, the
HTML report, Prometheus, provenance, the notification outbox's listing and datasette's
canned queries.

``Store`` inherits them (``store.request_counts()``), so every SQL statement over the
home's database lives in the store's modules: ``store.py`` writes, reduces and reads what
the rules need; this module only reads, for people and scripts. The rows come back as
plain dicts with the stored column names and the JSON columns decoded: they are what
``--json`` prints and the HTML report shows, so their keys and values must not change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from docket.records import EngineState, Execution, RequestState

__all__ = ["Queries", "CANNED_QUERIES"]

# execution columns stored as JSON text, with what an empty one reads as
_JSON_COLUMNS = {"parameters": "{}", "tags": "[]", "event_ids": "[]", "products": "[]",
                 "plots": "[]", "results": "null"}

_FAILED, _COMPLETE = RequestState.FAILED.value, RequestState.COMPLETE.value

# datasette's canned queries (docket browse): name -> (title, SQL)
CANNED_QUERIES = {
    "waiting_by_queue": (
        "Waiting to start, by queue",
        "SELECT capability AS queue, count(*) AS waiting, min(created) AS oldest_since, "
        f"max(priority) AS top_priority FROM executions WHERE engine_state = "
        f"'{EngineState.NONE.value}' AND stopped IS NULL GROUP BY capability "
        "ORDER BY waiting DESC"),
    "failures_by_cause": (
        "Failed executions, by reason",
        "SELECT coalesce(reason, 'unknown') AS reason, capability, count(*) AS failures, "
        f"max(stopped) AS last FROM executions WHERE state = '{_FAILED}' "
        "GROUP BY reason, capability ORDER BY failures DESC"),
    "runs_per_day": (
        "Runs started per day (UTC)",
        "SELECT substr(started, 1, 10) AS day, capability, count(*) AS runs, "
        f"sum(state = '{_COMPLETE}') AS complete, sum(state = '{_FAILED}') AS failed "
        "FROM executions WHERE started IS NOT NULL GROUP BY day, capability "
        "ORDER BY day DESC, capability"),
    "waiting_for_a_person": (
        "Requests waiting for a decision (awaiting-*)",
        "SELECT name, capability, state, current_version, updated FROM requests "
        "WHERE state LIKE 'awaiting%' ORDER BY updated"),
}


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    for key, empty in _JSON_COLUMNS.items():
        if key in item:
            item[key] = json.loads(item[key] or empty)
    return item


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event["data"] = json.loads(event["data"])
    return event


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class Queries:
    """The read-only section of ``Store`` (a mixin: it needs only ``conn``)."""

    conn: sqlite3.Connection

    # raw reads (for the store's own methods; the views call the named ones below) --------

    def one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self.conn.execute(sql, args).fetchone()

    def all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    # requests ------------------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        """How many requests are in each state, by state."""
        return {r["state"]: r["n"] for r in self.all(
            "SELECT state, count(*) AS n FROM requests GROUP BY state ORDER BY state")}

    def request_row(self, name: str) -> dict[str, Any] | None:
        """The request as stored (``docket show``'s "request")."""
        row = self.one("SELECT * FROM requests WHERE name=?", name)
        return dict(row) if row else None

    def request_rows(self, *, by: str = "name", limit: int | None = None
                     ) -> list[dict[str, Any]]:
        """Requests as stored, by ``name`` or most recently ``updated`` first."""
        order = {"name": "name", "updated": "updated DESC"}[by]
        return [dict(r) for r in self.all(f"SELECT * FROM requests ORDER BY {order} "
                                          "LIMIT ?", -1 if limit is None else limit)]

    def status_rows(self, limit: int, state: str | None = None) -> list[dict[str, Any]]:
        """The most recently updated requests (of one state), each with its current
        execution's engine state and reason (``docket status``)."""
        where, args = ("WHERE state=?", [state]) if state else ("", [])
        return [dict(r) for r in self.all(
            f"SELECT r.name, r.capability, r.current_version AS version, r.state, r.updated, "
            f"r.source_removed, e.id AS execution, e.engine_state, e.reason "
            f"FROM (SELECT * FROM requests {where} ORDER BY updated DESC LIMIT ?) AS r "
            f"LEFT JOIN executions e "
            f"ON e.id = r.current_execution ORDER BY r.updated DESC", *args, limit)]

    def version_rows(self, request: str) -> list[dict[str, Any]]:
        """The request's versions, oldest first, spec decoded (without the document)."""
        rows = [dict(v) for v in self.all(
            "SELECT number, sha256, spec, source_file, actor, created FROM versions "
            "WHERE request=? ORDER BY number", request)]
        for v in rows:
            v["spec"] = json.loads(v["spec"])
        return rows

    # executions ----------------------------------------------------------------------

    def execution_rows(self, *, request: str | None = None, capability: str | None = None,
                       state: str | None = None, tag: str | None = None,
                       since: str | None = None, newest_first: bool = False,
                       limit: int | None = None) -> list[dict[str, Any]]:
        """Executions as stored, JSON columns decoded, matching every filter given."""
        where, args = [], []
        for column, value in (("request", request), ("capability", capability),
                              ("state", state)):
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
        order = "id DESC" if newest_first else "id"
        return [_decoded(r) for r in self.all(
            f"SELECT * FROM executions {clause} ORDER BY {order} LIMIT ?", *args,
            -1 if limit is None else limit)]

    def execution_for(self, request: str, execution: int | None,
                      current: int | None) -> Execution | None:
        """The request's execution with id or number ``execution``; without one, its
        current execution, else its latest."""
        if execution is None:
            row = self.one("SELECT * FROM executions WHERE request=? ORDER BY "
                           "(id = ?) DESC, id DESC LIMIT 1", request, current)
        else:
            row = self.one("SELECT * FROM executions WHERE request=? AND (id=? OR number=?) "
                           "ORDER BY id LIMIT 1", request, execution, execution)
        return Execution.from_row(row) if row else None

    def failed_executions(self, limit: int) -> list[dict[str, Any]]:
        """The latest failures: id, request, stopped, reason."""
        return [dict(r) for r in self.all(
            f"SELECT id, request, stopped, reason FROM executions WHERE state='{_FAILED}' "
            "ORDER BY coalesce(stopped, created) DESC LIMIT ?", limit)]

    def failure_reasons(self) -> list[str | None]:
        return [r[0] for r in self.all(
            f"SELECT reason FROM executions WHERE state='{_FAILED}'")]

    def execution_counts(self) -> dict[str, dict[str, int]]:
        """How many executions each capability has in each state."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.all("SELECT capability, state, count(*) AS n FROM executions "
                            "GROUP BY capability, state"):
            counts.setdefault(row["capability"], {})[row["state"]] = row["n"]
        return counts

    def run_times(self, capability: str) -> list[tuple[float | None, float | None]]:
        """(queue wait, run time) in seconds of each started execution of a capability;
        None where it has not started or stopped."""
        return [(r[0], r[1]) for r in self.all(
            "SELECT (julianday(started) - julianday(created)) * 86400, "
            "(julianday(stopped) - julianday(started)) * 86400 FROM executions "
            "WHERE capability=? AND started IS NOT NULL", capability)]

    # nodes ---------------------------------------------------------------------------

    def node_rows(self, execution: int, *, cluster: bool = False) -> list[dict[str, Any]]:
        """The execution's nodes as stored, by name (with their cluster if asked)."""
        columns = ("node, state, attempts, " + ("cluster, " if cluster else "")
                   + "exit_code, signal, hold_code, hold_subcode, reason, host, started, "
                   "finished")
        return [dict(n) for n in self.all(
            f"SELECT {columns} FROM nodes WHERE execution=? ORDER BY node", execution)]

    # events --------------------------------------------------------------------------

    def events(self, *, request: str | None = None,
               executions: Sequence[int] | None = None, types: Sequence[str] = (),
               after: int = 0) -> list[dict[str, Any]]:
        """Events after id ``after`` (of the request, of the executions, of the types),
        oldest first, every column, data decoded."""
        where, args = ["id > ?"], [after]
        if request is not None:
            where.append("request=?")
            args.append(request)
        if executions is not None:
            where.append(f"execution IN ({_marks(executions)})")
            args.extend(executions)
        if types:
            where.append(f"type IN ({_marks(types)})")
            args.extend(types)
        return [_event(r) for r in self.all(
            f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id", *args)]

    def acceptance_id(self, request: str) -> int | None:
        """The id of the event that accepted the request's current version."""
        row = self.one("SELECT min(e.id) FROM events e JOIN requests r ON "
                       "r.name=e.request AND r.current_version=e.version "
                       "WHERE e.request=? AND e.type='version.accepted'", request)
        return row[0] if row else None

    def latest_event_ids(self, after: int = 0) -> dict[str, int]:
        """Each request's latest event id, for the requests with an event after ``after``."""
        return {r[0]: r[1] for r in self.all(
            "SELECT request, max(id) FROM events WHERE id > ? AND request IS NOT NULL "
            "GROUP BY request", after)}

    def last_event_time_s(self) -> float | None:
        """When the last event was recorded, in seconds since the epoch."""
        row = self.one("SELECT CAST(strftime('%s', max(time)) AS REAL) FROM events")
        return row[0] if row else None

    # the notification outbox -----------------------------------------------------------

    def notification_counts(self) -> dict[str, int]:
        """How many notifications are pending, sent and dead."""
        return {r["state"]: r["n"] for r in self.all(
            "SELECT state, count(*) AS n FROM notifications GROUP BY state")}

    def notification_rows(self, *, state: str | None = None, request: str | None = None,
                          limit: int = 50) -> list[dict[str, Any]]:
        """Notifications, newest first, without their payload."""
        where, args = [], []
        for column, value in (("state", state), ("request", request)):
            if value:
                where.append(f"{column}=?")
                args.append(value)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return [dict(r) for r in self.all(
            f"SELECT id, key, event, kind, request, target, channel, state, attempts,"
            f" next_attempt, last_error, created, sent FROM notifications {clause} "
            f"ORDER BY id DESC LIMIT ?", *args, limit)]
