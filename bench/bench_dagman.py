"""The local engine at DAGMan's scale: a 100,000-node DAG of ``/bin/true`` jobs, and a
10,000-node DAG built from SPLICEs.

Both run through ``python -m docket.engines.localdag DAG --max-jobs 2`` in a fresh
directory, as ``docket dag run`` runs them. The baseline for the wide DAG is the same
number of ``/bin/true`` processes from a shell loop, run just before and just after it
(the mean of the two, so a change in the machine's load during the run counts half
each way), so the per-node overhead is (runner − shell loop) ÷ nodes. On a shared
machine that wall-clock figure moves with everyone else's load, so the CPU time (user +
system, ``wait4``) of the runner with its jobs, less the shell loop's with its
processes, is given per node beside it: the work the runner adds. The runner's peak
memory is its maximum resident set size. The splice DAG is 100 SPLICE lines
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

from benchlib import PYTHON, REPO, log, median, row, scratch

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


def _cpu_s(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _run_loop(nodes: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds with its children) of the shell loop."""
    loop = f"i=0; while [ $i -lt {nodes} ]; do /bin/true; i=$((i+1)); done"
    start = time.perf_counter()
    child = subprocess.Popen(["/bin/sh", "-c", loop], env=env)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the shell loop exited {os.waitstatus_to_exitcode(status)}")
    return time.perf_counter() - start, _cpu_s(usage)


def _run_runner(dag: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, peak resident MB, CPU seconds with its jobs) of one runner."""
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
    return elapsed, usage.ru_maxrss / 1024, _cpu_s(usage)


def run(quick: bool = False) -> list[dict[str, Any]]:
    wide_nodes = 5_000 if quick else 100_000
    splices = 20 if quick else 100
    root = scratch("dagman")
    serial = itertools.count()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "PYTHONPATH": str(REPO)}
    rows = []
    try:
        log(f"{BENCH}: {wide_nodes:,} nodes, between two shell loops")
        loops = [_run_loop(wide_nodes, env)]
        folder = root / f"wide-{next(serial)}"
        t_dag, peak, cpu_dag = _run_runner(write_wide(folder, wide_nodes), env)
        shutil.rmtree(folder)
        loops.append(_run_loop(wide_nodes, env))
        log(f"{BENCH}: runner {t_dag:.1f} s, shell loops "
            f"{', '.join(f'{t:.1f} s' for t, _ in loops)}")
        t_loop = median([t for t, _ in loops])
        cpu_loop = median([c for _, c in loops])
        per_node = (t_dag - t_loop) / wide_nodes * 1e3
        cpu_per_node = (cpu_dag - cpu_loop) / wide_nodes * 1e3
        rows += [
            row(BENCH, f"{wide_nodes:,}-node DAG of /bin/true, --max-jobs {MAX_JOBS} "
                "(whole run)", t_dag, "s", baseline="shell loop, one after another",
                baseline_value=t_loop, ratio_note="× baseline", runs=1),
            row(BENCH, "per-node overhead over the shell loop", per_node, "ms/node",
                target=f"≤ {TARGET_MS:g} ms/node", met=per_node <= TARGET_MS, runs=1,
                digits=2, note=f"load average at the end {os.getloadavg()[0]:.2f}"),
            row(BENCH, "CPU per node over the shell loop's (runner and jobs, user + "
                "system)", cpu_per_node, "ms/node", runs=1, digits=2),
            row(BENCH, "runner's peak memory (max RSS)", peak, "MB",
                target=f"≤ {TARGET_MB} MB", met=peak <= TARGET_MB, runs=1, digits=0),
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
        t_run, peak, _ = _run_runner(dag, env)
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
