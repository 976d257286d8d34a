"""The auditor: docket's one definition of "CASA succeeded", and the report that says why.

A CASA run succeeded when, and only when, all three hold:

1. the CASA process exited with status 0;
2. the casa log it wrote has no SEVERE entry, except those on an explicit allow-list
   (:data:`ALLOWED_SEVERE`: the stale leap-second table warning is the known case);
3. every expected product is present and not empty.

``judge`` is that definition as a pure function; everything in docket that needs to
know whether CASA succeeded calls it (through ``audit`` or directly). ``audit`` gathers
the evidence of one run and writes the verdict with its reasons to
``working/casa-envoy-report.json``, beside the casa log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.fileio import atomic_write, tree_size
from docket.tools.casalog import LogEntry, find_logs, read_log

__all__ = [
    "REPORT_FILE",
    "SUCCESS",
    "FAILED",
    "AllowRule",
    "ALLOWED_SEVERE",
    "Reason",
    "Verdict",
    "judge",
    "new_log_entries",
    "write_report",
]

log = logging.getLogger("docket.envoys.casa.auditor")

REPORT_FILE = "casa-envoy-report.json"
SUCCESS = "success"
FAILED = "failed"
_MAX_SEVERE_REASONS = 10


@dataclass(frozen=True)
class AllowRule:
    """A SEVERE entry that does not fail a run: origin and message both match."""

    name: str
    origin: str  # regular expression, searched in the entry's origin
    message: str  # regular expression, searched in the entry's first message line
    why: str

    def matches(self, entry: LogEntry) -> bool:
        first = entry.message.split("\n", 1)[0]
        return (re.search(self.origin, entry.origin) is not None
                and re.search(self.message, first) is not None)


ALLOWED_SEVERE: tuple[AllowRule, ...] = (
    AllowRule(
        name="stale-leap-second-table",
        origin=r"^MeasTable::dUTC",
        message=r"^Leap second table TAI_UTC seems out-of-date",
        why="casacore warns when its measures tables are more than 180 days old; with no "
            "data downloads (the envoy's choice) the tables age, and UTC-derived times are "
            "at worst 1 s off only if a leap second was announced meanwhile",
    ),
)


@dataclass(frozen=True)
class Reason:
    code: str  # exit-status, not-started, timeout, no-log, severe, missing-product, ...
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class Verdict:
    verdict: str
    reasons: list[Reason] = field(default_factory=list)
    severe: list[dict[str, Any]] = field(default_factory=list)
    allowed_severe: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": [r.to_dict() for r in self.reasons],
            "severe": self.severe,
            "allowed_severe": self.allowed_severe,
            "products": self.products,
        }


def _entry_dict(log_name: str, entry: LogEntry) -> dict[str, Any]:
    return {"log": log_name, "line": entry.line_no, "time": entry.time,
            "origin": entry.origin, "message": entry.message}


def judge(exit_status: int | None,
          logs: Mapping[str, Sequence[LogEntry]],
          products: Iterable[Path],
          *,
          allow: Sequence[AllowRule] = ALLOWED_SEVERE,
          failure_detail: str = "",
          timed_out: bool = False,
          product_root: Path | None = None) -> Verdict:
    """Whether a CASA run succeeded, with every reason it did not.

    ``exit_status`` is None when the process never started. ``logs`` maps each casa log
    (a name for the report) to the entries this run wrote. ``failure_detail`` (the last
    line of the run's stderr, say) is added to an exit-status reason.
    """
    verdict = Verdict(SUCCESS)
    reasons = verdict.reasons
    if exit_status is None:
        reasons.append(Reason("not-started", "CASA could not be started"
                              + (f": {failure_detail}" if failure_detail else "")))
    elif timed_out:
        reasons.append(Reason("timeout", "CASA ran past its time limit and was stopped"))
    elif exit_status != 0:
        detail = f": {failure_detail}" if failure_detail else ""
        reasons.append(Reason("exit-status", f"CASA exited with status {exit_status}{detail}"))

    if exit_status is not None and not logs:
        reasons.append(Reason("no-log", "CASA wrote no casa log (casa-YYYYMMDD-HHMMSS.log) in "
                                        "working/, so its SEVERE lines cannot be checked"))
    for name, entries in logs.items():
        for entry in entries:
            if entry.priority != "SEVERE":
                continue
            rule = next((r for r in allow if r.matches(entry)), None)
            if rule is not None:
                verdict.allowed_severe.append(_entry_dict(name, entry) | {"rule": rule.name})
            else:
                verdict.severe.append(_entry_dict(name, entry))
    for item in verdict.severe[:_MAX_SEVERE_REASONS]:
        first = item["message"].split("\n", 1)[0]
        origin = f" {item['origin']}:" if item["origin"] else ""
        reasons.append(Reason("severe", f"SEVERE in {item['log']} line {item['line']}:{origin} "
                                        f"{first}".rstrip()))
    if len(verdict.severe) > _MAX_SEVERE_REASONS:
        reasons.append(Reason("severe", f"... and {len(verdict.severe) - _MAX_SEVERE_REASONS}"
                                        " more SEVERE entries (see 'severe')"))

    for path in products:
        shown = str(path)
        if product_root is not None:
            with contextlib.suppress(ValueError):
                shown = str(Path(path).relative_to(product_root))
        present = path.exists()
        size = tree_size(path) if present else 0
        verdict.products.append({"path": shown, "present": present, "size_bytes": size})
        if not present:
            reasons.append(Reason("missing-product", f"expected product {shown} is missing"))
        elif size == 0:
            reasons.append(Reason("empty-product", f"expected product {shown} is empty "
                                                   "(0 bytes)"))
    if reasons:
        verdict.verdict = FAILED
    return verdict


def new_log_entries(working: Path, before: Mapping[Path, int]) -> dict[Path, list[LogEntry]]:
    """Entries of casa logs in ``working`` written since ``before`` (path -> size then).

    CASA appends to a log that already has its name, so an older log's earlier part is
    skipped rather than the whole file.
    """
    found: dict[Path, list[LogEntry]] = {}
    for path, size in find_logs(working).items():
        start = before.get(path, 0)
        if size > start or path not in before:
            found[path] = read_log(path, start_byte=start if start <= size else 0)
    return found


def write_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    log.info("CASA verdict %s written to %s", report.get("verdict"), path)
