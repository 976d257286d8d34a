"""The task worker: what each worker of a taskforce runs (EWMS's pilot, for docket).

``task-worker work DIR --taskforce TF --worker ID`` withdraws events of its task from the
workflow's queues (``DIR/events.sqlite``), runs the task once per event with
``{{INFILE}}`` replaced by a file holding the event and ``{{OUTFILE}}`` by a file the
task may write (it becomes one event in each of the task's output queues), and exits once
no event can reach its task any more. The init command (``init_image``/``init_args``)
runs once per worker before the first event. A task image runs through the container
runtime of the machine the worker is on (``docket.engines.container``), as EWMS's pilot
runs apptainer on the execution point.

``task-worker seed DIR`` creates the queues and the input events (the DAG's first node);
``task-worker collect DIR`` writes the events of the workflow's public output queues to
``DIR/products/<queue>/`` and ``results.json`` (its last node), and fails when an event
failed on every attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from docket.engines.container import ContainerUnavailable, container_command, find_runtime
from docket.procdir import PRODUCTS
from docket.tools.taskqueue import MAX_EVENT_BYTES, QUEUE_FILE, Event, EventQueue

__all__ = ["seed", "work", "collect", "PLAN_FILE", "LEASE_S", "main"]

PLAN_FILE = "workflow.json"
# A worker renews its lease every LEASE_S / 3; a worker killed mid-event loses its event
# to another worker at most LEASE_S later. pilot_config.environment may set
# DOCKET_TASK_LEASE_S for a workflow.
LEASE_S = 15.0
POLL_S = 0.2


def _plan(directory: Path) -> dict[str, Any]:
    return json.loads((directory / PLAN_FILE).read_text())


def _say(message: str) -> None:
    print(f"task-worker: {message}", file=sys.stderr, flush=True)


def seed(directory: Path) -> int:
    """Create the queues and put each input file in as one event (once)."""
    plan = _plan(directory)
    events: list[tuple[str, str, bytes]] = []
    for item in plan["inputs"]:
        path = Path(item["path"])
        files = (sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
                 if item.get("directory") else [path])
        for file in files:
            if file.stat().st_size > MAX_EVENT_BYTES:
                _say(f"{file} is over {MAX_EVENT_BYTES} bytes: too large for one event")
                return 1
            name = str(file.relative_to(path)) if item.get("directory") else file.name
            events.append((item["queue"], name, file.read_bytes()))
    queue = EventQueue(directory / QUEUE_FILE)
    try:
        fresh = queue.seed(plan["directives"], plan["public_queue_aliases"], events)
    finally:
        queue.close()
    _say(f"{len(events)} input events queued" if fresh else "queues were seeded before")
    return 0


def _environment(*layers: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    for layer in layers:
        env.update({k: str(v) for k, v in layer.items()})
    return env


def _command(image: str | None, argv: list[str], workdir: Path, env: dict[str, str],
             read_only: list[Path]) -> list[str]:
    if not image:
        return argv
    return container_command(find_runtime(), image, argv, workdir=workdir,
                             environment={k: v for k, v in env.items()
                                          if k not in os.environ or os.environ[k] != v},
                             read_only=read_only)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run one command; its output goes to the worker's own stdout/stderr."""
    err_path = cwd / ".stderr"
    with open(err_path, "wb") as err:
        try:
            code = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=sys.stdout.fileno(), stderr=err).returncode
        except OSError as exc:
            return 127, f"cannot run {cmd[0]!r}: {exc.strerror}"
    text = err_path.read_bytes()[-65536:]
    with contextlib.suppress(OSError):
        sys.stderr.buffer.write(text)
        sys.stderr.flush()
    last = [line for line in text.decode(errors="replace").splitlines() if line.strip()]
    why = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    return code, why + (f": {last[-1].strip()[:300]}" if last else "")


def _arguments(text: str, infile: Path | None = None, outfile: Path | None = None
               ) -> list[str]:
    """Split like a shell, then put the paths in (a path with spaces stays one word)."""
    words = shlex.split(text)
    out = []
    for word in words:
        if infile is not None:
            word = word.replace("{{INFILE}}", str(infile))
        if outfile is not None:
            word = word.replace("{{OUTFILE}}", str(outfile))
        out.append(word)
    return out


class _Renewer(threading.Thread):
    """Renews the lease of the event being processed, on its own connection."""

    def __init__(self, db: Path, event: Event, worker: str, lease_s: float) -> None:
        super().__init__(daemon=True)
        self.db, self.event, self.worker, self.lease_s = db, event, worker, lease_s
        self.stop = threading.Event()

    def run(self) -> None:
        queue = EventQueue(self.db)
        try:
            while not self.stop.wait(self.lease_s / 3):
                with contextlib.suppress(Exception):
                    if not queue.renew(self.event, self.worker, self.lease_s):
                        return
        finally:
            queue.close()


def work(directory: Path, taskforce_id: str, worker_id: str) -> int:
    plan = _plan(directory)
    force = next((t for t in plan["taskforces"] if t["taskforce"] == taskforce_id), None)
    if force is None:
        _say(f"no taskforce {taskforce_id!r} in {directory / PLAN_FILE}")
        return 2
    task = next(d for d in plan["directives"] if d["task_id"] == force["task_id"])
    worker = f"{taskforce_id}/{worker_id}"
    db = directory / QUEUE_FILE
    queue = EventQueue(db)
    pilot = task["pilot_config"]
    lease_s = float(pilot.get("environment", {}).get("DOCKET_TASK_LEASE_S", LEASE_S))
    read_only = [Path(p) for p in pilot.get("input_files", [])]
    scratch_root = directory / ".task-scratch" / worker.replace("/", "_")
    try:
        queue.worker_started(worker, taskforce_id, socket.gethostname())
        try:
            if task["task_image"] or task.get("init_image"):
                find_runtime()  # before any event is taken: fail the worker, not events
        except ContainerUnavailable as exc:
            reason = f"{exc.what} — {exc.hint}"
            _say(reason)
            queue.worker_ended(worker, "failed", reason)
            return 3
        if task.get("init_args"):
            where = scratch_root / "init"
            where.mkdir(parents=True, exist_ok=True)
            env = _environment(pilot.get("environment", {}), task.get("init_env", {}))
            code, why = _run(_command(task.get("init_image"), _arguments(task["init_args"]),
                                      where, env, read_only), where, env)
            if code != 0:
                queue.worker_ended(worker, "failed", f"init container failed: {why}")
                _say(f"init container failed: {why}")
                return 1
        while True:
            event = queue.withdraw(task["task_id"], taskforce_id, worker, lease_s)
            if event is None:
                if queue.drained(task["task_id"]):
                    break
                time.sleep(POLL_S)
                continue
            _process(queue, db, task, event, worker, scratch_root, read_only, lease_s)
        queue.worker_ended(worker, "done")
        return 0
    finally:
        queue.close()
        shutil.rmtree(scratch_root, ignore_errors=True)


def _process(queue: EventQueue, db: Path, task: dict[str, Any], event: Event, worker: str,
             scratch_root: Path, read_only: list[Path], lease_s: float) -> None:
    where = scratch_root / f"e{event.id}.a{event.attempt}"
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    suffix = Path(event.origin or "").suffix[:16]
    infile, outfile = where / f"in-{event.id}{suffix}", where / f"out-{event.id}{suffix}"
    infile.write_bytes(event.payload)
    env = _environment(task["pilot_config"].get("environment", {}), task["task_env"])
    renewer = _Renewer(db, event, worker, lease_s)
    renewer.start()
    try:
        cmd = _command(task["task_image"], _arguments(task["task_args"], infile, outfile),
                       where, env, read_only)
        code, why = _run(cmd, where, env)
    except ContainerUnavailable as exc:
        code, why = 127, exc.what
    finally:
        renewer.stop.set()
        renewer.join()
    if code != 0:
        queue.fail(event, worker, why)
        shutil.rmtree(where, ignore_errors=True)
        return
    output = None
    if outfile.is_file():
        if outfile.stat().st_size > MAX_EVENT_BYTES:
            queue.fail(event, worker, f"OUTFILE is over {MAX_EVENT_BYTES} bytes")
            shutil.rmtree(where, ignore_errors=True)
            return
        output = outfile.read_bytes()
    queue.complete(event, worker, output, task["output_queue_aliases"])
    shutil.rmtree(where, ignore_errors=True)


def collect(directory: Path) -> int:
    """Public output events → products/<queue>/; counts → results.json."""
    queue = EventQueue(directory / QUEUE_FILE)
    try:
        taken: set[str] = set()
        written = 0
        for row in queue.public_outputs():
            folder = directory / PRODUCTS / row["queue"]
            folder.mkdir(parents=True, exist_ok=True)
            name = Path(row["origin"] or f"event-{row['id']}").name
            if name in taken or (folder / name).exists():
                name = f"{row['id']}-{name}"
            taken.add(name)
            (folder / name).write_bytes(bytes(row["payload"]))
            written += 1
        summary = queue.summary()
        failed = queue.conn.execute("SELECT id, queue, origin FROM events WHERE "
                                    "state='failed' ORDER BY id").fetchall()
    finally:
        queue.close()
    results = {"output_events": written, "failed_events": len(failed),
               "queues": summary["queues"]}
    (directory / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    if failed:
        names = ", ".join(f"{r['id']} ({r['origin'] or r['queue']})" for r in failed[:10])
        _say(f"{len(failed)} event(s) failed on every attempt: {names}")
        return 1
    _say(f"{written} output event(s) written to products/")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    class Formatter(argparse.HelpFormatter):  # "Usage:", as every docket tool says it
        def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> None:
            super().add_usage(usage, actions, groups, "Usage: ")

    parser = argparse.ArgumentParser(prog="task-worker", description=__doc__.split("\n")[0],
                                     formatter_class=Formatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("seed", "collect"):
        sub.add_parser(name).add_argument("directory", type=Path)
    w = sub.add_parser("work")
    w.add_argument("directory", type=Path)
    w.add_argument("--taskforce", required=True)
    w.add_argument("--worker", required=True, help="unique per worker, e.g. $(Cluster).$(Process)")
    args = parser.parse_args(argv)
    directory = args.directory.resolve()
    if args.command == "seed":
        return seed(directory)
    if args.command == "collect":
        return collect(directory)
    return work(directory, args.taskforce, args.worker)
