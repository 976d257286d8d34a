"""Named exceptions and exit codes shared by every docket tool.

The library raises; only the CLI prints. Each error carries what went wrong, how to
fix it, and the exit code a shell script can test.
"""

from __future__ import annotations

import enum

__all__ = [
    "ExitCode",
    "DocketError",
    "UsageError",
    "NotFound",
    "ChecksumMismatch",
    "PartialFailure",
    "ExternalFailure",
    "Locked",
    "Invalid",
]


class ExitCode(enum.IntEnum):
    """Exit codes documented for every docket tool (see docs/tools.md)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    CHECKSUM = 4
    PARTIAL = 5
    EXTERNAL = 6
    LOCKED = 7
    INVALID = 8


class DocketError(Exception):
    """An error a user can act on: ``what`` happened, ``hint`` says how to fix it."""

    exit_code: ExitCode = ExitCode.FAILURE
    code: str = "failure"

    def __init__(self, what: str, hint: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.what} — {self.hint}" if self.hint else self.what


class UsageError(DocketError):
    exit_code = ExitCode.USAGE
    code = "usage"


class NotFound(DocketError):
    exit_code = ExitCode.NOT_FOUND
    code = "not-found"


class ChecksumMismatch(DocketError):
    exit_code = ExitCode.CHECKSUM
    code = "checksum-mismatch"


class PartialFailure(DocketError):
    exit_code = ExitCode.PARTIAL
    code = "partial-failure"


class ExternalFailure(DocketError):
    exit_code = ExitCode.EXTERNAL
    code = "external-failure"


class Locked(DocketError):
    exit_code = ExitCode.LOCKED
    code = "locked"


class Invalid(DocketError):
    exit_code = ExitCode.INVALID
    code = "invalid"
