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
from docket.queries import CANNED_QUERIES as QUERIES  # canned SQL lives with the store's

__all__ = ["QUERIES", "TABLES", "metadata", "datasette_command"]

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
