"""EWMS task workflows in docket: request → task directives → taskforces → one DAG.

- An EWMS request JSON (``POST /v1/workflows``'s body) dropped in the spool as
  ``NAME.json``, or a ``kind: TaskWorkflow`` YAML document, is checked against
  ``schemas.tasks`` (errors name the JSON pointer, or the field path, and the line).
- Each task becomes an immutable **task directive**: its id is a hash of its content,
  so a changed task is a new directive, never an edited one. Each directive is applied
  as one **taskforce** per cluster location: ``n_workers`` workers, with
  ``worker_config`` mapped to HTCondor submit commands.
- The request is accepted as a version of a request of the built-in ``tasks``
  capability (so versions, queues, sites, cancel and the engines all apply); its
  ``workflow`` parameter is the plan, which ``templates/tasks/`` renders into a DAG: a
  ``seed`` node, one node per taskforce (``queue n_workers``), a ``collect`` node.
- ``describe`` gives what EWMS relays to its users: directives, taskforces with workers
  requested/running/done, events in and out, failures.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from docket.documents import Outcome, ParsedDocument, Problem, spec_sha256
from docket.errors import Invalid
from docket.fileio import safe_join
from docket.records import EngineState, Execution
from schemas.tasks import TaskWorkflow, TaskWorkflowSpec, parse_size_mb

__all__ = ["CAPABILITY", "plan", "accept_workflow", "describe",
           "TASK_RETRIES"]

CAPABILITY = "tasks"
# A taskforce whose worker died (killed, evicted) is submitted again this many times; its
# events are not lost meanwhile: leases of dead workers expire and others take them.
TASK_RETRIES = 2


def _directive_id(task: dict[str, Any]) -> str:
    canonical = json.dumps(task, sort_keys=True, separators=(",", ":"))
    return "task-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _depths(spec: TaskWorkflowSpec) -> dict[int, int]:
    """Each task's distance from the public inputs through the queues (0: reads only
    public queues); the spec has no cycles (its validator refuses them)."""
    feeders = spec.feeders()
    found: dict[int, int] = {}

    def depth(i: int) -> int:
        if i not in found:
            found[i] = 1 + max(map(depth, feeders[i])) if feeders[i] else 0
        return found[i]

    return {i: depth(i) for i in range(len(spec.tasks))}


def plan(spec: TaskWorkflowSpec, attachments: Path) -> tuple[dict[str, Any], list[Problem]]:
    """The directives, taskforces and input events of a workflow; problems with paths."""
    problems: list[Problem] = []
    directives = []
    taskforces = []
    for index, task in enumerate(spec.tasks):
        body = task.model_dump(mode="json", exclude={"cluster_locations", "n_workers",
                                                     "worker_config"})
        directive = {"task_id": _directive_id(body), "index": index, **body}
        directives.append(directive)
        config = task.worker_config
        for location in dict.fromkeys(task.cluster_locations):
            taskforces.append({
                "taskforce": f"tf{index}-{location}", "node": f"tf{index}_{location}"
                .replace("-", "_").replace(".", "_"),
                "task_id": directive["task_id"], "task_index": index, "location": location,
                "n_workers": task.n_workers, "worker_config": config.model_dump(mode="json"),
                "container": bool(task.task_image or task.init_image),
                "request_cpus": config.n_cores,
                "request_memory_mb": parse_size_mb(config.worker_memory),
                "request_disk_kb": parse_size_mb(config.worker_disk) * 1024,
                "allowed_job_duration": config.max_worker_runtime,
                "priority": config.priority,
                "requirements": config.condor_requirements,
                "transfer_stdouterr": config.do_transfer_worker_stdouterr})
    # a taskforce that feeds others gets a free slot before them: workers of a later task
    # only wait for events, and holding every slot they would starve the task feeding them
    depth = _depths(spec)
    for tf in taskforces:
        tf["dag_priority"] = max(depth.values(), default=0) - depth[tf["task_index"]]
    inputs = []
    for alias, given in spec.inputs.items():
        named = [(name, f"spec.inputs.{alias}.files[{i}]", False)
                 for i, name in enumerate(given.files)]
        if given.directory is not None:
            named.append((given.directory, f"spec.inputs.{alias}.directory", True))
        for name, where, directory in named:
            try:
                path = safe_join(attachments, name)
            except Invalid as exc:
                problems.append(Problem(exc.what, path=where))
                continue
            if not (path.is_dir() if directory else path.is_file()):
                what = "input directory" if directory else "input file"
                problems.append(Problem(f"{what} {name!r} does not exist in {attachments}",
                                        path=where))
            inputs.append({"queue": alias, "path": str(path), "directory": directory})
    return {"directives": directives, "taskforces": taskforces, "inputs": inputs,
            "public_queue_aliases": list(spec.public_queue_aliases)}, problems


def accept_workflow(intake: Any, name: str, parsed: ParsedDocument, raw: bytes,
                    identity: str, actor: str, source: dict[str, Any] | None = None) -> Any:
    """Intake of a task workflow, in the pass's transaction: a version of a ``tasks``
    request, or a duplicate, or a rejection naming each problem."""
    from docket.capabilities import CapabilityError

    model: TaskWorkflow = parsed.model  # type: ignore[assignment]
    request = model.metadata.name
    workflow, problems = plan(model.spec, intake.home.attachments)
    if problems:
        if name.endswith(".json"):  # the JSON is the spec: say where as a JSON pointer
            problems = [Problem(p.message, path="/" + re.sub(r"\[(\d+)\]", r"/\1", (
                p.path or "").removeprefix("spec.")).replace(".", "/")) for p in problems]
        return intake._reject(name, [str(p) for p in problems], actor)
    try:
        capability = intake.capabilities.get(CAPABILITY)
    except CapabilityError as exc:
        return intake._reject(name, [f"task workflows need the built-in '{CAPABILITY}' "
                                     f"capability in the home's templates/: {exc}"], actor)
    existing = intake.store.request(request)
    if existing is not None and existing.capability != CAPABILITY:
        return intake._reject(name, [
            f"metadata.name: request {request!r} is a {existing.capability!r} request; "
            "a task workflow needs a new name"], actor)
    spec: dict[str, Any] = {"capability": CAPABILITY, "priority": model.spec.priority,
                            "workflow": model.spec.model_dump(mode="json")}
    # cluster locations that are docket sites (sites.yaml) choose where the DAG runs, in
    # the tasks' order; other names only label their taskforces
    sites = {s.name for s in intake.rules.sites.sites} if intake.rules.sites else set()
    wanted = [loc for task in model.spec.tasks for loc in task.cluster_locations
              if loc in sites]
    if wanted:
        spec["cluster_locations"] = list(dict.fromkeys(wanted))
    sha = spec_sha256(spec)
    duplicate = None if existing is None else intake.rules.find_duplicate(request, sha)
    if duplicate is not None:
        intake.store.record("document.duplicate", request=request, version=duplicate.version,
                            actor=actor, file=name)
        return Outcome(name, "duplicate", request, duplicate.version, reasons=[
            f"duplicate: identical to {request} version {duplicate.version} (accepted "
            f"{duplicate.accepted_at}); nothing changed"])
    if existing is not None and existing.sealed:
        return intake._reject(name, [f"metadata.name: request {request!r} is sealed"], actor)
    accepted = intake.rules.accept(capability, request, spec, {"workflow": workflow}, sha,
                                   raw.decode(), name, identity, actor,
                                   new_request=existing is None, **(source or {}))
    return Outcome(name, "accepted", request, accepted.version, accepted.execution)


def describe(store: Any, execution: Execution) -> dict[str, Any] | None:
    """Directives and taskforces of one task-workflow execution, with live counts."""
    workflow = execution.parameters.get("workflow")
    if not isinstance(workflow, dict):
        return None
    counts: dict[str, Any] = {"taskforces": {}, "queues": {}}
    if execution.directory:
        from docket.tools.taskqueue import QUEUE_FILE, EventQueue

        db = Path(execution.directory) / QUEUE_FILE
        if db.is_file():
            queue = EventQueue(db, readonly=True)
            try:
                counts = queue.summary()
                counts["worker_errors"] = queue.worker_errors()
            finally:
                queue.close()
    forces = []
    for tf in workflow["taskforces"]:
        seen = counts["taskforces"].get(tf["taskforce"], {})
        workers = dict(seen.get("workers", {}))
        if execution.engine_state == EngineState.DONE:
            # the workflow ended (or was cancelled): a worker still marked running was
            # stopped with its DAG, without the chance to say so
            workers["stopped"] = workers.pop("running", 0)
        forces.append({
            "taskforce": tf["taskforce"], "task_id": tf["task_id"],
            "location": tf["location"], "n_workers": tf["n_workers"],
            "workers": {"requested": tf["n_workers"], "running": workers.get("running", 0),
                        "done": workers.get("done", 0), "failed": workers.get("failed", 0),
                        "stopped": workers.get("stopped", 0)},
            "events_in": seen.get("events_in", 0), "events_out": seen.get("events_out", 0),
            "failures": seen.get("failures", 0), "lost": seen.get("lost", 0),
            "top_task_errors": seen.get("top_task_errors", {}),
            "worker_errors": sorted(set(counts.get("worker_errors", {})
                                        .get(tf["taskforce"], []))),
            "worker_config": tf["worker_config"]})
    directives = [{k: d[k] for k in ("task_id", "index", "task_image", "task_args",
                                     "init_image", "input_queue_aliases",
                                     "output_queue_aliases")}
                  for d in workflow["directives"]]
    return {"directives": directives, "taskforces": forces, "queues": counts["queues"]}


def add_to_show(store: Any, shown: dict[str, Any]) -> None:
    """Put each task-workflow execution's directives and taskforces into ``docket show``."""
    for item in shown["executions"]:
        row = store.execution(item["id"])
        if row is not None and row.capability == CAPABILITY:
            item["task_workflow"] = describe(store, row)
