"""Helpers for the local engine tests: write DAG and submit files, run the real runner,
read back what it wrote (metrics, dagman.out, the node event log)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
import htcondor2  # noqa: E402

PYTHON = sys.executable
NULL = Path(sys.executable).parent / "null"
RUNNER = [PYTHON, "-m", "docket.engines.localdag"]
REPO = Path(__file__).resolve().parents[2]

# job.sh NAME SLEEP_S LOG [EXIT]: records its start and end (ns clock and pid) in LOG
JOB_SH = """#!/bin/sh
echo "start $1 $(date +%s%N) $$" >> "$3"
sleep "$2"
echo "end $1 $(date +%s%N)" >> "$3"
exit "${4:-0}"
"""

# argv.py OUT ARG...: writes its arguments (and a few environment values) as JSON
ARGV_PY = f"""#!{PYTHON}
import json, os, sys
json.dump({{"argv": sys.argv[2:], "cwd": os.getcwd(),
           "env": {{k: v for k, v in os.environ.items()}}}},
          open(sys.argv[1], "w"))
"""


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def tool(directory: Path, name: str, text: str) -> Path:
    return write(directory / name, text, 0o755)


@dataclass
class Outcome:
    code: int
    metrics: dict[str, Any]
    dagman_out: str
    stderr: str
    dag: Path


def files(dag: Path) -> dict[str, Path]:
    return {name: dag.with_name(f"{dag.name}.{name}")
            for name in ("nodes.log", "dagman.out", "progress", "metrics", "lock")}


def start(dag: Path, max_jobs: int = 2, *extra: str) -> subprocess.Popen[str]:
    """The runner as the local engine starts it: its own session, cwd the DAG's dir."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*RUNNER, str(dag), "--max-jobs", str(max_jobs), *extra],
                            cwd=dag.parent, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def finish(child: subprocess.Popen[str], dag: Path, timeout_s: float = 30) -> Outcome:
    try:
        _, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    found = files(dag)
    metrics = json.loads(found["metrics"].read_text()) if found["metrics"].exists() else {}
    out = found["dagman.out"].read_text() if found["dagman.out"].exists() else ""
    return Outcome(child.returncode, metrics, out, err, dag)


def run_dag(dag: Path, max_jobs: int = 2, *extra: str, timeout_s: float = 30) -> Outcome:
    return finish(start(dag, max_jobs, *extra), dag, timeout_s)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


EventType = htcondor2.JobEventType


def read_events(log: Path) -> list[tuple[EventType, int, int, dict[str, Any]]]:
    """Every event in an HTCondor user log: (JobEventType, cluster, proc, attributes)."""
    jel = htcondor2.JobEventLog(str(log))
    try:
        return [(e.type, e.cluster, e.proc, dict(e.items())) for e in jel.events(0)]
    finally:
        jel.close()


def events_by_node(dag: Path) -> dict[str, list[tuple[EventType, int, dict[str, Any]]]]:
    """Node name -> [(JobEventType, proc, attributes)], mapped through the submit events'
    'DAG Node:' notes, as DAGMan's readers do."""
    cluster_node: dict[int, str] = {}
    out: dict[str, list[tuple[EventType, int, dict[str, Any]]]] = {}
    for number, cluster, proc, attrs in read_events(files(dag)["nodes.log"]):
        note = attrs.get("LogNotes", "")
        if number == EventType.SUBMIT and note.startswith("DAG Node:"):
            cluster_node[cluster] = note.split(":", 1)[1].strip()
        node = attrs.get("DAGNodeName") or cluster_node[cluster]
        out.setdefault(node, []).append((number, proc, attrs))
    return out


def intervals(log: Path) -> dict[str, list[tuple[int, int | None]]]:
    """Per job name, the (start_ns, end_ns) of each run that job.sh recorded."""
    runs: dict[str, list[tuple[int, int | None]]] = {}
    for line in log.read_text().splitlines():
        word, name, stamp, *_ = line.split() + [""]
        if word == "start":
            runs.setdefault(name, []).append((int(stamp), None))
        elif word == "end":
            begun, _ = runs[name][-1]
            runs[name][-1] = (begun, int(stamp))
    return runs


def max_overlap(spans: list[tuple[int, int | None]]) -> int:
    """The largest number of spans running at one instant."""
    points = []
    for begun, ended in spans:
        assert ended is not None, "a job did not record its end"
        points += [(begun, 1), (ended, -1)]
    current = best = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts
        current += step
        best = max(best, current)
    return best


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
