"""The CASA job file: the list of CASA tasks a run calls and the products it must leave.

The CASA envoy writes it into ``working/``; the script it runs under real CASA and
vela (the CASA stand-in) both read it, so the two see exactly the same inputs::

    {"docket_casa_job": 1, "mode": "imaging",
     "tasks": [{"task": "tclean", "args": {"vis": "/.../working/x.ms", ...}}, ...],
     "products": ["/.../products/x.fits"],
     "vela": {"fail": "none", "fail_at": null}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docket.errors import Invalid, NotFound
from docket.fileio import atomic_write

__all__ = ["JOB_FILE", "JOB_VERSION", "FAIL_MODES", "CasaTask", "CasaJob", "read_job",
           "write_job"]

JOB_FILE = "casa-envoy-job.json"
JOB_VERSION = 1
# The ways vela can be told to fail, one per way real CASA fails.
FAIL_MODES = ("none", "bad-argument", "severe-raise", "severe-exit0", "missing-product")


@dataclass(frozen=True)
class CasaTask:
    """One call of a casatasks function with keyword arguments.

    ``save``: a file name in working/ that receives the task's return value as JSON
    (``imstat`` and ``calstat`` return their statistics).
    """

    task: str
    args: dict[str, Any]
    save: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "args": self.args}
        if self.save:
            out["save"] = self.save
        return out


@dataclass(frozen=True)
class CasaJob:
    mode: str
    tasks: tuple[CasaTask, ...]
    products: tuple[str, ...]  # absolute paths that must exist, non-empty, after the run
    vela: dict[str, Any] = field(default_factory=lambda: {"fail": "none", "fail_at": None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "docket_casa_job": JOB_VERSION,
            "mode": self.mode,
            "tasks": [t.to_dict() for t in self.tasks],
            "products": list(self.products),
            "vela": dict(self.vela),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "job") -> CasaJob:
        def bad(what: str) -> Invalid:
            return Invalid(f"{source}: {what}",
                           "regenerate the job with casa-envoy or fix the file by hand")

        if not isinstance(data, dict):
            raise bad("must be a JSON object")
        if data.get("docket_casa_job") != JOB_VERSION:
            raise bad(f"field 'docket_casa_job' must be {JOB_VERSION}")
        mode = data.get("mode")
        if not isinstance(mode, str) or not mode:
            raise bad("field 'mode' must be a non-empty string")
        raw_tasks = data.get("tasks")
        if not isinstance(raw_tasks, list) or not raw_tasks:
            raise bad("field 'tasks' must be a non-empty list")
        tasks = []
        for i, item in enumerate(raw_tasks):
            if (not isinstance(item, dict) or not isinstance(item.get("task"), str)
                    or not isinstance(item.get("args"), dict)):
                raise bad(f"tasks[{i}] must be an object with 'task' (string) and 'args' "
                          "(object)")
            save = item.get("save")
            if save is not None and (not isinstance(save, str) or "/" in save):
                raise bad(f"tasks[{i}].save must be a file name")
            tasks.append(CasaTask(item["task"], item["args"], save))
        products = data.get("products", [])
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            raise bad("field 'products' must be a list of paths")
        vela = data.get("vela") or {}
        if not isinstance(vela, dict):
            raise bad("field 'vela' must be an object")
        fail = vela.get("fail", "none")
        if fail not in FAIL_MODES:
            raise bad(f"vela.fail must be one of {', '.join(FAIL_MODES)}, got {fail!r}")
        fail_at = vela.get("fail_at")
        if fail_at is not None and fail_at not in {t.task for t in tasks}:
            raise bad(f"vela.fail_at {fail_at!r} is not one of the job's tasks")
        return cls(mode, tuple(tasks), tuple(products), {"fail": fail, "fail_at": fail_at})


def write_job(job: CasaJob, path: Path) -> None:
    atomic_write(path, json.dumps(job.to_dict(), indent=2) + "\n", durable=False)


def read_job(path: Path) -> CasaJob:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise NotFound(f"CASA job file {path} does not exist",
                       "run casa-envoy first, or give the path of casa-envoy-job.json") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid(f"CASA job file {path} is not valid JSON: {exc}",
                      "regenerate it with casa-envoy") from exc
    return CasaJob.from_dict(data, source=str(path))
