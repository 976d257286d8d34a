"""Task workflows: events per second through a workflow of ``true`` tasks, next to a shell loop.

One EWMS-style request (one task, ``task_args: "true"``, 2 workers, no image) with N
input events, dropped into a fresh home and run end to end by ``docket tick --wait``:
intake, render, the DAG runner, the seed node, two ``task-worker`` processes withdrawing
and completing each event in ``events.sqlite`` (two durable transactions and one process
per event), the collect node. Baselines, interleaved with it: the same N ``/bin/true``
processes from a shell loop, and two at a time (``xargs -P 2``, the workers' concurrency).
"""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DOCKET, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run"]

BENCH = "Task workflows: events through `true` tasks"
WORKERS = 2


def _request() -> dict[str, Any]:
    return {"public_queue_aliases": ["in", "out"],
            "tasks": [{"cluster_locations": ["local"], "input_queue_aliases": ["in"],
                       "output_queue_aliases": ["out"], "task_image": "", "task_args": "true",
                       "n_workers": WORKERS,
                       "worker_config": {"worker_memory": "256M", "worker_disk": "256M"}}],
            "inputs": {"in": {"directory": "events"}}}


def run(quick: bool = False) -> list[dict[str, Any]]:
    events = 100 if quick else 500
    repeats = 3
    root = scratch("tasks")
    serial = itertools.count()
    spans: list[float] = []  # first withdrawal to last completion, inside the taskforce

    def workflow() -> float:
        home = root / f"home-{next(serial)}"
        (home / "spool" / "incoming").mkdir(parents=True)
        shutil.copytree(REPO / "templates", home / "templates")
        folder = home / "spool" / "attachments" / "events"
        folder.mkdir(parents=True)
        for i in range(events):
            (folder / f"e{i:05d}").write_text(f"{i}\n")
        (home / "spool" / "incoming" / "bench.json").write_text(json.dumps(_request()))
        elapsed = timed_run([str(DOCKET), "tick", "--wait", "--home", str(home)])
        out = home / "work" / "bench" / "v1" / "e1" / "results.json"
        if not out.is_file() or json.loads(out.read_text())["output_events"] != 0:
            raise RuntimeError(f"the task workflow did not complete: {out}")
        conn = sqlite3.connect(out.parent / "events.sqlite")
        first, last, done = conn.execute("SELECT min(started), max(ended), count(*) FROM "
                                         "attempts WHERE outcome='done'").fetchone()
        conn.close()
        if done != events:
            raise RuntimeError(f"{done} of {events} events were processed")
        spans.append(last - first)
        shutil.rmtree(home)
        return elapsed

    loop = f"i=0; while [ $i -lt {events} ]; do /bin/true; i=$((i+1)); done"
    pair = f"seq {events} | xargs -P {WORKERS} -n 1 /bin/true"
    try:
        log(f"{BENCH}: {events} events, {repeats} interleaved runs each")
        times = interleave({
            "workflow": workflow,
            "shell loop": lambda: timed_run(["/bin/sh", "-c", loop]),
            "xargs -P 2": lambda: timed_run(["/bin/sh", "-c", pair]),
        }, repeats, warmup=1, label=BENCH)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    t_flow, t_loop, t_pair = (median(times["workflow"]), median(times["shell loop"]),
                              median(times["xargs -P 2"]))
    return [
        row(BENCH, f"`docket tick --wait` on a {events}-event request, {WORKERS} workers "
            "(whole run, events/s)", events / t_flow, "events/s",
            baseline="shell loop of /bin/true", baseline_value=events / t_loop,
            ratio_note="× baseline rate", runs=repeats, digits=1),
        row(BENCH, "same run", events / t_flow, "events/s",
            baseline=f"`xargs -P {WORKERS}` of /bin/true", baseline_value=events / t_pair,
            ratio_note="× baseline rate", runs=repeats, digits=1,
            note=f"per-event overhead over the shell loop: "
                 f"{(t_flow - t_loop) / events * 1e3:.1f} ms"),
        row(BENCH, f"inside the taskforce: first withdrawal to last completion, {WORKERS} "
            "workers", events / median(spans[-repeats:]), "events/s",
            baseline=f"`xargs -P {WORKERS}` of /bin/true", baseline_value=events / t_pair,
            ratio_note="× baseline rate", runs=repeats, digits=1,
            note="per event: a withdrawal and a completion (two durable transactions), a "
                 "lease renewer, one process"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
