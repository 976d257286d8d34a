"""``docket browse``: the home's SQLite state in datasette, read-only, with canned queries.

datasette is an optional extra (``pip install 'docket[browse]'``). By default the live
database is served read-only (datasette's ``mode=ro`` connection sees each commit of a
running watcher); ``snapshot`` copies it first (SQLite's backup API, consistent even
while a watcher writes) and serves the copy ``--immutable``, which datasette can count
and cache once.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from docket.errors import NotFound, UsageError

__all__ = ["QUERIES", "TABLES", "metadata", "datasette_command"]

# canned queries: name -> (title, SQL)
QUERIES = {
    "waiting_by_queue": (
        "Waiting to start, by queue",
        "SELECT capability AS queue, count(*) AS waiting, min(created) AS oldest_since, "
        "max(priority) AS top_priority FROM executions WHERE engine_state = 'none' AND "
        "stopped IS NULL GROUP BY capability ORDER BY waiting DESC"),
    "failures_by_cause": (
        "Failed executions, by reason",
        "SELECT coalesce(reason, 'unknown') AS reason, capability, count(*) AS failures, "
        "max(stopped) AS last FROM executions WHERE state = 'failed' "
        "GROUP BY reason, capability ORDER BY failures DESC"),
    "runs_per_day": (
        "Runs started per day (UTC)",
        "SELECT substr(started, 1, 10) AS day, capability, count(*) AS runs, "
        "sum(state = 'complete') AS complete, sum(state = 'failed') AS failed "
        "FROM executions WHERE started IS NOT NULL GROUP BY day, capability "
        "ORDER BY day DESC, capability"),
    "waiting_for_a_person": (
        "Requests waiting for a decision (awaiting-*)",
        "SELECT name, capability, state, current_version, updated FROM requests "
        "WHERE state LIKE 'awaiting%' ORDER BY updated"),
}

TABLES = {
    "events": "Every change, in order: the log the state tables are derived from.",
    "requests": "One row per request name: its current version, execution and state.",
    "versions": "Each accepted version of a request: its spec, document and source.",
    "executions": "Each run of a version: state, engine, directory, results, products.",
    "nodes": "Each DAG node of an execution: state, attempts, exit code, hold, host.",
    "queues": "Queue settings changed by operators (limits, pause, enable).",
    "decisions": "QA and approval decisions applied, with who made them and why.",
    "notifications": "The notification outbox: pending, sent or dead, with the last error.",
    "cursors": "Where the watcher is in each execution's engine event log.",
    "meta": "The schema version of this database.",
}


def metadata(database_name: str) -> dict[str, Any]:
    return {"title": "docket", "description": "The state of a docket home (read-only).",
            "databases": {database_name: {
                "tables": {t: {"description": d} for t, d in TABLES.items()},
                "queries": {name: {"title": title, "sql": sql}
                            for name, (title, sql) in QUERIES.items()}}}}


def datasette_command(home: Any, host: str, port: int, snapshot: bool = False
                      ) -> list[str]:
    """Write the metadata (and the snapshot) under ``state/`` and return the argv."""
    try:
        import datasette  # noqa: F401
    except ImportError:
        raise UsageError("docket browse needs datasette, an optional extra",
                         "pip install 'docket[browse]'") from None
    if not home.database.is_file():
        raise NotFound(f"no docket database at {home.database}",
                       "run 'docket tick' or 'docket watch' in this home first")
    database: Path = home.database
    if snapshot:
        # the same file name, so the URLs (/docket/...) are those of the live database
        database = home.state_dir / "browse-snapshot" / home.database.name
        database.parent.mkdir(exist_ok=True)
        database.unlink(missing_ok=True)
        source = sqlite3.connect(f"file:{home.database}?mode=ro", uri=True)
        target = sqlite3.connect(database)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
    meta = home.state_dir / "browse-metadata.json"
    meta.write_text(json.dumps(metadata(database.stem), indent=2))
    return [sys.executable, "-m", "datasette", "serve",
            *(["--immutable", str(database)] if snapshot else [str(database)]),
            "--metadata", str(meta), "--host", host, "--port", str(port),
            "--setting", "sql_time_limit_ms", "5000"]
