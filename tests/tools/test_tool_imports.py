"""The standalone tools import nothing of the engines or the watcher's state: each tool
module, imported alone in a fresh interpreter, leaves none of them in ``sys.modules``.
(A tool's PEX carries only what its imports reach; tests/pex checks that side.)"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# what only the watcher's process may load
FORBIDDEN = ("docket.engines", "docket.store", "docket.watcher", "docket.intake",
             "docket.rules", "docket.launch")
# task-worker runs a task in a container through the engines' container helper
# (docket.engines.container, a leaf module): that one and its package, nothing more.
ALLOWED = {"docket.tools.taskworker": {"docket.engines", "docket.engines.container"},
           "cli.task_worker": {"docket.engines", "docket.engines.container"}}


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tool_modules() -> list[str]:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entries = {entry.partition(":")[0] for name, entry in scripts.items() if name != "docket"}
    libraries = {_module(p) for top in ("docket/tools", "envoys")
                 for p in (REPO / top).rglob("*.py")}
    return sorted(entries | libraries | {"docket.procdir", "docket.locks"})


def test_the_tools_are_found() -> None:
    modules = tool_modules()
    assert {"cli.null", "cli.casa_envoy", "docket.tools.conveyor", "envoys.casa.foundation",
            "envoys.ingest.processing", "docket.procdir"} <= set(modules)


@pytest.mark.parametrize("module", tool_modules())
def test_a_tool_module_loads_no_engine_and_no_watcher_state(module: str) -> None:
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, module], cwd=REPO, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert module in loaded
    found = {m for m in loaded if m.split(".")[:2] in [f.split(".") for f in FORBIDDEN]}
    assert found <= ALLOWED.get(module, set()), f"{module} loads {sorted(found)}"
