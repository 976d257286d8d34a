"""Capability state machines: ``[state] -<event(field=value)@role>{action, ...}-> [next]``.

A machine decides what each event does to an execution. The parts in the arrow:

- ``event``: what happened (``accept``, ``start``, ``succeed``, ``fail``, ``cancel``,
  ``supersede``, or a human decision: ``qa-pass``, ``qa-fail``, ``approve``, ``reject``,
  ``retry``);
- ``(field=value, ...)``: optional conditions on the event's fields, e.g.
  ``-<fail(exit_code=3)>`` or ``-<succeed(stage=image)>``; the first transition whose
  conditions all hold is taken;
- ``@role``: optional; only an analyst with that role may cause the event;
- ``{action, ...}``: optional actions (``enqueue``, ``run``, ``kill``, ``notify``,
  ``run-workflow <capability>``).

An event the current state does not accept is refused with a reason (the caller records
the refusal).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from docket.handoffs import HANDOFFS, check_handoff

__all__ = ["ACTIONS", "Transition", "Machine", "MachineError", "parse_transition"]

# What an action does is defined in docket.rules; this is the list a machine may name.
ACTIONS = {"enqueue": "wait in the capability's queue until it may start",
           "run": "render the workflow and submit it to the engine",
           "kill": "stop the running workflow",
           "notify": "notify the people watching (the rules of notifications.yaml)",
           "run-workflow": "submit a follow-up request of the named capability",
           # hand-offs (docket.handoffs): a tool run on the execution's directory
           "conveyor": "move the run into the QA area and back (--deliver, --retrieve, "
                       "--qa-fail, ...)",
           "ingest-envoy": "ingest the run's products (--calibration, --image, "
                           "--observation); the locator goes into the results",
           "deliver": "deliver the products into the request's output_dir"}
_ACTIONS_WITH_ARGUMENT = {"run-workflow"}

_NAME = r"[a-z0-9][a-z0-9._-]*"
_TRANSITION = re.compile(
    rf"^\s*\[(?P<src>{_NAME})\]\s*-<(?P<event>{_NAME})(?:\((?P<conditions>[^)]*)\))?"
    rf"(?:@(?P<role>{_NAME}))?>(?:\{{(?P<actions>[^}}]*)\}})?->\s*\[(?P<dst>{_NAME})\]\s*$")
_CONDITION = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*=\s*([^,=]*?)\s*$")


class MachineError(Exception):
    """A problem in a machine definition; ``index`` is the transition's position."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    actions: tuple[str, ...]
    target: str
    role: str | None = None
    conditions: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        cond = ("(" + ", ".join(f"{k}={v}" for k, v in self.conditions) + ")"
                if self.conditions else "")
        role = f"@{self.role}" if self.role else ""
        acts = "{" + ", ".join(self.actions) + "}" if self.actions else ""
        return f"[{self.source}] -<{self.event}{cond}{role}>{acts}-> [{self.target}]"

    def matches(self, fields: dict[str, Any]) -> bool:
        return all(str(fields.get(k)) == v for k, v in self.conditions)

    def action_names(self) -> list[str]:
        return [a.split()[0] for a in self.actions]


def parse_transition(text: str, index: int | None = None) -> Transition:
    match = _TRANSITION.match(text)
    if not match:
        raise MachineError(f"transition {text!r} is not of the form "
                           "'[state] -<event(field=value)@role>{action, ...}-> [next]' "
                           "(conditions, role and actions are optional)", index)
    actions = tuple(" ".join(a.split()) for a in (match["actions"] or "").split(",")
                    if a.strip())
    conditions = []
    for part in (match["conditions"] or "").split(","):
        if not part.strip():
            continue
        cond = _CONDITION.match(part)
        if not cond:
            raise MachineError(f"transition {text!r}: condition {part.strip()!r} is not "
                               "field=value", index)
        conditions.append((cond[1], cond[2]))
    return Transition(match["src"], match["event"], actions, match["dst"], match["role"],
                      tuple(conditions))


@dataclass(frozen=True)
class Machine:
    name: str
    states: tuple[str, ...]
    initial: str
    final: frozenset[str]
    transitions: tuple[Transition, ...]

    @classmethod
    def build(cls, name: str, states: list[str], initial: str, final: list[str],
              transitions: list[str], known_capabilities: set[str] | None = None) -> Machine:
        """Parse and check a machine; raise ``MachineError`` naming the bad transition."""
        parsed = [parse_transition(t, i) for i, t in enumerate(transitions)]
        known = set(states)
        if len(known) != len(states):
            raise MachineError("a state is listed twice in states")
        if initial not in known:
            raise MachineError(f"initial state {initial!r} is not in states")
        for state in final:
            if state not in known:
                raise MachineError(f"final state {state!r} is not in states")
        seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
        for i, t in enumerate(parsed):
            for state in (t.source, t.target):
                if state not in known:
                    raise MachineError(f"transition {t} names unknown state {state!r}", i)
            for action in t.actions:
                word, _, argument = action.partition(" ")
                if word not in ACTIONS:
                    raise MachineError(f"transition {t} names unknown action {word!r}; "
                                       f"known actions: {', '.join(sorted(ACTIONS))}", i)
                if word in HANDOFFS:
                    problem = check_handoff(word, argument)
                    if problem:
                        raise MachineError(f"transition {t}: {problem}", i)
                elif (word in _ACTIONS_WITH_ARGUMENT) != bool(argument):
                    raise MachineError(f"transition {t}: action {word!r} "
                                       + ("needs a capability name" if not argument
                                          else "takes no argument"), i)
                if (word == "run-workflow" and known_capabilities is not None
                        and argument not in known_capabilities):
                    raise MachineError(f"transition {t}: run-workflow names unknown "
                                       f"capability {argument!r}", i)
            if t.source in final:
                raise MachineError(f"transition {t} leaves final state {t.source!r}", i)
            key = (t.source, t.event, t.conditions)
            if key in seen:
                raise MachineError(f"state {t.source!r} has two transitions on "
                                   f"event {t.event!r} with the same conditions", i)
            seen.add(key)
        reachable = {initial}
        todo = deque([initial])
        while todo:
            state = todo.popleft()
            for t in parsed:
                if t.source == state and t.target not in reachable:
                    reachable.add(t.target)
                    todo.append(t.target)
        unreachable = [s for s in states if s not in reachable]
        if unreachable:
            raise MachineError(f"states {', '.join(unreachable)} cannot be reached from "
                               f"{initial!r}")
        for state in states:
            if state not in final and not any(t.source == state for t in parsed):
                raise MachineError(f"state {state!r} has no way out and is not final")
        return cls(name, tuple(states), initial, frozenset(final), tuple(parsed))

    def on(self, state: str, event: str, fields: dict[str, Any] | None = None
           ) -> Transition | None:
        """The transition ``event`` takes from ``state``, or None if it is refused."""
        for t in self.transitions:
            if t.source == state and t.event == event and t.matches(fields or {}):
                return t
        return None

    def accepts(self, state: str) -> list[str]:
        return sorted({t.event for t in self.transitions if t.source == state})

    def waiting_states(self) -> list[str]:
        """States an execution waits in for the queue to let it start."""
        return sorted({t.source for t in self.transitions if "run" in t.action_names()})

    def has_event(self, event: str) -> bool:
        return any(t.event == event for t in self.transitions)
