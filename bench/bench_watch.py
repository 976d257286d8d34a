"""Drop-to-accepted latency of ``docket watch``, one file at a time.

Request documents are written first to a staging directory on the same filesystem, then
each is ``os.rename``d into ``spool/incoming`` and the clock runs until it is accepted:
the moment the file leaves ``incoming`` (intake removes it only after the database commit
and the archive copy ``spool/accepted/<name>/v1.yaml``), seen through inotify by the
benchmark itself (~0.1 ms). Every capability's queue limit is 0 in the benchmark home, so
nothing runs meanwhile.

The baseline is a bare ``watchfiles.watch`` loop in its own process with the watcher's
settings (``step=1, debounce=1``, not recursive) that removes each file it is told about:
the same rename, the same notification path, the same measurement, nothing else. Both
processes run throughout; drops alternate between them, one at a time, with a short pause
after each so each watcher is idle again when its next file arrives.

Run ``python bench/bench_watch.py bare DIR`` to run the baseline watcher alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    DOCKET,
    PYTHON,
    Inotify,
    log,
    make_home,
    median,
    percentile,
    request_document,
    row,
    scratch,
)

__all__ = ["run", "bare_watcher"]

BENCH = "Drop-to-accepted latency of docket watch"
GAP_S = 0.025  # pause after each acceptance: the watcher finishes its pass meanwhile
TIMEOUT_S = 30.0


def bare_watcher(directory: Path) -> None:
    """Remove every file that watchfiles reports added to ``directory``."""
    import watchfiles

    for changes in watchfiles.watch(directory, step=1, debounce=1, recursive=False,
                                    raise_interrupt=False):
        for change, path in changes:
            # modified: the benchmark touches its first file until the watcher is up
            if change in (watchfiles.Change.added, watchfiles.Change.modified):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


class Lane:
    """One watcher under test: where files are staged, where they go, how to see them go."""

    def __init__(self, name: str, staging: Path, incoming: Path,
                 process: subprocess.Popen[bytes]) -> None:
        self.name, self.staging, self.incoming, self.process = name, staging, incoming, process
        self.watch = Inotify(incoming, Inotify.GONE)
        self.samples: list[float] = []
        self.dropped = 0

    def stage(self, count: int) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"{self.name}-{i:05d}.yaml"
            (self.staging / name).write_text(request_document(f"{self.name}-{i:05d}", "null", i))

    def drop(self, index: int, timeout_s: float = TIMEOUT_S) -> float:
        """Rename one staged file in; seconds until it left incoming."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the {self.name} watcher exited with {self.process.returncode}")
        name = f"{self.name}-{index:05d}.yaml"
        start = time.perf_counter()
        os.rename(self.staging / name, self.incoming / name)
        seen = self.watch.wait_for(name, timeout_s)
        self.dropped += 1
        return seen - start

    def first_drop(self, timeout_s: float = 60.0) -> None:
        """Drop file 0 and touch it until the watcher, still starting, takes it."""
        name = f"{self.name}-00000.yaml"
        os.rename(self.staging / name, self.incoming / name)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.watch.wait_for(name, 0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"the {self.name} watcher did not start") from None
                if (self.incoming / name).exists():
                    os.utime(self.incoming / name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.watch.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    count = 100 if quick else 1_000
    warmup = 20
    root = scratch("watch")
    lanes: list[Lane] = []
    try:
        home = make_home(root / "home")
        bare = root / "bare" / "incoming"
        bare.mkdir(parents=True)
        with open(root / "watch.log", "wb") as watch_log:
            docket_proc = subprocess.Popen([str(DOCKET), "watch", "--home", str(home)],
                                           stdout=subprocess.DEVNULL, stderr=watch_log)
        lanes.append(Lane("docket", root / "staging-docket", home / "spool" / "incoming",
                          docket_proc))
        bare_proc = subprocess.Popen([str(PYTHON), __file__, "bare", str(bare)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lanes.append(Lane("bare", root / "staging-bare", bare, bare_proc))
        for lane in lanes:
            lane.stage(warmup + count)
        os.sync()
        # the first drop waits for the watcher to be up (imports, first pass)
        for lane in lanes:
            lane.first_drop()
        log(f"{BENCH}: both watchers up; {count} drops each, alternating "
            f"(+{warmup} warm-up)")
        for i in range(1, warmup + count):
            order = lanes if i % 2 else list(reversed(lanes))
            for lane in order:
                latency = lane.drop(i)
                if i >= warmup:
                    lane.samples.append(latency)
                time.sleep(GAP_S)
            if i % 200 == 0:
                log(f"{BENCH}: {i}/{warmup + count - 1} " + ", ".join(
                    f"{lane.name} p50 {median(lane.samples) * 1e3:.2f} ms"
                    for lane in lanes if lane.samples))
        accepted = len(list((home / "spool" / "accepted").iterdir()))
        if accepted != warmup + count:
            raise RuntimeError(f"docket watch accepted {accepted} of {warmup + count} files "
                               f"(see {root / 'watch.log'})")
    finally:
        for lane in lanes:
            lane.stop()
        shutil.rmtree(root, ignore_errors=True)
    d, b = lanes[0].samples, lanes[1].samples
    d50, d99, b50, b99 = (percentile(d, 50) * 1e3, percentile(d, 99) * 1e3,
                          percentile(b, 50) * 1e3, percentile(b, 99) * 1e3)
    base = "bare `watchfiles.watch(step=1, debounce=1)` + unlink"
    return [
        row(BENCH, f"p50 over {count:,} files renamed into spool/incoming", d50, "ms",
            baseline=base, baseline_value=b50, ratio_note="× baseline p50",
            target="p50 ≤ 2 × baseline p50", met=d50 <= 2 * b50, runs=count, digits=2),
        row(BENCH, f"p99 over {count:,} files", d99, "ms", baseline=base, baseline_value=b99,
            ratio_note="× baseline p99", runs=count, digits=2),
        row(BENCH, "max", max(d) * 1e3, "ms", baseline=base, baseline_value=max(b) * 1e3,
            ratio_note="× baseline max", runs=count, digits=2),
    ]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "bare":
        bare_watcher(Path(sys.argv[2]))
    else:
        for r in run(quick="--quick" in sys.argv):
            print(r)
