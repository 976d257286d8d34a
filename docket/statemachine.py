"""Capability state machines: ``[state] -<event>{action, ...}-> [next]``.

A machine decides what each event does to an execution. An event the current state
does not accept is refused with a reason (and the refusal is recorded by the caller).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

__all__ = ["ACTIONS", "Transition", "Machine", "MachineError", "parse_transition"]

# What an action does is defined in docket.rules; this is the list a machine may name.
ACTIONS = {"enqueue": "wait in the capability's queue until it may start",
           "run": "render the workflow and submit it to the engine",
           "kill": "stop the running workflow",
           "notify": "record a notification event for the people watching"}

_TRANSITION = re.compile(
    r"^\s*\[(?P<src>[a-z0-9][a-z0-9._-]*)\]\s*-<(?P<event>[a-z0-9][a-z0-9._-]*)>"
    r"(?:\{(?P<actions>[^}]*)\})?->\s*\[(?P<dst>[a-z0-9][a-z0-9._-]*)\]\s*$")


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

    def __str__(self) -> str:
        acts = "{" + ", ".join(self.actions) + "}" if self.actions else ""
        return f"[{self.source}] -<{self.event}>{acts}-> [{self.target}]"


def parse_transition(text: str, index: int | None = None) -> Transition:
    match = _TRANSITION.match(text)
    if not match:
        raise MachineError(f"transition {text!r} is not of the form "
                           "'[state] -<event>{action, ...}-> [next]'", index)
    actions = tuple(a.strip() for a in (match["actions"] or "").split(",") if a.strip())
    return Transition(match["src"], match["event"], actions, match["dst"])


@dataclass(frozen=True)
class Machine:
    name: str
    states: tuple[str, ...]
    initial: str
    final: frozenset[str]
    transitions: tuple[Transition, ...]

    @classmethod
    def build(cls, name: str, states: list[str], initial: str, final: list[str],
              transitions: list[str]) -> Machine:
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
        seen: set[tuple[str, str]] = set()
        for i, t in enumerate(parsed):
            for state in (t.source, t.target):
                if state not in known:
                    raise MachineError(f"transition {t} names unknown state {state!r}", i)
            for action in t.actions:
                if action not in ACTIONS:
                    raise MachineError(f"transition {t} names unknown action {action!r}; "
                                       f"known actions: {', '.join(sorted(ACTIONS))}", i)
            if t.source in final:
                raise MachineError(f"transition {t} leaves final state {t.source!r}", i)
            if (t.source, t.event) in seen:
                raise MachineError(f"state {t.source!r} has two transitions on "
                                   f"event {t.event!r}", i)
            seen.add((t.source, t.event))
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

    def on(self, state: str, event: str) -> Transition | None:
        """The transition ``event`` takes from ``state``, or None if it is refused."""
        for t in self.transitions:
            if t.source == state and t.event == event:
                return t
        return None

    def accepts(self, state: str) -> list[str]:
        return [t.event for t in self.transitions if t.source == state]

    def waiting_states(self) -> list[str]:
        """States an execution waits in for the queue to let it start."""
        return [t.source for t in self.transitions if "run" in t.actions]
