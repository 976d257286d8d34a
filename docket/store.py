"""The SQLite record of a home: an append-only event log and the state derived from it.

Every change is an event. ``Store.record`` inserts the event and applies it to the state
tables in the same transaction, through the one reducer ``_apply``; ``rebuild`` empties
the state tables and replays every event through the same reducer, so re-derived state
is the same state by construction (and a test checks it). The database is in WAL mode
with ``synchronous=FULL``: a committed event survives a crash or a power cut.

One kind of content is written once, not twice: an accepted version's document and spec
go to the reducer with the ``version.accepted`` event but the log keeps only the rest
(``_HELD_BY_VERSIONS``); the versions table holds them, and ``rebuild`` hands them back to
the replayed event. They are immutable, and they were two thirds of what intake wrote.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docket.queries import Queries
from docket.records import (
    ACTIVE_ENGINE_STATES,
    EngineState,
    Execution,
    HandoffState,
    Node,
    NodeState,
    NotificationState,
    Request,
    RequestState,
    Version,
)

__all__ = ["Store", "SCHEMA_VERSION", "STATE_TABLES", "commit_stamp", "now"]

# Each entry migrates from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, time TEXT NOT NULL, type TEXT NOT NULL,
        request TEXT, version INTEGER, execution INTEGER, actor TEXT, data TEXT NOT NULL);
    CREATE INDEX events_request ON events (request, id);
    CREATE INDEX events_execution ON events (execution, id);
    CREATE TABLE requests (
        name TEXT PRIMARY KEY, capability TEXT NOT NULL, state TEXT NOT NULL,
        current_version INTEGER, current_execution INTEGER, created TEXT, updated TEXT);
    CREATE INDEX requests_updated ON requests (updated);
    CREATE INDEX requests_state ON requests (state);
    CREATE TABLE versions (
        request TEXT NOT NULL, number INTEGER NOT NULL, capability TEXT NOT NULL,
        sha256 TEXT NOT NULL, spec TEXT NOT NULL, document TEXT NOT NULL,
        source_file TEXT, source_identity TEXT, actor TEXT, created TEXT,
        PRIMARY KEY (request, number));
    CREATE INDEX versions_sha256 ON versions (request, sha256);
    CREATE INDEX versions_identity ON versions (source_identity);
    CREATE TABLE executions (
        id INTEGER PRIMARY KEY, request TEXT NOT NULL, version INTEGER NOT NULL,
        number INTEGER NOT NULL, capability TEXT NOT NULL, state TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0, engine_state TEXT NOT NULL DEFAULT 'none',
        engine TEXT, site TEXT, engine_id TEXT, directory TEXT, parameters TEXT,
        created TEXT, started TEXT, stopped TEXT, exit_code INTEGER, reason TEXT);
    CREATE INDEX executions_state ON executions (state);
    CREATE INDEX executions_engine ON executions (engine_state, capability);
    CREATE INDEX executions_request ON executions (request, version);
    CREATE TABLE queues (
        capability TEXT PRIMARY KEY, max_jobs INTEGER, paused INTEGER, enabled INTEGER);
    CREATE TABLE nodes (
        execution INTEGER NOT NULL, node TEXT NOT NULL, state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, cluster INTEGER, exit_code INTEGER, signal INTEGER,
        hold_code INTEGER, hold_subcode INTEGER, reason TEXT, host TEXT,
        started TEXT, finished TEXT, PRIMARY KEY (execution, node));
    CREATE TABLE cursors (execution INTEGER PRIMARY KEY, position BLOB NOT NULL);
    """,
    # 2: decisions, sealing, and CHIME-style bookkeeping of every execution
    """
    ALTER TABLE requests ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE requests ADD COLUMN passed_version INTEGER;
    ALTER TABLE requests ADD COLUMN source_removed TEXT;
    ALTER TABLE executions ADD COLUMN user TEXT;
    ALTER TABLE executions ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE executions ADD COLUMN grp TEXT;
    ALTER TABLE executions ADD COLUMN event_ids TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE executions ADD COLUMN timeout_s REAL;
    ALTER TABLE executions ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE executions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN results TEXT;
    ALTER TABLE executions ADD COLUMN products TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE executions ADD COLUMN plots TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX executions_capability ON executions (capability, state);
    CREATE TABLE decisions (
        name TEXT PRIMARY KEY, kind TEXT NOT NULL, request TEXT, version INTEGER,
        execution INTEGER, actor TEXT, time TEXT NOT NULL, decision TEXT, reason TEXT);
    """,
    # 3: the notification outbox (docket.notify), written with the event it is about
    """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, event INTEGER NOT NULL,
        kind TEXT NOT NULL, request TEXT, target TEXT NOT NULL, channel TEXT NOT NULL,
        payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT NOT NULL, last_error TEXT, created TEXT NOT NULL, sent TEXT);
    CREATE INDEX notifications_due ON notifications (state, next_attempt);
    CREATE INDEX notifications_request ON notifications (request, id);
    """,
    # 4: CHIME-style work (docket/work.py): every field of a Work in body, leases, attempts
    """
    CREATE TABLE works (
        id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL,
        priority INTEGER NOT NULL, creation REAL NOT NULL, site TEXT, user TEXT, grp TEXT,
        timeout INTEGER NOT NULL, retries INTEGER NOT NULL, attempt INTEGER NOT NULL,
        start REAL, stop REAL, runner TEXT, lease_until REAL, checksums TEXT, error TEXT,
        body TEXT NOT NULL);
    CREATE INDEX works_next ON works (pipeline, status, priority DESC, creation);
    CREATE INDEX works_creation ON works (creation);
    CREATE INDEX works_lease ON works (status, lease_until);
    CREATE TABLE work_attempts (
        work TEXT NOT NULL, attempt INTEGER NOT NULL, runner TEXT, start REAL, stop REAL,
        status TEXT, error TEXT, PRIMARY KEY (work, attempt));
    """,
    # 5: hand-offs (docket.handoffs): tools a transition asked for, until they are done
    """
    CREATE TABLE handoffs (
        requested INTEGER PRIMARY KEY, execution INTEGER NOT NULL, action TEXT NOT NULL,
        directory TEXT NOT NULL, output_dir TEXT, state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, reason TEXT);
    CREATE INDEX handoffs_state ON handoffs (state, execution, requested);
    """,
    # 6: intake's bookkeeping (not state: never rebuilt). Homes of older dockets already
    # have these tables, created by intake itself, hence IF NOT EXISTS.
    """
    CREATE TABLE IF NOT EXISTS intake_files (
        identity TEXT PRIMARY KEY, status TEXT NOT NULL, request TEXT, version INTEGER,
        error TEXT, time TEXT);
    CREATE TABLE IF NOT EXISTS git_files (
        path TEXT PRIMARY KEY, blob TEXT NOT NULL, commit_sha TEXT, status TEXT, request TEXT,
        time TEXT);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# Tables derived from events; ``rebuild`` empties and refills them.
STATE_TABLES = ("requests", "versions", "executions", "queues", "nodes", "decisions",
                "handoffs")

# version.accepted fields the reducer gets but the event log does not keep: the versions
# row of the event's request and version holds them, and a rebuild takes them from it.
# Events logged before this kept them, and are replayed with their own.
_HELD_BY_VERSIONS = ("spec", "document")


def now() -> str:
    """UTC now as ``2026-01-31T12:00:00.000000Z`` (isoformat: a third faster than strftime,
    and this runs for every event, three per accepted document)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _wal(path: Path) -> Path:
    """The database's write-ahead log (journal_mode=WAL): where every commit lands first."""
    return path.with_name(path.name + "-wal")


def commit_stamp(path: Path) -> tuple[tuple[int, int] | None, ...]:
    """(mtime, size) of the database file and its WAL: a commit changes one of them (the
    WAL, or the database file at a checkpoint), so a reader that sees the stamp change
    knows to look again; one that does not may still have missed a commit inside the
    same clock tick that left the WAL's size alone."""
    stamp = []
    for file in (path, _wal(path)):
        try:
            info = file.stat()
            stamp.append((info.st_mtime_ns, info.st_size))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def _connect(path: Path, readonly: bool, as_is: bool = False) -> sqlite3.Connection:
    """``as_is``: read the database file without the WAL index (``Store._reader``)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro{'&immutable=1' if as_is else ''}",
                               uri=True, isolation_level=None, timeout=30)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn


class Store(Queries):
    """One home's database. Writers use ``transaction()``; readers may open read-only.
    The views' read-only queries are inherited from ``docket.queries``."""

    def __init__(self, path: Path, *, readonly: bool = False, as_is: bool = False) -> None:
        self.path = path
        self.conn = _connect(path, readonly, as_is)
        self._in_tx = False
        self.transactions = 0  # how many began: a listener may read a file once per one
        # called with (store, event) inside the event's transaction (docket.notify)
        self.listeners: list[Callable[[Store, dict[str, Any]], None]] = []
        if not readonly:
            self.migrate()

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        from docket.errors import NotFound

        if not path.is_file():
            raise NotFound(f"no docket database at {path}",
                           "run 'docket tick' or 'docket watch' in this home first")
        store = cls._reader(path)
        if store.schema_version() < SCHEMA_VERSION:
            # written by an older docket: bring it up to date once, then read
            store.close()
            try:
                cls(path).close()
            except sqlite3.OperationalError as exc:
                from docket.errors import Locked

                raise Locked(f"database {path} needs an upgrade to schema version "
                             f"{SCHEMA_VERSION} and cannot be written: {exc}",
                             "run 'docket tick' once as the home's owner") from None
            store = cls._reader(path)
        return store

    @classmethod
    def _reader(cls, path: Path) -> Store:
        """A read-only store, also on a full disk: a reader of a WAL database makes the
        shared-memory index ``docket.db-shm`` when no writer has it open, and on a full
        disk that fails ("disk I/O error") just when an operator wants ``docket status``
        most. With no write-ahead log on disk (every writer closed cleanly, so the
        database file holds every commit) the file is read as it is, without the index:
        the same answer."""
        wal = _wal(path)
        # a writer's index is at least 32 KiB; a reader that failed on a full disk leaves
        # a stub of a few bytes (looked at before this reader tries, for the same reason)
        shm = path.with_name(path.name + "-shm")
        writer_open = shm.exists() and shm.stat().st_size >= 32768
        store = cls(path, readonly=True)
        try:
            store.schema_version()
            return store
        except sqlite3.OperationalError:
            store.close()
            if writer_open or (wal.exists() and wal.stat().st_size > 0):
                raise  # a writer is open, or commits are not yet in the database file
        return cls(path, readonly=True, as_is=True)

    def close(self) -> None:
        self.conn.close()

    def reconnect(self) -> None:
        """A new connection after a disk error: SQLite may keep failing on the old one."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self._in_tx = False
        self.conn = _connect(self.path, False)

    # schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        has_meta = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, one migration per transaction."""
        current = self.schema_version()
        if current == SCHEMA_VERSION:
            return  # the common case: no need to import sqlite-utils (~0.1 s)
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        if current > SCHEMA_VERSION:
            from docket.errors import Invalid

            raise Invalid(f"database {self.path} has schema version {current}, newer than "
                          f"this docket ({SCHEMA_VERSION})", "upgrade docket")
        for version in range(current, SCHEMA_VERSION):
            with self.transaction():
                # another process (a watcher and a 'submit' started together on a new
                # home) may have run this step while this one waited for the write lock
                if self.schema_version() > version:
                    continue
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                db["meta"].upsert({"key": "schema_version", "value": str(version + 1)},
                                  pk="key")

    # transactions and events --------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self._in_tx:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        self.transactions += 1
        try:
            yield self.conn
        except BaseException:
            self._in_tx = False
            if self.conn.in_transaction:  # SQLite itself rolls back on a full disk
                self.conn.execute("ROLLBACK")
            raise
        self._in_tx = False
        self.conn.execute("COMMIT")

    def record(self, type: str, *, request: str | None = None, version: int | None = None,
               execution: int | None = None, actor: str | None = None,
               at: str | None = None, **data: Any) -> dict[str, Any]:
        """Append one event and apply it to the state, in the caller's transaction."""
        if not self._in_tx:
            with self.transaction():
                return self.record(type, request=request, version=version,
                                   execution=execution, actor=actor, at=at, **data)
        event = {"time": at or now(), "type": type, "request": request, "version": version,
                 "execution": execution, "actor": actor, "data": data}
        logged = data
        if type == "version.accepted":
            logged = {k: v for k, v in data.items() if k not in _HELD_BY_VERSIONS}
        cur = self.conn.execute(
            "INSERT INTO events (time, type, request, version, execution, actor, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event["time"], type, request, version, execution, actor,
             _canon(logged)))
        event["id"] = cur.lastrowid
        _apply(self.conn, event)
        for listener in self.listeners:
            listener(self, event)
        return event

    def rebuild(self) -> int:
        """Re-derive every state table from the events; returns the number replayed."""
        count = 0
        with self.transaction():
            # what the log leaves to the versions table (_HELD_BY_VERSIONS) is kept aside
            self.conn.execute("DROP TABLE IF EXISTS temp.held_versions")
            self.conn.execute("CREATE TEMP TABLE held_versions (request TEXT, number INTEGER, "
                              "spec TEXT, document TEXT, PRIMARY KEY (request, number))")
            self.conn.execute("INSERT INTO temp.held_versions SELECT request, number, spec, "
                              "document FROM versions")
            for table in STATE_TABLES:
                self.conn.execute(f"DELETE FROM {table}")
            cursor = self.conn.execute("SELECT * FROM events ORDER BY id")
            while rows := cursor.fetchmany(5000):
                for row in rows:
                    event = dict(row)
                    event["data"] = json.loads(event["data"])
                    if event["type"] == "version.accepted":
                        self._restore_held(event)
                    _apply(self.conn, event)
                    count += 1
            self.conn.execute("DROP TABLE temp.held_versions")
        return count

    def _restore_held(self, event: dict[str, Any]) -> None:
        """Give a replayed event back the fields the versions table holds for it."""
        data = event["data"]
        if all(key in data for key in _HELD_BY_VERSIONS):
            return  # logged before the log left them to the state
        row = self.conn.execute("SELECT spec, document FROM temp.held_versions WHERE "
                                "request=? AND number=?",
                                (event["request"], event["version"])).fetchone()
        if row is None:
            from docket.errors import DocketError

            raise DocketError(
                f"event {event['id']} accepted {event['request']} version "
                f"{event['version']}, whose document only the versions table held, and "
                "that row is gone: nothing was changed",
                "rebuild from the archive copies instead: 'docket rebuild-state "
                "--from-archive'")
        data.setdefault("spec", json.loads(row["spec"]))
        data.setdefault("document", row["document"])

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every state table's rows, sorted: for comparing state before and after a rebuild."""
        out = {}
        for table in STATE_TABLES:
            rows = self.conn.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted(tuple(r) for r in rows)
        return out

    # requests and versions -------------------------------------------------------

    def request(self, name: str) -> Request | None:
        row = self.one("SELECT * FROM requests WHERE name=?", name)
        return Request.from_row(row) if row else None

    def version(self, request: str, number: int) -> Version | None:
        row = self.one("SELECT * FROM versions WHERE request=? AND number=?", request, number)
        return Version.from_row(row) if row else None

    def version_with(self, request: str, sha256: str) -> Version | None:
        """The version of ``request`` whose spec hashes to ``sha256`` (a duplicate's)."""
        row = self.one("SELECT * FROM versions WHERE request=? AND sha256=?", request, sha256)
        return Version.from_row(row) if row else None

    def version_from(self, source_identity: str) -> Version | None:
        """The version a spool file (by its identity) became."""
        row = self.one("SELECT * FROM versions WHERE source_identity=?", source_identity)
        return Version.from_row(row) if row else None

    def versions_since(self, since: str) -> list[Version]:
        return [Version.from_row(r) for r in self.all("SELECT * FROM versions WHERE "
                                                      "created >= ?", since)]

    def last_version_number(self, request: str) -> int:
        """The request's highest version number; 0 for a new request."""
        return int(self.one("SELECT coalesce(max(number), 0) FROM versions WHERE request=?",
                            request)[0])

    def submitters(self, request: str) -> list[str]:
        """Who submitted the request's versions, sorted."""
        return [r[0] for r in self.all("SELECT DISTINCT actor FROM versions WHERE request=? "
                                       "AND actor IS NOT NULL ORDER BY actor", request)]

    # executions and nodes ----------------------------------------------------------

    def execution(self, execution: int) -> Execution | None:
        row = self.one("SELECT * FROM executions WHERE id=?", execution)
        return Execution.from_row(row) if row else None

    def executions(self, request: str | None = None, *, version: int | None = None,
                   before_version: int | None = None, capability: str | None = None,
                   engine_states: tuple[EngineState, ...] | None = None,
                   order: str = "id") -> list[Execution]:
        """Executions matching every filter given, ordered by ``id`` or ``priority``
        (higher first, then arrival)."""
        where, args = [], []
        for column, op, value in (("request", "=", request), ("version", "=", version),
                                  ("version", "<", before_version),
                                  ("capability", "=", capability)):
            if value is not None:
                where.append(f"{column}{op}?")
                args.append(value)
        if engine_states is not None:
            where.append(f"engine_state IN ({','.join('?' * len(engine_states))})")
            args.extend(engine_states)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        by = {"id": "id", "priority": "priority DESC, id"}[order]
        return [Execution.from_row(r) for r in self.all(
            f"SELECT * FROM executions {clause} ORDER BY {by}", *args)]

    def latest_execution(self, request: str, version: int) -> Execution | None:
        row = self.one("SELECT * FROM executions WHERE request=? AND version=? ORDER BY id "
                       "DESC LIMIT 1", request, version)
        return Execution.from_row(row) if row else None

    def next_execution_id(self) -> int:
        return int(self.one("SELECT coalesce(max(id), 0) + 1 FROM executions")[0])

    def execution_count(self, request: str, version: int) -> int:
        return int(self.one("SELECT count(*) FROM executions WHERE request=? AND version=?",
                            request, version)[0])

    def nodes(self, execution: int, states: tuple[NodeState, ...] | None = None
              ) -> list[Node]:
        where, args = "execution=?", [execution]
        if states is not None:
            where += f" AND state IN ({','.join('?' * len(states))})"
            args.extend(states)
        return [Node.from_row(r) for r in self.all(f"SELECT * FROM nodes WHERE {where} "
                                                   "ORDER BY node", *args)]

    # queues: what the scheduler and ``docket queue`` read ---------------------------------

    def queue_override(self, capability: str) -> tuple[int | None, bool | None, bool | None]:
        """An operator's (max_jobs, paused, enabled) for the queue; None where unchanged."""
        row = self.one("SELECT * FROM queues WHERE capability=?", capability)
        if row is None:
            return None, None, None
        return (row["max_jobs"], None if row["paused"] is None else bool(row["paused"]),
                None if row["enabled"] is None else bool(row["enabled"]))

    def waiting_capabilities(self) -> list[str]:
        """Capabilities with an execution not yet started."""
        return [r[0] for r in self.all("SELECT DISTINCT capability FROM executions WHERE "
                                       "engine_state=?", EngineState.NONE)]

    def known_queues(self) -> set[str]:
        """Every capability with an execution or an operator's queue change."""
        return {r[0] for r in self.all("SELECT capability FROM executions UNION "
                                       "SELECT capability FROM queues")}

    def active_count(self, capability: str | None = None) -> int:
        """Executions started and not ended (of one capability, or of all)."""
        sql = "SELECT count(*) FROM executions WHERE engine_state IN (?, ?)"
        args: list[Any] = list(ACTIVE_ENGINE_STATES)
        if capability is not None:
            sql += " AND capability=?"
            args.append(capability)
        return int(self.one(sql, *args)[0])

    def active_by_site(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.all(
            "SELECT site, count(*) FROM executions WHERE engine_state IN (?, ?) GROUP BY site",
            *ACTIVE_ENGINE_STATES)}

    def startable(self, capability: str, states: list[str], limit: int) -> list[Execution]:
        """The next executions of the queue to start: waiting in one of ``states``, no
        other execution of their request running (an older version holds the next one
        back), priority first, then arrival."""
        marks = ",".join("?" * len(states))
        rows = self.all(
            f"SELECT * FROM executions AS e WHERE capability=? AND engine_state=? AND "
            f"state IN ({marks}) AND NOT EXISTS (SELECT 1 FROM executions AS o WHERE "
            f"o.request=e.request AND o.engine_state IN (?, ?)) "
            f"ORDER BY priority DESC, id ASC LIMIT ?",
            capability, EngineState.NONE, *states, *ACTIVE_ENGINE_STATES, limit)
        return [Execution.from_row(r) for r in rows]

    def queue_counts(self, capability: str, waiting_states: list[str]
                     ) -> tuple[int, int, str | None]:
        """(running, waiting, oldest waiting's creation) of one queue."""
        waiting = json.dumps(waiting_states)
        row = self.one(
            "SELECT sum(engine_state IN (?, ?)), sum(engine_state=? AND state IN "
            "(SELECT value FROM json_each(?))), min(CASE WHEN engine_state=? AND state IN "
            "(SELECT value FROM json_each(?)) THEN created END) FROM executions WHERE "
            "capability=?", *ACTIVE_ENGINE_STATES, EngineState.NONE, waiting,
            EngineState.NONE, waiting, capability)
        return row[0] or 0, row[1] or 0, row[2]

    # events ----------------------------------------------------------------------

    def events_of(self, execution: int, type: str) -> list[dict[str, Any]]:
        """The data of the execution's events of one type, oldest first."""
        return [json.loads(r[0]) for r in self.all(
            "SELECT data FROM events WHERE execution=? AND type=? ORDER BY id", execution,
            type)]

    def last_event_of(self, execution: int, type: str) -> dict[str, Any] | None:
        row = self.one("SELECT data FROM events WHERE execution=? AND type=? ORDER BY id "
                       "DESC LIMIT 1", execution, type)
        return json.loads(row[0]) if row else None

    def first_event(self, types: tuple[str, ...], after: int = 0, **data: Any
                    ) -> dict[str, Any] | None:
        """The first event after id ``after`` of one of ``types`` whose data has the given
        values (``file="a.yaml"``), its data decoded; None when there is none yet."""
        where = [f"type IN ({','.join('?' * len(types))})", "id > ?"]
        args: list[Any] = [*types, after]
        for key, value in data.items():
            where.append(f"json_extract(data, '$.{key}')=?")
            args.append(value)
        row = self.one(f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY id "
                       "LIMIT 1", *args)
        if row is None:
            return None
        event = dict(row)
        event["data"] = json.loads(event["data"])
        return event

    def history(self, request: str, last: int | None = None) -> list[dict[str, Any]]:
        """Every event about the request (or its ``last`` ones), oldest first, data
        decoded."""
        events = []
        for row in self.all("SELECT * FROM (SELECT id, time, type, version, execution, "
                            "actor, data FROM events WHERE request=? ORDER BY id DESC "
                            "LIMIT ?) ORDER BY id", request, -1 if last is None else last):
            event = dict(row)
            event["data"] = json.loads(event["data"])
            events.append(event)
        return events

    def last_event_id(self) -> int:
        return int(self.one("SELECT coalesce(max(id), 0) FROM events")[0])

    def decision_applied(self, name: str) -> bool:
        return self.one("SELECT 1 FROM decisions WHERE name=?", name) is not None

    def open_handoffs(self) -> list[sqlite3.Row]:
        """Hand-offs not yet done (failed ones too: they block their execution's next)."""
        return self.all(f"SELECT * FROM handoffs WHERE state != '{HandoffState.DONE}' "
                        "ORDER BY requested")

    def active_handoffs(self) -> int:
        """Hand-offs running or still to run, not those behind one that failed for good."""
        return int(self.one(
            "SELECT count(*) FROM handoffs h WHERE state IN (?, ?) AND NOT EXISTS "
            "(SELECT 1 FROM handoffs f WHERE f.execution = h.execution AND f.state = ?)",
            HandoffState.PENDING, HandoffState.RUNNING, HandoffState.FAILED)[0])

    def handoff_kills(self, execution: int, requested: int) -> int:
        """How many times the hand-off's process was killed before it finished."""
        return int(self.one(
            "SELECT count(*) FROM events WHERE execution=? AND type='handoff.failed' "
            "AND json_extract(data, '$.requested')=? AND json_extract(data, '$.killed')",
            execution, requested)[0])

    # the notification outbox (docket.notify; not state: never rebuilt) ------------------

    def instance_name(self) -> str:
        """A random name of this home's database, so keys from two homes never collide;
        made (in the caller's transaction) the first time it is asked for."""
        row = self.one("SELECT value FROM meta WHERE key='instance'")
        if row is not None:
            return str(row[0])
        import uuid

        value = uuid.uuid4().hex[:12]
        self.conn.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (value,))
        return value

    def queue_notification(self, key: str, event: int, kind: str, request: str,
                           target: str, channel: str, payload: dict[str, Any],
                           at: str) -> None:
        """A pending notification, due at ``at``; nothing when ``key`` is queued already."""
        self.conn.execute(
            "INSERT INTO notifications (key, event, kind, request, target, channel, "
            "payload, state, attempts, next_attempt, created) VALUES "
            f"(?, ?, ?, ?, ?, ?, ?, '{NotificationState.PENDING}', 0, ?, ?) "
            "ON CONFLICT(key) DO NOTHING",
            (key, event, kind, request, target, channel, json.dumps(payload, sort_keys=True),
             at, at))

    def next_notification_due(self) -> str | None:
        """When the next pending notification is due (its ``next_attempt``)."""
        row = self.one("SELECT min(next_attempt) FROM notifications WHERE state=?",
                       NotificationState.PENDING)
        return row[0] if row else None

    def due_notifications(self, at: str, limit: int) -> list[sqlite3.Row]:
        """Pending notifications due by ``at``, oldest first."""
        return self.all("SELECT * FROM notifications WHERE state=? AND next_attempt <= ? "
                        "ORDER BY id LIMIT ?", NotificationState.PENDING, at, limit)

    def notification_attempted(self, id: int, attempt: int, next_attempt: str) -> None:
        """Count an attempt before making it: a crash mid-send still counts it."""
        with self.transaction():
            self.conn.execute("UPDATE notifications SET attempts=?, next_attempt=?, "
                              "last_error=? WHERE id=?",
                              (attempt, next_attempt, "interrupted during an attempt", id))

    def notification_failed(self, id: int, error: str, *, dead: bool) -> None:
        state = NotificationState.DEAD if dead else NotificationState.PENDING
        with self.transaction():
            self.conn.execute("UPDATE notifications SET state=?, last_error=? WHERE id=?",
                              (state, error, id))

    def notification_sent(self, id: int) -> None:
        with self.transaction():
            self.conn.execute("UPDATE notifications SET state=?, sent=?, last_error=NULL "
                              "WHERE id=?", (NotificationState.SENT, now(), id))

    def revive_notifications(self, ids: list[int] | None = None) -> list[int]:
        """Make dead notifications pending again (all of them, or these ids), due now;
        returns the ids made pending."""
        with self.transaction():
            dead = [r[0] for r in self.all("SELECT id FROM notifications WHERE state=?",
                                           NotificationState.DEAD)]
            chosen = [nid for nid in dead if ids is None or nid in ids]
            self.conn.executemany("UPDATE notifications SET state=?, attempts=0, "
                                  "next_attempt=? WHERE id=?",
                                  [(NotificationState.PENDING, now(), nid) for nid in chosen])
        return chosen

    # CHIME works (docket.work; bookkeeping of their own, not derived from events) --------

    def work_row(self, work_id: str) -> sqlite3.Row | None:
        return self.one("SELECT * FROM works WHERE id=?", work_id)

    def insert_work(self, body: dict[str, Any]) -> None:
        """A new work: every field in ``body``, the queried ones in columns too."""
        self.conn.execute(
            "INSERT INTO works (id, pipeline, status, priority, creation, site, user, grp,"
            " timeout, retries, attempt, start, stop, body) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (body["id"], body["pipeline"], body["status"], body["priority"],
             body["creation"], body["site"], body["user"], body.get("group"),
             body["timeout"], body["retries"], body["attempt"], body.get("start"),
             body.get("stop"), json.dumps(body, sort_keys=True)))

    def expire_work_leases(self, at: float) -> int:
        """Running works past their timeout go back to the queue, or fail after the last
        try; returns how many."""
        rows = self.all("SELECT id, attempt, retries, runner FROM works WHERE "
                        "status='running' AND lease_until < ?", at)
        for row in rows:
            final = row["attempt"] > row["retries"]
            reason = (f"attempt {row['attempt']} timed out (runner {row['runner']} did not "
                      "deposit in time)")
            self.conn.execute("UPDATE work_attempts SET stop=?, status='timeout', error=? "
                              "WHERE work=? AND attempt=? AND status='running'",
                              (at, reason, row["id"], row["attempt"]))
            self.conn.execute("UPDATE works SET status=?, lease_until=NULL, runner=NULL, "
                              "stop=?, error=? WHERE id=?",
                              ("failure" if final else "queued", at if final else None,
                               reason + ("; no retries left" if final else ""), row["id"]))
        return len(rows)

    def lease_work(self, pipeline: str, runner: str, at: float, *,
                   filters: dict[str, Any], tags: list[str], events: list[int]
                   ) -> sqlite3.Row | None:
        """Lease the next queued work of ``pipeline`` (highest priority, then oldest) that
        matches ``filters`` (column: value), every tag and every event number, to
        ``runner`` for its timeout; expired leases are put back first."""
        where, args = ["pipeline=?", "status='queued'"], [pipeline]
        for column, value in filters.items():
            where.append(f"{column}=?")
            args.append(value)
        for path, values in (("$.tags", tags), ("$.event", events)):
            for value in values:
                where.append(f"EXISTS (SELECT 1 FROM json_each(body, '{path}') "
                             "WHERE value=?)")
                args.append(value)
        with self.transaction():
            self.expire_work_leases(at)
            row = self.one(f"SELECT id, timeout, attempt FROM works WHERE "
                           f"{' AND '.join(where)} ORDER BY priority DESC, creation, rowid "
                           "LIMIT 1", *args)
            if row is None:
                return None
            attempt = row["attempt"] + 1
            self.conn.execute("UPDATE works SET status='running', attempt=?, start=?, "
                              "stop=NULL, runner=?, lease_until=?, error=NULL WHERE id=?",
                              (attempt, at, runner, at + row["timeout"], row["id"]))
            self.conn.execute("INSERT OR REPLACE INTO work_attempts (work, attempt, runner, "
                              "start, status) VALUES (?, ?, ?, ?, 'running')",
                              (row["id"], attempt, runner, at))
            return self.work_row(row["id"])

    def stale_work_attempt(self, work_id: str, attempt: int, runner: str, at: float) -> None:
        """A runner that lost its lease reported: its attempt ends as stale."""
        self.conn.execute("UPDATE work_attempts SET stop=?, status='stale' WHERE work=? AND "
                          "attempt=? AND runner=?", (at, work_id, attempt, runner))

    def finish_work(self, work_id: str, attempt: int, status: str, at: float,
                    body: dict[str, Any], checksums: dict[str, Any], error: str | None
                    ) -> None:
        """The leased attempt's outcome: the work and the attempt end with ``status``."""
        self.conn.execute("UPDATE works SET status=?, stop=?, lease_until=NULL, body=?, "
                          "checksums=?, error=? WHERE id=?",
                          (status, at, json.dumps(body, sort_keys=True),
                           json.dumps(checksums, sort_keys=True), error, work_id))
        self.conn.execute("UPDATE work_attempts SET stop=?, status=?, error=? WHERE work=? "
                          "AND attempt=?", (at, status, error, work_id, attempt))

    def change_work(self, work_id: str, body: dict[str, Any], stop: float | None) -> None:
        """A person's change: the body's status, priority, group, timeout and retries; a
        work no longer running loses its lease."""
        status = body["status"]
        self.conn.execute(
            "UPDATE works SET status=?, priority=?, grp=?, timeout=?, retries=?, stop=?, "
            "body=?, lease_until=CASE WHEN ?='running' THEN lease_until END, "
            "runner=CASE WHEN ?='running' THEN runner END WHERE id=?",
            (status, body["priority"], body.get("group"), body["timeout"], body["retries"],
             stop, json.dumps(body, sort_keys=True), status, status, work_id))

    def work_attempts(self, work_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.all(
            "SELECT attempt, runner, start, stop, status, error FROM work_attempts "
            "WHERE work=? ORDER BY attempt", work_id)]

    def work_rows(self, *, filters: dict[str, Any], tag: str | None = None,
                  event: int | None = None, since: float | None = None,
                  until: float | None = None, limit: int = 100) -> list[sqlite3.Row]:
        """Works matching every filter given (column: value), newest first."""
        where, args = ["1"], []
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        for path, value in (("$.tags", tag), ("$.event", event)):
            if value is not None:
                where.append(f"EXISTS (SELECT 1 FROM json_each(body, '{path}') "
                             "WHERE value=?)")
                args.append(value)
        for op, value in ((">=", since), ("<", until)):
            if value is not None:
                where.append(f"creation {op} ?")
                args.append(value)
        return self.all(f"SELECT * FROM works WHERE {' AND '.join(where)} ORDER BY creation "
                        "DESC, rowid DESC LIMIT ?", *args, limit)

    def has_open_work(self, pipeline: str) -> bool:
        """A work of the pipeline is queued or running."""
        return self.one("SELECT 1 FROM works WHERE pipeline=? AND status IN ('queued', "
                        "'running') LIMIT 1", pipeline) is not None

    # intake's bookkeeping (not state: never rebuilt) ---------------------------------

    def met_identities(self, identities: list[str]) -> set[str]:
        """Which of these spool-file identities intake met before: decided with the move
        still owed, or accepted as a version. One query for a batch, not two a file."""
        listed = json.dumps(identities)
        return {r[0] for r in self.all(
            "SELECT identity FROM intake_files WHERE identity IN (SELECT value FROM "
            "json_each(?)) UNION SELECT source_identity FROM versions WHERE source_identity "
            "IN (SELECT value FROM json_each(?))", listed, listed)}

    def owed(self, identity: str) -> sqlite3.Row | None:
        """The decision on a spool file whose move is still owed, or None."""
        return self.one("SELECT * FROM intake_files WHERE identity=?", identity)

    def owe(self, identity: str, status: str, request: str | None, version: int | None,
            reasons: list[str]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO intake_files (identity, status, request, version, error,"
            " time) VALUES (?, ?, ?, ?, ?, ?)",
            (identity, status, request, version, json.dumps(reasons), now()))

    def settle(self, identities: list[str]) -> None:
        """The files are moved: forget what was owed. Losing this in a power cut is
        harmless (the rows name files that are gone), so it need not wait for an fsync."""
        if not identities:
            return  # the common case (all accepted): no transaction at all
        self.conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction():
                self.conn.executemany("DELETE FROM intake_files WHERE identity=?",
                                      [(i,) for i in identities])
        finally:
            self.conn.execute("PRAGMA synchronous=FULL")

    def git_blobs(self) -> dict[str, str]:
        """Each committed path's blob that docket last decided."""
        return {r[0]: r[1] for r in self.all("SELECT path, blob FROM git_files")}

    def git_request(self, path: str) -> str | None:
        row = self.one("SELECT request FROM git_files WHERE path=?", path)
        return row[0] if row else None

    def note_git_file(self, path: str, blob: str, commit: str | None, status: str,
                      request: str | None) -> None:
        self.conn.execute("INSERT OR REPLACE INTO git_files (path, blob, commit_sha, status, "
                          "request, time) VALUES (?, ?, ?, ?, ?, ?)",
                          (path, blob, commit, status, request, now()))

    def forget_git_file(self, path: str) -> None:
        self.conn.execute("DELETE FROM git_files WHERE path=?", (path,))

    # savepoints -----------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for many documents, each in a ``savepoint``, with the savepoints'
        statement journals in memory.

        A savepoint keeps the pages it changes in a statement journal, to roll back just
        that document. An accepted document changes ~20 pages (events, requests, versions,
        executions and their indexes): over SQLite's 64 KiB default, so each document's
        journal spilled to a temporary file (~40 pwrite calls a document, and a file
        created in /var/tmp a pass). In memory it costs ~100 KiB for the one open
        savepoint. Only for the batch: ``temp_store`` also holds temporary tables, and
        ``rebuild``'s may be large. Durability is the WAL's, not the statement journal's.
        """
        if self._in_tx:  # SQLite cannot change temp_store inside a transaction
            yield
            return
        self.conn.execute("PRAGMA temp_store=MEMORY")
        try:
            with self.transaction():
                yield
        finally:
            with contextlib.suppress(sqlite3.Error):  # the batch's own error comes first
                self.conn.execute("PRAGMA temp_store=DEFAULT")

    @contextlib.contextmanager
    def savepoint(self, name: str) -> Iterator[None]:
        """A part of the caller's transaction that rolls back alone when it raises."""
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            # SQLite itself may have rolled back the whole transaction (a full disk): the
            # caller's error is the one to see, not "no such savepoint"
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
            raise
        self.conn.execute(f"RELEASE {name}")

    def cursor_position(self, execution: int) -> bytes | None:
        row = self.one("SELECT position FROM cursors WHERE execution=?", execution)
        return bytes(row[0]) if row else None

    def forget_cursor(self, execution: int) -> None:
        """The next attempt's event log is read from its start."""
        self.conn.execute("DELETE FROM cursors WHERE execution=?", (execution,))

    def save_cursor(self, execution: int, position: bytes) -> None:
        self.conn.execute("INSERT INTO cursors (execution, position) VALUES (?, ?) "
                          "ON CONFLICT(execution) DO UPDATE SET position=excluded.position",
                          (execution, position))


# one encoder for every event: json.dumps with options builds a new one per call, which
# was a fifth of the encoding cost (several texts per accepted document)
_CANON = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def _canon(value: Any) -> str:
    # the same text whether the value comes from the caller or back from the event log
    return _CANON(value)


def _apply(conn: sqlite3.Connection, event: dict[str, Any]) -> None:
    """The reducer: what each event type does to the state tables. Nothing else writes them."""
    t, d, at = event["type"], event["data"], event["time"]
    request, version, execution = event["request"], event["version"], event["execution"]
    if t == "version.accepted":
        conn.execute(
            "INSERT INTO requests (name, capability, state, current_version, created, updated) "
            f"VALUES (?, ?, '{RequestState.SUBMITTED}', ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "current_version=excluded.current_version, capability=excluded.capability, "
            "updated=excluded.updated", (request, d["capability"], version, at, at))
        conn.execute(
            "INSERT INTO versions (request, number, capability, sha256, spec, document, "
            "source_file, source_identity, actor, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (request, version, d["capability"], d["sha256"], _canon(d["spec"]),
             d["document"], d.get("source_file"), d.get("source_identity"), event["actor"], at))
    elif t == "execution.created":
        conn.execute(
            "INSERT INTO executions (id, request, version, number, capability, state, priority,"
            " parameters, created, user, tags, grp, event_ids, timeout_s, attempt) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (execution, request, version, d["number"], d["capability"], d["state"],
             d["priority"], _canon(d["parameters"]), at, event["actor"],
             _canon(d.get("tags", [])), d.get("group"), _canon(d.get("events", [])),
             d.get("timeout_s"), d.get("attempt", d["number"])))
        conn.execute("UPDATE requests SET current_execution=?, state=?, updated=? WHERE name=?",
                     (execution, d["state"], at, request))
    elif t == "execution.transition":
        conn.execute("UPDATE executions SET state=? WHERE id=?", (d["to"], execution))
        if d.get("final"):
            conn.execute("UPDATE executions SET stopped=coalesce(stopped, ?), "
                         "reason=coalesce(?, reason) WHERE id=?", (at, d.get("reason"),
                                                                   execution))
        conn.execute("UPDATE requests SET state=?, updated=? WHERE name=? AND "
                     "current_execution=?", (d["to"], at, request, execution))
    elif t == "execution.starting":
        conn.execute(f"UPDATE executions SET engine_state='{EngineState.STARTING}', "
                     "directory=?, engine=?, site=? WHERE id=?",
                     (d["directory"], d["engine"], d["site"], execution))
    elif t == "execution.submitted":
        conn.execute(f"UPDATE executions SET engine_state='{EngineState.RUNNING}', engine_id=?, "
                     "started=coalesce(started, ?) WHERE id=?", (d.get("engine_id"), at,
                                                                 execution))
    elif t == "execution.finished":
        # a reason given earlier (a cancellation's) is the one a DA wants to read
        conn.execute(f"UPDATE executions SET engine_state='{EngineState.DONE}', exit_code=?, "
                     "reason=coalesce(reason, ?), stopped=?, results=?, products=?, plots=? "
                     "WHERE id=?",
                     (d.get("exit_code"), d.get("reason"), at,
                      _canon(d["results"]) if d.get("results") is not None else None,
                      _canon(d.get("products", [])), _canon(d.get("plots", [])), execution))
    elif t == "handoff.requested":
        conn.execute("INSERT INTO handoffs (requested, execution, action, directory, "
                     "output_dir) VALUES (?,?,?,?,?)", (event["id"], execution, d["action"],
                                                        d["directory"], d.get("output_dir")))
    elif t == "handoff.started":
        conn.execute(f"UPDATE handoffs SET state='{HandoffState.RUNNING}' WHERE requested=?",
                     (d["requested"],))
    elif t == "handoff.done":
        conn.execute(f"UPDATE handoffs SET state='{HandoffState.DONE}' WHERE requested=?",
                     (d["requested"],))
        if d.get("results"):
            # a hand-off's results (ingest's archive locator) join the execution's
            conn.execute("UPDATE executions SET results=json_patch(coalesce(results, '{}'), "
                         "?) WHERE id=?", (_canon(d["results"]), execution))
    elif t == "handoff.failed":
        conn.execute("UPDATE handoffs SET attempts=attempts+1, reason=?, state=CASE WHEN ? "
                     f"THEN '{HandoffState.FAILED}' ELSE '{HandoffState.PENDING}' END "
                     "WHERE requested=?",
                     (d.get("reason"), bool(d.get("final")), d["requested"]))
    elif t == "execution.retrying":
        conn.execute("UPDATE executions SET retries=retries+1 WHERE id=?", (execution,))
    elif t == "execution.timed_out":
        conn.execute("UPDATE executions SET reason=coalesce(reason, ?) WHERE id=?",
                     (d.get("reason"), execution))
    elif t == "execution.mediated":
        conn.execute("UPDATE executions SET state=?, reason=? WHERE id=?",
                     (d["to"], d.get("reason"), execution))
        conn.execute("UPDATE requests SET state=?, updated=? WHERE name=? AND "
                     "current_execution=?", (d["to"], at, request, execution))
    elif t == "request.sealed":
        conn.execute("UPDATE requests SET sealed=1, passed_version=coalesce(?, passed_version),"
                     " current_version=coalesce(?, current_version), current_execution="
                     "coalesce(?, current_execution), updated=? WHERE name=?",
                     (d.get("passed_version"), d.get("passed_version"), execution, at,
                      request))
        if execution is not None:
            conn.execute("UPDATE requests SET state=(SELECT state FROM executions WHERE id=?) "
                         "WHERE name=?", (execution, request))
    elif t == "execution.requeued":
        # a retry runs the same execution again, as its next attempt, in a new directory
        conn.execute(f"UPDATE executions SET engine_state='{EngineState.NONE}', "
                     "attempt=attempt+1, "
                     "retries=retries+1, exit_code=NULL, reason=NULL, stopped=NULL, "
                     "started=NULL, results=NULL, products='[]', plots='[]' WHERE id=?",
                     (execution,))
        conn.execute("DELETE FROM cursors WHERE execution=?", (execution,))
    elif t == "request.source_removed":
        conn.execute("UPDATE requests SET source_removed=? WHERE name=?",
                     (d.get("path"), request))
    elif t == "decision.applied":
        conn.execute("INSERT INTO decisions (name, kind, request, version, execution, actor, "
                     "time, decision, reason) VALUES (?,?,?,?,?,?,?,?,?)",
                     (d["name"], d["kind"], request, version, execution, event["actor"], at,
                      d.get("decision"), d.get("reason")))
    elif t.startswith("node."):
        _apply_node(conn, t, d, at, execution)
    elif t == "queue.changed":
        conn.execute("INSERT INTO queues (capability) VALUES (?) ON CONFLICT DO NOTHING",
                     (d["capability"],))
        for field in ("max_jobs", "paused", "enabled"):
            if field in d:
                conn.execute(f"UPDATE queues SET {field}=? WHERE capability=?",
                             (d[field], d["capability"]))
    # document.rejected, document.duplicate, event.refused, ...: history only


_NODE_STATES = {"node.submitted": NodeState.IDLE, "node.started": NodeState.RUNNING,
                "node.held": NodeState.HELD, "node.released": NodeState.IDLE,
                "node.evicted": NodeState.IDLE, "node.aborted": NodeState.FAILED}


def _apply_node(conn: sqlite3.Connection, t: str, d: dict[str, Any], at: str,
                execution: int | None) -> None:
    node = d["node"]
    conn.execute(f"INSERT INTO nodes (execution, node, state) VALUES (?, ?, '{NodeState.IDLE}') "
                 "ON CONFLICT DO NOTHING", (execution, node))
    if t == "node.submitted":
        # one attempt per cluster: a node's procs share it, a retry gets a new one
        conn.execute(f"UPDATE nodes SET state='{NodeState.IDLE}', "
                     "attempts=attempts+(coalesce(cluster, -1)"
                     " != ?), cluster=?, exit_code=NULL, signal=NULL, hold_code=NULL, "
                     "hold_subcode=NULL WHERE execution=? AND "
                     "node=?", (d.get("cluster"), d.get("cluster"), execution, node))
    elif t == "node.started":
        conn.execute(f"UPDATE nodes SET state='{NodeState.RUNNING}', host=?, "
                     "started=coalesce(started, ?) "
                     "WHERE execution=? AND node=?", (d.get("host"), at, execution, node))
    elif t == "node.held":
        conn.execute(f"UPDATE nodes SET state='{NodeState.HELD}', hold_code=?, "
                     "hold_subcode=?, reason=? "
                     "WHERE execution=? AND node=?", (d.get("hold_code"), d.get("hold_subcode"),
                                                      d.get("reason"), execution, node))
    elif t in ("node.finished", "node.post"):
        ok = d.get("exit_code") == 0 and d.get("signal") is None
        # any failed proc fails the node; a POST script's result overrides the job's
        keep_failed = "" if t == "node.post" else f"AND state != '{NodeState.FAILED}'"
        conn.execute(f"UPDATE nodes SET state=CASE WHEN ? {keep_failed} THEN "
                     f"'{NodeState.DONE}' ELSE '{NodeState.FAILED}' END, "
                     "exit_code=CASE WHEN ? THEN coalesce(exit_code, 0) ELSE ? END, "
                     "signal=?, reason=?, finished=? WHERE execution=? AND node=?",
                     (ok, ok, d.get("exit_code"), d.get("signal"), d.get("reason"), at,
                      execution, node))
    elif t in _NODE_STATES:
        conn.execute("UPDATE nodes SET state=?, reason=coalesce(?, reason) WHERE execution=? "
                     "AND node=?", (_NODE_STATES[t], d.get("reason"), execution, node))


