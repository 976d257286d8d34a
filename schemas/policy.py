"""A failure policy: an ordered table of rules, each a match and an action.

Shipped in ``templates/_policies/<name>.yaml``; a capability names one, or spells one out,
with ``failure_policy:``. The first rule whose match fits a node failure decides; a failure
that no rule matches fails the execution.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.metadata import Strict

__all__ = ["Action", "ACTIONS", "LogMatch", "Match", "PolicyRule", "FailurePolicy"]

Action = Literal["retry", "retry-with-more-memory", "avoid-host", "fail"]
ACTIONS: tuple[str, ...] = ("retry", "retry-with-more-memory", "avoid-host", "fail")

IntOrList = int | list[int]


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


class LogMatch(Strict):
    file: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="A file relative to the processing directory; {node} is replaced by the "
                    "failed node's name (process_3.err).")
    pattern: str = Field(description="A Python regular expression, searched in the last "
                                     "64 KiB of the file.")

    _pattern = field_validator("pattern")(_regex)

    @field_validator("file")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be relative to the processing directory, "
                             "without '..'")
        return value


class Match(Strict):
    """Every criterion given must fit; an empty match fits every failure."""

    node: str | None = Field(default=None, description="Shell-style pattern of node names.")
    hold_code: IntOrList | None = Field(default=None,
                                        description="HTCondor HoldReasonCode(s).")
    hold_subcode: IntOrList | None = Field(default=None,
                                           description="HoldReasonSubCode(s) (often errno).")
    exit_code: IntOrList | None = None
    signal: IntOrList | None = None
    reason: str | None = Field(default=None,
                               description="Regular expression searched in the failure's "
                                           "reason text.")
    log: LogMatch | None = None

    _reason = field_validator("reason")(_regex)


class PolicyRule(Strict):
    match: Match
    action: Action
    limit: int = Field(default=1, ge=0,
                       description="Retries this rule may grant one node (not for fail).")
    backoff_s: float = Field(default=0.0, ge=0, description="Wait before the first retry.")
    growth: float = Field(default=1.0, ge=1.0,
                          description="Each further retry waits this many times longer.")
    max_backoff_s: float = Field(default=3600.0, ge=0)
    factor: float | None = Field(default=None, gt=1.0,
                                 description="retry-with-more-memory: multiply request_memory.")
    cap_mb: int | None = Field(default=None, ge=1,
                               description="retry-with-more-memory: never ask for more.")
    note: str = Field(default="", description="Why this rule exists; shown with decisions.")

    @model_validator(mode="after")
    def _fields_fit_action(self) -> PolicyRule:
        memory = self.action == "retry-with-more-memory"
        if memory and self.cap_mb is None:
            raise ValueError("retry-with-more-memory needs cap_mb (the most memory a retry "
                             "may ask for, in MB)")
        if not memory and (self.factor is not None or self.cap_mb is not None):
            raise ValueError(f"factor and cap_mb belong to retry-with-more-memory, not "
                             f"{self.action}")
        return self


class FailurePolicy(Strict):
    description: str = ""
    rules: list[PolicyRule] = Field(default_factory=list)
