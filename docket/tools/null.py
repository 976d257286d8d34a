"""The ``null`` test tool: a job that does exactly what it is told.

It stands in for real work in capabilities, DAGs and tests: it checks that its inputs
arrived, sleeps, prints, fails the first K runs (counting runs in a state file shared
by retries), writes output files of a given size, kills itself with a signal, and
exits with a chosen code. The steps run in that order, always.

The library never prints: ``execute`` hands text to the callbacks it is given, and
returns a ``NullResult`` that says what the CLI should do last (signal, exit code).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound, UsageError
from docket.fileio import safe_join
from docket.locks import held

__all__ = [
    "WriteSpec",
    "NullSpec",
    "NullResult",
    "parse_write",
    "parse_signal",
    "output_content",
    "check_inputs",
    "count_run",
    "write_output",
    "execute",
    "kill_self",
]

log = logging.getLogger("docket.tools.null")

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class WriteSpec:
    """One ``--write PATH[=SIZE_BYTES]``; ``size_bytes`` None means "one text line"."""

    path: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class NullSpec:
    sleep_s: float = 0.0
    exit_code: int = 0
    writes: tuple[WriteSpec, ...] = ()
    fail_first: int = 0
    state_file: Path | None = None
    fail_exit_code: int = 1
    stdout: str | None = None
    stderr: str | None = None
    signal_number: int | None = None
    reads: tuple[str, ...] = ()


@dataclass
class NullResult:
    """What one run did; ``as_dict`` is the ``--json`` record."""

    exit_code: int
    failed_on_purpose: bool = False
    run: int | None = None
    slept_s: float = 0.0
    read: list[str] = field(default_factory=list)
    wrote: list[dict[str, Any]] = field(default_factory=list)
    signal_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0 and self.signal_number is None,
            "exit_code": self.exit_code,
            "failed_on_purpose": self.failed_on_purpose,
            "run": self.run,
            "slept_s": self.slept_s,
            "read": self.read,
            "wrote": self.wrote,
            "signal": (signal.Signals(self.signal_number).name
                       if self.signal_number is not None else None),
        }


def parse_write(text: str) -> WriteSpec:
    """``PATH`` or ``PATH=SIZE_BYTES``; a suffix after the last ``=`` that is not a
    whole number is part of the path."""
    path, sep, size = text.rpartition("=")
    if sep and size.isdigit() and path:
        return WriteSpec(path, int(size))
    if sep and size.startswith("-") and size[1:].isdigit() and path:
        raise UsageError(f"--write {text}: size must not be negative",
                         "give PATH=SIZE_BYTES with SIZE_BYTES >= 0")
    if not text:
        raise UsageError("--write needs a path", "give --write PATH[=SIZE_BYTES]")
    return WriteSpec(text)


def parse_signal(text: str) -> int:
    """A signal by name (``TERM``, ``SIGTERM``, ``term``) or number (``15``)."""
    value = text.strip()
    if value.isdigit():
        number = int(value)
        try:
            signal.Signals(number)
        except ValueError:
            raise UsageError(f"unknown signal {text!r}",
                             "give a signal name such as TERM or a number such as 15") from None
        return number
    name = value.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"unknown signal {text!r}",
                         "give a signal name such as TERM or a number such as 15") from None


def output_content(path: str, size_bytes: int | None) -> bytes:
    """The deterministic content of an output file (its first ``size_bytes`` bytes)."""
    line = f"written by null: {path}\n".encode()
    if size_bytes is None:
        return line
    repeats = size_bytes // len(line) + 1
    return (line * repeats)[:size_bytes]


def check_inputs(reads: tuple[str, ...] | list[str]) -> list[str]:
    """Refuse to go on unless every input exists and can be read (exit 3)."""
    checked = []
    for name in reads:
        path = Path(name)
        if not path.exists():
            raise NotFound(f"input not found: {name}",
                           "check that the input was transferred to the job's directory")
        try:
            if path.is_dir():
                os.listdir(path)
            else:
                with open(path, "rb") as fh:
                    fh.read(1)
        except OSError as exc:
            raise NotFound(f"input not readable: {name} ({exc.strerror})",
                           "check the file's permissions") from exc
        checked.append(name)
    return checked


def count_run(state_file: Path) -> int:
    """Add one to the run count in ``state_file`` and return the new count.

    The file is locked with flock while it is read and rewritten, so concurrent runs
    each get their own number. The count only grows, so the new digits always cover
    the old ones and a crash mid-write cannot leave a shorter, wrong number behind.
    """
    # no deadline: every retry waits its turn, and each holds the lock for microseconds
    with held(state_file, None, write=True) as fd:
        raw = b""
        while chunk := os.read(fd, 4096):
            raw += chunk
        text = raw.decode(errors="replace").strip()
        if text and not text.isdigit():
            raise Invalid(f"state file {state_file} does not hold a run count: {text[:40]!r}",
                          "delete it to start counting from zero")
        count = int(text or "0") + 1
        data = f"{count}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return count


def write_output(path: str, size_bytes: int | None) -> dict[str, Any]:
    """Write one output file through a temporary name; parent directories are made.

    ``path`` is relative to the working directory and stays inside it: an absolute path,
    '..' or a symlink leading out is refused (``Invalid``, exit 8) before anything is
    written.
    """
    import hashlib

    target = safe_join(Path.cwd(), path)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    line = output_content(path, None)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if size_bytes is None:
                fh.write(line)
                digest.update(line)
                written = len(line)
            else:
                # Whole repeats of the line per chunk keep the pattern continuous.
                block = line * max(1, _CHUNK_BYTES // len(line))
                written = 0
                while written < size_bytes:
                    piece = block[: size_bytes - written]
                    fh.write(piece)
                    digest.update(piece)
                    written += len(piece)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return {"path": path, "size_bytes": written, "sha256": digest.hexdigest()}


def execute(spec: NullSpec, out: Callable[[str], None],
            err: Callable[[str], None]) -> NullResult:
    """Run every step but the last (signal and exit), in the documented order."""
    if spec.fail_first and spec.state_file is None:
        raise UsageError("--fail-first needs --state-file",
                         "add --state-file FILE to count runs across retries")
    result = NullResult(exit_code=spec.exit_code)
    result.read = check_inputs(spec.reads)
    if spec.sleep_s > 0:
        time.sleep(spec.sleep_s)
    result.slept_s = spec.sleep_s
    if spec.stdout is not None:
        out(spec.stdout)
    if spec.stderr is not None:
        err(spec.stderr)
    if spec.state_file is not None:
        result.run = count_run(spec.state_file)
        if result.run <= spec.fail_first:
            log.info("run %d of the first %d fails on purpose", result.run, spec.fail_first)
            err(f"null: run {result.run} fails on purpose "
                f"(--fail-first {spec.fail_first}, state in {spec.state_file})")
            result.exit_code = spec.fail_exit_code
            result.failed_on_purpose = True
            return result
    for write in spec.writes:  # every path checked before the first file is written
        safe_join(Path.cwd(), write.path)
    for write in spec.writes:
        result.wrote.append(write_output(write.path, write.size_bytes))
    result.signal_number = spec.signal_number
    return result


def kill_self(signal_number: int) -> None:
    """Die by ``signal_number``; Python's own handlers (SIGINT, SIGPIPE) are undone first."""
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signal_number, signal.SIG_DFL)
    os.kill(os.getpid(), signal_number)
    # Signals whose default action is to ignore (SIGCHLD, SIGURG...) or stop land here.
    time.sleep(0.05)
