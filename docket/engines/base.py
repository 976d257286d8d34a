"""The one engine interface: submit, alive, result, cancel, and where the node log is.

Both engines write the node job events in HTCondor's user-log format and a DAGMan-style
``<dag>.metrics`` file at the end, so ``docket.monitor`` reads every engine the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

__all__ = ["Engine", "node_log", "metrics_file"]


def node_log(dag: Path) -> Path:
    return dag.with_name(f"{dag.name}.nodes.log")


def metrics_file(dag: Path) -> Path:
    return dag.with_name(f"{dag.name}.metrics")


class Engine(Protocol):
    name: str

    def submit(self, dag: Path) -> str:
        """Start the DAG; return the engine's id for it."""

    def started(self, dag: Path) -> bool:
        """True when this DAG was submitted before (so it must not be rendered again)."""

    def alive(self, dag: Path) -> bool:
        """True while the DAG's runner (DAGMan, or the local runner) is running."""

    def result(self, dag: Path) -> dict[str, Any] | None:
        """The DAG's final metrics once it has ended, else None."""

    def resume(self, dag: Path) -> str:
        """Restart a DAG whose runner died, skipping nodes already done."""

    def cancel(self, dag: Path) -> None:
        """Stop the DAG and its jobs; idempotent."""
