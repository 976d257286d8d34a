"""CASA's log file: its name, its line format, and a reader that groups continued lines.

``import casatasks`` creates ``casa-YYYYMMDD-HHMMSS.log`` (UTC) in the working directory.
Each line is ``time<TAB>priority<TAB>origin<TAB>message``; a message that spans several
lines repeats the time and priority and marks its continuation lines with ``+`` after
the origin::

    2026-11-21 09:29:35	SEVERE	MeasTable::dUTC(Double) (file ..., line 4290)	Leap second ...
    2026-11-21 09:29:35	SEVERE	MeasTable::dUTC(Double) (file ..., line 4290)+	Until the ...

vela writes this format and the CASA envoy's auditor reads it, so both share this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "LOG_NAME_RE",
    "PRIORITIES",
    "LogEntry",
    "log_name",
    "format_entry",
    "parse_log_text",
    "read_log",
    "find_logs",
    "severe_entries",
]

LOG_NAME_RE = re.compile(r"^casa-\d{8}-\d{6}\.log$")
# Priorities CASA's logger writes (ERROR posts are written as SEVERE).
PRIORITIES = ("DEBUG", "DEBUG1", "DEBUG2", "INFO", "INFO1", "INFO2", "INFO3", "INFO4",
              "INFO5", "WARN", "SEVERE")
_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class LogEntry:
    """One message of a CASA log, with its continuation lines joined by newlines."""

    time: str
    priority: str
    origin: str
    message: str
    line_no: int  # 1-based line of the entry's first line in its file

    def text(self) -> str:
        """The entry as CASA wrote it (the first line only when the message continues)."""
        first = self.message.split("\n", 1)[0]
        return f"{self.time}\t{self.priority}\t{self.origin}\t{first}"


def log_name(when: datetime | None = None) -> str:
    """The file name CASA gives the log it starts at ``when`` (UTC)."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("casa-%Y%m%d-%H%M%S.log")


def format_entry(priority: str, origin: str, message: str,
                 when: datetime | None = None) -> str:
    """Lines of one log entry, exactly as CASA writes them (ends with a newline)."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown CASA log priority {priority!r}")
    stamp = (when or datetime.now(UTC)).astimezone(UTC).strftime(_TIME_FORMAT)
    lines = message.split("\n")
    out = [f"{stamp}\t{priority}\t{origin}\t{lines[0]}\n"]
    out.extend(f"{stamp}\t{priority}\t{origin}+\t{line}\n" for line in lines[1:])
    return "".join(out)


def parse_log_text(text: str, first_line_no: int = 1) -> list[LogEntry]:
    """Entries of CASA log text; continuation lines join the entry they continue.

    A line that is not in CASA's format (a stray print, a truncated write) is kept as a
    continuation of the entry before it, so that nothing in the log goes unread.
    """
    entries: list[LogEntry] = []
    for offset, raw in enumerate(text.splitlines()):
        line_no = first_line_no + offset
        parts = raw.split("\t", 3)
        well_formed = (len(parts) == 4 and _TIME_RE.match(parts[0]) is not None
                       and parts[1] in PRIORITIES)
        if well_formed:
            time, priority, origin, message = parts
            prev = entries[-1] if entries else None
            if (prev is not None and origin.endswith("+") and prev.priority == priority
                    and prev.origin == origin[:-1]):
                entries[-1] = LogEntry(prev.time, prev.priority, prev.origin,
                                       prev.message + "\n" + message, prev.line_no)
            else:
                entries.append(LogEntry(time, priority, origin, message, line_no))
        elif entries:
            prev = entries[-1]
            entries[-1] = LogEntry(prev.time, prev.priority, prev.origin,
                                   prev.message + "\n" + raw, prev.line_no)
        elif raw.strip():
            # Text before the first well-formed line: keep it, with no priority to judge.
            entries.append(LogEntry("", "", "", raw, line_no))
    return entries


def read_log(path: Path, start_byte: int = 0) -> list[LogEntry]:
    """Entries of the log at ``path`` from ``start_byte`` on (to skip an earlier run's part)."""
    with open(path, "rb") as fh:
        head = fh.read(start_byte) if start_byte else b""
        body = fh.read()
    return parse_log_text(body.decode("utf-8", errors="replace"),
                          first_line_no=head.count(b"\n") + 1)


def find_logs(directory: Path) -> dict[Path, int]:
    """CASA logs directly in ``directory`` and their sizes in bytes."""
    found: dict[Path, int] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.iterdir()):
        if LOG_NAME_RE.match(path.name) and path.is_file():
            found[path] = path.stat().st_size
    return found


def severe_entries(entries: Iterable[LogEntry]) -> list[LogEntry]:
    return [entry for entry in entries if entry.priority == "SEVERE"]
