"""The one engine interface, and the engine-neutral records it returns.

An engine runs a rendered DAG (``workflow.dag`` in a processing directory) and says how it
goes. Every caller (launch, the watcher, the drivers, recovery) uses only ``Engine``; which
engine runs a site is said once, by ``docket.engines.registry``.

Both engines write the node job events in HTCondor's user-log format beside the DAG
(``<dag>.nodes.log``) and a ``<dag>.metrics`` file at the end, so one reader
(``docket.engines.nodelog``) serves both: ``Engine.read_events`` is the same for every engine.

An operation one engine cannot do raises ``Unsupported`` (a named docket error), so the
interface has no holes that callers must probe with ``getattr``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docket.engines.eventlog import node_log
from docket.engines.nodelog import NodeLogUnreadable, read_node_events
from docket.errors import DocketError

if TYPE_CHECKING:
    from schemas.sites import Site

__all__ = ["Engine", "RunStatus", "DagState", "DagResult", "DagStatus", "Unsupported",
           "NodeLogUnreadable", "node_log", "metrics_file"]


def metrics_file(dag: Path) -> Path:
    return dag.with_name(f"{dag.name}.metrics")


class Unsupported(DocketError):
    """The engine cannot do this operation (not a failure of the workflow)."""

    code = "unsupported"


class RunStatus(enum.StrEnum):
    """How an ended DAG ended (the ``status`` of ``<dag>.metrics``)."""

    COMPLETE = "complete"
    FAILED = "failed"
    REMOVED = "removed"  # cancelled, or removed by hand (condor_rm)
    ABORTED = "aborted"  # ABORT-DAG-ON


class DagState(enum.StrEnum):
    """Where a submitted DAG is, as ``Engine.status`` reads it."""

    RUNNING = "running"  # its runner (DAGMan, or the local runner) is alive, or paused
    ENDED = "ended"      # it has a result
    LOST = "lost"        # not ended, and no runner runs it: resume it


# the fields of the metrics JSON that DagResult carries as its own attributes
_OWN = ("engine", "status", "exitcode", "failed_nodes", "reason")


@dataclass(frozen=True)
class DagResult:
    """How a DAG ended, whichever engine ran it. ``details`` holds the engine's other
    figures from its metrics (jobs, jobs_succeeded, duration_s, dag_status, ...)."""

    engine: str
    status: RunStatus
    exit_code: int | None
    failed_nodes: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_metrics(cls, data: Mapping[str, Any], engine: str) -> DagResult:
        """The result recorded in a metrics JSON (the local runner's, or the HTCondor
        engine's translation of DAGMan's); a status it does not know reads as failed."""
        exit_code = data.get("exitcode")
        try:
            status = RunStatus(data.get("status") or
                               (RunStatus.COMPLETE if exit_code == 0 else RunStatus.FAILED))
        except ValueError:
            status = RunStatus.FAILED
        return cls(engine=str(data.get("engine") or engine), status=status,
                   exit_code=exit_code, failed_nodes=dict(data.get("failed_nodes") or {}),
                   reason=data.get("reason"),
                   details={k: v for k, v in data.items() if k not in _OWN})

    def as_dict(self) -> dict[str, Any]:
        """The metrics JSON shape (for ``--json`` output and tests)."""
        out: dict[str, Any] = {**self.details, "engine": self.engine,
                               "status": str(self.status), "exitcode": self.exit_code,
                               "failed_nodes": dict(self.failed_nodes)}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class DagStatus:
    state: DagState
    result: DagResult | None = None


class Engine(ABC):
    """What every engine does with a rendered DAG. ``name`` is the engine's registry name
    (recorded with each submission); ``removes_held_jobs`` is True for an engine that
    removes held node jobs itself, so the watcher need not ask ``remove_node_job``."""

    name: str
    removes_held_jobs: bool = False

    @classmethod
    @abstractmethod
    def for_site(cls, site: Site | None, config: Any = None) -> Engine:
        """The engine of ``site`` (None: a site no longer in sites.yaml), set up from its
        settings and the home's configuration ``config``; the registry builds with it."""

    @abstractmethod
    def submit(self, dag: Path) -> str:
        """Start the DAG; return the engine's id for it."""

    @abstractmethod
    def resume(self, dag: Path) -> str:
        """Start again a DAG whose runner died or that a retry runs again, skipping the
        nodes already done (its rescue DAG); return the engine's new id."""

    @abstractmethod
    def started(self, dag: Path) -> bool:
        """True when this DAG was submitted before (so it must not be rendered again)."""

    @abstractmethod
    def alive(self, dag: Path) -> bool:
        """True while the DAG's runner runs (a paused DAG counts as alive)."""

    @abstractmethod
    def result(self, dag: Path) -> DagResult | None:
        """How the DAG ended, once it has; else None."""

    @abstractmethod
    def cancel(self, dag: Path) -> None:
        """Stop the DAG and its jobs; idempotent."""

    @abstractmethod
    def hold(self, dag: Path, reason: str = "paused by docket") -> None:
        """Pause: running jobs finish, no new job starts."""

    @abstractmethod
    def release(self, dag: Path) -> None:
        """Resume a paused DAG."""

    @abstractmethod
    def reap(self) -> None:
        """Collect runners that ended, so none lingers as a zombie of a long watcher."""

    @abstractmethod
    def remove_node_job(self, dag: Path, cluster: int, proc: int | None = None,
                        reason: str = "removed by docket's failure policy") -> None:
        """Remove one node job (a held one the failure policy decides about): the DAG's
        runner sees its node fail."""

    def status(self, dag: Path) -> DagStatus:
        """Where the DAG is now. The result is read before the runner's liveness, and
        again after it: a DAG that ends in between reads as ended, never as lost."""
        result = self.result(dag)
        if result is None and not self.alive(dag):
            result = self.result(dag)
            if result is None:
                return DagStatus(DagState.LOST)
        if result is None:
            return DagStatus(DagState.RUNNING)
        return DagStatus(DagState.ENDED, result)

    def read_events(self, dag: Path, cursor: bytes | None) -> tuple[list[dict[str, Any]],
                                                                     bytes | None]:
        """New node job events since ``cursor`` (as docket event records) and the cursor
        to save with them; see ``docket.engines.nodelog``. Raises ``NodeLogUnreadable`` when the
        log cannot be read this pass."""
        return read_node_events(dag, cursor)
