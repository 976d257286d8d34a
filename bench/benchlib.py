"""What the benchmarks share: interleaved timing, statistics, result rows, scratch homes.

Every benchmark module ``bench/bench_<name>.py`` exposes ``run(quick: bool = False) ->
list[dict]``; each dict is one row of its table in ``docs/performance.md`` (see ``row``).
Measured and baseline runs are interleaved (``interleave``), so that the noise of a shared
machine hits both, and the ratio between them is what the report leans on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Skip", "REPO", "BIN", "PYTHON", "DOCKET", "row", "interleave", "median", "percentile",
           "scratch", "make_home", "docket", "timed_run", "Inotify", "request_document",
           "log"]

REPO = Path(__file__).resolve().parents[1]
# The benchmarks run under the venv's python (make bench); its scripts sit beside it.
BIN = Path(sys.executable).parent
PYTHON = Path(sys.executable)
DOCKET = BIN / "docket"


class Skip(Exception):  # noqa: N818 - reads as "raise Skip(why)"
    """A benchmark that cannot run here (a missing tool, an unbuildable artifact)."""


def log(message: str) -> None:
    """Progress on stderr: make bench runs for minutes."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# statistics ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 1,000 samples is the 990th smallest)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.4999)))
    return float(ordered[rank - 1])


def interleave(runners: dict[str, Callable[[], float]], repeats: int, *,
               warmup: int = 1, label: str = "") -> dict[str, list[float]]:
    """Run each runner ``repeats`` times, round-robin, the order reversed every round.

    Each runner returns the figure of one run (usually seconds). ``warmup`` rounds run
    first and are thrown away (page cache, .pyc files, first-import costs).
    """
    names = list(runners)
    results: dict[str, list[float]] = {n: [] for n in names}
    for round_number in range(warmup + repeats):
        order = names if round_number % 2 == 0 else list(reversed(names))
        last: dict[str, float] = {}
        for name in order:
            last[name] = runners[name]()
            if round_number >= warmup:
                results[name].append(last[name])
        what = ("warm-up" if round_number < warmup
                else f"round {round_number - warmup + 1}/{repeats}")
        log(f"{label} {what}: " + ", ".join(f"{n}={last[n]:.4g}" for n in names))
    return results


def row(benchmark: str, measure: str, value: float, unit: str, *,
        baseline: str | None = None, baseline_value: float | None = None,
        ratio: float | None = None, ratio_note: str = "", target: str = "",
        met: bool | None = None, runs: int | None = None, note: str = "",
        digits: int = 3) -> dict[str, Any]:
    """One row of a benchmark's table.

    ``ratio`` defaults to value / baseline_value; ``ratio_note`` says how to read it
    (e.g. "× baseline time"). ``met`` is None for figures that have no target.
    """
    if ratio is None and baseline_value:
        ratio = value / baseline_value
    return {"benchmark": benchmark, "measure": measure, "value": value, "unit": unit,
            "baseline": baseline, "baseline_value": baseline_value, "ratio": ratio,
            "ratio_note": ratio_note, "target": target, "met": met, "runs": runs,
            "note": note, "digits": digits}


# scratch space and homes -----------------------------------------------------------


def scratch(prefix: str) -> Path:
    """A fresh directory on the same filesystem as the system temp dir (real disk here)."""
    base = os.environ.get("DOCKET_BENCH_TMP") or None
    return Path(tempfile.mkdtemp(prefix=f"docket-bench-{prefix}-", dir=base))


def docket(home: Path, *args: str, check: bool = True,
           stdout: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[bytes]:
    """Run the installed ``docket`` command on ``home``."""
    proc = subprocess.run([str(DOCKET), *args, "--home", str(home)], stdout=stdout,
                          stderr=subprocess.PIPE, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docket {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def make_home(root: Path) -> Path:
    """A docket home with the shipped templates, a database, and queues that start nothing.

    Every capability's queue gets ``max_jobs: 0`` in the home's copy of the templates, so
    accepted requests wait in their queue as they would behind a busy cluster, and the
    benchmarks measure intake, not execution. (Pausing a queue would need a QueueChange
    decision by an analyst with the operator role; a limit of 0 needs nobody.)
    """
    root.mkdir(parents=True, exist_ok=True)
    templates = root / "templates"
    shutil.copytree(REPO / "templates", templates)
    for definition in sorted(templates.glob("*/capability.yaml")):
        if definition.parent.name.startswith(("_", ".")):
            continue
        text = definition.read_text()
        text, found = re.subn(r"^(\s+max_jobs:\s*)\d+", r"\g<1>0", text, flags=re.M)
        if not found:
            if re.search(r"^queue:", text, flags=re.M):
                raise RuntimeError(f"{definition}: a queue section without max_jobs; "
                                   "bench/benchlib.py cannot set it to 0")
            text += "\nqueue:\n  max_jobs: 0\n"
        definition.write_text(text)
    docket(root, "tick")  # creates the database, as a running home has one
    out = docket(root, "queue", "list", "--json", stdout=subprocess.PIPE).stdout
    limits = {q["capability"]: q["max_jobs"] for q in json.loads(out)["queues"]}
    if any(limits.values()):
        raise RuntimeError(f"queue limits are not all 0 in the bench home: {limits}")
    return root


def timed_run(argv: Sequence[str], *, cwd: Path | None = None,
              env: dict[str, str] | None = None, check: bool = True) -> float:
    """Wall time (s) of one command, output discarded."""
    start = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
    return elapsed


def request_document(name: str, capability: str = "null", index: int = 0) -> str:
    """A small, realistic request document (~250 bytes)."""
    return (f"apiVersion: docket/v1\nkind: CapabilityRequest\nmetadata:\n  name: {name}\n"
            f"  labels: {{purpose: bench, batch: b{index // 1000}}}\nspec:\n"
            f"  capability: \"{capability}\"\n  priority: {index % 3}\n  parameters:\n"
            f"    sleep_s: 0.1\n    message: \"request number {index}\"\n"
            f"    outputs: [result-{index}.txt]\n")


# inotify: a watcher of our own with ~0.1 ms latency, so measuring costs nothing ----------

_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class Inotify:
    """Tell when names leave (or enter) a directory, without polling."""

    GONE = _IN_DELETE | _IN_MOVED_FROM
    ARRIVED = _IN_CREATE | _IN_MOVED_TO

    def __init__(self, directory: Path, mask: int) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = libc.inotify_add_watch(self._fd, os.fsencode(directory), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")
        self._seen: dict[str, float] = {}

    def wait_for(self, name: str, timeout_s: float) -> float:
        """Block until ``name`` has had an event; return perf_counter() when it was read."""
        deadline = time.monotonic() + timeout_s
        while name not in self._seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event for {name} within {timeout_s} s")
            readable, _, _ = select.select([self._fd], [], [], left)
            if not readable:
                continue
            seen_at = time.perf_counter()
            data = os.read(self._fd, 65536)
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                raw = data[offset:offset + length].rstrip(b"\0")
                offset += length
                self._seen.setdefault(os.fsdecode(raw), seen_at)
        return self._seen.pop(name)

    def close(self) -> None:
        os.close(self._fd)
