"""The local engine at DAGMan's scale: a 100,000-node DAG of ``/bin/true`` jobs, and a
10,000-node DAG built from SPLICEs.

Both run through ``python -m docket.engines.localdag DAG --max-jobs 2`` in a fresh
directory, as ``docket dag run`` runs them. The baseline for the wide DAG is the same
number of ``/bin/true`` processes from a shell loop, interleaved with it in the same
run, so the per-node overhead is (runner − shell loop) ÷ nodes; the runner's peak
memory is its maximum resident set size (``wait4``). The splice DAG is 100 SPLICE lines
of one 100-node splice (itself a splice of ten 10-node chains), chained splice to
splice; its rows are the parse time of the whole DAG and the run's per-node time.
``--quick`` uses 5,000 and 2,000 nodes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import PYTHON, REPO, interleave, log, median, row, scratch, timed_run

__all__ = ["run", "write_wide", "write_spliced"]

BENCH = "Local engine at DAGMan's scale"
MAX_JOBS = 2
TARGET_MS = 2.0
TARGET_MB = 1024


def write_wide(folder: Path, nodes: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "true.sub").write_text("executable = /bin/true\nqueue\n")
    lines = [f"JOB n{i} true.sub" for i in range(nodes)]
    dag = folder / "wide.dag"
    dag.write_text("\n".join(lines) + "\n")
    return dag


def write_spliced(folder: Path, splices: int) -> Path:
    """``splices`` × 100 nodes: each splice is ten 10-node chains, spliced twice over."""
    folder.mkdir(parents=True)
    (folder / "true.sub").write_text("executable = /bin/true\nqueue\n")
    chain = [f"JOB c{i} true.sub" for i in range(10)]
    chain += [f"PARENT c{i} CHILD c{i + 1}" for i in range(9)]
    (folder / "chain.dag").write_text("\n".join(chain) + "\n")
    (folder / "block.dag").write_text("".join(f"SPLICE chain{i} chain.dag\n"
                                              for i in range(10)))
    top = [f"SPLICE block{i} block.dag" for i in range(splices)]
    top += [f"PARENT block{i} CHILD block{i + 1}" for i in range(splices - 1)]
    dag = folder / "spliced.dag"
    dag.write_text("\n".join(top) + "\n")
    return dag


def _run_runner(dag: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one runner process."""
    start = time.perf_counter()
    child = subprocess.Popen([str(PYTHON), "-m", "docket.engines.localdag", str(dag),
                              "--max-jobs", str(MAX_JOBS)], cwd=dag.parent, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"the runner exited {child.returncode}: {err[-2000:]}")
    metrics = json.loads(dag.with_name(f"{dag.name}.metrics").read_text())
    if metrics["status"] != "complete":
        raise RuntimeError(f"the DAG did not complete: {metrics}")
    return elapsed, usage.ru_maxrss / 1024


def run(quick: bool = False) -> list[dict[str, Any]]:
    wide_nodes = 5_000 if quick else 100_000
    splices = 20 if quick else 100
    root = scratch("dagman")
    serial = itertools.count()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": str(REPO)}
    peaks: list[float] = []

    def wide() -> float:
        folder = root / f"wide-{next(serial)}"
        elapsed, peak = _run_runner(write_wide(folder, wide_nodes), env)
        peaks.append(peak)
        shutil.rmtree(folder)
        return elapsed

    loop = f"i=0; while [ $i -lt {wide_nodes} ]; do /bin/true; i=$((i+1)); done"
    rows = []
    try:
        log(f"{BENCH}: {wide_nodes:,} nodes, against a shell loop, interleaved")
        times = interleave({"localdag": wide,
                            "shell loop": lambda: timed_run(["/bin/sh", "-c", loop],
                                                            env=env)},
                           1, warmup=0, label=BENCH)
        t_dag, t_loop = median(times["localdag"]), median(times["shell loop"])
        per_node = (t_dag - t_loop) / wide_nodes * 1e3
        rows += [
            row(BENCH, f"{wide_nodes:,}-node DAG of /bin/true, --max-jobs {MAX_JOBS} "
                "(whole run)", t_dag, "s", baseline="shell loop, one after another",
                baseline_value=t_loop, ratio_note="× baseline", runs=1),
            row(BENCH, "per-node overhead over the shell loop", per_node, "ms/node",
                target=f"≤ {TARGET_MS:g} ms/node", met=per_node <= TARGET_MS, runs=1,
                digits=2),
            row(BENCH, "runner's peak memory (max RSS)", max(peaks), "MB",
                target=f"≤ {TARGET_MB} MB", met=max(peaks) <= TARGET_MB, runs=1, digits=0),
        ]
        folder = root / "spliced"
        dag = write_spliced(folder, splices)
        nodes = splices * 100
        log(f"{BENCH}: {nodes:,}-node DAG from {splices} SPLICEs")
        sys.path.insert(0, str(REPO))
        from docket.dag import read_dag

        start = time.perf_counter()
        parsed = read_dag(dag)
        t_parse = time.perf_counter() - start
        if len(parsed.nodes) != nodes:
            raise RuntimeError(f"the spliced DAG has {len(parsed.nodes)} nodes, not {nodes}")
        t_run, peak = _run_runner(dag, env)
        rows += [
            row(BENCH, f"parse a {nodes:,}-node DAG of {splices} nested SPLICEs", t_parse,
                "s", runs=1),
            row(BENCH, f"run it (--max-jobs {MAX_JOBS}), per node", t_run / nodes * 1e3,
                "ms/node", runs=1, digits=2,
                note=f"whole run {t_run:.1f} s, peak memory {peak:.0f} MB; chains of 10 "
                     "limit how many nodes are ready at once"),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
