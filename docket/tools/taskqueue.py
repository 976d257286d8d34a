"""The event queues of one task workflow: a SQLite file in its processing directory.

EWMS moves events between tasks through message queues; docket keeps them in one
``events.sqlite`` beside the workflow, so a worker on this machine or on a pool node that
sees the processing directory withdraws events the same way. Each event is processed
exactly once:

- a worker *withdraws* an event in one ``BEGIN IMMEDIATE`` transaction: it becomes
  ``leased`` to that worker until ``lease_until``, with ``attempt + 1``;
- the worker renews its lease while the task runs; a worker killed mid-event stops
  renewing, and the next withdrawal by any worker puts the event back (the attempt is
  recorded as ``lost``) so another worker runs it again;
- *completing* checks in the same transaction that the lease is still the worker's
  (attempt and worker match): only then is the event ``done`` and its output event
  written. A worker that lost its lease and finishes late changes nothing.

A task is *drained* when none of its input queues holds a waiting or leased event and
every task feeding them is drained; its workers then exit. Only ``sqlite3``: this runs
inside the task worker tool, which knows nothing of the watcher's database.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EventQueue", "Event", "QUEUE_FILE", "MAX_ATTEMPTS", "MAX_EVENT_BYTES"]

QUEUE_FILE = "events.sqlite"
MAX_ATTEMPTS = 3
MAX_EVENT_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS queues (alias TEXT PRIMARY KEY, producer TEXT, public INTEGER);
CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, inputs TEXT, outputs TEXT);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, queue TEXT NOT NULL, payload BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting', attempt INTEGER NOT NULL DEFAULT 0,
    worker TEXT, taskforce TEXT, lease_until REAL, origin TEXT, parent INTEGER,
    created REAL NOT NULL, finished REAL);
CREATE INDEX IF NOT EXISTS events_queue ON events (queue, state, id);
CREATE TABLE IF NOT EXISTS attempts (
    event INTEGER NOT NULL, attempt INTEGER NOT NULL, taskforce TEXT, worker TEXT,
    started REAL, ended REAL, outcome TEXT, reason TEXT, PRIMARY KEY (event, attempt));
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY, taskforce TEXT NOT NULL, state TEXT NOT NULL, host TEXT,
    started REAL, ended REAL, reason TEXT);
"""


@dataclass(frozen=True)
class Event:
    id: int
    queue: str
    payload: bytes
    attempt: int
    origin: str | None


class EventQueue:
    """One workflow's queues. Every method is one short transaction."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                        isolation_level=None, timeout=60)
        else:
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=60000")
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # setting up -------------------------------------------------------------------

    def seed(self, tasks: list[dict[str, Any]], public: list[str],
             events: list[tuple[str, str, bytes]]) -> bool:
        """Create the queues and put the input events in, once (False when done before)."""
        self.conn.executescript(_SCHEMA)  # IF NOT EXISTS: harmless when run twice
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM meta WHERE key='seeded'").fetchone():
                return False
            for task in tasks:
                conn.execute("INSERT INTO tasks VALUES (?, ?, ?)",
                             (task["task_id"], json.dumps(task["input_queue_aliases"]),
                              json.dumps(task["output_queue_aliases"])))
                for alias in task["output_queue_aliases"]:
                    conn.execute("INSERT OR REPLACE INTO queues VALUES (?, ?, ?)",
                                 (alias, task["task_id"], int(alias in public)))
                for alias in task["input_queue_aliases"]:
                    conn.execute("INSERT OR IGNORE INTO queues VALUES (?, NULL, ?)",
                                 (alias, int(alias in public)))
            now = time.time()
            conn.executemany("INSERT INTO events (queue, payload, origin, created) VALUES "
                             "(?, ?, ?, ?)", [(q, data, origin, now)
                                              for q, origin, data in events])
            conn.execute("INSERT INTO meta VALUES ('seeded', ?)", (str(now),))
        return True

    # workers ------------------------------------------------------------------------

    def worker_started(self, worker: str, taskforce: str, host: str) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO workers (worker, taskforce, state, host, started) "
                         "VALUES (?, ?, 'running', ?, ?) ON CONFLICT(worker) DO UPDATE SET "
                         "state='running', host=excluded.host, started=excluded.started, "
                         "ended=NULL, reason=NULL", (worker, taskforce, host, time.time()))

    def worker_ended(self, worker: str, state: str, reason: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE workers SET state=?, ended=?, reason=? WHERE worker=?",
                         (state, time.time(), reason, worker))

    # events ---------------------------------------------------------------------------

    def _inputs(self, task_id: str) -> list[str]:
        row = self.conn.execute("SELECT inputs FROM tasks WHERE task_id=?",
                                (task_id,)).fetchone()
        if row is None:
            raise KeyError(f"no task {task_id!r} in {self.path}")
        return list(json.loads(row["inputs"]))

    def _reclaim(self, conn: sqlite3.Connection, now: float) -> None:
        """Put back events whose worker stopped renewing its lease (killed, or its node
        lost): the attempt is recorded as lost; past MAX_ATTEMPTS the event fails."""
        for row in conn.execute("SELECT id, attempt FROM events WHERE state='leased' AND "
                                "lease_until < ?", (now,)).fetchall():
            conn.execute("UPDATE attempts SET ended=?, outcome='lost', reason=? WHERE "
                         "event=? AND attempt=? AND outcome IS NULL",
                         (now, "the worker stopped renewing its lease (killed or lost)",
                          row["id"], row["attempt"]))
            final = row["attempt"] >= MAX_ATTEMPTS
            conn.execute("UPDATE events SET state=?, worker=NULL, lease_until=NULL, "
                         "finished=? WHERE id=?",
                         ("failed" if final else "waiting", now if final else None,
                          row["id"]))

    def withdraw(self, task_id: str, taskforce: str, worker: str,
                 lease_s: float) -> Event | None:
        """The oldest waiting event of the task's input queues, leased to ``worker``."""
        inputs = self._inputs(task_id)
        marks = ",".join("?" * len(inputs))
        now = time.time()
        with self._tx() as conn:
            self._reclaim(conn, now)
            row = conn.execute(f"SELECT id, queue, payload, attempt, origin FROM events "
                               f"WHERE state='waiting' AND queue IN ({marks}) ORDER BY id "
                               f"LIMIT 1", inputs).fetchone()
            if row is None:
                return None
            attempt = row["attempt"] + 1
            conn.execute("UPDATE events SET state='leased', attempt=?, worker=?, "
                         "taskforce=?, lease_until=? WHERE id=?",
                         (attempt, worker, taskforce, now + lease_s, row["id"]))
            conn.execute("INSERT OR REPLACE INTO attempts (event, attempt, taskforce, worker,"
                         " started) VALUES (?, ?, ?, ?, ?)",
                         (row["id"], attempt, taskforce, worker, now))
        return Event(row["id"], row["queue"], bytes(row["payload"]), attempt, row["origin"])

    def renew(self, event: Event, worker: str, lease_s: float) -> bool:
        with self._tx() as conn:
            cur = conn.execute("UPDATE events SET lease_until=? WHERE id=? AND state='leased'"
                               " AND worker=? AND attempt=?",
                               (time.time() + lease_s, event.id, worker, event.attempt))
            return cur.rowcount == 1

    def _still_mine(self, conn: sqlite3.Connection, event: Event, worker: str) -> bool:
        return conn.execute("SELECT 1 FROM events WHERE id=? AND state='leased' AND worker=? "
                            "AND attempt=?", (event.id, worker, event.attempt)).fetchone() \
            is not None

    def complete(self, event: Event, worker: str, output: bytes | None,
                 output_queues: list[str]) -> bool:
        """Record a processed event and its output event(s); False if the lease was lost."""
        now = time.time()
        with self._tx() as conn:
            if not self._still_mine(conn, event, worker):
                conn.execute("UPDATE attempts SET ended=?, outcome='stale', reason=? WHERE "
                             "event=? AND attempt=? AND outcome IS NULL",
                             (now, "finished after its lease was given to another worker",
                              event.id, event.attempt))
                return False
            conn.execute("UPDATE events SET state='done', finished=?, lease_until=NULL "
                         "WHERE id=?", (now, event.id))
            conn.execute("UPDATE attempts SET ended=?, outcome='done' WHERE event=? AND "
                         "attempt=?", (now, event.id, event.attempt))
            if output is not None:
                conn.executemany("INSERT INTO events (queue, payload, origin, parent, created)"
                                 " VALUES (?, ?, ?, ?, ?)",
                                 [(q, output, event.origin, event.id, now)
                                  for q in output_queues])
        return True

    def fail(self, event: Event, worker: str, reason: str) -> bool:
        """A failed attempt: the event waits for another try, or fails after the last."""
        now = time.time()
        with self._tx() as conn:
            if not self._still_mine(conn, event, worker):
                return False
            final = event.attempt >= MAX_ATTEMPTS
            conn.execute("UPDATE events SET state=?, worker=NULL, lease_until=NULL, "
                         "finished=? WHERE id=?",
                         ("failed" if final else "waiting", now if final else None, event.id))
            conn.execute("UPDATE attempts SET ended=?, outcome='failed', reason=? WHERE "
                         "event=? AND attempt=?", (now, reason[:2000], event.id,
                                                   event.attempt))
        return True

    # progress ---------------------------------------------------------------------------

    def drained(self, task_id: str) -> bool:
        """No event can reach the task any more: its queues are empty and their
        producers are drained (the queues form an acyclic graph)."""
        seen: set[str] = set()

        def done(task: str) -> bool:
            if task in seen:
                return True
            seen.add(task)
            for alias in self._inputs(task):
                busy = self.conn.execute("SELECT 1 FROM events WHERE queue=? AND state IN "
                                         "('waiting', 'leased') LIMIT 1", (alias,)).fetchone()
                if busy:
                    return False
                producer = self.conn.execute("SELECT producer FROM queues WHERE alias=?",
                                             (alias,)).fetchone()
                if producer and producer["producer"] and not done(producer["producer"]):
                    return False
            return True

        self._reclaim_if_due()
        return done(task_id)

    def _reclaim_if_due(self) -> None:
        now = time.time()
        if self.conn.execute("SELECT 1 FROM events WHERE state='leased' AND lease_until < ? "
                             "LIMIT 1", (now,)).fetchone():
            with self._tx() as conn:
                self._reclaim(conn, now)

    def public_outputs(self) -> list[sqlite3.Row]:
        """Events in queues no task reads (the workflow's results)."""
        return self.conn.execute(
            "SELECT e.* FROM events AS e JOIN queues AS q ON q.alias=e.queue WHERE "
            "q.alias NOT IN (SELECT value FROM tasks, json_each(tasks.inputs)) "
            "ORDER BY e.id").fetchall()

    def worker_errors(self) -> dict[str, list[str]]:
        """Per taskforce, the reasons its failed workers gave."""
        errors: dict[str, list[str]] = {}
        for row in self.conn.execute("SELECT taskforce, reason FROM workers WHERE "
                                     "state='failed' AND reason IS NOT NULL ORDER BY rowid"):
            errors.setdefault(row["taskforce"], []).append(row["reason"])
        return errors

    def summary(self) -> dict[str, Any]:
        """Per taskforce: workers and events, as EWMS relays them; and per queue."""
        forces: dict[str, dict[str, Any]] = {}

        def force(name: str) -> dict[str, Any]:
            return forces.setdefault(name, {
                "workers": {"running": 0, "done": 0, "failed": 0},
                "events_in": 0, "events_out": 0, "failures": 0, "lost": 0,
                "top_task_errors": {}})

        for row in self.conn.execute("SELECT taskforce, state, count(*) AS n FROM workers "
                                     "GROUP BY taskforce, state"):
            force(row["taskforce"])["workers"][row["state"]] = row["n"]
        for row in self.conn.execute("SELECT taskforce, outcome, reason, count(*) AS n FROM "
                                     "attempts GROUP BY taskforce, outcome, reason"):
            f = force(row["taskforce"])
            if row["outcome"] == "done":
                f["events_in"] += row["n"]
            elif row["outcome"] == "failed":
                f["failures"] += row["n"]
                key = (row["reason"] or "")[:200]
                f["top_task_errors"][key] = f["top_task_errors"].get(key, 0) + row["n"]
            elif row["outcome"] == "lost":
                f["lost"] += row["n"]
        for row in self.conn.execute(
                "SELECT a.taskforce, count(*) AS n FROM events AS e JOIN attempts AS a ON "
                "a.event=e.parent AND a.outcome='done' GROUP BY a.taskforce"):
            force(row["taskforce"])["events_out"] += row["n"]
        queues = {row["queue"]: dict(row) for row in self.conn.execute(
            "SELECT queue, count(*) AS total, sum(state='waiting') AS waiting, "
            "sum(state='leased') AS leased, sum(state='done') AS done, "
            "sum(state='failed') AS failed FROM events GROUP BY queue")}
        return {"taskforces": forces, "queues": queues}
