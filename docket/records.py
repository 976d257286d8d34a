"""Typed records of a home's state, as ``Store`` returns them, and the states docket names.

A record is a frozen copy of one row: the JSON columns come back decoded (an execution's
``parameters`` is a dict, its ``tags`` a list), and nothing written to a record reaches the
database: state changes only through ``Store.record`` (an event).

A request's and an execution's ``state`` is a state of its capability's machine; a
capability may define its own (``needs-data``), so those fields are plain ``str``.
``RequestState`` names the states of the shipped machines that docket itself refers to.
An execution's ``engine_state`` and the ``state`` of a hand-off, a notification and a
node are docket's own: closed enums.
The enums are ``StrEnum``: the stored text is the same as before, and a member compares
equal to its text.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

__all__ = ["RequestState", "EngineState", "HandoffState", "NotificationState", "NodeState",
           "Request", "Version", "Execution", "Node", "ACTIVE_ENGINE_STATES"]


class RequestState(StrEnum):
    """States of the shipped machines (``templates/_machines``) that docket names."""

    SUBMITTED = "submitted"  # accepted, before its machine's first transition
    QUEUED = "queued"
    EXECUTING = "executing"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EngineState(StrEnum):
    """Where an execution's run is on its engine (``executions.engine_state``)."""

    NONE = "none"  # not started: waiting in its queue (or never to run)
    STARTING = "starting"  # chosen to start: launched (again) after a crash
    RUNNING = "running"  # submitted to the engine
    DONE = "done"  # the engine's run ended


# a run that holds a slot of its queue and of its site
ACTIVE_ENGINE_STATES = (EngineState.STARTING, EngineState.RUNNING)


class HandoffState(StrEnum):
    """A hand-off's state (``handoffs.state``): a tool a transition asked for."""

    PENDING = "pending"  # asked for, or to be tried again
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # gave up: its execution's next step waits for a person


class NotificationState(StrEnum):
    """A notification's state in the outbox (``notifications.state``)."""

    PENDING = "pending"  # to be sent (again) once its next attempt is due
    SENT = "sent"
    DEAD = "dead"  # gave up: 'docket notifications retry' makes it pending again


class NodeState(StrEnum):
    """A DAG node's state (``nodes.state``), from its job's events."""

    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    DONE = "done"
    FAILED = "failed"


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True, slots=True)
class Request:
    name: str
    capability: str
    state: str
    current_version: int | None
    current_execution: int | None
    created: str | None
    updated: str | None
    sealed: bool
    passed_version: int | None
    source_removed: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Request:
        return cls(row["name"], row["capability"], row["state"], row["current_version"],
                   row["current_execution"], row["created"], row["updated"],
                   bool(row["sealed"]), row["passed_version"], row["source_removed"])


@dataclass(frozen=True, slots=True)
class Version:
    request: str
    number: int
    capability: str
    sha256: str
    spec: dict[str, Any]
    document: str
    source_file: str | None
    source_identity: str | None
    actor: str | None
    created: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Version:
        return cls(row["request"], row["number"], row["capability"], row["sha256"],
                   _loads(row["spec"], {}), row["document"], row["source_file"],
                   row["source_identity"], row["actor"], row["created"])


@dataclass(frozen=True, slots=True)
class Execution:
    id: int
    request: str
    version: int
    number: int
    capability: str
    state: str
    priority: int
    engine_state: EngineState
    engine: str | None
    site: str | None
    engine_id: str | None
    directory: str | None
    parameters: dict[str, Any]
    created: str | None
    started: str | None
    stopped: str | None
    exit_code: int | None
    reason: str | None
    user: str | None
    tags: list[str]
    group: str | None
    events: list[str]
    timeout_s: float | None
    attempt: int
    retries: int
    results: dict[str, Any] | None
    products: list[Any]
    plots: list[Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Execution:
        return cls(row["id"], row["request"], row["version"], row["number"],
                   row["capability"], row["state"], row["priority"],
                   EngineState(row["engine_state"]), row["engine"], row["site"],
                   row["engine_id"], row["directory"], _loads(row["parameters"], {}),
                   row["created"], row["started"], row["stopped"], row["exit_code"],
                   row["reason"], row["user"], _loads(row["tags"], []), row["grp"],
                   _loads(row["event_ids"], []), row["timeout_s"], row["attempt"],
                   row["retries"], _loads(row["results"], None), _loads(row["products"], []),
                   _loads(row["plots"], []))

    @classmethod
    def from_created(cls, event: dict[str, Any]) -> Execution:
        """The row the reducer makes of an ``execution.created`` event, without reading it
        back (intake creates one per accepted document)."""
        d = event["data"]
        return cls(event["execution"], event["request"], event["version"], d["number"],
                   d["capability"], d["state"], d["priority"], EngineState.NONE, None, None,
                   None, None, d["parameters"], event["time"], None, None, None, None,
                   event["actor"], list(d.get("tags", [])), d.get("group"),
                   list(d.get("events", [])), d.get("timeout_s"),
                   d.get("attempt", d["number"]), 0, None, [], [])

    @property
    def active(self) -> bool:
        """Started and not yet ended on its engine."""
        return self.engine_state in ACTIVE_ENGINE_STATES

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Node:
    execution: int
    node: str
    state: NodeState
    attempts: int
    cluster: int | None
    exit_code: int | None
    signal: int | None
    hold_code: int | None
    hold_subcode: int | None
    reason: str | None
    host: str | None
    started: str | None
    finished: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Node:
        return cls(row["execution"], row["node"], NodeState(row["state"]), row["attempts"],
                   row["cluster"], row["exit_code"], row["signal"], row["hold_code"],
                   row["hold_subcode"], row["reason"], row["host"], row["started"],
                   row["finished"])
