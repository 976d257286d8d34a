"""What the local DAG runner starts next, as DAGMan decides it: pure code, no processes.

DAGMan keeps a ready queue (dag.cpp ``StartNode``): a node whose parents are all done
joins it ordered by PRIORITY, higher first; among equal priorities it joins at the end
(breadth-first, the default) or, with ``DAGMAN_SUBMIT_DEPTH_FIRST``, at the front. The
runner takes nodes from the front while the throttles allow: the machine's job slots,
``DAGMAN_MAX_JOBS_SUBMITTED``, ``MAXJOBS`` per CATEGORY and ``DAGMAN_MAX_PRE_SCRIPTS``.
A node a throttle holds back keeps its place.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable

__all__ = ["ReadyQueue", "StateCounts", "ACTIVE"]

# states in which a node holds a place against the throttles
ACTIVE = frozenset({"pre", "running", "post"})


class ReadyQueue:
    """Nodes ready to start, in DAGMan's order."""

    def __init__(self, depth_first: bool = False) -> None:
        self.depth_first = depth_first
        self._heap: list[tuple[int, int, str]] = []
        self._serial = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, name: str, priority: int = 0) -> None:
        serial = next(self._serial)
        heapq.heappush(self._heap, (-priority, -serial if self.depth_first else serial,
                                    name))

    def take(self, allowed: Callable[[str], bool | None]) -> list[str]:
        """Offer the nodes in order: True takes a node off the queue (the caller started
        it, or it is no longer waiting), False holds it back in its place (a throttle),
        None stops the offer there (no slot is free for anyone); return those taken."""
        taken: list[str] = []
        held: list[tuple[int, int, str]] = []
        while self._heap:
            item = heapq.heappop(self._heap)
            verdict = allowed(item[2])
            if verdict is None:
                held.append(item)
                break
            if verdict:
                taken.append(item[2])
            else:
                held.append(item)
        for item in held:
            heapq.heappush(self._heap, item)
        return taken


class StateCounts(Counter):  # type: ignore[type-arg]
    """How many nodes are in each state, and active in each CATEGORY, kept as nodes
    change state so no decision has to look at every node."""

    def move(self, old: str | None, new: str, category: str | None) -> None:
        if old is not None:
            self[old] -= 1
        self[new] += 1
        if category:
            if old in ACTIVE:
                self[("category", category)] -= 1
            if new in ACTIVE:
                self[("category", category)] += 1

    def active(self) -> int:
        return self["pre"] + self["running"] + self["post"]

    def in_category(self, category: str) -> int:
        return self[("category", category)]
