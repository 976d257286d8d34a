"""Intake latency with a hung webhook: a dead endpoint must not slow ``docket watch``.

Two ``docket watch`` processes run side by side, each on its own home with a
``notifications.yaml`` rule that notifies every state change (each accepted request
enters ``queued``: one outbox row per drop). One home's webhook is a socket that accepts
connections and never answers (the sender waits out its 300 s timeout, stuck); the
other home has no notification targets at all (the baseline). Drops alternate between
the two, one at a time, and the clock runs from the rename into ``spool/incoming`` until
the file leaves it (after the commit), as in ``bench_watch``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_watch import GAP_S, Lane
from benchlib import DOCKET, log, make_home, percentile, row, scratch

__all__ = ["run"]

BENCH = "Intake latency with a hung webhook"


def _rules(home: Path, url: str | None) -> None:
    targets = (f"targets:\n  stuck:\n    webhook: {{url: '{url}', secret_env: BENCH_SECRET, "
               f"timeout_s: 300}}\nrules:\n  - events: [state]\n    notify: [stuck]\n"
               if url else "rules: []\n")
    (home / "notifications.yaml").write_text(targets)


def run(quick: bool = False) -> list[dict[str, Any]]:
    count = 50 if quick else 300
    warmup = 10
    root = scratch("notify")
    lanes: list[Lane] = []
    # a listening socket nobody accepts from: connections complete, answers never come
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1024)
    url = f"http://127.0.0.1:{hung.getsockname()[1]}/hook"
    env = {**os.environ, "BENCH_SECRET": "bench"}
    try:
        for name, target in (("hung", url), ("none", None)):
            home = make_home(root / name)
            _rules(home, target)
            with open(root / f"{name}.log", "wb") as out:
                proc = subprocess.Popen([str(DOCKET), "watch", "--home", str(home)],
                                        stdout=subprocess.DEVNULL, stderr=out, env=env)
            lanes.append(Lane(name, root / f"staging-{name}", home / "spool" / "incoming",
                              proc))
        for lane in lanes:
            lane.stage(warmup + count)
        os.sync()
        for lane in lanes:
            lane.first_drop()
        log(f"{BENCH}: both watchers up; {count} drops each, alternating (+{warmup} warm-up)")
        for i in range(1, warmup + count):
            for lane in (lanes if i % 2 else list(reversed(lanes))):
                latency = lane.drop(i)
                if i >= warmup:
                    lane.samples.append(latency)
                time.sleep(GAP_S)
        # the hung home's outbox holds what its stuck sender could not send
        import sqlite3

        conn = sqlite3.connect(root / "hung" / "state" / "docket.db")
        pending = conn.execute("SELECT count(*) FROM notifications WHERE state='pending'"
                               ).fetchone()[0]
        conn.close()
    finally:
        for lane in lanes:
            lane.stop()
        hung.close()
        shutil.rmtree(root, ignore_errors=True)
    h, n = lanes[0].samples, lanes[1].samples
    h50, n50, h99, n99 = (percentile(h, 50) * 1e3, percentile(n, 50) * 1e3,
                          percentile(h, 99) * 1e3, percentile(n, 99) * 1e3)
    base = "the same watcher without notification targets"
    return [
        row(BENCH, f"p50 over {count:,} drops, every state change notified to a hung "
                   f"webhook ({pending:,} left pending)", h50, "ms", baseline=base,
            baseline_value=n50, ratio_note="× baseline p50",
            target="p50 ≤ 1.5 × baseline p50", met=h50 <= 1.5 * n50, runs=count, digits=2),
        row(BENCH, f"p99 over {count:,} drops", h99, "ms", baseline=base, baseline_value=n99,
            ratio_note="× baseline p99", runs=count, digits=2),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
