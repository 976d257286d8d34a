"""Follow one request live: its events as they are recorded, until it needs a person or ends.

The follower only reads the event log (by id, read-only), so it works from any shell
while a watcher runs in another process, and across restarts of that watcher: a new
watcher appends to the same log and the follower picks up where it was. Stage
entered/left lines are derived from the node events with the capability's stages.

The end says which of these it is; ``EXIT_CODES`` are the command's exit codes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Locked, NotFound
from docket.records import RequestState
from docket.store import Store, commit_stamp

__all__ = ["EXIT_CODES", "SYSTEM_EVENTS", "FollowEnd", "follow", "describe", "waits_for_person",
           "open_events"]

# how a follow ended -> the exit code of 'docket follow'
EXIT_CODES = {"complete": 0, "failed": 1, "waiting": 4, "cancelled": 5, "rejected": 8,
              "timeout": 9}
# the events docket itself gives a machine; a state that accepts none of them waits for
# a person (a Decision, 'docket qa pass', ...)
SYSTEM_EVENTS = frozenset({"accept", "start", "succeed", "fail", "supersede"})
SLOW_INTAKE_S = 10.0


@dataclass
class FollowEnd:
    outcome: str  # a key of EXIT_CODES
    state: str | None
    reason: str | None = None
    accepts: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {"type": "follow.end", "outcome": self.outcome, "state": self.state,
                "reason": self.reason, "accepts": self.accepts, "exit_code": self.exit_code}


def waits_for_person(machine: Any, state: str) -> bool:
    return (state not in machine.final
            and not (set(machine.accepts(state)) & SYSTEM_EVENTS))


def describe(event: dict[str, Any]) -> str:
    """One line for people: what the event means."""
    t, d = event["type"], event.get("data") or {}
    reason = f" ({d['reason']})" if d.get("reason") else ""
    node = d.get("node")
    if t == "version.accepted":
        return f"accepted: version {event['version']} from {d.get('source_file') or '-'}"
    if t == "document.duplicate":
        return f"duplicate of version {event['version']}: nothing changes"
    if t == "document.rejected":
        return "rejected: " + "; ".join(d.get("reasons") or [])
    if t == "execution.created":
        return f"execution {event['execution']} created (attempt {d.get('attempt', 1)})"
    if t in ("execution.transition", "execution.mediated"):
        how = "mediated" if t == "execution.mediated" else d.get("event")
        return f"state {d.get('from')} → {d.get('to')} [{how}]{reason}"
    if t == "execution.starting":
        return f"starting on site {d.get('site')} ({d.get('engine')} engine)"
    if t == "execution.submitted":
        return f"workflow submitted to the {d.get('engine')} engine ({d.get('engine_id')})"
    if t == "execution.finished":
        return f"workflow finished with exit code {d.get('exit_code')}{reason}"
    if t == "node.submitted":
        return f"node {node} queued"
    if t == "node.started":
        return f"node {node} started" + (f" on {d['host']}" if d.get("host") else "")
    if t in ("node.finished", "node.post"):
        what = "POST script of node" if t == "node.post" else "node"
        if d.get("signal") is not None:
            return f"{what} {node} killed by signal {d['signal']}{reason}"
        return f"{what} {node} finished with exit code {d.get('exit_code')}{reason}"
    if t == "node.held":
        return f"node {node} HELD (code {d.get('hold_code')}){reason}"
    if t in ("node.released", "node.evicted", "node.aborted"):
        return f"node {node} {t.split('.')[1]}{reason}"
    if t == "policy.decided":
        return f"node {node} failed: {d.get('action')} by rule {d.get('rule')}{reason}"
    if t in ("execution.retrying", "execution.retry_started", "execution.requeued"):
        return f"retrying{reason}"
    if t in ("stage.entered", "stage.left"):
        verb = "entered" if t == "stage.entered" else f"left ({d.get('state')})"
        return f"stage {d['stage']} {verb}" + (f": {d['description']}"
                                               if d.get("description") else "")
    if t == "decision.applied":
        return f"decision {d.get('decision') or d.get('kind')} by {event.get('actor')}{reason}"
    if t == "event.refused":
        return f"refused {d.get('event')!r}: {d.get('reason')}"
    if t == "notification":
        return f"notify: {d.get('message')}"
    if t == "handoff.started":
        return f"hand-off {d.get('action')} started (attempt {d.get('attempt', 1)})"
    if t == "handoff.done":
        results = ", ".join(f"{k} {v}" for k, v in (d.get("results") or {}).items())
        return (f"hand-off {d.get('action')} done" + (f": {results}" if results else "")
                + (f" ({d['skipped']})" if d.get("skipped") else ""))
    if t == "handoff.failed":
        then = "for good" if d.get("final") else "to be tried again"
        return f"hand-off {d.get('action')} failed, {then}{reason}"
    return t + reason


class _Stages:
    """Each stage's state from the node events seen so far, to report entering and leaving."""

    def __init__(self, specs: list[Any], directory_of: Callable[[int], str | None]) -> None:
        self.specs = specs
        self.directory_of = directory_of  # an execution's processing directory
        self.nodes: dict[tuple[int, str], str] = {}
        self.states: dict[tuple[int, str], str] = {}
        self.planned: dict[int, list[str]] = {}

    def update(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        t, d = event["type"], event["data"]
        if not t.startswith("node.") or not self.specs:
            return []
        execution = event["execution"]
        key = (execution, d["node"])
        if t in ("node.finished", "node.post"):
            ok = d.get("exit_code") == 0 and d.get("signal") is None
            self.nodes[key] = "done" if ok else "failed"
        elif t == "node.aborted":
            self.nodes[key] = "failed"
        elif t == "node.started":
            self.nodes[key] = "running"
        elif t == "node.held":
            self.nodes[key] = "held"
        else:
            self.nodes.setdefault(key, "idle")
        from docket.report import planned_nodes, stages

        if execution not in self.planned:  # node events come after the DAG is rendered
            self.planned[execution] = planned_nodes(self.directory_of(execution))
        mine = [{"node": n, "state": s} for (e, n), s in self.nodes.items() if e == execution]
        out = []
        for stage in stages(self.specs, mine, self.planned[execution]):
            skey = (execution, stage["stage"])
            before = self.states.get(skey, "waiting")
            now_state = stage["state"]
            if now_state == before:
                continue
            self.states[skey] = now_state
            base = {"id": event["id"], "time": event["time"], "request": event["request"],
                    "version": event["version"], "execution": execution,
                    "actor": None}
            data = {"stage": stage["stage"], "description": stage["description"],
                    "state": now_state}
            if before == "waiting":
                out.append({**base, "type": "stage.entered", "data": data})
            if now_state in ("done", "failed"):
                out.append({**base, "type": "stage.left", "data": data})
        return out


def open_events(database: Path) -> Store | None:
    """The database read-only, or None while it does not exist or is being created."""
    if not database.is_file():
        return None
    try:
        return Store.open_readonly(database)
    except Locked:  # a watcher is creating or upgrading it right now: look again soon
        return None


def follow(home: Any, name: str, *, after_id: int | None = None,
           spooled_file: str | None = None, poll_s: float = 0.5,
           timeout_s: float | None = None, on_event: Callable[[dict[str, Any]], None],
           on_slow_intake: Callable[[], None] | None = None) -> FollowEnd:
    """Call ``on_event`` for each event of ``name`` as it is recorded; return how it ended.

    Without ``after_id`` it starts at the current version's acceptance (the request must
    exist). With ``after_id`` (the last event id before a submit) it waits for the
    submitted document to be taken in first: ``spooled_file`` is its name in the spool,
    so a rejection of that file ends the follow; ``on_slow_intake`` is called once when
    it has waited ``SLOW_INTAKE_S`` for intake (is a watcher running?).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    slow_at = time.monotonic() + SLOW_INTAKE_S
    store = open_events(home.database)
    try:
        if after_id is None:
            if store is None or store.request(name) is None:
                raise NotFound(f"no request named {name!r}",
                               "see 'docket status' for the names")
            after_id = (store.acceptance_id(name) or 1) - 1
        taken_in = spooled_file is None
        position = after_id
        stages: _Stages | None = None
        machines: dict[str, Any] = {}

        def emit(event: dict[str, Any]) -> None:
            nonlocal position, stages, taken_in
            position = event["id"]
            taken_in = taken_in or event["type"] in ("version.accepted", "document.duplicate")
            if stages is None and event["type"] in ("version.accepted", "execution.created"):
                stages = _Stages(_stage_specs(home, store, name),
                                 lambda execution: _directory(store, execution))
            on_event(event)
            for derived in (stages.update(event) if stages else []):
                on_event(derived)

        while True:
            if store is None:
                store = open_events(home.database)
            if store is not None:
                if not taken_in:
                    rejected = _rejection(store, spooled_file or "", after_id)
                    if rejected is not None:
                        on_event(rejected)
                        return FollowEnd("rejected", None,
                                         "; ".join(rejected["data"].get("reasons") or []))
                for event in store.events(request=name, after=position):
                    emit(event)
                if not taken_in and not (home.incoming / spooled_file).exists():
                    # intake commits before it moves a file out of incoming: a Decision
                    # or the like, taken in without naming this request in an event
                    taken_in = _rejection(store, spooled_file or "", after_id) is None
                    continue
                if taken_in:
                    end = _end(home, store, name, machines)
                    if end is not None:
                        # events recorded in the same transaction as the end come first
                        for event in store.events(request=name, after=position):
                            emit(event)
                        return end
            if not taken_in and on_slow_intake is not None and time.monotonic() >= slow_at:
                on_slow_intake()
                on_slow_intake = None
            if deadline is not None and time.monotonic() >= deadline:
                request = store.request(name) if store is not None else None
                return FollowEnd("timeout", request.state if request else None,
                                 f"still going after {timeout_s:g} s")
            _wait_for_a_commit(home.database, poll_s)
    finally:
        if store is not None:
            store.close()


_GLANCE_S = 0.05  # a stat of two files: a follower that glances this often costs nothing


def _wait_for_a_commit(database: Path, seconds: float) -> None:
    """Sleep up to ``seconds``, less when the database (or its write-ahead log) changes.

    A follower sees an event within a glance of its commit instead of up to a poll later;
    ``seconds`` stays the upper bound for a commit the stamp misses (see commit_stamp).
    """
    before = commit_stamp(database)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(_GLANCE_S, left))
        if commit_stamp(database) != before:
            return


def _rejection(store: Store, spooled_file: str, after_id: int) -> dict[str, Any] | None:
    return store.first_event(("document.rejected",), after_id, file=spooled_file)


def _directory(store: Store | None, execution: int) -> str | None:
    record = store.execution(execution) if store else None
    return record.directory if record else None


def _stage_specs(home: Any, store: Store, name: str) -> list[Any]:
    from docket.capabilities import CapabilityError, load_capability

    request = store.request(name)
    if request is None:
        return []
    try:
        return list(load_capability(home.templates, request.capability).definition.stages)
    except CapabilityError:
        return []


def _end(home: Any, store: Store, name: str, machines: dict[str, Any]) -> FollowEnd | None:
    request = store.request(name)
    execution = (store.execution(request.current_execution)
                 if request is not None and request.current_execution is not None else None)
    if request is None or execution is None:
        return None
    machine = machines.get(execution.capability)
    if machine is None:
        from docket.capabilities import CapabilityCache
        from docket.rules import Rules

        machine = Rules(store, CapabilityCache(home.templates), home.work).machine_for(
            execution.capability)
        machines[execution.capability] = machine
    state = request.state
    if state in machine.final:
        if execution.active:
            return None  # cancelled while running: wait until the workflow has stopped
        outcome = (state if state in (RequestState.COMPLETE, RequestState.CANCELLED)
                   else RequestState.FAILED.value)
        return FollowEnd(outcome, state, execution.reason)
    if waits_for_person(machine, state):
        return FollowEnd("waiting", state, None, machine.accepts(state))
    return None
