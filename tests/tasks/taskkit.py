"""Task workflow requests for tests: EWMS's documented example, adapted to this machine."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

# The "Example Workflow Request JSON" of EWMS's WMS README, as published.
EWMS_EXAMPLE: dict[str, Any] = {
    "public_queue_aliases": ["input-queue", "output-queue"],
    "tasks": [{
        "cluster_locations": ["osg"],
        "input_queue_aliases": ["input-queue"],
        "output_queue_aliases": ["output-queue"],
        "task_image": "/cvmfs/icecube.opensciencegrid.org/containers/path/to/"
                      "my-apptainer-container:1.2.3",
        "task_args": "cp {{INFILE}} {{OUTFILE}}",
        "n_workers": 1000,
        "worker_config": {"do_transfer_worker_stdouterr": True, "max_worker_runtime": 600,
                          "n_cores": 1, "priority": 99, "worker_disk": "512M",
                          "worker_memory": "512M"}}]}


def two_task_chain(image: str = "", workers: int = 2,
                   first_args: str = "sh -c 'tr a-z A-Z < {{INFILE}} > {{OUTFILE}}'",
                   lease_s: float | None = None) -> dict[str, Any]:
    """EWMS's example with paths adapted (location, image, fewer workers), plus a second
    task reading the first one's output queue, and docket's inputs."""
    request = copy.deepcopy(EWMS_EXAMPLE)
    first = request["tasks"][0]
    first.update(cluster_locations=["local"], task_image=image, task_args=first_args,
                 n_workers=workers, output_queue_aliases=["middle-queue"])
    if lease_s is not None:
        first["pilot_config"] = {"environment": {"DOCKET_TASK_LEASE_S": str(lease_s)}}
    second = copy.deepcopy(first)
    second.update(input_queue_aliases=["middle-queue"], output_queue_aliases=["output-queue"],
                  task_args="sh -c 'cat {{INFILE}} > {{OUTFILE}}; echo done >> {{OUTFILE}}'",
                  n_workers=1)
    request["tasks"].append(second)
    request["inputs"] = {"input-queue": {"directory": "events"}}
    return request


def write_events(home: Path, count: int) -> list[str]:
    folder = home / "spool" / "attachments" / "events"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        (folder / f"e{i:03d}.txt").write_text(f"event number {i}\n")
        names.append(f"e{i:03d}.txt")
    return names


def queue_rows(directory: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(directory / "events.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def dumps(request: dict[str, Any]) -> str:
    return json.dumps(request, indent=4)
