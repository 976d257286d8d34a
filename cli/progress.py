"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

Library functions report progress through callbacks; this turns those calls into a
bar for people at a terminal and into nothing for logs, pipes and cron.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["ProgressBar", "human_bytes"]


def human_bytes(size_bytes: int | float | None) -> str:
    if size_bytes is None:
        return "?"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class ProgressBar:
    """Thread-safe; redraws at most every ``interval_s``; ``enabled=False`` draws nothing.
    As a context manager it clears its line at the end of the block, error or not."""

    def __init__(self, label: str, *, quiet: bool = False, stream: TextIO | None = None,
                 interval_s: float = 0.1, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.interval_s = interval_s
        self.width = width
        self._lock = threading.Lock()
        self._last = 0.0
        self._drawn = False

    def update(self, done_bytes: int, total_bytes: int | None, note: str = "") -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            finished = total_bytes is not None and done_bytes >= total_bytes
            if now - self._last < self.interval_s and not finished:
                return
            self._last = now
            if total_bytes:
                filled = min(self.width, int(self.width * done_bytes / total_bytes))
                bar = "#" * filled + "-" * (self.width - filled)
                amount = f"{human_bytes(done_bytes)}/{human_bytes(total_bytes)}"
            else:
                bar = "?" * self.width
                amount = human_bytes(done_bytes)
            line = f"{self.label} [{bar}] {amount} {note}"[:120]
            self.stream.write("\r" + line.ljust(120))
            self.stream.flush()
            self._drawn = True

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.enabled and self._drawn:
            with self._lock:
                self.stream.write("\r" + " " * 120 + "\r")
                self.stream.flush()
                self._drawn = False
