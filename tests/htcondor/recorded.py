"""A recorded pool: plays back what a real HTCondor 25.13.2 pool wrote for one run.

The recordings in ``data/pool/`` (see its README) are processing directories exactly as
DAGMan, the schedd and docket left them. ``RecordedSchedd`` stands in for the schedd (the
one thing that does not run here): when docket's HTCondor engine submits a DAG, it lays
the files that run's DAGMan and node jobs wrote into the execution's directory, in the
order the pool wrote them:

- each DAGMan run is one *attempt* (a policy retry's first run left ``*.attempt1``);
- within an attempt, a held node job stops the playback until docket removes it (or
  cancels the DAG): the pool wrote the rest only after that, so the rest is laid only
  when the engine asks the schedd for that removal.

Every call the engine makes (submit, act) is kept in ``calls`` for the test to check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.htcondor.condorkit import DATA

POOL = DATA / "pool"
RECORDINGS = sorted(p.name for p in POOL.iterdir() if p.is_dir())
# what docket itself writes into a processing directory (rendering, the engine, the
# policy): never played back, docket must write it
DOCKET_WRITES = {"workflow.dag", "metadata.json", "request.yaml", "workflow.dag.condor.json",
                 "workflow.dag.condor.sub", "adjustments.json", "hog.py"}
_EVENT_END = "...\n"


def events_of(text: str) -> list[str]:
    """A user log split into its events (each ending with ``...``)."""
    out, at = [], 0
    while (end := text.find(_EVENT_END, at)) != -1:
        out.append(text[at:end + len(_EVENT_END)])
        at = end + len(_EVENT_END)
    return out


def _cluster(event: str) -> int:
    return int(re.match(r"\d{3} \((\d+)\.", event)[1])


@dataclass
class Step:
    """Files the pool wrote next, and what it waited for before writing them."""

    files: dict[str, str]
    after: str  # "submit", or "remove <job spec>"


@dataclass
class Attempt:
    dagman_cluster: int
    steps: list[Step] = field(default_factory=list)


def _node_files(recording: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(recording.iterdir())
            if p.is_file() and p.name not in DOCKET_WRITES and not p.name.endswith(".sub")
            and not p.name.endswith(".attempt1") and p.name != "README.md"}


def attempts_of(recording: Path) -> list[Attempt]:
    """The recording cut into DAGMan runs and the steps within each."""
    dagman_log = events_of((recording / "workflow.dag.dagman.log").read_text())
    clusters = list(dict.fromkeys(_cluster(e) for e in dagman_log))
    dagman_out = (recording / "workflow.dag.dagman.out").read_text()
    last = _node_files(recording)
    runs: list[dict[str, str]] = []
    if (recording / "workflow.dag.nodes.log.attempt1").exists():
        first_out = dagman_out[:dagman_out.index("EXITING WITH STATUS")]
        first_out = dagman_out[:dagman_out.index("\n", len(first_out)) + 1]
        runs.append({"workflow.dag.nodes.log":
                     (recording / "workflow.dag.nodes.log.attempt1").read_text(),
                     "workflow.dag.metrics":
                     (recording / "workflow.dag.metrics.attempt1").read_text(),
                     "workflow.dag.dagman.out": first_out,
                     "workflow.dag.rescue001": last["workflow.dag.rescue001"],
                     "workflow.dag.lib.out": last["workflow.dag.lib.out"],
                     "workflow.dag.lib.err": last["workflow.dag.lib.err"]})
    runs.append(last)
    attempts = []
    for number, files in enumerate(runs):
        cluster = clusters[number]
        files = dict(files)
        files["workflow.dag.dagman.log"] = "".join(
            e for e in dagman_log if _cluster(e) in clusters[:number + 1])
        attempt = Attempt(cluster)
        node_events = events_of(files["workflow.dag.nodes.log"])
        held = next((i for i, e in enumerate(node_events) if e.startswith("012 ")), None)
        if held is None:
            attempt.steps.append(Step(files, "submit"))
        else:
            # until the hold: the job runs and is held; DAGMan has not ended
            own = [e for e in events_of(files["workflow.dag.dagman.log"])
                   if _cluster(e) == cluster]
            before = "".join(e for e in events_of(files["workflow.dag.dagman.log"])
                             if _cluster(e) != cluster) + "".join(
                e for e in own if e.startswith(("000 ", "001 ")))
            attempt.steps.append(Step({
                "workflow.dag.nodes.log": "".join(node_events[:held + 1]),
                "workflow.dag.dagman.log": before}, "submit"))
            # what the pool waited for: the held job's removal, or (DAGMan's abort says
            # "DAG Removed") the removal of the whole DAG
            rest = "".join(node_events[held + 1:])
            waited = cluster if "DAG Removed" in rest else _cluster(node_events[held])
            attempt.steps.append(Step(files, f"remove {waited}"))
        attempts.append(attempt)
    return attempts


class _Submitted:
    def __init__(self, cluster: int) -> None:
        self._cluster = cluster

    def cluster(self) -> int:
        return self._cluster


class RecordedSchedd:
    """The schedd of the recorded pool, for one execution's processing directory."""

    def __init__(self, recording: str, directory: Path | None = None) -> None:
        self.recording = POOL / recording
        self.directory = directory
        self.attempts = attempts_of(self.recording)
        self.calls: list[tuple[Any, ...]] = []
        self._attempt = -1
        self._step = 0

    def _lay(self, step: Step) -> None:
        assert self.directory is not None, "tell the pool which directory it writes"
        for name, text in step.files.items():
            (self.directory / name).write_text(text)
        self._step += 1

    def _waiting(self) -> Step | None:
        attempt = self.attempts[self._attempt] if self._attempt >= 0 else None
        if attempt is None or self._step >= len(attempt.steps):
            return None
        return attempt.steps[self._step]

    @property
    def finished(self) -> bool:
        """Every file of the recording has been laid."""
        return self._attempt == len(self.attempts) - 1 and self._waiting() is None

    # the schedd calls the engine makes ------------------------------------------------

    def submit(self, description: Any) -> _Submitted:
        self.calls.append(("submit", str(description["My.JobBatchName"]),
                           str(description["arguments"])))
        if self._attempt + 1 >= len(self.attempts):
            raise RuntimeError(f"{self.recording.name} recorded no further DAGMan run")
        self._attempt += 1
        self._step = 0
        attempt = self.attempts[self._attempt]
        if self.directory is None:
            self.directory = Path(str(description["initialdir"]))
        self._lay(attempt.steps[0])
        return _Submitted(attempt.dagman_cluster)

    def act(self, action: Any, job_spec: str, reason: str | None = None) -> dict[str, int]:
        self.calls.append((getattr(action, "name", str(action)), job_spec, reason))
        waiting = self._waiting()
        cluster = job_spec.split(".")[0]
        if (waiting is not None and getattr(action, "name", "") == "Remove"
                and waiting.after == f"remove {cluster}"):
            self._lay(waiting)
        return {"TotalSuccess": 1}

    def query(self, constraint: str = "", projection: list[str] | None = None) -> list[Any]:
        self.calls.append(("query", constraint))
        return []
