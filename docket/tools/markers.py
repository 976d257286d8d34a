"""Marker files that tell the standalone tools about a processing directory's state.

They let the annihilator decide without a database: the watcher keeps
``.docket-active`` in a processing directory while its execution is active, and
``conveyor --qa-fail`` leaves ``.docket-qa-failed`` in a run that failed QA.
"""

from __future__ import annotations

__all__ = ["ACTIVE_MARKER", "QA_FAILED_MARKER"]

ACTIVE_MARKER = ".docket-active"
QA_FAILED_MARKER = ".docket-qa-failed"
