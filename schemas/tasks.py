"""Task workflows as IceCube's EWMS takes them: the body of ``POST /v1/workflows``.

The field names, types and required fields are EWMS's own (its OpenAPI schema), so a
request JSON written for EWMS is accepted unchanged, as a ``.json`` spool file. The same
fields sit under ``spec`` of a ``kind: TaskWorkflow`` YAML document. docket adds two
optional fields of its own: ``inputs`` (the events of the public input queues: files, or
a directory of files) and ``priority`` (EWMS has one too, on the workflow).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.metadata import Metadata, Strict

__all__ = ["WorkerConfig", "PilotConfig", "Task", "QueueInputs", "TaskWorkflowSpec",
           "TaskWorkflow", "parse_size_mb", "SIZE_PATTERN"]

# HTCondor-style sizes as EWMS users write them: 512M, 2G, 1.5GB, 100MiB. A bare number
# is refused: HTCondor would read it as MiB for memory but KiB for disk.
SIZE_PATTERN = r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT])(?:i?B)?$"
_UNIT_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
Location = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]
Text = Annotated[str, StringConstraints(max_length=8192)]


def parse_size_mb(value: str) -> int:
    """``512M`` -> 512, ``2G`` -> 2048 (MiB, rounded up); ValueError names the mistake."""
    match = re.match(SIZE_PATTERN, value.strip(), re.IGNORECASE)
    if not match:
        raise ValueError(f"{value!r} is not a size: write a number and a unit, e.g. 512M "
                         "or 2G (K, M, G or T)")
    number = float(match[1]) * _UNIT_MB[match[2].upper()]
    if number <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return max(1, int(-(-number // 1)))


class WorkerConfig(Strict):
    """``worker_config``: what each HTCondor worker of a taskforce asks for."""

    do_transfer_worker_stdouterr: bool = Field(
        default=False, description="Keep each worker's stdout/stderr (HTCondor output/error).")
    max_worker_runtime: int = Field(
        default=86400, ge=1, le=30 * 86400,
        description="Seconds a worker may run: HTCondor allowed_job_duration (held, code 46).")
    n_cores: int = Field(default=1, ge=1, le=1024, description="request_cpus.")
    priority: int = Field(default=0, ge=-1000000, le=1000000,
                          description="HTCondor job priority.")
    worker_disk: str = Field(default="1G", description="request_disk, e.g. 512M or 2G.")
    worker_memory: str = Field(default="1G", description="request_memory, e.g. 512M or 2G.")
    condor_requirements: Text = Field(
        default="", description="An HTCondor requirements expression (pools only).")

    @model_validator(mode="after")
    def _sizes(self) -> WorkerConfig:
        if any(ord(c) < 32 or c == "\x7f" for c in self.condor_requirements):
            raise ValueError("condor_requirements: a control character (a newline?) cannot "
                             "be part of a submit command")
        for name in ("worker_disk", "worker_memory"):
            try:
                parse_size_mb(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return self


class PilotConfig(Strict):
    """``pilot_config``: what EWMS gives its pilot; docket's worker takes the same."""

    tag: str = Field(default="latest", description="Recorded; docket's worker has no tag.")
    environment: dict[str, str | int] = Field(
        default_factory=dict, description="Environment of the worker (and its tasks).")
    input_files: list[str] = Field(
        default_factory=list, description="Files the tasks may read (absolute paths on "
                                          "the access point).")


class Task(Strict):
    """One task of the workflow: it becomes one immutable task directive."""

    cluster_locations: list[Location] = Field(
        min_length=1, description="Where its taskforces run: one taskforce per location.")
    task_image: Text = Field(description="The container image each event runs in; '' runs "
                                         "the command on the worker's host (docket only).")
    task_args: Text = Field(description="The command, with {{INFILE}} and {{OUTFILE}}.")
    task_env: dict[str, str | int] = Field(default_factory=dict)
    init_image: Text | None = Field(default=None, description="Run once per worker first.")
    init_args: Text = ""
    init_env: dict[str, str | int] = Field(default_factory=dict)
    input_queue_aliases: list[Alias] = Field(description="Queues it reads events from.")
    output_queue_aliases: list[Alias] = Field(description="Queues its OUTFILEs go to.")
    pilot_config: PilotConfig = Field(default_factory=PilotConfig)
    worker_config: WorkerConfig
    n_workers: int = Field(default=1, ge=1, le=10000,
                           description="Workers in each of its taskforces (immutable).")


class QueueInputs(Strict):
    """The events of one public input queue: each file is one event."""

    files: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        default_factory=list, description="Relative to the spool's attachments root.")
    directory: str | None = Field(default=None,
                                  description="Every file in it (relative to attachments).")


class TaskWorkflowSpec(Strict):
    tasks: list[Task] = Field(min_length=1)
    public_queue_aliases: list[Alias]
    priority: int = Field(default=0, ge=-1000, le=1000)
    inputs: dict[Alias, QueueInputs] = Field(
        default_factory=dict, description="docket: events for public input queues.")

    @model_validator(mode="after")
    def _graph(self) -> TaskWorkflowSpec:
        producers: dict[str, int] = {}
        for i, task in enumerate(self.tasks):
            for alias in task.output_queue_aliases:
                if alias in producers:
                    raise ValueError(f"tasks[{i}]: output queue {alias!r} is already the "
                                     f"output of tasks[{producers[alias]}]; a queue has one "
                                     "producing task")
                producers[alias] = i
        consumers = {a for t in self.tasks for a in t.input_queue_aliases}
        for alias in self.public_queue_aliases:
            if alias not in consumers and alias not in producers:
                raise ValueError(f"public queue {alias!r} is no task's input or output queue")
        for i, task in enumerate(self.tasks):
            for alias in task.input_queue_aliases:
                if alias not in producers and alias not in self.public_queue_aliases:
                    raise ValueError(f"tasks[{i}]: input queue {alias!r} is neither another "
                                     "task's output nor in public_queue_aliases, so no event "
                                     "could ever reach it")
        for alias in self.inputs:
            if alias in producers or alias not in consumers:
                raise ValueError(f"inputs: {alias!r} is not a public input queue (one that "
                                 "a task reads and no task writes)")
        # queues are edges between tasks: a cycle would never drain
        edges = self.feeders()
        state: dict[int, int] = {}

        def visit(i: int) -> None:
            state[i] = 1
            for j in edges[i]:
                if state.get(j) == 1:
                    raise ValueError(f"tasks[{i}] and tasks[{j}] feed each other through "
                                     "their queues: a task workflow cannot have a cycle")
                if j not in state:
                    visit(j)
            state[i] = 2

        for i in edges:
            if i not in state:
                visit(i)
        return self

    def feeders(self) -> dict[int, set[int]]:
        """For each task (by index), the tasks writing the queues it reads."""
        producers = {a: i for i, t in enumerate(self.tasks) for a in t.output_queue_aliases}
        return {i: {producers[a] for a in t.input_queue_aliases if a in producers}
                for i, t in enumerate(self.tasks)}


class TaskWorkflow(Strict):
    """A task workflow as a docket document (the same fields as EWMS's request)."""

    apiVersion: Literal["docket/v1"]  # noqa: N815 - the document's own field name
    kind: Literal["TaskWorkflow"]
    metadata: Metadata
    spec: TaskWorkflowSpec
