"""Helpers for the HTCondor-side tests: render shipped templates, stand in for
condor_dagman, replay node events into a real store."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("CONDOR_CONFIG", "/dev/null")
import htcondor2  # noqa: E402,F401 - imported once here, as the code under test does

from docket.capabilities import load_capability, resolve_parameters  # noqa: E402
from docket.render import Rendered, render_execution  # noqa: E402
from docket.store import Store  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
TEMPLATES = REPO / "templates"
# 'tasks' takes no parameters from people: docket makes its plan from a task workflow
# document (its templates are checked in tests/tasks/test_task_templates.py)
SHIPPED = sorted(p.name for p in TEMPLATES.iterdir()
                 if (p / "capability.yaml").is_file() and not p.name.startswith(("_", "."))
                 and p.name != "tasks")


def stub_dagman(directory: Path) -> Path:
    """An executable named condor_dagman: from_dag only needs one to exist."""
    path = directory / "condor_dagman"
    path.write_text("#!/bin/sh\necho 'a stand-in for condor_dagman' >&2\nexit 1\n")
    path.chmod(0o755)
    return path


def render(name: str, directory: Path, given: dict[str, Any], request: str = "run-1"
           ) -> tuple[Rendered, dict[str, Any]]:
    """Render shipped capability ``name`` with ``given`` parameters, as the launcher does."""
    capability = load_capability(TEMPLATES, name)
    parameters, problems = resolve_parameters(capability, given)
    assert not problems, [str(p) for p in problems]
    meta = {"name": request, "version": 1, "execution": 1, "number": 1,
            "capability": name, "priority": 0, "output_dir": None,
            "created": "2025-03-01T10:00:00.000000Z", "labels": {}}
    document = json.dumps({"metadata": {"name": request}, "spec": {"parameters": given}})
    rendered = render_execution(capability, directory, request=meta, parameters=parameters,
                                document=document, tools_dir=REPO / ".venv" / "bin")
    return rendered, parameters


def replay(database: Path, events: list[dict[str, Any]], execution: int = 1,
           request: str = "run-1") -> Store:
    """Record node events through the real store (its reducer fills the nodes table)."""
    store = Store(database)
    with store.transaction():
        for event in events:
            event = dict(event)
            kind = event.pop("type")
            store.record(kind, request=request, version=1, execution=execution, **event)
    return store


@contextmanager
def outside_tmp() -> Iterator[Path]:
    """A scratch directory not under /tmp (stock DAGMan refuses node logs there)."""
    path = Path(tempfile.mkdtemp(prefix="docket-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
