"""The local engine: a 1,000-node DAG of ``/bin/true`` jobs, next to a shell loop.

One submit file (``executable = /bin/true``, ``queue``), 1,000 ``JOB`` lines and a few
``PARENT ... CHILD`` edges, run by the detached DAG runner exactly as the watcher starts it:
``python -m docket.engines.localdag workflow.dag --max-jobs 2`` (a fresh directory per run;
the runner writes its node event log, dagman.out, progress file and metrics beside the DAG).
Baselines, interleaved with it: the same 1,000 processes from a shell loop
(``for i in ...; do /bin/true; done``), and two at a time (``xargs -P 2``), the runner's
concurrency. The per-node overhead is (runner − shell loop) ÷ nodes.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import PYTHON, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run", "write_dag"]

BENCH = "Local engine: a DAG of /bin/true jobs"
MAX_JOBS = 2


def write_dag(folder: Path, nodes: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "true.sub").write_text("# a job that does nothing\nexecutable = /bin/true\n"
                                     "request_cpus = 1\nqueue\n")
    lines = [f"JOB n{i:04d} true.sub" for i in range(nodes)]
    # a few edges: four short chains at the start
    lines += [f"PARENT n{i:04d} CHILD n{i + 4:04d}" for i in range(0, 16)]
    dag = folder / "workflow.dag"
    dag.write_text("\n".join(lines) + "\n")
    return dag


def run(quick: bool = False) -> list[dict[str, Any]]:
    nodes = 200 if quick else 1_000
    repeats = 3
    root = scratch("localdag")
    serial = itertools.count()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": str(REPO)}

    def engine() -> float:
        folder = root / f"dag-{next(serial)}"
        dag = write_dag(folder, nodes)
        elapsed = timed_run([str(PYTHON), "-m", "docket.engines.localdag", str(dag),
                             "--max-jobs", str(MAX_JOBS)], cwd=folder, env=env)
        metrics = json.loads((folder / "workflow.dag.metrics").read_text())
        if metrics["status"] != "complete" or metrics["jobs_succeeded"] != nodes:
            raise RuntimeError(f"the local DAG did not complete: {metrics}")
        shutil.rmtree(folder)
        return elapsed

    loop = f"i=0; while [ $i -lt {nodes} ]; do /bin/true; i=$((i+1)); done"
    pair = f"seq {nodes} | xargs -P {MAX_JOBS} -n 1 /bin/true"
    try:
        log(f"{BENCH}: {nodes} nodes, {repeats} interleaved runs each")
        times = interleave({
            "localdag": engine,
            "shell loop": lambda: timed_run(["/bin/sh", "-c", loop], env=env),
            "xargs -P 2": lambda: timed_run(["/bin/sh", "-c", pair], env=env),
        }, repeats, warmup=1, label=BENCH)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    t_dag, t_loop, t_pair = (median(times["localdag"]), median(times["shell loop"]),
                             median(times["xargs -P 2"]))
    per_node_ms = (t_dag - t_loop) / nodes * 1e3
    per_node_pair_ms = (t_dag - t_pair) / nodes * 1e3
    return [
        row(BENCH, f"`python -m docket.engines.localdag`, {nodes:,} nodes, --max-jobs "
            f"{MAX_JOBS} (whole run)", t_dag, "s", baseline="shell loop, one after another",
            baseline_value=t_loop, ratio_note="× baseline", runs=repeats),
        row(BENCH, "same run", t_dag, "s", baseline=f"`xargs -P {MAX_JOBS}`",
            baseline_value=t_pair, ratio_note="× baseline", runs=repeats),
        row(BENCH, "per-node overhead over the shell loop", per_node_ms, "ms/node",
            runs=repeats, digits=2,
            note=f"per-node overhead over `xargs -P {MAX_JOBS}`: {per_node_pair_ms:.2f} ms"),
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
